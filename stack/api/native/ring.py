"""The gossip ring: the substrate survey and the gossip keyring (root token)."""

from __future__ import annotations

from aiohttp import web

from stack import substrate
from stack.agent import from_rpc
from stack.api.app import AGENT
from stack.errors import NoLeader
from stack.net.rpc import RpcError
from stack.raft.types import Role


async def sys_substrate(request: web.Request) -> web.Response:
    return web.json_response(await substrate.survey(request.app[AGENT]))


async def gossip_keyring(request: web.Request) -> web.Response:
    """Key ids only (never keys): ours, and what every member advertises."""
    agent = request.app[AGENT]
    stats = agent.ring.stats()
    members = [
        {
            "id": m.name,
            "name": m.tags.get("name", m.name),
            "state": m.state.name.lower(),
            "keyring_version": int(m.tags.get("kr", "0") or 0),
        }
        for m in agent.ring.members()
    ]
    return web.json_response(
        {
            "version": stats["keyring_version"],
            "primary": stats["primary_key_id"],
            "keys": stats["key_ids"],
            "members": members,
        }
    )


async def gossip_rotate(request: web.Request) -> web.Response:
    """Install, switch to and then remove a new gossip key on every member; runs on
    the leader (forwarded there) and answers when all three steps are confirmed."""
    agent = request.app[AGENT]
    if agent.node.role is Role.LEADER:
        return web.json_response(await agent.ring.rotate())
    leader = agent.node.leader
    if not leader:
        raise NoLeader("no leader to rotate the gossip keyring")
    try:
        body = await agent.transport.request(leader, "gossip.rotate", None, 200.0)
    except RpcError as e:
        raise from_rpc(e) from None
    return web.json_response(body)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/sys/substrate", sys_substrate)
    app.router.add_get("/v1/operator/gossip/keyring", gossip_keyring)
    app.router.add_post("/v1/operator/gossip/keyring/rotate", gossip_rotate)
