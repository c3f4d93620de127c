"""Crash a node between the host's steps (persist -> send -> apply -> advance) while
a KV workload runs, restart it from its disk exactly as the agent does, and check
that nothing acknowledged was lost.

Three real RaftNodes with real LogStorage on a FaultyFileSystem (a crash keeps only
what was synced) and the real FSM, connected by an in-memory transport
(tests/raft/inproc.py). Every scenario ends the same way: the cluster converges
(one leader, every log complete and applied), logs agree entry by entry, the KV
tables are identical, every acknowledged write is there with its value; then the
whole cluster loses power at once, restarts from disk and is checked again.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from inproc import Cluster, CrashingFSM, CrashingStorage, Trigger, Workload

from stack.raft.types import AnyMessage, AppendEntries, AppendResponse, Role, VoteRequest
from stack.state import kv
from stack.state.commands import CommandRegistry

pytestmark = pytest.mark.timeout(30)

_REC_HEADER = struct.Struct(">3sBII")  # storage.py's record header: magic flags len crc

MakeCluster = Callable[..., Cluster]


@pytest.fixture
async def make_cluster(tmp_path: Path) -> AsyncIterator[MakeCluster]:
    """Cluster(tmp_path, **kw), shut down after the test whatever happened."""
    made: list[Cluster] = []

    def make(**kw: Any) -> Cluster:
        c = Cluster(tmp_path, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.shutdown()


def _role(c: Cluster, nid: int) -> Role:
    return c.hosts[nid].node.core.role


def _key_of(registry: CommandRegistry, data: bytes) -> str:
    cmd = registry.decode(data)
    assert cmd.type_id == kv.KV_SET
    key: str = cmd.body["key"]
    return key


async def _finish(c: Cluster, wl: Workload) -> None:
    """Converge and check; then a whole-cluster power cut, restart, and check again."""
    await c.stop_writers(wl)
    assert len(wl.acked) >= 100, f"workload too small to mean much: {len(wl.acked)}"
    await c.wait_converged()
    c.check(wl)
    await c.crash_all()
    for nid in c.ids:
        c.boot(nid)
    await c.wait_converged()
    c.check(wl)
    await c.stop_all()


async def _recover(c: Cluster, wl: Workload, nid: int) -> None:
    """The cluster goes on without `nid`, then `nid` restarts from disk (no crash
    point any more) and the workload goes on with it."""
    await c.more_acks(wl, 40)
    c.boot(nid)
    await c.more_acks(wl, 40)


# ================================================================ (a) after persist, before send


async def test_follower_crash_after_persist_before_ack(make_cluster: MakeCluster) -> None:
    """A follower fsyncs a batch of appended entries and dies before its
    AppendResponse leaves: the leader never counts it, the entries are on its disk
    after the crash, nothing acknowledged is lost."""
    c = make_cluster(seed=11)
    trig: dict[int, Trigger] = {}
    for nid in c.ids:
        trig[nid] = Trigger(
            match=lambda n=nid, **kw: bool(kw["entries"]) and _role(c, n) is Role.FOLLOWER
        )
    acks_seen: list[AppendResponse] = []

    def record(m: AnyMessage) -> None:
        if isinstance(m, AppendResponse):
            acks_seen.append(m)

    c.net.filters.append(record)  # type: ignore[arg-type]
    await c.start(wrap_storage=lambda n, s: CrashingStorage(s, trig[n]))
    lead = await c.wait_leader()
    wl = c.start_writers()
    await c.wait_acked(wl, 50)
    victim = next(n for n in c.ids if n != lead.id)
    trig[victim].arm()
    await trig[victim].wait(5)
    persisted = trig[victim].detail["entries"]
    last = persisted[-1][1]
    acks_before = len(acks_seen)
    await c.crash(victim)
    # Its ack for the batch never left (the host sends after the fsync).
    assert not [
        m for m in acks_seen[:acks_before] if m.frm == victim and not m.reject and m.index >= last
    ]
    await c.more_acks(wl, 40)
    h = c.boot(victim)
    assert h.recovered is not None
    on_disk = {(e.term, e.index) for e in h.recovered.entries}
    assert set(persisted) <= on_disk, "the synced batch did not survive the crash"
    await c.more_acks(wl, 40)
    await _finish(c, wl)


async def test_follower_crash_in_fsync_then_leader_crash(make_cluster: MakeCluster) -> None:
    """The leader can reach one follower only; that follower dies inside the fsync
    of a batch, then the leader dies too, and the two followers elect a leader
    without the batch. Because the follower acknowledges only after its fsync, the
    batch never committed, so no client heard of it and nothing acknowledged is lost."""
    c = make_cluster(seed=14)
    trig = {nid: Trigger(match=lambda **kw: any(e.data for e in kw["entries"])) for nid in c.ids}
    await c.start(wrap_storage=lambda n, s: CrashingStorage(s, trig[n], mode="unsynced"))
    lead = await c.wait_leader()
    wl = c.start_writers()
    await c.wait_acked(wl, 50)
    f1, f2 = (n for n in c.ids if n != lead.id)
    cut = {lead.id, f2}

    def partition(m: AnyMessage) -> str | None:
        return "drop" if {m.frm, m.to} == cut else None

    c.net.filters.append(partition)
    trig[f1].arm()
    await trig[f1].wait(5)
    await c.crash(f1)
    batch = trig[f1].detail["entries"]
    await asyncio.sleep(0.1)  # let the leader process whatever f1 did send
    commit = lead.node.core.log.committed
    assert commit < batch[0][1], f"committed {commit} on an ack sent before the fsync: {batch}"
    await c.crash(lead.id)
    c.net.filters.remove(partition)
    c.boot(f1)
    await c.wait_leader(not_id=lead.id)
    await c.more_acks(wl, 40)
    c.boot(lead.id)
    await c.more_acks(wl, 40)
    await _finish(c, wl)


async def test_leader_crash_after_persist(make_cluster: MakeCluster) -> None:
    """The leader fsyncs a batch (its AppendEntries went out before the fsync) and
    dies before applying or advancing: a new leader takes over, the old one rejoins."""
    c = make_cluster(seed=12)
    trig = {
        nid: Trigger(
            match=lambda n=nid, **kw: (
                any(e.data for e in kw["entries"]) and _role(c, n) is Role.LEADER
            )
        )
        for nid in c.ids
    }
    await c.start(wrap_storage=lambda n, s: CrashingStorage(s, trig[n]))
    lead = await c.wait_leader()
    wl = c.start_writers()
    await c.wait_acked(wl, 50)
    trig[lead.id].arm()
    await trig[lead.id].wait(5)
    persisted = trig[lead.id].detail["entries"]
    await c.crash(lead.id)
    await c.more_acks(wl, 40)
    h = c.boot(lead.id)
    assert h.recovered is not None
    assert set(persisted) <= {(e.term, e.index) for e in h.recovered.entries}
    await c.more_acks(wl, 40)
    await _finish(c, wl)


async def test_candidate_crash_after_persisting_vote(make_cluster: MakeCluster) -> None:
    """The leader dies; the first follower to campaign fsyncs its new term and
    self-vote and dies before any VoteRequest leaves. After restarting it still
    holds that term and vote (it must never vote twice in a term)."""
    c = make_cluster(seed=13)
    trig = {
        nid: Trigger(
            match=lambda n=nid, **kw: kw["hard_state"] is not None and kw["hard_state"].vote == n
        )
        for nid in c.ids
    }
    votes: list[VoteRequest] = []

    def record(m: AnyMessage) -> None:
        if isinstance(m, VoteRequest) and not m.pre_vote:
            votes.append(m)

    c.net.filters.append(record)  # type: ignore[arg-type]
    await c.start(wrap_storage=lambda n, s: CrashingStorage(s, trig[n]))
    lead = await c.wait_leader()
    wl = c.start_writers()
    await c.wait_acked(wl, 50)
    followers = [n for n in c.ids if n != lead.id]
    for n in followers:
        trig[n].arm()
    await c.crash(lead.id)
    deadline = asyncio.get_running_loop().time() + 5
    while not any(trig[n].fired for n in followers):
        assert asyncio.get_running_loop().time() < deadline, c.describe()
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    fired = [n for n in followers if trig[n].fired]
    for n in followers:
        trig[n].armed = False
    for n in fired:
        await c.crash(n)
    for n in fired:
        hs = trig[n].detail["hard_state"]
        sent = [m for m in votes if m.frm == n and m.term == hs.term]
        assert not sent, f"n{n} asked for votes before its vote was on disk: {sent}"
        h = c.boot(n)
        assert h.recovered is not None
        assert h.recovered.hard_state.term == hs.term
        assert h.recovered.hard_state.vote == n
    c.boot(lead.id)
    await c.more_acks(wl, 80)
    await _finish(c, wl)


# ================================================================ (b) after send, before apply


@pytest.mark.parametrize("role", [Role.LEADER, Role.FOLLOWER], ids=["leader", "follower"])
async def test_crash_after_send_before_apply(make_cluster: MakeCluster, role: Role) -> None:
    """The node persisted and sent a Ready, then dies before applying its committed
    entries: those entries were committed, so they must end up applied everywhere,
    though their proposers never heard back."""
    c = make_cluster(seed=21 if role is Role.LEADER else 22)
    trig = {
        nid: Trigger(match=lambda n=nid, **kw: bool(kw["data"]) and _role(c, n) is role)
        for nid in c.ids
    }
    await c.start(wrap_fsm=lambda n, f: CrashingFSM(f, trig[n]))
    lead = await c.wait_leader()
    wl = c.start_writers()
    await c.wait_acked(wl, 50)
    victim = lead.id if role is Role.LEADER else next(n for n in c.ids if n != lead.id)
    trig[victim].arm()
    await trig[victim].wait(5)
    index = trig[victim].detail["index"]
    entry = c.hosts[victim].node.core.log.entry(index)
    assert entry is not None
    key = _key_of(c.registry, entry.data)
    await c.crash(victim)
    await _recover(c, wl, victim)
    await c.stop_writers(wl)
    lead = await c.wait_converged()
    assert lead.node.core.log.entry(index) == entry, "a committed entry was lost"
    for h in c.hosts.values():
        assert h.fsm is not None
        row = kv.get(h.fsm.store, key)[0]
        assert row is not None and row.modify_index == index
    await _finish(c, wl)


# ================================================================ early leader appends


@pytest.mark.parametrize("reach", ["both", "one", "none"])
async def test_leader_crash_after_early_send_before_fsync(
    make_cluster: MakeCluster, reach: str
) -> None:
    """The leader sends AppendEntries before its own fsync; it dies inside that
    fsync, so the batch never reaches its disk. The followers may have it (to
    both, one or none of them): whatever they make of it, nothing acknowledged
    is lost and the restarted leader, with a shorter log than it sent, rejoins."""
    c = make_cluster(seed=31)
    state = {"crashed_leader": 0, "first": 0, "keep": 0}
    trig = {
        nid: Trigger(
            match=lambda n=nid, **kw: (
                any(e.data for e in kw["entries"])
                and kw["entries"][0].index >= state["first"]
                and _role(c, n) is Role.LEADER
            )
        )
        for nid in c.ids
    }
    early: list[AppendEntries] = []

    def watch(m: AnyMessage) -> str | None:
        if (
            isinstance(m, AppendEntries)
            and m.frm == state["crashed_leader"]
            and m.entries
            and m.entries[-1].index >= state["first"] > 0
        ):
            early.append(m)
            if reach == "none" or (reach == "one" and m.to != state["keep"]):
                return "drop"
        return None

    c.net.filters.append(watch)
    await c.start(wrap_storage=lambda n, s: CrashingStorage(s, trig[n], mode="unsynced"))
    lead = await c.wait_leader()
    wl = c.start_writers()
    await c.wait_acked(wl, 50)
    # From now on, watch (and maybe drop) the leader's appends of entries not yet in
    # its log; it dies in the fsync of the first batch of those holding a write.
    state["crashed_leader"] = lead.id
    state["first"] = lead.node.core.log.last_index() + 1
    state["keep"] = next(n for n in c.ids if n != lead.id)
    trig[lead.id].arm()
    await trig[lead.id].wait(5)
    batch = trig[lead.id].detail["entries"]
    assert trig[lead.id].detail["sync"], "expected the leader's batch to need an fsync"
    await c.crash(lead.id)
    state["crashed_leader"] = 0  # the restarted node may lead again: let it talk
    sent = {e.index for m in early for e in m.entries}
    assert {i for _, i in batch} <= sent, "the leader did not send the batch before its fsync"
    await _recover(c, wl, lead.id)
    h = c.hosts[lead.id]
    assert h.recovered is not None
    lost = {(e.term, e.index) for e in h.recovered.entries} & set(batch)
    assert not lost, f"unsynced entries survived the crash: {sorted(lost)}"
    await _finish(c, wl)


# ================================================================ (c) torn tail


def _records(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every intact-looking record in a segment's bytes."""
    out, pos = [], 0
    while pos + _REC_HEADER.size <= len(data):
        _magic, _flags, length, _crc = _REC_HEADER.unpack_from(data, pos)
        end = pos + _REC_HEADER.size + length
        if end > len(data):
            break
        out.append((pos, end))
        pos = end
    return out


