"""Cluster transport: Raft messages and request/response RPC over asyncio TCP.

Frame: ``length:u32be | version:u8 (=1) | kind:u8 | payload``, where ``length``
counts the bytes after itself (version + kind + payload) and is at most
``max_frame``. Payloads are msgpack:

* HELLO    ``[node_id, cluster_id]``: the first frame on a connection, each way
  (the dialer's first, the server's reply second);
* RAFT     one message as encoded by ``stack.codec``;
* REQUEST  ``[request_id, method, body]``;
* RESPONSE ``[request_id, True, body]`` or ``[request_id, False, [code, message]]``.

A frame that is oversized, malformed, of an unknown version or kind, or out of
place (no HELLO first, another cluster's HELLO, a Raft message not from the
HELLO's node or not to this node) closes that connection with one structlog
warning; payload bytes are never logged. A HELLO with cluster id "" comes from a
node in no cluster yet (join, discovery): it may call the server's
``open_methods`` (others are answered "forbidden") and send no Raft messages.
Request and response bodies are any msgpack value whose maps have str or bytes
keys.

With TLS (``authenticate`` given), the peer's certificate decides, not the HELLO:
a connection without a client certificate is "in no cluster" (open methods only);
with one, the HELLO's node id must be the certificate's, only server-role
certificates may call ``server_methods`` or send any Raft message (a client-role
certificate, a learner, only a follower's replies to its leader), and a refused
certificate (revoked, another cluster) closes the connection. The dialer checks
that the server's certificate names the node it meant to reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import ssl as _ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import structlog

from stack.codec import DecodeError, decode_message, encode_message
from stack.raft.types import AnyMessage, AppendResponse, HeartbeatResponse, SnapshotResponse

log = structlog.get_logger(__name__)

DEFAULT_PORT = 7481
VERSION = 1
DEFAULT_MAX_FRAME = 64 << 20


class Kind:
    RAFT = 1
    REQUEST = 2
    RESPONSE = 3
    HELLO = 4


_KINDS = frozenset({Kind.RAFT, Kind.REQUEST, Kind.RESPONSE, Kind.HELLO})

# The Raft messages a client-role certificate may send: a --no-server node is a
# learner, which must answer its leader to be replicated to, and never campaigns,
# votes or leads.
_LEARNER_MESSAGES = (AppendResponse, HeartbeatResponse, SnapshotResponse)


class RpcError(Exception):
    """A request failed; ``code`` is machine-readable ("unavailable", "internal", ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RpcTimeout(RpcError):
    """No response arrived within the request's timeout."""

    def __init__(self, message: str) -> None:
        super().__init__("timeout", message)


class FrameError(Exception):
    """The peer broke the framing or protocol; the connection is closed."""


class AuthError(Exception):
    """The peer's certificate is refused (revoked, another cluster, malformed)."""


@dataclass(frozen=True, slots=True)
class PeerAuth:
    """Who a TLS peer is, from its certificate: ``node_id`` None means it showed none."""

    node_id: int | None
    role: str = ""


# Maps the peer's DER certificate (None: no certificate) to who it is; raises AuthError.
Authenticate = Callable[[bytes | None], PeerAuth]


def peer_der(writer: asyncio.StreamWriter) -> bytes | None:
    obj = writer.get_extra_info("ssl_object")
    if obj is None:
        return None
    der: bytes | None = obj.getpeercert(binary_form=True)
    return der


def frame(kind: int, payload: bytes) -> list[bytes]:
    """Header and payload as two buffers (joined by the writer, so no extra copy here)."""
    return [(len(payload) + 2).to_bytes(4, "big") + bytes((VERSION, kind)), payload]


def _pack(obj: Any) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def _unpack(payload: memoryview, max_frame: int) -> Any:
    try:
        return msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_frame,
            max_str_len=max_frame,
            max_array_len=1 << 20,
            max_map_len=1 << 20,
            max_ext_len=0,
        )
    except Exception as exc:
        raise FrameError(f"malformed payload ({type(exc).__name__})") from None


