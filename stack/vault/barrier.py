"""The barrier: the keyring that encrypts every secret value before it enters the Raft
log, and the node's in-memory sealed/unsealed view of it.

A ``Keyring`` holds numbered AES-256 keys ("terms", starting at 1). New ciphertexts
use the highest (active) term; older terms stay so existing ciphertexts still
decrypt after a rotation. A ciphertext is::

    0x01 (version) | term (u32 big-endian) | nonce (12 bytes) | AES-256-GCM ciphertext+tag

The GCM associated data is the 5-byte header followed by the caller's ``aad`` (for
example ``b"ca/root/1"``), so a ciphertext cannot be moved to another field or have its
term rewritten without failing to decrypt.

The keyring itself is stored wrapped (``Keyring.wrap``) under the root key, which is
never stored: it is split with Shamir and recovered at unseal time, and checked against
the public ``check_value``. Nothing here logs, and no error message or ``repr`` contains
key material or plaintext.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stack.vault import sealcrypto
from stack.vault.sealcrypto import Rand

__all__ = [
    "KEYRING_AAD",
    "KEY_LEN",
    "Barrier",
    "BarrierError",
    "DecryptError",
    "Keyring",
    "Sealed",
    "check_value",
    "new_root_key",
    "verify_root",
]

VERSION = 1
KEY_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16
MAX_TERM = 0xFFFFFFFF
KEYRING_AAD = b"stack/keyring"
ROOT_CHECK_LABEL = b"stack root key check v1"

_HEADER = struct.Struct(">BI")  # version, term
_MIN_BLOB = _HEADER.size + NONCE_LEN + TAG_LEN


class BarrierError(Exception):
    """Base class of barrier errors; also raised for malformed keyrings and bad keys."""


class Sealed(BarrierError):
    """The barrier is sealed: the operation needs the keyring."""

    def __init__(self, message: str = "the barrier is sealed") -> None:
        super().__init__(message)


class DecryptError(BarrierError):
    """Wrong key or aad, unknown term, or corrupt ciphertext. Never carries plaintext."""


def _random(rand: Rand, n: int) -> bytes:
    try:
        return sealcrypto.random_bytes(rand, n)
    except sealcrypto.SealCryptoError as exc:
        raise BarrierError(str(exc)) from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Keyring:
    """Immutable set of AES-256 keys by term; ``active`` is the highest term.

    ``terms`` is copied into a read-only mapping on construction. Construction
    validates everything (``BarrierError`` otherwise): at least one term, terms are
    ints in ``1..2**32-1``, keys are 32 bytes, ``active`` is the highest term.
    """

    terms: Mapping[int, bytes] = field(repr=False)
    active: int

    def __post_init__(self) -> None:
        if not isinstance(self.terms, Mapping):
            raise BarrierError("keyring terms must be a mapping")
        terms = dict(self.terms)
        if not terms:
            raise BarrierError("a keyring needs at least one term")
        for term, key in terms.items():
            if not _is_int(term) or not 1 <= term <= MAX_TERM:
                raise BarrierError(f"keyring term numbers must be ints in 1..{MAX_TERM}")
            if not isinstance(key, bytes) or len(key) != KEY_LEN:
                raise BarrierError(f"keyring term {term}: the key must be {KEY_LEN} bytes")
        if not _is_int(self.active) or self.active != max(terms):
            raise BarrierError("the active keyring term must be the highest term")
        object.__setattr__(self, "terms", types.MappingProxyType(terms))

    def __repr__(self) -> str:
        return f"Keyring(terms={sorted(self.terms)}, active={self.active})"

    @staticmethod
    def new(*, rand: Rand = os.urandom) -> Keyring:
        """A keyring with one fresh random key, term 1."""
        return Keyring(terms={1: _random(rand, KEY_LEN)}, active=1)

    def rotated(self, *, rand: Rand = os.urandom) -> Keyring:
        """A copy with a fresh key at term ``active + 1``, which becomes active."""
        if self.active >= MAX_TERM:
            raise BarrierError("the keyring has run out of term numbers")
        terms = dict(self.terms)
        terms[self.active + 1] = _random(rand, KEY_LEN)
        return Keyring(terms=terms, active=self.active + 1)

    def encrypt(self, plaintext: bytes, aad: bytes, *, rand: Rand = os.urandom) -> bytes:
        """Encrypt under the active term; ``aad`` must be given again to decrypt."""
        header = _HEADER.pack(VERSION, self.active)
        nonce = _random(rand, NONCE_LEN)
        sealed = AESGCM(self.terms[self.active]).encrypt(nonce, plaintext, header + aad)
        return header + nonce + sealed

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt with the term named in ``blob``; ``DecryptError`` on any failure."""
        term = Keyring.term_of(blob)
        key = self.terms.get(term)
        if key is None:
            raise DecryptError(f"the ciphertext uses unknown keyring term {term}")
        header = blob[: _HEADER.size]
        nonce = blob[_HEADER.size : _HEADER.size + NONCE_LEN]
        try:
            return AESGCM(key).decrypt(nonce, blob[_HEADER.size + NONCE_LEN :], header + aad)
        except InvalidTag:
            raise DecryptError(
                "cannot decrypt: wrong key, wrong aad or corrupt ciphertext"
            ) from None

    @staticmethod
    def term_of(blob: bytes) -> int:
        """The keyring term a ciphertext was made with; ``DecryptError`` if malformed."""
        if len(blob) < _MIN_BLOB:
            raise DecryptError("the ciphertext is truncated")
        version, term = _HEADER.unpack_from(blob)
        if version != VERSION:
            raise DecryptError(f"unknown ciphertext version {version}")
        return int(term)

    def to_bytes(self) -> bytes:
        """msgpack ``{"v": 1, "active": n, "terms": [[term, key], ...]}`` (ascending terms)."""
        doc = {
            "v": VERSION,
            "active": self.active,
            "terms": [[term, self.terms[term]] for term in sorted(self.terms)],
        }
        out: bytes = msgpack.packb(doc, use_bin_type=True)
        return out

    @staticmethod
    def from_bytes(data: bytes) -> Keyring:
        """Parse ``to_bytes`` output; ``BarrierError`` on anything else."""
        if not isinstance(data, bytes):
            raise BarrierError("a serialized keyring must be bytes")
        try:
            doc: Any = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
        except (ValueError, msgpack.UnpackException):
            raise BarrierError("the serialized keyring is not valid msgpack") from None
        if not isinstance(doc, dict) or set(doc) != {"v", "active", "terms"}:
            raise BarrierError("the serialized keyring has the wrong shape")
        if not _is_int(doc["v"]) or doc["v"] != VERSION:
            raise BarrierError("unknown serialized keyring version")
        pairs = doc["terms"]
        if not isinstance(pairs, list):
            raise BarrierError("the serialized keyring's terms must be a list")
        terms: dict[int, bytes] = {}
        for pair in pairs:
            if not isinstance(pair, list) or len(pair) != 2:
                raise BarrierError("each serialized keyring term must be [term, key]")
            term, key = pair
            if not _is_int(term):
                raise BarrierError("a serialized keyring term number is not an int")
            if term in terms:
                raise BarrierError(f"the serialized keyring repeats term {term}")
            terms[term] = key
        return Keyring(terms=terms, active=doc["active"])

    def wrap(self, root_key: bytes, *, rand: Rand = os.urandom) -> bytes:
        """The keyring encrypted under the 32-byte root key (``sealcrypto.seal``)."""
        try:
            return sealcrypto.seal(root_key, self.to_bytes(), KEYRING_AAD, rand=rand)
        except sealcrypto.SealCryptoError as exc:
            raise BarrierError(str(exc)) from None

    @staticmethod
    def unwrap(root_key: bytes, blob: bytes) -> Keyring:
        """Reverse ``wrap``; ``DecryptError`` on a wrong root key or corrupt blob."""
        try:
            plain = sealcrypto.unseal(root_key, blob, KEYRING_AAD)
        except sealcrypto.SealCryptoError as exc:
            raise DecryptError(f"cannot unwrap the keyring: {exc}") from None
        return Keyring.from_bytes(plain)


