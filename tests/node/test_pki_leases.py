"""PKI certificates as leases (a role with generate_lease) through hvac on real
processes: the lease in the issue and sign answers, lookup, list, renew refused,
revoke onto the CRL, revoke-prefix, bad lease ids; a short lease ended by the
leader at expiry (no CRL entry); and one due while the leader is killed, ended by
the next leader on time."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions as hx
import pytest
from cluster import FORM_TIMEOUT, Harness, wait_leader, wait_until
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from vault_clients import Clients

pytestmark = pytest.mark.slow

ROLE = {"allowed_domains": "example.com", "allow_subdomains": True, "generate_lease": True}


def csr_for(cn: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    req = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))  # fmt: skip
    return req.public_bytes(serialization.Encoding.PEM).decode()


def serial_int(answer: dict[str, Any]) -> int:
    return int(answer["data"]["serial_number"].replace(":", ""), 16)


def crl_serials(c: hvac.Client) -> set[int]:
    return {e.serial_number for e in x509.load_pem_x509_crl(c.secrets.pki.read_crl().encode())}


def knows(c: hvac.Client, lease_id: str) -> bool:
    found: str = c.sys.read_lease(lease_id)["data"]["id"]
    return found == lease_id


def invalid(c: hvac.Client, lease_id: str) -> bool:
    """The lease is gone: lookup answers 400 "invalid lease"."""
    try:
        c.sys.read_lease(lease_id)
    except hx.InvalidRequest as e:
        assert e.errors == ["invalid lease"], e.errors
        return True
    return False


@pytest.mark.timeout(120)
def test_pki_leases_through_hvac(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    n1 = h.bootstrap()
    assert h.token
    c = Clients(request, h.token)(n1)
    p = c.secrets.pki
    c.sys.enable_secrets_engine("pki")
    role = p.create_or_update_role("web", extra_params=ROLE)
    assert "generate_lease" in role["warnings"][0], role  # Vault's discouragement
    assert p.read_role("web")["data"]["generate_lease"] is True
    # no_store wins over generate_lease, as in Vault
    eph = p.create_or_update_role("eph", extra_params={**ROLE, "no_store": True})
    assert "no_store=true takes priority" in eph["warnings"][0], eph
    assert p.generate_certificate("eph", "e.example.com")["lease_id"] == ""

    # issue and sign answer with Vault's lease fields
    issued = [p.generate_certificate("web", f"h{i}.example.com", extra_params={"ttl": "1h"})
              for i in range(3)]  # fmt: skip
    ids = [a["lease_id"] for a in issued]
    for a in issued:
        assert a["lease_id"] == "pki/issue/web/" + a["data"]["serial_number"].replace(":", "-")
        assert 3590 <= a["lease_duration"] <= 3600 and a["renewable"] is False, a
    signed = p.sign_certificate("web", csr_for("s.example.com"), "s.example.com")
    assert signed["lease_id"].startswith("pki/sign/web/") and signed["renewable"] is False

    # lookup and list
    info = c.sys.read_lease(ids[0])["data"]
    assert info["id"] == ids[0] and info["renewable"] is False, info
    assert 3500 <= info["ttl"] <= 3600 and info["issue_time"] and info["expire_time"], info
    keys = c.sys.list_leases("pki/issue/web")["data"]["keys"]
    assert keys == sorted(i.rsplit("/", 1)[1] for i in ids), keys
    assert c.sys.list_leases("pki")["data"]["keys"] == ["issue/", "sign/"]
    assert "pki/" in c.sys.list_leases("")["data"]["keys"]

    # renew: Vault's PKI leases are not renewable; nothing changes
    with pytest.raises(hx.InvalidRequest) as err:
        c.sys.renew_lease(ids[0], increment=7200)
    assert err.value.errors == ["lease is not renewable"], err.value.errors
    assert c.sys.read_lease(ids[0])["data"]["ttl"] <= 3600

    # revoke: the certificate goes on the CRL, the lease is gone
    c.sys.revoke_lease(ids[0])
    assert serial_int(issued[0]) in crl_serials(c)
    cert = p.read_certificate(issued[0]["data"]["serial_number"])["data"]
    assert cert["revocation_time"] > 0, cert
    assert invalid(c, ids[0])
    with pytest.raises(hx.InvalidRequest):
        c.sys.revoke_lease(ids[0])
    for bad in ("pki/issue/web/01-02", "pki/issue/other/" + ids[1].rsplit("/", 1)[1], "pki/x"):
        assert invalid(c, bad)
    assert c.sys.read_lease(ids[1])["data"]["id"] == ids[1]  # untouched by the bad ones

    # revoking the certificate through the engine ends its lease too
    p.revoke_certificate(issued[1]["data"]["serial_number"])
    assert invalid(c, ids[1])

    # revoke-prefix: every issue/web lease left, not the signed one
    c.sys.revoke_prefix("pki/issue/web")
    assert {serial_int(a) for a in issued} <= crl_serials(c)
    assert all(invalid(c, i) for i in ids)
    assert serial_int(signed) not in crl_serials(c)
    assert c.sys.read_lease(signed["lease_id"])["data"]["ttl"] > 0

    # expiry: the leader ends a short lease through the log, with no CRL entry
    started = time.monotonic()
    short = p.generate_certificate("web", "short.example.com", extra_params={"ttl": "3s"})
    wait_until(lambda: invalid(c, short["lease_id"]), 30, "the short lease to end")
    took = time.monotonic() - started
    print(f"short lease ended {took:.1f} s after issue (ttl 3 s)")
    assert time.time() >= short["data"]["expiration"], "ended before notAfter"
    assert serial_int(short) not in crl_serials(c)
    assert short["data"]["serial_number"] in p.list_certificates()["data"]["keys"]


@pytest.mark.timeout(180)
def test_a_pki_lease_due_during_a_leader_kill_is_ended_by_the_new_leader(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    nodes = h.three_nodes()
    assert h.token
    clients = Clients(request, h.token)
    leader = wait_leader(nodes)
    survivors = [n for n in nodes if n is not leader]
    fc = clients(survivors[0])
    fc.sys.enable_secrets_engine("pki")
    fc.secrets.pki.create_or_update_role("web", extra_params=ROLE)
    fc.secrets.pki.read_crl()  # the issuer exists before the clock starts
    created = time.monotonic()
    answer = fc.secrets.pki.generate_certificate(
        "web", "a.example.com", extra_params={"ttl": "10s"}
    )
    lease_id = answer["lease_id"]
    for n in survivors:
        wait_until(
            partial(knows, clients(n), lease_id), FORM_TIMEOUT, f"{n.name} to know the lease"
        )
    time.sleep(3)
    leader.kill()
    new = wait_leader(survivors)
    # Due at notAfter (10 s after issue, to the second); ended in the log by the new
    # leader soon after (generous bound on this loaded machine; the sweep runs every
    # second).
    wait_until(lambda: all(invalid(clients(n), lease_id) for n in survivors), 40,
               "the expired lease to be ended through the log")  # fmt: skip
    took = time.monotonic() - created
    print(f"lease ended {took:.1f} s after issue (ttl 10 s), by {new.name}")
    assert took >= 8.5 and time.time() >= answer["data"]["expiration"], "ended before it was due"
    for n in survivors:
        sc = clients(n)
        assert serial_int(answer) not in crl_serials(sc)  # expired: nothing to revoke
        got = sc.secrets.pki.read_certificate(answer["data"]["serial_number"])["data"]
        assert got["revocation_time"] == 0, got
