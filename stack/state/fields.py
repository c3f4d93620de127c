"""The fields of a command body, checked as the command is applied.

A body is what an encoder in this package wrote, so a field of the wrong type is
a bug in that encoder, not a refusal: it raises TypeError. A wrong value is each
command's own business (a ValueError or a refusal). `as_*` check a value already
taken from the body; `get_*` take a required field from the body and check it.
"""

from __future__ import annotations

from typing import Any


def as_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise TypeError(f"body must be a map, got {type(body).__name__}")
    return body


def as_map(value: Any, name: str = "body") -> dict[str, Any]:
    # The same check as `as_body`, worded as the auth and ACL commands have always
    # worded it ("not" where `as_body` says "got").
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a map, not {type(value).__name__}")
    return value


def field(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise TypeError(f"body has no {name!r}")
    return body[name]


def as_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
    return value


def as_bytes(value: Any, name: str) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    return value


def as_int(value: Any, name: str) -> int:
    if type(value) is not int:  # not a bool, nor an int subclass
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


def as_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def as_seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    return float(value)


def as_strings(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a list of str")
    return list(value)


def as_str_map(value: Any, name: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError(f"{name} must map str to str")
    return dict(value)


def get_str(body: dict[str, Any], name: str) -> str:
    return as_str(field(body, name), name)


def get_bytes(body: dict[str, Any], name: str) -> bytes:
    return as_bytes(field(body, name), name)


def get_int(body: dict[str, Any], name: str) -> int:
    return as_int(field(body, name), name)


def get_bool(body: dict[str, Any], name: str) -> bool:
    return as_bool(field(body, name), name)


def get_seconds(body: dict[str, Any], name: str) -> float:
    return as_seconds(field(body, name), name)
