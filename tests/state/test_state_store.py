"""Tables, indexes, watches, tombstone reaping and the nodes table."""

from __future__ import annotations

import pytest
from state_helpers import Log

from stack.state import kv, nodes, tombstones
from stack.state.commands import ApplyContext, WriteResult
from stack.state.errors import IndexRegression
from stack.state.store import StateStore, prefix_end


def test_prefix_end() -> None:
    assert prefix_end("") is None
    assert prefix_end("ab") == "ac"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff") is None


def test_writes_never_go_backwards() -> None:
    store = StateStore()
    table = store.table("t")
    table.put("a", 1, 5)
    table.put("b", 1, 5)  # many writes at one index: one command
    with pytest.raises(IndexRegression):
        table.put("c", 1, 4)
    with pytest.raises(ValueError):
        store.table("u").put("a", 1, 0)
    assert table.keys() == ["a", "b"]


def test_query_index_falls_back_to_table_then_store_index() -> None:
    store = StateStore()
    assert store.query_index("t", "x") == 0
    store.advance(3)
    assert store.query_index("t", "x") == 3
    store.table("t").put("a", 1, 4)
    store.advance(9)
    assert store.query_index("t", "x") == 4
    assert store.query_index("t", "x/", prefix=True) == 4
    assert store.query_index("t", "a") == 4


def test_untouched_tables_are_not_state() -> None:
    store = StateStore()
    store.table("read-only-probe")
    assert store.table_names() == []
    assert store.dump() == {"index": 0, "tables": {}}


def test_watch_fires_for_key_and_prefix() -> None:
    store = StateStore()
    table = store.table("t")
    exact = store.watch("t", "a/b")
    under = store.watch("t", "a/", prefix=True)
    other = store.watch("u", "a/b")
    seen: list[tuple[str, int]] = []
    exact.add_callback(lambda i: seen.append(("exact", i)))
    under.add_callback(lambda i: seen.append(("prefix", i)))
    table.put("a/b", 1, 1)
    table.put("a/c", 1, 2)
    table.put("b", 1, 3)
    assert seen == [("exact", 1), ("prefix", 1), ("prefix", 2)]
    assert other.fired == 0
    table.delete("a/b", 4)
    assert exact.last_index == 4 and under.last_index == 4


def test_tree_delete_fires_a_prefix_watch_once() -> None:
    store = StateStore()
    table = store.table("t")
    for i, key in enumerate(["a/1", "a/2", "a/3"], start=1):
        table.put(key, 1, i)
    handle = store.watch("t", "a/", prefix=True)
    table.delete_prefix("a/", 4)
    assert handle.fired == 1


def test_closed_watch_is_forgotten() -> None:
    store = StateStore()
    calls: list[int] = []
    with store.watch("t", "a") as handle:
        handle.add_callback(calls.append)
        assert store.watch_count == 1
    assert store.watch_count == 0
    store.table("t").put("a", 1, 1)
    assert calls == []


def test_a_callback_may_close_watches_while_firing() -> None:
    store = StateStore()
    first = store.watch("t", "", prefix=True)
    second = store.watch("t", "", prefix=True)
    first.add_callback(lambda _i: second.close())
    store.table("t").put("k", 1, 1)
    assert first.fired == 1 and second.fired == 0 and store.watch_count == 1


def test_reap_command_drops_old_tombstones_and_keeps_indexes() -> None:
    log = Log()
    for key in ["d/a", "d/b", "d/c", "e"]:
        log.apply(kv.encode_set(log.registry, key, b""))
    log.apply(kv.encode_delete(log.registry, "d/a"))  # 5
    log.apply(kv.encode_delete(log.registry, "d/c"))  # 6
    log.apply(kv.encode_set(log.registry, "e", b"x"))  # 7
    probes = [("d/", True), ("d/a", False), ("d/c", False), ("d/b", False), ("e", False)]
    before = {p: log.store.query_index(kv.KV_TABLE, *p) for p in probes}
    assert log.store.oldest_tombstone() == 5
    assert log.apply(tombstones.encode_reap(log.registry, 5)) == 1
    table = log.store.table(kv.KV_TABLE)
    assert [t.key for t in table.tombstones()] == ["d/c"]
    assert table.floor == 7
    assert log.store.oldest_tombstone() == 6
    after = {p: log.store.query_index(kv.KV_TABLE, *p) for p in probes}
    assert all(after[p] >= before[p] for p in probes), (before, after)
    assert after[("d/a", False)] == 7
    # reaping nothing changes nothing
    assert log.apply(tombstones.encode_reap(log.registry, 5)) == 0
    assert log.apply(tombstones.encode_reap(log.registry, 100)) == 1
    assert log.store.oldest_tombstone() is None


