"""PKI leaf issuing and transit encryption through the Vault-compatible API of a
3-node stack cluster, beside a bare aiohttp server and the crypto alone (issue 8).

    python -m bench.secrets_engines_bench [--duration 10] [--runs 3] [--warmup 1]
                                          [--issue-clients 16] [--encrypt-clients 64]
                                          [--crypto-seconds 2] [--json out.json]
                                          [--markdown out.md] [--profile DIR]

One invocation starts a 3-node stack cluster (`bench.clusters`, 127.0.0.91-93, the
Vault port 17483) and the bare server (`bench.bare_http`, 127.0.0.94:17483). With
the root token it mounts `pki` (a role `bench`: EC P-256 keys made by the server,
names under `bench.internal`, TTL 1 h, stored: not no_store) and `transit` (an
aes256-gcm96 key `bench`), writes a policy that allows exactly the paths used below
and makes a non-root token with it. Then, per round, four phases of --warmup +
--duration seconds each, keep-alive clients on the leader:

* bare16:  --issue-clients POST the issue requests to the bare server (the ceiling);
* issue:   --issue-clients POST `pki/issue/bench`, a new common name each time;
* bare64:  --encrypt-clients POST the encrypt requests to the bare server;
* encrypt: --encrypt-clients POST `transit/encrypt/bench` (48-byte plaintexts).

The order of the phases rotates from round to round; figures are medians over the
rounds, and each ratio to bare is taken within a round (issue / bare16, encrypt /
bare64), then the median. Each round also times, in this process, the crypto
alone on one core (per CPU second, `bench.crypto_alone`): an EC P-256 key
generation, a leaf built and signed with `cryptography`, `stack.vault.pki.issue`
(the engine's pure work per certificate), AES-GCM of 48 bytes, and
`stack.vault.transit.encrypt`.

The load generator is `bench.load`'s worker process running `bench.sampled_load`'s
driver, which also counts every 200 answer (warm-up and tail included) and keeps a
sample of the answers (checked by `bench.engine_checks`). Correctness in passing,
after every issue phase: `LIST pki/certs` grew by exactly the number of
certificates answered; every sampled certificate has the requested CN (and it as a
DNS SAN), verifies under the mount's issuing CA, which verifies under the cluster
root, and comes with its P-256 private key; a few are read back from
`pki/cert/<serial>` byte for byte. After every encrypt phase the
sampled ciphertexts go back through `transit/decrypt/bench` (one batch) and must
open to the plaintext sent. A request outside the policy gets 403.

Servers' CPU is read from /proc over the measured window: the bare process, or the
leader (and the two followers, which apply every stored certificate); the leader's
Raft counters give messages sent and fsyncs per request.

Consul's built-in CA limits itself to 50 CSRs per second by default
(`connect.ca_config.csr_max_per_second`, documented, not measured here); the goal
of issue 8 is more than 1,000 certificates per second.

--profile DIR: afterwards, one more issue and one more encrypt phase while py-spy
samples the leader (`bench.pyspy`); those runs are not in the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509

from bench import vault_rig
from bench.clusters import STACK_HTTP_PORT, STACK_VAULT_PORT, Node
from bench.crypto_alone import CRYPTO, DOMAIN, crypto_ceiling
from bench.engine_checks import (
    check_chain,
    check_issued,
    decrypt_mismatches,
    encrypt_pairs,
    issue_requested_cn,
)
from bench.engines_report import crypto_line, markdown, run_line
from bench.load import LoadSpec
from bench.procs import cancel_on_signals, log_stderr
from bench.sampled_load import SamplingWorker
from bench.vault_bench import PARTS as VAULT_PARTS
from bench.vault_rig import Log, RunOptions, Servers, spread, vault_call

HOSTS = ("127.0.0.91", "127.0.0.92", "127.0.0.93")
BARE_HOST = "127.0.0.94"
PHASES = ("bare16", "issue", "bare64", "encrypt")
STACK_PHASES = {"issue": "bare16", "encrypt": "bare64"}  # phase -> its bare peer
ROLE = "bench"
KEY = "bench"
NAMES_PER_CLIENT = 32
PLAINTEXTS_PER_CLIENT = 16
PLAINTEXT_BYTES = 48
GOAL_CERTS_PER_S = 1000.0  # issue 8
# Consul's built-in CA: `connect.ca_config.csr_max_per_second` defaults to 50 (Consul's
# agent configuration reference, since 1.4.1). A documented constant, not measured.
CONSUL_CSR_PER_S = 50.0
POLICY = f"""
path "pki/issue/{ROLE}" {{
  capabilities = ["update"]
}}
path "pki/certs" {{
  capabilities = ["list"]
}}
path "pki/cert/*" {{
  capabilities = ["read"]
}}
path "transit/encrypt/{KEY}" {{
  capabilities = ["update"]
}}
path "transit/decrypt/{KEY}" {{
  capabilities = ["update"]
}}
"""
FIGURES = (
    *vault_rig.FIGURES,
    "followers_us_per_req",
    "other_cores",
    "cpu_pressure",
    "leader_messages_sent_per_req",
    "leader_syncs_per_req",
)
_T = aiohttp.ClientTimeout(total=30)
# Where a profiled leader's samples go (`bench.pyspy`): the first rule whose needle is
# in a frame of the sample's stack wins, so the narrow ones come first.
PARTS = (
    ("PKI: EC key generation", "_generate_key (vault/pki.py)"),
    ("PKI: leaf signature (Issuer.sign)", "Issuer.sign (vault/pki.py)"),
    ("PKI: certificate build, rest", "_build (vault/pki.py)"),
    ("PKI: name checks", "check_names (vault/pki"),
    ("PKI: answer (to_response)", "IssuedCert.to_response"),
    ("PKI: DER/PEM of certificate", "_issued (vault/pki.py)"),
    ("PKI: issue, rest (private key PEM)", "issue (vault/pki.py)"),
    ("PKI: issuer lookup", "PkiBackend.issuer"),
    ("PKI: role lookup", "PkiBackend._load_role"),
    ("PKI: cert store apply (state)", "apply_cert_store"),
    ("PKI: cert store (encode, propose)", "PkiBackend._flush"),
    ("PKI: backend, rest", "PkiBackend."),
    ("transit: encrypt (AES-GCM, base64)", "encrypt (vault/transit.py)"),
    ("transit: key lookup", "TransitBackend._load"),
    ("transit: backend, rest", "TransitBackend."),
    *VAULT_PARTS,
)


@dataclass(frozen=True)
class Options(RunOptions):
    issue_clients: int = 16
    encrypt_clients: int = 64
    crypto_seconds: float = 2.0
    profile: Path | None = None
    hosts: tuple[str, ...] = HOSTS
    bare_host: str = BARE_HOST


# ================================================================ pure: figures
def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per figure, its spread over the runs of one phase."""
    return vault_rig.summarize(runs, FIGURES)


