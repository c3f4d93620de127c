"""Node identity on real processes: the cluster RPC port is TLS and a peer's
certificate, not its HELLO, decides what it may do; removed nodes are refused; join
tokens are checked both ways and can be replaced; certificates renew without
dropping connections; the CA rotates onto a new root and retires the old one."""

from __future__ import annotations

import json
import ssl
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    FORM_TIMEOUT,
    HELLO,
    RAFT,
    REQUEST,
    RESPONSE,
    Harness,
    Node,
    RpcConn,
    Writers,
    pack,
    rpc_exchange,
    rpc_frame,
    run_cli,
    tls_client,
    wait_caught_up,
    wait_leader,
    wait_until,
    wait_voters,
)
from cryptography import x509

from stack.ca import authority
from stack.codec import encode_message
from stack.net.tls import probe_context
from stack.raft.types import AppendResponse, VoteRequest

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------- helpers
def hello(node_id: int, cluster_id: str) -> bytes:
    return rpc_frame(HELLO, pack([node_id, cluster_id]))


def req(req_id: int, method: str, body: object = None) -> bytes:
    return rpc_frame(REQUEST, pack([req_id, method, body]))


def vote_request(frm: int, to: int, term: int) -> bytes:
    """A Raft frame that would depose the leader if it were ever processed."""
    return rpc_frame(RAFT, encode_message(VoteRequest(frm, to, term, 1 << 40, term)))


def tls_dir(node: Node) -> Path:
    return node.data_dir / "tls"


def leaf(node: Node) -> authority.NodeCertInfo:
    """The node's current certificate, from its tls/ directory."""
    chain = authority.split_pem_chain((tls_dir(node) / "node.crt").read_bytes())
    return authority.parse_node_cert(chain[0])


def trusts(node: Node, roots: list[bytes]) -> bool:
    """The node's tls/ca.crt holds exactly these roots."""
    have = authority.split_pem_chain((tls_dir(node) / "ca.crt").read_bytes())
    return sorted(map(authority.fingerprint, have)) == sorted(map(authority.fingerprint, roots))