async def read_frame(reader: asyncio.StreamReader, max_frame: int) -> tuple[int, memoryview]:
    """Read one frame; raises FrameError on bad framing, IncompleteReadError on EOF."""
    length = int.from_bytes(await reader.readexactly(4), "big")
    if length < 2 or length > max_frame:
        raise FrameError(f"bad frame length {length}")
    body = await reader.readexactly(length)
    if body[0] != VERSION:
        raise FrameError(f"unknown frame version {body[0]}")
    if body[1] not in _KINDS:
        raise FrameError(f"unknown frame kind {body[1]}")
    return body[1], memoryview(body)[2:]


def _parse_hello(payload: memoryview, max_frame: int) -> tuple[int, str]:
    hello = _unpack(payload, max_frame)
    if type(hello) is not list or len(hello) != 2 or type(hello[1]) is not str:
        raise FrameError("malformed HELLO")
    if type(hello[0]) is not int or hello[0] < 0:
        raise FrameError("malformed HELLO")
    return hello[0], hello[1]


def _parse_response(kind: int, payload: memoryview, max_frame: int) -> list[Any]:
    resp = _unpack(payload, max_frame) if kind == Kind.RESPONSE else None
    if type(resp) is not list or len(resp) != 3 or type(resp[1]) is not bool:
        raise FrameError("expected a RESPONSE frame")
    return resp


def _error(v: Any) -> RpcError:
    if type(v) is list and len(v) == 2:
        return RpcError(str(v[0]), str(v[1]))
    return RpcError("protocol", "malformed error response")


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


_CLOSED_ERRORS = (asyncio.IncompleteReadError, ConnectionError, OSError, TimeoutError)


# ---------------------------------------------------------------- server


