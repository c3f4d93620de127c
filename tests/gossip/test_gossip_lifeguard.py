"""Pure Lifeguard pieces: suspicion timer math, health awareness, broadcast queue, config."""

from __future__ import annotations

import math

import pytest

from stack.gossip.awareness import Awareness
from stack.gossip.broadcast import BroadcastQueue, retransmit_limit
from stack.gossip.config import GossipConfig
from stack.gossip.suspicion import Suspicion, suspicion_timeout


def test_suspicion_timeout_scales_with_log10_of_ring_size() -> None:
    assert suspicion_timeout(4, 1, 1.0) == 4.0
    assert suspicion_timeout(4, 10, 1.0) == 4.0  # log10(10) = 1: no scaling yet
    assert suspicion_timeout(4, 20, 1.0) == pytest.approx(4 * math.log10(20))
    assert suspicion_timeout(4, 1000, 0.5) == pytest.approx(6.0)
    assert suspicion_timeout(3, 0, 2.0) == 6.0  # n < 1 counts as 1


def test_suspicion_starts_at_max_and_shrinks_with_distinct_confirmations() -> None:
    s = Suspicion(k=3, min_timeout=2.0, max_timeout=30.0, started_at=100.0, confirmations={"a"})
    assert s.deadline() == 130.0
    timeouts = [s.timeout()]
    for who in ("b", "c", "d"):
        assert s.confirm(who, 101.0)
        timeouts.append(s.timeout())
    assert timeouts == sorted(timeouts, reverse=True)
    assert len(set(timeouts)) == 4
    assert timeouts[1] == pytest.approx(30.0 - 28.0 * math.log(2) / math.log(4))
    assert s.timeout() == 2.0  # k confirmations: the minimum
    assert s.deadline() == 102.0


def test_suspicion_ignores_duplicates_the_accuser_and_extra_confirmations() -> None:
    s = Suspicion(k=2, min_timeout=5.0, max_timeout=30.0, started_at=0.0, confirmations={"a"})
    assert not s.confirm("a", 1.0)  # the first accuser does not confirm itself
    assert s.confirm("b", 1.0)
    assert not s.confirm("b", 2.0)
    assert s.confirmations == 1
    assert s.confirm("c", 2.0)
    assert not s.confirm("d", 3.0)  # already at k
    assert s.confirmations == 2
    assert s.timeout() == 5.0


def test_suspicion_without_possible_confirmations_uses_min() -> None:
    s = Suspicion(k=0, min_timeout=5.0, max_timeout=30.0, started_at=10.0)
    assert s.deadline() == 15.0
    assert not s.confirm("b", 11.0)
    with pytest.raises(ValueError):
        Suspicion(k=1, min_timeout=5.0, max_timeout=4.0, started_at=0.0)


def test_awareness_is_bounded_and_scales_timeouts() -> None:
    a = Awareness(8)
    assert a.score == 0 and a.scale_timeout(0.5) == 0.5
    a.apply_delta(-3)
    assert a.score == 0
    a.apply_delta(3)
    assert a.score == 3 and a.scale_timeout(0.5) == 2.0
    a.apply_delta(100)
    assert a.score == 7 and a.scale_timeout(1.0) == 8.0
    a.apply_delta(-1)
    assert a.score == 6
    with pytest.raises(ValueError):
        Awareness(0)


def test_retransmit_limit() -> None:
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 9) == 4
    assert retransmit_limit(4, 10) == 8  # ceil(log10(11)) = 2
    assert retransmit_limit(4, 20) == 8
    assert retransmit_limit(2, 100) == 6


def test_broadcast_queue_drops_at_transmit_limit() -> None:
    q: BroadcastQueue[str] = BroadcastQueue(retransmit_mult=2)
    q.queue("a", "alive-a", 10)
    sent = [q.get(0, 100, n=5) for _ in range(3)]  # limit 2 * ceil(log10 6) = 2
    assert sent == [["alive-a"], ["alive-a"], []]
    assert len(q) == 0


def test_broadcast_queue_newer_about_same_member_invalidates_older() -> None:
    q: BroadcastQueue[str] = BroadcastQueue(retransmit_mult=4)
    q.queue("a", "suspect-a", 10)
    q.queue("b", "alive-b", 10)
    q.get(0, 100, n=5)
    q.queue("a", "alive-a-2", 10)  # fresh: transmit count restarts
    assert len(q) == 2
    assert q.pending("a") == "alive-a-2"
    assert q.get(0, 100, n=5) == ["alive-a-2", "alive-b"]


def test_broadcast_queue_least_sent_then_newest_first_within_budget() -> None:
    q: BroadcastQueue[str] = BroadcastQueue(retransmit_mult=4)
    q.queue("a", "A", 10)
    q.queue("b", "B", 10)
    assert q.get(2, 12, n=5) == ["B"]  # room for one: the newest
    q.queue("c", "C", 30)
    # A has 0 transmits, C has 0 (newer), B has 1. C does not fit 25 bytes.
    assert q.get(2, 25, n=5) == ["A", "B"]
    assert q.get(2, 100, n=5) == ["C", "A", "B"]
    assert q.get(0, 5, n=5) == []


def test_presets_match_memberlist() -> None:
    lan = GossipConfig.lan()
    assert (lan.probe_interval, lan.probe_timeout, lan.indirect_checks) == (1.0, 0.5, 3)
    assert (lan.suspicion_mult, lan.suspicion_max_timeout_mult, lan.retransmit_mult) == (4, 6, 4)
    assert (lan.gossip_interval, lan.gossip_nodes, lan.push_pull_interval) == (0.2, 3, 30.0)
    assert lan.awareness_max_multiplier == 8
    wan = GossipConfig.wan()
    assert (wan.probe_interval, wan.probe_timeout, wan.suspicion_mult) == (5.0, 3.0, 6)
    assert (wan.gossip_interval, wan.gossip_nodes, wan.push_pull_interval) == (0.5, 4, 60.0)
    local = GossipConfig.local()
    assert (local.probe_interval, local.probe_timeout, local.indirect_checks) == (1.0, 0.2, 1)
    assert (local.suspicion_mult, local.retransmit_mult, local.gossip_interval) == (3, 2, 0.1)
    assert local.push_pull_interval == 15.0
