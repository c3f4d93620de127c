"""The barrier keyring, its wrapping under the root key, and the sealed/unsealed view."""

from __future__ import annotations

import os
import random
import struct

import msgpack
import pytest

from stack.vault.barrier import (
    Barrier,
    BarrierError,
    DecryptError,
    Keyring,
    Sealed,
    check_value,
    new_root_key,
    verify_root,
)

SECRET = b"-----BEGIN PRIVATE KEY----- a recognisable secret value"
AAD = b"ca/root/1"


def test_new_keyring_has_term_one() -> None:
    ring = Keyring.new()
    assert ring.active == 1
    assert list(ring.terms) == [1]
    assert len(ring.terms[1]) == 32


def test_round_trip() -> None:
    ring = Keyring.new()
    blob = ring.encrypt(SECRET, AAD)
    assert blob[0] == 1
    assert struct.unpack(">I", blob[1:5]) == (1,)
    assert len(blob) == 5 + 12 + len(SECRET) + 16
    assert SECRET not in blob
    assert Keyring.term_of(blob) == 1
    assert ring.decrypt(blob, AAD) == SECRET


def test_empty_plaintext_round_trips() -> None:
    ring = Keyring.new()
    assert ring.decrypt(ring.encrypt(b"", b""), b"") == b""


def test_encrypt_is_deterministic_given_rand() -> None:
    ring = Keyring.new(rand=random.Random(1).randbytes)
    assert ring == Keyring.new(rand=random.Random(1).randbytes)
    a = ring.encrypt(SECRET, AAD, rand=random.Random(2).randbytes)
    assert a == ring.encrypt(SECRET, AAD, rand=random.Random(2).randbytes)
    assert a != ring.encrypt(SECRET, AAD)


def test_rotation_keeps_old_terms_and_uses_the_new_one() -> None:
    ring1 = Keyring.new()
    old = ring1.encrypt(SECRET, AAD)
    ring2 = ring1.rotated()
    ring3 = ring2.rotated()
    assert ring1.active == 1 and list(ring1.terms) == [1]  # unchanged
    assert ring3.active == 3
    assert sorted(ring3.terms) == [1, 2, 3]
    assert ring3.terms[1] == ring1.terms[1]
    assert len({ring3.terms[t] for t in (1, 2, 3)}) == 3
    new = ring3.encrypt(SECRET, AAD)
    assert Keyring.term_of(new) == 3
    assert ring3.decrypt(old, AAD) == SECRET
    assert ring3.decrypt(new, AAD) == SECRET
    with pytest.raises(DecryptError, match="unknown keyring term 3"):
        ring1.decrypt(new, AAD)


def test_every_tampered_byte_fails() -> None:
    ring = Keyring.new().rotated()
    blob = ring.encrypt(b"value", AAD)
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x01
        with pytest.raises(DecryptError):
            ring.decrypt(bytes(tampered), AAD)


def test_wrong_aad_fails() -> None:
    ring = Keyring.new()
    blob = ring.encrypt(SECRET, b"ca/root/1")
    with pytest.raises(DecryptError, match="wrong aad") as info:
        ring.decrypt(blob, b"ca/root/2")
    assert SECRET.decode() not in str(info.value)


def test_another_keyrings_ciphertext_fails() -> None:
    blob = Keyring.new().encrypt(SECRET, AAD)
    with pytest.raises(DecryptError):
        Keyring.new().decrypt(blob, AAD)


def test_unknown_term_fails() -> None:
    ring = Keyring.new()
    blob = ring.encrypt(SECRET, AAD)
    moved = blob[:1] + struct.pack(">I", 9) + blob[5:]
    with pytest.raises(DecryptError, match="unknown keyring term 9"):
        ring.decrypt(moved, AAD)


def test_truncated_and_bad_version_fail() -> None:
    ring = Keyring.new()
    blob = ring.encrypt(SECRET, AAD)
    for length in (0, 1, 5, 17, 32):
        with pytest.raises(DecryptError, match="truncated"):
            ring.decrypt(blob[:length], AAD)
        with pytest.raises(DecryptError):
            Keyring.term_of(blob[:length])
    with pytest.raises(DecryptError, match="version"):
        ring.decrypt(b"\x02" + blob[1:], AAD)


