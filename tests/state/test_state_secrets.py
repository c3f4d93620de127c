"""The secrets KV engine's state: mounts, KV v1, KV v2 versions, CAS, deletes,
metadata, listing, validation, determinism and snapshots."""

from __future__ import annotations

from typing import Any

import pytest
from state_helpers import Log, substrate_registry

from stack.state import secrets
from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.errors import ApplyFailed
from stack.state.fsm import FSM
from stack.state.secrets import Refusal, VersionStatus
from stack.state.store import StateStore

M = "secret/"


def _registry() -> CommandRegistry:
    registry = substrate_registry()
    secrets.register(registry)
    return registry


def _log() -> Log:
    return Log(FSM(_registry()))


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


def _enable(log: Log, path: str = M, version: int = 2, **options: Any) -> object:
    accessor = "kv_" + path.replace("/", "_")
    data = secrets.encode_mount_enable(
        log.registry, path, version=version, now=1.0, accessor=accessor, options=options
    )
    return log.apply(data)


def _put(
    log: Log, path: str, ct: bytes, *, cas: int | None = None, now: float = 100.0, mount: str = M
) -> object:
    return log.apply(secrets.encode_kv2_put(log.registry, mount, path, ct, now=now, cas=cas))


def _meta(log: Log, path: str, mount: str = M, **fields: Any) -> object:
    fields.setdefault("now", 50.0)
    return log.apply(secrets.encode_kv2_metadata_put(log.registry, mount, path, **fields))


def _read(log: Log, path: str, version: int | None = None, now: float = 100.0) -> Any:
    return secrets.kv2_version(log.store, M, path, version, now=now)


def _metadata(log: Log, path: str) -> secrets.SecretMetadata:
    meta = secrets.kv2_metadata(log.store, M, path)
    assert meta is not None
    return meta


# -- registration


def test_register_uses_only_numbers_20_to_39() -> None:
    registry = _registry()
    mine = [spec for spec in registry if spec.name.startswith("secrets.")]
    assert len(mine) == 11
    assert all(100 <= spec.type_id <= 119 and not spec.ignorable for spec in mine)


# -- mounts


def test_enable_records_the_mount() -> None:
    log = _log()
    data = secrets.encode_mount_enable(
        log.registry,
        M,
        version=2,
        now=7.5,
        accessor="kv_1",
        description="app secrets",
        options={"max_versions": 4, "cas_required": True},
    )
    assert _ok(log.apply(data)) == {"path": M, "accessor": "kv_1"}
    mount = secrets.get_mount(log.store, M)
    assert mount == secrets.Mount(
        M, "kv", 2, "app secrets", secrets.KVOptions(4, True, 0.0), 7.5, "kv_1", 1
    )
    assert secrets.list_mounts(log.store) == [mount]


@pytest.mark.parametrize(
    ("path", "version", "options", "reason"),
    [
        (M, 2, {}, Refusal.MOUNT_EXISTS),
        ("secret/a/", 2, {}, Refusal.MOUNT_OVERLAP),  # under an existing mount
        ("deep/", 2, {}, Refusal.MOUNT_OVERLAP),  # above the existing "deep/er/"
        ("secret", 2, {}, Refusal.INVALID_PATH),
        ("/x/", 2, {}, Refusal.INVALID_PATH),
        ("a/../", 2, {}, Refusal.INVALID_PATH),
        ("a//", 2, {}, Refusal.INVALID_PATH),
        ("sys/", 2, {}, Refusal.INVALID_PATH),
        ("auth/kv/", 2, {}, Refusal.INVALID_PATH),
        ("new/", 3, {}, Refusal.INVALID),
        ("new/", 2, {"max_versions": -1}, Refusal.INVALID),
        ("new/", 2, {"delete_version_after": -5.0}, Refusal.INVALID),
        ("new/", 2, {"colour": "red"}, Refusal.INVALID),
        ("new/", 1, {"cas_required": True}, Refusal.INVALID),
    ],
)
def test_enable_refusals_change_nothing(
    path: str, version: int, options: dict[str, Any], reason: Refusal
) -> None:
    log = _log()
    _ok(_enable(log))
    _ok(_enable(log, "deep/er/"))
    before = log.store.dump()["tables"]
    _refused(_enable(log, path, version, **options), reason)
    assert log.store.dump()["tables"] == before