def test_reap_does_not_drop_the_prefix_index_below_the_old_fallback() -> None:
    # "x/" had no history, so it reported the table index (3); a reap of an
    # older tombstone elsewhere must not make it report less than 3.
    store = StateStore()
    table = store.table("t")
    table.put("a", 1, 1)
    table.delete("a", 2)
    table.put("b", 1, 3)
    assert store.query_index("t", "x/", prefix=True) == 3
    table.reap(2)
    assert store.query_index("t", "x/", prefix=True) == 3


def test_tombstone_gc_timing() -> None:
    gc = tombstones.TombstoneGC(ttl=100.0, granularity=10.0)
    gc.observe(0.0, 5)
    gc.observe(5.0, 8)  # inside granularity: ignored
    gc.observe(10.0, 12)
    gc.observe(20.0, 12)  # index unchanged: ignored
    assert gc.reap_index(99.0) is None
    assert gc.reap_index(100.0) == 5
    assert gc.reap_index(100.0) is None
    assert gc.reap_index(200.0) == 12
    gc.observe(300.0, 20)
    gc.reset()
    assert gc.reap_index(1000.0) is None


def test_node_register_upserts() -> None:
    log = Log()
    fields = {
        "id": "n1",
        "name": "node1",
        "address": "127.0.0.1:7481",
        "role": "server",
        "datacenter": "dc1",
        "status": "alive",
    }
    assert log.apply(nodes.encode_register(log.registry, **fields)) == WriteResult(True, 1)
    log.apply(nodes.encode_register(log.registry, **(fields | {"status": "failed"})))
    entry, index = nodes.get_node(log.store, "n1")
    failed = fields | {"status": "failed"}
    assert entry == nodes.NodeEntry(**failed, create_index=1, modify_index=2)
    assert index == 2
    listed, list_index = nodes.list_nodes(log.store)
    assert [n.id for n in listed] == ["n1"] and list_index == 2


def test_node_status_changes_only_an_existing_node() -> None:
    log = Log()
    reg = log.registry
    fields = {
        "id": "n1",
        "name": "node1",
        "address": "127.0.0.1:7481",
        "role": "server",
        "datacenter": "dc1",
        "status": "alive",
        "gossip": "127.0.0.1:7482",
    }
    log.apply(nodes.encode_register(reg, **fields))
    assert log.apply(nodes.encode_status(reg, "n1", "down")) == WriteResult(True, 2)
    entry, _ = nodes.get_node(log.store, "n1")
    assert entry is not None and (entry.status, entry.gossip, entry.modify_index) == (
        "down",
        "127.0.0.1:7482",
        2,
    )
    # The same status again, or an unknown node: nothing written.
    assert log.apply(nodes.encode_status(reg, "n1", "down")) == WriteResult(False, 3)
    assert log.apply(nodes.encode_status(reg, "n9", "down")) == WriteResult(False, 4)
    assert nodes.get_node(log.store, "n9")[0] is None
    assert nodes.get_node(log.store, "n1")[0].modify_index == 2  # type: ignore[union-attr]
    # A status outside the three is refused.
    spec = reg.lookup(nodes.NODE_STATUS)
    assert spec is not None
    with pytest.raises(ValueError):
        spec.apply(ApplyContext(5, 1, log.store), {"id": "n1", "status": "failed"})


def test_oldest_tombstone_follows_deletes_reaps_recreations_and_restore() -> None:
    log = Log()
    reg = log.registry
    for key in ("b", "a", "c", "d"):
        log.apply(kv.encode_set(reg, key, b"v"))
    assert log.store.oldest_tombstone() is None
    log.apply(kv.encode_delete(reg, "c"))  # index 5
    log.apply(kv.encode_delete(reg, "d"))  # index 6
    log.apply(kv.encode_delete(reg, "a"))  # index 7: key order is not delete order
    assert log.store.oldest_tombstone() == 5
    log.apply(kv.encode_set(reg, "c", b"again"))  # the row supersedes its tombstone
    assert log.store.oldest_tombstone() == 6
    # A restored store (tombstones come back sorted by key) answers the same.
    restored = StateStore()
    tables = [
        restored.new_table(t.name, t.index, t.floor, t.scan(), t.tombstones())
        for t in (log.store.table(n) for n in log.store.table_names())
    ]
    restored.replace(tables, log.store.index)
    assert restored.oldest_tombstone() == 6
    assert log.store.reap_tombstones(6) == 1
    assert log.store.oldest_tombstone() == 7


def test_first_key_is_the_least_live_key_under_a_prefix() -> None:
    t = StateStore().table("t")
    assert t.first_key() is None and t.first_key("a/") is None
    for i, key in enumerate(["b/2", "a/9", "b/1", "c"], start=1):
        t.put(key, i, i)
    assert t.first_key() == "a/9"
    assert t.first_key("b/") == "b/1"
    assert t.first_key("d") is None
    t.delete("b/1", 5)  # a tombstone is not a live key
    assert t.first_key("b/") == "b/2"
    assert t.first_key("b/") == t.keys("b/")[0]
