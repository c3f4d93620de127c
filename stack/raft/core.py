"""The Raft consensus core: a synchronous state machine in the style of etcd-io/raft.

No clock, socket, file, thread or global RNG lives here. Time is `tick()`,
randomness is the RNG passed in, input is `step(msg)` / `propose(...)`, and
output is a `Ready` that the host persists, sends, applies and then `advance()`s.
Between `ready()` and `advance()` the host must not call anything else: it
queues network input and proposals and steps them afterwards, which is also how
proposals get batched into one persist and one AppendEntries per follower.

Configuration changes are single-server and take effect when the entry is
appended (Raft thesis §4.1), with the fix from the thesis errata: a leader
accepts a change only after an entry of its own term has committed, and only
one change may be uncommitted at a time.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from stack.raft.config import RaftConfig, ReadOnlyOption
from stack.raft.errors import NotLeader, ProposalDropped
from stack.raft.log import RaftLog
from stack.raft.progress import Progress, ProgressState
from stack.raft.quorum import VoteOutcome, committed_index, has_quorum, tally
from stack.raft.readonly import ReadOnly
from stack.raft.types import (
    NONE,
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
    NodeId,
    ProgressView,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotResponse,
    SoftState,
    Status,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)

MAX_COMMITTED_PER_READY = 8192


class Raft:
    """One Raft server. See the module docstring for the host contract."""

    def __init__(
        self,
        config: RaftConfig,
        rng: random.Random,
        *,
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        entries: Sequence[Entry] = (),
        applied: int = 0,
    ) -> None:
        self.cfg = config
        self._rng = rng
        self._id = config.id
        hs = hard_state or HardState()
        self.log = RaftLog(snapshot, entries, applied)
        self._term = hs.term
        self._vote = hs.vote
        self.log.commit_to(max(hs.commit, self.log.committed))
        self._role = Role.FOLLOWER
        self._leader: NodeId = NONE
        self._prs: dict[NodeId, Progress] = {}
        self._votes: dict[NodeId, bool] = {}
        self._msgs: list[AnyMessage] = []
        self._read_states: list[ReadState] = []
        self._readonly = ReadOnly()
        self._reads_waiting_commit: list[bytes] = []
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = 0
        self._transferee: NodeId = NONE
        self._campaign_allowed = True
        self._pending_conf_index = 0
        self._uncommitted_bytes = 0
        self._incoming: tuple[InstallSnapshot, bytearray] | None = None
        self._pending_snapshot: Snapshot | None = None
        self._prev_hard = HardState(self._term, self._vote, self.log.committed)
        self._prev_soft = SoftState(NONE, Role.FOLLOWER)
        self._in_ready = False
        self._vote_weight = 2 if "double_vote_count" in config.faults else 1
        self._reset_randomized_timeout()

    # ================================================================ inspection
    @property
    def id(self) -> NodeId:
        return self._id

    @property
    def term(self) -> int:
        return self._term

    @property
    def role(self) -> Role:
        return self._role

    @property
    def leader(self) -> NodeId:
        return self._leader

    @property
    def conf(self) -> ConfState:
        return self.log.conf()

    def entry(self, index: int) -> Entry | None:
        return self.log.entry(index)

    def status(self) -> Status:
        progress = {
            nid: ProgressView(p.match, p.next, p.state.value, p.recent_active, p.learner)
            for nid, p in self._prs.items()
        }
        return Status(
            id=self._id,
            role=self._role,
            term=self._term,
            leader=self._leader,
            commit=self.log.committed,
            applied=self.log.applied,
            last_index=self.log.last_index(),
            first_index=self.log.first_index(),
            snapshot_index=self.log.snapshot.meta.index,
            conf=self.log.conf(),
            progress=progress,
            transferee=self._transferee,
        )

    def _promotable(self) -> bool:
        return (
            self._campaign_allowed
            and self._id in self.log.conf().voters
            and self._pending_snapshot is None
        )

    def _check_not_in_ready(self) -> None:
        if self._in_ready:
            raise RuntimeError("Raft input between ready() and advance(): queue it instead")

    # ================================================================ inputs
    def tick(self) -> None:
        self._check_not_in_ready()
        if self._role is Role.LEADER:
            self._tick_leader()
        else:
            self._election_elapsed += 1
            if self._promotable() and self._election_elapsed >= self._randomized_timeout:
                self._election_elapsed = 0
                self._start_campaign(transfer=False)

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.cfg.election_tick:
            self._election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                self._become_follower(self._term, NONE)
                return
            if self._transferee != NONE:
                self._transferee = NONE  # transfer took too long: abort it
        if self._role is not Role.LEADER:
            return
        if not self._campaign_allowed and self._transferee == NONE:
            self._transfer_to_best()
        if self._heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat(self._readonly.last_ctx())
            for nid, pr in self._prs.items():
                if pr.state is ProgressState.SNAPSHOT and nid != self._id:
                    pr.snapshot_stall += 1
                    if pr.snapshot_stall >= 3:
                        pr.snapshot_stall = 0
                        self._send_snapshot_chunk(nid, pr)

    def _quorum_active(self) -> bool:
        active = [nid for nid, pr in self._prs.items() if pr.recent_active or nid == self._id]
        for nid, pr in self._prs.items():
            if nid != self._id:
                pr.recent_active = False
        return has_quorum(self.log.conf().voters, active)

    def campaign(self) -> None:
        self._check_not_in_ready()
        if self._role is not Role.LEADER and self._promotable():
            self._start_campaign(transfer=False)

    def set_campaign_allowed(self, allowed: bool) -> None:
        self._check_not_in_ready()
        self._campaign_allowed = allowed
        if not allowed and self._role is Role.LEADER:
            self._transfer_to_best()
        elif not allowed and self._role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._become_follower(self._term, NONE)

    def propose(self, data: bytes) -> int:
        self._check_not_in_ready()
        self._check_can_propose()
        if self._uncommitted_bytes + len(data) > self.cfg.max_uncommitted_bytes:
            raise ProposalDropped("too many uncommitted bytes; retry later")
        self._uncommitted_bytes += len(data)
        return self._append_entry(EntryType.NORMAL, data)

    def propose_conf_change(self, cc: ConfChange) -> int:
        self._check_not_in_ready()
        self._check_can_propose()
        if self.log.term_or_zero(self.log.committed) != self._term:
            raise ProposalDropped("no entry of the current term has committed yet")
        if self._pending_conf_index > self.log.committed:
            raise ProposalDropped("another configuration change is still uncommitted")
        conf = self.log.conf()
        if cc.type is not ConfChangeType.ADD_VOTER and conf.voters == {cc.node_id}:
            raise ProposalDropped("cannot remove or demote the last voter")
        index = self._append_entry(EntryType.CONF_CHANGE, cc.encode())
        self._pending_conf_index = index
        return index

    def _check_can_propose(self) -> None:
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if self._transferee != NONE:
            raise ProposalDropped(f"leadership transfer to {self._transferee} in progress")
        if self._id not in self.log.conf().voters:
            raise ProposalDropped("this leader is being removed from the cluster")

    def _append_entry(self, etype: EntryType, data: bytes) -> int:
        index = self.log.last_index() + 1
        self.log.append([Entry(self._term, index, etype, data)])
        if etype is EntryType.CONF_CHANGE:
            self._sync_progress_to_conf()
            self._maybe_commit()  # the quorum itself may have changed
        return index

    def read_index(self, ctx: bytes) -> None:
        self._check_not_in_ready()
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if "read_without_quorum" in self.cfg.faults:
            self._read_states.append(ReadState(self.log.committed, ctx))
            return
        if self.log.term_or_zero(self.log.committed) != self._term:
            self._reads_waiting_commit.append(ctx)  # answered once our no-op commits
            return
        self._start_read(ctx)

    def _start_read(self, ctx: bytes) -> None:
        voters = self.log.conf().voters
        if voters == {self._id} or self.cfg.read_only is ReadOnlyOption.LEASE_BASED:
            self._read_states.append(ReadState(self.log.committed, ctx))
        else:
            self._readonly.add(self.log.committed, ctx, self._id)
            self._broadcast_heartbeat(ctx)

    def transfer_leadership(self, to: NodeId) -> None:
        self._check_not_in_ready()
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if to == self._id:
            return
        if to not in self.log.conf().voters:
            raise ValueError(f"node {to} is not a voter")
        self._transferee = to
        self._election_elapsed = 0
        pr = self._prs[to]
        if pr.match == self.log.last_index():
            self._send(TimeoutNow(self._id, to, self._term))

    def _transfer_to_best(self) -> None:
        candidates = [
            (pr.match, nid)
            for nid, pr in self._prs.items()
            if nid != self._id and nid in self.log.conf().voters
        ]
        if candidates:
            self.transfer_leadership(max(candidates)[1])

    def compact(self, index: int, data: bytes) -> Snapshot:
        self._check_not_in_ready()
        return self.log.compact(index, data)

    # ================================================================ step
    def step(self, msg: AnyMessage) -> None:
        self._check_not_in_ready()
        if msg.to != self._id:
            return
        if msg.term > self._term:
            if isinstance(msg, VoteRequest):
                in_lease = (
                    self.cfg.check_quorum
                    and self._leader != NONE
                    and self._election_elapsed < self.cfg.election_tick
                )
                if in_lease and not msg.transfer:
                    return  # we heard from a live leader recently: do not help depose it
            if isinstance(msg, VoteRequest) and msg.pre_vote:
                pass  # a pre-vote never changes our term
            elif isinstance(msg, VoteResponse) and msg.pre_vote and msg.granted:
                pass  # granted pre-votes carry the future term we asked for
            else:
                leader = (
                    msg.frm
                    if isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot)
                    else NONE
                )
                self._become_follower(msg.term, leader)
        elif msg.term < self._term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and isinstance(
                msg, AppendEntries | Heartbeat
            ):
                # A stale leader (or one cut off while we moved on) learns our term.
                self._send(AppendResponse(self._id, msg.frm, self._term, 0))
            elif isinstance(msg, VoteRequest) and msg.pre_vote:
                self._send(VoteResponse(self._id, msg.frm, self._term, False, pre_vote=True))
            return

        if isinstance(msg, VoteRequest):
            self._handle_vote_request(msg)
        elif self._role is Role.LEADER:
            self._step_leader(msg)
        elif self._role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(msg)
        else:
            self._step_follower(msg)

    def _handle_vote_request(self, m: VoteRequest) -> None:
        can_vote = (
            self._vote == m.frm
            or (self._vote == NONE and self._leader == NONE)
            or (m.pre_vote and m.term > self._term)
        )
        up_to_date = "no_log_check_on_vote" in self.cfg.faults or self.log.is_up_to_date(
            m.last_index, m.last_term
        )
        if can_vote and up_to_date:
            # Answer a pre-vote with the term it asked about, so the candidate counts it.
            self._send(VoteResponse(self._id, m.frm, m.term, True, pre_vote=m.pre_vote))
            if not m.pre_vote:
                self._election_elapsed = 0
                self._vote = m.frm
        else:
            self._send(VoteResponse(self._id, m.frm, self._term, False, pre_vote=m.pre_vote))

    def _step_candidate(self, m: AnyMessage) -> None:
        if isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
        elif isinstance(m, VoteResponse):
            if m.pre_vote != (self._role is Role.PRE_CANDIDATE):
                return
            self._votes[m.frm] = m.granted
            outcome = tally(self.log.conf().voters, self._votes, self._vote_weight)
            if outcome == VoteOutcome.WON:
                if self._role is Role.PRE_CANDIDATE:
                    self._campaign(transfer=False)
                else:
                    self._become_leader()
            elif outcome == VoteOutcome.LOST:
                self._become_follower(self._term, NONE)

    def _step_follower(self, m: AnyMessage) -> None:
        if isinstance(m, AppendEntries):
            self._election_elapsed = 0
            self._leader = m.frm
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self._election_elapsed = 0
            self._leader = m.frm
            self.log.commit_to(m.commit)
            self._send(HeartbeatResponse(self._id, m.frm, self._term, m.ctx))
        elif isinstance(m, InstallSnapshot):
            self._election_elapsed = 0
            self._leader = m.frm
            self._handle_snapshot_chunk(m)
        elif isinstance(m, TimeoutNow) and self._promotable():
            self._campaign(transfer=True)

    def _blank(self) -> bool:
        # A node that has never learned any configuration (a fresh joiner) must first
        # receive a snapshot: that is where the cluster's configuration comes from.
        return not self.log.conf().members()

    def _handle_append(self, m: AppendEntries) -> None:
        if self._blank():
            self._send(AppendResponse(self._id, m.frm, self._term, m.prev_index, reject=True))
            return
        if m.prev_index < self.log.committed:
            self._send(AppendResponse(self._id, m.frm, self._term, self.log.committed))
            return
        last_new = self.log.maybe_append(m.prev_index, m.prev_term, m.entries)
        if last_new is not None:
            self.log.commit_to(min(m.commit, last_new))
            self._send(AppendResponse(self._id, m.frm, self._term, last_new))
            return
        hint = self.log.find_conflict_by_term(min(m.prev_index, self.log.last_index()), m.prev_term)
        self._send(
            AppendResponse(
                self._id,
                m.frm,
                self._term,
                m.prev_index,
                reject=True,
                hint_index=hint,
                hint_term=self.log.term_or_zero(hint),
            )
        )

    def _handle_snapshot_chunk(self, m: InstallSnapshot) -> None:
        idx = m.meta.index
        if idx <= self.log.committed and not self._blank():
            # Already have everything it covers; tell the leader where we are.
            self._send(SnapshotResponse(self._id, m.frm, self._term, idx, 0, done=True))
            return
        if m.offset == 0:
            self._incoming = (m, bytearray())
        if self._incoming is None or self._incoming[0].meta != m.meta:
            self._send(SnapshotResponse(self._id, m.frm, self._term, idx, 0, reject=True))
            return
        buf = self._incoming[1]
        if m.offset != len(buf):
            self._send(SnapshotResponse(self._id, m.frm, self._term, idx, len(buf), reject=True))
            return
        buf += m.chunk
        if not m.done:
            self._send(SnapshotResponse(self._id, m.frm, self._term, idx, len(buf)))
            return
        self._incoming = None
        snap = Snapshot(m.meta, bytes(buf))
        if self.log.match_term(idx, m.meta.term) and not self._blank():
            self.log.commit_to(idx)  # our log already has it: just fast-forward
        else:
            self.log.restore(snap)
            self._pending_snapshot = snap
        self._send(SnapshotResponse(self._id, m.frm, self._term, idx, len(buf), done=True))

    # ---------------------------------------------------------------- leader
    def _step_leader(self, m: AnyMessage) -> None:
        pr = self._prs.get(m.frm)
        if pr is None:
            return
        if isinstance(m, AppendResponse):
            pr.recent_active = True
            if m.reject:
                if m.index <= self.log.snapshot.meta.index and pr.state is not (
                    ProgressState.SNAPSHOT
                ):
                    # Cannot match even at our snapshot (e.g. a blank new member).
                    pr.become_snapshot(self.log.snapshot)
                    self._send_snapshot_chunk(m.frm, pr)
                    return
                hint = m.hint_index
                if m.hint_term > 0:
                    hint = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
                if pr.maybe_decr_to(m.index, hint) and pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                return
            updated = pr.maybe_update(m.index)
            if pr.state is ProgressState.PROBE and m.index >= pr.match:
                pr.become_replicate()  # the logs match at m.index: start pipelining
            elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.snapshot_index:
                pr.become_probe()
            if updated:
                pr.inflights.free_le(m.index)
                self._maybe_commit()
                if m.frm == self._transferee and pr.match == self.log.last_index():
                    self._send(TimeoutNow(self._id, m.frm, self._term))
        elif isinstance(m, HeartbeatResponse):
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and pr.match < self.log.last_index():
                # Appends may have been lost: free a slot and probe at our last index; a
                # rejection sends the follower back to probing from its match.
                pr.inflights.free_first()
                self._send_append(m.frm, pr, self.log.last_index(), self.log.committed, empty=True)
            if m.ctx and m.frm in self.log.conf().voters:
                acks = self._readonly.ack(m.ctx, m.frm)
                if acks is not None and has_quorum(self.log.conf().voters, acks):
                    self._read_states.extend(self._readonly.release_through(m.ctx))
        elif isinstance(m, SnapshotResponse):
            pr.recent_active = True
            if pr.state is not ProgressState.SNAPSHOT or m.index != pr.snapshot_index:
                return
            pr.snapshot_stall = 0
            if m.done:
                pr.maybe_update(m.index)
                pr.become_probe()
            else:
                pr.snapshot_offset = m.next_offset
                self._send_snapshot_chunk(m.frm, pr)

    def _maybe_commit(self) -> None:
        voters = self.log.conf().voters
        match = {nid: pr.match for nid, pr in self._prs.items()}
        mci = committed_index(voters, match)
        if mci <= self.log.committed:
            return
        # Raft §5.4.2: count replicas only for entries of the current term.
        if self.log.term_or_zero(mci) != self._term and "commit_old_term" not in self.cfg.faults:
            return
        self.log.commit_to(mci)
        if self.log.term_or_zero(self.log.committed) == self._term and self._reads_waiting_commit:
            waiting, self._reads_waiting_commit = self._reads_waiting_commit, []
            for ctx in waiting:
                self._start_read(ctx)
        if self._id not in voters and self.log.conf_index() <= self.log.committed:
            self._become_follower(self._term, NONE)  # our own removal has committed

    def _sync_progress_to_conf(self) -> None:
        conf = self.log.conf()
        members = conf.members()
        for nid in list(self._prs):
            if nid not in members and nid != self._id:
                del self._prs[nid]
        for nid in members:
            pr = self._prs.get(nid)
            if pr is None:
                pr = Progress(
                    next_index=self.log.last_index() + 1,
                    max_inflight=self.cfg.max_inflight_msgs,
                    learner=nid not in conf.voters,
                )
                pr.recent_active = True
                self._prs[nid] = pr
            pr.learner = nid not in conf.voters
        if self._transferee != NONE and self._transferee not in conf.voters:
            self._transferee = NONE

    def _send_snapshot_chunk(self, to: NodeId, pr: Progress) -> None:
        snap = pr.pinned
        if snap is None:
            snap = self.log.snapshot
            pr.become_snapshot(snap)
        data = snap.data
        off = min(pr.snapshot_offset, len(data))
        chunk = data[off : off + self.cfg.snapshot_chunk_size]
        done = off + len(chunk) >= len(data)
        self._send(
            InstallSnapshot(self._id, to, self._term, snap.meta, off, chunk, done, total=len(data))
        )

    def _broadcast_heartbeat(self, ctx: bytes) -> None:
        for nid, pr in self._prs.items():
            if nid == self._id:
                continue
            commit = min(pr.match, self.log.committed)
            pr.commit_sent = max(pr.commit_sent, commit)
            self._send(Heartbeat(self._id, nid, self._term, commit, ctx))

    def _flush_appends(self) -> None:
        """Send whatever each follower is missing, as few messages as flow control allows."""
        last = self.log.last_index()
        commit = self.log.committed
        for nid, pr in self._prs.items():
            if nid == self._id:
                continue
            sent_any = False
            while not pr.paused() and (pr.next <= last or pr.state is ProgressState.PROBE):
                if not self._send_append(nid, pr, last, commit):
                    break
                sent_any = True
                if pr.state is ProgressState.PROBE:
                    break
            if (
                not sent_any
                and pr.state is ProgressState.REPLICATE
                and pr.commit_sent < min(commit, pr.match)
            ):
                # Nothing new to send but the commit index moved: tell the follower.
                self._send_append(nid, pr, last, commit, empty=True)

    def _send_append(
        self, to: NodeId, pr: Progress, last: int, commit: int, empty: bool = False
    ) -> bool:
        prev = pr.next - 1
        if prev < self.log.snapshot.meta.index:
            pr.become_snapshot(self.log.snapshot)
            self._send_snapshot_chunk(to, pr)
            return False
        prev_term = self.log.term(prev)
        entries: list[Entry] = []
        if not empty and pr.next <= last:
            entries = self.log.slice(pr.next, last, self.cfg.max_size_per_msg)
        msg_commit = min(commit, prev + len(entries)) if pr.state is ProgressState.PROBE else commit
        pr.commit_sent = max(pr.commit_sent, min(msg_commit, prev + len(entries)))
        self._send(
            AppendEntries(self._id, to, self._term, prev, prev_term, tuple(entries), msg_commit)
        )
        pr.sent_append(prev + len(entries), len(entries))
        return True

    # ================================================================ roles
    def _reset_randomized_timeout(self) -> None:
        et = self.cfg.election_tick
        self._randomized_timeout = et + self._rng.randrange(et)

    def _become_follower(self, term: int, leader: NodeId) -> None:
        if term != self._term:
            self._term = term
            self._vote = NONE
        self._role = Role.FOLLOWER
        self._leader = leader
        self._reset_role_state()

    def _reset_role_state(self) -> None:
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self._votes = {}
        self._transferee = NONE
        self._readonly.reset()
        self._reads_waiting_commit = []
        self._prs = {}

    def _start_campaign(self, *, transfer: bool) -> None:
        if self.cfg.pre_vote and not transfer:
            self._pre_campaign()
        else:
            self._campaign(transfer=transfer)

    def _pre_campaign(self) -> None:
        self._role = Role.PRE_CANDIDATE
        self._leader = NONE
        self._votes = {self._id: True}
        self._request_votes(self._term + 1, pre_vote=True, transfer=False)

    def _campaign(self, *, transfer: bool) -> None:
        self._term += 1
        self._vote = self._id
        self._role = Role.CANDIDATE
        self._leader = NONE
        self._election_elapsed = 0
        self._reset_randomized_timeout()
        self._votes = {self._id: True}
        self._request_votes(self._term, pre_vote=False, transfer=transfer)

    def _request_votes(self, term: int, *, pre_vote: bool, transfer: bool) -> None:
        voters = self.log.conf().voters
        outcome = tally(voters, self._votes, self._vote_weight)
        if outcome == VoteOutcome.WON:  # a single-voter cluster wins at once
            if pre_vote:
                self._campaign(transfer=transfer)
            else:
                self._become_leader()
            return
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for nid in sorted(voters):
            if nid != self._id:
                self._send(
                    VoteRequest(self._id, nid, term, last_index, last_term, pre_vote, transfer)
                )

    def _become_leader(self) -> None:
        self._role = Role.LEADER
        self._leader = self._id
        self._reset_role_state()
        self._uncommitted_bytes = 0
        self._sync_progress_to_conf()
        me = self._prs.get(self._id)
        if me is not None:
            me.match = self.log.stable
            me.become_replicate()
        # Any configuration entry in our uncommitted tail counts as pending.
        self._pending_conf_index = self.log.last_index()
        self._append_entry(EntryType.NORMAL, b"")  # the no-op that commits our term

    # ================================================================ output
    def _send(self, msg: AnyMessage) -> None:
        self._msgs.append(msg)

    def has_ready(self) -> bool:
        if self._role is Role.LEADER:
            self._flush_appends()
        # Field by field: this runs several times per loop iteration of every host.
        log, hs, ss = self.log, self._prev_hard, self._prev_soft
        return bool(
            self._msgs
            or self._read_states
            or log.stable < log.last_index()
            or log.applied < log.committed
            or self._pending_snapshot is not None
            or hs.term != self._term
            or hs.vote != self._vote
            or hs.commit != log.committed
            or ss.leader != self._leader
            or ss.role is not self._role
        )

    def _hard_state(self) -> HardState:
        return HardState(self._term, self._vote, self.log.committed)

    def ready(self) -> Ready:
        self._check_not_in_ready()
        if self._role is Role.LEADER:
            self._flush_appends()
        hs = self._hard_state()
        soft = SoftState(self._leader, self._role)
        entries = tuple(self.log.unstable_entries())
        snap = self._pending_snapshot
        must_sync = bool(
            entries
            or snap is not None
            or hs.term != self._prev_hard.term
            or hs.vote != self._prev_hard.vote
        )
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hs if hs != self._prev_hard else None,
            entries=entries,
            snapshot=snap,
            committed=tuple(self.log.next_committed(MAX_COMMITTED_PER_READY)),
            messages=tuple(self._msgs),
            read_states=tuple(self._read_states),
            must_sync=must_sync,
        )
        self._msgs = []
        self._read_states = []
        self._in_ready = True
        return rd

    def advance(self, rd: Ready) -> None:
        if not self._in_ready:
            raise RuntimeError("advance() without a pending ready()")
        self._in_ready = False
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.snapshot is not None:
            self._pending_snapshot = None
            self.log.applied = max(self.log.applied, rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            if self.log.match_term(last.index, last.term):
                self.log.stable = max(self.log.stable, last.index)
        if rd.committed:
            self.log.applied = rd.committed[-1].index
            if self._role is Role.LEADER:
                freed = sum(len(e.data) for e in rd.committed)
                self._uncommitted_bytes = max(0, self._uncommitted_bytes - freed)
        if self._role is Role.LEADER:
            me = self._prs.get(self._id)
            if me is not None and self.log.stable > me.match:
                me.match = self.log.stable
                me.next = me.match + 1
                self._maybe_commit()
