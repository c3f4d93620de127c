"""GossipTransport over real loopback sockets (127.0.0.60-80), LOCAL preset."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest

from stack.gossip.codec import encode
from stack.gossip.config import GossipConfig
from stack.gossip.core import Gossip
from stack.gossip.keyring import GossipKeyring
from stack.gossip.suspicion import suspicion_timeout
from stack.gossip.transport import GossipTransport
from stack.gossip.types import EventKind, MemberEvent, Ping, State

CFG = GossipConfig.local()
KEY = b"k" * 32
NEW_KEY = b"n" * 32
BASE_PORT = 27482


class Ring:
    def __init__(self, first_ip: int) -> None:
        self.first_ip = first_ip
        self.nodes: list[GossipTransport] = []
        self.events: dict[str, list[MemberEvent]] = {}

    async def add(self, i: int, seeds: list[str]) -> GossipTransport:
        host, port = f"127.0.0.{self.first_ip + i}", BASE_PORT + i
        now = time.monotonic()
        core = Gossip(f"n{i}", f"{host}:{port}", {}, CFG, random.Random(i), now)
        t = GossipTransport(core, GossipKeyring([KEY], KEY), bind=host, port=port)
        await t.start()
        core.join(seeds, now)
        self.nodes.append(t)
        self.events[core.name] = []
        return t

    def collect(self) -> None:
        for t in self.nodes:
            self.events[t.core.name].extend(t.core.events())

    def alive_view(self, t: GossipTransport) -> set[str]:
        return {m.name for m in t.core.members() if m.state is State.ALIVE}

    async def wait(self, pred: Callable[[], bool], timeout: float) -> float:
        start = time.monotonic()
        while not pred():
            self.collect()
            if time.monotonic() - start > timeout:
                raise AssertionError(f"condition not met within {timeout}s")
            await asyncio.sleep(0.05)
        self.collect()
        return time.monotonic() - start

    async def stop(self) -> None:
        for t in self.nodes:
            await t.stop()


async def make_ring(first_ip: int, n: int = 3) -> Ring:
    ring = Ring(first_ip)
    seed = await ring.add(0, [])
    for i in range(1, n):
        await ring.add(i, [seed.core.addr])
    return ring


@pytest.fixture
async def ring3(request: pytest.FixtureRequest) -> AsyncIterator[Ring]:
    ring = await make_ring(request.param)
    try:
        yield ring
    finally:
        await ring.stop()


def all_see(ring: Ring, names: set[str]) -> Callable[[], bool]:
    return lambda: all(ring.alive_view(t) == names for t in ring.nodes if t.running)


JOIN_BOUND = 10.0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ring3", [60], indirect=True)
async def test_three_join_via_one_seed(ring3: Ring) -> None:
    await ring3.wait(all_see(ring3, {"n0", "n1", "n2"}), JOIN_BOUND)
    for t in ring3.nodes:
        assert t.rejected == {}
        joins = {e.member.name for e in ring3.events[t.core.name] if e.kind is EventKind.JOIN}
        assert joins == {"n0", "n1", "n2"} - {t.core.name}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ring3", [63], indirect=True)
async def test_stopped_member_is_declared_dead(ring3: Ring) -> None:
    await ring3.wait(all_see(ring3, {"n0", "n1", "n2"}), JOIN_BOUND)
    victim = ring3.nodes[2]
    await victim.stop()
    others = ring3.nodes[:2]
    # Worst case: reach it in the probe order (2 other members, awareness may
    # double the interval), then the full Lifeguard max suspicion timeout.
    lo = suspicion_timeout(CFG.suspicion_mult, 3, CFG.probe_interval)
    bound = 2 * 2 * CFG.probe_interval + CFG.suspicion_max_timeout_mult * lo + 2.0

    def dead_everywhere() -> bool:
        views = [t.core.member("n2") for t in others]
        return all(m is not None and m.state is State.DEAD for m in views)

    took = await ring3.wait(dead_everywhere, bound)
    assert took < bound
    for t in others:
        failed = [e.member.name for e in ring3.events[t.core.name] if e.kind is EventKind.FAILED]
        assert failed == ["n2"]
        assert {m.name for m in t.core.members() if m.state is State.ALIVE} == {"n0", "n1"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ring3", [66], indirect=True)
async def test_garbage_and_wrong_key_are_counted(ring3: Ring) -> None:
    await ring3.wait(all_see(ring3, {"n0", "n1", "n2"}), JOIN_BOUND)
    target = ring3.nodes[0]
    host, port = target.bind, target.port
    wrong = GossipKeyring([b"w" * 32], b"w" * 32)
    other_version = bytearray(target.keyring.seal(b"\x90", time.time()))
    other_version[0] = 9
    # A real ping from n1, captured and played back: refused once it was seen.
    ping = target.keyring.seal(encode((Ping(10**6, "n0", "n1"),)), time.time())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.79", 0))
        for _ in range(5):
            s.sendto(b"\x00garbage", (host, port))
            s.sendto(wrong.seal(b"\x90", time.time()), (host, port))
            s.sendto(bytes(other_version), (host, port))
            s.sendto(target.keyring.seal(b"\xc1 not msgpack", time.time()), (host, port))
            s.sendto(target.keyring.seal(b"\x90", time.time() - 3600), (host, port))
            s.sendto(ping, (host, port))
    # A stream: an oversize frame header, and a wrong-key frame.
    r, w = await asyncio.open_connection(host, port)
    w.write((1 << 21).to_bytes(4, "big"))
    await w.drain()
    assert await r.read() == b""
    w.close()
    blob = wrong.seal(b"\x90")
    r, w = await asyncio.open_connection(host, port)
    w.write(len(blob).to_bytes(4, "big") + blob)
    await w.drain()
    assert await r.read() == b""
    w.close()
    want = {
        "short": 5,
        "unknown_key": 6,
        "version": 5,
        "decode": 5,
        "oversize": 1,
        "stale": 5,
        "replay": 4,
    }
    await ring3.wait(lambda: target.rejected == want, 5.0)
    # Membership unaffected, and the ring keeps working.
    await asyncio.sleep(3 * CFG.probe_interval)
    assert all_see(ring3, {"n0", "n1", "n2"})()
    for t in ring3.nodes:
        assert not [e for e in ring3.events[t.core.name] if e.kind is EventKind.FAILED]
    assert ring3.nodes[1].rejected == {} and ring3.nodes[2].rejected == {}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ring3", [69], indirect=True)
async def test_key_rotation_under_traffic(ring3: Ring) -> None:
    names = {"n0", "n1", "n2"}
    await ring3.wait(all_see(ring3, names), JOIN_BOUND)
    step = 1.5 * CFG.probe_interval  # several probes and gossip rounds per step
    seen_suspect: set[str] = set()

    async def watch(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for t in ring3.nodes:
                for m in t.core.members():
                    if m.state is not State.ALIVE:
                        seen_suspect.add(f"{t.core.name} saw {m.name} {m.state.name}")
            await asyncio.sleep(0.02)

    for t in ring3.nodes:
        t.keyring.install(NEW_KEY)
        await watch(step / 3)
    for t in ring3.nodes:
        t.keyring.use(NEW_KEY)
        await watch(step)
    for t in ring3.nodes:
        t.keyring.remove(KEY)
        await watch(step / 3)
    await watch(step)
    ring3.collect()
    assert seen_suspect == set()
    for t in ring3.nodes:
        assert t.keyring.key_ids() == GossipKeyring([NEW_KEY], NEW_KEY).key_ids()
        assert t.rejected == {}
        assert not [e for e in ring3.events[t.core.name] if e.kind is EventKind.FAILED]
    assert all_see(ring3, names)()
