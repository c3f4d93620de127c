"""Query-string parsing shared by the native handlers: bad values are a 400."""

from __future__ import annotations

import re

from aiohttp import web

from stack.errors import BadRequest

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")
MAX_WAIT = 600.0


def int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer, got {raw!r}")
    return int(raw)


def flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return False
    if raw in ("", "true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise BadRequest(f"{name} must be true or false, got {raw!r}")


def duration_param(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    m = _DURATION.match(raw)
    if m is None:
        raise BadRequest(f"{name} must be a duration like 30s, 500ms or 5m, got {raw!r}")
    value = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    return min(value, MAX_WAIT)
