"""Virtual time for the simulator: one event queue, integer time, no wall clock.

Time is an integer number of *units*; a Raft tick is `TICK` units on an unskewed node.
Integers keep every comparison exact, so a run is a pure function of its seed.
Events at equal times run in the order they were scheduled (a sequence number breaks
ties), never in an order that depends on the objects involved.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

TICK = 100  # units per tick on a node whose clock runs at the nominal rate

Action = Callable[[Any], None]


class Scheduler:
    """A priority queue of (time, seq, action, arg) and the current virtual time."""

    __slots__ = ("_heap", "_seq", "now")

    def __init__(self) -> None:
        self.now = 0
        self._heap: list[tuple[int, int, Action, Any]] = []
        self._seq = 0

    def at(self, time: int, action: Action, arg: Any = None) -> None:
        """Run `action(arg)` at `time` (never in the past: clamped to now)."""
        self._seq += 1
        heapq.heappush(self._heap, (time if time > self.now else self.now, self._seq, action, arg))

    def after(self, delay: int, action: Action, arg: Any = None) -> None:
        self.at(self.now + delay, action, arg)

    def next_time(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)

    def run_until(self, end: int, flush: Callable[[], None] | None = None) -> None:
        """Run every event due at or before `end`, advancing `now` as it goes.

        After the events of one instant have run, `flush` is called (the cluster uses it
        to hand each touched node's Ready to its host: that is where batching happens);
        events that `flush` schedules for the same instant run before time moves on.
        """
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= end:
            self.now = heap[0][0]
            while heap and heap[0][0] <= self.now:
                _, _, action, arg = pop(heap)
                action(arg)
            if flush is not None:
                flush()
        if end > self.now:
            self.now = end


class NodeClock:
    """One node's local clock: a tick period (skew) and pauses.

    `period` is how many units pass between two ticks of this node: a skewed node
    ticks slightly faster or slower than its peers, which is what makes election
    timeouts race. A paused node (a GC pause, a stopped VM) neither ticks nor
    handles input until `paused_until`.
    """

    __slots__ = ("paused_until", "period")

    def __init__(self, period: int = TICK) -> None:
        if period <= 0:
            raise ValueError("tick period must be positive")
        self.period = period
        self.paused_until = 0

    @classmethod
    def skewed(cls, rng: random.Random, max_skew: float) -> NodeClock:
        """A clock whose rate differs from nominal by up to `max_skew` (0.05 = 5%)."""
        skew = rng.uniform(-max_skew, max_skew)
        return cls(max(1, round(TICK * (1.0 + skew))))

    def paused(self, now: int) -> bool:
        return now < self.paused_until

    def pause(self, now: int, duration: int) -> int:
        """Pause for `duration` units from `now` (extending a running pause); returns the end."""
        self.paused_until = max(self.paused_until, now + duration)
        return self.paused_until
