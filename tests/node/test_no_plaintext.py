"""No secret in plaintext on disk: known secrets are written into a three-node
cluster (through joins, the Raft log, snapshots, a re-key and a restart), then
every file under every node's directory (data dir, config home, stderr logs of
every run) is searched for them, as bytes.

Allowed plaintext (docs/security.md lists exactly these): each node's own
`tls/node.key` (node.crt and ca.crt are public), a single server's
`unseal-share` file (gone once the cluster has more voters), and the root token
in the bootstrapping user's `$XDG_CONFIG_HOME/stack/root-token`. Stdout of the
bootstrapping `stack up` shows the root token, join token and recovery shares
once, by design: stdout is not a log (stderr is), so it is not searched, but no
other stdout may show them.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import signal
import stat
import time
from pathlib import Path

import msgpack
import pytest
from cluster import (
    FORM_TIMEOUT,
    RPC_PORT,
    Harness,
    Node,
    allocate_addresses,
    gossip_keys,
    run_cli,
    wait_caught_up,
    wait_leader,
    wait_until,
    wait_voters,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from stack.vault import shamir

pytestmark = pytest.mark.slow

SNAPSHOT_THRESHOLD = 8

Secrets = dict[str, list[bytes]]  # label -> the byte strings that would reveal it


def _forms(raw: bytes) -> list[bytes]:
    """A binary secret as it might be written: raw, hex, base64 (both alphabets)."""
    b64 = base64.b64encode(raw)
    url = base64.urlsafe_b64encode(raw)
    return [raw, binascii.hexlify(raw), b64, b64.rstrip(b"="), url.rstrip(b"=")]


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _write(node: Node, count: int, tag: str) -> int:
    index = 0
    for i in range(count):
        index = node.put(f"plain/{tag}/{i:03d}", f"not a secret {tag} {i}".encode())
    return index


def _wait_snapshot_past(nodes: list[Node], index: int) -> None:
    for n in nodes:

        def past(n: Node = n) -> bool:
            return int(n.status()["snapshot_index"]) > index

        wait_until(past, FORM_TIMEOUT, f"{n.name} to snapshot past index {index}")


def _stop_all(nodes: list[Node]) -> None:
    """SIGTERM and a clean exit (whatever a clean stop writes is searched too)."""
    for n in nodes:
        n.signal(signal.SIGTERM)
    for n in nodes:
        assert n.wait_exit(30) == 0, (n.name, n.stderr())


def _bootstrap_secrets(owner: Node, root_token: str) -> Secrets:
    """What the bootstrapping node printed once: the root token, the join token's
    secret, the five recovery shares and the recovery key they combine to."""
    shares_text = owner.printed("recovery share:")
    assert len(shares_text) == 5, shares_text
    shares = [base64.b64decode(s, validate=True) for s in shares_text]
    recovery_key = shamir.combine(shares[:3])
    assert shamir.combine(shares[2:]) == recovery_key
    join_token = owner.printed("join token:")
    assert len(join_token) == 1, join_token
    join_secret = join_token[0].split(".", 2)[2]
    assert len(join_secret) >= 16
    out: Secrets = {
        "root token": [root_token.encode(), root_token.split(".", 1)[1].encode()],
        "join secret": [join_secret.encode()],
        "recovery key": _forms(recovery_key),
    }
    for i, (text, raw) in enumerate(zip(shares_text, shares, strict=True), 1):
        # A share is the 32 Shamir bytes and its x tag.
        out[f"recovery share {i}"] = [text.encode(), *_forms(raw), *_forms(raw[:32])]
    return out


def _node_key_secrets(nodes: list[Node]) -> Secrets:
    """Each node's private key scalar (the PEM form is caught by "PRIVATE KEY")."""
    out: Secrets = {}
    for n in nodes:
        key = serialization.load_pem_private_key(
            (n.data_dir / "tls" / "node.key").read_bytes(), password=None
        )
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        out[f"{n.name}'s node private key"] = _forms(
            key.private_numbers().private_value.to_bytes(32, "big")
        )
    return out