def test_serialization_round_trip() -> None:
    ring = Keyring.new().rotated().rotated()
    data = ring.to_bytes()
    back = Keyring.from_bytes(data)
    assert back == ring
    assert back.active == 3
    assert dict(back.terms) == dict(ring.terms)


def test_terms_are_read_only_and_copied() -> None:
    source = {1: bytes(32)}
    ring = Keyring(terms=source, active=1)
    source[2] = bytes(32)
    assert list(ring.terms) == [1]
    with pytest.raises(TypeError):
        ring.terms[2] = bytes(32)  # type: ignore[index]


def test_repr_does_not_show_keys() -> None:
    ring = Keyring(terms={1: b"K" * 32, 2: b"L" * 32}, active=2)
    assert repr(ring) == "Keyring(terms=[1, 2], active=2)"
    assert "KKKK" not in repr(ring) and "KKKK" not in str(ring)


def _pack(doc: object) -> bytes:
    data: bytes = msgpack.packb(doc, use_bin_type=True)
    return data


GOOD_KEY = bytes(32)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used msgpack byte
        b"garbage that is not msgpack at all \xff\xff",
        _pack([1, 1, [[1, GOOD_KEY]]]),
        _pack({"v": 1, "active": 1}),
        _pack({"v": 1, "active": 1, "terms": [[1, GOOD_KEY]], "extra": 0}),
        _pack({"v": 2, "active": 1, "terms": [[1, GOOD_KEY]]}),
        _pack({"v": True, "active": 1, "terms": [[1, GOOD_KEY]]}),
        _pack({"v": 1, "active": "1", "terms": [[1, GOOD_KEY]]}),
        _pack({"v": 1, "active": True, "terms": [[1, GOOD_KEY]]}),
        _pack({"v": 1, "active": 1, "terms": {1: GOOD_KEY}}),
        _pack({"v": 1, "active": 1, "terms": []}),
        _pack({"v": 1, "active": 1, "terms": [[1, bytes(31)]]}),
        _pack({"v": 1, "active": 1, "terms": [[1, bytes(33)]]}),
        _pack({"v": 1, "active": 1, "terms": [[1, "k" * 32]]}),
        _pack({"v": 1, "active": 1, "terms": [["1", GOOD_KEY]]}),
        _pack({"v": 1, "active": 1, "terms": [[1.0, GOOD_KEY]]}),
        _pack({"v": 1, "active": 0, "terms": [[0, GOOD_KEY]]}),
        _pack({"v": 1, "active": 1, "terms": [[-1, GOOD_KEY], [1, GOOD_KEY]]}),
        _pack({"v": 1, "active": 2**32, "terms": [[2**32, GOOD_KEY]]}),
        _pack({"v": 1, "active": 1, "terms": [[1, GOOD_KEY], [2, GOOD_KEY]]}),
        _pack({"v": 1, "active": 3, "terms": [[1, GOOD_KEY]]}),
        _pack({"v": 1, "active": 1, "terms": [[1, GOOD_KEY], [1, GOOD_KEY]]}),
        _pack({"v": 1, "active": 1, "terms": [[1, GOOD_KEY, 0]]}),
        _pack({"v": 1, "active": 1, "terms": [1]}),
        _pack({"v": 1, "active": 1, "terms": [[1, GOOD_KEY]]}) + b"\x00",  # trailing bytes
        _pack({"v": 1, "active": 1, "terms": [[1, GOOD_KEY]]})[:-1],  # truncated
    ],
)
def test_from_bytes_rejects_garbage(data: bytes) -> None:
    with pytest.raises(BarrierError):
        Keyring.from_bytes(data)


def test_from_bytes_accepts_the_documented_format() -> None:
    ring = Keyring.from_bytes(
        _pack({"v": 1, "active": 2, "terms": [[1, b"a" * 32], [2, b"b" * 32]]})
    )
    assert ring.active == 2
    assert ring.terms[2] == b"b" * 32


