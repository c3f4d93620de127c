"""The PKI engine's replicated state: the issuer's compare-and-set, roles, the
certificate store, revocation (incl. no_store certificates), CRL numbers, tidy
with its safety buffer, certificates that are leases (their expiry index and the
leader's sweep), refusals that change nothing, determinism and snapshots."""

from __future__ import annotations

from typing import Any

import pytest
from state_helpers import Log, substrate_registry

from stack.state import pki
from stack.state import secrets as secretsstate
from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.errors import ApplyFailed
from stack.state.fsm import FSM
from stack.state.pki import Refusal
from stack.state.pki_role import Role

M = "pki/"
DAY = 86400.0
TEST_MOUNT = 9000  # test-only: the lead's mount enable will write the same row


def _apply_test_mount(ctx: ApplyContext, body: Any) -> WriteResult:
    """A secrets mount row of the given type (secrets.mount_enable knows only kv)."""
    row = {"type": body["type"], "version": 1, "description": "",
           "options": dict(secretsstate.DEFAULT_OPTIONS),
           "created": 0.0, "accessor": "acc_" + body["path"]}  # fmt: skip
    ctx.store.table(secretsstate.MOUNTS_TABLE).put(body["path"], row, ctx.index)
    return WriteResult(True, ctx.index)


def _registry() -> CommandRegistry:
    registry = substrate_registry()
    secretsstate.register(registry)
    pki.register(registry)
    registry.register(TEST_MOUNT, "test.mount", _apply_test_mount)
    return registry


def _log(*mounts: str) -> Log:
    log = Log(FSM(_registry()))
    for mount in mounts or (M,):
        log.apply(log.registry.encode(TEST_MOUNT, {"path": mount, "type": "pki"}))
    return log


def _ok(result: object) -> dict[str, Any]:
    assert isinstance(result, WriteResult), result
    assert result.ok, result.data
    data: dict[str, Any] = result.data
    return data


def _refused(log: Log, cmd: bytes, reason: Refusal) -> str:
    """Apply `cmd`, expect the refusal, and check that it changed no table."""
    before = log.store.dump()["tables"]
    result = log.apply(cmd)
    assert isinstance(result, WriteResult), result
    assert not result.ok and result.data["reason"] == reason.value, result.data
    assert log.store.dump()["tables"] == before
    error: str = result.data["error"]
    return error


def _issuer(log: Log, version: int = 1, mount: str = M, now: float = 100.0) -> bytes:
    return pki.encode_issuer_set(
        log.registry, mount, cert=b"CERT%d" % version, key_ct=b"ct", chain=[b"ROOT"],
        root_gen=1, not_after=now + 365 * DAY, version=version, now=now,
    )  # fmt: skip


def _store(log: Log, *certs: tuple[str, float], mount: str = M, lease: str = "",
           issued: float = 0.0) -> bytes:  # fmt: skip
    rows = [pki.CertEntry(serial, b"DER-" + serial.encode(), exp, lease, issued)
            for serial, exp in certs]  # fmt: skip
    return pki.encode_cert_store(log.registry, mount, rows)


def _revoke(log: Log, serial: str, time: float, expiration: float | None = None) -> bytes:
    return pki.encode_revoke(log.registry, M, serial, time=time, expiration=expiration)


def _tidy(log: Log, now: float, buffer: float = 3 * DAY, certs: bool = True,
          revoked: bool = True) -> bytes:  # fmt: skip
    return pki.encode_tidy(log.registry, M, now=now, safety_buffer=buffer,
                           tidy_cert_store=certs, tidy_revoked_certs=revoked)  # fmt: skip


def test_register_uses_numbers_160_to_179() -> None:
    mine = [spec for spec in _registry() if spec.name.startswith("pki.")]
    assert len(mine) == 8
    assert all(160 <= spec.type_id <= 179 and not spec.ignorable for spec in mine)


# -- the issuer


def test_issuer_set_is_a_compare_and_set_on_its_version() -> None:
    log = _log()
    assert _ok(log.apply(_issuer(log, 1))) == {"version": 1, "crl_number": 1}
    row = pki.get_issuer(log.store, M)
    assert row is not None and row.cert == b"CERT1" and row.key == b"ct" and row.chain == [b"ROOT"]
    # a second server that also saw no issuer loses the race
    assert "changed" in _refused(log, _issuer(log, 1), Refusal.CONFLICT)
    assert _ok(log.apply(_issuer(log, 2, now=200.0)))["crl_number"] == 2  # a new signer
    info = pki.crl_info(log.store, M)
    assert info is not None and (info.number, info.this_update) == (2, 200.0)
    _refused(log, _issuer(log, 4), Refusal.CONFLICT)


