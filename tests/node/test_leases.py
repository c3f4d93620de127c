"""Leases through hvac on real processes: lookup, list, renew, revoke,
revoke-prefix (sudo), bad lease ids; and a lease due while the leader is killed is
revoked by the next leader on time."""

from __future__ import annotations

import time
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
from cluster import FORM_TIMEOUT, VAULT_PORT, Harness, Node, wait_leader, wait_until

pytestmark = pytest.mark.slow


def client(node: Node, token: str) -> hvac.Client:
    return hvac.Client(url=f"http://{node.addr}:{VAULT_PORT}", token=token, timeout=15)


@pytest.mark.timeout(120)
def test_token_leases_through_hvac(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    n1 = h.bootstrap()
    root = client(n1, h.token)
    made = [root.auth.token.create(policies=["default"], ttl="1h")["auth"] for _ in range(3)]
    lease_ids = [f"auth/token/create/{a['accessor']}" for a in made]

    info = root.sys.read_lease(lease_ids[0])["data"]
    assert info["id"] == lease_ids[0] and info["renewable"] is True
    assert 3500 <= info["ttl"] <= 3600 and info["expire_time"]
    keys = root.sys.list_leases("auth/token/create")["data"]["keys"]
    assert {a["accessor"] for a in made} <= set(keys)
    assert "auth/" in root.sys.list_leases("")["data"]["keys"]

    renewed = root.sys.renew_lease(lease_ids[0], increment=7200)
    assert renewed["lease_duration"] == 7200 or renewed["data"]["lease_duration"] == 7200
    assert root.sys.read_lease(lease_ids[0])["data"]["ttl"] > 3600

    root.sys.revoke_lease(lease_ids[0])
    with pytest.raises(hvac.exceptions.Forbidden):
        client(n1, made[0]["client_token"]).auth.token.lookup_self()
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.read_lease(lease_ids[0])
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.read_lease("auth/token/create/not-an-accessor")

    # revoke-prefix needs sudo: a token with update (but not sudo) on it is refused.
    root.sys.create_or_update_policy(
        "leases-no-sudo", 'path "sys/leases/*" { capabilities = ["update", "list"] }'
    )
    limited = root.auth.token.create(policies=["leases-no-sudo"])["auth"]["client_token"]
    with pytest.raises(hvac.exceptions.Forbidden):
        client(n1, limited).sys.revoke_prefix("auth/token/create")
    assert client(n1, made[1]["client_token"]).auth.token.lookup_self()["data"]["ttl"] > 0
    root.sys.revoke_prefix("auth/token/create")
    for a in made[1:]:
        with pytest.raises(hvac.exceptions.Forbidden):
            client(n1, a["client_token"]).auth.token.lookup_self()
    # The root token holds no lease and survives.
    assert root.auth.token.lookup_self()["data"]["policies"] == ["root"]


@pytest.mark.timeout(180)
def test_a_lease_due_during_a_leader_kill_is_revoked_by_the_new_leader(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    nodes = h.three_nodes()
    leader = wait_leader(nodes)
    auth = client(leader, h.token).auth.token.create(policies=["default"], ttl="10s")["auth"]
    created = time.monotonic()
    accessor = auth["accessor"]
    survivors = [n for n in nodes if n is not leader]
    for n in survivors:
        wait_until(lambda n=n: accessor in accessors(n, h.token), FORM_TIMEOUT,
                   f"{n.name} to know the token")  # fmt: skip
    time.sleep(3)
    leader.kill()
    new = wait_leader(survivors)
    # Due 10 s after creation; revoked in the log by the new leader soon after
    # (generous bound on this loaded machine; the sweep runs every second).
    wait_until(lambda: all(accessor not in accessors(n, h.token) for n in survivors),
               40, "the expired token to be revoked through the log")  # fmt: skip
    took = time.monotonic() - created
    print(f"revoked {took:.1f} s after creation (ttl 10 s), by {new.name}")
    assert took >= 9.5, "revoked before it was due"


def accessors(node: Node, token: str) -> list[str]:
    keys: list[str] = client(node, token).auth.token.list_accessors()["data"]["keys"]
    return keys
