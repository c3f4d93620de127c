"""In-memory tables with per-table modify indexes and tombstones.

Every row records the log index that created it and the one that last changed
it; every table records the index of its latest write; the store records the
latest applied log index. Deleting a row leaves a `Tombstone` carrying the
delete's index, so the index a blocking query reads for a key or prefix never
goes backwards when rows disappear. Tombstones are reaped by a replicated
command (see `tombstones.py`); reaping raises the table's `floor` to the
table's index so indexes stay monotonic after the tombstones are gone.

Keys are strings, kept in a sorted list (`bisect`) for prefix scans. Values are
plain msgpack values (dict, list, str, bytes, int, float, bool, None); treat a
stored value as immutable and write a new one instead of mutating it, because
snapshots share rows with the live table. Tuples come back as lists after a
snapshot restore, so apply functions store lists.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass
from typing import Any

from stack.state.errors import IndexRegression
from stack.state.watch import WatchHandle, WatchHub

_MAX_CHAR = 0x10FFFF


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    value: Any
    create_index: int
    modify_index: int


@dataclass(frozen=True, slots=True)
class Tombstone:
    key: str
    delete_index: int


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with `prefix`
    (None when there is none, i.e. the prefix is empty or all U+10FFFF)."""
    stripped = prefix.rstrip(chr(_MAX_CHAR))
    if not stripped:
        return None
    return stripped[:-1] + chr(ord(stripped[-1]) + 1)


def _span(keys: list[str], prefix: str) -> tuple[int, int]:
    """[lo, hi) of the keys in sorted `keys` that start with `prefix`."""
    if not prefix:
        return 0, len(keys)
    end = prefix_end(prefix)
    lo = bisect_left(keys, prefix)
    hi = len(keys) if end is None else bisect_left(keys, end, lo)
    return lo, hi


def _remove_sorted(keys: list[str], key: str) -> None:
    at = bisect_left(keys, key)
    if at < len(keys) and keys[at] == key:
        del keys[at]


