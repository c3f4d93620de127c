"""Durable Raft log storage: formats, recovery, crash behaviour, and a model check."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule
from structlog.testing import capture_logs

from stack.raft.faultfs import FaultyFileSystem, FileSystem, PowerCut
from stack.raft.storage import CorruptLog, LogStorage, StorageInUse, StoredState
from stack.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta

VOTERS = ConfState(frozenset({1, 2, 3}), frozenset({4}))
BOOT = Snapshot(SnapshotMeta(0, 0, VOTERS), b"")
TWO = 80  # segment_bytes that rolls over after every batch of two ents() records (42 bytes each)


def ents(lo: int, hi: int, term: int = 1, size: int = 24) -> list[Entry]:
    return [
        Entry(term, i, data=f"t{term}i{i}:".encode().ljust(size, b".")) for i in range(lo, hi + 1)
    ]


def snap(index: int, term: int, data: bytes = b"state") -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, VOTERS), data)


def load(
    directory: Path, *, segment_bytes: int = 64 << 20, fs: FileSystem | None = None
) -> StoredState:
    store = LogStorage.open(directory, segment_bytes=segment_bytes, fs=fs)
    try:
        return store.initial_state()
    finally:
        store.close()


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("log-*.seg"))


def snapshots(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("snap-*.snap"))


def seg(first: int) -> str:
    return f"log-{first:020d}.seg"


# ---------------------------------------------------------------- round trips


def test_fresh_directory_is_empty(tmp_path: Path) -> None:
    assert load(tmp_path / "raft") == StoredState(HardState(), None, [])


def test_round_trip_across_reopen(tmp_path: Path) -> None:
    d = tmp_path / "raft"
    conf = Entry(1, 3, EntryType.CONF_CHANGE, b"\x00" * 9 + b"addr")
    with_conf = [*ents(1, 2), conf, *ents(4, 6)]
    store = LogStorage.open(d)
    store.save(snapshot=BOOT, entries=with_conf[:3], hard_state=HardState(1, 1, 0))
    store.save(entries=with_conf[3:], hard_state=HardState(1, 1, 4))
    store.close()
    assert load(d) == StoredState(HardState(1, 1, 4), BOOT, with_conf)
    # the hard state rode in the segment with the entries: no hardstate file yet
    assert sorted(p.name for p in d.iterdir()) == [
        seg(1),
        "snap-00000000000000000000-00000000000000000000.snap",
    ]


def test_segment_rollover(tmp_path: Path) -> None:
    d = tmp_path / "raft"
    store = LogStorage.open(d, segment_bytes=200)
    for lo in range(1, 31, 3):
        store.save(entries=ents(lo, lo + 2))
    store.close()
    # a batch never straddles segments: each segment starts at a batch boundary
    names = segments(d)
    assert len(names) > 3
    assert all((int(n[4:24]) - 1) % 3 == 0 for n in names)
    assert load(d, segment_bytes=200).entries == ents(1, 30)


@pytest.mark.parametrize("at", [5, 7, 10, 13])
def test_tail_replace_across_segment_boundary(tmp_path: Path, at: int) -> None:
    d = tmp_path / "raft"
    store = LogStorage.open(d, segment_bytes=TWO)
    for lo in range(1, 21, 2):
        store.save(entries=ents(lo, lo + 1))
    assert seg(7) in segments(d) and seg(19) in segments(d)
    store.save(entries=ents(at, at + 1, term=2))  # shorter than what it replaces
    store.save(entries=ents(at + 2, at + 2, term=2))  # appending continues after it
    expected = ents(1, at - 1) + ents(at, at + 2, term=2)
    assert not [n for n in segments(d) if int(n[4:24]) > at + 2]
    store.close()
    assert load(d, segment_bytes=TWO).entries == expected


def test_compaction_deletes_covered_segments_and_old_snapshots(tmp_path: Path) -> None:
    d = tmp_path / "raft"
    store = LogStorage.open(d, segment_bytes=TWO)
    store.save(snapshot=BOOT)
    for lo in range(1, 21, 2):
        store.save(entries=ents(lo, lo + 1))
    store.compact(snap(12, 1))
    # segment 11 holds 11..12, all covered; segment 13 holds 13..14, kept
    assert segments(d) == [seg(i) for i in range(13, 21, 2)]
    assert snapshots(d) == ["snap-00000000000000000001-00000000000000000012.snap"]
    store.compact(snap(13, 1, b"later"))  # half of segment 13 covered: it stays
    assert segments(d)[0] == seg(13)
    store.save(entries=ents(21, 22))
    store.close()
    state = load(d, segment_bytes=TWO)
    assert state.snapshot == snap(13, 1, b"later")
    assert state.entries == ents(14, 22)


def test_compact_at_last_index_then_append(tmp_path: Path) -> None:
    d = tmp_path / "raft"
    store = LogStorage.open(d, segment_bytes=100)
    store.save(snapshot=BOOT, entries=ents(1, 4))
    store.compact(snap(4, 1))
    assert segments(d) == []
    store.compact(snap(2, 1))  # older than the stored one: a no-op
    store.save(entries=ents(5, 6))
    store.close()
    assert segments(d) == [seg(5)]
    assert load(d).entries == ents(5, 6)


def test_installed_snapshot_keeps_a_matching_log_and_drops_a_diverged_one(tmp_path: Path) -> None:
    d = tmp_path / "raft"
    store = LogStorage.open(d, segment_bytes=100)
    store.save(snapshot=BOOT, entries=ents(1, 10))
    store.save(snapshot=snap(6, 1))  # the log agrees at 6: entries after it stay
    store.save(snapshot=snap(8, 2), entries=ents(9, 9, term=2))  # disagrees at 8
    store.close()
    assert load(d) == StoredState(HardState(), snap(8, 2), ents(9, 9, term=2))


def test_recovery_drops_a_log_that_diverges_from_the_snapshot(tmp_path: Path) -> None:
    # What a crash between publishing a leader's snapshot and unlinking the old log leaves.
    d, other = tmp_path / "raft", tmp_path / "other"
    store = LogStorage.open(d)
    store.save(snapshot=BOOT, entries=ents(1, 20))
    store.close()
    donor = LogStorage.open(other)
    donor.save(snapshot=snap(15, 2))
    donor.close()
    name = snapshots(other)[0]
    shutil.copy(other / name, d / name)
    with capture_logs() as logs:
        state = load(d)
    assert state.snapshot == snap(15, 2) and state.entries == []
    assert [e["event"] for e in logs] == ["raft_log_diverges_from_snapshot"]


def test_bad_arguments(tmp_path: Path) -> None:
    store = LogStorage.open(tmp_path / "raft")
    store.save(snapshot=snap(5, 1), entries=ents(6, 8))
    with pytest.raises(ValueError, match="do not fit"):
        store.save(entries=ents(10, 11))  # gap after 8
    with pytest.raises(ValueError, match="do not fit"):
        store.save(entries=ents(5, 6))  # at the snapshot
    with pytest.raises(ValueError, match="contiguous"):
        store.save(entries=[*ents(9, 9), *ents(11, 11)])
    with pytest.raises(ValueError, match="older"):
        store.save(snapshot=snap(4, 1))
    with pytest.raises(ValueError, match="log ends at 8"):
        store.compact(snap(9, 1))
    with pytest.raises(ValueError, match="term"):
        store.compact(snap(7, 3))
    with pytest.raises(RuntimeError, match="initial_state"):
        store.initial_state()
    store.close()
    assert load(tmp_path / "raft").entries == ents(6, 8)


def test_second_open_of_a_directory_is_refused(tmp_path: Path) -> None:
    store = LogStorage.open(tmp_path / "raft")
    with pytest.raises(StorageInUse):
        LogStorage.open(tmp_path / "raft")
    store.close()
    load(tmp_path / "raft")


# ---------------------------------------------------------------- damage on disk


def three_batches(d: Path) -> list[int]:
    """Entries 1..9 in three synced batches; returns each batch's start offset."""
    store = LogStorage.open(d)
    starts = []
    for lo in (1, 4, 7):
        starts.append((d / seg(1)).stat().st_size if lo > 1 else 0)
        store.save(entries=ents(lo, lo + 2))
    store.close()
    return starts


