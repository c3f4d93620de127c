"""The HTTP API off loopback: HTTPS with the node certificate, verified by clients
against the cluster's root (`stack ca root`), hostname checking on.

A loopback bind serves plain HTTP (every other node test), so this path needs a
non-loopback address: the node runs in a private network namespace with one
(10.a.b.2 on a veth pair that never leaves the namespace), and every client runs
in that namespace too (`ip netns exec`).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cluster import FORM_TIMEOUT, HTTP_PORT, Harness, Netns, wait_until
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from stack.ca import authority

pytestmark = pytest.mark.slow

# Runs inside the namespace: argv = address, port, trusted PEM file, other CA's PEM
# file. Prints one JSON object of what each client saw; the test judges it.
CLIENT = r"""
import http.client, json, socket, ssl, sys

addr, port, ca_file, other_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
out = {}


def failure(e):
    return {"error": type(e).__name__, "code": getattr(e, "verify_code", None),
            "message": getattr(e, "verify_message", None) or str(e)}


# (b) verified against exactly the root PEM, hostname (IP) checking on.
ctx = ssl.create_default_context(cadata=open(ca_file).read())
out["check_hostname"] = ctx.check_hostname
out["verify_required"] = ctx.verify_mode == ssl.CERT_REQUIRED
conn = http.client.HTTPSConnection(addr, port, context=ctx, timeout=10)
try:
    conn.request("GET", "/v1/status")
    resp = conn.getresponse()
    body = resp.read()
    out["verified"] = {
        "status": resp.status,
        "body": json.loads(body),
        "tls": conn.sock.version(),
        "peer": conn.sock.getpeercert(),
        "der": __import__("base64").b64encode(conn.sock.getpeercert(True)).decode(),
    }
except Exception as e:
    out["verified"] = failure(e)
finally:
    conn.close()


