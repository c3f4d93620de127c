"""ECIES to a node's P-256 key, and symmetric sealing."""

from __future__ import annotations

import os
import random

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from stack.vault import sealcrypto
from stack.vault.sealcrypto import SealCryptoError, decrypt_with, encrypt_to, seal, unseal

PLAINTEXT = b"root key share: a recognisable plaintext of some length"


def _keypair(curve: ec.EllipticCurve | None = None) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


@pytest.fixture(scope="module")
def node() -> tuple[bytes, bytes]:
    return _keypair()


@pytest.fixture(scope="module")
def other() -> tuple[bytes, bytes]:
    return _keypair()


def test_ecies_round_trip(node: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = node
    blob = encrypt_to(public_pem, PLAINTEXT, b"unseal/node-1")
    assert blob[0] == 1
    assert blob[1] == 0x04  # uncompressed ephemeral point
    assert len(blob) == 1 + 65 + 12 + len(PLAINTEXT) + 16
    assert PLAINTEXT not in blob
    assert decrypt_with(private_pem, blob, b"unseal/node-1") == PLAINTEXT


def test_ecies_empty_plaintext_and_aad(node: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = node
    assert decrypt_with(private_pem, encrypt_to(public_pem, b"", b""), b"") == b""


def test_ecies_uses_a_fresh_ephemeral_key_each_time(node: tuple[bytes, bytes]) -> None:
    _, public_pem = node
    a = encrypt_to(public_pem, PLAINTEXT, b"")
    b = encrypt_to(public_pem, PLAINTEXT, b"")
    assert a[1:66] != b[1:66]
    assert a != b


def test_ecies_is_deterministic_given_rand(node: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = node
    a = encrypt_to(public_pem, PLAINTEXT, b"x", rand=random.Random(7).randbytes)
    b = encrypt_to(public_pem, PLAINTEXT, b"x", rand=random.Random(7).randbytes)
    assert a == b
    assert decrypt_with(private_pem, a, b"x") == PLAINTEXT


def test_ecies_wrong_key_fails(node: tuple[bytes, bytes], other: tuple[bytes, bytes]) -> None:
    _, public_pem = node
    other_private, _ = other
    blob = encrypt_to(public_pem, PLAINTEXT, b"aad")
    with pytest.raises(SealCryptoError) as info:
        decrypt_with(other_private, blob, b"aad")
    assert PLAINTEXT.decode() not in str(info.value)


def test_ecies_wrong_aad_fails(node: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = node
    blob = encrypt_to(public_pem, PLAINTEXT, b"unseal/node-1")
    with pytest.raises(SealCryptoError, match="wrong key, wrong aad or corrupt"):
        decrypt_with(private_pem, blob, b"unseal/node-2")


def test_ecies_every_tampered_byte_fails(node: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = node
    blob = encrypt_to(public_pem, b"short", b"aad")
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x01
        with pytest.raises(SealCryptoError):
            decrypt_with(private_pem, bytes(tampered), b"aad")


def test_ecies_truncated_fails(node: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = node
    blob = encrypt_to(public_pem, PLAINTEXT, b"")
    for length in (0, 1, 66, 78, 93, len(blob) - 1):
        with pytest.raises(SealCryptoError):
            decrypt_with(private_pem, blob[:length], b"")


def test_ecies_bad_version_fails(node: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = node
    blob = encrypt_to(public_pem, PLAINTEXT, b"")
    with pytest.raises(SealCryptoError, match="version 2"):
        decrypt_with(private_pem, b"\x02" + blob[1:], b"")


def test_ecies_point_not_on_the_curve_fails(node: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = node
    blob = encrypt_to(public_pem, PLAINTEXT, b"")
    bad = blob[:1] + b"\x04" + bytes(64) + blob[66:]
    with pytest.raises(SealCryptoError, match="ephemeral point"):
        decrypt_with(private_pem, bad, b"")


def test_ecies_rejects_keys_that_are_not_p256() -> None:
    p384_private, p384_public = _keypair(ec.SECP384R1())
    with pytest.raises(SealCryptoError, match="P-256"):
        encrypt_to(p384_public, PLAINTEXT, b"")
    _, public_pem = _keypair()
    blob = encrypt_to(public_pem, PLAINTEXT, b"")
    with pytest.raises(SealCryptoError, match="P-256"):
        decrypt_with(p384_private, blob, b"")
    rsa_public = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(SealCryptoError, match="P-256"):
        encrypt_to(rsa_public, PLAINTEXT, b"")


def test_ecies_rejects_garbage_pem(node: tuple[bytes, bytes]) -> None:
    _, public_pem = node
    with pytest.raises(SealCryptoError):
        encrypt_to(b"not a pem", PLAINTEXT, b"")
    blob = encrypt_to(public_pem, PLAINTEXT, b"")
    with pytest.raises(SealCryptoError):
        decrypt_with(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", blob, b"")


def test_ecies_accepts_a_traditional_openssl_ec_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sec1_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert decrypt_with(sec1_pem, encrypt_to(public_pem, PLAINTEXT, b""), b"") == PLAINTEXT


def test_ecies_rejects_a_short_random_source(node: tuple[bytes, bytes]) -> None:
    _, public_pem = node
    with pytest.raises(SealCryptoError, match="random source"):
        encrypt_to(public_pem, PLAINTEXT, b"", rand=lambda n: b"\x00")


def test_seal_round_trip() -> None:
    key = os.urandom(32)
    blob = seal(key, PLAINTEXT, b"stack/keyring")
    assert blob[0] == 1
    assert len(blob) == 1 + 12 + len(PLAINTEXT) + 16
    assert PLAINTEXT not in blob
    assert unseal(key, blob, b"stack/keyring") == PLAINTEXT


def test_seal_is_deterministic_given_rand() -> None:
    key = bytes(range(32))
    a = seal(key, PLAINTEXT, b"", rand=random.Random(3).randbytes)
    assert a == seal(key, PLAINTEXT, b"", rand=random.Random(3).randbytes)
    assert a != seal(key, PLAINTEXT, b"", rand=random.Random(4).randbytes)


def test_unseal_failures() -> None:
    key = os.urandom(32)
    blob = seal(key, PLAINTEXT, b"aad")
    with pytest.raises(SealCryptoError, match="wrong key"):
        unseal(os.urandom(32), blob, b"aad")
    with pytest.raises(SealCryptoError, match="wrong aad"):
        unseal(key, blob, b"other")
    with pytest.raises(SealCryptoError, match="truncated"):
        unseal(key, blob[:28], b"aad")
    with pytest.raises(SealCryptoError, match="version"):
        unseal(key, b"\x00" + blob[1:], b"aad")
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x80
        with pytest.raises(SealCryptoError):
            unseal(key, bytes(tampered), b"aad")


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_seal_needs_a_32_byte_key(length: int) -> None:
    with pytest.raises(SealCryptoError, match="32 bytes"):
        seal(bytes(length), b"x", b"")
    with pytest.raises(SealCryptoError, match="32 bytes"):
        unseal(bytes(length), bytes(40), b"")


def test_seal_crypto_error_is_a_value_error() -> None:
    assert issubclass(SealCryptoError, ValueError)
    assert sealcrypto.VERSION == 1
