"""Vault-style tokens, ACL policies and token roles as replicated state.

Commands (bodies are msgpack maps; times are unix seconds, durations whole seconds,
everything generated or timed is chosen by the leader and travels in the body):

  120 acl.token_create   {hash, accessor, parent_accessor, policies, now, ttl?,
                         explicit_max_ttl?, period?, num_uses?, renewable?, orphan?,
                         display_name?, meta?, role?, path?} -> the token row
  121 acl.token_renew    {accessor, now, increment?} -> {accessor, ttl, expire_time}
  122 acl.token_revoke   {accessor, orphan_children?} -> {revoked: [accessor, ...]}
  123 acl.token_use      {accessor, now?} -> {remaining, revoked}
  124 acl.token_expire   {now, limit} -> {revoked, more}
  125 acl.policy_set     {name, text, now} -> {name}
  126 acl.policy_delete  {name} -> {deleted}
  127 acl.role_set       {name, allowed_policies?, disallowed_policies?, orphan?,
                         renewable?, token_period?, token_explicit_max_ttl?,
                         token_ttl?, path_suffix?, token_type?} -> {name}
  128 acl.role_delete    {name} -> {deleted}

A malformed body raises (a bug in the proposer: the node stops); a refusal any
replica would make alike returns `WriteResult(False, index, {"error": reason})`.
The token rules follow Vault's token store: a child's policies are a subset of its
parent's unless the parent holds "root"; a role with allowed or disallowed policies
decides instead; only a root token makes root tokens; a token with a use limit
makes no children; TTLs default to and are capped by the system's 32 days; root
tokens without a TTL never expire. Revoking a token revokes its descendants
(children first), unless they are orphaned instead. Token rows and indexes are
laid out in `tokens.py`; caller-side checks (sudo for orphans and periods, HCL
validation, adding "default") belong to the API layer before it proposes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from stack.state import tokens
from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.fields import as_bool, as_seconds
from stack.state.fields import as_map as _map
from stack.state.store import Row, StateStore
from stack.state.tokens import ACCESSORS_TABLE, TOKENS_TABLE, hash_secret

TOKEN_CREATE = 120
TOKEN_RENEW = 121
TOKEN_REVOKE = 122
TOKEN_USE = 123
TOKEN_EXPIRE = 124
POLICY_SET = 125
POLICY_DELETE = 126
ROLE_SET = 127
ROLE_DELETE = 128

POLICIES_TABLE = "acl_policies"
ROLES_TABLE = "acl_token_roles"

SYSTEM_MAX_TTL = 768 * 3600  # Vault's default max_lease_ttl (32 days)
DEFAULT_TTL = SYSTEM_MAX_TTL  # Vault's default_lease_ttl
ROOT = "root"
DEFAULT = "default"
SERVICE = "service"
ROLE_TOKEN_TYPES = ("default", "default-service", "service")
BATCH_TOKEN_TYPES = ("batch", "default-batch")
MAX_SECONDS = 2**32  # bounds every duration and count in a body

POLICY_NAME = re.compile(r"[a-z0-9_.-]{1,128}")
NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # accessors and role names: never "/"
SECRET_HASH = re.compile(r"[0-9a-f]{64}")
PATH_SUFFIX = re.compile(r"[A-Za-z0-9_.\-/]{0,128}")


@dataclass(frozen=True, slots=True)
class TokenView:
    """A token as stored, every field present (rows written by TOKEN_SET read with
    the bootstrap defaults). `ttl` is the TTL granted at creation; `expire_time`
    moves with renewals; `num_uses` is the uses left (0: unlimited)."""

    secret_hash: str
    accessor: str
    policies: tuple[str, ...]
    parent: str
    orphan: bool
    display_name: str
    meta: dict[str, str]
    creation_time: float
    ttl: int
    expire_time: float  # 0: never
    explicit_max_ttl: int
    period: int
    num_uses: int
    renewable: bool
    role: str
    type: str
    path: str
    create_index: int
    modify_index: int

    @property
    def is_root(self) -> bool:
        return ROOT in self.policies

    def expired(self, now: float) -> bool:
        return _expired(self.expire_time, now)

    def ttl_remaining(self, now: float) -> float:
        """Seconds left before expiry; 0 once expired, and 0 for a token that never
        expires (as Vault reports a root token's ttl)."""
        return max(0.0, self.expire_time - now) if self.expire_time else 0.0


@dataclass(frozen=True, slots=True)
class TokenRole:
    name: str
    allowed_policies: tuple[str, ...]
    disallowed_policies: tuple[str, ...]
    orphan: bool
    renewable: bool
    token_period: int
    token_explicit_max_ttl: int
    token_ttl: int
    path_suffix: str
    token_type: str


def register(registry: CommandRegistry) -> None:
    registry.register(TOKEN_CREATE, "acl.token_create", apply_token_create)
    registry.register(TOKEN_RENEW, "acl.token_renew", apply_token_renew)
    registry.register(TOKEN_REVOKE, "acl.token_revoke", apply_token_revoke)
    registry.register(TOKEN_USE, "acl.token_use", apply_token_use)
    registry.register(TOKEN_EXPIRE, "acl.token_expire", apply_token_expire)
    registry.register(POLICY_SET, "acl.policy_set", apply_policy_set)
    registry.register(POLICY_DELETE, "acl.policy_delete", apply_policy_delete)
    registry.register(ROLE_SET, "acl.role_set", apply_role_set)
    registry.register(ROLE_DELETE, "acl.role_delete", apply_role_delete)


# -- encoders (the leader's side)


def encode_token_create(
    registry: CommandRegistry,
    *,
    secret_hash: str,
    accessor: str,
    now: float,
    parent_accessor: str = "",
    policies: list[str] | tuple[str, ...] = (),
    ttl: int = 0,
    explicit_max_ttl: int = 0,
    period: int = 0,
    num_uses: int = 0,
    renewable: bool = True,
    orphan: bool = False,
    display_name: str = "token",
    meta: dict[str, str] | None = None,
    role: str = "",
    path: str = "",
) -> bytes:
    body = {
        "hash": secret_hash,
        "accessor": accessor,
        "parent_accessor": parent_accessor,
        "policies": list(policies),
        "ttl": ttl,
        "explicit_max_ttl": explicit_max_ttl,
        "period": period,
        "num_uses": num_uses,
        "renewable": renewable,
        "orphan": orphan,
        "display_name": display_name,
        "meta": dict(meta or {}),
        "role": role,
        "path": path,
        "now": now,
    }
    return registry.encode(TOKEN_CREATE, body)


def encode_token_renew(
    registry: CommandRegistry, *, accessor: str, now: float, increment: int = 0
) -> bytes:
    return registry.encode(TOKEN_RENEW, {"accessor": accessor, "increment": increment, "now": now})


def encode_token_revoke(
    registry: CommandRegistry, *, accessor: str, orphan_children: bool = False
) -> bytes:
    return registry.encode(TOKEN_REVOKE, {"accessor": accessor, "orphan_children": orphan_children})


def encode_token_use(
    registry: CommandRegistry, *, accessor: str, now: float | None = None
) -> bytes:
    body: dict[str, Any] = {"accessor": accessor}
    if now is not None:
        body["now"] = now
    return registry.encode(TOKEN_USE, body)


def encode_token_expire(registry: CommandRegistry, *, now: float, limit: int = 256) -> bytes:
    return registry.encode(TOKEN_EXPIRE, {"now": now, "limit": limit})


def encode_policy_set(registry: CommandRegistry, *, name: str, text: str, now: float) -> bytes:
    return registry.encode(POLICY_SET, {"name": name, "text": text, "now": now})


def encode_policy_delete(registry: CommandRegistry, *, name: str) -> bytes:
    return registry.encode(POLICY_DELETE, {"name": name})


def encode_role_set(
    registry: CommandRegistry,
    *,
    name: str,
    allowed_policies: list[str] | tuple[str, ...] = (),
    disallowed_policies: list[str] | tuple[str, ...] = (),
    orphan: bool = False,
    renewable: bool = True,
    token_period: int = 0,
    token_explicit_max_ttl: int = 0,
    token_ttl: int = 0,
    path_suffix: str = "",
    token_type: str = "default-service",
) -> bytes:
    body = {
        "name": name,
        "allowed_policies": list(allowed_policies),
        "disallowed_policies": list(disallowed_policies),
        "orphan": orphan,
        "renewable": renewable,
        "token_period": token_period,
        "token_explicit_max_ttl": token_explicit_max_ttl,
        "token_ttl": token_ttl,
        "path_suffix": path_suffix,
        "token_type": token_type,
    }
    return registry.encode(ROLE_SET, body)


def encode_role_delete(registry: CommandRegistry, *, name: str) -> bytes:
    return registry.encode(ROLE_DELETE, {"name": name})


# -- body fields: wrong types raise TypeError, wrong values ValueError


def _str(b: dict[str, Any], key: str, default: str | None = None, pattern: Any = None) -> str:
    """A string field; required when `default` is None. An optional field may be
    empty; otherwise a `pattern` must match the whole value."""
    if key not in b and default is None:
        raise TypeError(f"{key} is required")
    value = b.get(key, default)
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string, not {type(value).__name__}")
    if pattern is not None and (value or default is None) and not pattern.fullmatch(value):
        raise ValueError(f"{key} {value[:140]!r} does not match {pattern.pattern}")
    return value


def _count(b: dict[str, Any], key: str, default: int = 0) -> int:
    value = b.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an integer, not {type(value).__name__}")
    if not 0 <= value <= MAX_SECONDS:
        raise ValueError(f"{key} {value} outside 0..{MAX_SECONDS}")
    return value


def _flag(b: dict[str, Any], key: str, default: bool) -> bool:
    return as_bool(b.get(key, default), key)


def _time(b: dict[str, Any], key: str) -> float:
    if key not in b:
        raise TypeError(f"{key} is required")
    value = b[key]
    seconds = as_seconds(value, key)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{key} must be a finite time >= 0, got {value}")
    return seconds


def _names(b: dict[str, Any], key: str, required: bool = False) -> list[str]:
    """A list of policy names, sorted and deduplicated."""
    if required and key not in b:
        raise TypeError(f"{key} is required")
    value = b.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key} must be a list of strings")
    for name in value:
        if not POLICY_NAME.fullmatch(name):
            raise ValueError(f"{key}: bad policy name {name[:140]!r}")
    return sorted(set(value))


