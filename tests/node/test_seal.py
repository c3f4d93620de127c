"""The seal with real processes: the barrier's root key is split among the voters
(threshold = quorum), so a full cluster restart unseals by itself, one server's disk
alone does not, a sealed server never campaigns or stays leader, and the recovery
shares printed at bootstrap, with `stack operator raft recover`, bring back a
cluster that lost its quorum."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    FORM_TIMEOUT,
    HTTP_PORT,
    Harness,
    Node,
    agreed_leader,
    assert_values,
    wait_leader,
    wait_until,
    wait_voters,
)

pytestmark = pytest.mark.slow

KEYS = {f"seal/{i:02d}": f"value {i}".encode() for i in range(10)}


# ---------------------------------------------------------------- helpers
def seal_status(node: Node, timeout: float = 3.0) -> dict[str, Any]:
    resp = node.request("GET", "/v1/sys/seal-status", auth=False, timeout=timeout)
    if resp.status != 200:
        raise OSError(f"{node.name}: seal-status answered {resp.status} {resp.body!r}")
    st: dict[str, Any] = resp.json()
    return st


def stop_all(nodes: list[Node], sig: int = signal.SIGTERM) -> None:
    """Signal every node at once, then wait for each to exit (cleanly on SIGTERM)."""
    for n in nodes:
        n.signal(sig)
    for n in nodes:
        rc = n.wait_exit(FORM_TIMEOUT)
        if sig == signal.SIGTERM:
            assert rc == 0, f"{n.name} exited with {rc} on SIGTERM"


def wait_unsealed(node: Node, timeout: float = FORM_TIMEOUT) -> dict[str, Any]:
    def unsealed() -> dict[str, Any] | None:
        if not node.running:
            pytest.fail(f"{node.name} exited with {node.proc and node.proc.returncode}")
        st = node.status()
        return st if st["sealed"] is False and st["seal"]["sealed"] is False else None

    return wait_until(unsealed, timeout, f"{node.name} to unseal")


def assert_stays_sealed(nodes: list[Node], seconds: float, shares: tuple[int, int]) -> None:
    """For `seconds`, every sample of every node: sealed, holding `shares` (held,
    needed), a follower (never a pre-candidate, candidate or leader) in a term that
    never moves (it does not campaign)."""
    terms = {n.name: n.status()["term"] for n in nodes}
    samples = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for n in nodes:
            assert n.running, f"{n.name} exited with {n.proc and n.proc.returncode}"
            st = n.status()
            seal = seal_status(n)
            assert st["sealed"] is True and seal["sealed"] is True, (n.name, st["seal"], seal)
            assert (seal["shares_held"], seal["shares_needed"]) == shares, (n.name, seal)
            assert seal["shares_held"] < seal["shares_needed"], (n.name, seal)
            assert "shares" in seal["reason"], (n.name, seal)
            assert st["role"] == "follower", (n.name, st["role"])
            assert st["term"] == terms[n.name], (n.name, st["term"], terms[n.name])
            samples += 1
        time.sleep(0.25)
    assert samples >= len(nodes) * 5, f"only {samples} samples in {seconds}s"


def wait_seal_voters(node: Node, voters: int) -> None:
    """Until `node`'s newest seal epoch splits the root key among `voters` voters."""
    wait_until(lambda: seal_status(node)["voters"] == voters, FORM_TIMEOUT,
               f"{node.name} to see the {voters}-voter seal epoch")  # fmt: skip


def other_leader(nodes: list[Node], old: Node) -> Node | None:
    """The leader all `nodes` agree on, if it is not `old`."""
    leader = agreed_leader(nodes)
    return leader if leader is not None and leader is not old else None


