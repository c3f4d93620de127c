"""Symmetric encryption of gossip packets: AES-256-GCM under a rotatable keyring.

A sealed blob is::

    version (1 byte, = 2) | key id (4 bytes) | sent at (8 bytes) | nonce (12 bytes)
    | ciphertext + tag (16 bytes)

The key id is the first 4 bytes of sha256(key); "sent at" is the sender's wall
clock in milliseconds since the epoch, big-endian, authenticated with the key id.
When `open` is given the receiver's time it refuses a blob sent more than
`REPLAY_WINDOW` seconds away from it ("stale") or one it has already opened within
that window ("replay": the nonce is remembered), so a captured packet cannot be
played back to resurrect or bury a member. `seal` always uses the primary
key; `open` uses whichever installed key the id names, so a ring can rotate keys
without a flag day: install the new key everywhere, `use` it everywhere, then
`remove` the old one everywhere. Between steps every member can still read every
other member's packets.

The keyring is mutable: `install`, `use` and `remove` change it in place, so a
running transport that holds a reference sees the change on its next packet.
It is not thread-safe (asyncio code calls it from one thread).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections import deque
from collections.abc import Callable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stack.gossip.errors import GossipError

VERSION = 2
KEY_SIZE = 32
KEY_ID_SIZE = 4
TIME_SIZE = 8
NONCE_SIZE = 12
TAG_SIZE = 16
AAD_SIZE = 1 + KEY_ID_SIZE + TIME_SIZE
HEADER_SIZE = AAD_SIZE + NONCE_SIZE
OVERHEAD = HEADER_SIZE + TAG_SIZE
"""Bytes `seal` adds to the plaintext."""
REPLAY_WINDOW = 60.0
"""Seconds a sealed blob stays acceptable (either side of the receiver's clock);
also how long its nonce is remembered. Member clocks must agree this closely."""
MAX_REMEMBERED = 1 << 20
"""Nonces remembered at most; past that the oldest are forgotten early."""

_TIME = struct.Struct(">Q")


class PacketRejected(GossipError):
    """A sealed blob could not be opened. `reason` is one of "short", "version",
    "unknown_key", "auth", "stale", "replay" (a stable label, fit for counting)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def key_id(key: bytes) -> bytes:
    """The 4-byte id that names `key` in sealed blobs."""
    return hashlib.sha256(key).digest()[:KEY_ID_SIZE]


def _check_key(key: bytes) -> bytes:
    key = bytes(key)
    if len(key) != KEY_SIZE:
        raise ValueError(f"gossip key must be {KEY_SIZE} bytes, got {len(key)}")
    return key


class GossipKeyring:
    """Installed keys by id, one of them primary (used to seal)."""

    def __init__(
        self, keys: Sequence[bytes], primary: bytes, *, window: float = REPLAY_WINDOW
    ) -> None:
        self._keys: dict[bytes, tuple[bytes, AESGCM]] = {}
        for k in keys:
            self.install(k)
        self.install(primary)
        self._primary = key_id(_check_key(primary))
        self.window = window
        self._seen: set[bytes] = set()
        self._seen_order: deque[tuple[float, bytes]] = deque()

    # ---- sealing ----------------------------------------------------------------

    def seal(
        self, plaintext: bytes, now: float = 0.0, rand: Callable[[int], bytes] = os.urandom
    ) -> bytes:
        """Encrypt and authenticate `plaintext` under the primary key, stamped with
        `now` (wall-clock seconds since the epoch)."""
        kid = self._primary
        aead = self._keys[kid][1]
        nonce = rand(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise ValueError("rand returned a nonce of the wrong size")
        aad = bytes([VERSION]) + kid + _TIME.pack(max(0, int(now * 1000)))
        return aad + nonce + aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes | bytearray | memoryview, now: float | None = None) -> bytes:
        """Decrypt a blob from `seal` under any installed key; raises `PacketRejected`.
        With `now` (the receiver's wall clock), also refuse stale and replayed blobs."""
        data = bytes(blob)
        if len(data) < OVERHEAD:
            raise PacketRejected("short")
        if data[0] != VERSION:
            raise PacketRejected("version")
        kid = data[1 : 1 + KEY_ID_SIZE]
        entry = self._keys.get(kid)
        if entry is None:
            raise PacketRejected("unknown_key")
        nonce = data[AAD_SIZE:HEADER_SIZE]
        try:
            plaintext = entry[1].decrypt(nonce, data[HEADER_SIZE:], data[:AAD_SIZE])
        except InvalidTag:
            raise PacketRejected("auth") from None
        if now is not None:
            (sent_ms,) = _TIME.unpack_from(data, 1 + KEY_ID_SIZE)
            self._check_fresh(sent_ms / 1000, nonce, now)
        return plaintext

    def _check_fresh(self, sent: float, nonce: bytes, now: float) -> None:
        # Checked only after authentication, so garbage cannot fill the memory.
        if abs(now - sent) > self.window:
            raise PacketRejected("stale")
        order = self._seen_order
        while order and (order[0][0] <= now or len(order) >= MAX_REMEMBERED):
            self._seen.discard(order.popleft()[1])
        if nonce in self._seen:
            raise PacketRejected("replay")
        self._seen.add(nonce)
        order.append((now + 2 * self.window, nonce))

    # ---- rotation ---------------------------------------------------------------

    def install(self, key: bytes) -> None:
        """Accept packets sealed with `key` (idempotent)."""
        key = _check_key(key)
        kid = key_id(key)
        have = self._keys.get(kid)
        if have is not None:
            if have[0] != key:
                raise ValueError("a different installed key has the same key id")
            return
        self._keys[kid] = (key, AESGCM(key))

    def use(self, key: bytes) -> None:
        """Seal with `key` from now on; it must be installed."""
        kid = key_id(_check_key(key))
        have = self._keys.get(kid)
        if have is None or have[0] != bytes(key):
            raise KeyError("key is not installed")
        self._primary = kid

    def remove(self, key: bytes) -> None:
        """Stop accepting `key`; the primary key cannot be removed."""
        kid = key_id(_check_key(key))
        have = self._keys.get(kid)
        if have is None or have[0] != bytes(key):
            raise KeyError("key is not installed")
        if kid == self._primary:
            raise ValueError("cannot remove the primary key")
        del self._keys[kid]

    def retain(self, keys: Sequence[bytes]) -> None:
        """Forget every installed key not in `keys` (which must hold the primary)."""
        keep = {key_id(_check_key(k)) for k in keys}
        if self._primary not in keep:
            raise ValueError("cannot remove the primary key")
        for kid in [k for k in self._keys if k not in keep]:
            del self._keys[kid]

    def key_ids(self) -> list[bytes]:
        """Ids of the installed keys, the primary first, then in install order."""
        return [self._primary, *(k for k in self._keys if k != self._primary)]

    @property
    def primary_id(self) -> bytes:
        return self._primary
