"""The seal: whether this node holds the barrier's root key, and how it gets it.

The root key is split with Shamir into one share per voter, threshold = quorum
(`docs/security.md`). This module is the pure part: building the seal epochs the
leader proposes (genesis and every re-key), and turning shares into an unsealed
barrier. Collecting shares over the network lives in `stack/unseal.py`.

Epoch rows are described in `stack/state/seal.py`. A share is the Shamir share
bytes; in the log it is ECIES-encrypted to its voter's node key. A single-voter
cluster has no shares in the log: its one share (threshold 1, so it is the
root key) lives in the local seal key file, the documented dev trade-off.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from stack.vault import sealcrypto, shamir
from stack.vault.barrier import (
    Barrier,
    Keyring,
    check_value,
    new_root_key,
    verify_root,
)

Rand = Callable[[int], bytes]

RECOVERY_SHARES = 5
RECOVERY_THRESHOLD = 3
_P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)


class SealError(Exception):
    """A seal operation cannot proceed (bad recovery share, no epoch, ...)."""


def quorum(voters: int) -> int:
    return voters // 2 + 1


def share_aad(epoch: int, node_id: int) -> bytes:
    return f"stack/seal/{epoch}/{node_id}".encode()


def _recovery_private(recovery_key: bytes) -> ec.EllipticCurvePrivateKey:
    digest = hashlib.sha256(b"stack recovery key v1" + recovery_key).digest()
    scalar = int.from_bytes(digest, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def recovery_public_pem(recovery_key: bytes) -> bytes:
    return (
        _recovery_private(recovery_key)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _recovery_private_pem(recovery_key: bytes) -> bytes:
    return _recovery_private(recovery_key).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def encode_recovery_share(share: bytes) -> str:
    return base64.b64encode(share).decode()


def decode_recovery_share(text: str) -> bytes:
    try:
        share = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise SealError("a recovery share is base64 text as printed at bootstrap") from None
    if len(share) != 33:
        raise SealError("a recovery share decodes to 33 bytes; this one does not")
    return share


@dataclass(frozen=True, slots=True)
class Genesis:
    row: dict[str, Any]
    root: bytes
    keyring: Keyring
    recovery_shares: list[str]  # printed once, never stored
    local_share: bytes  # the single voter's share, for its seal key file


def genesis(voter: int, *, rand: Rand = os.urandom) -> Genesis:
    """Epoch 1 of a new cluster with one voter."""
    root = new_root_key(rand=rand)
    keyring = Keyring.new(rand=rand)
    recovery_key = rand(32)
    rshares = shamir.split(recovery_key, RECOVERY_SHARES, RECOVERY_THRESHOLD, rand=rand)
    row = _row(
        epoch=1,
        voters={voter: b""},
        root=root,
        keyring=keyring,
        keyring_version=1,
        prev=b"",
        recovery_pub=recovery_public_pem(recovery_key),
        recovery_threshold=RECOVERY_THRESHOLD,
        recovery_shares=RECOVERY_SHARES,
        rand=rand,
    )
    local = shamir.split(root, 1, 1, rand=rand)[0]
    return Genesis(row, root, keyring, [encode_recovery_share(s) for s in rshares], local)


@dataclass(frozen=True, slots=True)
class Rekey:
    row: dict[str, Any]
    root: bytes
    local_share: bytes | None  # set when the new epoch has a single voter


def rekey(
    prev_row: Mapping[str, Any],
    prev_root: bytes,
    keyring: Keyring,
    voters: Mapping[int, bytes],
    *,
    rand: Rand = os.urandom,
) -> Rekey:
    """The next epoch for `voters` (node id -> node public key PEM): a new root key,
    the keyring re-wrapped under it, and the previous root's link to it."""
    root = new_root_key(rand=rand)
    epoch = int(prev_row["epoch"]) + 1
    prev = sealcrypto.seal(prev_root, root, f"stack/seal/prev/{epoch}".encode(), rand=rand)
    row = _row(
        epoch=epoch,
        voters=voters,
        root=root,
        keyring=keyring,
        keyring_version=int(prev_row["keyring_version"]) + 1,
        prev=prev,
        recovery_pub=bytes(prev_row["recovery_pub"]),
        recovery_threshold=int(prev_row["recovery_threshold"]),
        recovery_shares=int(prev_row["recovery_shares"]),
        rand=rand,
    )
    local = shamir.split(root, 1, 1, rand=rand)[0] if len(voters) == 1 else None
    return Rekey(row, root, local)


