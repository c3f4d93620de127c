"""PKI certificates as leases over an in-memory FSM: roles with generate_lease (and
no_store winning over it), the lease in the issue/sign answer and in the same log
entry as the certificate, sys/leases lookup, list, renew (refused), revoke (onto the
CRL), revoke-prefix, the leader's expiry sweep, and bad lease ids that change
nothing."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stack.state import pki as st
from stack.vault.leases import Leases
from stack.vault.logical import LogicalError, Operation, Request, Response
from stack.vault.pki_backend import LEASES_DISCOURAGED, NO_STORE_WINS, PkiBackend

from .test_pki_backend import T0, FakeAgent, M, call, env

__all__ = ["env"]  # the fixture, shared with test_pki_backend

Env = tuple[FakeAgent, PkiBackend, list[float]]


def leases_for(env: Env) -> Leases:
    agent, backend, clock = env
    service = SimpleNamespace(agent=agent, clock=lambda: clock[0], pki=backend)
    return Leases(service)  # type: ignore[arg-type]


async def sys_leases(leases: Leases, op: Operation, rel: str, **data: Any) -> Response:
    return await leases.handle(rel, Request(op, "sys/" + rel, data or None), op)


async def lookup(leases: Leases, lease_id: str) -> dict[str, Any]:
    resp = await sys_leases(leases, Operation.UPDATE, "leases/lookup", lease_id=lease_id)
    assert resp.data is not None
    return resp.data


async def refused(leases: Leases, agent: FakeAgent, rel: str, message: str, **data: Any) -> None:
    """A 400 naming `message` that changes no table."""
    before = agent.store.dump()["tables"]
    with pytest.raises(LogicalError) as err:
        await sys_leases(leases, Operation.UPDATE, rel, **data)
    assert err.value.status == 400 and message in str(err.value), err.value
    assert agent.store.dump()["tables"] == before


async def leased_role(backend: PkiBackend, name: str = "web", **fields: Any) -> Response:
    fields = {"allowed_domains": "example.com", "allow_subdomains": True,
              "generate_lease": True, **fields}  # fmt: skip
    return await call(backend, Operation.UPDATE, f"roles/{name}", fields)


async def issue(backend: PkiBackend, cn: str, role: str = "web", ttl: str = "1h") -> Response:
    return await call(backend, Operation.UPDATE, f"issue/{role}", {"common_name": cn, "ttl": ttl})


def csr(cn: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    req = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))  # fmt: skip
    return req.public_bytes(serialization.Encoding.PEM).decode()


async def crl_serials(backend: PkiBackend) -> set[int]:
    resp = await call(backend, Operation.READ, "crl")
    assert resp.data is not None
    return {e.serial_number for e in x509.load_der_x509_crl(resp.data["http_raw_body"])}


def serial_of(resp: Response) -> str:
    assert resp.data is not None
    serial: str = resp.data["serial_number"]
    return serial


def serial_int(resp: Response) -> int:
    return int(serial_of(resp).replace(":", ""), 16)


async def test_roles_warn_as_vault_and_no_store_wins(env: Env) -> None:
    _, backend, _ = env
    resp = await leased_role(backend)
    assert resp.warnings == [LEASES_DISCOURAGED]
    assert resp.data is not None and resp.data["generate_lease"] is True
    resp = await leased_role(backend, "eph", no_store=True)
    assert resp.warnings == [NO_STORE_WINS]
    got = await call(backend, Operation.READ, "roles/eph")
    assert got.data is not None and got.data["generate_lease"] is False
    # a no_store certificate carries no lease, as in Vault
    eph = await issue(backend, "e.example.com", role="eph")
    assert eph.lease_id == "" and eph.lease_duration == 0
    plain = await call(backend, Operation.UPDATE, "roles/plain", {"allow_any_name": True})
    assert plain.warnings == []
    assert (await issue(backend, "p.example.com", role="plain")).lease_id == ""


async def test_issue_and_sign_answer_with_a_lease_stored_in_the_same_entry(env: Env) -> None:
    agent, backend, clock = env
    await leased_role(backend)
    await call(backend, Operation.READ, "ca")  # the issuer exists first
    agent.proposed.clear()
    resp = await issue(backend, "a.example.com")
    assert resp.data is not None
    serial = resp.data["serial_number"]
    assert resp.lease_id == M + "issue/web/" + serial.replace(":", "-")
    assert resp.lease_duration == 3600 and resp.renewable is False
    assert agent.proposed == [st.PKI_CERT_STORE]  # one entry: certificate and lease
    row = st.get_cert(agent.store, M, serial)
    assert row is not None and (row.lease, row.issued) == ("issue/web", T0)
    # the answer crosses a forwarding hop intact
    assert Response.from_wire(resp.to_wire()).lease_id == resp.lease_id
    signed = await call(backend, Operation.UPDATE, "sign/web", {"csr": csr("s.example.com")})
    assert signed.data is not None and signed.lease_id.startswith(M + "sign/web/")
    leases = leases_for(env)
    clock[0] += 100
    info = await lookup(leases, resp.lease_id)
    assert info == {"id": resp.lease_id, "issue_time": "2030-01-01T00:00:00.000000000Z",
                    "expire_time": "2030-01-01T01:00:00.000000000Z", "last_renewal": None,
                    "renewable": False, "ttl": 3500}  # fmt: skip


async def test_list_renew_revoke_and_revoke_prefix(env: Env) -> None:
    agent, backend, _ = env
    await leased_role(backend)
    issued = [await issue(backend, f"h{i}.example.com") for i in range(3)]
    signed = await call(backend, Operation.UPDATE, "sign/web", {"csr": csr("s.example.com")})
    leases = leases_for(env)
    ids = [r.lease_id for r in issued]

    listed = await sys_leases(leases, Operation.LIST, "leases/lookup/pki/issue/web")
    assert listed.data == {"keys": sorted(i.rsplit("/", 1)[1] for i in ids)}
    top = await sys_leases(leases, Operation.LIST, "leases/lookup/pki")
    assert top.data == {"keys": ["issue/", "sign/"]}
    root = await sys_leases(leases, Operation.LIST, "leases/lookup")
    assert root.data is not None and "pki/" in root.data["keys"]

    await refused(leases, agent, "leases/renew", "lease is not renewable", lease_id=ids[0])

    await sys_leases(leases, Operation.UPDATE, "leases/revoke", lease_id=ids[0])
    row = st.get_cert(agent.store, M, serial_of(issued[0]))
    assert row is not None and row.revocation_time == T0 and row.lease == ""
    assert serial_int(issued[0]) in await crl_serials(backend)
    await refused(leases, agent, "leases/lookup", "invalid lease", lease_id=ids[0])
    await refused(leases, agent, "leases/revoke", "invalid lease", lease_id=ids[0])

    # revoking the certificate through the engine ends its lease too
    await call(backend, Operation.UPDATE, "revoke", {"serial_number": serial_of(issued[1])})
    await refused(leases, agent, "leases/lookup", "invalid lease", lease_id=ids[1])

    await sys_leases(leases, Operation.UPDATE, "leases/revoke-prefix/pki/issue/web")
    assert {serial_int(r) for r in issued} <= await crl_serials(backend)
    assert serial_int(signed) not in await crl_serials(backend)
    assert (await lookup(leases, signed.lease_id))["id"] == signed.lease_id
    with pytest.raises(LogicalError) as err:
        await sys_leases(leases, Operation.LIST, "leases/lookup/pki/issue/web")
    assert err.value.status == 404


async def test_bad_lease_ids_are_400s_that_change_nothing(env: Env) -> None:
    agent, backend, _ = env
    await leased_role(backend)
    resp = await issue(backend, "a.example.com")
    await call(backend, Operation.UPDATE, "roles/plain", {"allow_any_name": True})
    plain = await issue(backend, "p.example.com", role="plain")
    tail = resp.lease_id.rsplit("/", 1)[1]
    leases = leases_for(env)
    for bad in (
        "pki/issue/web/zz",  # not a serial
        "pki/issue/other/" + tail,  # the wrong role
        "pki/sign/web/" + tail,  # issued, not signed
        "pki/issue/web/" + serial_of(plain).replace(":", "-"),  # not a lease
        "pki/issue/web/01-02",  # no such certificate
        "nowhere/issue/web/" + tail,
        "pki/" + tail,
    ):
        for rel in ("leases/lookup", "leases/revoke", "leases/renew"):
            await refused(leases, agent, rel, "invalid lease", lease_id=bad)
    assert (await lookup(leases, resp.lease_id))["ttl"] == 3600


async def test_the_sweep_ends_expired_leases_without_revoking(env: Env) -> None:
    agent, backend, clock = env
    await leased_role(backend)
    short = await issue(backend, "short.example.com", ttl="5s")
    long = await issue(backend, "long.example.com")
    leases = leases_for(env)
    assert await leases.pki.expire_due() == 0
    clock[0] += 5
    # past notAfter the lease stays, ttl 0, until the leader's sweep ends it
    assert (await lookup(leases, short.lease_id))["ttl"] == 0
    assert await leases.pki.expire_due() == 1
    await refused(leases, agent, "leases/lookup", "invalid lease", lease_id=short.lease_id)
    assert st.leased_serials(agent.store, M) == [serial_of(long)]
    assert await crl_serials(backend) == set()  # expired: no CRL entry
    assert st.get_cert(agent.store, M, serial_of(short)) is not None  # still stored
    assert await leases.pki.expire_due() == 0


async def test_revoking_a_lease_past_its_expiry_ends_it_without_a_crl_entry(env: Env) -> None:
    agent, backend, clock = env
    await leased_role(backend)
    short = await issue(backend, "short.example.com", ttl="5s")
    other = await issue(backend, "other.example.com", ttl="5s")
    leases = leases_for(env)
    clock[0] += 6  # the sweep has not run yet
    await sys_leases(leases, Operation.UPDATE, "leases/revoke", lease_id=short.lease_id)
    await refused(leases, agent, "leases/lookup", "invalid lease", lease_id=short.lease_id)
    assert await crl_serials(backend) == set()
    # revoke-prefix over due leases likewise (the first one ended both)
    await sys_leases(leases, Operation.UPDATE, "leases/revoke-prefix/pki/issue")
    await refused(leases, agent, "leases/lookup", "invalid lease", lease_id=other.lease_id)
    assert st.leased_serials(agent.store, M) == [] and await crl_serials(backend) == set()
