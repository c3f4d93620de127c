"""Decrypted KV data helpers: RFC 7386 merge patch, Vault's subkeys, data validation."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from stack.vault.kvdata import merge_patch, subkeys, validate_data

# RFC 7386 Appendix A, verbatim (original, patch, result).
RFC7386_EXAMPLES = [
    ('{"a":"b"}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"b"}', '{"b":"c"}', '{"a":"b","b":"c"}'),
    ('{"a":"b"}', '{"a":null}', "{}"),
    ('{"a":"b","b":"c"}', '{"a":null}', '{"b":"c"}'),
    ('{"a":["b"]}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"c"}', '{"a":["b"]}', '{"a":["b"]}'),
    ('{"a":{"b":"c"}}', '{"a":{"b":"d","c":null}}', '{"a":{"b":"d"}}'),
    ('{"a":[{"b":"c"}]}', '{"a":[1]}', '{"a":[1]}'),
    ('["a","b"]', '["c","d"]', '["c","d"]'),
    ('{"a":"b"}', '["c"]', '["c"]'),
    ('{"a":"foo"}', "null", "null"),
    ('{"a":"foo"}', '"bar"', '"bar"'),
    ('{"e":null}', '{"a":1}', '{"e":null,"a":1}'),
    ("[1,2]", '{"a":"b","c":null}', '{"a":"b"}'),
    ("{}", '{"a":{"bb":{"ccc":null}}}', '{"a":{"bb":{}}}'),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC7386_EXAMPLES)
def test_merge_patch_rfc7386_appendix_a(original: str, patch: str, result: str) -> None:
    assert merge_patch(json.loads(original), json.loads(patch)) == json.loads(result)


def test_merge_patch_rfc7386_section_3_example() -> None:
    target = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    patch = {
        "title": "Hello!",
        "phoneNumber": "+01-123-456-7890",
        "author": {"familyName": None},
        "tags": ["example"],
    }
    assert merge_patch(target, patch) == {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-123-456-7890",
    }


def test_merge_patch_changes_neither_argument_nor_shares_with_them() -> None:
    target: dict[str, Any] = {"a": {"b": [1, 2]}, "keep": {"x": 1}}
    patch: dict[str, Any] = {"a": {"b": None, "c": [3]}, "new": {"d": 4}}
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    result = merge_patch(target, patch)
    assert result == {"a": {"c": [3]}, "keep": {"x": 1}, "new": {"d": 4}}
    assert target == target_before and patch == patch_before
    result["keep"]["x"] = 99
    result["a"]["c"].append(4)
    result["new"]["d"] = 5
    assert target == target_before and patch == patch_before


def test_subkeys_replaces_leaves_with_null() -> None:
    data = {"foo": "abc", "bar": {"baz": "def", "list": [1, {"x": 2}]}, "quux": {}, "n": None}
    assert subkeys(data) == {
        "foo": None,
        "bar": {"baz": None, "list": None},
        "quux": None,
        "n": None,
    }
    assert data["foo"] == "abc"  # not changed in place


@pytest.mark.parametrize(
    ("depth", "expected"),
    [
        (0, {"a": {"b": {"c": None}}, "d": None}),
        (1, {"a": None, "d": None}),
        (2, {"a": {"b": None}, "d": None}),
        (3, {"a": {"b": {"c": None}}, "d": None}),
        (9, {"a": {"b": {"c": None}}, "d": None}),
    ],
)
def test_subkeys_depth_limits_nesting(depth: int, expected: dict[str, Any]) -> None:
    assert subkeys({"a": {"b": {"c": "secret"}}, "d": 1}, depth) == expected


@pytest.mark.parametrize(("data", "depth"), [([1], 0), ("x", 0), ({"a": 1}, -1), ({"a": 1}, True)])
def test_subkeys_refuses_non_objects_and_bad_depths(data: Any, depth: Any) -> None:
    with pytest.raises(ValueError):
        subkeys(data, depth)


def test_validate_data_accepts_json_objects() -> None:
    data = {"a": 1, "b": [True, None, 1.5, "s", {"c": []}], "d": {}}
    assert validate_data(data) is data
    assert validate_data({}) == {}


def test_validate_data_walks_deep_nesting_without_recursion() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(5000):
        node["n"] = {}
        node = node["n"]
    assert validate_data(deep) is deep
    node["bad"] = {1, 2}
    with pytest.raises(ValueError, match="set"):
        validate_data(deep)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "must be a JSON object, not list"),
        (None, "not null"),
        ("text", "not str"),
        ({1: "x"}, "not a string"),
        ({"a": {"b": {2: 1}}}, r"data\.a\.b has a key 2"),
        ({"a": [1, b"raw"]}, r"data\.a\[1\] is bytes"),
        ({"a": float("nan")}, "JSON cannot hold"),
        ({"a": float("inf")}, "JSON cannot hold"),
        ({"a": (1, 2)}, "tuple"),
    ],
)
def test_validate_data_refuses_what_is_not_json(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_data(data)