def _row(
    *,
    epoch: int,
    voters: Mapping[int, bytes],
    root: bytes,
    keyring: Keyring,
    keyring_version: int,
    prev: bytes,
    recovery_pub: bytes,
    recovery_threshold: int,
    recovery_shares: int,
    rand: Rand,
) -> dict[str, Any]:
    ids = sorted(voters)
    threshold = quorum(len(ids))
    shares: dict[str, bytes] = {}
    if len(ids) > 1:
        parts = shamir.split(root, len(ids), threshold, rand=rand)
        for nid, part in zip(ids, parts, strict=True):
            shares[str(nid)] = sealcrypto.encrypt_to(
                voters[nid], part, share_aad(epoch, nid), rand=rand
            )
    recovery = sealcrypto.encrypt_to(
        recovery_pub, root, f"stack/seal/recovery/{epoch}".encode(), rand=rand
    )
    return {
        "epoch": epoch,
        "threshold": threshold,
        "voters": ids,
        "shares": shares,
        "check": check_value(root),
        "keyring": keyring.wrap(root, rand=rand),
        "keyring_version": keyring_version,
        "prev": prev,
        "recovery_pub": recovery_pub,
        "recovery": recovery,
        "recovery_threshold": recovery_threshold,
        "recovery_shares": recovery_shares,
    }


def own_share(row: Mapping[str, Any], node_id: int, key_pem: bytes) -> bytes | None:
    """This node's share of the row's epoch, decrypted with its node key."""
    blob = row["shares"].get(str(node_id))
    if blob is None:
        return None
    try:
        return sealcrypto.decrypt_with(key_pem, blob, share_aad(int(row["epoch"]), node_id))
    except sealcrypto.SealCryptoError:
        return None