def ski_hex(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()


def responses(frames: list[tuple[int, Any]]) -> dict[int, list[Any]]:
    """request id -> [ok, body or [code, message]] of the RESPONSE frames."""
    return {f[1][0]: f[1][1:] for f in frames if f[0] == RESPONSE}


def one_line(text: str) -> str:
    """The CLI's error console wraps long lines: compare with whitespace collapsed."""
    return " ".join(text.split())


def cli_ok(node: Node, *args: str) -> str:
    r = run_cli(node, *args)
    assert r.returncode == 0, f"stack {' '.join(args)}: {r.returncode} {r.stdout!r} {r.stderr!r}"
    return r.stdout


def refused_at_hello(node: Node, ctx: ssl.SSLContext, node_id: int, cluster_id: str) -> bool:
    """True if `node` closes a connection presenting ctx's certificate and this HELLO
    without answering it (a failed handshake counts too)."""
    try:
        frames, conn = rpc_exchange(node.addr, hello(node_id, cluster_id), ctx, timeout=5)
    except (ssl.SSLError, ConnectionError):
        return True
    assert not frames or frames[0][0] == HELLO, frames
    return conn.closed and not frames and conn.data == b""


# ---------------------------------------------------------------- 1
@pytest.mark.timeout(90)
def test_no_certificate_no_entry(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    n1 = h.bootstrap()
    st = n1.status()
    cid, n1_id = st["cluster_id"], int(st["id"])
    spoofed = n1_id + 1  # claims this cluster and a member-like id: no certificate, no matter

    # TLS, no client certificate: in no cluster whatever the HELLO says.
    with RpcConn(n1.addr, probe_context()) as c:
        c.send(hello(spoofed, cid) + req(1, "raft.apply", b"x") + req(2, "cluster.discover")
               + req(3, "seal.share") + req(4, "ca.renew", {"csr": b"x"})
               + req(5, "raft.read_index"))  # fmt: skip
        frames = c.read(frames=6)
        assert frames[0] == (HELLO, [n1_id, cid]), frames
        got = responses(frames)
        assert sorted(got) == [1, 2, 3, 4, 5], frames
        for rid in (1, 3, 4, 5):
            assert got[rid][0] is False and got[rid][1][0] == "forbidden", (rid, got[rid])
        assert got[2][0] is True and got[2][1]["cluster_id"] == cid, got[2]
        assert not c.closed, "a forbidden request cost the connection"
        # A Raft message from it closes the connection, unanswered and unprocessed.
        term = n1.status()["term"]
        c.send(vote_request(spoofed, n1_id, term + 1000))
        assert c.read(timeout=10) == frames, "an answer to a Raft message from no cluster"
        assert c.closed, "a Raft message without a certificate left the connection open"

    # Plaintext on the TLS port: closed, never a stack frame.
    frames, conn = rpc_exchange(n1.addr, hello(spoofed, cid) + req(1, "cluster.discover"), None)
    assert conn.closed and not frames, (frames, conn.data[:60])
    assert conn.data == b"" or conn.data[:1] == b"\x15", conn.data[:60]  # at most a TLS alert

    # A certificate from another CA (same cluster id, node id and role as n1's own):
    # the handshake fails, or the server aborts it before any frame.
    now = datetime.now(UTC)
    other = authority.create_root(cluster_id=cid, now=now)
    key = authority.new_node_key()
    csr = authority.make_csr(key, node_id=n1_id, name="n1")
    cert = authority.sign_node_cert(other, csr, node_id=n1_id, name="n1", role="server",
                                    cluster_id=cid, addresses=[n1.addr], now=now,
                                    lifetime=timedelta(hours=1))  # fmt: skip
    fake = tmp_path / "fake-tls"
    fake.mkdir()
    (fake / "node.crt").write_bytes(cert)
    (fake / "node.key").write_bytes(key)
    assert refused_at_hello(n1, tls_client(fake), n1_id, cid), "another CA's certificate"

    # Nothing of it changed the node: same term, still leading, still writing.
    st2 = n1.status()
    assert st2["role"] == "leader" and st2["term"] < term + 1000, st2
    n1.put("after/probes", b"ok")
    assert "Raft message from a node in no cluster" in n1.stderr()


# ---------------------------------------------------------------- 2
@pytest.mark.timeout(150)
def test_authorise_by_role(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    n1 = h.bootstrap()
    n2 = h.join("n2", n1)
    c1 = h.node("c1", join=[n1], extra=["--no-server"]).start()

    def formed() -> bool:
        raft = {p["name"]: p["raft"] for p in n1.peers()}
        assert raft == {"n1": "voter", "n2": "voter", "c1": "learner"}, raft
        return True

    wait_until(formed, FORM_TIMEOUT, "n2 a voter and c1 a learner", 0.2)
    c1.wait_up()
    cid, n1_id, n2_id, c1_id = n1.status()["cluster_id"], int(n1.id), int(n2.id), int(c1.id)
    info = leaf(c1)
    assert (info.node_id, info.role, info.cluster_id) == (c1_id, "client", cid), info
    assert (leaf(n2).node_id, leaf(n2).role) == (n2_id, "server")
    as_c1 = tls_client(tls_dir(c1))

    # c1's certificate: a member, so member methods answer; server methods do not.
    with RpcConn(n1.addr, as_c1) as c:
        c.send(hello(c1_id, cid) + req(1, "seal.share") + req(2, "raft.read_index")
               + req(3, "cluster.conf_change") + req(4, "cluster.transfer"))  # fmt: skip
        frames = c.read(frames=5)
        assert frames[0] == (HELLO, [n1_id, cid]), frames
        got = responses(frames)
        assert sorted(got) == [1, 2, 3, 4], frames
        for rid in (1, 3, 4):
            assert got[rid][0] is False and got[rid][1][0] == "forbidden", (rid, got[rid])
        assert got[2][0] is True and isinstance(got[2][1], int) and got[2][1] > 0, got[2]
        # A Raft message from a client-role certificate closes the connection.
        term = n1.status()["term"]
        c.send(vote_request(c1_id, n1_id, term + 1000))
        assert c.read(timeout=10) == frames, "an answer to a client's Raft message"
        assert c.closed, "a client certificate's Raft message left the connection open"

    # A learner's reply (a message type c1 may send) with a term far above the
    # leader's is dropped: a client node cannot depose the leader.
    with RpcConn(n1.addr, as_c1) as c:
        reply = AppendResponse(c1_id, n1_id, term + 1000, 1)
        c.send(hello(c1_id, cid) + rpc_frame(RAFT, encode_message(reply)))
        assert c.read(frames=1)[0] == (HELLO, [n1_id, cid])
    time.sleep(1.0)
    assert n1.status()["term"] < term + 1000 and n1.status()["role"] == "leader"

    # c1's certificate with another node's id in the HELLO: refused at HELLO.
    assert refused_at_hello(n1, as_c1, n2_id, cid), "a HELLO not matching the certificate"

    # A server's certificate (n2's): the same server method is answered.
    frames, _ = rpc_exchange(n1.addr, hello(n2_id, cid) + req(1, "seal.share"),
                             tls_client(tls_dir(n2)), frames=2)  # fmt: skip
    got = responses(frames)
    assert frames[0] == (HELLO, [n1_id, cid]) and 1 in got, frames
    assert got[1][0] is True and "shares" in got[1][1], got[1]

    st = n1.status()
    assert st["role"] == "leader" and st["term"] < term + 1000, st
    assert "Raft message from a client-role certificate" in n1.stderr()
    # c1 itself is a working learner: its replies to the leader (client-role Raft
    # messages of its own) are taken, so it replicates, and it forwards writes.
    index = n1.put("after/roles", b"ok")
    wait_caught_up(c1, index)
    assert c1.get("after/roles", stale=True).body == b"ok"

    def leader_sees_c1() -> bool:
        match = {p["name"]: p["match_index"] for p in n1.peers()}
        return match["c1"] is not None and match["c1"] >= index

    wait_until(leader_sees_c1, FORM_TIMEOUT, "n1 to hear c1's replies (its match index)")
    c1.put("from/c1", b"forwarded")
    assert n1.get("from/c1").body == b"forwarded"
    own = [line for line in n1.stderr().splitlines()
           if "rpc_connection_rejected" in line and f"'{c1.addr}'" in line]  # fmt: skip
    assert not own, f"n1 refused c1's own connections: {own[:3]}"


# ---------------------------------------------------------------- 3
@pytest.mark.timeout(150)
def test_removed_node_is_refused(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    n1, n2, n3 = h.three_nodes()
    cid, n3_id = n1.status()["cluster_id"], int(n3.id)
    as_n3 = tls_client(tls_dir(n3))
    assert not refused_at_hello(n1, as_n3, n3_id, cid), "n3's certificate refused while a member"

    n3.kill()
    wait_leader([n1, n2])
    resp = n1.request("POST", "/v1/operator/raft/remove-peer",
                      json.dumps({"id": str(n3_id)}).encode())  # fmt: skip
    assert resp.status == 200, resp
    wait_voters([n1, n2], [n1, n2])
    # The leader writes n3 onto the deny list; then its certificate, still unexpired
    # and signed by the cluster's CA, gets no HELLO back from either server.
    for n in (n1, n2):
        wait_until(partial(refused_at_hello, n, as_n3, n3_id, cid), FORM_TIMEOUT,
                   f"{n.name} to refuse n3's certificate")  # fmt: skip

    # n3 comes back with its old data and certificate: it stays out.
    n3.start()
    n3.wait_up()
    time.sleep(10)
    assert n3.running
    for n in (n1, n2):
        peers = {p["name"]: p["raft"] for p in n.peers()}
        assert peers == {"n1": "voter", "n2": "voter"}, (n.name, peers)
    st3 = n3.status()
    assert st3["leader"] == "", f"n3 found a leader after its removal: {st3['leader_name']}"
    # Its own dials were refused by certificate (logged with n3's address).
    refusals = [line for n in (n1, n2) for line in n.stderr().splitlines()
                if "certificate refused" in line and f"'{n3.addr}'" in line]  # fmt: skip
    assert refusals, "no refusal of n3's own connections was logged"
    leader = wait_leader([n1, n2])
    leader.put("after/removal", b"ok")
    assert n1.get("after/removal").body == b"ok" and n2.get("after/removal").body == b"ok"


# ---------------------------------------------------------------- 4
@pytest.mark.timeout(180)
def test_join_tokens(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    n1 = h.bootstrap()
    printed = n1.printed("join token:")[0]
    assert cli_ok(n1, "token", "join").strip() == printed
    prefix, fp, secret = printed.split(".")
    assert prefix == "stack1" and len(fp) == 64 and secret, printed
    assert authority.fingerprint(cli_ok(n1, "ca", "root").encode()) == fp

    def refused(name: str, token: str, why: str) -> None:
        n = h.node(name, join=[n1], extra=["--token", token]).start()
        rc = n.wait_exit(60)
        assert rc != 0, f"{name} exited {rc}"
        assert why in one_line(n.stderr()), n.stderr()[-2000:]

    # The joiner checks the cluster's proof of the secret before it sends the
    # secret; the cluster is told someone failed, so both sides say so.
    refused("wrong", f"stack1.{fp}.{'x' * len(secret)}", "join token refused")
    wait_until(lambda: "a node tried a join token this cluster does not know" in n1.stderr(),
               FORM_TIMEOUT, "n1 to log the refused join")  # fmt: skip

    # The leader checks the secret it is sent (asked directly, without a certificate).
    def join_with(secret: str, rid: int) -> list[Any]:
        key = authority.new_node_key()
        body = {"id": 4242 + rid, "name": f"raw{rid}", "rpc": "127.0.0.9:1", "server": True,
                "secret": secret, "csr": authority.make_csr(key, node_id=4242 + rid,
                                                             name=f"raw{rid}")}  # fmt: skip
        frames, _ = rpc_exchange(n1.addr, hello(0, "") + req(rid, "cluster.join", body),
                                 probe_context(), frames=2)  # fmt: skip
        got = responses(frames)
        assert rid in got, frames
        return got[rid]

    got = join_with("not-the-secret", 1)
    assert got[0] is False and got[1][0] == "bad_request", got
    assert "join token refused" in got[1][1], got
    assert "join refused: wrong or replaced join token" in n1.stderr()

    # Replace the token: the old one is refused, the new one joins.
    new = cli_ok(n1, "token", "rotate-join").strip()
    assert new != printed
    new_prefix, new_fp, new_secret = new.split(".")
    assert (new_prefix, new_fp) == ("stack1", fp) and new_secret != secret, new
    assert cli_ok(n1, "token", "join").strip() == new
    refused("old", printed, "join token refused")
    got = join_with(secret, 2)
    assert got[0] is False and "join token refused" in got[1][1], got
    n2 = h.node("n2", join=[n1], extra=["--token", new]).start()
    wait_voters([n1, n2], [n1, n2])

    # The right secret with another cluster's CA fingerprint: the joiner refuses.
    refused("otherfp", f"stack1.{'0' * 64}.{new_secret}", "CA fingerprint mismatch")
    names = {p["name"] for p in n1.peers()}
    assert names == {"n1", "n2"}, names
    n2.put("after/tokens", b"ok")


# ---------------------------------------------------------------- 5
@pytest.mark.timeout(180)
def test_renewal_keeps_connections(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    nodes = h.three_nodes(extra=["--cert-ttl", "20"])
    leader = wait_leader(nodes)
    leader.put("before", b"1")

    def settled() -> dict[str, int]:
        """Every node has a session to each of the others, and none opened since."""
        first = {n.name: n.status()["stats"]["rpc_sessions"] for n in nodes}
        time.sleep(1.0)
        again = {n.name: n.status()["stats"]["rpc_sessions"] for n in nodes}
        return first if first == again and min(first.values()) >= 2 else {}

    sessions = wait_until(settled, FORM_TIMEOUT, "the RPC sessions to settle")
    seen: dict[str, list[authority.NodeCertInfo]] = {n.name: [leaf(n)] for n in nodes}

    def renewed_twice() -> bool:
        for n in nodes:
            info = leaf(n)
            if info.serial != seen[n.name][-1].serial:
                seen[n.name].append(info)
        return all(len(s) >= 3 for s in seen.values())

    t0 = time.monotonic()
    wait_until(renewed_twice, 60, "every node to renew its certificate twice", 0.5)
    print(f"renewed twice in {time.monotonic() - t0:.1f}s")
    for n in nodes:
        st = n.status()
        assert st["stats"]["cert_renewals"] >= 2, (n.name, st["stats"])
        assert st["stats"]["rpc_sessions"] == sessions[n.name], (
            f"{n.name} opened new RPC sessions across renewals: "
            f"{sessions[n.name]} -> {st['stats']['rpc_sessions']}"
        )
        # Each certificate served half its 20 s before the next was issued (certificate
        # times have 1 s resolution): renewal follows the lifetime, not every tick.
        issued = [c.not_before for c in seen[n.name]]
        gaps = [(b - a).total_seconds() for a, b in pairwise(issued)]
        assert min(gaps) >= 9, f"{n.name} renewed early: {gaps}"
    leader = wait_leader(nodes)
    index = leader.put("after", b"2")
    for n in nodes:
        wait_caught_up(n, index)
        assert n.get("after", stale=True).body == b"2", n.name


# ---------------------------------------------------------------- 6
@pytest.mark.timeout(240)
def test_ca_rotation(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    ttl = ["--cert-ttl", "30"]
    h = Harness(request, tmp_path)
    nodes = h.three_nodes(extra=ttl)
    n1, n2, _ = nodes
    # A client node too: it renews through the leader, not by signing itself.
    c1 = h.node("c1", join=[n1], extra=[*ttl, "--no-server"]).start()
    c1.wait_up()
    old_root = cli_ok(n1, "ca", "root").encode()
    assert n1.request("GET", "/v1/ca/root", auth=False).body == old_root
    assert all(leaf(n).issuer_fingerprint_hint == ski_hex(old_root) for n in nodes)

    def roots() -> list[dict[str, Any]]:
        resp = n2.request("GET", "/v1/ca/roots")
        assert resp.status == 200, resp
        out: list[dict[str, Any]] = resp.json()
        return out

    assert [(r["generation"], r["active"]) for r in roots()] == [(1, True)]
    writers = Writers(nodes, "rot", threads=2).start()
    try:
        wait_until(lambda: writers.acked_count() >= 5, FORM_TIMEOUT, "writes before rotating")
        assert "generation 2" in cli_ok(n1, "ca", "rotate")
        mark = writers.acked_count()
        new_root = cli_ok(n1, "ca", "root").encode()
        assert new_root != old_root
        assert authority.fingerprint(new_root) != authority.fingerprint(old_root)
        listed = roots()
        assert [(r["generation"], r["active"]) for r in listed] == [(1, False), (2, True)], listed
        assert listed[1]["certificate"].encode() == new_root
        assert listed[0]["retire_after"], listed
        for n in nodes:
            wait_until(partial(trusts, n, [old_root, new_root]), FORM_TIMEOUT,
                       f"{n.name} to trust both roots")  # fmt: skip

        # Every node moves onto the new root.
        new_ski = ski_hex(new_root)
        wait_until(lambda: all(leaf(n).issuer_fingerprint_hint == new_ski for n in nodes), 60,
                   "every node's certificate to be issued by the new root", 0.5)  # fmt: skip
        wait_until(lambda: leaf(c1).issuer_fingerprint_hint == new_ski, 60,
                   "the client node's certificate to move to the new root", 0.5)  # fmt: skip
        wait_until(lambda: writers.acked_count() > mark, FORM_TIMEOUT, "writes after rotating")

        # A newcomer joins with the current token, which names the new root.
        token = cli_ok(n1, "token", "join").strip()
        assert token.split(".")[1] == authority.fingerprint(new_root), token
        n4 = h.node("n4", join=[n2], extra=[*ttl, "--token", token]).start()
        everyone = [*nodes, n4]
        wait_voters(everyone, everyone, learners=[c1])
        assert leaf(n4).issuer_fingerprint_hint == new_ski

        # The old root retires once everything it signed has expired.
        wait_until(lambda: [r["generation"] for r in roots()] == [2], 90,
                   "the old root to retire", 0.5)  # fmt: skip
        assert roots()[0]["certificate"].encode() == new_root and roots()[0]["active"]
        for n in everyone:
            wait_until(partial(trusts, n, [new_root]), FORM_TIMEOUT,
                       f"{n.name} to trust only the new root")  # fmt: skip
        mark = writers.acked_count()
        wait_until(lambda: writers.acked_count() > mark, FORM_TIMEOUT, "writes after retiring")
    finally:
        writers.stop()
    print(f"writes: {writers.acked_count()} acked, failures {writers.failures}")

    # A restarted node trusts only the new root now; it still talks to everyone.
    n2.kill()
    n2.start()
    n2.wait_up()
    leader = wait_leader(everyone)
    index = leader.put("after/restart", b"ok")
    wait_caught_up(n2, index)
    assert n2.get("after/restart").body == b"ok"
    # The client node kept replicating through the rotation and the retirement.
    wait_caught_up(c1, index)
    assert c1.get("after/restart", stale=True).body == b"ok"
    assert leaf(c1).role == "client"
    writers.check(wait_leader(everyone))
