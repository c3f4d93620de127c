"""Lifeguard suspicion timeouts as pure functions of time (memberlist's suspicion.go).

A suspicion starts at `max_timeout` and shrinks towards `min_timeout` as distinct
members independently confirm it: after c of the k wanted confirmations the
timeout is ``max(min, max - (max - min) * log(c + 1) / log(k + 1))``. With k < 1
no confirmation can help, so the timeout is `min_timeout` from the start.
"""

from __future__ import annotations

import math


def suspicion_timeout(suspicion_mult: int, n: int, interval: float) -> float:
    """Min suspicion timeout for a ring of n members: mult * max(1, log10(n)) * interval."""
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    return suspicion_mult * node_scale * interval


class Suspicion:
    """Timer state of one suspected member. `confirmations` names members whose
    suspicion does not count (the first accuser is passed here by the core)."""

    __slots__ = (
        "_confirmations",
        "_deadline",
        "_n",
        "checked_at",
        "k",
        "max_timeout",
        "min_timeout",
        "started_at",
    )

    def __init__(
        self,
        k: int,
        min_timeout: float,
        max_timeout: float,
        started_at: float,
        confirmations: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        if min_timeout < 0 or max_timeout < min_timeout:
            raise ValueError("need 0 <= min_timeout <= max_timeout")
        self.k = k
        self.min_timeout = min_timeout
        self.max_timeout = max_timeout
        self.started_at = started_at
        self._confirmations = set(confirmations)
        self._n = 0
        self.checked_at: float | None = None
        """When the core sent its last-chance check of the suspect (None: not yet)."""
        # Hosts ask for the deadline far more often than it changes (only on confirm).
        self._deadline = started_at + self.timeout()

    @property
    def confirmations(self) -> int:
        """How many independent confirmations have counted so far."""
        return self._n

    def timeout(self) -> float:
        """Total timeout measured from `started_at`, given confirmations so far."""
        if self.k < 1:
            return self.min_timeout
        frac = math.log(self._n + 1.0) / math.log(self.k + 1.0)
        raw = self.max_timeout - frac * (self.max_timeout - self.min_timeout)
        return max(self.min_timeout, raw)

    def deadline(self) -> float:
        return self._deadline

    def confirm(self, from_id: str, now: float) -> bool:
        """Count a confirmation from `from_id`; True if it was new and counted.
        `now` is accepted for symmetry with the core; the deadline is absolute."""
        del now
        if self._n >= self.k or from_id in self._confirmations:
            return False
        self._confirmations.add(from_id)
        self._n += 1
        self._deadline = self.started_at + self.timeout()
        return True
