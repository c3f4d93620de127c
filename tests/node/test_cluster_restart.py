"""A whole real cluster SIGKILLed at once (a power cut) comes back with its data."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cluster import (
    FORM_TIMEOUT,
    Harness,
    Writers,
    assert_values,
    statuses,
    wait_leader,
    wait_until,
    wait_voters,
)

pytestmark = pytest.mark.slow


@pytest.mark.timeout(150)
def test_sigkill_all_three_and_restart(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    nodes = h.three_nodes()
    leader = wait_leader(nodes)
    follower = next(n for n in nodes if n is not leader)

    # Some writes answered one by one (through a follower too), then load that is
    # still running when the power goes.
    serial = {f"serial/{i:03d}": f"s{i}".encode() for i in range(30)}
    for i, (k, v) in enumerate(serial.items()):
        (leader if i % 2 else follower).put(k, v)
    overwritten = leader.put("counter", b"1")
    leader.put("counter", b"2")
    assert overwritten > 0
    before_term = max(st["term"] for st in statuses(nodes).values() if st)
    writers = Writers(nodes, "load").start()
    try:
        wait_until(lambda: writers.acked_count() >= 60, FORM_TIMEOUT, "60 concurrent writes")
        for n in nodes:
            n.kill()
    finally:
        writers.stop()
    print(f"writes: {len(writers.acked)} acknowledged of {len(writers.attempted)} "
          f"before the kill; failures {writers.failures}")  # fmt: skip

    t0 = time.monotonic()
    for n in nodes:
        n.start()
    for n in nodes:
        n.wait_up()
    leader = wait_leader(nodes, FORM_TIMEOUT)
    print(f"restart: leader {leader.name} after {time.monotonic() - t0:.1f}s")
    sts = statuses(nodes)
    assert len({st["cluster_id"] for st in sts.values() if st}) == 1, sts
    assert all(st and st["term"] > before_term for st in sts.values()), sts

    # Everything acknowledged is there, on every node, read linearizably; the
    # root token (itself a Raft entry) still works; the voters are the same.
    for n in nodes:
        assert_values(n, serial)
        assert n.get("counter").body == b"2"
        writers.check(n)
    wait_voters(nodes, nodes)
    # ... and the cluster takes new writes.
    follower = next(n for n in nodes if n is not leader)
    follower.put("after/restart", b"ok")
    for n in nodes:
        assert n.get("after/restart").body == b"ok", n.name
