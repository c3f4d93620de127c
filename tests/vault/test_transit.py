"""Transit's pure crypto (stack/vault/transit.py): Vault's formats checked against
`cryptography` directly, versions and minimum versions, tampering, sign/verify per
key type, HMAC, hash vectors, data keys, export rules, derivation, and the pure batch
helpers of the backend."""

from __future__ import annotations

import base64
import hashlib
import hmac as hmac_mod
import json
import random
import re
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from stack.vault import transit as tr
from stack.vault import transit_requests as rq
from stack.vault.logical import LogicalError
from stack.vault.transit import TransitError
from stack.vault.transit_keys import CURVES

SYMMETRIC = ("aes128-gcm96", "aes256-gcm96", "chacha20-poly1305")
ECDSA = ("ecdsa-p256", "ecdsa-p384", "ecdsa-p521")
CT_RE = re.compile(r"vault:v(\d+):([A-Za-z0-9+/]+={0,2})")


def _rand(seed: int = 1) -> Any:
    return random.Random(seed).randbytes


def _key(key_type: str = "aes256-gcm96", name: str = "k", **kw: Any) -> tr.TransitKey:
    kw.setdefault("now", 1_700_000_000.0)
    kw.setdefault("rand", _rand())
    return tr.create_key(name, key_type, **kw)


def _rotated(key: tr.TransitKey, times: int = 1) -> tr.TransitKey:
    for n in range(times):
        key = tr.rotate(key, now=1_700_000_100.0 + n, rand=_rand(100 + n))
    return key


def _payload(value: str) -> tuple[int, bytes]:
    match = CT_RE.fullmatch(value)
    assert match, value
    return int(match.group(1)), base64.b64decode(match.group(2))


# -- encrypt and decrypt: Vault's exact format


@pytest.mark.parametrize("key_type", SYMMETRIC)
def test_ciphertext_is_vault_format_and_opens_with_the_raw_aead(key_type: str) -> None:
    key = _key(key_type)
    ct = tr.encrypt(key, b"attack at dawn", associated_data=b"ad", rand=lambda n: b"\x07" * n)
    version, raw = _payload(ct)
    assert version == 1
    assert raw[:12] == b"\x07" * 12  # the 96-bit nonce comes first
    assert len(raw) == 12 + len(b"attack at dawn") + 16
    aead = ChaCha20Poly1305 if key_type == "chacha20-poly1305" else AESGCM
    material = key.versions[1].key
    assert len(material) == (16 if key_type == "aes128-gcm96" else 32)
    assert aead(material).decrypt(raw[:12], raw[12:], b"ad") == b"attack at dawn"
    assert tr.decrypt(key, ct, associated_data=b"ad") == b"attack at dawn"


@pytest.mark.parametrize("key_type", SYMMETRIC)
def test_round_trip_empty_and_binary(key_type: str) -> None:
    key = _key(key_type)
    for plaintext in (b"", bytes(range(256)) * 4):
        assert tr.decrypt(key, tr.encrypt(key, plaintext)) == plaintext


def test_a_ciphertext_made_outside_opens() -> None:
    """A ciphertext built by hand in Vault's layout (what Vault itself would send)."""
    key = _key()
    nonce = bytes(range(12))
    body = AESGCM(key.versions[1].key).encrypt(nonce, b"from vault", None)
    ct = "vault:v1:" + base64.b64encode(nonce + body).decode()
    assert tr.decrypt(key, ct) == b"from vault"
    assert tr.decrypt(key, ct.replace("vault:v1:", "vault:v0:")) == b"from vault"  # v0 is v1


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda c: c.replace("vault:v1:", "vault:x1:"), "invalid ciphertext: no prefix"),
        (lambda c: "vault:v1", "invalid ciphertext: wrong number of fields"),
        (lambda c: c.replace("vault:v1:", "vault:vone:"), "version number could not be decoded"),
        (lambda c: c.replace("vault:v1:", "vault:v9:"), "invalid ciphertext: version is too new"),
        (lambda c: c + "!", "invalid ciphertext: could not decode base64"),
        (lambda c: "vault:v1:" + base64.b64encode(b"short").decode(), "invalid ciphertext length"),
        (lambda c: c[:12] + ("A" if c[12] != "A" else "B") + c[13:], "authentication failed"),
        (lambda c: c[:-4] + base64.b64encode(b"zzz").decode(), "message authentication failed"),
    ],
)  # fmt: skip
def test_tampered_ciphertexts_are_refused(mangle: Any, message: str) -> None:
    key = _key()
    ct = tr.encrypt(key, b"secret value")
    with pytest.raises(TransitError, match=re.escape(message)):
        tr.decrypt(key, mangle(ct))