class Table:
    """One named table: live rows, tombstones, the table index and the reap floor.

    Reads are free to call at any time; writes (`put`, `delete`, `delete_prefix`)
    belong to apply functions and take the applying entry's log index.
    """

    __slots__ = ("_floor", "_hub", "_index", "_keys", "_rows", "_tomb_keys", "_tombs", "name")

    def __init__(self, name: str, hub: WatchHub) -> None:
        self.name = name
        self._hub = hub
        self._rows: dict[str, Row] = {}
        self._keys: list[str] = []
        self._tombs: dict[str, Tombstone] = {}
        self._tomb_keys: list[str] = []
        self._index = 0
        self._floor = 0

    @classmethod
    def _load(
        cls,
        name: str,
        hub: WatchHub,
        index: int,
        floor: int,
        rows: list[Row],
        tombstones: list[Tombstone],
    ) -> Table:
        """Build a table from rows and tombstones already sorted by key and validated."""
        table = cls(name, hub)
        table._index = index
        table._floor = floor
        table._rows = {row.key: row for row in rows}
        table._keys = [row.key for row in rows]
        # `_tombs` keeps delete order (oldest first), so the oldest is the first one.
        by_age = sorted(tombstones, key=lambda t: t.delete_index)
        table._tombs = {tomb.key: tomb for tomb in by_age}
        table._tomb_keys = [tomb.key for tomb in tombstones]
        return table

    # -- reads

    @property
    def index(self) -> int:
        """The index of the table's latest write or delete (0: never written)."""
        return self._index

    @property
    def floor(self) -> int:
        """The table index when tombstones were last reaped: a lower bound for
        every key and prefix index, standing in for the tombstones that are gone."""
        return self._floor

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def get(self, key: str) -> Row | None:
        return self._rows.get(key)

    def keys(self, prefix: str = "") -> list[str]:
        lo, hi = _span(self._keys, prefix)
        return self._keys[lo:hi]

    def first_key(self, prefix: str = "") -> str | None:
        """The least live key starting with `prefix`, without listing the others."""
        lo, hi = _span(self._keys, prefix)
        return self._keys[lo] if lo < hi else None

    def scan(self, prefix: str = "") -> list[Row]:
        """Live rows whose key starts with `prefix`, in key order."""
        rows = self._rows
        return [rows[key] for key in self.keys(prefix)]

    def tombstone(self, key: str) -> Tombstone | None:
        return self._tombs.get(key)

    def oldest_tombstone(self) -> int | None:
        """The lowest delete index of this table's tombstones, in O(1): tombstones
        enter `_tombs` in delete order (a key is deleted only while it has a row,
        and a new row removes its tombstone) and restore sorts them by age."""
        for tomb in self._tombs.values():
            return tomb.delete_index
        return None

    def tombstones(self, prefix: str = "") -> list[Tombstone]:
        lo, hi = _span(self._tomb_keys, prefix)
        tombs = self._tombs
        return [tombs[key] for key in self._tomb_keys[lo:hi]]

    def key_index(self, key: str) -> int:
        """Highest index that changed `key` (row or tombstone), at least the floor;
        0 if the key has no history."""
        row = self._rows.get(key)
        if row is not None:
            return max(row.modify_index, self._floor)
        tomb = self._tombs.get(key)
        if tomb is not None:
            return max(tomb.delete_index, self._floor)
        return self._floor

    def prefix_index(self, prefix: str) -> int:
        """Highest index that changed any key under `prefix` (rows and tombstones),
        at least the floor; 0 if the prefix has no history."""
        if not prefix:
            return self._index  # invariant: the latest write is a row, a tombstone or the floor
        best = self._floor
        for row in self.scan(prefix):
            best = max(best, row.modify_index)
        for tomb in self.tombstones(prefix):
            best = max(best, tomb.delete_index)
        return best

    # -- writes (apply functions only)

    def _check(self, index: int) -> None:
        if index < 1:
            raise ValueError(f"write index must be >= 1, got {index}")
        if index < self._index:
            raise IndexRegression(
                f"table {self.name}: write at index {index} after index {self._index}"
            )

    def put(self, key: str, value: Any, index: int) -> Row:
        """Insert or replace `key`; keeps create_index across replacements."""
        if not isinstance(key, str):
            raise TypeError(f"table {self.name}: key must be str, not {type(key).__name__}")
        self._check(index)
        old = self._rows.get(key)
        if old is None:
            row = Row(key, value, index, index)
            insort(self._keys, key)
            if self._tombs.pop(key, None) is not None:
                _remove_sorted(self._tomb_keys, key)  # the new row's index supersedes it
        else:
            row = Row(key, value, old.create_index, index)
        self._rows[key] = row
        self._index = index
        self._hub.notify(self.name, key, index)
        return row

    def delete(self, key: str, index: int) -> Row | None:
        """Delete `key`, leaving a tombstone. Deleting a missing key changes nothing."""
        self._check(index)
        old = self._rows.pop(key, None)
        if old is None:
            return None
        _remove_sorted(self._keys, key)
        self._tombs[key] = Tombstone(key, index)
        insort(self._tomb_keys, key)
        self._index = index
        self._hub.notify(self.name, key, index)
        return old

    def delete_prefix(self, prefix: str, index: int) -> list[Row]:
        """Delete every row under `prefix`, one tombstone each; returns the rows."""
        self._check(index)
        lo, hi = _span(self._keys, prefix)
        if lo == hi:
            return []
        doomed = self._keys[lo:hi]
        del self._keys[lo:hi]
        removed = [self._rows.pop(key) for key in doomed]
        for key in doomed:
            self._tombs[key] = Tombstone(key, index)
        if len(doomed) > 16:
            self._tomb_keys = sorted(self._tomb_keys + doomed)  # two sorted runs: a linear merge
        else:
            for key in doomed:
                insort(self._tomb_keys, key)
        self._index = index
        for key in doomed:
            self._hub.notify(self.name, key, index)
        return removed

    def reap(self, upto_index: int) -> int:
        """Drop tombstones deleted at or before `upto_index`; returns how many.
        Does not notify watchers: no visible data changed."""
        tombs = self._tombs
        reaped = [key for key in self._tomb_keys if tombs[key].delete_index <= upto_index]
        if not reaped:
            return 0
        for key in reaped:
            del tombs[key]
        self._tomb_keys = [key for key in self._tomb_keys if key in tombs]
        self._floor = self._index
        return len(reaped)

    def dump(self) -> dict[str, Any]:
        return {
            "index": self._index,
            "floor": self._floor,
            "rows": [
                (row.key, row.value, row.create_index, row.modify_index) for row in self.scan()
            ],
            "tombstones": [(tomb.key, tomb.delete_index) for tomb in self.tombstones()],
        }