def test_enable_refuses_an_unknown_type_and_a_reused_accessor() -> None:
    log = _log()
    reg = log.registry
    bad = secrets.encode_mount_enable(reg, "t/", version=2, now=1, accessor="a", engine_type="ssh")
    assert "ssh" in _refused(log.apply(bad), Refusal.INVALID)
    _ok(log.apply(secrets.encode_mount_enable(reg, "a/", version=2, now=1, accessor="same")))
    again = secrets.encode_mount_enable(reg, "b/", version=2, now=1, accessor="same")
    _refused(log.apply(again), Refusal.INVALID)
    assert [m.path for m in secrets.list_mounts(log.store)] == ["a/"]


def test_find_mount_is_the_prefix_on_a_segment_boundary() -> None:
    log = _log()
    _ok(_enable(log, "secret/"))
    _ok(_enable(log, "team/a/"))
    find = secrets.find_mount
    assert find(log.store, "secret/data/x").path == "secret/"  # type: ignore[union-attr]
    assert find(log.store, "secret").path == "secret/"  # type: ignore[union-attr]
    assert find(log.store, "team/a/b/c").path == "team/a/"  # type: ignore[union-attr]
    assert find(log.store, "team/b/c") is None
    assert find(log.store, "secretive/x") is None
    assert find(log.store, "") is None


def test_tune_changes_only_what_it_names() -> None:
    log = _log()
    _ok(_enable(log, max_versions=4))
    reg = log.registry
    _ok(log.apply(secrets.encode_mount_tune(reg, M, options={"cas_required": True})))
    mount = secrets.get_mount(log.store, M)
    assert mount is not None and mount.options == secrets.KVOptions(4, True, 0.0)
    assert mount.description == "" and mount.modify_index == 2
    _ok(log.apply(secrets.encode_mount_tune(reg, M, description="d")))
    mount = secrets.get_mount(log.store, M)
    assert mount is not None and mount.description == "d" and mount.options.cas_required
    # The tuned cas_required now applies to writes.
    _refused(_put(log, "a", b"x"), Refusal.CAS_REQUIRED)


def test_tune_refusals() -> None:
    log = _log()
    _ok(_enable(log))
    _ok(_enable(log, "v1/", version=1))
    reg = log.registry
    tune = secrets.encode_mount_tune
    _refused(log.apply(tune(reg, "nope/", description="x")), Refusal.NO_MOUNT)
    error = _refused(log.apply(tune(reg, M, options={"version": 1})), Refusal.INVALID)
    assert "version" in error
    _refused(log.apply(tune(reg, M, options={"max_versions": -2})), Refusal.INVALID)
    _refused(log.apply(tune(reg, "v1/", options={"max_versions": 3})), Refusal.INVALID)
    assert secrets.get_mount(log.store, M).options == secrets.KVOptions(0, False, 0.0)  # type: ignore[union-attr]


def test_disable_removes_the_mount_and_only_its_data() -> None:
    log = _log()
    _ok(_enable(log, "secret/"))
    _ok(_enable(log, "secret2/"))
    _ok(_enable(log, "old/", version=1))
    _ok(_put(log, "a", b"one"))
    _ok(_put(log, "a", b"two"))
    _ok(_put(log, "a", b"other", mount="secret2/"))
    _ok(log.apply(secrets.encode_kv1_put(log.registry, "old/", "a", b"v1")))
    data = _ok(log.apply(secrets.encode_mount_disable(log.registry, "secret/")))
    assert data["rows_removed"] == 3  # the metadata row and two versions
    assert secrets.get_mount(log.store, "secret/") is None
    assert secrets.kv2_metadata(log.store, "secret/", "a") is None
    assert secrets.kv2_version(log.store, "secret2/", "a", now=100).ct == b"other"
    assert secrets.kv1_get(log.store, "old/", "a") == b"v1"
    # Enabled again, it starts empty.
    _ok(_enable(log, "secret/"))
    assert secrets.kv_list(log.store, "secret/") == []
    assert _ok(_put(log, "a", b"new"))["version"] == 1
    _ok(log.apply(secrets.encode_mount_disable(log.registry, "old/")))
    assert secrets.kv1_get(log.store, "old/", "a") is None
    _refused(log.apply(secrets.encode_mount_disable(log.registry, "old/")), Refusal.NO_MOUNT)


