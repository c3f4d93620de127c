"""Auth methods as replicated state: auth mounts (`sys/auth`), and through
`approle.py` and `userpass.py` AppRole roles and secret IDs and userpass users,
with Vault's semantics. The API is `stack/vault/auth_backend.py`.

Commands 180-199 (numbers are permanent, see docs/state.md). Times are unix
seconds; generated values (accessors, role IDs, hashes) are chosen by the
proposer and travel in the body, so apply reads no clock and no randomness.

  180 auth.mount_enable      {path, type: approle|userpass, description, accessor, now}
  181 auth.mount_disable     {path} -> {disabled, revoked: [token accessors]}
  182 auth.role_set          {mount, name, generated_role_id, now, role_id?, <role fields>?}
  183 auth.role_delete       {mount, name} -> {deleted}
  184 auth.role_id_set       {mount, name, role_id}
  185 auth.secret_id_create  {mount, role, hash, accessor, now, ttl?, num_uses?, metadata,
                             cidr_list} -> {accessor, ttl, num_uses, expiration_time}
  186 auth.secret_id_use     {mount, role, hash, now} -> {num_uses, deleted, metadata}
  187 auth.secret_id_destroy {mount, role, hash | accessor} -> {deleted}
  188 auth.secret_id_tidy    {now, mount ("": all), limit} -> {deleted, more}
  189 auth.user_set          {mount, name, password?, <token fields>?}
  190 auth.user_delete       {mount, name} -> {deleted}
  191 auth.user_password     {mount, name, password}
  192 auth.user_policies     {mount, name, token_policies}
  193-199                    free

Role and user writes are partial: fields absent from the body keep their value
(or the default), so two writers changing different fields both land. Secrets
never enter the log: a secret ID as the SHA-256 of its text, a password as a
salted scrypt record computed by the serving node before it proposes.

Table: auth_mounts  path ("approle/", "team/userpass/") -> {type, description,
accessor, created}. "token/" is the built-in token store and never a row here.

A body of the wrong shape or type is a bug in the proposer and raises TypeError
(the node stops). Anything a user can get wrong is refused alike on every
replica: `WriteResult(False, index, {"error": message, "reason": Refusal})`,
writing nothing. The backend runs the same `validate_*` functions first to
answer 400 without the log; apply checks again because the state may have moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stack.state import approle, tokens, userpass
from stack.state.authfields import (
    MOUNTS_TABLE,
    NAME,
    Refusal,
    get_time,
    problem,
    refuse,
)
from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.fields import as_map, get_str
from stack.state.store import StateStore

MOUNT_ENABLE = 180
MOUNT_DISABLE = 181

METHOD_TYPES = ("approle", "userpass")
TOKEN_MOUNT = "token/"
MAX_MOUNT_PATH = 256


def register(registry: CommandRegistry) -> None:
    """Every auth-method command (180-192)."""
    registry.register(MOUNT_ENABLE, "auth.mount_enable", apply_mount_enable)
    registry.register(MOUNT_DISABLE, "auth.mount_disable", apply_mount_disable)
    approle.register(registry)
    userpass.register(registry)


def validate_mount_path(path: str) -> None:
    """Segments of 1-128 of A-Z, a-z, 0-9, '_', '.', '-', each followed by "/";
    not the token store's."""
    if not isinstance(path, str):
        raise TypeError(f"mount path must be str, not {type(path).__name__}")
    segments = path[:-1].split("/")
    if not path.endswith("/") or len(path) > MAX_MOUNT_PATH:
        raise ValueError(f"auth mount path {path[:140]!r} must end with '/' (at most 256 chars)")
    if not all(NAME.fullmatch(segment) for segment in segments):
        raise ValueError(
            f"auth mount path {path[:140]!r}: each segment is 1-128 of A-Z, a-z, 0-9, '_', '.', '-'"
        )
    if path == TOKEN_MOUNT:
        raise ValueError("path is already in use at token/")


def encode_mount_enable(
    registry: CommandRegistry,
    path: str,
    *,
    method_type: str,
    accessor: str,
    now: float,
    description: str = "",
) -> bytes:
    body = {"path": path, "type": method_type, "description": description,
            "accessor": accessor, "now": float(now)}  # fmt: skip
    return registry.encode(MOUNT_ENABLE, body)


