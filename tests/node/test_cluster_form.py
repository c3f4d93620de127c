"""Forming clusters from real `stack up` processes: bootstrap plus joins, and
`--bootstrap-expect` with three servers started at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cluster import (
    FORM_TIMEOUT,
    RPC_PORT,
    Harness,
    allocate_addresses,
    statuses,
    wait_leader,
    wait_until,
    wait_voters,
)

pytestmark = pytest.mark.slow


@pytest.mark.timeout(120)
def test_bootstrap_and_two_joins_make_three_voters(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    t0 = time.monotonic()
    _, n2, n3 = nodes = h.three_nodes()
    print(f"three voters after {time.monotonic() - t0:.1f}s")
    leader = wait_leader(nodes)

    # One cluster: same cluster id and the same member list everywhere.
    sts = statuses(nodes)
    assert len({st["cluster_id"] for st in sts.values() if st}) == 1, sts
    for n in nodes:
        st = sts[n.name]
        assert st is not None
        assert st["role"] == ("leader" if n is leader else "follower"), (n.name, st["role"])
        assert {m["name"] for m in st["members"]} == {"n1", "n2", "n3"}
        assert {m["raft"] for m in st["members"]} == {"voter"}
    # The joiners got no root token of their own.
    assert n2.printed_root_token() is None and n3.printed_root_token() is None
    assert not (n2.config_home / "stack" / "root-token").exists()

    # A write on a follower is forwarded to the leader; a linearizable read on
    # every node sees it at once, with no waiting.
    f1, f2 = (n for n in nodes if n is not leader)
    index = f1.put("greeting", b"hello from a follower")
    for n in nodes:
        resp = n.get("greeting")
        assert resp.status == 200, (n.name, resp)
        assert resp.body == b"hello from a follower", n.name
        assert resp.index >= index, (n.name, resp.index, index)
    # The same for a write on the other follower, read straight back everywhere.
    f2.put("greeting", b"hello from the other follower")
    for n in nodes:
        assert n.get("greeting").body == b"hello from the other follower", n.name

    # Stale reads answer from the local store, so they converge eventually.
    leader.put("stale/k", b"v")
    for n in nodes:
        wait_until(lambda n=n: n.get("stale/k", stale=True).body == b"v", FORM_TIMEOUT,
                   f"a stale read of stale/k on {n.name}")  # fmt: skip


@pytest.mark.timeout(120)
def test_bootstrap_expect_three_forms_one_cluster(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    addrs = allocate_addresses(3)
    targets = [f"{a}:{RPC_PORT}" for a in addrs]
    nodes = [
        h.node(f"e{i + 1}", addr=a, retry_join=targets, bootstrap_expect=3)
        for i, a in enumerate(addrs)
    ]
    t0 = time.monotonic()
    for n in nodes:
        n.start()
    for n in nodes:
        n.wait_up()
    leader = wait_leader(nodes, FORM_TIMEOUT)
    print(f"bootstrap-expect: leader {leader.name} after {time.monotonic() - t0:.1f}s")

    sts = statuses(nodes)
    assert len({st["cluster_id"] for st in sts.values() if st}) == 1, sts
    assert sum(1 for st in sts.values() if st and st["role"] == "leader") == 1, sts

    # Exactly one of them minted and printed the root token.
    printed = {n.name: n.printed_root_token() for n in nodes}
    tokens = [t for t in printed.values() if t]
    assert len(tokens) == 1, printed
    h.token = tokens[0]
    files = [n for n in nodes if (n.config_home / "stack" / "root-token").exists()]
    assert len(files) == 1, [n.name for n in files]
    assert (files[0].config_home / "stack" / "root-token").read_text().strip() == h.token

    # ... and it works on all three (once its entry is applied everywhere).
    for n in nodes:
        wait_until(lambda n=n: n.request("GET", "/v1/members").status == 200, FORM_TIMEOUT,
                   f"the root token to work on {n.name}")  # fmt: skip
    wait_voters(nodes, nodes)
    for i, n in enumerate(nodes):
        n.put(f"from/{n.name}", str(i).encode())
    for n in nodes:
        for i, m in enumerate(nodes):
            assert n.get(f"from/{m.name}").body == str(i).encode(), (n.name, m.name)
    # A wrong token is refused on every one of them.
    for n in nodes:
        assert n.request("GET", "/v1/members", token="st.wrong").status == 403, n.name
