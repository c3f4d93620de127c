"""The ACL policy language and evaluator, checked against Vault's documented behaviour."""

from __future__ import annotations

import functools
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.errors import BadRequest
from stack.vault.policy import (
    ACL,
    DEFAULT_POLICY,
    DEFAULT_POLICY_TEXT,
    GRANTS,
    ROOT,
    PathRule,
    Policy,
    PolicyError,
    acl_for,
    parse_policy,
)


def _policy(name: str, *rules: tuple[str, list[str]]) -> Policy:
    """A policy from (path, capabilities) pairs, written as HCL and parsed."""
    text = "\n".join(f"path {json.dumps(p)} {{ capabilities = {json.dumps(c)} }}" for p, c in rules)
    return parse_policy(name, text)


def _acl(*rules: tuple[str, list[str]]) -> ACL:
    return ACL([_policy("p", *rules)])


# --- parsing ---------------------------------------------------------------------------

HCL = """
# Application secrets.
path "secret/data/app/*" { capabilities = ["read", "list"] }
path "secret/+/team/*" {
  capabilities = ["create", "update"]
}
path "/secret/data/app/admin" { capabilities = ["deny"] }
"""

EXPECTED_RULES = (
    PathRule("secret/data/app/*", frozenset({"read", "list"})),
    PathRule("secret/+/team/*", frozenset({"create", "update"})),
    PathRule("secret/data/app/admin", frozenset({"deny"})),
)


def test_parse_hcl() -> None:
    policy = parse_policy("app", HCL)
    assert policy.name == "app"
    assert policy.rules == EXPECTED_RULES
    assert policy.text == HCL


def test_parse_json_object_form() -> None:
    text = json.dumps(
        {
            "path": {
                "secret/data/app/*": {"capabilities": ["read", "list"]},
                "secret/+/team/*": {"capabilities": ["create", "update"]},
                "/secret/data/app/admin": {"capabilities": ["deny"]},
            }
        }
    )
    assert parse_policy("app", text).rules == EXPECTED_RULES


def test_parse_json_list_form_keeps_repeated_paths() -> None:
    text = json.dumps(
        {"path": [{"a/*": {"capabilities": ["read"]}}, {"a/*": {"capabilities": ["list"]}}]}
    )
    rules = parse_policy("p", text).rules
    assert rules == (PathRule("a/*", frozenset({"read"})), PathRule("a/*", frozenset({"list"})))
    assert ACL([parse_policy("p", text)]).capabilities("a/x") == {"read", "list"}


def test_every_capability_parses() -> None:
    caps = ["create", "read", "update", "patch", "delete", "list", "sudo"]
    assert _policy("p", ("x", caps)).rules[0].capabilities == set(caps)


def test_deny_in_a_rule_drops_the_other_capabilities() -> None:
    assert _policy("p", ("x", ["read", "deny", "sudo"])).rules[0].capabilities == {"deny"}


def test_empty_policy_has_no_rules() -> None:
    assert parse_policy("p", "# nothing yet\n").rules == ()
    assert parse_policy("p", "{}").rules == ()


def test_default_policy_constant_matches_its_text() -> None:
    assert parse_policy("default", DEFAULT_POLICY_TEXT) == DEFAULT_POLICY


def test_policy_error_is_a_bad_request() -> None:
    # The API layer maps BadRequest to 400; a bad policy is the writer's mistake.
    assert issubclass(PolicyError, BadRequest)


