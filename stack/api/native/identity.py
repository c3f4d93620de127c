"""The CA, join tokens, unseal and keyring operations (root token, except the CA root,
which is public)."""

from __future__ import annotations

from aiohttp import web

from stack.api.app import AGENT
from stack.api.native.operator import json_body
from stack.errors import BadRequest
from stack.state import ca


async def ca_root(request: web.Request) -> web.Response:
    row = ca.active_root(request.app[AGENT].store)
    if row is None:
        return web.json_response({"errors": ["no CA yet"]}, status=503)
    return web.Response(body=row.cert, content_type="application/x-pem-file")


async def ca_roots(request: web.Request) -> web.Response:
    store = request.app[AGENT].store
    active = ca.active_root(store)
    return web.json_response(
        [
            {
                "generation": r.gen,
                "active": active is not None and r.gen == active.gen,
                "certificate": r.cert.decode(),
                "retire_after": r.retire_after,
            }
            for r in ca.roots(store)
        ]
    )


async def ca_rotate(request: web.Request) -> web.Response:
    gen = await request.app[AGENT].credentials.rotate_ca()
    return web.json_response({"generation": gen})


async def join_token(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    await agent.read_barrier()  # the latest secret, and the keyring term it needs
    return web.json_response({"token": agent.credentials.join_token()})


async def rotate_join(request: web.Request) -> web.Response:
    token = await request.app[AGENT].credentials.rotate_join()
    return web.json_response({"token": token})


async def unseal(request: web.Request) -> web.Response:
    body = await json_body(request)
    key = body.get("key")
    if not isinstance(key, str) or not key:
        raise BadRequest('give one recovery share as {"key": "..."}')
    return web.json_response(await request.app[AGENT].unsealer.recovery_share(key))


async def seal(request: web.Request) -> web.Response:
    unsealer = request.app[AGENT].unsealer
    await unsealer.seal_now()
    return web.json_response(unsealer.status())


async def keyring_rotate(request: web.Request) -> web.Response:
    term = await request.app[AGENT].unsealer.rotate_keyring()
    return web.json_response({"term": term})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/ca/root", ca_root)
    app.router.add_get("/v1/ca/roots", ca_roots)
    app.router.add_post("/v1/operator/ca/rotate", ca_rotate)
    app.router.add_get("/v1/operator/token/join", join_token)
    app.router.add_post("/v1/operator/token/rotate-join", rotate_join)
    app.router.add_post("/v1/sys/unseal", unseal)
    app.router.add_post("/v1/sys/seal", seal)
    app.router.add_post("/v1/operator/keyring/rotate", keyring_rotate)
