"""Rings of real cores on the in-memory network (gossip_net.Net), LAN preset."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from gossip_net import Net

from stack.gossip.broadcast import retransmit_limit
from stack.gossip.config import GossipConfig
from stack.gossip.core import Gossip
from stack.gossip.suspicion import suspicion_timeout
from stack.gossip.types import EventKind, State

N = 20


def settle(net: Net, until: float, step: float = 0.1) -> float | None:
    """Run until every live member agrees all live members are alive; return when."""
    while net.now < until:
        net.run_for(step)
        if net.converged_alive():
            return net.now
    return None


def failed_about(net: Net, name: str) -> list[str]:
    return [s.observer for s in net.seen if s.kind is EventKind.FAILED and s.member == name]


def test_twenty_members_converge_after_joining_through_one_seed() -> None:
    net = Net(seed=1)
    net.ring(N)
    joined_by = net.now
    at = settle(net, until=joined_by + 10.0)
    assert at is not None, "ring did not converge within 10 s"
    kinds = Counter(s.kind for s in net.seen)
    assert kinds == {EventKind.JOIN: N * (N - 1)}  # each member sees every other join once
    assert {(s.observer, s.member) for s in net.seen} == {
        (a.name, b.name) for a in net.live() for b in net.live() if a is not b
    }


def detection_bound(net: Net) -> float:
    """Worst case for every live member to mark a crashed one DEAD, from the config:
    some member probes it within two shuffled rounds (2(N-1) probes) plus that probe's
    interval; its suspicion runs at most the Lifeguard max timeout; the Dead then
    spreads within one broadcast's transmit budget of gossip rounds."""
    cfg = net.config
    lo = suspicion_timeout(cfg.suspicion_mult, N, cfg.probe_interval)
    hi = cfg.suspicion_max_timeout_mult * lo
    spread = retransmit_limit(cfg.retransmit_mult, N) * cfg.gossip_interval
    return (2 * (N - 1) + 1) * cfg.probe_interval + hi + spread


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crashed_member_is_declared_dead_by_all_within_the_bound(seed: int) -> None:
    net = Net(seed=seed)
    net.ring(N)
    assert settle(net, until=net.now + 10.0) is not None
    net.run_for(5.0)
    crashed_at = net.now
    net.crash("n07")
    bound = detection_bound(net)
    all_dead_at = None
    while net.now < crashed_at + bound:
        net.run_for(0.1)
        if all(s is State.DEAD for s in net.states("n07").values()):
            all_dead_at = net.now
            break
    assert all_dead_at is not None, f"not all members marked n07 DEAD within {bound:.1f} s"
    net.run_until(crashed_at + bound)
    observers = failed_about(net, "n07")
    assert sorted(observers) == sorted(g.name for g in net.live())  # each exactly once
    assert all(s.kind is EventKind.JOIN or s.member == "n07" for s in net.seen)


def test_no_false_positive_under_ten_percent_loss_for_ten_minutes() -> None:
    net = Net(seed=11, loss=0.10)
    net.ring(N)
    net.run_for(600.0)
    assert [s for s in net.seen if s.kind is EventKind.FAILED] == []
    # Loss does cause suspicions; each one that reached its target was refuted.
    refutations = sum(m.incarnation - 1 for g in net.live() if (m := g.member(g.name)))
    assert refutations > 0
    assert net.packets_lost > 0.08 * net.packets_sent
    assert net.converged_alive()


def test_paused_member_is_suspected_refutes_and_is_never_declared_dead() -> None:
    net = Net(seed=5)
    net.ring(N)
    assert settle(net, until=net.now + 10.0) is not None
    net.run_for(5.0)
    net.pause("n05", 5.0)
    most_suspecting = 0
    for _ in range(100):  # 10 s: the pause and its aftermath
        net.run_for(0.1)
        suspecting = sum(s is State.SUSPECT for s in net.states("n05").values())
        most_suspecting = max(most_suspecting, suspecting)
    net.run_for(30.0)
    assert most_suspecting > 0
    assert failed_about(net, "n05") == []
    me = net.node("n05").member("n05")
    assert me is not None and me.incarnation > 1  # it refuted
    assert net.converged_alive()


def test_tag_update_reaches_everyone() -> None:
    net = Net(seed=3)
    net.ring(N)
    assert settle(net, until=net.now + 10.0) is not None
    net.node("n04").update_tags({"role": "server", "dc": "dc1"}, net.now)
    net.run_for(5.0)
    for g in net.live():
        m = g.member("n04")
        assert m is not None and m.tags == {"role": "server", "dc": "dc1"}
    updates = [s.observer for s in net.seen if s.kind is EventKind.UPDATE]
    assert sorted(updates) == sorted(g.name for g in net.live() if g.name != "n04")


def test_leave_propagates_as_left_and_is_not_reported_failed() -> None:
    net = Net(seed=4)
    net.ring(N)
    assert settle(net, until=net.now + 10.0) is not None
    net.node("n03").leave(net.now)
    net.run_for(2.0)
    net.crash("n03")  # the host shuts down after leaving
    states = net.states("n03")
    assert all(s is State.LEFT for s in states.values()), states
    net.run_for(60.0)
    assert failed_about(net, "n03") == []
    leaves = [s.observer for s in net.seen if s.kind is EventKind.LEAVE]
    assert sorted(leaves) == sorted(g.name for g in net.live())


def run_story(seed: int) -> Net:
    net = Net(seed=seed, loss=0.05, latency=(0.001, 0.02))
    net.ring(12)
    net.run_for(10.0)
    net.crash("n02")
    net.pause("n06", 3.0)
    net.node("n08").update_tags({"v": "2"}, net.now)
    net.run_for(30.0)
    net.node("n09").leave(net.now)
    net.run_for(10.0)
    return net


def test_same_seed_same_trace() -> None:
    a, b = run_story(21), run_story(21)
    assert a.seen and any(s.kind is EventKind.FAILED for s in a.seen)
    assert a.trace_hash() == b.trace_hash()
    assert a.packets_sent == b.packets_sent
    assert run_story(22).trace_hash() != a.trace_hash()


class NeverRefutes(Gossip):
    """A planted bug: this core does not defend itself against suspicion."""

    def _refute(self, me: Any, accused: int) -> None:
        return


def test_pause_check_catches_a_core_that_never_refutes() -> None:
    # Without last-chance checks (which would let the acks it still sends save it).
    net = Net(seed=5, core=NeverRefutes, config=replace(GossipConfig.lan(), recheck_suspects=False))
    net.ring(N)
    assert settle(net, until=net.now + 10.0) is not None
    net.pause("n05", 5.0)
    net.run_for(60.0)
    assert len(failed_about(net, "n05")) == N - 1
