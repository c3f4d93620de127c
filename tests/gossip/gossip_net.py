"""An in-memory network that drives gossip cores on a virtual clock.

One heap holds packet deliveries and core wake-ups; each core's wake-up is its
`next_deadline()`, re-read after every call into it (stale heap entries are
skipped). Packets go through the real codec, take a seeded random latency and
may be lost (datagrams only: `reliable` packets model TCP). A crashed member
neither ticks nor sends nor receives, ever again. A paused member neither ticks
nor processes packets until it resumes; packets sent to it meanwhile wait, as in
a stopped process's socket buffer, and are handled when it resumes.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from stack.gossip.codec import decode, encode
from stack.gossip.config import GossipConfig
from stack.gossip.core import Gossip
from stack.gossip.types import EventKind, MemberEvent, Packet, State

TICK, DELIVER, RESUME = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Seen:
    """One event as observed by `observer` at virtual time `at`."""

    at: float
    observer: str
    kind: EventKind
    member: str
    incarnation: int


@dataclass
class Net:
    seed: int
    config: GossipConfig = field(default_factory=GossipConfig.lan)
    latency: tuple[float, float] = (0.001, 0.005)
    loss: float = 0.0
    now: float = 0.0
    nodes: dict[str, Gossip] = field(default_factory=dict)
    crashed: set[str] = field(default_factory=set)
    paused: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    packets_sent: int = 0
    packets_lost: int = 0
    core: type[Gossip] = Gossip  # tests plant bugs by passing a subclass

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._heap: list[tuple[float, int, int, str, str, bytes]] = []
        self._count = 0
        self._wake: dict[str, float] = {}

    # ---- building -----------------------------------------------------------

    @staticmethod
    def addr_of(name: str) -> str:
        return f"{name}:7946"

    def add(self, name: str, tags: Mapping[str, str] | None = None) -> Gossip:
        rng = random.Random(f"{self.seed}/{name}")
        g = self.core(name, self.addr_of(name), tags or {}, self.config, rng, self.now)
        self.nodes[self.addr_of(name)] = g
        self._after_call(g)
        return g

    def node(self, name: str) -> Gossip:
        return self.nodes[self.addr_of(name)]

    def live(self) -> Iterator[Gossip]:
        for addr, g in self.nodes.items():
            if addr not in self.crashed:
                yield g

    def ring(self, n: int, *, join_spacing: float = 0.05) -> list[Gossip]:
        """n members, each joining through the first one, a little apart."""
        members = [self.add(f"n{i:02d}") for i in range(n)]
        seed = self.addr_of(members[0].name)
        for g in members[1:]:
            self.run_for(join_spacing)
            g.join([seed], self.now)
            self._after_call(g)
        return members

    # ---- faults -------------------------------------------------------------

    def crash(self, name: str) -> None:
        self.crashed.add(self.addr_of(name))

    def pause(self, name: str, duration: float) -> None:
        addr = self.addr_of(name)
        self.paused[addr] = []
        self._push(self.now + duration, RESUME, addr, "", b"")

    # ---- running ------------------------------------------------------------

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    def run_until(self, end: float) -> None:
        while self._heap and self._heap[0][0] <= end:
            at, _, kind, addr, src, body = heapq.heappop(self._heap)
            self.now = at
            if addr in self.crashed:
                continue
            if kind == RESUME:
                self._resume(addr)
                continue
            if kind == TICK:
                if addr in self.paused or self._wake.get(addr) != at:
                    continue
                del self._wake[addr]
                g = self.nodes[addr]
                g.tick(at)
                self._after_call(g)
                if self._wake[addr] <= at:
                    raise AssertionError(f"{g.name}: tick at {at} left work due")
                continue
            if addr in self.paused:
                self.paused[addr].append((src, body))
                continue
            g = self.nodes[addr]
            g.receive(src, decode(body), at)
            self._after_call(g)
        self.now = end

    def _resume(self, addr: str) -> None:
        g = self.nodes[addr]
        backlog = self.paused.pop(addr)
        self._wake.pop(addr, None)
        for src, body in backlog:
            g.receive(src, decode(body), self.now)
        g.tick(self.now)
        self._after_call(g)

    def _after_call(self, g: Gossip) -> None:
        addr = self.addr_of(g.name)
        for ev in g.events():
            self._record(g.name, ev)
        for p in g.packets():
            self._send(addr, p)
        wake = g.next_deadline()
        if self._wake.get(addr) != wake:
            self._wake[addr] = wake
            self._push(wake, TICK, addr, "", b"")

    def _send(self, src: str, p: Packet) -> None:
        self.packets_sent += 1
        if src in self.crashed or p.to_addr in self.crashed:
            return
        if not p.reliable and self.loss and self.rng.random() < self.loss:
            self.packets_lost += 1
            return
        delay = self.rng.uniform(*self.latency)
        self._push(self.now + delay, DELIVER, p.to_addr, src, encode(p.messages))

    def _push(self, at: float, kind: int, addr: str, src: str, body: bytes) -> None:
        self._count += 1
        heapq.heappush(self._heap, (at, self._count, kind, addr, src, body))

    def _record(self, observer: str, ev: MemberEvent) -> None:
        m = ev.member
        self.seen.append(Seen(self.now, observer, ev.kind, m.name, m.incarnation))

    # ---- observations -------------------------------------------------------

    def states(self, name: str) -> dict[str, State | None]:
        """What each live member believes about `name` (None: unknown)."""
        out: dict[str, State | None] = {}
        for g in self.live():
            if g.name != name:
                m = g.member(name)
                out[g.name] = None if m is None else m.state
        return out

    def converged_alive(self) -> bool:
        names = {g.name for g in self.live()}
        for g in self.live():
            alive = {m.name for m in g.members() if m.state is State.ALIVE}
            if alive != names:
                return False
        return True

    def trace_hash(self) -> str:
        h = hashlib.sha256()
        for s in self.seen:
            h.update(
                f"{s.at:.9f} {s.observer} {s.kind.value} {s.member} {s.incarnation}\n".encode()
            )
        return h.hexdigest()
