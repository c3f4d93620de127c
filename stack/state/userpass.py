"""userpass as replicated state: users with a password record and the token
fields of `authfields.TOKEN_DEFAULTS`. Registered by `auth.register`; the command
table is in `auth.py`.

A password never enters the log: the node serving the request hashes it (with a
fresh salt) before proposing, and apply only checks the record's shape and
bounds (`validate_password_record`), so every replica stores the same bytes and
no replica spends CPU on a hash inside apply.

Table: auth_userpass_users  mount NUL name -> {password: record, <token fields>}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stack.state.authfields import (
    SEP,
    TOKEN_DEFAULTS,
    Refusal,
    TokenParams,
    get_fields,
    key,
    mount_of,
    problem,
    refuse,
    token_params,
    validate_name,
    validate_token_fields,
)
from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.fields import as_map, get_str
from stack.state.store import StateStore

USER_SET = 189
USER_DELETE = 190
USER_PASSWORD = 191
USER_POLICIES = 192

USERS_TABLE = "auth_userpass_users"

# scrypt (memory-hard) is what the backend writes; PBKDF2-SHA256 is accepted for
# records made elsewhere. Lower bounds keep a record from being weakened through
# the log; upper bounds keep one login from costing minutes of CPU.
PASSWORD_PARAMS = {"scrypt": ("n", "r", "p"), "pbkdf2-sha256": ("iterations",)}
SCRYPT_MIN_N = 2**14
SCRYPT_R_RANGE = (8, 32)
SCRYPT_P_RANGE = (1, 4)
SCRYPT_MAX_MEMORY = 32 * 1024 * 1024  # 128 * n * r bytes per hash
PBKDF2_ITERATIONS_RANGE = (100_000, 2_000_000)
SALT_BYTES_RANGE = (16, 64)
HASH_BYTES_RANGE = (32, 64)


def register(registry: CommandRegistry) -> None:
    registry.register(USER_SET, "auth.user_set", apply_user_set)
    registry.register(USER_DELETE, "auth.user_delete", apply_user_delete)
    registry.register(USER_PASSWORD, "auth.user_password", apply_user_password)
    registry.register(USER_POLICIES, "auth.user_policies", apply_user_policies)


def validate_password_record(record: dict[str, Any]) -> None:
    """A stored password: {"algo", "salt": bytes, "hash": bytes} and the algorithm's
    parameters (scrypt: n, r, p; pbkdf2-sha256: iterations), nothing else."""
    if not isinstance(record, dict):
        raise TypeError(f"password must be a map, not {type(record).__name__}")
    algo, salt, digest = record.get("algo"), record.get("salt"), record.get("hash")
    if not isinstance(algo, str) or not isinstance(salt, bytes) or not isinstance(digest, bytes):
        raise TypeError("a password record needs a str algo and bytes salt and hash")
    if algo not in PASSWORD_PARAMS:
        raise ValueError(f"unsupported password algorithm {algo[:40]!r}")
    params = PASSWORD_PARAMS[algo]
    if set(record) != {"algo", "salt", "hash", *params}:
        raise ValueError(f"a {algo} password record has exactly algo, salt, hash and {params}")
    if any(type(record[name]) is not int for name in params):
        raise TypeError(f"{algo} parameters must be ints")
    if not SALT_BYTES_RANGE[0] <= len(salt) <= SALT_BYTES_RANGE[1]:
        raise ValueError("password salt must be 16-64 bytes")
    if not HASH_BYTES_RANGE[0] <= len(digest) <= HASH_BYTES_RANGE[1]:
        raise ValueError("password hash must be 32-64 bytes")
    if algo == "scrypt":
        n, r, p = record["n"], record["r"], record["p"]
        if n < SCRYPT_MIN_N or n & (n - 1):
            raise ValueError("scrypt n must be a power of two, at least 2**14")
        if not SCRYPT_R_RANGE[0] <= r <= SCRYPT_R_RANGE[1]:
            raise ValueError("scrypt r must be in 8..32")
        if not SCRYPT_P_RANGE[0] <= p <= SCRYPT_P_RANGE[1]:
            raise ValueError("scrypt p must be in 1..4")
        if 128 * n * r > SCRYPT_MAX_MEMORY:
            raise ValueError("scrypt n and r need more than 32 MiB per hash (128 * n * r)")
    elif not PBKDF2_ITERATIONS_RANGE[0] <= record["iterations"] <= PBKDF2_ITERATIONS_RANGE[1]:
        raise ValueError("pbkdf2-sha256 iterations must be in 100000..2000000")


# -- command builders


def encode_user_set(
    registry: CommandRegistry,
    mount: str,
    name: str,
    *,
    password: dict[str, Any] | None = None,
    **fields: Any,
) -> bytes:
    """`password`: a record from the backend's hasher (required for a new user);
    `fields`: any of `TOKEN_DEFAULTS`' keys; only those given change."""
    unknown = sorted(set(fields) - set(TOKEN_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown user fields {unknown}")
    body: dict[str, Any] = {"mount": mount, "name": name, **fields}
    if password is not None:
        body["password"] = dict(password)
    return registry.encode(USER_SET, body)


def encode_user_delete(registry: CommandRegistry, mount: str, name: str) -> bytes:
    return registry.encode(USER_DELETE, {"mount": mount, "name": name})


def encode_user_password(
    registry: CommandRegistry, mount: str, name: str, password: dict[str, Any]
) -> bytes:
    body = {"mount": mount, "name": name, "password": dict(password)}
    return registry.encode(USER_PASSWORD, body)


def encode_user_policies(
    registry: CommandRegistry, mount: str, name: str, token_policies: list[str]
) -> bytes:
    body = {"mount": mount, "name": name, "token_policies": list(token_policies)}
    return registry.encode(USER_POLICIES, body)


# -- apply


def _password(b: dict[str, Any]) -> dict[str, Any]:
    if "password" not in b:
        raise TypeError("body has no 'password'")
    record = b["password"]
    if not isinstance(record, dict):
        raise TypeError(f"password must be a map, not {type(record).__name__}")
    return dict(sorted(record.items()))


def _target(
    ctx: ApplyContext, b: dict[str, Any]
) -> tuple[str, str, dict[str, Any] | None] | WriteResult:
    """(mount, name, the stored user or None), or a refusal."""
    name = get_str(b, "name")
    mount = mount_of(ctx, b, "userpass")
    if isinstance(mount, WriteResult):
        return mount
    if (bad := problem(validate_name, name, "username")) is not None:
        return refuse(ctx, Refusal.INVALID, bad)
    found = ctx.store.table(USERS_TABLE).get(key(mount, name))
    return mount, name, None if found is None else found.value


def _put(
    ctx: ApplyContext, mount: str, name: str, row: dict[str, Any], created: bool
) -> WriteResult:
    if (bad := problem(validate_token_fields, row)) is not None:
        return refuse(ctx, Refusal.INVALID, bad)
    if (bad := problem(validate_password_record, row["password"])) is not None:
        return refuse(ctx, Refusal.INVALID, bad)
    ctx.store.table(USERS_TABLE).put(key(mount, name), row, ctx.index)
    return WriteResult(True, ctx.index, {"name": name, "created": created})


def apply_user_set(ctx: ApplyContext, body: Any) -> WriteResult:
    b = as_map(body)
    changes = get_fields(b, TOKEN_DEFAULTS)
    if "password" in b:
        changes["password"] = _password(b)
    target = _target(ctx, b)
    if isinstance(target, WriteResult):
        return target
    mount, name, old = target
    if old is None and "password" not in changes:
        return refuse(ctx, Refusal.INVALID, "missing password")
    return _put(ctx, mount, name, {**TOKEN_DEFAULTS, **(old or {}), **changes}, old is None)


def apply_user_delete(ctx: ApplyContext, body: Any) -> WriteResult:
    target = _target(ctx, as_map(body))
    if isinstance(target, WriteResult):
        return target
    mount, name, old = target
    if old is not None:
        ctx.store.table(USERS_TABLE).delete(key(mount, name), ctx.index)
    return WriteResult(True, ctx.index, {"deleted": old is not None})  # Vault: no error


def _change(ctx: ApplyContext, b: dict[str, Any], changes: dict[str, Any]) -> WriteResult:
    target = _target(ctx, b)
    if isinstance(target, WriteResult):
        return target
    mount, name, old = target
    if old is None:
        return refuse(ctx, Refusal.NOT_FOUND, "username does not exist")
    return _put(ctx, mount, name, {**old, **changes}, False)


def apply_user_password(ctx: ApplyContext, body: Any) -> WriteResult:
    b = as_map(body)
    return _change(ctx, b, {"password": _password(b)})


def apply_user_policies(ctx: ApplyContext, body: Any) -> WriteResult:
    b = as_map(body)
    if "token_policies" not in b:
        raise TypeError("body has no 'token_policies'")
    return _change(ctx, b, get_fields(b, {"token_policies": []}))


def drop_mount(store: StateStore, mount: str, index: int) -> None:
    """Delete every user of `mount` (its mount row is the caller's)."""
    store.table(USERS_TABLE).delete_prefix(mount + SEP, index)


# -- reads


@dataclass(frozen=True, slots=True)
class UserpassUser:
    mount: str
    name: str
    password: dict[str, Any]  # a record `validate_password_record` accepts
    token: TokenParams


def get_user(store: StateStore, mount: str, name: str) -> UserpassUser | None:
    row = store.table(USERS_TABLE).get(key(mount, name))
    if row is None:
        return None
    return UserpassUser(mount, name, dict(row.value["password"]), token_params(row.value))


def list_users(store: StateStore, mount: str) -> list[str]:
    prefix = mount + SEP
    return [k[len(prefix) :] for k in store.table(USERS_TABLE).keys(prefix)]
