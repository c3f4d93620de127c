from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from structlog.testing import capture_logs

from stack.codec import encode_message
from stack.net.rpc import Kind, PeerTransport, RpcError, RpcServer, RpcTimeout, frame
from stack.raft.types import AnyMessage, Heartbeat, TimeoutNow, VoteRequest

pytestmark = pytest.mark.timeout(30)

CLUSTER = "c-test"


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.005)


class Server:
    """An RpcServer for node `node_id` recording what it receives."""

    def __init__(self, node_id: int = 2, **kw: Any) -> None:
        self.raft: list[AnyMessage] = []
        self.requests: list[tuple[int, str, Any]] = []
        self.rpc = RpcServer(
            node_id=node_id,
            cluster_id=CLUSTER,
            on_raft=self.raft.append,
            on_request=self.on_request,
            **kw,
        )

    async def on_request(self, peer: int, method: str, body: Any) -> Any:
        self.requests.append((peer, method, body))
        if method == "echo":
            return {"peer": peer, "body": body}
        if method == "not_leader":
            raise RpcError("not_leader", "leader is 3")
        if method == "hang":
            await asyncio.Event().wait()
        raise KeyError(method)

    def commits(self) -> list[int]:
        return [m.commit for m in self.raft if isinstance(m, Heartbeat)]


async def start(host: str, port: int = 0, **kw: Any) -> Server:
    s = Server(**kw)
    await s.rpc.start(host, port)
    return s


def transport(**kw: Any) -> PeerTransport:
    kw.setdefault("backoff_min", 0.01)
    kw.setdefault("backoff_max", 0.1)
    return PeerTransport(node_id=1, cluster_id=kw.pop("cluster_id", CLUSTER), **kw)


def hb(commit: int, to: int = 2) -> Heartbeat:
    return Heartbeat(1, to, 5, commit=commit, ctx=b"c%d" % commit)


def raw_frame(kind: int, payload: bytes, version: int = 1) -> bytes:
    return (len(payload) + 2).to_bytes(4, "big") + bytes((version, kind)) + payload


def hello(node_id: int = 1, cluster: str = CLUSTER) -> bytes:
    return raw_frame(Kind.HELLO, msgpack.packb([node_id, cluster]))


async def test_messages_delivered_in_order() -> None:
    srv = await start("127.0.0.51")
    t = transport()
    try:
        t.set_peer(2, "127.0.0.51", srv.rpc.port)
        for i in range(500):  # queued while the connection is being set up
            t.send(hb(i))
        await until(lambda: len(srv.raft) == 500)
        assert srv.commits() == list(range(500))
        # (the server can read every frame before our side has read its HELLO reply)
        await until(lambda: t.peer_state(2) == "up")
        for i in range(500, 1000):
            t.send(hb(i))
            if i % 50 == 0:
                await asyncio.sleep(0)
        t.send(VoteRequest(1, 2, 6, 10, 5, pre_vote=True))
        await until(lambda: len(srv.raft) == 501 + 500)
        assert srv.commits() == list(range(1000))
        assert srv.raft[-1] == VoteRequest(1, 2, 6, 10, 5, pre_vote=True)
        assert t.dropped == 0
    finally:
        await t.close()
        await srv.rpc.close()


async def test_queued_messages_are_written_in_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    srv = await start("127.0.0.52")
    t = transport()
    try:
        t.set_peer(2, "127.0.0.52", srv.rpc.port)
        assert await t.request(2, "echo", 1, timeout=5) == {"peer": 1, "body": 1}
        writes: list[int] = []
        real_write = asyncio.StreamWriter.write

        def counting_write(self: asyncio.StreamWriter, data: Any) -> None:
            writes.append(len(data))
            real_write(self, data)

        monkeypatch.setattr(asyncio.StreamWriter, "write", counting_write)
        for i in range(1000):
            t.send(hb(i))
        await until(lambda: len(srv.raft) == 1000)
        assert srv.commits() == list(range(1000))
        assert len(writes) == 1, writes
    finally:
        await t.close()
        await srv.rpc.close()