def test_pki_commands_need_a_pki_mount() -> None:
    log = _log()
    log.apply(log.registry.encode(TEST_MOUNT, {"path": "kv/", "type": "kv"}))
    for mount in ("nothing/", "kv/"):
        _refused(log, _issuer(log, 1, mount=mount), Refusal.NO_MOUNT)
        _refused(log, _store(log, ("01", 10.0), mount=mount), Refusal.NO_MOUNT)


def test_wrong_types_are_bugs_that_stop_the_node() -> None:
    log = _log()
    bad = log.registry.encode(pki.PKI_REVOKE, {"mount": M, "serial": 1, "time": 1.0,
                                               "expiration": None})  # fmt: skip
    with pytest.raises(ApplyFailed) as err:
        log.apply(bad)
    assert isinstance(err.value.__cause__, TypeError)
    role = Role().to_dict() | {"mystery": True}
    with pytest.raises(ApplyFailed):
        log.apply(log.registry.encode(pki.PKI_ROLE_WRITE, {"mount": M, "name": "r", "role": role}))


# -- roles


def test_role_write_read_list_delete() -> None:
    log = _log()
    web = Role(allowed_domains=("example.com",), allow_subdomains=True, max_ttl=3600.0)
    assert _ok(log.apply(pki.encode_role_write(log.registry, M, "web", web))) == {"created": True}
    assert _ok(log.apply(pki.encode_role_write(log.registry, M, "db", Role(no_store=True))))
    stored = pki.get_role(log.store, M, "web")
    assert stored == web.validated() and stored is not None and stored.key_bits == 256
    assert pki.list_roles(log.store, M) == ["db", "web"]
    assert pki.role_index(log.store, M, "web") > 0 and pki.role_index(log.store, M, "x") == 0
    again = log.apply(pki.encode_role_write(log.registry, M, "web", web))
    assert _ok(again) == {"created": False}
    assert _ok(log.apply(pki.encode_role_delete(log.registry, M, "web"))) == {"deleted": True}
    assert _ok(log.apply(pki.encode_role_delete(log.registry, M, "web"))) == {"deleted": False}
    assert pki.list_roles(log.store, M) == ["db"]


@pytest.mark.parametrize(
    ("name", "role", "message"),
    [
        ("bad/name", Role(), "role name"),
        ("", Role(), "role name"),
        ("r", Role(ttl=7200.0, max_ttl=3600.0), '"ttl" value must be less than "max_ttl"'),
        ("r", Role(key_type="dsa"), "unknown key_type"),
        ("r", Role(key_bits=1024), "unsupported bit length for EC key: 1024"),
        ("r", Role(key_type="rsa", key_bits=1024), "RSA key: 1024"),
        ("r", Role(key_usage=("Sorcery",)), "unknown key_usage"),
        ("r", Role(cn_validations=("disabled", "email")), "cannot be combined"),
        ("r", Role(ttl=-1.0), "ttl must be between"),
        ("r", Role(ou=("",)), "empty entries"),
    ],
)
def test_bad_roles_are_refused(name: str, role: Role, message: str) -> None:
    log = _log()
    error = _refused(log, pki.encode_role_write(log.registry, M, name, role), Refusal.INVALID)
    assert message in error


def test_role_round_trips_through_its_stored_form() -> None:
    role = Role(allowed_domains=("a.com", "b.com"), ou=("x",), ttl=5.0, key_type="rsa")
    assert Role.from_dict(role.to_dict()) == role
    assert Role.from_dict({}) == Role()  # fields an older writer left out take the defaults
    assert Role(key_usage=("digitalsignature",)).validated().key_usage == ("DigitalSignature",)


# -- certificates and revocation


def test_cert_store_keeps_der_and_expiration() -> None:
    log = _log()
    assert _ok(log.apply(_store(log, ("0a:01", 500.0), ("0b", 600.0)))) == {"stored": 2}
    row = pki.get_cert(log.store, M, "0a:01")
    assert row is not None and row.der == b"DER-0a:01" and row.expiration == 500.0
    assert row.revocation_time is None
    assert pki.list_certs(log.store, M) == ["0a:01", "0b"]