def _meta(b: dict[str, Any]) -> dict[str, str]:
    value = b.get("meta", {})
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError("meta must map strings to strings")
    return dict(sorted(value.items()))


# -- token commands


def _refuse(ctx: ApplyContext, reason: str) -> WriteResult:
    return WriteResult(False, ctx.index, {"error": reason})


def _expired(expire_time: float, now: float) -> bool:
    return bool(expire_time) and expire_time <= now


def _max_ttl(explicit_max_ttl: int) -> int:
    return min(explicit_max_ttl, SYSTEM_MAX_TTL) if explicit_max_ttl else SYSTEM_MAX_TTL


def _lesser(a: int, b: int) -> int:
    """The smaller of two limits where 0 means unset (Vault's rule for a role's
    period and explicit max TTL against the request's)."""
    return min(a, b) if a and b else a or b


def _policy_refusal(
    policies: list[str], parent: dict[str, Any] | None, role: TokenRole | None
) -> str | None:
    if role is not None and (role.allowed_policies or role.disallowed_policies):
        if role.allowed_policies:
            # "default" is allowed by every role that does not disallow it, as in Vault.
            allowed = {*role.allowed_policies, DEFAULT}
            extra = [p for p in policies if p not in allowed]
            if extra:
                return f"policies not allowed by role {role.name}: {', '.join(extra)}"
        banned = [p for p in policies if p in role.disallowed_policies]
        if banned:
            return f"policies disallowed by role {role.name}: {', '.join(banned)}"
    elif parent is not None and ROOT not in parent["policies"]:
        extra = [p for p in policies if p not in parent["policies"]]
        if extra:
            return (
                f"child policies must be a subset of the parent's, which lacks {', '.join(extra)}"
            )
    if ROOT in policies and (parent is None or ROOT not in parent["policies"]):
        return "root tokens may only be created by a root token"
    return None