@pytest.mark.parametrize("damage", ["cut", "partial header", "partial record", "zeros"])
def test_torn_tail_is_truncated_on_open(tmp_path: Path, damage: str) -> None:
    d = tmp_path / "raft"
    starts = three_batches(d)
    path = d / seg(1)
    data = path.read_bytes()
    assert starts[1] * 3 == len(data)  # nine records of one size
    clean = len(data)
    if damage == "cut":  # the last record lost its end
        path.write_bytes(data[:-5])
        clean = len(data) * 8 // 9
    else:
        tail = {"partial header": data[:7], "partial record": data[:30], "zeros": bytes(4096)}
        path.write_bytes(data + tail[damage])
    with capture_logs() as logs:
        state = load(d)
    expected = ents(1, 8) if damage == "cut" else ents(1, 9)
    assert state.entries == expected
    assert [e["event"] for e in logs] == ["raft_log_torn_tail"]
    assert logs[0]["file"] == str(path)
    assert not any(b"t1i" in repr(v).encode() for e in logs for v in e.values())
    assert path.stat().st_size == clean
    # the repaired log takes appends and reopens cleanly
    store = LogStorage.open(d)
    store.save(entries=ents(len(expected) + 1, 12))
    store.close()
    assert load(d).entries == ents(1, 12)


