"""`bench.secrets_engines_bench` (issue 8): the pure parts (phase rotation, the
requests, ratios paired with the right bare phase, the answer checks, each shown
to catch a planted fault; the crypto timings), then one tiny real run of the whole
benchmark, whose correctness checks must all pass. No speed is asserted."""

from __future__ import annotations

import base64
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is not installed

from bench.crypto_alone import CRYPTO, crypto_ceiling
from bench.engine_checks import check_chain, check_issued, decrypt_mismatches, encrypt_pairs
from bench.engines_report import LABELS, markdown
from bench.secrets_engines_bench import (
    NAMES_PER_CLIENT,
    PHASES,
    PLAINTEXT_BYTES,
    Options,
    build_spec,
    common_name,
    failed_checks,
    goal_figures,
    paired_ratios,
    phase_order,
    run_benchmark,
)
from stack.ca import authority
from stack.state.pki_role import Role
from stack.vault import pki

# Not used by the benchmark (127.0.0.91-94) nor the node tests (127.0.0.100 and up).
SMOKE_HOSTS = ("127.0.0.95", "127.0.0.96", "127.0.0.97")
SMOKE_BARE = "127.0.0.98"


def test_each_phase_takes_every_position_once_in_four_rounds() -> None:
    assert list(LABELS) == list(PHASES)  # the report's rows are the phases
    orders = [phase_order(r) for r in range(len(PHASES))]
    assert all(sorted(o) == sorted(PHASES) for o in orders)
    for pos in range(len(PHASES)):
        assert {o[pos] for o in orders} == set(PHASES)


def test_issue_requests_give_every_client_its_own_names() -> None:
    spec = build_spec("issue", "127.0.0.91", "tok", Options(issue_clients=16))
    assert spec.clients == 16 and spec.method == "POST"
    bodies = [json.loads(b) for cycle in spec.requests for _, b in cycle]
    names = [b["common_name"] for b in bodies]
    assert len(names) == len(set(names)) == 16 * NAMES_PER_CLIENT
    assert all(b["ttl"] == "1h" for b in bodies)
    assert spec.requests[3][5][0] == "http://127.0.0.91:17483/v1/pki/issue/bench"
    assert ("X-Vault-Token", "tok") in spec.headers
    # The bare phase sends the very same requests, to the bare server.
    bare = build_spec("bare16", "127.0.0.94", "tok", Options(issue_clients=16))
    assert [b for c in bare.requests for _, b in c] == [b for c in spec.requests for _, b in c]


def test_encrypt_requests_carry_base64_plaintexts_of_a_fixed_size() -> None:
    spec = build_spec("encrypt", "127.0.0.91", "tok", Options(encrypt_clients=64))
    assert spec.clients == 64
    url, body = spec.requests[63][0]
    assert url.endswith("/v1/transit/encrypt/bench")
    pt = base64.b64decode(json.loads(body)["plaintext"])
    assert len(pt) == PLAINTEXT_BYTES and pt.startswith(b"bench-63-00-")
    with pytest.raises(ValueError):
        build_spec("write", "127.0.0.91", "tok", Options())


def test_ratios_pair_each_engine_with_its_own_bare_phase_within_a_round() -> None:
    rounds = [
        {"bare16": {"throughput": 100.0}, "issue": {"throughput": 20.0},
         "bare64": {"throughput": 400.0}, "encrypt": {"throughput": 200.0}},
        {"bare16": {"throughput": 50.0}, "issue": {"throughput": 15.0},
         "bare64": {"throughput": 0.0}, "encrypt": {"throughput": 100.0}},
    ]  # fmt: skip
    assert paired_ratios(rounds, "issue") == {"median": 0.25, "min": 0.2, "max": 0.3}
    assert paired_ratios(rounds, "encrypt") == {"median": 0.5, "min": 0.5, "max": 0.5}
    assert math.isnan(paired_ratios(rounds[1:], "encrypt")["median"])


def test_goal_figures() -> None:
    g = goal_figures(750.0)
    assert g["of_goal"] == 0.75 and g["times_consul_default"] == 15.0


# ---------------------------------------------------------------- answer checks
def _issuer(cluster: str = "bench") -> tuple[pki.Issuer, x509.Certificate]:
    now = datetime.now(UTC)
    root = authority.create_root(cluster_id=cluster, now=now)
    cert, key = pki.make_intermediate(root, mount="pki/", cluster_id=cluster, now=now)
    return pki.Issuer(cert, key, [root.cert_pem]), x509.load_pem_x509_certificate(root.cert_pem)


