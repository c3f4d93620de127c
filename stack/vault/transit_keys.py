"""Vault's transit keys: the key model, fresh material, the key lifecycle (create,
rotate, configure, trim), derivation, export and the key read. `transit.py` holds
the operations on a key and re-exports everything public here.

Key material per version (`KeyVersion`): the key itself and a separate 32-byte HMAC
key generated alongside, as Vault does for every type (its `HMACKey`). `hmac` uses
that HMAC key for aes/chacha/ed25519/ecdsa keys and the key itself for the "hmac"
type, so HMACs never reuse an encryption or signing key.

Derived keys (`derived=true`) are Vault's HKDF mode: HKDF-SHA256 over the version's
key, no salt, the request's context as info; an ed25519 key is the 32-byte derived
seed. A context sent to a key that is not derived is refused (Vault ignores it; here
it would silently not bind anything to the context).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from stack.state import transit as rules
from stack.vault.sealcrypto import Rand
from stack.vault.timefmt import rfc3339

PREFIX = "vault:v"
HMAC_KEY_LEN = 32
CONVERGENT_VERSION = 3
EXPORT_TYPES = ("encryption-key", "signing-key", "hmac-key", "public-key")
ENC_KEY_LEN = {"aes128-gcm96": 16, "aes256-gcm96": 32, "chacha20-poly1305": 32}
ERR_MISSING_CONTEXT = (
    "missing 'context' for key derivation; the key was created using a derived key, which "
    "means additional, per-request information must be included in order to perform "
    "operations with the key"
)
DIGITS = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True, slots=True)
class _Curve:
    go_name: str  # what Vault's key read calls it
    curve: ec.EllipticCurve
    size: int  # bytes of a scalar or coordinate
    order: int


CURVES = {
    "ecdsa-p256": _Curve("P-256", ec.SECP256R1(), 32, int(
        "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551", 16)),
    "ecdsa-p384": _Curve("P-384", ec.SECP384R1(), 48, int(
        "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf"
        "581a0db248b0a77aecec196accc52973", 16)),
    "ecdsa-p521": _Curve("P-521", ec.SECP521R1(), 66, int(
        "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
        "fa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409", 16)),
}  # fmt: skip


class TransitError(ValueError):
    """A request transit refuses (bad input, a disallowed version, an unsupported
    option); callers answer 400 with the message."""


class CorruptKeyMaterial(Exception):
    """Stored key material that does not unpack: a bug or damage, never user input."""


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """One version's material. `key`: the AES, ChaCha20 or HMAC key; for ed25519
    Vault's 64-byte private key (seed, then public key); for ECDSA the private scalar,
    big-endian, curve-sized. `hmac_key`: the separate HMAC key. `public_key`: Vault's
    formatted public key (PEM for ECDSA, base64 for ed25519, "" otherwise)."""

    key: bytes = field(repr=False)
    hmac_key: bytes = field(repr=False)
    created: float
    public_key: str = ""


@dataclass(frozen=True, slots=True)
class TransitKey:
    name: str
    type: str
    versions: Mapping[int, KeyVersion] = field(repr=False)  # every version not trimmed
    latest_version: int
    min_decryption_version: int = 1
    min_encryption_version: int = 0  # 0: any version from min_decryption_version up
    min_available_version: int = 0  # set by trim; older versions are gone
    deletion_allowed: bool = False
    exportable: bool = False
    allow_plaintext_backup: bool = False
    derived: bool = False
    convergent_encryption: bool = False
    auto_rotate_period: float = 0.0  # stored and reported; the leader rotates
    key_size: int = 0  # bytes of an hmac key; 0 for every other type

    @property
    def supports_encryption(self) -> bool:
        return self.type in rules.SYMMETRIC_TYPES

    @property
    def supports_decryption(self) -> bool:
        return self.type in rules.SYMMETRIC_TYPES

    @property
    def supports_signing(self) -> bool:
        return self.type in rules.ASYMMETRIC_TYPES

    @property
    def supports_derivation(self) -> bool:
        return self.type in rules.DERIVABLE_TYPES

    def version(self, number: int) -> KeyVersion:
        found = self.versions.get(number) if number >= self.min_available_version else None
        if found is None:
            raise TransitError("no such key version")
        return found

    def config_row(self) -> dict[str, Any]:
        """The fields `stack.state.transit` checks configuration and trims against."""
        return {
            "latest_version": self.latest_version,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "min_available_version": self.min_available_version,
            "deletion_allowed": self.deletion_allowed,
            "exportable": self.exportable,
            "allow_plaintext_backup": self.allow_plaintext_backup,
            "auto_rotate_period": self.auto_rotate_period,
        }


def check_rules(check: Callable[[], None]) -> None:
    try:
        check()
    except ValueError as e:
        raise TransitError(str(e)) from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64decode(value: str) -> bytes:
    """Go's base64.StdEncoding.DecodeString: padded, strict alphabet, CR/LF skipped."""
    if not isinstance(value, str):
        raise TransitError("illegal base64 data: not a string")
    try:
        return base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        raise TransitError("illegal base64 data") from None