def paired_ratios(rounds: Sequence[dict[str, dict[str, Any]]], phase: str) -> dict[str, float]:
    """Throughput of `phase` over its bare peer's, within each round, then the spread."""
    return vault_rig.paired_ratios(rounds, phase, STACK_PHASES[phase])


def phase_order(round_no: int) -> tuple[str, ...]:
    """The phases rotated by the round number, so none always runs first or last."""
    return vault_rig.rotated(PHASES, round_no)


def goal_figures(certs_per_s: float) -> dict[str, float]:
    return {
        "certs_per_s": certs_per_s,
        "goal_certs_per_s": GOAL_CERTS_PER_S,
        "of_goal": certs_per_s / GOAL_CERTS_PER_S,
        "consul_default_csr_per_s": CONSUL_CSR_PER_S,
        "times_consul_default": certs_per_s / CONSUL_CSR_PER_S,
    }


# ================================================================ the requests
def common_name(client: int, k: int) -> str:
    return f"c{client:02d}-n{k:03d}.{DOMAIN}"


def plaintext(client: int, k: int) -> bytes:
    return f"bench-{client:02d}-{k:02d}-".encode().ljust(PLAINTEXT_BYTES, b"x")


def _vault(host: str) -> str:
    return f"http://{host}:{STACK_VAULT_PORT}/v1/"


def build_spec(phase: str, host: str, token: str, opts: Options) -> LoadSpec:
    """The requests of one phase: each issue client cycles through its own common
    names, each encrypt client through its own plaintexts. The bare phases send the
    same requests (to the bare server) so the client's work is the same."""
    base = _vault(host)
    if phase in ("issue", "bare16"):
        requests = tuple(
            tuple(
                (
                    base + f"pki/issue/{ROLE}",
                    json.dumps({"common_name": common_name(c, k), "ttl": "1h"}).encode(),
                )
                for k in range(NAMES_PER_CLIENT)
            )
            for c in range(opts.issue_clients)
        )
    elif phase in ("encrypt", "bare64"):
        requests = tuple(
            tuple(
                (
                    base + f"transit/encrypt/{KEY}",
                    json.dumps({"plaintext": base64.b64encode(plaintext(c, k)).decode()}).encode(),
                )
                for k in range(PLAINTEXTS_PER_CLIENT)
            )
            for c in range(opts.encrypt_clients)
        )
    else:
        raise ValueError(f"unknown phase {phase!r}")
    return LoadSpec(
        method="POST",
        requests=requests,
        headers=(("X-Vault-Token", token), ("Content-Type", "application/json")),
        warmup=opts.warmup,
        duration=opts.duration,
    )


