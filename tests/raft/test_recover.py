"""Outage recovery (`stack.raft.recover`) on real on-disk state.

The state comes from a real three-voter cluster (tests/raft/inproc.py: RaftNodes, real
LogStorage and FSM, in-memory network). It applies KV puts, compacts once, commits a
configuration change (a learner that never shows up), then the leader is cut off and
appends one more put that nobody else receives. The cluster is stopped, and the
leader's Raft directory is the survivor every test recovers (a fresh copy each time).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from inproc import Cluster

from stack.agent import build_registry
from stack.raft.config import RaftConfig
from stack.raft.core import Raft
from stack.raft.faultfs import FaultyFileSystem, PowerCut, StorageInUse
from stack.raft.recover import RecoverResult, recover
from stack.raft.storage import LogStorage, StoredState
from stack.raft.types import (
    AnyMessage,
    ConfChange,
    ConfChangeType,
    ConfState,
    EntryType,
    HardState,
    Role,
    Snapshot,
)
from stack.state import kv
from stack.state.commands import WriteResult
from stack.state.fsm import FSM

pytestmark = pytest.mark.timeout(60)

LEARNER = 99  # added as a learner, never started


@dataclass(frozen=True)
class Survivor:
    id: int
    pristine: Path  # the survivor's raft directory as the cluster left it: never modified
    committed: dict[str, bytes]  # puts acknowledged to their clients
    uncommitted: tuple[str, bytes, int]  # key, value, log index: only in the survivor's log
    others_last: int  # the highest last index among the lost servers
    old: StoredState  # what the survivor's directory held


async def _build(root: Path) -> Survivor:
    c = Cluster(root, seed=7, snapshot_threshold=12)
    try:
        await c.start()
        lead = await c.wait_leader()
        committed: dict[str, bytes] = {}

        async def put(i: int) -> None:
            key, value = f"k{i:03d}", f"v{i}".encode()
            res = await lead.node.propose(kv.encode_set(c.registry, key, value))
            assert isinstance(res, WriteResult) and res.ok
            committed[key] = value

        for i in range(16):
            await put(i)
        await lead.node.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, LEARNER))
        for i in range(16, 20):
            await put(i)
        await c.wait_converged()

        # Cut the leader off (both ways) and let it append one more put alone.
        def isolate(m: AnyMessage) -> str | None:
            return "drop" if lead.id in (m.frm, m.to) else None

        c.net.filters.append(isolate)
        key, value = "uncommitted", b"only on the survivor"
        pending = asyncio.ensure_future(lead.node.propose(kv.encode_set(c.registry, key, value)))
        core = lead.node.core
        index = core.log.last_index() + 1
        deadline = asyncio.get_running_loop().time() + 5
        while core.log.stable < index:  # persisted on the survivor's disk
            assert asyncio.get_running_loop().time() < deadline, c.describe()
            await asyncio.sleep(0.005)
        assert core.log.committed < index
        others_last = max(c.hosts[n].node.core.log.last_index() for n in c.ids if n != lead.id)
        await c.stop_all()
        with contextlib.suppress(Exception):
            await pending  # OutcomeUnknown: the node stopped with it in flight
    finally:
        await c.shutdown()

    pristine = root / "survivor"
    shutil.copytree(lead.raft_dir, pristine)
    st = LogStorage.open(pristine)
    try:
        old = st.initial_state()
    finally:
        st.close()
    return Survivor(lead.id, pristine, committed, (key, value, index), others_last, old)


@pytest.fixture(scope="module")
def survivor(tmp_path_factory: pytest.TempPathFactory) -> Survivor:
    s = asyncio.run(_build(tmp_path_factory.mktemp("cluster")))
    # The state these tests are about: a compacted log, a conf change and the lone
    # uncommitted entry after the snapshot.
    assert s.old.snapshot is not None and s.old.snapshot.meta.index > 0
    assert s.old.snapshot.data
    types = [e.type for e in s.old.entries]
    assert EntryType.CONF_CHANGE in types
    assert s.old.entries[-1].index == s.uncommitted[2]
    assert s.others_last < s.uncommitted[2]
    return s


def _copy(s: Survivor, tmp_path: Path) -> Path:
    d = tmp_path / "raft"
    shutil.copytree(s.pristine, d)
    return d


def _recover(d: Path, voters: set[int], **kw: object) -> tuple[RecoverResult, FSM]:
    fsm = FSM(build_registry())
    res = recover(
        d,
        voters,
        apply_entry=fsm.apply,
        restore=fsm.restore,
        snapshot=fsm.snapshot,
        **kw,  # type: ignore[arg-type]
    )
    return res, fsm


def _load(d: Path, fs: FaultyFileSystem | None = None) -> StoredState:
    st = LogStorage.open(d, fs=fs)
    try:
        return st.initial_state()
    finally:
        st.close()


def _kv(fsm: FSM) -> dict[str, bytes]:
    return {e.key: e.value for e in kv.list_prefix(fsm.store, "")[0]}


def _restored(snap: Snapshot) -> FSM:
    fsm = FSM(build_registry())
    fsm.restore(snap.data)
    return fsm


# ================================================================ the recovered state


def test_recover_one_survivor_as_the_only_voter(survivor: Survivor, tmp_path: Path) -> None:
    d = _copy(survivor, tmp_path)
    old = survivor.old
    assert old.snapshot is not None
    last = old.entries[-1]

    res, fsm = _recover(d, {survivor.id})

    assert res == RecoverResult(
        index=last.index,
        term=last.term,
        voters=frozenset({survivor.id}),
        entries_replayed=len(old.entries),
    )
    st = _load(d)
    assert st.entries == []
    assert st.snapshot is not None
    assert st.snapshot.meta.index == last.index
    assert st.snapshot.meta.term == last.term
    # the learner and the two lost voters are gone
    assert st.snapshot.meta.conf == ConfState(voters=frozenset({survivor.id}))
    assert st.hard_state.term > old.hard_state.term
    assert st.hard_state.vote == 0
    assert st.hard_state.commit == last.index
    # exactly the files of the new state: the old snapshot and every segment are gone
    assert sorted(p.name for p in d.iterdir()) == [
        "hardstate",
        f"snap-{last.term:020d}-{last.index:020d}.snap",
    ]

    restored = _restored(st.snapshot)
    key, value, _ = survivor.uncommitted
    assert _kv(restored) == {**survivor.committed, key: value}
    assert restored.applied_index == last.index  # no-ops and the conf change advanced it
    assert _kv(fsm) == _kv(restored)


def test_uncommitted_entry_in_the_survivors_log_becomes_committed(
    survivor: Survivor, tmp_path: Path
) -> None:
    key, value, index = survivor.uncommitted
    old = survivor.old
    # Before: only in the survivor's log, past its commit index, on no other server.
    assert old.hard_state.commit < index
    assert survivor.others_last < index
    assert any(e.index == index and e.type is EntryType.NORMAL for e in old.entries)
    assert old.snapshot is not None
    assert kv.get(_restored(old.snapshot).store, key)[0] is None

    d = _copy(survivor, tmp_path)
    res, _ = _recover(d, {survivor.id})
    assert res.index == index
    st = _load(d)
    assert st.hard_state.commit == index
    assert st.snapshot is not None
    got = kv.get(_restored(st.snapshot).store, key)[0]
    assert got is not None and got.value == value


def test_recovered_server_elects_itself_and_commits(survivor: Survivor, tmp_path: Path) -> None:
    """Start it as the agent does (core from storage.initial_state(), FSM from the
    snapshot), campaign: it leads alone and commits a new put."""
    d = _copy(survivor, tmp_path)
    res, _ = _recover(d, {survivor.id})
    storage = LogStorage.open(d)
    try:
        st = storage.initial_state()
        assert st.snapshot is not None
        fsm = _restored(st.snapshot)
        core = Raft(
            RaftConfig(id=survivor.id),
            random.Random(1),
            hard_state=st.hard_state,
            snapshot=st.snapshot,
            entries=st.entries,
            applied=st.snapshot.meta.index,
        )
        assert core.log.committed == res.index

        def drive() -> None:
            while core.has_ready():
                rd = core.ready()
                assert not rd.messages, rd.messages  # nobody else to talk to
                storage.save(entries=rd.entries, hard_state=rd.hard_state, snapshot=rd.snapshot)
                for e in rd.committed:
                    fsm.apply(e.index, e.term, e.data if e.type is EntryType.NORMAL else b"")
                core.advance(rd)

        core.campaign()
        drive()
        assert core.role is Role.LEADER
        assert core.term > st.hard_state.term
        index = core.propose(kv.encode_set(fsm.registry, "after", b"recovery"))
        drive()
        assert core.log.committed == index
        got = kv.get(fsm.store, "after")[0]
        assert got is not None and got.value == b"recovery"
        term = core.term
    finally:
        storage.close()
    again = _load(d)
    assert again.hard_state == HardState(term, survivor.id, index)
    assert again.entries[-1].index == index


def test_recover_twice_is_the_same_state_at_a_higher_term(
    survivor: Survivor, tmp_path: Path
) -> None:
    """The second run finds an empty log after the snapshot: the snapshot is rewritten
    in place (same index and term, so the same file name) and nothing is replayed."""
    d = _copy(survivor, tmp_path)
    first, _ = _recover(d, {survivor.id})
    one = _load(d)
    second, _ = _recover(d, {survivor.id, 42})
    two = _load(d)
    assert (second.index, second.term, second.entries_replayed) == (first.index, first.term, 0)
    assert one.snapshot is not None and two.snapshot is not None
    assert two.snapshot.meta.conf == ConfState(voters=frozenset({survivor.id, 42}))
    assert two.snapshot.data == one.snapshot.data
    assert two.hard_state == HardState(one.hard_state.term + 1, 0, first.index)
    assert len(list(d.glob("snap-*.snap"))) == 1


# ================================================================ refusals


def test_refuses_an_empty_voter_set(survivor: Survivor, tmp_path: Path) -> None:
    d = _copy(survivor, tmp_path)
    with pytest.raises(ValueError, match="empty voter set"):
        _recover(d, set())
    with pytest.raises(ValueError, match="positive integers"):
        _recover(d, {0, survivor.id})
    assert _load(d) == survivor.old


def test_refuses_a_missing_directory_without_creating_it(tmp_path: Path) -> None:
    d = tmp_path / "nope" / "raft"
    with pytest.raises(ValueError, match="does not exist"):
        _recover(d, {1})
    assert not d.exists() and not d.parent.exists()


def test_refuses_a_directory_without_raft_state(tmp_path: Path) -> None:
    d = tmp_path / "raft"
    d.mkdir()
    with pytest.raises(ValueError, match="no Raft state"):
        _recover(d, {1})
    assert list(d.iterdir()) == []


def test_refuses_a_directory_in_use(survivor: Survivor, tmp_path: Path) -> None:
    d = _copy(survivor, tmp_path)
    held = LogStorage.open(d)  # a running agent holds the lock
    try:
        with pytest.raises(StorageInUse):
            _recover(d, {survivor.id})
    finally:
        held.close()
    assert _load(d) == survivor.old


def test_a_failing_apply_leaves_the_directory_untouched(survivor: Survivor, tmp_path: Path) -> None:
    d = _copy(survivor, tmp_path)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    fsm = FSM(build_registry())

    def apply(index: int, term: int, data: bytes) -> object:
        if index == survivor.uncommitted[2]:
            raise RuntimeError("boom")
        return fsm.apply(index, term, data)

    with pytest.raises(RuntimeError, match="boom"):
        recover(d, {survivor.id}, apply_entry=apply, restore=fsm.restore, snapshot=fsm.snapshot)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


# ================================================================ crashes


def _syncs_of_a_full_run(survivor: Survivor, tmp_path: Path) -> int:
    fs = FaultyFileSystem()
    _recover(_copy(survivor, tmp_path / "count"), {survivor.id}, fs=fs)
    return fs.file_syncs + fs.dir_syncs


@pytest.mark.parametrize("cut", range(6))
def test_power_cut_during_recover_opens_old_or_new(
    survivor: Survivor, tmp_path: Path, cut: int
) -> None:
    """The power fails before sync number `cut`; what opens is the old state or the
    recovered one, and running recover again completes it."""
    # the snapshot's tmp file, its rename (directory), the segment unlinks (directory),
    # the hard state slot: cuts 0-1 leave the old state, 2-3 the new snapshot beside the
    # old hard state, 4 and later the whole new state
    assert _syncs_of_a_full_run(survivor, tmp_path) == 4
    old = survivor.old
    ref_dir = _copy(survivor, tmp_path / "ref")
    _recover(ref_dir, {survivor.id})
    new = _load(ref_dir)
    assert new.snapshot is not None

    d = _copy(survivor, tmp_path)
    fs = FaultyFileSystem()
    fs.power_cut_after(cut)
    try:
        _recover(d, {survivor.id}, fs=fs)
        done = True
    except PowerCut:
        done = False
    fs.crash()
    assert done == (cut >= 4)

    got = _load(d, fs)
    if got.snapshot == old.snapshot:
        assert got == old
    else:
        assert got.snapshot == new.snapshot
        assert got.entries == []
        # the hard state is written after the snapshot: the old one is still safe
        assert got.hard_state in (old.hard_state, new.hard_state)
    if done:
        assert got == new

    again, _ = _recover(d, {survivor.id}, fs=fs)
    final = _load(d, fs)
    assert final.snapshot == new.snapshot
    assert final.entries == []
    assert final.hard_state.commit == again.index == new.snapshot.meta.index
    assert final.hard_state.term > got.hard_state.term
