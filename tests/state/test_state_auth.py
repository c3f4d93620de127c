"""Auth methods as replicated state (`stack/state/auth.py`, `approle.py`,
`userpass.py`): mounts, AppRole roles and secret IDs (terms, uses, expiry, tidy),
userpass users, refusals that write nothing, malformed bodies that raise, and
determinism."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from state_helpers import Log

from stack.state import CommandRegistry, acl, approle, register_substrate_commands, tokens, userpass
from stack.state import auth as authstate
from stack.state.commands import ApplyContext, WriteResult
from stack.state.errors import ApplyFailed
from stack.state.fsm import FSM
from stack.state.store import StateStore

NOW = 1_700_000_000.0
AR, UP = "approle/", "userpass/"


def _registry() -> CommandRegistry:
    registry = CommandRegistry()
    register_substrate_commands(registry)
    tokens.register(registry)
    acl.register(registry)
    authstate.register(registry)
    return registry


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def record(**over: Any) -> dict[str, Any]:
    """A well-formed scrypt record (the bytes need not be a real hash here)."""
    return {"algo": "scrypt", "n": 2**14, "r": 8, "p": 1, "salt": b"s" * 16, "hash": b"h" * 32,
            **over}  # fmt: skip


class Auth:
    """A fresh FSM with an AppRole mount at approle/ and a userpass mount at userpass/."""

    def __init__(self, mounts: bool = True) -> None:
        self.log = Log(FSM(_registry()))
        self.reg, self.store = self.log.registry, self.log.store
        if mounts:
            assert self.enable(AR, "approle", "auth_approle_1").ok
            assert self.enable(UP, "userpass", "auth_userpass_1").ok

    def apply(self, data: bytes) -> WriteResult:
        result = self.log.apply(data)
        assert isinstance(result, WriteResult)
        return result

    def refused(self, data: bytes, reason: authstate.Refusal) -> str:
        """Apply, expect a refusal for `reason` that changed no table, return its error."""
        before = self.store.dump()["tables"]
        result = self.apply(data)
        assert not result.ok, result
        assert result.data["reason"] == reason.value, result.data
        assert self.store.dump()["tables"] == before
        return str(result.data["error"])

    def enable(self, path: str, kind: str, accessor: str) -> WriteResult:
        return self.apply(
            authstate.encode_mount_enable(
                self.reg, path, method_type=kind, accessor=accessor, now=NOW
            )
        )

    def role(self, name: str, generated: str = "", **fields: Any) -> WriteResult:
        return self.apply(self.role_cmd(name, generated, **fields))

    def role_cmd(self, name: str, generated: str = "", **fields: Any) -> bytes:
        return approle.encode_role_set(
            self.reg, AR, name, generated_role_id=generated or f"id-{name}", now=NOW, **fields
        )

    def secret_cmd(self, role: str, secret: str, now: float = NOW, **kw: Any) -> bytes:
        kw.setdefault("accessor", f"acc-{secret}")
        return approle.encode_secret_id_create(
            self.reg, AR, role, secret_hash=sha(secret), now=now, **kw
        )

    def secret(self, role: str, secret: str, now: float = NOW, **kw: Any) -> WriteResult:
        return self.apply(self.secret_cmd(role, secret, now, **kw))

    def use(self, role: str, secret: str, now: float = NOW) -> WriteResult:
        return self.apply(
            approle.encode_secret_id_use(self.reg, AR, role, secret_hash=sha(secret), now=now)
        )

    def tidy(self, now: float, mount: str = "", limit: int = 100) -> WriteResult:
        cmd = approle.encode_secret_id_tidy(self.reg, now=now, mount=mount, limit=limit)
        return self.apply(cmd)

    def user(self, name: str, **kw: Any) -> WriteResult:
        return self.apply(userpass.encode_user_set(self.reg, UP, name, **kw))


# -- mounts


def test_mounts_enable_list_find_and_read() -> None:
    a = Auth()
    assert [(m.path, m.type, m.accessor) for m in authstate.list_mounts(a.store)] == [
        (AR, "approle", "auth_approle_1"),
        (UP, "userpass", "auth_userpass_1"),
    ]
    assert a.enable("team/ops/", "userpass", "auth_userpass_2").ok
    found = authstate.find_mount(a.store, "team/ops/login/alice")
    assert found is not None and found.path == "team/ops/" and found.created == NOW
    assert authstate.find_mount(a.store, "approle") == authstate.get_mount(a.store, AR)
    assert authstate.find_mount(a.store, "approle/role/x") == authstate.get_mount(a.store, AR)
    assert authstate.find_mount(a.store, "approles/login") is None
    assert authstate.find_mount(a.store, "team/login") is None


@pytest.mark.parametrize(
    ("path", "kind", "accessor", "reason", "fragment"),
    [
        (AR, "approle", "auth_x", authstate.Refusal.MOUNT_EXISTS, "already in use"),
        ("approle/inner/", "approle", "auth_x", authstate.Refusal.MOUNT_EXISTS, "overlaps"),
        ("token/", "approle", "auth_x", authstate.Refusal.INVALID, "token/"),
        ("ldap/", "ldap", "auth_x", authstate.Refusal.INVALID, "unsupported"),
        ("no-slash", "approle", "auth_x", authstate.Refusal.INVALID, "must end with '/'"),
        ("a b/", "approle", "auth_x", authstate.Refusal.INVALID, "segment"),
        ("a//", "approle", "auth_x", authstate.Refusal.INVALID, "segment"),
        ("other/", "approle", "auth_approle_1", authstate.Refusal.INVALID, "in use"),
        ("other/", "approle", "bad/accessor", authstate.Refusal.INVALID, "accessor"),
    ],
)
def test_mount_enable_refusals_write_nothing(
    path: str, kind: str, accessor: str, reason: authstate.Refusal, fragment: str
) -> None:
    a = Auth()
    cmd = authstate.encode_mount_enable(a.reg, path, method_type=kind, accessor=accessor, now=NOW)
    assert fragment in a.refused(cmd, reason)


def test_mount_disable_drops_its_state_and_revokes_the_tokens_it_issued() -> None:
    a = Auth()
    assert a.enable("approle2/", "approle", "auth_approle_2").ok
    a.role("web", secret_id_ttl=60)
    a.secret("web", "s1")
    a.user("alice", password=record(), token_policies=["dev"])

    def login_token(accessor: str, path: str, parent: str = "") -> None:
        created = a.apply(
            acl.encode_token_create(
                a.reg, secret_hash=sha(accessor), accessor=accessor, now=NOW,
                parent_accessor=parent, policies=["default"], orphan=not parent, path=path,
            )
        )  # fmt: skip
        assert created.ok, created

    login_token("t-web", "auth/approle/login")
    login_token("t-child", "auth/token/create", parent="t-web")  # made by the login token
    login_token("t-other", "auth/approle2/login")  # another mount whose name starts alike
    login_token("t-alice", "auth/userpass/login/alice")

    result = a.apply(authstate.encode_mount_disable(a.reg, AR))
    assert result.ok and result.data == {"disabled": True, "revoked": ["t-child", "t-web"]}
    assert authstate.get_mount(a.store, AR) is None
    for table in (approle.ROLES_TABLE, approle.ROLE_IDS_TABLE, approle.SECRET_IDS_TABLE,
                  approle.SECRET_ID_ACCESSORS_TABLE, approle.SECRET_ID_EXPIRY_TABLE):  # fmt: skip
        assert a.store.table(table).keys() == [], table
    assert approle.next_secret_id_expiry(a.store) is None
    assert acl.list_accessors(a.store) == ["t-alice", "t-other"]
    assert userpass.get_user(a.store, UP, "alice") is not None  # another mount: untouched
    # Disabling nothing is not an error (Vault), and changes nothing.
    again = a.apply(authstate.encode_mount_disable(a.reg, AR))
    assert again.ok and again.data == {"disabled": False, "revoked": []}


# -- AppRole roles


def test_role_set_creates_with_defaults_and_updates_only_given_fields() -> None:
    a = Auth()
    made = a.role("web", generated="gen-1", token_policies=["ops", "dev", "ops"], token_ttl=600)
    assert made.ok and made.data == {"name": "web", "role_id": "gen-1", "created": True}
    role = approle.get_role(a.store, AR, "web")
    assert role is not None
    assert (role.role_id, role.bind_secret_id, role.secret_id_ttl) == ("gen-1", True, 0)
    assert role.token.policies == ("dev", "ops") and role.token.ttl == 600
    assert role.token.type == "default" and role.token.max_ttl == 0
    # A later write changes only what it names; the role ID stays (a new one is ignored).
    again = a.role("web", generated="gen-2", secret_id_num_uses=3)
    assert again.ok and again.data["created"] is False and again.data["role_id"] == "gen-1"
    role = approle.get_role(a.store, AR, "web")
    assert role is not None and role.secret_id_num_uses == 3
    assert role.token.policies == ("dev", "ops") and role.token.ttl == 600
    assert role.fields() == {**approle.ROLE_DEFAULTS, **role.fields()}  # every field present
    assert approle.role_by_id(a.store, AR, "gen-1") == role
    assert approle.role_by_id(a.store, AR, "gen-2") is None
    assert approle.list_roles(a.store, AR) == ["web"]


def test_role_id_custom_unique_per_mount_and_moved_by_role_id_set() -> None:
    a = Auth()
    assert a.role("web", role_id="custom-web").data["role_id"] == "custom-web"
    a.role("db")
    error = a.refused(
        approle.encode_role_id_set(a.reg, AR, "db", "custom-web"), authstate.Refusal.ROLE_ID_IN_USE
    )
    assert "already in use" in error
    assert "in use" in a.refused(a.role_cmd("db", role_id="custom-web"),
                                 authstate.Refusal.ROLE_ID_IN_USE)  # fmt: skip
    assert a.apply(approle.encode_role_id_set(a.reg, AR, "web", "moved")).ok
    assert approle.role_by_id(a.store, AR, "custom-web") is None
    found = approle.role_by_id(a.store, AR, "moved")
    assert found is not None and found.name == "web"
    # The same role ID on another mount is another role.
    a.enable("approle2/", "approle", "auth_approle_2")
    cmd = approle.encode_role_set(
        a.reg, "approle2/", "web", generated_role_id="x", now=NOW, role_id="moved"
    )
    assert a.apply(cmd).ok
    assert "does not exist" in a.refused(
        approle.encode_role_id_set(a.reg, AR, "ghost", "r"), authstate.Refusal.NOT_FOUND
    )
    assert "printable" in a.refused(
        approle.encode_role_id_set(a.reg, AR, "web", "bad\nid"), authstate.Refusal.INVALID
    )


@pytest.mark.parametrize(
    ("name", "fields", "fragment"),
    [
        ("bad/name", {}, "invalid role name"),
        ("r" * 129, {}, "invalid role name"),
        ("web", {"token_ttl": 600, "token_max_ttl": 60}, "greater than token_max_ttl"),
        ("web", {"token_policies": ["root"]}, "root policy"),
        ("web", {"token_policies": ["Dev!"]}, "invalid policy name"),
        ("web", {"token_type": "batch"}, "batch"),
        ("web", {"token_type": "odd"}, "invalid token_type"),
        ("web", {"token_ttl": 2**32 + 1}, "between 0 and"),
        ("web", {"secret_id_ttl": 2**40}, "between 0 and"),
        ("web", {"secret_id_bound_cidrs": ["10.0.0.1/8"]}, "canonical"),
        ("web", {"secret_id_bound_cidrs": ["not-an-ip"]}, "invalid CIDR"),
        ("web", {"secret_id_bound_cidrs": ["10.0.0.0/8"] * 2}, "canonical"),
        ("web", {"bind_secret_id": False}, "at least one constraint"),
    ],
)
def test_role_refusals_write_nothing(name: str, fields: dict[str, Any], fragment: str) -> None:
    a = Auth()
    assert fragment in a.refused(a.role_cmd(name, **fields), authstate.Refusal.INVALID)


def test_writes_to_a_missing_mount_or_one_of_the_other_type_are_refused() -> None:
    a = Auth()
    cmd = approle.encode_role_set(a.reg, UP, "web", generated_role_id="g", now=NOW)
    assert "no approle auth method" in a.refused(cmd, authstate.Refusal.NO_MOUNT)
    cmd = userpass.encode_user_set(a.reg, AR, "alice", password=record())
    assert "no userpass auth method" in a.refused(cmd, authstate.Refusal.NO_MOUNT)
    cmd = approle.encode_secret_id_use(a.reg, "nowhere/", "web", secret_hash=sha("s"), now=NOW)
    a.refused(cmd, authstate.Refusal.NO_MOUNT)


def test_role_delete_takes_its_secret_ids_and_role_id() -> None:
    a = Auth()
    a.role("web")
    a.role("webx")  # a name with the same prefix keeps its secret IDs
    a.secret("web", "s1", ttl=60)
    a.secret("webx", "s2", ttl=60)
    result = a.apply(approle.encode_role_delete(a.reg, AR, "web"))
    assert result.ok and result.data == {"deleted": True}
    assert approle.get_role(a.store, AR, "web") is None
    assert approle.role_by_id(a.store, AR, "id-web") is None
    assert approle.get_secret_id(a.store, AR, "web", sha("s1")) is None
    assert approle.list_secret_id_accessors(a.store, AR, "webx") == ["acc-s2"]
    assert len(a.store.table(approle.SECRET_ID_EXPIRY_TABLE).keys()) == 1
    assert a.apply(approle.encode_role_delete(a.reg, AR, "web")).data == {"deleted": False}


# -- secret IDs


def test_secret_id_create_stores_only_the_hash_and_indexes_it() -> None:
    a = Auth()
    a.role("web", secret_id_ttl=600, secret_id_num_uses=3,
           secret_id_bound_cidrs=["10.0.0.0/8"])  # fmt: skip
    made = a.secret("web", "the-secret", accessor="acc-1", metadata={"host": "a"},
                    cidr_list=["10.1.0.0/16"])  # fmt: skip
    assert made.ok and made.data == {"accessor": "acc-1", "ttl": 600, "num_uses": 3,
                                     "expiration_time": NOW + 600}  # fmt: skip
    entry = approle.get_secret_id(a.store, AR, "web", sha("the-secret"))
    assert entry is not None
    assert (entry.accessor, entry.num_uses, entry.ttl) == ("acc-1", 3, 600)
    assert (entry.creation_time, entry.expiration_time) == (NOW, NOW + 600)
    assert entry.metadata == {"host": "a"} and entry.cidr_list == ("10.1.0.0/16",)
    assert approle.secret_id_by_accessor(a.store, AR, "web", "acc-1") == entry
    assert approle.list_secret_id_accessors(a.store, AR, "web") == ["acc-1"]
    assert approle.next_secret_id_expiry(a.store) == NOW + 600
    assert "the-secret" not in repr(a.store.dump())


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"ttl": 0}, "ttl cannot be longer"),  # unlimited under a limited role
        ({"ttl": 601}, "ttl cannot be longer"),
        ({"num_uses": 0}, "num_uses cannot be higher"),
        ({"num_uses": 4}, "num_uses cannot be higher"),
        ({"cidr_list": ["192.168.0.0/16"]}, "outside the role's"),
        ({"cidr_list": ["10.0.0.0/7"]}, "outside the role's"),  # wider than the role's /8
        ({"cidr_list": ["10.1.0.1/16"]}, "canonical"),
        ({"metadata": {f"k{i}": "v" for i in range(65)}}, "at most 64 keys"),
        ({"metadata": {"k": "x" * 513}}, "512"),
    ],
)
def test_secret_id_terms_within_the_roles_are_refused_otherwise(
    kw: dict[str, Any], fragment: str
) -> None:
    a = Auth()
    a.role("web", secret_id_ttl=600, secret_id_num_uses=3,
           secret_id_bound_cidrs=["10.0.0.0/8"])  # fmt: skip
    assert fragment in a.refused(a.secret_cmd("web", "s", **kw), authstate.Refusal.INVALID)


def test_secret_id_terms_under_an_unlimited_role_and_other_refusals() -> None:
    a = Auth()
    a.role("free")
    made = a.secret("free", "s1", ttl=30, num_uses=2)
    assert made.ok and (made.data["ttl"], made.data["num_uses"]) == (30, 2)
    unlimited = a.secret("free", "s2")
    assert unlimited.ok and unlimited.data["expiration_time"] == 0.0
    assert a.refused(a.secret_cmd("free", "s1", accessor="fresh"), authstate.Refusal.EXISTS)
    assert "accessor" in a.refused(a.secret_cmd("free", "s3", accessor="acc-s1"),
                                   authstate.Refusal.EXISTS)  # fmt: skip
    a.refused(a.secret_cmd("ghost", "s4"), authstate.Refusal.NOT_FOUND)
    a.role("cidr-only", bind_secret_id=False, secret_id_bound_cidrs=["10.0.0.0/8"])
    assert "bind_secret_id" in a.refused(a.secret_cmd("cidr-only", "s5"),
                                         authstate.Refusal.INVALID)  # fmt: skip


def test_secret_id_uses_are_spent_and_the_last_deletes_it() -> None:
    a = Auth()
    a.role("web", secret_id_num_uses=2, secret_id_ttl=60)
    a.secret("web", "s", metadata={"m": "1"})
    first = a.use("web", "s", NOW + 1)
    assert first.ok and first.data == {"metadata": {"m": "1"}, "deleted": False, "num_uses": 1}
    entry = approle.get_secret_id(a.store, AR, "web", sha("s"))
    assert entry is not None and entry.num_uses == 1 and entry.last_updated_time == NOW + 1
    last = a.use("web", "s", NOW + 2)
    assert last.ok and last.data == {"metadata": {"m": "1"}, "deleted": True, "num_uses": 0}
    assert approle.get_secret_id(a.store, AR, "web", sha("s")) is None
    assert approle.list_secret_id_accessors(a.store, AR, "web") == []
    assert approle.next_secret_id_expiry(a.store) is None
    assert "invalid secret ID" in a.refused(
        approle.encode_secret_id_use(a.reg, AR, "web", secret_hash=sha("s"), now=NOW + 3),
        authstate.Refusal.INVALID_SECRET_ID,
    )


def test_unlimited_secret_id_use_changes_nothing() -> None:
    a = Auth()
    a.role("web")
    a.secret("web", "s")
    before = a.store.dump()["tables"]
    for _ in range(3):
        used = a.use("web", "s")
        assert used.ok and used.data["num_uses"] == 0 and not used.data["deleted"]
    assert a.store.dump()["tables"] == before


def test_expired_secret_ids_are_refused_then_tidied_in_batches() -> None:
    a = Auth()
    a.role("web", secret_id_ttl=60)
    a.enable("approle2/", "approle", "auth_approle_2")
    for i in range(3):
        a.secret("web", f"s{i}", now=NOW + i)  # expire at NOW+60, +61, +62
    other = approle.encode_secret_id_create(
        a.reg, "approle2/", "r", secret_hash=sha("o"), accessor="o", now=NOW, ttl=10
    )
    a.apply(approle.encode_role_set(a.reg, "approle2/", "r", generated_role_id="g", now=NOW))
    assert a.apply(other).ok
    assert a.use("web", "s0", NOW + 59.5).ok
    cmd = approle.encode_secret_id_use(a.reg, AR, "web", secret_hash=sha("s0"), now=NOW + 60)
    a.refused(cmd, authstate.Refusal.INVALID_SECRET_ID)
    assert approle.next_secret_id_expiry(a.store) == NOW + 10
    # One mount only: the other mount's expired secret ID stays.
    assert a.tidy(NOW + 61, mount=AR, limit=1).data == {"deleted": 1, "more": True}
    assert a.tidy(NOW + 61, mount=AR).data == {"deleted": 1, "more": False}
    assert approle.list_secret_id_accessors(a.store, AR, "web") == ["acc-s2"]
    assert approle.get_secret_id(a.store, "approle2/", "r", sha("o")) is not None
    # Every mount; s2 expires at NOW+62 exactly.
    assert a.tidy(NOW + 61.9).data == {"deleted": 1, "more": False}
    assert a.tidy(NOW + 62).data == {"deleted": 1, "more": False}
    assert a.store.table(approle.SECRET_IDS_TABLE).keys() == []
    assert a.store.table(approle.SECRET_ID_EXPIRY_TABLE).keys() == []
    assert a.tidy(NOW + 1000).data == {"deleted": 0, "more": False}


def test_secret_id_destroy_by_hash_or_accessor() -> None:
    a = Auth()
    a.role("web")
    a.secret("web", "s1", ttl=60)
    a.secret("web", "s2")
    by_hash = approle.encode_secret_id_destroy(a.reg, AR, "web", secret_hash=sha("s1"))
    assert a.apply(by_hash).data == {"deleted": True}
    assert a.apply(by_hash).data == {"deleted": False}
    assert a.store.table(approle.SECRET_ID_EXPIRY_TABLE).keys() == []
    by_accessor = approle.encode_secret_id_destroy(a.reg, AR, "web", accessor="acc-s2")
    assert a.apply(by_accessor).data == {"deleted": True}
    assert approle.list_secret_id_accessors(a.store, AR, "web") == []
    with pytest.raises(TypeError):
        approle.encode_secret_id_destroy(a.reg, AR, "web")


# -- userpass


def test_user_lifecycle() -> None:
    a = Auth()
    assert "missing password" in a.refused(
        userpass.encode_user_set(a.reg, UP, "alice", token_policies=["dev"]),
        authstate.Refusal.INVALID,
    )
    made = a.user("alice", password=record(), token_policies=["dev"], token_ttl=60)
    assert made.ok and made.data == {"name": "alice", "created": True}
    # A partial update keeps the password and the other fields.
    assert a.user("alice", token_max_ttl=120).data == {"name": "alice", "created": False}
    user = userpass.get_user(a.store, UP, "alice")
    assert user is not None and user.password == record()
    assert (user.token.policies, user.token.ttl, user.token.max_ttl) == (("dev",), 60, 120)
    assert a.apply(userpass.encode_user_password(a.reg, UP, "alice", record(hash=b"n" * 32))).ok
    assert a.apply(userpass.encode_user_policies(a.reg, UP, "alice", ["b", "a", "b"])).ok
    user = userpass.get_user(a.store, UP, "alice")
    assert user is not None and user.password["hash"] == b"n" * 32
    assert user.token.policies == ("a", "b") and user.token.ttl == 60
    assert userpass.list_users(a.store, UP) == ["alice"]
    for cmd in (userpass.encode_user_password(a.reg, UP, "bob", record()),
                userpass.encode_user_policies(a.reg, UP, "bob", ["a"])):  # fmt: skip
        assert "does not exist" in a.refused(cmd, authstate.Refusal.NOT_FOUND)
    deleted = a.apply(userpass.encode_user_delete(a.reg, UP, "alice"))
    assert deleted.data == {"deleted": True} and userpass.get_user(a.store, UP, "alice") is None


@pytest.mark.parametrize(
    ("rec", "fragment"),
    [
        (record(n=2**13), "power of two"),
        (record(n=3 * 2**14), "power of two"),
        (record(n=2**16, r=8), "32 MiB"),
        (record(r=4), "r must be"),
        (record(p=5), "p must be"),
        (record(salt=b"s" * 8), "salt"),
        (record(hash=b"h" * 16), "hash"),
        (record(extra=1), "exactly"),
        ({"algo": "md5", "salt": b"s" * 16, "hash": b"h" * 32}, "unsupported"),
        ({"algo": "pbkdf2-sha256", "iterations": 1000, "salt": b"s" * 16, "hash": b"h" * 32},
         "iterations"),
    ],
)  # fmt: skip
def test_weak_or_odd_password_records_are_refused(rec: dict[str, Any], fragment: str) -> None:
    a = Auth()
    cmd = userpass.encode_user_set(a.reg, UP, "alice", password=rec)
    assert fragment in a.refused(cmd, authstate.Refusal.INVALID)


def test_user_token_field_refusals() -> None:
    a = Auth()
    for fields, fragment in [({"token_policies": ["root"]}, "root"),
                             ({"token_ttl": 10, "token_max_ttl": 5}, "greater"),
                             ({"token_type": "batch"}, "batch")]:  # fmt: skip
        cmd = userpass.encode_user_set(a.reg, UP, "alice", password=record(), **fields)
        assert fragment in a.refused(cmd, authstate.Refusal.INVALID)
    cmd = userpass.encode_user_set(a.reg, UP, "Al/ice", password=record())
    assert "invalid username" in a.refused(cmd, authstate.Refusal.INVALID)


# -- malformed bodies are bugs: they raise (the node stops), before writing anything


def _ctx() -> ApplyContext:
    return ApplyContext(1, 1, StateStore())


@pytest.mark.parametrize(
    ("apply", "body"),
    [
        (authstate.apply_mount_enable, None),
        (authstate.apply_mount_enable, {"path": AR, "type": "approle", "description": "",
                                        "accessor": "a"}),  # no now
        (authstate.apply_mount_disable, {"path": 1}),
        (approle.apply_role_set, {"mount": AR, "name": "r", "generated_role_id": "g", "now": NOW,
                                  "token_ttl": "1h"}),
        (approle.apply_role_set, {"mount": AR, "name": "r", "generated_role_id": "g", "now": NOW,
                                  "bind_secret_id": "true"}),
        (approle.apply_role_set, {"mount": AR, "name": "r", "generated_role_id": "g", "now": NOW,
                                  "token_policies": "dev"}),
        (approle.apply_role_set, {"mount": AR, "name": "r", "now": NOW}),  # no generated id
        (approle.apply_secret_id_create, {"mount": AR, "role": "r", "hash": "nothex",
                                          "accessor": "a", "now": NOW, "metadata": {},
                                          "cidr_list": []}),
        (approle.apply_secret_id_create, {"mount": AR, "role": "r", "hash": sha("x"),
                                          "accessor": "a", "now": NOW, "metadata": {"k": 1},
                                          "cidr_list": []}),
        (approle.apply_secret_id_create, {"mount": AR, "role": "r", "hash": sha("x"),
                                          "accessor": "a", "now": NOW, "metadata": {},
                                          "cidr_list": [], "ttl": 1.5}),
        (approle.apply_secret_id_use, {"mount": AR, "role": "r", "hash": sha("x")}),
        (approle.apply_secret_id_use, {"mount": AR, "role": "r", "hash": sha("x"),
                                       "now": float("inf")}),
        (approle.apply_secret_id_destroy, {"mount": AR, "role": "r"}),
        (approle.apply_secret_id_tidy, {"now": NOW, "mount": "", "limit": 0}),
        (userpass.apply_user_set, {"mount": UP, "name": "u", "password": "plaintext"}),
        (userpass.apply_user_password, {"mount": UP, "name": "u"}),
        (userpass.apply_user_policies, {"mount": UP, "name": "u"}),
    ],
)  # fmt: skip
def test_malformed_bodies_raise_type_error(apply: Any, body: Any) -> None:
    ctx = _ctx()
    with pytest.raises(TypeError):
        apply(ctx, body)
    assert ctx.store.dump()["tables"] == {}


def test_a_malformed_password_record_stops_the_node_through_the_fsm() -> None:
    a = Auth()
    bad = record(salt="not-bytes")
    with pytest.raises(ApplyFailed) as info:
        a.apply(userpass.encode_user_set(a.reg, UP, "alice", password=bad))
    assert isinstance(info.value.__cause__, TypeError)


# -- determinism and numbering


def _script(a: Auth) -> list[bytes]:
    reg = a.reg
    return [
        approle.encode_role_set(reg, AR, "web", generated_role_id="g1", now=NOW,
                                secret_id_num_uses=2, secret_id_ttl=60, token_policies=["dev"]),
        approle.encode_secret_id_create(reg, AR, "web", secret_hash=sha("a"), accessor="aa",
                                        now=NOW, metadata={"x": "1"}),
        approle.encode_secret_id_create(reg, AR, "web", secret_hash=sha("b"), accessor="bb",
                                        now=NOW + 1, num_uses=1),
        approle.encode_secret_id_use(reg, AR, "web", secret_hash=sha("a"), now=NOW + 2),
        approle.encode_secret_id_use(reg, AR, "web", secret_hash=sha("b"), now=NOW + 2),
        approle.encode_secret_id_use(reg, AR, "web", secret_hash=sha("b"), now=NOW + 3),  # refused
        approle.encode_role_id_set(reg, AR, "web", "custom"),
        userpass.encode_user_set(reg, UP, "alice", password=record(), token_policies=["ops"]),
        userpass.encode_user_policies(reg, UP, "alice", ["ops", "dev"]),
        approle.encode_secret_id_tidy(reg, now=NOW + 100),
        authstate.encode_mount_enable(reg, "extra/", method_type="approle", accessor="e",
                                      now=NOW),
        authstate.encode_mount_disable(reg, "extra/"),
    ]  # fmt: skip


def test_same_commands_give_equal_states() -> None:
    one, two = Auth(), Auth()
    oks = []
    for data in _script(one):
        oks.append(one.apply(data).ok)
        two.apply(data)
    assert one.store.dump() == two.store.dump()
    assert oks == [True] * 5 + [False] + [True] * 6
    assert approle.role_by_id(one.store, AR, "custom") is not None
    assert approle.list_secret_id_accessors(one.store, AR, "web") == []  # used up, then tidied
    restored = FSM(_registry())
    restored.restore(one.log.fsm.snapshot())
    assert restored.store.dump() == one.store.dump()


def test_command_numbers_are_ours_and_free_or_ours_in_the_agent_registry() -> None:
    from stack.agent import build_registry

    mine = CommandRegistry()
    authstate.register(mine)
    assert [spec.type_id for spec in mine] == list(range(180, 193))
    assert all(spec.name.startswith("auth.") for spec in mine)
    agent = build_registry()
    for spec in mine:
        theirs = agent.lookup(spec.type_id)
        assert theirs is None or (theirs.name, theirs.apply) == (spec.name, spec.apply)
        named = agent.by_name(spec.name)
        assert named is None or named.type_id == spec.type_id
