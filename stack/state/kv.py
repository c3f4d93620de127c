"""The cluster KV table: the store behind `PUT/GET/DELETE /v1/kv/{key}`.

Commands (numbers are permanent, see docs/state.md):
  KV_SET (1)         {"key": str, "value": bytes, "flags": int?, "cas": int?}
  KV_DELETE (2)      {"key": str, "cas": int?}
  KV_DELETE_TREE (3) {"key": prefix}

Check-and-set follows Consul: `cas=0` writes only if the key is absent,
`cas=N` only if the key's modify index is N. A mismatch is `WriteResult(ok=False)`
and changes nothing. A CAS delete of a key that is already gone succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.store import Row, StateStore

KV_TABLE = "kv"
KV_SET = 1
KV_DELETE = 2
KV_DELETE_TREE = 3


@dataclass(frozen=True, slots=True)
class KVEntry:
    key: str
    value: bytes
    flags: int
    create_index: int
    modify_index: int


def register(registry: CommandRegistry) -> None:
    registry.register(KV_SET, "kv.set", apply_set)
    registry.register(KV_DELETE, "kv.delete", apply_delete)
    registry.register(KV_DELETE_TREE, "kv.delete_tree", apply_delete_tree)


# -- command builders (the leader encodes, every replica applies)


def encode_set(
    registry: CommandRegistry,
    key: str,
    value: bytes,
    *,
    cas: int | None = None,
    flags: int = 0,
) -> bytes:
    body: dict[str, Any] = {"key": key, "value": value}
    if flags:
        body["flags"] = flags
    if cas is not None:
        body["cas"] = cas
    return registry.encode(KV_SET, body)


def encode_delete(registry: CommandRegistry, key: str, *, cas: int | None = None) -> bytes:
    body: dict[str, Any] = {"key": key}
    if cas is not None:
        body["cas"] = cas
    return registry.encode(KV_DELETE, body)


def encode_delete_tree(registry: CommandRegistry, prefix: str) -> bytes:
    return registry.encode(KV_DELETE_TREE, {"key": prefix})


# -- apply


def _field(body: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(body, dict):
        raise TypeError(f"body must be a map, got {type(body).__name__}")
    value = body[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{name} has type {type(value).__name__}")
    return value


def _cas(body: Any) -> int | None:
    if body.get("cas") is None:
        return None
    cas: int = _field(body, "cas", int)
    return cas


def apply_set(ctx: ApplyContext, body: Any) -> WriteResult:
    key: str = _field(body, "key", str)
    value: bytes = _field(body, "value", bytes)
    flags: int = _field(body, "flags", int) if "flags" in body else 0
    cas = _cas(body)
    table = ctx.store.table(KV_TABLE)
    if cas is not None:
        row = table.get(key)
        if cas != (0 if row is None else row.modify_index):
            return WriteResult(False, ctx.index)
    table.put(key, {"value": value, "flags": flags}, ctx.index)
    return WriteResult(True, ctx.index)


def apply_delete(ctx: ApplyContext, body: Any) -> WriteResult:
    key: str = _field(body, "key", str)
    cas = _cas(body)
    table = ctx.store.table(KV_TABLE)
    if cas is not None:
        row = table.get(key)
        if row is not None and row.modify_index != cas:
            return WriteResult(False, ctx.index)
    table.delete(key, ctx.index)
    return WriteResult(True, ctx.index)


def apply_delete_tree(ctx: ApplyContext, body: Any) -> WriteResult:
    prefix: str = _field(body, "key", str)
    ctx.store.table(KV_TABLE).delete_prefix(prefix, ctx.index)
    return WriteResult(True, ctx.index)


# -- reads (any replica; the HTTP layer decides about consistency)


def _entry(row: Row) -> KVEntry:
    value: dict[str, Any] = row.value
    return KVEntry(row.key, value["value"], value["flags"], row.create_index, row.modify_index)


def get(store: StateStore, key: str) -> tuple[KVEntry | None, int]:
    """The entry (None if absent) and the index to block on for this key."""
    row = store.table(KV_TABLE).get(key)
    return (None if row is None else _entry(row)), store.query_index(KV_TABLE, key)


def list_prefix(store: StateStore, prefix: str) -> tuple[list[KVEntry], int]:
    """Entries under `prefix` in key order, and the prefix's index (the highest
    modify or delete index under it, so it never goes backwards)."""
    rows = store.table(KV_TABLE).scan(prefix)
    return [_entry(row) for row in rows], store.query_index(KV_TABLE, prefix, prefix=True)


def list_keys(store: StateStore, prefix: str, separator: str = "") -> tuple[list[str], int]:
    """Keys under `prefix` (Consul's `?keys&separator=`): with a separator, keys
    are cut after the first separator past the prefix and repeats dropped."""
    keys = store.table(KV_TABLE).keys(prefix)
    if separator:
        cut: list[str] = []
        for key in keys:
            at = key.find(separator, len(prefix))
            short = key if at < 0 else key[: at + len(separator)]
            if not cut or cut[-1] != short:
                cut.append(short)
        keys = cut
    return keys, store.query_index(KV_TABLE, prefix, prefix=True)
