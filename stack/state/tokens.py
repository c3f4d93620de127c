"""API tokens, stored only as SHA-256 hashes of their secrets, and their indexes.

Tables (every key and value is plain msgpack data):
  acl_tokens           secret hash -> token row (fields and defaults: `ROW_DEFAULTS`)
  acl_token_accessors  accessor -> secret hash
  acl_token_children   "<parent accessor>/<child accessor>" -> True, so revoking a
                       tree reads only the tree
  acl_token_expiry     "<expire second, 12 digits>/<accessor>" -> secret hash, so
                       the expiry sweep reads only what is due

TOKEN_SET (5) writes the bootstrap root token ({"accessor": "root", "policies":
["root"]}); rows it writes keep only those two fields, the rest read as the
defaults of a bootstrap token (no parent, no expiry, not renewable). The token
lifecycle commands (create, renew, revoke, use, expire) are in `acl.py`; they and
TOKEN_SET keep the three index tables in step through `put_token` and
`delete_token`.
"""

from __future__ import annotations

import functools
import hashlib
import math
import secrets
from collections.abc import Iterator
from typing import Any

from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.store import StateStore

TOKEN_SET = 5
TOKENS_TABLE = "acl_tokens"
ACCESSORS_TABLE = "acl_token_accessors"
CHILDREN_TABLE = "acl_token_children"
EXPIRY_TABLE = "acl_token_expiry"

# What a row without the field means: the bootstrap token's values, since only
# TOKEN_SET writes partial rows. `orphan` is derived from `parent` when absent.
ROW_DEFAULTS: dict[str, Any] = {
    "accessor": "",
    "policies": [],
    "parent": "",
    "display_name": "root",
    "meta": {},
    "creation_time": 0.0,
    "ttl": 0,
    "expire_time": 0.0,
    "explicit_max_ttl": 0,
    "period": 0,
    "num_uses": 0,
    "renewable": False,
    "role": "",
    "type": "service",
    "path": "auth/token/root",
}
_SECOND_DIGITS = 12  # expiry keys sort as strings up to the year 33658


def new_secret() -> str:
    return "st." + secrets.token_urlsafe(32)


@functools.lru_cache(maxsize=1024)
def hash_secret(secret: str) -> str:
    # surrogateescape: a header's undecodable bytes (aiohttp keeps them as lone
    # surrogates) hash to an unknown token instead of raising.
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def register(registry: CommandRegistry) -> None:
    registry.register(TOKEN_SET, "acl.token_set", apply_token_set)


def encode_token_set(
    registry: CommandRegistry, *, secret_hash: str, accessor: str, policies: list[str]
) -> bytes:
    return registry.encode(
        TOKEN_SET, {"hash": secret_hash, "accessor": accessor, "policies": policies}
    )


def apply_token_set(ctx: ApplyContext, body: Any) -> WriteResult:
    if not isinstance(body, dict) or not isinstance(body.get("hash"), str):
        raise TypeError("token body must be a map with a string hash")
    policies = body.get("policies")
    if not isinstance(policies, list) or not all(isinstance(p, str) for p in policies):
        raise TypeError("policies must be a list of strings")
    row = {"accessor": str(body.get("accessor", "")), "policies": policies}
    put_token(ctx.store, body["hash"], row, ctx.index)
    return WriteResult(True, ctx.index)


def lookup(store: StateStore, secret: str) -> dict[str, Any] | None:
    """The token row for `secret` with every field (defaults filled in), or None.
    Does not check expiry: `acl.lookup_secret` does, given the time."""
    row = store.table(TOKENS_TABLE).get(hash_secret(secret))
    return None if row is None else full_row(row.value)


def has_any(store: StateStore) -> bool:
    return len(store.table(TOKENS_TABLE)) > 0


# -- the row format and its indexes (apply functions only write through these)


def full_row(value: dict[str, Any]) -> dict[str, Any]:
    """A stored row with the missing fields filled in (a fresh dict)."""
    row = {**ROW_DEFAULTS, **value}
    row.setdefault("orphan", row["parent"] == "")
    row["policies"], row["meta"] = list(row["policies"]), dict(row["meta"])  # never shared
    return row


def hash_of(store: StateStore, accessor: str) -> str | None:
    row = store.table(ACCESSORS_TABLE).get(accessor)
    return None if row is None else str(row.value)


def child_accessors(store: StateStore, accessor: str) -> list[str]:
    """Accessors of the token's children, sorted."""
    prefix = accessor + "/"
    return [key[len(prefix) :] for key in store.table(CHILDREN_TABLE).keys(prefix)]


def by_accessor(store: StateStore, accessor: str) -> tuple[str, dict[str, Any]] | None:
    """(secret hash, full row) of the token with this accessor, or None."""
    secret_hash = hash_of(store, accessor)
    return (
        None if secret_hash is None else (secret_hash, _indexed_row(store, secret_hash, accessor))
    )


def _expiry_key(expire_time: float, accessor: str) -> str:
    return f"{math.floor(expire_time):0{_SECOND_DIGITS}d}/{accessor}"


