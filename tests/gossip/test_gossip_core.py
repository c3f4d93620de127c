"""Rules of the gossip core, checked by piping a few cores together by hand."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from stack.gossip.config import GossipConfig
from stack.gossip.core import Gossip
from stack.gossip.errors import AlreadyLeft
from stack.gossip.types import (
    Ack,
    Alive,
    Dead,
    EventKind,
    IndirectPing,
    Member,
    Message,
    Nack,
    Packet,
    Ping,
    PushPull,
    State,
    Suspect,
)

CFG = GossipConfig.lan()


def core(name: str, seed: int = 0) -> Gossip:
    return Gossip(name, f"{name}:1", {"id": name}, CFG, random.Random(seed), 0.0)


def view(g: Gossip, name: str) -> Member:
    m = g.member(name)
    assert m is not None, f"{g.name} does not know {name}"
    return m


def flat(packets: list[Packet]) -> list[Message]:
    return [m for p in packets for m in p.messages]


def introduce(g: Gossip, *names: str, inc: int = 1) -> None:
    g.receive("x", [Alive(n, inc, f"{n}:1", {"id": n}) for n in names], 0.0)
    g.packets()
    g.events()


def test_join_is_a_push_pull_answered_once() -> None:
    a, b = core("a"), core("b")
    b.join(["a:1", "b:1"], 0.0)  # its own address is skipped
    [p] = b.packets()
    assert p.to_addr == "a:1" and p.reliable
    [req] = p.messages
    assert isinstance(req, PushPull) and req.join and not req.reply
    a.receive("b:1", p.messages, 0.1)
    [answer] = [q for q in a.packets() if q.reliable]
    [rep] = answer.messages
    assert isinstance(rep, PushPull) and rep.reply and answer.to_addr == "b:1"
    b.receive("a:1", answer.messages, 0.2)
    assert [q for q in b.packets() if q.reliable] == []
    assert [e.kind for e in a.events()] == [EventKind.JOIN]
    assert [(e.kind, e.member.name) for e in b.events()] == [(EventKind.JOIN, "a")]
    assert [m.name for m in b.members()] == ["a", "b"]


def test_suspicion_of_self_is_refuted_with_higher_incarnation() -> None:
    a = core("a")
    introduce(a, "b")
    a.receive("b:1", [Suspect("a", 5, "b")], 1.0)
    me = a.member("a")
    assert me is not None and me.incarnation == 6 and me.state is State.ALIVE
    assert a.local_health() == 1
    a.tick(a.next_deadline())
    alive = [m for m in flat(a.packets()) if isinstance(m, Alive) and m.name == "a"]
    assert alive and alive[0].incarnation == 6
    a.receive("b:1", [Dead("a", 6, "b")], 2.0)  # a death claim is refuted too
    assert view(a, "a").incarnation == 7


def test_incarnation_rules() -> None:
    a = core("a")
    introduce(a, "b", "c", inc=3)
    a.receive("x", [Suspect("b", 2, "c")], 1.0)  # stale: ignored
    assert view(a, "b").state is State.ALIVE
    a.receive("x", [Suspect("b", 3, "c")], 1.0)
    assert view(a, "b").state is State.SUSPECT
    a.receive("x", [Alive("b", 3, "b:1", {"id": "b"})], 1.1)  # same incarnation: no refute
    assert view(a, "b").state is State.SUSPECT
    a.receive("x", [Alive("b", 4, "b:1", {"id": "b"})], 1.2)
    assert view(a, "b").state is State.ALIVE
    a.receive("x", [Dead("b", 4, "c")], 2.0)
    assert view(a, "b").state is State.DEAD
    a.receive("x", [Alive("b", 4, "b:1", {"id": "b"})], 2.1)
    assert view(a, "b").state is State.DEAD
    a.receive("x", [Alive("b", 5, "b:1", {"id": "b"})], 2.2)
    assert view(a, "b").state is State.ALIVE
    assert [e.kind for e in a.events()] == [EventKind.FAILED, EventKind.RECOVER]
    a.receive("x", [Alive("c", 9, "elsewhere:1", {})], 3.0)  # name conflict
    assert view(a, "c").addr == "c:1"


def test_suspicion_expires_into_dead_after_the_timeout() -> None:
    a = core("a")
    introduce(a, "b", "c")  # 3 members: too few to confirm, so min timeout from the start
    a.receive("x", [Suspect("b", 1, "c")], 10.0)
    assert a.next_deadline() <= 13.0  # the last-chance check, then the death at 14.0
    a.tick(13.0)
    a.tick(13.99)
    assert view(a, "b").state is State.SUSPECT
    a.tick(14.0)  # 4 * max(1, log10 3) * 1 s
    assert view(a, "b").state is State.DEAD
    assert [(e.kind, e.member.name) for e in a.events()] == [(EventKind.FAILED, "b")]


def is_check(p: Packet, target: str) -> bool:
    """A last-chance check: our suspicion first, then the ping (a probe is the other
    way round)."""
    head = p.messages[:2]
    return (
        p.to_addr == f"{target}:1"
        and len(head) == 2
        and isinstance(head[0], Suspect)
        and isinstance(head[1], Ping)
        and head[1].target == target
    )


def test_last_chance_check_an_ack_clears_the_suspicion_here_only() -> None:
    a, b = core("a"), core("b")
    introduce(a, "b", "c")
    introduce(b, "a", "c")
    a.receive("c:1", [Suspect("b", 1, "c")], 10.0)  # dead at 14.0 unless refuted
    a.packets()
    a.tick(12.99)
    assert not [p for p in a.packets() if is_check(p, "b")]
    a.tick(13.0)  # one probe interval before the deadline
    sent = a.packets()
    [direct] = [p for p in sent if is_check(p, "b")]
    ping = direct.messages[1]
    assert isinstance(ping, Ping)
    seq = ping.seq
    assert IndirectPing(seq, "b", "b:1", "a") in flat(sent)
    # b, alive, acks and refutes; only the ack gets through.
    b.receive("a:1", direct.messages, 13.01)
    replies = flat(b.packets())
    assert Ack(seq, "b") in replies
    assert any(isinstance(m, Alive) and m.name == "b" and m.incarnation == 2 for m in replies)
    a.receive("b:1", [Ack(seq, "b")], 13.02)
    assert view(a, "b").state is State.ALIVE and view(a, "b").incarnation == 1
    assert [m for m in flat(a.packets()) if isinstance(m, Alive | Suspect)] == []  # local
    a.receive("c:1", [Ack(seq, "c")], 13.03)  # a duplicate (through c) changes nothing
    assert view(a, "b").state is State.ALIVE
    a.tick(14.0)  # (a's own unanswered probes may suspect b afresh, with a new timer)
    assert view(a, "b").state is not State.DEAD
    assert [e for e in a.events() if e.kind is EventKind.FAILED] == []


def test_a_stale_accusation_of_self_is_answered_to_its_sender() -> None:
    b = core("b")
    introduce(b, "a", "c")
    b.receive("c:1", [Suspect("b", 1, "c")], 1.0)  # refutes: incarnation 2
    b.packets()
    b.receive("a:1", [Suspect("b", 1, "c"), Dead("b", 1, "c")], 2.0)  # a missed it
    [p] = b.packets()
    assert p.to_addr == "a:1" and Alive("b", 2, "b:1", {"id": "b"}) in p.messages
    assert view(b, "b").incarnation == 2  # stale: no new refutation
    quiet = Gossip("b", "b:1", {}, replace(CFG, recheck_suspects=False), random.Random(0), 0.0)
    introduce(quiet, "a", "c", inc=1)
    quiet.receive("c:1", [Suspect("b", 1, "c")], 1.0)
    quiet.packets()
    quiet.receive("a:1", [Suspect("b", 1, "c")], 2.0)
    assert quiet.packets() == []  # memberlist's behaviour: left to the epidemic


def test_unanswered_last_chance_check_does_not_delay_the_death() -> None:
    a = core("a")
    introduce(a, "b", "c")
    a.receive("c:1", [Suspect("b", 1, "c")], 10.0)
    a.tick(13.0)
    assert any(isinstance(m, Ping) and m.target == "b" for m in flat(a.packets()))
    a.tick(14.0)
    assert view(a, "b").state is State.DEAD


def test_late_confirmations_still_leave_the_check_a_probe_interval() -> None:
    a = core("a")
    introduce(a, "b", "c", "d", "e")  # 5 members: two confirmations can count
    a.receive("c:1", [Suspect("b", 1, "c")], 10.0)  # 24 s unconfirmed: dead at 34.0
    a.receive("d:1", [Suspect("b", 1, "d"), Suspect("b", 1, "e")], 30.0)  # now 4 s: 14.0
    assert a.next_deadline() <= 30.0
    a.tick(30.0)  # past the deadline, but never checked: check first
    assert [p for p in a.packets() if is_check(p, "b")]
    a.tick(30.99)
    assert view(a, "b").state is State.SUSPECT
    a.tick(31.0)
    assert view(a, "b").state is State.DEAD


def probe_until_target(a: Gossip, target: str) -> tuple[Ping, float]:
    """Tick `a` until it pings `target`, answering every other probe."""
    while True:
        now = a.next_deadline()
        a.tick(now)
        for p in a.packets():
            for m in p.messages:
                if isinstance(m, Ping):
                    if m.target == target:
                        return m, now
                    a.receive(p.to_addr, [Ack(m.seq, m.target)], now)


@pytest.mark.parametrize("nacked", [True, False])
def test_failed_probe_goes_indirect_then_suspects_and_counts_missed_nacks(nacked: bool) -> None:
    a = core("a", seed=3)
    introduce(a, "b", "c")
    ping, sent = probe_until_target(a, "b")
    a.tick(sent + CFG.probe_timeout)  # no direct ack: ask c
    [ind] = [m for m in flat(a.packets()) if isinstance(m, IndirectPing)]
    assert (ind.seq, ind.target, ind.target_addr) == (ping.seq, "b", "b:1")
    if nacked:
        a.receive("c:1", [Nack(ind.seq, "c")], sent + 0.1)
    a.tick(sent + CFG.probe_interval - 0.001)
    assert view(a, "b").state is State.ALIVE
    a.tick(sent + CFG.probe_interval)  # end of the probe interval: no ack
    assert view(a, "b").state is State.SUSPECT
    assert a.local_health() == (0 if nacked else 1)


def test_indirect_ping_relays_ack_or_nacks_on_timeout() -> None:
    c = core("c")
    c.receive("a:1", [IndirectPing(7, "b", "b:1", "a")], 1.0)
    [fwd] = [m for m in flat(c.packets()) if isinstance(m, Ping)]
    assert fwd.target == "b"
    c.receive("b:1", [Ack(fwd.seq, "b")], 1.1)
    assert [m for m in flat(c.packets()) if isinstance(m, Ack)] == [Ack(7, "c")]
    c.receive("a:1", [IndirectPing(8, "b", "b:1", "a")], 2.0)
    c.packets()
    c.tick(2.0 + CFG.probe_timeout)
    assert [m for m in flat(c.packets()) if isinstance(m, Nack)] == [Nack(8, "c")]


def test_ping_for_someone_else_is_ignored_and_own_ping_acked() -> None:
    a = core("a")
    a.receive("b:1", [Ping(1, "z", "b")], 1.0)
    assert a.packets() == []
    a.receive("b:1", [Ping(2, "a", "b")], 1.0)
    [p] = a.packets()
    assert p.to_addr == "b:1" and p.messages[0] == Ack(2, "a")


def test_leave_and_after() -> None:
    a = core("a")
    introduce(a, "b")
    a.leave(1.0)
    assert view(a, "a").state is State.LEFT
    a.tick(a.next_deadline())
    assert Dead("a", 1, "a") in flat(a.packets())
    a.receive("b:1", [Alive("a", 9, "a:1", {})], 2.0)  # no rejoin from an echo
    assert view(a, "a").state is State.LEFT
    with pytest.raises(AlreadyLeft):
        a.update_tags({}, 3.0)
    with pytest.raises(AlreadyLeft):
        a.join(["b:1"], 3.0)
    b = core("b")
    introduce(b, "a")
    b.receive("a:1", [Dead("a", 1, "a")], 2.0)
    assert [(e.kind, e.member.state) for e in b.events()] == [(EventKind.LEAVE, State.LEFT)]


def test_update_tags_bumps_incarnation_and_peers_see_an_update() -> None:
    a, b = core("a"), core("b")
    introduce(b, "a")
    a.update_tags({"role": "server"}, 1.0)
    a.tick(a.next_deadline())
    assert a.packets() == []  # a knows no one to gossip to yet
    introduce(a, "b")
    a.tick(a.next_deadline())
    b.receive("a:1", flat(a.packets()), 1.5)
    assert view(b, "a").tags == {"role": "server"}
    assert view(b, "a").incarnation == 2
    assert [e.kind for e in b.events()] == [EventKind.UPDATE]


def test_next_deadline_always_moves_past_a_tick() -> None:
    a = core("a", seed=9)
    introduce(a, "b", "c", "d")
    for _ in range(200):
        now = a.next_deadline()
        a.tick(now)
        a.packets()
        assert a.next_deadline() > now
