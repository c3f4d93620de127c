"""`/v1/kv/{key}`: the cluster key/value table for configuration.

Values are stored as given, in plaintext: this table is for configuration, not
secrets (those go to the secrets engine, which encrypts them). Reads are
linearizable unless `?stale`; `?index=N&wait=30s` blocks until the key (or the
prefix, with `?recurse`) changes past N.
"""

from __future__ import annotations

import base64
import re

from aiohttp import web

from stack.api.app import AGENT
from stack.api.native.params import duration_param, flag, int_param
from stack.errors import BadRequest, Conflict, NotFound
from stack.state import kv
from stack.state.blocking import wait_for_change

_CONTROL = re.compile(r"[\x00-\x1f]")
MAX_VALUE = 512 * 1024
MAX_KEY = 1024
INDEX_HEADER = "X-Stack-Index"


def _key(request: web.Request, *, allow_empty: bool) -> str:
    key = request.match_info["key"]
    if not key and not allow_empty:
        raise BadRequest("missing key")
    if len(key.encode()) > MAX_KEY:
        raise BadRequest(f"key longer than {MAX_KEY} bytes")
    if _CONTROL.search(key):
        raise BadRequest("key contains control characters")
    return key


async def get_kv(request: web.Request) -> web.StreamResponse:
    agent = request.app[AGENT]
    recurse = flag(request, "recurse")
    key = _key(request, allow_empty=recurse)
    stale = flag(request, "stale")
    min_index = int_param(request, "index")
    wait = duration_param(request, "wait", 300.0)
    if not stale:
        await agent.read_barrier()
    if min_index:
        await wait_for_change(agent.store, kv.KV_TABLE, key, recurse, min_index, wait)
    if recurse:
        entries, index = kv.list_prefix(agent.store, key)
        body = [
            {
                "key": e.key,
                "value": base64.b64encode(e.value).decode(),
                "flags": e.flags,
                "create_index": e.create_index,
                "modify_index": e.modify_index,
            }
            for e in entries
        ]
        return web.json_response(body, headers={INDEX_HEADER: str(index)})
    entry, index = kv.get(agent.store, key)
    if entry is None:
        raise NotFound(f"key {key!r} not found")
    return web.Response(
        body=entry.value,
        content_type="application/octet-stream",
        headers={INDEX_HEADER: str(index), "X-Stack-Modify-Index": str(entry.modify_index)},
    )


async def put_kv(request: web.Request) -> web.StreamResponse:
    agent = request.app[AGENT]
    key = _key(request, allow_empty=False)
    cas = int_param(request, "cas")
    flags = int_param(request, "flags") or 0
    value = await request.read()
    if len(value) > MAX_VALUE:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_VALUE, actual_size=len(value))
    result = await agent.apply(kv.encode_set(agent.registry, key, value, cas=cas, flags=flags))
    if not result.ok:
        raise Conflict(f"check-and-set failed: key {key!r} is not at index {cas}")
    return web.json_response({"index": result.index}, headers={INDEX_HEADER: str(result.index)})


async def delete_kv(request: web.Request) -> web.StreamResponse:
    agent = request.app[AGENT]
    recurse = flag(request, "recurse")
    key = _key(request, allow_empty=recurse)
    cas = int_param(request, "cas")
    if recurse:
        data = kv.encode_delete_tree(agent.registry, key)
    else:
        data = kv.encode_delete(agent.registry, key, cas=cas)
    result = await agent.apply(data)
    if not result.ok:
        raise Conflict(f"check-and-set failed: key {key!r} is not at index {cas}")
    return web.json_response({"index": result.index}, headers={INDEX_HEADER: str(result.index)})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/kv/{key:.*}", get_kv)
    app.router.add_put("/v1/kv/{key:.*}", put_kv)
    app.router.add_delete("/v1/kv/{key:.*}", delete_kv)