REFUSED = [
    ('path "a" { capabilities = ["read"] ', "invalid policy HCL"),
    ('path "a" capabilities = ["read"]', "invalid policy HCL"),
    ('{"path": {"a": {"capabilities": ["read"]}', "invalid policy JSON"),
    ('["read"]', "invalid policy HCL"),
    ('path "a/b" { capabilities = ["write"] }', "path 'a/b': unknown capability 'write'"),
    ('path "a/b" { capabilities = ["READ"] }', "path 'a/b': unknown capability 'READ'"),
    ('path "a/*/b" { capabilities = ["read"] }', "path 'a/*/b': '*' is only allowed as the last"),
    ('path "a**" { capabilities = ["read"] }', "path 'a**': '*' is only allowed as the last"),
    ('path "" { capabilities = ["read"] }', "path '': empty path"),
    ('path "/" { capabilities = ["read"] }', "path '/': empty path"),
    ('path "a" { capabilities = ["read"]\n color = "red" }', "path 'a': unknown key 'color'"),
    ('path "a" "b" { capabilities = ["read"] }', "path 'a': unknown key 'b'"),
    ('path "a" {}', "path 'a': capabilities must be a non-empty list"),
    ('path "a" { capabilities = [] }', "path 'a': capabilities must be a non-empty list"),
    ('path "a" { capabilities = "read" }', "path 'a': capabilities must be a non-empty list"),
    ('{"path": {"a": {"capabilities": ["read", 1]}}}', "path 'a': unknown capability 1"),
    ('{"path": {"a": {"capabilities": [{"x": 1}]}}}', "path 'a': unknown capability"),
    ('{"path": {"a": ["read"]}}', "path 'a': expected a block"),
    ('{"path": "a"}', "'path' must be a block"),
    ('name = "x"\npath "a" { capabilities = ["read"] }', "unknown top-level key 'name'"),
    (
        'path "secret/{{identity.entity.id}}/*" { capabilities = ["read"] }',
        "templated paths are not supported",
    ),
    # A repeated key would otherwise keep only the last value, and an earlier deny would vanish.
    (
        'path "a" {\n capabilities = ["deny"]\n capabilities = ["read"]\n}',
        "path 'a': 'capabilities' is set twice",
    ),
    (
        '{"path": {"a": {"capabilities": ["deny"]}, "a": {"capabilities": ["read"]}}}',
        "duplicate key 'a'",
    ),
    ('{"path": {"a": {"capabilities": ["deny"], "capabilities": ["read"]}}}', "duplicate key"),
]