def cli(node: Node, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -m stack.cli ARGS` with the node's environment (its config home)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACK_")}
    env.update(node.env)
    env["XDG_CONFIG_HOME"] = str(node.config_home)
    env["XDG_DATA_HOME"] = str(node.dir / "xdg-data")
    env["COLUMNS"] = "200"  # rich wraps long table cells at 80 columns otherwise
    proc = subprocess.run(
        [sys.executable, "-m", "stack.cli", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=node.dir,
        env=env,
        timeout=120,
    )
    print(f"$ stack {' '.join(args)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}")
    if check:
        assert proc.returncode == 0, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def unseal_with(node: Node, share: str) -> tuple[int, dict[str, Any]]:
    resp = node.request("POST", "/v1/sys/unseal", json.dumps({"key": share}).encode())
    body: dict[str, Any] = resp.json()
    return resp.status, body


# ---------------------------------------------------------------- tests
@pytest.mark.timeout(180)
def test_full_cluster_restart_unseals_with_no_human(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    nodes = h.three_nodes()
    leader = wait_leader(nodes)
    # Every node is unsealed and the seal is split among the three voters.
    for n in nodes:
        wait_unsealed(n)
        wait_seal_voters(n, 3)
    epoch = seal_status(leader)["epoch"]
    assert epoch >= 3, epoch  # genesis, then a re-key per voter added
    for i, (k, v) in enumerate(KEYS.items()):
        nodes[i % 3].put(k, v)

    stop_all(nodes)
    # With three voters, no share is left in a local file: the disk alone opens nothing.
    for n in nodes:
        assert not (n.data_dir / "unseal-share").exists(), n.name

    t0 = time.monotonic()
    for n in nodes:
        n.start()
    for n in nodes:
        n.wait_up()
    leader = wait_leader(nodes, FORM_TIMEOUT)
    for n in nodes:
        st = wait_unsealed(n)
        assert st["seal"]["epoch"] == epoch, (n.name, st["seal"])
        assert st["seal"]["reason"] == "", (n.name, st["seal"])
    print(f"restart: all unsealed, leader {leader.name} after {time.monotonic() - t0:.1f}s")
    for n in nodes:
        assert_values(n, KEYS)
    # The cluster takes new writes, through a follower too.
    follower = next(n for n in nodes if n is not leader)
    follower.put("after/restart", b"ok")
    for n in nodes:
        assert n.get("after/restart").body == b"ok", n.name
    wait_voters(nodes, nodes)


@pytest.mark.timeout(180)
def test_copied_data_dir_started_alone_stays_sealed(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Also `stack status` (table and --json) on that sealed node."""
    h = Harness(request, tmp_path)
    nodes = h.three_nodes()
    n1 = nodes[0]
    for n in nodes:
        wait_seal_voters(n, 3)
    n1.put("secret/ish", b"x")
    stop_all(nodes)
    # The genesis share file of n1's single-voter days was removed at the first re-key.
    assert not (n1.data_dir / "unseal-share").exists()

    # n1's whole node (data dir, with its node key and certificate, and its config
    # home) copied to another machine: a new address, peers unreachable.
    copy = h.node("n1copy")
    assert copy.addr != n1.addr
    shutil.copytree(n1.data_dir, copy.data_dir)
    shutil.copytree(n1.config_home, copy.config_home)
    copy.start()
    st = copy.wait_up()
    assert st["id"] == n1.id  # it is n1, as far as its disk knows
    assert st["sealed"] is True, st["seal"]
    wait_until(lambda: seal_status(copy)["shares_held"] == 1, FORM_TIMEOUT,
               "the copy to count its own share")  # fmt: skip
    assert_stays_sealed([copy], 10.0, (1, 2))
    seal = seal_status(copy)
    assert seal["voters"] == 3 and seal["recovery_progress"] == 0, seal
    assert seal["t"] == 3 and seal["n"] == 5 and seal["progress"] == 0, seal

    # `stack status` says so.
    url = f"http://{copy.addr}:{HTTP_PORT}"
    out = cli(copy, "status", "--addr", url).stdout
    lines = out.splitlines()
    assert any(line.split()[:2] == ["sealed", "True"] for line in lines), out
    assert any(
        line.strip().startswith("sealed because") and "holds 1 of the 2 shares" in line
        for line in lines
    ), out
    assert any(line.strip().startswith("seal ") and "1 of 2 needed" in line for line in lines), out
    js = json.loads(cli(copy, "status", "--addr", url, "--json").stdout)
    assert js["sealed"] is True, js
    assert js["seal"]["sealed"] is True and js["seal"]["shares_needed"] == 2, js["seal"]
    assert js["seal"]["shares_held"] == 1, js["seal"]
    assert js["role"] != "leader", js
    assert seal_status(copy)["sealed"] is True


@pytest.mark.timeout(180)
def test_sealed_server_never_campaigns(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    nodes = h.three_nodes()
    n1, n2, n3 = nodes
    for n in nodes:
        wait_seal_voters(n, 3)
    n2.put("before", b"1")
    # A power cut. n1, the leader since bootstrap, stored its commit index only when
    # its term began, so after the restart it has applied next to nothing and its
    # store does not know its peers' addresses: it must find them in its log, or it
    # can neither collect their shares nor answer their votes.
    stop_all(nodes, signal.SIGKILL)

    # n1 alone: its own share is one of the two needed. It stays a follower in the
    # same term (no pre-vote, no campaign), however long its election timer runs.
    n1.start()
    n1.wait_up()
    wait_until(lambda: seal_status(n1)["shares_held"] == 1, FORM_TIMEOUT,
               "n1 to count its own share")  # fmt: skip
    assert_stays_sealed([n1], 8.0, (1, 2))
    assert n1.status()["leader"] == "", n1.status()

    # n2 comes back: they exchange shares, both unseal and elect a leader among them.
    n2.start()
    n2.wait_up()
    for n in (n1, n2):
        wait_unsealed(n)
    leader = wait_leader([n1, n2], FORM_TIMEOUT)
    assert leader in (n1, n2)
    assert n1.get("before").body == b"1"
    leader.put("two/of/three", b"ok")

    # n3 too: it unseals from the others and follows.
    n3.start()
    n3.wait_up()
    wait_unsealed(n3)
    wait_until(lambda: agreed_leader(nodes), FORM_TIMEOUT, "one leader among all three")
    assert n3.get("two/of/three").body == b"ok"
    n3.put("three/of/three", b"ok")
    for n in nodes:
        assert n.get("three/of/three").body == b"ok", n.name


@pytest.mark.timeout(180)
def test_sealed_leader_hands_leadership_away(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    nodes = h.three_nodes()
    for n in nodes:
        wait_seal_voters(n, 3)
    old = wait_leader(nodes)
    old.put("before", b"1")

    # Sealing needs the root token.
    resp = old.request("POST", "/v1/sys/seal", auth=False)
    assert resp.status in (401, 403), resp
    assert old.status()["sealed"] is False

    resp = old.request("POST", "/v1/sys/seal")
    assert resp.status == 200, resp
    new = wait_until(lambda: other_leader(nodes, old), FORM_TIMEOUT,
                     "another node to lead after the leader was sealed")  # fmt: skip
    assert old.status()["role"] != "leader"
    print(f"sealed {old.name}; {new.name} leads")
    # It unseals again from its peers' shares, and follows.
    st = wait_unsealed(old)
    assert st["seal"]["epoch"] >= 3, st["seal"]
    wait_until(lambda: old.status()["leader"] == new.id, FORM_TIMEOUT,
               f"{old.name} to follow {new.name}")  # fmt: skip
    old.put("after", b"2")
    for n in nodes:
        assert n.get("before").body == b"1", n.name
        assert n.get("after").body == b"2", n.name


@pytest.mark.timeout(240)
def test_recovery_shares_and_raft_recover_after_quorum_loss(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    nodes = h.three_nodes()
    n1, n2, n3 = nodes
    recovery = n1.printed("recovery share:")
    assert len(recovery) == 5 and len(set(recovery)) == 5, recovery
    for r in recovery:
        assert len(base64.b64decode(r, validate=True)) == 33
    for n in nodes:
        wait_seal_voters(n, 3)
    epoch = seal_status(n1)["epoch"]
    for i, (k, v) in enumerate(KEYS.items()):
        nodes[i % 3].put(k, v)
    # n1 has everything before the others are lost for good.
    wait_until(lambda: n1.status()["applied_index"] >= n2.status()["commit_index"],
               FORM_TIMEOUT, "n1 to apply every write")  # fmt: skip

    n2.kill()
    n3.kill()
    n1.signal(signal.SIGKILL)
    n1.wait_exit(FORM_TIMEOUT)

    # Offline: n1 becomes the only voter.
    out = cli(n1, "operator", "raft", "recover", "--data-dir", str(n1.data_dir), "--yes").stdout
    assert "recovered at index" in out, out
    assert f"voters {n1.id}" in out, out

    n1.start()
    n1.wait_up()
    # It is its own quorum now, but it holds only one of the two shares of the
    # epoch it knows, and there is nobody to ask: sealed, and not leading.
    wait_until(lambda: seal_status(n1)["shares_held"] == 1, FORM_TIMEOUT,
               "n1 to count its own share")  # fmt: skip
    assert_stays_sealed([n1], 3.0, (1, 2))
    assert n1.status()["leader"] == ""
    seal = seal_status(n1)
    assert seal["recovery_needed"] == 3 and seal["recovery_progress"] == 0, seal

    # Unsealing needs the root token.
    resp = n1.request("POST", "/v1/sys/unseal", json.dumps({"key": recovery[0]}).encode(),
                      auth=False)  # fmt: skip
    assert resp.status in (401, 403), resp
    assert seal_status(n1)["recovery_progress"] == 0

    # Three well-formed shares that are not this cluster's: refused, still sealed,
    # and the progress starts over.
    garbage = [base64.b64encode(os.urandom(32) + bytes([x])).decode() for x in (1, 2, 3)]
    for i, share in enumerate(garbage[:2], 1):
        code, body = unseal_with(n1, share)
        assert code == 200 and body["sealed"] is True, (code, body)
        assert body["recovery_progress"] == i, body
    code, body = unseal_with(n1, garbage[2])
    assert code == 400, (code, body)
    seal = seal_status(n1)
    assert seal["sealed"] is True and seal["recovery_progress"] == 0, seal
    # Not base64, or the wrong length: 400, and counts for nothing.
    for bad in ("not a share!", base64.b64encode(b"short").decode()):
        code, body = unseal_with(n1, bad)
        assert code == 400, (bad, code, body)
    assert seal_status(n1)["recovery_progress"] == 0

    # The real ones: two are not enough (the same one twice counts once) ...
    for i, share in enumerate(recovery[:2], 1):
        code, body = unseal_with(n1, share)
        assert code == 200 and body["sealed"] is True, (code, body)
        assert body["recovery_progress"] == i and body["recovery_needed"] == 3, body
    code, body = unseal_with(n1, recovery[1])
    assert code == 200 and body["sealed"] is True and body["recovery_progress"] == 2, body
    seal = seal_status(n1)
    assert seal["sealed"] is True and seal["progress"] == 2, seal
    # ... the third (given with `stack operator unseal`, the root token from the
    # node's config home) unseals.
    url = f"http://{n1.addr}:{HTTP_PORT}"
    out = cli(n1, "operator", "unseal", recovery[4], "--addr", url, "--json").stdout
    body = json.loads(out)
    assert body["sealed"] is False and body["recovery_progress"] == 0, body
    assert n1.status()["sealed"] is False

    wait_until(lambda: n1.status()["role"] == "leader", FORM_TIMEOUT, "n1 to lead alone")
    assert_values(n1, KEYS)
    n1.put("after/recovery", b"ok")
    assert n1.get("after/recovery").body == b"ok"
    wait_voters([n1], [n1])

    # It re-keys for its one voter: a new epoch, its share in the local file again.
    share_file = n1.data_dir / "unseal-share"
    wait_seal_voters(n1, 1)
    seal = seal_status(n1)
    assert seal["epoch"] > epoch and seal["sealed"] is False, seal
    assert share_file.exists()
    assert stat.S_IMODE(share_file.stat().st_mode) == 0o600

    # And from now on it restarts unsealed by itself.
    n1.signal(signal.SIGTERM)
    assert n1.wait_exit(FORM_TIMEOUT) == 0
    n1.start()
    n1.wait_up()
    wait_unsealed(n1)
    wait_until(lambda: n1.status()["role"] == "leader", FORM_TIMEOUT, "n1 to lead again")
    assert n1.get("after/recovery").body == b"ok"


def restart(node: Node) -> dict[str, Any]:
    node.signal(signal.SIGTERM)
    assert node.wait_exit(FORM_TIMEOUT) == 0, node.name
    node.start()
    return node.wait_up()


@pytest.mark.timeout(180)
def test_single_server_unseals_from_its_share_file(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # The default: the share next to the data.
    h = Harness(request, tmp_path)
    n1 = h.bootstrap()
    share_file = n1.data_dir / "unseal-share"
    assert share_file.exists()
    assert stat.S_IMODE(share_file.stat().st_mode) == 0o600
    seal = seal_status(n1)
    assert seal["sealed"] is False and seal["voters"] == 1 and seal["shares_needed"] == 1, seal
    n1.put("k", b"v")
    restart(n1)
    wait_unsealed(n1)
    wait_until(lambda: n1.status()["role"] == "leader", FORM_TIMEOUT, "n1 to lead again")
    assert n1.get("k").body == b"v"

    # --seal-key-file: the share lives elsewhere, and the data dir alone opens nothing.
    h2 = Harness(request, tmp_path / "second")
    key_file = tmp_path / "keys" / "s1.share"
    key_file.parent.mkdir()
    s1 = h2.node("s1", extra=["--seal-key-file", str(key_file)]).start()
    s1.wait_up()
    h2.token = wait_until(s1.printed_root_token, FORM_TIMEOUT, "s1's root token")
    wait_until(lambda: s1.status()["role"] == "leader", FORM_TIMEOUT, "s1 to lead")
    wait_until(lambda: s1.request("GET", "/v1/members").status == 200, FORM_TIMEOUT,
               "s1's root token to work")  # fmt: skip
    s1.put("k", b"s1")
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (s1.data_dir / "unseal-share").exists()

    restart(s1)
    wait_unsealed(s1)
    wait_until(lambda: s1.status()["role"] == "leader", FORM_TIMEOUT, "s1 to lead again")
    assert s1.get("k").body == b"s1"

    # The key file gone: sealed, and it says why; it does not lead (a leader must
    # be able to encrypt), however long it waits.
    moved = tmp_path / "keys" / "elsewhere"
    key_file.rename(moved)
    restart(s1)
    wait_until(lambda: seal_status(s1)["reason"].startswith("holds"), FORM_TIMEOUT,
               "s1 to try its shares")  # fmt: skip
    assert_stays_sealed([s1], 3.0, (0, 1))
    st = s1.status()
    assert st["sealed"] is True and "shares" in st["seal"]["reason"], st["seal"]
    assert st["leader"] == "", st
    assert not key_file.exists()  # and nothing wrote a new share meanwhile

    # Back in place: unsealed by itself again.
    moved.rename(key_file)
    restart(s1)
    wait_unsealed(s1)
    wait_until(lambda: s1.status()["role"] == "leader", FORM_TIMEOUT, "s1 to lead again")
    assert s1.get("k").body == b"s1"
    s1.put("k2", b"again")
