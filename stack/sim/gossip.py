"""A gossip ring in the simulator: real `Gossip` cores on the Raft simulator's
clock and network.

One `Scheduler` (clock.py) holds packet deliveries, core wake-ups and resumes.
Time is integer microseconds (`UNITS`); the cores see seconds as floats. Each
core's wake-up is its `next_deadline()`, rounded up to the next unit, re-read
after every call into it (stale wake-ups are skipped). Packets travel on two
`Network`s (network.py) sharing the scheduler and one RNG: datagrams, which
lose `loss` of what they carry, and streams (`reliable` packets: push-pull over
TCP), which lose nothing. Each packet takes a seeded random latency. Packets go
through the real codec unless `codec=False` (big runs: the cores then receive
the very message objects the sender built, which are frozen; the random draws
are the same either way, so the run is too).

Faults: a crashed member neither ticks nor sends nor receives, ever again. A
paused member neither ticks nor handles packets until it resumes; packets sent
to it meanwhile wait, as in a stopped process's socket buffer, and are handled
when it resumes.

Observations: every membership event with its virtual time (`seen`), packets
and messages sent per member (piggy-backed broadcasts count as messages), and
bytes when the codec is on.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from stack.gossip.codec import decode, encode
from stack.gossip.config import GossipConfig
from stack.gossip.core import Gossip
from stack.gossip.types import EventKind, MemberRecord, Message, Packet, PushPull, State
from stack.sim.clock import Scheduler
from stack.sim.network import NetConfig, Network

UNITS = 1_000_000  # scheduler units per second: the ring's clock is in microseconds


def to_units(seconds: float) -> int:
    """The first unit at or after `seconds` (so a core woken then has its work due)."""
    t = math.ceil(seconds * UNITS)
    return t + 1 if t / UNITS < seconds else t


class Seen(NamedTuple):
    """One event as observed by `observer` at virtual time `at` (seconds)."""

    at: float
    observer: str
    kind: EventKind
    member: str
    incarnation: int


@dataclass(slots=True, eq=False)
class SimMember:
    """One simulated process: its core and what the ring knows about it."""

    core: Gossip
    addr: str
    index: int  # its node number on the networks
    wake: int = -1  # the scheduled wake-up that is current; others are stale
    crashed: bool = False
    backlog: list[tuple[str, object]] | None = None  # not None while paused
    packets: int = 0  # sent, datagrams and streams
    streams: int = 0  # of which reliable (push-pull over TCP)
    messages: int = 0  # sent, piggy-backed ones included
    bytes: int = 0  # sent (codec on only)


@dataclass(eq=False)
class GossipNet:
    """A ring of simulated members, all derived from `seed` (see the module)."""

    seed: int
    config: GossipConfig = field(default_factory=GossipConfig.lan)
    latency: tuple[float, float] = (0.001, 0.005)  # seconds, uniform
    loss: float = 0.0  # probability that a datagram is lost
    codec: bool = True
    core: type[Gossip] = Gossip  # tests plant bugs by passing a subclass
    record: bool = True  # keep the event log (`seen`)
    nodes: dict[str, Gossip] = field(default_factory=dict)  # by address
    seen: list[Seen] = field(default_factory=list)
    packets_sent: int = 0  # by every core, to live and crashed members alike

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.sched = Scheduler()
        self.members: dict[str, SimMember] = {}  # by address
        self._by_index: list[SimMember] = []
        lo, hi = round(self.latency[0] * UNITS), round(self.latency[1] * UNITS)
        self.datagrams: Network[tuple[str, object]] = Network(
            self.sched, self.rng, self._deliver, NetConfig(lo, hi, drop=self.loss)
        )
        self.streams: Network[tuple[str, object]] = Network(
            self.sched, self.rng, self._deliver, NetConfig(lo, hi)
        )
        self.on_event: Callable[[Seen], None] | None = None

    @property
    def packets_lost(self) -> int:
        return self.datagrams.stats.dropped

    @property
    def now(self) -> float:
        return self.sched.now / UNITS

    # ---- building -----------------------------------------------------------

    @staticmethod
    def addr_of(name: str) -> str:
        return f"{name}:7946"

    def add(self, name: str, tags: Mapping[str, str] | None = None) -> Gossip:
        rng = random.Random(f"{self.seed}/{name}")
        g = self.core(name, self.addr_of(name), tags or {}, self.config, rng, self.now)
        m = SimMember(g, g.addr, len(self._by_index))
        self.nodes[g.addr] = g
        self.members[g.addr] = m
        self._by_index.append(m)
        self._after_call(m)
        return g

    def node(self, name: str) -> Gossip:
        return self.nodes[self.addr_of(name)]

    def member(self, name: str) -> SimMember:
        return self.members[self.addr_of(name)]

    def live(self) -> Iterator[Gossip]:
        for m in self.members.values():
            if not m.crashed:
                yield m.core

    @staticmethod
    def name_of(i: int) -> str:
        return f"n{i:02d}"

    def ring(self, n: int, *, join_spacing: float = 0.05) -> list[Gossip]:
        """n members, each joining through the first one, a little apart."""
        members = [self.add(self.name_of(i)) for i in range(n)]
        seed = members[0].addr
        for g in members[1:]:
            self.run_for(join_spacing)
            g.join([seed], self.now)
            self._after_call(self.members[g.addr])
        return members

    def converged_ring(self, n: int) -> list[Gossip]:
        """n members that already know each other as alive, with nothing left to
        gossip: the state `ring(n)` reaches once it has converged and gone quiet,
        without simulating the O(n^2) messages of getting there. Each core takes
        the full member list as a push-pull answer (the join path); the JOIN events
        and the Alive broadcasts that queues are then dropped."""
        cores = [self.add(self.name_of(i)) for i in range(n)]
        records = tuple(MemberRecord(g.name, g.addr, 1, State.ALIVE, {}) for g in cores)
        full = (PushPull(records, join=False, reply=True),)
        now = self.now
        for g in cores:
            g.receive(cores[0].addr, full, now)
            g.events()
            if g.packets():
                raise AssertionError(f"{g.name}: a push-pull answer made it send")
            g._broadcasts.reset()  # the converged, quiet state: nothing left to spread
            self._after_call(self.members[g.addr])
        return cores

    # ---- faults -------------------------------------------------------------

    def crash(self, name: str) -> None:
        self.member(name).crashed = True

    def pause(self, name: str, duration: float) -> None:
        m = self.member(name)
        if m.backlog is None:
            m.backlog = []
        self.sched.at(self.sched.now + to_units(duration), self._resume, m)

    # ---- running ------------------------------------------------------------

    def run_for(self, duration: float) -> None:
        self.sched.run_until(self.sched.now + round(duration * UNITS))

    def run_until(self, end: float) -> None:
        self.sched.run_until(round(end * UNITS))

    def _tick(self, m: SimMember) -> None:
        at = self.sched.now
        if m.crashed or m.backlog is not None or m.wake != at:
            return
        m.wake = -1
        m.core.tick(at / UNITS)
        self._after_call(m)
        if m.wake <= at:
            raise AssertionError(f"{m.core.name}: tick at {at / UNITS} left work due")

    def _deliver(self, to: int, packet: tuple[str, object]) -> None:
        m = self._by_index[to]
        src, body = packet
        if m.crashed:
            return
        if m.backlog is not None:
            m.backlog.append((src, body))
            return
        m.core.receive(src, self._open(body), self.sched.now / UNITS)
        self._after_call(m)

    def _resume(self, m: SimMember) -> None:
        backlog, m.backlog = m.backlog, None
        if m.crashed or backlog is None:
            return
        now = self.sched.now / UNITS
        g = m.core
        for src, body in backlog:
            g.receive(src, self._open(body), now)
        m.wake = -1
        g.tick(now)
        self._after_call(m)

    def _open(self, body: object) -> list[Message] | tuple[Message, ...]:
        if isinstance(body, bytes):
            return decode(body)
        return body  # type: ignore[return-value]  # codec off: the sender's tuple

    def _after_call(self, m: SimMember) -> None:
        g = m.core
        events = g.events()
        if events:
            at = self.sched.now / UNITS
            for ev in events:
                s = Seen(at, g.name, ev.kind, ev.member.name, ev.member.incarnation)
                if self.record:
                    self.seen.append(s)
                if self.on_event is not None:
                    self.on_event(s)
        for p in g.packets():
            self._send(m, p)
        wake = to_units(g.next_deadline())
        if m.wake != wake:
            m.wake = wake
            self.sched.at(wake, self._tick, m)

    def _send(self, m: SimMember, p: Packet) -> None:
        self.packets_sent += 1
        m.packets += 1
        m.messages += len(p.messages)
        if p.reliable:
            m.streams += 1
        body: object = p.messages
        if self.codec:
            data = encode(p.messages)
            m.bytes += len(data)
            body = data
        to = self.members.get(p.to_addr)
        if m.crashed or to is None or to.crashed:
            return
        net = self.streams if p.reliable else self.datagrams
        net.send(m.index, to.index, (m.addr, body))

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
            line = f"{round(s.at * UNITS)} {s.observer} {s.kind.value} {s.member} {s.incarnation}\n"
            h.update(line.encode())
        return h.hexdigest()


class CountingGossip(Gossip):
    """The real core, also logging each probe that failed (it raises or confirms a
    suspicion) as (time, target, incarnation): what its packets do not show. The
    core counts its own refutations (`refutations`)."""

    def __init__(
        self,
        name: str,
        addr: str,
        tags: Mapping[str, str],
        config: GossipConfig,
        rng: random.Random,
        now: float,
    ) -> None:
        self.failed_probes: list[tuple[float, str, int]] = []
        super().__init__(name, addr, tags, config, rng, now)

    def _probe_failed(self, p: Any) -> None:
        self.failed_probes.append((p.deadline, p.target, p.incarnation))
        super()._probe_failed(p)
