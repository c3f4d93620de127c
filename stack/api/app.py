"""The native HTTP API: one aiohttp application, token middleware, error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from stack.api.errors import error_response, status_for
from stack.errors import Forbidden, Unauthorized

if TYPE_CHECKING:
    from stack.agent import Agent

log = structlog.get_logger("stack.api")

AGENT: web.AppKey[Agent] = web.AppKey("agent")
# An app may make its own connections from aiohttp's low-level server (the Vault
# port does, to parse Vault's LIST method, which aiohttp's C parser refuses).
CONNECTION: web.AppKey[Callable[[web.Server], asyncio.Protocol]] = web.AppKey("connection")
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


# Served by the secrets engine, which authenticates and authorises itself (the
# same check as the Vault-compatible port, on the logical path).
SERVICE_PREFIXES = ("/v1/secrets/", "/v1/acl/")
# Paths that also need `sudo` (as Vault's sys/seal, sys/raft and friends do).
SUDO_PREFIXES = ("operator/", "sys/seal", "sys/unseal")


def policy_target(request: web.Request) -> tuple[str, str]:
    """The ACL path and capability a native request needs: the URL path without
    `/v1/`, and the capability its method maps to (GET read, or list for a
    `?recurse`/`?keys` listing; PUT and POST update; DELETE delete)."""
    path = request.path[len("/v1/") :] if request.path.startswith("/v1/") else request.path
    method = request.method.upper()
    if method == "GET" or method == "HEAD":
        listing = "recurse" in request.query or "keys" in request.query
        return path, "list" if listing else "read"
    if method == "DELETE":
        return path, "delete"
    if method == "PATCH":
        return path, "patch"
    return path, "update"


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every endpoint needs a token allowed by its policies, except health and
    status (default deny, one ACL system: `stack/vault/policy.py`)."""
    if request.path in OPEN_PATHS or request.path.startswith(SERVICE_PREFIXES):
        resp: web.StreamResponse = await handler(request)
        return resp
    secret = request_token(request)
    if secret is None:
        raise Unauthorized("missing token: send Authorization: Bearer <token> or X-Stack-Token")
    authz = request.app[AGENT].secrets.authz
    token = await authz.authenticate(secret)
    path, capability = policy_target(request)
    acl = authz.acl(token)
    allowed = acl.allowed(path, capability)
    if not allowed and capability == "update" and request.method.upper() in ("PUT", "POST"):
        allowed = acl.allowed(path, "create")
    if allowed and path.startswith(SUDO_PREFIXES):
        allowed = acl.allowed(path, "sudo")
    if not allowed:
        raise Forbidden(f"permission denied: {capability} on {path}")
    if token.num_uses:
        await authz.spend_use(token)
    request["token"] = token
    resp = await handler(request)
    return resp


async def _index_header(request: web.Request, response: web.StreamResponse) -> None:
    """Every response carries the index of the state it was answered from."""
    if "X-Stack-Index" not in response.headers:
        response.headers["X-Stack-Index"] = str(request.app[AGENT].store.index)


def make_app(agent: Agent) -> web.Application:
    from stack.api.native import identity, kv, operator, ring, secrets, status

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
    secrets.add_routes(app)
    return app


@dataclass
class HttpServer:
    runner: web.AppRunner
    port: int
    listener: asyncio.Server | None = None  # an app with its own CONNECTION factory

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        await self.runner.cleanup()
        if self.listener is not None:
            await self.listener.wait_closed()


async def start_http(
    agent: Agent, app: web.Application | None = None, port: int = -1
) -> HttpServer:
    """Serve `app` (default: the native API on `http_port`) on the bind address."""
    app = app or make_app(agent)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    port = agent.cfg.http_port if port < 0 else port
    # HTTPS with the node certificate whenever the API is reachable off this machine.
    ssl_ctx = agent.credentials.tls.https_context() if agent.http_scheme == "https" else None
    connection = app.get(CONNECTION)
    if connection is not None:
        server = runner.server
        assert server is not None
        listener = await asyncio.get_running_loop().create_server(
            lambda: connection(server), agent.cfg.bind, port, reuse_address=True, ssl=ssl_ctx
        )
        return HttpServer(runner, int(listener.sockets[0].getsockname()[1]), listener)
    site = web.TCPSite(runner, agent.cfg.bind, port, reuse_address=True, ssl_context=ssl_ctx)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else port
    return HttpServer(runner, int(port))
