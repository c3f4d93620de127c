"""The native HTTP API: one aiohttp application, token middleware, error mapping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from stack.api.errors import error_response, status_for
from stack.errors import Forbidden, Unauthorized
from stack.state import tokens

if TYPE_CHECKING:
    from stack.agent import Agent

log = structlog.get_logger("stack.api")

AGENT: web.AppKey[Agent] = web.AppKey("agent")
OPEN_PATHS = frozenset({"/v1/status", "/v1/health", "/v1/sys/seal-status", "/v1/ca/root"})
MAX_BODY = 1 << 20


def request_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("X-Stack-Token") or None


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        resp: web.StreamResponse = await handler(request)
        return resp
    except web.HTTPException as e:
        if e.status < 400:
            raise
        reason = e.text if e.text and not e.text.startswith(str(e.status)) else e.reason
        return error_response(e.status, reason)
    except Exception as e:
        status = status_for(e)
        if status is None:
            log.exception("unhandled error", path=request.path, method=request.method)
            return error_response(500, "internal error")
        return error_response(status, str(e) or type(e).__name__)


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every endpoint needs a token except health and status. The secrets engine
    extends this check with policies; for now the only token is root."""
    if request.path in OPEN_PATHS:
        resp: web.StreamResponse = await handler(request)
        return resp
    secret = request_token(request)
    if secret is None:
        raise Unauthorized("missing token: send Authorization: Bearer <token> or X-Stack-Token")
    info = tokens.lookup(request.app[AGENT].store, secret)
    if info is None:
        raise Forbidden("permission denied: unknown token")
    request["token"] = info
    resp = await handler(request)
    return resp


async def _index_header(request: web.Request, response: web.StreamResponse) -> None:
    """Every response carries the index of the state it was answered from."""
    if "X-Stack-Index" not in response.headers:
        response.headers["X-Stack-Index"] = str(request.app[AGENT].store.index)


def make_app(agent: Agent) -> web.Application:
    from stack.api.native import identity, kv, operator, ring, status

    app = web.Application(
        middlewares=[errors_middleware, auth_middleware], client_max_size=MAX_BODY
    )
    app[AGENT] = agent
    app.on_response_prepare.append(_index_header)
    status.add_routes(app)
    kv.add_routes(app)
    operator.add_routes(app)
    identity.add_routes(app)
    ring.add_routes(app)
    return app


@dataclass
class HttpServer:
    runner: web.AppRunner
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_http(agent: Agent) -> HttpServer:
    runner = web.AppRunner(make_app(agent), access_log=None, handle_signals=False)
    await runner.setup()
    # HTTPS with the node certificate whenever the API is reachable off this machine.
    ssl_ctx = agent.credentials.tls.https_context() if agent.http_scheme == "https" else None
    site = web.TCPSite(
        runner, agent.cfg.bind, agent.cfg.http_port, reuse_address=True, ssl_context=ssl_ctx
    )
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else agent.cfg.http_port
    return HttpServer(runner, int(port))