class StateStore:
    """Named tables, the latest applied index, and the watches on them.

    `table(name)` creates a table on first use; a table that was never written
    (index 0) is left out of snapshots and `dump()`, so reads that create empty
    tables on one replica and not another do not make replicas differ.
    """

    __slots__ = ("_generation", "_hub", "_index", "_tables")

    def __init__(self) -> None:
        self._hub = WatchHub()
        self._tables: dict[str, Table] = {}
        self._index = 0
        self._generation = 0

    @property
    def index(self) -> int:
        """The latest applied log index (no-ops included)."""
        return self._index

    @property
    def generation(self) -> int:
        """Bumped by every restore: indexes from an older generation may be ahead
        of this one's, so a blocking query that sees a new generation returns."""
        return self._generation

    def advance(self, index: int) -> None:
        if index < self._index:
            raise IndexRegression(f"store index {index} below applied index {self._index}")
        self._index = index

    def table(self, name: str) -> Table:
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = Table(name, self._hub)
        return table

    def table_names(self) -> list[str]:
        """Names of tables that were ever written, sorted."""
        return sorted(name for name, table in self._tables.items() if table.index)

    def query_index(self, table: str, key: str, prefix: bool = False) -> int:
        """The index a blocking query on `key` (or on keys under the prefix `key`)
        reports and waits past. Falls back to the table index, then the store
        index, when the key or prefix has no history, so it is never 0 once
        anything was applied (an index of 0 means "do not block")."""
        found = self._tables.get(table)
        if found is not None:
            sub = found.prefix_index(key) if prefix else found.key_index(key)
            if sub:
                return sub
            if found.index:
                return found.index
        return self._index

    def watch(self, table: str, key: str, prefix: bool = False) -> WatchHandle:
        """Register interest in writes to `key` (or under the prefix `key`)."""
        return self._hub.add(table, key, prefix)

    @property
    def watch_count(self) -> int:
        return len(self._hub)

    def reap_tombstones(self, upto_index: int) -> int:
        """Drop tombstones deleted at or before `upto_index` in every table.
        Replicated state: call it only from an apply function (TOMBSTONE_REAP)."""
        return sum(table.reap(upto_index) for table in self._tables.values())

    def oldest_tombstone(self) -> int | None:
        """The lowest delete index of any tombstone (None if there are none); one
        look per table (the autopilot asks every half second)."""
        found = [i for t in self._tables.values() if (i := t.oldest_tombstone()) is not None]
        return min(found) if found else None

    def new_table(
        self, name: str, index: int, floor: int, rows: list[Row], tombs: list[Tombstone]
    ) -> Table:
        """A detached table wired to this store's watches (for restore)."""
        return Table._load(name, self._hub, index, floor, rows, tombs)

    def replace(self, tables: list[Table], index: int) -> None:
        """Swap in restored tables and index, then wake every watch."""
        self._tables = {table.name: table for table in tables}
        self._index = index
        self._generation += 1
        self._hub.notify_all(index)

    def dump(self) -> dict[str, Any]:
        """Every table and index as plain data: equal dumps mean equal states."""
        return {
            "index": self._index,
            "tables": {name: self._tables[name].dump() for name in self.table_names()},
        }