def test_flipped_byte_in_the_middle_raises_naming_file_and_offset(tmp_path: Path) -> None:
    d = tmp_path / "raft"
    starts = three_batches(d)
    FaultyFileSystem().flip_byte(d / seg(1), starts[1] + 20)
    with pytest.raises(CorruptLog, match=rf"{seg(1)}: corrupt record at offset {starts[1]}\b"):
        LogStorage.open(d)
    # the node stops; nothing was repaired behind its back
    assert (d / seg(1)).stat().st_size > starts[2]


def test_flipped_byte_in_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    d = tmp_path / "raft"
    three_batches(d)
    path = d / seg(1)
    FaultyFileSystem().flip_byte(path, path.stat().st_size - 3)
    assert load(d).entries == ents(1, 8)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("flip the last byte of sealed segment 3", f"{seg(3)}.*sealed segment"),
        ("lose segment 3", f"{seg(5)}: expected the log to continue at 3"),
        ("rename segment 1 to 2", "has index 1, expected 2"),
    ],
)
def test_damage_before_the_tail_stops_the_node(tmp_path: Path, damage: str, message: str) -> None:
    d = tmp_path / "raft"
    store = LogStorage.open(d, segment_bytes=TWO)
    for lo in range(1, 9, 2):
        store.save(entries=ents(lo, lo + 1))
    store.close()
    if damage.startswith("flip"):
        FaultyFileSystem().flip_byte(d / seg(3), (d / seg(3)).stat().st_size - 1)
    elif damage.startswith("lose"):
        (d / seg(3)).unlink()
    else:
        (d / seg(1)).rename(d / seg(2))
    with pytest.raises(CorruptLog, match=message):
        LogStorage.open(d, segment_bytes=TWO)


def test_corrupt_snapshot_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    d = tmp_path / "raft"
    store = LogStorage.open(d)  # one big segment: compaction deletes none of it
    store.save(snapshot=BOOT, entries=ents(1, 10))
    boot_name = snapshots(d)[0]
    boot_bytes = (d / boot_name).read_bytes()
    store.compact(snap(5, 1))
    store.close()
    assert snapshots(d) == ["snap-00000000000000000001-00000000000000000005.snap"]
    (d / boot_name).write_bytes(boot_bytes)  # as if a crash had beaten the cleanup
    FaultyFileSystem().flip_byte(d / snapshots(d)[1], 30)
    with capture_logs() as logs:
        state = load(d)
    assert state.snapshot == BOOT and state.entries == ents(1, 10)
    assert logs[0]["event"] == "raft_snapshot_corrupt"


