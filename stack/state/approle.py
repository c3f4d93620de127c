"""AppRole as replicated state: roles and their secret IDs (Vault's semantics).
Registered by `auth.register`; the command table is in `auth.py`.

A role has a role ID (an identifier, stored as it is, unique within its mount),
login constraints (`bind_secret_id`, `secret_id_bound_cidrs`), terms for the
secret IDs it hands out (`secret_id_num_uses`, `secret_id_ttl`) and the token
fields of `authfields.TOKEN_DEFAULTS`. A secret ID is stored only as the SHA-256
of its text, with an accessor (to look it up or destroy it without knowing it),
its creation and expiry times, the uses it has left (0: unlimited), metadata
(copied into the tokens it logs in) and its own CIDR list (within the role's).

Tables (keys join the parts with NUL):
  auth_approle_roles                mount NUL name -> {role_id, <ROLE_DEFAULTS fields>}
  auth_approle_role_ids             mount NUL role_id -> role name
  auth_approle_secret_ids           mount NUL role NUL hash -> {accessor, creation_time,
                                    expiration_time (0: never), last_updated_time, ttl,
                                    num_uses, metadata, cidr_list}
  auth_approle_secret_id_accessors  mount NUL role NUL accessor -> hash
  auth_approle_secret_id_expiry     "<second, 12 digits>" NUL mount NUL role NUL hash
                                    -> True, so tidy reads only what is due
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Any

from stack.state.authfields import (
    MAX_SECONDS,
    NAME,
    SEP,
    TOKEN_DEFAULTS,
    Refusal,
    TokenParams,
    get_fields,
    get_str_map,
    get_time,
    key,
    mount_of,
    problem,
    refuse,
    token_params,
    validate_name,
    validate_token_fields,
)
from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.fields import as_int, as_map, as_strings, get_str
from stack.state.store import StateStore

ROLE_SET = 182
ROLE_DELETE = 183
ROLE_ID_SET = 184
SECRET_ID_CREATE = 185
SECRET_ID_USE = 186
SECRET_ID_DESTROY = 187
SECRET_ID_TIDY = 188

ROLES_TABLE = "auth_approle_roles"
ROLE_IDS_TABLE = "auth_approle_role_ids"
SECRET_IDS_TABLE = "auth_approle_secret_ids"
SECRET_ID_ACCESSORS_TABLE = "auth_approle_secret_id_accessors"
SECRET_ID_EXPIRY_TABLE = "auth_approle_secret_id_expiry"

MAX_CIDRS = 64
MAX_METADATA_KEYS = 64
MAX_METADATA_KEY_BYTES = 128
MAX_METADATA_VALUE_BYTES = 512
MAX_ROLE_ID = 512
SECRET_HASH = re.compile(r"[0-9a-f]{64}")
_SECOND_DIGITS = 12

ROLE_DEFAULTS: dict[str, Any] = {
    "bind_secret_id": True,
    "secret_id_num_uses": 0,
    "secret_id_ttl": 0,
    "secret_id_bound_cidrs": [],
    **TOKEN_DEFAULTS,
}


def register(registry: CommandRegistry) -> None:
    registry.register(ROLE_SET, "auth.role_set", apply_role_set)
    registry.register(ROLE_DELETE, "auth.role_delete", apply_role_delete)
    registry.register(ROLE_ID_SET, "auth.role_id_set", apply_role_id_set)
    registry.register(SECRET_ID_CREATE, "auth.secret_id_create", apply_secret_id_create)
    registry.register(SECRET_ID_USE, "auth.secret_id_use", apply_secret_id_use)
    registry.register(SECRET_ID_DESTROY, "auth.secret_id_destroy", apply_secret_id_destroy)
    registry.register(SECRET_ID_TIDY, "auth.secret_id_tidy", apply_secret_id_tidy)


# -- validation (ValueError: refused; the backend runs these before proposing)


def validate_role_id(role_id: str) -> None:
    if not isinstance(role_id, str):
        raise TypeError(f"role_id must be str, not {type(role_id).__name__}")
    if not 0 < len(role_id) <= MAX_ROLE_ID or not role_id.isprintable():
        raise ValueError(f"role_id must be 1-{MAX_ROLE_ID} printable characters")


def parse_network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR block or a single address (a /32 or /128); host bits are dropped."""
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise ValueError(f"invalid CIDR block {cidr[:140]!r}") from None


