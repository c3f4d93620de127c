"""ACL policies: Vault's HCL path language, and the evaluator every API checks.

A policy is a list of path rules, in HCL or JSON::

    path "secret/data/app/*"     { capabilities = ["read", "list"] }
    path "secret/+/team/*"       { capabilities = ["create", "update"] }
    path "secret/data/app/admin" { capabilities = ["deny"] }

    {"path": {"secret/data/app/*": {"capabilities": ["read", "list"]}}}

Capabilities are create, read, update, patch, delete, list, sudo and deny; ``deny``
in a rule drops every other capability of that rule. A leading ``/`` is stripped.

Patterns:

- no wildcard: the rule applies to exactly that path;
- ``*``, only as the last character: a string prefix match (``secret/foo*`` matches
  ``secret/foobar`` and ``secret/foo/x``; ``secret/app/*`` does not match
  ``secret/app``);
- ``+`` as a whole path segment: exactly one segment, of any content (``secret/+/db``
  matches ``secret/a/db``, not ``secret/db`` or ``secret/a/b/db``). A final ``+*``
  is one segment's worth of wildcard followed by the prefix match. A ``+`` inside a
  segment (``a+b``) is an ordinary character.

Refused, with a ``PolicyError`` naming the path: malformed HCL or JSON, duplicate
keys, an unknown capability, ``*`` anywhere but last, an empty path, a block without
capabilities, unknown keys, and Vault's parameter and wrapping constraints
(``allowed_parameters``, ``min_wrapping_ttl``, ``control_group``, ...) and templated
paths (``{{identity.entity.id}}``): stack does not enforce them, and a restriction
that is accepted but not enforced is worse than an error.

Evaluating a path (``ACL.capabilities``), as Vault does:

1. Rules for the same pattern, from one policy or several, are merged first: their
   capabilities are unioned, and a ``deny`` among them makes the pattern deny only.
2. A rule without wildcards for exactly this path wins outright, even over a
   wildcard ``deny``.
3. Otherwise the single highest-priority matching wildcard rule decides. P1 has
   lower priority than P2 when, checked in this order:

   a. P1's first wildcard (``+`` or ``*``) is earlier in the string;
   b. P1 ends in ``*`` and P2 does not;
   c. P1 has more ``+`` segments;
   d. P1 is shorter;
   e. P1 is lexicographically smaller.

   So ``secret/*`` beats ``secret/+/+/foo/*`` on ``secret/a/b/foo/c`` (same first
   wildcard, both end in ``*``, rule c). Rules of lower priority are not consulted:
   a ``deny`` on ``secret/*`` does not touch ``secret/data/x`` if ``secret/data/*``
   grants it.
4. No matching rule: no capabilities (default deny).

``ROOT`` allows everything, sudo included; a token holding the ``root`` policy gets
it without looking at its other policies. ``DEFAULT_POLICY`` is the self-service
policy Vault attaches to tokens: look yourself up, renew and revoke yourself, and
ask for your own capabilities.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from stack.errors import BadRequest

__all__ = [
    "ACL",
    "CAPABILITIES",
    "DEFAULT_POLICY",
    "DEFAULT_POLICY_NAME",
    "DEFAULT_POLICY_TEXT",
    "GRANTS",
    "ROOT",
    "ROOT_POLICY_NAME",
    "PathRule",
    "Policy",
    "PolicyError",
    "acl_for",
    "parse_policy",
]

DENY = "deny"
CAPABILITIES = frozenset(
    {"create", "read", "update", "patch", "delete", "list", "sudo", DENY},
)
GRANTS = CAPABILITIES - {DENY}
ROOT_POLICY_NAME = "root"
DEFAULT_POLICY_NAME = "default"

_DENIED = frozenset({DENY})
_NOTHING: frozenset[str] = frozenset()
_NAME = re.compile(r"[a-z0-9_.-]{1,128}")
# Keys Vault accepts in a path block that stack does not enforce.
_UNSUPPORTED = frozenset(
    {
        "allowed_parameters",
        "denied_parameters",
        "required_parameters",
        "min_wrapping_ttl",
        "max_wrapping_ttl",
        "mfa_methods",
        "control_group",
        "subscribe_event_types",
        "policy",  # the pre-0.9 shorthand (policy = "write")
    }
)


class PolicyError(BadRequest):
    """A policy's name or text is malformed or asks for something stack cannot enforce."""


@dataclass(frozen=True, slots=True)
class PathRule:
    path: str  # the pattern, without a leading "/"
    capabilities: frozenset[str]  # exactly {"deny"} when it denies


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    rules: tuple[PathRule, ...]
    text: str  # as written, so it reads back the way the operator wrote it


