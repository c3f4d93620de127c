"""The PKI backend over an in-memory FSM: the lazily made issuer, roles, issue and
sign with storage (shared log entries), no_store, revoke, the CRL, fetch paths,
tidy, and the 4xx answers that change nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stack.ca import authority
from stack.credentials import root_key_aad
from stack.state import CommandRegistry, register_substrate_commands
from stack.state import ca as castate
from stack.state import pki as st
from stack.state import secrets as secretsstate
from stack.state.commands import ApplyContext, WriteResult
from stack.state.fsm import FSM
from stack.vault.barrier import Barrier, Keyring
from stack.vault.logical import LogicalError, Operation, Request, Response
from stack.vault.pki_backend import PkiBackend

M = "pki/"
T0 = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
TEST_MOUNT = 9000


def _apply_test_mount(ctx: ApplyContext, body: Any) -> WriteResult:
    row = {"type": "pki", "version": 1, "description": "",
           "options": dict(secretsstate.DEFAULT_OPTIONS), "created": 0.0,
           "accessor": body["accessor"]}  # fmt: skip
    ctx.store.table(secretsstate.MOUNTS_TABLE).put(body["path"], row, ctx.index)
    return WriteResult(True, ctx.index)


class FakeAgent:
    """What the backend uses of an Agent: a one-node log applied at once."""

    def __init__(self) -> None:
        self.registry = CommandRegistry()
        register_substrate_commands(self.registry)
        castate.register(self.registry)
        secretsstate.register(self.registry)
        st.register(self.registry)
        self.registry.register(TEST_MOUNT, "test.mount", _apply_test_mount)
        self.fsm = FSM(self.registry)
        self.store = self.fsm.store
        self.barrier = Barrier()
        self.barrier.unseal(Keyring.new())
        self.ident = SimpleNamespace(cluster_id="c1")
        self.node = SimpleNamespace(wait_applied=self._applied)
        self.proposed: list[int] = []

    async def _applied(self, index: int) -> None:
        assert self.fsm.applied_index >= index

    async def apply(self, cmd: bytes) -> WriteResult:
        await asyncio.sleep(0)  # a real commit yields; concurrent requests queue meanwhile
        index = self.fsm.applied_index + 1
        self.proposed.append(self.registry.decode(cmd).type_id)
        result = self.fsm.apply(index, 1, cmd)
        return result if isinstance(result, WriteResult) else WriteResult(True, index)

    async def read_barrier(self) -> None:
        return None


@pytest.fixture
def env() -> tuple[FakeAgent, PkiBackend, list[float]]:
    agent = FakeAgent()
    root = authority.create_root(cluster_id="c1", now=datetime.fromtimestamp(T0 - 86400, UTC))
    body = {"gen": 1, "cert": root.cert_pem, "cross": b"",
            "key": agent.barrier.encrypt(root.key_pem, root_key_aad(1))}  # fmt: skip
    init = castate.encode_init(agent.registry, root=body, join_secret=b"j", gossip_key=b"g")
    agent.fsm.apply(1, 1, init)
    mount = agent.registry.encode(TEST_MOUNT, {"path": M, "accessor": "pki_1"})
    agent.fsm.apply(2, 1, mount)
    clock = [T0]
    service = SimpleNamespace(agent=agent, clock=lambda: clock[0])
    return agent, PkiBackend(service), clock  # type: ignore[arg-type]


async def call(
    backend: PkiBackend, op: Operation, path: str, data: dict[str, Any] | None = None
) -> Response:
    req = Request(op, M + path, data)
    return await backend.handle(M + path, req, await backend.operation(M + path, req), None)


async def _role(backend: PkiBackend, name: str = "web", **fields: Any) -> Response:
    fields = {"allowed_domains": "example.com", "allow_subdomains": True, **fields}
    return await call(backend, Operation.UPDATE, f"roles/{name}", fields)


async def test_role_crud_and_create_vs_update(env: Any) -> None:
    _, backend, _ = env
    req = Request(Operation.UPDATE, M + "roles/web", {})
    assert await backend.operation(M + "roles/web", req) is Operation.CREATE
    # hvac sends the path's `name` in the body too: a known field, never warned about
    fields = {"allowed_domains": "example.com", "allow_subdomains": True, "max_ttl": "1h",
              "key_usage": "DigitalSignature", "extra": 1, "name": "web"}  # fmt: skip
    resp = await call(backend, Operation.UPDATE, "roles/web", fields)
    assert resp.data is not None and resp.data["max_ttl"] == 3600
    assert resp.data["allowed_domains"] == ["example.com"] and resp.data["key_bits"] == 256
    assert resp.warnings == ["Endpoint ignored these unrecognized parameters: ['extra']"]
    assert await backend.operation(M + "roles/web", req) is Operation.UPDATE
    got = await call(backend, Operation.READ, "roles/web")
    assert got.data is not None and got.data["allow_subdomains"] is True
    await call(backend, Operation.PATCH, "roles/web", {"no_store": "true"})
    got = await call(backend, Operation.READ, "roles/web")
    assert got.data is not None and got.data["no_store"] and got.data["max_ttl"] == 3600
    assert (await call(backend, Operation.LIST, "roles")).data == {"keys": ["web"]}
    await call(backend, Operation.DELETE, "roles/web")
    with pytest.raises(LogicalError) as err:
        await call(backend, Operation.READ, "roles/web")
    assert err.value.status == 404


async def test_a_bad_role_is_a_400_and_writes_nothing(env: Any) -> None:
    agent, backend, _ = env
    before = agent.store.dump()["tables"]
    for fields in (
        {"ttl": "2h", "max_ttl": "1h"},
        {"key_type": "dsa"},
        {"allow_subdomains": "maybe"},
    ):
        with pytest.raises(LogicalError) as err:
            await _role(backend, **fields)
        assert err.value.status == 400
    assert agent.store.dump()["tables"] == before


async def test_issue_makes_the_issuer_and_stores_the_certificate(env: Any) -> None:
    agent, backend, _ = env
    await _role(backend)
    body = {"common_name": "a.example.com", "alt_names": "b.example.com", "ttl": "1h"}
    resp = await call(backend, Operation.UPDATE, "issue/web", body)
    data = resp.data
    assert data is not None
    assert set(data) == {"certificate", "issuing_ca", "ca_chain", "private_key",
                         "private_key_type", "serial_number", "expiration"}  # fmt: skip
    assert data["expiration"] == int(T0 + 3600) and data["private_key_type"] == "ec"
    root = castate.active_root(agent.store)
    assert root is not None and data["ca_chain"][1] == root.cert.decode().strip()
    issuer_row = st.get_issuer(agent.store, M)
    assert (
        issuer_row is not None and issuer_row.key not in (b"",) and b"PRIVATE" not in issuer_row.key
    )
    stored = st.get_cert(agent.store, M, data["serial_number"])
    leaf = x509.load_pem_x509_certificate(data["certificate"].encode())
    assert stored is not None and stored.der == leaf.public_bytes(serialization.Encoding.DER)
    listed = await call(backend, Operation.LIST, "certs")
    assert listed.data == {"keys": [data["serial_number"]]}
    fetched = await call(backend, Operation.READ, "cert/" + data["serial_number"].replace(":", "-"))
    assert fetched.data is not None and fetched.data["certificate"] == data["certificate"]
    assert fetched.data["revocation_time"] == 0


async def test_concurrent_issues_share_log_entries(env: Any) -> None:
    agent, backend, _ = env
    await _role(backend)
    await call(backend, Operation.READ, "ca/pem")  # the issuer exists before the burst
    agent.proposed.clear()
    body = {"common_name": "a.example.com"}
    got = await asyncio.gather(
        *(call(backend, Operation.UPDATE, "issue/web", body) for _ in range(20))
    )
    assert len({r.data["serial_number"] for r in got if r.data}) == 20
    assert len(st.list_certs(agent.store, M)) == 20
    assert agent.proposed.count(st.PKI_CERT_STORE) < 20  # group commit


async def test_no_store_writes_nothing(env: Any) -> None:
    agent, backend, _ = env
    await _role(backend, no_store=True)
    await call(backend, Operation.READ, "ca")
    before = agent.fsm.applied_index
    resp = await call(backend, Operation.UPDATE, "issue/web", {"common_name": "a.example.com"})
    assert agent.fsm.applied_index == before
    assert resp.data is not None
    serial = resp.data["serial_number"]
    with pytest.raises(LogicalError) as err:
        await call(backend, Operation.READ, "cert/" + serial)
    assert err.value.status == 404
    # but it can be revoked, by serial (a no_store role exists) or by the certificate
    await call(backend, Operation.UPDATE, "revoke", {"serial_number": serial})
    assert [r.serial for r in st.list_revoked(agent.store, M)] == [serial]
    other = await call(backend, Operation.UPDATE, "issue/web", {"common_name": "b.example.com"})
    assert other.data is not None
    await call(backend, Operation.UPDATE, "revoke", {"certificate": other.data["certificate"]})
    assert len(st.list_revoked(agent.store, M)) == 2


async def test_bad_requests_are_400s_that_change_nothing(env: Any) -> None:
    agent, backend, _ = env
    await _role(backend)
    await call(backend, Operation.READ, "ca")
    before = agent.store.dump()["tables"]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("issue/web", {"common_name": "evil.org"}),
        ("issue/web", {"common_name": "a.example.com", "alt_names": "evil.org"}),
        ("issue/nope", {"common_name": "a.example.com"}),
        ("issue/web", {"common_name": "a.example.com", "ttl": "soon"}),
        ("sign/web", {"csr": "not a csr"}),
        ("revoke", {"serial_number": "01:02"}),  # unknown, and no no_store role
        ("revoke", {"serial_number": "xyz"}),
        ("revoke", {}),
        ("tidy", {"tidy_cert_store": True, "safety_buffer": "-1s"}),
    ]
    for path, body in cases:
        with pytest.raises(LogicalError) as err:
            await call(backend, Operation.UPDATE, path, body)
        assert err.value.status == 400, (path, body, err.value)
    assert agent.store.dump()["tables"] == before


async def test_revoke_then_crl_lists_it_and_revoking_again_is_refused(env: Any) -> None:
    _, backend, clock = env
    await _role(backend)
    issued = await call(backend, Operation.UPDATE, "issue/web", {"common_name": "a.example.com"})
    assert issued.data is not None
    serial = issued.data["serial_number"]
    clock[0] += 10
    resp = await call(backend, Operation.UPDATE, "revoke", {"serial_number": serial})
    assert resp.data is not None and resp.data["revocation_time"] == int(T0 + 10)
    with pytest.raises(LogicalError, match="already revoked"):
        await call(backend, Operation.UPDATE, "revoke", {"serial_number": serial})
    crl_resp = await call(backend, Operation.READ, "crl")
    assert crl_resp.data is not None
    assert crl_resp.data["http_content_type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(crl_resp.data["http_raw_body"])
    leaf = x509.load_pem_x509_certificate(issued.data["certificate"].encode())
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    ca = await call(backend, Operation.READ, "ca")
    assert ca.data is not None
    issuer = x509.load_der_x509_certificate(ca.data["http_raw_body"])
    assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    fetched = await call(backend, Operation.READ, "cert/" + serial)
    assert fetched.data is not None and fetched.data["revocation_time"] == int(T0 + 10)
    listed = await call(backend, Operation.LIST, "certs/revoked")
    assert listed.data == {"keys": [serial]}


async def test_fetch_paths_and_content_types(env: Any) -> None:
    _, backend, _ = env
    types = {
        "ca": "application/pkix-cert",
        "ca/pem": "application/pem-certificate-chain",
        "ca_chain": "application/pkix-cert",
        "crl/pem": "application/x-pem-file",
    }
    for path, content_type in types.items():
        resp = await call(backend, Operation.READ, path)
        assert resp.data is not None and resp.data["http_content_type"] == content_type
        assert resp.data["http_status_code"] == 200
    chain = (await call(backend, Operation.READ, "ca_chain")).data
    assert chain is not None and chain["http_raw_body"].count(b"BEGIN CERTIFICATE") == 2
    cert_ca = await call(backend, Operation.READ, "cert/ca")
    assert cert_ca.data is not None and cert_ca.data["certificate"].startswith("-----BEGIN")
    with pytest.raises(LogicalError) as err:
        await call(backend, Operation.READ, "nowhere")
    assert err.value.status == 404


async def test_sign_stores_and_uses_the_csr_key(env: Any) -> None:
    agent, backend, _ = env
    await _role(backend)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s.example.com")]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))  # fmt: skip
    resp = await call(backend, Operation.UPDATE, "sign/web", {"csr": csr.decode()})
    assert resp.data is not None and "private_key" not in resp.data
    leaf = x509.load_pem_x509_certificate(resp.data["certificate"].encode())
    assert leaf.public_key() == key.public_key()
    assert st.get_cert(agent.store, M, resp.data["serial_number"]) is not None


async def test_tidy_drops_expired_certificates_after_the_buffer(env: Any) -> None:
    agent, backend, clock = env
    await _role(backend)
    await call(backend, Operation.UPDATE, "issue/web", {"common_name": "a.example.com", "ttl": 60})
    clock[0] += 180  # expired two minutes ago
    resp = await call(backend, Operation.UPDATE, "tidy", {"tidy_cert_store": True})  # 72h buffer
    assert resp.status == 202 and resp.data == {"cert_store_deleted": 0, "revoked_cert_deleted": 0}
    resp = await call(backend, Operation.UPDATE, "tidy",
                      {"tidy_cert_store": "true", "safety_buffer": "1m"})  # fmt: skip
    assert resp.data is not None and resp.data["cert_store_deleted"] == 1
    assert st.list_certs(agent.store, M) == []


async def test_the_issuer_is_replaced_when_the_root_rotates(env: Any) -> None:
    agent, backend, clock = env
    first = (await call(backend, Operation.READ, "ca/pem")).data
    now = datetime.fromtimestamp(clock[0], UTC)
    new_root = authority.create_root(cluster_id="c1", now=now, generation=2)
    body = {"gen": 2, "cert": new_root.cert_pem, "cross": b"",
            "key": agent.barrier.encrypt(new_root.key_pem, root_key_aad(2))}  # fmt: skip
    await agent.apply(castate.encode_rotate(agent.registry, root=body, retire_after=clock[0] + 1))
    second = (await call(backend, Operation.READ, "ca/pem")).data
    assert first is not None and second is not None
    assert first["http_raw_body"] != second["http_raw_body"]
    issuer = x509.load_pem_x509_certificate(second["http_raw_body"])
    issuer.verify_directly_issued_by(x509.load_pem_x509_certificate(new_root.cert_pem))
    row = st.get_issuer(agent.store, M)
    assert row is not None and row.version == 2 and row.root_gen == 2