@pytest.mark.parametrize(("text", "message"), REFUSED)
def test_refused(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("p", text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "key",
    [
        'allowed_parameters = { "ttl" = ["1h"] }',
        'denied_parameters = { "*" = [] }',
        'required_parameters = ["name"]',
        'min_wrapping_ttl = "1m"',
        'max_wrapping_ttl = "1h"',
        'control_group = { max_ttl = "1h" }',
        'mfa_methods = ["totp"]',
        'policy = "write"',
    ],
)
def test_vault_constraints_are_refused_not_ignored(key: str) -> None:
    name = key.split(" ", 1)[0]
    text = f'path "secret/data/app" {{\n  capabilities = ["read"]\n  {key}\n}}'
    with pytest.raises(PolicyError) as info:
        parse_policy("p", text)
    message = str(info.value)
    assert "'secret/data/app'" in message
    assert f"{name!r} is not supported" in message


@pytest.mark.parametrize(
    "name", ["a", "app", "app-1", "team.ops_2", "default", "0", "x" * 128, "a.b-c_d"]
)
def test_valid_names(name: str) -> None:
    assert parse_policy(name, "").name == name


@pytest.mark.parametrize(
    "name", ["", "App", "a b", "a/b", "x" * 129, "é", "a:b", ".", "..", " a", "a\n"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(PolicyError, match="policy name"):
        parse_policy(name, 'path "a" { capabilities = ["read"] }')


def test_root_policy_cannot_be_written() -> None:
    with pytest.raises(PolicyError, match="built in"):
        parse_policy("root", 'path "*" { capabilities = ["read"] }')


# --- matching --------------------------------------------------------------------------


def test_no_rule_means_no_capabilities() -> None:
    assert ACL([]).capabilities("secret/a") == frozenset()
    acl = _acl(("secret/data/app/*", ["read"]))
    assert acl.capabilities("secret/data/other") == frozenset()
    assert not acl.allowed("secret/data/other", "read")


def test_exact_path_matches_only_itself() -> None:
    acl = _acl(("secret/data/app", ["read"]))
    assert acl.allowed("secret/data/app", "read")
    assert not acl.allowed("secret/data/app/x", "read")
    assert not acl.allowed("secret/data/ap", "read")
    assert not acl.allowed("secret/data/app", "update")


def test_star_is_a_string_prefix() -> None:
    acl = _acl(("secret/foo*", ["read"]), ("kv/app/*", ["list"]))
    assert acl.capabilities("secret/foo") == {"read"}
    assert acl.capabilities("secret/foobar") == {"read"}
    assert acl.capabilities("secret/foo/x/y") == {"read"}
    assert acl.capabilities("secret/fo") == frozenset()
    assert acl.capabilities("kv/app/") == {"list"}
    assert acl.capabilities("kv/app/a/b") == {"list"}
    assert acl.capabilities("kv/app") == frozenset()  # the glob does not cover the base


def test_lone_star_matches_everything() -> None:
    acl = _acl(("*", ["read"]))
    assert all(acl.allowed(p, "read") for p in ("a", "sys/seal", "secret/data/x/y"))


def test_plus_is_exactly_one_segment() -> None:
    acl = _acl(("secret/+/db", ["read"]))
    assert acl.allowed("secret/a/db", "read")
    assert acl.allowed("secret/team-b/db", "read")
    assert not acl.allowed("secret/db", "read")
    assert not acl.allowed("secret/a/b/db", "read")
    assert not acl.allowed("secret/a/db/x", "read")


def test_plus_segments_with_a_trailing_star() -> None:
    acl = _acl(("secret/+/team/*", ["update"]), ("+/+", ["list"]), ("jobs/+*", ["read"]))
    assert acl.capabilities("secret/data/team/x/y") == {"update"}
    assert acl.capabilities("secret/data/team") == frozenset()
    assert acl.capabilities("secret/a/b/team/x") == frozenset()
    assert acl.capabilities("nodes/n1") == {"list"}
    assert acl.capabilities("nodes/n1/x") == frozenset()
    assert acl.capabilities("jobs/web") == {"read"}
    assert acl.capabilities("jobs/web/allocs") == {"read"}


def test_plus_inside_a_segment_is_literal() -> None:
    acl = _acl(("secret/a+b", ["read"]))
    assert acl.allowed("secret/a+b", "read")
    assert not acl.allowed("secret/axb", "read")


def test_leading_slashes_are_ignored() -> None:
    acl = _acl(("/secret/a", ["read"]))
    assert acl.allowed("secret/a", "read")
    assert acl.allowed("/secret/a", "read")


def test_exact_rule_beats_every_glob_even_a_deny() -> None:
    acl = _acl(("secret/*", ["deny"]), ("secret/+", ["deny"]), ("secret/open", ["read"]))
    assert acl.capabilities("secret/open") == {"read"}
    assert acl.capabilities("secret/closed") == {"deny"}
    assert not acl.allowed("secret/closed", "read")


def test_exact_deny_beats_a_glob_grant() -> None:
    acl = ACL([parse_policy("app", HCL)])
    assert acl.capabilities("secret/data/app/admin") == {"deny"}
    assert acl.capabilities("secret/data/app/db") == {"read", "list"}


# Each row: a lower and a higher priority pattern that both match `path`.
PRIORITY = [
    # (1) the first wildcard comes later
    ("secret/*", "secret/data/*", "secret/data/x"),
    ("secret/+/config", "secret/data/+", "secret/data/config"),
    ("+/data/x", "secret/+/x", "secret/data/x"),
    # (2) not ending in * beats ending in *
    ("secret/+/x*", "secret/+/x", "secret/a/x"),
    # (3) fewer + segments; Vault's own example: secret/* beats secret/+/+/foo/*
    ("secret/+/+/foo/*", "secret/*", "secret/a/b/foo/c"),
    ("secret/+/+", "secret/+/x", "secret/a/x"),
    # (4) longer
    ("secret/+/a*", "secret/+/ab*", "secret/x/abc"),
    # (5) lexicographically larger
    ("a/+/+/y/*", "a/+/x/+/*", "a/1/x/y/z"),
]


@pytest.mark.parametrize(("low", "high", "path"), PRIORITY)
def test_priority(low: str, high: str, path: str) -> None:
    # Each pattern alone matches, so the outcome is decided by priority.
    assert _acl((low, ["read"])).capabilities(path) == {"read"}
    assert _acl((high, ["update"])).capabilities(path) == {"update"}
    assert _acl((low, ["read"]), (high, ["update"])).capabilities(path) == {"update"}
    assert _acl((high, ["update"]), (low, ["read"])).capabilities(path) == {"update"}
    # A deny on the lower-priority pattern is not consulted.
    assert _acl((low, ["deny"]), (high, ["update"])).capabilities(path) == {"update"}
    assert _acl((low, ["read"]), (high, ["deny"])).capabilities(path) == {"deny"}


# --- merging policies ------------------------------------------------------------------


def test_same_pattern_unions_across_policies() -> None:
    a = _policy("a", ("secret/*", ["read"]), ("kv/x", ["read"]))
    b = _policy("b", ("secret/*", ["list", "update"]), ("kv/x", ["delete"]))
    acl = ACL([a, b])
    assert acl.capabilities("secret/y") == {"read", "list", "update"}
    assert acl.capabilities("kv/x") == {"read", "delete"}


@pytest.mark.parametrize("pattern", ["secret/data/app", "secret/data/*", "secret/+/app"])
def test_deny_on_a_pattern_wins_across_policies(pattern: str) -> None:
    grant = _policy("grant", (pattern, ["read", "update", "sudo"]))
    deny = _policy("deny", (pattern, ["deny"]))
    for order in ([grant, deny], [deny, grant]):
        acl = ACL(order)
        assert acl.capabilities("secret/data/app") == {"deny"}
        assert not any(acl.allowed("secret/data/app", c) for c in GRANTS)


def test_deny_wins_within_one_policy_too() -> None:
    acl = _acl(("secret/*", ["read"]), ("secret/*", ["deny"]))
    assert acl.capabilities("secret/a") == {"deny"}


@st.composite
def _pattern(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from(["a", "b", "ab", "+"]), min_size=1, max_size=4))
    pattern = "/".join(segments)
    tail = draw(st.sampled_from(["", "", "*", "/*"]))
    return pattern + tail


_PATHS = st.lists(st.sampled_from(["a", "b", "ab", "abc", ""]), min_size=1, max_size=5).map(
    "/".join
)
_CAPS = st.sampled_from([["read"], ["update"], ["list", "read"], ["deny"], ["sudo"]])


def _oracle_matches(pattern: str, path: str) -> bool:
    glob = pattern.endswith("*")
    body = pattern[:-1] if glob else pattern
    regex = "/".join("[^/]*" if s == "+" else re.escape(s) for s in body.split("/"))
    return re.fullmatch(regex + (".*" if glob else ""), path, re.DOTALL) is not None


def _oracle_lower(p1: str, p2: str) -> bool:
    """Vault's documented rules: is P1 lower priority than P2?"""

    def first_wildcard(p: str) -> int:
        offset = 0
        for segment in p.split("/"):
            if segment in ("+", "+*"):
                return offset
            offset += len(segment) + 1
        return p.index("*") if p.endswith("*") else len(p)

    def pluses(p: str) -> int:
        return sum(s in ("+", "+*") for s in p.split("/"))

    if first_wildcard(p1) != first_wildcard(p2):
        return first_wildcard(p1) < first_wildcard(p2)
    if p1.endswith("*") != p2.endswith("*"):
        return p1.endswith("*")
    if pluses(p1) != pluses(p2):
        return pluses(p1) > pluses(p2)
    if len(p1) != len(p2):
        return len(p1) < len(p2)
    return p1 < p2


def _oracle(policies: list[list[tuple[str, list[str]]]], path: str) -> frozenset[str]:
    path = path.lstrip("/")
    merged: dict[str, set[str]] = {}
    for rules in policies:
        for pattern, caps in rules:
            merged.setdefault(pattern, set()).update(caps)
    final = {p: frozenset({"deny"} if "deny" in c else c) for p, c in merged.items()}
    wild = [p for p in final if p.endswith("*") or "+" in p.split("/")]
    if path in final and path not in wild:
        return final[path]
    matching = [p for p in wild if _oracle_matches(p, path)]
    if not matching:
        return frozenset()
    order = functools.cmp_to_key(lambda x, y: -1 if _oracle_lower(x, y) else 1)
    return final[max(matching, key=order)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.tuples(_pattern(), _CAPS), max_size=6), min_size=1, max_size=3),
    st.lists(_PATHS, min_size=1, max_size=8),
)
def test_evaluation_matches_a_reference_built_from_the_docs(
    policies: list[list[tuple[str, list[str]]]], paths: list[str]
) -> None:
    # JSON (list form, so a pattern may repeat) because it parses much faster than HCL.
    texts = [json.dumps({"path": [{p: {"capabilities": c}} for p, c in r]}) for r in policies]
    acl = ACL([parse_policy(f"p{i}", text) for i, text in enumerate(texts)])
    for path in paths:
        assert acl.capabilities(path) == _oracle(policies, path), path


