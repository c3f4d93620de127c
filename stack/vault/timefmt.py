"""Vault's wire formats for times and durations: RFC 3339 timestamps with
nanosecond-style fractions, Go duration strings ("1h30m0s"), and durations given
as either seconds or Go strings on input."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from stack.vault.logical import LogicalError

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
          "d": 86400.0}  # fmt: skip
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")


def rfc3339(ts: float) -> str:
    """Unix seconds as Vault prints them; 0 is the empty string (never)."""
    if not ts:
        return ""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}000Z"


def go_duration(seconds: float) -> str:
    """Seconds as a Go duration string: 0 -> "0s", 5400 -> "1h30m0s"."""
    total = round(seconds)
    if total <= 0:
        return "0s"
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


def parse_duration(value: object, name: str) -> float:
    """An int/float of seconds, a numeric string, or a Go duration ("90s", "1h30m")."""
    if isinstance(value, bool):
        raise LogicalError(400, f"{name}: a duration, not a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise LogicalError(400, f"{name}: must not be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0.0
        try:
            seconds = float(text)
        except ValueError:
            pos, total = 0, 0.0
            for m in _PART.finditer(text):
                if m.start() != pos:
                    break
                total += float(m.group(1)) * _UNITS[m.group(2)]
                pos = m.end()
            if pos != len(text) or pos == 0:
                raise LogicalError(400, f"{name}: {value!r} is not a duration") from None
            return total
        if seconds < 0:
            raise LogicalError(400, f"{name}: must not be negative")
        return seconds
    raise LogicalError(400, f"{name}: {type(value).__name__} is not a duration")
