"""AppRole and userpass: password records (`passwords.py`), the pure request
parsing and answers (`authdata.py`), and the backend's flows (`auth_backend.py`)
in-process over a real FSM, with an agent that applies commands at once."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from typing import Any

import pytest

from stack.raft.types import Role
from stack.state import CommandRegistry, acl, approle, register_substrate_commands, tokens, userpass
from stack.state import auth as authstate
from stack.state.authfields import TokenParams
from stack.state.fsm import FSM
from stack.vault import authdata, passwords
from stack.vault.auth_backend import AuthBackend, sys_auth_needs_sudo
from stack.vault.logical import LogicalError, Operation, Request

NOW = 1_700_000_000.0

# -- passwords


def test_hash_then_verify_and_the_record_is_one_the_log_accepts() -> None:
    rec = passwords.hash_password("correct horse")
    assert rec["algo"] == "scrypt" and (rec["n"], rec["r"], rec["p"]) == (2**14, 8, 1)
    assert len(rec["salt"]) == 16 and len(rec["hash"]) == 32
    userpass.validate_password_record(rec)  # within the bounds apply enforces
    assert passwords.verify_password("correct horse", rec)
    assert not passwords.verify_password("correct horsE", rec)
    assert not passwords.verify_password("", rec)
    # A fresh salt per record: the same password hashes differently.
    other = passwords.hash_password("correct horse")
    assert other["salt"] != rec["salt"] and other["hash"] != rec["hash"]
    # The same salt gives the same hash (what verification relies on).
    again = passwords.hash_password("correct horse", salt=rec["salt"])
    assert again == rec


def test_verify_reads_the_parameters_from_the_record() -> None:
    salt = b"0123456789abcdef"
    pbkdf2 = {"algo": "pbkdf2-sha256", "iterations": 100_000, "salt": salt,
              "hash": hashlib.pbkdf2_hmac("sha256", b"pw", salt, 100_000, 32)}  # fmt: skip
    userpass.validate_password_record(pbkdf2)
    assert passwords.verify_password("pw", pbkdf2)
    assert not passwords.verify_password("pw2", pbkdf2)
    stronger = {"algo": "scrypt", "n": 2**15, "r": 8, "p": 1, "salt": salt,
                "hash": hashlib.scrypt(b"pw", salt=salt, n=2**15, r=8, p=1, dklen=32,
                                       maxmem=64 << 20)}  # fmt: skip
    assert passwords.verify_password("pw", stronger)
    assert not passwords.verify_password("pw", {**stronger, "n": 2**14})
    assert not passwords.verify_password("pw", {**stronger, "algo": "md5"})
    assert not passwords.verify_password("pw", {**stronger, "salt": "text"})


def test_unusual_passwords_hash_and_the_decoy_matches_nothing() -> None:
    for text in ("päss wörd ✓", "\udcff-lone-surrogate", "x" * 10_000):
        assert passwords.verify_password(text, passwords.hash_password(text))
    decoy = passwords.decoy_record()
    userpass.validate_password_record(decoy)
    assert {k: decoy[k] for k in ("algo", "n", "r", "p")} == {
        "algo": "scrypt", "n": passwords.SCRYPT_N, "r": passwords.SCRYPT_R,
        "p": passwords.SCRYPT_P,
    }  # fmt: skip
    assert not passwords.verify_password("", decoy)
    assert decoy["salt"] != passwords.decoy_record()["salt"]


# -- parsing and answers


def test_token_fields_take_vaults_names_aliases_and_weak_types() -> None:
    fields = authdata.parse_token_fields(
        {"policies": "Ops, dev,,ops", "ttl": "1h", "token_max_ttl": 7200, "period": "0",
         "token_num_uses": "3", "token_no_default_policy": "true", "token_type": "service"}
    )  # fmt: skip
    assert fields == {"token_policies": ["dev", "ops"], "token_ttl": 3600, "token_max_ttl": 7200,
                      "token_period": 0, "token_num_uses": 3, "token_no_default_policy": True,
                      "token_type": "service"}  # fmt: skip
    # token_* wins over its deprecated alias; absent fields stay absent (partial writes).
    both = authdata.parse_token_fields({"token_policies": ["a"], "policies": ["b"]})
    assert both == {"token_policies": ["a"]}
    assert authdata.parse_token_fields({}) == {}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"token_policies": ["bad policy"]}, "invalid policy name"),
        ({"token_ttl": "soon"}, "not a duration"),
        ({"token_ttl": -1}, "negative"),
        ({"token_num_uses": 2**33}, "between 0 and"),
        ({"token_num_uses": True}, "integer"),
        ({"token_no_default_policy": "maybe"}, "boolean"),
        ({"token_bound_cidrs": ["10.0.0.0/8"]}, "not supported"),
        ({"bound_cidrs": "10.0.0.0/8"}, "not supported"),
        ({"secret_id_bound_cidrs": "10.0.0.0/33"}, "invalid CIDR"),
        ({"bind_secret_id": "nope"}, "boolean"),
    ],
)
def test_role_field_parsing_refuses_bad_input(body: dict[str, Any], fragment: str) -> None:
    with pytest.raises(LogicalError) as info:
        authdata.parse_role_fields(body)
    assert info.value.status == 400 and fragment in str(info.value)


def test_role_fields_normalise_cidrs_and_check_the_merged_role() -> None:
    fields = authdata.parse_role_fields(
        {"secret_id_bound_cidrs": "10.1.2.3/8, 192.168.1.1", "secret_id_ttl": "10m",
         "secret_id_num_uses": 5, "bind_secret_id": False, "enable_local_secret_ids": False}
    )  # fmt: skip
    assert fields == {"secret_id_bound_cidrs": ["10.0.0.0/8", "192.168.1.1/32"],
                      "secret_id_ttl": 600, "secret_id_num_uses": 5,
                      "bind_secret_id": False}  # fmt: skip
    authdata.check_role(None, fields)
    with pytest.raises(LogicalError, match="at least one constraint"):
        authdata.check_role(None, {"bind_secret_id": False})
    # Against an existing role: its max TTL bounds a new TTL.
    old = approle.AppRole("approle/", "web", "id", True, 0, 0, (),
                          TokenParams((), 0, 60, 0, 0, 0, False, "default"))  # fmt: skip
    with pytest.raises(LogicalError, match="greater than token_max_ttl"):
        authdata.check_role(old, {"token_ttl": 61})
    authdata.check_role(old, {"token_ttl": 60})
    with pytest.raises(LogicalError, match="root policy"):
        authdata.check_user_token_fields(None, {"token_policies": ["root"]})


def test_names_metadata_and_role_ids() -> None:
    assert authdata.parse_name("Web-App.1", "role name") == "web-app.1"
    for bad in ("", "a/b", "x" * 129, "sp ace"):
        with pytest.raises(LogicalError):
            authdata.parse_name(bad, "role name")
    assert authdata.parse_metadata('{"host": "a"}') == {"host": "a"}
    assert authdata.parse_metadata({"host": "a"}) == {"host": "a"}
    assert authdata.parse_metadata(None) == {} and authdata.parse_metadata("") == {}
    for bad in ("{not json", '{"n": 1}', "[1]", {"k": "\n"}):
        with pytest.raises(LogicalError):
            authdata.parse_metadata(bad)
    authdata.check_role_id("some-id")
    for bad_id in (None, "", 5, "a\x00b", "x" * 513):
        with pytest.raises(LogicalError):
            authdata.check_role_id(bad_id)


def test_secret_id_terms_follow_vault() -> None:
    terms = approle.secret_id_terms
    assert terms(600, 3, None, None) == (600, 3)  # the role's
    assert terms(600, 3, 60, 1) == (60, 1)  # within the role's
    assert terms(0, 0, 0, 0) == (0, 0)  # unlimited role: anything
    assert terms(0, 0, 10**6, 10**6) == (10**6, 10**6)
    for ttl, uses in ((0, 1), (601, 1), (60, 0), (60, 4), (-1, 1)):
        with pytest.raises(ValueError):
            terms(600, 3, ttl, uses)


def test_cidrs_at_login() -> None:
    role = approle.AppRole("approle/", "web", "id", True, 0, 0, ("10.0.0.0/8",),
                           TokenParams((), 0, 0, 0, 0, 0, False, "default"))  # fmt: skip
    entry = approle.SecretId("approle/", "web", "h", "acc", NOW, 0.0, NOW, 0, 0, {},
                             ("10.1.0.0/16",))  # fmt: skip
    assert authdata.login_cidr_refusal(role, entry, "10.1.2.3") is None
    assert authdata.login_cidr_refusal(role, entry, "::ffff:10.1.2.3") is None  # v4-mapped
    assert "secret ID" in str(authdata.login_cidr_refusal(role, entry, "10.2.0.1"))
    assert "role" in str(authdata.login_cidr_refusal(role, None, "11.0.0.1"))
    assert authdata.login_cidr_refusal(role, None, "") is not None  # a unix socket: no address
    open_role = approle.AppRole("approle/", "web", "id", True, 0, 0, (), role.token)
    assert authdata.login_cidr_refusal(open_role, None, "") is None
    assert approle.cidr_allows(("2001:db8::/32",), "[2001:db8::1]")
    assert not approle.cidr_allows(("2001:db8::/32",), "10.0.0.1")
    assert approle.cidrs_outside(["10.0.0.0/8", "fd00::/8"], ["10.0.0.0/7"]) == ["fd00::/8"]


def test_policies_and_answers() -> None:
    params = TokenParams(("dev",), 60, 0, 0, 0, 0, False, "default")
    assert authdata.token_policies(params) == ["default", "dev"]
    no_default = TokenParams(("dev",), 60, 0, 0, 0, 0, True, "default")
    assert authdata.token_policies(no_default) == ["dev"]
    assert authdata.lesser(0, 5) == 5 and authdata.lesser(7, 5) == 5 and authdata.lesser(0, 0) == 0
    entry = approle.SecretId("approle/", "web", "h", "acc", NOW, 0.0, NOW, 0, 2, {"a": "b"}, ())
    shown = authdata.secret_id_json(entry)
    assert shown["expiration_time"] == authdata.NEVER and shown["secret_id_num_uses"] == 2
    assert shown["creation_time"].startswith("2023-11-14T22:13:20")
    assert "h" not in shown.values()  # the hash is not shown
    assert sys_auth_needs_sudo("auth/approle") and not sys_auth_needs_sudo("auth")


# -- the backend in-process


class _Node:
    role = Role.LEADER

    async def wait_applied(self, index: int) -> None:
        return None


class _Agent:
    """What the backend uses of an agent: the registry, the store, apply, a barrier."""

    def __init__(self) -> None:
        registry = CommandRegistry()
        register_substrate_commands(registry)
        tokens.register(registry)
        acl.register(registry)
        authstate.register(registry)
        self.fsm = FSM(registry)
        self.registry, self.store = registry, self.fsm.store
        self.node = _Node()
        self.ident = SimpleNamespace(cluster_id="c1")
        self.barriers = 0

    async def apply(self, cmd: bytes) -> Any:
        return self.fsm.apply(self.fsm.applied_index + 1, 1, cmd)

    async def read_barrier(self) -> None:
        self.barriers += 1


class Env:
    def __init__(self) -> None:
        self.agent = _Agent()
        self.now = NOW
        service = SimpleNamespace(agent=self.agent, clock=lambda: self.now)
        self.auth = AuthBackend(service)  # type: ignore[arg-type]

    async def call(
        self, op: Operation, path: str, data: dict[str, Any] | None = None, remote: str = ""
    ) -> Any:
        req = Request(operation=op, path=path, data=data, remote=remote)
        if self.auth.is_login(path):
            return await self.auth.login(req)
        if path.startswith("sys/"):
            return await self.auth.sys_auth(path[len("sys/") :], req, op)
        rel = path[len("auth/") :]
        return await self.auth.handle(rel, req, await self.auth.operation(rel, req), None)

    async def error(self, op: Operation, path: str, data: Any = None, remote: str = "") -> str:
        with pytest.raises(LogicalError) as info:
            await self.call(op, path, data, remote)
        return f"{info.value.status} {info.value}"


W, R, L, D = Operation.UPDATE, Operation.READ, Operation.LIST, Operation.DELETE


async def test_sys_auth_enable_list_read_disable() -> None:
    env = Env()
    assert await env.call(W, "sys/auth/approle", {"type": "approle", "description": "ci"})
    listed = (await env.call(R, "sys/auth")).data
    assert sorted(listed) == ["approle/", "token/"]
    assert listed["approle/"]["type"] == "approle" and listed["approle/"]["description"] == "ci"
    assert listed["approle/"]["accessor"].startswith("auth_approle_")
    assert listed["token/"]["type"] == "token"
    assert (await env.call(R, "sys/auth/approle")).data == listed["approle/"]
    assert "already in use" in await env.error(W, "sys/auth/approle", {"type": "approle"})
    assert "unsupported auth method type" in await env.error(W, "sys/auth/x", {"type": "ldap"})
    assert "cannot be disabled" in await env.error(D, "sys/auth/token")
    assert "not supported" in await env.error(
        W, "sys/auth/x", {"type": "userpass", "config": {"default_lease_ttl": "1h"}}
    )
    await env.call(D, "sys/auth/approle")
    assert sorted((await env.call(R, "sys/auth")).data) == ["token/"]
    assert "404" in await env.error(W, "auth/approle/role/web", {})


async def test_approle_flow_generate_login_and_use_limits() -> None:
    env = Env()
    await env.call(W, "sys/auth/approle", {"type": "approle"})
    await env.call(
        W, "auth/approle/role/Web",
        {"token_policies": "dev,ops", "token_ttl": "1h", "token_max_ttl": "2h",
         "secret_id_num_uses": 2, "secret_id_ttl": "10m"},
    )  # fmt: skip
    assert (await env.call(L, "auth/approle/role")).data == {"keys": ["web"]}
    role = (await env.call(R, "auth/approle/role/web")).data
    assert role["token_policies"] == ["dev", "ops"] and role["secret_id_ttl"] == 600
    role_id = (await env.call(R, "auth/approle/role/web/role-id")).data["role_id"]
    made = await env.call(W, "auth/approle/role/web/secret-id", {"metadata": '{"host":"h1"}'})
    secret_id, accessor = made.data["secret_id"], made.data["secret_id_accessor"]
    assert (made.data["secret_id_ttl"], made.data["secret_id_num_uses"]) == (600, 2)
    assert secret_id not in repr(env.agent.store.dump())  # only its hash is stored

    assert env.auth.is_login("auth/approle/login") and not env.auth.is_login("auth/approle/role")
    login = await env.call(W, "auth/approle/login", {"role_id": role_id, "secret_id": secret_id})
    auth = login.auth
    assert auth["policies"] == ["default", "dev", "ops"] == auth["token_policies"]
    assert auth["metadata"] == {"host": "h1", "role_name": "web"}
    assert (auth["lease_duration"], auth["renewable"], auth["orphan"]) == (3600, True, True)
    assert (auth["token_type"], auth["entity_id"]) == ("service", "")
    token = acl.lookup_secret(env.agent.store, auth["client_token"])
    assert token is not None and token.accessor == auth["accessor"]
    assert (token.parent, token.path, token.display_name) == ("", "auth/approle/login", "approle")
    assert token.explicit_max_ttl == 7200
    left = await env.call(W, "auth/approle/role/web/secret-id-accessor/lookup",
                          {"secret_id_accessor": accessor})  # fmt: skip
    assert left.data["secret_id_num_uses"] == 1
    # The second use is the last: the secret ID is gone and a third login fails.
    assert await env.call(W, "auth/approle/login", {"role_id": role_id, "secret_id": secret_id})
    body = {"role_id": role_id, "secret_id": secret_id}
    assert await env.error(W, "auth/approle/login", body) == f"400 {authdata.INVALID_APPROLE}"
    assert "404" in await env.error(W, "auth/approle/role/web/secret-id-accessor/lookup",
                                    {"secret_id_accessor": accessor})  # fmt: skip


async def test_approle_login_refusals_do_not_say_which_part_was_wrong() -> None:
    env = Env()
    await env.call(W, "sys/auth/approle", {"type": "approle"})
    await env.call(W, "auth/approle/role/web", {"secret_id_ttl": 60})
    role_id = (await env.call(R, "auth/approle/role/web/role-id")).data["role_id"]
    secret_id = (await env.call(W, "auth/approle/role/web/secret-id", {})).data["secret_id"]
    invalid = f"400 {authdata.INVALID_APPROLE}"
    good = {"role_id": role_id, "secret_id": secret_id}
    assert await env.error(W, "auth/approle/login", {**good, "role_id": "nope"}) == invalid
    assert await env.error(W, "auth/approle/login", {**good, "secret_id": "nope"}) == invalid
    assert "missing secret_id" in await env.error(W, "auth/approle/login", {"role_id": role_id})
    env.now = NOW + 60  # expired
    assert await env.error(W, "auth/approle/login", good) == invalid
    removed = await env.call(W, "auth/approle/tidy/secret-id", {})
    assert removed.status == 202 and "removed 1" in removed.warnings[0]
    assert "404" in await env.error(L, "auth/approle/role/web/secret-id")


async def test_approle_cidrs_bind_logins() -> None:
    env = Env()
    await env.call(W, "sys/auth/approle", {"type": "approle"})
    await env.call(W, "auth/approle/role/web", {"secret_id_bound_cidrs": ["10.0.0.0/8"]})
    role_id = (await env.call(R, "auth/approle/role/web/role-id")).data["role_id"]
    secret_id = (await env.call(W, "auth/approle/role/web/secret-id",
                                {"cidr_list": "10.1.0.0/16"})).data["secret_id"]  # fmt: skip
    body = {"role_id": role_id, "secret_id": secret_id}
    assert (await env.call(W, "auth/approle/login", body, remote="10.1.0.5")).auth
    assert "secret ID" in await env.error(W, "auth/approle/login", body, remote="10.2.0.5")
    assert "outside" in await env.error(W, "auth/approle/role/web/secret-id",
                                        {"cidr_list": "192.168.0.0/24"})  # fmt: skip
    # A role without bind_secret_id logs in by role ID and address alone.
    await env.call(W, "auth/approle/role/web", {"bind_secret_id": False})
    assert (await env.call(W, "auth/approle/login", {"role_id": role_id}, remote="10.9.9.9")).auth
    assert "role" in await env.error(W, "auth/approle/login", {"role_id": role_id},
                                     remote="11.0.0.1")  # fmt: skip


async def test_userpass_flow_and_refusals() -> None:
    env = Env()
    await env.call(W, "sys/auth/userpass", {"type": "userpass"})
    assert "missing password" in await env.error(W, "auth/userpass/users/alice", {})
    await env.call(W, "auth/userpass/users/Alice", {"password": "s3cret", "policies": ["dev"],
                                                    "token_ttl": 120})  # fmt: skip
    shown = (await env.call(R, "auth/userpass/users/alice")).data
    assert shown["token_policies"] == ["dev"] and shown["token_ttl"] == 120
    assert "password" not in shown
    assert "s3cret" not in repr(env.agent.store.dump())
    assert env.auth.is_login("auth/userpass/login/alice")
    assert not env.auth.is_login("auth/userpass/login")
    login = await env.call(W, "auth/userpass/login/ALICE", {"password": "s3cret"})
    assert login.auth["metadata"] == {"username": "alice"} and login.auth["lease_duration"] == 120
    token = acl.lookup_secret(env.agent.store, login.auth["client_token"])
    assert token is not None and token.path == "auth/userpass/login/alice"
    assert token.display_name == "userpass-alice" and token.policies == ("default", "dev")
    invalid = f"400 {authdata.INVALID_USERPASS}"
    assert await env.error(W, "auth/userpass/login/alice", {"password": "wrong"}) == invalid
    assert await env.error(W, "auth/userpass/login/bob", {"password": "s3cret"}) == invalid
    assert await env.error(W, "auth/userpass/login/b@d", {"password": "s3cret"}) == invalid
    # A partial update keeps the password; a password change replaces it.
    await env.call(W, "auth/userpass/users/alice", {"token_ttl": 60})
    assert (await env.call(W, "auth/userpass/login/alice", {"password": "s3cret"})).auth
    await env.call(W, "auth/userpass/users/alice/password", {"password": "n3w"})
    assert await env.error(W, "auth/userpass/login/alice", {"password": "s3cret"}) == invalid
    await env.call(W, "auth/userpass/users/alice/policies", {"token_policies": "ops"})
    fresh = await env.call(W, "auth/userpass/login/alice", {"password": "n3w"})
    assert fresh.auth["policies"] == ["default", "ops"]
    assert "does not exist" in await env.error(W, "auth/userpass/users/bob/password",
                                               {"password": "x"})  # fmt: skip
    assert (await env.call(L, "auth/userpass/users")).data == {"keys": ["alice"]}
    # Disabling the mount logs everyone out.
    await env.call(D, "sys/auth/userpass")
    assert acl.lookup_secret(env.agent.store, fresh.auth["client_token"]) is None


async def test_writes_are_create_or_update_by_existence() -> None:
    env = Env()
    await env.call(W, "sys/auth/approle", {"type": "approle"})
    req = Request(operation=W, path="auth/approle/role/web", data={})
    assert await env.auth.operation("approle/role/web", req) is Operation.CREATE
    await env.call(W, "auth/approle/role/web", {})
    assert await env.auth.operation("approle/role/WEB", req) is Operation.UPDATE
    assert await env.auth.operation("approle/role/web/secret-id", req) is Operation.UPDATE
    assert env.auth.needs_sudo("approle/role/web", Operation.UPDATE) is False
