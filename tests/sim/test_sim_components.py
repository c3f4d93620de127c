"""The simulator's parts on their own: clock, network, disk, state machine."""

from __future__ import annotations

import random

import pytest

from stack.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta
from stack.sim.clock import TICK, NodeClock, Scheduler
from stack.sim.disk import Disk, DiskError
from stack.sim.host import KVStore, encode_command
from stack.sim.network import NetConfig, Network

# ---------------------------------------------------------------- clock


def test_scheduler_runs_in_time_order_and_ties_in_scheduling_order() -> None:
    s = Scheduler()
    seen: list[tuple[int, str]] = []

    def note(tag: object) -> None:
        seen.append((s.now, str(tag)))

    s.at(20, note, "c")
    s.at(10, note, "a")
    s.at(10, note, "b")
    flushes: list[int] = []
    s.run_until(15, lambda: flushes.append(s.now))
    assert seen == [(10, "a"), (10, "b")]
    assert flushes == [10]
    assert s.now == 15
    s.at(5, note, "late")  # the past is clamped to now
    s.run_until(100)
    assert seen[2:] == [(15, "late"), (20, "c")]


def test_flush_may_schedule_more_work_for_the_same_instant() -> None:
    s = Scheduler()
    seen: list[str] = []
    s.at(1, lambda _: seen.append("event"))
    once = [True]

    def flush() -> None:
        if once[0]:
            once[0] = False
            s.after(0, lambda _: seen.append("from flush"))

    s.run_until(1, flush)
    assert seen == ["event", "from flush"]


def test_node_clock_skew_and_pause() -> None:
    rng = random.Random(1)
    periods = {NodeClock.skewed(rng, 0.1).period for _ in range(50)}
    assert min(periods) >= 90 and max(periods) <= 110 and len(periods) > 5
    clock = NodeClock(TICK)
    assert clock.pause(100, 50) == 150
    assert clock.pause(120, 10) == 150  # a shorter pause does not cut a longer one
    assert clock.paused(149) and not clock.paused(150)
    with pytest.raises(ValueError):
        NodeClock(0)


# ---------------------------------------------------------------- network


def _net(
    cfg: NetConfig, seed: int = 1
) -> tuple[Scheduler, Network[str], list[tuple[int, int, str]]]:
    s = Scheduler()
    got: list[tuple[int, int, str]] = []
    net: Network[str] = Network(
        s, random.Random(seed), lambda to, p: got.append((s.now, to, p)), cfg
    )
    return s, net, got


def test_network_delays_within_bounds_and_reorders() -> None:
    s, net, got = _net(NetConfig(10, 50))
    for i in range(200):
        net.send(1, 2, str(i))
    s.run_until(1000)
    assert len(got) == 200
    assert all(10 <= t <= 50 for t, _, _ in got)
    assert [p for _, _, p in got] != [str(i) for i in range(200)]  # reordered


def test_network_drop_and_duplicate() -> None:
    s, net, got = _net(NetConfig(1, 1, drop=1.0))
    net.send(1, 2, "x")
    s.run_until(10)
    assert got == [] and net.stats.dropped == 1
    s, net, got = _net(NetConfig(1, 5, duplicate=1.0))
    net.send(1, 2, "x")
    s.run_until(10)
    assert [p for _, _, p in got] == ["x", "x"] and net.stats.duplicated == 1


def test_network_partitions_heal_and_one_way_cuts() -> None:
    s, net, got = _net(NetConfig(1, 1))
    net.partition([1], [2, 3])
    for frm, to in [(1, 2), (2, 1), (2, 3), (3, 1)]:
        net.send(frm, to, f"{frm}>{to}")
    s.run_until(5)
    assert [p for _, _, p in got] == ["2>3"]
    net.heal()
    net.block([1], [2])
    net.send(1, 2, "a")
    net.send(2, 1, "b")
    s.run_until(10)
    assert [p for _, _, p in got][1:] == ["b"]
    assert not net.connected(1, 2) and net.connected(2, 1)


def test_network_partition_cuts_packets_already_in_flight() -> None:
    s, net, got = _net(NetConfig(10, 10))
    net.send(1, 2, "in flight")
    net.partition([1], [2])
    s.run_until(20)
    assert got == [] and net.stats.cut == 1


