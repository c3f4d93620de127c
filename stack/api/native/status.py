"""Status, health, seal status and members."""

from __future__ import annotations

from aiohttp import web

from stack.api.app import AGENT
from stack.raft.types import Role


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[AGENT].status())


async def health(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    node = agent.node
    ok = node.fatal is None and bool(node.leader)
    body = {
        "status": "ok" if ok else "degraded",
        "leader": node.role is Role.LEADER,
        "has_leader": bool(node.leader),
    }
    return web.json_response(body, status=200 if ok else 503)


async def seal_status(request: web.Request) -> web.Response:
    """Ours plus Vault's field names (t, n, progress) for its clients."""
    st = request.app[AGENT].unsealer.status()
    st.update(
        {
            "type": "shamir",
            "t": st.get("recovery_needed", 0),
            "n": st.get("recovery_shares", 0),
            "progress": st.get("recovery_progress", 0),
            "initialized": True,
        }
    )
    return web.json_response(st)


async def members(request: web.Request) -> web.Response:
    return web.json_response(request.app[AGENT].membership.members())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/sys/seal-status", seal_status)
    app.router.add_get("/v1/members", members)