def _answer(issuer: pki.Issuer, cn: str) -> dict[str, Any]:
    role = Role(allowed_domains=("bench.internal",), allow_subdomains=True).validated()
    issued = pki.issue(
        issuer, role, common_name=cn, ttl=3600, now=datetime.now(UTC), serial=pki.new_serial()
    )
    return {"data": {**issued.to_response("pem"), "private_key_type": "ec"}}


def test_a_good_certificate_passes_and_planted_faults_are_caught() -> None:
    issuer, root = _issuer()
    other, other_root = _issuer("other")
    cn, now = common_name(1, 2), datetime.now(UTC)
    good = _answer(issuer, cn)
    assert check_issued(json.dumps(good).encode(), cn, issuer.cert, now) == []
    assert check_chain(issuer.cert, root) == []
    assert check_chain(issuer.cert, other_root)  # not under that root

    # Asked for another name than the one certified.
    problems = check_issued(json.dumps(good).encode(), common_name(1, 3), issuer.cert, now)
    assert any("CN" in p for p in problems) and any("SAN" in p for p in problems)
    # Signed by another CA (and saying so).
    forged = _answer(other, cn)
    problems = check_issued(json.dumps(forged).encode(), cn, issuer.cert, now)
    assert any("does not verify" in p for p in problems)
    assert any("issuing_ca" in p for p in problems)
    # Someone else's private key.
    swapped = json.loads(json.dumps(good))
    swapped["data"]["private_key"] = _answer(issuer, cn)["data"]["private_key"]
    problems = check_issued(json.dumps(swapped).encode(), cn, issuer.cert, now)
    assert problems == ["private key does not match the certificate"]
    # Not an answer at all.
    assert check_issued(b'{"errors": ["boom"]}', cn, issuer.cert, now)[0].startswith("unreadable")


def test_decrypt_mismatches_counts_wrong_missing_and_failed_items() -> None:
    samples = [
        ("u", json.dumps({"plaintext": p}).encode(),
         json.dumps({"data": {"ciphertext": f"vault:v1:{c}"}}).encode())
        for p, c in (("YQ==", "x"), ("Yg==", "y"), ("Yw==", "z"))
    ]  # fmt: skip
    pairs = encrypt_pairs(samples)
    assert pairs[1] == ("Yg==", "vault:v1:y")
    good = [{"plaintext": "YQ=="}, {"plaintext": "Yg=="}, {"plaintext": "Yw=="}]
    assert decrypt_mismatches(pairs, good) == 0
    assert decrypt_mismatches(pairs, [*good[:2], {"plaintext": "Yg=="}]) == 1  # wrong
    assert decrypt_mismatches(pairs, good[:2]) == 1  # missing
    assert decrypt_mismatches(pairs, [good[0], {"error": "bad"}, good[2]]) == 1  # failed
    assert decrypt_mismatches([("YQ==", "plain:x")], good[:1]) == 1  # not a ciphertext


def test_crypto_ceiling_times_every_operation() -> None:
    rates = crypto_ceiling(0.02)
    assert set(rates) == {k for k, _ in CRYPTO}
    assert all(v > 0 and math.isfinite(v) for v in rates.values())


# ---------------------------------------------------------------- one tiny real run
@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_tiny_run_passes_its_correctness_checks() -> None:
    opts = Options(
        runs=1,
        duration=0.6,
        warmup=0.2,
        issue_clients=4,
        encrypt_clients=8,
        crypto_seconds=0.02,
        hosts=SMOKE_HOSTS,
        bare_host=SMOKE_BARE,
    )
    lines: list[str] = []
    result = await run_benchmark(opts, lines.append)
    assert failed_checks(result) == [], (result["checks"], lines)
    c = result["checks"]
    assert c["certs_answered"] > 0 and c["certs_stored"] == c["certs_answered"]
    assert c["certs_sampled"] > 0 and c["cert_problem_count"] == 0
    assert c["certs_read_back"] > 0 and c["read_back_mismatches"] == 0
    assert c["decrypts_checked"] > 0 and c["decrypt_mismatches"] == 0
    for phase in PHASES:
        run = result["rounds"][0][phase]
        assert run["ops"] > 0 and run["errors"] == 0, (phase, run)
    issue = result["rounds"][0]["issue"]
    assert issue["followers_us_per_req"] >= 0 and issue["leader_syncs_per_req"] > 0
    text = markdown(result)
    assert "pki/issue (leader)" in text and "not measured" in text