# -- KV v1


def test_kv1_put_get_delete_list() -> None:
    log = _log()
    _ok(_enable(log, "kv/", version=1))
    reg = log.registry
    assert _ok(log.apply(secrets.encode_kv1_put(reg, "kv/", "app/db", b"c1"))) == {"created": True}
    assert _ok(log.apply(secrets.encode_kv1_put(reg, "kv/", "app/db", b"c2"))) == {"created": False}
    _ok(log.apply(secrets.encode_kv1_put(reg, "kv/", "top", b"t")))
    assert secrets.kv1_get(log.store, "kv/", "app/db") == b"c2"
    assert secrets.kv_list(log.store, "kv/") == ["app/", "top"]
    assert secrets.kv_list(log.store, "kv/", "app") == ["db"]
    assert _ok(log.apply(secrets.encode_kv1_delete(reg, "kv/", "app/db"))) == {"deleted": True}
    assert _ok(log.apply(secrets.encode_kv1_delete(reg, "kv/", "app/db"))) == {"deleted": False}
    assert secrets.kv1_get(log.store, "kv/", "app/db") is None
    assert secrets.kv_list(log.store, "kv/") == ["top"]


def test_kv1_refusals() -> None:
    log = _log()
    _ok(_enable(log, "kv/", version=1))
    _ok(_enable(log))
    reg = log.registry
    _refused(log.apply(secrets.encode_kv1_put(reg, M, "a", b"x")), Refusal.NO_MOUNT)  # a v2 mount
    _refused(log.apply(secrets.encode_kv1_put(reg, "gone/", "a", b"x")), Refusal.NO_MOUNT)
    _refused(log.apply(secrets.encode_kv1_put(reg, "kv/", "a/../b", b"x")), Refusal.INVALID_PATH)
    big = b"x" * (secrets.MAX_CT_BYTES + 1)
    assert "1048577" in _refused(
        log.apply(secrets.encode_kv1_put(reg, "kv/", "a", big)), Refusal.TOO_LARGE
    )
    _refused(log.apply(secrets.encode_kv1_delete(reg, M, "a")), Refusal.NO_MOUNT)
    assert secrets.kv_list(log.store, "kv/") == []


# -- KV v2 writes and reads


def test_put_creates_versions_and_reads_them() -> None:
    log = _log()
    _ok(_enable(log))
    first = _ok(_put(log, "app/db", b"c1", now=100.0))
    assert first == {
        "version": 1,
        "created_time": 100.0,
        "deletion_time": 0.0,
        "destroyed": False,
        "custom_metadata": {},
        "pruned": [],
    }
    assert _ok(_put(log, "app/db", b"c2", now=110.0))["version"] == 2
    current = _read(log, "app/db")
    assert current.status is VersionStatus.OK and current.ct == b"c2"
    assert current.info == secrets.VersionInfo(2, 110.0, 0.0, False)
    assert _read(log, "app/db", 0).ct == b"c2"
    assert _read(log, "app/db", 1).ct == b"c1"
    assert _read(log, "app/db", 3).status is VersionStatus.NOT_FOUND
    assert _read(log, "app/db", -1).ct == b"c2"  # Vault reads the current one for <= 0
    assert _read(log, "missing").status is VersionStatus.NOT_FOUND
    meta = _metadata(log, "app/db")
    assert (meta.current_version, meta.oldest_version) == (2, 0)
    assert (meta.created_time, meta.updated_time) == (100.0, 110.0)
    assert list(meta.versions) == [1, 2]


def test_cas_zero_means_absent_and_n_means_current_version() -> None:
    log = _log()
    _ok(_enable(log))
    assert _ok(_put(log, "a", b"1", cas=0))["version"] == 1
    assert _refused(_put(log, "a", b"x", cas=0), Refusal.CAS_MISMATCH) == (
        "check-and-set parameter did not match the current version"
    )
    result = _put(log, "a", b"x", cas=5)
    _refused(result, Refusal.CAS_MISMATCH)
    assert result.data["current_version"] == 1  # type: ignore[attr-defined]
    assert _ok(_put(log, "a", b"2", cas=1))["version"] == 2
    assert _metadata(log, "a").current_version == 2
    assert _read(log, "a").ct == b"2"


