"""The gossip ring in real processes: one ring, one keyring, one CA, one Raft group
counted live; the ring as the only failure detector (down on SIGKILL, nothing
removed on a 10 s SIGSTOP, a dead server leaving the voters after the grace
period); and a gossip key rotation under write traffic with no false suspicion."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    FORM_TIMEOUT,
    Harness,
    Node,
    Writers,
    run_cli,
    wait_leader,
    wait_until,
    wait_voters,
)

pytestmark = pytest.mark.slow

# Generous: with the LAN defaults a 3-member ring declares a crashed member dead in
# about 5-7 s (probe 1 s, suspicion 4 s); this machine is loaded.
DETECT_TIMEOUT = 45.0


def members(node: Node) -> dict[str, dict[str, Any]]:
    r = node.request("GET", "/v1/members")
    if r.status != 200:  # e.g. a new node whose replica lacks the token yet
        return {}
    return {m["name"]: m for m in r.json()}


def ring_sees(nodes: list[Node], names: list[str], state: str) -> bool:
    for n in nodes:
        view = members(n)
        if any(view.get(name, {}).get("ring") != state for name in names):
            return False
    return True


def status_everywhere(nodes: list[Node], name: str, status: str) -> bool:
    return all(members(n).get(name, {}).get("status") == status for n in nodes)


def voter_names(node: Node) -> set[str]:
    return {p["name"] for p in node.peers() if p["raft"] == "voter"}


def substrate(node: Node) -> dict[str, Any]:
    r = node.request("GET", "/v1/sys/substrate")
    assert r.status == 200, r.body
    data: dict[str, Any] = r.json()
    return data


@pytest.mark.timeout(180)
def test_one_of_each_across_two_datacenters(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    n1 = h.bootstrap(extra=["--datacenter", "dc1"])
    n2 = h.node("n2", join=[n1], extra=["--datacenter", "dc2"]).start()
    n3 = h.node("n3", join=[n1], extra=["--datacenter", "dc2"]).start()
    nodes = [n1, n2, n3]
    wait_voters(nodes, nodes)
    names = [n.name for n in nodes]
    wait_until(lambda: ring_sees(nodes, names, "alive"), FORM_TIMEOUT, "one ring of three")
    assert {m["datacenter"] for m in members(n2).values()} == {"dc1", "dc2"}

    data = substrate(n2)
    c = data["counts"]
    assert c["members_asked"] == 3 and data["unreachable"] == []
    assert (c["raft_groups"], c["gossip_rings"], c["cas"], c["gossip_keys"]) == (1, 1, 1, 1)
    assert len(c["root_fingerprints"]) == 1
    ref = data["hashistack"]
    assert (ref["raft_groups"], ref["gossip_rings"], ref["cas"], ref["gossip_keys"]) == (7, 8, 4, 2)
    assert {m["datacenter"] for m in data["members"]} == {"dc1", "dc2"}

    # A CA rotation in progress: two roots trusted everywhere, still one CA.
    assert run_cli(n1, "ca", "rotate").returncode == 0

    def two_roots() -> dict[str, Any] | None:
        counts: dict[str, Any] = substrate(n3)["counts"]
        return counts if len(counts["root_fingerprints"]) == 2 else None

    c = wait_until(two_roots, FORM_TIMEOUT, "every member to trust both roots")
    assert (c["cas"], c["raft_groups"], c["gossip_rings"], c["gossip_keys"]) == (1, 1, 1, 1)
    out = run_cli(n1, "status", "--substrate")
    assert out.returncode == 0, out.stderr
    assert "1 (2 roots)" in out.stdout and "HashiStack" in out.stdout


@pytest.mark.timeout(240)
def test_sigkill_marks_down_everywhere_and_back_up(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    nodes = h.three_nodes()
    names = [n.name for n in nodes]
    wait_until(lambda: ring_sees(nodes, names, "alive"), FORM_TIMEOUT, "one ring of three")
    leader = wait_leader(nodes)
    victim = next(n for n in nodes if n is not leader)
    survivors = [n for n in nodes if n is not victim]
    victim.kill()
    killed = time.monotonic()
    wait_until(lambda: ring_sees(survivors, [victim.name], "dead"), DETECT_TIMEOUT,
               f"the ring to declare {victim.name} dead")  # fmt: skip
    wait_until(lambda: status_everywhere(survivors, victim.name, "down"), DETECT_TIMEOUT,
               f"{victim.name} marked down on every survivor")  # fmt: skip
    print(f"marked down everywhere {time.monotonic() - killed:.1f} s after SIGKILL")
    # Three voters is the minimum quorum size: nothing is demoted.
    assert voter_names(leader) == set(names)

    victim.start()
    wait_until(lambda: ring_sees(nodes, names, "alive"), FORM_TIMEOUT, "the ring whole again")
    wait_until(lambda: status_everywhere(nodes, victim.name, "alive"), FORM_TIMEOUT,
               f"{victim.name} marked alive again")  # fmt: skip


@pytest.mark.timeout(240)
def test_sigstop_ten_seconds_removes_nothing(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # --min-quorum 1 so that only the grace period stands between a paused server
    # and its demotion.
    h = Harness(request, tmp_path)
    nodes = h.three_nodes(extra=["--min-quorum", "1"])
    names = [n.name for n in nodes]
    wait_until(lambda: ring_sees(nodes, names, "alive"), FORM_TIMEOUT, "one ring of three")
    leader = wait_leader(nodes)
    paused = next(n for n in nodes if n is not leader)
    paused.signal(signal.SIGSTOP)
    try:
        time.sleep(10)
    finally:
        paused.signal(signal.SIGCONT)
    wait_until(lambda: ring_sees(nodes, names, "alive"), FORM_TIMEOUT, "the paused node back")
    wait_until(lambda: status_everywhere(nodes, paused.name, "alive"), FORM_TIMEOUT,
               f"{paused.name} alive in the table")  # fmt: skip
    time.sleep(3)
    for n in nodes:
        assert voter_names(n) == set(names), f"{n.name} sees voters {voter_names(n)}"
    assert "leaves the voters" not in leader.stderr()


@pytest.mark.timeout(300)
def test_dead_server_leaves_the_voters_after_the_grace_period_and_comes_back(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    extra = ["--dead-server-grace", "3"]
    n1 = h.bootstrap(extra=extra)
    others = [h.node(f"n{i}", join=[n1], extra=extra).start() for i in (2, 3, 4)]
    nodes = [n1, *others]
    wait_voters(nodes, nodes)
    names = [n.name for n in nodes]
    wait_until(lambda: ring_sees(nodes, names, "alive"), FORM_TIMEOUT, "one ring of four")
    leader = wait_leader(nodes)
    victim = next(n for n in nodes if n is not leader)
    survivors = [n for n in nodes if n is not victim]
    victim.kill()
    # Four voters, minimum three: the dead one becomes a learner (out of the quorum,
    # still a member), on every survivor.
    wait_until(lambda: all(voter_names(n) == {s.name for s in survivors} for n in survivors),
               DETECT_TIMEOUT + 30, f"{victim.name} out of the voters")  # fmt: skip
    assert members(leader)[victim.name]["raft"] == "learner"
    assert "leaves the voters" in leader.stderr()
    # The quorum is the three left: writes commit.
    assert leader.put("after-demotion", b"ok") > 0

    # Back and caught up: promoted again.
    victim.start()
    wait_until(lambda: voter_names(leader) == set(names), FORM_TIMEOUT + 30,
               f"{victim.name} promoted again")  # fmt: skip
    wait_until(lambda: status_everywhere(nodes, victim.name, "alive"), FORM_TIMEOUT,
               f"{victim.name} alive again")  # fmt: skip


@pytest.mark.timeout(300)
def test_gossip_key_rotation_under_traffic(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    servers = h.three_nodes()
    client = h.node("c1", join=[servers[0]], extra=["--no-server"]).start()
    nodes = [*servers, client]
    names = [n.name for n in nodes]
    wait_until(lambda: ring_sees(nodes, names, "alive"), FORM_TIMEOUT, "one ring of four")
    before = {n.name: n.status()["ring"] for n in nodes}
    assert len({b["primary_key_id"] for b in before.values()}) == 1
    version = before["n1"]["keyring_version"]
    writers = Writers(servers, "rot").start()
    try:
        out = run_cli(servers[1], "keyring", "rotate", "--json", "--token", h.token, timeout=240)
        assert out.returncode == 0, out.stderr
    finally:
        writers.stop()
    assert writers.acked_count() > 0
    after = {n.name: n.status()["ring"] for n in nodes}
    for name, st in after.items():
        assert st["keyring_version"] == version + 3, (name, st)
        assert len(st["key_ids"]) == 1, (name, st)
        # No member suspected another during the rotation, and no packet was
        # refused for its key.
        assert st["suspicions"] == before[name]["suspicions"], (name, before[name], st)
        assert st["rejected"].get("unknown_key", 0) == 0, (name, st)
    assert len({st["primary_key_id"] for st in after.values()}) == 1
    assert after["n1"]["primary_key_id"] != before["n1"]["primary_key_id"]
    assert ring_sees(nodes, names, "alive")
    c = substrate(client)["counts"]
    assert (c["gossip_keys"], c["members_asked"]) == (1, 4)
    writers.check(servers[0])