def apply_token_create(ctx: ApplyContext, body: Any) -> WriteResult:
    b = _map(body)
    secret_hash = _str(b, "hash", pattern=SECRET_HASH)
    accessor = _str(b, "accessor", pattern=NAME)
    parent_accessor = _str(b, "parent_accessor", "", NAME)
    policies = _names(b, "policies", required=True)
    ttl, explicit_max_ttl, period = (_count(b, k) for k in ("ttl", "explicit_max_ttl", "period"))
    num_uses = _count(b, "num_uses")
    renewable, orphan = _flag(b, "renewable", True), _flag(b, "orphan", False)
    display_name, path = _str(b, "display_name", "token"), _str(b, "path", "")
    role_name = _str(b, "role", "", NAME)
    meta, now = _meta(b), _time(b, "now")
    store = ctx.store

    if secret_hash in store.table(TOKENS_TABLE):
        return _refuse(ctx, "a token with this secret already exists")
    if accessor in store.table(ACCESSORS_TABLE):
        return _refuse(ctx, f"accessor {accessor} is already in use")
    parent: dict[str, Any] | None = None
    if parent_accessor:
        found = tokens.by_accessor(store, parent_accessor)
        if found is None:
            return _refuse(ctx, f"parent token {parent_accessor} not found")
        parent = found[1]
        if _expired(parent["expire_time"], now):
            return _refuse(ctx, f"parent token {parent_accessor} has expired")
        if parent["num_uses"]:
            return _refuse(ctx, "a token with a use limit cannot create child tokens")
    role: TokenRole | None = None
    if role_name:
        role = get_role(store, role_name)
        if role is None:
            return _refuse(ctx, f"unknown token role {role_name}")
        orphan = orphan or role.orphan
        renewable = renewable and role.renewable
        explicit_max_ttl = _lesser(explicit_max_ttl, role.token_explicit_max_ttl)
        period = _lesser(period, role.token_period)
        ttl = ttl or role.token_ttl
    if parent is None and not orphan:
        return _refuse(ctx, "a token without a parent must be an orphan")
    reason = _policy_refusal(policies, parent, role)
    if reason is not None:
        return _refuse(ctx, reason)

    if period:
        granted = min(period, _max_ttl(explicit_max_ttl))
    elif ttl or ROOT not in policies:
        granted = min(ttl or DEFAULT_TTL, _max_ttl(explicit_max_ttl))
    else:
        granted = explicit_max_ttl  # a root token without a TTL never expires, unless capped
    if not granted:
        renewable = False  # nothing to renew
        if parent is not None and parent["expire_time"]:
            return _refuse(ctx, "an expiring root token cannot create a non-expiring one")
    if not path:
        if role is not None:
            path = f"auth/token/create/{role.name}"
            path += f"/{role.path_suffix}" if role.path_suffix else ""
        else:
            path = "auth/token/create-orphan" if orphan else "auth/token/create"
    row = {
        "accessor": accessor,
        "policies": policies,
        "parent": "" if orphan else parent_accessor,
        "orphan": orphan,
        "display_name": display_name,
        "meta": meta,
        "creation_time": now,
        "ttl": granted,
        "expire_time": now + granted if granted else 0.0,
        "explicit_max_ttl": explicit_max_ttl,
        "period": period,
        "num_uses": num_uses,
        "renewable": renewable,
        "role": role_name,
        "type": SERVICE,
        "path": path,
    }
    tokens.put_token(store, secret_hash, row, ctx.index)
    return WriteResult(True, ctx.index, {**row, "policies": list(policies), "meta": dict(meta)})


