"""asyncio host for the sans-IO gossip core: one UDP socket and one TCP listener.

Both bind `bind:port`. Unreliable packets (probes, acks, gossip) are one UDP
datagram each, sent from the bound socket so the receiver sees the sender's
member address ("host:port") as the source. Reliable packets (push-pull) use
TCP: connect, write one frame, read at most one reply frame, close. A frame is a
u32 big-endian length then that many bytes, at most `MAX_FRAME`.

Every datagram and frame body is ``keyring.seal(codec.encode(messages))``.
Anything received that does not open or decode is dropped and counted in
`rejected` by reason ("short", "version", "unknown_key", "auth", "decode",
"oversize", "truncated", "stale", "replay"); nothing received is ever raised, and each reason is
logged at most once a minute.

A push-pull arriving over TCP is handed to the core with the connection's peer
address ("host:ephemeral-port") as `from_addr`; the core's reliable answer to
that address is written back on the same connection, which is how the reply
reaches a peer whose listener address we may not know yet.

The run loop calls `core.tick(clock())`, sends `core.packets()`, and sleeps
until `core.next_deadline()` or until a packet arrives. Received packets are fed
to the core (`core.receive`) as they arrive, on the event loop thread, and
what the core produced is sent at once. The transport never reads
`core.events()`: that is the host's, in `on_flush`.

Addresses are "host:port" with an IP address (or "[v6]:port"); host names are
not resolved asynchronously.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

from stack.gossip.codec import decode, encode
from stack.gossip.core import Gossip
from stack.gossip.errors import DecodeError
from stack.gossip.keyring import GossipKeyring, PacketRejected
from stack.gossip.types import Message, Packet

log = logging.getLogger(__name__)

MAX_FRAME = 1 << 20
"""Largest TCP frame body accepted or sent (1 MiB)."""
STREAM_TIMEOUT = 10.0
"""Seconds a push-pull connection may take (connect, write, read the reply)."""
LOG_EVERY = 60.0
"""Seconds between two log lines about the same rejection reason."""

_LEN = struct.Struct(">I")


def split_addr(addr: str) -> tuple[str, int]:
    """ "host:port" or "[v6]:port" -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host:
        raise ValueError(f"not a host:port address: {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def join_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, owner: GossipTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._owner._on_datagram(data, join_addr(str(addr[0]), int(str(addr[1]))))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the failure detector deals with it.
        self._owner._count_send_error()


class GossipTransport:
    """Runs one `Gossip` core over real sockets. `start()`, then `stop()`."""

    def __init__(
        self,
        core: Gossip,
        keyring: GossipKeyring,
        *,
        bind: str,
        port: int,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.core = core
        self.keyring = keyring
        self.bind = bind
        self.port = port
        self.clock = clock
        self.wall = wall  # stamps sealed packets; receivers refuse stale and replayed ones
        self.received = 0
        """Datagrams and frames that opened and decoded."""
        self.on_flush: Callable[[], None] | None = None
        """Called after every call into the core (tick or receive) and the sends it
        produced: where the host reads `core.events()`."""
        self.rejected: dict[str, int] = {}
        """Received datagrams/frames dropped, by reason."""
        self.send_errors = 0
        """Outgoing packets that could not be sent (unreachable, refused, too big)."""
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._logged: dict[str, float] = {}
        self._closing = False

    # ---- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Bind both sockets and start the run loop."""
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=(self.bind, self.port)
        )
        self._udp = udp
        try:
            self._tcp = await asyncio.start_server(
                self._on_connection, self.bind, self.port, reuse_address=True
            )
        except BaseException:
            udp.close()
            self._udp = None
            raise
        self._loop_task = asyncio.create_task(self._run(), name=f"gossip {self.core.name}")

    async def stop(self) -> None:
        """Stop the loop and close every socket and connection; idempotent."""
        self._closing = True
        self._wake.set()
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._loop_task = None
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    def poke(self) -> None:
        """Send what the host's own call into the core (join, leave, tags) produced."""
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    # ---- run loop ---------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            self.core.tick(self.clock())
            self._flush()
            delay = self.core.next_deadline() - self.clock()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            else:
                await asyncio.sleep(0)  # let I/O in even if the core is always due

    def _flush(self, reply_to: str | None = None) -> list[Packet]:
        """Send what the core produced; return reliable packets for `reply_to`."""
        replies: list[Packet] = []
        for p in self.core.packets():
            if reply_to is not None and p.to_addr == reply_to:
                if p.reliable:
                    replies.append(p)
                continue  # a connection's ephemeral address takes nothing else
            if p.reliable:
                self._spawn(self._send_stream(p))
            else:
                self._send_datagram(p)
        if self.on_flush is not None:
            self.on_flush()
        return replies

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- sealing ----------------------------------------------------------------

    def _seal(self, messages: tuple[Message, ...]) -> bytes:
        return self.keyring.seal(encode(messages), self.wall())

    def _open(self, blob: bytes) -> list[Message] | None:
        try:
            messages = decode(self.keyring.open(blob, self.wall()))
            self.received += 1
            return messages
        except PacketRejected as exc:
            self._reject(exc.reason)
        except DecodeError:
            self._reject("decode")
        return None

    def _reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        now = self.clock()
        last = self._logged.get(reason)
        if last is None or now - last >= LOG_EVERY:
            self._logged[reason] = now
            log.warning(
                "gossip %s: dropping packets: %s (%d so far)",
                self.core.name,
                reason,
                self.rejected[reason],
            )

    def _count_send_error(self) -> None:
        self.send_errors += 1

    # ---- UDP --------------------------------------------------------------------

    def _send_datagram(self, p: Packet) -> None:
        if self._udp is None:
            return
        try:
            self._udp.sendto(self._seal(p.messages), split_addr(p.to_addr))
        except (OSError, ValueError):
            self._count_send_error()

    def _on_datagram(self, data: bytes, from_addr: str) -> None:
        if self._closing:
            return
        messages = self._open(data)
        if messages is None:
            return
        self.core.receive(from_addr, messages, self.clock())
        self._flush()
        self._wake.set()

    # ---- TCP --------------------------------------------------------------------

    async def _send_stream(self, p: Packet) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(STREAM_TIMEOUT):
                host, port = split_addr(p.to_addr)
                reader, writer = await asyncio.open_connection(host, port)
                body = self._seal(p.messages)
                if len(body) > MAX_FRAME:
                    self._count_send_error()
                    return
                writer.write(_LEN.pack(len(body)) + body)
                await writer.drain()
                writer.write_eof()
                blob = await self._read_frame(reader, optional=True)
            if blob is None or self._closing:
                return
            messages = self._open(blob)
            if messages is None:
                return
            self.core.receive(p.to_addr, messages, self.clock())
            self._flush()
            self._wake.set()
        except (OSError, TimeoutError, ValueError):
            self._count_send_error()
        finally:
            if writer is not None:
                writer.close()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            peer = writer.get_extra_info("peername")
            from_addr = join_addr(str(peer[0]), int(peer[1]))
            async with asyncio.timeout(STREAM_TIMEOUT):
                blob = await self._read_frame(reader, optional=False)
                if blob is None or self._closing:
                    return
                messages = self._open(blob)
                if messages is None:
                    return
                self.core.receive(from_addr, messages, self.clock())
                replies = self._flush(reply_to=from_addr)
                self._wake.set()
                for r in replies[:1]:
                    body = self._seal(r.messages)
                    if len(body) > MAX_FRAME:
                        self._count_send_error()
                        break
                    writer.write(_LEN.pack(len(body)) + body)
                    await writer.drain()
        except (OSError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _read_frame(self, reader: asyncio.StreamReader, *, optional: bool) -> bytes | None:
        """One frame's body; None (counted unless `optional` and the peer sent
        nothing) if the stream ends early or the frame is too big."""
        try:
            head = await reader.readexactly(_LEN.size)
        except asyncio.IncompleteReadError as exc:
            if not (optional and not exc.partial):
                self._reject("truncated")
            return None
        (size,) = _LEN.unpack(head)
        if size > MAX_FRAME:
            self._reject("oversize")
            return None
        try:
            return await reader.readexactly(size)
        except asyncio.IncompleteReadError:
            self._reject("truncated")
            return None