def test_corrupt_snapshot_without_usable_fallback_raises(tmp_path: Path) -> None:
    d = tmp_path / "raft"
    store = LogStorage.open(d, segment_bytes=100)
    store.save(snapshot=BOOT, entries=ents(1, 4))
    boot_name = snapshots(d)[0]
    boot_bytes = (d / boot_name).read_bytes()
    for lo in range(5, 11, 2):
        store.save(entries=ents(lo, lo + 1))
    store.compact(snap(8, 1))
    store.close()
    newest = d / snapshots(d)[0]
    FaultyFileSystem().flip_byte(newest, 30)
    with pytest.raises(CorruptLog, match="no intact snapshot"):
        LogStorage.open(d)
    (d / boot_name).write_bytes(boot_bytes)  # the fallback exists, but 1..8 are gone
    with pytest.raises(CorruptLog, match="entries between are missing"):
        LogStorage.open(d)


# ---------------------------------------------------------------- crashes and syncs


def test_group_commit_is_one_write_and_one_sync_per_file(tmp_path: Path) -> None:
    fs = FaultyFileSystem()
    store = LogStorage.open(tmp_path / "raft", fs=fs)
    store.save(entries=ents(1, 64, size=100), hard_state=HardState(1, 1, 0))
    writes, syncs, dir_syncs = fs.writes, fs.file_syncs, fs.dir_syncs
    store.save(entries=ents(65, 128, size=100))
    assert (fs.writes - writes, fs.file_syncs - syncs, fs.dir_syncs - dir_syncs) == (1, 1, 0)
    # a hard state saved with entries rides in the same write
    store.save(entries=ents(129, 192, size=100), hard_state=HardState(1, 1, 128))
    assert (fs.writes - writes, fs.file_syncs - syncs, fs.dir_syncs - dir_syncs) == (2, 2, 0)
    store.save(hard_state=HardState(1, 1, 192))  # alone: the hardstate file (made once)
    store.save(hard_state=HardState(1, 1, 193))
    assert (fs.writes - writes, fs.file_syncs - syncs, fs.dir_syncs - dir_syncs) == (4, 4, 1)
    store.close()
    assert load(tmp_path / "raft").hard_state == HardState(1, 1, 193)


def test_crash_loses_only_the_unsynced_batch(tmp_path: Path) -> None:
    fs = FaultyFileSystem()
    d = tmp_path / "raft"
    store = LogStorage.open(d, fs=fs)
    store.save(snapshot=BOOT, entries=ents(1, 5), hard_state=HardState(1, 1, 3))
    store.save(entries=ents(6, 8), hard_state=HardState(1, 1, 8), sync=False)
    fs.crash()
    assert load(d, fs=fs) == StoredState(HardState(1, 1, 3), BOOT, ents(1, 5))


def test_storage_is_dead_after_a_crash(tmp_path: Path) -> None:
    fs = FaultyFileSystem()
    store = LogStorage.open(tmp_path / "raft", fs=fs)
    store.save(entries=ents(1, 2))
    fs.crash()
    with pytest.raises(RuntimeError, match="after close or crash"):
        store.save(entries=ents(3, 3))


def test_crash_after_synced_save_loses_nothing(tmp_path: Path) -> None:
    fs = FaultyFileSystem()
    d = tmp_path / "raft"
    store = LogStorage.open(d, fs=fs, segment_bytes=100)
    store.save(snapshot=BOOT, entries=ents(1, 5), hard_state=HardState(1, 1, 3))
    store.save(entries=ents(4, 9, term=2), hard_state=HardState(2, 0, 5))
    fs.crash()
    expected = StoredState(HardState(2, 0, 5), BOOT, ents(1, 3) + ents(4, 9, term=2))
    assert load(d, fs=fs, segment_bytes=100) == expected


def test_unsynced_new_segment_vanishes_but_the_sealed_one_stays(tmp_path: Path) -> None:
    fs = FaultyFileSystem()
    d = tmp_path / "raft"
    store = LogStorage.open(d, fs=fs, segment_bytes=100)
    store.save(entries=ents(1, 2))
    store.save(entries=ents(3, 3), sync=False)
    store.save(entries=ents(4, 5), sync=False)  # rolls over: segment 1 is sealed (synced)
    assert segments(d) == [seg(1), seg(4)]
    fs.crash()
    assert segments(d) == [seg(1)]
    assert load(d, fs=fs).entries == ents(1, 3)


