"""Raft log storage: stack's segmented log against SQLite (WAL, synchronous=FULL).

    python bench/storage_bench.py [--runs 5] [--dir DIR]

Same workload for both: batches of 1 and of 64 entries of 100 bytes, one durable
commit (fsync) per batch, each batch replacing any stored entries from its first index
on; with "+hs" the batch also carries a hard state, as most Readies do. Enough batches
that SQLite's WAL auto-checkpoint runs. Also: the CPU cost of a batch without the fsync,
and the two ways to replace a hard state file.

The disk under test may be shared and its fsync latency may swing by 20x within
seconds, so each comparison is paired: the two contenders run batch for batch,
alternating which goes first, and so see the same disk. Reported per contender: the
median over --runs runs of its throughput (its own time only), and the median latency
of all its batches. DIR must be on the disk under test (default: the temp directory).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from stack.raft.faultfs import OsFile, OsFileSystem
from stack.raft.storage import LogStorage
from stack.raft.types import Entry, HardState

PAYLOAD = bytes(range(100))
# A contender is set up in a fresh directory and yields once per batch it has written.
Contender = Callable[[Path, int, int, bool], Iterator[None]]


def batches(size: int, count: int) -> list[list[Entry]]:
    return [[Entry(1, b * size + i + 1, data=PAYLOAD) for i in range(size)] for b in range(count)]


class _NoSyncFile(OsFile):
    def sync(self) -> None:
        pass


class NoSyncFileSystem(OsFileSystem):
    """Real writes, no fsync: what a batch costs besides the disk."""

    def open(self, path: Path, *, create: bool = False) -> OsFile:
        return _NoSyncFile(super().open(path, create=create).fd)

    def sync_dir(self, path: Path) -> None:
        pass


def segmented_log(work: Path, size: int, count: int, with_hs: bool) -> Iterator[None]:
    return _log(work, size, count, with_hs, None)


def segmented_log_no_fsync(work: Path, size: int, count: int, with_hs: bool) -> Iterator[None]:
    return _log(work, size, count, with_hs, NoSyncFileSystem())


def _log(
    work: Path, size: int, count: int, with_hs: bool, fs: OsFileSystem | None
) -> Iterator[None]:
    store = LogStorage.open(work / "raft", fs=fs)
    todo = batches(size, count)
    yield  # set up
    for n, batch in enumerate(todo):
        store.save(entries=batch, hard_state=HardState(1, 1, n) if with_hs else None)
        yield
    store.close()


def sqlite_full(work: Path, size: int, count: int, with_hs: bool) -> Iterator[None]:
    return _sqlite(work, size, count, with_hs, "FULL")


def sqlite_no_fsync(work: Path, size: int, count: int, with_hs: bool) -> Iterator[None]:
    return _sqlite(work, size, count, with_hs, "OFF")


def _sqlite(work: Path, size: int, count: int, with_hs: bool, sync: str) -> Iterator[None]:
    con = sqlite3.connect(work / "raft.db", isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={sync}")
    con.execute("CREATE TABLE log (idx INTEGER PRIMARY KEY, term INT, type INT, data BLOB)")
    con.execute("CREATE TABLE hs (id INTEGER PRIMARY KEY, term INT, vote INT, commit_ INT)")
    con.execute("INSERT INTO hs VALUES (0, 0, 0, 0)")
    todo = [[(e.index, e.term, int(e.type), e.data) for e in b] for b in batches(size, count)]
    yield
    for n, rows in enumerate(todo):
        con.execute("BEGIN")
        con.execute("DELETE FROM log WHERE idx >= ?", (rows[0][0],))
        con.executemany("INSERT INTO log VALUES (?, ?, ?, ?)", rows)
        if with_hs:
            con.execute("UPDATE hs SET term = 1, vote = 1, commit_ = ? WHERE id = 0", (n,))
        con.execute("COMMIT")
        yield
    con.close()


def hard_state_slots(work: Path, size: int, count: int, with_hs: bool) -> Iterator[None]:
    fd = os.open(work / "hardstate", os.O_RDWR | os.O_CREAT, 0o600)
    os.pwrite(fd, bytes(1024), 0)
    os.fsync(fd)
    yield
    for n in range(count):
        os.pwrite(fd, n.to_bytes(44, "big"), (n % 2) * 512)
        os.fdatasync(fd)
        yield
    os.close(fd)


def hard_state_rename(work: Path, size: int, count: int, with_hs: bool) -> Iterator[None]:
    dfd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    yield
    for n in range(count):
        fd = os.open(work / "hardstate.tmp", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.pwrite(fd, n.to_bytes(44, "big"), 0)
        os.fsync(fd)
        os.close(fd)
        os.replace(work / "hardstate.tmp", work / "hardstate")
        os.fsync(dfd)
        yield
    os.close(dfd)


def paired_run(
    a: Contender, b: Contender, size: int, count: int, hs: bool, root: Path | None
) -> tuple[list[float], list[float]]:
    """Per-batch seconds of a and of b, run alternately on the same disk."""
    dirs = [Path(tempfile.mkdtemp(prefix="stack-bench-", dir=root)) for _ in range(2)]
    try:
        runs = [a(dirs[0], size, count, hs), b(dirs[1], size, count, hs)]
        for r in runs:
            next(r)
        lat: list[list[float]] = [[], []]
        for i in range(count):
            for k in (0, 1) if i % 2 == 0 else (1, 0):
                start = time.perf_counter()
                next(runs[k])
                lat[k].append(time.perf_counter() - start)
        for r in runs:
            next(r, None)  # let each close its files
        return lat[0], lat[1]
    finally:
        for d in dirs:
            shutil.rmtree(d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    # (label, batch size, batches, with hard state, contender a, contender b)
    pairs: list[tuple[str, int, int, bool, Contender, Contender]] = [
        ("1", 1, 500, False, segmented_log, sqlite_full),
        ("1+hs", 1, 500, True, segmented_log, sqlite_full),
        ("64", 64, 600, False, segmented_log, sqlite_full),
        ("64+hs", 64, 600, True, segmented_log, sqlite_full),
        ("64, no fsync", 64, 500, False, segmented_log_no_fsync, sqlite_no_fsync),
        ("", 0, 300, True, hard_state_slots, hard_state_rename),
    ]
    names: dict[Contender, str] = {segmented_log: "segmented log", sqlite_full: "sqlite wal"}
    names |= {segmented_log_no_fsync: "segmented log", sqlite_no_fsync: "sqlite wal"}
    names |= {hard_state_slots: "hard state: 2 slots", hard_state_rename: "hard state: rename"}

    print(f"median of {args.runs} paired runs, dir {args.dir or tempfile.gettempdir()}")
    print(f"{'case':30} {'batches':>7} {'batches/s':>9} {'entries/s':>9} {'p50 ms':>7}")
    for label, size, count, hs, a, b in pairs:
        totals: list[list[float]] = [[], []]
        pooled: list[list[float]] = [[], []]
        for _ in range(args.runs):
            for k, lat in enumerate(paired_run(a, b, size, count, hs, args.dir)):
                totals[k].append(sum(lat))
                pooled[k] += lat
        for k, who in enumerate((a, b)):
            rate = count / statistics.median(totals[k])
            entries = f"{rate * size:9.0f}" if size else f"{'-':>9}"
            p50 = statistics.median(pooled[k]) * 1e3
            case = f"{names[who]} {label}".strip()
            print(f"{case:30} {count:7d} {rate:9.0f} {entries} {p50:7.3f}")


if __name__ == "__main__":
    main()
