"""The transit engine's replicated key state: commands 150-154, their refusals
(never exceptions for user input), reads, determinism and snapshots."""

from __future__ import annotations

import math
from typing import Any

import pytest
from state_helpers import Log, substrate_registry

from stack.state import secrets
from stack.state import transit as tt
from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.errors import ApplyFailed
from stack.state.fsm import FSM
from stack.state.transit import Refusal

M = "transit/"
PEM = "-----BEGIN PUBLIC KEY-----\nMFkw...\n-----END PUBLIC KEY-----\n"
TEST_MOUNT = 9000  # a test-only command: secrets.mount_enable does not take "transit" yet


def _mount_transit(ctx: ApplyContext, body: Any) -> WriteResult:
    row = {"type": body["type"], "version": 1, "description": "", "created": 1.0,
           "options": dict(secrets.DEFAULT_OPTIONS), "accessor": body["accessor"]}  # fmt: skip
    ctx.store.table(secrets.MOUNTS_TABLE).put(body["path"], row, ctx.index)
    return WriteResult(True, ctx.index)


def _registry() -> CommandRegistry:
    registry = substrate_registry()
    secrets.register(registry)
    tt.register(registry)
    registry.register(TEST_MOUNT, "test.mount_raw", _mount_transit)
    return registry


def _log(*mounts: str) -> Log:
    log = Log(FSM(_registry()))
    for path in mounts or (M,):
        body = {"path": path, "type": "transit", "accessor": "transit_" + path.strip("/")}
        log.apply(log.registry.encode(TEST_MOUNT, body))
    return log


def _ok(result: object) -> dict[str, Any]:
    assert isinstance(result, WriteResult), result
    assert result.ok, result.data
    data: dict[str, Any] = result.data
    return data


def _refused(result: object, reason: Refusal) -> str:
    assert isinstance(result, WriteResult), result
    assert not result.ok and result.data["reason"] == reason.value, result.data
    error: str = result.data["error"]
    return error


def _create(log: Log, name: str = "k", key_type: str = "aes256-gcm96", **kw: Any) -> object:
    kw.setdefault("now", 10.0)
    if key_type in tt.ASYMMETRIC_TYPES:
        kw.setdefault("public_key", PEM)
    if key_type == "hmac":
        kw.setdefault("key_size", 32)
    ct = kw.pop("ct", b"sealed-v1")
    mount = kw.pop("mount", M)
    return log.apply(tt.encode_key_create(log.registry, mount, name, key_type, ct, **kw))


def _rotate(log: Log, version: int, name: str = "k", **kw: Any) -> object:
    kw.setdefault("now", 20.0)
    ct = kw.pop("ct", b"sealed-v%d" % version)
    return log.apply(tt.encode_key_rotate(log.registry, M, name, version, ct, **kw))


def _config(log: Log, name: str = "k", **changes: Any) -> object:
    return log.apply(tt.encode_key_config(log.registry, M, name, now=30.0, **changes))


def _key(log: Log, name: str = "k") -> tt.KeyRecord:
    found = tt.get_key(log.store, M, name)
    assert found is not None
    return found


# -- registration


def test_register_uses_numbers_150_to_154() -> None:
    mine = {spec.type_id: spec.name for spec in _registry() if spec.name.startswith("transit.")}
    assert mine == {
        150: "transit.key_create",
        151: "transit.key_rotate",
        152: "transit.key_config",
        153: "transit.key_delete",
        154: "transit.key_trim",
    }
    assert all(not _registry().lookup(n).ignorable for n in mine)  # type: ignore[union-attr]


# -- create


def test_create_stores_config_and_sealed_version_one() -> None:
    log = _log()
    assert _ok(_create(log, exportable=True, auto_rotate_period=7200)) == {"latest_version": 1}
    key = _key(log)
    assert (key.type, key.latest_version, key.min_decryption_version) == ("aes256-gcm96", 1, 1)
    assert (key.min_encryption_version, key.min_available_version) == (0, 0)
    assert key.exportable and not key.deletion_allowed and not key.derived
    assert key.auto_rotate_period == 7200.0 and key.created == 10.0
    assert key.versions == {1: tt.VersionRecord(1, b"sealed-v1", 10.0, "")}
    assert tt.list_keys(log.store, M) == ["k"]


def test_create_an_asymmetric_key_keeps_its_public_key() -> None:
    log = _log()
    _ok(_create(log, "sig", "ecdsa-p256"))
    assert _key(log, "sig").versions[1].public_key == PEM


