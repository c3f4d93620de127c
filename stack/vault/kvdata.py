"""Pure helpers on decrypted KV v2 secret data (JSON objects): validation, patch, subkeys.

The state layer only ever holds ciphertext; the engine decrypts a version and uses
these to answer `PATCH data/...` (RFC 7386 JSON Merge Patch, then a write with
cas = the version it patched) and `GET subkeys/...` (the structure without values).
Nothing here mutates its arguments.
"""

from __future__ import annotations

import copy
import math
from typing import Any

__all__ = ["merge_patch", "subkeys", "validate_data"]

_SCALARS = (str, int, float, bool, type(None))


def validate_data(data: Any) -> dict[str, Any]:
    """Return `data` if it is a JSON object (a dict with str keys holding JSON
    values, floats finite), else raise ValueError saying where it is not."""
    if not isinstance(data, dict):
        raise ValueError(f"secret data must be a JSON object, not {_kind(data)}")
    pending: list[tuple[str, Any]] = [("data", data)]
    while pending:  # iterative: a deeply nested value must not exhaust the stack
        where, value = pending.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ValueError(f"{where} has a key {key!r} that is not a string")
                pending.append((f"{where}.{key}", item))
        elif isinstance(value, list):
            pending.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
        elif not isinstance(value, _SCALARS):
            raise ValueError(f"{where} is {_kind(value)}, not a JSON value")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where} is {value}, which JSON cannot hold")
    return data


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch: a new value, `target` with `patch` applied (the
    result shares nothing with either argument).

    An object patch merges key by key (null removes the key, nested objects merge
    recursively, a non-object target becomes {} first); any other patch replaces the
    target whole (arrays are not merged)."""
    return _merge(copy.deepcopy(target), patch)


def _merge(target: Any, patch: Any) -> Any:
    """`merge_patch` on a `target` it may change in place."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def subkeys(data: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """Vault's `subkeys` endpoint: `data` with every leaf (a non-object value or an
    empty object) replaced by None. `depth` > 0 stops at that nesting level: objects
    found there are leaves too; 0 means no limit."""
    if not isinstance(data, dict):
        raise ValueError(f"secret data must be a JSON object, not {_kind(data)}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be an int >= 0, got {depth!r}")

    def walk(node: dict[str, Any], level: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            deeper = depth == 0 or level < depth
            out[key] = (
                walk(value, level + 1) if isinstance(value, dict) and value and deeper else None
            )
        return out

    return walk(data, 1)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
