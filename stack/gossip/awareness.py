"""Lifeguard local health awareness (memberlist's awareness.go), as a pure value.

The score rises when this node misses acks or nacks it should have got, or must
refute a suspicion of itself: signs that *it* is slow. Timeouts stretch by
score + 1 so a sick node accuses others less eagerly.
"""

from __future__ import annotations


class Awareness:
    __slots__ = ("_score", "max")

    def __init__(self, max_multiplier: int) -> None:
        if max_multiplier < 1:
            raise ValueError("max_multiplier must be >= 1")
        self.max = max_multiplier
        self._score = 0

    @property
    def score(self) -> int:
        """0 is healthy; max - 1 is the worst."""
        return self._score

    def apply_delta(self, delta: int) -> None:
        self._score = min(self.max - 1, max(0, self._score + delta))

    def scale_timeout(self, timeout: float) -> float:
        return timeout * (self._score + 1)
