"""A simulated datagram network between numbered nodes, protocol-agnostic.

Payloads are opaque: the Raft cluster sends its messages, the gossip ring will send
its packets. Every send draws, from the network's own RNG, whether the packet is
dropped, whether it is duplicated, and a delay for each copy; reordering falls out
of independent delays. Partitions are sets of blocked directed links, checked when a
packet *arrives*, so a partition also cuts what is already in flight.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from stack.sim.clock import Scheduler

P = TypeVar("P")


@dataclass(slots=True)
class NetConfig:
    min_delay: int = 5  # units (see clock.TICK)
    max_delay: int = 150
    drop: float = 0.0  # probability that a packet is lost
    duplicate: float = 0.0  # probability that a packet arrives twice

    def __post_init__(self) -> None:
        if not 0 <= self.min_delay <= self.max_delay:
            raise ValueError("need 0 <= min_delay <= max_delay")
        if not (0.0 <= self.drop <= 1.0 and 0.0 <= self.duplicate <= 1.0):
            raise ValueError("probabilities must be in [0, 1]")


@dataclass(slots=True)
class NetStats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0  # lost at random
    cut: int = 0  # lost to a partition or an unreachable node
    duplicated: int = 0


class Network(Generic[P]):
    """Delivers `payload` to `deliver(to, payload)` after a random delay, or not at all."""

    def __init__(
        self,
        scheduler: Scheduler,
        rng: random.Random,
        deliver: Callable[[int, P], None],
        config: NetConfig | None = None,
        on_lost: Callable[[P], None] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.rng = rng
        self.config = config or NetConfig()
        self.stats = NetStats()
        self._deliver = deliver
        self._on_lost = on_lost
        self._blocked: set[tuple[int, int]] = set()  # directed links that lose every packet
        self._down: set[int] = set()  # nodes whose packets vanish both ways
        self._epoch: dict[int, int] = {}  # bumped by reset(): older packets are lost

    # -- traffic
    def send(self, frm: int, to: int, payload: P) -> None:
        cfg = self.config
        stats = self.stats
        stats.sent += 1
        rng = self.rng
        if cfg.drop and rng.random() < cfg.drop:
            stats.dropped += 1
            if self._on_lost is not None:
                self._on_lost(payload)
            return
        copies = 1
        if cfg.duplicate and rng.random() < cfg.duplicate:
            copies = 2
            stats.duplicated += 1
        lo, span = cfg.min_delay, cfg.max_delay - cfg.min_delay + 1
        at = self.scheduler.at
        now = self.scheduler.now
        epoch = self._epoch
        packet = (frm, to, payload, epoch.get(frm, 0), epoch.get(to, 0))
        for _ in range(copies):
            at(now + lo + int(rng.random() * span), self._arrive, packet)

    def _arrive(self, packet: tuple[int, int, P, int, int]) -> None:
        frm, to, payload, frm_epoch, to_epoch = packet
        epoch = self._epoch
        if (
            (frm, to) in self._blocked
            or to in self._down
            or frm in self._down
            or (epoch and (epoch.get(frm, 0) != frm_epoch or epoch.get(to, 0) != to_epoch))
        ):
            self.stats.cut += 1
            if self._on_lost is not None:
                self._on_lost(payload)
            return
        self.stats.delivered += 1
        self._deliver(to, payload)

    # -- faults
    def partition(self, *groups: Iterable[int]) -> None:
        """Cut every link between nodes of different groups (both directions).
        Adds to existing cuts; nodes not named keep their links."""
        sets = [frozenset(g) for g in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1 :]:
                self.block(a, b)
                self.block(b, a)

    def block(self, frm: Iterable[int], to: Iterable[int]) -> None:
        """One-way cut: packets from any node in `frm` to any node in `to` are lost."""
        targets = tuple(to)
        for a in frm:
            for b in targets:
                if a != b:
                    self._blocked.add((a, b))

    def isolate(self, node: int, others: Iterable[int]) -> None:
        self.partition([node], [o for o in others if o != node])

    def heal(self) -> None:
        self._blocked.clear()

    def connected(self, frm: int, to: int) -> bool:
        return (frm, to) not in self._blocked and frm not in self._down and to not in self._down

    def partitioned(self) -> bool:
        return bool(self._blocked)

    def reset(self, node: int) -> None:
        """The node crashed: its connections die, and with them every packet in flight
        from or to it (what a TCP transport does; a datagram transport would not)."""
        self._epoch[node] = self._epoch.get(node, 0) + 1

    def set_down(self, node: int, down: bool) -> None:
        """A down node's in-flight packets are lost (used for decommissioned nodes)."""
        if down:
            self._down.add(node)
        else:
            self._down.discard(node)
