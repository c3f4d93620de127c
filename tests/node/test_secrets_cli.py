"""The secrets engine from the command line on a real node: `stack secrets`,
`stack policy`, `stack token create|lookup|renew|revoke`, `stack audit`, and a
flipped byte in the audit log named by `stack audit verify`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cluster import Harness, Node, run_cli, wait_until

pytestmark = pytest.mark.slow


def ok(node: Node, *args: str) -> str:
    out = run_cli(node, *args)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


def refused(node: Node, *args: str) -> str:
    out = run_cli(node, *args)
    assert out.returncode != 0, (args, out.stdout)
    return out.stderr


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stack.cli", "audit", "verify", str(path)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.timeout(180)
def test_secrets_tokens_policies_and_audit_from_the_cli(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    n1 = h.bootstrap()
    audit_file = n1.data_dir / "audit" / f"{n1.name}.log"
    ok(n1, "audit", "enable", "main", "--file", "audit/{node}.log")
    assert "main/" in ok(n1, "audit", "list")

    # Secrets: versions, patch, history, list, field, delete.
    assert "version 1 of secret/app/db" in ok(n1, "secrets", "put", "app/db",
                                               "password=s3cr3t-value", "user=app")  # fmt: skip
    assert "version 2" in ok(n1, "secrets", "patch", "app/db", "password=rotated-value")
    got = json.loads(ok(n1, "secrets", "get", "app/db", "--json"))
    assert got["data"] == {"password": "rotated-value", "user": "app"}
    assert got["metadata"]["version"] == 2
    v1 = json.loads(ok(n1, "secrets", "get", "app/db", "--version", "1", "--json"))
    assert v1["data"]["password"] == "s3cr3t-value"
    assert ok(n1, "secrets", "get", "app/db", "--field", "user").strip() == "app"
    ok(n1, "secrets", "put", "app/cache", "url=redis://x")
    ok(n1, "secrets", "put", "other/thing", "k=v")
    assert json.loads(ok(n1, "secrets", "list", "--json")) == ["app/", "other/"]
    assert json.loads(ok(n1, "secrets", "list", "app/", "--json")) == ["cache", "db"]
    history = json.loads(ok(n1, "secrets", "history", "app/db", "--json"))
    assert history["current_version"] == 2 and set(history["versions"]) == {"1", "2"}
    ok(n1, "secrets", "delete", "app/cache")
    assert "404" in refused(n1, "secrets", "get", "app/cache")
    ok(n1, "secrets", "delete", "app/cache", "--all")
    assert json.loads(ok(n1, "secrets", "list", "app/", "--json")) == ["db"]

    # A policy that reads app secrets only, and a token holding it.
    policy = tmp_path / "app-read.hcl"
    policy.write_text('path "secret/data/app/*" { capabilities = ["read"] }\n')
    ok(n1, "policy", "write", "app-read", str(policy))
    assert "app-read" in json.loads(ok(n1, "policy", "list", "--json"))
    assert "secret/data/app/*" in ok(n1, "policy", "read", "app-read")
    bad = tmp_path / "bad.hcl"
    bad.write_text('path "secret/*" { capabilities = ["fly"] }\n')
    assert "400" in refused(n1, "policy", "write", "bad", str(bad))

    auth = json.loads(ok(n1, "token", "create", "--policy", "app-read", "--ttl", "1h", "--json"))
    limited = auth["client_token"]
    assert auth["policies"] == ["app-read", "default"] and auth["lease_duration"] == 3600
    user = ok(n1, "secrets", "get", "app/db", "--field", "user", "--token", limited)
    assert user.strip() == "app"
    assert "403" in refused(n1, "secrets", "get", "other/thing", "--token", limited)
    assert "403" in refused(n1, "secrets", "put", "app/db", "x=y", "--token", limited)
    assert "403" in refused(n1, "kv", "put", "cfg", "x", "--token", limited)
    me = json.loads(ok(n1, "token", "lookup", "--json", "--token", limited))
    assert me["policies"] == ["app-read", "default"] and me["accessor"] == auth["accessor"]
    renewed = json.loads(ok(n1, "token", "renew", "--increment", "2h", "--json", "--token",
                            limited))  # fmt: skip
    assert renewed["lease_duration"] == 7200
    by_accessor = json.loads(ok(n1, "token", "lookup", "--accessor", auth["accessor"], "--json"))
    assert by_accessor["id"] == "" and by_accessor["policies"] == ["app-read", "default"]
    ok(n1, "token", "revoke", limited)
    assert "403" in refused(n1, "secrets", "get", "app/db", "--token", limited)
    ok(n1, "policy", "delete", "app-read")
    assert "app-read" not in json.loads(ok(n1, "policy", "list", "--json"))

    # The audit log: every request above, chained, with no secret or token in clear.
    wait_until(lambda: audit_file.exists() and audit_file.stat().st_size > 0, 10, "the log")
    text = audit_file.read_text()
    for plain in ("s3cr3t-value", "rotated-value", limited, h.token):
        assert plain not in text
    lines = text.splitlines()
    assert len(lines) > 40
    assert any('"path":"secret/data/app/db"' in line for line in lines)
    out = verify(audit_file)
    assert out.returncode == 0 and "chain intact" in out.stdout, out.stdout + out.stderr

    # Flip one byte in line 17: verify names that line and exits 1.
    raw = bytearray(audit_file.read_bytes())
    starts = [0] + [i + 1 for i, b in enumerate(raw) if b == ord("\n")]
    target = starts[16] + 30  # line 17, inside its JSON
    raw[target] = ord("X") if raw[target] != ord("X") else ord("Y")
    tampered = tmp_path / "tampered.log"
    tampered.write_bytes(bytes(raw))
    out = verify(tampered)
    assert out.returncode == 1, out.stdout
    assert "line 17:" in out.stdout, out.stdout
    assert all(f"line {n}:" not in out.stdout for n in range(1, 17)), out.stdout