@pytest.mark.parametrize(
    ("kwargs", "reason", "message"),
    [
        ({"name": "bad name"}, Refusal.INVALID_NAME, "invalid key name"),
        ({"name": ".."}, Refusal.INVALID_NAME, "invalid key name"),
        ({"name": "x" * 129}, Refusal.INVALID_NAME, "invalid key name"),
        ({"key_type": "foo"}, Refusal.INVALID, "unknown key type foo"),
        ({"key_type": "rsa-2048"}, Refusal.INVALID, "not supported"),
        ({"convergent": True}, Refusal.INVALID, "convergent encryption requires derivation"),
        ({"key_type": "ecdsa-p256", "derived": True}, Refusal.INVALID, "derivation"),
        ({"key_type": "ed25519", "derived": True, "convergent": True}, Refusal.INVALID,
         "convergent encryption not supported for keys of type ed25519"),
        ({"key_size": 64}, Refusal.INVALID, "key_size is not valid for algorithm aes256-gcm96"),
        ({"key_type": "hmac", "key_size": 16}, Refusal.INVALID, "invalid key_size 16"),
        ({"key_type": "hmac", "key_size": 513}, Refusal.INVALID, "invalid key_size 513"),
        ({"auto_rotate_period": 60}, Refusal.INVALID, "at least an hour"),
        ({"auto_rotate_period": math.nan}, Refusal.INVALID, "at least an hour"),
        ({"auto_rotate_period": math.inf}, Refusal.INVALID, "at least an hour"),
        ({"ct": b""}, Refusal.INVALID, "empty"),
        ({"ct": b"x" * (tt.MAX_CT_BYTES + 1)}, Refusal.TOO_LARGE, "ciphertext"),
        ({"key_type": "ed25519", "public_key": ""}, Refusal.INVALID, "needs its public key"),
        ({"public_key": PEM}, Refusal.INVALID, "has no public key"),
        ({"mount": "nowhere/"}, Refusal.NO_MOUNT, "no transit secrets engine"),
        ({"mount": "kv/"}, Refusal.NO_MOUNT, "no transit secrets engine"),
    ],
)  # fmt: skip
def test_create_refusals_change_nothing(
    kwargs: dict[str, Any], reason: Refusal, message: str
) -> None:
    log = _log()
    log.apply(log.registry.encode(TEST_MOUNT, {"path": "kv/", "type": "kv", "accessor": "kv_1"}))
    before = log.store.dump()["tables"]
    assert message in _refused(_create(log, **kwargs), reason)
    assert log.store.dump()["tables"] == before


def test_create_refuses_an_existing_key_and_keeps_the_first() -> None:
    log = _log()
    _ok(_create(log, ct=b"first"))
    assert "already existed" in _refused(_create(log, ct=b"second"), Refusal.EXISTS)
    assert _key(log).versions[1].ct == b"first"


@pytest.mark.parametrize(
    ("field", "value"),
    [("ct", "not bytes"), ("derived", "yes"), ("key_size", 1.5), ("now", "soon"), ("name", 7)],
)
def test_a_malformed_create_body_stops_the_fsm(field: str, value: Any) -> None:
    log = _log()
    body = {"mount": M, "name": "k", "type": "aes256-gcm96", "now": 1.0, "ct": b"c",
            "public_key": "", "derived": False, "convergent": False, "exportable": False,
            "allow_plaintext_backup": False, "auto_rotate_period": 0.0, "key_size": 0}  # fmt: skip
    body[field] = value
    with pytest.raises(ApplyFailed, match=r"transit\.key_create") as caught:
        log.apply(log.registry.encode(tt.TRANSIT_KEY_CREATE, body))
    assert isinstance(caught.value.__cause__, TypeError)


# -- rotate


def test_rotate_appends_the_next_version_only() -> None:
    log = _log()
    _ok(_create(log))
    assert _ok(_rotate(log, 2)) == {"latest_version": 2}
    assert "does not follow" in _refused(_rotate(log, 2), Refusal.CONFLICT)
    assert "does not follow" in _refused(_rotate(log, 4), Refusal.CONFLICT)
    key = _key(log)
    assert key.latest_version == 2 and sorted(key.versions) == [1, 2]
    assert key.versions[2] == tt.VersionRecord(2, b"sealed-v2", 20.0, "")
    assert key.updated == 20.0


