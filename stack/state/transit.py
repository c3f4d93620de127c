"""Vault's transit engine: the replicated key state (commands 150-154).

A transit key is a named, versioned keyring. This module never sees key material in
the clear: each version's material (private key and HMAC key) arrives as barrier
ciphertext made by the engine (`stack/vault/transit_backend.py`), next to the public
key of an asymmetric version, which is not secret. Times are unix seconds chosen by
the leader and carried in the body (`now`).

Commands (numbers are permanent, see docs/state.md):
  TRANSIT_KEY_CREATE (150) {"mount", "name", "type", "now", "ct", "public_key",
                           "derived", "convergent", "exportable",
                           "allow_plaintext_backup", "auto_rotate_period", "key_size"}
  TRANSIT_KEY_ROTATE (151) {"mount", "name", "version", "now", "ct", "public_key"}:
                           appends `version`, which must be latest + 1 (the barrier
                           ciphertext is bound to its version number)
  TRANSIT_KEY_CONFIG (152) {"mount", "name", "now"} plus any of "min_decryption_version",
                           "min_encryption_version", "deletion_allowed", "exportable",
                           "allow_plaintext_backup", "auto_rotate_period"
  TRANSIT_KEY_DELETE (153) {"mount", "name"}: refused unless deletion_allowed
  TRANSIT_KEY_TRIM (154)   {"mount", "name", "min_available_version"}: drops older versions

Tables (keys as in secrets.py: mount + NUL + name; names never contain NUL):
  transit_keys          key -> {"type", "derived", "convergent", "exportable",
                        "allow_plaintext_backup", "deletion_allowed",
                        "min_decryption_version", "min_encryption_version",
                        "min_available_version", "latest_version",
                        "auto_rotate_period", "key_size", "created", "updated"}
  transit_key_versions  key + NUL + "%010d" -> {"ct", "created", "public_key"}

The mount must exist in `secrets_mounts` with type "transit"; disabling a mount must
drop its keys too (`purge_mount`, called by `secrets.apply_mount_disable`).

The rules for what a key may look like (`check_create`, `apply_config`, `check_trim`)
are Vault's, with its messages; the engine runs the same functions first to answer
400 without the log, and apply runs them again because the key may have changed in
between. A body of the wrong shape or type is a bug and raises TypeError; every value
a user controls is refused with `WriteResult(False, index, {"error", "reason"})`.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.fields import as_body as _body
from stack.state.fields import get_bool as _bool
from stack.state.fields import get_bytes as _bytes
from stack.state.fields import get_int as _int
from stack.state.fields import get_seconds as _seconds
from stack.state.fields import get_str as _str
from stack.state.secrets import MOUNTS_TABLE, SEP
from stack.state.store import Row, StateStore

KEYS_TABLE = "transit_keys"
VERSIONS_TABLE = "transit_key_versions"

TRANSIT_KEY_CREATE = 150
TRANSIT_KEY_ROTATE = 151
TRANSIT_KEY_CONFIG = 152
TRANSIT_KEY_DELETE = 153
TRANSIT_KEY_TRIM = 154

MOUNT_TYPE = "transit"
SYMMETRIC_TYPES = ("aes128-gcm96", "aes256-gcm96", "chacha20-poly1305")
ASYMMETRIC_TYPES = ("ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519")
KEY_TYPES = (*SYMMETRIC_TYPES, *ASYMMETRIC_TYPES, "hmac")
# Vault types stack does not implement: named so the refusal says so.
UNSUPPORTED_TYPES = ("rsa-2048", "rsa-3072", "rsa-4096", "managed_key", "aes128-cmac",
                     "aes256-cmac", "ml-dsa", "hybrid")  # fmt: skip
DERIVABLE_TYPES = (*SYMMETRIC_TYPES, "ed25519")
HMAC_MIN_KEY_SIZE = 32
HMAC_MAX_KEY_SIZE = 512
HMAC_DEFAULT_KEY_SIZE = 32
MIN_AUTO_ROTATE = 3600.0
MAX_AUTO_ROTATE = float(2**32)
MAX_VERSION = 2**31 - 1
MAX_CT_BYTES = 16 * 1024  # a version's sealed material: an EC scalar or 512-byte HMAC key
MAX_PUBLIC_KEY_CHARS = 4096
NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
CONFIG_FIELDS = ("min_decryption_version", "min_encryption_version", "deletion_allowed",
                 "exportable", "allow_plaintext_backup", "auto_rotate_period")  # fmt: skip


class Refusal(enum.StrEnum):
    """`data["reason"]` of a refused write, for the engine to pick a status code."""

    NO_MOUNT = "no_mount"
    NOT_FOUND = "not_found"
    EXISTS = "exists"
    INVALID_NAME = "invalid_name"
    INVALID = "invalid"
    CONFLICT = "conflict"  # a rotate raced another: re-read and retry
    DELETION_NOT_ALLOWED = "deletion_not_allowed"
    TOO_LARGE = "too_large"


def register(registry: CommandRegistry) -> None:
    registry.register(TRANSIT_KEY_CREATE, "transit.key_create", apply_key_create)
    registry.register(TRANSIT_KEY_ROTATE, "transit.key_rotate", apply_key_rotate)
    registry.register(TRANSIT_KEY_CONFIG, "transit.key_config", apply_key_config)
    registry.register(TRANSIT_KEY_DELETE, "transit.key_delete", apply_key_delete)
    registry.register(TRANSIT_KEY_TRIM, "transit.key_trim", apply_key_trim)


# -- validation (the engine calls these before proposing; apply refuses the same)


def validate_name(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"key name must be str, not {type(name).__name__}")
    if not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"invalid key name {name!r}: 1 to 128 of the characters A-Z a-z 0-9 _ . -")


def check_type(key_type: str) -> None:
    """Vault's message for an unknown type; a clear one for Vault types stack lacks."""
    if key_type in KEY_TYPES:
        return
    if key_type in UNSUPPORTED_TYPES:
        raise ValueError(f"key type {key_type} is not supported by stack's transit engine")
    raise ValueError(f"unknown key type {key_type}")