def parse_policy(name: str, text: str) -> Policy:
    """Parse and validate a policy; raises ``PolicyError``."""
    _check_name(name)
    data = _load_json(text) if text.lstrip().startswith("{") else _load_hcl(text)
    for key in data:
        if key != "path":
            raise PolicyError(f"unknown top-level key {key!r}: a policy holds only path blocks")
    rules = tuple(_rule(path, block) for path, block in _path_blocks(data.get("path", [])))
    return Policy(name=name, rules=rules, text=text)


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name) or name.strip(".") == "":
        raise PolicyError(
            f"policy name {name!r}: use 1-128 characters of a-z, 0-9, '_', '.' and '-'"
        )
    if name == ROOT_POLICY_NAME:
        raise PolicyError("policy name 'root': the root policy is built in and cannot be written")


def _load_json(text: str) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise PolicyError(f"invalid policy JSON: duplicate key {key!r}")
            out[key] = value
        return out

    try:
        data = json.loads(text, object_pairs_hook=no_duplicates)
    except ValueError as e:
        raise PolicyError(f"invalid policy JSON: {e}") from None
    if not isinstance(data, dict):
        raise PolicyError("invalid policy JSON: the top level must be an object")
    return data


def _load_hcl(text: str) -> dict[str, Any]:
    import hcl2
    from hcl2.rules.base import AttributeRule, BlockRule, BodyRule
    from hcl2.utils import SerializationOptions
    from hcl2.walk import find_all

    options = SerializationOptions(strip_string_quotes=True, with_comments=False)
    try:
        tree = hcl2.parses(text, discard_comments=True)
    except Exception as e:  # the HCL parser raises several unrelated types
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PolicyError(f"invalid policy HCL: {first_line}") from None
    # The serializer keeps the last of two equal attributes; an earlier deny would vanish.
    for body in find_all(tree, BodyRule):
        seen: set[str] = set()
        for child in body.children:
            if not isinstance(child, AttributeRule):
                continue
            key = str(child.identifier.serialize(options))
            if key in seen:
                block = body.parent
                labels = block.labels if isinstance(block, BlockRule) else []
                where = f"path {labels[1].serialize(options)!r}" if len(labels) > 1 else "policy"
                raise PolicyError(f"{where}: {key!r} is set twice")
            seen.add(key)
    try:
        data: dict[str, Any] = hcl2.serialize(tree, serialization_options=options)
    except Exception as e:  # e.g. an attribute and a block of the same name
        raise PolicyError(f"invalid policy HCL: {e}") from None
    return data


