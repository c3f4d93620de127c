"""The KV table: set, get, check-and-set, delete, tombstones, trees, listing."""

from __future__ import annotations

from state_helpers import Log

from stack.state import kv
from stack.state.commands import WriteResult


def _set(log: Log, key: str, value: bytes, **kw: int) -> object:
    return log.apply(kv.encode_set(log.registry, key, value, **kw))


def test_set_then_get() -> None:
    log = Log()
    assert _set(log, "a", b"1") == WriteResult(True, 1)
    assert _set(log, "a", b"2", flags=9) == WriteResult(True, 2)
    entry, index = kv.get(log.store, "a")
    assert entry == kv.KVEntry("a", b"2", 9, 1, 2)
    assert index == 2


def test_get_missing_key_reports_a_nonzero_index() -> None:
    log = Log()
    log.apply(b"")
    _set(log, "other", b"x")
    entry, index = kv.get(log.store, "missing")
    assert entry is None
    assert index == 2  # the table's index: a client may block on it


def test_cas_zero_creates_only_if_absent() -> None:
    log = Log()
    assert _set(log, "a", b"1", cas=0) == WriteResult(True, 1)
    assert _set(log, "a", b"2", cas=0) == WriteResult(False, 2)
    entry, _ = kv.get(log.store, "a")
    assert entry is not None and entry.value == b"1"


def test_cas_mismatch_fails_and_changes_nothing() -> None:
    log = Log()
    _set(log, "a", b"1")
    _set(log, "b", b"1")
    before = log.store.dump()["tables"]
    assert _set(log, "a", b"2", cas=2) == WriteResult(False, 3)
    assert log.store.dump()["tables"] == before
    assert kv.get(log.store, "a")[1] == 1
    assert _set(log, "a", b"3", cas=1) == WriteResult(True, 4)
    entry, _ = kv.get(log.store, "a")
    assert entry is not None and (entry.value, entry.modify_index) == (b"3", 4)


def test_delete_with_cas() -> None:
    log = Log()
    _set(log, "a", b"1")
    assert log.apply(kv.encode_delete(log.registry, "a", cas=7)) == WriteResult(False, 2)
    assert kv.get(log.store, "a")[0] is not None
    assert log.apply(kv.encode_delete(log.registry, "a", cas=1)) == WriteResult(True, 3)
    assert kv.get(log.store, "a")[0] is None
    # already gone: a CAS delete succeeds without writing
    assert log.apply(kv.encode_delete(log.registry, "a", cas=1)) == WriteResult(True, 4)
    assert log.store.table(kv.KV_TABLE).index == 3


def test_delete_leaves_tombstone_and_indexes_do_not_go_backwards() -> None:
    log = Log()
    _set(log, "dir/a", b"1")
    _set(log, "dir/b", b"1")
    _set(log, "elsewhere", b"1")
    assert kv.list_prefix(log.store, "dir/")[1] == 2
    log.apply(kv.encode_delete(log.registry, "dir/b"))
    table = log.store.table(kv.KV_TABLE)
    tomb = table.tombstone("dir/b")
    assert tomb is not None and tomb.delete_index == 4
    entries, index = kv.list_prefix(log.store, "dir/")
    assert [e.key for e in entries] == ["dir/a"]
    assert index == 4  # the deleted row's index is still reported
    assert kv.get(log.store, "dir/b") == (None, 4)


def test_recreate_after_delete_drops_the_tombstone() -> None:
    log = Log()
    _set(log, "a", b"1")
    log.apply(kv.encode_delete(log.registry, "a"))
    _set(log, "a", b"2")
    table = log.store.table(kv.KV_TABLE)
    assert table.tombstone("a") is None
    entry, index = kv.get(log.store, "a")
    assert entry is not None and entry.create_index == 3 and index == 3


def test_delete_tree() -> None:
    log = Log()
    for key in ["a", "a/x", "a/y/z", "ab", "b"]:
        _set(log, key, key.encode())
    assert log.apply(kv.encode_delete_tree(log.registry, "a/")) == WriteResult(True, 6)
    assert [e.key for e in kv.list_prefix(log.store, "")[0]] == ["a", "ab", "b"]
    table = log.store.table(kv.KV_TABLE)
    assert [(t.key, t.delete_index) for t in table.tombstones()] == [("a/x", 6), ("a/y/z", 6)]
    assert kv.list_prefix(log.store, "a/")[1] == 6
    assert kv.list_prefix(log.store, "a/y/")[1] == 6
    # deleting an empty tree writes nothing
    log.apply(kv.encode_delete_tree(log.registry, "nothing/"))
    assert table.index == 6


def test_list_prefix_sorted_and_exact() -> None:
    log = Log()
    for key in ["b/2", "a", "b/10", "b/1", "b", "c/1", "b0"]:
        _set(log, key, b"")
    entries, index = kv.list_prefix(log.store, "b/")
    assert [e.key for e in entries] == ["b/1", "b/10", "b/2"]
    assert index == 4  # "b/1", the latest write under "b/"
    assert [e.key for e in kv.list_prefix(log.store, "")[0]] == sorted(
        ["b/2", "a", "b/10", "b/1", "b", "c/1", "b0"]
    )


def test_list_keys_with_separator() -> None:
    log = Log()
    for key in ["web/a/1", "web/a/2", "web/b", "web/", "webz"]:
        _set(log, key, b"")
    keys, _ = kv.list_keys(log.store, "web/", "/")
    assert keys == ["web/", "web/a/", "web/b"]
    assert kv.list_keys(log.store, "web")[0] == ["web/", "web/a/1", "web/a/2", "web/b", "webz"]


def test_unicode_prefix_bounds() -> None:
    log = Log()
    for key in ["é", "é\U0010ffff", "é\U0010ffffx", "ê", "f"]:
        _set(log, key, b"")
    assert [e.key for e in kv.list_prefix(log.store, "é")[0]] == [
        "é",
        "é\U0010ffff",
        "é\U0010ffffx",
    ]
    assert [e.key for e in kv.list_prefix(log.store, "é\U0010ffff")[0]] == [
        "é\U0010ffff",
        "é\U0010ffffx",
    ]
