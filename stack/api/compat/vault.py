"""The Vault-compatible HTTP API (port 8200 by default): a thin adapter onto the
secrets engine, in the shapes hvac and the vault CLI expect.

Every `/v1/<path>` becomes one logical request (`stack/vault/logical.py`):
GET is a read (a list with `?list=true`), LIST a list, POST and PUT a create or
update (the engine tells which), PATCH a patch, DELETE a delete. The token comes
from `X-Vault-Token` (or `Authorization: Bearer`). Answers carry Vault's
envelope (`request_id`, `lease_id`, `renewable`, `lease_duration`, `data`,
`wrap_info`, `warnings`, `auth`); errors are `{"errors": [...]}` with Vault's
status codes. `sys/health`, `sys/seal-status`, `sys/init` and `sys/leader` need
no token, as in Vault. See docs/compat-vault.md for what is covered.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from stack.api.errors import status_for
from stack.errors import BadRequest
from stack.vault.logical import LogicalError, Operation, Request, Response

if TYPE_CHECKING:
    from stack.agent import Agent

log = structlog.get_logger("stack.api.vault")

AGENT: web.AppKey[Agent] = web.AppKey("vault-agent")
MAX_BODY = 1 << 20
OPEN_PATHS = frozenset({"sys/health", "sys/seal-status", "sys/init", "sys/leader"})


def _errors(status: int, *messages: str, data: Any = None) -> web.Response:
    body: dict[str, Any] = {"errors": [m for m in messages if m]}
    if data is not None:
        body["data"] = data
    return web.json_response(body, status=status)


@web.middleware
async def vault_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        resp: web.StreamResponse = await handler(request)
        return resp
    except LogicalError as e:
        return _errors(e.status, str(e), data=e.data)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _errors(e.status, e.reason)
    except Exception as e:
        status = status_for(e)
        if status is None:
            log.exception("unhandled error", path=request.path, method=request.method)
            return _errors(500, "internal error")
        return _errors(status, str(e) or type(e).__name__)


def _token(request: web.Request) -> str:
    tok = request.headers.get("X-Vault-Token", "")
    if not tok:
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            tok = auth[7:].strip()
    return tok


def _operation(request: web.Request) -> Operation:
    method = request.method.upper()
    if method == "LIST" or (method == "GET" and request.query.get("list") == "true"):
        return Operation.LIST
    if method == "GET":
        return Operation.READ
    if method in ("POST", "PUT"):
        return Operation.UPDATE
    if method == "PATCH":
        return Operation.PATCH
    if method == "DELETE":
        return Operation.DELETE
    raise web.HTTPMethodNotAllowed(method, ["GET", "LIST", "POST", "PUT", "PATCH", "DELETE"])


async def _data(request: web.Request) -> dict[str, Any] | None:
    if not request.can_read_body:
        return None
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("failed to parse JSON input: the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("failed to parse JSON input: the body must be a JSON object")
    return body


def envelope(resp: Response, request_id: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "lease_id": "",
        "renewable": resp.renewable,
        "lease_duration": resp.lease_duration,
        "data": resp.data,
        "wrap_info": None,
        "warnings": resp.warnings or None,
        "auth": resp.auth,
    }


async def logical(request: web.Request) -> web.StreamResponse:
    agent = request.app[AGENT]
    path = request.match_info["path"].strip("/")
    op = _operation(request)
    if path in OPEN_PATHS:
        status, body = await agent.secrets.open_endpoint(path, op, dict(request.query))
        if body is None:
            return web.Response(status=status)
        return web.json_response(body, status=status)
    rid = str(uuid.uuid4())
    req = Request(
        operation=op,
        path=path,
        data=await _data(request),
        query={k: v for k, v in request.query.items() if k != "list"},
        token=_token(request),
        remote=request.remote or "",
        id=rid,
        stale=request.headers.get("X-Vault-Stale", "") == "true" or "stale" in request.query,
    )
    resp = await agent.secrets.handle(req)
    if resp.data is None and resp.auth is None and not resp.warnings and resp.status == 200:
        return web.Response(status=204)
    return web.json_response(envelope(resp, rid), status=resp.status)


def make_app(agent: Agent) -> web.Application:
    app = web.Application(middlewares=[vault_errors], client_max_size=MAX_BODY)
    app[AGENT] = agent
    app.router.add_route("*", "/v1/{path:.*}", logical)
    return app