def test_wrong_key_and_wrong_associated_data_fail() -> None:
    key, other = _key(), _key(rand=_rand(2))
    ct = tr.encrypt(key, b"x", associated_data=b"tenant-1")
    with pytest.raises(TransitError, match="message authentication failed"):
        tr.decrypt(other, ct, associated_data=b"tenant-1")
    with pytest.raises(TransitError, match="message authentication failed"):
        tr.decrypt(key, ct, associated_data=b"tenant-2")
    with pytest.raises(TransitError, match="message authentication failed"):
        tr.decrypt(key, ct)


def test_nonce_and_non_encryption_keys_are_refused() -> None:
    with pytest.raises(TransitError, match="provided nonce not allowed for this key"):
        tr.encrypt(_key(), b"x", nonce=b"\x00" * 12)
    signing = _key("ed25519")
    with pytest.raises(TransitError, match="message encryption not supported for key type ed25519"):
        tr.encrypt(signing, b"x")
    with pytest.raises(TransitError, match="message decryption not supported for key type ed25519"):
        tr.decrypt(signing, "vault:v1:AAAA")


# -- versions, rotation, minimum versions, rewrap, trim


def test_rotation_and_explicit_versions() -> None:
    key = _key()
    old = tr.encrypt(key, b"v1 data")
    key = _rotated(key)
    assert key.latest_version == 2 and key.versions[2].key != key.versions[1].key
    assert tr.encrypt(key, b"x").startswith("vault:v2:")
    assert tr.encrypt(key, b"x", version=1).startswith("vault:v1:")
    assert tr.decrypt(key, old) == b"v1 data"
    with pytest.raises(TransitError, match="higher than the latest key version"):
        tr.encrypt(key, b"x", version=3)
    with pytest.raises(TransitError, match="requested version for encryption is negative"):
        tr.encrypt(key, b"x", version=-1)


def test_min_encryption_and_decryption_versions() -> None:
    key = _rotated(_key(), 2)
    v1 = tr.encrypt(key, b"one", version=1)
    key, warnings = tr.configure(key, min_decryption_version=2, min_encryption_version=3)
    assert warnings == []
    with pytest.raises(TransitError, match=re.escape(tr.ERR_TOO_OLD)):
        tr.decrypt(key, v1)
    with pytest.raises(TransitError, match="less than the minimum encryption key version"):
        tr.encrypt(key, b"x", version=2)
    assert tr.encrypt(key, b"x").startswith("vault:v3:")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_decryption_version": 5},
         "cannot set min decryption version of 5, latest key version is 3"),
        ({"min_encryption_version": 4},
         "cannot set min encryption version of 4, latest key version is 3"),
        ({"min_decryption_version": 3, "min_encryption_version": 2},
         "must be greater than or equal to min decryption version of 3"),
        ({"min_encryption_version": -1}, "min encryption version cannot be negative"),
        ({"auto_rotate_period": 60.0}, "must be 0 to disable or at least an hour"),
        ({"colour": "red"}, "unknown key configuration fields: colour"),
    ],
)  # fmt: skip
def test_configure_refusals(changes: dict[str, Any], message: str) -> None:
    key = _rotated(_key(), 2)
    with pytest.raises(TransitError, match=re.escape(message)):
        tr.configure(key, **changes)


def test_configure_warnings_and_one_way_flags() -> None:
    key = _key()
    key, warnings = tr.configure(key, min_decryption_version=0, exportable=True)
    assert key.min_decryption_version == 1 and key.exportable
    assert "forcing minimum to 1" in warnings[0]
    key, warnings = tr.configure(key, exportable=False, auto_rotate_period=7200.0)
    assert key.exportable and key.auto_rotate_period == 7200.0
    assert warnings == ["exportable cannot be disabled once enabled; it stays true"]


