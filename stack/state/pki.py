"""The PKI secrets engine's replicated state (Vault's PKI under the one cluster CA).

A PKI mount (a row of `secrets_mounts` with type "pki") has one issuer: an
intermediate CA signed by the cluster root (docs/pki.md), its private key barrier
ciphertext made by the leader. Roles say which names and lifetimes a certificate
may have; issued certificates are stored (DER, public) unless their role says
no_store; revocations feed the CRL. Times are unix seconds chosen by the leader and
carried in the body, so every replica applies the same thing.

Commands (numbers are permanent, see docs/state.md):
  PKI_ISSUER_SET (160)  {"mount", "cert": PEM, "key": ct, "chain": [PEM], "root_gen",
                        "not_after", "version", "now"}: replaces the issuer only when
                        `version` is the current version + 1 (1 for the first), so two
                        servers that both make one cannot both win; bumps the CRL
  PKI_ROLE_WRITE (161)  {"mount", "name", "role": Role.to_dict()}
  PKI_ROLE_DELETE (162) {"mount", "name"}
  PKI_CERT_STORE (163)  {"mount", "certs": [{"serial", "der", "expiration"[, "lease",
                        "issued"]}]}: all or nothing (a serial already stored refuses the
                        batch); "lease" ("issue/<role>" or "sign/<role>") and "issued"
                        make the certificate a lease (Vault's generate_lease)
  PKI_REVOKE (164)      {"mount", "serial", "time", "expiration": float | None}; a serial
                        that is not stored (a no_store certificate) is revoked only when
                        the body carries its expiration; bumps the CRL; ends its lease
  PKI_CRL_BUMP (165)    {"mount", "now"}: a new CRL number (the CRL is rebuilt)
  PKI_TIDY (166)        {"mount", "now", "safety_buffer", "tidy_cert_store",
                        "tidy_revoked_certs"}: drops certificates and revocation
                        entries that expired more than safety_buffer before now
  PKI_LEASE_EXPIRE (167) {"mount", "now", "limit"}: ends up to `limit` leases whose
                        certificate expired by `now` (no CRL entry: an expired
                        certificate needs none); answers {"expired": n, "more": bool}

Tables (keys are mount + NUL + ..., like secrets.py; `purge_mount` deletes the
prefix `mount + NUL` from each, for `secrets.apply_mount_disable`):
  pki_issuers  mount+NUL         -> {"cert", "key", "chain", "root_gen", "not_after",
                                    "version", "created"}
  pki_crl      mount+NUL         -> {"number", "this_update"}
  pki_roles    mount+NUL+name    -> Role.to_dict()
  pki_certs    mount+NUL+serial  -> {"der", "expiration"[, "lease", "issued"]}
  pki_revoked  mount+NUL+serial  -> {"time", "expiration"}
  pki_leases   mount+NUL+<expiration, 12 digits>/<serial> -> True: the expiry index of
               the certificates that are leases (a leased certificate's expiration
               is a whole second, as notAfter is), kept in step with the "lease"
               field by every command that sets or clears it (as tokens keep
               `acl_token_expiry`), so the leader's sweep reads only what is due.
A certificate's lease lives on its row, so a lease and its certificate cannot
disagree: it ends when the certificate is revoked, expires or is tidied away.
Serials are Vault's "xx:xx:..." form (lower-case hex bytes, no leading zero byte).

A body of the wrong shape or type is a bug and raises TypeError. Anything a user can
get wrong (a bad role, an unknown or already revoked serial, a negative buffer) is
an expected refusal: `WriteResult(False, index, {"error": message, "reason": code})`
with a code from `Refusal`, identical on every replica. The engine checks the same
things first (`Role.validated`, `check_serial`) to answer 400 without the log.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Any

from stack.state import secrets as secretsstate
from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.fields import as_body as _body
from stack.state.fields import as_bool as _bool
from stack.state.fields import as_bytes as _bytes
from stack.state.fields import as_int as _int
from stack.state.fields import as_seconds as _seconds
from stack.state.fields import field as _get
from stack.state.fields import get_str as _str
from stack.state.pki_role import (
    MAX_DURATION,
    Role,
    validate_role_name,
)
from stack.state.store import StateStore

ISSUERS_TABLE = "pki_issuers"
CRL_TABLE = "pki_crl"
ROLES_TABLE = "pki_roles"
CERTS_TABLE = "pki_certs"
REVOKED_TABLE = "pki_revoked"
LEASES_TABLE = "pki_leases"
TABLES = (ISSUERS_TABLE, CRL_TABLE, ROLES_TABLE, CERTS_TABLE, REVOKED_TABLE, LEASES_TABLE)

PKI_ISSUER_SET = 160
PKI_ROLE_WRITE = 161
PKI_ROLE_DELETE = 162
PKI_CERT_STORE = 163
PKI_REVOKE = 164
PKI_CRL_BUMP = 165
PKI_TIDY = 166
PKI_LEASE_EXPIRE = 167

MOUNT_TYPE = "pki"
SEP = secretsstate.SEP
MAX_PEM_BYTES = 64 * 1024
MAX_DER_BYTES = 16 * 1024
MAX_BATCH = 1024
MAX_CHAIN = 8
_SERIAL = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){0,19}")
_SECOND_DIGITS = 12  # lease index keys sort as strings up to the year 33658
MAX_EXPIRE_BATCH = 1024


class Refusal(enum.StrEnum):
    """`data["reason"]` of a refused write, for the engine to pick a status code."""

    NO_MOUNT = "no_mount"  # nothing mounted there, or not a pki mount
    INVALID = "invalid"  # a bad role, serial, buffer, size
    NOT_FOUND = "not_found"  # revoking a serial this mount does not know
    EXISTS = "exists"  # storing a serial twice
    ALREADY_REVOKED = "already_revoked"
    EXPIRED = "expired"  # revoking a certificate that has already expired
    CONFLICT = "conflict"  # the issuer changed since the caller read it


def check_serial(serial: str) -> None:
    """Raise ValueError unless `serial` is in the canonical "xx:xx:.." form."""
    if not _SERIAL.fullmatch(serial) or serial.startswith("00:"):
        raise ValueError(f"{serial[:80]!r} is not a serial number of the form xx:xx:...")


def check_lease_path(path: str) -> None:
    """Raise ValueError unless `path` is where a leased certificate came from:
    "issue/<role>" or "sign/<role>"."""
    kind, _, role = path.partition("/")
    if kind not in ("issue", "sign"):
        raise ValueError(f"{path[:80]!r} is not a lease path (issue/<role> or sign/<role>)")
    validate_role_name(role)


@dataclass(frozen=True, slots=True)
class CertEntry:
    """A certificate to store; with `lease` ("issue/<role>" or "sign/<role>") it is
    also a lease, issued at `issued`, that ends at `expiration`."""

    serial: str
    der: bytes
    expiration: float
    lease: str = ""
    issued: float = 0.0

    def to_body(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "serial": self.serial,
            "der": self.der,
            "expiration": float(self.expiration),
        }
        if self.lease:
            row |= {"lease": self.lease, "issued": float(self.issued)}
        return row


def register(registry: CommandRegistry) -> None:
    registry.register(PKI_ISSUER_SET, "pki.issuer_set", apply_issuer_set)
    registry.register(PKI_ROLE_WRITE, "pki.role_write", apply_role_write)
    registry.register(PKI_ROLE_DELETE, "pki.role_delete", apply_role_delete)
    registry.register(PKI_CERT_STORE, "pki.cert_store", apply_cert_store)
    registry.register(PKI_REVOKE, "pki.revoke", apply_revoke)
    registry.register(PKI_CRL_BUMP, "pki.crl_bump", apply_crl_bump)
    registry.register(PKI_TIDY, "pki.tidy", apply_tidy)
    registry.register(PKI_LEASE_EXPIRE, "pki.lease_expire", apply_lease_expire)


# -- command builders (the leader encodes, every replica applies)


def encode_issuer_set(
    registry: CommandRegistry,
    mount: str,
    *,
    cert: bytes,
    key_ct: bytes,
    chain: list[bytes],
    root_gen: int,
    not_after: float,
    version: int,
    now: float,
) -> bytes:
    body = {
        "mount": mount,
        "cert": cert,
        "key": key_ct,
        "chain": list(chain),
        "root_gen": root_gen,
        "not_after": float(not_after),
        "version": version,
        "now": float(now),
    }
    return registry.encode(PKI_ISSUER_SET, body)


def encode_role_write(registry: CommandRegistry, mount: str, name: str, role: Role) -> bytes:
    body = {"mount": mount, "name": name, "role": role.to_dict()}
    return registry.encode(PKI_ROLE_WRITE, body)


def encode_role_delete(registry: CommandRegistry, mount: str, name: str) -> bytes:
    return registry.encode(PKI_ROLE_DELETE, {"mount": mount, "name": name})


def encode_cert_store(registry: CommandRegistry, mount: str, certs: list[CertEntry]) -> bytes:
    rows = [cert.to_body() for cert in certs]
    return registry.encode(PKI_CERT_STORE, {"mount": mount, "certs": rows})


def encode_revoke(
    registry: CommandRegistry,
    mount: str,
    serial: str,
    *,
    time: float,
    expiration: float | None = None,
) -> bytes:
    body = {
        "mount": mount,
        "serial": serial,
        "time": float(time),
        "expiration": None if expiration is None else float(expiration),
    }
    return registry.encode(PKI_REVOKE, body)


def encode_crl_bump(registry: CommandRegistry, mount: str, *, now: float) -> bytes:
    return registry.encode(PKI_CRL_BUMP, {"mount": mount, "now": float(now)})


def encode_tidy(
    registry: CommandRegistry,
    mount: str,
    *,
    now: float,
    safety_buffer: float,
    tidy_cert_store: bool,
    tidy_revoked_certs: bool,
) -> bytes:
    body = {
        "mount": mount,
        "now": float(now),
        "safety_buffer": float(safety_buffer),
        "tidy_cert_store": tidy_cert_store,
        "tidy_revoked_certs": tidy_revoked_certs,
    }
    return registry.encode(PKI_TIDY, body)


def encode_lease_expire(
    registry: CommandRegistry, mount: str, *, now: float, limit: int = MAX_EXPIRE_BATCH
) -> bytes:
    return registry.encode(PKI_LEASE_EXPIRE, {"mount": mount, "now": float(now), "limit": limit})


# -- body fields (a wrong type is a bug in the encoder: TypeError)


def _finite(value: float) -> bool:
    return math.isfinite(value) and 0 <= value <= 1e11  # unix seconds before year 5138


def _refuse(ctx: ApplyContext, reason: Refusal, error: str, **extra: Any) -> WriteResult:
    return WriteResult(False, ctx.index, {"error": error, "reason": reason.value, **extra})


def _key(mount: str, rest: str = "") -> str:
    return mount + SEP + rest


def _no_mount(ctx: ApplyContext, mount: str) -> WriteResult | None:
    found = ctx.store.table(secretsstate.MOUNTS_TABLE).get(mount)
    if found is None or found.value.get("type") != MOUNT_TYPE:
        return _refuse(ctx, Refusal.NO_MOUNT, f"no pki secrets engine is mounted at {mount!r}")
    return None


def _bump_crl(ctx: ApplyContext, mount: str, now: float) -> int:
    table = ctx.store.table(CRL_TABLE)
    row = table.get(_key(mount))
    number = 1 if row is None else int(row.value["number"]) + 1
    table.put(_key(mount), {"number": number, "this_update": now}, ctx.index)
    return number


def _lease_key(mount: str, expiration: float, serial: str) -> str:
    return _key(mount, f"{math.floor(expiration):0{_SECOND_DIGITS}d}/{serial}")


def _unindex(ctx: ApplyContext, mount: str, serial: str, value: dict[str, Any]) -> bool:
    """Drop the lease index entry of a stored certificate; False if it is no lease."""
    if "lease" not in value:
        return False
    ctx.store.table(LEASES_TABLE).delete(_lease_key(mount, value["expiration"], serial), ctx.index)
    return True


def _end_lease(ctx: ApplyContext, mount: str, serial: str, value: dict[str, Any]) -> None:
    """Clear the lease of a stored certificate (if it is one) and its index entry."""
    if _unindex(ctx, mount, serial, value):
        kept = {k: v for k, v in value.items() if k not in ("lease", "issued")}
        ctx.store.table(CERTS_TABLE).put(_key(mount, serial), kept, ctx.index)


# -- apply


def apply_issuer_set(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    mount = _str(body, "mount")
    cert, key = _bytes(_get(body, "cert"), "cert"), _bytes(_get(body, "key"), "key")
    raw_chain = _get(body, "chain")
    if not isinstance(raw_chain, list):
        raise TypeError("chain must be a list")
    chain = [_bytes(c, "chain entry") for c in raw_chain]
    root_gen = _int(_get(body, "root_gen"), "root_gen")
    not_after = _seconds(_get(body, "not_after"), "not_after")
    version = _int(_get(body, "version"), "version")
    now = _seconds(_get(body, "now"), "now")
    if (refused := _no_mount(ctx, mount)) is not None:
        return refused
    if len(cert) > MAX_PEM_BYTES or len(key) > MAX_PEM_BYTES or len(chain) > MAX_CHAIN:
        return _refuse(ctx, Refusal.INVALID, "issuer certificate, key or chain too large")
    if any(len(c) > MAX_PEM_BYTES for c in chain) or not (_finite(not_after) and _finite(now)):
        return _refuse(ctx, Refusal.INVALID, "issuer chain too large or times out of range")
    table = ctx.store.table(ISSUERS_TABLE)
    found = table.get(_key(mount))
    current = 0 if found is None else int(found.value["version"])
    if version != current + 1:
        error = f"the issuer of {mount} changed (now version {current}); read it again"
        return _refuse(ctx, Refusal.CONFLICT, error, version=current)
    row = {
        "cert": cert,
        "key": key,
        "chain": chain,
        "root_gen": root_gen,
        "not_after": not_after,
        "version": version,
        "created": now,
    }
    table.put(_key(mount), row, ctx.index)
    number = _bump_crl(ctx, mount, now)  # a new signer: a new CRL
    return WriteResult(True, ctx.index, {"version": version, "crl_number": number})


def apply_role_write(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    mount, name = _str(body, "mount"), _str(body, "name")
    role = Role.from_dict(_get(body, "role"))
    if (refused := _no_mount(ctx, mount)) is not None:
        return refused
    try:
        validate_role_name(name)
        role = role.validated()
    except ValueError as e:
        return _refuse(ctx, Refusal.INVALID, str(e))
    table = ctx.store.table(ROLES_TABLE)
    created = _key(mount, name) not in table
    table.put(_key(mount, name), role.to_dict(), ctx.index)
    return WriteResult(True, ctx.index, {"created": created})


def apply_role_delete(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    mount, name = _str(body, "mount"), _str(body, "name")
    if (refused := _no_mount(ctx, mount)) is not None:
        return refused
    deleted = ctx.store.table(ROLES_TABLE).delete(_key(mount, name), ctx.index) is not None
    return WriteResult(True, ctx.index, {"deleted": deleted})


def apply_cert_store(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    mount = _str(body, "mount")
    raw = _get(body, "certs")
    if not isinstance(raw, list):
        raise TypeError("certs must be a list")
    certs: list[CertEntry] = []
    for entry in raw:
        entry = _body(entry)
        leased = "lease" in entry
        certs.append(
            CertEntry(
                _str(entry, "serial"),
                _bytes(_get(entry, "der"), "der"),
                _seconds(_get(entry, "expiration"), "expiration"),
                _str(entry, "lease") if leased else "",
                _seconds(_get(entry, "issued"), "issued") if leased else 0.0,
            )
        )
    if (refused := _no_mount(ctx, mount)) is not None:
        return refused
    if not 0 < len(certs) <= MAX_BATCH:
        return _refuse(ctx, Refusal.INVALID, f"store 1 to {MAX_BATCH} certificates at a time")
    table = ctx.store.table(CERTS_TABLE)
    seen: set[str] = set()
    for cert in certs:
        serial = cert.serial
        try:
            check_serial(serial)
            if cert.lease:
                check_lease_path(cert.lease)
        except ValueError as e:
            return _refuse(ctx, Refusal.INVALID, str(e))
        if not cert.der or len(cert.der) > MAX_DER_BYTES or not _finite(cert.expiration):
            return _refuse(
                ctx, Refusal.INVALID, f"certificate {serial}: empty, too large or bad expiration"
            )
        if cert.lease and not (
            _finite(cert.issued) and cert.issued <= cert.expiration == int(cert.expiration)
        ):  # a lease ends on a whole second, as notAfter does; its index key is exact
            return _refuse(ctx, Refusal.INVALID, f"certificate {serial}: bad lease times")
        if serial in seen or _key(mount, serial) in table:
            return _refuse(
                ctx, Refusal.EXISTS, f"a certificate with serial {serial} is already stored"
            )
        seen.add(serial)
    leases = ctx.store.table(LEASES_TABLE)
    for cert in certs:
        row = cert.to_body()
        del row["serial"]
        table.put(_key(mount, cert.serial), row, ctx.index)
        if cert.lease:
            leases.put(_lease_key(mount, cert.expiration, cert.serial), True, ctx.index)
    return WriteResult(True, ctx.index, {"stored": len(certs)})


def apply_revoke(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    mount, serial = _str(body, "mount"), _str(body, "serial")
    when = _seconds(_get(body, "time"), "time")
    raw_exp = _get(body, "expiration")
    given = None if raw_exp is None else _seconds(raw_exp, "expiration")
    if (refused := _no_mount(ctx, mount)) is not None:
        return refused
    try:
        check_serial(serial)
    except ValueError as e:
        return _refuse(ctx, Refusal.INVALID, str(e))
    if not _finite(when) or (given is not None and not _finite(given)):
        return _refuse(ctx, Refusal.INVALID, "revocation or expiration time out of range")
    revoked = ctx.store.table(REVOKED_TABLE)
    key = _key(mount, serial)
    if (prior := revoked.get(key)) is not None:
        error = f"certificate with serial {serial} is already revoked"
        return _refuse(ctx, Refusal.ALREADY_REVOKED, error, revocation_time=prior.value["time"])
    stored = ctx.store.table(CERTS_TABLE).get(key)
    if stored is not None:
        expiration = float(stored.value["expiration"])
    elif given is not None:
        expiration = given  # a no_store certificate the caller has seen
    else:
        return _refuse(ctx, Refusal.NOT_FOUND, f"certificate with serial {serial} not found")
    if expiration <= when:
        error = f"certificate with serial {serial} has already expired; nothing to revoke"
        return _refuse(ctx, Refusal.EXPIRED, error)
    revoked.put(key, {"time": when, "expiration": expiration}, ctx.index)
    if stored is not None:
        _end_lease(ctx, mount, serial, stored.value)  # nothing is left for it to revoke
    number = _bump_crl(ctx, mount, when)
    return WriteResult(True, ctx.index, {"revocation_time": when, "crl_number": number})


def apply_crl_bump(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    mount = _str(body, "mount")
    now = _seconds(_get(body, "now"), "now")
    if (refused := _no_mount(ctx, mount)) is not None:
        return refused
    if not _finite(now):
        return _refuse(ctx, Refusal.INVALID, "now out of range")
    return WriteResult(True, ctx.index, {"crl_number": _bump_crl(ctx, mount, now)})


def apply_tidy(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    mount = _str(body, "mount")
    now = _seconds(_get(body, "now"), "now")
    buffer = _seconds(_get(body, "safety_buffer"), "safety_buffer")
    certs_too = _bool(_get(body, "tidy_cert_store"), "tidy_cert_store")
    revoked_too = _bool(_get(body, "tidy_revoked_certs"), "tidy_revoked_certs")
    if (refused := _no_mount(ctx, mount)) is not None:
        return refused
    if not _finite(now) or not 0 <= buffer <= MAX_DURATION:
        return _refuse(ctx, Refusal.INVALID, "safety_buffer must be between 0 and 100 years")
    cutoff = now - buffer
    prefix = _key(mount)
    dropped = {"cert_store_deleted": 0, "revoked_cert_deleted": 0}
    for name, table_name, wanted in (
        ("cert_store_deleted", CERTS_TABLE, certs_too),
        ("revoked_cert_deleted", REVOKED_TABLE, revoked_too),
    ):
        if not wanted:
            continue
        table = ctx.store.table(table_name)
        for row in table.scan(prefix):
            if float(row.value["expiration"]) < cutoff:
                if table_name == CERTS_TABLE:  # a lease the sweep has not ended yet
                    _unindex(ctx, mount, row.key[len(prefix) :], row.value)
                table.delete(row.key, ctx.index)
                dropped[name] += 1
    answer: dict[str, Any] = dict(dropped)
    if dropped["revoked_cert_deleted"]:
        answer["crl_number"] = _bump_crl(ctx, mount, now)
    return WriteResult(True, ctx.index, answer)


def apply_lease_expire(ctx: ApplyContext, body: Any) -> WriteResult:
    body = _body(body)
    mount = _str(body, "mount")
    now = _seconds(_get(body, "now"), "now")
    limit = _int(_get(body, "limit"), "limit")
    if (refused := _no_mount(ctx, mount)) is not None:
        return refused
    if not _finite(now) or not 0 < limit <= MAX_EXPIRE_BATCH:
        return _refuse(ctx, Refusal.INVALID, f"now out of range or limit not 1-{MAX_EXPIRE_BATCH}")
    prefix = _key(mount)
    certs = ctx.store.table(CERTS_TABLE)
    expired = 0
    for key in ctx.store.table(LEASES_TABLE).keys(prefix):  # a copy: ending deletes keys
        second, _, serial = key[len(prefix) :].partition("/")
        if int(second) > now:
            break
        row = certs.get(_key(mount, serial))
        if row is None:
            raise KeyError(f"the lease index of {mount} names a missing certificate {serial}")
        if expired == limit:
            return WriteResult(True, ctx.index, {"expired": expired, "more": True})
        _end_lease(ctx, mount, serial, row.value)
        expired += 1
    return WriteResult(True, ctx.index, {"expired": expired, "more": False})


def purge_mount(ctx: ApplyContext, mount: str) -> int:
    """Drop every PKI row of `mount` (for `secrets.apply_mount_disable`); rows removed."""
    return sum(len(ctx.store.table(name).delete_prefix(_key(mount), ctx.index)) for name in TABLES)


# -- reads (any replica that holds the state; pure functions of the store)


@dataclass(frozen=True, slots=True)
class IssuerRow:
    cert: bytes  # PEM
    key: bytes  # barrier ciphertext of the PEM key
    chain: list[bytes]  # PEM: the cluster root (and cross-certificate) above the issuer
    root_gen: int
    not_after: float
    version: int
    created: float


@dataclass(frozen=True, slots=True)
class CertRow:
    serial: str
    der: bytes
    expiration: float
    revocation_time: float | None
    lease: str = ""  # "issue/<role>" or "sign/<role>" while the certificate is a lease
    issued: float = 0.0  # when its lease began


@dataclass(frozen=True, slots=True)
class Revoked:
    serial: str
    time: float
    expiration: float


@dataclass(frozen=True, slots=True)
class CrlInfo:
    number: int
    this_update: float


def get_issuer(store: StateStore, mount: str) -> IssuerRow | None:
    row = store.table(ISSUERS_TABLE).get(_key(mount))
    if row is None:
        return None
    v = row.value
    return IssuerRow(
        bytes(v["cert"]),
        bytes(v["key"]),
        [bytes(c) for c in v["chain"]],
        int(v["root_gen"]),
        float(v["not_after"]),
        int(v["version"]),
        float(v["created"]),
    )


def get_role(store: StateStore, mount: str, name: str) -> Role | None:
    row = store.table(ROLES_TABLE).get(_key(mount, name))
    return None if row is None else Role.from_dict(row.value)


def role_index(store: StateStore, mount: str, name: str) -> int:
    """The modify index of a role (0: none), for callers that cache parsed roles."""
    row = store.table(ROLES_TABLE).get(_key(mount, name))
    return 0 if row is None else row.modify_index


def list_roles(store: StateStore, mount: str) -> list[str]:
    prefix = _key(mount)
    return [key[len(prefix) :] for key in store.table(ROLES_TABLE).keys(prefix)]


def get_cert(store: StateStore, mount: str, serial: str) -> CertRow | None:
    row = store.table(CERTS_TABLE).get(_key(mount, serial))
    if row is None:
        return None
    rev = store.table(REVOKED_TABLE).get(_key(mount, serial))
    v = row.value
    return CertRow(
        serial,
        bytes(v["der"]),
        float(v["expiration"]),
        None if rev is None else float(rev.value["time"]),
        str(v.get("lease", "")),
        float(v.get("issued", 0.0)),
    )


def list_certs(store: StateStore, mount: str) -> list[str]:
    prefix = _key(mount)
    return [key[len(prefix) :] for key in store.table(CERTS_TABLE).keys(prefix)]


def leased_serials(store: StateStore, mount: str) -> list[str]:
    """The serials of the mount's certificates that are leases, earliest expiry first."""
    prefix = _key(mount)
    return [key[len(prefix) :].partition("/")[2] for key in store.table(LEASES_TABLE).keys(prefix)]


def next_lease_expiry(store: StateStore, mount: str) -> float | None:
    """When the mount's first lease ends (None: it has none); the leader proposes
    `pki.lease_expire` once it has passed."""
    prefix = _key(mount)
    first = store.table(LEASES_TABLE).first_key(prefix)
    return None if first is None else float(first[len(prefix) :].partition("/")[0])


def list_revoked(store: StateStore, mount: str) -> list[Revoked]:
    prefix = _key(mount)
    return [
        Revoked(row.key[len(prefix) :], float(row.value["time"]), float(row.value["expiration"]))
        for row in store.table(REVOKED_TABLE).scan(prefix)
    ]


def crl_info(store: StateStore, mount: str) -> CrlInfo | None:
    row = store.table(CRL_TABLE).get(_key(mount))
    if row is None:
        return None
    return CrlInfo(int(row.value["number"]), float(row.value["this_update"]))
