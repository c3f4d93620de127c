"""The Vault-compatible port (`--vault-port`) driven by hvac, the Vault client for
Python, against real `stack up` processes: every supported row of
docs/compat-vault.md names the test here that covers it.

Five tests, each exercising many endpoints in sequence on one cluster (a cluster
costs seconds to form): KV v2; KV v1, mounts, policies, capabilities and audit;
tokens, roles and denials; bad input; and a three-server cluster (plus a client
node) for health codes, sys/leader, forwarding and a sealed node.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions as hx
import pytest
from cluster import (
    FORM_TIMEOUT,
    HTTP_PORT,
    Harness,
    Node,
    Response,
    wait_leader,
    wait_until,
)
from vault_clients import Clients, raw

from stack.vault import audit as auditlog

pytestmark = pytest.mark.slow

MiB = 1 << 20
APP_READ = 'path "secret/data/app/*" {\n  capabilities = ["read"]\n}\n'
CREATOR = 'path "auth/token/create" {\n  capabilities = ["create", "update"]\n}\n'


# ---------------------------------------------------------------- helpers
def assert_error(resp: Response, status: int, *messages: str) -> dict[str, Any]:
    """Vault's error shape: the status, `Content-Type: application/json` exactly (hvac
    reads the body only then), and {"errors": [...]} naming each of `messages`."""
    assert resp.status == status, f"wanted {status}, got {resp.status} {resp.body[:300]!r}"
    assert resp.headers.get("content-type") == "application/json", resp.headers
    body: dict[str, Any] = resp.json()
    assert isinstance(body.get("errors"), list), body
    for m in messages:
        assert any(m in e for e in body["errors"]), f"{m!r} not in {body['errors']}"
    return body


def ok(resp: Response, status: int = 200) -> dict[str, Any]:
    assert resp.status == status, f"wanted {status}, got {resp.status} {resp.body[:300]!r}"
    if status == 204:
        assert resp.body == b"", resp.body
        return {}
    body: dict[str, Any] = resp.json()
    return body


def raises(exc: type[hx.VaultError], fn: Callable[[], Any], *messages: str) -> hx.VaultError:
    """`fn()` raises hvac's `exc` (its status code) whose errors name each of `messages`."""
    with pytest.raises(exc) as info:
        fn()
    err = info.value
    for m in messages:
        assert any(m in e for e in err.errors or []), f"{m!r} not in {err.errors} ({err})"
    return err


def denied(fn: Callable[[], Any]) -> None:
    """403 with exactly Vault's {"errors": ["permission denied"]}."""
    err = raises(hx.Forbidden, fn)
    assert err.errors == ["permission denied"], err.errors


def current_version(c: hvac.Client, path: str, mount: str = "secret") -> int:
    meta = c.secrets.kv.v2.read_secret_metadata(path, mount_point=mount)["data"]
    return int(meta["current_version"])


def read2(c: hvac.Client, path: str, **kw: Any) -> dict[str, Any]:
    r: dict[str, Any] = c.secrets.kv.v2.read_secret_version(
        path, raise_on_deleted_version=True, **kw
    )
    return r


@contextmanager
def hvac_deprecations_ignored() -> Iterator[None]:
    # hvac's own `patch` reads without raise_on_deleted_version and warns about it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def health(node: Node, query: str = "") -> tuple[int, dict[str, Any] | None]:
    resp = raw(node, "GET", "/v1/sys/health" + query)
    return resp.status, (resp.json() if resp.body else None)


