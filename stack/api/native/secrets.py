"""`/v1/secrets/<logical path>` and `/v1/acl/...`: the secrets engine on the native API.

The path after `/v1/secrets/` is the engine's logical path, the one policies
name (`secret/data/app/db`, `secret/metadata/app/`, `sys/mounts`); `/v1/acl/` is
a shorter spelling of the token and policy paths:

  /v1/acl/token/self         -> auth/token/lookup-self
  /v1/acl/token/<op>         -> auth/token/<op>     (create, lookup, renew, revoke, ...)
  /v1/acl/policy[/<name>]    -> sys/policies/acl[/<name>]

GET reads (`?list` lists), PUT and POST write, PATCH patches, DELETE deletes. The
answer is `{"data": ..., "auth": ..., "warnings": ...}`; errors are the native
`{"errors": [...]}` with the engine's status code.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from stack.api.app import AGENT, request_token
from stack.api.body import json_object
from stack.api.compat.vault import raw_response
from stack.vault.logical import LogicalError, Operation, Request


def _operation(request: web.Request) -> Operation:
    method = request.method.upper()
    if method == "GET":
        return Operation.LIST if "list" in request.query else Operation.READ
    if method in ("PUT", "POST"):
        return Operation.UPDATE
    if method == "PATCH":
        return Operation.PATCH
    if method == "DELETE":
        return Operation.DELETE
    if method == "LIST":
        return Operation.LIST
    raise web.HTTPMethodNotAllowed(method, ["GET", "PUT", "POST", "PATCH", "DELETE"])


def acl_path(rest: str) -> str:
    """The logical path behind `/v1/acl/<rest>`."""
    rest = rest.strip("/")
    if rest == "token/self":
        return "auth/token/lookup-self"
    if rest.startswith("token/"):
        return "auth/token/" + rest[len("token/") :]
    if rest == "policy":
        return "sys/policies/acl"
    if rest.startswith("policy/"):
        return "sys/policies/acl/" + rest[len("policy/") :]
    raise LogicalError(404, f"no ACL endpoint {rest!r}")


async def _body(request: web.Request) -> dict[str, Any] | None:
    return await json_object(
        request,
        not_json="request body is not valid JSON",
        not_object="request body must be a JSON object",
    )


async def _serve(request: web.Request, path: str) -> web.StreamResponse:
    agent = request.app[AGENT]
    req = Request(
        operation=_operation(request),
        path=path,
        data=await _body(request),
        query={k: v for k, v in request.query.items() if k not in ("list", "stale")},
        token=request_token(request) or "",
        remote=request.remote or "",
        id=str(uuid.uuid4()),
        stale="stale" in request.query,
    )
    try:
        resp = await agent.secrets.handle(req)
    except LogicalError as e:
        body: dict[str, Any] = {"errors": [str(e)]}
        if e.data is not None:
            body["data"] = e.data
        return web.json_response(body, status=e.status)
    raw = raw_response(resp)
    if raw is not None:
        return raw
    if resp.data is None and resp.auth is None and not resp.warnings:
        return web.Response(status=204)
    out = {"data": resp.data, "auth": resp.auth, "warnings": resp.warnings or None}
    return web.json_response(out, status=resp.status)


async def secrets(request: web.Request) -> web.StreamResponse:
    return await _serve(request, request.match_info["path"].strip("/"))


async def acl(request: web.Request) -> web.StreamResponse:
    try:
        path = acl_path(request.match_info["path"])
    except LogicalError as e:
        return web.json_response({"errors": [str(e)]}, status=e.status)
    return await _serve(request, path)


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", "/v1/secrets/{path:.*}", secrets)
    app.router.add_route("*", "/v1/acl/{path:.*}", acl)
