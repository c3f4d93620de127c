"""Vault's transit engine, the crypto: encrypt, decrypt, rewrap, data keys, sign,
verify, HMAC, hash and random on the keys of `transit_keys.py` (re-exported here, so
`transit` is the one module callers import), in Vault's wire formats.

Pure: no asyncio, no agent, no clock. Randomness comes in as `rand` (like
`os.urandom`) wherever the algorithm lets us choose it; OpenSSL draws the ECDSA
signing nonce itself. Errors a caller can cause are `TransitError` (a ValueError,
mapped to 400) with Vault's message where Vault has one.

Formats, exactly as Vault (sdk/helper/keysutil/policy.go):
- ciphertext: "vault:v<N>:" + base64(nonce(12) || ciphertext || tag(16)), AES-GCM or
  ChaCha20-Poly1305, so clients that parse "vault:v1:" keep working;
- signature: "vault:v<N>:" + base64 (ASN.1 DER for ECDSA; with "jws" marshaling r||s
  padded to the curve size, in unpadded base64url); ed25519 signs the raw input,
  ECDSA signs the hash_algorithm digest of it (or the input itself when prehashed);
- hmac: "vault:v<N>:" + base64(HMAC(key, input)).

Convergent encryption is Vault's version 3: a derived key's HKDF stream continues
past the encryption key with 32 bytes that key an HMAC-SHA256 of the plaintext, whose
first 12 bytes are the nonce. Caller-supplied nonces (only Vault's deprecated
convergent version 1 used them) are refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac as hmac_mod
import os
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from stack.vault.sealcrypto import Rand
from stack.vault.transit_keys import (
    CONVERGENT_VERSION,
    CURVES,
    DIGITS,
    ENC_KEY_LEN,
    ERR_MISSING_CONTEXT,
    EXPORT_TYPES,
    PREFIX,
    CorruptKeyMaterial,
    KeyVersion,
    TransitError,
    TransitKey,
    b64,
    b64decode,
    check_context,
    configure,
    create_key,
    derived_public_key,
    draw,
    ecdsa_private,
    ed25519_private,
    export,
    key_bytes,
    key_info,
    new_key_material,
    pack_material,
    resolved_key_size,
    rotate,
    trim,
    unpack_material,
)

__all__ = [
    "CONVERGENT_VERSION",
    "ERR_MISSING_CONTEXT",
    "ERR_NONCE",
    "ERR_TOO_OLD",
    "EXPORT_TYPES",
    "HASH_ALGORITHMS",
    "PREFIX",
    "CorruptKeyMaterial",
    "DataKey",
    "KeyVersion",
    "TransitError",
    "TransitKey",
    "b64decode",
    "configure",
    "create_key",
    "datakey",
    "decrypt",
    "derived_public_key",
    "encrypt",
    "encryption_version",
    "export",
    "hash_data",
    "hmac",
    "key_info",
    "new_key_material",
    "pack_material",
    "random_bytes",
    "resolved_key_size",
    "rewrap",
    "rotate",
    "sign",
    "split_prefixed",
    "trim",
    "unpack_material",
    "verify",
    "verify_hmac",
]

NONCE_LEN = 12
MAX_RANDOM_BYTES = 128 * 1024
DATAKEY_BITS = (128, 256, 512)
HASH_ALGORITHMS = ("sha2-224", "sha2-256", "sha2-384", "sha2-512",
                   "sha3-224", "sha3-256", "sha3-384", "sha3-512")  # fmt: skip
SIGN_HASH_ALGORITHMS = ("none", "sha1", *HASH_ALGORITHMS)
MARSHALING_ALGORITHMS = ("asn1", "jws")
ERR_TOO_OLD = "ciphertext or signature version is disallowed by policy (too old)"
ERR_NONCE = "provided nonce not allowed for this key"

_HASHLIB = {"sha1": "sha1", "sha2-224": "sha224", "sha2-256": "sha256", "sha2-384": "sha384",
            "sha2-512": "sha512", "sha3-224": "sha3_224", "sha3-256": "sha3_256",
            "sha3-384": "sha3_384", "sha3-512": "sha3_512"}  # fmt: skip
# For a digest signed as given, by its length; OpenSSL truncates it to the curve
# order's bits as Go's ecdsa.Sign does, whichever hash made it.
_PREHASHED: dict[int, type[hashes.HashAlgorithm]] = {
    20: hashes.SHA1, 28: hashes.SHA224, 32: hashes.SHA256, 48: hashes.SHA384, 64: hashes.SHA512
}  # fmt: skip


class DataKey(NamedTuple):
    plaintext: bytes | None  # None for a "wrapped" data key
    ciphertext: str
    key_version: int


# -- versions and the "vault:v<N>:" prefix


def encryption_version(key: TransitKey, version: int = 0, what: str = "encryption") -> int:
    """The version a new ciphertext or signature uses (0: the latest)."""
    if version == 0:
        return key.latest_version
    if version < 0:
        raise TransitError(f"requested version for {what} is negative")
    if version > key.latest_version:
        raise TransitError(f"requested version for {what} is higher than the latest key version")
    if version < key.min_encryption_version:
        raise TransitError(
            f"requested version for {what} is less than the minimum encryption key version"
        )
    return version


def split_prefixed(value: str, kind: str) -> tuple[int, str]:
    """("vault:v3:abc", "ciphertext") -> (3, "abc"), with Vault's errors."""
    if not isinstance(value, str) or not value.startswith(PREFIX):
        raise TransitError(f"invalid {kind}: no prefix")
    number, sep, payload = value[len(PREFIX) :].partition(":")
    if not sep:
        raise TransitError(f"invalid {kind}: wrong number of fields")
    if not DIGITS.fullmatch(number):
        raise TransitError(f"invalid {kind}: version number could not be decoded")
    return int(number), payload