def test_network_reset_loses_packets_from_and_to_a_crashed_node() -> None:
    s, net, got = _net(NetConfig(10, 10))
    net.send(1, 2, "from")
    net.send(2, 1, "to")
    net.send(2, 3, "other")
    net.reset(1)
    net.send(1, 2, "after restart")
    s.run_until(20)
    assert [p for _, _, p in got] == ["other", "after restart"]


def test_network_is_deterministic_per_seed() -> None:
    runs = []
    for _ in range(2):
        s, net, got = _net(NetConfig(1, 100, drop=0.2, duplicate=0.2), seed=7)
        for i in range(100):
            net.send(i % 3, (i + 1) % 3, str(i))
        s.run_until(1000)
        runs.append(got)
    assert runs[0] == runs[1]


# ---------------------------------------------------------------- disk


def ent(index: int, term: int) -> Entry:
    return Entry(term, index, EntryType.NORMAL, b"%d" % index)


def snap(index: int, term: int) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState(voters=frozenset({1}))), b"")


def test_disk_loses_unsynced_writes_on_crash() -> None:
    d = Disk()
    d.write_entries((ent(1, 1), ent(2, 1)))
    d.write_hard_state(HardState(1, 1, 0))
    d.sync()
    d.write_entries((ent(3, 1),))
    d.write_hard_state(HardState(2, 0, 2))
    assert d.dirty
    assert d.crash() == 2
    hs, sn, entries = d.load()
    assert hs == HardState(1, 1, 0) and sn is None
    assert [x.index for x in entries] == [1, 2]


def test_disk_append_replaces_the_suffix_and_refuses_holes() -> None:
    d = Disk()
    d.write_entries((ent(1, 1), ent(2, 1), ent(3, 1)))
    d.write_entries((ent(2, 2),))
    d.sync()
    assert [(x.index, x.term) for x in d.load()[2]] == [(1, 1), (2, 2)]
    d.write_entries((ent(5, 2),))
    with pytest.raises(DiskError):
        d.sync()


def test_disk_snapshot_install_keeps_only_a_matching_suffix() -> None:
    d = Disk()
    d.write_entries(tuple(ent(i, 1) for i in range(1, 6)))
    d.write_snapshot(snap(3, 1))
    d.sync()
    _, sn, entries = d.load()
    assert sn is not None and sn.meta.index == 3
    assert [x.index for x in entries] == [4, 5]
    d.write_snapshot(snap(4, 9))  # does not match entry 4: the whole log goes
    d.sync()
    assert d.load()[2] == ()
    d.write_entries((ent(5, 9),))
    d.sync()
    assert [x.index for x in d.load()[2]] == [5]


def test_disk_compaction_drops_covered_entries() -> None:
    d = Disk()
    d.write_entries(tuple(ent(i, 1) for i in range(1, 6)))
    d.write_compaction(snap(2, 1))
    d.sync()
    assert [x.index for x in d.load()[2]] == [3, 4, 5]
    d.write_compaction(snap(1, 1))  # older than what is there: ignored
    d.sync()
    sn = d.load()[1]
    assert sn is not None and sn.meta.index == 2


# ---------------------------------------------------------------- state machine


def test_kv_store_applies_and_round_trips_through_a_snapshot() -> None:
    sm = KVStore()
    sm.apply(Entry(1, 1, EntryType.NORMAL, encode_command(1, 1, "a", b"x")))
    sm.apply(Entry(1, 2, EntryType.NORMAL, b""))  # a leader's no-op
    sm.apply(Entry(1, 3, EntryType.NORMAL, encode_command(2, 1, "b", b"y")))
    assert sm.kv == {"a": b"x", "b": b"y"} and sm.cmds == {(1, 1): 1, (2, 1): 3}
    copy = KVStore(Snapshot(SnapshotMeta(3, 1, ConfState()), sm.encode()))
    assert copy.kv == sm.kv and copy.cmds == sm.cmds and copy.applied == 3
    assert copy.digest() == sm.digest()
    with pytest.raises(ValueError):
        KVStore(Snapshot(SnapshotMeta(4, 1, ConfState()), sm.encode()))