# ================================================================ set-up and checks
_call = functools.partial(vault_call, timeout=_T)


async def _ok(
    session: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None
) -> Any:
    status, answer = await _call(session, method, url, token, body)
    if status not in (200, 204):
        raise RuntimeError(f"{method} {url}: HTTP {status} {answer!r}")
    return answer


async def set_up(session: aiohttp.ClientSession, host: str, root: str) -> str:
    """Mount pki and transit, make the role and the key, write the policy; a non-root
    token with exactly that policy."""
    v1 = _vault(host)
    await _ok(session, "POST", v1 + "sys/mounts/pki", root, {"type": "pki"})
    await _ok(session, "POST", v1 + "sys/mounts/transit", root, {"type": "transit"})
    role = {
        "allowed_domains": [DOMAIN],
        "allow_subdomains": True,
        "key_type": "ec",
        "key_bits": 256,
        "ttl": "1h",
        "max_ttl": "2h",
        "no_store": False,
    }
    await _ok(session, "POST", v1 + f"pki/roles/{ROLE}", root, role)
    await _ok(session, "POST", v1 + f"transit/keys/{KEY}", root, {"type": "aes256-gcm96"})
    await _ok(session, "PUT", v1 + "sys/policies/acl/bench-engines", root, {"policy": POLICY})
    answer = await _ok(
        session,
        "POST",
        v1 + "auth/token/create",
        root,
        {"policies": ["bench-engines"], "ttl": "24h"},
    )
    auth = answer["auth"]
    if sorted(auth["policies"]) != ["bench-engines", "default"]:
        raise RuntimeError(f"the bench token has policies {auth['policies']}")
    token: str = auth["client_token"]
    return token


async def check_denied(session: aiohttp.ClientSession, host: str, token: str) -> None:
    """The policy is really checked: anything next to the allowed paths is 403."""
    v1 = _vault(host)
    for method, path, body in (
        ("POST", "pki/issue/other", {"common_name": common_name(0, 0)}),
        ("POST", f"pki/roles/{ROLE}", {"allow_any_name": True}),
        ("POST", "transit/encrypt/other", {"plaintext": "aGk="}),
        ("POST", f"transit/keys/{KEY}/rotate", {}),
    ):
        status, _ = await _call(session, method, v1 + path, token, body)
        if status != 403:
            raise RuntimeError(f"{method} {path} with the bench token: HTTP {status}, not 403")


async def list_certs(session: aiohttp.ClientSession, host: str, token: str) -> list[str]:
    status, answer = await _call(session, "LIST", _vault(host) + "pki/certs", token)
    if status == 404:  # Vault's answer to an empty list
        return []
    if status != 200:
        raise RuntimeError(f"LIST pki/certs: HTTP {status} {answer!r}")
    keys: list[str] = answer["data"]["keys"]
    return keys


async def mount_ca(session: aiohttp.ClientSession, node: Node) -> tuple[x509.Certificate, ...]:
    """(the pki mount's issuing CA, the cluster root), both public: no token."""
    async with session.get(_vault(node.host) + "pki/ca/pem", timeout=_T) as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET pki/ca/pem: HTTP {resp.status}")
        issuer = x509.load_pem_x509_certificate(await resp.read())
    async with session.get(f"http://{node.host}:{STACK_HTTP_PORT}/v1/ca/root", timeout=_T) as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET /v1/ca/root: HTTP {resp.status}")
        root = x509.load_pem_x509_certificate(await resp.read())
    return issuer, root


@dataclass
class Checks:
    certs_answered: int = 0  # every 200 of the issue phases
    certs_stored: int = 0  # growth of LIST pki/certs over the same phases
    certs_sampled: int = 0
    cert_problems: list[str] = field(default_factory=list)
    certs_read_back: int = 0
    read_back_mismatches: int = 0
    decrypts_checked: int = 0
    decrypt_mismatches: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["cert_problems"] = self.cert_problems[:20]
        d["cert_problem_count"] = len(self.cert_problems)
        return d


