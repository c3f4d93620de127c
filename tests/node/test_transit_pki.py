"""The transit and PKI secrets engines through hvac on real `stack up` processes:
every transit and PKI row of docs/compat-vault.md names the test here that covers
it.

Three tests: transit on one server (every key type, every operation, bad input, a
token allowed only to encrypt, one call through the native API); PKI on one server
(roles, issue, sign, certificates, revocation and the CRL, the CA chain ending at
the cluster root, no_store, tidy, bad input); and a three-server cluster where a
key and a certificate made through a follower survive a SIGKILLed leader.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import hvac.exceptions as hx
import pytest
from cluster import Harness, Node, wait_leader
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.x509.oid import NameOID
from vault_clients import Clients, raw

pytestmark = pytest.mark.slow

ENCRYPT_ONLY = 'path "transit/encrypt/k1" {\n  capabilities = ["update"]\n}\n'


# ---------------------------------------------------------------- helpers
def raises(exc: type[hx.VaultError], fn: Callable[[], Any], *messages: str) -> hx.VaultError:
    """`fn()` raises hvac's `exc` (its status code) whose errors name each of `messages`."""
    with pytest.raises(exc) as info:
        fn()
    err = info.value
    for m in messages:
        assert any(m in e for e in err.errors or []), f"{m!r} not in {err.errors} ({err})"
    return err


def denied(fn: Callable[[], Any]) -> None:
    err = raises(hx.Forbidden, fn)
    assert err.errors == ["permission denied"], err.errors


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def vault_blob(value: str, version: int) -> bytes:
    """The bytes after Vault's `vault:v<N>:` prefix."""
    prefix = f"vault:v{version}:"
    assert value.startswith(prefix), value
    return unb64(value[len(prefix) :])


def cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def sans(c: x509.Certificate) -> set[str]:
    ext = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.DNSName)} | {
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    }