async def test_leader_torn_tail_partial_write(make_cluster: MakeCluster) -> None:
    """The leader dies while writing a batch: after the power cut its segment holds
    the synced records plus a prefix of the new batch whose last record is cut
    short. Recovery keeps the intact records, drops the torn one, and the node
    rejoins; nothing acknowledged is lost."""
    c = make_cluster(seed=41)
    trig = {
        nid: Trigger(
            match=lambda n=nid, **kw: (
                sum(1 for e in kw["entries"] if e.data) >= 2 and _role(c, n) is Role.LEADER
            )
        )
        for nid in c.ids
    }
    await c.start(wrap_storage=lambda n, s: CrashingStorage(s, trig[n], mode="unsynced"))
    lead = await c.wait_leader()
    wl = c.start_writers(8)
    await c.wait_acked(wl, 50)
    trig[lead.id].arm()
    await trig[lead.id].wait(5)
    batch = trig[lead.id].detail["entries"]
    seg = lead.last_segment()
    written = seg.read_bytes()  # what the process wrote, synced or not
    await c.crash(lead.id)
    durable = seg.read_bytes()
    assert len(durable) < len(written) and written.startswith(durable)
    seg.write_bytes(written[:-5])  # the disk kept all but the last 5 bytes of the batch
    assert _records(written)[-1][1] == len(written)
    await c.more_acks(wl, 40)
    h = c.boot(lead.id)
    assert h.recovered is not None
    recovered_last = h.recovered.entries[-1].index
    assert recovered_last == batch[-1][1] - 1, (recovered_last, batch)
    assert seg.stat().st_size == _records(written)[-1][0], "torn record not truncated away"
    await c.more_acks(wl, 40)
    await _finish(c, wl)