def apply_token_renew(ctx: ApplyContext, body: Any) -> WriteResult:
    b = _map(body)
    accessor = _str(b, "accessor", pattern=NAME)
    increment, now = _count(b, "increment"), _time(b, "now")
    found = tokens.by_accessor(ctx.store, accessor)
    if found is None:
        return _refuse(ctx, f"token {accessor} not found")
    secret_hash, row = found
    if not row["renewable"]:
        return _refuse(ctx, f"token {accessor} is not renewable")
    if not row["expire_time"]:
        return _refuse(ctx, f"token {accessor} does not expire")
    if _expired(row["expire_time"], now):
        return _refuse(ctx, f"token {accessor} has expired")
    created, explicit = row["creation_time"], row["explicit_max_ttl"]
    if row["period"]:  # a periodic token renews by its period, ignoring the increment
        ttl = min(row["period"], _max_ttl(explicit))
        limit = created + explicit if explicit else math.inf
    else:
        ttl = min(increment or row["ttl"] or DEFAULT_TTL, SYSTEM_MAX_TTL)
        limit = created + _max_ttl(explicit)
    if limit <= now:
        return _refuse(ctx, f"token {accessor} has reached its maximum TTL")
    granted: float = ttl if now + ttl <= limit else limit - now
    expire_time = min(now + ttl, limit)
    tokens.put_token(ctx.store, secret_hash, {**row, "expire_time": expire_time}, ctx.index)
    return WriteResult(
        True, ctx.index, {"accessor": accessor, "ttl": granted, "expire_time": expire_time}
    )