def test_cas_required_by_the_mount_or_the_secret() -> None:
    log = _log()
    _ok(_enable(log, cas_required=True))
    _ok(_enable(log, "free/"))
    assert "required" in _refused(_put(log, "a", b"x"), Refusal.CAS_REQUIRED)
    assert _read(log, "a").status is VersionStatus.NOT_FOUND
    _ok(_put(log, "a", b"x", cas=0))
    # A secret's cas_required=false cannot lift the mount's: a warning, still required.
    data = _ok(_meta(log, "a", cas_required=False))
    assert data["warnings"] and "mandated by backend config" in data["warnings"][0]
    _refused(_put(log, "a", b"y"), Refusal.CAS_REQUIRED)
    # On a mount without it, the secret's own setting applies to that secret only.
    _ok(_put(log, "s", b"1", mount="free/"))
    _ok(_meta(log, "s", mount="free/", cas_required=True))
    _refused(_put(log, "s", b"2", mount="free/"), Refusal.CAS_REQUIRED)
    _ok(_put(log, "s", b"2", mount="free/", cas=1))
    _ok(_put(log, "other", b"1", mount="free/"))


def test_max_versions_keeps_the_newest() -> None:
    log = _log()
    _ok(_enable(log))
    for n in range(1, 10):
        _ok(_put(log, "a", b"%d" % n))
    assert _metadata(log, "a").oldest_version == 0  # as Vault: 0 until the first prune
    _ok(_put(log, "a", b"10"))
    assert _metadata(log, "a").oldest_version == 1
    assert _ok(_put(log, "a", b"11"))["pruned"] == [1]
    assert _ok(_put(log, "a", b"12"))["pruned"] == [2]
    meta = _metadata(log, "a")
    assert (meta.oldest_version, list(meta.versions)) == (3, list(range(3, 13)))
    assert _read(log, "a", 2).status is VersionStatus.NOT_FOUND
    assert _read(log, "a", 3).ct == b"3"


def test_max_versions_of_mount_and_secret_and_changed_later() -> None:
    log = _log()
    _ok(_enable(log, max_versions=3))
    for n in range(5):
        _ok(_put(log, "m", b"%d" % n))
    assert list(_metadata(log, "m").versions) == [3, 4, 5]
    # The secret's setting overrides the mount's.
    _ok(_meta(log, "s", max_versions=5))
    for n in range(7):
        _ok(_put(log, "s", b"%d" % n))
    assert list(_metadata(log, "s").versions) == [3, 4, 5, 6, 7]
    # Lowered later: nothing is pruned until the next write, then everything older.
    _ok(_meta(log, "s", max_versions=2))
    assert list(_metadata(log, "s").versions) == [3, 4, 5, 6, 7]
    assert _ok(_put(log, "s", b"8"))["pruned"] == [3, 4, 5, 6]
    meta = _metadata(log, "s")
    assert (meta.oldest_version, list(meta.versions), meta.max_versions) == (7, [7, 8], 2)
    # Raised later: versions accumulate up to the new limit.
    _ok(_meta(log, "s", max_versions=4))
    for n in range(3):
        _ok(_put(log, "s", b"%d" % n))
    assert list(_metadata(log, "s").versions) == [8, 9, 10, 11]


