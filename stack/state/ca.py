"""The CA table: the cluster's roots, the join secret, the gossip key, revocations.

Rows (every private value is barrier ciphertext, built by the leader):
  "root/<gen>"    {"gen", "cert": PEM, "key": ct, "cross": PEM or b"" (this root
                   signed by the previous one), "retire_after": unix seconds or 0}
  "active"        {"gen"}: the root that signs new certificates
  "join"          {"secret": ct, "version"}: the join token's secret
  "gossip"        {"key": ct, "keys": [ct, ...], "primary": i, "version": v}: the
                  gossip keyring (`key` is keys[primary]; a row from CA_INIT has
                  only `key`: version 1, that one key)
  "revoked/<id>"  {"index"}: a removed node; its certificates are refused
  "nodekey/<id>"  {"pub": PEM}: a node's public key, which seal shares are encrypted to

CA_INIT (7) writes the first root, join secret and gossip key (the bootstrap
genesis). CA_ROTATE (8) adds a root generation and makes it active, marking the
old one to retire after every certificate it signed has expired. CA_RETIRE (9)
drops a retired generation from the trust bundle. CA_JOIN (12) replaces the join
secret. CA_REVOKE (13) denies a node id from then on. CA_NODE_KEY (14) records a
node's public key when it joins. CA_GOSSIP_KEYRING (16) replaces the gossip
keyring, only as the next version (a compare-and-set: one rotation at a time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.store import StateStore

CA_TABLE = "ca"
CA_INIT = 7
CA_ROTATE = 8
CA_RETIRE = 9
CA_JOIN = 12
CA_REVOKE = 13
CA_NODE_KEY = 14
CA_GOSSIP_KEYRING = 16


@dataclass(frozen=True, slots=True)
class GossipKeyringRow:
    keys: list[bytes]  # barrier ciphertexts
    primary: int  # index into keys
    version: int


@dataclass(frozen=True, slots=True)
class RootRow:
    gen: int
    cert: bytes
    key: bytes  # barrier ciphertext
    cross: bytes
    retire_after: float


def register(registry: CommandRegistry) -> None:
    registry.register(CA_INIT, "ca.init", apply_init)
    registry.register(CA_ROTATE, "ca.rotate", apply_rotate)
    registry.register(CA_RETIRE, "ca.retire", apply_retire)
    registry.register(CA_JOIN, "ca.join_secret", apply_join)
    registry.register(CA_REVOKE, "ca.revoke", apply_revoke)
    registry.register(CA_NODE_KEY, "ca.node_key", apply_node_key)
    registry.register(CA_GOSSIP_KEYRING, "ca.gossip_keyring", apply_gossip_keyring)


def _root(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise TypeError("root must be a map")
    if type(body.get("gen")) is not int or body["gen"] < 1:
        raise TypeError("root gen must be a positive int")
    for f in ("cert", "key", "cross"):
        if not isinstance(body.get(f), bytes):
            raise TypeError(f"root {f} must be bytes")
    return {
        "gen": body["gen"],
        "cert": body["cert"],
        "key": body["key"],
        "cross": body["cross"],
        "retire_after": 0.0,
    }


def _bytes(body: Any, field: str) -> bytes:
    if not isinstance(body, dict) or not isinstance(body.get(field), bytes):
        raise TypeError(f"{field} must be bytes")
    value: bytes = body[field]
    return value


def encode_init(
    registry: CommandRegistry, *, root: dict[str, Any], join_secret: bytes, gossip_key: bytes
) -> bytes:
    return registry.encode(CA_INIT, {"root": root, "join": join_secret, "gossip": gossip_key})


def encode_rotate(registry: CommandRegistry, *, root: dict[str, Any], retire_after: float) -> bytes:
    return registry.encode(CA_ROTATE, {"root": root, "retire_after": float(retire_after)})


def encode_retire(registry: CommandRegistry, gen: int) -> bytes:
    return registry.encode(CA_RETIRE, {"gen": gen})


def encode_join(registry: CommandRegistry, secret: bytes) -> bytes:
    return registry.encode(CA_JOIN, {"secret": secret})


def encode_revoke(registry: CommandRegistry, node_id: int) -> bytes:
    return registry.encode(CA_REVOKE, {"id": node_id})


def apply_init(ctx: ApplyContext, body: Any) -> WriteResult:
    table = ctx.store.table(CA_TABLE)
    if table.get("active") is not None:
        return WriteResult(False, ctx.index)
    root = _root(body.get("root") if isinstance(body, dict) else None)
    join, gossip = _bytes(body, "join"), _bytes(body, "gossip")
    table.put(f"root/{root['gen']:08d}", root, ctx.index)
    table.put("active", {"gen": root["gen"]}, ctx.index)
    table.put("join", {"secret": join, "version": 1}, ctx.index)
    table.put("gossip", {"key": gossip}, ctx.index)
    return WriteResult(True, ctx.index)


def apply_rotate(ctx: ApplyContext, body: Any) -> WriteResult:
    if not isinstance(body, dict) or not isinstance(body.get("retire_after"), float):
        raise TypeError("rotate needs a root and a float retire_after")
    root = _root(body.get("root"))
    table = ctx.store.table(CA_TABLE)
    active = table.get("active")
    if active is None or root["gen"] != int(active.value["gen"]) + 1:
        return WriteResult(False, ctx.index)
    old_key = f"root/{int(active.value['gen']):08d}"
    old = table.get(old_key)
    if old is not None:
        table.put(old_key, {**old.value, "retire_after": body["retire_after"]}, ctx.index)
    table.put(f"root/{root['gen']:08d}", root, ctx.index)
    table.put("active", {"gen": root["gen"]}, ctx.index)
    return WriteResult(True, ctx.index)


def apply_retire(ctx: ApplyContext, body: Any) -> WriteResult:
    if not isinstance(body, dict) or type(body.get("gen")) is not int:
        raise TypeError("retire needs an int gen")
    table = ctx.store.table(CA_TABLE)
    active = table.get("active")
    key = f"root/{body['gen']:08d}"
    if active is None or body["gen"] == int(active.value["gen"]) or table.get(key) is None:
        return WriteResult(False, ctx.index)
    table.delete(key, ctx.index)
    return WriteResult(True, ctx.index)


def apply_join(ctx: ApplyContext, body: Any) -> WriteResult:
    secret = _bytes(body, "secret")
    table = ctx.store.table(CA_TABLE)
    row = table.get("join")
    version = 1 if row is None else int(row.value["version"]) + 1
    table.put("join", {"secret": secret, "version": version}, ctx.index)
    return WriteResult(True, ctx.index)


def apply_revoke(ctx: ApplyContext, body: Any) -> WriteResult:
    if not isinstance(body, dict) or type(body.get("id")) is not int:
        raise TypeError("revoke needs an int id")
    ctx.store.table(CA_TABLE).put(f"revoked/{body['id']}", {"index": ctx.index}, ctx.index)
    return WriteResult(True, ctx.index)


def encode_node_key(registry: CommandRegistry, node_id: int, pub: bytes) -> bytes:
    return registry.encode(CA_NODE_KEY, {"id": node_id, "pub": pub})


def apply_node_key(ctx: ApplyContext, body: Any) -> WriteResult:
    if not isinstance(body, dict) or type(body.get("id")) is not int:
        raise TypeError("node key needs an int id")
    pub = _bytes(body, "pub")
    ctx.store.table(CA_TABLE).put(f"nodekey/{body['id']}", {"pub": pub}, ctx.index)
    return WriteResult(True, ctx.index)


# ---------------------------------------------------------------- reads


def node_key(store: StateStore, node_id: int) -> bytes | None:
    row = store.table(CA_TABLE).get(f"nodekey/{node_id}")
    return None if row is None else bytes(row.value["pub"])


def roots(store: StateStore) -> list[RootRow]:
    """Every root still trusted, oldest generation first."""
    return [
        RootRow(int(v["gen"]), v["cert"], v["key"], v["cross"], float(v["retire_after"]))
        for v in (r.value for r in store.table(CA_TABLE).scan("root/"))
    ]


def active_root(store: StateStore) -> RootRow | None:
    table = store.table(CA_TABLE)
    active = table.get("active")
    if active is None:
        return None
    gen = int(active.value["gen"])
    return next((r for r in roots(store) if r.gen == gen), None)


def join_secret(store: StateStore) -> bytes | None:
    row = store.table(CA_TABLE).get("join")
    return None if row is None else bytes(row.value["secret"])


def gossip_keyring(store: StateStore) -> GossipKeyringRow | None:
    row = store.table(CA_TABLE).get("gossip")
    if row is None:
        return None
    v = row.value
    keys = [bytes(k) for k in v.get("keys") or [v["key"]]]
    return GossipKeyringRow(keys, int(v.get("primary", 0)), int(v.get("version", 1)))


def encode_gossip_keyring(
    registry: CommandRegistry, *, keys: list[bytes], primary: int, version: int
) -> bytes:
    return registry.encode(
        CA_GOSSIP_KEYRING, {"keys": keys, "primary": primary, "version": version}
    )


def apply_gossip_keyring(ctx: ApplyContext, body: Any) -> WriteResult:
    if not isinstance(body, dict):
        raise TypeError("gossip keyring must be a map")
    keys, primary, version = body.get("keys"), body.get("primary"), body.get("version")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, bytes) for k in keys):
        raise TypeError("keys must be a non-empty list of bytes")
    if type(primary) is not int or not 0 <= primary < len(keys):
        raise TypeError("primary must index keys")
    if type(version) is not int:
        raise TypeError("version must be an int")
    current = gossip_keyring(ctx.store)
    if current is None or version != current.version + 1:
        return WriteResult(False, ctx.index)
    row = {"key": keys[primary], "keys": keys, "primary": primary, "version": version}
    ctx.store.table(CA_TABLE).put("gossip", row, ctx.index)
    return WriteResult(True, ctx.index)


def is_revoked(store: StateStore, node_id: int) -> bool:
    return store.table(CA_TABLE).get(f"revoked/{node_id}") is not None


def revoked(store: StateStore) -> list[int]:
    return [int(k.split("/", 1)[1]) for k in store.table(CA_TABLE).keys("revoked/")]