async def test_queue_bound_drops_and_counts() -> None:
    srv = await start("127.0.0.52")
    t = transport(max_queue=10)
    try:
        t.set_peer(2, "127.0.0.52", srv.rpc.port)
        for i in range(100):  # no await: the sender cannot drain in between
            t.send(hb(i))
        assert t.dropped == 90
        await until(lambda: len(srv.raft) == 10)
        await asyncio.sleep(0.05)
        assert srv.commits() == list(range(10))
    finally:
        await t.close()
        await srv.rpc.close()


async def test_request_response_and_errors() -> None:
    srv = await start("127.0.0.53")
    t = transport()
    try:
        t.set_peer(2, "127.0.0.53", srv.rpc.port)
        body = {"key": "a/b", "value": b"\x00\xff", "n": [1, 2, 3]}
        assert await t.request(2, "echo", body, timeout=5) == {"peer": 1, "body": body}
        results = await asyncio.gather(*(t.request(2, "echo", i, timeout=5) for i in range(50)))
        assert [r["body"] for r in results] == list(range(50))
        with pytest.raises(RpcError) as err:
            await t.request(2, "not_leader", None, timeout=5)
        assert (err.value.code, err.value.message) == ("not_leader", "leader is 3")
        with pytest.raises(RpcError) as err:
            await t.request(2, "nope", None, timeout=5)
        assert err.value.code == "internal"
        assert "KeyError" in err.value.message
        with pytest.raises(RpcError) as err:
            await t.request(7, "echo", None, timeout=5)
        assert err.value.code == "unknown_peer"
        with pytest.raises(RpcError) as err:
            await t.request(2, "echo", object(), timeout=5)
        assert err.value.code == "bad_request"
        # the connection survived all of that
        assert await t.request(2, "echo", "still", timeout=5) == {"peer": 1, "body": "still"}
    finally:
        await t.close()
        await srv.rpc.close()


async def test_request_timeout() -> None:
    srv = await start("127.0.0.54")
    t = transport()
    try:
        t.set_peer(2, "127.0.0.54", srv.rpc.port)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(RpcTimeout) as err:
            await t.request(2, "hang", None, timeout=0.2)
        assert 0.15 < loop.time() - began < 2.0
        assert err.value.code == "timeout"
        assert isinstance(err.value, RpcError)
        assert await t.request(2, "echo", 5, timeout=5) == {"peer": 1, "body": 5}
    finally:
        await t.close()
        await srv.rpc.close()


