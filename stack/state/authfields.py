"""What the auth-method state modules share (`auth.py`, `approle.py`,
`userpass.py`): the mount table they hang off, key layout, the refusal codes,
the body field readers only they use (the common ones are in `fields.py`), and
the token fields a role or user puts in the tokens it issues (`TOKEN_DEFAULTS`)
with their validation.

Validation functions raise ValueError for what a user got wrong (the backend
answers 400 with the message; apply refuses with the same) and TypeError for a
wrong type (a bug in the proposer: the node stops).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stack.state.commands import ApplyContext, WriteResult
from stack.state.fields import as_bool, as_int, as_seconds, as_str_map, as_strings, get_str

MOUNTS_TABLE = "auth_mounts"
SEP = "\x00"  # joins mount path, name and hash in keys; no part may hold it
MAX_SECONDS = 2**32  # bounds every duration and count, as acl.py

NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # roles, users, mount path segments, accessors
POLICY_NAME = re.compile(r"[a-z0-9_.-]{1,128}")  # as acl.POLICY_NAME
TOKEN_TYPES = ("default", "service", "default-service")
BATCH_TOKEN_TYPES = ("batch", "default-batch")

TOKEN_DEFAULTS: dict[str, Any] = {
    "token_policies": [],
    "token_ttl": 0,
    "token_max_ttl": 0,
    "token_explicit_max_ttl": 0,
    "token_num_uses": 0,
    "token_period": 0,
    "token_no_default_policy": False,
    "token_type": "default",
}
_COUNTS = ("token_ttl", "token_max_ttl", "token_explicit_max_ttl", "token_num_uses",
           "token_period")  # fmt: skip
_LISTS = ("token_policies", "secret_id_bound_cidrs")
_FLAGS = ("bind_secret_id", "token_no_default_policy")
_STRINGS = ("token_type",)


class Refusal(enum.StrEnum):
    """`data["reason"]` of a refused write, for the backend to pick a status code."""

    NO_MOUNT = "no_mount"  # no auth mount there, or one of the other type
    MOUNT_EXISTS = "mount_exists"
    NOT_FOUND = "not_found"  # no such role or user
    INVALID = "invalid"  # a bad name, field or limit
    ROLE_ID_IN_USE = "role_id_in_use"
    EXISTS = "exists"  # a secret ID hash or accessor already there
    INVALID_SECRET_ID = "invalid_secret_id"  # unknown, expired or used up


@dataclass(frozen=True, slots=True)
class TokenParams:
    """What a role or user puts in the tokens it issues."""

    policies: tuple[str, ...]
    ttl: int
    max_ttl: int
    explicit_max_ttl: int
    num_uses: int
    period: int
    no_default_policy: bool
    type: str

    def fields(self) -> dict[str, Any]:
        """Back to the stored field names (`TOKEN_DEFAULTS`' keys)."""
        return {
            "token_policies": list(self.policies),
            "token_ttl": self.ttl,
            "token_max_ttl": self.max_ttl,
            "token_explicit_max_ttl": self.explicit_max_ttl,
            "token_num_uses": self.num_uses,
            "token_period": self.period,
            "token_no_default_policy": self.no_default_policy,
            "token_type": self.type,
        }


def token_params(v: dict[str, Any]) -> TokenParams:
    return TokenParams(
        tuple(v["token_policies"]), int(v["token_ttl"]), int(v["token_max_ttl"]),
        int(v["token_explicit_max_ttl"]), int(v["token_num_uses"]), int(v["token_period"]),
        bool(v["token_no_default_policy"]), str(v["token_type"]),
    )  # fmt: skip


def validate_name(name: str, what: str = "name") -> None:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be str, not {type(name).__name__}")
    if not NAME.fullmatch(name):
        raise ValueError(f"invalid {what} {name[:140]!r} (1-128 of A-Z, a-z, 0-9, '_', '.', '-')")


def validate_token_fields(fields: dict[str, Any]) -> None:
    """The tokens a role or user issues: complete fields (defaults filled in)."""
    for policy in fields["token_policies"]:
        if not POLICY_NAME.fullmatch(policy):
            raise ValueError(f"token_policies: invalid policy name {policy[:140]!r}")
    if "root" in fields["token_policies"]:
        raise ValueError("token_policies: an auth method cannot grant the root policy")
    for name in _COUNTS:
        if not 0 <= fields[name] <= MAX_SECONDS:
            raise ValueError(f"{name} must be between 0 and {MAX_SECONDS}")
    if fields["token_max_ttl"] and fields["token_ttl"] > fields["token_max_ttl"]:
        raise ValueError("token_ttl must not be greater than token_max_ttl")
    if fields["token_type"] in BATCH_TOKEN_TYPES:
        raise ValueError("only service tokens are supported (no batch tokens)")
    if fields["token_type"] not in TOKEN_TYPES:
        raise ValueError(f"invalid token_type {fields['token_type'][:140]!r}")


# -- body fields (a wrong type is a bug in the proposer: TypeError)


def get_time(body: dict[str, Any], name: str) -> float:
    """A time field; missing, not finite or negative is a TypeError too."""
    value = as_seconds(body.get(name), name)
    if not math.isfinite(value) or value < 0:
        raise TypeError(f"{name} must be a finite time >= 0")
    return value


def get_str_map(value: Any, name: str) -> dict[str, str]:
    return dict(sorted(as_str_map(value, name).items()))


def get_fields(body: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The fields of `defaults` present in `body`, type-checked. Policies are sorted
    and deduplicated (their order means nothing); CIDR lists are kept as given."""
    out: dict[str, Any] = {}
    for name in defaults:
        if name not in body:
            continue
        value = body[name]
        if name in _LISTS:
            value = as_strings(value, name)
            if name == "token_policies":
                value = sorted(set(value))
        elif name in _FLAGS:
            as_bool(value, name)
        elif name in _STRINGS:
            value = get_str(body, name)
        else:
            value = as_int(value, name)
        out[name] = value
    return out


# -- refusals and keys


def problem(check: Callable[..., Any], *args: Any) -> str | None:
    """The ValueError message of `check(*args)`, None if it passes."""
    try:
        check(*args)
    except ValueError as exc:
        return str(exc)
    return None


def refuse(ctx: ApplyContext, reason: Refusal, error: str) -> WriteResult:
    return WriteResult(False, ctx.index, {"error": error, "reason": reason.value})


def key(*parts: str) -> str:
    return SEP.join(parts)


def mount_of(ctx: ApplyContext, body: dict[str, Any], method_type: str) -> str | WriteResult:
    """The body's mount path if an auth mount of `method_type` is there, else a refusal."""
    mount = get_str(body, "mount")
    found = ctx.store.table(MOUNTS_TABLE).get(mount)
    if found is None or found.value["type"] != method_type:
        error = f"no {method_type} auth method is mounted at {mount[:140]!r}"
        return refuse(ctx, Refusal.NO_MOUNT, error)
    return mount