async def check_issue_phase(
    session: aiohttp.ClientSession,
    leader: Node,
    token: str,
    res: dict[str, Any],
    before: int,
    checks: Checks,
) -> None:
    after = await list_certs(session, leader.host, token)
    checks.certs_answered += res["ok_total"]
    checks.certs_stored += len(after) - before
    issuer, root = await mount_ca(session, leader)
    checks.cert_problems += check_chain(issuer, root)
    now = datetime.now(UTC)
    serials = []
    for _, body, answer in res["samples"]:
        checks.certs_sampled += 1
        cn = issue_requested_cn(body)
        checks.cert_problems += [f"{cn}: {p}" for p in check_issued(answer, cn, issuer, now)]
        data = json.loads(answer)["data"]
        serials.append((data["serial_number"], data["certificate"]))
    for serial, pem in serials[:8]:  # stored byte for byte
        status, got = await _call(session, "GET", _vault(leader.host) + f"pki/cert/{serial}", token)
        checks.certs_read_back += 1
        if status != 200 or got["data"]["certificate"].strip() != pem.strip():
            checks.read_back_mismatches += 1


async def check_encrypt_phase(
    session: aiohttp.ClientSession, leader: Node, token: str, res: dict[str, Any], checks: Checks
) -> None:
    pairs = encrypt_pairs(res["samples"])
    if not pairs:
        return
    body = {"batch_input": [{"ciphertext": ct} for _, ct in pairs]}
    status, answer = await _call(
        session, "POST", _vault(leader.host) + f"transit/decrypt/{KEY}", token, body
    )
    results = answer["data"]["batch_results"] if status == 200 else []
    checks.decrypts_checked += len(pairs)
    checks.decrypt_mismatches += decrypt_mismatches(pairs, results)


# ================================================================ one phase
@dataclass
class Rig:
    """What is running: the cluster, the bare server, the load worker, the token."""

    up: Servers
    worker: SamplingWorker
    token: str
    opts: Options

    @property
    def session(self) -> aiohttp.ClientSession:
        return self.up.session

    async def run_phase(
        self, phase: str, profile_dir: Path | None = None
    ) -> tuple[dict[str, Any], Node]:
        cluster = self.up.cluster
        leader = await cluster.leader(self.session)
        nodes = [n.child.pid for n in cluster.nodes]
        followers = [n.child.pid for n in cluster.nodes if n is not leader]
        bare = phase.startswith("bare")
        host = self.opts.bare_host if bare else leader.host
        target = self.up.bare.pid if bare else leader.child.pid
        spec = build_spec(phase, host, self.token, self.opts)
        stride, per_client = (25, 4) if phase == "issue" else (50, 4)

        async def counters() -> dict[str, int]:
            stats: dict[str, int] = (await cluster.status(self.session, leader))["stats"]
            return stats

        def followers_cpu(win: vault_rig.Window, ops: int) -> dict[str, float]:
            if bare:
                return {}
            used = win.used(followers)
            return {
                "followers_us_per_req": 1e6 * used / ops if ops else float("nan"),
                "follower_cores": used / win.wall,
            }

        res = await vault_rig.measured_run(
            self.worker.run_sampled(spec, stride, per_client),
            spec,
            [target],
            [*nodes, self.up.bare.pid, self.worker.pid or 0],
            (target, profile_dir / f"{phase}.txt") if profile_dir is not None else None,
            None if bare else counters,
            ("messages_sent", "readies", "syncs", "entries_persisted"),
            followers_cpu,
        )
        res["leader"] = leader.name
        return res, leader


def _strip(res: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in res.items() if k not in ("samples", "profile")}


async def _rounds(
    rig: Rig, log: Log
) -> tuple[list[dict[str, Any]], list[dict[str, float]], Checks]:
    opts, session = rig.opts, rig.session
    rounds: list[dict[str, Any]] = []
    crypto: list[dict[str, float]] = []
    checks = Checks()
    for r in range(opts.runs):
        rates = await asyncio.get_running_loop().run_in_executor(
            None, crypto_ceiling, opts.crypto_seconds
        )
        crypto.append(rates)
        log(f"  round {r + 1} crypto alone per CPU second: " + crypto_line(rates))
        rnd: dict[str, Any] = {}
        for phase in phase_order(r):
            before = 0
            if phase == "issue":
                leader = await rig.up.cluster.leader(session)
                before = len(await list_certs(session, leader.host, rig.token))
            res, leader = await rig.run_phase(phase)
            if phase == "issue":
                await check_issue_phase(session, leader, rig.token, res, before, checks)
            elif phase == "encrypt":
                await check_encrypt_phase(session, leader, rig.token, res, checks)
            rnd[phase] = _strip(res)
            log(f"  round {r + 1} " + run_line(phase, res))
        rounds.append(rnd)
    return rounds, crypto, checks


