"""Hostile and broken input to a real node, over HTTP and on the cluster RPC port:
each is refused with the right status (a JSON error body) or a closed connection,
and afterwards the node still serves and every earlier write is intact."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from cluster import (
    GOSSIP_PORT,
    HELLO,
    HTTP_PORT,
    RAFT,
    REQUEST,
    RESPONSE,
    RPC_PORT,
    Harness,
    Node,
    Response,
    RpcConn,
    assert_values,
    gossip_keys,
    pack,
    rpc_exchange,
    wait_until,
)
from cluster import rpc_frame as frame

from stack.gossip.codec import encode
from stack.gossip.keyring import GossipKeyring
from stack.gossip.types import Ping
from stack.net.tls import probe_context

pytestmark = pytest.mark.slow

MiB = 1 << 20


def assert_error(resp: Response, status: int | tuple[int, ...]) -> None:
    """The status (one of them) and a JSON body {"errors": [non-empty strings]}."""
    want = (status,) if isinstance(status, int) else status
    assert resp.status in want, f"wanted {want}, got {resp.status} {resp.body[:200]!r}"
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict) and list(body) == ["errors"], body
    assert body["errors"] and all(isinstance(e, str) and e for e in body["errors"]), body


# ---------------------------------------------------------------- raw sockets
def raw_exchange(addr: str, port: int, data: bytes, *, half_close: bool = False,
                 timeout: float = 10.0) -> tuple[bytes, bool]:  # fmt: skip
    """Send data (plaintext), then read until the server closes or `timeout` passes.
    Returns what came back and whether the server closed the connection."""
    with socket.create_connection((addr, port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return b"", True
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                return got, True
            if not chunk:
                return got, True
            got += chunk
        return got, False


# ---------------------------------------------------------------- the test
@pytest.mark.timeout(120)
def test_bad_input_is_refused_and_the_node_survives(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    node = h.bootstrap()
    written = {f"good/{i}": f"value {i}".encode() for i in range(10)}
    for k, v in written.items():
        node.put(k, v)
    cluster_id = node.status()["cluster_id"]

    # A half frame as the very first bytes of a TLS session, left hanging: the server
    # must give up on it (after its HELLO timeout). Opened first, checked last.
    lingering = RpcConn(node.addr, probe_context(), timeout=30)
    lingering.send(frame(HELLO, pack([7, ""]))[:5])
    t_lingering = time.monotonic()

    try:
        check_tokens(node)
        check_paths_and_methods(node)
        check_sizes(node)
        check_query_params(node)
        check_operator_json(node)
        check_http_garbage(node)
        check_rpc_garbage(node, cluster_id)
        check_gossip_garbage(node)

        lingering.read(timeout=max(1.0, t_lingering + 25 - time.monotonic()))
        assert lingering.closed, "a half frame held the RPC connection open"
        assert lingering.data == b"", lingering.data[:100]
        print(f"half frame: closed after {time.monotonic() - t_lingering:.1f}s")
    finally:
        lingering.close()

    # Still alive, still leading, still serving, nothing lost, new writes work.
    assert node.running
    st = node.status()
    assert st["role"] == "leader", st
    assert node.request("GET", "/v1/health", auth=False).status == 200
    assert_values(node, written)
    assert node.get("nope/missing").status == 404
    node.put("good/after", b"still here")
    assert node.get("good/after").body == b"still here"
    peers = node.peers()
    assert [(p["name"], p["raft"]) for p in peers] == [("n1", "voter")], peers
    # No handler failed on any of it (the API logs "unhandled error" for a 500, the
    # RPC server "rpc_request_failed" / "rpc_on_raft_failed" for a failed handler).
    log = node.stderr()
    for event in ("unhandled error", "rpc_request_failed", "rpc_on_raft_failed",
                  "raft loop stopped"):  # fmt: skip
        assert event not in log, f"{event!r} in the node's log"


def check_tokens(node: Node) -> None:
    k = "/v1/kv/good/0"
    for path, method in ((k, "GET"), (k, "PUT"), (k, "DELETE"), ("/v1/members", "GET"),
                         ("/v1/operator/raft/peers", "GET"),
                         ("/v1/operator/raft/remove-peer", "POST"),
                         ("/v1/operator/leave", "POST")):  # fmt: skip
        body = b"x" if method in ("PUT", "POST") else None
        # Missing: no header, an empty bearer, another scheme.
        assert_error(node.request(method, path, body, auth=False), 401)
        for hdr in ({"Authorization": "Bearer "}, {"Authorization": "Basic dXNlcjpwYXNz"},
                    {"X-Stack-Token": ""}):  # fmt: skip
            assert_error(node.request(method, path, body, auth=False, headers=hdr), 401)
        # Wrong or malformed: forbidden.
        for tok in ("st.wrong", "x" * 4000, "'; DROP TABLE tokens; --", "st.\u00e9t\u00e9"):
            hdr = {"Authorization": f"Bearer {tok}"}
            assert_error(node.request(method, path, body, auth=False, headers=hdr), 403)
        assert_error(node.request(method, path, body, token="st.wrong"), 403)
    # None of those wrote, deleted or left anything.
    assert node.get("good/0").body == b"value 0"
    # Both header forms work with the right token.
    assert node.request("GET", k, auth=False, headers={"X-Stack-Token": node.harness.token or ""}
                        ).status == 200  # fmt: skip
    assert node.request("GET", k, auth=False,
                        headers={"Authorization": f"Bearer {node.harness.token}"}
                        ).status == 200  # fmt: skip
    # A header too large for the server is refused, not fatal.
    resp = node.request("GET", k, auth=False, headers={"X-Stack-Token": "y" * 20000})
    assert 400 <= resp.status < 500, resp


def check_paths_and_methods(node: Node) -> None:
    assert_error(node.request("GET", "/v1/no/such/thing"), 404)
    assert_error(node.request("GET", "/v2/kv/good/0"), 404)
    assert_error(node.request("GET", "/"), 404)
    assert_error(node.request("GET", "/v1/no/such/thing", auth=False), (401, 404))
    assert_error(node.request("POST", "/v1/kv/good/0", b"x"), 405)
    assert_error(node.request("PATCH", "/v1/status"), 405)
    assert_error(node.request("GET", "/v1/kv/%01ctl"), 400)
    assert_error(node.request("PUT", "/v1/kv/" + "k" * 2000, b"x"), 400)
    assert_error(node.request("PUT", "/v1/kv/", b"x"), 400)


def check_sizes(node: Node) -> None:
    # A request body over the server's 1 MiB limit, to the KV and to the operator API.
    assert_error(node.request("PUT", "/v1/kv/big/request", b"a" * (MiB + MiB // 2)), 413)
    big_json = json.dumps({"id": "n" * (2 * MiB)}).encode()
    assert_error(node.request("POST", "/v1/operator/raft/remove-peer", big_json), 413)
    # A KV value over 512 KiB, though under the request limit.
    assert_error(node.request("PUT", "/v1/kv/big/value", b"b" * (512 * 1024 + 1)), 413)
    for key in ("big/request", "big/value"):
        assert node.get(key).status == 404, key
    # Exactly 512 KiB is fine and round-trips.
    value = bytes(range(256)) * 2048
    assert len(value) == 512 * 1024
    node.put("big/ok", value)
    assert node.get("big/ok").body == value
    node.request("DELETE", "/v1/kv/big/ok")


def check_query_params(node: Node) -> None:
    k = "/v1/kv/good/1"
    for method, query in (("PUT", "cas=abc"), ("PUT", "cas=-1"), ("PUT", "cas=1.5"),
                          ("PUT", "flags=x"), ("DELETE", "cas=abc"), ("GET", "index=-1"),
                          ("GET", "index=abc"), ("GET", "wait=xyz"), ("GET", "wait=-5s"),
                          ("GET", "index=1&wait=1h"), ("GET", "recurse=maybe"),
                          ("GET", "stale=perhaps"), ("DELETE", "recurse=2")):  # fmt: skip
        body = b"changed" if method == "PUT" else None
        assert_error(node.request(method, f"{k}?{query}", body), 400)
    assert node.get("good/1").body == b"value 1", "a rejected request changed the key"
    # A check-and-set against the wrong index is a conflict, and changes nothing.
    assert_error(node.request("PUT", f"{k}?cas=1", b"changed"), 409)
    assert node.get("good/1").body == b"value 1"


def check_operator_json(node: Node) -> None:
    for path in ("/v1/operator/raft/remove-peer", "/v1/operator/raft/transfer-leader"):
        for body in (b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'"n1"', b"null", b"12"):
            assert_error(node.request("POST", path, body), 400)
    for body in (b"{}", b'{"id": 5}', b'{"id": ""}', b'{"id": ["n1"]}', b'{"name": null}'):
        assert_error(node.request("POST", "/v1/operator/raft/remove-peer", body), 400)
    for body in (b'{"to": 5}', b'{"to": ["n1"]}'):
        assert_error(node.request("POST", "/v1/operator/raft/transfer-leader", body), 400)
    assert_error(node.request("POST", "/v1/operator/raft/remove-peer",
                              b'{"id": "nobody"}'), 404)  # fmt: skip


def check_http_garbage(node: Node) -> None:
    for data in (b"\x00\xff\xfe garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"PUT /v1/kv/x HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                 b"PUT /v1/kv/x HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort"):  # fmt: skip
        got, closed = raw_exchange(node.addr, HTTP_PORT, data, half_close=True)
        # aiohttp answers an unparseable request line as HTTP/1.0, a parsed one as 1.1.
        is_4xx = got.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4"))
        assert closed or is_4xx, (data, got[:200])
        assert not got or is_4xx, (data, got[:200])
    assert node.get("x").status == 404


def check_rpc_garbage(node: Node, cluster_id: str) -> None:
    a = node.addr

    # Not TLS at all: plain garbage, an HTTP request, a plaintext HELLO (and request),
    # an oversized length prefix. The server closes the connection; at most it sends a
    # TLS alert record (first byte 0x15, never the start of a stack frame).
    plain_request = frame(REQUEST, pack([1, "cluster.discover", None]))
    for data in (b"\xde\xad\xbe\xef" + bytes(range(256)) * 4,
                 b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
                 frame(HELLO, pack([7, ""])),
                 frame(HELLO, pack([7, cluster_id])) + plain_request,
                 b"\xff\xff\xff\xff" + b"z" * 64):  # fmt: skip
        got, closed = raw_exchange(a, RPC_PORT, data, half_close=True)
        assert closed, f"{data[:40]!r}: connection left open"
        assert got == b"" or got[:1] == b"\x15", f"{data[:40]!r}: got {got[:100]!r}"

    # Inside TLS without a client certificate, the frame-level garbage of before.
    tls = probe_context()

    def closed_without_reply(data: bytes, half_close: bool = False) -> None:
        _, conn = rpc_exchange(a, data, tls, half_close=half_close)
        assert conn.closed, f"{data[:40]!r}: connection left open"
        assert conn.data == b"", f"{data[:40]!r}: got {conn.data[:100]!r}"

    # Before any HELLO: plain garbage, an HTTP request, oversized and undersized
    # length prefixes, unknown version and kind, a HELLO that is not msgpack, a
    # HELLO of the wrong shape, a HELLO from another cluster, a first frame that is
    # not a HELLO, and a half frame followed by EOF (close_notify).
    closed_without_reply(b"\xde\xad\xbe\xef" + bytes(range(256)) * 4)
    closed_without_reply(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
    closed_without_reply(b"\xff\xff\xff\xff" + b"z" * 64)
    closed_without_reply((64 * MiB + 1).to_bytes(4, "big") + b"\x01\x04")
    closed_without_reply(b"\x00\x00\x00\x01\x01")
    closed_without_reply(frame(HELLO, pack([7, ""]), version=9))
    closed_without_reply(frame(99, pack([7, ""])))
    closed_without_reply(frame(HELLO, b"\xc1\xc1\xc1"))
    closed_without_reply(frame(HELLO, pack({"id": 7})))
    closed_without_reply(frame(HELLO, pack([-7, ""])))
    closed_without_reply(frame(HELLO, pack([7, "not-this-cluster"])))
    closed_without_reply(frame(REQUEST, pack([1, "cluster.discover", None])))
    closed_without_reply(frame(HELLO, pack([7, ""]))[:7], half_close=True)

    # Without a certificate a node is in no cluster: it may ask open methods only; a
    # Raft message or a malformed request from it closes the connection (after the
    # server's HELLO).
    hello = frame(HELLO, pack([7, ""]))
    forbidden = frame(REQUEST, pack([1, "raft.apply", b"x"]))
    discover = frame(REQUEST, pack([2, "cluster.discover", None]))
    frames, _ = rpc_exchange(a, hello + forbidden + discover, tls, frames=3)
    assert len(frames) == 3, frames
    assert frames[0] == (HELLO, [int(node.id), cluster_id]), frames
    assert frames[1] == (RESPONSE, [1, False, ["forbidden", frames[1][1][2][1]]]), frames
    # The refusal did not cost the connection: the open method still answers.
    assert frames[2][0] == RESPONSE and frames[2][1][:2] == [2, True], frames
    assert frames[2][1][2]["cluster_id"] == cluster_id, frames
    for tail in (frame(RAFT, b"\x93\x01\x02\x03"), frame(REQUEST, pack([1, 2])),
                 frame(REQUEST, pack("x")), frame(RESPONSE, pack([1, True, None]))):  # fmt: skip
        frames, conn = rpc_exchange(a, hello + tail, tls)
        assert conn.closed, tail
        assert [k for k, _ in frames] == [HELLO], (tail, frames)
    # A half request, then close_notify: closed. (The server may not answer the HELLO
    # either: asyncio shuts TLS down as soon as it reads the close_notify.)
    frames, conn = rpc_exchange(a, hello + frame(REQUEST, pack([1, "cluster.discover", None]))[:9],
                                tls, half_close=True)  # fmt: skip
    assert conn.closed
    assert [k for k, _ in frames] in ([HELLO], []), frames
    # Malformed bodies to an open method are answered with an error, not a crash.
    for body in (None, "x", {"id": "abc"}, {"id": 1}, [1, 2, 3]):
        frames, _ = rpc_exchange(
            a, hello + frame(REQUEST, pack([5, "cluster.join", body])), tls, frames=2
        )
        assert len(frames) == 2 and frames[1][1][:2] == [5, False], (body, frames)


def check_gossip_garbage(node: Node) -> None:
    """The gossip port drops, and counts by reason, whatever it cannot open: garbage,
    another version, an unknown key, a forged tag, a stale or replayed packet, an
    undecodable body, oversized and truncated frames."""
    [key] = gossip_keys(node)
    ring = GossipKeyring([key], key)
    wrong = GossipKeyring([b"w" * 32], b"w" * 32)
    now = time.time()
    ping = ring.seal(encode((Ping(123, node.id, "intruder"),)), now)
    forged = bytearray(ring.seal(b"\x90", now))
    forged[-1] ^= 1
    other_version = bytearray(ring.seal(b"\x90", now))
    other_version[0] = 9
    datagrams = [
        b"\x00garbage",
        bytes(other_version),
        wrong.seal(b"\x90", now),
        bytes(forged),
        ring.seal(b"\x90", now - 3600),
        ring.seal(b"\xc1 not msgpack", now),
        ping,
        ping,  # the replay
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, (node.addr, GOSSIP_PORT))
    got, closed = raw_exchange(node.addr, GOSSIP_PORT, (1 << 30).to_bytes(4, "big"))
    assert closed and got == b""
    got, closed = raw_exchange(node.addr, GOSSIP_PORT, (100).to_bytes(4, "big") + b"x" * 10,
                               half_close=True)  # fmt: skip
    assert closed and got == b""
    want = {"short": 1, "version": 1, "unknown_key": 1, "auth": 1, "stale": 1, "decode": 1,
            "replay": 1, "oversize": 1, "truncated": 1}  # fmt: skip

    def counted() -> bool:
        rejected = node.status()["ring"]["rejected"]
        return all(rejected.get(k, 0) >= v for k, v in want.items())

    wait_until(counted, 10, "the gossip port to count every bad packet")