def test_rotate_refusals() -> None:
    log = _log()
    _ok(_create(log, "sig", "ed25519"))
    assert "no existing key named nope" in _refused(_rotate(log, 2, "nope"), Refusal.NOT_FOUND)
    _refused(_rotate(log, 2, "sig"), Refusal.INVALID)  # an ed25519 version without public key
    _refused(_rotate(log, 2, "sig", ct=b""), Refusal.INVALID)
    assert _key(log, "sig").latest_version == 1


# -- config


def test_config_sets_min_versions_with_vault_rules() -> None:
    log = _log()
    _ok(_create(log))
    _ok(_rotate(log, 2))
    _ok(_rotate(log, 3))
    assert _ok(_config(log, min_decryption_version=2, min_encryption_version=3)) == {"warnings": []}
    key = _key(log)
    assert (key.min_decryption_version, key.min_encryption_version) == (2, 3)
    error = _refused(_config(log, min_decryption_version=4), Refusal.INVALID)
    assert error == "cannot set min decryption version of 4, latest key version is 3"
    error = _refused(_config(log, min_encryption_version=9), Refusal.INVALID)
    assert error == "cannot set min encryption version of 9, latest key version is 3"
    error = _refused(_config(log, min_encryption_version=1), Refusal.INVALID)
    assert "min encryption version of 1 must be greater than or equal to min decryption" in error
    assert "cannot be negative" in _refused(
        _config(log, min_decryption_version=-1), Refusal.INVALID
    )
    assert (_key(log).min_decryption_version, _key(log).min_encryption_version) == (2, 3)


def test_config_zero_min_decryption_means_one_with_a_warning() -> None:
    log = _log()
    _ok(_create(log))
    warnings = _ok(_config(log, min_decryption_version=0))["warnings"]
    assert warnings == ["since Vault 0.3, transit key numbering starts at 1; forcing minimum to 1"]
    assert _key(log).min_decryption_version == 1


def test_exportable_cannot_be_turned_off() -> None:
    log = _log()
    _ok(_create(log))
    _ok(_config(log, exportable=True, allow_plaintext_backup=True, deletion_allowed=True))
    warnings = _ok(_config(log, exportable=False, allow_plaintext_backup=False))["warnings"]
    assert len(warnings) == 2 and all("cannot be disabled" in w for w in warnings)
    key = _key(log)
    assert key.exportable and key.allow_plaintext_backup and key.deletion_allowed
    _ok(_config(log, deletion_allowed=False))
    assert not _key(log).deletion_allowed


def test_config_auto_rotate_period_and_no_op() -> None:
    log = _log()
    _ok(_create(log))
    assert "at least an hour" in _refused(_config(log, auto_rotate_period=59.0), Refusal.INVALID)
    _ok(_config(log, auto_rotate_period=3600))
    index = tt.get_key(log.store, M, "k").modify_index  # type: ignore[union-attr]
    _ok(_config(log, auto_rotate_period=3600))  # no change: nothing written
    key = _key(log)
    assert key.auto_rotate_period == 3600.0 and key.modify_index == index


def test_config_of_a_missing_key_is_refused() -> None:
    log = _log()
    error = _refused(_config(log, "nope", deletion_allowed=True), Refusal.NOT_FOUND)
    assert error == "no existing key named nope could be found"


def test_encode_config_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError, match="colour"):
        tt.encode_key_config(_registry(), M, "k", now=1.0, colour="red")


# -- delete


def test_delete_needs_deletion_allowed() -> None:
    log = _log()
    _ok(_create(log))
    _ok(_rotate(log, 2))
    error = _refused(
        log.apply(tt.encode_key_delete(log.registry, M, "k")), Refusal.DELETION_NOT_ALLOWED
    )
    assert error == "error deleting policy k: deletion is not allowed for this policy"
    assert tt.get_key(log.store, M, "k") is not None
    _ok(_config(log, deletion_allowed=True))
    assert _ok(log.apply(tt.encode_key_delete(log.registry, M, "k"))) == {"versions_removed": 2}
    assert tt.get_key(log.store, M, "k") is None and tt.list_keys(log.store, M) == []
    assert log.store.table(tt.VERSIONS_TABLE).keys() == []
    again = _refused(log.apply(tt.encode_key_delete(log.registry, M, "k")), Refusal.NOT_FOUND)
    assert "not found" in again


# -- trim


