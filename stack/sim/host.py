"""One simulated node's host: the production host loop (persist, sync, send, restore and
apply, answer reads, advance) around a real `Raft` core, a simulated disk and a tiny
key/value state machine, feeding the checkers as it goes."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgpack

from stack.raft.config import RaftConfig
from stack.raft.core import Raft
from stack.raft.errors import NotLeader, ProposalDropped
from stack.raft.types import (
    AnyMessage,
    AppendEntries,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    Heartbeat,
    InstallSnapshot,
    Ready,
    Role,
    Snapshot,
    TimeoutNow,
)
from stack.sim.clock import NodeClock
from stack.sim.disk import Disk

if TYPE_CHECKING:
    from stack.sim.cluster import Cluster


@dataclass(frozen=True, slots=True)
class ClusterParams:
    nodes: int = 3
    election_tick: int = 10
    heartbeat_tick: int = 1
    snapshot_chunk_size: int = 256  # small, so snapshots travel in many chunks
    max_size_per_msg: int = 4096
    compact_every: int = 50  # applied entries between two snapshots of a node
    max_skew: float = 0.05
    client_delay: tuple[int, int] = (1, 30)  # units between client and node, each way
    raft_faults: frozenset[str] = frozenset()
    # Units an fsync takes. 0: the host persists, sends, applies and advances in one go.
    # Otherwise the host works like node.py: a leader's appends go out at once (thesis
    # 10.2.1: it counts itself only after advance()), everything else after the fsync;
    # input arriving meanwhile waits, since nothing may touch the core before advance().
    fsync_delay: tuple[int, int] = (0, 0)
    send_before_persist: bool = False  # host fault: send first, sync on the next tick


# Messages that acknowledge nothing, so a leader may send them before its own fsync.
_LEADER_MESSAGES = (AppendEntries, Heartbeat, InstallSnapshot, TimeoutNow)
_TICK = "tick"  # a tick that arrived while a Ready was in flight


# ---------------------------------------------------------------- state machine


def encode_command(client: int, op_id: int, key: str, value: bytes | None) -> bytes:
    return bytes(msgpack.packb([client, op_id, key, value]))


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class KVStore:
    """key -> value, plus which client command landed at which index (for the
    acknowledged-writes check) and the configuration as of the applied index."""

    __slots__ = ("applied", "cmds", "conf", "kv")

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.kv: dict[str, bytes] = {}
        self.cmds: dict[tuple[int, int], int] = {}
        self.applied = 0
        self.conf = ConfState()
        if snapshot is not None:
            self.applied = snapshot.meta.index
            self.conf = snapshot.meta.conf
            if snapshot.data:
                applied, kv, cmds = msgpack.unpackb(snapshot.data)
                if applied != snapshot.meta.index:
                    raise ValueError(
                        f"snapshot data is of index {applied}, meta says {snapshot.meta.index}"
                    )
                self.kv = {k: bytes(v) for k, v in kv}
                self.cmds = {(c, o): i for c, o, i in cmds}

    def apply(self, e: Entry) -> ConfChange | None:
        self.applied = e.index
        if e.type is EntryType.CONF_CHANGE:
            cc = ConfChange.decode(e.data)
            self.conf = self.conf.apply(cc)
            return cc
        if e.data:
            client, op_id, key, value = msgpack.unpackb(e.data)
            if value is None:
                self.kv.pop(key, None)
            else:
                self.kv[key] = value
            self.cmds[(client, op_id)] = e.index
        return None

    def encode(self) -> bytes:
        kv = [[k, self.kv[k]] for k in sorted(self.kv)]
        cmds = [[c, o, i] for (c, o), i in self.cmds.items()]
        return bytes(msgpack.packb([self.applied, kv, cmds]))

    def digest(self) -> bytes:
        return digest(self.encode())


# ---------------------------------------------------------------- client requests


class Outcome:
    OK = "ok"
    NOT_LEADER = "not_leader"  # arg: leader hint (0 = unknown)
    RETRY = "retry"  # ProposalDropped: nothing entered the log, try again
    LOST = "lost"  # the write's index holds another entry: it will never apply


@dataclass(slots=True)
class ClientRequest:
    client: int
    op_id: int
    write: bool
    key: str
    value: bytes | None  # written value (writes)
    reply: Callable[[ClientRequest, str, object], None]


@dataclass(slots=True)
class _PendingWrite:
    req: ClientRequest
    term: int


class CoreLog:
    """A LogView of a live core, for the checkers."""

    __slots__ = ("_core", "last_index", "snapshot_index")

    def __init__(self, core: Raft) -> None:
        st = core.status()
        self._core = core
        self.snapshot_index = st.snapshot_index
        self.last_index = st.last_index

    def entry(self, index: int) -> Entry | None:
        return self._core.entry(index)


# ---------------------------------------------------------------- host


class Host:
    """The production host loop for one node, minus asyncio."""

    def __init__(self, cluster: Cluster, node_id: int, clock: NodeClock) -> None:
        self.cluster = cluster
        self.id = node_id
        self.clock = clock
        self.disk = Disk()
        self.core: Raft | None = None
        self.sm = KVStore()
        self.up = False
        self.removed = False
        self.incarnation = 0
        self.role = Role.FOLLOWER
        self.leader_term = 0  # term in which this host last saw its core become leader
        self.inbox: list[AnyMessage | ClientRequest | str | Callable[[Raft], None]] = []
        self.in_flight: tuple[Ready, bool] | None = None  # a Ready waiting for its fsync
        self.pending_writes: dict[int, _PendingWrite] = {}
        self.pending_reads: dict[bytes, ClientRequest] = {}
        self.ready_reads: list[tuple[int, bytes]] = []
        self.sync_due = False
        self.dirty = False
        self.snap_index = 0  # index of the core's latest snapshot

    # -- lifecycle
    def start(self, rng: random.Random) -> None:
        hs, snap, entries = self.disk.load()
        self.sm = KVStore(snap)
        self.snap_index = self.sm.applied
        c = self.cluster
        p = c.params
        cfg = RaftConfig(
            id=self.id,
            election_tick=p.election_tick,
            heartbeat_tick=p.heartbeat_tick,
            snapshot_chunk_size=p.snapshot_chunk_size,
            max_size_per_msg=p.max_size_per_msg,
            faults=p.raft_faults,
        )
        self.core = Raft(
            cfg, rng, hard_state=hs, snapshot=snap, entries=entries, applied=self.sm.applied
        )
        c.invariants.on_restore(self.id, self.sm.applied)
        self.up = True
        self.role = Role.FOLLOWER
        self.leader_term = 0
        self.incarnation += 1
        self.sync_due = False
        c.scheduler.after(rng.randint(1, self.clock.period), self._tick, self.incarnation)
        self.touch()

    def crash(self) -> None:
        self.cluster.coverage.lost_writes += self.disk.crash()
        self.up = False
        self.core = None
        self.incarnation += 1
        self.inbox.clear()
        self.in_flight = None
        self.pending_writes.clear()
        self.pending_reads.clear()
        self.ready_reads.clear()
        self.sync_due = False

    # -- inputs
    def _tick(self, incarnation: int) -> None:
        if incarnation != self.incarnation or self.core is None:
            return
        sched = self.cluster.scheduler
        if self.clock.paused(sched.now):
            sched.at(self.clock.paused_until, self._tick, incarnation)
            return
        sched.after(self.clock.period, self._tick, incarnation)
        if self.in_flight is not None:
            self.inbox.append(_TICK)
            return
        if self.sync_due:
            self.disk.sync()
            self.sync_due = False
        self.core.tick()
        self.observe()

    def on_message(self, msg: AnyMessage) -> None:
        if self.core is None:
            return
        if self.in_flight is not None or self.clock.paused(self.cluster.scheduler.now):
            self.inbox.append(msg)
            return
        self.core.step(msg)
        self.observe()

    def on_client(self, req: ClientRequest) -> None:
        core = self.core
        if core is None:
            return  # the request vanishes; the client times out
        if self.in_flight is not None or self.clock.paused(self.cluster.scheduler.now):
            self.inbox.append(req)
            return
        try:
            if req.write:
                data = encode_command(req.client, req.op_id, req.key, req.value)
                index = core.propose(data)
                self.pending_writes[index] = _PendingWrite(req, core.term)
                if self.cluster.trace_ops:
                    self.cluster.note(
                        f"n{self.id} c{req.client} op{req.op_id} proposed at {index} t{core.term}"
                    )
            else:
                ctx = b"%d:%d" % (req.client, req.op_id)
                core.read_index(ctx)
                self.pending_reads[ctx] = req
        except NotLeader as e:
            req.reply(req, Outcome.NOT_LEADER, e.leader)
            return
        except ProposalDropped:
            req.reply(req, Outcome.RETRY, None)
            return
        self.observe()

    def admin(self, action: Callable[[Raft], None]) -> None:
        """An operator's call on the core (transfer, campaign, conf change): queued like
        any other input while the node is paused or a Ready is in flight."""
        core = self.core
        if core is None:
            return
        if self.in_flight is not None or self.clock.paused(self.cluster.scheduler.now):
            self.inbox.append(action)
            return
        action(core)
        self.observe()

    def resume(self, incarnation: int) -> None:
        """End of a pause: handle what arrived meanwhile, in arrival order."""
        if incarnation != self.incarnation or self.core is None:
            return
        if self.clock.paused(self.cluster.scheduler.now) or self.in_flight is not None:
            return
        inbox, self.inbox = self.inbox, []
        for item in inbox:
            core = self.core
            if core is None:
                return
            if isinstance(item, ClientRequest):
                self.on_client(item)
            elif isinstance(item, str):
                core.tick()
                self.observe()
            elif callable(item):
                self.admin(item)
            else:
                self.on_message(item)

    def observe(self) -> None:
        """After every input: role changes feed election safety and leader completeness."""
        core = self.core
        assert core is not None
        role = core.role
        if role is Role.LEADER:
            if core.term != self.leader_term:
                self.leader_term = core.term
                self.cluster.on_leader(self)
        elif role is not self.role and role is Role.CANDIDATE:
            self.cluster.coverage.elections += 1
        self.role = role
        self.touch()

    def touch(self) -> None:
        if not self.dirty:
            self.dirty = True
            self.cluster.dirty.append(self)

    # -- output
    def handle_ready(self) -> None:
        core = self.core
        if core is None or self.in_flight is not None:
            return
        c = self.cluster
        lo, hi = c.params.fsync_delay
        if hi and not c.params.send_before_persist:
            if core.has_ready():
                self._start_ready(core, c.rng.randint(lo, hi))
            return
        while core.has_ready():
            rd = core.ready()
            self._persist(rd, core)
            if c.params.send_before_persist:
                self.sync_due = self.sync_due or self.disk.dirty
            else:
                self.disk.sync()
            if rd.messages:
                c.send_all(rd.messages)
            self._finish(rd, core)

    def _persist(self, rd: Ready, core: Raft) -> None:
        disk = self.disk
        inv = self.cluster.invariants
        if rd.snapshot is not None:
            disk.write_snapshot(rd.snapshot)
        if rd.entries:
            inv.on_append(self.id, rd.entries)
            disk.write_entries(rd.entries)
        if rd.hard_state is not None:
            disk.write_hard_state(rd.hard_state)
            inv.on_commit(self.id, rd.hard_state.term, rd.hard_state.commit)

    def _finish(self, rd: Ready, core: Raft) -> None:
        """After the fsync and the sends: restore, apply, answer reads, advance."""
        if rd.snapshot is not None:
            self._restore(rd.snapshot, core.term)
        if rd.committed:
            self._apply(rd.committed)
        if rd.read_states:
            self.ready_reads.extend((rs.index, rs.ctx) for rs in rd.read_states)
        if self.ready_reads:
            self._answer_reads()
        core.advance(rd)
        if self.sm.applied - self.snap_index >= self.cluster.params.compact_every:
            self._compact(core)

    def _start_ready(self, core: Raft, delay: int) -> None:
        rd = core.ready()
        self._persist(rd, core)
        early = core.role is Role.LEADER and all(
            isinstance(m, _LEADER_MESSAGES) for m in rd.messages
        )
        if early and rd.messages:
            self.cluster.send_all(rd.messages)
        self.in_flight = (rd, early)
        self.cluster.scheduler.after(delay, self._fsynced, self.incarnation)

    def _fsynced(self, incarnation: int) -> None:
        core = self.core
        if incarnation != self.incarnation or core is None or self.in_flight is None:
            return  # crashed meanwhile: the unsynced writes are gone with it
        sched = self.cluster.scheduler
        if self.clock.paused(sched.now):
            sched.at(self.clock.paused_until, self._fsynced, incarnation)
            return
        rd, sent = self.in_flight
        self.disk.sync()
        if not sent and rd.messages:
            self.cluster.send_all(rd.messages)
        self.in_flight = None
        self._finish(rd, core)
        self.resume(incarnation)  # what arrived during the fsync, in order
        self.touch()

    def _restore(self, snap: Snapshot, term: int) -> None:
        c = self.cluster
        idx = snap.meta.index
        c.invariants.on_commit(self.id, term, idx)
        c.invariants.on_snapshot(self.id, idx, snap.meta.term, digest(snap.data))
        c.invariants.on_restore(self.id, idx)
        self.sm = KVStore(snap)
        self.snap_index = idx
        if idx > 0:  # not the empty bootstrap snapshot a joining node starts from
            c.coverage.snapshots_installed += 1
        c.note(f"n{self.id} installed snapshot at {idx} (term {snap.meta.term})")
        for index in sorted(i for i in self.pending_writes if i <= idx):
            pw = self.pending_writes.pop(index)
            ok = self.sm.cmds.get((pw.req.client, pw.req.op_id)) == index
            pw.req.reply(pw.req, Outcome.OK if ok else Outcome.LOST, index)

    def _apply(self, entries: tuple[Entry, ...]) -> None:
        c = self.cluster
        inv = c.invariants
        sm = self.sm
        pending = self.pending_writes
        for e in entries:
            first = inv.on_apply(self.id, e)
            cc = sm.apply(e)
            if cc is not None and first:
                c.on_conf_committed(e, cc)
            if pending:
                pw = pending.pop(e.index, None)
                if pw is not None:
                    outcome = Outcome.OK if e.term == pw.term else Outcome.LOST
                    pw.req.reply(pw.req, outcome, e.index)

    def _answer_reads(self) -> None:
        applied = self.sm.applied
        waiting: list[tuple[int, bytes]] = []
        for index, ctx in self.ready_reads:
            if index > applied:
                waiting.append((index, ctx))
                continue
            req = self.pending_reads.pop(ctx, None)
            if req is not None:
                req.reply(req, Outcome.OK, self.sm.kv.get(req.key))
        self.ready_reads = waiting

    def _compact(self, core: Raft) -> None:
        c = self.cluster
        data = self.sm.encode()
        snap = core.compact(self.sm.applied, data)
        if snap.meta.index != self.sm.applied:
            raise AssertionError(f"compacted at {snap.meta.index}, asked {self.sm.applied}")
        c.invariants.on_snapshot(self.id, snap.meta.index, snap.meta.term, digest(data))
        self.snap_index = snap.meta.index
        self.disk.write_compaction(snap)
        if c.params.send_before_persist:
            self.sync_due = True
        else:
            self.disk.sync()
        c.coverage.compactions += 1
