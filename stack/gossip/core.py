"""The gossip core: SWIM failure detection with Lifeguard, as a sans-IO state machine.

No clock, socket, thread or global RNG lives here. Time is the `now` the host
passes in (seconds), randomness is the RNG passed in, input is `receive()` and
`tick()`, output is `packets()` (to send) and `events()` (for the agent), and
`next_deadline()` says when `tick()` must be called next.

Semantics follow hashicorp/memberlist:

* Probing walks a shuffled member list round-robin, one member per (awareness
  scaled) probe interval. A direct ping waits `probe_timeout` (also scaled, as
  the Lifeguard paper does); then `indirect_checks` random alive members ping the
  target for us and answer Ack or Nack. No ack by the end of the interval: the
  target is suspected, and missed nacks raise our own health score.
* A suspicion runs a Lifeguard timer (`suspicion.py`) that independent Suspect
  messages from other members shorten; at expiry the member is declared DEAD.
  A member refutes a suspicion of itself with a higher incarnation.
* Alive/Suspect/Dead are piggy-backed on probes and gossiped to a few random
  members every gossip interval, each a bounded number of times.
* Push-pull periodically swaps full state with one random member; joining is a
  push-pull with the seeds. Merging uses the same rules as the broadcasts.

Deterministic: the same RNG seed and the same sequence of calls give the same
packets and events.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stack.gossip.awareness import Awareness
from stack.gossip.broadcast import BroadcastQueue
from stack.gossip.codec import encoded_size
from stack.gossip.config import GossipConfig
from stack.gossip.errors import AlreadyLeft
from stack.gossip.suspicion import Suspicion, suspicion_timeout
from stack.gossip.types import (
    Ack,
    Alive,
    Broadcast,
    Dead,
    EventKind,
    IndirectPing,
    Member,
    MemberEvent,
    MemberRecord,
    Message,
    Nack,
    Packet,
    Ping,
    PushPull,
    State,
    Suspect,
)

# Bytes reserved for the packet's outer array header, and per piggy-backed message.
PACKET_HEADER = 5
MESSAGE_OVERHEAD = 1
# Rings up to this size push-pull at the configured interval; larger ones back off.
PUSH_PULL_SCALE_THRESHOLD = 32


def push_pull_scale(interval: float, n: int) -> float:
    """memberlist's pushPullScale: slow full-state exchange down in big rings."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    mult = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1.0
    return interval * mult


@dataclass(slots=True)
class _Node:
    name: str
    addr: str
    incarnation: int
    state: State
    tags: dict[str, str]
    state_change: float

    def snapshot(self) -> Member:
        return Member(
            self.name, self.addr, self.incarnation, self.state, dict(self.tags), self.state_change
        )

    def record(self) -> MemberRecord:
        return MemberRecord(self.name, self.addr, self.incarnation, self.state, dict(self.tags))


@dataclass(slots=True)
class _Probe:
    seq: int
    target: str
    target_addr: str
    incarnation: int
    timeout_at: float  # direct ack deadline, then go indirect
    deadline: float  # end of the probe interval: suspect if still no ack
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    """An indirect ping we forward: answer `requester` with its own seq."""

    requester_addr: str
    seq: int
    expires_at: float