def test_cert_store_is_all_or_nothing() -> None:
    log = _log()
    _ok(log.apply(_store(log, ("01", 500.0))))
    _refused(log, _store(log, ("02", 500.0), ("01", 500.0)), Refusal.EXISTS)
    _refused(log, _store(log, ("03", 500.0), ("03", 500.0)), Refusal.EXISTS)
    for bad in ("1", "00:01", "0G", "01:", "AB"):
        _refused(log, _store(log, (bad, 500.0)), Refusal.INVALID)
    _refused(log, pki.encode_cert_store(log.registry, M, []), Refusal.INVALID)
    assert pki.list_certs(log.store, M) == ["01"]


def test_revoke_a_stored_certificate_once() -> None:
    log = _log()
    log.apply(_issuer(log))
    log.apply(_store(log, ("01", 5000.0)))
    assert _ok(log.apply(_revoke(log, "01", 1000.0))) == {"revocation_time": 1000.0,
                                                         "crl_number": 2}  # fmt: skip
    row = pki.get_cert(log.store, M, "01")
    assert row is not None and row.revocation_time == 1000.0
    assert pki.list_revoked(log.store, M) == [pki.Revoked("01", 1000.0, 5000.0)]
    assert "already revoked" in _refused(log, _revoke(log, "01", 1001.0), Refusal.ALREADY_REVOKED)


def test_revoke_refuses_unknown_and_expired_serials() -> None:
    log = _log()
    log.apply(_store(log, ("01", 500.0)))
    assert "not found" in _refused(log, _revoke(log, "02", 100.0), Refusal.NOT_FOUND)
    assert "expired" in _refused(log, _revoke(log, "01", 500.0), Refusal.EXPIRED)
    _refused(log, _revoke(log, "zz", 100.0), Refusal.INVALID)


def test_revoking_a_no_store_certificate_keeps_an_entry() -> None:
    log = _log()
    # never stored (its role said no_store); the engine vouches for its expiration
    _ok(log.apply(_revoke(log, "ab:cd", 100.0, expiration=900.0)))
    assert pki.get_cert(log.store, M, "ab:cd") is None
    assert pki.list_revoked(log.store, M) == [pki.Revoked("ab:cd", 100.0, 900.0)]
    _refused(log, _revoke(log, "ab:cd", 101.0, expiration=900.0), Refusal.ALREADY_REVOKED)
    # a stored certificate's own expiration wins over one in the body
    log.apply(_store(log, ("01", 5000.0)))
    _ok(log.apply(_revoke(log, "01", 100.0, expiration=200.0)))
    assert pki.list_revoked(log.store, M)[0] == pki.Revoked("01", 100.0, 5000.0)


def test_crl_bump() -> None:
    log = _log()
    assert _ok(log.apply(pki.encode_crl_bump(log.registry, M, now=10.0))) == {"crl_number": 1}
    assert _ok(log.apply(pki.encode_crl_bump(log.registry, M, now=20.0))) == {"crl_number": 2}
    assert pki.crl_info(log.store, M) == pki.CrlInfo(2, 20.0)


# -- tidy


def test_tidy_respects_the_safety_buffer() -> None:
    log = _log()
    log.apply(_store(log, ("01", 1000.0), ("02", 100 * DAY)))
    log.apply(_revoke(log, "01", 500.0))
    number = pki.crl_info(log.store, M)
    # expired, but not yet past the 3-day buffer: nothing goes
    assert _ok(log.apply(_tidy(log, now=1000.0 + 3 * DAY))) == {
        "cert_store_deleted": 0, "revoked_cert_deleted": 0}  # fmt: skip
    assert pki.crl_info(log.store, M) == number  # nothing left the CRL
    answer = _ok(log.apply(_tidy(log, now=1001.0 + 3 * DAY)))
    assert answer["cert_store_deleted"] == 1 and answer["revoked_cert_deleted"] == 1
    assert number is not None and answer["crl_number"] == number.number + 1
    assert pki.list_certs(log.store, M) == ["02"] and pki.list_revoked(log.store, M) == []


def test_tidy_targets_are_separate() -> None:
    log = _log()
    log.apply(_store(log, ("01", 1000.0)))
    log.apply(_revoke(log, "ab", 10.0, expiration=1000.0))
    _ok(log.apply(_tidy(log, now=10 * DAY, certs=False)))
    assert pki.list_certs(log.store, M) == ["01"] and pki.list_revoked(log.store, M) == []
    _ok(log.apply(_tidy(log, now=10 * DAY, revoked=False)))
    assert pki.list_certs(log.store, M) == []


def test_tidy_refuses_a_negative_buffer() -> None:
    log = _log()
    log.apply(_store(log, ("01", 1000.0)))
    _refused(log, _tidy(log, now=10 * DAY, buffer=-1.0), Refusal.INVALID)


