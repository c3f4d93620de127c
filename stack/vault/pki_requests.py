"""Request fields of the PKI engine's paths, decoded weakly as Vault does (strings
for booleans, numbers and lists), and the JSON shapes of roles and certificates."""

from __future__ import annotations

from typing import Any

from stack.state.pki_role import MAX_DURATION, Role
from stack.vault.logical import LogicalError
from stack.vault.timefmt import parse_duration, rfc3339

ROLE_LISTS = ("allowed_domains", "cn_validations", "key_usage", "ou", "organization")
ROLE_DURATIONS = ("ttl", "max_ttl", "not_before_duration")


def text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise LogicalError(400, f"{name} must be a string")
    return value


def flag(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", ""):
        return value.strip().lower() in ("true", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise LogicalError(400, f"{name} must be a boolean")


def names(value: Any) -> list[str]:
    """A comma-separated string or a list of strings (Vault accepts both)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise LogicalError(400, "expected a comma-separated string or a list of strings")


def duration(value: Any, name: str = "ttl") -> float:
    if value is None or value == "":
        return 0.0
    seconds = parse_duration(value, name)
    if not 0 <= seconds <= MAX_DURATION:
        raise LogicalError(400, f"{name}: must be between 0 and {MAX_DURATION:.0f} seconds")
    return seconds


def issue_format(body: dict[str, Any]) -> str:
    fmt = text(body, "format") or "pem"
    if fmt not in ("pem", "der", "pem_bundle"):
        raise LogicalError(400, f'unknown format {fmt!r}: "pem", "der" or "pem_bundle"')
    for unsupported in ("uri_sans", "other_sans", "not_after"):
        if body.get(unsupported):
            raise LogicalError(400, f"{unsupported} is not supported by this PKI engine")
    return fmt


def role_from_request(body: dict[str, Any], base: Role) -> tuple[Role, list[str]]:
    """`base` with the fields a role request gives, weakly typed as Vault takes them;
    the names it did not know, for a warning. `name` is the path's (hvac sends it
    in the body too; in Vault the path's value wins), so it is not one of them."""
    values = base.to_dict()
    ignored = sorted(k for k in body if k not in values and k != "name")
    for name, default in Role().to_dict().items():
        if name not in body:
            continue
        value = body[name]
        if name in ROLE_LISTS:
            values[name] = names(value)
        elif name in ROLE_DURATIONS:
            values[name] = duration(value, name)
        elif isinstance(default, bool):
            values[name] = flag(body, name)
        elif name == "key_bits":
            try:
                values[name] = int(value)
            except (TypeError, ValueError):
                raise LogicalError(400, "key_bits must be an integer") from None
        else:
            values[name] = text(body, name)
    return Role.from_dict(values), ignored


def role_json(role: Role) -> dict[str, Any]:
    """A role as Vault's GET roles/<name> shows it (durations in whole seconds)."""
    out = role.to_dict()
    for name in ROLE_DURATIONS:
        out[name] = int(out[name])
    return out


def cert_json(pem: str, revocation_time: float | None) -> dict[str, Any]:
    when = revocation_time or 0.0
    return {
        "certificate": pem,
        "revocation_time": int(when),
        "revocation_time_rfc3339": rfc3339(when),
    }
