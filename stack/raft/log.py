"""The in-memory Raft log of one node: the last snapshot plus the entries after it.

Entries up to `stable` are on the host's disk; entries after it are waiting for
the next Ready to persist them. The configuration history (one ConfState per
configuration entry still in the log) lives here too, because a server always
uses the latest configuration in its log, committed or not, and must fall back
to the previous one when a conflicting suffix is truncated.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from stack.raft.errors import Compacted, Unavailable
from stack.raft.types import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    Snapshot,
    SnapshotMeta,
)


class LogInvariantBroken(AssertionError):
    """The log was asked to do something that would break Raft's safety (a bug)."""


class RaftLog:
    __slots__ = (
        "_conf_index",
        "_conf_states",
        "applied",
        "committed",
        "entries",
        "snapshot",
        "stable",
    )

    def __init__(self, snapshot: Snapshot | None, entries: Sequence[Entry], applied: int) -> None:
        self.snapshot = snapshot or Snapshot(SnapshotMeta(0, 0, ConfState()), b"")
        base = self.snapshot.meta.index
        self.entries: list[Entry] = []
        expected = base + 1
        for e in entries:
            if e.index <= base:
                continue
            if e.index != expected:
                raise LogInvariantBroken(f"log gap: expected index {expected}, got {e.index}")
            self.entries.append(e)
            expected += 1
        self.stable = self.last_index()
        self.committed = base
        self.applied = max(base, applied)
        self._conf_index: list[int] = [base]
        self._conf_states: list[ConfState] = [self.snapshot.meta.conf]
        self._track_conf(self.entries)

    # ------------------------------------------------------------ positions
    def first_index(self) -> int:
        return self.snapshot.meta.index + 1

    def last_index(self) -> int:
        return self.snapshot.meta.index + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot.meta.term

    def term(self, index: int) -> int:
        base = self.snapshot.meta.index
        if index == base:
            return self.snapshot.meta.term
        if index < base:
            raise Compacted(f"index {index} is compacted (snapshot at {base})")
        if index > self.last_index():
            raise Unavailable(f"index {index} is past the last index {self.last_index()}")
        return self.entries[index - base - 1].term

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except (Compacted, Unavailable):
            return 0

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (Compacted, Unavailable):
            return False

    def entry(self, index: int) -> Entry | None:
        base = self.snapshot.meta.index
        if base < index <= self.last_index():
            return self.entries[index - base - 1]
        return None

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries [lo, hi], at least one, at most about max_bytes of data."""
        base = self.snapshot.meta.index
        if lo <= base:
            raise Compacted(f"index {lo} is compacted (snapshot at {base})")
        out = self.entries[lo - base - 1 : hi - base]
        if max_bytes > 0 and len(out) > 1:
            size = 0
            for n, e in enumerate(out):
                size += len(e.data) + 16
                if size > max_bytes and n > 0:
                    return out[:n]
        return out

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a log ending at (last_index, last_term) at least as up to date?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= `index` whose term is <= `term` (or the snapshot index).

        Used on both sides of a rejected append so one round trip skips a whole term
        of conflicting entries instead of a single entry."""
        index = min(index, self.last_index())
        base = self.snapshot.meta.index
        while index > base and self.entries[index - base - 1].term > term:
            index -= 1
        return index

    # ------------------------------------------------------------ configuration
    def conf(self) -> ConfState:
        return self._conf_states[-1]

    def conf_index(self) -> int:
        return self._conf_index[-1]

    def conf_at(self, index: int) -> ConfState:
        pos = bisect.bisect_right(self._conf_index, index) - 1
        return self._conf_states[max(pos, 0)]

    def _track_conf(self, entries: Sequence[Entry]) -> None:
        for e in entries:
            if e.type is EntryType.CONF_CHANGE:
                self._conf_index.append(e.index)
                self._conf_states.append(self._conf_states[-1].apply(ConfChange.decode(e.data)))

    # ------------------------------------------------------------ mutation
    def append(self, entries: Sequence[Entry]) -> None:
        """Leader path: entries follow the last index exactly."""
        if entries and entries[0].index != self.last_index() + 1:
            raise LogInvariantBroken(
                f"append at {entries[0].index} does not follow last index {self.last_index()}"
            )
        self.entries.extend(entries)
        self._track_conf(entries)

    def maybe_append(self, prev_index: int, prev_term: int, entries: Sequence[Entry]) -> int | None:
        """Follower path. Returns the last index known to match the leader, or None if
        (prev_index, prev_term) does not match our log."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = 0
        for e in entries:
            if not self.match_term(e.index, e.term):
                conflict = e.index
                break
        if conflict:
            if conflict <= self.committed:
                raise LogInvariantBroken(
                    f"conflicting entry at {conflict} is at or below commit {self.committed}"
                )
            self._truncate_from(conflict)
            self.append(entries[conflict - prev_index - 1 :])
        return last_new

    def _truncate_from(self, index: int) -> None:
        base = self.snapshot.meta.index
        del self.entries[index - base - 1 :]
        self.stable = min(self.stable, index - 1)
        while self._conf_index[-1] >= index and len(self._conf_index) > 1:
            self._conf_index.pop()
            self._conf_states.pop()

    def unstable_entries(self) -> list[Entry]:
        base = self.snapshot.meta.index
        return self.entries[self.stable - base :]

    def commit_to(self, index: int) -> bool:
        index = min(index, self.last_index())
        if index > self.committed:
            self.committed = index
            return True
        return False

    def next_committed(self, max_entries: int) -> list[Entry]:
        base = self.snapshot.meta.index
        lo = max(self.applied, base) + 1
        hi = min(self.committed, lo + max_entries - 1)
        if hi < lo:
            return []
        return self.entries[lo - base - 1 : hi - base]

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        self.snapshot = snapshot
        self.entries = []
        self.stable = snapshot.meta.index
        self.committed = snapshot.meta.index
        self._conf_index = [snapshot.meta.index]
        self._conf_states = [snapshot.meta.conf]

    def compact(self, index: int, data: bytes) -> Snapshot:
        """Drop entries up to `index` (already applied) behind a snapshot of the state
        machine at that index."""
        base = self.snapshot.meta.index
        if index <= base:
            raise Compacted(f"already compacted to {base}")
        if index > self.applied:
            raise Unavailable(f"cannot compact to {index} past applied {self.applied}")
        meta = SnapshotMeta(index, self.term(index), self.conf_at(index))
        self.snapshot = Snapshot(meta, data)
        del self.entries[: index - base]
        keep = bisect.bisect_right(self._conf_index, index)
        self._conf_index = [index, *self._conf_index[keep:]]
        self._conf_states = [meta.conf, *self._conf_states[keep:]]
        return self.snapshot