def test_mounts_do_not_see_each_other() -> None:
    log = _log(M, "other/")
    log.apply(_store(log, ("01", 1000.0)))
    log.apply(_store(log, ("01", 1000.0), mount="other/"))
    log.apply(pki.encode_tidy(log.registry, "other/", now=10 * DAY, safety_buffer=0.0,
                              tidy_cert_store=True, tidy_revoked_certs=True))  # fmt: skip
    assert pki.list_certs(log.store, M) == ["01"] and pki.list_certs(log.store, "other/") == []
    for name in pki.TABLES:  # a mount's rows all live under "<mount>\0"
        assert all(k.startswith((M + pki.SEP, "other/" + pki.SEP))
                   for k in log.store.table(name).keys(''))  # fmt: skip


def test_purge_mount_drops_only_that_mount() -> None:
    log = _log(M, "other/")
    log.apply(_issuer(log))
    log.apply(pki.encode_role_write(log.registry, M, "web", Role()))
    log.apply(_store(log, ("01", 1000.0)))
    log.apply(_revoke(log, "01", 10.0))
    log.apply(_store(log, ("01", 1000.0), mount="other/"))
    log.apply(_store(log, ("02", 2000.0), lease="issue/web", issued=5.0))
    ctx = ApplyContext(log.next_index, 1, log.store)
    # issuer, CRL number, role, two certificates, a revocation, a lease index entry
    assert pki.purge_mount(ctx, M) == 7
    assert pki.get_issuer(log.store, M) is None and pki.list_roles(log.store, M) == []
    assert pki.list_revoked(log.store, M) == [] and pki.crl_info(log.store, M) is None
    assert pki.list_certs(log.store, "other/") == ["01"]
    assert pki.leased_serials(log.store, M) == [] and pki.next_lease_expiry(log.store, M) is None


# -- certificates that are leases


def _lease_state(log: Log) -> dict[str, Any]:
    """Each certificate's lease path, and the expiry index (which must agree)."""
    leases = {}
    for serial in pki.list_certs(log.store, M):
        row = pki.get_cert(log.store, M, serial)
        assert row is not None
        if row.lease:
            leases[serial] = (row.lease, row.issued, row.expiration)
    indexed = pki.leased_serials(log.store, M)
    assert sorted(indexed) == sorted(leases), (indexed, leases)
    return leases


def _expire(log: Log, now: float, limit: int = pki.MAX_EXPIRE_BATCH) -> dict[str, Any]:
    return _ok(log.apply(pki.encode_lease_expire(log.registry, M, now=now, limit=limit)))


def test_a_leased_certificate_carries_its_lease_in_the_same_entry() -> None:
    log = _log()
    _ok(log.apply(_store(log, ("01", 500.0), ("02", 300.0), lease="issue/web", issued=10.0)))
    _ok(log.apply(_store(log, ("03", 400.0), lease="sign/web", issued=20.0)))
    _ok(log.apply(_store(log, ("04", 100.0))))  # not a lease
    assert _lease_state(log) == {"01": ("issue/web", 10.0, 500.0),
                                 "02": ("issue/web", 10.0, 300.0),
                                 "03": ("sign/web", 20.0, 400.0)}  # fmt: skip
    assert pki.leased_serials(log.store, M) == ["02", "03", "01"]  # earliest expiry first
    assert pki.next_lease_expiry(log.store, M) == 300.0
    row = pki.get_cert(log.store, M, "04")
    assert row is not None and (row.lease, row.issued) == ("", 0.0)


@pytest.mark.parametrize(
    ("lease", "issued", "expiration", "message"),
    [
        ("renew/web", 1.0, 500.0, "not a lease path"),
        ("issue/", 1.0, 500.0, "role name"),
        ("issue/bad/name", 1.0, 500.0, "role name"),
        ("issue/web", 600.0, 500.0, "bad lease times"),
        ("issue/web", -1.0, 500.0, "bad lease times"),
        ("issue/web", 1.0, 500.5, "bad lease times"),  # a lease ends on a whole second
    ],
)
def test_bad_leases_are_refused(lease: str, issued: float, expiration: float,
                                message: str) -> None:  # fmt: skip
    log = _log()
    cmd = _store(log, ("01", expiration), lease=lease, issued=issued)
    assert message in _refused(log, cmd, Refusal.INVALID)


