"""The state snapshot format: every table, streamed through one msgpack Packer.

A snapshot is a sequence of msgpack objects followed by a 4-byte big-endian
CRC-32 of everything before it:

    {"format": "stack.state", "version": 1, "index": I, "tables": N}
    N times, tables in name order:
        ["table", name, table_index, floor, row_count, tombstone_count]
        row_count x       [key, value, create_index, modify_index]   (key order)
        tombstone_count x [key, delete_index]                         (key order)
    ["end", N]
    crc32

Rows are packed one at a time into a Packer that is flushed every `CHUNK`
bytes, so a large table is never turned into one nested Python list. Tables
never written (index 0) are left out. Decoding validates everything (checksum,
header, counts, key order, index bounds) into detached tables; the caller swaps
them in only when all of it passed.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from typing import Any

import msgpack

from stack.state.errors import SnapshotCorrupt
from stack.state.store import Row, StateStore, Table, Tombstone

SNAPSHOT_FORMAT = "stack.state"
SNAPSHOT_VERSION = 1
CHUNK = 64 * 1024
_CRC_BYTES = 4


def iter_snapshot(store: StateStore) -> Iterator[bytes]:
    """Chunks of a snapshot of `store` as it is now.

    The rows are captured before this returns (one list of references per
    table; rows are immutable), so the host may apply more entries while it
    consumes the chunks and the snapshot still reflects this moment.
    """
    tables = [store.table(name) for name in store.table_names()]
    captured = [(t.name, t.index, t.floor, t.scan(), t.tombstones()) for t in tables]
    return _pack(store.index, captured)


def _pack(
    index: int, captured: list[tuple[str, int, int, list[Row], list[Tombstone]]]
) -> Iterator[bytes]:
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    crc = 0

    def flush() -> bytes:
        nonlocal crc
        chunk: bytes = packer.bytes()
        packer.reset()
        crc = zlib.crc32(chunk, crc)
        return chunk

    packer.pack(
        {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "index": index,
            "tables": len(captured),
        }
    )
    for name, table_index, floor, rows, tombs in captured:
        packer.pack(["table", name, table_index, floor, len(rows), len(tombs)])
        for row in rows:
            packer.pack((row.key, row.value, row.create_index, row.modify_index))
            if len(packer.getbuffer()) >= CHUNK:
                yield flush()
        for tomb in tombs:
            packer.pack((tomb.key, tomb.delete_index))
            if len(packer.getbuffer()) >= CHUNK:
                yield flush()
    packer.pack(["end", len(captured)])
    yield flush()
    yield crc.to_bytes(_CRC_BYTES, "big")


def _index(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SnapshotCorrupt(f"{what}: expected a non-negative integer, got {value!r}")
    return value


def _key(value: object, previous: str | None, what: str) -> str:
    if not isinstance(value, str):
        raise SnapshotCorrupt(f"{what}: key must be a string, got {type(value).__name__}")
    if previous is not None and value <= previous:
        raise SnapshotCorrupt(f"{what}: key {value!r} out of order after {previous!r}")
    return value


class _Reader:
    __slots__ = ("_unpacker",)

    def __init__(self, data: bytes) -> None:
        self._unpacker = msgpack.Unpacker(
            io.BytesIO(data),
            raw=False,
            strict_map_key=False,
            max_buffer_size=max(len(data), 1024),
        )

    def next(self, what: str) -> Any:
        try:
            return next(self._unpacker)
        except StopIteration:
            raise SnapshotCorrupt(f"truncated before {what}") from None
        except Exception as exc:
            raise SnapshotCorrupt(f"undecodable {what}: {exc}") from exc

    def tell(self) -> int:
        position: int = self._unpacker.tell()
        return position

    def record(self, size: int, what: str) -> list[Any]:
        item = self.next(what)
        if not isinstance(item, list) or len(item) != size:
            raise SnapshotCorrupt(f"{what}: expected a list of {size}, got {item!r:.80}")
        return item


def decode_snapshot(store: StateStore, data: bytes) -> tuple[list[Table], int]:
    """Validate `data` and build detached tables for `store`; returns the tables
    and the snapshot's applied index. Raises SnapshotCorrupt; never touches the
    store's current tables."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SnapshotCorrupt(f"snapshot must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) <= _CRC_BYTES:
        raise SnapshotCorrupt("snapshot too short")
    body_len = len(data) - _CRC_BYTES
    expected = int.from_bytes(data[body_len:], "big")
    if zlib.crc32(memoryview(data)[:body_len]) != expected:
        raise SnapshotCorrupt("checksum mismatch")
    reader = _Reader(data)
    header = reader.next("header")
    if not isinstance(header, dict) or header.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotCorrupt("not a stack state snapshot")
    if header.get("version") != SNAPSHOT_VERSION:
        raise SnapshotCorrupt(
            f"snapshot version {header.get('version')!r}, this build reads {SNAPSHOT_VERSION}"
        )
    applied = _index(header.get("index"), "header index")
    count = _index(header.get("tables"), "header table count")
    tables: list[Table] = []
    previous_name: str | None = None
    for _ in range(count):
        tag, name, table_index, floor, n_rows, n_tombs = reader.record(6, "table header")
        if tag != "table":
            raise SnapshotCorrupt(f"expected a table header, got {tag!r}")
        name = _key(name, previous_name, "table name")
        previous_name = name
        table_index = _index(table_index, f"table {name} index")
        floor = _index(floor, f"table {name} floor")
        rows = _read_rows(reader, name, table_index, _index(n_rows, f"table {name} rows"))
        tombs = _read_tombs(reader, name, table_index, _index(n_tombs, f"table {name} tombs"))
        live = {row.key for row in rows}
        if any(tomb.key in live for tomb in tombs):
            raise SnapshotCorrupt(f"table {name}: a key is both live and a tombstone")
        latest = max(
            floor,
            max((row.modify_index for row in rows), default=0),
            max((tomb.delete_index for tomb in tombs), default=0),
        )
        if table_index == 0 or latest != table_index:
            raise SnapshotCorrupt(f"table {name}: index {table_index} but latest write {latest}")
        if table_index > applied:
            raise SnapshotCorrupt(f"table {name}: index {table_index} beyond snapshot {applied}")
        tables.append(store.new_table(name, table_index, floor, rows, tombs))
    trailer = reader.record(2, "trailer")
    if trailer != ["end", count]:
        raise SnapshotCorrupt(f"bad trailer {trailer!r}")
    if reader.tell() != body_len:
        raise SnapshotCorrupt("trailing data after the trailer")
    return tables, applied


def _read_rows(reader: _Reader, table: str, table_index: int, count: int) -> list[Row]:
    rows: list[Row] = []
    previous: str | None = None
    for _ in range(count):
        key, value, create, modify = reader.record(4, f"table {table} row")
        previous = _key(key, previous, f"table {table} row")
        create = _index(create, f"table {table} row {key!r} create index")
        modify = _index(modify, f"table {table} row {key!r} modify index")
        if not 1 <= create <= modify <= table_index:
            raise SnapshotCorrupt(f"table {table} row {key!r}: indexes {create}, {modify}")
        rows.append(Row(key, value, create, modify))
    return rows


def _read_tombs(reader: _Reader, table: str, table_index: int, count: int) -> list[Tombstone]:
    tombs: list[Tombstone] = []
    previous: str | None = None
    for _ in range(count):
        key, deleted = reader.record(2, f"table {table} tombstone")
        previous = _key(key, previous, f"table {table} tombstone")
        deleted = _index(deleted, f"table {table} tombstone {key!r} index")
        if not 1 <= deleted <= table_index:
            raise SnapshotCorrupt(f"table {table} tombstone {key!r}: index {deleted}")
        tombs.append(Tombstone(key, deleted))
    return tombs