def normalize_cidrs(cidrs: list[str]) -> list[str]:
    """Canonical CIDR strings, duplicates dropped, order kept. Raises ValueError."""
    if len(cidrs) > MAX_CIDRS:
        raise ValueError(f"at most {MAX_CIDRS} CIDR blocks")
    return list(dict.fromkeys(str(parse_network(c)) for c in cidrs))


def cidr_allows(cidrs: list[str] | tuple[str, ...], remote: str) -> bool:
    """Whether the client address `remote` is inside one of `cidrs` (no list: anyone).
    An address that does not parse (a unix socket's "") is outside every list."""
    if not cidrs:
        return True
    try:
        address = ipaddress.ip_address(remote.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in parse_network(c) for c in cidrs)


def cidrs_outside(inner: list[str], outer: list[str] | tuple[str, ...]) -> list[str]:
    """The blocks of `inner` not inside any block of `outer` (no `outer`: none)."""
    if not outer:
        return []
    bounds = [parse_network(c) for c in outer]
    out = []
    for cidr in inner:
        net = parse_network(cidr)
        if not any(_within(net, b) for b in bounds):
            out.append(cidr)
    return out


def _within(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
    bound: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> bool:
    if isinstance(net, ipaddress.IPv4Network) and isinstance(bound, ipaddress.IPv4Network):
        return net.subnet_of(bound)
    if isinstance(net, ipaddress.IPv6Network) and isinstance(bound, ipaddress.IPv6Network):
        return net.subnet_of(bound)
    return False


def validate_metadata(meta: dict[str, str]) -> None:
    if len(meta) > MAX_METADATA_KEYS:
        raise ValueError(f"metadata: at most {MAX_METADATA_KEYS} keys")
    for name, value in meta.items():
        if not 0 < len(name.encode()) <= MAX_METADATA_KEY_BYTES or not name.isprintable():
            raise ValueError(f"metadata key {name[:140]!r}: 1-128 printable bytes")
        if len(value.encode()) > MAX_METADATA_VALUE_BYTES or not value.isprintable():
            raise ValueError(f"metadata value of {name[:140]!r}: at most 512 printable bytes")


def validate_role_fields(fields: dict[str, Any]) -> None:
    """A whole role (defaults filled in)."""
    validate_token_fields(fields)
    for name in ("secret_id_num_uses", "secret_id_ttl"):
        if not 0 <= fields[name] <= MAX_SECONDS:
            raise ValueError(f"{name} must be between 0 and {MAX_SECONDS}")
    cidrs = fields["secret_id_bound_cidrs"]
    if normalize_cidrs(cidrs) != cidrs:
        raise ValueError("secret_id_bound_cidrs must be canonical CIDR blocks, each once")
    if not fields["bind_secret_id"] and not cidrs:
        raise ValueError(
            "at least one constraint must be enabled on the role (bind_secret_id or "
            "secret_id_bound_cidrs)"
        )


def secret_id_terms(
    role_ttl: int, role_num_uses: int, ttl: int | None, num_uses: int | None
) -> tuple[int, int]:
    """A new secret ID's (ttl, num_uses): the request's within the role's, else the
    role's. 0 means unlimited, so it cannot be asked for under a limit (as Vault)."""
    if ttl is None:
        ttl = role_ttl
    elif not 0 <= ttl <= MAX_SECONDS or (role_ttl and (ttl == 0 or ttl > role_ttl)):
        raise ValueError("ttl cannot be longer than the role's secret_id_ttl")
    if num_uses is None:
        num_uses = role_num_uses
    elif not 0 <= num_uses <= MAX_SECONDS or (
        role_num_uses and (num_uses == 0 or num_uses > role_num_uses)
    ):
        raise ValueError("num_uses cannot be higher than the role's secret_id_num_uses")
    return ttl, num_uses


def validate_secret_id_request(
    role: AppRole, metadata: dict[str, str], cidr_list: list[str]
) -> None:
    """What a secret ID may carry, given its role (terms: `secret_id_terms`)."""
    if not role.bind_secret_id:
        raise ValueError("bind_secret_id is not set on the role")
    validate_metadata(metadata)
    if normalize_cidrs(cidr_list) != cidr_list:
        raise ValueError("cidr_list must be canonical CIDR blocks, each once")
    if outside := cidrs_outside(cidr_list, role.secret_id_bound_cidrs):
        raise ValueError(
            f"failed to verify the CIDR restrictions set on the secret ID: {', '.join(outside)} "
            "is outside the role's secret_id_bound_cidrs"
        )


# -- command builders


def encode_role_set(
    registry: CommandRegistry,
    mount: str,
    name: str,
    *,
    generated_role_id: str,
    now: float,
    role_id: str | None = None,
    **fields: Any,
) -> bytes:
    """`fields`: any of `ROLE_DEFAULTS`' keys; only those given change. A new role
    takes `role_id` if given, else `generated_role_id`."""
    unknown = sorted(set(fields) - set(ROLE_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown role fields {unknown}")
    body: dict[str, Any] = {"mount": mount, "name": name, "generated_role_id": generated_role_id,
                            "now": float(now), **fields}  # fmt: skip
    if role_id is not None:
        body["role_id"] = role_id
    return registry.encode(ROLE_SET, body)


def encode_role_delete(registry: CommandRegistry, mount: str, name: str) -> bytes:
    return registry.encode(ROLE_DELETE, {"mount": mount, "name": name})


def encode_role_id_set(registry: CommandRegistry, mount: str, name: str, role_id: str) -> bytes:
    return registry.encode(ROLE_ID_SET, {"mount": mount, "name": name, "role_id": role_id})


def encode_secret_id_create(
    registry: CommandRegistry,
    mount: str,
    role: str,
    *,
    secret_hash: str,
    accessor: str,
    now: float,
    ttl: int | None = None,
    num_uses: int | None = None,
    metadata: dict[str, str] | None = None,
    cidr_list: list[str] | None = None,
) -> bytes:
    """`ttl`, `num_uses` None: the role's."""
    body: dict[str, Any] = {
        "mount": mount,
        "role": role,
        "hash": secret_hash,
        "accessor": accessor,
        "now": float(now),
        "metadata": dict(metadata or {}),
        "cidr_list": list(cidr_list or []),
    }
    if ttl is not None:
        body["ttl"] = ttl
    if num_uses is not None:
        body["num_uses"] = num_uses
    return registry.encode(SECRET_ID_CREATE, body)


def encode_secret_id_use(
    registry: CommandRegistry, mount: str, role: str, *, secret_hash: str, now: float
) -> bytes:
    body = {"mount": mount, "role": role, "hash": secret_hash, "now": float(now)}
    return registry.encode(SECRET_ID_USE, body)


def encode_secret_id_destroy(
    registry: CommandRegistry,
    mount: str,
    role: str,
    *,
    secret_hash: str | None = None,
    accessor: str | None = None,
) -> bytes:
    if (secret_hash is None) == (accessor is None):
        raise TypeError("give exactly one of secret_hash and accessor")
    body: dict[str, Any] = {"mount": mount, "role": role}
    if secret_hash is not None:
        body["hash"] = secret_hash
    else:
        body["accessor"] = accessor
    return registry.encode(SECRET_ID_DESTROY, body)


def encode_secret_id_tidy(
    registry: CommandRegistry, *, now: float, mount: str = "", limit: int = 1000
) -> bytes:
    """`mount` "": every AppRole mount."""
    return registry.encode(SECRET_ID_TIDY, {"now": float(now), "mount": mount, "limit": limit})


# -- roles


def apply_role_set(ctx: ApplyContext, body: Any) -> WriteResult:
    b = as_map(body)
    name, generated = get_str(b, "name"), get_str(b, "generated_role_id")
    changes = get_fields(b, ROLE_DEFAULTS)
    explicit = get_str(b, "role_id") if "role_id" in b else ""
    get_time(b, "now")
    mount = mount_of(ctx, b, "approle")
    if isinstance(mount, WriteResult):
        return mount
    if (bad := problem(validate_name, name, "role name")) is not None:
        return refuse(ctx, Refusal.INVALID, bad)
    roles = ctx.store.table(ROLES_TABLE)
    found = roles.get(key(mount, name))
    old: dict[str, Any] = {**ROLE_DEFAULTS, "role_id": ""} if found is None else found.value
    role_id = explicit or old["role_id"] or generated
    row = {**old, **changes, "role_id": role_id}
    if (bad := problem(validate_role_fields, row)) is not None:
        return refuse(ctx, Refusal.INVALID, bad)
    if (bad := problem(validate_role_id, role_id)) is not None:
        return refuse(ctx, Refusal.INVALID, bad)
    if (refusal := _take_role_id(ctx, mount, name, old["role_id"], role_id)) is not None:
        return refusal
    roles.put(key(mount, name), row, ctx.index)
    answer = {"name": name, "role_id": role_id, "created": found is None}
    return WriteResult(True, ctx.index, answer)


def _take_role_id(
    ctx: ApplyContext, mount: str, name: str, old: str, new: str
) -> WriteResult | None:
    """Point the role-ID index at `name` for `new` (dropping `old`), or refuse when
    another role of the mount has `new`."""
    ids = ctx.store.table(ROLE_IDS_TABLE)
    holder = ids.get(key(mount, new))
    if holder is not None and holder.value != name:
        return refuse(ctx, Refusal.ROLE_ID_IN_USE, "role_id is already in use by another role")
    if old and old != new:
        ids.delete(key(mount, old), ctx.index)
    if holder is None:
        ids.put(key(mount, new), name, ctx.index)
    return None


def apply_role_delete(ctx: ApplyContext, body: Any) -> WriteResult:
    b = as_map(body)
    name = get_str(b, "name")
    mount = mount_of(ctx, b, "approle")
    if isinstance(mount, WriteResult):
        return mount
    store = ctx.store
    found = store.table(ROLES_TABLE).delete(key(mount, name), ctx.index)
    if found is None:
        return WriteResult(True, ctx.index, {"deleted": False})  # Vault: no error
    store.table(ROLE_IDS_TABLE).delete(key(mount, found.value["role_id"]), ctx.index)
    _drop_secret_ids(store, key(mount, name, ""), ctx.index)
    return WriteResult(True, ctx.index, {"deleted": True})


def apply_role_id_set(ctx: ApplyContext, body: Any) -> WriteResult:
    b = as_map(body)
    name, role_id = get_str(b, "name"), get_str(b, "role_id")
    mount = mount_of(ctx, b, "approle")
    if isinstance(mount, WriteResult):
        return mount
    if (bad := problem(validate_role_id, role_id)) is not None:
        return refuse(ctx, Refusal.INVALID, bad)
    roles = ctx.store.table(ROLES_TABLE)
    found = roles.get(key(mount, name))
    if found is None:
        return refuse(ctx, Refusal.NOT_FOUND, f"role {name[:140]!r} does not exist")
    if (refusal := _take_role_id(ctx, mount, name, found.value["role_id"], role_id)) is not None:
        return refusal
    roles.put(found.key, {**found.value, "role_id": role_id}, ctx.index)
    return WriteResult(True, ctx.index, {"name": name, "role_id": role_id})


def drop_mount(store: StateStore, mount: str, index: int) -> None:
    """Delete every role and secret ID of `mount` (its mount row is the caller's)."""
    _drop_secret_ids(store, mount + SEP, index)
    store.table(ROLES_TABLE).delete_prefix(mount + SEP, index)
    store.table(ROLE_IDS_TABLE).delete_prefix(mount + SEP, index)


# -- secret IDs


def _expiry_key(expire: float, mount: str, role: str, secret_hash: str) -> str:
    return key(f"{math.floor(expire):0{_SECOND_DIGITS}d}", mount, role, secret_hash)


def _expired(expiration_time: float, now: float) -> bool:
    return bool(expiration_time) and expiration_time <= now


def _drop_secret_ids(store: StateStore, prefix: str, index: int) -> None:
    """Delete the secret IDs (and their index entries) under a key prefix: a mount's
    ("mount NUL") or a role's ("mount NUL role NUL")."""
    for row in store.table(SECRET_IDS_TABLE).scan(prefix):
        if row.value["expiration_time"]:
            mount, role, secret_hash = row.key.split(SEP)
            expiry = _expiry_key(row.value["expiration_time"], mount, role, secret_hash)
            store.table(SECRET_ID_EXPIRY_TABLE).delete(expiry, index)
    store.table(SECRET_IDS_TABLE).delete_prefix(prefix, index)
    store.table(SECRET_ID_ACCESSORS_TABLE).delete_prefix(prefix, index)


def _delete_secret_id(
    store: StateStore, mount: str, role: str, secret_hash: str, index: int
) -> bool:
    found = store.table(SECRET_IDS_TABLE).delete(key(mount, role, secret_hash), index)
    if found is None:
        return False
    accessor = found.value["accessor"]
    store.table(SECRET_ID_ACCESSORS_TABLE).delete(key(mount, role, accessor), index)
    if found.value["expiration_time"]:
        expiry = _expiry_key(found.value["expiration_time"], mount, role, secret_hash)
        store.table(SECRET_ID_EXPIRY_TABLE).delete(expiry, index)
    return True


def apply_secret_id_create(ctx: ApplyContext, body: Any) -> WriteResult:
    b = as_map(body)
    role_name, secret_hash = get_str(b, "role"), get_str(b, "hash")
    accessor, now = get_str(b, "accessor"), get_time(b, "now")
    ttl = as_int(b["ttl"], "ttl") if "ttl" in b else None
    num_uses = as_int(b["num_uses"], "num_uses") if "num_uses" in b else None
    metadata = get_str_map(b.get("metadata"), "metadata")
    cidr_list = as_strings(b.get("cidr_list"), "cidr_list")
    # The hash and the accessor are made by the proposer, never typed by a user.
    if not SECRET_HASH.fullmatch(secret_hash) or not NAME.fullmatch(accessor):
        raise TypeError("hash must be a SHA-256 hex digest and accessor a NAME")
    mount = mount_of(ctx, b, "approle")
    if isinstance(mount, WriteResult):
        return mount
    role = get_role(ctx.store, mount, role_name)
    if role is None:
        return refuse(ctx, Refusal.NOT_FOUND, f"role {role_name[:140]!r} does not exist")
    try:
        ttl, num_uses = secret_id_terms(role.secret_id_ttl, role.secret_id_num_uses, ttl, num_uses)
        validate_secret_id_request(role, metadata, cidr_list)
    except ValueError as e:
        return refuse(ctx, Refusal.INVALID, str(e))
    secret_ids = ctx.store.table(SECRET_IDS_TABLE)
    accessors = ctx.store.table(SECRET_ID_ACCESSORS_TABLE)
    if key(mount, role_name, secret_hash) in secret_ids:
        return refuse(ctx, Refusal.EXISTS, "a secret ID with this value already exists")
    if key(mount, role_name, accessor) in accessors:
        return refuse(ctx, Refusal.EXISTS, f"secret ID accessor {accessor} is in use")
    expiration = now + ttl if ttl else 0.0
    row = {
        "accessor": accessor,
        "creation_time": now,
        "expiration_time": expiration,
        "last_updated_time": now,
        "ttl": ttl,
        "num_uses": num_uses,
        "metadata": metadata,
        "cidr_list": cidr_list,
    }
    secret_ids.put(key(mount, role_name, secret_hash), row, ctx.index)
    accessors.put(key(mount, role_name, accessor), secret_hash, ctx.index)
    if expiration:
        expiry = _expiry_key(expiration, mount, role_name, secret_hash)
        ctx.store.table(SECRET_ID_EXPIRY_TABLE).put(expiry, True, ctx.index)
    answer = {"accessor": accessor, "ttl": ttl, "num_uses": num_uses,
              "expiration_time": expiration}  # fmt: skip
    return WriteResult(True, ctx.index, answer)


def apply_secret_id_use(ctx: ApplyContext, body: Any) -> WriteResult:
    """One login's use of a secret ID, committed before the token is issued: a
    limited secret ID loses a use and is deleted with its last; an unknown or
    expired one is refused, so two logins racing for the last use cannot both win."""
    b = as_map(body)
    role, secret_hash, now = get_str(b, "role"), get_str(b, "hash"), get_time(b, "now")
    mount = mount_of(ctx, b, "approle")
    if isinstance(mount, WriteResult):
        return mount
    table = ctx.store.table(SECRET_IDS_TABLE)
    found = table.get(key(mount, role, secret_hash))
    if found is None or _expired(found.value["expiration_time"], now):
        return refuse(ctx, Refusal.INVALID_SECRET_ID, "invalid secret ID")
    row = found.value
    left = row["num_uses"]
    answer = {"metadata": dict(row["metadata"]), "deleted": False, "num_uses": left}
    if left == 1:
        _delete_secret_id(ctx.store, mount, role, secret_hash, ctx.index)
        answer.update(num_uses=0, deleted=True)
    elif left > 1:
        table.put(found.key, {**row, "num_uses": left - 1, "last_updated_time": now}, ctx.index)
        answer["num_uses"] = left - 1
    return WriteResult(True, ctx.index, answer)


def apply_secret_id_destroy(ctx: ApplyContext, body: Any) -> WriteResult:
    b = as_map(body)
    role = get_str(b, "role")
    by_hash = "hash" in b
    value = get_str(b, "hash") if by_hash else get_str(b, "accessor")
    mount = mount_of(ctx, b, "approle")
    if isinstance(mount, WriteResult):
        return mount
    secret_hash: str | None = value
    if not by_hash:
        found = ctx.store.table(SECRET_ID_ACCESSORS_TABLE).get(key(mount, role, value))
        secret_hash = None if found is None else str(found.value)
    deleted = secret_hash is not None and _delete_secret_id(
        ctx.store, mount, role, secret_hash, ctx.index
    )
    return WriteResult(True, ctx.index, {"deleted": deleted})


def apply_secret_id_tidy(ctx: ApplyContext, body: Any) -> WriteResult:
    """Delete the secret IDs expired at `now` (of one mount, or of all), earliest
    first, at most `limit`; `more` says whether due ones remain (propose again)."""
    b = as_map(body)
    now, mount, limit = get_time(b, "now"), get_str(b, "mount"), as_int(b.get("limit"), "limit")
    if limit < 1:
        raise TypeError("limit must be at least 1")
    store = ctx.store
    deleted, more = 0, False
    for entry in store.table(SECRET_ID_EXPIRY_TABLE).keys(""):  # a copy: deleted as we go
        second, key_mount, role, secret_hash = entry.split(SEP)
        if int(second) > now:
            break
        if mount and key_mount != mount:
            continue
        row = store.table(SECRET_IDS_TABLE).get(key(key_mount, role, secret_hash))
        if row is None or not _expired(row.value["expiration_time"], now):
            continue  # due later within this second
        if deleted >= limit:
            more = True
            break
        _delete_secret_id(store, key_mount, role, secret_hash, ctx.index)
        deleted += 1
    return WriteResult(True, ctx.index, {"deleted": deleted, "more": more})


# -- reads (pure functions of the store)


@dataclass(frozen=True, slots=True)
class AppRole:
    mount: str
    name: str
    role_id: str
    bind_secret_id: bool
    secret_id_num_uses: int
    secret_id_ttl: int
    secret_id_bound_cidrs: tuple[str, ...]
    token: TokenParams

    def fields(self) -> dict[str, Any]:
        """Back to the stored field names (`ROLE_DEFAULTS`' keys)."""
        return {
            "bind_secret_id": self.bind_secret_id,
            "secret_id_num_uses": self.secret_id_num_uses,
            "secret_id_ttl": self.secret_id_ttl,
            "secret_id_bound_cidrs": list(self.secret_id_bound_cidrs),
            **self.token.fields(),
        }


@dataclass(frozen=True, slots=True)
class SecretId:
    mount: str
    role: str
    secret_hash: str
    accessor: str
    creation_time: float
    expiration_time: float  # 0: never
    last_updated_time: float
    ttl: int
    num_uses: int  # uses left; 0: unlimited
    metadata: dict[str, str]
    cidr_list: tuple[str, ...]

    def expired(self, now: float) -> bool:
        return _expired(self.expiration_time, now)


def get_role(store: StateStore, mount: str, name: str) -> AppRole | None:
    row = store.table(ROLES_TABLE).get(key(mount, name))
    if row is None:
        return None
    v = row.value
    return AppRole(
        mount, name, v["role_id"], bool(v["bind_secret_id"]), int(v["secret_id_num_uses"]),
        int(v["secret_id_ttl"]), tuple(v["secret_id_bound_cidrs"]), token_params(v),
    )  # fmt: skip


def list_roles(store: StateStore, mount: str) -> list[str]:
    prefix = mount + SEP
    return [k[len(prefix) :] for k in store.table(ROLES_TABLE).keys(prefix)]


def role_by_id(store: StateStore, mount: str, role_id: str) -> AppRole | None:
    if SEP in role_id:
        return None
    row = store.table(ROLE_IDS_TABLE).get(key(mount, role_id))
    return None if row is None else get_role(store, mount, str(row.value))


def get_secret_id(store: StateStore, mount: str, role: str, secret_hash: str) -> SecretId | None:
    if SEP in secret_hash:
        return None
    row = store.table(SECRET_IDS_TABLE).get(key(mount, role, secret_hash))
    if row is None:
        return None
    v = row.value
    return SecretId(
        mount, role, secret_hash, v["accessor"], float(v["creation_time"]),
        float(v["expiration_time"]), float(v["last_updated_time"]), int(v["ttl"]),
        int(v["num_uses"]), dict(v["metadata"]), tuple(v["cidr_list"]),
    )  # fmt: skip


def secret_id_by_accessor(
    store: StateStore, mount: str, role: str, accessor: str
) -> SecretId | None:
    if SEP in accessor:
        return None
    row = store.table(SECRET_ID_ACCESSORS_TABLE).get(key(mount, role, accessor))
    return None if row is None else get_secret_id(store, mount, role, str(row.value))


def list_secret_id_accessors(store: StateStore, mount: str, role: str) -> list[str]:
    prefix = key(mount, role, "")
    return [k[len(prefix) :] for k in store.table(SECRET_ID_ACCESSORS_TABLE).keys(prefix)]


def next_secret_id_expiry(store: StateStore) -> float | None:
    """The earliest expiration_time of any secret ID (None if none expires): the
    leader proposes a tidy once it has passed."""
    table = store.table(SECRET_ID_EXPIRY_TABLE)
    first = table.first_key()
    if first is None:
        return None
    second = first.split(SEP, 1)[0]
    times = []
    for entry in table.keys(second + SEP):
        _, mount, role, secret_hash = entry.split(SEP)
        found = get_secret_id(store, mount, role, secret_hash)
        if found is not None:
            times.append(found.expiration_time)
    return min(times, default=float(second))