def _readable_version(key: TransitKey, number: int, kind: str) -> None:
    if number > key.latest_version:
        raise TransitError(f"invalid {kind}: version is too new")
    if key.min_decryption_version > 0 and number < key.min_decryption_version:
        raise TransitError(ERR_TOO_OLD)


# -- encrypt, decrypt, rewrap, data keys


def _aead(key_type: str, enc_key: bytes) -> AESGCM | ChaCha20Poly1305:
    return ChaCha20Poly1305(enc_key) if key_type == "chacha20-poly1305" else AESGCM(enc_key)


def encrypt(
    key: TransitKey,
    plaintext: bytes,
    *,
    version: int = 0,
    context: bytes | None = None,
    associated_data: bytes | None = None,
    nonce: bytes | None = None,
    rand: Rand = os.urandom,
) -> str:
    """ "vault:v<N>:" + base64(nonce || ciphertext || tag), as Vault."""
    if not key.supports_encryption:
        raise TransitError(f"message encryption not supported for key type {key.type}")
    if nonce:
        raise TransitError(ERR_NONCE)
    number = encryption_version(key, version)
    size = ENC_KEY_LEN[key.type]
    if key.convergent_encryption:
        stream = key_bytes(key, number, context, size + 32)
        enc_key = stream[:size]
        iv = hmac_mod.new(stream[size:], plaintext, hashlib.sha256).digest()[:NONCE_LEN]
    else:
        enc_key = key_bytes(key, number, context, size)
        iv = draw(rand, NONCE_LEN)
    sealed = _aead(key.type, enc_key).encrypt(iv, plaintext, associated_data or None)
    return f"{PREFIX}{number}:{b64(iv + sealed)}"


def decrypt(
    key: TransitKey,
    ciphertext: str,
    *,
    context: bytes | None = None,
    associated_data: bytes | None = None,
    nonce: bytes | None = None,
) -> bytes:
    if not key.supports_decryption:
        raise TransitError(f"message decryption not supported for key type {key.type}")
    if nonce:
        raise TransitError(ERR_NONCE)
    number, payload = split_prefixed(ciphertext, "ciphertext")
    number = number or 1  # Vault: keys once started at version 0
    _readable_version(key, number, "ciphertext")
    try:
        raw = b64decode(payload)
    except TransitError:
        raise TransitError("invalid ciphertext: could not decode base64") from None
    enc_key = key_bytes(key, number, context, ENC_KEY_LEN[key.type])
    if len(raw) < NONCE_LEN:
        raise TransitError("invalid ciphertext length")
    try:
        return _aead(key.type, enc_key).decrypt(
            raw[:NONCE_LEN], raw[NONCE_LEN:], associated_data or None
        )
    except InvalidTag:
        raise TransitError("cipher: message authentication failed") from None


def rewrap(
    key: TransitKey,
    ciphertext: str,
    *,
    version: int = 0,
    context: bytes | None = None,
    associated_data: bytes | None = None,
    rand: Rand = os.urandom,
) -> str:
    """Decrypt with whichever version made `ciphertext`, encrypt with `version`."""
    plaintext = decrypt(key, ciphertext, context=context, associated_data=associated_data)
    return encrypt(
        key,
        plaintext,
        version=version,
        context=context,
        associated_data=associated_data,
        rand=rand,
    )