def test_soft_delete_undelete_destroy_with_reads_at_each_step() -> None:
    log = _log()
    _ok(_enable(log))
    reg = log.registry
    _ok(_put(log, "a", b"one"))
    _ok(_put(log, "a", b"two"))

    def delete(versions: list[int] | None, now: float = 200.0) -> list[int]:
        r = log.apply(secrets.encode_kv2_delete(reg, M, "a", now=now, versions=versions))
        return list(_ok(r)["versions"])

    def undelete(versions: list[int], now: float = 300.0) -> list[int]:
        r = log.apply(secrets.encode_kv2_undelete(reg, M, "a", versions, now=now))
        return list(_ok(r)["versions"])

    def destroy(versions: list[int]) -> list[int]:
        return list(_ok(log.apply(secrets.encode_kv2_destroy(reg, M, "a", versions)))["versions"])

    # Delete the latest: 404-with-metadata for it, the older version still reads.
    assert delete(None) == [2]
    latest = _read(log, "a", now=200.0)
    assert latest.status is VersionStatus.DELETED and latest.ct is None
    assert latest.info == secrets.VersionInfo(2, 100.0, 200.0, False)
    assert _read(log, "a", now=199.0).status is VersionStatus.OK  # as of before the delete
    assert _read(log, "a", 1, now=200.0).ct == b"one"
    assert delete(None, now=250.0) == []  # already deleted: unchanged
    assert _metadata(log, "a").versions[2].deletion_time == 200.0
    # Undelete brings it back.
    assert undelete([2]) == [2]
    assert _read(log, "a", now=400.0).ct == b"two"
    # Delete named versions; missing ones are skipped.
    assert delete([1, 2, 7], now=500.0) == [1, 2]
    assert _read(log, "a", 1, now=500.0).status is VersionStatus.DELETED
    # Destroy drops the value for good; undelete and delete skip it.
    assert destroy([1, 9]) == [1]
    gone = _read(log, "a", 1, now=600.0)
    assert gone.status is VersionStatus.DESTROYED and gone.info.destroyed
    row = log.store.table(secrets.KV2_VERSIONS_TABLE).get("secret/\x00a\x00" + "1".zfill(10))
    assert row is not None and row.value["ct"] is None
    assert undelete([1]) == [] and delete([1], now=700.0) == []
    assert destroy([1]) == []
    assert _read(log, "a", 1, now=800.0).status is VersionStatus.DESTROYED
    # Version 2 is still only soft-deleted.
    assert undelete([2]) == [2] and _read(log, "a", 2, now=900.0).ct == b"two"
    # A new write after a delete is a new version on top.
    assert delete(None, now=950.0) == [2]
    assert _ok(_put(log, "a", b"three", cas=2))["version"] == 3
    assert _read(log, "a", now=1000.0).ct == b"three"


def test_version_commands_without_versions_or_secret() -> None:
    log = _log()
    _ok(_enable(log))
    reg = log.registry
    for data in (
        secrets.encode_kv2_delete(reg, M, "a", now=1.0, versions=[]),
        secrets.encode_kv2_undelete(reg, M, "a", [], now=1.0),
        secrets.encode_kv2_destroy(reg, M, "a", []),
    ):
        assert _refused(log.apply(data), Refusal.INVALID) == "no version number provided"
    # A secret that does not exist: nothing to do, as Vault (204).
    assert _ok(log.apply(secrets.encode_kv2_delete(reg, M, "nope", now=1.0))) == {"versions": []}
    assert _ok(log.apply(secrets.encode_kv2_destroy(reg, M, "nope", [1]))) == {"versions": []}
    assert secrets.kv2_metadata(log.store, M, "nope") is None


def test_delete_version_after_uses_the_smaller_nonzero_setting() -> None:
    log = _log()
    _ok(_enable(log, delete_version_after=60))
    assert _ok(_put(log, "a", b"x", now=100.0))["deletion_time"] == 160.0
    assert _read(log, "a", now=159.9).status is VersionStatus.OK
    assert _read(log, "a", now=160.0).status is VersionStatus.DELETED
    _ok(_meta(log, "b", delete_version_after=30.0))
    assert _ok(_put(log, "b", b"x", now=100.0))["deletion_time"] == 130.0  # secret's is smaller
    _ok(_meta(log, "c", delete_version_after=90.0))
    assert _ok(_put(log, "c", b"x", now=100.0))["deletion_time"] == 160.0  # mount's is smaller
    # Deleting a version due later deletes it now; undelete restarts the clock.
    reg = log.registry
    deleted = log.apply(secrets.encode_kv2_delete(reg, M, "c", now=110.0))
    assert _ok(deleted)["versions"] == [1]
    assert _read(log, "c", now=110.0).info.deletion_time == 110.0
    _ok(log.apply(secrets.encode_kv2_undelete(reg, M, "c", [1], now=500.0)))
    assert _read(log, "c", now=500.0).info.deletion_time == 560.0
    # Without any setting, versions never expire.
    _ok(_enable(log, "plain/"))
    _ok(_meta(log, "d", mount="plain/", delete_version_after=45.0))
    assert _ok(_put(log, "d", b"x", mount="plain/", now=10.0))["deletion_time"] == 55.0
    assert _ok(_put(log, "e", b"x", mount="plain/", now=10.0))["deletion_time"] == 0.0


