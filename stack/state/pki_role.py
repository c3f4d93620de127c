"""A PKI role (Vault's `pki/roles/<name>`): which names and lifetimes a mount's
certificates may have, as a frozen value with Vault's field names and defaults.

The replicated state stores `Role.to_dict()`; the apply function and the engine
both run `validated()`, so a role the engine would refuse is refused by every
replica alike. Name matching lives in `stack/vault/pki_names.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

MAX_DURATION = 100 * 365 * 86400.0  # seconds; keeps times finite and printable
MAX_LIST = 1000  # allowed_domains, ou, organization
MAX_DOMAIN_CHARS = 253
MAX_NAME_ATTR_CHARS = 64  # ub-organization-name and friends (RFC 5280)

_ROLE_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9_])?")

KEY_USAGES = (
    "DigitalSignature",
    "ContentCommitment",
    "KeyEncipherment",
    "DataEncipherment",
    "KeyAgreement",
    "CertSign",
    "CRLSign",
    "EncipherOnly",
    "DecipherOnly",
)
_KEY_USAGE_BY_LOWER = {name.lower(): name for name in KEY_USAGES}
KEY_TYPES = ("ec", "rsa", "ed25519", "any")
EC_BITS = (224, 256, 384, 521)
RSA_BITS = (2048, 3072, 4096, 8192)
DEFAULT_BITS = {"ec": 256, "rsa": 2048, "ed25519": 0, "any": 0}
CN_VALIDATIONS = ("email", "hostname", "disabled")


@dataclass(frozen=True, slots=True)
class Role:
    """A PKI role, with Vault's field names and defaults (but key_type "ec", P-256).

    Durations are seconds; 0 means the mount's default (`ttl`) or maximum
    (`max_ttl`). `key_bits` 0 means the key type's default (`validated()` fills it).
    Frozen and hashable, so the issuing code can cache per-role work.
    """

    allowed_domains: tuple[str, ...] = ()
    allow_bare_domains: bool = False
    allow_subdomains: bool = False
    allow_glob_domains: bool = False
    allow_wildcard_certificates: bool = True
    allow_any_name: bool = False
    allow_localhost: bool = True
    allow_ip_sans: bool = True
    enforce_hostnames: bool = True
    cn_validations: tuple[str, ...] = ("email", "hostname")
    require_cn: bool = True
    use_csr_common_name: bool = True
    use_csr_sans: bool = True
    server_flag: bool = True
    client_flag: bool = True
    code_signing_flag: bool = False
    email_protection_flag: bool = False
    key_usage: tuple[str, ...] = ("DigitalSignature", "KeyAgreement", "KeyEncipherment")
    key_type: str = "ec"
    key_bits: int = 0
    ttl: float = 0.0
    max_ttl: float = 0.0
    not_before_duration: float = 30.0
    no_store: bool = False
    generate_lease: bool = False
    ou: tuple[str, ...] = ()
    organization: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The stored form: msgpack-able, lists for tuples."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> Role:
        """A Role from its stored form. Missing fields take the defaults (a role
        written by an older build); a wrong type or an unknown field is a bug:
        TypeError. Values are not checked here: see `validated`."""
        if not isinstance(raw, dict):
            raise TypeError(f"role must be a map, not {type(raw).__name__}")
        kinds = {f.name: f.default for f in fields(cls)}
        unknown = sorted(set(raw) - set(kinds))
        if unknown:
            raise TypeError(f"unknown role fields {unknown}")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            default = kinds[name]
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise TypeError(f"role {name} must be a bool")
            elif isinstance(default, int):
                if type(value) is not int:
                    raise TypeError(f"role {name} must be an int")
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise TypeError(f"role {name} must be a number")
                value = float(value)
            elif isinstance(default, str):
                if not isinstance(value, str):
                    raise TypeError(f"role {name} must be a str")
            else:
                if not isinstance(value, list | tuple) or not all(
                    isinstance(v, str) for v in value
                ):
                    raise TypeError(f"role {name} must be a list of str")
                value = tuple(value)
            values[name] = value
        return cls(**values)

    def validated(self) -> Role:
        """This role with key_bits resolved, or ValueError naming what is wrong
        (Vault's messages where it has one)."""
        if self.key_type not in KEY_TYPES:
            raise ValueError(f"unknown key_type {self.key_type!r}: one of {', '.join(KEY_TYPES)}")
        bits = self.key_bits or DEFAULT_BITS[self.key_type]
        if self.key_type == "ec" and bits not in EC_BITS:
            raise ValueError(f"unsupported bit length for EC key: {bits}")
        if self.key_type == "rsa" and bits not in RSA_BITS:
            raise ValueError(f"unsupported bit length for RSA key: {bits}")
        if self.key_type in ("ed25519", "any") and bits:
            raise ValueError(f"key_bits must be 0 for key_type {self.key_type!r}")
        for name in ("ttl", "max_ttl", "not_before_duration"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_DURATION:  # also refuses nan
                raise ValueError(f"{name} must be between 0 and {MAX_DURATION:.0f} seconds")
        if self.ttl and self.max_ttl and self.ttl > self.max_ttl:
            raise ValueError('"ttl" value must be less than "max_ttl" value')
        for name in ("allowed_domains", "ou", "organization"):
            value = getattr(self, name)
            limit = MAX_DOMAIN_CHARS if name == "allowed_domains" else MAX_NAME_ATTR_CHARS
            if len(value) > MAX_LIST:
                raise ValueError(f"{name}: at most {MAX_LIST} entries")
            for item in value:
                if len(item) > limit or not item.isprintable():
                    raise ValueError(f"{name}: {item[:80]!r} is not printable or too long")
        for name in ("ou", "organization"):
            if any(not item for item in getattr(self, name)):
                raise ValueError(f"{name}: empty entries are not allowed")
        usages = []
        for usage in self.key_usage:
            canonical = _KEY_USAGE_BY_LOWER.get(usage.strip().lower())
            if canonical is None:
                raise ValueError(f"unknown key_usage {usage!r}: one of {', '.join(KEY_USAGES)}")
            usages.append(canonical)
        if ({"EncipherOnly", "DecipherOnly"} & set(usages)) and "KeyAgreement" not in usages:
            raise ValueError("EncipherOnly and DecipherOnly key usages need KeyAgreement")
        unknown_cn = sorted(set(self.cn_validations) - set(CN_VALIDATIONS))
        if unknown_cn:
            raise ValueError(f"unknown cn_validations {unknown_cn}: email, hostname or disabled")
        if "disabled" in self.cn_validations and len(self.cn_validations) > 1:
            raise ValueError('cn_validations "disabled" cannot be combined with other values')
        return _replace(self, key_bits=bits, key_usage=tuple(dict.fromkeys(usages)))


def _replace(role: Role, **changes: Any) -> Role:
    values = {f.name: getattr(role, f.name) for f in fields(role)}
    values.update(changes)
    return Role(**values)


def validate_role_name(name: str) -> None:
    if not _ROLE_NAME.fullmatch(name):
        raise ValueError(
            f"role name {name[:80]!r} must be 1 to 128 of A-Z a-z 0-9 _ . - "
            "(starting and ending with a letter, digit or _)"
        )
