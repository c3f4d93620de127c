"""The seal table: how the barrier's root key is split among the voters.

One row per seal epoch (key: zero-padded epoch). A new epoch is written by the
leader whenever the voter set changes (every change re-keys: a new root key,
new shares), so a removed server's share never combines with the new ones.
Everything in a row is public or encrypted:

  {"epoch": int, "threshold": int, "voters": [int],
   "shares": {str(node id): ECIES(node key, share)},   # none for a single voter
   "check": HMAC(root, const),                          # verifies a combined key
   "keyring": AES-GCM(root, keyring), "keyring_version": int,
   "prev": AES-GCM(previous root, this root) or b"",   # lets an unsealed node follow
   "recovery_pub": PEM, "recovery": ECIES(recovery key, root),
   "recovery_threshold": int, "recovery_shares": int}

SEAL_EPOCH (10) adds a row (ignored unless its epoch is the next one) and keeps
the last KEEP_EPOCHS rows, so a restarted server whose log lags one change
behind can still find shares of the epoch it knows. SEAL_KEYRING (11) replaces
the latest epoch's wrapped keyring (`stack operator rotate`).
"""

from __future__ import annotations

from typing import Any

from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.store import StateStore

SEAL_TABLE = "seal"
SEAL_EPOCH = 10
SEAL_KEYRING = 11
KEEP_EPOCHS = 3

_BYTES_FIELDS = ("check", "keyring", "prev", "recovery_pub", "recovery")
_INT_FIELDS = ("epoch", "threshold", "keyring_version", "recovery_threshold", "recovery_shares")


def register(registry: CommandRegistry) -> None:
    registry.register(SEAL_EPOCH, "seal.epoch", apply_epoch)
    registry.register(SEAL_KEYRING, "seal.keyring", apply_keyring)


def _key(epoch: int) -> str:
    return f"{epoch:016d}"


def validate_epoch(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise TypeError("seal epoch must be a map")
    for f in _INT_FIELDS:
        if type(body.get(f)) is not int or body[f] < 0:
            raise TypeError(f"seal epoch field {f} must be a non-negative int")
    for f in _BYTES_FIELDS:
        if not isinstance(body.get(f), bytes):
            raise TypeError(f"seal epoch field {f} must be bytes")
    voters, shares = body.get("voters"), body.get("shares")
    if not isinstance(voters, list) or not all(type(v) is int for v in voters):
        raise TypeError("voters must be a list of ints")
    if not isinstance(shares, dict) or not all(
        isinstance(k, str) and isinstance(v, bytes) for k, v in shares.items()
    ):
        raise TypeError("shares must map node ids to bytes")
    if not 1 <= body["threshold"] <= max(len(voters), 1):
        raise TypeError("threshold out of range")
    return {f: body[f] for f in (*_INT_FIELDS, *_BYTES_FIELDS, "voters", "shares")}


def encode_epoch(registry: CommandRegistry, row: dict[str, Any]) -> bytes:
    return registry.encode(SEAL_EPOCH, validate_epoch(row))


def encode_keyring(registry: CommandRegistry, *, epoch: int, keyring: bytes, version: int) -> bytes:
    return registry.encode(SEAL_KEYRING, {"epoch": epoch, "keyring": keyring, "version": version})


def apply_epoch(ctx: ApplyContext, body: Any) -> WriteResult:
    row = validate_epoch(body)
    table = ctx.store.table(SEAL_TABLE)
    latest = latest_epoch(ctx.store)
    current = 0 if latest is None else int(latest["epoch"])
    if row["epoch"] != current + 1:
        return WriteResult(False, ctx.index)  # a stale or duplicate re-key
    table.put(_key(row["epoch"]), row, ctx.index)
    for old in table.keys()[:-KEEP_EPOCHS]:
        table.delete(old, ctx.index)
    return WriteResult(True, ctx.index)


def apply_keyring(ctx: ApplyContext, body: Any) -> WriteResult:
    if not isinstance(body, dict) or not isinstance(body.get("keyring"), bytes):
        raise TypeError("seal keyring body must carry bytes")
    epoch, version = body.get("epoch"), body.get("version")
    if type(epoch) is not int or type(version) is not int:
        raise TypeError("seal keyring epoch and version must be ints")
    table = ctx.store.table(SEAL_TABLE)
    found = table.get(_key(epoch))
    if found is None or version <= int(found.value["keyring_version"]):
        return WriteResult(False, ctx.index)
    row = dict(found.value)
    row["keyring"], row["keyring_version"] = body["keyring"], version
    table.put(_key(epoch), row, ctx.index)
    return WriteResult(True, ctx.index)


def epochs(store: StateStore) -> list[dict[str, Any]]:
    """The kept epochs, oldest first."""
    return [dict(r.value) for r in store.table(SEAL_TABLE).scan()]


def latest_epoch(store: StateStore) -> dict[str, Any] | None:
    rows = store.table(SEAL_TABLE).scan()
    return dict(rows[-1].value) if rows else None