# ---------------------------------------------------------------- KV v2
@pytest.mark.timeout(120)
def test_kv_v2(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    n1 = h.bootstrap()
    assert h.token
    c = Clients(request)(n1, h.token)
    kv = c.secrets.kv.v2
    assert c.is_authenticated()

    # create_or_update_secret, read_secret_version (latest and version=), read_secret
    r = kv.create_or_update_secret("app/db", {"user": "u", "pass": "p1"})
    assert r["data"]["version"] == 1 and r["data"]["deletion_time"] == "", r
    assert r["data"]["created_time"].endswith("Z"), r
    kv.create_or_update_secret("app/db", {"user": "u", "pass": "p2",
                                          "nested": {"a": 1, "b": {"c": 2}}})  # fmt: skip
    got = read2(c, "app/db")["data"]
    assert got["data"]["pass"] == "p2" and got["metadata"]["version"] == 2, got
    assert read2(c, "app/db", version=1)["data"]["data"] == {"user": "u", "pass": "p1"}
    r = kv.read_secret("app/db", raise_on_deleted_version=True)
    assert r["data"]["metadata"]["version"] == 2, r

    # patch: hvac's (read, then write with cas) and the HTTP PATCH (RFC 7386)
    with hvac_deprecations_ignored():
        r = kv.patch("app/db", {"pass": "p3"})
    assert r["data"]["version"] == 3, r
    assert read2(c, "app/db")["data"]["data"]["user"] == "u"
    resp = raw(n1, "PATCH", "/v1/secret/data/app/db", {"data": {"user": None, "extra": "e"}},
               token=h.token, headers={"Content-Type": "application/merge-patch+json"})  # fmt: skip
    assert ok(resp)["data"]["version"] == 4
    assert read2(c, "app/db")["data"]["data"] == {
        "pass": "p3", "extra": "e", "nested": {"a": 1, "b": {"c": 2}}
    }  # fmt: skip
    resp = raw(n1, "PATCH", "/v1/secret/data/app/none", {"data": {"a": 1}}, token=h.token)
    assert_error(resp, 404)

    # subkeys (hvac 2.4 has no method for it)
    sub = c.adapter.get("/v1/secret/subkeys/app/db")["data"]
    assert sub["subkeys"] == {"pass": None, "extra": None, "nested": {"a": None, "b": {"c": None}}}
    assert sub["metadata"]["version"] == 4, sub
    sub = c.adapter.get("/v1/secret/subkeys/app/db", params={"depth": 1})["data"]
    assert sub["subkeys"] == {"pass": None, "extra": None, "nested": None}, sub

    # list_secrets (LIST), and GET ?list=true the same
    kv.create_or_update_secret("app/sub/x", {"k": "v"})
    assert kv.list_secrets("app")["data"]["keys"] == ["db", "sub/"]
    assert kv.list_secrets("")["data"]["keys"] == ["app/"]
    for method, q in (("LIST", ""), ("GET", "?list=true")):
        resp = raw(n1, method, "/v1/secret/metadata/app/" + q, token=h.token)
        assert ok(resp)["data"]["keys"] == ["db", "sub/"], (method, resp)
    raises(hx.InvalidPath, lambda: kv.list_secrets("nothing-here"))

    # read_secret_metadata, update_metadata (max_versions, custom_metadata)
    meta = kv.read_secret_metadata("app/db")["data"]
    assert meta["current_version"] == 4 and sorted(meta["versions"]) == ["1", "2", "3", "4"]
    assert meta["max_versions"] == 0 and meta["cas_required"] is False, meta
    kv.update_metadata("app/db", max_versions=3, custom_metadata={"owner": "team-a"})
    meta = kv.read_secret_metadata("app/db")["data"]
    assert meta["max_versions"] == 3 and meta["custom_metadata"] == {"owner": "team-a"}, meta
    r = kv.create_or_update_secret("app/db", {"v": 5})  # prunes to the newest three
    assert r["data"]["version"] == 5 and r["data"]["custom_metadata"] == {"owner": "team-a"}, r
    meta = kv.read_secret_metadata("app/db")["data"]
    assert sorted(meta["versions"]) == ["3", "4", "5"] and meta["oldest_version"] == 3, meta
    raises(hx.InvalidPath, lambda: read2(c, "app/db", version=1))
    resp = raw(n1, "PATCH", "/v1/secret/metadata/app/db",
               {"custom_metadata": {"team": "b", "owner": None}}, token=h.token)  # fmt: skip
    ok(resp, 204)
    meta = kv.read_secret_metadata("app/db")["data"]
    assert meta["custom_metadata"] == {"team": "b"} and meta["max_versions"] == 3, meta

    # delete_latest_version_of_secret, undelete_secret_versions
    kv.delete_latest_version_of_secret("app/db")
    raises(hx.InvalidPath, lambda: read2(c, "app/db"))
    gone = kv.read_secret_version("app/db", raise_on_deleted_version=False)
    assert gone["data"]["data"] is None and gone["data"]["metadata"]["deletion_time"], gone
    kv.undelete_secret_versions("app/db", [5])
    assert read2(c, "app/db")["data"]["data"] == {"v": 5}

    # delete_secret_versions, destroy_secret_versions
    kv.delete_secret_versions("app/db", [4])
    resp = raw(n1, "GET", "/v1/secret/data/app/db?version=4", token=h.token)
    body = assert_error(resp, 404)
    assert body["data"]["metadata"]["deletion_time"] and not body["data"]["metadata"]["destroyed"]
    kv.destroy_secret_versions("app/db", [3])
    resp = raw(n1, "GET", "/v1/secret/data/app/db?version=3", token=h.token)
    assert assert_error(resp, 404)["data"]["metadata"]["destroyed"] is True
    meta = kv.read_secret_metadata("app/db")["data"]
    assert meta["versions"]["3"]["destroyed"] is True, meta
    assert meta["versions"]["4"]["deletion_time"] and meta["current_version"] == 5, meta

    # configure / read_configuration; cas and cas_required (mount-wide, then per secret)
    kv.configure(max_versions=6, cas_required=True)
    conf = kv.read_configuration()["data"]
    assert conf == {"max_versions": 6, "cas_required": True, "delete_version_after": "0s"}, conf
    raises(hx.InvalidRequest, lambda: kv.create_or_update_secret("app/db", {"v": 6}),
           "check-and-set parameter required")  # fmt: skip
    raises(hx.InvalidRequest, lambda: kv.create_or_update_secret("app/db", {"v": 6}, cas=4),
           "did not match the current version")  # fmt: skip
    assert kv.create_or_update_secret("app/db", {"v": 6}, cas=5)["data"]["version"] == 6
    kv.configure(max_versions=6, cas_required=False)
    assert kv.read_configuration()["data"]["cas_required"] is False
    assert kv.create_or_update_secret("app/new", {"a": 1}, cas=0)["data"]["version"] == 1
    raises(hx.InvalidRequest, lambda: kv.create_or_update_secret("app/new", {"a": 2}, cas=0))
    kv.update_metadata("app/new", cas_required=True)
    raises(hx.InvalidRequest, lambda: kv.create_or_update_secret("app/new", {"a": 2}),
           "check-and-set parameter required")  # fmt: skip
    assert kv.create_or_update_secret("app/new", {"a": 2}, cas=1)["data"]["version"] == 2

    # delete_metadata_and_all_versions
    kv.delete_metadata_and_all_versions("app/new")
    raises(hx.InvalidPath, lambda: kv.read_secret_metadata("app/new"))
    raises(hx.InvalidPath, lambda: read2(c, "app/new"))
    assert kv.list_secrets("app")["data"]["keys"] == ["db", "sub/"]

    # sys/internal/ui/mounts/<path>: how the vault CLI learns a mount's KV version
    ui = ok(raw(n1, "GET", "/v1/sys/internal/ui/mounts/secret/app/db", token=h.token))["data"]
    assert ui["path"] == "secret/" and ui["options"] == {"version": "2"}, ui
    assert_error(raw(n1, "GET", "/v1/sys/internal/ui/mounts/nomount/x", token=h.token), 404)

    # 404 on a missing secret: Vault's {"errors": []}
    assert assert_error(raw(n1, "GET", "/v1/secret/data/nope", token=h.token), 404) == {
        "errors": []
    }


# ---------------------------------------------------------------- KV v1, sys
@pytest.mark.timeout(120)
def test_kv_v1_mounts_policies_capabilities_audit(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    n1 = h.bootstrap()
    assert h.token
    clients = Clients(request)
    c = clients(n1, h.token)
    plaintext = "plain-secret-" + str(time.time_ns())
    audit_file = tmp_path / "vault-audit.log"

    # audit: enable_audit_device, list_enabled_audit_devices (first, so it sees all)
    c.sys.enable_audit_device("file", options={"file_path": str(audit_file)})
    devices = c.sys.list_enabled_audit_devices()["data"]
    assert devices["file/"]["type"] == "file", devices
    assert devices["file/"]["options"] == {"file_path": str(audit_file)}, devices
    raises(hx.InvalidRequest, lambda: c.sys.enable_audit_device("syslog", path="sys2"),
           "only 'file'")  # fmt: skip

    # sys/mounts: enable (kv v1 and v2), list, read and tune, disable
    c.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"}, description="v1")
    c.sys.enable_secrets_engine("kv", path="kv2b", options={"version": "2"})
    mounts = c.sys.list_mounted_secrets_engines()["data"]
    assert mounts["kv1/"]["options"] == {"version": "1"} and mounts["kv1/"]["type"] == "kv"
    assert mounts["kv1/"]["description"] == "v1", mounts["kv1/"]
    assert mounts["kv2b/"]["options"] == {"version": "2"}, mounts["kv2b/"]
    assert mounts["secret/"]["options"] == {"version": "2"} and "sys/" in mounts, mounts
    assert c.sys.retrieve_mount_option("kv1", "version") == "1"
    one = ok(raw(n1, "GET", "/v1/sys/mounts/kv1", token=h.token))["data"]
    assert one["type"] == "kv" and one["options"] == {"version": "1"}, one
    raises(hx.InvalidRequest, lambda: c.sys.enable_secrets_engine("kv", path="kv1"),
           "already in use")  # fmt: skip
    raises(hx.InvalidRequest, lambda: c.sys.enable_secrets_engine("database", path="db"),
           "unsupported secrets engine type")  # fmt: skip
    r = c.sys.tune_mount_configuration("kv1", description="tuned", default_lease_ttl="1h")
    assert any("ignored" in w for w in r["warnings"]), r
    tune = c.sys.read_mount_configuration("kv1")["data"]
    assert tune["description"] == "tuned" and tune["options"] == {"version": "1"}, tune
    raises(hx.InvalidRequest,
           lambda: c.sys.tune_mount_configuration("kv1", options={"version": "2"}))  # fmt: skip

    # KV v1: create_or_update_secret (POST and PUT), read_secret, list_secrets, delete
    v1 = c.secrets.kv.v1
    v1.create_or_update_secret("a/b", {"password": plaintext}, mount_point="kv1")
    v1.create_or_update_secret("a/c", {"n": 1}, method="PUT", mount_point="kv1")
    got = v1.read_secret("a/b", mount_point="kv1")
    assert got["data"] == {"password": plaintext}, got
    assert v1.list_secrets("a", mount_point="kv1")["data"]["keys"] == ["b", "c"]
    assert v1.list_secrets("", mount_point="kv1")["data"]["keys"] == ["a/"]
    resp = raw(n1, "GET", "/v1/kv1/a?list=true", token=h.token)
    assert ok(resp)["data"]["keys"] == ["b", "c"]
    v1.delete_secret("a/c", mount_point="kv1")
    raises(hx.InvalidPath, lambda: v1.read_secret("a/c", mount_point="kv1"))
    # On a v1 mount, metadata/a is just another (missing) v1 secret.
    raises(hx.InvalidPath, lambda: c.secrets.kv.v2.read_secret_metadata("a", mount_point="kv1"))

    c.sys.disable_secrets_engine("kv2b")
    assert "kv2b/" not in c.sys.list_mounted_secrets_engines()["data"]
    raises(hx.InvalidPath, lambda: read2(c, "x", mount_point="kv2b"))

    # policies: sys/policy (legacy) and sys/policies/acl
    c.sys.create_or_update_policy("app-read", APP_READ)
    assert c.sys.read_policy("app-read")["data"]["rules"] == APP_READ
    assert {"app-read", "default", "root"} <= set(c.sys.list_policies()["data"]["policies"])
    c.sys.create_or_update_acl_policy("creator", CREATOR)
    assert c.sys.read_acl_policy("creator")["data"]["policy"] == CREATOR
    keys = c.sys.list_acl_policies()["data"]["keys"]
    assert {"app-read", "creator", "default", "root"} <= set(keys), keys
    resp = raw(n1, "GET", "/v1/sys/policies/acl?list=true", token=h.token)
    assert ok(resp)["data"]["keys"] == keys
    assert "auth/token/lookup-self" in c.sys.read_policy("default")["data"]["rules"]
    c.sys.delete_acl_policy("creator")
    raises(hx.InvalidPath, lambda: c.sys.read_acl_policy("creator"))
    raises(hx.InvalidRequest, lambda: c.sys.create_or_update_policy("bad", 'path "x" {'),
           "failed to parse policy")  # fmt: skip
    raises(hx.InvalidRequest, lambda: c.sys.delete_policy("root"))
    raises(hx.InvalidRequest, lambda: c.sys.create_or_update_policy("root", APP_READ))

    # capabilities-self: root answers ["root"]; a policy's token its capabilities
    caps = c.sys.get_capabilities(["secret/data/app/x"])["data"]
    assert caps["capabilities"] == ["root"] and caps["secret/data/app/x"] == ["root"], caps
    limited = c.auth.token.create(policies=["app-read"], ttl="1h")["auth"]["client_token"]
    lc = clients(n1, limited)
    caps = lc.sys.get_capabilities(["secret/data/app/x", "secret/data/other"])["data"]
    assert caps["secret/data/app/x"] == ["read"] and caps["secret/data/other"] == ["deny"], caps
    caps = lc.sys.get_capabilities(["secret/data/app/x"])["data"]
    assert caps["capabilities"] == ["read"], caps
    caps = c.sys.get_capabilities(["secret/data/app/x"], token=limited)["data"]  # sys/capabilities
    assert caps["capabilities"] == ["read"], caps
    c.sys.delete_policy("app-read")
    assert "app-read" not in c.sys.list_policies()["data"]["policies"]
    assert lc.sys.get_capabilities(["secret/data/app/x"])["data"]["capabilities"] == ["deny"]

    # audit-hash, disable; the file verifies and holds no plaintext value or token
    hashed = c.sys.calculate_hash("file", plaintext)["data"]["hash"]
    assert hashed.startswith("hmac-sha256:"), hashed
    c.sys.disable_audit_device("file")
    assert c.sys.list_enabled_audit_devices()["data"] == {}
    v1.create_or_update_secret("after", {"password": plaintext}, mount_point="kv1")  # unaudited
    c.sys.disable_secrets_engine("kv1")
    text = audit_file.read_text()
    result = auditlog.verify(audit_file)
    assert result.ok, result
    assert plaintext not in text and h.token not in text and limited not in text
    assert hashed in text, "the KV v1 write's value, HMAC'd, is in the log"
    lines = [json.loads(line) for line in text.splitlines()]
    paths = {e["request"]["path"] for e in lines}
    assert {"kv1/a/b", "sys/policy/app-read", "auth/token/create"} <= paths, paths
    assert "kv1/after" not in paths, "a write after the device was disabled was audited"


# ---------------------------------------------------------------- tokens, denials
@pytest.mark.timeout(120)
def test_tokens_roles_and_denials(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = Harness(request, tmp_path)
    n1 = h.bootstrap()
    assert h.token
    clients = Clients(request)
    c = clients(n1, h.token)
    tok = c.auth.token
    c.sys.create_or_update_policy("app-read", APP_READ)
    c.sys.create_or_update_policy("creator", CREATOR)
    expiring = tok.create(policies=["app-read"], ttl="2s")["auth"]
    assert expiring["lease_duration"] <= 2, expiring
    c.secrets.kv.v2.create_or_update_secret("app/db", {"pass": "p1"})
    c.secrets.kv.v2.create_or_update_secret("other", {"pass": "o1"})

    # create with policies, ttl, meta, display_name; lookup, lookup_self, lookup_accessor
    created = tok.create(policies=["app-read"], ttl="1h", meta={"team": "a"}, display_name="app")
    auth = created["auth"]
    t1, acc1 = auth["client_token"], auth["accessor"]
    assert auth["policies"] == ["app-read", "default"] and auth["renewable"] is True, auth
    assert 3590 <= auth["lease_duration"] <= 3600 and auth["metadata"] == {"team": "a"}, auth
    assert auth["token_type"] == "service" and auth["orphan"] is False, auth
    info = tok.lookup(t1)["data"]
    assert info["id"] == t1 and info["accessor"] == acc1 and info["meta"] == {"team": "a"}, info
    assert info["display_name"] == "token-app" and info["path"] == "auth/token/create", info
    assert info["policies"] == ["app-read", "default"] and 3500 < info["ttl"] <= 3600, info
    assert info["expire_time"].endswith("Z") and info["num_uses"] == 0, info
    t1c = clients(n1, t1)
    assert t1c.auth.token.lookup_self()["data"]["id"] == t1
    by_acc = tok.lookup_accessor(acc1)["data"]
    assert by_acc["accessor"] == acc1 and by_acc["id"] == "", by_acc
    root_self = tok.lookup_self()["data"]
    assert root_self["policies"] == ["root"] and root_self["expire_time"] is None, root_self

    # renew (increment), renew_self, renew_accessor
    assert 7190 <= tok.renew(t1, increment="2h")["auth"]["lease_duration"] <= 7200
    assert 3590 <= t1c.auth.token.renew_self()["auth"]["lease_duration"] <= 3600
    assert tok.renew_accessor(acc1, increment=600)["auth"]["lease_duration"] == 600
    assert tok.lookup(t1)["data"]["ttl"] <= 600

    # create_orphan, no_parent, period, num_uses
    orphan = tok.create_orphan(policies=["app-read"], ttl="1h")["auth"]
    info = tok.lookup(orphan["client_token"])["data"]
    assert orphan["orphan"] is True and info["path"] == "auth/token/create-orphan", info
    assert tok.create(policies=["app-read"], no_parent=True)["auth"]["orphan"] is True
    periodic = tok.create(policies=["app-read"], period="1h")["auth"]["client_token"]
    assert tok.lookup(periodic)["data"]["period"] == 3600
    limited = tok.create(policies=["app-read"], num_uses=3)["auth"]["client_token"]
    assert tok.lookup(limited)["data"]["num_uses"] == 3

    # accessors: LIST and GET ?list=true; sudo needed
    accessors = tok.list_accessors()["data"]["keys"]
    assert acc1 in accessors and "root" in accessors, accessors
    resp = raw(n1, "GET", "/v1/auth/token/accessors?list=true", token=h.token)
    assert set(ok(resp)["data"]["keys"]) == set(accessors)
    denied(lambda: t1c.auth.token.list_accessors())

    # roles: create, read, list (LIST and ?list=true), create a token via a role, delete
    tok.create_or_update_role("app", allowed_policies=["app-read"], orphan=True)
    role = tok.read_role("app")["data"]
    assert role["allowed_policies"] == ["app-read"] and role["orphan"] is True, role
    assert tok.list_roles()["data"]["keys"] == ["app"]
    resp = raw(n1, "GET", "/v1/auth/token/roles?list=true", token=h.token)
    assert ok(resp)["data"]["keys"] == ["app"]
    via = tok.create(role_name="app", policies=["app-read"])["auth"]
    info = tok.lookup(via["client_token"])["data"]
    assert info["role"] == "app" and info["orphan"] is True, info
    assert info["path"] == "auth/token/create/app", info
    raises(hx.InvalidRequest, lambda: tok.create(role_name="app", policies=["creator"]),
           "not allowed by role")  # fmt: skip
    tok.delete_role("app")
    raises(hx.InvalidPath, lambda: tok.read_role("app"))
    raises(hx.InvalidPath, lambda: tok.list_roles())

    # X-Vault-Token vs Authorization: Bearer; none, or a wrong one: 403
    bearer = {"Authorization": f"Bearer {t1}"}
    assert ok(raw(n1, "GET", "/v1/auth/token/lookup-self", headers=bearer))["data"]["id"] == t1
    resp = raw(n1, "GET", "/v1/auth/token/lookup-self", token=t1)
    assert ok(resp)["data"]["id"] == t1
    assert_error(raw(n1, "GET", "/v1/auth/token/lookup-self"), 403, "permission denied")
    assert_error(raw(n1, "GET", "/v1/secret/data/app/db", token="st.nope"), 403)

    # denials: a policy reading only secret/data/app/* reads nothing else, writes nothing
    assert read2(t1c, "app/db")["data"]["data"] == {"pass": "p1"}
    denied(lambda: read2(t1c, "other"))
    denied(lambda: t1c.secrets.kv.v2.read_secret_metadata("app/db"))
    denied(lambda: t1c.secrets.kv.v2.list_secrets("app"))
    denied(lambda: t1c.secrets.kv.v2.create_or_update_secret("app/db", {"pass": "x"}))
    denied(lambda: t1c.secrets.kv.v2.create_or_update_secret("app/new", {"pass": "x"}))
    denied(lambda: t1c.secrets.kv.v2.create_or_update_secret("other", {"pass": "x"}))
    denied(lambda: t1c.secrets.kv.v2.delete_latest_version_of_secret("app/db"))
    denied(lambda: t1c.secrets.kv.v2.destroy_secret_versions("app/db", [1]))
    denied(lambda: t1c.secrets.kv.v2.update_metadata("app/db", max_versions=1))
    denied(lambda: t1c.sys.create_or_update_policy("mine", APP_READ))
    denied(lambda: t1c.sys.enable_secrets_engine("kv", path="mine"))
    denied(lambda: t1c.auth.token.create(policies=["app-read"]))
    resp = raw(n1, "POST", "/v1/secret/data/app/db", {"data": {"pass": "x"}}, token=t1)
    assert assert_error(resp, 403) == {"errors": ["permission denied"]}
    assert current_version(c, "app/db") == 1 and current_version(c, "other") == 1
    assert "app/new" not in c.secrets.kv.v2.list_secrets("app")["data"]["keys"]
    assert read2(c, "app/db")["data"]["data"] == {"pass": "p1"}

    # a used-up token: num_uses=1 serves one request, then 403
    once = tok.create(policies=["app-read"], num_uses=1)["auth"]["client_token"]
    oc = clients(n1, once)
    assert read2(oc, "app/db")["data"]["data"] == {"pass": "p1"}
    denied(lambda: read2(oc, "app/db"))

    # revoked: revoke, revoke_accessor, revoke_self; revoking a parent revokes its child
    parent = tok.create(policies=["app-read", "creator"], ttl="1h")["auth"]["client_token"]
    pc = clients(n1, parent)
    child = pc.auth.token.create(policies=["app-read"], ttl="1h")["auth"]
    cc = clients(n1, child["client_token"])
    assert read2(cc, "app/db")["data"]["data"] == {"pass": "p1"}
    tok.revoke(parent)
    denied(lambda: read2(pc, "app/db"))
    denied(lambda: read2(cc, "app/db"))
    raises(hx.InvalidRequest, lambda: tok.lookup_accessor(child["accessor"]), "invalid accessor")
    tok.revoke_accessor(tok.lookup(periodic)["data"]["accessor"])
    denied(lambda: read2(clients(n1, periodic), "app/db"))
    parent = tok.create(policies=["app-read", "creator"], ttl="1h")["auth"]["client_token"]
    child = clients(n1, parent).auth.token.create(policies=["app-read"], ttl="1h")["auth"]
    tok.revoke_and_orphan_children(parent)  # revoke-orphan: the child lives on, orphaned
    denied(lambda: read2(clients(n1, parent), "app/db"))
    assert read2(clients(n1, child["client_token"]), "app/db")["data"]["data"] == {"pass": "p1"}
    assert tok.lookup(child["client_token"])["data"]["orphan"] is True
    t1c.auth.token.revoke_self()
    denied(lambda: read2(t1c, "app/db"))
    raises(hx.Forbidden, lambda: tok.lookup(t1), "bad token")

    r = tok.tidy()
    assert r["warnings"], r

    # expired (ttl 2s, created at the start)
    ec = clients(n1, expiring["client_token"])
    wait_until(lambda: isinstance(_error_of(lambda: read2(ec, "app/db")), hx.Forbidden),
               10.0, "the 2s token to expire")  # fmt: skip
    denied(lambda: read2(ec, "app/db"))
    denied(lambda: ec.auth.token.renew_self())


def _error_of(fn: Callable[[], Any]) -> Exception | None:
    try:
        fn()
    except Exception as e:
        return e
    return None


# ---------------------------------------------------------------- bad input
@pytest.mark.timeout(120)
def test_bad_input_is_refused_and_changes_nothing(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    n1 = h.bootstrap()
    assert h.token
    c = Clients(request)(n1, h.token)
    kv = c.secrets.kv.v2
    kv.create_or_update_secret("app/db", {"pass": "p1"})
    kv.update_metadata("app/db", max_versions=4, custom_metadata={"owner": "a"})
    before = {
        "meta": kv.read_secret_metadata("app/db")["data"],
        "value": read2(c, "app/db")["data"]["data"],
        "keys": kv.list_secrets("")["data"]["keys"],
        "mounts": sorted(c.sys.list_mounted_secrets_engines()["data"]),
        "policies": c.sys.list_policies()["data"]["policies"],
        "accessors": sorted(c.auth.token.list_accessors()["data"]["keys"]),
        "config": kv.read_configuration()["data"],
    }

    big = {"data": {"v": "x" * (MiB + 10)}}
    # (method, path, body, status, words in the error)
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", "secret/data/app/db", b"{not json", 400, "failed to parse JSON"),
        ("POST", "secret/data/app/db", b"[1, 2]", 400, "must be a JSON object"),
        ("POST", "secret/data/app/db", {"data": [1, 2]}, 400, "must be a JSON object"),
        ("POST", "secret/data/app/db", {"data": "text"}, 400, "must be a JSON object"),
        ("POST", "secret/data/app/db", {"value": 1}, 400, "no data provided"),
        ("POST", "secret/data/app/db", {"data": {"a": 1}, "options": "x"}, 400, "options"),
        ("POST", "secret/data/app/db", {"data": {"a": 1}, "options": {"cas": "one"}}, 400, "cas"),
        ("POST", "secret/data/app/db", {"data": {"a": 1}, "options": {"cas": -1}}, 400, "cas"),
        ("PATCH", "secret/data/app/db", {"data": [1]}, 400, "no data provided"),
        ("POST", "secret/data/app/db", big, 413, ""),
        ("POST", "secret/data/app/../db", {"data": {"a": 1}}, 400, "'..'"),
        ("POST", "secret/data/app/%2e%2e/db", {"data": {"a": 1}}, 400, "'..'"),
        ("POST", "secret/data/./app/db", {"data": {"a": 1}}, 400, "'.'"),
        ("POST", "secret/data/app//db", {"data": {"a": 1}}, 400, "empty segment"),
        ("POST", "secret/data/app/a%00b", {"data": {"a": 1}}, 400, "control characters"),
        ("POST", "secret/metadata/app/db", {"max_versions": "many"}, 400, "max_versions"),
        ("POST", "secret/metadata/app/db", {"max_versions": 2**70}, 400, "max_versions"),
        ("POST", "secret/metadata/app/db", {"cas_required": "maybe"}, 400, "cas_required"),
        ("POST", "secret/metadata/app/db", {"custom_metadata": {"k": 1}}, 400, "custom_metadata"),
        ("POST", "secret/metadata/app/db", {"delete_version_after": "forever"}, 400, "duration"),
        (
            "POST",
            "secret/metadata/app/db",
            {"delete_version_after": "inf"},
            400,
            "delete_version_after",
        ),
        ("POST", "secret/delete/app/db", {"versions": "one"}, 400, "versions"),
        ("POST", "secret/destroy/app/db", {"versions": []}, 400, "no versions"),
        ("POST", "secret/undelete/app/db", {"versions": [0]}, 400, "versions"),
        ("POST", "secret/config", {"max_versions": -1}, 400, "max_versions"),
        ("GET", "secret/data/app/db?version=x", None, 400, "version"),
        ("POST", "nomount/data/x", {"data": {"a": 1}}, 404, "no handler for route"),
        ("GET", "nomount/x", None, 404, "no handler for route"),
        ("POST", "sys/mounts/secret", {"type": "kv"}, 400, "already in use"),
        ("POST", "sys/mounts/db", {"type": "database"}, 400, "unsupported secrets engine type"),
        ("POST", "sys/mounts/new", {"type": "kv", "options": {"version": "3"}}, 400, "version"),
        ("POST", "sys/mounts/sys/x", {"type": "kv"}, 400, "reserved"),
        ("POST", "sys/policies/acl/bad%20name", {"policy": APP_READ}, 400, "policy name"),
        ("POST", "sys/policies/acl/p", {"policy": 'path "x" { capabilities = '}, 400, "parse"),
        ("POST", "sys/policies/acl/p", {"policy": 7}, 400, "policy"),
        ("POST", "sys/audit/x", {"type": "syslog"}, 400, "only 'file'"),
        ("POST", "sys/audit/x", {"type": "file", "options": {"file_path": 1}}, 400, "options"),
        ("POST", "auth/token/create", {"policies": ["bad name"]}, 400, "policy name"),
        ("POST", "auth/token/create", {"ttl": "forever"}, 400, "ttl"),
        ("POST", "auth/token/create", {"ttl": "99999999999h"}, 400, "ttl"),
        ("POST", "auth/token/create", {"num_uses": -1}, 400, "num_uses"),
        ("POST", "auth/token/create", {"num_uses": "x"}, 400, "num_uses"),
        ("POST", "auth/token/create", {"meta": {"k": 1}}, 400, "meta"),
        ("POST", "auth/token/create", {"id": "my-id"}, 400, "custom token ids"),
        ("POST", "auth/token/create", {"type": "batch"}, 400, "service tokens"),
        ("POST", "auth/token/create/nope", {}, 400, "unknown role"),
        ("POST", "auth/token/roles/bad%20name", {}, 400, "role name"),
        ("POST", "auth/token/roles/r", {"token_type": "batch"}, 400, "service tokens"),
        ("POST", "auth/token/roles/r", {"path_suffix": "../x"}, 400, "path_suffix"),
        ("POST", "auth/token/renew-self", {"increment": 10**12}, 400, "increment"),
        ("GET", "sys/health?activecode=abc", None, 400, "activecode"),
        ("FOO", "secret/data/app/db", None, 405, ""),
    ]
    for method, path, body, status, words in cases:
        resp = raw(n1, method, "/v1/" + path, body, token=h.token)
        assert_error(resp, status, *([words] if words else []))

    # headers asking for what is not there: refused, not ignored
    for header in ({"X-Vault-Wrap-TTL": "60s"}, {"X-Vault-Namespace": "team-a"}):
        resp = raw(n1, "GET", "/v1/secret/data/app/db", token=h.token, headers=header)
        assert_error(resp, 400, "not supported")
    assert_error(raw(n1, "PUT", "/v1/sys/init", {"secret_shares": 1}), 400, "already initialized")

    # hvac raises the matching exceptions
    raises(hx.InvalidRequest, lambda: kv.create_or_update_secret("app/db", [1]),
           "must be a JSON object")  # fmt: skip
    raises(hx.InvalidPath, lambda: kv.create_or_update_secret("x", {"a": 1}, mount_point="nope"))
    raises(hx.UnexpectedError, lambda: kv.create_or_update_secret("app/db", big["data"]))

    # nothing changed, and the node still serves (it did not stop on any of them)
    after = {
        "meta": kv.read_secret_metadata("app/db")["data"],
        "value": read2(c, "app/db")["data"]["data"],
        "keys": kv.list_secrets("")["data"]["keys"],
        "mounts": sorted(c.sys.list_mounted_secrets_engines()["data"]),
        "policies": c.sys.list_policies()["data"]["policies"],
        "accessors": sorted(c.auth.token.list_accessors()["data"]["keys"]),
        "config": kv.read_configuration()["data"],
    }
    assert after == before
    assert c.sys.list_enabled_audit_devices()["data"] == {}
    raises(hx.InvalidPath, lambda: c.auth.token.list_roles())
    assert kv.create_or_update_secret("app/db", {"pass": "p2"})["data"]["version"] == 2
    assert health(n1)[0] == 200


# ---------------------------------------------------------------- a cluster
def known_on(node: Node, token: str) -> None:
    """Until `node` has applied the token's creation. A standby authenticates from
    its own replica, so a token made through another node is unknown (403) there for
    the few milliseconds before it applies that entry (docs/compat-vault.md)."""
    root = node.harness.token

    def known() -> bool:  # asked with the root token: spends none of `token`'s uses
        resp = raw(node, "POST", "/v1/auth/token/lookup", {"token": token}, token=root)
        return resp.status == 200

    wait_until(known, 10.0, f"{node.name} to know the new token")


def _health_status(c: hvac.Client, **kw: Any) -> int:
    r = c.sys.read_health_status(method="GET", **kw)
    return 200 if isinstance(r, dict) else int(r.status_code)


@pytest.mark.timeout(180)
def test_cluster_health_leader_forwarding_and_sealed_nodes(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    nodes = h.three_nodes()
    assert h.token
    root = h.token
    clients = Clients(request)
    leader = wait_leader(nodes)
    followers = [n for n in nodes if n is not leader]
    # A client node (no Raft vote, no seal share): sealed for good, forwards everything.
    client = h.node("c1", join=[nodes[0]], extra=["--no-server"]).start()
    client.wait_up()
    wait_until(lambda: client.status()["leader"] == leader.id, FORM_TIMEOUT,
               "the client node to know the leader")  # fmt: skip

    # sys/health: active 200, standby 429 (200 with standbyok), custom codes; HEAD too
    st, body = health(leader)
    assert st == 200 and body and body["standby"] is False and body["sealed"] is False, body
    assert health(leader, "?activecode=299")[0] == 299
    for f in followers:
        st, body = health(f)
        assert st == 429 and body and body["standby"] is True and body["sealed"] is False, body
        assert health(f, "?standbyok=true")[0] == 200
        assert health(f, "?standbycode=472")[0] == 472
        fc = clients(f)
        assert _health_status(fc) == 429 and _health_status(fc, standby_ok=True) == 200
        assert fc.sys.read_health_status(method="HEAD").status_code == 429
    lc = clients(leader)
    assert lc.sys.read_health_status(method="HEAD").status_code == 200
    assert lc.sys.read_health_status(method="HEAD").text == ""

    # sys/leader, sys/seal-status, sys/init (no token needed)
    addresses = set()
    for n in nodes:
        info = clients(n).sys.read_leader_status()
        assert info["ha_enabled"] is True and info["is_self"] is (n is leader), (n.name, info)
        addresses.add(info["leader_address"])
        seal = clients(n).sys.read_seal_status()
        assert seal["sealed"] is False and seal["initialized"] is True, (n.name, seal)
        assert clients(n).sys.is_initialized() is True
    assert addresses == {f"http://{leader.addr}:{HTTP_PORT}"}, addresses

    # writes and reads through the followers' Vault ports
    f1, f2 = (clients(f, root) for f in followers)
    r = f1.secrets.kv.v2.create_or_update_secret("fwd/a", {"via": followers[0].name})
    assert r["data"]["version"] == 1
    assert read2(f2, "fwd/a")["data"]["data"] == {"via": followers[0].name}
    assert read2(clients(leader, root), "fwd/a")["data"]["data"]["via"] == followers[0].name
    f2.secrets.kv.v2.delete_latest_version_of_secret("fwd/a")
    gone = f1.secrets.kv.v2.read_secret_version("fwd/a", raise_on_deleted_version=False)
    assert gone["data"]["metadata"]["deletion_time"], gone
    f1.secrets.kv.v2.undelete_secret_versions("fwd/a", [1])
    f1.sys.create_or_update_policy("app-read", APP_READ)
    f2.secrets.kv.v2.create_or_update_secret("app/db", {"pass": "p1"})
    t = f2.auth.token.create(policies=["app-read"], num_uses=2)["auth"]["client_token"]
    tc = clients(followers[1], t)  # where it was made: known there at once
    assert read2(tc, "app/db")["data"]["data"] == {"pass": "p1"}  # use 1 (through the log)
    denied(lambda: read2(tc, "fwd/a"))  # refused by policy: spends no use, as in Vault
    tc0 = clients(followers[0], t)
    known_on(followers[0], t)
    assert read2(tc0, "app/db")["data"]["data"] == {"pass": "p1"}  # use 2, the last
    denied(lambda: read2(tc0, "app/db"))  # used up, on every node
    denied(lambda: read2(tc, "app/db"))
    denied(lambda: read2(clients(leader, t), "app/db"))

    # the client node: sealed (503), and it forwards every secrets request to the leader
    st, body = health(client)
    assert st == 503 and body and body["sealed"] is True, (st, body)
    assert health(client, "?sealedcode=299")[0] == 299
    assert clients(client).sys.read_seal_status()["sealed"] is True
    cc = clients(client, root)
    assert read2(cc, "fwd/a")["data"]["data"] == {"via": followers[0].name}
    r = cc.secrets.kv.v2.create_or_update_secret("fwd/b", {"via": "client"})
    assert r["data"]["version"] == 1
    assert read2(f1, "fwd/b")["data"]["data"] == {"via": "client"}
    assert cc.secrets.kv.v2.list_secrets("fwd")["data"]["keys"] == ["a", "b"]
    raises(hx.InvalidPath, lambda: read2(cc, "fwd/none"))
    raises(hx.InvalidRequest, lambda: cc.secrets.kv.v2.create_or_update_secret("fwd/b", {}, cas=0))
    t2 = cc.auth.token.create(policies=["app-read"], ttl="1h")["auth"]["client_token"]
    denied(lambda: read2(clients(client, t2), "fwd/a"))
    assert read2(clients(client, t2), "app/db")["data"]["data"] == {"pass": "p1"}
    known_on(followers[1], t2)
    assert read2(clients(followers[1], t2), "app/db")["data"]["data"] == {"pass": "p1"}

    # a server sealed for good: its peers gone, then sealed on the native API (POST
    # /v1/sys/seal); it cannot gather a quorum of shares again
    last = next(f for f in followers if f is not nodes[0])  # n1 once held a lone share
    wait_until(
        lambda: all(
            n.request("GET", "/v1/sys/seal-status", auth=False).json().get("voters") == 3
            for n in nodes
        ),
        FORM_TIMEOUT,
        "the seal to be re-keyed over three voters",
    )
    for n in nodes:
        if n is not last:
            n.kill()
    resp = last.request("POST", "/v1/sys/seal")
    assert resp.status == 200, resp
    st, body = health(last)
    assert st == 503 and body and body["sealed"] is True, (st, body)
    assert clients(last).sys.read_seal_status()["sealed"] is True
    assert clients(last).sys.read_health_status(method="HEAD").status_code == 503
    time.sleep(1.5)  # three auto-unseal rounds: still sealed
    assert health(last)[0] == 503