def _assert_not_on_disk(tmp_path: Path, nodes: list[Node], owner: Node, secrets: Secrets) -> None:
    """Search every file under every node's directory except stdout; a failure names
    the secret by label and the file, never the secret."""
    token_file = owner.config_home / "stack" / "root-token"
    allowed: dict[str, set[Path]] = {
        "root token": {token_file},
        **{f"{n.name}'s node private key": {n.data_dir / "tls" / "node.key"} for n in nodes},
    }
    # The search sees what is there: the one allowed copy of the root token.
    assert any(p in token_file.read_bytes() for p in secrets["root token"])

    stdouts = {out for n in nodes for out, _ in n.logs}
    searched: list[Path] = []
    found: list[str] = []
    for n in nodes:
        for path in _files(n.dir):
            if path in stdouts:
                continue
            searched.append(path)
            data = path.read_bytes()
            for label, patterns in secrets.items():
                if path not in allowed.get(label, set()) and any(p in data for p in patterns):
                    found.append(f"{label} in {path.relative_to(tmp_path)}")
    print(f"searched {len(searched)} files, {sum(p.stat().st_size for p in searched)} bytes:")
    for p in searched:
        print(f"  {p.relative_to(tmp_path)} {p.stat().st_size}")
    assert not found, "secrets in plaintext on disk:\n" + "\n".join(found)

    # What was searched covers what matters: every run's log, the Raft log and the
    # snapshots of every node.
    for n in nodes:
        for _, err in n.logs:
            assert err in searched, err
        raft = [p for p in searched if p.is_relative_to(n.data_dir / "raft")]
        assert any(p.name.startswith("snap-") for p in raft), (n.name, raft)
        assert any(p.name.startswith("log-") for p in raft), (n.name, raft)

    # Stdout shows the bootstrap secrets once: the owner's first run, nowhere else.
    for n in nodes:
        for run, (out, _) in enumerate(n.logs, 1):
            if n is owner and run == 1:
                continue
            data = out.read_bytes()
            for label, patterns in secrets.items():
                assert not any(p in data for p in patterns), f"{label} on {out.name} of {n.name}"


def _assert_keys_and_modes(tmp_path: Path, nodes: list[Node], owner: Node) -> None:
    # The CA key (and every other key but the node's own) is stored encrypted.
    pem_keys = [
        str(p.relative_to(tmp_path))
        for n in nodes
        for p in _files(n.dir)
        if p != n.data_dir / "tls" / "node.key" and b"PRIVATE KEY" in p.read_bytes()
    ]
    assert not pem_keys, f"private keys outside tls/node.key: {pem_keys}"
    # Three voters: the root key is split, no node can unseal from its disk alone.
    leftover = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("unseal-share"))
    assert not leftover, f"unseal-share files in a three-voter cluster: {leftover}"
    for n in nodes:
        assert stat.S_IMODE(n.data_dir.stat().st_mode) == 0o700, n.name
        assert stat.S_IMODE((n.data_dir / "tls").stat().st_mode) == 0o700, n.name
        key = n.data_dir / "tls" / "node.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, n.name
        token_file = n.config_home / "stack" / "root-token"
        if n is owner:
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        else:
            assert not token_file.exists(), n.name


