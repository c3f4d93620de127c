"""The transit backend (stack/vault/transit_backend.py) in process, on a real FSM and
barrier behind a stand-in agent: Vault's paths, batches, upsert, min versions, refusals,
and no key material in the clear in the replicated state."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from stack.state import CommandRegistry, register_substrate_commands, secrets
from stack.state import transit as tt
from stack.state.commands import ApplyContext, WriteResult
from stack.state.fsm import FSM
from stack.vault.barrier import Barrier, Keyring
from stack.vault.logical import LogicalError, Operation, Request, Response
from stack.vault.transit_backend import TransitBackend

TEST_MOUNT = 9000


def _mount_raw(ctx: ApplyContext, body: Any) -> WriteResult:
    row = {"type": body["type"], "version": 1, "description": "", "created": 1.0,
           "options": dict(secrets.DEFAULT_OPTIONS), "accessor": body["accessor"]}  # fmt: skip
    ctx.store.table(secrets.MOUNTS_TABLE).put(body["path"], row, ctx.index)
    return WriteResult(True, ctx.index)


class _Node:
    async def wait_applied(self, index: int) -> None:
        return None


class _Agent:
    """What the backend touches: the store, the registry, the barrier, apply and the
    read barrier (a single replica, so both are immediate)."""

    def __init__(self) -> None:
        self.registry = CommandRegistry()
        register_substrate_commands(self.registry)
        secrets.register(self.registry)
        tt.register(self.registry)
        self.registry.register(TEST_MOUNT, "test.mount_raw", _mount_raw)
        self.fsm = FSM(self.registry)
        self.store = self.fsm.store
        self.barrier = Barrier()
        self.barrier.unseal(Keyring.new())
        self.node = _Node()
        self.entries: list[bytes] = []
        self.read_barriers = 0

    async def apply(self, cmd: bytes) -> WriteResult:
        self.entries.append(cmd)
        result = self.fsm.apply(self.fsm.applied_index + 1, 1, cmd)
        assert isinstance(result, WriteResult)
        return result

    async def read_barrier(self) -> None:
        self.read_barriers += 1


class _Service:
    def __init__(self) -> None:
        self.agent = _Agent()
        self.now = 1_700_000_000.0

    def clock(self) -> float:
        return self.now


@pytest.fixture
def backend() -> TransitBackend:
    service = _Service()
    body = {"path": "transit/", "type": "transit", "accessor": "transit_abcd"}
    service.agent.fsm.apply(1, 1, service.agent.registry.encode(TEST_MOUNT, body))
    return TransitBackend(service)  # type: ignore[arg-type]


async def _call(
    backend: TransitBackend,
    path: str,
    data: dict[str, Any] | None = None,
    op: Operation = Operation.UPDATE,
    query: dict[str, str] | None = None,
    stale: bool = False,
) -> Response:
    req = Request(operation=op, path="transit/" + path, data=data, query=query or {}, stale=stale)
    effective = await backend.operation(req.path, req)
    return await backend.handle(req.path, req, effective, None)


async def _fails(backend: TransitBackend, path: str, data: Any = None, **kw: Any) -> LogicalError:
    with pytest.raises(LogicalError) as caught:
        await _call(backend, path, data, **kw)
    return caught.value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_key_lifecycle_and_read_shape(backend: TransitBackend) -> None:
    made = await _call(backend, "keys/app", {"type": "chacha20-poly1305", "exportable": "true"})
    assert made.data is not None and made.data["type"] == "chacha20-poly1305"
    assert made.data["exportable"] is True and made.data["keys"] == {"1": 1_700_000_000}
    again = await _call(backend, "keys/app", {"type": "aes256-gcm96"})
    assert (
        again.warnings == ["key app already existed"] and again.data["type"] == "chacha20-poly1305"
    )  # type: ignore[index]
    # an existing key: the body is still checked, and bad input is a 400
    for bad in ({"type": "aes512-gcm"}, {"exportable": "maybe"}, {"auto_rotate_period": "1s"}):
        assert (await _fails(backend, "keys/app", bad)).status == 400, bad
    rotated = await _call(backend, "keys/app/rotate")
    assert rotated.data is not None and rotated.data["latest_version"] == 2
    listed = await _call(backend, "keys", op=Operation.LIST)
    assert listed.data == {"keys": ["app"]}
    read = await _call(backend, "keys/app", op=Operation.READ)
    assert read.data is not None and sorted(read.data["keys"]) == ["1", "2"]
    gone = await _fails(backend, "keys/app", op=Operation.DELETE)
    assert gone.status == 400 and "deletion is not allowed" in str(gone)
    await _call(backend, "keys/app/config", {"deletion_allowed": True})
    await _call(backend, "keys/app", op=Operation.DELETE)
    missing = await _fails(backend, "keys/app", op=Operation.READ)
    assert missing.status == 404


async def test_encrypt_decrypt_rewrap_and_min_versions(backend: TransitBackend) -> None:
    await _call(backend, "keys/k")
    enc = await _call(backend, "encrypt/k", {"plaintext": _b64(b"hello")})
    assert enc.data is not None and enc.data["key_version"] == 1
    v1 = enc.data["ciphertext"]
    assert v1.startswith("vault:v1:")
    dec = await _call(backend, "decrypt/k", {"ciphertext": v1})
    assert dec.data == {"plaintext": _b64(b"hello")}
    await _call(backend, "keys/k/rotate")
    wrapped = await _call(backend, "rewrap/k", {"ciphertext": v1})
    assert wrapped.data is not None and wrapped.data["ciphertext"].startswith("vault:v2:")
    await _call(backend, "keys/k/config", {"min_decryption_version": 2})
    old = await _fails(backend, "decrypt/k", {"ciphertext": v1})
    assert old.status == 400 and "disallowed by policy (too old)" in str(old)
    refused = await _fails(backend, "keys/k/config", {"min_decryption_version": 3})
    assert "cannot set min decryption version of 3, latest key version is 2" in str(refused)
    bad = await _fails(backend, "encrypt/k", {"plaintext": "not base64!"})
    assert bad.status == 400 and "unable to decode plaintext as base64" in str(bad)


async def test_encrypt_upserts_a_missing_key_with_create(backend: TransitBackend) -> None:
    req = Request(Operation.UPDATE, "transit/encrypt/new", {"plaintext": _b64(b"x")})
    assert await backend.operation(req.path, req) is Operation.CREATE
    resp = await _call(backend, "encrypt/new", {"plaintext": _b64(b"x"), "context": _b64(b"c")})
    assert resp.data is not None and resp.data["ciphertext"].startswith("vault:v1:")
    info = await _call(backend, "keys/new", op=Operation.READ)
    assert info.data is not None and info.data["derived"] is True  # a context made it derived
    assert await backend.operation(req.path, req) is Operation.UPDATE
    no_upsert = await _fails(backend, "decrypt/other", {"ciphertext": "vault:v1:AAAA"})
    assert "encryption key not found" in str(no_upsert)
    wrong_type = await _fails(backend, "encrypt/sig", {"plaintext": "", "type": "ed25519"})
    assert "not supported for this operation" in str(wrong_type)


async def test_encrypt_batch_reports_items_and_status(backend: TransitBackend) -> None:
    await _call(backend, "keys/k")
    batch = [
        {"plaintext": _b64(b"one"), "reference": "r1"},
        {"plaintext": "%%%", "reference": "r2"},
        {"plaintext": _b64(b"three")},
    ]
    resp = await _call(backend, "encrypt/k", {"batch_input": batch})
    assert resp.status == 400 and resp.data is not None
    results = resp.data["batch_results"]
    assert [r["reference"] for r in results] == ["r1", "r2", ""]
    assert "error" in results[1] and "ciphertext" not in results[1]
    assert results[0]["key_version"] == 1
    partial = await _call(backend, "encrypt/k", {"batch_input": batch,
                                                 "partial_failure_response_code": 207})  # fmt: skip
    assert partial.status == 207
    decrypt = [{"ciphertext": results[0]["ciphertext"]}, {"ciphertext": results[2]["ciphertext"]}]
    opened = await _call(backend, "decrypt/k", {"batch_input": decrypt})
    assert opened.status == 200 and opened.data is not None
    plain = [base64.b64decode(r["plaintext"]) for r in opened.data["batch_results"]]
    assert plain == [b"one", b"three"]


async def test_sign_verify_hmac_and_their_batches(backend: TransitBackend) -> None:
    await _call(backend, "keys/sig", {"type": "ecdsa-p256"})
    signed = await _call(backend, "sign/sig/sha2-384", {"input": _b64(b"doc")})
    assert signed.data is not None and signed.data["key_version"] == 1
    signature = signed.data["signature"]
    ok = await _call(
        backend, "verify/sig/sha2-384", {"input": _b64(b"doc"), "signature": signature}
    )
    assert ok.data == {"valid": True}
    batch = [{"input": _b64(b"doc"), "signature": signature, "reference": "a"},
             {"input": _b64(b"other"), "signature": signature},
             {"input": _b64(b"doc"), "signature": "garbage"}]  # fmt: skip
    checked = await _call(backend, "verify/sig/sha2-384", {"batch_input": batch})
    assert checked.status == 200 and checked.data is not None
    results = checked.data["batch_results"]
    assert [r["valid"] for r in results] == [True, False, False]
    assert "no prefix" in results[2]["error"] and results[0]["reference"] == "a"
    await _call(backend, "keys/mac", {"type": "hmac"})
    mac = await _call(backend, "hmac/mac/sha2-512", {"input": _b64(b"m")})
    assert mac.data is not None and mac.data["hmac"].startswith("vault:v1:")
    good = await _call(
        backend, "verify/mac/sha2-512", {"input": _b64(b"m"), "hmac": mac.data["hmac"]}
    )
    assert good.data == {"valid": True}
    both = await _fails(backend, "verify/mac", {"input": "", "hmac": "x", "signature": "y"})
    assert "provide one of 'signature' or 'hmac'" in str(both)


async def test_export_hash_random_and_refused_paths(backend: TransitBackend) -> None:
    await _call(backend, "keys/k")
    refused = await _fails(backend, "export/encryption-key/k", op=Operation.READ)
    assert "private key material is not exportable" in str(refused)
    await _call(backend, "keys/k/config", {"exportable": True})
    exported = await _call(backend, "export/encryption-key/k/latest", op=Operation.READ)
    assert exported.data is not None and list(exported.data["keys"]) == ["1"]
    digest = await _call(backend, "hash/sha2-256", {"input": _b64(b"abc")})
    assert digest.data == {
        "sum": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    }
    rand = await _call(backend, "random/16", {"format": "hex"})
    assert rand.data is not None and len(rand.data["random_bytes"]) == 32
    for path, status, text in [
        ("backup/k", 400, "key backup is not supported"),
        ("keys/k/import", 400, "not supported"),
        ("nonsense/k", 404, "unsupported path"),
        ("keys/bad name", 400, "invalid key name"),
        ("random/seal/8", 400, 'only "platform"'),
    ]:
        error = await _fails(backend, path, {})
        assert error.status == status and text in str(error), (path, error)
    rsa = await _fails(backend, "keys/r", {"type": "rsa-2048"})
    assert "rsa-2048 is not supported" in str(rsa)
    padding = await _fails(backend, "encrypt/k", {"plaintext": "", "padding_scheme": "oaep"})
    assert "RSA padding schemes are not supported" in str(padding)


async def test_the_log_and_state_hold_no_key_material(backend: TransitBackend) -> None:
    await _call(backend, "keys/k", {"exportable": True})
    await _call(backend, "keys/s", {"type": "ed25519", "exportable": True})
    await _call(backend, "keys/s/rotate")
    exported: list[bytes] = []
    for kind, name in (("encryption-key", "k"), ("signing-key", "s"), ("hmac-key", "k")):
        resp = await _call(backend, f"export/{kind}/{name}", op=Operation.READ)
        assert resp.data is not None
        exported += [base64.b64decode(v) for v in resp.data["keys"].values()]
    assert len(exported) == 4
    agent = backend.agent
    haystack = b"".join(agent.entries) + agent.fsm.snapshot()  # type: ignore[attr-defined]
    haystack += json.dumps(agent.store.dump(), default=repr).encode()
    for secret in exported:
        assert secret[:16] not in haystack and secret.hex()[:24].encode() not in haystack


async def test_reads_see_the_latest_state_unless_stale(backend: TransitBackend) -> None:
    agent: Any = backend.agent
    await _call(backend, "keys/k")
    before = agent.read_barriers
    await _call(backend, "encrypt/k", {"plaintext": ""})
    await _call(backend, "keys/k", op=Operation.READ)
    assert agent.read_barriers == before + 2
    await _call(backend, "keys/k", op=Operation.READ, stale=True)
    assert agent.read_barriers == before + 2
