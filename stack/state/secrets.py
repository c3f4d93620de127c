"""The secrets KV engine's replicated state: mounts, KV v1 and KV v2 (Vault semantics).

Secret values arrive as barrier ciphertext (opaque `bytes`, at most `MAX_CT_BYTES`);
this module never sees plaintext. Times are unix seconds chosen by the leader and
carried in the body (`now`), so every replica applies the same thing.

Commands (numbers are permanent, see docs/state.md):
  SECRETS_MOUNT_ENABLE (100)  {"path": "secret/", "type": "kv", "version": 1|2,
                              "description", "options"?: {...}, "now", "accessor"}
  SECRETS_MOUNT_DISABLE (101) {"path"}: the mount and all its data
  SECRETS_MOUNT_TUNE (102)    {"path", "description"?, "options"?: {...}} (partial)
  SECRETS_KV1_PUT (103)       {"mount", "path", "ct"}
  SECRETS_KV1_DELETE (104)    {"mount", "path"}
  SECRETS_KV2_PUT (105)       {"mount", "path", "ct", "cas": int | None, "now"}
  SECRETS_KV2_DELETE (106)    {"mount", "path", "versions": [int] | None (latest), "now"}
  SECRETS_KV2_UNDELETE (107)  {"mount", "path", "versions": [int], "now"}
  SECRETS_KV2_DESTROY (108)   {"mount", "path", "versions": [int]}
  SECRETS_KV2_METADATA_PUT (109) {"mount", "path", "now", "max_versions"?,
                              "cas_required"?, "delete_version_after"?, "custom_metadata"?}
  SECRETS_KV2_METADATA_DELETE (110) {"mount", "path"}: metadata and every version
KV options: {"max_versions": int (0: 10), "cas_required": bool,
"delete_version_after": seconds (0: never)}.

Tables (a secret's key is mount + NUL + path; paths never contain NUL and mounts
never overlap, so keys of different mounts never collide):
  secrets_mounts        path -> {"type", "version", "description", "options", "created", "accessor"}
  secrets_kv1           key -> {"ct"}
  secrets_kv2_meta      key -> {"current_version", "oldest_version", "max_versions",
                        "cas_required", "delete_version_after", "custom_metadata",
                        "created_time", "updated_time"}
  secrets_kv2_versions  key + NUL + "%010d" -> {"ct" (None once destroyed),
                        "created_time", "deletion_time" (0: not deleted), "destroyed"}

Semantics follow vault-plugin-secrets-kv: `cas=0` writes only if the secret has no
version, `cas=N` only if its current version is N, and a write without `cas` is
refused when the mount or the secret sets cas_required. A write keeps the newest
max_versions versions (the secret's setting, else the mount's, else 10); lowering
max_versions takes effect at the next write, as in Vault, and `oldest_version`
stays 0 until the first prune. A version's deletion_time is now plus the smallest
non-zero delete_version_after of mount and secret, set on write and on undelete. A
version is deleted once deletion_time <= now. Delete, undelete and destroy skip
versions that are missing or destroyed (delete also skips those already deleted).

There is no patch command: the engine decrypts the current version, merges with
`stack.vault.kvdata.merge_patch`, encrypts, and proposes SECRETS_KV2_PUT with
cas=current version, so a concurrent write makes the patch fail instead of being lost.

A body of the wrong shape or type is a bug and raises TypeError. Anything a user
can get wrong (a bad path, an oversized value, a CAS mismatch, a limit) is an
expected refusal: `WriteResult(False, index, {"error": message, "reason": code})`
with a code from `Refusal`, identical on every replica. The engine validates the
same things first (`validate_path`, `check_ct`, ...) to answer 400 without the log.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.fields import as_body as _body
from stack.state.fields import as_bool as _bool
from stack.state.fields import as_int as _int
from stack.state.fields import as_seconds as _seconds
from stack.state.fields import as_str_map, get_bytes
from stack.state.fields import field as _get
from stack.state.fields import get_str as _str
from stack.state.store import Row, StateStore, Table

MOUNTS_TABLE = "secrets_mounts"
KV1_TABLE = "secrets_kv1"
KV2_META_TABLE = "secrets_kv2_meta"
KV2_VERSIONS_TABLE = "secrets_kv2_versions"

SECRETS_MOUNT_ENABLE = 100
SECRETS_MOUNT_DISABLE = 101
SECRETS_MOUNT_TUNE = 102
SECRETS_KV1_PUT = 103
SECRETS_KV1_DELETE = 104
SECRETS_KV2_PUT = 105
SECRETS_KV2_DELETE = 106
SECRETS_KV2_UNDELETE = 107
SECRETS_KV2_DESTROY = 108
SECRETS_KV2_METADATA_PUT = 109
SECRETS_KV2_METADATA_DELETE = 110

MAX_CT_BYTES = 1 << 20
DEFAULT_MAX_VERSIONS = 10
MAX_CUSTOM_METADATA_KEYS = 64
MAX_CUSTOM_METADATA_KEY_BYTES = 128
MAX_CUSTOM_METADATA_VALUE_BYTES = 512
MOUNT_TYPES = ("kv", "pki", "transit")
# Served by other backends (the router checks them before mounts), so a mount there
# would be unreachable.
RESERVED_MOUNTS = ("sys/", "auth/", "cubbyhole/", "identity/")
DEFAULT_OPTIONS: dict[str, Any] = {
    "max_versions": 0,
    "cas_required": False,
    "delete_version_after": 0.0,
}
SEP = "\x00"
_V2_ONLY = "max_versions, cas_required and delete_version_after need a kv version 2 mount"


class Refusal(enum.StrEnum):
    """`data["reason"]` of a refused write, for the engine to pick a status code."""

    NO_MOUNT = "no_mount"  # no mount at that path, or a mount of the other kv version
    MOUNT_EXISTS = "mount_exists"
    MOUNT_OVERLAP = "mount_overlap"
    INVALID_PATH = "invalid_path"
    INVALID = "invalid"  # an option, a limit, a missing version list
    TOO_LARGE = "too_large"
    CAS_MISMATCH = "cas_mismatch"
    CAS_REQUIRED = "cas_required"


def register(registry: CommandRegistry) -> None:
    registry.register(SECRETS_MOUNT_ENABLE, "secrets.mount_enable", apply_mount_enable)
    registry.register(SECRETS_MOUNT_DISABLE, "secrets.mount_disable", apply_mount_disable)
    registry.register(SECRETS_MOUNT_TUNE, "secrets.mount_tune", apply_mount_tune)
    registry.register(SECRETS_KV1_PUT, "secrets.kv1_put", apply_kv1_put)
    registry.register(SECRETS_KV1_DELETE, "secrets.kv1_delete", apply_kv1_delete)
    registry.register(SECRETS_KV2_PUT, "secrets.kv2_put", apply_kv2_put)
    registry.register(SECRETS_KV2_DELETE, "secrets.kv2_delete", apply_kv2_delete)
    registry.register(SECRETS_KV2_UNDELETE, "secrets.kv2_undelete", apply_kv2_undelete)
    registry.register(SECRETS_KV2_DESTROY, "secrets.kv2_destroy", apply_kv2_destroy)
    registry.register(SECRETS_KV2_METADATA_PUT, "secrets.kv2_metadata_put", apply_kv2_metadata_put)
    registry.register(
        SECRETS_KV2_METADATA_DELETE, "secrets.kv2_metadata_delete", apply_kv2_metadata_delete
    )


# -- validation (the engine calls these before proposing; apply refuses the same)


def validate_path(path: str) -> None:
    """Raise ValueError unless `path` is a secret path: non-empty segments joined by
    "/", none of them "." or "..", no leading "/", no NUL."""
    if not isinstance(path, str):
        raise TypeError(f"path must be str, not {type(path).__name__}")
    if not path:
        raise ValueError("path is empty")
    if SEP in path:
        raise ValueError("path contains a NUL character")
    if path.startswith("/"):
        raise ValueError(f"path {path!r} starts with '/'")
    for segment in path.split("/"):
        if not segment:
            raise ValueError(f"path {path!r} has an empty segment")
        if segment in (".", ".."):
            raise ValueError(f"path {path!r} has a {segment!r} segment")


def validate_mount_path(path: str) -> None:
    """A mount path is a valid path followed by "/", outside the reserved prefixes."""
    if not isinstance(path, str):
        raise TypeError(f"mount path must be str, not {type(path).__name__}")
    if not path.endswith("/"):
        raise ValueError(f"mount path {path!r} must end with '/'")
    validate_path(path[:-1])
    for reserved in RESERVED_MOUNTS:
        if path.startswith(reserved):
            raise ValueError(f"cannot mount under {reserved!r}: that path is reserved")


def list_prefix(prefix: str) -> str:
    """The folder a list request names: "" (the mount's root) or a valid path with
    "/" appended when missing, as Vault does. Raises ValueError."""
    if prefix == "":
        return ""
    validate_path(prefix.removesuffix("/"))
    return prefix if prefix.endswith("/") else prefix + "/"


def check_ct(ct: bytes) -> None:
    if len(ct) > MAX_CT_BYTES:
        raise ValueError(f"secret value is {len(ct)} bytes, more than the {MAX_CT_BYTES} allowed")


def validate_custom_metadata(custom: dict[str, str]) -> None:
    """Vault's limits: at most 64 keys; keys 1..128 and values 1..512 bytes (UTF-8,
    as Go counts), printable."""
    prefix = "custom_metadata validation failed"
    if len(custom) > MAX_CUSTOM_METADATA_KEYS:
        raise ValueError(
            f"{prefix}: payload must contain at most {MAX_CUSTOM_METADATA_KEYS} keys, "
            f"provided {len(custom)}"
        )
    errors: list[str] = []
    for key in sorted(custom):
        value = custom[key]
        key_len, value_len = len(key.encode()), len(value.encode())
        if not 0 < key_len <= MAX_CUSTOM_METADATA_KEY_BYTES:
            errors.append(
                f"length of key {key!r} is {key_len} but must be "
                f"0 < len(key) <= {MAX_CUSTOM_METADATA_KEY_BYTES}"
            )
        if not 0 < value_len <= MAX_CUSTOM_METADATA_VALUE_BYTES:
            errors.append(
                f"length of value for key {key!r} is {value_len} but must be "
                f"0 < len(value) <= {MAX_CUSTOM_METADATA_VALUE_BYTES}"
            )
        if not key.isprintable():
            errors.append(f"key {key!r} contains unprintable characters")
        if not value.isprintable():
            errors.append(f"value for key {key!r} contains unprintable characters")
    if errors:
        raise ValueError(f"{prefix}: " + "; ".join(errors))


# -- command builders (the leader encodes, every replica applies)


def encode_mount_enable(
    registry: CommandRegistry,
    path: str,
    *,
    version: int,
    now: float,
    accessor: str,
    description: str = "",
    options: dict[str, Any] | None = None,
    engine_type: str = "kv",
) -> bytes:
    body = {
        "path": path,
        "type": engine_type,
        "version": version,
        "description": description,
        "options": dict(options or {}),
        "now": float(now),
        "accessor": accessor,
    }
    return registry.encode(SECRETS_MOUNT_ENABLE, body)


def encode_mount_disable(registry: CommandRegistry, path: str) -> bytes:
    return registry.encode(SECRETS_MOUNT_DISABLE, {"path": path})


def encode_mount_tune(
    registry: CommandRegistry,
    path: str,
    *,
    description: str | None = None,
    options: dict[str, Any] | None = None,
) -> bytes:
    body: dict[str, Any] = {"path": path}
    if description is not None:
        body["description"] = description
    if options is not None:
        body["options"] = dict(options)
    return registry.encode(SECRETS_MOUNT_TUNE, body)


def encode_kv1_put(registry: CommandRegistry, mount: str, path: str, ct: bytes) -> bytes:
    return registry.encode(SECRETS_KV1_PUT, {"mount": mount, "path": path, "ct": ct})


def encode_kv1_delete(registry: CommandRegistry, mount: str, path: str) -> bytes:
    return registry.encode(SECRETS_KV1_DELETE, {"mount": mount, "path": path})


def encode_kv2_put(
    registry: CommandRegistry, mount: str, path: str, ct: bytes, *, now: float, cas: int | None
) -> bytes:
    body = {"mount": mount, "path": path, "ct": ct, "cas": cas, "now": float(now)}
    return registry.encode(SECRETS_KV2_PUT, body)


def encode_kv2_delete(
    registry: CommandRegistry,
    mount: str,
    path: str,
    *,
    now: float,
    versions: list[int] | None = None,
) -> bytes:
    body = {"mount": mount, "path": path, "versions": versions, "now": float(now)}
    return registry.encode(SECRETS_KV2_DELETE, body)


def encode_kv2_undelete(
    registry: CommandRegistry, mount: str, path: str, versions: list[int], *, now: float
) -> bytes:
    body = {"mount": mount, "path": path, "versions": versions, "now": float(now)}
    return registry.encode(SECRETS_KV2_UNDELETE, body)


def encode_kv2_destroy(
    registry: CommandRegistry, mount: str, path: str, versions: list[int]
) -> bytes:
    body = {"mount": mount, "path": path, "versions": versions}
    return registry.encode(SECRETS_KV2_DESTROY, body)


def encode_kv2_metadata_put(
    registry: CommandRegistry,
    mount: str,
    path: str,
    *,
    now: float,
    max_versions: int | None = None,
    cas_required: bool | None = None,
    delete_version_after: float | None = None,
    custom_metadata: dict[str, str] | None = None,
) -> bytes:
    """Only the fields given change (Vault's POST /metadata); custom_metadata, when
    given, replaces the whole map."""
    body: dict[str, Any] = {"mount": mount, "path": path, "now": float(now)}
    if max_versions is not None:
        body["max_versions"] = max_versions
    if cas_required is not None:
        body["cas_required"] = cas_required
    if delete_version_after is not None:
        body["delete_version_after"] = float(delete_version_after)
    if custom_metadata is not None:
        body["custom_metadata"] = dict(custom_metadata)
    return registry.encode(SECRETS_KV2_METADATA_PUT, body)


def encode_kv2_metadata_delete(registry: CommandRegistry, mount: str, path: str) -> bytes:
    return registry.encode(SECRETS_KV2_METADATA_DELETE, {"mount": mount, "path": path})


# -- body fields (a wrong type is a bug in the encoder: TypeError)


def _versions(value: Any) -> list[int]:
    if not isinstance(value, list):
        raise TypeError(f"versions must be a list, not {type(value).__name__}")
    return sorted({_int(v, "version") for v in value})


def _problem(check: Callable[[Any], None], value: Any) -> str | None:
    """The ValueError message of `check(value)`, None if it passes (TypeError passes through)."""
    try:
        check(value)
    except ValueError as exc:
        return str(exc)
    return None


def _refuse(ctx: ApplyContext, reason: Refusal, error: str, **extra: Any) -> WriteResult:
    return WriteResult(False, ctx.index, {"error": error, "reason": reason.value, **extra})


def _options(raw: Any, base: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """`base` updated with the options in `raw`, or a reason to refuse them."""
    if not isinstance(raw, dict):
        raise TypeError(f"options must be a map, not {type(raw).__name__}")
    options = dict(base)
    for name in sorted(raw):
        value = raw[name]
        if name == "max_versions":
            options[name] = _int(value, name)
            if value < 0:
                return options, f"max_versions must be >= 0, got {value}"
        elif name == "cas_required":
            options[name] = _bool(value, name)
        elif name == "delete_version_after":
            options[name] = _seconds(value, name)
            if value < 0:
                return options, f"delete_version_after must be >= 0, got {value}"
        elif name == "version":
            return options, "changing the kv version of a mount is not supported"
        else:
            return options, f"unknown kv option {name!r}"
    return options, None


def _key(mount: str, path: str) -> str:
    return mount + SEP + path


def _version_key(key: str, version: int) -> str:
    return f"{key}{SEP}{version:010d}"


def _version_number(row_key: str) -> int:
    return int(row_key.rsplit(SEP, 1)[1])


# -- mounts


def apply_mount_enable(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    path, engine_type = _str(body, "path"), _str(body, "type")
    version = _int(_get(body, "version"), "version")
    description, accessor = _str(body, "description"), _str(body, "accessor")
    now = _seconds(_get(body, "now"), "now")
    options, problem = _options(body.get("options", {}), DEFAULT_OPTIONS)
    if (path_problem := _problem(validate_mount_path, path)) is not None:
        return _refuse(ctx, Refusal.INVALID_PATH, path_problem)
    if engine_type not in MOUNT_TYPES:
        return _refuse(ctx, Refusal.INVALID, f"unsupported secrets engine type {engine_type!r}")
    if engine_type == "kv" and version not in (1, 2):
        return _refuse(ctx, Refusal.INVALID, f"kv version must be 1 or 2, got {version}")
    if problem is None and (version == 1 or engine_type != "kv") and options != DEFAULT_OPTIONS:
        problem = _V2_ONLY
    if problem is not None:
        return _refuse(ctx, Refusal.INVALID, problem)
    mounts = ctx.store.table(MOUNTS_TABLE)
    if path in mounts:
        return _refuse(ctx, Refusal.MOUNT_EXISTS, f"path is already in use at {path}")
    other = _mount_path_for(mounts, path) or next(iter(mounts.keys(path)), None)
    if other is not None:
        return _refuse(ctx, Refusal.MOUNT_OVERLAP, f"path {path} overlaps the mount at {other}")
    if not accessor or any(row.value["accessor"] == accessor for row in mounts.scan()):
        return _refuse(ctx, Refusal.INVALID, f"mount accessor {accessor!r} is empty or in use")
    row = {
        "type": engine_type,
        "version": version,
        "description": description,
        "options": options,
        "created": now,
        "accessor": accessor,
    }
    mounts.put(path, row, ctx.index)
    return WriteResult(True, ctx.index, {"path": path, "accessor": accessor})


def apply_mount_disable(ctx: ApplyContext, body: Any) -> WriteResult:
    path = _str(_body(body), "path")
    mounts = ctx.store.table(MOUNTS_TABLE)
    if path not in mounts:
        return _refuse(ctx, Refusal.NO_MOUNT, f"no secrets engine is mounted at {path!r}")
    removed = 0
    for name in (KV1_TABLE, KV2_META_TABLE, KV2_VERSIONS_TABLE):
        removed += len(ctx.store.table(name).delete_prefix(path + SEP, ctx.index))
    kind = mounts.get(path).value.get("type")  # type: ignore[union-attr]
    if kind == "pki":
        from stack.state import pki  # (pki imports this module)

        pki.purge_mount(ctx, path)
    elif kind == "transit":
        from stack.state import transit

        transit.purge_mount(ctx, path)
    mounts.delete(path, ctx.index)
    return WriteResult(True, ctx.index, {"path": path, "rows_removed": removed})


def apply_mount_tune(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    path = _str(body, "path")
    mounts = ctx.store.table(MOUNTS_TABLE)
    found = mounts.get(path)
    if found is None:
        return _refuse(ctx, Refusal.NO_MOUNT, f"no secrets engine is mounted at {path!r}")
    row = dict(found.value)
    if "description" in body:
        row["description"] = _str(body, "description")
    if "options" in body:
        options, problem = _options(_get(body, "options"), row["options"])
        if problem is None and row["version"] == 1 and options != DEFAULT_OPTIONS:
            problem = _V2_ONLY
        if problem is not None:
            return _refuse(ctx, Refusal.INVALID, problem)
        row["options"] = options
    mounts.put(path, row, ctx.index)
    return WriteResult(True, ctx.index, {"path": path})


def _mount_path_for(mounts: Table, request_path: str) -> str | None:
    """The mount whose path is a prefix of `request_path` (the longest, though
    mounts never overlap), trying `request_path + "/"` too, as Vault's router does."""
    best: str | None = None
    for at, char in enumerate(request_path):
        if char == "/" and request_path[: at + 1] in mounts:
            best = request_path[: at + 1]
    if best is None and (request_path + "/") in mounts:
        best = request_path + "/"
    return best


def _secret_target(
    ctx: ApplyContext, body: dict[str, Any], version: int
) -> tuple[str, str, dict[str, Any] | WriteResult]:
    """(mount, path, the mount's options) for a write to one secret, or a refusal in
    place of the options."""
    mount, path = _str(body, "mount"), _str(body, "path")
    found = ctx.store.table(MOUNTS_TABLE).get(mount)
    if found is None or found.value["type"] != "kv" or found.value["version"] != version:
        error = f"no kv version {version} secrets engine is mounted at {mount!r}"
        return mount, path, _refuse(ctx, Refusal.NO_MOUNT, error)
    if (problem := _problem(validate_path, path)) is not None:
        return mount, path, _refuse(ctx, Refusal.INVALID_PATH, problem)
    options: dict[str, Any] = found.value["options"]
    return mount, path, options


# -- KV v1


def apply_kv1_put(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    mount, path, target = _secret_target(ctx, body, 1)
    ct = get_bytes(body, "ct")
    if isinstance(target, WriteResult):
        return target
    if (problem := _problem(check_ct, ct)) is not None:
        return _refuse(ctx, Refusal.TOO_LARGE, problem)
    table = ctx.store.table(KV1_TABLE)
    key = _key(mount, path)
    created = key not in table
    table.put(key, {"ct": ct}, ctx.index)
    return WriteResult(True, ctx.index, {"created": created})


def apply_kv1_delete(ctx: ApplyContext, body: Any) -> WriteResult:
    mount, path, target = _secret_target(ctx, _body(body), 1)
    if isinstance(target, WriteResult):
        return target
    deleted = ctx.store.table(KV1_TABLE).delete(_key(mount, path), ctx.index) is not None
    return WriteResult(True, ctx.index, {"deleted": deleted})


# -- KV v2


def _delete_version_after(options: dict[str, Any], meta: dict[str, Any]) -> float:
    """The smallest non-zero of the mount's and the secret's (0: never), as Vault."""
    candidates = (float(options["delete_version_after"]), float(meta["delete_version_after"]))
    return min((c for c in candidates if c > 0), default=0.0)


def _new_meta(now: float) -> dict[str, Any]:
    return {
        "current_version": 0,
        "oldest_version": 0,
        "max_versions": 0,
        "cas_required": False,
        "delete_version_after": 0.0,
        "custom_metadata": {},
        "created_time": now,
        "updated_time": now,
    }


def apply_kv2_put(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    mount, path, target = _secret_target(ctx, body, 2)
    ct, now = get_bytes(body, "ct"), _seconds(_get(body, "now"), "now")
    cas = _get(body, "cas")
    cas = None if cas is None else _int(cas, "cas")
    if isinstance(target, WriteResult):
        return target
    options = target
    if (problem := _problem(check_ct, ct)) is not None:
        return _refuse(ctx, Refusal.TOO_LARGE, problem)
    metas = ctx.store.table(KV2_META_TABLE)
    versions = ctx.store.table(KV2_VERSIONS_TABLE)
    key = _key(mount, path)
    found = metas.get(key)
    meta: dict[str, Any] = _new_meta(now) if found is None else found.value
    current: int = meta["current_version"]
    if cas is None:
        if options["cas_required"] or meta["cas_required"]:
            error = "check-and-set parameter required for this call"
            return _refuse(ctx, Refusal.CAS_REQUIRED, error)
    elif cas != current:
        error = "check-and-set parameter did not match the current version"
        return _refuse(ctx, Refusal.CAS_MISMATCH, error, current_version=current)

    version = current + 1
    after = _delete_version_after(options, meta)
    deletion_time = now + after if after else 0.0
    row = {"ct": ct, "created_time": now, "deletion_time": deletion_time, "destroyed": False}
    versions.put(_version_key(key, version), row, ctx.index)

    keep = meta["max_versions"] or options["max_versions"] or DEFAULT_MAX_VERSIONS
    oldest: int = meta["oldest_version"]
    pruned: list[int] = []
    if version - oldest >= keep:
        upto = version - keep
        for old in versions.scan(key + SEP):
            if (number := _version_number(old.key)) <= upto:
                versions.delete(old.key, ctx.index)
                pruned.append(number)
        oldest = upto + 1
    new_meta = {**meta, "current_version": version, "oldest_version": oldest, "updated_time": now}
    metas.put(key, new_meta, ctx.index)
    answer = {
        "version": version,
        "created_time": now,
        "deletion_time": deletion_time,
        "destroyed": False,
        "custom_metadata": dict(meta["custom_metadata"]),
        "pruned": pruned,
    }
    return WriteResult(True, ctx.index, answer)


def _version_change(
    ctx: ApplyContext,
    body: Any,
    change: Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], dict[str, Any] | None],
    *,
    latest_if_none: bool = False,
) -> WriteResult:
    """Apply `change(row, meta, options)` (the new row, or None to skip) to each named
    version of one secret; answers the versions it changed."""
    body = _body(body)
    mount, path, target = _secret_target(ctx, body, 2)
    raw = _get(body, "versions")
    numbers = None if raw is None and latest_if_none else _versions(raw)
    if isinstance(target, WriteResult):
        return target
    if numbers == []:
        return _refuse(ctx, Refusal.INVALID, "no version number provided")
    key = _key(mount, path)
    found = ctx.store.table(KV2_META_TABLE).get(key)
    if found is None:
        return WriteResult(True, ctx.index, {"versions": []})
    meta: dict[str, Any] = found.value
    table = ctx.store.table(KV2_VERSIONS_TABLE)
    changed: list[int] = []
    for number in [meta["current_version"]] if numbers is None else numbers:
        row = table.get(_version_key(key, number))
        if row is None or row.value["destroyed"]:
            continue
        new = change(row.value, meta, target)
        if new is not None and new != row.value:
            table.put(row.key, new, ctx.index)
            changed.append(number)
    return WriteResult(True, ctx.index, {"versions": changed})


def apply_kv2_delete(ctx: ApplyContext, body: Any) -> WriteResult:
    now = _seconds(_get(_body(body), "now"), "now")

    def delete(row: dict[str, Any], meta: dict[str, Any], options: dict[str, Any]) -> Any:
        if row["deletion_time"] and row["deletion_time"] <= now:
            return None  # already deleted
        return {**row, "deletion_time": now}

    return _version_change(ctx, body, delete, latest_if_none=True)


def apply_kv2_undelete(ctx: ApplyContext, body: Any) -> WriteResult:
    now = _seconds(_get(_body(body), "now"), "now")

    def undelete(row: dict[str, Any], meta: dict[str, Any], options: dict[str, Any]) -> Any:
        after = _delete_version_after(options, meta)  # restarts from the undelete
        return {**row, "deletion_time": now + after if after else 0.0}

    return _version_change(ctx, body, undelete)


def apply_kv2_destroy(ctx: ApplyContext, body: Any) -> WriteResult:
    def destroy(row: dict[str, Any], meta: dict[str, Any], options: dict[str, Any]) -> Any:
        return {**row, "ct": None, "destroyed": True}

    return _version_change(ctx, body, destroy)


def apply_kv2_metadata_put(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    mount, path, target = _secret_target(ctx, body, 2)
    now = _seconds(_get(body, "now"), "now")
    changes: dict[str, Any] = {}
    if "max_versions" in body:
        changes["max_versions"] = _int(_get(body, "max_versions"), "max_versions")
    if "cas_required" in body:
        changes["cas_required"] = _bool(_get(body, "cas_required"), "cas_required")
    if "delete_version_after" in body:
        after = _seconds(_get(body, "delete_version_after"), "delete_version_after")
        changes["delete_version_after"] = after
    if "custom_metadata" in body:
        changes["custom_metadata"] = as_str_map(_get(body, "custom_metadata"), "custom_metadata")
    if isinstance(target, WriteResult):
        return target
    if changes.get("max_versions", 0) < 0:
        return _refuse(ctx, Refusal.INVALID, "max_versions must be >= 0")
    if changes.get("delete_version_after", 0.0) < 0:
        return _refuse(ctx, Refusal.INVALID, "delete_version_after must be >= 0")
    custom = changes.get("custom_metadata", {})
    if (problem := _problem(validate_custom_metadata, custom)) is not None:
        return _refuse(ctx, Refusal.INVALID, problem)
    if not changes:
        return WriteResult(True, ctx.index, {"created": False, "warnings": []})  # Vault: no-op
    warnings: list[str] = []
    if changes.get("cas_required") is False and target["cas_required"]:
        warnings.append(
            '"cas_required" set to false, but is mandated by backend config. '
            "This value will be ignored."
        )
    metas = ctx.store.table(KV2_META_TABLE)
    key = _key(mount, path)
    found = metas.get(key)
    meta = _new_meta(now) if found is None else found.value
    metas.put(key, {**meta, **changes}, ctx.index)
    return WriteResult(True, ctx.index, {"created": found is None, "warnings": warnings})


def apply_kv2_metadata_delete(ctx: ApplyContext, body: Any) -> WriteResult:
    mount, path, target = _secret_target(ctx, _body(body), 2)
    if isinstance(target, WriteResult):
        return target
    key = _key(mount, path)
    removed = ctx.store.table(KV2_VERSIONS_TABLE).delete_prefix(key + SEP, ctx.index)
    deleted = ctx.store.table(KV2_META_TABLE).delete(key, ctx.index) is not None
    return WriteResult(True, ctx.index, {"deleted": deleted, "versions": len(removed)})


# -- reads (any replica that holds the state; pure functions of the store)


@dataclass(frozen=True, slots=True)
class KVOptions:
    max_versions: int  # 0: DEFAULT_MAX_VERSIONS
    cas_required: bool
    delete_version_after: float  # seconds; 0: never


@dataclass(frozen=True, slots=True)
class Mount:
    path: str  # ends with "/"
    type: str
    version: int
    description: str
    options: KVOptions
    created: float
    accessor: str
    modify_index: int


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: int
    created_time: float
    deletion_time: float  # 0: not deleted; may lie in the future (delete_version_after)
    destroyed: bool

    def deleted(self, now: float) -> bool:
        return bool(self.deletion_time) and self.deletion_time <= now


@dataclass(frozen=True, slots=True)
class SecretMetadata:
    current_version: int
    oldest_version: int
    max_versions: int
    cas_required: bool
    delete_version_after: float
    custom_metadata: dict[str, str]
    created_time: float
    updated_time: float
    versions: dict[int, VersionInfo]  # ascending


class VersionStatus(enum.StrEnum):
    OK = "ok"
    NOT_FOUND = "not_found"  # Vault: a bare 404
    DELETED = "deleted"  # Vault: 404 with data null and the version's metadata
    DESTROYED = "destroyed"  # likewise


@dataclass(frozen=True, slots=True)
class VersionRead:
    status: VersionStatus
    info: VersionInfo | None  # None only when NOT_FOUND
    ct: bytes | None  # only when OK
    custom_metadata: dict[str, str]


def _mount(row: Row) -> Mount:
    v = row.value
    o = v["options"]
    options = KVOptions(
        int(o["max_versions"]), bool(o["cas_required"]), float(o["delete_version_after"])
    )
    return Mount(
        row.key,
        v["type"],
        int(v["version"]),
        v["description"],
        options,
        float(v["created"]),
        v["accessor"],
        row.modify_index,
    )


def get_mount(store: StateStore, path: str) -> Mount | None:
    row = store.table(MOUNTS_TABLE).get(path)
    return None if row is None else _mount(row)


def find_mount(store: StateStore, request_path: str) -> Mount | None:
    """The mount serving `request_path` (e.g. "secret/data/a" -> "secret/"); the
    part after it is `request_path[len(mount.path):]` ("" for "secret")."""
    mounts = store.table(MOUNTS_TABLE)
    path = _mount_path_for(mounts, request_path)
    return None if path is None else get_mount(store, path)


def list_mounts(store: StateStore) -> list[Mount]:
    return [_mount(row) for row in store.table(MOUNTS_TABLE).scan()]


def _info(number: int, v: dict[str, Any]) -> VersionInfo:
    return VersionInfo(
        number, float(v["created_time"]), float(v["deletion_time"]), bool(v["destroyed"])
    )


def kv2_metadata(store: StateStore, mount: str, path: str) -> SecretMetadata | None:
    key = _key(mount, path)
    row = store.table(KV2_META_TABLE).get(key)
    if row is None:
        return None
    m = row.value
    versions = {
        (n := _version_number(r.key)): _info(n, r.value)
        for r in store.table(KV2_VERSIONS_TABLE).scan(key + SEP)
    }
    return SecretMetadata(
        int(m["current_version"]),
        int(m["oldest_version"]),
        int(m["max_versions"]),
        bool(m["cas_required"]),
        float(m["delete_version_after"]),
        dict(m["custom_metadata"]),
        float(m["created_time"]),
        float(m["updated_time"]),
        versions,
    )


def kv2_version(
    store: StateStore, mount: str, path: str, version: int | None = None, *, now: float
) -> VersionRead:
    """One version (None or <= 0: the current one, as Vault) as a read sees it at `now`."""
    key = _key(mount, path)
    meta = store.table(KV2_META_TABLE).get(key)
    if meta is None:
        return VersionRead(VersionStatus.NOT_FOUND, None, None, {})
    custom = dict(meta.value["custom_metadata"])
    number = version if version and version > 0 else int(meta.value["current_version"])
    row = store.table(KV2_VERSIONS_TABLE).get(_version_key(key, number))
    if row is None:
        return VersionRead(VersionStatus.NOT_FOUND, None, None, custom)
    info = _info(number, row.value)
    if info.destroyed:
        return VersionRead(VersionStatus.DESTROYED, info, None, custom)
    if info.deleted(now):
        return VersionRead(VersionStatus.DELETED, info, None, custom)
    return VersionRead(VersionStatus.OK, info, bytes(row.value["ct"]), custom)


def kv1_get(store: StateStore, mount: str, path: str) -> bytes | None:
    row = store.table(KV1_TABLE).get(_key(mount, path))
    return None if row is None else bytes(row.value["ct"])


def kv_list(store: StateStore, mount: str, prefix: str = "") -> list[str]:
    """Vault's LIST: the immediate children of the folder `prefix` (see `list_prefix`),
    folders with a trailing "/", sorted. For v2 every secret with metadata lists, even
    when all its versions are deleted or destroyed. Raises ValueError for a bad
    prefix or when nothing is mounted at `mount`."""
    found = get_mount(store, mount)
    if found is None:
        raise ValueError(f"no secrets engine is mounted at {mount!r}")
    folder = _key(mount, list_prefix(prefix))
    table = store.table(KV1_TABLE if found.version == 1 else KV2_META_TABLE)
    children: set[str] = set()
    for key in table.keys(folder):
        rest = key[len(folder) :]
        cut = rest.find("/")
        children.add(rest if cut < 0 else rest[: cut + 1])
    return sorted(children)