# -- keys


def resolved_key_size(key_type: str, key_size: int = 0) -> int:
    """The stored key_size: an hmac key's bytes (0 means Vault's default, 32)."""
    if key_type == "hmac" and key_size == 0:
        return rules.HMAC_DEFAULT_KEY_SIZE
    return key_size


def new_key_material(
    key_type: str, rand: Rand = os.urandom, *, key_size: int = 0, now: float = 0.0
) -> KeyVersion:
    """Fresh material for one version of a `key_type` key."""
    check_rules(lambda: rules.check_type(key_type))
    hmac_key = draw(rand, HMAC_KEY_LEN)
    if key_type in ENC_KEY_LEN:
        return KeyVersion(draw(rand, ENC_KEY_LEN[key_type]), hmac_key, now)
    if key_type == "hmac":
        size = resolved_key_size(key_type, key_size)
        if not rules.HMAC_MIN_KEY_SIZE <= size <= rules.HMAC_MAX_KEY_SIZE:
            raise TransitError(f"invalid key_size {size}")
        return KeyVersion(draw(rand, size), hmac_key, now)
    if key_type == "ed25519":
        seed = draw(rand, 32)
        public = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
        raw_public = public.public_bytes_raw()
        return KeyVersion(seed + raw_public, hmac_key, now, b64(raw_public))
    curve = CURVES[key_type]
    # 64 spare bits make the bias of the reduction negligible (FIPS 186-4 B.4.1).
    d = int.from_bytes(draw(rand, curve.size + 8), "big") % (curve.order - 1) + 1
    private = ec.derive_private_key(d, curve.curve)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyVersion(d.to_bytes(curve.size, "big"), hmac_key, now, pem.decode())


def draw(rand: Rand, n: int) -> bytes:
    out = rand(n)
    if len(out) != n:
        raise ValueError(f"random source returned {len(out)} bytes, not {n}")
    return out


def create_key(
    name: str,
    key_type: str = "aes256-gcm96",
    *,
    now: float,
    rand: Rand = os.urandom,
    derived: bool = False,
    convergent_encryption: bool = False,
    exportable: bool = False,
    allow_plaintext_backup: bool = False,
    auto_rotate_period: float = 0.0,
    key_size: int = 0,
) -> TransitKey:
    """A new key with version 1 (Vault's POST keys/<name>)."""
    check_rules(lambda: rules.validate_name(name))
    size = resolved_key_size(key_type, key_size)
    check_rules(
        lambda: rules.check_create(
            key_type,
            derived=derived,
            convergent=convergent_encryption,
            auto_rotate_period=auto_rotate_period,
            key_size=size,
        )
    )
    first = new_key_material(key_type, rand, key_size=size, now=now)
    return TransitKey(
        name,
        key_type,
        {1: first},
        1,
        exportable=exportable,
        allow_plaintext_backup=allow_plaintext_backup,
        derived=derived,
        convergent_encryption=convergent_encryption,
        auto_rotate_period=float(auto_rotate_period),
        key_size=size,
    )