def datakey(
    key: TransitKey,
    kind: str = "plaintext",
    *,
    bits: int = 256,
    version: int = 0,
    context: bytes | None = None,
    rand: Rand = os.urandom,
) -> DataKey:
    """A fresh random key, encrypted under `key`; its plaintext too unless "wrapped"."""
    if kind not in ("plaintext", "wrapped"):
        raise TransitError("Invalid path, must be 'plaintext' or 'wrapped'")
    if bits not in DATAKEY_BITS:
        raise TransitError("invalid bits length")
    number = encryption_version(key, version)
    secret = draw(rand, bits // 8)
    ciphertext = encrypt(key, secret, version=number, context=context, rand=rand)
    return DataKey(secret if kind == "plaintext" else None, ciphertext, number)


# -- sign and verify


def _check_signing_options(
    key: TransitKey,
    hash_algorithm: str,
    prehashed: bool,
    marshaling_algorithm: str,
    signature_algorithm: str,
) -> None:
    if hash_algorithm not in SIGN_HASH_ALGORITHMS:
        raise TransitError(f'invalid hash algorithm "{hash_algorithm}"')
    if marshaling_algorithm not in MARSHALING_ALGORITHMS:
        raise TransitError(f'invalid marshaling type "{marshaling_algorithm}"')
    if signature_algorithm:
        raise TransitError(
            "signature_algorithm applies to rsa keys, which stack's transit engine does not "
            f"support; leave it out for {key.type}"
        )
    if key.type == "ed25519" and prehashed:
        raise TransitError("prehashed input is not supported for ed25519 keys")


def _ecdsa_digest(
    data: bytes, hash_algorithm: str, prehashed: bool
) -> tuple[bytes, hashes.HashAlgorithm]:
    if prehashed or hash_algorithm == "none":
        algorithm = _PREHASHED.get(len(data))
        if algorithm is None:
            raise TransitError(
                f"a prehashed input must be a digest of 20, 28, 32, 48 or 64 bytes, "
                f"not {len(data)} bytes"
            )
        return data, algorithm()
    digest = hashlib.new(_HASHLIB[hash_algorithm], data).digest()
    return digest, _PREHASHED[len(digest)]()


def sign(
    key: TransitKey,
    data: bytes,
    *,
    version: int = 0,
    hash_algorithm: str = "sha2-256",
    prehashed: bool = False,
    marshaling_algorithm: str = "asn1",
    signature_algorithm: str = "",
    context: bytes | None = None,
) -> str:
    if not key.supports_signing:
        raise TransitError(f"key type {key.type} does not support signing")
    _check_signing_options(key, hash_algorithm, prehashed, marshaling_algorithm,
                           signature_algorithm)  # fmt: skip
    number = encryption_version(key, version, "signing")
    if key.type == "ed25519":
        signature = ed25519_private(key, number, context).sign(data)
    else:
        check_context(key, context)
        digest, algorithm = _ecdsa_digest(data, hash_algorithm, prehashed)
        der = ecdsa_private(key, number).sign(digest, ec.ECDSA(Prehashed(algorithm)))
        signature = der
        if marshaling_algorithm == "jws":
            r, s = decode_dss_signature(der)
            size = CURVES[key.type].size
            signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if marshaling_algorithm == "jws":
        encoded = base64.urlsafe_b64encode(signature).decode().rstrip("=")
    else:
        encoded = b64(signature)
    return f"{PREFIX}{number}:{encoded}"


def verify(
    key: TransitKey,
    data: bytes,
    signature: str,
    *,
    hash_algorithm: str = "sha2-256",
    prehashed: bool = False,
    marshaling_algorithm: str = "asn1",
    signature_algorithm: str = "",
    context: bytes | None = None,
) -> bool:
    """Whether `signature` is a valid signature of `data`; a malformed signature or a
    disallowed version is an error, as in Vault."""
    if not key.supports_signing:
        raise TransitError(f"key type {key.type} does not support verification")
    _check_signing_options(key, hash_algorithm, prehashed, marshaling_algorithm,
                           signature_algorithm)  # fmt: skip
    number, payload = split_prefixed(signature, "signature")
    _readable_version(key, number, "signature")
    try:
        if marshaling_algorithm == "jws":
            if "=" in payload:
                raise TransitError("padding in unpadded base64url")
            raw = base64.b64decode(payload + "=" * (-len(payload) % 4), b"-_", validate=True)
        else:
            raw = b64decode(payload)
    except (TransitError, binascii.Error, ValueError):
        raise TransitError("invalid base64 signature value") from None
    try:
        if key.type == "ed25519":
            ed25519_private(key, number, context).public_key().verify(raw, data)
            return True
        check_context(key, context)
        digest, algorithm = _ecdsa_digest(data, hash_algorithm, prehashed)
        if marshaling_algorithm == "jws":
            half = len(raw) // 2
            r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
            der = encode_dss_signature(r, s)
        else:
            der = raw
            try:
                decode_dss_signature(der)
            except ValueError:
                raise TransitError("supplied signature is invalid") from None
        public = ecdsa_private(key, number).public_key()
        public.verify(der, digest, ec.ECDSA(Prehashed(algorithm)))
        return True
    except InvalidSignature:
        return False


# -- HMAC, hash, random


def _hmac_algorithm(algorithm: str) -> str:
    if algorithm not in HASH_ALGORITHMS:
        raise TransitError(f"unsupported algorithm {algorithm}")
    return _HASHLIB[algorithm]


def _hmac_key(key: TransitKey, number: int) -> bytes:
    if number < 0:
        raise TransitError("key version does not exist (cannot be negative)")
    if number > key.latest_version:
        raise TransitError(
            f"key version does not exist; latest key version is {key.latest_version}"
        )
    found = key.version(number)
    return found.key if key.type == "hmac" else found.hmac_key


def hmac(key: TransitKey, data: bytes, *, version: int = 0, algorithm: str = "sha2-256") -> str:
    """ "vault:v<N>:" + base64(HMAC(version N's HMAC key, data))."""
    name = _hmac_algorithm(algorithm)
    number = version or key.latest_version
    if number != key.latest_version and 0 < number < key.min_encryption_version:
        raise TransitError("cannot generate HMAC: version is too old (disallowed by policy)")
    mac = hmac_mod.new(_hmac_key(key, number), data, name).digest()
    return f"{PREFIX}{number}:{b64(mac)}"


def verify_hmac(key: TransitKey, data: bytes, mac: str, *, algorithm: str = "sha2-256") -> bool:
    name = _hmac_algorithm(algorithm)
    if not isinstance(mac, str) or not mac.startswith(PREFIX):
        raise TransitError("invalid HMAC to verify: no prefix")
    number_text, sep, payload = mac[len(PREFIX) :].partition(":")
    if not sep:
        raise TransitError("invalid HMAC: wrong number of fields")
    if not DIGITS.fullmatch(number_text):
        raise TransitError("invalid HMAC: version number could not be decoded")
    number = int(number_text)
    try:
        expected = b64decode(payload)
    except TransitError as e:
        raise TransitError(f"unable to decode verification HMAC as base64: {e}") from None
    if number > key.latest_version:
        raise TransitError("invalid HMAC: version is too new")
    if key.min_decryption_version > 0 and number < key.min_decryption_version:
        raise TransitError("cannot verify HMAC: version is too old (disallowed by policy)")
    actual = hmac_mod.new(_hmac_key(key, number), data, name).digest()
    return hmac_mod.compare_digest(actual, expected)


def _encode(data: bytes, output_format: str) -> str:
    if output_format == "hex":
        return data.hex()
    if output_format == "base64":
        return b64(data)
    raise TransitError(f'unsupported encoding format "{output_format}"; must be "hex" or "base64"')


def hash_data(data: bytes, algorithm: str = "sha2-256", output_format: str = "hex") -> str:
    """Vault's hash endpoint: the digest of `data`, hex (default) or base64."""
    if output_format not in ("hex", "base64"):
        _encode(b"", output_format)
    if algorithm not in HASH_ALGORITHMS:
        raise TransitError(f"unsupported algorithm {algorithm}")
    return _encode(hashlib.new(_HASHLIB[algorithm], data).digest(), output_format)


def random_bytes(n: int = 32, output_format: str = "base64", rand: Rand = os.urandom) -> str:
    if n < 1:
        raise TransitError('"bytes" cannot be less than 1')
    if n > MAX_RANDOM_BYTES:
        raise TransitError(f'"bytes" should be less than {MAX_RANDOM_BYTES}')
    if output_format not in ("hex", "base64"):
        _encode(b"", output_format)
    return _encode(draw(rand, n), output_format)
