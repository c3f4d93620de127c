"""The pure half of the auth methods (`auth_backend.py`): reading AppRole and
userpass requests the way Vault does (weak types, deprecated aliases, comma
lists, durations), checking them as the log will, and shaping Vault's answers.
No I/O and no state beyond the values passed in, so all of it is tested directly.
Every function raises `LogicalError(400, ...)` for what a client got wrong.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from stack.state import acl as aclstate
from stack.state import approle, userpass
from stack.state.authfields import (
    MAX_SECONDS,
    NAME,
    POLICY_NAME,
    TOKEN_DEFAULTS,
    TokenParams,
    validate_token_fields,
)
from stack.vault.logical import LogicalError
from stack.vault.timefmt import parse_duration, rfc3339

INVALID_APPROLE = "invalid role or secret ID"
INVALID_USERPASS = "invalid username or password"
NEVER = "0001-01-01T00:00:00Z"  # Go's zero time, as Vault prints "no expiry"


# -- request parsing (pure; LogicalError 400 for what a client got wrong)


def parse_name(raw: str, what: str) -> str:
    """A role or user name from the path: lower-cased, as Vault's userpass and
    AppRole treat names case-insensitively."""
    name = raw.lower()
    if not NAME.fullmatch(name):
        raise LogicalError(400, f"invalid {what} {raw[:140]!r} (A-Z, a-z, 0-9, '_', '.', '-')")
    return name


def parse_count(value: Any, name: str) -> int:
    """An int, a whole float or a numeric string (Vault decodes weakly), in 0..2**32."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise LogicalError(400, f"{name} must be an integer")
    try:
        out = int(value or 0)
    except ValueError:
        raise LogicalError(400, f"{name} must be an integer") from None
    if not 0 <= out <= MAX_SECONDS:
        raise LogicalError(400, f"{name} must be between 0 and {MAX_SECONDS}")
    return out


def parse_seconds(value: Any, name: str) -> int:
    """Seconds or a Go duration ("1h30m"), whole seconds in 0..2**32."""
    seconds = parse_duration(value, name)
    if not 0 <= seconds <= MAX_SECONDS:  # also refuses nan and inf
        raise LogicalError(400, f"{name} must be between 0 and {MAX_SECONDS}s")
    return int(seconds)


def parse_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise LogicalError(400, f"{name} must be a boolean")


def parse_list(value: Any, name: str) -> list[str]:
    """A list of strings or one comma-separated string (hvac and the CLI send both)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LogicalError(400, f"{name} must be a list of strings")
    return [v.strip() for v in value if v.strip()]


def parse_policies(value: Any, name: str = "token_policies") -> list[str]:
    out = sorted({p.lower() for p in parse_list(value, name)})
    for policy in out:
        if not POLICY_NAME.fullmatch(policy):
            raise LogicalError(400, f"{name}: invalid policy name {policy[:140]!r}")
    return out


def parse_cidrs(value: Any, name: str) -> list[str]:
    try:
        return approle.normalize_cidrs(parse_list(value, name))
    except ValueError as e:
        raise LogicalError(400, f"{name}: {e}") from None


def parse_metadata(value: Any) -> dict[str, str]:
    """Secret ID metadata: an object of strings, or that object as a JSON string
    (what hvac and the CLI send)."""
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise LogicalError(400, "metadata must be a JSON object of strings") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise LogicalError(400, "metadata must be an object mapping strings to strings")
    try:
        approle.validate_metadata(value)
    except ValueError as e:
        raise LogicalError(400, str(e)) from None
    return dict(value)


def given(body: dict[str, Any], *names: str) -> tuple[str, Any] | None:
    """The first of `names` present with a value (Vault's token_* field over its
    deprecated alias)."""
    for name in names:
        if body.get(name) is not None:
            return name, body[name]
    return None


def parse_token_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The token fields a role or user write gives (only those), by their stored names."""
    out: dict[str, Any] = {}
    if (found := given(body, "token_policies", "policies")) is not None:
        out["token_policies"] = parse_policies(found[1], found[0])
    for field, alias in (("token_ttl", "ttl"), ("token_max_ttl", "max_ttl"),
                         ("token_period", "period"),
                         ("token_explicit_max_ttl", "token_explicit_max_ttl")):  # fmt: skip
        if (found := given(body, field, alias)) is not None:
            out[field] = parse_seconds(found[1], found[0])
    if body.get("token_num_uses") is not None:
        out["token_num_uses"] = parse_count(body["token_num_uses"], "token_num_uses")
    if body.get("token_no_default_policy") is not None:
        out["token_no_default_policy"] = parse_bool(
            body["token_no_default_policy"], "token_no_default_policy"
        )
    if body.get("token_type") not in (None, ""):
        out["token_type"] = str(body["token_type"])
    for name in ("token_bound_cidrs", "bound_cidrs"):
        if parse_list(body.get(name), name):
            raise LogicalError(400, f"{name} is not supported: tokens here are not bound to CIDRs")
    return out