def _path_blocks(raw: Any) -> list[tuple[Any, Any]]:
    # JSON writes {"path": {p: block, ...}}; HCL gives a list of one-entry dicts.
    items = raw if isinstance(raw, list) else [raw]
    out: list[tuple[Any, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            raise PolicyError(f"'path' must be a block or an object of blocks, not {item!r}")
        out.extend(item.items())
    return out


def _rule(raw: Any, block: Any) -> PathRule:
    if not isinstance(raw, str):
        raise PolicyError(f"path {raw!r}: a path must be a string")
    path = raw.lstrip("/")
    if not path:
        raise PolicyError(f"path {raw!r}: empty path")
    if "*" in path[:-1]:
        raise PolicyError(f"path {raw!r}: '*' is only allowed as the last character")
    if "{{" in path:
        raise PolicyError(f"path {raw!r}: templated paths are not supported")
    if not isinstance(block, dict):
        raise PolicyError(f"path {raw!r}: expected a block, got {block!r}")
    for key in block:
        if key in _UNSUPPORTED:
            raise PolicyError(
                f"path {raw!r}: {key!r} is not supported; stack grants or denies whole paths"
            )
        if key not in ("capabilities", "__is_block__"):
            raise PolicyError(f"path {raw!r}: unknown key {key!r}")
    caps = block.get("capabilities")
    if not isinstance(caps, list) or not caps:
        raise PolicyError(
            f"path {raw!r}: capabilities must be a non-empty list "
            '(write capabilities = ["deny"] to refuse access)'
        )
    for cap in caps:
        if not isinstance(cap, str) or cap not in CAPABILITIES:
            raise PolicyError(
                f"path {raw!r}: unknown capability {cap!r} "
                f"(one of {', '.join(sorted(CAPABILITIES))})"
            )
    return PathRule(path, _DENIED if DENY in caps else frozenset(caps))


@dataclass(frozen=True, slots=True)
class _Wildcard:
    """One merged wildcard rule, compiled for matching."""

    caps: frozenset[str]
    lead: str  # the literal text before the first wildcard: every match starts with it
    plain: bool  # a prefix rule without "+": matching the lead is matching the rule
    # The segments, None standing for "+". With a trailing "*" the last entry is a
    # prefix of that segment (None: any segment) and more segments may follow.
    segments: tuple[str | None, ...]
    glob: bool  # ends in "*"
    priority: tuple[int, bool, int, int, str]

    def matches(self, parts: list[str]) -> bool:
        segments = self.segments
        if len(parts) < len(segments) or (not self.glob and len(parts) != len(segments)):
            return False
        last = len(segments) - 1
        for i, want in enumerate(segments):
            if want is None:
                continue
            if self.glob and i == last:
                return parts[i].startswith(want)
            if parts[i] != want:
                return False
        return True


def _compile(pattern: str, caps: frozenset[str]) -> _Wildcard:
    glob = pattern.endswith("*")
    body = pattern[:-1] if glob else pattern
    raw = body.split("/")
    pluses = raw.count("+")
    if pluses:
        first = raw.index("+")
        start = sum(len(s) + 1 for s in raw[:first])  # its character position
    else:
        start = len(body)
    return _Wildcard(
        caps=caps,
        lead=pattern[:start],
        plain=not pluses,
        segments=tuple(None if s == "+" else s for s in raw),
        glob=glob,
        priority=(start, not glob, -pluses, len(pattern), pattern),
    )


def _is_wildcard(pattern: str) -> bool:
    return pattern.endswith("*") or "/+/" in f"/{pattern}/"


class ACL:
    """The merged rules of a token's policies, compiled for per-request checks."""

    __slots__ = ("_exact", "_root", "_wildcards")

    def __init__(self, policies: Iterable[Policy] = (), *, root: bool = False) -> None:
        merged: dict[str, set[str]] = {}
        for policy in policies:
            for rule in policy.rules:
                merged.setdefault(rule.path, set()).update(rule.capabilities)
        self._root = root
        self._exact: dict[str, frozenset[str]] = {}
        wildcards: list[_Wildcard] = []
        for pattern, caps in merged.items():
            final = _DENIED if DENY in caps else frozenset(caps)
            if _is_wildcard(pattern):
                wildcards.append(_compile(pattern, final))
            else:
                self._exact[pattern] = final
        wildcards.sort(key=lambda w: w.priority, reverse=True)
        self._wildcards = tuple(wildcards)

    @property
    def is_root(self) -> bool:
        return self._root

    def capabilities(self, path: str) -> frozenset[str]:
        """What the rules allow on ``path``: ``{"deny"}`` if denied, empty if no rule matches."""
        if self._root:
            return GRANTS
        path = path.lstrip("/")
        exact = self._exact.get(path)
        if exact is not None:
            return exact
        parts: list[str] | None = None
        for rule in self._wildcards:  # highest priority first
            if not path.startswith(rule.lead):
                continue
            if rule.plain:
                return rule.caps
            if parts is None:
                parts = path.split("/")
            if rule.matches(parts):
                return rule.caps
        return _NOTHING

    def allowed(self, path: str, capability: str) -> bool:
        if capability not in GRANTS:
            raise ValueError(f"not a capability one can be granted: {capability!r}")
        return capability in self.capabilities(path)


ROOT = ACL(root=True)

DEFAULT_POLICY_TEXT = """\
# Every token may look itself up, renew and revoke itself, and ask what it may do.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

path "auth/token/revoke-self" {
  capabilities = ["update"]
}

path "sys/capabilities-self" {
  capabilities = ["update"]
}

# The same on the native API.
path "acl/token/self" {
  capabilities = ["read"]
}

path "acl/token/renew-self" {
  capabilities = ["update"]
}

path "acl/token/revoke-self" {
  capabilities = ["update"]
}
"""

# Built rather than parsed so that importing this module does not load the HCL
# parser (a quarter of a second); a test checks it equals the parsed text.
DEFAULT_POLICY = Policy(
    name=DEFAULT_POLICY_NAME,
    rules=tuple(
        PathRule(path, frozenset({capability}))
        for path, capability in (
            ("auth/token/lookup-self", "read"),
            ("auth/token/renew-self", "update"),
            ("auth/token/revoke-self", "update"),
            ("sys/capabilities-self", "update"),
            ("acl/token/self", "read"),
            ("acl/token/renew-self", "update"),
            ("acl/token/revoke-self", "update"),
        )
    ),
    text=DEFAULT_POLICY_TEXT,
)


def acl_for(policy_names: Iterable[str], lookup: Callable[[str], Policy | None]) -> ACL:
    """The ACL of a token holding ``policy_names``.

    ``root`` short-circuits to ``ROOT``; ``default`` is the stored override if
    ``lookup`` has one, else the built-in; names ``lookup`` does not know are ignored,
    as Vault ignores policies deleted after a token was issued.
    """
    names = list(dict.fromkeys(policy_names))
    if ROOT_POLICY_NAME in names:
        return ROOT
    policies: list[Policy] = []
    for name in names:
        policy = lookup(name)
        if policy is None and name == DEFAULT_POLICY_NAME:
            policy = DEFAULT_POLICY
        if policy is not None:
            policies.append(policy)
    return ACL(policies)
