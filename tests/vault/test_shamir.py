"""Shamir secret sharing over GF(2^8)."""

from __future__ import annotations

import itertools
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.vault import shamir
from stack.vault.shamir import ShamirError, combine, split


def _seeded(seed: int) -> shamir.Rand:
    rng = random.Random(seed)
    return rng.randbytes


@st.composite
def _split_case(draw: st.DrawFn) -> tuple[bytes, int, int, list[int]]:
    secret = draw(st.binary(min_size=1, max_size=48))
    n = draw(st.integers(min_value=1, max_value=12))
    k = draw(st.integers(min_value=1, max_value=n))
    size = draw(st.integers(min_value=k, max_value=n))
    chosen = draw(st.permutations(range(n)))[:size]
    return secret, n, k, chosen


@given(case=_split_case(), seed=st.integers(min_value=0, max_value=2**32))
@settings(max_examples=300, deadline=None)
def test_any_k_or_more_shares_recover_the_secret(
    case: tuple[bytes, int, int, list[int]], seed: int
) -> None:
    secret, n, k, chosen = case
    shares = split(secret, n, k, rand=_seeded(seed))
    assert len(shares) == n
    assert all(len(s) == len(secret) + 1 for s in shares)
    assert sorted(s[-1] for s in shares) == list(range(1, n + 1))
    assert combine([shares[i] for i in chosen]) == secret


@given(
    secret=st.binary(min_size=32, max_size=32),
    n=st.integers(min_value=2, max_value=10),
    data=st.data(),
)
@settings(max_examples=100, deadline=None)
def test_fewer_than_k_shares_do_not_recover(secret: bytes, n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(min_value=2, max_value=n))
    chosen = data.draw(st.permutations(range(n)))[: k - 1]
    shares = split(secret, n, k)  # real randomness: a fixed seed could be unlucky only once
    # 32 random coefficient bytes: a match is a 2**-256 event.
    assert combine([shares[i] for i in chosen]) != secret


def test_every_subset_of_a_small_split() -> None:
    secret = os.urandom(32)
    shares = split(secret, 5, 3)
    for size in range(1, 6):
        for subset in itertools.combinations(shares, size):
            if size >= 3:
                assert combine(list(subset)) == secret
            else:
                assert combine(list(subset)) != secret


def test_the_largest_split() -> None:
    secret = os.urandom(32)
    shares = split(secret, 255, 255)
    assert sorted(s[-1] for s in shares) == list(range(1, 256))
    assert combine(shares) == secret
    assert combine(list(reversed(shares))) == secret
    assert combine(shares[:254]) != secret


def test_k_one_gives_copies_with_distinct_tags() -> None:
    secret = b"the root key"
    shares = split(secret, 4, 1)
    assert [s[-1] for s in shares] == [1, 2, 3, 4]
    for share in shares:
        assert share[:-1] == secret
        assert combine([share]) == secret


def test_split_is_deterministic_given_rand() -> None:
    assert split(b"abc", 5, 3, rand=_seeded(1)) == split(b"abc", 5, 3, rand=_seeded(1))
    assert split(b"abc", 5, 3, rand=_seeded(1)) != split(b"abc", 5, 3, rand=_seeded(2))


def test_shares_do_not_contain_the_secret() -> None:
    secret = b"a long enough secret to be recognisable!"
    for share in split(secret, 5, 2):
        assert secret not in share


def test_field_multiplication_matches_fips_197() -> None:
    assert shamir._mul(0x57, 0x83) == 0xC1
    assert shamir._mul(0x57, 0x13) == 0xFE
    for a in range(1, 256):
        assert shamir._mul(a, shamir._div(1, a)) == 1


def test_known_vector() -> None:
    # f(x) = 0x2a + 0x03 x + 0x07 x^2 over GF(2^8) mod 0x11b, evaluated by hand:
    # f(1) = 0x2a ^ 0x03 ^ 0x07 = 0x2e
    # f(2) = 0x2a ^ 0x06 ^ 0x07*0x04 (0x1c) = 0x30
    # f(3) = 0x2a ^ 0x03*0x03 (0x05) ^ 0x07*0x05 (0x1b) = 0x34   (3*3 = 5 in GF(2^8))
    coefficients = bytes([0x03, 0x07])
    shares = split(b"\x2a", 3, 3, rand=lambda n: coefficients[:n])
    assert shares == [b"\x2e\x01", b"\x30\x02", b"\x34\x03"]
    assert combine([b"\x34\x03", b"\x2e\x01", b"\x30\x02"]) == b"\x2a"


@pytest.mark.parametrize(
    ("secret", "n", "k"),
    [
        (b"", 3, 2),
        (b"s", 0, 0),
        (b"s", 3, 0),
        (b"s", 2, 3),
        (b"s", 256, 2),
        (b"s", 3, True),
    ],
)
def test_split_rejects_bad_parameters(secret: bytes, n: int, k: int) -> None:
    with pytest.raises(ShamirError):
        split(secret, n, k)


def test_split_rejects_a_short_random_source() -> None:
    with pytest.raises(ShamirError):
        split(b"secret", 3, 2, rand=lambda n: b"\x00")


@pytest.mark.parametrize(
    "shares",
    [
        [],
        [b"\x01"],
        [b"ab\x01", b"a\x02"],
        [b"ab\x01", b"cd\x01"],
        [b"ab\x00", b"cd\x01"],
        [b"", b""],
    ],
)
def test_combine_rejects_malformed_shares(shares: list[bytes]) -> None:
    with pytest.raises(ShamirError):
        combine(shares)


def test_shamir_error_is_a_value_error() -> None:
    assert issubclass(ShamirError, ValueError)
