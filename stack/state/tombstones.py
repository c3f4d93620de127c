"""Reaping tombstones: a replicated command plus the leader's timer logic.

Reaping changes what every replica reports as a key's index, so it is a log
command (TOMBSTONE_REAP, 6), never a local clean-up. Any reap is index-safe: the
table's floor stands in for the tombstones it drops. But each reap raises the
floor of every key in the table, so a client holding an older index gets one
spurious wake-up; reaping in batches after a TTL (Consul: 15 minutes) keeps
that rare while bounding the memory tombstones take.

The leader runs `TombstoneGC` (pure: time is passed in): every `granularity`
seconds it calls `observe(now, applied_index)` then `reap_index(now)`, and if
that returns an index at or above `store.oldest_tombstone()`, proposes
`encode_reap(registry, upto)`. On losing leadership it calls `reset()`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from stack.state.commands import ApplyContext, CommandRegistry

TOMBSTONE_REAP = 6
DEFAULT_TTL = 15 * 60.0
DEFAULT_GRANULARITY = 30.0


def register(registry: CommandRegistry) -> None:
    registry.register(TOMBSTONE_REAP, "state.tombstone_reap", apply_reap)


def encode_reap(registry: CommandRegistry, upto_index: int) -> bytes:
    return registry.encode(TOMBSTONE_REAP, {"upto": upto_index})


def apply_reap(ctx: ApplyContext, body: Any) -> int:
    """Returns the number of tombstones dropped."""
    upto = body["upto"]
    if isinstance(upto, bool) or not isinstance(upto, int):
        raise TypeError(f"upto has type {type(upto).__name__}")
    return ctx.store.reap_tombstones(upto)


class TombstoneGC:
    """Remembers (time, applied index) marks; an index is reapable once its
    mark is `ttl` seconds old, because every tombstone at or below it is too."""

    __slots__ = ("_marks", "granularity", "ttl")

    def __init__(self, ttl: float = DEFAULT_TTL, granularity: float = DEFAULT_GRANULARITY) -> None:
        if ttl <= 0 or granularity <= 0:
            raise ValueError("ttl and granularity must be positive")
        self.ttl = ttl
        self.granularity = granularity
        self._marks: deque[tuple[float, int]] = deque()

    def observe(self, now: float, applied_index: int) -> None:
        if self._marks:
            last_time, last_index = self._marks[-1]
            if applied_index <= last_index or now - last_time < self.granularity:
                return
        self._marks.append((now, applied_index))

    def reap_index(self, now: float) -> int | None:
        """The highest index whose mark has expired (consumed), or None."""
        upto: int | None = None
        while self._marks and now - self._marks[0][0] >= self.ttl:
            upto = self._marks.popleft()[1]
        return upto

    def reset(self) -> None:
        self._marks.clear()