def public_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a peer may send another: everything but the encrypted shares."""
    return {k: v for k, v in row.items() if k != "shares"}


@dataclass(frozen=True, slots=True)
class SealStatus:
    sealed: bool
    epoch: int
    shares_held: int
    shares_needed: int
    reason: str
    recovery_progress: int
    recovery_needed: int

    def to_json(self) -> dict[str, Any]:
        return {
            "sealed": self.sealed,
            "epoch": self.epoch,
            "shares_held": self.shares_held,
            "shares_needed": self.shares_needed,
            "reason": self.reason,
            "recovery_progress": self.recovery_progress,
            "recovery_needed": self.recovery_needed,
        }


class Seal:
    """This node's side of the seal: the root key of one epoch once unsealed."""

    def __init__(self, barrier: Barrier) -> None:
        self.barrier = barrier
        self.root: bytes | None = None
        self.epoch = 0
        self.keyring_version = 0
        self.shares_held = 0
        self.shares_needed = 0
        self.reason = "starting"
        self._recovery: list[bytes] = []

    @property
    def sealed(self) -> bool:
        return self.root is None

    def status(self, *, recovery_needed: int = 0) -> SealStatus:
        return SealStatus(
            self.sealed,
            self.epoch,
            self.shares_held,
            self.shares_needed,
            "" if not self.sealed else self.reason,
            len(self._recovery),
            recovery_needed,
        )

    def seal_now(self) -> None:
        self.root = None
        self.epoch = 0
        self.keyring_version = 0
        self.barrier.seal()
        self.reason = "sealed by request"

    def set_unsealed(self, row: Mapping[str, Any], root: bytes, keyring: Keyring) -> None:
        self.root = root
        self.epoch = int(row["epoch"])
        self.keyring_version = int(row["keyring_version"])
        self.barrier.unseal(keyring)
        self._recovery.clear()
        self.reason = ""

    def try_shares(
        self, rows: Iterable[Mapping[str, Any]], shares: Mapping[int, Iterable[bytes]]
    ) -> bool:
        """Unseal from the newest epoch that has enough shares; `shares` maps an epoch
        to the distinct shares collected for it (our own and our peers')."""
        by_epoch = _newest_rows(rows)
        best_held, best_needed = 0, 0
        for epoch in sorted(by_epoch, reverse=True):
            row = by_epoch[epoch]
            got = list(dict.fromkeys(shares.get(epoch, ())))
            need = int(row["threshold"])
            if not best_needed:
                best_held, best_needed = len(got), need
            if len(got) < need:
                continue
            root = _combine_checked(got, need, bytes(row["check"]))
            if root is None:
                continue
            self.set_unsealed(row, root, Keyring.unwrap(root, bytes(row["keyring"])))
            self.shares_held, self.shares_needed = len(got), need
            return True
        self.shares_held, self.shares_needed = best_held, best_needed
        self.reason = (
            f"holds {best_held} of the {best_needed} shares needed; waiting for peers"
            if best_needed
            else "no seal configuration in the log yet"
        )
        return False

    def add_recovery_share(self, rows: Iterable[Mapping[str, Any]], share: bytes) -> bool:
        """`stack operator unseal`: collect recovery shares; at the threshold, unseal
        the newest epoch with the recovery key. A wrong set starts over."""
        by_epoch = _newest_rows(rows)
        if not by_epoch:
            raise SealError("no seal configuration in the log")
        row = by_epoch[max(by_epoch)]
        if share not in self._recovery:
            self._recovery.append(share)
        need = int(row["recovery_threshold"])
        if len(self._recovery) < need:
            return False
        shares, self._recovery = self._recovery, []
        try:
            key = shamir.combine(shares)
            root = sealcrypto.decrypt_with(
                _recovery_private_pem(key),
                bytes(row["recovery"]),
                f"stack/seal/recovery/{int(row['epoch'])}".encode(),
            )
        except (shamir.ShamirError, sealcrypto.SealCryptoError):
            raise SealError("those recovery shares do not open this cluster's seal") from None
        if not verify_root(root, bytes(row["check"])):
            raise SealError("those recovery shares do not open this cluster's seal")
        self.set_unsealed(row, root, Keyring.unwrap(root, bytes(row["keyring"])))
        return True

    @property
    def recovery_progress(self) -> int:
        return len(self._recovery)

    def follow(self, rows: Iterable[Mapping[str, Any]]) -> bool:
        """After the seal table changed: move to newer epochs through their `prev`
        links and pick up a re-wrapped keyring. Returns whether anything changed."""
        if self.root is None:
            return False
        changed = False
        for epoch, row in sorted(_newest_rows(rows).items()):
            if epoch == self.epoch and int(row["keyring_version"]) > self.keyring_version:
                self.set_unsealed(row, self.root, Keyring.unwrap(self.root, bytes(row["keyring"])))
                changed = True
            elif epoch == self.epoch + 1:
                try:
                    root = sealcrypto.unseal(
                        self.root, bytes(row["prev"]), f"stack/seal/prev/{epoch}".encode()
                    )
                except sealcrypto.SealCryptoError:
                    continue
                if verify_root(root, bytes(row["check"])):
                    self.set_unsealed(row, root, Keyring.unwrap(root, bytes(row["keyring"])))
                    changed = True
        return changed


def _newest_rows(rows: Iterable[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """One row per epoch, the one with the newest keyring."""
    out: dict[int, Mapping[str, Any]] = {}
    for row in rows:
        epoch = int(row["epoch"])
        have = out.get(epoch)
        if have is None or int(row["keyring_version"]) > int(have["keyring_version"]):
            out[epoch] = row
    return out


def _combine_checked(shares: list[bytes], need: int, check: bytes) -> bytes | None:
    """Combine shares, skipping bad ones (a corrupt or lying peer) if there are spares."""
    for subset in itertools.islice(itertools.combinations(shares, need), 64):
        try:
            root = shamir.combine(list(subset))
        except shamir.ShamirError:
            continue
        if verify_root(root, check):
            return root
    return None


__all__ = [
    "Genesis",
    "Rekey",
    "Seal",
    "SealError",
    "SealStatus",
    "genesis",
    "own_share",
    "public_row",
    "quorum",
    "rekey",
]
