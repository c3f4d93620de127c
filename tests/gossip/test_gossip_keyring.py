"""GossipKeyring: AES-256-GCM sealing and key rotation."""

from __future__ import annotations

import pytest

from stack.gossip.keyring import OVERHEAD, GossipKeyring, PacketRejected, key_id

K1 = bytes(range(32))
K2 = bytes(range(1, 33))
K3 = b"\x07" * 32
MSG = b"ping from a:7946"


def reason(ring: GossipKeyring, blob: bytes) -> str:
    with pytest.raises(PacketRejected) as info:
        ring.open(blob)
    return info.value.reason


def test_round_trip_and_layout() -> None:
    ring = GossipKeyring([K1], K1)
    nonce = b"\x01" * 12
    blob = ring.seal(MSG, 1234.5678, rand=lambda n: nonce)
    assert blob[0] == 2
    assert blob[1:5] == key_id(K1)
    assert int.from_bytes(blob[5:13], "big") == 1234567
    assert blob[13:25] == nonce
    assert len(blob) == len(MSG) + OVERHEAD
    assert ring.open(blob) == MSG
    assert ring.open(ring.seal(b"")) == b""
    assert ring.seal(MSG) != ring.seal(MSG)  # fresh nonces


def test_wrong_key_is_unknown() -> None:
    blob = GossipKeyring([K1], K1).seal(MSG)
    assert reason(GossipKeyring([K2], K2), blob) == "unknown_key"


def test_tampering_any_byte_is_rejected() -> None:
    ring = GossipKeyring([K1, K2], K1)
    blob = ring.seal(MSG)
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        r = reason(ring, bytes(bad))
        assert r == ("version" if i == 0 else "unknown_key" if i < 5 else "auth"), i


def test_key_id_swapped_to_other_installed_key_fails_auth() -> None:
    ring = GossipKeyring([K1, K2], K1)
    blob = ring.seal(MSG)
    forged = blob[:1] + key_id(K2) + blob[5:]
    assert reason(ring, forged) == "auth"


def test_short_and_version() -> None:
    ring = GossipKeyring([K1], K1)
    assert reason(ring, b"") == "short"
    assert reason(ring, ring.seal(MSG)[: OVERHEAD - 1]) == "short"
    blob = ring.seal(MSG)
    assert reason(ring, b"\x01" + blob[1:]) == "version"


def test_unknown_key_id() -> None:
    ring = GossipKeyring([K1], K1)
    blob = ring.seal(MSG)
    assert reason(ring, blob[:1] + b"\xde\xad\xbe\xef" + blob[5:]) == "unknown_key"


def test_rotation_install_use_remove() -> None:
    a = GossipKeyring([K1], K1)
    b = GossipKeyring([K1], K1)
    a.install(K2)
    b.install(K2)
    assert set(a.key_ids()) == {key_id(K1), key_id(K2)}
    a.use(K2)
    assert a.key_ids()[0] == key_id(K2)
    # b is still sealing with the old primary: a reads it, and b reads a.
    assert a.open(b.seal(MSG)) == MSG
    assert b.open(a.seal(MSG)) == MSG
    b.use(K2)
    a.remove(K1)
    b.remove(K1)
    assert a.key_ids() == [key_id(K2)]
    assert a.open(b.seal(MSG)) == MSG
    old = GossipKeyring([K1], K1)
    assert reason(a, old.seal(MSG)) == "unknown_key"


def test_rotation_rules() -> None:
    ring = GossipKeyring([K1], K1)
    with pytest.raises(KeyError):
        ring.use(K2)  # not installed
    with pytest.raises(ValueError):
        ring.remove(K1)  # primary
    with pytest.raises(KeyError):
        ring.remove(K3)
    with pytest.raises(ValueError):
        ring.install(b"short")
    with pytest.raises(ValueError):
        GossipKeyring([], b"\x00" * 16)
    ring.install(K1)  # idempotent
    assert ring.key_ids() == [key_id(K1)]
    # the primary is installed even if not listed
    assert GossipKeyring([], K2).key_ids() == [key_id(K2)]


def test_stale_and_replayed_blobs_are_refused_when_the_time_is_given() -> None:
    ring = GossipKeyring([K1], K1, window=30.0)
    now = 1_800_000_000.0
    blob = ring.seal(MSG, now)
    assert ring.open(blob, now + 1) == MSG
    assert reason_at(ring, blob, now + 2) == "replay"
    assert ring.open(blob) == MSG  # without a time: crypto only (offline tools, tests)
    assert reason_at(ring, ring.seal(MSG, now - 31), now) == "stale"
    assert reason_at(ring, ring.seal(MSG, now + 31), now) == "stale"
    assert ring.open(ring.seal(MSG, now - 29), now) == MSG
    # The timestamp is authenticated: moving it forward breaks the tag.
    moved = bytearray(ring.seal(MSG, now - 100))
    moved[5:13] = int(now * 1000).to_bytes(8, "big")
    assert reason_at(ring, bytes(moved), now) == "auth"
    # A nonce is forgotten only once a blob carrying it would be stale anyway.
    fresh = ring.seal(MSG, now + 10)
    assert ring.open(fresh, now + 10) == MSG
    assert reason_at(ring, fresh, now + 39) == "replay"
    assert reason_at(ring, fresh, now + 71) == "stale"


def reason_at(ring: GossipKeyring, blob: bytes, now: float) -> str:
    with pytest.raises(PacketRejected) as info:
        ring.open(blob, now)
    return info.value.reason