def test_metadata_put_creates_updates_and_validates() -> None:
    log = _log()
    _ok(_enable(log))
    # Nothing to change: a no-op that creates nothing (Vault's fast path).
    assert _ok(_meta(log, "a")) == {"created": False, "warnings": []}
    assert secrets.kv2_metadata(log.store, M, "a") is None
    assert _ok(_meta(log, "a", custom_metadata={"owner": "ops"}))["created"] is True
    meta = _metadata(log, "a")
    assert (meta.current_version, meta.custom_metadata, meta.created_time) == (
        0,
        {"owner": "ops"},
        50.0,
    )
    assert _read(log, "a").status is VersionStatus.NOT_FOUND
    assert secrets.kv_list(log.store, M) == ["a"]
    # A secret with metadata but no version takes cas=0; custom metadata shows in answers.
    assert _ok(_put(log, "a", b"x", cas=0))["custom_metadata"] == {"owner": "ops"}
    _ok(_meta(log, "a", max_versions=3, delete_version_after=5.0))
    meta = _metadata(log, "a")
    assert (meta.max_versions, meta.delete_version_after) == (3, 5.0)
    assert meta.custom_metadata == {"owner": "ops"}  # untouched when not named
    _ok(_meta(log, "a", custom_metadata={}))
    assert _metadata(log, "a").custom_metadata == {}
    _refused(_meta(log, "a", max_versions=-1), Refusal.INVALID)
    _refused(_meta(log, "a", delete_version_after=-1.0), Refusal.INVALID)
    _refused(_meta(log, "../a", max_versions=1), Refusal.INVALID_PATH)
    _refused(_meta(log, "a", mount="nope/", max_versions=1), Refusal.NO_MOUNT)


@pytest.mark.parametrize(
    ("custom", "ok"),
    [
        ({f"k{i}": "v" for i in range(64)}, True),
        ({f"k{i}": "v" for i in range(65)}, False),
        ({"k" * 128: "v"}, True),
        ({"k" * 129: "v"}, False),
        ({"é" * 64: "v"}, True),  # 128 bytes of UTF-8
        ({"é" * 65: "v"}, False),  # 130 bytes
        ({"k": "v" * 512}, True),
        ({"k": "v" * 513}, False),
        ({"": "v"}, False),
        ({"k": ""}, False),
        ({"k\n": "v"}, False),
        ({"k": "v\x07"}, False),
    ],
)
def test_custom_metadata_limits(custom: dict[str, str], ok: bool) -> None:
    log = _log()
    _ok(_enable(log))
    result = _meta(log, "a", custom_metadata=custom)
    if ok:
        _ok(result)
        assert _metadata(log, "a").custom_metadata == custom
    else:
        assert _refused(result, Refusal.INVALID).startswith("custom_metadata validation failed")
        assert secrets.kv2_metadata(log.store, M, "a") is None


def test_metadata_delete_removes_every_version() -> None:
    log = _log()
    _ok(_enable(log))
    for n in range(3):
        _ok(_put(log, "a", b"%d" % n))
    _ok(_put(log, "ab", b"neighbour"))
    reg = log.registry
    data = _ok(log.apply(secrets.encode_kv2_metadata_delete(reg, M, "a")))
    assert data == {"deleted": True, "versions": 3}
    assert secrets.kv2_metadata(log.store, M, "a") is None
    assert _read(log, "a", 1).status is VersionStatus.NOT_FOUND
    assert secrets.kv_list(log.store, M) == ["ab"]
    assert _read(log, "ab").ct == b"neighbour"
    assert _ok(log.apply(secrets.encode_kv2_metadata_delete(reg, M, "a")))["deleted"] is False
    # Written again, it starts over at version 1.
    assert _ok(_put(log, "a", b"again", cas=0))["version"] == 1