def csr_for(*names: str, key: ec.EllipticCurvePrivateKey | None = None) -> str:
    """A PEM CSR whose CN is the first name and whose DNS SANs are all of them."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    req = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    return req.public_bytes(serialization.Encoding.PEM).decode()


def cluster_root(node: Node) -> x509.Certificate:
    """The cluster CA from the native API (no token: it is public)."""
    resp = node.request("GET", "/v1/ca/root", auth=False)
    assert resp.status == 200, resp
    return x509.load_pem_x509_certificate(resp.body)


def certs(p: Any, mount: str = "pki") -> list[str]:
    try:
        keys: list[str] = p.list_certificates(mount_point=mount)["data"]["keys"]
    except hx.InvalidPath:
        return []
    return keys


# ---------------------------------------------------------------- transit
@pytest.mark.timeout(90)
def test_transit(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    n1 = h.bootstrap()
    assert h.token
    clients = Clients(request)
    c = clients(n1, h.token)
    t = c.secrets.transit

    audit_file = tmp_path / "audit.log"
    c.sys.enable_audit_device("file", options={"file_path": str(audit_file)})

    # sys/mounts: enable
    c.sys.enable_secrets_engine("transit")
    assert c.sys.list_mounted_secrets_engines()["data"]["transit/"]["type"] == "transit"

    # keys/<name> POST of every type (hvac's list lacks hmac: raw), list, read
    types = {"k1": "aes256-gcm96", "cc": "chacha20-poly1305", "ed": "ed25519", "ec": "ecdsa-p256"}
    for name, kind in types.items():
        t.create_key(name, key_type=kind)
    c.adapter.post("/v1/transit/keys/mac", json={"type": "hmac", "key_size": 32})
    assert sorted(t.list_keys()["data"]["keys"]) == ["cc", "ec", "ed", "k1", "mac"]
    for name, kind in {**types, "mac": "hmac"}.items():
        info = t.read_key(name)["data"]
        assert info["type"] == kind and info["latest_version"] == 1, info
        assert info["exportable"] is False and info["deletion_allowed"] is False, info
    ed_info = t.read_key("ed")["data"]
    assert ed_info["supports_signing"] and not ed_info["supports_encryption"], ed_info
    assert t.read_key("k1")["data"]["supports_encryption"] is True
    r = t.create_key("k1", key_type="aes256-gcm96")  # exists: unchanged, with a warning
    assert r["warnings"] and r["data"]["latest_version"] == 1, r

    # encrypt/decrypt (single and batch_input), on AES and ChaCha20
    pt = b64("hello transit")
    ct1 = t.encrypt_data("k1", plaintext=pt)["data"]["ciphertext"]
    assert len(vault_blob(ct1, 1)) == 12 + len("hello transit") + 16
    assert t.decrypt_data("k1", ciphertext=ct1)["data"]["plaintext"] == pt
    cc_ct = t.encrypt_data("cc", plaintext=pt)["data"]["ciphertext"]
    assert t.decrypt_data("cc", ciphertext=cc_ct)["data"]["plaintext"] == pt
    batch = [{"plaintext": b64("a"), "reference": "r-a"}, {"plaintext": b64("b")}]
    results = t.encrypt_data("k1", batch_input=batch)["data"]["batch_results"]
    assert [r["reference"] for r in results] == ["r-a", ""], results
    opened = t.decrypt_data("k1", batch_input=[{"ciphertext": r["ciphertext"]} for r in results])
    assert [r["plaintext"] for r in opened["data"]["batch_results"]] == [b64("a"), b64("b")]
    # a batch with a bad item: 400, the good item's result still there
    resp = raw(n1, "POST", "/v1/transit/decrypt/k1",
               {"batch_input": [{"ciphertext": ct1}, {"ciphertext": "vault:v1:AAAA"}]},
               token=h.token)  # fmt: skip
    assert resp.status == 400, resp
    items = resp.json()["data"]["batch_results"]
    assert items[0]["plaintext"] == pt and items[1]["error"], items
    # encrypt on a missing key creates it (Vault's upsert, the `create` capability)
    auto_ct = t.encrypt_data("auto", plaintext=pt)["data"]["ciphertext"]
    assert t.read_key("auto")["data"]["type"] == "aes256-gcm96"
    assert t.decrypt_data("auto", ciphertext=auto_ct)["data"]["plaintext"] == pt

    # a derived key: every call needs its context, and a wrong one opens nothing
    t.create_key("per-tenant", derived=True)
    ctx_a, ctx_b = b64("tenant-a"), b64("tenant-b")
    ct_a = t.encrypt_data("per-tenant", plaintext=pt, context=ctx_a)["data"]["ciphertext"]
    opened_a = t.decrypt_data("per-tenant", ciphertext=ct_a, context=ctx_a)["data"]["plaintext"]
    assert opened_a == pt
    raises(hx.InvalidRequest, lambda: t.decrypt_data("per-tenant", ciphertext=ct_a, context=ctx_b))
    raises(hx.InvalidRequest, lambda: t.decrypt_data("per-tenant", ciphertext=ct_a), "context")
    raises(hx.InvalidRequest, lambda: t.encrypt_data("k1", plaintext=pt, context=ctx_a), "context")

    # rotate_key, rewrap, update_key_configuration (min versions), trim_key
    t.rotate_key("k1")
    t.rotate_key("k1")
    info = t.read_key("k1")["data"]
    assert info["latest_version"] == 3 and sorted(info["keys"]) == ["1", "2", "3"], info
    ct3 = t.encrypt_data("k1", plaintext=pt)["data"]["ciphertext"]
    assert ct3.startswith("vault:v3:"), ct3
    ct2 = t.encrypt_data("k1", plaintext=pt, key_version=2)["data"]["ciphertext"]
    assert ct2.startswith("vault:v2:"), ct2
    rewrapped = t.rewrap_data("k1", ciphertext=ct1)["data"]["ciphertext"]
    assert rewrapped.startswith("vault:v3:"), rewrapped
    assert t.decrypt_data("k1", ciphertext=rewrapped)["data"]["plaintext"] == pt
    r = t.rewrap_data("k1", ciphertext=None, batch_input=[{"ciphertext": ct1}, {"ciphertext": ct2}])
    assert all(x["ciphertext"].startswith("vault:v3:") for x in r["data"]["batch_results"]), r
    t.update_key_configuration("k1", min_decryption_version=2, min_encryption_version=3)
    info = t.read_key("k1")["data"]
    assert info["min_decryption_version"] == 2 and info["min_encryption_version"] == 3, info
    assert sorted(info["keys"]) == ["2", "3"], info
    raises(hx.InvalidRequest, lambda: t.decrypt_data("k1", ciphertext=ct1))  # below min
    assert t.decrypt_data("k1", ciphertext=ct2)["data"]["plaintext"] == pt
    raises(hx.InvalidRequest, lambda: t.encrypt_data("k1", plaintext=pt, key_version=2))
    raises(hx.InvalidRequest, lambda: t.trim_key("k1", 3))  # above min_decryption_version
    assert t.trim_key("k1", 2)["data"]["min_available_version"] == 2
    raises(hx.InvalidRequest, lambda: t.update_key_configuration("k1", min_decryption_version=1))
    raises(hx.InvalidRequest, lambda: t.update_key_configuration("k1", min_encryption_version=9))
    r = t.update_key_configuration("k1", auto_rotate_period="24h")
    assert r["data"]["auto_rotate_period"] == 86400 and t.read_key("k1")["data"]["keys"], r
    assert t.decrypt_data("k1", ciphertext=ct2)["data"]["plaintext"] == pt

    # datakey/plaintext and datakey/wrapped
    dk = t.generate_data_key("k1", key_type="plaintext", bits=256)["data"]
    assert len(unb64(dk["plaintext"])) == 32 and dk["key_version"] == 3, dk
    assert t.decrypt_data("k1", ciphertext=dk["ciphertext"])["data"]["plaintext"] == dk["plaintext"]
    wrapped = t.generate_data_key("k1", key_type="wrapped", bits=128)["data"]
    assert "plaintext" not in wrapped, wrapped
    opened_dk = t.decrypt_data("k1", ciphertext=wrapped["ciphertext"])["data"]["plaintext"]
    assert len(unb64(opened_dk)) == 16

    # sign/verify: ed25519 and ecdsa-p256, checked with `cryptography` too
    msg = b64("sign me")
    sig = t.sign_data("ed", hash_input=msg)["data"]["signature"]
    public = unb64(t.read_key("ed")["data"]["keys"]["1"]["public_key"])
    ed25519.Ed25519PublicKey.from_public_bytes(public).verify(vault_blob(sig, 1), b"sign me")
    assert t.verify_signed_data("ed", hash_input=msg, signature=sig)["data"]["valid"] is True
    other = b64("other")
    assert t.verify_signed_data("ed", hash_input=other, signature=sig)["data"]["valid"] is False
    ec_sig = t.sign_data("ec", hash_input=msg, hash_algorithm="sha2-256")["data"]["signature"]
    ec_pem = t.read_key("ec")["data"]["keys"]["1"]["public_key"]
    ec_public = serialization.load_pem_public_key(ec_pem.encode())
    assert isinstance(ec_public, ec.EllipticCurvePublicKey)
    ec_public.verify(vault_blob(ec_sig, 1), b"sign me", ec.ECDSA(hashes.SHA256()))
    ok = t.verify_signed_data("ec", hash_input=msg, signature=ec_sig, hash_algorithm="sha2-256")
    assert ok["data"]["valid"] is True
    jws = t.sign_data("ec", hash_input=msg, marshaling_algorithm="jws")["data"]["signature"]
    rs = base64.urlsafe_b64decode(jws[len("vault:v1:") :] + "==")
    assert len(rs) == 64, jws
    der = utils.encode_dss_signature(int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big"))
    ec_public.verify(der, b"sign me", ec.ECDSA(hashes.SHA256()))
    ok = t.verify_signed_data("ec", hash_input=msg, signature=jws, marshaling_algorithm="jws")
    assert ok["data"]["valid"] is True
    exported = c.adapter.get("/v1/transit/export/public-key/ec")["data"]["keys"]["1"]
    assert exported.strip() == ec_pem.strip()  # public keys need no exportable flag
    signed = t.sign_data("ec", batch_input=[{"input": msg}, {"input": other, "reference": "o"}])
    sigs = signed["data"]["batch_results"]
    assert [s["reference"] for s in sigs] == ["", "o"] and all(s["signature"] for s in sigs)
    raises(hx.InvalidRequest, lambda: t.sign_data("k1", hash_input=msg))  # not a signing key
    raises(hx.InvalidRequest, lambda: t.encrypt_data("ed", plaintext=pt))  # not an AEAD key

    # hmac and verify with hmac; hash; random
    mac = t.generate_hmac("mac", hash_input=msg)["data"]["hmac"]
    assert mac.startswith("vault:v1:"), mac
    assert t.verify_signed_data("mac", hash_input=msg, hmac=mac)["data"]["valid"] is True
    assert t.verify_signed_data("mac", hash_input=other, hmac=mac)["data"]["valid"] is False
    mac384 = t.generate_hmac("k1", hash_input=msg, algorithm="sha2-384")["data"]["hmac"]
    assert len(vault_blob(mac384, 3)) == 48
    r = t.hash_data(b64("abc"), algorithm="sha2-256")["data"]["sum"]
    assert r == hashlib.sha256(b"abc").hexdigest()
    r = t.hash_data(b64("abc"), algorithm="sha2-512", output_format="base64")["data"]["sum"]
    assert unb64(r) == hashlib.sha512(b"abc").digest()
    rnd = t.generate_random_bytes(n_bytes=24)["data"]["random_bytes"]
    assert len(unb64(rnd)) == 24
    rnd_hex = t.generate_random_bytes(n_bytes=8, output_format="hex")["data"]["random_bytes"]
    assert len(bytes.fromhex(rnd_hex)) == 8
    # the algorithm or byte count in the path, as Vault takes them (hvac never does)
    r = c.adapter.post("/v1/transit/hash/sha2-384", json={"input": b64("abc")})["data"]["sum"]
    assert r == hashlib.sha384(b"abc").hexdigest()
    assert len(unb64(c.adapter.post("/v1/transit/random/5", json={})["data"]["random_bytes"])) == 5
    r = c.adapter.post("/v1/transit/sign/ec/sha2-384", json={"input": msg})["data"]["signature"]
    ec_public.verify(vault_blob(r, 1), b"sign me", ec.ECDSA(hashes.SHA384()))

    # export: refused until exportable; then the material opens what transit sealed
    raises(hx.InvalidRequest, lambda: t.export_key("cc", "encryption-key"), "not exportable")
    raises(hx.InvalidRequest, lambda: t.export_key("mac", "hmac-key"), "not exportable")
    t.update_key_configuration("cc", exportable=True)
    t.update_key_configuration("mac", exportable=True)
    r = t.update_key_configuration("mac", exportable=False)  # cannot be turned off
    assert r["warnings"] and r["data"]["exportable"] is True, r
    cc_key = unb64(t.export_key("cc", "encryption-key")["data"]["keys"]["1"])
    blob = vault_blob(cc_ct, 1)
    assert ChaCha20Poly1305(cc_key).decrypt(blob[:12], blob[12:], None) == b"hello transit"
    mac_key = unb64(t.export_key("mac", "hmac-key", version="latest")["data"]["keys"]["1"])
    assert vault_blob(mac, 1) == hmac.new(mac_key, b"sign me", hashlib.sha256).digest()

    # delete: refused until deletion_allowed
    raises(hx.InvalidRequest, lambda: t.delete_key("cc"), "deletion")
    assert "cc" in t.list_keys()["data"]["keys"]
    t.update_key_configuration("cc", deletion_allowed=True)
    t.delete_key("cc")
    assert "cc" not in t.list_keys()["data"]["keys"]
    raises(hx.InvalidPath, lambda: t.read_key("cc"))

    # bad input: a clear 400, nothing created or changed
    before = {n: t.read_key(n)["data"] for n in t.list_keys()["data"]["keys"]}
    for name, body, words in (
        ("newkey", {"type": "aes512-gcm"}, "unknown key type"),
        ("newkey", {"type": "rsa-2048"}, "rsa"),
        ("newkey", {"type": "aes256-gcm96", "convergent_encryption": True}, "convergent"),
        ("newkey", {"type": "ed25519", "auto_rotate_period": "1s"}, "auto rotate period"),
        ("k1", {"type": "aes512-gcm"}, "unknown key type"),  # an existing key: still checked
        ("k1", {"exportable": "maybe"}, "exportable"),
    ):
        resp = raw(n1, "POST", f"/v1/transit/keys/{name}", body, token=h.token)
        assert resp.status == 400, (body, resp)
        assert any(words in e.lower() for e in resp.json()["errors"]), (body, resp.json())
    raises(hx.InvalidPath, lambda: t.read_key("newkey"))
    resp = raw(n1, "POST", "/v1/sys/mounts/t2", {"type": "transit", "options": {"x": "1"}},
               token=h.token)  # fmt: skip
    assert resp.status == 400 and "t2/" not in c.sys.list_mounted_secrets_engines()["data"]
    tampered = vault_blob(ct3, 3)
    tampered = tampered[:-1] + bytes([tampered[-1] ^ 1])
    bad_ct = "vault:v3:" + b64(tampered)
    raises(hx.InvalidRequest, lambda: t.decrypt_data("k1", ciphertext=bad_ct))
    raises(hx.InvalidRequest, lambda: t.decrypt_data("k1", ciphertext="not-a-ciphertext"))
    raises(hx.InvalidRequest, lambda: t.decrypt_data("k1", ciphertext="vault:v9:" + b64(tampered)))
    raises(hx.InvalidRequest, lambda: t.encrypt_data("k1", plaintext="%%% not base64"))
    raises(hx.InvalidRequest, lambda: t.decrypt_data("nokey", ciphertext=ct3))
    raises(hx.InvalidRequest, lambda: t.verify_signed_data("ed", hash_input=msg, signature="junk"))
    raises(
        hx.InvalidRequest, lambda: t.verify_signed_data("mac", hash_input=msg, hmac="vault:v1:!")
    )
    for path in ("backup/k1", "restore/k1", "keys/k1/import", "wrapping_key", "cmac/k1"):
        assert raw(n1, "POST", "/v1/transit/" + path, {}, token=h.token).status == 400, path
    after = {n: t.read_key(n)["data"] for n in t.list_keys()["data"]["keys"]}
    assert after == before

    # a token allowed only transit/encrypt/k1: encrypts, decrypts nothing, creates nothing
    c.sys.create_or_update_policy("encrypt-only", ENCRYPT_ONLY)
    tok = c.auth.token.create(policies=["encrypt-only"], ttl="1h")["auth"]["client_token"]
    limited = clients(n1, tok).secrets.transit
    ct_limited = limited.encrypt_data("k1", plaintext=pt)["data"]["ciphertext"]
    assert t.decrypt_data("k1", ciphertext=ct_limited)["data"]["plaintext"] == pt
    denied(lambda: limited.decrypt_data("k1", ciphertext=ct_limited))
    denied(lambda: limited.encrypt_data("ed", plaintext=pt))
    denied(lambda: limited.read_key("k1"))
    denied(lambda: limited.rotate_key("k1"))
    assert t.read_key("k1")["data"]["latest_version"] == 3

    # the native API: the same engine at /v1/secrets/<path>
    resp = n1.request(
        "POST", "/v1/secrets/transit/encrypt/k1", json.dumps({"plaintext": pt}).encode()
    )
    assert resp.status == 200, resp
    native_ct = resp.json()["data"]["ciphertext"]
    assert native_ct.startswith("vault:v3:"), native_ct
    assert t.decrypt_data("k1", ciphertext=native_ct)["data"]["plaintext"] == pt
    payload = json.dumps({"ciphertext": ct3}).encode()
    resp = n1.request("POST", "/v1/secrets/transit/decrypt/k1", payload, token=tok)
    assert resp.status == 403, resp

    # the audit log holds no plaintext, exported key or token in clear
    time.sleep(0.2)
    text = audit_file.read_text()
    for plain in (pt, dk["plaintext"], b64(cc_key), b64(mac_key), tok, h.token):
        assert plain not in text, plain
    assert "transit/decrypt/k1" in text

    # disable_secrets_engine deletes the keys: a new mount there starts empty
    c.sys.disable_secrets_engine("transit")
    c.sys.enable_secrets_engine("transit")
    raises(hx.InvalidPath, lambda: t.list_keys())
    raises(hx.InvalidRequest, lambda: t.decrypt_data("k1", ciphertext=ct3))


# ---------------------------------------------------------------- PKI
@pytest.mark.timeout(90)
def test_pki(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    n1 = h.bootstrap()
    assert h.token
    c = Clients(request)(n1, h.token)
    p = c.secrets.pki
    root = cluster_root(n1)

    # sys/mounts: enable; roles (create_or_update_role, read_role, list_roles)
    c.sys.enable_secrets_engine("pki")
    assert c.sys.list_mounted_secrets_engines()["data"]["pki/"]["type"] == "pki"
    r = p.create_or_update_role("web", extra_params={
        "allowed_domains": ["example.com"], "allow_subdomains": True, "allow_ip_sans": True,
        "ttl": "1h", "max_ttl": "2h",
    })  # fmt: skip
    assert not r.get("warnings"), r
    role = p.read_role("web")["data"]
    assert role["allowed_domains"] == ["example.com"] and role["allow_subdomains"] is True, role
    assert role["ttl"] == 3600 and role["max_ttl"] == 7200 and role["key_type"] == "ec", role
    p.create_or_update_role("short", extra_params={"allowed_domains": "example.com",
                                                    "allow_subdomains": True})  # fmt: skip
    assert p.list_roles()["data"]["keys"] == ["short", "web"]
    # a certificate that will have expired by the time tidy runs
    expiring = p.generate_certificate("short", "old.example.com", extra_params={"ttl": "1s"})
    expiring_serial = expiring["data"]["serial_number"]

    # issue (generate_certificate): the leaf verifies against the chain, which ends at
    # the cluster root
    t0 = time.time()
    issued = p.generate_certificate("web", "api.example.com", extra_params={
        "alt_names": "www.example.com,a.b.example.com", "ip_sans": "10.0.0.1",
    })  # fmt: skip
    d = issued["data"]
    leaf, inter = cert(d["certificate"]), cert(d["issuing_ca"])
    assert [cert(x) for x in d["ca_chain"]] == [inter, root], d["ca_chain"]
    leaf.verify_directly_issued_by(inter)
    inter.verify_directly_issued_by(root)
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert sans(leaf) == {"api.example.com", "www.example.com", "a.b.example.com", "10.0.0.1"}
    cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "api.example.com"
    assert d["private_key_type"] == "ec"
    key = serialization.load_pem_private_key(d["private_key"].encode(), password=None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key().public_bytes(*spki) == leaf.public_key().public_bytes(*spki)
    assert 3590 <= d["expiration"] - t0 <= 3610, d["expiration"] - t0  # the role's ttl
    serial = d["serial_number"]
    assert serial == leaf.serial_number.to_bytes(20, "big").lstrip(b"\0").hex(":")

    # a TTL above max_ttl: capped, with a warning
    capped = p.generate_certificate("web", "cap.example.com", extra_params={"ttl": "5h"})
    assert any("maxTTL" in w for w in capped["warnings"]), capped
    assert capped["data"]["expiration"] - time.time() <= 7200 + 5

    # sign_certificate with our own CSR
    csr_key = ec.generate_private_key(ec.SECP256R1())
    signed = p.sign_certificate("web", csr_for("svc.example.com", key=csr_key),
                                "svc.example.com")["data"]  # fmt: skip
    signed_leaf = cert(signed["certificate"])
    assert "private_key" not in signed, signed
    assert signed_leaf.public_key().public_bytes(*spki) == csr_key.public_key().public_bytes(*spki)
    signed_leaf.verify_directly_issued_by(inter)
    assert sans(signed_leaf) == {"svc.example.com"}

    # issue in other formats: der (base64 DER), a PKCS#8 key
    der = p.generate_certificate("web", "der.example.com", extra_params={
        "format": "der", "private_key_format": "pkcs8"})["data"]  # fmt: skip
    x509.load_der_x509_certificate(unb64(der["certificate"])).verify_directly_issued_by(inter)
    assert x509.load_der_x509_certificate(unb64(der["issuing_ca"])) == inter
    serialization.load_der_private_key(unb64(der["private_key"]), password=None)

    # PATCH roles/<name> (hvac has no method): merged into the stored role
    resp = raw(n1, "PATCH", "/v1/pki/roles/web", {"allow_bare_domains": True}, token=h.token)
    assert resp.status == 200, resp
    role = p.read_role("web")["data"]
    assert role["allow_bare_domains"] is True and role["max_ttl"] == 7200, role
    raw(n1, "PATCH", "/v1/pki/roles/web", {"allow_bare_domains": False}, token=h.token)

    # read_certificate, list_certificates; cert/<serial>/raw and raw/pem
    got = p.read_certificate(serial)["data"]
    assert cert(got["certificate"]) == leaf and got["revocation_time"] == 0, got
    listed = certs(p)
    resp = raw(n1, "GET", f"/v1/pki/cert/{serial}/raw", token=h.token)
    assert resp.headers["content-type"] == "application/pkix-cert", resp
    assert x509.load_der_x509_certificate(resp.body) == leaf
    resp = raw(n1, "GET", f"/v1/pki/cert/{serial.replace(':', '-')}/raw/pem", token=h.token)
    assert x509.load_pem_x509_certificate(resp.body) == leaf, resp
    assert {serial, signed["serial_number"], capped["data"]["serial_number"]} <= set(listed)

    # names outside the role, bad CSRs, an unknown role: 400 and nothing stored
    before, role_before = certs(p), p.read_role("web")["data"]
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: p.generate_certificate("web", "api.other.com"), "api.other.com"),
        (lambda: p.generate_certificate("web", "example.com"), "example.com"),  # not bare
        (lambda: p.generate_certificate("web", "x.example.com",
                                        extra_params={"alt_names": "evil.org"}), "evil.org"),
        (lambda: p.generate_certificate("nope", "x.example.com"), "unknown role"),
        (lambda: p.generate_certificate("web", "x.example.com",
                                        extra_params={"alt_names": "not a name!"}), "neither"),
        (lambda: p.generate_certificate("web", "x.example.com",
                                        extra_params={"uri_sans": "spiffe://x/y"}), "uri_sans"),
        (lambda: p.create_or_update_role("web", extra_params={"key_type": "dsa"}), "key_type"),
        (lambda: p.create_or_update_role("web", extra_params={"ttl": "soon"}), "ttl"),
        (lambda: p.sign_certificate("web", "not a csr", "x.example.com"), "csr"),
        (lambda: p.sign_certificate("web", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                    "-----END CERTIFICATE REQUEST-----", "x.example.com"),
         "could not be parsed"),
        (lambda: p.sign_certificate("web", csr_for("evil.org"), "evil.org"), "evil.org"),
        (lambda: p.sign_certificate("web", csr_for("ok.example.com", "evil.org"),
                                    "ok.example.com"), "evil.org"),
        (lambda: p.generate_certificate("web", "x.example.com",
                                        extra_params={"ttl": "soon"}), "ttl"),
    ]  # fmt: skip
    for fn, words in cases:
        raises(hx.InvalidRequest, fn, words)
    no_ip = {"allowed_domains": "example.com", "allow_subdomains": True, "allow_ip_sans": False}
    p.create_or_update_role("noip", extra_params=no_ip)
    raises(hx.InvalidRequest, lambda: p.generate_certificate(
        "noip", "x.example.com", extra_params={"ip_sans": "10.0.0.2"}), "IP")  # fmt: skip
    assert certs(p) == before
    assert p.read_role("web")["data"] == role_before
    # Vault's root, intermediate, issuer and config paths: there is nothing to configure
    for method, path in (
        ("POST", "root/generate/internal"), ("POST", "intermediate/generate/internal"),
        ("POST", "config/ca"), ("POST", "sign-verbatim"), ("GET", "config/crl"),
        ("GET", "issuers"), ("LIST", "issuers"),
    ):  # fmt: skip
        status = raw(n1, method, f"/v1/pki/{path}", {} if method == "POST" else None,
                     token=h.token).status  # fmt: skip
        assert status == (405 if method != "GET" else 404), (method, path, status)
    assert cert(p.read_ca_certificate()) == inter

    # revoke, then the CRL (signed by the intermediate) lists the serial
    rev = p.revoke_certificate(serial)["data"]
    assert rev["revocation_time"] >= int(t0) and rev["revocation_time_rfc3339"].endswith("Z"), rev
    assert p.read_certificate(serial)["data"]["revocation_time"] == rev["revocation_time"]
    crl = x509.load_pem_x509_crl(p.read_crl().encode())
    inter_key = inter.public_key()
    assert isinstance(inter_key, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(inter_key)
    assert crl.issuer == inter.subject
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(signed_leaf.serial_number) is None
    resp = raw(n1, "GET", "/v1/pki/crl", token=h.token)  # DER
    assert resp.status == 200 and resp.headers["content-type"] == "application/pkix-crl", resp
    assert x509.load_der_x509_crl(resp.body) == crl
    revoked_list = raw(n1, "LIST", "/v1/pki/certs/revoked", token=h.token).json()["data"]["keys"]
    assert revoked_list == [serial], revoked_list
    # revoked again, unknown, expired: 400, nothing changed
    raises(hx.InvalidRequest, lambda: p.revoke_certificate(serial), "already revoked")
    raises(hx.InvalidRequest, lambda: p.revoke_certificate("01:02:03"), "not found")
    raises(hx.InvalidRequest, lambda: p.revoke_certificate("zz:top"))
    assert x509.load_pem_x509_crl(p.read_crl().encode()) == crl

    # no_store: issued, valid, never listed or readable; revoked by giving the certificate
    p.create_or_update_role("ephemeral", extra_params={"allowed_domains": "example.com",
                                                        "allow_subdomains": True,
                                                        "no_store": True})  # fmt: skip
    assert p.list_roles()["data"]["keys"] == ["ephemeral", "noip", "short", "web"]
    before = certs(p)
    eph = p.generate_certificate("ephemeral", "tmp.example.com")["data"]
    eph_leaf = cert(eph["certificate"])
    eph_leaf.verify_directly_issued_by(inter)
    assert eph["serial_number"] not in certs(p) and certs(p) == before
    raises(hx.InvalidPath, lambda: p.read_certificate(eph["serial_number"]))
    resp = raw(n1, "POST", "/v1/pki/revoke", {"certificate": eph["certificate"]}, token=h.token)
    assert resp.status == 200, resp
    crl = x509.load_pem_x509_crl(p.read_crl().encode())
    assert crl.get_revoked_certificate_by_serial_number(eph_leaf.serial_number) is not None
    resp = raw(n1, "POST", "/v1/pki/revoke", {"certificate": inter.public_bytes(
        serialization.Encoding.PEM).decode()}, token=h.token)  # fmt: skip
    assert resp.status == 400, resp  # not a certificate this mount issued

    # rotate_crl: a new CRL number, the same entries
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert p.rotate_crl()["data"] == {"success": True}
    rotated = x509.load_pem_x509_crl(p.read_crl().encode())
    assert rotated.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > number
    assert {e.serial_number for e in rotated} == {e.serial_number for e in crl}

    # the CA (read_ca_certificate, read_ca_certificate_chain, the DER `ca`; cert/ca,
    # cert/ca_chain and cert/crl as JSON)
    as_json = c.adapter.get("/v1/pki/cert/ca")["data"]
    assert cert(as_json["certificate"]) == inter, as_json
    as_json = c.adapter.get("/v1/pki/cert/ca_chain")["data"]
    assert x509.load_pem_x509_certificates(as_json["ca_chain"].encode()) == [inter, root]
    as_json = c.adapter.get("/v1/pki/cert/crl")["data"]
    assert x509.load_pem_x509_crl(as_json["certificate"].encode()) == rotated
    assert cert(p.read_ca_certificate()) == inter
    chain_pem = p.read_ca_certificate_chain().encode()
    assert x509.load_pem_x509_certificates(chain_pem) == [inter, root]
    resp = raw(n1, "GET", "/v1/pki/ca", token=h.token)
    assert resp.status == 200 and x509.load_der_x509_certificate(resp.body) == inter

    # the native API: the same engine at /v1/secrets/<path>
    resp = n1.request("GET", "/v1/secrets/pki/ca/pem")
    assert resp.status == 200 and x509.load_pem_x509_certificate(resp.body) == inter, resp

    # tidy: drops the expired certificate (the 1 s one), keeps the others
    assert expiring_serial in certs(p)
    time.sleep(max(0.0, t0 + 2.5 - time.time()))
    raises(hx.InvalidRequest, lambda: p.revoke_certificate(expiring_serial), "expired")
    r = p.tidy(extra_params={"tidy_cert_store": True, "tidy_revoked_certs": True,
                             "safety_buffer": "1s"})  # fmt: skip
    assert r.status_code == 202, r
    assert r.json()["data"]["cert_store_deleted"] == 1, r.json()
    left = certs(p)
    assert expiring_serial not in left and serial in left, left

    # a cluster root rotation: the next issue makes a new intermediate under the new
    # root; what the old one signed stays readable and still chains to the old root
    assert n1.request("POST", "/v1/operator/ca/rotate").status == 200
    new_root = cluster_root(n1)
    assert new_root != root
    after = p.generate_certificate("web", "after.example.com")["data"]
    inter2 = cert(after["issuing_ca"])
    assert inter2 != inter and cert(p.read_ca_certificate()) == inter2
    inter2.verify_directly_issued_by(new_root)
    cert(after["certificate"]).verify_directly_issued_by(inter2)
    assert [cert(x) for x in after["ca_chain"]][:2] == [inter2, new_root], after["ca_chain"]
    old_leaf = cert(p.read_certificate(signed["serial_number"])["data"]["certificate"])
    old_leaf.verify_directly_issued_by(inter)

    # a token allowed only pki/issue/web: issues there, and nothing else
    c.sys.create_or_update_policy("issue-web", 'path "pki/issue/web" { capabilities = ["update"] }')
    tok = c.auth.token.create(policies=["issue-web"], ttl="1h")["auth"]["client_token"]
    limited = Clients(request)(n1, tok).secrets.pki
    mine = limited.generate_certificate("web", "mine.example.com")["data"]
    denied(lambda: limited.revoke_certificate(mine["serial_number"]))
    denied(lambda: limited.generate_certificate("short", "x.example.com"))
    denied(lambda: limited.create_or_update_role("web", extra_params={"allow_any_name": True}))
    assert p.read_role("web")["data"]["allow_any_name"] is False
    # The CA, its chain and the CRL need no token (as in Vault); writes still do.
    anon_ca = raw(n1, "GET", "/v1/pki/ca/pem", token="")
    assert anon_ca.status == 200 and anon_ca.body.startswith(b"-----BEGIN CERTIFICATE"), anon_ca
    assert raw(n1, "GET", "/v1/pki/crl/pem", token="").status == 200
    assert raw(n1, "GET", "/v1/pki/roles/web", token="").status == 403

    # delete_role
    p.delete_role("noip")
    assert "noip" not in p.list_roles()["data"]["keys"]
    raises(hx.InvalidRequest, lambda: p.generate_certificate("noip", "x.example.com"))

    # disable_secrets_engine deletes the issuer, roles and certificates
    c.sys.disable_secrets_engine("pki")
    c.sys.enable_secrets_engine("pki")
    raises(hx.InvalidPath, lambda: p.list_roles())
    assert certs(p) == []
    fresh = cert(p.read_ca_certificate())
    assert fresh not in (inter, inter2)
    fresh.verify_directly_issued_by(new_root)


# ---------------------------------------------------------------- a cluster
@pytest.mark.timeout(120)
def test_transit_keys_and_certificates_survive_a_leader_kill(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    nodes = h.three_nodes()
    assert h.token
    clients = Clients(request)
    leader = wait_leader(nodes)
    follower = next(n for n in nodes if n is not leader)
    fc = clients(follower, h.token)

    # through a follower's Vault port: mounts, a key, a ciphertext, a role
    fc.sys.enable_secrets_engine("transit")
    fc.sys.enable_secrets_engine("pki")
    fc.secrets.transit.create_key("app")
    fc.secrets.transit.create_key("signer", key_type="ed25519")
    pt = b64("replicated secret")
    ct = fc.secrets.transit.encrypt_data("app", plaintext=pt)["data"]["ciphertext"]
    sig = fc.secrets.transit.sign_data("signer", hash_input=pt)["data"]["signature"]
    svc_role = {"allowed_domains": "svc.local", "allow_subdomains": True}
    fc.secrets.pki.create_or_update_role("svc", extra_params=svc_role)
    # the first issues on the fresh mount, through all three nodes at once, race to
    # make its issuer: one intermediate comes out of the race
    pkis = [clients(n, h.token).secrets.pki for n in nodes for _ in range(2)]
    with ThreadPoolExecutor(len(pkis)) as pool:
        racing = list(pool.map(
            lambda ip: ip[1].generate_certificate("svc", f"r{ip[0]}.svc.local")["data"],
            enumerate(pkis),
        ))  # fmt: skip
    assert len({cert(d["issuing_ca"]) for d in racing}) == 1, "more than one issuer was made"
    issued = fc.secrets.pki.generate_certificate("svc", "a.svc.local")["data"]
    serial = issued["serial_number"]
    inter = cert(issued["issuing_ca"])
    assert inter == cert(racing[0]["issuing_ca"])
    assert {d["serial_number"] for d in racing} <= set(certs(fc.secrets.pki))

    leader.kill()
    survivors = [n for n in nodes if n is not leader]
    wait_leader(survivors)
    for n in survivors:
        sc = clients(n, h.token)
        assert sc.secrets.transit.decrypt_data("app", ciphertext=ct)["data"]["plaintext"] == pt
        valid = sc.secrets.transit.verify_signed_data("signer", hash_input=pt, signature=sig)
        assert valid["data"]["valid"] is True
        got = sc.secrets.pki.read_certificate(serial)["data"]
        assert got["certificate"].strip() == issued["certificate"].strip()
        assert cert(sc.secrets.pki.read_ca_certificate()) == inter
        # the issuer's key is replicated too: a survivor signs under the same intermediate
        more = sc.secrets.pki.generate_certificate("svc", f"{n.name}.svc.local")["data"]
        cert(more["certificate"]).verify_directly_issued_by(inter)
        assert more["serial_number"] in certs(sc.secrets.pki)
    # a rotation through a survivor; the old ciphertext still opens, rewrapped to v2
    sc = clients(survivors[0], h.token)
    sc.secrets.transit.rotate_key("app")
    rewrapped = clients(survivors[1], h.token).secrets.transit.rewrap_data("app", ciphertext=ct)
    assert rewrapped["data"]["ciphertext"].startswith("vault:v2:")