def test_hard_state_survives_crash_mid_replace(tmp_path: Path) -> None:
    fs = FaultyFileSystem()
    d = tmp_path / "raft"
    store = LogStorage.open(d, fs=fs)
    store.save(hard_state=HardState(1, 1, 0))
    store.save(hard_state=HardState(2, 2, 0))
    store.save(hard_state=HardState(3, 0, 0), sync=False)  # seq 3 -> slot 1, never synced
    fs.crash()
    assert load(d, fs=fs).hard_state == HardState(2, 2, 0)
    # A torn write of the newest slot (seq 2 lives in slot 0) leaves the other slot.
    fs.flip_byte(d / "hardstate", 12)
    assert load(d, fs=fs).hard_state == HardState(1, 1, 0)
    fs.flip_byte(d / "hardstate", 512 + 12)
    with pytest.raises(CorruptLog, match="hard state"):
        LogStorage.open(d, fs=fs)


def test_hard_state_in_a_cut_or_compacted_segment_survives(tmp_path: Path) -> None:
    d = tmp_path / "raft"
    store = LogStorage.open(d, segment_bytes=TWO)
    store.save(entries=ents(1, 2), hard_state=HardState(1, 1, 0))  # a record in segment 1
    store.save(entries=ents(3, 4))
    store.save(entries=ents(2, 2, term=2))  # cuts segment 1 after entry 1, record and all
    assert load_after_close(store, d).hard_state == HardState(1, 1, 0)
    store = LogStorage.open(d, segment_bytes=TWO)
    store.save(entries=ents(3, 4, term=2), hard_state=HardState(2, 2, 3))  # in segment 3
    store.save(entries=ents(5, 6, term=2))
    store.compact(snap(4, 2))  # deletes segment 3
    assert not (d / seg(3)).exists()
    assert load_after_close(store, d).hard_state == HardState(2, 2, 3)


def test_torn_batch_never_keeps_its_hard_state_without_its_entries(tmp_path: Path) -> None:
    d = tmp_path / "raft"
    store = LogStorage.open(d)
    store.save(entries=ents(1, 3), hard_state=HardState(1, 1, 0))
    start = (d / seg(1)).stat().st_size
    store.save(entries=ents(4, 6), hard_state=HardState(1, 1, 6))
    store.close()
    data = bytearray((d / seg(1)).read_bytes())
    data[start + 50 : start + 60] = bytes(10)  # part of record 5 never reached the disk
    (d / seg(1)).write_bytes(bytes(data))
    state = load(d)
    assert state.entries == ents(1, 4)
    assert state.hard_state == HardState(1, 1, 0)  # the record after entry 6 went too


def load_after_close(store: LogStorage, d: Path) -> StoredState:
    store.close()
    return load(d, segment_bytes=TWO)


def test_newest_hard_state_wins_between_file_and_log(tmp_path: Path) -> None:
    d = tmp_path / "raft"
    store = LogStorage.open(d)
    store.save(hard_state=HardState(1, 0, 0))  # file
    store.save(entries=ents(1, 1), hard_state=HardState(2, 0, 0))  # log
    assert load_after_close(store, d).hard_state == HardState(2, 0, 0)
    store = LogStorage.open(d)
    store.save(hard_state=HardState(3, 0, 0))  # file again
    assert load_after_close(store, d).hard_state == HardState(3, 0, 0)


def test_crash_during_tail_replace_never_splices_old_after_new(tmp_path: Path) -> None:
    fs = FaultyFileSystem()
    d = tmp_path / "raft"
    store = LogStorage.open(d, fs=fs, segment_bytes=100)
    for lo in range(1, 11, 2):
        store.save(entries=ents(lo, lo + 1))
    store.save(entries=ents(4, 4, term=2), sync=False)
    fs.crash()
    assert load(d, fs=fs, segment_bytes=100).entries == ents(1, 3)


