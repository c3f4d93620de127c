"""An in-memory network of Raft cores driven by scripted commands (etcd-io/raft's
interaction tests, in miniature). Each node has a "disk" (what its host persisted)
and an applied log; messages wait in a queue until a script delivers or drops them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from stack.raft.config import RaftConfig
from stack.raft.core import Raft
from stack.raft.errors import RaftError
from stack.raft.types import (
    AnyMessage,
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)


@dataclass
class Disk:
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def save_entries(self, entries: tuple[Entry, ...]) -> None:
        if not entries:
            return
        first = entries[0].index
        self.entries = [e for e in self.entries if e.index < first] + list(entries)


@dataclass
class NodeState:
    raft: Raft
    disk: Disk
    applied: list[Entry] = field(default_factory=list)
    reads: list[ReadState] = field(default_factory=list)


def fmt_entry(e: Entry) -> str:
    if e.type is EntryType.CONF_CHANGE:
        cc = ConfChange.decode(e.data)
        return f"{e.term}/{e.index} {cc.type.name.lower()}({cc.node_id})"
    return f"{e.term}/{e.index} {e.data.decode() if e.data else '-'}"


def fmt_entries(entries: tuple[Entry, ...] | list[Entry]) -> str:
    if len(entries) > 4:
        return f"[{fmt_entry(entries[0])} .. {fmt_entry(entries[-1])} ({len(entries)})]"
    return "[" + ", ".join(fmt_entry(e) for e in entries) + "]"


def fmt_msg(m: AnyMessage) -> str:
    head = f"{m.frm}->{m.to} t{m.term}"
    if isinstance(m, VoteRequest):
        kind = "PreVote" if m.pre_vote else "Vote"
        extra = " transfer" if m.transfer else ""
        return f"{head} {kind} last={m.last_term}/{m.last_index}{extra}"
    if isinstance(m, VoteResponse):
        kind = "PreVoteResp" if m.pre_vote else "VoteResp"
        return f"{head} {kind} {'granted' if m.granted else 'rejected'}"
    if isinstance(m, AppendEntries):
        return f"{head} App prev={m.prev_term}/{m.prev_index} c{m.commit} {fmt_entries(m.entries)}"
    if isinstance(m, AppendResponse):
        if m.reject:
            return f"{head} AppResp reject {m.index} hint={m.hint_term}/{m.hint_index}"
        return f"{head} AppResp {m.index}"
    if isinstance(m, Heartbeat):
        return f"{head} Heartbeat c{m.commit}" + (f" ctx={m.ctx.decode()}" if m.ctx else "")
    if isinstance(m, HeartbeatResponse):
        return f"{head} HeartbeatResp" + (f" ctx={m.ctx.decode()}" if m.ctx else "")
    if isinstance(m, InstallSnapshot):
        return (
            f"{head} Snap {m.meta.term}/{m.meta.index} off={m.offset} "
            f"len={len(m.chunk)}{' done' if m.done else ''}"
        )
    if isinstance(m, SnapshotResponse):
        flags = (" reject" if m.reject else "") + (" done" if m.done else "")
        return f"{head} SnapResp {m.index} next={m.next_offset}{flags}"
    if isinstance(m, TimeoutNow):
        return f"{head} TimeoutNow"
    raise TypeError(type(m))


class Cluster:
    def __init__(self) -> None:
        self.nodes: dict[int, NodeState] = {}
        self.queue: list[AnyMessage] = []
        self.cut: set[tuple[int, int]] = set()  # (frm, to) pairs whose messages are dropped
        self.history_leaders: dict[int, set[int]] = {}
        self.faults: frozenset[str] = frozenset()
        self.cfg_overrides: dict[str, int | bool] = {}

    # ------------------------------------------------------------ building
    def add_nodes(self, ids: list[int], voters: list[int] | None, *, blank: bool = False) -> None:
        for nid in ids:
            disk = Disk()
            if not blank:
                conf = ConfState(voters=frozenset(voters or ids))
                disk.snapshot = Snapshot(SnapshotMeta(0, 0, conf), b"")
            self.nodes[nid] = NodeState(self._new_raft(nid, disk), disk)

    def _new_raft(self, nid: int, disk: Disk) -> Raft:
        cfg = RaftConfig(id=nid, faults=self.faults, **self.cfg_overrides)  # type: ignore[arg-type]
        applied = disk.snapshot.meta.index if disk.snapshot else 0
        return Raft(
            cfg,
            random.Random(nid),
            hard_state=disk.hard_state,
            snapshot=disk.snapshot,
            entries=disk.entries,
            applied=applied,
        )

    def restart(self, nid: int) -> None:
        n = self.nodes[nid]
        self.queue = [m for m in self.queue if m.to != nid]
        applied = [
            e for e in n.applied if n.disk.snapshot and e.index <= n.disk.snapshot.meta.index
        ]
        self.nodes[nid] = NodeState(self._new_raft(nid, n.disk), n.disk, applied)

    # ------------------------------------------------------------ running
    def process_ready(self, nid: int) -> list[str]:
        n = self.nodes[nid]
        out: list[str] = []
        while n.raft.has_ready():
            rd = n.raft.ready()
            if rd.soft_state is not None:
                out.append(f"{nid}: became {rd.soft_state.role.name.lower()} at term {n.raft.term}")
                if rd.soft_state.role is Role.LEADER:
                    self.history_leaders.setdefault(n.raft.term, set()).add(nid)
            if rd.snapshot is not None:
                n.disk.snapshot = rd.snapshot
                n.disk.entries = []
                n.applied = [e for e in n.applied if e.index <= rd.snapshot.meta.index]
                out.append(
                    f"{nid}: installed snapshot {rd.snapshot.meta.term}/{rd.snapshot.meta.index}"
                )
            n.disk.save_entries(rd.entries)
            if rd.hard_state is not None:
                n.disk.hard_state = rd.hard_state
            self.queue.extend(rd.messages)
            for e in rd.committed:
                n.applied.append(e)
            n.reads.extend(rd.read_states)
            for r in rd.read_states:
                out.append(f"{nid}: read ready index={r.index} ctx={r.ctx.decode()}")
            n.raft.advance(rd)
        return out

    def deliver(self, *, drop: set[int] | None = None, only_to: int | None = None) -> list[str]:
        """Deliver every queued message once (new replies are queued, not delivered)."""
        out: list[str] = []
        pending, self.queue = self.queue, []
        keep: list[AnyMessage] = []
        for m in pending:
            if only_to is not None and m.to != only_to:
                keep.append(m)
                continue
            if (drop and (m.to in drop or m.frm in drop)) or (m.frm, m.to) in self.cut:
                out.append(f"  dropped {fmt_msg(m)}")
                continue
            if m.to not in self.nodes:
                continue
            out.append(f"  {fmt_msg(m)}")
            self.nodes[m.to].raft.step(m)
        self.queue = keep + self.queue
        return out

    def stabilize(self, *, quiet: bool = False, max_rounds: int = 500) -> list[str]:
        out: list[str] = []
        for _ in range(max_rounds):
            for nid in sorted(self.nodes):
                out.extend(self.process_ready(nid))
            if not self.queue:
                return [] if quiet else out
            out.extend(self.deliver())
        raise AssertionError("cluster did not stabilize")

    def tick(self, nid: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[nid].raft.tick()

    def check_election_safety(self) -> None:
        for term, leaders in self.history_leaders.items():
            assert len(leaders) <= 1, f"two leaders in term {term}: {leaders}"

    def state(self, nid: int) -> str:
        r = self.nodes[nid].raft
        st = r.status()
        conf = st.conf
        voters = ",".join(map(str, sorted(conf.voters)))
        learners = ",".join(map(str, sorted(conf.learners)))
        return (
            f"{nid}: {r.role.name.lower()} term={r.term} leader={r.leader} "
            f"commit={st.commit} applied={st.applied} last={st.last_index} "
            f"snap={st.snapshot_index} voters=[{voters}]"
            + (f" learners=[{learners}]" if learners else "")
        )

    def propose(self, nid: int, data: bytes) -> str:
        try:
            idx = self.nodes[nid].raft.propose(data)
        except RaftError as e:
            return f"{nid}: propose refused: {e}"
        return f"{nid}: proposed at {idx}"

    def conf_change(self, nid: int, kind: str, target: int) -> str:
        cc = ConfChange(
            {
                "add-voter": ConfChangeType.ADD_VOTER,
                "add-learner": ConfChangeType.ADD_LEARNER,
                "remove": ConfChangeType.REMOVE_NODE,
            }[kind],
            target,
        )
        try:
            idx = self.nodes[nid].raft.propose_conf_change(cc)
        except RaftError as e:
            return f"{nid}: conf change refused: {e}"
        return f"{nid}: conf change proposed at {idx}"
