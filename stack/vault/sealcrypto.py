"""Small authenticated-encryption helpers for sealing: to a node's P-256 key, or to a
32-byte symmetric key.

Formats (every field before the nonce is also authenticated, as GCM associated data
together with the caller's ``aad``):

* ``encrypt_to``: ``0x01 | ephemeral P-256 point (65 bytes, uncompressed) | nonce (12)
  | AES-256-GCM ciphertext+tag``. The AES key is
  ``HKDF-SHA256(ikm=ECDH(ephemeral, recipient), salt=ephemeral point,
  info=b"stack seal v1" | recipient point)``.
* ``seal``: ``0x01 | nonce (12) | AES-256-GCM ciphertext+tag``.

Every failure to decrypt raises ``SealCryptoError`` whose message never contains key
material or plaintext.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "KEY_LEN",
    "NONCE_LEN",
    "TAG_LEN",
    "VERSION",
    "Rand",
    "SealCryptoError",
    "decrypt_with",
    "encrypt_to",
    "random_bytes",
    "seal",
    "unseal",
]

Rand = Callable[[int], bytes]

VERSION = 1
KEY_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16
POINT_LEN = 65  # uncompressed SEC1 point on P-256: 0x04 | X | Y
ECIES_INFO = b"stack seal v1"

_VERSION_BYTE = bytes([VERSION])
# Order of the P-256 group (FIPS 186-4 D.1.2.3).
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class SealCryptoError(ValueError):
    """Encryption or decryption failed (bad key, wrong aad, corrupt or truncated blob)."""


def random_bytes(rand: Rand, n: int) -> bytes:
    """``rand(n)``, checked to have returned exactly ``n`` bytes."""
    out = rand(n)
    if not isinstance(out, bytes) or len(out) != n:
        raise SealCryptoError("the random source returned the wrong number of bytes")
    return out


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_LEN:
        raise SealCryptoError(f"the symmetric key must be {KEY_LEN} bytes")


def _point(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _ephemeral_key(rand: Rand) -> ec.EllipticCurvePrivateKey:
    # FIPS 186-4 B.4.1: 64 extra bits make the reduction bias negligible.
    c = int.from_bytes(random_bytes(rand, 40), "big")
    return ec.derive_private_key(c % (_P256_ORDER - 1) + 1, ec.SECP256R1())


def _derive_key(shared: bytes, ephemeral_point: bytes, recipient_point: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_LEN,
        salt=ephemeral_point,
        info=ECIES_INFO + recipient_point,
    )
    return hkdf.derive(shared)


def _load_public(public_key_pem: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SealCryptoError("the public key is not a valid PEM public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SealCryptoError("the public key is not an EC P-256 key")
    return key


def _load_private(private_key_pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The message of the underlying error is not repeated: keep it free of key bytes.
        raise SealCryptoError("the private key is not a valid unencrypted PEM key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SealCryptoError("the private key is not an EC P-256 key")
    return key


def encrypt_to(
    public_key_pem: bytes, plaintext: bytes, aad: bytes, *, rand: Rand = os.urandom
) -> bytes:
    """Encrypt ``plaintext`` so that only the holder of the matching private key can read
    it (ECIES: ephemeral P-256 ECDH, HKDF-SHA256, AES-256-GCM). ``aad`` is authenticated
    but not included in the output; the reader must pass the same value."""
    recipient = _load_public(public_key_pem)
    ephemeral = _ephemeral_key(rand)
    ephemeral_point = _point(ephemeral.public_key())
    key = _derive_key(ephemeral.exchange(ec.ECDH(), recipient), ephemeral_point, _point(recipient))
    nonce = random_bytes(rand, NONCE_LEN)
    header = _VERSION_BYTE + ephemeral_point
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header + aad)


def decrypt_with(private_key_pem: bytes, blob: bytes, aad: bytes) -> bytes:
    """Decrypt a blob made by ``encrypt_to``; ``SealCryptoError`` on any failure."""
    private = _load_private(private_key_pem)
    if len(blob) < 1 + POINT_LEN + NONCE_LEN + TAG_LEN:
        raise SealCryptoError("the sealed blob is truncated")
    if blob[0] != VERSION:
        raise SealCryptoError(f"unknown sealed blob version {blob[0]}")
    ephemeral_point = blob[1 : 1 + POINT_LEN]
    nonce = blob[1 + POINT_LEN : 1 + POINT_LEN + NONCE_LEN]
    body = blob[1 + POINT_LEN + NONCE_LEN :]
    if ephemeral_point[0] != 0x04:
        raise SealCryptoError("the sealed blob's ephemeral point is not uncompressed")
    try:
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ephemeral_point)
        shared = private.exchange(ec.ECDH(), ephemeral)
    except ValueError:
        raise SealCryptoError("the sealed blob's ephemeral point is invalid") from None
    key = _derive_key(shared, ephemeral_point, _point(private.public_key()))
    header = blob[: 1 + POINT_LEN]
    try:
        return AESGCM(key).decrypt(nonce, body, header + aad)
    except InvalidTag:
        raise SealCryptoError(
            "cannot decrypt the sealed blob: wrong key, wrong aad or corrupt data"
        ) from None


def seal(key: bytes, plaintext: bytes, aad: bytes, *, rand: Rand = os.urandom) -> bytes:
    """AES-256-GCM under a 32-byte ``key`` with a random nonce; ``aad`` is authenticated."""
    _check_key(key)
    nonce = random_bytes(rand, NONCE_LEN)
    return _VERSION_BYTE + nonce + AESGCM(key).encrypt(nonce, plaintext, _VERSION_BYTE + aad)


def unseal(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Decrypt a blob made by ``seal``; ``SealCryptoError`` on any failure."""
    _check_key(key)
    if len(blob) < 1 + NONCE_LEN + TAG_LEN:
        raise SealCryptoError("the sealed blob is truncated")
    if blob[0] != VERSION:
        raise SealCryptoError(f"unknown sealed blob version {blob[0]}")
    nonce = blob[1 : 1 + NONCE_LEN]
    try:
        return AESGCM(key).decrypt(nonce, blob[1 + NONCE_LEN :], _VERSION_BYTE + aad)
    except InvalidTag:
        raise SealCryptoError(
            "cannot decrypt the sealed blob: wrong key, wrong aad or corrupt data"
        ) from None