@pytest.mark.timeout(180)
def test_no_secret_in_any_data_dir_or_log(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    h.env["STACK_SNAPSHOT_THRESHOLD"] = str(SNAPSHOT_THRESHOLD)
    t0 = time.monotonic()

    n1 = h.bootstrap()
    assert h.token and h.join_token
    # A single server keeps its one unseal share (threshold 1: the epoch-1 root key
    # followed by its x tag) in a local file, the documented dev trade-off.
    share_file = n1.data_dir / "unseal-share"
    blob = msgpack.unpackb(share_file.read_bytes())
    epoch1_share = bytes(blob["share"])
    assert blob["epoch"] == 1 and len(epoch1_share) == 33 and epoch1_share[32] == 1
    assert stat.S_IMODE(share_file.stat().st_mode) == 0o600

    n2 = h.join("n2", n1)
    wait_voters([n1, n2], [n1, n2])
    # Rotate the join token before the third join, so both secrets travel.
    resp = n1.request("POST", "/v1/operator/token/rotate-join")
    assert resp.status == 200, resp
    rotated = resp.json()["token"]
    assert rotated != h.join_token
    h.join_token = rotated
    n3 = h.join("n3", n1)
    nodes = [n1, n2, n3]
    wait_voters(nodes, nodes)
    print(f"three voters after {time.monotonic() - t0:.1f}s")

    # Secrets: KV v2 versions and a KV v1 mount, a child token, and an audit device
    # (its log is searched too: values and tokens must be HMAC'd there).
    assert n1.request("PUT", "/v1/secrets/sys/audit/main",
                      json.dumps({"type": "file", "options": {"file_path": "audit/{node}.log"}})
                      .encode()).status == 204  # fmt: skip
    secret_values = [f"kv2-secret-{i}-{os.urandom(6).hex()}" for i in range(3)]
    for value in secret_values:
        r = n2.request("PUT", "/v1/secrets/secret/data/app/db",
                       json.dumps({"data": {"password": value}}).encode())  # fmt: skip
        assert r.status == 200, r.body
    r = n1.request("PUT", "/v1/secrets/sys/mounts/legacy",
                   json.dumps({"type": "kv", "options": {"version": "1"}}).encode())  # fmt: skip
    assert r.status == 204, r.body
    v1_value = f"kv1-secret-{os.urandom(6).hex()}"
    r = n3.request("PUT", "/v1/secrets/legacy/app", json.dumps({"key": v1_value}).encode())
    assert r.status == 204, r.body
    r = n1.request("POST", "/v1/acl/token/create", json.dumps({"policies": ["default"]}).encode())
    assert r.status == 200, r.body
    child_token = r.json()["auth"]["client_token"]
    assert n2.request("GET", "/v1/acl/token/self", token=child_token).status == 200

    # Rotate the gossip keyring, so two gossip keys have been in use.
    used_gossip_keys = gossip_keys(n2)
    assert run_cli(n1, "keyring", "rotate", timeout=240).returncode == 0
    used_gossip_keys += gossip_keys(n3)
    assert len(set(used_gossip_keys)) == 2

    # The re-key to more voters removes n1's single-server share file.
    wait_until(lambda: not share_file.exists(), FORM_TIMEOUT, "n1's unseal-share to go")

    # Enough writes that every node snapshots (and compacts its log).
    index = _write(n1, 3 * SNAPSHOT_THRESHOLD, "a")
    for n in nodes:
        wait_caught_up(n, index)
    _wait_snapshot_past(nodes, 1)

    # Restart n2: it replays its log, auto-unseals from the others, snapshots again.
    n2.signal(signal.SIGTERM)
    assert n2.wait_exit(30) == 0, n2.stderr()
    n2.start()
    n2.wait_up()
    wait_until(lambda: not n2.status()["sealed"], FORM_TIMEOUT, "n2 to auto-unseal")
    before = n2.status()["snapshot_index"]
    index = _write(n3, 3 * SNAPSHOT_THRESHOLD, "b")
    for n in nodes:
        wait_caught_up(n, index)
    _wait_snapshot_past([n2], before)
    assert n2.runs == 2
    # A couple more (fewer than a snapshot's worth), so every node also has a log
    # segment past its last snapshot for the search to cover.
    index = _write(n1, 2, "c")
    for n in nodes:
        wait_caught_up(n, index)

    key_secrets = _node_key_secrets(nodes)
    _stop_all(nodes)
    print(f"cluster built and stopped after {time.monotonic() - t0:.1f}s")

    secrets = _bootstrap_secrets(n1, h.token)
    secrets["rotated join secret"] = [rotated.split(".", 2)[2].encode()]
    secrets["epoch-1 root key (n1's former unseal share)"] = [
        *_forms(epoch1_share), *_forms(epoch1_share[:32])
    ]  # fmt: skip
    secrets.update(key_secrets)
    for i, value in enumerate(secret_values, 1):
        secrets[f"KV v2 secret value {i}"] = [value.encode()]
    secrets["KV v1 secret value"] = [v1_value.encode()]
    secrets["child token"] = [child_token.encode(), child_token.split(".", 1)[1].encode()]
    for i, key in enumerate(used_gossip_keys, 1):
        secrets[f"gossip key {i}"] = _forms(key)
    _assert_not_on_disk(tmp_path, nodes, n1, secrets)
    assert rotated.encode() not in n1.logs[0][0].read_bytes()  # never printed
    _assert_keys_and_modes(tmp_path, nodes, n1)
    print(f"done after {time.monotonic() - t0:.1f}s")


@pytest.mark.timeout(120)
def test_no_secret_on_disk_after_bootstrap_expect(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The --bootstrap-expect path: the shared secret (given on the command line, it
    becomes the join secret) is not written anywhere either."""
    h = Harness(request, tmp_path)
    h.env["STACK_SNAPSHOT_THRESHOLD"] = str(SNAPSHOT_THRESHOLD)
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
    wait_leader(nodes, FORM_TIMEOUT)
    owners = [n for n in nodes if n.printed_root_token()]
    assert len(owners) == 1, [n.name for n in owners]
    owner = owners[0]
    h.token = owner.printed_root_token()
    assert h.token
    wait_until(lambda: owner.request("GET", "/v1/members").status == 200, FORM_TIMEOUT,
               "the root token to work")  # fmt: skip
    wait_voters(nodes, nodes)
    wait_until(lambda: not list(tmp_path.rglob("unseal-share")), FORM_TIMEOUT,
               "the single-server unseal share to go")  # fmt: skip
    index = _write(owner, 3 * SNAPSHOT_THRESHOLD, "e")
    for n in nodes:
        wait_caught_up(n, index)
    _wait_snapshot_past(nodes, 1)
    key_secrets = _node_key_secrets(nodes)
    _stop_all(nodes)
    print(f"bootstrap-expect cluster built and stopped after {time.monotonic() - t0:.1f}s")

    secrets = _bootstrap_secrets(owner, h.token)
    assert secrets["join secret"] == [h.shared_secret.encode()]
    secrets.update(key_secrets)
    _assert_not_on_disk(tmp_path, nodes, owner, secrets)
    _assert_keys_and_modes(tmp_path, nodes, owner)