def parse_role_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The fields an AppRole role write gives (only those)."""
    out = parse_token_fields(body)
    if body.get("bind_secret_id") is not None:
        out["bind_secret_id"] = parse_bool(body["bind_secret_id"], "bind_secret_id")
    if body.get("secret_id_num_uses") is not None:
        out["secret_id_num_uses"] = parse_count(body["secret_id_num_uses"], "secret_id_num_uses")
    if body.get("secret_id_ttl") is not None:
        out["secret_id_ttl"] = parse_seconds(body["secret_id_ttl"], "secret_id_ttl")
    if (found := given(body, "secret_id_bound_cidrs", "bound_cidr_list")) is not None:
        out["secret_id_bound_cidrs"] = parse_cidrs(found[1], found[0])
    # Local secret IDs only differ under performance replication, which one cluster lacks.
    for name in ("local_secret_ids", "enable_local_secret_ids"):
        if body.get(name) is not None:
            parse_bool(body[name], name)
    return out


def check_role(old: approle.AppRole | None, changes: dict[str, Any]) -> None:
    """The role a write would leave, checked as apply will (400 here, not a refusal)."""
    fields = {**(approle.ROLE_DEFAULTS if old is None else old.fields()), **changes}
    try:
        approle.validate_role_fields(fields)
    except ValueError as e:
        raise LogicalError(400, str(e)) from None


def check_user_token_fields(old: userpass.UserpassUser | None, changes: dict[str, Any]) -> None:
    base = TOKEN_DEFAULTS if old is None else old.token.fields()
    try:
        validate_token_fields({**base, **changes})
    except ValueError as e:
        raise LogicalError(400, str(e)) from None


def parse_password(body: dict[str, Any]) -> str:
    password = body.get("password")
    if not isinstance(password, str) or not password:
        raise LogicalError(400, "missing password")
    return password


def secret_id_hash(secret_id: str) -> str:
    """What the log holds instead of a secret ID (not cached, unlike token hashes)."""
    return hashlib.sha256(secret_id.encode("utf-8", "surrogateescape")).hexdigest()


def login_cidr_refusal(
    role: approle.AppRole, entry: approle.SecretId | None, remote: str
) -> str | None:
    """Why a login from `remote` is refused by the secret ID's or the role's CIDR
    list (Vault's messages), or None."""
    if entry is not None and not approle.cidr_allows(entry.cidr_list, remote):
        return f"source address {remote!r} unauthorized through CIDR restrictions on the secret ID"
    if not approle.cidr_allows(role.secret_id_bound_cidrs, remote):
        return f"source address {remote!r} unauthorized by CIDR restrictions on the role"
    return None


def token_policies(params: TokenParams) -> list[str]:
    """The policies a login token gets: the role's or user's, plus "default"."""
    extra = () if params.no_default_policy else (aclstate.DEFAULT,)
    return sorted({*params.policies, *extra})


def lesser(a: int, b: int) -> int:
    """The smaller limit where 0 means none."""
    return min(a, b) if a and b else a or b


# -- answers (pure)


def token_fields_json(params: TokenParams) -> dict[str, Any]:
    return {
        "token_policies": list(params.policies),
        "policies": list(params.policies),
        "token_ttl": params.ttl,
        "token_max_ttl": params.max_ttl,
        "token_explicit_max_ttl": params.explicit_max_ttl,
        "token_num_uses": params.num_uses,
        "token_period": params.period,
        "period": params.period,
        "token_no_default_policy": params.no_default_policy,
        "token_type": params.type,
        "token_bound_cidrs": [],
    }


def role_json(role: approle.AppRole) -> dict[str, Any]:
    return {
        "bind_secret_id": role.bind_secret_id,
        "local_secret_ids": False,
        "secret_id_bound_cidrs": list(role.secret_id_bound_cidrs),
        "secret_id_num_uses": role.secret_id_num_uses,
        "secret_id_ttl": role.secret_id_ttl,
        **token_fields_json(role.token),
    }


def secret_id_json(entry: approle.SecretId) -> dict[str, Any]:
    return {
        "cidr_list": list(entry.cidr_list),
        "creation_time": rfc3339(entry.creation_time),
        "expiration_time": rfc3339(entry.expiration_time) or NEVER,
        "last_updated_time": rfc3339(entry.last_updated_time),
        "metadata": dict(entry.metadata),
        "secret_id_accessor": entry.accessor,
        "secret_id_num_uses": entry.num_uses,
        "secret_id_ttl": entry.ttl,
        "token_bound_cidrs": [],
    }


def auth_block(token: aclstate.TokenView, secret: str, lease: float) -> dict[str, Any]:
    """Vault's `auth` answer to a login, in the shape hvac reads."""
    return {
        "client_token": secret,
        "accessor": token.accessor,
        "policies": list(token.policies),
        "token_policies": list(token.policies),
        "identity_policies": None,
        "metadata": dict(token.meta),
        "lease_duration": int(lease),
        "renewable": token.renewable,
        "entity_id": "",
        "token_type": "service",
        "orphan": True,
        "mfa_requirement": None,
        "num_uses": token.num_uses,
    }


def mount_json(method_type: str, description: str, accessor: str) -> dict[str, Any]:
    return {
        "type": method_type,
        "description": description,
        "accessor": accessor,
        "config": {"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": False,
                   "token_type": "default-service"},
        "options": None,
        "local": False,
        "seal_wrap": False,
        "external_entropy_access": False,
    }  # fmt: skip


def check_role_id(role_id: Any) -> None:
    if not isinstance(role_id, str) or not role_id:
        raise LogicalError(400, "missing role_id")
    try:
        approle.validate_role_id(role_id)
    except ValueError as e:
        raise LogicalError(400, str(e)) from None
