"""The Vault-compatible HTTP API (port 8200 by default): a thin adapter onto the
secrets engine, in the shapes hvac and the vault CLI expect.

Every `/v1/<path>` becomes one logical request (`stack/vault/logical.py`):
GET and HEAD are a read (a list with `?list=true`), LIST a list (a connection
that lists is parsed by aiohttp's pure-Python HTTP parser from its first LIST on:
the C one refuses the method; `ListAwareParser`), POST and PUT a
create or update (the engine tells which), PATCH a patch, DELETE a delete. The
token comes from `X-Vault-Token` (or `Authorization: Bearer`). Answers carry Vault's
envelope (`request_id`, `lease_id`, `renewable`, `lease_duration`, `data`,
`wrap_info`, `warnings`, `auth`); errors are `{"errors": [...]}` with Vault's
status codes. `sys/health`, `sys/seal-status`, `sys/init` and `sys/leader` need
no token, as in Vault. See docs/compat-vault.md for what is covered.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web, web_protocol
from aiohttp.http_exceptions import BadHttpMethod
from aiohttp.http_parser import HttpRequestParserPy
from aiohttp.web_protocol import RequestHandler

from stack.api.app import CONNECTION
from stack.api.body import json_object
from stack.api.errors import status_for
from stack.errors import BadRequest
from stack.vault.logical import LogicalError, Operation, Request, Response

if TYPE_CHECKING:
    from stack.agent import Agent

log = structlog.get_logger("stack.api.vault")

AGENT: web.AppKey[Agent] = web.AppKey("vault-agent")
MAX_BODY = 1 << 20
OPEN_PATHS = frozenset({"sys/health", "sys/seal-status", "sys/init", "sys/leader"})
METHODS = ("GET", "HEAD", "LIST", "POST", "PUT", "PATCH", "DELETE")


def _json(body: Any, status: int) -> web.Response:
    # Exactly "application/json", as Vault sends: hvac reads an error's body (the
    # errors, and KV v2's metadata of a deleted version) only on that exact type.
    return web.Response(
        body=json.dumps(body).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def _errors(status: int, *messages: str, data: Any = None) -> web.Response:
    body: dict[str, Any] = {"errors": [m for m in messages if m]}
    if data is not None:
        body["data"] = data
    return _json(body, status)


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
    if method in ("GET", "HEAD"):
        return Operation.READ
    if method in ("POST", "PUT"):
        return Operation.UPDATE
    if method == "PATCH":
        return Operation.PATCH
    if method == "DELETE":
        return Operation.DELETE
    raise web.HTTPMethodNotAllowed(method, list(METHODS))


def _path(request: web.Request) -> str:
    """The logical path; "." and ".." segments and control characters are refused
    here, before any engine sees them (a client may send them unnormalised)."""
    path: str = request.match_info["path"].strip("/")
    if any(seg in (".", "..") for seg in path.split("/")):
        raise BadRequest(f"invalid path {path!r}: '.' and '..' segments are not allowed")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise BadRequest("invalid path: control characters are not allowed")
    return path


async def _data(request: web.Request) -> dict[str, Any] | None:
    return await json_object(
        request,
        not_json="failed to parse JSON input: the body is not valid JSON",
        not_object="failed to parse JSON input: the body must be a JSON object",
    )


def _refuse_unsupported_headers(request: web.Request) -> None:
    """Refused rather than ignored: a client asking for response wrapping expects
    the secret never to reach whoever relays the answer, and one naming a namespace
    expects isolation from the others."""
    if request.headers.get("X-Vault-Wrap-TTL", "").strip():
        raise BadRequest("response wrapping (X-Vault-Wrap-TTL) is not supported")
    if request.headers.get("X-Vault-Namespace", "").strip() not in ("", "root", "/", "root/"):
        raise BadRequest("namespaces (X-Vault-Namespace) are not supported")


def envelope(resp: Response, request_id: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "lease_id": resp.lease_id,
        "renewable": resp.renewable,
        "lease_duration": resp.lease_duration,
        "data": resp.data,
        "wrap_info": None,
        "warnings": resp.warnings or None,
        "auth": resp.auth,
    }


async def logical(request: web.Request) -> web.StreamResponse:
    agent = request.app[AGENT]
    op = _operation(request)
    path = _path(request)
    if path in OPEN_PATHS:
        status, body = await agent.secrets.open_endpoint(path, op, dict(request.query))
        if body is None:
            return web.Response(status=status)
        return _json(body, status)
    _refuse_unsupported_headers(request)
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
    raw = raw_response(resp)
    if raw is not None:
        return raw
    if resp.data is None and resp.auth is None and not resp.warnings and resp.status == 200:
        return web.Response(status=204)
    return _json(envelope(resp, rid), resp.status)


# A request line's method: an RFC 9110 token, then a space.
_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ ")


class ListAwareParser:
    """aiohttp's C HTTP parser (llhttp) for every request, until a request's method
    is one llhttp refuses, such as Vault's LIST: from then on this connection is
    parsed by aiohttp's pure-Python parser, which takes any method token (RFC
    9110; the API then answers 405 to those it does not serve, as Vault does).
    Refused means `BadHttpMethod` on a chunk that starts with a token and a space:
    the refused request begins there, and nothing before it in the chunk was
    parsed, so the Python parser starts at a message boundary. (A request whose
    method and space arrive in two TCP segments, or that is pipelined behind
    another in one segment, gets llhttp's 400.) Most connections never list, and
    the C parser costs a fraction of the Python one per request."""

    def __init__(self, parser: Any, python_parser: Callable[[], Any]) -> None:
        self._parser = parser
        self._python_parser: Callable[[], Any] | None = python_parser

    def feed_data(self, data: bytes) -> Any:
        if self._python_parser is not None:
            try:
                return self._parser.feed_data(data)
            except BadHttpMethod:
                if not _METHOD.match(data):
                    raise
                self._parser, self._python_parser = self._python_parser(), None
        return self._parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


def connection(server: web.Server) -> RequestHandler:
    """One connection to the Vault port: aiohttp's own (C) parser, switched to the
    pure-Python one, configured as the C one is, at the first method it refuses."""
    handler = server()
    limits: dict[str, Any] = {
        "max_line_size": handler.max_line_size,
        "max_field_size": handler.max_field_size,
        "max_headers": getattr(handler, "max_headers", 128),
        "payload_exception": web_protocol.RequestPayloadError,
        "max_msg_queue_size": getattr(web_protocol, "MAX_MSG_QUEUE_SIZE", 0),
    }
    accepted = inspect.signature(HttpRequestParserPy).parameters
    loop = asyncio.get_running_loop()

    def python_parser() -> HttpRequestParserPy:
        return HttpRequestParserPy(
            handler, loop, 2**16, **{k: v for k, v in limits.items() if k in accepted}
        )

    # Duck-typed: the handler only calls feed_data, message_consumed, set_upgraded.
    handler._parser = ListAwareParser(handler._parser, python_parser)  # type: ignore[assignment]
    return handler


def raw_response(resp: Response) -> web.Response | None:
    """A backend answer that is not JSON (PKI's DER and PEM endpoints), written as
    Vault writes it: the body as is, with its content type and status."""
    data = resp.data
    if not data or "http_raw_body" not in data:
        return None
    body = data["http_raw_body"]
    body = body.encode() if isinstance(body, str) else bytes(body or b"")
    status = int(data.get("http_status_code") or (200 if body else 204))
    headers = {"Content-Type": str(data.get("http_content_type") or "application/octet-stream")}
    return web.Response(body=body if status != 204 else None, status=status, headers=headers)


def make_app(agent: Agent) -> web.Application:
    app = web.Application(middlewares=[vault_errors], client_max_size=MAX_BODY)
    app[AGENT] = agent
    app[CONNECTION] = connection
    app.router.add_route("*", "/v1/{path:.*}", logical)
    return app