def test_rewrap_moves_to_the_latest_version() -> None:
    key = _key("chacha20-poly1305")
    old = tr.encrypt(key, b"keep me", associated_data=b"ad")
    key = _rotated(key)
    new = tr.rewrap(key, old, associated_data=b"ad")
    assert new.startswith("vault:v2:") and old.startswith("vault:v1:")
    assert tr.decrypt(key, new, associated_data=b"ad") == b"keep me"
    assert tr.rewrap(key, old, version=1, associated_data=b"ad").startswith("vault:v1:")
    with pytest.raises(TransitError, match="message authentication failed"):
        tr.rewrap(key, old)


def test_trim_forgets_old_versions() -> None:
    key = _rotated(_key(), 3)
    with pytest.raises(TransitError, match="minimum encryption version is not set"):
        tr.trim(key, 2)
    key, _ = tr.configure(key, min_decryption_version=3, min_encryption_version=4)
    with pytest.raises(TransitError, match="greater than minimum decryption version"):
        tr.trim(key, 4)
    trimmed = tr.trim(key, 3)
    assert sorted(trimmed.versions) == [3, 4] and trimmed.min_available_version == 3
    with pytest.raises(TransitError, match="no such key version"):
        trimmed.version(2)
    with pytest.raises(TransitError, match="cannot be decremented"):
        tr.trim(trimmed, 2)


# -- sign and verify


def test_ed25519_signature_verifies_with_cryptography() -> None:
    key = _key("ed25519")
    signature = tr.sign(key, b"message")
    version, raw = _payload(signature)
    assert version == 1 and len(raw) == 64
    public = ed25519.Ed25519PublicKey.from_public_bytes(
        base64.b64decode(tr.export(key, "public-key")["1"])
    )
    public.verify(raw, b"message")  # raises if wrong: ed25519 signs the raw input
    assert tr.sign(key, b"message") == signature  # deterministic
    assert tr.verify(key, b"message", signature)
    assert not tr.verify(key, b"massage", signature)
    forged = "vault:v1:" + base64.b64encode(bytes(64)).decode()
    assert not tr.verify(key, b"message", forged)


