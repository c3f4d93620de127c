"""Snapshots: round trips (property-based), streaming, and refusing bad data."""

from __future__ import annotations

import zlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from state_helpers import Log

from stack.state import kv, nodes, tombstones
from stack.state.commands import CommandRegistry
from stack.state.errors import SnapshotCorrupt
from stack.state.snapshot import CHUNK, SNAPSHOT_FORMAT, SNAPSHOT_VERSION
from stack.state.store import Table

Op = tuple[Any, ...]

_keys = st.text(alphabet="ab/", min_size=1, max_size=4)
_cas = st.one_of(st.none(), st.integers(0, 40))
_ops = st.one_of(
    st.tuples(st.just("set"), _keys, st.binary(max_size=3), _cas, st.integers(0, 2)),
    st.tuples(st.just("delete"), _keys, _cas),
    st.tuples(st.just("tree"), st.text(alphabet="ab/", max_size=3)),
    st.tuples(st.just("node"), st.sampled_from(["n1", "n2"]), st.sampled_from(["up", "down"])),
    st.tuples(st.just("noop")),
    st.tuples(st.just("reap"), st.integers(0, 60)),
)
_PROBES = [(k, False) for k in ["a", "b", "a/", "a/b", "ab", "b/a", "/"]] + [
    (p, True) for p in ["", "a", "a/", "b/", "/", "ab"]
]


def _encode(registry: CommandRegistry, op: Op) -> bytes:
    kind = op[0]
    if kind == "set":
        _, key, value, cas, flags = op
        return kv.encode_set(registry, key, value, cas=cas, flags=flags)
    if kind == "delete":
        return kv.encode_delete(registry, op[1], cas=op[2])
    if kind == "tree":
        return kv.encode_delete_tree(registry, op[1])
    if kind == "node":
        return nodes.encode_register(
            registry,
            id=op[1],
            name=op[1],
            address="",
            role="client",
            datacenter="dc1",
            status=op[2],
        )
    if kind == "reap":
        return tombstones.encode_reap(registry, op[1])
    return b""