# --- built-ins and tokens --------------------------------------------------------------


def test_root_allows_everything() -> None:
    assert ROOT.is_root
    for path in ("sys/seal", "secret/data/x", "acl/policy/p", "anything/at/all"):
        assert ROOT.capabilities(path) == GRANTS
        assert ROOT.allowed(path, "sudo")
        assert ROOT.allowed(path, "delete")


def test_allowed_refuses_things_that_are_not_grants() -> None:
    acl = _acl(("a", ["read"]))
    for bad in ("deny", "write", "READ", ""):
        with pytest.raises(ValueError, match="capability"):
            acl.allowed("a", bad)


def _no_lookup(name: str) -> Policy | None:
    raise AssertionError(f"looked up {name!r}")


def test_root_short_circuits_without_looking_anything_up() -> None:
    assert acl_for(["default", "root", "ops"], _no_lookup) is ROOT
    assert acl_for(["root"], _no_lookup).allowed("sys/raw/x", "sudo")


SELF_SERVICE = [
    ("auth/token/lookup-self", "read"),
    ("auth/token/renew-self", "update"),
    ("auth/token/revoke-self", "update"),
    ("sys/capabilities-self", "update"),
    ("acl/token/self", "read"),
    ("acl/token/renew-self", "update"),
    ("acl/token/revoke-self", "update"),
]