class RpcServer:
    """Accepts peer connections; dispatches Raft messages and requests."""

    def __init__(
        self,
        *,
        node_id: int,
        cluster_id: str,
        on_raft: Callable[[AnyMessage], None],
        on_request: Callable[[int, str, Any], Awaitable[Any]],
        ssl: _ssl.SSLContext | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        hello_timeout: float = 10.0,
        open_methods: frozenset[str] = frozenset(),
        server_methods: frozenset[str] = frozenset(),
        authenticate: Authenticate | None = None,
    ) -> None:
        self.node_id = node_id
        self.open_methods = open_methods  # callable by nodes in no cluster
        self.server_methods = server_methods  # callable by server-role certificates only
        self._authenticate = authenticate
        self._by_node: dict[int, set[asyncio.StreamWriter]] = {}
        self.cluster_id = cluster_id
        self._on_raft = on_raft
        self._on_request = on_request
        self._ssl = ssl
        self._max_frame = max_frame
        self._hello_timeout = hello_timeout
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # connection handlers and requests

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int = DEFAULT_PORT) -> None:
        # A stalled handshake is dropped as fast as a missing HELLO would be.
        timeout = self._hello_timeout if self._ssl is not None else None
        self._server = await asyncio.start_server(
            self._handle, host, port, ssl=self._ssl, ssl_handshake_timeout=timeout
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def disconnect(self, node_id: int) -> int:
        """Close every connection from ``node_id`` (e.g. just revoked); returns how many."""
        writers = self._by_node.pop(node_id, set())
        for w in writers:
            w.close()
        return len(writers)

    def _who(self, writer: asyncio.StreamWriter, hello_id: int, cluster: str) -> PeerAuth:
        if self._authenticate is None:  # no TLS: trust the HELLO (tests, plaintext)
            return PeerAuth(hello_id if cluster else None, "server" if cluster else "")
        try:
            auth = self._authenticate(peer_der(writer))
        except AuthError as exc:
            raise FrameError(f"certificate refused: {exc}") from None
        if auth.node_id is not None and (auth.node_id != hello_id or not cluster):
            raise FrameError("HELLO does not match the peer's certificate")
        return auth

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._track(task)
        addr = str(writer.get_extra_info("peername"))
        requests: set[asyncio.Task[None]] = set()
        registered: int | None = None  # the certificate's node id, for disconnect()
        try:
            kind, payload = await asyncio.wait_for(
                read_frame(reader, self._max_frame), self._hello_timeout
            )
            if kind != Kind.HELLO:
                raise FrameError("first frame is not HELLO")
            peer_id, cluster = _parse_hello(payload, self._max_frame)
            if cluster and cluster != self.cluster_id:
                raise FrameError("HELLO from another cluster")
            auth = self._who(writer, peer_id, cluster)
            member = auth.node_id is not None
            if member:
                registered = peer_id
                self._by_node.setdefault(peer_id, set()).add(writer)
            writer.writelines(frame(Kind.HELLO, _pack([self.node_id, self.cluster_id])))
            await writer.drain()
            while True:
                kind, payload = await read_frame(reader, self._max_frame)
                if kind == Kind.RAFT:
                    if not member:
                        raise FrameError("Raft message from a node in no cluster")
                    try:
                        msg = decode_message(payload)
                    except DecodeError as exc:
                        raise FrameError(f"bad Raft message: {exc}") from None
                    if auth.role != "server" and not isinstance(msg, _LEARNER_MESSAGES):
                        raise FrameError("Raft message from a client-role certificate")
                    if msg.frm != peer_id or msg.to != self.node_id:
                        raise FrameError("Raft message with wrong sender or recipient")
                    try:
                        self._on_raft(msg)
                    except Exception:
                        log.exception("rpc_on_raft_failed", peer=addr, peer_id=peer_id)
                elif kind == Kind.REQUEST:
                    req = _unpack(payload, self._max_frame)
                    if (
                        type(req) is not list
                        or len(req) != 3
                        or type(req[0]) is not int
                        or type(req[1]) is not str
                    ):
                        raise FrameError("malformed REQUEST")
                    allowed = req[1] in self.open_methods or (
                        member and (auth.role == "server" or req[1] not in self.server_methods)
                    )
                    t = asyncio.create_task(self._serve_request(writer, peer_id, allowed, *req))
                    self._track(t)
                    requests.add(t)
                    t.add_done_callback(requests.discard)
                else:
                    raise FrameError(f"unexpected frame kind {kind}")
        except FrameError as exc:
            log.warning("rpc_connection_rejected", peer=addr, reason=str(exc))
        except TimeoutError:
            log.warning("rpc_connection_rejected", peer=addr, reason="no HELLO in time")
        except _CLOSED_ERRORS:
            pass
        except asyncio.CancelledError:
            # close() (or the loop's shutdown) cancels connection handlers. End the
            # task normally: Python 3.11's start_server done-callback calls
            # task.exception() on it, which raises for a cancelled task and logs an
            # "Exception in callback" traceback on every clean stop (3.12 fixed this).
            pass
        finally:
            for t in requests:
                t.cancel()
            peers = self._by_node.get(registered) if registered is not None else None
            if peers is not None:
                peers.discard(writer)
                if not peers and registered is not None:
                    self._by_node.pop(registered, None)
            await _close_writer(writer)

    async def _serve_request(
        self,
        writer: asyncio.StreamWriter,
        peer_id: int,
        allowed: bool,
        req_id: int,
        method: str,
        body: Any,
    ) -> None:
        try:
            if not allowed:
                raise RpcError("forbidden", f"{method} is not allowed for this peer's certificate")
            result = await self._on_request(peer_id, method, body)
            payload = _pack([req_id, True, result])
        except RpcError as exc:
            payload = _pack([req_id, False, [exc.code, exc.message]])
        except Exception as exc:
            log.exception("rpc_request_failed", method=method, peer_id=peer_id)
            payload = _pack([req_id, False, ["internal", f"{type(exc).__name__}: {exc}"]])
        if len(payload) + 2 > self._max_frame:
            payload = _pack([req_id, False, ["too_large", "response exceeds max frame"]])
        if writer.is_closing():
            return
        writer.writelines(frame(Kind.RESPONSE, payload))
        with contextlib.suppress(*_CLOSED_ERRORS):
            await writer.drain()


# ---------------------------------------------------------------- client


class _Peer:
    """One outbound connection: a bounded frame queue drained by one sender task."""

    CONNECTING, UP, DOWN = "connecting", "up", "down"

    def __init__(self, owner: PeerTransport, peer_id: int, host: str, port: int) -> None:
        self.owner = owner
        self.peer_id = peer_id
        self.host = host
        self.port = port
        self.state = self.CONNECTING
        self.buf: list[bytes] = []  # header, payload, header, payload, ...
        self.queued = 0  # frames in buf
        self.dropped = 0
        self.sessions = 0  # verified sessions so far (a renewal must not add one)
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"rpc-peer-{peer_id}")

    def enqueue(self, parts: list[bytes]) -> bool:
        if self.state == self.DOWN or self.queued >= self.owner.max_queue:
            return False
        self.buf.extend(parts)
        self.queued += 1
        self.wake.set()
        return True

    def _fail(self, reason: str, *, reached: bool = False) -> None:
        self.dropped += self.queued
        self.buf.clear()
        self.queued = 0
        pending, self.pending = self.pending, {}
        # Over a verified session these requests may have been served: "connection_lost"
        # lets callers of non-idempotent methods tell that apart from "unavailable".
        code = "connection_lost" if reached else "unavailable"
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(RpcError(code, f"peer {self.peer_id}: {reason}"))

    async def _run(self) -> None:
        owner, attempt = self.owner, 0
        try:
            while True:
                self.state = self.CONNECTING
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(
                            self.host,
                            self.port,
                            ssl=owner.ssl,
                            server_hostname=self.host if owner.ssl else None,
                            local_addr=owner.local_addr,
                        ),
                        owner.connect_timeout,
                    )
                except Exception as exc:  # OSError, TimeoutError, SSLError, bad address, ...
                    reason = f"connect failed: {type(exc).__name__}"
                else:
                    try:
                        reason = await self._session(reader, writer)
                    except Exception as exc:
                        log.exception("rpc_peer_session_failed", peer_id=self.peer_id)
                        reason = f"session failed: {type(exc).__name__}"
                    if self.state == self.UP:  # a verified session resets the backoff
                        attempt = 0
                # Before the server's HELLO checked out it processed nothing we sent.
                reached = self.state == self.UP
                self.state = self.DOWN
                self._fail(reason, reached=reached)
                if attempt == 0:  # only the first of a run of failures is worth a line
                    log.warning("rpc_peer_down", peer_id=self.peer_id, reason=reason)
                delay = min(owner.backoff_max, owner.backoff_min * 2**attempt)
                attempt += 1
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        finally:
            self.state = self.DOWN
            self._fail("transport closed")

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        check = self.owner.authenticate
        if check is not None:
            try:
                auth = check(peer_der(writer))
            except AuthError as exc:
                await _close_writer(writer)
                return f"certificate refused: {exc}"
            if auth.node_id != self.peer_id:
                await _close_writer(writer)
                return f"certificate is for node {auth.node_id}, not {self.peer_id}"
        self.buf[:0] = frame(Kind.HELLO, _pack([self.owner.node_id, self.owner.cluster_id]))
        self.wake.set()
        recv = asyncio.create_task(self._recv(reader))
        recv.add_done_callback(lambda _: self.wake.set())
        try:
            while not recv.done():
                if not self.buf:
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                data = b"".join(self.buf)
                self.buf.clear()
                self.queued = 0
                writer.write(data)
                await writer.drain()
            return recv.result()
        except _CLOSED_ERRORS as exc:  # SSLError is an OSError
            return f"connection lost: {type(exc).__name__}"
        finally:
            recv.cancel()
            try:
                await asyncio.wait([recv])  # propagates our own cancellation, not recv's
                if not recv.cancelled():
                    recv.exception()  # mark retrieved
            finally:
                await _close_writer(writer)

    async def _recv(self, reader: asyncio.StreamReader) -> str:
        """Read the server's HELLO, then responses; returns why the connection ended."""
        max_frame = self.owner.max_frame
        try:
            kind, payload = await read_frame(reader, max_frame)
            if kind != Kind.HELLO:
                raise FrameError("first frame is not HELLO")
            node_id, cluster = _parse_hello(payload, max_frame)
            if cluster != self.owner.cluster_id or node_id != self.peer_id:
                raise FrameError(f"HELLO from node {node_id} of another cluster or node")
            if self.state == self.CONNECTING:
                self.state = self.UP
                self.sessions += 1
            while True:
                resp = _parse_response(*await read_frame(reader, max_frame), max_frame)
                fut = self.pending.pop(resp[0], None) if type(resp[0]) is int else None
                if fut is None or fut.done():
                    continue  # the caller timed out
                if resp[1]:
                    fut.set_result(resp[2])
                else:
                    fut.set_exception(_error(resp[2]))
        except FrameError as exc:
            log.warning("rpc_peer_protocol_error", peer_id=self.peer_id, reason=str(exc))
            return f"protocol error: {exc}"
        except _CLOSED_ERRORS as exc:  # SSLError is an OSError
            return f"connection lost: {type(exc).__name__}"