async def _profiles(rig: Rig, out_dir: Path, log: Log) -> dict[str, Any]:
    async def run(phase: str, out_dir: Path) -> dict[str, Any]:
        res, _ = await rig.run_phase(phase, out_dir)
        return res

    return await vault_rig.profiles(("issue", "encrypt"), run, PARTS, out_dir, run_line, log)


# ================================================================ the whole run
async def run_benchmark(opts: Options, log: Log) -> dict[str, Any]:
    options = {
        "runs": opts.runs,
        "duration_s": opts.duration,
        "warmup_s": opts.warmup,
        "issue_clients": opts.issue_clients,
        "encrypt_clients": opts.encrypt_clients,
        "crypto_seconds": opts.crypto_seconds,
    }
    result = vault_rig.result_header(
        "bench.secrets_engines_bench", {"cryptography": _cryptography_version()}, options
    )
    async with vault_rig.servers(opts.hosts, opts.bare_host, "stack-engines-bench-") as up:
        session, cluster = up.session, up.cluster
        leader = await cluster.leader(session)
        token = await set_up(session, leader.host, cluster.token)
        await check_denied(session, leader.host, token)
        log(f"cluster up, leader {leader.name}; pki and transit mounted")
        worker = SamplingWorker()
        up.worker = worker
        rig = Rig(up, worker, token, opts)
        rounds, crypto, checks = await _rounds(rig, log)
        result["rounds"] = rounds
        result["crypto_rounds"] = crypto
        result["crypto"] = {k: spread([c[k] for c in crypto]) for k, _ in CRYPTO}
        result["checks"] = checks.as_dict()
        result["phases"] = {p: summarize([r[p] for r in rounds]) for p in PHASES}
        result["ratios"] = {p: paired_ratios(rounds, p) for p in STACK_PHASES}
        result["goal"] = goal_figures(result["phases"]["issue"]["throughput"]["median"])
        if opts.profile is not None:
            result["profiles"] = await _profiles(rig, opts.profile, log)
    return result


def _cryptography_version() -> str:
    import cryptography

    return cryptography.__version__


def failed_checks(result: dict[str, Any]) -> list[str]:
    """What the correctness checks found (empty: all passed)."""
    c = result["checks"]
    out = []
    if c["certs_stored"] != c["certs_answered"]:
        out.append(f"{c['certs_answered']} certificates answered, {c['certs_stored']} stored")
    if c["cert_problem_count"]:
        out.append(f"{c['cert_problem_count']} problems in sampled certificates")
    if c["read_back_mismatches"]:
        out.append(f"{c['read_back_mismatches']} stored certificates differ from the answers")
    if c["decrypt_mismatches"]:
        out.append(f"{c['decrypt_mismatches']} sampled ciphertexts did not decrypt back")
    return out


# ================================================================ command line
async def _main_async(opts: Options, log: Log) -> dict[str, Any]:
    cancel_on_signals()
    return await run_benchmark(opts, log)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.secrets_engines_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    vault_rig.add_common_args(p)
    p.add_argument("--issue-clients", type=int, default=16, help="clients issuing certificates")
    p.add_argument("--encrypt-clients", type=int, default=64, help="clients encrypting")
    p.add_argument(
        "--crypto-seconds", type=float, default=2.0, help="CPU seconds per in-process crypto timing"
    )
    vault_rig.add_output_args(
        p,
        markdown_help="write the tables as Markdown",
        profile_help="then profile the leader with py-spy into DIR",
    )
    args = p.parse_args(argv)
    opts = replace(
        Options(),
        runs=args.runs,
        duration=args.duration,
        warmup=args.warmup,
        issue_clients=args.issue_clients,
        encrypt_clients=args.encrypt_clients,
        crypto_seconds=args.crypto_seconds,
        profile=args.profile,
    )
    result = vault_rig.run_and_report(_main_async(opts, log_stderr), args, markdown)
    if result is None:
        return 130
    bad = failed_checks(result)
    for line in bad:
        log_stderr(f"CHECK FAILED: {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
