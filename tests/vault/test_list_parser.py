"""The Vault port's HTTP parsing (`stack.api.compat.vault.connection`): aiohttp's C
parser until a connection sends Vault's LIST, the pure-Python one from then on.
Real sockets on 127.0.0.221, a real aiohttp server that answers with the method
and path it parsed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from stack.api.compat.vault import ListAwareParser, connection

ADDR = "127.0.0.221"
C, PY = "aiohttp._http_parser", "aiohttp.http_parser"  # the C parser, the Python one

pytestmark = pytest.mark.timeout(30)


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    parser = request.protocol._parser  # type: ignore[attr-defined]
    assert isinstance(parser, ListAwareParser)
    which = type(parser._parser).__module__  # the one in use for this connection
    return web.Response(text=f"{request.method} {request.path} {len(body)} {which}")


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_route("*", "/v1/{path:.*}", echo)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    server = runner.server
    assert server is not None
    listener = await asyncio.get_running_loop().create_server(lambda: connection(server), ADDR, 0)
    yield int(listener.sockets[0].getsockname()[1])
    listener.close()
    await runner.cleanup()
    await listener.wait_closed()


def request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def answer(reader: asyncio.StreamReader) -> tuple[int, str]:
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, (await reader.readexactly(length)).decode()


async def test_one_connection_mixes_methods_and_lists(port: int) -> None:
    reader, writer = await asyncio.open_connection(ADDR, port)
    try:
        steps = [
            ("GET", "/v1/a", b"", C),
            ("POST", "/v1/b", b"LIST /v1/not-a-request HTTP/1.1\r\n", C),  # a body
            ("LIST", "/v1/secret/metadata/", b"", PY),
            ("GET", "/v1/c", b"", PY),
            ("PUT", "/v1/d", b"{}", PY),
            ("LIST", "/v1/e", b"", PY),
        ]
        for method, path, body, parser in steps:
            writer.write(request(method, path, body))
            await writer.drain()
            assert await answer(reader) == (200, f"{method} {path} {len(body)} {parser}")
    finally:
        writer.close()


async def test_a_connection_may_list_first(port: int) -> None:
    reader, writer = await asyncio.open_connection(ADDR, port)
    try:
        writer.write(request("LIST", "/v1/x"))
        assert await answer(reader) == (200, f"LIST /v1/x 0 {PY}")
        writer.write(request("GET", "/v1/y"))
        assert await answer(reader) == (200, f"GET /v1/y 0 {PY}")
    finally:
        writer.close()


async def test_other_methods_reach_the_api_and_garbage_gets_400(port: int) -> None:
    # A method llhttp refuses switches too (the API answers it: here the echo, on
    # the Vault port a 405); bytes that are no request line stay llhttp's 400.
    reader, writer = await asyncio.open_connection(ADDR, port)
    try:
        writer.write(request("BREW", "/v1/pot"))
        assert await answer(reader) == (200, f"BREW /v1/pot 0 {PY}")
    finally:
        writer.close()
    for raw in (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", b"GET\x00 / HTTP/1.1\r\n\r\n"):
        reader, writer = await asyncio.open_connection(ADDR, port)
        try:
            writer.write(raw)
            status, _ = await answer(reader)
            assert status == 400
        finally:
            writer.close()