class Gossip:
    """One member of a gossip ring. See the module docstring for the host contract."""

    def __init__(
        self,
        name: str,
        addr: str,
        tags: Mapping[str, str],
        config: GossipConfig,
        rng: random.Random,
        now: float,
    ) -> None:
        self.name = name
        self.addr = addr
        self.cfg = config
        self._rng = rng
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._broadcasts: BroadcastQueue[Broadcast] = BroadcastQueue(config.retransmit_mult)
        me = _Node(name, addr, 1, State.ALIVE, dict(tags), now)
        self._nodes: dict[str, _Node] = {name: me}
        self._order: list[str] = []  # probe order, never holds this node
        self._probe_index = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._suspicions: dict[str, Suspicion] = {}
        # Last-chance checks of suspects about to be declared dead: seq -> (member,
        # incarnation suspected). An ack clears that suspicion here (see `_check`).
        self._checks: dict[int, tuple[str, int]] = {}
        # Who `_gossip` may pick, cached: rebuilt only when a member is added,
        # removed, or enters or leaves DEAD/LEFT, or a dead one ages out.
        self._gossip_pool: list[_Node] | None = None
        self._gossip_pool_dead: list[_Node] = []
        self._seq = 0
        self.suspicions = 0
        """Members this node started suspecting (counted, for operators and tests)."""
        self.refutations = 0
        """Times this node refuted a suspicion or death notice of itself."""
        self._leaving = False
        self._out: list[Packet] = []
        self._events: list[MemberEvent] = []
        self._stale_sender = False  # set by `receive` (see there)
        # Stagger the periodic work like memberlist's tickers so a ring started
        # at once does not probe and gossip in lock step.
        self._next_probe = now + rng.random() * config.probe_interval
        self._next_gossip = now + rng.random() * config.gossip_interval
        self._next_push_pull = now + rng.random() * config.push_pull_interval
        self._queue(Alive(name, 1, addr, dict(tags)))

    # ---- host API -------------------------------------------------------------

    def join(self, seed_addrs: Sequence[str], now: float) -> None:
        """Start a full-state exchange with each seed; their answers bring the ring in."""
        if self._leaving:
            raise AlreadyLeft("cannot join after leaving")
        for addr in seed_addrs:
            if addr != self.addr:
                self._push_pull_to(addr, join=True, reply=False)

    def leave(self, now: float) -> None:
        """Announce a voluntary departure. Keep ticking for a while afterwards so
        the broadcast gets out (see `pending_broadcasts`)."""
        if self._leaving:
            return
        self._leaving = True
        self._probe = None
        me = self._nodes[self.name]
        self._on_dead(Dead(self.name, me.incarnation, self.name), now)

    def update_tags(self, tags: Mapping[str, str], now: float) -> None:
        """Replace this node's tags and announce them with a higher incarnation."""
        if self._leaving:
            raise AlreadyLeft("cannot change tags after leaving")
        me = self._nodes[self.name]
        me.incarnation += 1
        me.tags = dict(tags)
        self._queue(Alive(self.name, me.incarnation, self.addr, dict(tags)))

    def receive(self, from_addr: str, messages: Sequence[Message], now: float) -> None:
        self._stale_sender = False
        # Most common first: piggy-backed broadcasts outnumber probes in a busy ring.
        for m in messages:
            if isinstance(m, Alive):
                self._on_alive(m, now)
            elif isinstance(m, Suspect):
                self._on_suspect(m, now)
            elif isinstance(m, Ping):
                self._on_ping(from_addr, m)
            elif isinstance(m, Ack):
                self._on_ack(m, now)
            elif isinstance(m, Dead):
                self._on_dead(m, now)
            elif isinstance(m, IndirectPing):
                self._on_indirect_ping(from_addr, m, now)
            elif isinstance(m, Nack):
                if self._probe is not None and m.seq == self._probe.seq:
                    self._probe.nacks += 1
            else:
                self._on_push_pull(from_addr, m, now)
        if self._stale_sender and self.cfg.recheck_suspects and not self._leaving:
            # The sender passed on a suspicion or death of us that we have already
            # refuted: it missed our refutation, so tell it directly rather than
            # hope the epidemic reaches it before its suspicion times out.
            me = self._nodes[self.name]
            self._send(from_addr, (Alive(self.name, me.incarnation, me.addr, dict(me.tags)),))

    def tick(self, now: float) -> None:
        """Run whatever work is due at `now`; cheap to call early."""
        for seq in [s for s, r in self._relays.items() if r.expires_at <= now]:
            relay = self._relays.pop(seq)
            self._send(relay.requester_addr, (Nack(relay.seq, self.name),))
        self._advance_probe(now)
        for name, s in list(self._suspicions.items()):
            if self._suspicion_due(s) > now:
                continue
            if self.cfg.recheck_suspects and s.checked_at is None:
                self._check(name, now)
            else:
                node = self._nodes[name]
                self._on_dead(Dead(name, node.incarnation, self.name), now)
        if now >= self._next_gossip:
            self._gossip(now)
            self._next_gossip = _next_slot(self._next_gossip, self.cfg.gossip_interval, now)
        if self.cfg.push_pull_interval > 0 and now >= self._next_push_pull:
            self._periodic_push_pull()
            interval = push_pull_scale(self.cfg.push_pull_interval, len(self._nodes))
            self._next_push_pull = now + interval

    def next_deadline(self) -> float:
        """The earliest time at which `tick()` has work to do."""
        # Called after every input by the host: a plain loop, no temporary lists.
        t = self._next_gossip
        if self.cfg.push_pull_interval > 0 and self._next_push_pull < t:
            t = self._next_push_pull
        if not self._leaving and self._next_probe < t:
            t = self._next_probe
        p = self._probe
        if p is not None:
            pt = p.deadline if p.indirect_sent else p.timeout_at
            if pt < t:
                t = pt
        for r in self._relays.values():
            if r.expires_at < t:
                t = r.expires_at
        for s in self._suspicions.values():
            d = self._suspicion_due(s)
            if d < t:
                t = d
        return t

    def _suspicion_due(self, s: Suspicion) -> float:
        """When a suspicion next needs `tick`: its last-chance check one probe
        interval before the deadline, then the death, never sooner than one probe
        interval after the check (confirmations can pull a deadline into the past)."""
        if not self.cfg.recheck_suspects:
            return s.deadline()
        if s.checked_at is None:
            return s.deadline() - self.cfg.probe_interval
        return max(s.deadline(), s.checked_at + self.cfg.probe_interval)

    def packets(self) -> list[Packet]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[MemberEvent]:
        """Membership changes of *other* members since the last call, in order."""
        out, self._events = self._events, []
        return out

    def members(self) -> list[Member]:
        """Every member this node knows of (itself included), by name."""
        return [self._nodes[n].snapshot() for n in sorted(self._nodes)]

    def member(self, name: str) -> Member | None:
        node = self._nodes.get(name)
        return None if node is None else node.snapshot()

    def local_health(self) -> int:
        """Lifeguard health score: 0 is healthy, higher means this node is slow."""
        return self._awareness.score

    def pending_broadcasts(self) -> int:
        return len(self._broadcasts)

    # ---- probing --------------------------------------------------------------

    def _advance_probe(self, now: float) -> None:
        p = self._probe
        if p is not None and not p.indirect_sent and now >= p.timeout_at:
            self._send_indirect(p)
        if p is not None and now >= p.deadline:
            self._probe_failed(p)
        if self._probe is None and not self._leaving and now >= self._next_probe:
            interval = self._awareness.scale_timeout(self.cfg.probe_interval)
            self._next_probe = now + interval
            self._start_probe(now, interval)

    def _start_probe(self, now: float, interval: float) -> None:
        for _ in range(len(self._order) + 1):
            if self._probe_index >= len(self._order):
                self._reset_order(now)
                if not self._order:
                    return
            name = self._order[self._probe_index]
            self._probe_index += 1
            node = self._nodes.get(name)
            if node is None or node.state in (State.DEAD, State.LEFT):
                continue
            self._seq += 1
            timeout = self._awareness.scale_timeout(self.cfg.probe_timeout)
            self._probe = _Probe(
                self._seq, name, node.addr, node.incarnation, now + timeout, now + interval
            )
            head: list[Message] = [Ping(self._seq, name, self.name)]
            if node.state is State.SUSPECT:
                # Tell the target directly so it can refute at once.
                head.append(Suspect(name, node.incarnation, self.name))
            self._send(node.addr, head)
            return

    def _send_indirect(self, p: _Probe) -> None:
        p.indirect_sent = True
        candidates = [
            n
            for n in self._nodes.values()
            if n.state is State.ALIVE and n.name not in (self.name, p.target)
        ]
        k = min(self.cfg.indirect_checks, len(candidates))
        for peer in self._rng.sample(candidates, k):
            p.expected_nacks += 1
            self._send(peer.addr, (IndirectPing(p.seq, p.target, p.target_addr, self.name),))

    def _probe_failed(self, p: _Probe) -> None:
        self._probe = None
        # Lifeguard: nacks we expected but did not get mean *we* may be the
        # problem; with no one to nack, any failed probe counts against us.
        if p.expected_nacks > 0:
            self._awareness.apply_delta(max(0, p.expected_nacks - p.nacks))
        else:
            self._awareness.apply_delta(1)
        self._on_suspect(Suspect(p.target, p.incarnation, self.name), p.deadline)

    def _check(self, name: str, now: float) -> None:
        """One probe interval before a suspicion of `name` expires, ping it once
        more, directly and through `indirect_checks` members at once, with our
        suspicion attached. Under packet loss a member can miss the refutation
        (an epidemic reaches all but a few in ~1e-5 of rounds); the suspect
        answers a stale accuser with its newer Alive, and any ack clears the
        suspicion here. A crashed member acks nothing, so detection is no
        slower: the deadline does not move (unless confirmations had pulled it
        to less than a probe interval away: the check gets that interval)."""
        self._suspicions[name].checked_at = now
        node = self._nodes[name]
        self._seq += 1
        self._checks[self._seq] = (name, node.incarnation)
        self._send(
            node.addr,
            (Suspect(name, node.incarnation, self.name), Ping(self._seq, name, self.name)),
        )
        candidates = [
            n for n in self._nodes.values() if n.state is State.ALIVE and n.name != self.name
        ]
        for peer in self._rng.sample(candidates, min(self.cfg.indirect_checks, len(candidates))):
            self._send(peer.addr, (IndirectPing(self._seq, name, node.addr, self.name),))

    def _passed_check(self, name: str, incarnation: int, now: float) -> None:
        """The suspect acked our last-chance check: it is alive. Drop the suspicion
        here only (nothing is broadcast; its own Alive, newer, is on its way)."""
        node = self._nodes.get(name)
        if node is None or node.state is not State.SUSPECT or node.incarnation != incarnation:
            return
        self._drop_suspicion(name)
        node.state = State.ALIVE
        node.state_change = now

    def _drop_suspicion(self, name: str) -> None:
        if self._suspicions.pop(name, None) is not None and self._checks:
            for seq in [q for q, (n, _) in self._checks.items() if n == name]:
                del self._checks[seq]

    def _reset_order(self, now: float) -> None:
        """Start a new probe round: forget long-dead members, reshuffle the rest."""
        for name, node in list(self._nodes.items()):
            gone = node.state in (State.DEAD, State.LEFT) and name != self.name
            if gone and now - node.state_change > self.cfg.gossip_to_the_dead_time:
                del self._nodes[name]
                self._drop_suspicion(name)
                self._gossip_pool = None
        self._order = [n for n in self._nodes if n != self.name]
        self._rng.shuffle(self._order)
        self._probe_index = 0

    def _on_ping(self, from_addr: str, m: Ping) -> None:
        if m.target != self.name:
            return  # meant for whoever used to live at this address
        self._send(from_addr, (Ack(m.seq, self.name),))

    def _on_indirect_ping(self, from_addr: str, m: IndirectPing, now: float) -> None:
        self._seq += 1
        self._relays[self._seq] = _Relay(from_addr, m.seq, now + self.cfg.probe_timeout)
        self._send(m.target_addr, (Ping(self._seq, m.target, self.name),))

    def _on_ack(self, m: Ack, now: float) -> None:
        p = self._probe
        if p is not None and m.seq == p.seq:
            self._probe = None
            self._awareness.apply_delta(-1)
            return
        check = self._checks.pop(m.seq, None)
        if check is not None:
            self._passed_check(*check, now)
            return
        relay = self._relays.pop(m.seq, None)
        if relay is not None:
            self._send(relay.requester_addr, (Ack(relay.seq, self.name),))

    # ---- membership rules -----------------------------------------------------

    def _on_alive(self, m: Alive, now: float) -> None:
        if self._leaving and m.name == self.name:
            return  # a late echo of ourselves must not rejoin us
        node = self._nodes.get(m.name)
        is_new = node is None
        reclaimed = False
        if node is None:
            node = _Node(m.name, m.addr, m.incarnation, State.DEAD, {}, now)
            self._nodes[m.name] = node
            self._insert_in_order(m.name)
            self._gossip_pool = None
        elif node.addr != m.addr:
            reclaim = self.cfg.dead_node_reclaim_time
            reclaimable = (
                node.state is State.DEAD and reclaim > 0 and now - node.state_change > reclaim
            )
            if not (node.state is State.LEFT or reclaimable):
                return  # name conflict: someone else claims a live member's name
            reclaimed = True
        is_local = m.name == self.name
        if not (is_new or reclaimed or is_local) and m.incarnation <= node.incarnation:
            return
        if is_local and m.incarnation < node.incarnation:
            return
        self._drop_suspicion(m.name)
        if is_local:
            same = m.addr == node.addr and dict(m.tags) == node.tags
            if m.incarnation == node.incarnation and same:
                return
            self._refute(node, m.incarnation)
            return
        old_state, old_tags, old_addr = node.state, node.tags, node.addr
        self._queue(m)
        node.incarnation = m.incarnation
        node.tags = dict(m.tags)
        node.addr = m.addr
        if node.state is not State.ALIVE:
            if node.state is not State.SUSPECT:
                self._gossip_pool = None  # back from DEAD or LEFT
            node.state = State.ALIVE
            node.state_change = now
        if is_new or old_state is State.LEFT:
            self._emit(EventKind.JOIN, node)
        elif old_state is State.DEAD:
            self._emit(EventKind.RECOVER, node)
        elif old_tags != node.tags or old_addr != node.addr:
            self._emit(EventKind.UPDATE, node)

    def _on_suspect(self, m: Suspect, now: float) -> None:
        node = self._nodes.get(m.name)
        if node is None:
            return
        if m.name == self.name:
            self._stale_sender = True
        if m.incarnation < node.incarnation:
            return
        timer = self._suspicions.get(m.name)
        if timer is not None:
            if timer.confirm(m.from_, now):
                self._queue(m)  # pass on confirmations so others shorten theirs too
            return
        if node.state is not State.ALIVE:
            return
        if m.name == self.name:
            self._refute(node, m.incarnation)
            return
        self._queue(m)
        self.suspicions += 1
        node.incarnation = m.incarnation
        node.state = State.SUSPECT
        node.state_change = now
        n = len(self._nodes)
        k = self.cfg.suspicion_mult - 2
        if n - 2 < k:
            k = 0  # too few members to ever gather k independent confirmations
        lo = suspicion_timeout(self.cfg.suspicion_mult, n, self.cfg.probe_interval)
        hi = self.cfg.suspicion_max_timeout_mult * lo
        self._suspicions[m.name] = Suspicion(k, lo, hi, now, {m.from_})

    def _on_dead(self, m: Dead, now: float) -> None:
        node = self._nodes.get(m.name)
        if node is None:
            return
        if m.name == self.name:
            self._stale_sender = True
        if m.incarnation < node.incarnation:
            return
        self._drop_suspicion(m.name)
        if node.state in (State.DEAD, State.LEFT):
            return
        if m.name == self.name and not self._leaving:
            self._refute(node, m.incarnation)
            return
        self._queue(m)
        node.incarnation = m.incarnation
        node.state = State.LEFT if m.from_ == m.name else State.DEAD
        node.state_change = now
        self._gossip_pool = None
        if m.name != self.name:
            kind = EventKind.LEAVE if node.state is State.LEFT else EventKind.FAILED
            self._emit(kind, node)

    def _refute(self, me: _Node, accused: int) -> None:
        me.incarnation = max(me.incarnation, accused) + 1
        self.refutations += 1
        # Having to defend ourselves is a sign we are slow (Lifeguard).
        self._awareness.apply_delta(1)
        self._queue(Alive(self.name, me.incarnation, me.addr, dict(me.tags)))

    # ---- gossip and push-pull --------------------------------------------------

    def _gossip(self, now: float) -> None:
        candidates = self._gossip_candidates(now)
        k = min(self.cfg.gossip_nodes, len(candidates))
        for peer in self._rng.sample(candidates, k):
            msgs = self._take_broadcasts(self.cfg.packet_size - PACKET_HEADER)
            if not msgs:
                return
            self._out.append(Packet(peer.addr, tuple(msgs)))

    def _gossip_candidates(self, now: float) -> list[_Node]:
        """Alive and suspect members, and the recently dead (who may need to refute),
        in member-table order. Rebuilding this on every gossip round made a ring of
        n members cost O(n^2) per round; the cache gives the same list."""
        dead_time = self.cfg.gossip_to_the_dead_time
        pool = self._gossip_pool
        if pool is not None and all(
            now - n.state_change <= dead_time for n in self._gossip_pool_dead
        ):
            return pool
        pool = [
            n
            for n in self._nodes.values()
            if n.name != self.name
            and (n.state in (State.ALIVE, State.SUSPECT) or now - n.state_change <= dead_time)
        ]
        self._gossip_pool = pool
        self._gossip_pool_dead = [n for n in pool if n.state in (State.DEAD, State.LEFT)]
        return pool

    def _periodic_push_pull(self) -> None:
        candidates = [
            n for n in self._nodes.values() if n.name != self.name and n.state is State.ALIVE
        ]
        if candidates:
            peer = self._rng.choice(candidates)
            self._push_pull_to(peer.addr, join=False, reply=False)

    def _push_pull_to(self, addr: str, *, join: bool, reply: bool) -> None:
        records = tuple(n.record() for n in self._nodes.values())
        self._out.append(Packet(addr, (PushPull(records, join, reply),), reliable=True))

    def _on_push_pull(self, from_addr: str, m: PushPull, now: float) -> None:
        if not m.reply:
            self._push_pull_to(from_addr, join=False, reply=True)
        nodes = self._nodes
        for r in m.members:
            if r.state is State.ALIVE:
                node = nodes.get(r.name)
                if (
                    node is not None
                    and r.incarnation <= node.incarnation
                    and r.addr == node.addr
                    and r.name != self.name
                ):
                    continue  # nothing new: `_on_alive` would ignore it (and big rings
                    # push-pull n records at a time, mostly these)
                self._on_alive(Alive(r.name, r.incarnation, r.addr, r.tags), now)
            elif r.state is State.LEFT:
                self._on_dead(Dead(r.name, r.incarnation, r.name), now)
            else:
                # Hearsay of a death only makes us suspect: the member gets its
                # chance to refute (memberlist's mergeState does the same).
                self._on_suspect(Suspect(r.name, r.incarnation, self.name), now)

    # ---- plumbing -------------------------------------------------------------

    def _queue(self, m: Broadcast) -> None:
        self._broadcasts.queue(m.name, m, encoded_size(m))

    def _take_broadcasts(self, budget: int) -> list[Broadcast]:
        return self._broadcasts.get(MESSAGE_OVERHEAD, budget, len(self._nodes))

    def _send(self, addr: str, head: Sequence[Message]) -> None:
        budget = self.cfg.packet_size - PACKET_HEADER - sum(encoded_size(m) for m in head)
        extra = self._take_broadcasts(budget)
        self._out.append(Packet(addr, (*head, *extra)))

    def _insert_in_order(self, name: str) -> None:
        # Append, then swap with a random slot, so a newcomer is not always probed last.
        self._order.append(name)
        i = self._rng.randrange(len(self._order))
        self._order[i], self._order[-1] = self._order[-1], self._order[i]

    def _emit(self, kind: EventKind, node: _Node) -> None:
        self._events.append(MemberEvent(kind, node.snapshot()))


def _next_slot(prev: float, interval: float, now: float) -> float:
    """The next tick of a fixed-rate ticker that skips ticks it missed."""
    nxt = prev + interval
    if nxt <= now:
        nxt = now + interval
    return nxt