def test_default_policy_is_self_service_only() -> None:
    acl = acl_for(["default"], lambda name: None)
    assert not acl.is_root
    for path, capability in SELF_SERVICE:
        assert acl.capabilities(path) == {capability}, path
    for path in ("auth/token/create", "auth/token/lookup", "sys/policies/acl/x", "secret/a"):
        assert acl.capabilities(path) == frozenset(), path
    assert not acl.allowed("auth/token/lookup-self", "update")


def test_stored_default_overrides_the_built_in() -> None:
    custom = _policy("default", ("secret/data/shared/*", ["read"]))
    acl = acl_for(["default"], {"default": custom}.get)
    assert acl.allowed("secret/data/shared/x", "read")
    assert not acl.allowed("auth/token/lookup-self", "read")


def test_unknown_policies_are_ignored_and_known_ones_merge() -> None:
    ops = _policy("ops", ("sys/*", ["read"]))
    seen: list[str] = []

    def lookup(name: str) -> Policy | None:
        seen.append(name)
        return {"ops": ops}.get(name)

    acl = acl_for(["gone", "ops", "default", "ops"], lookup)
    assert seen == ["gone", "ops", "default"]  # each name once
    assert acl.allowed("sys/mounts", "read")
    assert acl.allowed("auth/token/lookup-self", "read")
    assert acl_for(["gone"], lookup).capabilities("sys/mounts") == frozenset()


def test_a_token_without_default_does_not_get_it() -> None:
    acl = acl_for(["ops"], {"ops": _policy("ops", ("sys/*", ["read"]))}.get)
    assert not acl.allowed("auth/token/lookup-self", "read")