class PeerTransport:
    """Outbound side: one persistent connection per peer, batched writes, lossy send."""

    def __init__(
        self,
        *,
        node_id: int,
        cluster_id: str,
        ssl: _ssl.SSLContext | None = None,
        max_queue: int = 4096,
        max_frame: int = DEFAULT_MAX_FRAME,
        connect_timeout: float = 5.0,
        backoff_min: float = 0.05,
        backoff_max: float = 2.0,
        local_host: str | None = None,
        authenticate: Authenticate | None = None,
    ) -> None:
        self.authenticate = authenticate  # checks each server's certificate (with TLS)
        # Dial from our own --bind address, so peers (and firewall rules in fault
        # tests) see the node's address, not whatever the kernel picks.
        self.local_addr = (local_host, 0) if local_host else None
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.ssl = ssl
        self.max_queue = max_queue
        self.max_frame = max_frame
        self.connect_timeout = connect_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.dropped_other = 0  # to unknown peers, by removed peers, unencodable
        self._peers: dict[int, _Peer] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)

    @property
    def dropped(self) -> int:
        """Raft messages and requests dropped so far (unknown peer, peer down, queue full)."""
        return self.dropped_other + sum(p.dropped for p in self._peers.values())

    @property
    def sessions(self) -> int:
        """Verified outbound sessions opened so far, over all current peers."""
        return sum(p.sessions for p in self._peers.values())

    def peer_state(self, peer_id: int) -> str | None:
        p = self._peers.get(peer_id)
        return None if p is None else p.state

    def set_peer(self, peer_id: int, host: str, port: int) -> None:
        """Add or re-address a peer (needs a running loop); a no-op if unchanged."""
        p = self._peers.get(peer_id)
        if p is not None and (p.host, p.port) == (host, port):
            return
        self.remove_peer(peer_id)
        self._peers[peer_id] = _Peer(self, peer_id, host, port)

    def remove_peer(self, peer_id: int) -> None:
        p = self._peers.pop(peer_id, None)
        if p is not None:
            self.dropped_other += p.dropped
            p.task.cancel()
            self._retired.add(p.task)
            p.task.add_done_callback(self._retired.discard)

    def send(self, msg: AnyMessage) -> None:
        """Queue one Raft message for msg.to; never blocks, never raises, may drop."""
        try:
            p = self._peers.get(msg.to)
            if p is None:
                self.dropped_other += 1
                return
            payload = encode_message(msg)
            if len(payload) + 2 > self.max_frame or not p.enqueue(frame(Kind.RAFT, payload)):
                p.dropped += 1
        except Exception:
            self.dropped_other += 1
            log.exception("rpc_send_failed", to=getattr(msg, "to", None))

    async def request(self, peer_id: int, method: str, body: Any, timeout: float) -> Any:
        """Call ``method`` on ``peer_id``; raises RpcError (server's code or "unavailable",
        "unknown_peer", "bad_request") or RpcTimeout."""
        p = self._peers.get(peer_id)
        if p is None:
            raise RpcError("unknown_peer", f"no address for peer {peer_id}")
        req_id = next(self._ids)
        try:
            payload = _pack([req_id, method, body])
        except Exception as exc:
            raise RpcError("bad_request", f"cannot encode body: {exc}") from None
        if len(payload) + 2 > self.max_frame:
            raise RpcError("bad_request", "request exceeds max frame")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not p.enqueue(frame(Kind.REQUEST, payload)):
            raise RpcError("unavailable", f"peer {peer_id} is {p.state} or its queue is full")
        p.pending[req_id] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise RpcTimeout(f"{method} to peer {peer_id} after {timeout}s") from None
        finally:
            p.pending.pop(req_id, None)

    async def request_addr(
        self,
        host: str,
        port: int,
        method: str,
        body: Any,
        timeout: float,
        *,
        cluster_id: str | None = None,
        tls: _ssl.SSLContext | bool | None = True,
        check_peer: Callable[[bytes | None], None] | None = None,
    ) -> Any:
        """One request on a one-shot connection to an address whose node is unknown
        (join, discovery). ``cluster_id=""`` means "in no cluster yet": the server then
        takes requests only, and the client accepts a server of any cluster.
        ``tls``: True uses the transport's context, False or None plaintext, or a
        context of its own (joining); ``check_peer`` vets the server's certificate."""
        cid = self.cluster_id if cluster_id is None else cluster_id
        ctx = self.ssl if tls is True else (tls or None)
        try:
            payload = _pack([0, method, body])
        except Exception as exc:
            raise RpcError("bad_request", f"cannot encode body: {exc}") from None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=ctx,
                    server_hostname=host if ctx else None,
                    local_addr=self.local_addr,
                )
                try:
                    if check_peer is not None:
                        try:
                            check_peer(peer_der(writer))
                        except AuthError as exc:
                            raise RpcError("refused", f"{host}:{port}: {exc}") from None
                    hello = _pack([self.node_id, cid])
                    writer.writelines([*frame(Kind.HELLO, hello), *frame(Kind.REQUEST, payload)])
                    await writer.drain()
                    kind, data = await read_frame(reader, self.max_frame)
                    if kind != Kind.HELLO or (cid and _parse_hello(data, self.max_frame)[1] != cid):
                        raise FrameError("no HELLO from a server of this cluster")
                    resp = _parse_response(
                        *await read_frame(reader, self.max_frame), self.max_frame
                    )
                    if not resp[1]:
                        raise _error(resp[2])
                    return resp[2]
                finally:
                    await _close_writer(writer)
        except TimeoutError:
            raise RpcTimeout(f"{method} to {host}:{port} after {timeout}s") from None
        except FrameError as exc:
            raise RpcError("protocol", f"{host}:{port}: {exc}") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise RpcError("unavailable", f"{host}:{port}: {type(exc).__name__}") from None

    async def close(self) -> None:
        for peer_id in list(self._peers):
            self.remove_peer(peer_id)
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)
