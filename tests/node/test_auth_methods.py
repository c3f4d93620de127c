"""AppRole and userpass through hvac on a real node: enable and list auth methods,
roles, role ids, secret ids (generate, list, lookup, destroy, uses), logins
without a token, users and passwords, refusals that change nothing, and the
tokens the logins make (policies, TTL, leases, audit without plaintext)."""

from __future__ import annotations

import time
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
from cluster import VAULT_PORT, Harness, Node

pytestmark = pytest.mark.slow


def client(node: Node, token: str | None = None) -> hvac.Client:
    return hvac.Client(url=f"http://{node.addr}:{VAULT_PORT}", token=token, timeout=15)


@pytest.mark.timeout(150)
def test_approle_and_userpass(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    n1 = h.bootstrap()
    root = client(n1, h.token)
    anon = client(n1)
    audit_file = tmp_path / "audit.log"
    root.sys.enable_audit_device("file", options={"file_path": str(audit_file)})
    root.sys.create_or_update_policy(
        "app-read", 'path "secret/data/app/*" { capabilities = ["read"] }'
    )
    root.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"pw": "kv-secret-1"})

    # sys/auth: enable (sudo), list (the built-in token/ too), a second path, disable.
    root.sys.enable_auth_method("approle")
    root.sys.enable_auth_method("userpass", path="people")
    methods = root.sys.list_auth_methods()["data"]
    assert {"approle/", "people/", "token/"} <= set(methods)
    assert methods["people/"]["type"] == "userpass"
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.enable_auth_method("approle")  # the path is in use
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.enable_auth_method("kubernetes")
    limited = root.auth.token.create(policies=["app-read"])["auth"]["client_token"]
    with pytest.raises(hvac.exceptions.Forbidden):
        client(n1, limited).sys.enable_auth_method("userpass", path="mine")

    # AppRole: role, role id, secret ids, login without a token.
    ar = root.auth.approle
    ar.create_or_update_approle("web", token_policies=["app-read"], token_ttl="1h",
                                secret_id_num_uses=2)  # fmt: skip
    assert "web" in ar.list_roles()["data"]["keys"]
    role = ar.read_role("web")["data"]
    assert role["token_policies"] == ["app-read"] and role["secret_id_num_uses"] == 2
    role_id = ar.read_role_id("web")["data"]["role_id"]
    ar.update_role_id("web", "web-role-id")
    assert ar.read_role_id("web")["data"]["role_id"] == "web-role-id"
    gen = ar.generate_secret_id("web", metadata={"host": "web-1"})["data"]
    secret_id, accessor = gen["secret_id"], gen["secret_id_accessor"]
    assert accessor in ar.list_secret_id_accessors("web")["data"]["keys"]
    looked = ar.read_secret_id("web", secret_id)["data"]
    assert looked["secret_id_num_uses"] == 2 and looked["metadata"] == {"host": "web-1"}

    login = anon.auth.approle.login(role_id="web-role-id", secret_id=secret_id)["auth"]
    assert login["policies"] == ["app-read", "default"] and login["lease_duration"] == 3600
    assert login["metadata"]["role_name"] == "web"
    app = client(n1, login["client_token"])
    assert (
        app.secrets.kv.v2.read_secret_version(path="app/db", raise_on_deleted_version=True)["data"][
            "data"
        ]["pw"]
        == "kv-secret-1"
    )
    with pytest.raises(hvac.exceptions.Forbidden):
        app.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"x": "y"})
    lease = root.sys.read_lease(f"auth/approle/login/{login['accessor']}")["data"]
    assert 3500 <= lease["ttl"] <= 3600
    # The second use is the last; a third login is refused; old role id refused.
    anon.auth.approle.login(role_id="web-role-id", secret_id=secret_id)
    for rid, sid in (("web-role-id", secret_id), (role_id, secret_id), ("nope", "nope")):
        with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid role or secret ID"):
            anon.auth.approle.login(role_id=rid, secret_id=sid)
    # Destroy by accessor.
    other = ar.generate_secret_id("web")["data"]
    ar.destroy_secret_id_accessor("web", other["secret_id_accessor"])
    with pytest.raises(hvac.exceptions.InvalidRequest):
        anon.auth.approle.login(role_id="web-role-id", secret_id=other["secret_id"])

    # userpass at people/: users, password change, policies change, login.
    up = root.auth.userpass
    up.create_or_update_user("alice", password="correct horse", policies=["app-read"],
                             mount_point="people")  # fmt: skip
    assert "alice" in up.list_user(mount_point="people")["data"]["keys"]
    user = up.read_user("alice", mount_point="people")["data"]
    assert "password" not in user and user["token_policies"] == ["app-read"]
    auth = anon.auth.userpass.login("alice", "correct horse", mount_point="people")["auth"]
    assert auth["policies"] == ["app-read", "default"]
    assert auth["metadata"]["username"] == "alice"
    for name, pw in (("alice", "wrong"), ("bob", "correct horse")):
        with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid username or password"):
            anon.auth.userpass.login(name, pw, mount_point="people")
    up.update_password_on_user("alice", "battery staple", mount_point="people")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        anon.auth.userpass.login("alice", "correct horse", mount_point="people")
    anon.auth.userpass.login("alice", "battery staple", mount_point="people")
    up.delete_user("alice", mount_point="people")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        anon.auth.userpass.login("alice", "battery staple", mount_point="people")

    # Disabling an auth method revokes the tokens it made.
    root.sys.disable_auth_method("approle")
    with pytest.raises(hvac.exceptions.Forbidden):
        app.auth.token.lookup_self()
    assert "approle/" not in root.sys.list_auth_methods()["data"]

    # The audit log holds no password, secret id or token in clear.
    time.sleep(0.2)
    text = audit_file.read_text()
    for plain in ("correct horse", "battery staple", secret_id, login["client_token"],
                  "kv-secret-1"):  # fmt: skip
        assert plain not in text