def rotate(key: TransitKey, *, now: float, rand: Rand = os.urandom) -> TransitKey:
    """The key with a new latest version."""
    number = key.latest_version + 1
    material = new_key_material(key.type, rand, key_size=key.key_size, now=now)
    return replace(key, versions={**key.versions, number: material}, latest_version=number)


def configure(key: TransitKey, **changes: Any) -> tuple[TransitKey, list[str]]:
    """Vault's POST keys/<name>/config: the fields given change (see
    `stack.state.transit.apply_config`); returns the key and Vault's warnings."""
    unknown = sorted(set(changes) - set(rules.CONFIG_FIELDS))
    if unknown:
        raise TransitError(f"unknown key configuration fields: {', '.join(unknown)}")
    try:
        row, warnings = rules.apply_config(key.config_row(), changes)
    except ValueError as e:
        raise TransitError(str(e)) from None
    del row["latest_version"]
    return replace(key, **row), warnings


def trim(key: TransitKey, min_available_version: int) -> TransitKey:
    """Vault's POST keys/<name>/trim: forget every version below the given one."""
    check_rules(lambda: rules.check_trim(key.config_row(), min_available_version))
    kept = {n: v for n, v in key.versions.items() if n >= min_available_version}
    return replace(key, versions=kept, min_available_version=min_available_version)


def pack_material(version: KeyVersion) -> bytes:
    """A version's secret material as bytes for the barrier to encrypt."""
    packed: bytes = msgpack.packb(
        {"key": version.key, "hmac_key": version.hmac_key}, use_bin_type=True
    )
    return packed


def unpack_material(data: bytes, *, created: float, public_key: str) -> KeyVersion:
    try:
        raw = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise CorruptKeyMaterial("transit key material does not decode") from None
    if not (
        isinstance(raw, dict)
        and isinstance(raw.get("key"), bytes)
        and isinstance(raw.get("hmac_key"), bytes)
    ):
        raise CorruptKeyMaterial("transit key material has the wrong shape")
    return KeyVersion(raw["key"], raw["hmac_key"], created, public_key)


# -- derivation


def _hkdf(secret: bytes, context: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=context).derive(secret)


def check_context(key: TransitKey, context: bytes | None) -> None:
    if key.derived and not context:
        raise TransitError(ERR_MISSING_CONTEXT)
    if not key.derived and context:
        raise TransitError(
            f"a context was given, but key {key.name} is not derived, so the context would "
            "not change the key; leave it out or use a key created with derived=true"
        )


def key_bytes(key: TransitKey, number: int, context: bytes | None, length: int) -> bytes:
    """The version's key, or for a derived key `length` bytes derived with `context`."""
    check_context(key, context)
    material = key.version(number).key
    return _hkdf(material, context, length) if key.derived and context else material


def ed25519_private(
    key: TransitKey, number: int, context: bytes | None
) -> ed25519.Ed25519PrivateKey:
    check_context(key, context)
    material = key.version(number).key
    seed = _hkdf(material, context, 32) if key.derived and context else material[:32]
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


def ecdsa_private(key: TransitKey, number: int) -> ec.EllipticCurvePrivateKey:
    d = int.from_bytes(key.version(number).key, "big")
    return ec.derive_private_key(d, CURVES[key.type].curve)


def derived_public_key(key: TransitKey, version: int, context: bytes) -> bytes:
    """The raw public key of a derived ed25519 key for `context` (Vault's sign answer
    and key read with a context carry it)."""
    return ed25519_private(key, version, context).public_key().public_bytes_raw()


# -- export and the key read


def _export_one(key: TransitKey, version: KeyVersion, export_type: str) -> str:
    if export_type == "hmac-key":
        return b64(version.key if key.type == "hmac" else version.hmac_key)
    if export_type == "encryption-key":
        return b64(version.key)
    if key.type == "ed25519":  # Vault: the 64-byte private key, or the public key's base64
        return b64(version.key) if export_type == "signing-key" else version.public_key.strip()
    curve = CURVES[key.type]
    private = ec.derive_private_key(int.from_bytes(version.key, "big"), curve.curve)
    if export_type == "signing-key":
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,  # "EC PRIVATE KEY", as Go's
            serialization.NoEncryption(),
        )
    else:
        pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return pem.decode().strip()