def encode_mount_disable(registry: CommandRegistry, path: str) -> bytes:
    return registry.encode(MOUNT_DISABLE, {"path": path})


def apply_mount_enable(ctx: ApplyContext, body: Any) -> WriteResult:
    b = as_map(body)
    path, method_type = get_str(b, "path"), get_str(b, "type")
    description, accessor = get_str(b, "description"), get_str(b, "accessor")
    now = get_time(b, "now")
    if (bad := problem(validate_mount_path, path)) is not None:
        return refuse(ctx, Refusal.INVALID, bad)
    if method_type not in METHOD_TYPES:
        return refuse(ctx, Refusal.INVALID, f"unsupported auth method type {method_type[:40]!r}")
    if not NAME.fullmatch(accessor):
        return refuse(ctx, Refusal.INVALID, f"invalid mount accessor {accessor[:140]!r}")
    mounts = ctx.store.table(MOUNTS_TABLE)
    if path in mounts:
        return refuse(ctx, Refusal.MOUNT_EXISTS, f"path is already in use at {path}")
    for other in mounts.scan():
        if path.startswith(other.key) or other.key.startswith(path):
            error = f"path {path} overlaps the auth mount at {other.key}"
            return refuse(ctx, Refusal.MOUNT_EXISTS, error)
        if other.value["accessor"] == accessor:
            return refuse(ctx, Refusal.INVALID, f"mount accessor {accessor} is in use")
    row = {"type": method_type, "description": description, "accessor": accessor, "created": now}
    mounts.put(path, row, ctx.index)
    return WriteResult(True, ctx.index, {"path": path, "accessor": accessor})


def apply_mount_disable(ctx: ApplyContext, body: Any) -> WriteResult:
    """The mount, its roles, secret IDs and users, and, as Vault logs out everyone an
    auth method logged in, every token whose path is under `auth/<path>` (with its
    children). Disabling a path with no mount is not an error (Vault)."""
    path = get_str(as_map(body), "path")
    store, index = ctx.store, ctx.index
    if store.table(MOUNTS_TABLE).delete(path, index) is None:
        return WriteResult(True, index, {"disabled": False, "revoked": []})
    approle.drop_mount(store, path, index)
    userpass.drop_mount(store, path, index)
    rows = [tokens.full_row(row.value) for row in store.table(tokens.TOKENS_TABLE).scan()]
    issued = [row["accessor"] for row in rows if row["path"].startswith("auth/" + path)]
    revoked: list[str] = []
    for accessor in issued:
        if tokens.hash_of(store, accessor) is not None:  # not already gone with a parent
            revoked.extend(tokens.revoke_tree(store, accessor, index))
    return WriteResult(True, index, {"disabled": True, "revoked": revoked})


# -- reads


@dataclass(frozen=True, slots=True)
class AuthMount:
    path: str  # ends with "/"
    type: str  # approle | userpass
    description: str
    accessor: str
    created: float


def get_mount(store: StateStore, path: str) -> AuthMount | None:
    row = store.table(MOUNTS_TABLE).get(path)
    if row is None:
        return None
    v = row.value
    return AuthMount(row.key, v["type"], v["description"], v["accessor"], float(v["created"]))


def list_mounts(store: StateStore) -> list[AuthMount]:
    """Every auth mount, by path ("token/" is not one: the backend adds it)."""
    return [m for path in store.table(MOUNTS_TABLE).keys("") if (m := get_mount(store, path))]


def find_mount(store: StateStore, rel: str) -> AuthMount | None:
    """The auth mount serving `rel`, a path after "auth/" ("approle/login" ->
    "approle/"; "approle" too, as Vault's router tries the path with "/" added).
    Mounts never nest, so the first match is the only one."""
    mounts = store.table(MOUNTS_TABLE)
    path = rel if rel.endswith("/") else rel + "/"
    for at, char in enumerate(path):
        if char == "/" and path[: at + 1] in mounts:
            return get_mount(store, path[: at + 1])
    return None