@pytest.mark.parametrize("key_type", ECDSA)
@pytest.mark.parametrize("algorithm", ["sha2-256", "sha2-384", "sha3-256", "sha2-512"])
def test_ecdsa_signature_is_der_over_the_digest(key_type: str, algorithm: str) -> None:
    key = _key(key_type)
    signature = tr.sign(key, b"payload", hash_algorithm=algorithm)
    _, der = _payload(signature)
    pem = tr.key_info(key)["keys"]["1"]["public_key"]
    public = serialization.load_pem_public_key(pem.encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    chosen = {"sha2-256": hashes.SHA256(), "sha2-384": hashes.SHA384(),
              "sha3-256": hashes.SHA3_256(), "sha2-512": hashes.SHA512()}[algorithm]  # fmt: skip
    public.verify(der, b"payload", ec.ECDSA(chosen))
    assert tr.verify(key, b"payload", signature, hash_algorithm=algorithm)
    other = "sha2-384" if algorithm != "sha2-384" else "sha2-256"
    assert not tr.verify(key, b"payload", signature, hash_algorithm=other)


def test_ecdsa_jws_marshaling_and_prehashed() -> None:
    key = _key("ecdsa-p256")
    jws = tr.sign(key, b"data", marshaling_algorithm="jws")
    payload = jws.removeprefix("vault:v1:")
    assert "=" not in payload and "+" not in payload and "/" not in payload
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public = ec.derive_private_key(int.from_bytes(key.versions[1].key, "big"), ec.SECP256R1())
    public.public_key().verify(der, b"data", ec.ECDSA(hashes.SHA256()))
    assert tr.verify(key, b"data", jws, marshaling_algorithm="jws")
    with pytest.raises(TransitError, match="invalid base64 signature value"):
        tr.verify(key, b"data", jws)  # parsed as asn1 base64: "-" and "_" are not allowed
    digest = hashlib.sha256(b"data").digest()
    prehashed = tr.sign(key, digest, prehashed=True)
    assert tr.verify(key, b"data", prehashed)  # the same digest either way
    with pytest.raises(TransitError, match="prehashed input must be a digest"):
        tr.sign(key, b"not a digest", prehashed=True)


def test_signature_refusals() -> None:
    key = _key("ecdsa-p256")
    signature = tr.sign(key, b"x")
    cases: list[tuple[Any, str]] = [
        (lambda: tr.sign(_key(), b"x"), "key type aes256-gcm96 does not support signing"),
        (lambda: tr.verify(_key(), b"x", signature), "does not support verification"),
        (lambda: tr.sign(key, b"x", hash_algorithm="md5"), 'invalid hash algorithm "md5"'),
        (lambda: tr.sign(key, b"x", marshaling_algorithm="pem"), 'invalid marshaling type "pem"'),
        (lambda: tr.sign(key, b"x", signature_algorithm="pss"), "rsa keys"),
        (lambda: tr.sign(_key("ed25519"), b"x", prehashed=True), "not supported for ed25519"),
        (lambda: tr.sign(key, b"x", context=b"c"), "is not derived"),
        (lambda: tr.verify(key, b"x", "vault:v2:" + signature[9:]), "version is too new"),
        (lambda: tr.verify(key, b"x", "vault:v1:" + base64.b64encode(b"junk").decode()),
         "supplied signature is invalid"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(TransitError, match=re.escape(message)):
            call()


def test_signing_versions_follow_min_versions() -> None:
    key = _rotated(_key("ed25519"))
    old = tr.sign(key, b"m", version=1)
    assert old.startswith("vault:v1:") and tr.sign(key, b"m").startswith("vault:v2:")
    key, _ = tr.configure(key, min_decryption_version=2, min_encryption_version=2)
    with pytest.raises(TransitError, match="less than the minimum encryption key version"):
        tr.sign(key, b"m", version=1)
    with pytest.raises(TransitError, match=re.escape(tr.ERR_TOO_OLD)):
        tr.verify(key, b"m", old)


# -- HMAC


def test_hmac_uses_the_hmac_key_and_vault_format() -> None:
    key = _key("hmac")
    assert len(key.versions[1].key) == 32 and key.key_size == 32
    mac = tr.hmac(key, b"data")
    expected = hmac_mod.new(key.versions[1].key, b"data", hashlib.sha256).digest()
    assert mac == "vault:v1:" + base64.b64encode(expected).decode()
    assert tr.verify_hmac(key, b"data", mac) and not tr.verify_hmac(key, b"date", mac)
    aes = _key()
    mac = tr.hmac(aes, b"data", algorithm="sha3-256")
    separate = hmac_mod.new(aes.versions[1].hmac_key, b"data", hashlib.sha3_256).digest()
    assert mac == "vault:v1:" + base64.b64encode(separate).decode()
    assert aes.versions[1].hmac_key != aes.versions[1].key  # never the encryption key


def test_hmac_versions_and_refusals() -> None:
    key = _rotated(_key("hmac", key_size=64))
    assert len(key.versions[2].key) == 64
    v1 = tr.hmac(key, b"d", version=1, algorithm="sha2-512")
    assert tr.verify_hmac(key, b"d", v1, algorithm="sha2-512")
    assert not tr.verify_hmac(key, b"d", v1)  # sha2-256 gives another MAC
    key, _ = tr.configure(key, min_decryption_version=2, min_encryption_version=2)
    cases: list[tuple[Any, str]] = [
        (lambda: tr.hmac(key, b"d", version=1), "cannot generate HMAC: version is too old"),
        (lambda: tr.verify_hmac(key, b"d", v1, algorithm="sha2-512"), "cannot verify HMAC"),
        (lambda: tr.hmac(key, b"d", algorithm="md5"), "unsupported algorithm md5"),
        (lambda: tr.hmac(key, b"d", version=3), "does not exist; latest key version is 2"),
        (lambda: tr.verify_hmac(key, b"d", "hmac:v1:x"), "invalid HMAC to verify: no prefix"),
        (lambda: tr.verify_hmac(key, b"d", "vault:v3:AAAA"), "invalid HMAC: version is too new"),
        (lambda: tr.verify_hmac(key, b"d", "vault:v2:***"), "unable to decode verification HMAC"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(TransitError, match=re.escape(message)):
            call()


# -- hash and random


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [
        ("sha2-224", "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"),
        ("sha2-256", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("sha2-384", "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
                     "8086072ba1e7cc2358baeca134c825a7"),
        ("sha2-512", "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                     "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"),
        ("sha3-256", "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"),
        ("sha3-512", "b751850b1a57168a5693cd924b6b096e08f621827444f70d884f5d0240d2712e"
                     "10e116e9192af3c91a7ec57647e3934057340b4cf408d5a56592f8274eec53f0"),
    ],
)  # fmt: skip
def test_hash_vectors_of_abc(algorithm: str, digest: str) -> None:
    assert tr.hash_data(b"abc", algorithm) == digest
    assert (
        tr.hash_data(b"abc", algorithm, "base64")
        == base64.b64encode(bytes.fromhex(digest)).decode()
    )


def test_hash_and_random_refusals() -> None:
    with pytest.raises(TransitError, match="unsupported algorithm md5"):
        tr.hash_data(b"abc", "md5")
    with pytest.raises(TransitError, match='unsupported encoding format "raw"'):
        tr.hash_data(b"abc", output_format="raw")
    with pytest.raises(TransitError, match="cannot be less than 1"):
        tr.random_bytes(0)
    with pytest.raises(TransitError, match="should be less than"):
        tr.random_bytes(tr.MAX_RANDOM_BYTES + 1)


def test_random_bytes_formats() -> None:
    assert tr.random_bytes(4, "hex", rand=lambda n: b"\xab" * n) == "abababab"
    assert base64.b64decode(tr.random_bytes(48)) != base64.b64decode(tr.random_bytes(48))
    assert len(base64.b64decode(tr.random_bytes(48))) == 48


# -- data keys


@pytest.mark.parametrize("bits", [128, 256, 512])
def test_datakey_plaintext_and_wrapped(bits: int) -> None:
    key = _key()
    made = tr.datakey(key, "plaintext", bits=bits)
    assert made.plaintext is not None and len(made.plaintext) == bits // 8
    assert made.key_version == 1 and tr.decrypt(key, made.ciphertext) == made.plaintext
    wrapped = tr.datakey(key, "wrapped", bits=bits)
    assert wrapped.plaintext is None and len(tr.decrypt(key, wrapped.ciphertext)) == bits // 8


def test_datakey_refusals() -> None:
    with pytest.raises(TransitError, match="invalid bits length"):
        tr.datakey(_key(), bits=384)
    with pytest.raises(TransitError, match="must be 'plaintext' or 'wrapped'"):
        tr.datakey(_key(), "both")
    with pytest.raises(TransitError, match="message encryption not supported"):
        tr.datakey(_key("ed25519"))


# -- export and the key read


def test_export_needs_exportable_except_public_keys() -> None:
    key = _key("ecdsa-p256")
    with pytest.raises(TransitError, match="private key material is not exportable"):
        tr.export(key, "signing-key")
    public = tr.export(key, "public-key")["1"]
    assert public == tr.key_info(key)["keys"]["1"]["public_key"].strip()
    with pytest.raises(TransitError, match="public-key export is not supported for key type"):
        tr.export(_key(), "public-key")
    with pytest.raises(TransitError, match="invalid export type: secret-key"):
        tr.export(key, "secret-key")


def test_export_material_of_an_exportable_key() -> None:
    aes = _key(exportable=True)
    assert tr.export(aes, "encryption-key") == {"1": base64.b64encode(aes.versions[1].key).decode()}
    hmac_key = base64.b64encode(aes.versions[1].hmac_key).decode()
    assert tr.export(aes, "hmac-key", "latest") == {"1": hmac_key}
    with pytest.raises(TransitError, match="signing not supported for the key"):
        tr.export(aes, "signing-key")
    ec_key = _key("ecdsa-p384", exportable=True)
    pem = tr.export(ec_key, "signing-key", "v1")["1"]
    assert pem.startswith("-----BEGIN EC PRIVATE KEY-----")
    private = serialization.load_pem_private_key(pem.encode(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.private_numbers().private_value == int.from_bytes(ec_key.versions[1].key, "big")
    ed = _key("ed25519", exportable=True)
    raw = base64.b64decode(tr.export(ed, "signing-key", 1)["1"])
    assert len(raw) == 64  # Vault's form: seed, then public key
    signer = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
    assert signer.public_key().public_bytes_raw() == raw[32:]


def test_export_versions() -> None:
    key = _rotated(_key(exportable=True), 2)
    assert sorted(tr.export(key, "encryption-key")) == ["1", "2", "3"]
    key, _ = tr.configure(key, min_decryption_version=2)
    assert sorted(tr.export(key, "encryption-key")) == ["2", "3"]
    assert list(tr.export(key, "encryption-key", "latest")) == ["3"]
    with pytest.raises(TransitError, match="below minimum decryption version"):
        tr.export(key, "encryption-key", 1)
    with pytest.raises(TransitError, match="version does not exist or cannot be found"):
        tr.export(key, "encryption-key", 7)
    with pytest.raises(TransitError, match="invalid key version"):
        tr.export(key, "encryption-key", "newest")


def test_key_info_is_vault_shaped_and_holds_no_private_material() -> None:
    for key_type in (*SYMMETRIC, *ECDSA, "ed25519", "hmac"):
        key = _rotated(_key(key_type, exportable=True))
        info = tr.key_info(key)
        text = json.dumps(info)
        for version in key.versions.values():
            for secret in (version.key[:32], version.hmac_key):
                assert base64.b64encode(secret).decode()[:16] not in text
                assert secret.hex()[:16] not in text
        assert info["type"] == key_type and info["latest_version"] == 2
        assert info["supports_encryption"] == (key_type in SYMMETRIC)
        assert info["supports_signing"] == (key_type in (*ECDSA, "ed25519"))
    info = tr.key_info(_rotated(_key()))
    assert info["keys"] == {"1": 1_700_000_000, "2": 1_700_000_100}
    assert tr.key_info(_key("ecdsa-p521"))["keys"]["1"]["name"] == "P-521"
    assert "keys" not in tr.key_info(_key("hmac"))  # Vault lists no versions for hmac keys
    assert tr.key_info(_key("hmac"))["key_size"] == 32


# -- key creation and material


@pytest.mark.parametrize(
    ("key_type", "kwargs", "message"),
    [
        ("foo", {}, "unknown key type foo"),
        ("rsa-2048", {}, "key type rsa-2048 is not supported by stack's transit engine"),
        ("aes256-gcm96", {"convergent_encryption": True}, "requires derivation to be enabled"),
        ("ecdsa-p256", {"derived": True}, "not supported for keys of type ecdsa-p256"),
        ("aes256-gcm96", {"key_size": 64}, "key_size is not valid for algorithm aes256-gcm96"),
        ("hmac", {"key_size": 16}, "invalid key_size 16"),
        ("aes256-gcm96", {"auto_rotate_period": 10.0}, "at least an hour"),
    ],
)  # fmt: skip
def test_create_refusals(key_type: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TransitError, match=re.escape(message)):
        tr.create_key("k", key_type, now=1.0, **kwargs)
    with pytest.raises(TransitError, match="invalid key name"):
        tr.create_key("a/b", "aes256-gcm96", now=1.0)


def test_material_is_deterministic_under_an_injected_rand() -> None:
    for key_type in (*SYMMETRIC, *ECDSA, "ed25519", "hmac"):
        first = tr.new_key_material(key_type, _rand(7), now=5.0)
        assert first == tr.new_key_material(key_type, _rand(7), now=5.0)
        assert first != tr.new_key_material(key_type, _rand(8), now=5.0)


def test_curve_orders_are_the_real_ones() -> None:
    for curve in CURVES.values():
        ec.derive_private_key(curve.order - 1, curve.curve)  # the largest valid scalar
        with pytest.raises(ValueError):
            ec.derive_private_key(curve.order, curve.curve)


def test_material_packs_and_repr_hides_it() -> None:
    version = _key("ed25519").versions[1]
    packed = tr.pack_material(version)
    assert (
        tr.unpack_material(packed, created=version.created, public_key=version.public_key)
        == version
    )
    with pytest.raises(tr.CorruptKeyMaterial):
        tr.unpack_material(b"\x81\xa3key\x01", created=0.0, public_key="")
    assert version.key.hex() not in repr(version) and str(version.key) not in repr(version)
    assert "versions" not in repr(_key())


# -- derived keys and convergent encryption


def test_derived_keys_need_a_context_and_are_hkdf() -> None:
    key = _key(derived=True)
    with pytest.raises(TransitError, match="missing 'context' for key derivation"):
        tr.encrypt(key, b"x")
    ct = tr.encrypt(key, b"for alice", context=b"alice")
    with pytest.raises(TransitError, match="message authentication failed"):
        tr.decrypt(key, ct, context=b"bob")
    derived = HKDF(hashes.SHA256(), 32, None, b"alice").derive(key.versions[1].key)
    raw = _payload(ct)[1]
    assert AESGCM(derived).decrypt(raw[:12], raw[12:], None) == b"for alice"
    with pytest.raises(TransitError, match="is not derived"):
        tr.encrypt(_key(), b"x", context=b"alice")


def test_convergent_encryption_is_vault_version_3() -> None:
    key = _key(derived=True, convergent_encryption=True)
    first = tr.encrypt(key, b"same", context=b"ctx")
    assert first == tr.encrypt(key, b"same", context=b"ctx")
    assert first != tr.encrypt(key, b"same", context=b"other")
    assert first != tr.encrypt(key, b"different", context=b"ctx")
    stream = HKDF(hashes.SHA256(), 64, None, b"ctx").derive(key.versions[1].key)
    nonce = hmac_mod.new(stream[32:], b"same", hashlib.sha256).digest()[:12]
    assert _payload(first)[1][:12] == nonce
    assert tr.decrypt(key, first, context=b"ctx") == b"same"
    assert tr.key_info(key)["convergent_encryption_version"] == 3


def test_derived_ed25519_signs_with_the_context_key() -> None:
    key = _key("ed25519", derived=True)
    signature = tr.sign(key, b"m", context=b"ctx")
    seed = HKDF(hashes.SHA256(), 32, None, b"ctx").derive(key.versions[1].key)
    public = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
    public.verify(_payload(signature)[1], b"m")
    assert tr.derived_public_key(key, 1, b"ctx") == public.public_bytes_raw()
    assert tr.verify(key, b"m", signature, context=b"ctx")
    assert not tr.verify(key, b"m", signature, context=b"other")
    assert tr.key_info(key)["keys"]["1"]["public_key"] == ""  # no context, no public key
    shown = tr.key_info(key, b"ctx")["keys"]["1"]["public_key"]
    assert base64.b64decode(shown) == public.public_bytes_raw()
    with pytest.raises(InvalidSignature):
        ed25519.Ed25519PublicKey.from_public_bytes(
            base64.b64decode(key.versions[1].public_key)
        ).verify(_payload(signature)[1], b"m")


# -- the backend's pure batch helpers


def _double(item: dict[str, Any]) -> dict[str, Any]:
    if item.get("n") is None:
        raise TransitError("missing n")
    if item["n"] < 0:
        raise LogicalError(400, "negative")
    return {"out": item["n"] * 2}


def test_run_batch_keeps_order_references_and_item_errors() -> None:
    items = [{"n": 1, "reference": "a"}, {"reference": "b"}, {"n": -1}, "junk", {"n": 3}]
    outcome = rq.run_batch(items, _double)
    assert outcome.results == [
        {"out": 2, "reference": "a"},
        {"error": "missing n", "reference": "b"},
        {"error": "negative", "reference": ""},
        {"error": "[3] expected a map, got str", "reference": ""},
        {"out": 6, "reference": ""},
    ]
    assert outcome.user_error and outcome.success
    verify_like = rq.run_batch([{}], _double, error_fields={"valid": False})
    assert verify_like.results == [{"valid": False, "error": "missing n", "reference": ""}]
    with pytest.raises(LogicalError, match="missing batch input to process"):
        rq.run_batch([], _double)
    with pytest.raises(LogicalError, match="must be a list"):
        rq.run_batch({"n": 1}, _double)


def test_batch_status_is_vaults() -> None:
    mixed = rq.run_batch([{"n": 1}, {}], _double)
    failed = rq.run_batch([{}], _double)
    fine = rq.run_batch([{"n": 1}], _double)
    assert rq.batch_status(fine, None) == (200, [])
    assert rq.batch_status(mixed, None) == (400, [])
    assert rq.batch_status(mixed, 207) == (207, [])
    assert rq.batch_status(mixed, "207") == (207, [])
    assert rq.batch_status(failed, 207) == (400, [])  # nothing succeeded: still 400
    status, warnings = rq.batch_status(mixed, 700)
    assert status == 400 and "reverting to 400" in warnings[0]