def export(key: TransitKey, export_type: str, version: int | str | None = None) -> dict[str, str]:
    """Vault's GET export/<type>/<name>[/<version>]: {version: material}. Private
    material only from an exportable key; public keys of any asymmetric key."""
    if export_type == "certificate-chain":
        raise TransitError("certificate-chain export is not supported by stack's transit engine")
    if export_type not in EXPORT_TYPES:
        raise TransitError(f"invalid export type: {export_type}")
    if not key.exportable and export_type != "public-key":
        raise TransitError("private key material is not exportable")
    if export_type == "encryption-key" and not key.supports_encryption:
        raise TransitError("encryption not supported for the key")
    if export_type == "signing-key" and not key.supports_signing:
        raise TransitError("signing not supported for the key")
    if export_type == "public-key" and key.type not in rules.ASYMMETRIC_TYPES:
        raise TransitError(f"public-key export is not supported for key type {key.type}")
    if version is None or version == "":
        numbers = [n for n in sorted(key.versions) if n >= key.min_decryption_version]
    else:
        numbers = [_export_version(key, version)]
    return {str(n): _export_one(key, key.version(n), export_type) for n in numbers}


def _export_version(key: TransitKey, version: int | str) -> int:
    if version == "latest":
        number = key.latest_version
    elif isinstance(version, int) and not isinstance(version, bool):
        number = version
    elif isinstance(version, str) and DIGITS.fullmatch(version.removeprefix("v")):
        number = int(version.removeprefix("v"))
    else:
        raise TransitError("invalid key version")
    if number < key.min_decryption_version:
        raise TransitError("version for export is below minimum decryption version")
    if number not in key.versions or number < key.min_available_version:
        raise TransitError("version does not exist or cannot be found")
    return number


def key_info(key: TransitKey, context: bytes | None = None) -> dict[str, Any]:
    """Vault's key read (formatKeyPolicy), without private material. Lists the
    versions from min_decryption_version up, as Vault's keyring does."""
    out: dict[str, Any] = {
        "name": key.name,
        "type": key.type,
        "derived": key.derived,
        "deletion_allowed": key.deletion_allowed,
        "min_available_version": key.min_available_version,
        "min_decryption_version": key.min_decryption_version,
        "min_encryption_version": key.min_encryption_version,
        "latest_version": key.latest_version,
        "exportable": key.exportable,
        "allow_plaintext_backup": key.allow_plaintext_backup,
        "supports_encryption": key.supports_encryption,
        "supports_decryption": key.supports_decryption,
        "supports_signing": key.supports_signing,
        "supports_derivation": key.supports_derivation,
        "auto_rotate_period": int(key.auto_rotate_period),
        "imported_key": False,
    }
    if key.key_size:
        out["key_size"] = key.key_size
    if key.derived:
        out["kdf"] = "hkdf_sha256"
        out["convergent_encryption"] = key.convergent_encryption
        if key.convergent_encryption:
            out["convergent_encryption_version"] = CONVERGENT_VERSION
    listed = [n for n in sorted(key.versions) if n >= key.min_decryption_version]
    if key.type in rules.SYMMETRIC_TYPES:
        out["keys"] = {str(n): int(key.versions[n].created) for n in listed}
    elif key.type in rules.ASYMMETRIC_TYPES:
        out["keys"] = {str(n): _public_info(key, n, context) for n in listed}
    return out


def _public_info(key: TransitKey, number: int, context: bytes | None) -> dict[str, Any]:
    version = key.versions[number]
    public = version.public_key
    if key.derived:  # the base key's public half is never used: show the context's
        public = b64(derived_public_key(key, number, context)) if context else ""
    name = "ed25519" if key.type == "ed25519" else CURVES[key.type].go_name
    return {
        "name": name,
        "public_key": public,
        "certificate_chain": "",
        "creation_time": rfc3339(version.created),
    }