def save_until_power_cut(fs: FaultyFileSystem, store: LogStorage, cut: int, **kw: object) -> bool:
    """Run one save with the power failing before sync number `cut`; True if it finished."""
    fs.power_cut_after(cut)
    try:
        store.save(**kw)  # type: ignore[arg-type]
    except PowerCut:
        return False
    finally:
        fs.crash()
    return True


@pytest.mark.parametrize("cut", range(6))
def test_power_cut_inside_a_truncating_save(tmp_path: Path, cut: int) -> None:
    fs = FaultyFileSystem()
    d = tmp_path / "raft"
    store = LogStorage.open(d, fs=fs, segment_bytes=TWO)
    for lo in range(1, 11, 2):
        store.save(entries=ents(lo, lo + 1), hard_state=HardState(1, 1, 2))
    old, new = ents(1, 10), ents(1, 3) + ents(4, 12, term=2)
    new_hs = HardState(2, 2, 12)
    done = save_until_power_cut(fs, store, cut, entries=new[3:], hard_state=new_hs)
    got = load(d, fs=fs, segment_bytes=TWO)
    assert got.entries[:3] == old[:3]
    assert got.entries in (old[: len(got.entries)], new[: len(got.entries)])
    assert got.hard_state in (HardState(1, 1, 2), new_hs)
    if got.hard_state == new_hs:  # a hard state never lands before the entries it commits
        assert got.entries == new
    # hard state out of the log (new file, dir), unlinks (dir), the cut, the append
    assert done == (cut >= 5)
    if done:
        assert got == StoredState(new_hs, None, new)


@pytest.mark.parametrize("cut", range(7))
def test_power_cut_while_installing_a_snapshot_over_a_diverged_log(
    tmp_path: Path, cut: int
) -> None:
    fs = FaultyFileSystem()
    d = tmp_path / "raft"
    store = LogStorage.open(d, fs=fs, segment_bytes=TWO)
    store.save(snapshot=BOOT, hard_state=HardState(1, 1, 2))
    for lo in range(1, 11, 2):
        store.save(entries=ents(lo, lo + 1))
    leader, follow, new_hs = snap(8, 2), ents(9, 11, term=2), HardState(2, 0, 11)
    done = save_until_power_cut(fs, store, cut, snapshot=leader, entries=follow, hard_state=new_hs)
    got = load(d, fs=fs, segment_bytes=TWO)
    if got.snapshot == BOOT:
        assert got.entries == ents(1, 10)[: len(got.entries)]
        assert got.hard_state == HardState(1, 1, 2)
    else:  # never the leader's snapshot followed by our stale term-1 entries
        assert got.snapshot == leader
        assert got.entries == follow[: len(got.entries)]
        assert got.hard_state in (HardState(1, 1, 2), new_hs)
        if got.hard_state == new_hs:
            assert got.entries == follow
    if done:
        assert got == StoredState(new_hs, leader, follow)
    assert done == (cut >= 5)  # tmp file, rename, unlinks, append (+ hard state), new segment


@pytest.mark.parametrize("cut", range(8))
def test_power_cut_while_compacting_never_lands_a_hard_state_before_its_entries(
    tmp_path: Path, cut: int
) -> None:
    fs = FaultyFileSystem()
    d = tmp_path / "raft"
    store = LogStorage.open(d, fs=fs, segment_bytes=TWO)
    store.save(entries=ents(1, 4), hard_state=HardState(1, 1, 0))
    store.save(entries=ents(5, 8), hard_state=HardState(1, 1, 8), sync=False)  # rides, unsynced
    # compaction deletes segment 1 and so moves the newest hard state into its file
    done = save_until_power_cut(fs, store, cut, snapshot=snap(4, 1))
    got = load(d, fs=fs, segment_bytes=TWO)
    assert got.hard_state in (HardState(1, 1, 0), HardState(1, 1, 8))
    if got.hard_state == HardState(1, 1, 8):
        assert got.entries[-4:] == ents(5, 8)
    # snapshot (tmp, rename), entries (segment, its directory entry), new hardstate file
    # (tmp, rename), unlinks
    assert done == (cut >= 7)