class Barrier:
    """The node's in-memory view: sealed (no keyring) or unsealed (keyring held).
    Engines call encrypt/decrypt; both raise Sealed while sealed."""

    __slots__ = ("_keyring",)

    def __init__(self) -> None:
        self._keyring: Keyring | None = None

    def __repr__(self) -> str:
        return f"Barrier(sealed={self.sealed})"

    @property
    def sealed(self) -> bool:
        return self._keyring is None

    @property
    def keyring(self) -> Keyring:
        keyring = self._keyring
        if keyring is None:
            raise Sealed()
        return keyring

    def unseal(self, keyring: Keyring) -> None:
        """Hold ``keyring`` (also used to install a rotated keyring while unsealed)."""
        if not isinstance(keyring, Keyring):
            raise BarrierError("unseal needs a Keyring")
        self._keyring = keyring

    def seal(self) -> None:
        """Drop the keyring reference. (Python cannot wipe the key bytes themselves.)"""
        self._keyring = None

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        return self.keyring.encrypt(plaintext, aad)

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        return self.keyring.decrypt(blob, aad)


def check_value(root_key: bytes) -> bytes:
    """A public value that verifies a candidate root key without revealing it:
    HMAC-SHA256(root_key, b"stack root key check v1")."""
    return hmac.new(root_key, ROOT_CHECK_LABEL, hashlib.sha256).digest()


def verify_root(root_key: bytes, check: bytes) -> bool:
    """Whether ``root_key`` matches ``check`` (constant-time comparison)."""
    return hmac.compare_digest(check_value(root_key), check)


def new_root_key(*, rand: Rand = os.urandom) -> bytes:
    """A fresh 32-byte root key."""
    return _random(rand, KEY_LEN)
