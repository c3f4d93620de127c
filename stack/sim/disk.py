"""A simulated disk for one node: written-but-unsynced data is kept apart from synced data.

Writes go to a volatile list; `sync()` (an fsync) applies them, in order, to the durable
state. `crash()` throws the volatile list away, which is exactly what a power cut does to
a page cache. A restarted node sees only `durable()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stack.raft.types import Entry, HardState, Snapshot


class DiskError(Exception):
    """The host asked the disk for something that cannot be stored (a log with a hole)."""


@dataclass(slots=True)
class DiskState:
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)  # contiguous, after the snapshot

    def first_index(self) -> int:
        return self.snapshot.meta.index + 1 if self.snapshot is not None else 1

    def last_index(self) -> int:
        if self.entries:
            return self.entries[-1].index
        return self.first_index() - 1

    def term_at(self, index: int) -> int | None:
        snap = self.snapshot
        if snap is not None and index == snap.meta.index:
            return snap.meta.term
        pos = index - self.first_index()
        if 0 <= pos < len(self.entries):
            return self.entries[pos].term
        return None

    # -- mutations, applied on sync
    def append(self, entries: tuple[Entry, ...]) -> None:
        first = self.first_index()
        es = [e for e in entries if e.index >= first] if entries[0].index < first else entries
        if not es:
            return
        start = es[0].index
        if start > self.last_index() + 1:
            raise DiskError(
                f"append at {start} leaves a hole after {self.last_index()} (first {first})"
            )
        del self.entries[start - first :]
        self.entries.extend(es)

    def install(self, snap: Snapshot) -> None:
        """A snapshot received from the leader: keep the log after it only if it matches."""
        idx, term = snap.meta.index, snap.meta.term
        if self.snapshot is not None and idx <= self.snapshot.meta.index:
            return
        if self.term_at(idx) == term:
            del self.entries[: idx - self.first_index() + 1]
        else:
            self.entries.clear()
        self.snapshot = snap

    def compact(self, snap: Snapshot) -> None:
        """The host's own snapshot at an applied index: drop the entries it covers."""
        idx = snap.meta.index
        if self.snapshot is not None and idx <= self.snapshot.meta.index:
            return
        drop = idx - self.first_index() + 1
        del self.entries[: max(0, drop)]
        self.snapshot = snap


@dataclass(slots=True)
class DiskStats:
    writes: int = 0
    syncs: int = 0
    lost_writes: int = 0  # writes thrown away by crashes


class Disk:
    __slots__ = ("_durable", "_pending", "stats")

    def __init__(self) -> None:
        self._durable = DiskState()
        self._pending: list[tuple[bool, HardState | Snapshot | tuple[Entry, ...]]] = []
        self.stats = DiskStats()

    # -- writes (volatile until sync)
    def write_snapshot(self, snap: Snapshot) -> None:
        self._pending.append((False, snap))

    def write_entries(self, entries: tuple[Entry, ...]) -> None:
        if entries:
            self._pending.append((False, entries))

    def write_hard_state(self, hs: HardState) -> None:
        self._pending.append((False, hs))

    def write_compaction(self, snap: Snapshot) -> None:
        self._pending.append((True, snap))

    @property
    def dirty(self) -> bool:
        return bool(self._pending)

    def sync(self) -> None:
        if not self._pending:
            return
        d = self._durable
        for compaction, value in self._pending:
            if isinstance(value, tuple):
                d.append(value)
            elif isinstance(value, HardState):
                d.hard_state = value
            elif compaction:
                d.compact(value)
            else:
                d.install(value)
        self.stats.writes += len(self._pending)
        self.stats.syncs += 1
        self._pending.clear()

    def crash(self) -> int:
        """Lose every unsynced write; returns how many were lost."""
        lost = len(self._pending)
        self.stats.lost_writes += lost
        self._pending.clear()
        return lost

    # -- reads
    def durable(self) -> DiskState:
        """What survives a crash. Callers must not mutate it."""
        return self._durable

    def load(self) -> tuple[HardState | None, Snapshot | None, tuple[Entry, ...]]:
        d = self._durable
        return d.hard_state, d.snapshot, tuple(d.entries)
