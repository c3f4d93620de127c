"""Shamir secret sharing over GF(2^8), one independent polynomial per secret byte.

A share is ``len(secret)`` bytes of polynomial values followed by one byte, the
x-coordinate at which every polynomial was evaluated. ``split`` hands out the
x-coordinates ``1..n`` in order (the coordinate carries no information about the
secret, so a fixed assignment is as good as a random one and easier to reason about).

Each byte of the secret is the constant term of a polynomial of degree ``k - 1``
whose other ``k - 1`` coefficients are uniformly random bytes. ``combine``
evaluates the Lagrange interpolation at ``x = 0``. Given fewer than ``k`` shares it
returns bytes unrelated to the secret (that is the point of the scheme), so callers
must verify the result against a check value.

The field is GF(2^8) modulo the AES polynomial ``x^8 + x^4 + x^3 + x + 1`` (0x11b);
addition is XOR and multiplication goes through log/exp tables with generator 3.
Table lookups in Python are not constant-time; the shares are only ever combined on
a node that is being unsealed, by an operator who holds them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

__all__ = ["MAX_SHARES", "ShamirError", "combine", "split"]

MAX_SHARES = 255

Rand = Callable[[int], bytes]


class ShamirError(ValueError):
    """Bad parameters to ``split`` or malformed shares given to ``combine``."""


def _build_tables() -> tuple[tuple[int, ...], tuple[int, ...]]:
    exp = [0] * 510
    log = [0] * 256
    value = 1
    for power in range(255):
        exp[power] = value
        log[value] = power
        # value *= 3, i.e. value ^ xtime(value), reduced modulo 0x11b
        doubled = value << 1
        if doubled & 0x100:
            doubled ^= 0x11B
        value ^= doubled
    if value != 1:  # pragma: no cover - 3 generates the multiplicative group
        raise AssertionError("3 is not a generator of GF(2^8)*")
    for power in range(255, 510):
        exp[power] = exp[power - 255]
    return tuple(exp), tuple(log)


# exp[i] = 3**i for 0 <= i < 510 (doubled so a sum of two logs needs no reduction);
# log[v] = i with 3**i == v for v != 0 (log[0] is unused).
_EXP, _LOG = _build_tables()


def _mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def _div(a: int, b: int) -> int:
    if b == 0:  # pragma: no cover - callers never divide by zero
        raise ZeroDivisionError("division by zero in GF(2^8)")
    if a == 0:
        return 0
    return _EXP[_LOG[a] + 255 - _LOG[b]]


def _mul_table(c: int) -> bytes:
    """The 256-byte translation table of multiplication by ``c``: use with bytes.translate."""
    return bytes(_mul(v, c) for v in range(256))


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def split(secret: bytes, n: int, k: int, *, rand: Rand = os.urandom) -> list[bytes]:
    """Split ``secret`` into ``n`` shares of which any ``k`` recover it.

    Share ``i`` (0-based) has x-coordinate ``i + 1``. With ``k == 1`` every share is
    the secret followed by its x tag, so each alone recovers it.
    """
    if not isinstance(secret, bytes | bytearray):
        raise ShamirError("the secret must be bytes")
    if not secret:
        raise ShamirError("the secret must not be empty")
    for name, value in (("n", n), ("k", k)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ShamirError(f"{name} must be an int")
    if not 1 <= k <= n <= MAX_SHARES:
        raise ShamirError(f"need 1 <= k <= n <= {MAX_SHARES}, got k={k} n={n}")
    length = len(secret)
    wanted = length * (k - 1)
    noise = rand(wanted)
    if len(noise) != wanted:
        raise ShamirError("the random source returned the wrong number of bytes")
    # coefficients[d] holds the degree-d coefficient of every byte's polynomial.
    coefficients = [bytes(secret)] + [noise[d * length : (d + 1) * length] for d in range(k - 1)]
    shares: list[bytes] = []
    for x in range(1, n + 1):
        times_x = _mul_table(x)
        # Horner's rule, all bytes at once: acc = acc * x + c.
        acc = coefficients[-1]
        for coefficient in reversed(coefficients[:-1]):
            acc = _xor(acc.translate(times_x), coefficient)
        shares.append(acc + bytes([x]))
    return shares


def combine(shares: Sequence[bytes]) -> bytes:
    """Recover the secret from shares made by ``split`` (Lagrange interpolation at 0).

    Raises ``ShamirError`` when there are no shares, a share is shorter than two
    bytes, the shares differ in length, or two share an x-coordinate (or one has
    x-coordinate 0, which ``split`` never produces). With fewer than ``k`` valid
    shares the result is unrelated to the secret.
    """
    if len(shares) < 1:
        raise ShamirError("need at least one share")
    length = len(shares[0])
    xs: list[int] = []
    for share in shares:
        if not isinstance(share, bytes | bytearray):
            raise ShamirError("shares must be bytes")
        if len(share) < 2:
            raise ShamirError("a share is too short (under 2 bytes)")
        if len(share) != length:
            raise ShamirError("the shares differ in length")
        x = share[-1]
        if x == 0:
            raise ShamirError("a share has x-coordinate 0")
        if x in xs:
            raise ShamirError("two shares have the same x-coordinate")
        xs.append(x)
    secret = bytes(length - 1)
    for i, share in enumerate(shares):
        # L_i(0) = prod_{j != i} x_j / (x_j - x_i); subtraction is XOR here.
        numerator = 1
        denominator = 1
        for j, x_j in enumerate(xs):
            if j != i:
                numerator = _mul(numerator, x_j)
                denominator = _mul(denominator, x_j ^ xs[i])
        basis = _div(numerator, denominator)
        secret = _xor(secret, bytes(share[:-1]).translate(_mul_table(basis)))
    return secret