@pytest.mark.parametrize("cut", range(5))
def test_power_cut_in_a_hard_state_save_after_unsynced_entries(tmp_path: Path, cut: int) -> None:
    fs = FaultyFileSystem()
    d = tmp_path / "raft"
    store = LogStorage.open(d, fs=fs)
    store.save(entries=ents(1, 4), hard_state=HardState(1, 1, 0))
    store.save(hard_state=HardState(1, 1, 1))  # the hardstate file exists from here on
    store.save(entries=ents(5, 8), sync=False)
    done = save_until_power_cut(fs, store, cut, hard_state=HardState(1, 1, 8))
    got = load(d, fs=fs)
    assert got.hard_state in (HardState(1, 1, 1), HardState(1, 1, 8))
    if got.hard_state == HardState(1, 1, 8):
        assert got.entries == ents(1, 8)
    assert done == (cut >= 2)  # the segment, then the hardstate file


# ---------------------------------------------------------------- model check


class StorageMachine(RuleBasedStateMachine):
    """Random saves, snapshots, compactions, crashes (between saves and in the middle of
    one) and reopens, against a list model. After a crash the recovered log must hold
    everything synced (less what later unsynced saves cut off) and be a prefix of some
    state the log went through; a hard state never lands before the log it describes."""

    SEGMENT = 160

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="stack-storage-"))
        self.dir = self.root / "raft"
        self.fs = FaultyFileSystem()
        self.store = LogStorage.open(self.dir, segment_bytes=self.SEGMENT, fs=self.fs)
        self.snap: Snapshot | None = None
        self.log: list[Entry] = []  # entries after the snapshot
        self.hs = HardState()
        self.barrier()

    def barrier(self) -> None:
        self.durable = (self.snap, list(self.log), self.hs)
        self.since: list[tuple[list[Entry], HardState]] = []
        self.cut = math.inf

    @property
    def snap_index(self) -> int:
        return self.snap.meta.index if self.snap else 0

    @property
    def last(self) -> int:
        return self.log[-1].index if self.log else self.snap_index

    def term_at(self, index: int) -> int | None:
        if self.snap is not None and index == self.snap_index:
            return self.snap.meta.term
        return next((e.term for e in self.log if e.index == index), None)

    def draw_entries(self, data: st.DataObject, first: int) -> list[Entry]:
        n = data.draw(st.integers(1, 6))
        term = data.draw(st.integers(1, 4))
        kinds = data.draw(st.lists(st.sampled_from(EntryType), min_size=n, max_size=n))
        blobs = data.draw(st.lists(st.binary(max_size=30), min_size=n, max_size=n))
        return [Entry(term, first + i, kinds[i], blobs[i]) for i in range(n)]

    def plan_append(self, data: st.DataObject) -> tuple[list[Entry], list[Entry]]:
        """(entries to save, the log after saving them)"""
        first = data.draw(st.integers(self.snap_index + 1, self.last + 1))
        new = self.draw_entries(data, first)
        return new, [e for e in self.log if e.index < first] + new

    def plan_snapshot(
        self, data: st.DataObject
    ) -> tuple[Snapshot, list[Entry], list[Entry], list[Entry]]:
        """(snapshot, entries to save after it, the log after saving both, the log after
        saving only the snapshot)"""
        index = data.draw(st.integers(self.snap_index, self.last + 3))
        known = self.term_at(index)
        if index == self.snap_index and known is not None:
            term = known  # one index, one committed term
        else:
            term = data.draw(st.integers(1, 4) if known is None else st.sampled_from([known, 9]))
        s = Snapshot(SnapshotMeta(index, term, VOTERS), data.draw(st.binary(max_size=20)))
        follow = self.draw_entries(data, index + 1) if data.draw(st.booleans()) else []
        keep = [e for e in self.log if e.index > index] if known in (None, term) else []
        return s, follow, follow or keep, keep

    hard_states = st.none() | st.builds(
        HardState, st.integers(0, 9), st.integers(0, 3), st.integers(0, 60)
    )

    @rule(data=st.data(), hs=hard_states, sync=st.booleans())
    def save_entries(self, data: st.DataObject, hs: HardState | None, sync: bool) -> None:
        new, log = self.plan_append(data)
        self.store.save(entries=new, hard_state=hs, sync=sync)
        if not sync and new[0].index <= self.last:
            self.cut = min(self.cut, new[0].index)
        self.log, self.hs = log, hs or self.hs
        if sync:
            self.barrier()
        else:
            self.since.append((list(self.log), self.hs))

    @rule(data=st.data(), hs=hard_states)
    def install_snapshot(self, data: st.DataObject, hs: HardState | None) -> None:
        s, follow, log, _ = self.plan_snapshot(data)
        self.store.save(snapshot=s, entries=follow, hard_state=hs)
        self.snap, self.log, self.hs = s, log, hs or self.hs
        self.barrier()

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        if self.last == self.snap_index:
            return
        index = data.draw(st.integers(self.snap_index + 1, self.last))
        term = self.term_at(index)
        assert term is not None
        self.store.compact(Snapshot(SnapshotMeta(index, term, VOTERS), b"c%d" % index))
        self.snap = Snapshot(SnapshotMeta(index, term, VOTERS), b"c%d" % index)
        self.log = [e for e in self.log if e.index > index]
        self.barrier()

    @precondition(lambda self: not self.since)
    @rule(data=st.data(), hs=hard_states, with_snapshot=st.booleans(), cut=st.integers(0, 7))
    def power_cut_mid_save(
        self, data: st.DataObject, hs: HardState | None, with_snapshot: bool, cut: int
    ) -> None:
        s: Snapshot | None = None
        if with_snapshot:
            s, new, log, mid = self.plan_snapshot(data)
            keep: list[Entry] = []
        else:
            new, log = self.plan_append(data)
            keep = mid = [e for e in self.log if e.index < new[0].index]  # untouched
        before_snap, before_log, before_hs = self.snap, self.log, self.hs
        after_snap, after_hs = s or self.snap, hs or self.hs
        self.fs.power_cut_after(cut)
        try:
            self.store.save(snapshot=s, entries=new, hard_state=hs)
            finished = True
        except PowerCut:
            finished = False
        got = self.reopen_after_crash()
        assert got.snapshot in (before_snap, after_snap)
        assert got.hard_state in (before_hs, after_hs)
        assert got.entries[: len(keep)] == keep
        n = len(got.entries)
        if got.snapshot == after_snap:  # the snapshot landed; perhaps not what followed it
            histories = [log, mid] + ([before_log] if after_snap == before_snap else [])
        else:
            histories = [before_log]
        assert any(got.entries == h[:n] for h in histories)
        if got.hard_state != before_hs or finished:
            assert (got.snapshot, got.entries, got.hard_state) == (after_snap, log, after_hs)
        self.barrier()

    def reopen_after_crash(self) -> StoredState:
        self.fs.crash()
        self.store = LogStorage.open(self.dir, segment_bytes=self.SEGMENT, fs=self.fs)
        got = self.store.initial_state()
        self.snap, self.log, self.hs = got.snapshot, list(got.entries), got.hard_state
        return got

    @rule()
    def crash_and_reopen(self) -> None:
        (snap, log, hs), since, cut = self.durable, self.since, self.cut
        got = self.reopen_after_crash()
        assert got.snapshot == snap
        guaranteed = [e for e in log if e.index < cut]
        assert got.entries[: len(guaranteed)] == guaranteed
        assert any(got.entries == w[: len(got.entries)] for w in [log] + [w for w, _ in since])
        assert got.hard_state in [hs] + [h for _, h in since]
        self.barrier()

    @rule()
    def close_and_reopen(self) -> None:
        self.store.close()
        self.store = LogStorage.open(self.dir, segment_bytes=self.SEGMENT, fs=self.fs)
        assert self.store.initial_state() == StoredState(self.hs, self.snap, self.log)
        self.barrier()

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.root)


TestStorageModel = StorageMachine.TestCase
TestStorageModel.settings = settings(
    max_examples=80, stateful_step_count=30, deadline=None, database=None
)