def test_v2_commands_need_a_v2_mount() -> None:
    log = _log()
    _ok(_enable(log, "kv/", version=1))
    reg = log.registry
    _refused(_put(log, "a", b"x", mount="kv/"), Refusal.NO_MOUNT)
    _refused(_put(log, "a", b"x", mount="nope/"), Refusal.NO_MOUNT)
    deleted = secrets.encode_kv2_metadata_delete(reg, "kv/", "a")
    _refused(log.apply(deleted), Refusal.NO_MOUNT)
    _refused(log.apply(secrets.encode_kv2_destroy(reg, "kv/", "a", [1])), Refusal.NO_MOUNT)


# -- listing


def test_list_shows_immediate_children_folders_with_a_slash() -> None:
    log = _log()
    _ok(_enable(log))
    _ok(_enable(log, "other/"))
    for path in ["a", "a-b", "b/c", "b/d/e", "b/d/f", "bb", "b/d0"]:
        _ok(_put(log, path, b"x"))
    _ok(_put(log, "zzz", b"x", mount="other/"))
    ls = secrets.kv_list
    assert ls(log.store, M) == ["a", "a-b", "b/", "bb"]
    assert ls(log.store, M, "b") == ["c", "d/", "d0"]
    assert ls(log.store, M, "b/") == ["c", "d/", "d0"]
    assert ls(log.store, M, "b/d") == ["e", "f"]
    assert ls(log.store, M, "a") == []  # a secret, not a folder
    assert ls(log.store, M, "nothing/") == []
    assert ls(log.store, "other/") == ["zzz"]
    # Every version destroyed or deleted: the secret still lists while metadata exists.
    reg = log.registry
    _ok(log.apply(secrets.encode_kv2_destroy(reg, M, "bb", [1])))
    _ok(log.apply(secrets.encode_kv2_delete(reg, M, "a", now=100.0)))
    assert ls(log.store, M) == ["a", "a-b", "b/", "bb"]
    with pytest.raises(ValueError, match=r"'\.\.'"):
        ls(log.store, M, "../")
    with pytest.raises(ValueError, match="no secrets engine"):
        ls(log.store, "nope/")


# -- validation


@pytest.mark.parametrize("path", ["", "/a", "a//b", "a/", "a/../b", "./a", "a/.", "..", "a\x00b"])
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        secrets.validate_path(path)
    log = _log()
    _ok(_enable(log))
    _refused(_put(log, path, b"x"), Refusal.INVALID_PATH)
    assert log.store.table(secrets.KV2_META_TABLE).index == 0  # nothing written


@pytest.mark.parametrize("path", ["a", "a/b/c", "a.b/..c/.d", "with space/ünï"])
def test_good_paths_pass(path: str) -> None:
    secrets.validate_path(path)
    log = _log()
    _ok(_enable(log))
    _ok(_put(log, path, b"x"))
    assert _read(log, path).ct == b"x"


def test_oversize_values_are_refused() -> None:
    log = _log()
    _ok(_enable(log))
    limit = b"x" * secrets.MAX_CT_BYTES
    secrets.check_ct(limit)
    with pytest.raises(ValueError, match="more than"):
        secrets.check_ct(limit + b"x")
    _ok(_put(log, "a", limit))
    _refused(_put(log, "a", limit + b"x"), Refusal.TOO_LARGE)
    assert _metadata(log, "a").current_version == 1


@pytest.mark.parametrize(
    ("apply", "body"),
    [
        (secrets.apply_kv2_put, None),
        (secrets.apply_kv2_put, {"mount": M, "path": "a", "ct": "text", "cas": None, "now": 1.0}),
        (secrets.apply_kv2_put, {"mount": M, "path": "a", "ct": b"x", "cas": "1", "now": 1.0}),
        (secrets.apply_kv2_put, {"mount": M, "path": "a", "ct": b"x", "cas": None}),
        (secrets.apply_kv2_put, {"mount": M, "path": 5, "ct": b"x", "cas": None, "now": 1.0}),
        (secrets.apply_kv2_delete, {"mount": M, "path": "a", "versions": "1", "now": 1.0}),
        (secrets.apply_kv2_destroy, {"mount": M, "path": "a", "versions": [True]}),
        (
            secrets.apply_kv2_metadata_put,
            {"mount": M, "path": "a", "now": 1, "custom_metadata": {"k": 1}},
        ),
        (secrets.apply_kv2_metadata_put, {"mount": M, "path": "a", "now": 1, "cas_required": 1}),
        (secrets.apply_mount_enable, {"path": "x/", "type": "kv", "version": "2"}),
        (secrets.apply_mount_tune, {"path": M, "options": {"cas_required": "yes"}}),
    ],
)
def test_malformed_bodies_raise(apply: Any, body: Any) -> None:
    store = StateStore()
    _ok(
        secrets.apply_mount_enable(
            ApplyContext(1, 1, store),
            {"path": M, "type": "kv", "version": 2, "description": "", "now": 1.0, "accessor": "a"},
        )
    )
    before = store.dump()
    with pytest.raises(TypeError):
        apply(ApplyContext(2, 1, store), body)
    assert store.dump() == before