def apply_token_revoke(ctx: ApplyContext, body: Any) -> WriteResult:
    b = _map(body)
    accessor = _str(b, "accessor", pattern=NAME)
    orphan_children = _flag(b, "orphan_children", False)
    found = tokens.by_accessor(ctx.store, accessor)
    if found is None:
        return _refuse(ctx, f"token {accessor} not found")
    if orphan_children:
        tokens.orphan_children(ctx.store, accessor, ctx.index)
        tokens.delete_token(ctx.store, found[0], ctx.index)
        revoked = [accessor]
    else:
        revoked = tokens.revoke_tree(ctx.store, accessor, ctx.index)
    return WriteResult(True, ctx.index, {"revoked": revoked})


def apply_token_use(ctx: ApplyContext, body: Any) -> WriteResult:
    b = _map(body)
    accessor = _str(b, "accessor", pattern=NAME)
    now = _time(b, "now") if "now" in b else None
    found = tokens.by_accessor(ctx.store, accessor)
    if found is None:
        return _refuse(ctx, f"token {accessor} not found")
    secret_hash, row = found
    if now is not None and _expired(row["expire_time"], now):
        return _refuse(ctx, f"token {accessor} has expired")
    if not row["num_uses"]:
        return _refuse(ctx, f"token {accessor} has no use limit")
    remaining = row["num_uses"] - 1
    revoked: list[str] = []
    if remaining:
        tokens.put_token(ctx.store, secret_hash, {**row, "num_uses": remaining}, ctx.index)
    else:  # the last use: Vault revokes the token (and its tree) once it is spent
        revoked = tokens.revoke_tree(ctx.store, accessor, ctx.index)
    return WriteResult(True, ctx.index, {"remaining": remaining, "revoked": revoked})


def apply_token_expire(ctx: ApplyContext, body: Any) -> WriteResult:
    """Revoke expired tokens (each with its tree), earliest first. Stops before
    starting another tree once `limit` accessors were revoked; `more` says whether
    expired tokens remain, so the leader proposes again without waiting."""
    b = _map(body)
    now, limit = _time(b, "now"), _count(b, "limit")
    if limit < 1:
        raise ValueError("limit must be at least 1")
    revoked: list[str] = []
    more = False
    for accessor, _ in tokens.due(ctx.store, now):
        if len(revoked) >= limit:
            more = True
            break
        revoked.extend(tokens.revoke_tree(ctx.store, accessor, ctx.index))
    return WriteResult(True, ctx.index, {"revoked": revoked, "more": more})


# -- policies and roles


def apply_policy_set(ctx: ApplyContext, body: Any) -> WriteResult:
    b = _map(body)
    name, text, now = _str(b, "name", pattern=POLICY_NAME), _str(b, "text"), _time(b, "now")
    if name == ROOT:
        return _refuse(ctx, "the root policy cannot be changed")
    table = ctx.store.table(POLICIES_TABLE)
    old = table.get(name)
    created = now if old is None else old.value["create_time"]
    row = {"name": name, "text": text, "create_time": created, "update_time": now}
    table.put(name, row, ctx.index)
    return WriteResult(True, ctx.index, {"name": name})


def apply_policy_delete(ctx: ApplyContext, body: Any) -> WriteResult:
    name = _str(_map(body), "name", pattern=POLICY_NAME)
    if name in (ROOT, DEFAULT):
        return _refuse(ctx, f"the {name} policy cannot be deleted")
    deleted = ctx.store.table(POLICIES_TABLE).delete(name, ctx.index) is not None
    return WriteResult(True, ctx.index, {"deleted": deleted})


