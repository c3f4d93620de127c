"""A bare aiohttp server: every request gets 200 and one fixed JSON body.

    python -m bench.bare_http --host 127.0.0.74 --port 17483

The ceiling the Vault benchmark (`bench.vault_bench`) measures stack against: the
same HTTP server a stack node runs (aiohttp, default event loop, no access log), one
process, none of the node's work. The body has the shape and about the size of a
KV v2 read answer, so both put the same bytes on the wire.
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web

BODY = json.dumps(
    {
        "request_id": "00000000-0000-4000-8000-000000000000",
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": {
            "data": {"password": "x" * 40, "user": "bench-user-0000"},
            "metadata": {
                "created_time": "2026-01-01T00:00:00.000000000Z",
                "custom_metadata": None,
                "deletion_time": "",
                "destroyed": False,
                "version": 1,
            },
        },
        "wrap_info": None,
        "warnings": None,
        "auth": None,
    }
).encode()


async def answer(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bare_http", description=__doc__)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