def test_trim_drops_old_versions_under_vault_rules() -> None:
    log = _log()
    _ok(_create(log))
    for n in (2, 3, 4):
        _ok(_rotate(log, n))
    trim = tt.encode_key_trim(log.registry, M, "k", 3)
    assert "encryption version is not set" in _refused(log.apply(trim), Refusal.INVALID)
    _ok(_config(log, min_decryption_version=2, min_encryption_version=4))
    assert "greater than minimum decryption" in _refused(log.apply(trim), Refusal.INVALID)
    zero = tt.encode_key_trim(log.registry, M, "k", 0)
    assert "should be positive" in _refused(log.apply(zero), Refusal.INVALID)
    assert _ok(log.apply(tt.encode_key_trim(log.registry, M, "k", 2))) == {"versions_removed": 1}
    key = _key(log)
    assert key.min_available_version == 2 and sorted(key.versions) == [2, 3, 4]
    back = tt.encode_key_trim(log.registry, M, "k", 1)
    assert "cannot be decremented" in _refused(log.apply(back), Refusal.INVALID)
    # a config below the trimmed versions is refused too
    error = _refused(_config(log, min_decryption_version=1), Refusal.INVALID)
    assert "min available version" in error


# -- reads


def test_find_mount_and_purge_mount() -> None:
    log = _log(M, "other/")
    log.apply(log.registry.encode(TEST_MOUNT, {"path": "kv/", "type": "kv", "accessor": "kv_1"}))
    _ok(_create(log, "a"))
    _ok(_create(log, "b"))
    _ok(_create(log, "c", mount="other/"))
    assert tt.find_mount(log.store, "transit/encrypt/a") == tt.TransitMount(M, "transit_transit")
    assert tt.find_mount(log.store, "transit") == tt.TransitMount(M, "transit_transit")
    assert tt.find_mount(log.store, "kv/data/x") is None
    assert tt.find_mount(log.store, "elsewhere/x") is None
    assert tt.list_keys(log.store, M) == ["a", "b"]
    index = log.next_index
    removed = tt.purge_mount(ApplyContext(index, 1, log.store), M)
    assert removed == 4  # two keys, one version each
    assert tt.list_keys(log.store, M) == [] and tt.list_keys(log.store, "other/") == ["c"]


def test_rotation_due_follows_the_latest_version_time() -> None:
    log = _log()
    _ok(_create(log, "hourly", auto_rotate_period=3600, now=100.0))
    _ok(_create(log, "never", now=100.0))
    assert tt.rotation_due(log.store, 3699.0) == []
    assert tt.rotation_due(log.store, 3700.0) == [(M, "hourly")]
    _ok(_rotate(log, 2, "hourly", now=3700.0))
    assert tt.rotation_due(log.store, 3701.0) == []


# -- determinism and snapshots


def _script(registry: CommandRegistry) -> list[bytes]:
    mount = {"path": M, "type": "transit", "accessor": "transit_1"}
    return [
        registry.encode(TEST_MOUNT, mount),
        tt.encode_key_create(registry, M, "k", "aes256-gcm96", b"c1", now=1.0),
        tt.encode_key_create(registry, M, "k", "aes256-gcm96", b"again", now=1.5),  # refused
        tt.encode_key_create(registry, M, "s", "ed25519", b"c1", now=2.0, public_key="cHVi"),
        tt.encode_key_rotate(registry, M, "k", 2, b"c2", now=3.0),
        tt.encode_key_rotate(registry, M, "k", 2, b"c2", now=3.5),  # refused: conflict
        tt.encode_key_config(
            registry,
            M,
            "k",
            now=4.0,
            min_decryption_version=2,
            min_encryption_version=2,
            deletion_allowed=True,
        ),
        tt.encode_key_trim(registry, M, "k", 2),
        tt.encode_key_delete(registry, M, "s"),  # refused: deletion not allowed
        tt.encode_key_delete(registry, M, "k"),
    ]


def _run(entries: list[bytes]) -> tuple[Log, list[object]]:
    log = Log(FSM(_registry()))
    return log, [log.apply(entry) for entry in entries]


def test_same_commands_give_the_same_state() -> None:
    first, first_results = _run(_script(_registry()))
    second, second_results = _run(_script(_registry()))
    assert first.store.dump() == second.store.dump()
    assert first_results == second_results
    oks = [r.ok for r in first_results]  # type: ignore[attr-defined]
    assert oks == [True, True, False, True, True, False, True, True, False, True]
    assert tt.list_keys(first.store, M) == ["s"]


def test_snapshot_round_trip_keeps_keys() -> None:
    log, _ = _run(_script(_registry())[:-1])
    restored = FSM(_registry())
    restored.restore(log.fsm.snapshot())
    assert restored.store.dump() == log.store.dump()
    key = tt.get_key(restored.store, M, "k")
    assert key is not None and sorted(key.versions) == [2] and key.min_available_version == 2