def apply_role_set(ctx: ApplyContext, body: Any) -> WriteResult:
    b = _map(body)
    name = _str(b, "name", pattern=NAME)
    token_type = _str(b, "token_type", "default-service")
    if token_type in BATCH_TOKEN_TYPES:
        return _refuse(ctx, f"token type {token_type} is not supported: only service tokens")
    if token_type not in ROLE_TOKEN_TYPES:
        raise ValueError(f"unknown token type {token_type!r}")
    path_suffix = _str(b, "path_suffix", "", PATH_SUFFIX)
    if ".." in path_suffix:
        raise ValueError("path_suffix must not contain '..'")
    row = {
        "name": name,
        "allowed_policies": _names(b, "allowed_policies"),
        "disallowed_policies": _names(b, "disallowed_policies"),
        "orphan": _flag(b, "orphan", False),
        "renewable": _flag(b, "renewable", True),
        "token_period": _count(b, "token_period"),
        "token_explicit_max_ttl": _count(b, "token_explicit_max_ttl"),
        "token_ttl": _count(b, "token_ttl"),
        "path_suffix": path_suffix,
        "token_type": token_type,
    }
    ctx.store.table(ROLES_TABLE).put(name, row, ctx.index)
    return WriteResult(True, ctx.index, {"name": name})


def apply_role_delete(ctx: ApplyContext, body: Any) -> WriteResult:
    name = _str(_map(body), "name", pattern=NAME)
    deleted = ctx.store.table(ROLES_TABLE).delete(name, ctx.index) is not None
    return WriteResult(True, ctx.index, {"deleted": deleted})


# -- reads


def _view(row: Row) -> TokenView:
    v = tokens.full_row(row.value)
    fields = {name: v[name] for name in TokenView.__dataclass_fields__ if name in v}
    fields["policies"] = tuple(v["policies"])
    fields["meta"] = dict(v["meta"])
    fields["creation_time"] = float(v["creation_time"])
    fields["expire_time"] = float(v["expire_time"])
    return TokenView(
        secret_hash=row.key, create_index=row.create_index, modify_index=row.modify_index, **fields
    )


def lookup_hash(store: StateStore, secret_hash: str, now: float | None = None) -> TokenView | None:
    """The token stored under `secret_hash`; None if absent, or expired at `now`."""
    row = store.table(TOKENS_TABLE).get(secret_hash)
    if row is None:
        return None
    view = _view(row)
    return None if now is not None and view.expired(now) else view


def lookup_secret(store: StateStore, secret: str, now: float | None = None) -> TokenView | None:
    """The token whose secret this is; None if unknown, or expired at `now`
    (a spent limited-use token is revoked by its last use, so it is unknown)."""
    return lookup_hash(store, hash_secret(secret), now)


def lookup_accessor(store: StateStore, accessor: str, now: float | None = None) -> TokenView | None:
    secret_hash = tokens.hash_of(store, accessor)
    return None if secret_hash is None else lookup_hash(store, secret_hash, now)


def list_accessors(store: StateStore) -> list[str]:
    return store.table(ACCESSORS_TABLE).keys()


def children(store: StateStore, accessor: str) -> list[str]:
    """Accessors of the token's direct children, sorted."""
    return tokens.child_accessors(store, accessor)


def get_policy(store: StateStore, name: str) -> str | None:
    """A stored policy's text (None if there is none: "root" never is stored)."""
    row = store.table(POLICIES_TABLE).get(name)
    return None if row is None else str(row.value["text"])


def list_policies(store: StateStore) -> list[str]:
    """Names of the stored policies, sorted (the built-in root policy is not one)."""
    return store.table(POLICIES_TABLE).keys()


def get_role(store: StateStore, name: str) -> TokenRole | None:
    row = store.table(ROLES_TABLE).get(name)
    if row is None:
        return None
    fields = {field: row.value[field] for field in TokenRole.__dataclass_fields__}
    for field in ("allowed_policies", "disallowed_policies"):
        fields[field] = tuple(fields[field])
    return TokenRole(**fields)


def list_roles(store: StateStore) -> list[str]:
    return store.table(ROLES_TABLE).keys()
