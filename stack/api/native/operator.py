"""Operator endpoints: Raft peers, removing a peer, transferring leadership, leave."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from stack.api.app import AGENT
from stack.errors import BadRequest


async def json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


async def peers(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    out = [m for m in agent.membership.members() if m["raft"] != "none"]
    return web.json_response(out)


async def remove_peer(request: web.Request) -> web.Response:
    body = await json_body(request)
    ident = body.get("id") or body.get("name") or request.query.get("id")
    if not isinstance(ident, str) or not ident:
        raise BadRequest('give the peer as {"id": ...} or {"name": ...}')
    index = await request.app[AGENT].remove_peer(ident)
    return web.json_response({"index": index})


async def transfer_leader(request: web.Request) -> web.Response:
    body = await json_body(request)
    to = body.get("to")
    if to is not None and not isinstance(to, str):
        raise BadRequest("to must be a node id or name")
    leader = await request.app[AGENT].transfer_leader(to or None)
    return web.json_response({"leader": str(leader)})


async def leave(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    index = await agent.remove_peer(str(agent.ident.id))
    await agent.ring.leave()
    asyncio.get_running_loop().call_later(0.2, lambda: asyncio.ensure_future(agent.stop()))
    return web.json_response({"index": index, "left": True})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/operator/raft/peers", peers)
    app.router.add_post("/v1/operator/raft/remove-peer", remove_peer)
    app.router.add_post("/v1/operator/raft/transfer-leader", transfer_leader)
    app.router.add_post("/v1/operator/leave", leave)