async def test_leader_flipped_byte_in_last_record(make_cluster: MakeCluster) -> None:
    """After a crash, one byte of the last (synced) record of the leader's segment is
    flipped. Recovery cannot tell it from a torn write, drops that record, and the
    node takes it back from the new leader; nothing acknowledged is lost."""
    c = make_cluster(seed=51)
    await c.start()
    lead = await c.wait_leader()
    wl = c.start_writers()
    await c.wait_acked(wl, 80)
    await c.crash(lead.id)
    seg = lead.last_segment()
    data = seg.read_bytes()
    start, end = _records(data)[-1]
    assert end == len(data)
    lead.fs.flip_byte(seg, start + _REC_HEADER.size + (end - start - _REC_HEADER.size) // 2)
    await c.more_acks(wl, 40)  # a new leader was elected without it
    h = c.boot(lead.id)
    assert h.recovered is not None
    assert seg.stat().st_size == start, "damaged last record not truncated away"
    assert h.node.core.log.last_index() == h.recovered.entries[-1].index
    await c.more_acks(wl, 40)
    await _finish(c, wl)


# ================================================================ snapshots


async def test_follower_crash_after_persisting_leader_snapshot(make_cluster: MakeCluster) -> None:
    """A cut-off follower falls behind the leader's compaction; when it comes back
    the leader sends a snapshot, and the follower dies right after persisting it,
    before restoring its state machine from it. On restart it rebuilds its state
    from that snapshot on disk (as the agent does) and catches up."""
    c = make_cluster(seed=61, snapshot_threshold=40)
    trig = {nid: Trigger(match=lambda **kw: kw["snapshot"] is not None) for nid in c.ids}
    await c.start(wrap_storage=lambda n, s: CrashingStorage(s, trig[n]))
    lead = await c.wait_leader()
    wl = c.start_writers()
    await c.wait_acked(wl, 30)
    victim = next(n for n in c.ids if n != lead.id)

    def cut(m: AnyMessage) -> str | None:
        return "drop" if victim in (m.frm, m.to) else None

    c.net.filters.append(cut)
    await asyncio.sleep(0.05)  # appends already on their way still land
    behind = c.hosts[victim].node.core.log.last_index()
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # until whoever leads has compacted past the follower's log
        now = c.leader()
        if now is not None and now.node.core.log.snapshot.meta.index > behind + 1:
            break
        assert asyncio.get_running_loop().time() < deadline, c.describe()
        await asyncio.sleep(0.01)
    trig[victim].arm()
    c.net.filters.remove(cut)
    await trig[victim].wait(5)
    await c.crash(victim)
    h = c.boot(victim)
    assert h.recovered is not None and h.recovered.snapshot is not None
    assert h.recovered.snapshot.meta.index > behind
    assert h.fsm is not None and h.fsm.applied_index >= h.recovered.snapshot.meta.index
    await c.more_acks(wl, 40)
    await _finish(c, wl)
