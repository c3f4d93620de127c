"""A transmit-limited broadcast queue (memberlist's TransmitLimitedQueue).

Each broadcast is about one member and keyed by its name: queueing a newer one
drops any older one about the same member. `get` hands out the least-sent
broadcasts first (newest first among equals) that fit a byte budget, and drops
a broadcast once it has been sent `retransmit_limit(mult, n)` times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """retransmit_mult * ceil(log10(n + 1)): how often each broadcast is sent."""
    return retransmit_mult * math.ceil(math.log10(n + 1))


@dataclass(slots=True)
class _Queued(Generic[T]):
    key: str
    payload: T
    size: int
    seq: int
    transmits: int = 0


class BroadcastQueue(Generic[T]):
    def __init__(self, retransmit_mult: int) -> None:
        self.retransmit_mult = retransmit_mult
        self._items: dict[str, _Queued[T]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, key: str, payload: T, size: int) -> None:
        """Queue `payload` (encoded `size` bytes) about member `key`, replacing any
        older broadcast about the same member."""
        self._seq += 1
        self._items[key] = _Queued(key, payload, size, self._seq)

    def pending(self, key: str) -> T | None:
        item = self._items.get(key)
        return None if item is None else item.payload

    def get(self, overhead: int, limit_bytes: int, n: int) -> list[T]:
        """Broadcasts to piggy-back on one packet: each costs `overhead` + its size
        out of `limit_bytes`. `n` is the ring size that sets the transmit limit."""
        if not self._items:
            return []
        limit = retransmit_limit(self.retransmit_mult, n)
        out: list[T] = []
        used = 0
        for item in sorted(self._items.values(), key=lambda q: (q.transmits, -q.seq)):
            cost = overhead + item.size
            if used + cost > limit_bytes:
                continue
            used += cost
            out.append(item.payload)
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[item.key]
        return out

    def reset(self) -> None:
        self._items.clear()