def put_token(store: StateStore, secret_hash: str, value: dict[str, Any], index: int) -> None:
    """Write a token row and move its accessor, parent link and expiry entries to
    match (dropping the ones its previous version had)."""
    tokens = store.table(TOKENS_TABLE)
    accessors = store.table(ACCESSORS_TABLE)
    links = store.table(CHILDREN_TABLE)
    expiry = store.table(EXPIRY_TABLE)
    new = full_row(value)
    found = tokens.get(secret_hash)
    if found is not None:
        old = full_row(found.value)
        moved = old["accessor"] and old["accessor"] != new["accessor"]
        if moved and hash_of(store, old["accessor"]) == secret_hash:
            accessors.delete(old["accessor"], index)
        if old["parent"] and old["parent"] != new["parent"]:
            links.delete(f"{old['parent']}/{old['accessor']}", index)
        if old["expire_time"] and old["expire_time"] != new["expire_time"]:
            expiry.delete(_expiry_key(old["expire_time"], old["accessor"]), index)
    tokens.put(secret_hash, value, index)
    if new["accessor"] and hash_of(store, new["accessor"]) != secret_hash:
        accessors.put(new["accessor"], secret_hash, index)
    if new["parent"]:
        key = f"{new['parent']}/{new['accessor']}"
        if key not in links:
            links.put(key, True, index)
    if new["expire_time"]:
        key = _expiry_key(new["expire_time"], new["accessor"])
        if key not in expiry:
            expiry.put(key, secret_hash, index)


def delete_token(store: StateStore, secret_hash: str, index: int) -> dict[str, Any]:
    """Delete a token row and its index entries; returns the full row. Its
    children's links are the caller's to settle first (revoke or orphan them)."""
    found = store.table(TOKENS_TABLE).delete(secret_hash, index)
    if found is None:
        raise KeyError(f"no token row {secret_hash[:12]}... to delete")
    row = full_row(found.value)
    accessor = row["accessor"]
    if accessor and hash_of(store, accessor) == secret_hash:
        store.table(ACCESSORS_TABLE).delete(accessor, index)
    if row["parent"]:
        store.table(CHILDREN_TABLE).delete(f"{row['parent']}/{accessor}", index)
    if row["expire_time"]:
        store.table(EXPIRY_TABLE).delete(_expiry_key(row["expire_time"], accessor), index)
    return row


def _indexed_row(store: StateStore, secret_hash: str, where: str) -> dict[str, Any]:
    found = store.table(TOKENS_TABLE).get(secret_hash)
    if found is None:
        raise KeyError(f"{where} names a missing token row {secret_hash[:12]}...")
    return full_row(found.value)


def due(store: StateStore, now: float) -> Iterator[tuple[str, str]]:
    """(accessor, secret hash) of every token with expire_time <= now, earliest
    second first, then by accessor. Safe to delete tokens while iterating."""
    expiry = store.table(EXPIRY_TABLE)
    for key in expiry.keys(""):  # a copy: the sweep deletes as it goes
        if int(key[:_SECOND_DIGITS]) > now:
            return
        entry = expiry.get(key)
        if entry is None:
            continue  # revoked earlier in this sweep, with its parent
        row = _indexed_row(store, entry.value, "expiry index")
        if row["expire_time"] <= now:
            yield row["accessor"], entry.value


def next_expiry(store: StateStore) -> float | None:
    """The earliest expire_time of any token (None if none expires): the leader
    proposes an expiry sweep once it has passed."""
    expiry = store.table(EXPIRY_TABLE)
    first = expiry.first_key()
    if first is None:
        return None
    # Keys sort by whole second, then accessor: the earliest is within that second.
    second = first[:_SECOND_DIGITS]
    rows = [_indexed_row(store, entry.value, "expiry index") for entry in expiry.scan(second)]
    return min(float(row["expire_time"]) for row in rows)


def revoke_tree(store: StateStore, accessor: str, index: int) -> list[str]:
    """Delete a token and its descendants, depth first, children (by accessor)
    before their parent; returns the accessors in that order."""
    order: list[str] = []
    seen: set[str] = set()
    stack = [(accessor, False)]
    while stack:  # iterative: a long chain of children must not hit the recursion limit
        current, expanded = stack.pop()
        if expanded:
            order.append(current)
            continue
        if current in seen:
            raise ValueError(f"token tree under {accessor} has a cycle at {current}")
        seen.add(current)
        stack.append((current, True))
        stack.extend((child, False) for child in reversed(child_accessors(store, current)))
    for current in order:
        secret_hash = hash_of(store, current)
        if secret_hash is None:
            raise KeyError(f"a child link names a missing token {current}")
        delete_token(store, secret_hash, index)
    return order


def orphan_children(store: StateStore, accessor: str, index: int) -> list[str]:
    """Make the token's children orphans (no parent); returns their accessors."""
    orphaned = child_accessors(store, accessor)
    for child in orphaned:
        found = by_accessor(store, child)
        if found is None:
            raise KeyError(f"a child link names a missing token {child}")
        put_token(store, found[0], {**found[1], "parent": "", "orphan": True}, index)
    return orphaned