class Model:
    """The KV table as a dict, to check the store against."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[bytes, int, int, int]] = {}

    def apply(self, index: int, op: Op) -> bool | None:
        kind = op[0]
        if kind == "set":
            _, key, value, cas, flags = op
            cur = self.rows.get(key)
            if cas is not None and cas != (cur[3] if cur else 0):
                return False
            self.rows[key] = (value, flags, cur[2] if cur else index, index)
            return True
        if kind == "delete":
            cur = self.rows.get(op[1])
            if op[2] is not None and cur is not None and cur[3] != op[2]:
                return False
            self.rows.pop(op[1], None)
            return True
        if kind == "tree":
            for key in [k for k in self.rows if k.startswith(op[1])]:
                del self.rows[key]
            return True
        return None


def _run(log: Log, ops: list[Op]) -> list[object]:
    return [log.apply(_encode(log.registry, op)) for op in ops]


def _check_invariants(log: Log) -> None:
    for name in log.store.table_names():
        table = log.store.table(name)
        latest = max(
            [table.floor]
            + [r.modify_index for r in table.scan()]
            + [t.delete_index for t in table.tombstones()]
        )
        assert table.index == latest
        for key, prefix in _PROBES:
            under = [r.modify_index for r in table.scan() if r.key.startswith(key)] + [
                t.delete_index for t in table.tombstones() if t.key.startswith(key)
            ]
            touched = under if prefix else [i for i, k in _indexed(table) if k == key]
            assert log.store.query_index(name, key, prefix) >= max(touched, default=0)


def _indexed(table: Table) -> list[tuple[int, str]]:
    return [(r.modify_index, r.key) for r in table.scan()] + [
        (t.delete_index, t.key) for t in table.tombstones()
    ]


@settings(max_examples=150, deadline=None)
@given(st.lists(_ops, max_size=40))
def test_store_matches_model_and_indexes_never_go_backwards(ops: list[Op]) -> None:
    log = Log()
    model = Model()
    seen = {probe: 0 for probe in _PROBES}
    for op in ops:
        index = log.next_index
        result = log.apply(_encode(log.registry, op))
        expected = model.apply(index, op)
        if expected is not None:
            assert getattr(result, "ok", None) is expected, op
        entries, _ = kv.list_prefix(log.store, "")
        assert {e.key: (e.value, e.flags, e.create_index, e.modify_index) for e in entries} == (
            model.rows
        )
        assert [e.key for e in entries] == sorted(model.rows)
        for probe in _PROBES:
            now = log.store.query_index(kv.KV_TABLE, *probe)
            assert now >= seen[probe], (probe, op)
            seen[probe] = now
        _check_invariants(log)


@settings(max_examples=150, deadline=None)
@given(st.lists(_ops, max_size=40), st.lists(_ops, max_size=20))
def test_snapshot_restore_round_trip(first: list[Op], then: list[Op]) -> None:
    a = Log()
    _run(a, first)
    data = a.fsm.snapshot()
    b = Log()
    _run(b, [("set", "stale", b"x", None, 0)])  # restore replaces whatever was there
    b.fsm.restore(data)
    assert b.store.dump() == a.store.dump()
    assert b.fsm.applied_index == a.fsm.applied_index
    assert b.fsm.snapshot() == data
    assert _run(b, then) == _run(a, then)
    assert b.store.dump() == a.store.dump()
    _check_invariants(b)


def test_round_trip_check_catches_a_snapshot_that_drops_tombstones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = Log()
    _run(a, [("set", "a", b"", None, 0), ("delete", "a", None), ("set", "b", b"", None, 0)])
    monkeypatch.setattr(Table, "tombstones", lambda self, prefix="": [])
    data = a.fsm.snapshot()
    monkeypatch.undo()
    b = Log()
    b.fsm.restore(data)
    assert b.store.dump() != a.store.dump()


def test_snapshot_chunks_are_captured_when_taken() -> None:
    log = Log()
    _run(log, [("set", "a", b"1", None, 0)])
    chunks = log.fsm.snapshot_chunks()
    expected = log.fsm.snapshot()
    _run(log, [("set", "a", b"2", None, 0), ("delete", "a", None)])
    assert b"".join(chunks) == expected


def test_large_table_streams_in_chunks() -> None:
    log = Log()
    registry = log.registry
    for i in range(3000):
        log.apply(kv.encode_set(registry, f"k/{i:05d}", bytes(64)))
    chunks = list(log.fsm.snapshot_chunks())
    assert len(chunks) > 3
    assert all(len(chunk) < 2 * CHUNK for chunk in chunks)
    restored = Log()
    restored.fsm.restore(b"".join(chunks))
    assert restored.store.dump() == log.store.dump()


# -- corrupt snapshots


def _seal(*objects: Any) -> bytes:
    body = b"".join(msgpack.packb(o, use_bin_type=True) for o in objects)
    return body + zlib.crc32(body).to_bytes(4, "big")


def _header(**overrides: Any) -> dict[str, Any]:
    base = {"format": SNAPSHOT_FORMAT, "version": SNAPSHOT_VERSION, "index": 9, "tables": 1}
    return base | overrides


_GOOD_TABLE = [["table", "kv", 2, 0, 1, 1], ["a", {"value": b"", "flags": 0}, 1, 1], ["b", 2]]

_CORRUPT = {
    "empty": b"",
    "garbage": b"\x00\x01\x02\x03\x04\x05",
    "bad version": _seal(_header(version=99), *_GOOD_TABLE, ["end", 1]),
    "bad format": _seal(_header(format="nomad"), *_GOOD_TABLE, ["end", 1]),
    "missing trailer": _seal(_header(), *_GOOD_TABLE),
    "trailing data": _seal(_header(), *_GOOD_TABLE, ["end", 1], 7),
    "rows out of order": _seal(
        _header(),
        ["table", "kv", 2, 0, 2, 0],
        ["b", 1, 1, 1],
        ["a", 1, 2, 2],
        ["end", 1],
    ),
    "live and tombstone": _seal(
        _header(), ["table", "kv", 2, 0, 1, 1], ["a", 1, 1, 1], ["a", 2], ["end", 1]
    ),
    "table index lies": _seal(_header(), ["table", "kv", 5, 0, 1, 1], *_GOOD_TABLE[1:], ["end", 1]),
    "modify before create": _seal(
        _header(), ["table", "kv", 2, 0, 1, 0], ["a", 1, 2, 1], ["end", 1]
    ),
    "bool as index": _seal(
        _header(), ["table", "kv", 1, 0, 1, 0], ["a", 1, True, True], ["end", 1]
    ),
    "table past snapshot": _seal(_header(index=1), *_GOOD_TABLE, ["end", 1]),
}


def test_the_corruption_fixture_is_valid_when_unbroken() -> None:
    log = Log()
    log.fsm.restore(_seal(_header(), *_GOOD_TABLE, ["end", 1]))
    assert kv.get(log.store, "a")[0] == kv.KVEntry("a", b"", 0, 1, 1)
    assert log.fsm.applied_index == 9


@pytest.mark.parametrize("name", sorted(_CORRUPT))
def test_corrupt_snapshot_raises_and_keeps_old_state(name: str) -> None:
    log = Log()
    _run(log, [("set", "keep", b"me", None, 0), ("delete", "keep", None), ("set", "x", b"", 0, 0)])
    before = log.store.dump()
    generation = log.store.generation
    with pytest.raises(SnapshotCorrupt):
        log.fsm.restore(_CORRUPT[name])
    assert log.store.dump() == before
    assert log.store.generation == generation


@pytest.mark.parametrize("where", ["flip", "truncate"])
def test_damaged_real_snapshot_is_refused(where: str) -> None:
    source = Log()
    _run(source, [("set", f"k{i}", b"v", None, 0) for i in range(20)])
    data = bytearray(source.fsm.snapshot())
    if where == "flip":
        data[len(data) // 2] ^= 0x40
    else:
        del data[-10:]
    log = Log()
    _run(log, [("set", "keep", b"me", None, 0)])
    before = log.store.dump()
    with pytest.raises(SnapshotCorrupt):
        log.fsm.restore(bytes(data))
    assert log.store.dump() == before