def check_auto_rotate_period(seconds: float) -> None:
    if not (seconds == 0 or MIN_AUTO_ROTATE <= seconds <= MAX_AUTO_ROTATE):  # refuses nan too
        raise ValueError("auto rotate period must be 0 to disable or at least an hour")


def check_create(
    key_type: str,
    *,
    derived: bool,
    convergent: bool,
    auto_rotate_period: float,
    key_size: int,
) -> None:
    """Raise ValueError unless these make a key (Vault's order and messages).
    `key_size` is the stored size: 32..512 for hmac, 0 for every other type."""
    check_auto_rotate_period(auto_rotate_period)
    if convergent and not derived:
        raise ValueError("convergent encryption requires derivation to be enabled")
    check_type(key_type)
    if derived and key_type not in DERIVABLE_TYPES:
        raise ValueError(f"key derivation and convergent encryption not supported for keys "
                         f"of type {key_type}")  # fmt: skip
    if convergent and key_type not in SYMMETRIC_TYPES:
        raise ValueError(f"convergent encryption not supported for keys of type {key_type}")
    if key_type == "hmac":
        if not HMAC_MIN_KEY_SIZE <= key_size <= HMAC_MAX_KEY_SIZE:
            raise ValueError(f"invalid key_size {key_size}")
    elif key_size != 0:
        raise ValueError(f"key_size is not valid for algorithm {key_type}")


def check_public_key(key_type: str, public_key: str) -> None:
    if len(public_key) > MAX_PUBLIC_KEY_CHARS:
        raise ValueError(f"public key is longer than {MAX_PUBLIC_KEY_CHARS} characters")
    if key_type in ASYMMETRIC_TYPES and not public_key:
        raise ValueError(f"a {key_type} key version needs its public key")
    if key_type not in ASYMMETRIC_TYPES and public_key:
        raise ValueError(f"a {key_type} key version has no public key")


def check_ct(ct: bytes) -> None:
    if not ct:
        raise ValueError("key material ciphertext is empty")
    if len(ct) > MAX_CT_BYTES:
        raise ValueError(f"key material ciphertext is {len(ct)} bytes, over {MAX_CT_BYTES}")


