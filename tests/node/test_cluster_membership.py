"""Membership of a real cluster: a fourth server joins as a learner and is
promoted; a dead server is removed with `remove-peer`."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from cluster import (
    FORM_TIMEOUT,
    Harness,
    assert_values,
    wait_caught_up,
    wait_leader,
    wait_until,
    wait_voters,
)

pytestmark = pytest.mark.slow


@pytest.mark.timeout(150)
def test_learner_promotion_and_remove_dead_peer(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    # Snapshot often, so the newcomer catches up from a snapshot as well as the log.
    h.env["STACK_SNAPSHOT_THRESHOLD"] = "64"
    nodes = h.three_nodes()
    leader = wait_leader(nodes)
    data = {f"data/{i:03d}": f"d{i}".encode() for i in range(200)}
    for k, v in data.items():
        leader.put(k, v)
    assert leader.status()["snapshot_index"] > 0, "the leader never took a snapshot"

    # Watch the leader's peer list while n4 joins: learner first, then voter.
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                for p in leader.peers():
                    if p["name"] == "n4" and (not seen or seen[-1] != p["raft"]):
                        seen.append(p["raft"])
            except (OSError, AssertionError):
                pass
            time.sleep(0.03)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        n4 = h.join("n4", nodes[1])  # through a follower: forwarded to the leader
        t0 = time.monotonic()
        wait_until(lambda: "voter" in seen, FORM_TIMEOUT, "n4 to become a voter")
        print(f"n4 promoted {time.monotonic() - t0:.1f}s after it started; states {seen}")
    finally:
        done.set()
        watcher.join(5)
    assert seen[:2] == ["learner", "voter"], f"n4 was {seen}, not a learner then a voter"
    everyone = [*nodes, n4]
    wait_voters(everyone, everyone)
    wait_caught_up(n4, leader.status()["commit_index"])
    assert n4.status()["stats"]["snapshots_installed"] >= 1, "n4 caught up without a snapshot"
    assert_values(n4, data, stale=True)

    # A dead follower is removed while it is down (asked of another follower).
    victim = next(n for n in nodes if n is not leader)
    victim.kill()
    asker = next(n for n in everyone if n not in (leader, victim))
    resp = asker.request("POST", "/v1/operator/raft/remove-peer",
                         json.dumps({"id": victim.name}).encode())  # fmt: skip
    assert resp.status == 200, resp
    assert resp.json()["index"] > 0
    live = [n for n in everyone if n is not victim]
    wait_voters(live, live)
    for n in live:
        assert victim.name not in {p["name"] for p in n.peers()}, n.name

    # The remaining three take writes and read them everywhere.
    for i, n in enumerate(live):
        n.put(f"after/{n.name}", str(i).encode())
    for n in live:
        for i, m in enumerate(live):
            assert n.get(f"after/{m.name}").body == str(i).encode()
    assert_values(n4, data)
    # Removing it again changes nothing; a node that never existed is a 404.
    again = asker.request("POST", "/v1/operator/raft/remove-peer",
                          json.dumps({"id": victim.name}).encode())  # fmt: skip
    assert again.status in (200, 400, 404), again
    assert victim.name not in {p["name"] for p in leader.peers()}
    wait_voters(live, live)
    unknown = asker.request("POST", "/v1/operator/raft/remove-peer",
                            json.dumps({"id": "no-such-node"}).encode())  # fmt: skip
    assert unknown.status == 404 and unknown.json()["errors"], unknown