def handshake(context, server_hostname):
    try:
        with socket.create_connection((addr, port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=server_hostname) as s:
                return {"connected": s.version()}
    except Exception as e:
        return failure(e)


# The right CA but another name: hostname checking is really on.
out["wrong_host"] = handshake(ctx, "10.255.255.254")
# (c) another cluster's CA.
other = ssl.create_default_context(cadata=open(other_file).read())
out["other_ca"] = handshake(other, addr)

# (d) plain HTTP to the HTTPS port: no HTTP response.
conn = http.client.HTTPConnection(addr, port, timeout=10)
try:
    conn.request("GET", "/v1/status")
    resp = conn.getresponse()
    out["plain"] = {"status": resp.status}
except Exception as e:
    out["plain"] = failure(e)
finally:
    conn.close()
with socket.create_connection((addr, port), timeout=10) as s:
    s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: " + addr.encode() + b"\r\n\r\n")
    got = b""
    try:
        while len(got) < 64:
            chunk = s.recv(64)
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    out["plain_raw"] = got.hex()

print(json.dumps(out))
"""


def _cli_env(node_env: dict[str, str], cacert: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACK_")}
    env.update(node_env)
    env["STACK_CACERT"] = str(cacert)
    return env


@pytest.mark.timeout(120)
def test_https_off_loopback_verifies_against_the_cluster_root(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    ns = Netns(request)
    addr = ns.addr
    base = f"https://{addr}:{HTTP_PORT}"
    t0 = time.monotonic()

    n = ns.node(h, "h1").start()
    bundle = n.config_home / "stack" / "ca.crt"
    wait_until(lambda: n.printed("join token:") and bundle.exists(), FORM_TIMEOUT,
               "h1 to bootstrap and save the trusted roots")  # fmt: skip
    assert n.running
    assert f"API on {base}" in n.stdout(), n.stdout()

    env = _cli_env({"XDG_CONFIG_HOME": str(tmp_path / "client-xdg")}, bundle)
    cli = [sys.executable, "-m", "stack.cli"]

    def status_ok() -> dict[str, Any] | None:
        done = ns.run([*cli, "status", "--json", "--addr", base], env=env)
        if done.returncode != 0:
            raise AssertionError(done.stderr.decode(errors="replace"))
        st: dict[str, Any] = json.loads(done.stdout)
        return st if st.get("role") == "leader" else None

    # `stack status` over HTTPS, verified against the node's saved roots.
    st = wait_until(status_ok, FORM_TIMEOUT, "`stack status` over HTTPS to see a leader", 0.5)
    assert st["name"] == "h1"

    # (a) `stack ca root` over HTTPS prints the root PEM.
    done = ns.run([*cli, "ca", "root", "--addr", base], env=env)
    assert done.returncode == 0, done.stderr
    pem = done.stdout
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----"), pem
    root = x509.load_pem_x509_certificate(pem)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert pem.strip() in bundle.read_bytes(), "the root is not in the saved bundle"
    (tmp_path / "root.pem").write_bytes(pem)

    # (e) The join token printed at bootstrap pins this root: stack1.<sha256>.<secret>.
    prefix, fp, secret = n.printed("join token:")[0].split(".", 2)
    assert prefix == "stack1" and secret
    assert fp == root.fingerprint(hashes.SHA256()).hex()
    assert fp == authority.fingerprint(pem)

    # Another cluster's root (same shape, different key) for (c).
    other = authority.create_root(cluster_id="someoneelse", now=datetime.now(UTC))
    (tmp_path / "other.pem").write_bytes(other.cert_pem)

    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    done = ns.run([sys.executable, str(script), addr, str(HTTP_PORT),
                   str(tmp_path / "root.pem"), str(tmp_path / "other.pem")])  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    seen = json.loads(done.stdout)
    print(json.dumps(seen, indent=1))

    # (b) Verified with the root alone, hostname checking on; the leaf names the IP.
    assert seen["check_hostname"] and seen["verify_required"]
    v = seen["verified"]
    assert v.get("status") == 200, v
    assert v["body"]["name"] == "h1" and v["body"]["cluster_id"] == st["cluster_id"]
    assert v["tls"] in ("TLSv1.2", "TLSv1.3"), v["tls"]
    assert ["IP Address", addr] in v["peer"]["subjectAltName"], v["peer"]
    leaf = x509.load_der_x509_certificate(base64.b64decode(v["der"]))
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert addr in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert leaf.issuer == root.subject
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == [f"stack://{st['cluster_id']}/node/{st['id']}/server"], uris

    # Hostname checking is really on: the right CA under another name is refused.
    wrong = seen["wrong_host"]
    assert wrong.get("error") == "SSLCertVerificationError", wrong
    assert "mismatch" in (wrong["message"] or "").lower(), wrong

    # (c) Another CA does not verify this node.
    oc = seen["other_ca"]
    assert oc.get("error") == "SSLCertVerificationError", oc

    # (d) Plain HTTP gets no HTTP response.
    assert "status" not in seen["plain"], seen["plain"]
    assert not bytes.fromhex(seen["plain_raw"]).startswith(b"HTTP/"), seen["plain_raw"]

    # The CLI refuses a node its CA bundle does not vouch for.
    (tmp_path / "other-only.pem").write_bytes(other.cert_pem)
    bad_env = _cli_env({"XDG_CONFIG_HOME": str(tmp_path / "client-xdg")},
                       tmp_path / "other-only.pem")  # fmt: skip
    done = ns.run([*cli, "status", "--addr", base], env=bad_env)
    assert done.returncode != 0
    assert b"CERTIFICATE_VERIFY_FAILED" in done.stderr.replace(b"\n", b""), done.stderr
    # ... and so does a plain-HTTP CLI.
    done = ns.run([*cli, "status", "--addr", f"http://{addr}:{HTTP_PORT}"], env=env)
    assert done.returncode != 0, done.stdout

    assert n.running, "the node exited"
    print(f"HTTPS checks done after {time.monotonic() - t0:.1f}s")