async def exchange(host: str, port: int, data: bytes) -> bytes | None:
    """Write `data` on a raw connection and read until the server closes it: the bytes
    read before EOF, or None if the close was a reset (the server closed with our
    bytes still unread, which it does when it rejects a frame by its header)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        return None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


BAD_STREAMS: dict[str, bytes] = {
    "garbage": b"\x13\x37GARBAGE-MARKER" * 20,
    "oversized length": (1 << 30).to_bytes(4, "big") + b"\x01\x01GARBAGE-MARKER",
    "frame above max_frame": raw_frame(Kind.RAFT, b"GARBAGE-MARKER" * 5000),
    "huge garbage": b"GARBAGE-MARKER" * 200_000,
    "zero length": b"\x00\x00\x00\x00",
    "wrong version": raw_frame(Kind.HELLO, msgpack.packb([1, CLUSTER]), version=2),
    "unknown kind": raw_frame(9, b"GARBAGE-MARKER"),
    "no hello first": raw_frame(Kind.RAFT, encode_message(TimeoutNow(1, 2, 3))),
    "malformed hello": raw_frame(Kind.HELLO, b"GARBAGE-MARKER"),
    "hello as a map": raw_frame(Kind.HELLO, msgpack.packb({"id": 1})),
    "wrong cluster id": hello(cluster="other-cluster"),
    "bad raft payload": hello() + raw_frame(Kind.RAFT, b"\x94GARBAGE-MARKER"),
    "spoofed sender": hello(node_id=1) + raw_frame(Kind.RAFT, encode_message(TimeoutNow(4, 2, 3))),
    "wrong recipient": hello() + raw_frame(Kind.RAFT, encode_message(TimeoutNow(1, 9, 3))),
    "response to server": hello() + raw_frame(Kind.RESPONSE, msgpack.packb([1, True, None])),
    "malformed request": hello() + raw_frame(Kind.REQUEST, msgpack.packb([1, 2])),
    "raft from no cluster": hello(cluster="")
    + raw_frame(Kind.RAFT, encode_message(TimeoutNow(1, 2, 3))),
}


@pytest.mark.parametrize("data", BAD_STREAMS.values(), ids=BAD_STREAMS.keys())
async def test_bad_stream_closes_connection_and_server_keeps_serving(data: bytes) -> None:
    srv = await start("127.0.0.55", max_frame=1 << 16)
    t = transport()
    try:
        with capture_logs() as logs:
            got = await exchange("127.0.0.55", srv.rpc.port, data)
        if data.startswith((hello(), hello(cluster=""))):
            assert got == bytes(b"".join(frame(Kind.HELLO, msgpack.packb([2, CLUSTER]))))
        else:
            assert got in (b"", None)  # nothing, not even the server's HELLO
        assert srv.raft == []
        warnings = [e for e in logs if e["log_level"] == "warning"]
        assert [e["event"] for e in warnings] == ["rpc_connection_rejected"]
        assert "GARBAGE" not in repr(logs) and "MARKER" not in repr(logs)
        # a well-behaved client is still served
        t.set_peer(2, "127.0.0.55", srv.rpc.port)
        t.send(hb(7))
        await until(lambda: srv.commits() == [7])
    finally:
        await t.close()
        await srv.rpc.close()


async def test_silent_client_is_dropped_after_hello_timeout() -> None:
    srv = await start("127.0.0.55", hello_timeout=0.1)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.55", srv.rpc.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await writer.wait_closed()
    finally:
        await srv.rpc.close()


async def test_client_of_another_cluster_is_refused() -> None:
    srv = await start("127.0.0.56")
    t = transport(cluster_id="other-cluster")
    try:
        t.set_peer(2, "127.0.0.56", srv.rpc.port)
        t.send(hb(1))
        with pytest.raises(RpcError) as err:
            await t.request(2, "echo", 1, timeout=5)
        assert err.value.code == "unavailable"
        await asyncio.sleep(0.1)
        assert srv.raft == [] and srv.requests == []
    finally:
        await t.close()
        await srv.rpc.close()


async def test_on_raft_exception_does_not_drop_connection() -> None:
    seen: list[AnyMessage] = []

    def on_raft(msg: AnyMessage) -> None:
        seen.append(msg)
        if len(seen) == 1:
            raise RuntimeError("node loop hiccup")

    srv = Server()
    srv.rpc = RpcServer(node_id=2, cluster_id=CLUSTER, on_raft=on_raft, on_request=srv.on_request)
    await srv.rpc.start("127.0.0.56", 0)
    t = transport()
    try:
        t.set_peer(2, "127.0.0.56", srv.rpc.port)
        with capture_logs():
            t.send(hb(1))
            t.send(hb(2))
            await until(lambda: len(seen) == 2)
        assert [m.commit for m in seen if isinstance(m, Heartbeat)] == [1, 2]
        assert t.peer_state(2) == "up"
    finally:
        await t.close()
        await srv.rpc.close()


async def test_reconnects_after_peer_restart() -> None:
    srv = await start("127.0.0.57")
    port = srv.rpc.port
    t = transport()
    try:
        t.set_peer(2, "127.0.0.57", port)
        t.send(hb(0))
        await until(lambda: srv.commits() == [0])
        await srv.rpc.close()
        await until(lambda: t.peer_state(2) != "up")
        srv2 = await start("127.0.0.57", port)
        try:
            i = 1
            while not srv2.raft:  # lost while the transport is down or backing off: fine
                t.send(hb(i))
                i += 1
                await asyncio.sleep(0.01)
            await until(lambda: t.peer_state(2) == "up")
            first = srv2.commits()[0]
            for j in range(i, i + 100):
                t.send(hb(j))
            await until(lambda: srv2.commits()[-1:] == [i + 99])
            got = srv2.commits()
            assert got == list(range(first, i + 100))
            assert srv.raft[-1:] == [hb(0)]
            assert await t.request(2, "echo", "x", timeout=5) == {"peer": 1, "body": "x"}
        finally:
            await srv2.rpc.close()
    finally:
        await t.close()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


async def test_send_to_unknown_or_unreachable_peer_does_not_raise() -> None:
    t = transport()
    try:
        t.send(hb(1, to=42))  # no address known
        assert t.dropped == 1
        t.set_peer(3, "127.0.0.58", _free_port("127.0.0.58"))  # nothing listens there
        for i in range(20):
            t.send(hb(i, to=3))
        await until(lambda: t.peer_state(3) == "down")
        for i in range(20):
            t.send(hb(i, to=3))
        assert t.dropped == 41
        with pytest.raises(RpcError) as err:
            await t.request(3, "echo", 1, timeout=1)
        assert err.value.code == "unavailable"
        t.send("not a message")  # type: ignore[arg-type]
        t.remove_peer(3)
        t.send(hb(1, to=3))
        assert t.dropped == 43
    finally:
        await t.close()


def _tls_contexts(tmp: Path, host: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node2")])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    client = ssl.create_default_context(cafile=str(tmp / "cert.pem"))
    return server, client


async def test_tls_transport(tmp_path: Path) -> None:
    server_ctx, client_ctx = _tls_contexts(tmp_path, "127.0.0.59")
    srv = await start("127.0.0.59", ssl=server_ctx)
    t = transport(ssl=client_ctx)
    plain = transport()
    try:
        t.set_peer(2, "127.0.0.59", srv.rpc.port)
        t.send(hb(1))
        assert await t.request(2, "echo", "tls", timeout=5) == {"peer": 1, "body": "tls"}
        assert srv.commits() == [1]
        plain.set_peer(2, "127.0.0.59", srv.rpc.port)  # a plaintext client gets nowhere
        with capture_logs(), pytest.raises(RpcError):
            await plain.request(2, "echo", "plain", timeout=5)
        assert [r[2] for r in srv.requests] == ["tls"]
    finally:
        await plain.close()
        await t.close()
        await srv.rpc.close()


async def test_request_addr_for_join_and_discovery() -> None:
    srv = await start("127.0.0.60", open_methods=frozenset({"echo"}))
    joiner = transport(cluster_id="")  # in no cluster yet
    member = transport()
    other = transport(cluster_id="other-cluster")
    try:
        port = srv.rpc.port
        got = await joiner.request_addr("127.0.0.60", port, "echo", {"id": 1}, 5)
        assert got == {"peer": 1, "body": {"id": 1}}
        got = await member.request_addr("127.0.0.60", port, "echo", 2, 5)
        assert got == {"peer": 1, "body": 2}
        got = await other.request_addr("127.0.0.60", port, "echo", 3, 5, cluster_id="")
        assert got == {"peer": 1, "body": 3}
        with capture_logs():
            with pytest.raises(RpcError) as err:
                await other.request_addr("127.0.0.60", port, "echo", 4, 5)
            assert err.value.code == "unavailable"  # the server hung up on the HELLO
            with pytest.raises(RpcError) as err:
                await member.request_addr("127.0.0.60", port, "not_leader", None, 5)
            assert (err.value.code, err.value.message) == ("not_leader", "leader is 3")
            with pytest.raises(RpcError) as err:  # not an open method
                await joiner.request_addr("127.0.0.60", port, "not_leader", None, 5)
            assert err.value.code == "forbidden"
            with pytest.raises(RpcTimeout):
                await member.request_addr("127.0.0.60", port, "hang", None, 0.2)
            with pytest.raises(RpcError) as err:
                free = _free_port("127.0.0.60")
                await member.request_addr("127.0.0.60", free, "echo", None, 5)
            assert err.value.code == "unavailable"
        assert [r[2] for r in srv.requests if r[1] == "echo"] == [{"id": 1}, 2, 3]
        assert [r[1] for r in srv.requests if r[1] != "echo"] == ["not_leader", "hang"]
    finally:
        for t in (joiner, member, other):
            await t.close()
        await srv.rpc.close()


async def test_request_in_flight_when_the_peer_dies_has_an_unknown_outcome() -> None:
    """A request the peer may have served is "connection_lost", never "unavailable"
    (which callers read as "never sent" and may retry)."""
    srv = await start("127.0.0.57")
    t = transport()
    try:
        t.set_peer(2, "127.0.0.57", srv.rpc.port)
        assert (await t.request(2, "echo", 1, timeout=5))["body"] == 1
        hung = asyncio.ensure_future(t.request(2, "hang", None, timeout=10))
        await until(lambda: any(m == "hang" for _, m, _ in srv.requests))
        await srv.rpc.close()
        with pytest.raises(RpcError) as err:
            await hung
        assert err.value.code == "connection_lost"
    finally:
        await t.close()
        await srv.rpc.close()