@pytest.mark.parametrize(
    ("terms", "active"),
    [
        ({}, 1),
        ({1: bytes(31)}, 1),
        ({0: bytes(32)}, 0),
        ({1: bytes(32)}, 2),
        ({1: bytes(32), 2: bytes(32)}, 1),
        ({True: bytes(32)}, 1),
    ],
)
def test_constructor_validates(terms: dict[int, bytes], active: int) -> None:
    with pytest.raises(BarrierError):
        Keyring(terms=terms, active=active)


def test_wrap_and_unwrap() -> None:
    ring = Keyring.new().rotated()
    root = new_root_key()
    assert len(root) == 32
    blob = ring.wrap(root)
    assert ring.terms[1] not in blob and ring.terms[2] not in blob
    assert ring.to_bytes() not in blob
    assert Keyring.unwrap(root, blob) == ring


def test_unwrap_with_the_wrong_root_key_fails() -> None:
    blob = Keyring.new().wrap(new_root_key())
    with pytest.raises(DecryptError, match="cannot unwrap"):
        Keyring.unwrap(new_root_key(), blob)
    with pytest.raises(DecryptError):
        Keyring.unwrap(bytes(16), blob)


def test_unwrap_of_a_tampered_blob_fails() -> None:
    root = new_root_key()
    blob = bytearray(Keyring.new().wrap(root))
    blob[-1] ^= 1
    with pytest.raises(DecryptError):
        Keyring.unwrap(root, bytes(blob))


def test_wrap_needs_a_32_byte_root_key() -> None:
    with pytest.raises(BarrierError):
        Keyring.new().wrap(bytes(31))


def test_random_source_is_checked() -> None:
    with pytest.raises(BarrierError):
        Keyring.new(rand=lambda n: bytes(n - 1))
    with pytest.raises(BarrierError):
        Keyring.new().encrypt(b"x", b"", rand=lambda n: b"")
    with pytest.raises(BarrierError):
        new_root_key(rand=lambda n: bytes(n + 1))


def test_new_root_key_uses_rand() -> None:
    assert new_root_key(rand=lambda n: b"\x07" * n) == b"\x07" * 32


def test_check_value_and_verify_root() -> None:
    root = new_root_key()
    check = check_value(root)
    assert len(check) == 32
    assert root not in check
    assert check == check_value(root)
    assert verify_root(root, check)
    assert not verify_root(new_root_key(), check)
    assert not verify_root(root, check[:-1])
    assert not verify_root(root, b"")


def test_barrier_starts_sealed() -> None:
    barrier = Barrier()
    assert barrier.sealed
    with pytest.raises(Sealed, match="the barrier is sealed"):
        _ = barrier.keyring
    with pytest.raises(Sealed):
        barrier.encrypt(SECRET, AAD)
    with pytest.raises(Sealed):
        barrier.decrypt(b"\x01" + bytes(40), AAD)


def test_barrier_unseal_encrypt_decrypt_seal() -> None:
    barrier = Barrier()
    ring = Keyring.new()
    barrier.unseal(ring)
    assert not barrier.sealed
    assert barrier.keyring is ring
    blob = barrier.encrypt(SECRET, AAD)
    assert SECRET not in blob
    assert barrier.decrypt(blob, AAD) == SECRET
    assert ring.decrypt(blob, AAD) == SECRET
    with pytest.raises(DecryptError):
        barrier.decrypt(blob, b"other")

    barrier.seal()
    assert barrier.sealed
    with pytest.raises(Sealed):
        barrier.decrypt(blob, AAD)
    with pytest.raises(Sealed):
        barrier.encrypt(SECRET, AAD)
    assert "Keyring" not in repr(barrier)

    barrier.unseal(ring.rotated())
    assert barrier.decrypt(blob, AAD) == SECRET
    assert Keyring.term_of(barrier.encrypt(SECRET, AAD)) == 2


def test_barrier_unseal_needs_a_keyring() -> None:
    with pytest.raises(BarrierError):
        Barrier().unseal(os.urandom(32))  # type: ignore[arg-type]


def test_error_hierarchy() -> None:
    assert issubclass(Sealed, BarrierError)
    assert issubclass(DecryptError, BarrierError)
    assert not issubclass(BarrierError, ValueError)