def apply_config(key: dict[str, Any], changes: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The key row (`KEYS_TABLE` shape) after Vault's `keys/<name>/config` with the
    given fields, and its warnings; raises ValueError with Vault's message when Vault
    refuses. exportable and allow_plaintext_backup cannot be turned off once on: Vault
    ignores such a request silently, here it is kept on with a warning."""
    new = dict(key)
    warnings: list[str] = []
    latest: int = key["latest_version"]
    if "min_decryption_version" in changes:
        value = changes["min_decryption_version"]
        if value < 0:
            raise ValueError("min decryption version cannot be negative")
        if value == 0:
            value = 1
            warnings.append(
                "since Vault 0.3, transit key numbering starts at 1; forcing minimum to 1"
            )
        if value != key["min_decryption_version"] and value > latest:
            raise ValueError(
                f"cannot set min decryption version of {value}, latest key version is {latest}"
            )
        new["min_decryption_version"] = value
    if "min_encryption_version" in changes:
        value = changes["min_encryption_version"]
        if value < 0:
            raise ValueError("min encryption version cannot be negative")
        if value != key["min_encryption_version"] and value > latest:
            raise ValueError(
                f"cannot set min encryption version of {value}, latest key version is {latest}"
            )
        new["min_encryption_version"] = value
    min_enc, min_dec = new["min_encryption_version"], new["min_decryption_version"]
    if 0 < min_enc < min_dec:
        raise ValueError(
            f"cannot set min encryption/decryption values; min encryption version of "
            f"{min_enc} must be greater than or equal to min decryption version of {min_dec}"
        )
    if "deletion_allowed" in changes:
        new["deletion_allowed"] = changes["deletion_allowed"]
    for flag in ("exportable", "allow_plaintext_backup"):
        if flag in changes:
            if changes[flag]:
                new[flag] = True
            elif key[flag]:
                warnings.append(f"{flag} cannot be disabled once enabled; it stays true")
    if "auto_rotate_period" in changes:
        check_auto_rotate_period(changes["auto_rotate_period"])
        new["auto_rotate_period"] = float(changes["auto_rotate_period"])
    if new != key:
        if new["min_available_version"] > new["min_encryption_version"]:
            raise ValueError("min encryption version should not be less than min available version")
        if new["min_available_version"] > new["min_decryption_version"]:
            raise ValueError("min decryption version should not be less then min available version")
    return new, warnings


def check_trim(key: dict[str, Any], min_available: int) -> None:
    """Vault's `keys/<name>/trim` rules (and its messages, typos included)."""
    if min_available < key["min_available_version"]:
        raise ValueError("minimum available version cannot be decremented")
    if key["min_encryption_version"] == 0:
        raise ValueError(
            "minimum available version cannot be set when minimum encryption version is not set"
        )
    if key["min_decryption_version"] == 0:
        raise ValueError(
            "minimum available version cannot be set when minimum decryption version is not set"
        )
    if min_available > key["min_encryption_version"]:
        raise ValueError(
            "minimum available version cannot be greater than minmum encryption version"
        )
    if min_available > key["min_decryption_version"]:
        raise ValueError(
            "minimum available version cannot be greater than minimum decryption version"
        )
    if min_available < 0:
        raise ValueError("minimum available version cannot be negative")
    if min_available == 0:
        raise ValueError("minimum available version should be positive")


# -- command builders (the leader encodes, every replica applies)


def encode_key_create(
    registry: CommandRegistry,
    mount: str,
    name: str,
    key_type: str,
    ct: bytes,
    *,
    now: float,
    public_key: str = "",
    derived: bool = False,
    convergent: bool = False,
    exportable: bool = False,
    allow_plaintext_backup: bool = False,
    auto_rotate_period: float = 0.0,
    key_size: int = 0,
) -> bytes:
    body = {
        "mount": mount,
        "name": name,
        "type": key_type,
        "now": float(now),
        "ct": ct,
        "public_key": public_key,
        "derived": derived,
        "convergent": convergent,
        "exportable": exportable,
        "allow_plaintext_backup": allow_plaintext_backup,
        "auto_rotate_period": float(auto_rotate_period),
        "key_size": key_size,
    }
    return registry.encode(TRANSIT_KEY_CREATE, body)


def encode_key_rotate(
    registry: CommandRegistry,
    mount: str,
    name: str,
    version: int,
    ct: bytes,
    *,
    now: float,
    public_key: str = "",
) -> bytes:
    body = {"mount": mount, "name": name, "version": version, "now": float(now), "ct": ct,
            "public_key": public_key}  # fmt: skip
    return registry.encode(TRANSIT_KEY_ROTATE, body)


def encode_key_config(
    registry: CommandRegistry, mount: str, name: str, *, now: float, **changes: Any
) -> bytes:
    """Only the fields given change (Vault's POST keys/<name>/config)."""
    unknown = sorted(set(changes) - set(CONFIG_FIELDS))
    if unknown:
        raise TypeError(f"unknown transit key config fields: {unknown}")
    body: dict[str, Any] = {"mount": mount, "name": name, "now": float(now), **changes}
    if "auto_rotate_period" in body:
        body["auto_rotate_period"] = float(body["auto_rotate_period"])
    return registry.encode(TRANSIT_KEY_CONFIG, body)


def encode_key_delete(registry: CommandRegistry, mount: str, name: str) -> bytes:
    return registry.encode(TRANSIT_KEY_DELETE, {"mount": mount, "name": name})


def encode_key_trim(registry: CommandRegistry, mount: str, name: str, min_available: int) -> bytes:
    body = {"mount": mount, "name": name, "min_available_version": min_available}
    return registry.encode(TRANSIT_KEY_TRIM, body)


# -- refusals, keys and rows


def _problem(check: Callable[[], None]) -> str | None:
    """The ValueError message of `check()`, None if it passes (TypeError passes through)."""
    try:
        check()
    except ValueError as exc:
        return str(exc)
    return None


def _refuse(ctx: ApplyContext, reason: Refusal, error: str) -> WriteResult:
    return WriteResult(False, ctx.index, {"error": error, "reason": reason.value})


def _key(mount: str, name: str) -> str:
    return mount + SEP + name


def _version_key(key: str, version: int) -> str:
    return f"{key}{SEP}{version:010d}"


def _version_number(row_key: str) -> int:
    return int(row_key.rsplit(SEP, 1)[1])


def _is_transit_mount(store: StateStore, mount: str) -> bool:
    row = store.table(MOUNTS_TABLE).get(mount)
    return row is not None and row.value.get("type") == MOUNT_TYPE


def _target(ctx: ApplyContext, body: dict[str, Any]) -> tuple[str, WriteResult | None]:
    """The key's table key, or a refusal for a missing mount or a bad name."""
    mount, name = _str(body, "mount"), _str(body, "name")
    if not _is_transit_mount(ctx.store, mount):
        error = f"no transit secrets engine is mounted at {mount!r}"
        return "", _refuse(ctx, Refusal.NO_MOUNT, error)
    if (problem := _problem(lambda: validate_name(name))) is not None:
        return "", _refuse(ctx, Refusal.INVALID_NAME, problem)
    return _key(mount, name), None


def _existing(ctx: ApplyContext, body: dict[str, Any]) -> tuple[str, Row | WriteResult]:
    key, refused = _target(ctx, body)
    if refused is not None:
        return key, refused
    row = ctx.store.table(KEYS_TABLE).get(key)
    if row is None:
        name = body["name"]
        return key, _refuse(ctx, Refusal.NOT_FOUND, f"no existing key named {name} could be found")
    return key, row


def _version_row(
    ctx: ApplyContext, key_type: str, ct: bytes, public_key: str, now: float
) -> dict[str, Any] | WriteResult:
    if (problem := _problem(lambda: check_ct(ct))) is not None:
        return _refuse(ctx, Refusal.TOO_LARGE if ct else Refusal.INVALID, problem)
    if (problem := _problem(lambda: check_public_key(key_type, public_key))) is not None:
        return _refuse(ctx, Refusal.INVALID, problem)
    return {"ct": ct, "created": now, "public_key": public_key}


# -- apply


def apply_key_create(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    key_type, ct, public_key = _str(body, "type"), _bytes(body, "ct"), _str(body, "public_key")
    now = _seconds(body, "now")
    derived, convergent = _bool(body, "derived"), _bool(body, "convergent")
    exportable = _bool(body, "exportable")
    allow_plaintext_backup = _bool(body, "allow_plaintext_backup")
    period, key_size = _seconds(body, "auto_rotate_period"), _int(body, "key_size")
    key, refused = _target(ctx, body)
    if refused is not None:
        return refused

    def check() -> None:
        check_create(
            key_type,
            derived=derived,
            convergent=convergent,
            auto_rotate_period=period,
            key_size=key_size,
        )

    if (problem := _problem(check)) is not None:
        return _refuse(ctx, Refusal.INVALID, problem)
    keys = ctx.store.table(KEYS_TABLE)
    if key in keys:
        return _refuse(ctx, Refusal.EXISTS, f"key {body['name']} already existed")
    version = _version_row(ctx, key_type, ct, public_key, now)
    if isinstance(version, WriteResult):
        return version
    row = {
        "type": key_type,
        "derived": derived,
        "convergent": convergent,
        "exportable": exportable,
        "allow_plaintext_backup": allow_plaintext_backup,
        "deletion_allowed": False,
        "min_decryption_version": 1,
        "min_encryption_version": 0,
        "min_available_version": 0,
        "latest_version": 1,
        "auto_rotate_period": period,
        "key_size": key_size,
        "created": now,
        "updated": now,
    }
    keys.put(key, row, ctx.index)
    ctx.store.table(VERSIONS_TABLE).put(_version_key(key, 1), version, ctx.index)
    return WriteResult(True, ctx.index, {"latest_version": 1})


def apply_key_rotate(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    number, ct, public_key = _int(body, "version"), _bytes(body, "ct"), _str(body, "public_key")
    now = _seconds(body, "now")
    key, found = _existing(ctx, body)
    if isinstance(found, WriteResult):
        return found
    row: dict[str, Any] = found.value
    latest: int = row["latest_version"]
    if latest >= MAX_VERSION:
        return _refuse(ctx, Refusal.INVALID, f"key version {latest} is the last one allowed")
    if number != latest + 1:
        error = f"key version {number} does not follow the latest version {latest}; retry"
        return _refuse(ctx, Refusal.CONFLICT, error)
    version = _version_row(ctx, row["type"], ct, public_key, now)
    if isinstance(version, WriteResult):
        return version
    ctx.store.table(VERSIONS_TABLE).put(_version_key(key, number), version, ctx.index)
    ctx.store.table(KEYS_TABLE).put(
        key, {**row, "latest_version": number, "updated": now}, ctx.index
    )
    return WriteResult(True, ctx.index, {"latest_version": number})


def _config_changes(body: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name in ("min_decryption_version", "min_encryption_version"):
        if name in body:
            changes[name] = _int(body, name)
    for name in ("deletion_allowed", "exportable", "allow_plaintext_backup"):
        if name in body:
            changes[name] = _bool(body, name)
    if "auto_rotate_period" in body:
        changes["auto_rotate_period"] = _seconds(body, "auto_rotate_period")
    return changes


def apply_key_config(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    now = _seconds(body, "now")
    changes = _config_changes(body)
    key, found = _existing(ctx, body)
    if isinstance(found, WriteResult):
        return found
    try:
        new, warnings = apply_config(found.value, changes)
    except ValueError as exc:
        return _refuse(ctx, Refusal.INVALID, str(exc))
    if new != found.value:
        ctx.store.table(KEYS_TABLE).put(key, {**new, "updated": now}, ctx.index)
    return WriteResult(True, ctx.index, {"warnings": warnings})


def apply_key_delete(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    key, refused = _target(ctx, body)
    if refused is not None:
        return refused
    keys = ctx.store.table(KEYS_TABLE)
    row = keys.get(key)
    name = body["name"]
    if row is None:
        return _refuse(ctx, Refusal.NOT_FOUND, "could not delete policy; not found")
    if not row.value["deletion_allowed"]:
        error = f"error deleting policy {name}: deletion is not allowed for this policy"
        return _refuse(ctx, Refusal.DELETION_NOT_ALLOWED, error)
    removed = ctx.store.table(VERSIONS_TABLE).delete_prefix(key + SEP, ctx.index)
    keys.delete(key, ctx.index)
    return WriteResult(True, ctx.index, {"versions_removed": len(removed)})


def apply_key_trim(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    min_available = _int(body, "min_available_version")
    key, found = _existing(ctx, body)
    if isinstance(found, WriteResult):
        return found
    row: dict[str, Any] = found.value
    if (problem := _problem(lambda: check_trim(row, min_available))) is not None:
        return _refuse(ctx, Refusal.INVALID, problem)
    versions = ctx.store.table(VERSIONS_TABLE)
    trimmed = [
        old.key for old in versions.scan(key + SEP) if _version_number(old.key) < min_available
    ]
    for old_key in trimmed:
        versions.delete(old_key, ctx.index)
    if min_available != row["min_available_version"]:
        new_row = {**row, "min_available_version": min_available}
        ctx.store.table(KEYS_TABLE).put(key, new_row, ctx.index)
    return WriteResult(True, ctx.index, {"versions_removed": len(trimmed)})


def purge_mount(ctx: ApplyContext, mount: str) -> int:
    """Drop every key of `mount` (for `secrets.apply_mount_disable`); rows removed."""
    removed = len(ctx.store.table(VERSIONS_TABLE).delete_prefix(mount + SEP, ctx.index))
    removed += len(ctx.store.table(KEYS_TABLE).delete_prefix(mount + SEP, ctx.index))
    return removed


# -- reads (any replica that holds the state; pure functions of the store)


@dataclass(frozen=True, slots=True)
class TransitMount:
    path: str  # ends with "/"
    accessor: str


@dataclass(frozen=True, slots=True)
class VersionRecord:
    version: int
    ct: bytes  # barrier ciphertext of the material
    created: float
    public_key: str  # "" for symmetric and hmac keys


@dataclass(frozen=True, slots=True)
class KeyRecord:
    mount: str
    name: str
    type: str
    derived: bool
    convergent: bool
    exportable: bool
    allow_plaintext_backup: bool
    deletion_allowed: bool
    min_decryption_version: int
    min_encryption_version: int
    min_available_version: int
    latest_version: int
    auto_rotate_period: float
    key_size: int
    created: float
    updated: float
    versions: dict[int, VersionRecord]  # ascending; every version not trimmed
    modify_index: int


def find_mount(store: StateStore, request_path: str) -> TransitMount | None:
    """The transit mount serving `request_path` ("transit/encrypt/k" -> "transit/")."""
    mounts = store.table(MOUNTS_TABLE)
    candidates = [request_path[: at + 1] for at, c in enumerate(request_path) if c == "/"]
    candidates.append(request_path + "/")
    for path in sorted(candidates, key=len, reverse=True):
        row = mounts.get(path)
        if row is not None:
            if row.value.get("type") != MOUNT_TYPE:
                return None
            return TransitMount(path, str(row.value["accessor"]))
    return None


def key_exists(store: StateStore, mount: str, name: str) -> bool:
    """Whether the key is there, without building its record (asked per request)."""
    return _key(mount, name) in store.table(KEYS_TABLE)


def get_key(store: StateStore, mount: str, name: str) -> KeyRecord | None:
    key = _key(mount, name)
    row = store.table(KEYS_TABLE).get(key)
    if row is None:
        return None
    v = row.value
    versions = {
        (n := _version_number(r.key)): VersionRecord(
            n, bytes(r.value["ct"]), float(r.value["created"]), str(r.value["public_key"])
        )
        for r in store.table(VERSIONS_TABLE).scan(key + SEP)
    }
    return KeyRecord(
        mount,
        name,
        str(v["type"]),
        bool(v["derived"]),
        bool(v["convergent"]),
        bool(v["exportable"]),
        bool(v["allow_plaintext_backup"]),
        bool(v["deletion_allowed"]),
        int(v["min_decryption_version"]),
        int(v["min_encryption_version"]),
        int(v["min_available_version"]),
        int(v["latest_version"]),
        float(v["auto_rotate_period"]),
        int(v["key_size"]),
        float(v["created"]),
        float(v["updated"]),
        versions,
        row.modify_index,
    )


def list_keys(store: StateStore, mount: str) -> list[str]:
    prefix = mount + SEP
    return [k[len(prefix) :] for k in store.table(KEYS_TABLE).keys(prefix)]


def rotation_due(store: StateStore, now: float) -> list[tuple[str, str]]:
    """(mount, name) of every key whose auto_rotate_period has passed since its
    latest version was made: the leader rotates these, as Vault's periodic func."""
    due: list[tuple[str, str]] = []
    versions = store.table(VERSIONS_TABLE)
    for row in store.table(KEYS_TABLE).scan():
        period = float(row.value["auto_rotate_period"])
        if period <= 0 or math.isnan(period):
            continue
        latest = versions.get(_version_key(row.key, int(row.value["latest_version"])))
        if latest is not None and now - float(latest.value["created"]) >= period:
            mount, name = row.key.split(SEP, 1)
            due.append((mount, name))
    return due
