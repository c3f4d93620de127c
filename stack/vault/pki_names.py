"""Vault's PKI role name rules, pure: which common names, DNS names, emails and IP
addresses a role allows (builtin/logical/pki/cert_util.go `validateNames`).

- `allowed_domains` with `allow_bare_domains`: the domain itself (case-insensitive),
  or an email at it;
- with `allow_subdomains`: any name ending in "." + domain, at any depth, and a
  wildcard whose remainder is the domain or a subdomain ("*.example.com",
  "*.a.example.com");
- with `allow_glob_domains`: a domain holding "*" is a glob over the whole name
  ("*" matches dots too);
- `allow_localhost`: "localhost" and "localdomain" (and their subdomains with
  allow_subdomains); `allow_any_name`: anything that passes `enforce_hostnames`;
- `allow_wildcard_certificates` false refuses any name with "*"; at most one "*",
  in the left-most label;
- `allow_ip_sans`: any IP address, or none.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from stack.state.pki_role import Role

_CN_MAX = 64  # ub-common-name (RFC 5280)
_LABEL = r"([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])"
HOSTNAME = re.compile(rf"^(\*\.)?({_LABEL}\.)*{_LABEL}\.?$")
_LEFT_WILD_LABEL = re.compile(r"^([a-zA-Z0-9][a-zA-Z0-9\-]*)?\*([a-zA-Z0-9\-]*[a-zA-Z0-9])?$")
_LONG_LABEL = re.compile(r"[^.]{64}")
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PkiError(ValueError):
    """A request the PKI engine refuses; the message is for the user (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Names:
    """What a certificate will carry once the role allowed it."""

    common_name: str
    dns: tuple[str, ...]
    emails: tuple[str, ...]
    ips: tuple[IpAddress, ...]


def glob_match(pattern: str, name: str) -> bool:
    """ryanuber/go-glob, as Vault's allow_glob_domains uses it: ``*`` matches any run
    of characters, dots included; case matters."""
    if pattern == "*":
        return True
    parts = pattern.split("*")
    if len(parts) == 1:
        return name == pattern
    rest = name
    for i, part in enumerate(parts[:-1]):
        idx = rest.find(part)
        if (i == 0 and idx != 0) or idx < 0:
            return False
        rest = rest[idx + len(part) :]
    return pattern.endswith("*") or rest.endswith(parts[-1])


def _to_ascii(name: str) -> str:
    """The A-label form of a domain name (IDNA), refusing empty or overlong labels."""
    if name.isascii():
        converted = name
    else:
        try:
            converted = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise PkiError(f"{name!r} is not a valid internationalized domain name") from None
    bare = converted[:-1] if converted.endswith(".") else converted
    if (
        not bare
        or len(converted) > 253
        or ".." in bare
        or bare[0] == "."
        or bare[-1] == "."
        or _LONG_LABEL.search(bare)
    ):
        raise PkiError(f"{name!r} has an empty or overlong label")
    return converted


def _a_label(text: str) -> str:
    """`text` with its domain in IDNA A-label form when it converts, else as is, so a
    name and an allowed domain compare alike whichever form each was given in."""
    if text.isascii():
        return text
    local, at, domain = text.rpartition("@")
    try:
        return local + at + domain.encode("idna").decode("ascii")
    except UnicodeError:
        return text


def name_allowed(role: Role, name: str) -> bool:
    """Vault's validateNames for one name (builtin/logical/pki/cert_util.go); names
    and allowed domains are compared in A-label form."""
    name = _a_label(name)
    reduced = email_domain = name
    wildcard_label = ""
    is_email = is_wildcard = False
    if "@" in reduced:
        parts = reduced.split("@")
        if len(parts) != 2:
            return False
        reduced = email_domain = parts[1]
        is_email = True
    if "*" in reduced:
        is_wildcard = True
        if not role.allow_wildcard_certificates or reduced.count("*") > 1:
            return False
        left, dot, rest = reduced.partition(".")
        wildcard_label, reduced = left, rest if dot else ""
        if "*" in reduced:
            return False  # only the left-most label may hold the wildcard
    if is_email and is_wildcard:
        return False
    if role.enforce_hostnames:
        if reduced:
            try:
                converted = _to_ascii(reduced)
            except PkiError:
                return False
            if not HOSTNAME.match(converted):
                return False
        if is_wildcard and not _LEFT_WILD_LABEL.match(wildcard_label):
            return False
    if role.allow_any_name:
        return True
    if role.allow_localhost:
        if reduced in ("localhost", "localdomain"):
            return True
        if role.allow_subdomains:
            for base in ("localhost", "localdomain"):
                if reduced.endswith("." + base) or (is_wildcard and reduced == base):
                    return True
    for domain in role.allowed_domains:
        if not domain:
            continue
        domain = _a_label(domain)
        if role.allow_bare_domains and (
            name.lower() == domain.lower() or (is_email and email_domain.lower() == domain.lower())
        ):
            return True
        if role.allow_subdomains and (
            reduced.endswith("." + domain) or (is_wildcard and reduced.lower() == domain.lower())
        ):
            return True
        if role.allow_glob_domains and "*" in domain and glob_match(domain, name):
            return True
    return False


def _common_name_allowed(role: Role, cn: str) -> bool:
    """Vault's validateCommonName: the role's name rules, then cn_validations says
    which kinds of CN (email, hostname) the role takes at all."""
    if role.cn_validations == ("disabled",):
        return True
    if not name_allowed(role, cn):
        return False
    if not role.cn_validations:
        return True
    if "@" in cn:
        local, _, domain = cn.partition("@")
        return "email" in role.cn_validations and bool(local) and bool(domain)
    return "hostname" in role.cn_validations


def _parse_ips(values: Iterable[str]) -> list[IpAddress]:
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise PkiError(f"the value {value!r} is not a valid IP address") from None
    return out


def check_names(
    role: Role,
    common_name: str,
    alt_names: Iterable[str] = (),
    ip_sans: Iterable[str] = (),
    *,
    exclude_cn_from_sans: bool = False,
) -> Names:
    """The names of an issue request if the role allows them all, else PkiError naming
    the first name it refuses (Vault's messages). Alt names with "@" are emails;
    the common name joins the SANs unless `exclude_cn_from_sans`."""
    dns: list[str] = []
    emails: list[str] = []
    for value in sorted({v.strip() for v in alt_names if v.strip()}):
        if "@" in value:
            emails.append(value)
            continue
        converted = _to_ascii(value)
        if not HOSTNAME.match(converted):
            raise PkiError(f"alt name {value!r} is neither a DNS name nor an email address")
        dns.append(converted)
    ips = _parse_ips(ip_sans)
    if ips and not role.allow_ip_sans:
        given = ", ".join(str(ip) for ip in ips)
        raise PkiError(
            f"IP Subject Alternative Names are not allowed in this role, but was provided {given}"
        )
    return checked_names(role, common_name, dns, emails, ips, exclude_cn_from_sans)


def checked_names(
    role: Role,
    cn: str,
    dns: list[str],
    emails: list[str],
    ips: list[IpAddress],
    exclude_cn_from_sans: bool,
) -> Names:
    if not cn and role.require_cn:
        raise PkiError(
            "the common_name field is required, or must be provided in a CSR with "
            '"use_csr_common_name" set to true, unless "require_cn" is set to false'
        )
    if len(cn) > _CN_MAX:
        raise PkiError(f"common_name is {len(cn)} characters; at most {_CN_MAX} are allowed")
    if cn and not exclude_cn_from_sans:
        if "@" in cn:
            emails = [*emails, cn]
        else:
            converted = _to_ascii(cn)
            if HOSTNAME.match(converted):
                dns = [*dns, converted]
    if cn and not _common_name_allowed(role, cn):
        raise PkiError(f"common name {cn} not allowed by this role")
    for name in dns:
        if name != cn and not name_allowed(role, name):  # the CN passed above
            raise PkiError(f"subject alternate name {name} not allowed by this role")
    for email in emails:
        if email != cn and not name_allowed(role, email):
            raise PkiError(f"email address {email} not allowed by this role")
    return Names(
        cn, tuple(dict.fromkeys(dns)), tuple(dict.fromkeys(emails)), tuple(dict.fromkeys(ips))
    )