def test_a_malformed_entry_stops_the_fsm_with_the_command_named() -> None:
    log = _log()
    with pytest.raises(ApplyFailed, match=r"secrets\.kv2_put"):
        log.apply(log.registry.encode(secrets.SECRETS_KV2_PUT, {"mount": M}))


# -- determinism and snapshots


def _script(registry: CommandRegistry) -> list[bytes]:
    s = secrets
    return [
        s.encode_mount_enable(
            registry, M, version=2, now=1, accessor="a1", options={"max_versions": 2}
        ),
        s.encode_mount_enable(registry, "kv/", version=1, now=2, accessor="a2"),
        s.encode_mount_enable(registry, "secret/x/", version=2, now=3, accessor="a3"),  # refused
        s.encode_kv2_put(registry, M, "a/b", b"1", now=10, cas=0),
        s.encode_kv2_put(registry, M, "a/b", b"2", now=11, cas=None),
        s.encode_kv2_put(registry, M, "a/b", b"3", now=12, cas=7),  # refused
        s.encode_kv2_put(registry, M, "a/b", b"3", now=13, cas=2),  # prunes version 1
        s.encode_kv2_metadata_put(registry, M, "c", now=14, custom_metadata={"k": "v"}),
        s.encode_kv2_put(registry, M, "c", b"c1", now=15, cas=None),
        s.encode_kv2_delete(registry, M, "a/b", now=16),
        s.encode_kv2_undelete(registry, M, "a/b", [3], now=17),
        s.encode_kv2_destroy(registry, M, "a/b", [2]),
        s.encode_kv1_put(registry, "kv/", "x", b"v1"),
        s.encode_kv1_put(registry, "kv/", "y", b"v1"),
        s.encode_kv1_delete(registry, "kv/", "y"),
        s.encode_mount_tune(registry, M, description="tuned", options={"cas_required": True}),
        s.encode_kv2_put(registry, M, "c", b"c2", now=18, cas=None),  # refused: cas required
        s.encode_kv2_metadata_delete(registry, M, "c"),
    ]


def _run(script: list[bytes]) -> tuple[Log, list[object]]:
    log = _log()
    return log, [log.apply(entry) for entry in script]


def test_same_commands_give_the_same_state() -> None:
    script = _script(_registry())
    first, first_results = _run(script)
    second, second_results = _run(script)
    assert first.store.dump() == second.store.dump()
    assert first_results == second_results
    assert [r.ok for r in first_results] == [  # type: ignore[attr-defined]
        True, True, False, True, True, False, True, True, True,
        True, True, True, True, True, True, True, False, True,
    ]  # fmt: skip
    meta = secrets.kv2_metadata(first.store, M, "a/b")
    assert meta is not None and list(meta.versions) == [2, 3] and meta.versions[2].destroyed


def test_snapshot_round_trip_keeps_secrets() -> None:
    log, _ = _run(_script(_registry()))
    restored = FSM(_registry())
    restored.restore(log.fsm.snapshot())
    assert restored.store.dump() == log.store.dump()
    for store in (log.store, restored.store):
        assert secrets.kv2_version(store, M, "a/b", 2, now=20).status is VersionStatus.DESTROYED
        assert secrets.kv2_version(store, M, "a/b", now=20).ct == b"3"
        assert secrets.kv1_get(store, "kv/", "x") == b"v1"
    assert secrets.list_mounts(restored.store) == secrets.list_mounts(log.store)
    assert secrets.kv2_metadata(restored.store, M, "a/b") == secrets.kv2_metadata(
        log.store, M, "a/b"
    )
