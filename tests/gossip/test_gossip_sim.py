"""The simulator's gossip ring (stack.sim.gossip) itself: codec on and off give the
same run, a converged ring is converged and quiet, and the core's cached gossip
candidates are always what a fresh scan would give."""

from __future__ import annotations

from typing import Any

import pytest

from stack.gossip.core import Gossip
from stack.gossip.types import EventKind, State
from stack.sim.gossip import GossipNet, to_units


def story(seed: int, *, codec: bool, core: type[Gossip] = Gossip) -> GossipNet:
    """Joins, loss, a crash, a pause long enough to be declared dead and come back,
    a tag update and a leave: every path through the membership rules."""
    net = GossipNet(seed=seed, loss=0.05, latency=(0.001, 0.02), codec=codec, core=core)
    net.ring(12)
    net.run_for(10.0)
    net.crash("n02")
    net.pause("n06", 40.0)
    net.node("n08").update_tags({"v": "2"}, net.now)
    net.run_for(60.0)
    net.node("n09").leave(net.now)
    net.run_for(45.0)
    return net


def test_codec_on_and_off_give_the_same_run() -> None:
    on, off = story(31, codec=True), story(31, codec=False)
    kinds = {s.kind for s in on.seen}
    assert {EventKind.FAILED, EventKind.RECOVER, EventKind.UPDATE, EventKind.LEAVE} <= kinds
    assert on.trace_hash() == off.trace_hash()
    assert (on.packets_sent, on.packets_lost) == (off.packets_sent, off.packets_lost)
    counts = [(m.packets, m.streams, m.messages) for m in on.members.values()]
    assert counts == [(m.packets, m.streams, m.messages) for m in off.members.values()]
    assert sum(m.bytes for m in on.members.values()) > 0
    assert sum(m.bytes for m in off.members.values()) == 0
    assert story(32, codec=False).trace_hash() != off.trace_hash()


def test_converged_ring_is_converged_and_quiet() -> None:
    net = GossipNet(seed=4)
    net.converged_ring(40)
    assert net.converged_alive()
    assert all(g.pending_broadcasts() == 0 for g in net.live())
    assert net.seen == []
    net.run_for(60.0)
    assert net.seen == []  # nothing happened: no joins replayed, no suspicion
    assert net.converged_alive()
    # Steady state: one ping and one ack per member per probe interval, plus push-pull.
    per_member_s = net.packets_sent / (40 * 60.0)
    assert 2.0 <= per_member_s <= 2.0 + 3 / 30


def test_wake_ups_round_up_to_a_unit_at_or_after_the_deadline() -> None:
    for seconds in (0.0, 0.1, 0.3, 1 / 3, 12.000000000000002, 1e-7, 3599.9999999):
        assert to_units(seconds) / 1_000_000 >= seconds
        assert to_units(seconds) - 1 < seconds * 1_000_000


class CheckedPool(Gossip):
    """Fails the run if the cached gossip candidates differ from a fresh scan."""

    checked = 0

    def _gossip_candidates(self, now: float) -> list[Any]:
        cached = super()._gossip_candidates(now)
        dead_time = self.cfg.gossip_to_the_dead_time
        fresh = [
            n
            for n in self._nodes.values()
            if n.name != self.name
            and (n.state in (State.ALIVE, State.SUSPECT) or now - n.state_change <= dead_time)
        ]
        assert cached == fresh, f"{self.name} at {now}: stale gossip candidates"
        CheckedPool.checked += 1
        return cached


class ForgetsDeaths(CheckedPool):
    """A planted bug: a death does not invalidate the cached candidates."""

    def _on_dead(self, m: Any, now: float) -> None:
        pool = self._gossip_pool
        super()._on_dead(m, now)
        self._gossip_pool = pool


def test_cached_gossip_candidates_match_a_fresh_scan() -> None:
    CheckedPool.checked = 0
    net = story(33, codec=False, core=CheckedPool)
    assert CheckedPool.checked > 1000
    assert any(s.kind is EventKind.RECOVER for s in net.seen)


def test_candidate_check_catches_a_cache_that_misses_a_death() -> None:
    with pytest.raises(AssertionError, match="stale gossip candidates"):
        story(33, codec=False, core=ForgetsDeaths)