def test_revoking_a_leased_certificate_ends_its_lease() -> None:
    log = _log()
    log.apply(_issuer(log))
    log.apply(_store(log, ("01", 500.0), ("02", 600.0), lease="issue/web", issued=10.0))
    _ok(log.apply(_revoke(log, "01", 100.0)))
    assert _lease_state(log) == {"02": ("issue/web", 10.0, 600.0)}
    row = pki.get_cert(log.store, M, "01")
    assert row is not None and row.revocation_time == 100.0 and row.lease == ""
    assert [r.serial for r in pki.list_revoked(log.store, M)] == ["01"]


def test_the_sweep_ends_due_leases_without_a_crl_entry() -> None:
    log = _log()
    log.apply(_store(log, ("01", 100.0), ("02", 200.0), ("03", 200.0), ("04", 900.0),
                     lease="issue/web", issued=1.0))  # fmt: skip
    log.apply(_store(log, ("05", 150.0)))  # not a lease: untouched
    before = pki.crl_info(log.store, M)
    assert _expire(log, now=99.0) == {"expired": 0, "more": False}
    assert _expire(log, now=100.0) == {"expired": 1, "more": False}
    assert pki.next_lease_expiry(log.store, M) == 200.0
    # a batch limit leaves the rest for the next entry
    assert _expire(log, now=250.0, limit=1) == {"expired": 1, "more": True}
    assert _expire(log, now=250.0, limit=1) == {"expired": 1, "more": False}
    assert _lease_state(log) == {"04": ("issue/web", 1.0, 900.0)}
    assert pki.list_certs(log.store, M) == ["01", "02", "03", "04", "05"]  # still stored
    assert pki.list_revoked(log.store, M) == [] and pki.crl_info(log.store, M) == before
    _refused(log, pki.encode_lease_expire(log.registry, M, now=1.0, limit=0), Refusal.INVALID)
    _refused(log, pki.encode_lease_expire(log.registry, "nothing/", now=1.0), Refusal.NO_MOUNT)


def test_tidy_drops_the_index_entry_of_a_lease_not_yet_swept() -> None:
    log = _log()
    log.apply(_store(log, ("01", 100.0), ("02", 100 * DAY), lease="issue/web", issued=1.0))
    _ok(log.apply(_tidy(log, now=100.0 + 4 * DAY)))
    assert pki.list_certs(log.store, M) == ["02"]
    assert _lease_state(log) == {"02": ("issue/web", 1.0, 100 * DAY)}


def test_a_broken_lease_index_stops_the_node() -> None:
    log = _log()
    log.apply(_store(log, ("01", 100.0), lease="issue/web", issued=1.0))
    log.store.table(pki.CERTS_TABLE).delete(M + pki.SEP + "01", log.next_index)  # planted bug
    with pytest.raises(ApplyFailed) as err:
        log.apply(pki.encode_lease_expire(log.registry, M, now=200.0))
    assert isinstance(err.value.__cause__, KeyError)


# -- determinism and snapshots


def _script(log: Log) -> None:
    log.apply(_issuer(log))
    log.apply(pki.encode_role_write(log.registry, M, "web", Role(allow_any_name=True)))
    log.apply(_store(log, ("01", 1000.0), ("02", 5 * DAY)))
    log.apply(_revoke(log, "01", 100.0))
    log.apply(_revoke(log, "01", 101.0))  # refused
    log.apply(_revoke(log, "ff", 102.0, expiration=2000.0))
    log.apply(_tidy(log, now=6 * DAY))  # drops 01 and both revocations, keeps 02
    log.apply(pki.encode_crl_bump(log.registry, M, now=11 * DAY))
    log.apply(_store(log, ("0a", 20 * DAY), ("0b", 30 * DAY), lease="sign/web", issued=11 * DAY))
    log.apply(pki.encode_lease_expire(log.registry, M, now=20 * DAY))  # ends 0a's lease


def test_replicas_applying_the_same_log_agree() -> None:
    first, second = _log(), _log()
    _script(first)
    _script(second)
    assert first.store.dump() == second.store.dump()


def test_snapshot_round_trip_keeps_pki_state() -> None:
    log = _log()
    _script(log)
    restored = FSM(_registry())
    restored.restore(log.fsm.snapshot())
    assert restored.store.dump() == log.store.dump()
    assert pki.get_role(restored.store, M, "web") == Role(allow_any_name=True).validated()
    assert pki.list_certs(restored.store, M) == ["02", "0a", "0b"]
    assert pki.list_revoked(restored.store, M) == []
    assert pki.leased_serials(restored.store, M) == ["0b"]
    assert pki.next_lease_expiry(restored.store, M) == 30 * DAY
    row = pki.get_cert(restored.store, M, "0b")
    assert row is not None and (row.lease, row.issued) == ("sign/web", 11 * DAY)
