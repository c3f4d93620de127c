"""Password records for userpass: hashed on the node serving the request, before
anything is proposed, so the log and every replica hold only a salted hash.

scrypt with n=2**14, r=8, p=1, a 16-byte random salt per user, 32-byte output
(the parameters travel in the record, so they can be raised later without
breaking stored users). It is memory-hard (128*n*r = 16 MiB per hash), which
makes GPU and ASIC guessing of a stolen table far costlier than PBKDF2 at the
same CPU time, and the standard library has it (OpenSSL). Cost: ~50-80 ms of
one core and 16 MiB per login or password change; OpenSSL releases the GIL, so
the backend runs it in a worker thread behind a small semaphore and the event
loop keeps serving. PBKDF2-HMAC-SHA256 records (>= 100k iterations; OWASP
asks 600k today) are verified too, for users imported from elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
_MAXMEM = 64 * 1024 * 1024  # stored records need at most 32 MiB (state/userpass.py)


def _encode(password: str) -> bytes:
    # surrogateescape: a JSON body's lone surrogates hash instead of raising.
    return password.encode("utf-8", "surrogateescape")


def hash_password(password: str, *, salt: bytes | None = None) -> dict[str, Any]:
    """A new record for `password` (a fresh random salt unless one is given)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(
        _encode(password), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=HASH_BYTES
    )
    return {"algo": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
            "salt": salt, "hash": digest}  # fmt: skip


def verify_password(password: str, record: dict[str, Any]) -> bool:
    """Whether `password` matches `record` (compared in constant time). A record
    of an unknown algorithm never matches."""
    algo, salt, want = record.get("algo"), record.get("salt"), record.get("hash")
    if not isinstance(salt, bytes) or not isinstance(want, bytes):
        return False
    if algo == "scrypt":
        got = hashlib.scrypt(
            _encode(password), salt=salt, n=int(record["n"]), r=int(record["r"]),
            p=int(record["p"]), dklen=len(want), maxmem=_MAXMEM,
        )  # fmt: skip
    elif algo == "pbkdf2-sha256":
        got = hashlib.pbkdf2_hmac(
            "sha256", _encode(password), salt, int(record["iterations"]), len(want)
        )
    else:
        return False
    return hmac.compare_digest(got, want)


def decoy_record() -> dict[str, Any]:
    """A record no password matches, with the real parameters: a login for an
    unknown user verifies against it, so it costs what a wrong password costs and
    its timing does not tell which usernames exist."""
    return {"algo": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
            "salt": os.urandom(SALT_BYTES), "hash": os.urandom(HASH_BYTES)}  # fmt: skip
