"""KV v2 through the Vault-compatible API of a 3-node stack cluster, beside a bare
aiohttp server that answers 200 with a fixed JSON body.

    python -m bench.vault_bench [--duration 10] [--runs 3] [--clients 64] [--warmup 1]
                                [--secrets 1000] [--json out.json] [--markdown out.md]
                                [--profile DIR]

One invocation starts a 3-node stack cluster (`bench.clusters`, 127.0.0.81-83, the
Vault port 17483) and the bare server (`bench.bare_http`, 127.0.0.84:17483), writes a
policy and makes a non-root token with it (read on `secret/data/bench/*`, create,
update and read on `secret/data/bench/w/*`: the ACL check runs for a real policy, not
the root short-cut, and picks the most specific of two glob rules), seeds --secrets
KV v2 secrets with the root token, and then, per round, runs four phases of
--warmup + --duration seconds each, with --clients keep-alive clients on the leader:

* bare:         GET the same URLs from the bare server (the ceiling);
* stale:        GET `secret/data/bench/s/NNNN` with `X-Vault-Stale: true`;
* linearizable: the same GETs without it (a Raft read barrier per request);
* write:        PUT `secret/data/bench/w/cCC/kKK` (each client its own 16 secrets).

Token lookup, ACL check and AES-GCM decryption (encryption for writes) are on every
path. The order of the phases rotates from round to round; figures are the median of
--runs rounds, and each ratio to bare is taken within a round, then the median.

The load generator is `bench.load`'s: one worker process, one event loop, one
aiohttp connector limited to --clients. On a 2-core machine that process gets about
one core and the leader the other (a node serves HTTP on one event loop; the
followers only replicate), so the client's and the servers' CPU are both reported:
when the client is near 100 % of a core, the "ceiling" is partly the client's.
Servers' CPU is read from /proc over the measured window (the phase's server: the
bare process, the leader for reads, all three nodes for writes), as cores and as
CPU per request, which depends least on how busy the machine is.

Correctness in passing: after seeding and after every read round every seeded
secret is read back (stale and linearizable) and compared; after every write round
each written secret must read back with that round's value. A token without the
policy must get 403.

--profile DIR: afterwards, one more run of each phase while py-spy samples the
server (`bench.pyspy`); those runs are not in the figures (py-spy takes CPU too).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import vault_rig
from bench.clusters import STACK_VAULT_PORT, Node
from bench.load import LoadSpec, LoadWorker
from bench.procs import cancel_on_signals, log_stderr
from bench.vault_rig import Log, RunOptions, Servers, profile_text, spread
from bench.vault_rig import fmt as _f

__all__ = ["profile_text", "spread"]  # used from here by other benchmarks and tests

HOSTS = ("127.0.0.81", "127.0.0.82", "127.0.0.83")
BARE_HOST = "127.0.0.84"
PHASES = ("bare", "stale", "linearizable", "write")
WRITE_KEYS = 16  # per client: every secret is overwritten many times in a run
POLICY = """
path "secret/data/bench/*" {
  capabilities = ["read"]
}
path "secret/data/bench/w/*" {
  capabilities = ["create", "update", "read"]
}
"""
FIGURES = (
    *vault_rig.FIGURES,
    "other_cores",
    "cpu_pressure",
    "leader_messages_sent_per_req",
)
_T = aiohttp.ClientTimeout(total=10)
# Where a profiled server's samples go (`bench.pyspy`): the first rule whose needle is
# in a frame of the sample's stack wins, so the narrow ones come first.
PARTS = (
    ("AES-GCM decrypt", "Keyring.decrypt"),
    ("AES-GCM encrypt", "Keyring.encrypt"),
    ("timestamps (rfc3339)", "rfc3339 ("),
    ("token lookup", "Authorizer.authenticate"),
    ("ACL check", "Authorizer.check"),
    ("create-or-update check", "KvBackend.operation"),
    ("read barrier (ReadIndex)", "read_barrier"),
    ("audit", "Auditing."),
    ("request id (uuid4)", "uuid4 ("),
    ("request body (JSON)", "_data (compat/vault.py)"),
    ("answer (envelope, JSON)", "json_response"),
    ("KV backend, rest", "KvBackend."),
    ("secrets service, rest", "SecretsService."),
    ("Vault handler, rest", "compat/vault.py"),
    # Not "aiohttp/": the bare server's whole loop runs under aiohttp's run_app.
    *(("aiohttp server", f"aiohttp/{m}") for m in ("web_", "http_", "helpers", "streams")),
    ("Raft node", "raft/"),
    ("RPC transport and TLS", "net/"),
    ("state store", "state/"),
    ("I/O threads", "threading.py"),
    ("event loop, sockets", "asyncio/"),
)


@dataclass(frozen=True)
class Options(RunOptions):
    clients: int = 64
    secrets: int = 1000
    profile: Path | None = None


# ================================================================ pure: figures
def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per figure, its spread over the runs of one phase."""
    return vault_rig.summarize(runs, FIGURES)


def paired_ratios(rounds: Sequence[dict[str, dict[str, Any]]], phase: str) -> dict[str, float]:
    """Throughput of `phase` over bare's, within each round (same minutes of the
    machine), then their spread."""
    return vault_rig.paired_ratios(rounds, phase, "bare")


def phase_order(round_no: int) -> tuple[str, ...]:
    """The phases rotated by the round number, so none always runs first or last."""
    return vault_rig.rotated(PHASES, round_no)


# ================================================================ the data
def secret_path(i: int) -> str:
    return f"bench/s/{i:04d}"


def secret_value(i: int) -> dict[str, str]:
    return {
        "password": hashlib.sha256(f"bench-{i}".encode()).hexdigest()[:40],
        "user": f"bench-user-{i:04d}",
    }


def write_path(client: int, k: int) -> str:
    return f"bench/w/c{client:02d}/k{k:02d}"


def write_value(client: int, k: int, tag: str) -> dict[str, str]:
    return {
        "password": hashlib.sha256(f"{tag}-{client}-{k}".encode()).hexdigest()[:40],
        "round": tag,
    }


# ================================================================ the load
def _vault(host: str) -> str:
    return f"http://{host}:{STACK_VAULT_PORT}/v1/secret/data/"


def build_spec(phase: str, host: str, token: str, opts: Options, tag: str = "") -> LoadSpec:
    """The requests of one phase: client c reads secrets c, c+clients, ... (so all of
    them are read), or overwrites its own WRITE_KEYS secrets."""
    base = _vault(host)
    headers = {"X-Vault-Token": token}
    method = "GET"
    if phase == "write":
        method = "PUT"
        headers["Content-Type"] = "application/json"
        requests = tuple(
            tuple(
                (
                    base + write_path(c, k),
                    json.dumps({"data": write_value(c, k, tag)}).encode(),
                )
                for k in range(WRITE_KEYS)
            )
            for c in range(opts.clients)
        )
    else:
        if phase == "stale":
            headers["X-Vault-Stale"] = "true"
        requests = tuple(
            tuple(
                (base + secret_path(i % opts.secrets), b"")
                for i in range(c, max(opts.secrets, c + 1), opts.clients)
            )
            for c in range(opts.clients)
        )
    return LoadSpec(
        method=method,
        requests=requests,
        headers=tuple(headers.items()),
        warmup=opts.warmup,
        duration=opts.duration,
    )


async def measured_run(
    worker: LoadWorker,
    spec: LoadSpec,
    servers: Sequence[int],
    all_servers: Sequence[int],
    profile: tuple[int, Path] | None = None,
    counters: Callable[[], Awaitable[dict[str, int]]] | None = None,
) -> dict[str, Any]:
    """Run the load; meanwhile read the servers' CPU (and the leader's Raft counters)
    over the measured window (`bench.vault_rig.measured_run`)."""
    watched = [*all_servers, worker.pid or 0]
    return await vault_rig.measured_run(worker.run(spec), spec, servers, watched, profile, counters)


# ================================================================ set-up and checks
_call = functools.partial(vault_rig.vault_call, timeout=_T)


async def _bounded(n: int, work: Callable[[int], Any], width: int = 32) -> list[Any]:
    sem = asyncio.Semaphore(width)

    async def one(i: int) -> Any:
        async with sem:
            return await work(i)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def make_token(session: aiohttp.ClientSession, host: str, root: str) -> str:
    v1 = f"http://{host}:{STACK_VAULT_PORT}/v1/"
    status, body = await _call(
        session, "PUT", v1 + "sys/policies/acl/bench", root, {"policy": POLICY}
    )
    if status not in (200, 204):
        raise RuntimeError(f"policy write: HTTP {status} {body!r}")
    status, body = await _call(
        session, "POST", v1 + "auth/token/create", root, {"policies": ["bench"], "ttl": "24h"}
    )
    if status != 200:
        raise RuntimeError(f"token create: HTTP {status} {body!r}")
    auth = body["auth"]
    if sorted(auth["policies"]) != ["bench", "default"]:
        raise RuntimeError(f"the bench token has policies {auth['policies']}")
    token: str = auth["client_token"]
    return token


async def check_denied(session: aiohttp.ClientSession, host: str, token: str) -> None:
    """The policy is really checked: outside it, or a write where it only reads, is 403."""
    base = _vault(host)
    for method, path, body in (
        ("GET", "other/secret", None),
        ("PUT", secret_path(0), {"data": {"x": "y"}}),
    ):
        status, _ = await _call(session, method, base + path, token, body)
        if status != 403:
            raise RuntimeError(f"{method} secret/data/{path} with the bench token: HTTP {status}")


async def seed(session: aiohttp.ClientSession, host: str, root: str, n: int) -> None:
    base = _vault(host)

    async def put(i: int) -> None:
        status, body = await _call(
            session, "PUT", base + secret_path(i), root, {"data": secret_value(i)}
        )
        if status != 200:
            raise RuntimeError(f"seeding {secret_path(i)}: HTTP {status} {body!r}")

    await _bounded(n, put)


async def verify_reads(
    session: aiohttp.ClientSession, host: str, token: str, n: int, stale: bool
) -> int:
    """Read every seeded secret; the number that do not come back as seeded."""
    base = _vault(host)
    headers = {"X-Vault-Stale": "true"} if stale else {}

    async def get(i: int) -> bool:
        status, body = await _call(session, "GET", base + secret_path(i), token, None, headers)
        return status == 200 and body["data"]["data"] == secret_value(i)

    return sum(not ok for ok in await _bounded(n, get))


async def verify_writes(
    session: aiohttp.ClientSession, host: str, token: str, clients: int, tag: str
) -> int:
    """Read back every secret the write phase cycled over (linearizable); the number
    that do not hold this round's value."""
    base = _vault(host)

    async def get(j: int) -> bool:
        c, k = divmod(j, WRITE_KEYS)
        status, body = await _call(session, "GET", base + write_path(c, k), token)
        return status == 200 and body["data"]["data"] == write_value(c, k, tag)

    return sum(not ok for ok in await _bounded(clients * WRITE_KEYS, get))


# ================================================================ the whole run
async def run_benchmark(opts: Options, log: Log) -> dict[str, Any]:
    options = {
        "runs": opts.runs,
        "duration_s": opts.duration,
        "warmup_s": opts.warmup,
        "clients": opts.clients,
        "secrets": opts.secrets,
    }
    result = vault_rig.result_header("bench.vault_bench", {}, options)
    cancel_on_signals()
    async with vault_rig.servers(HOSTS, BARE_HOST, "stack-vault-bench-") as up:
        session, cluster = up.session, up.cluster
        leader = await cluster.leader(session)
        root = cluster.token
        token = await make_token(session, leader.host, root)
        await check_denied(session, leader.host, token)
        log(f"cluster up, leader {leader.name}; seeding {opts.secrets} secrets")
        await seed(session, leader.host, root, opts.secrets)
        for stale in (True, False):
            bad = await verify_reads(session, leader.host, token, opts.secrets, stale)
            if bad:
                raise RuntimeError(f"{bad} seeded secrets read back wrong (stale={stale})")
        worker = up.worker = LoadWorker()
        rig = Rig(up, worker, token, opts)
        rounds, checks = await _rounds(rig, log)
        result["rounds"] = rounds
        result["checks"] = checks
        result["phases"] = {p: summarize([r[p] for r in rounds]) for p in PHASES}
        result["ratios"] = {p: paired_ratios(rounds, p) for p in PHASES if p != "bare"}
        if opts.profile is not None:
            result["profiles"] = await _profiles(rig, opts.profile, log)
    return result


@dataclass
class Rig:
    """What is running: the cluster, the bare server, the load worker, the token."""

    up: Servers
    worker: LoadWorker
    token: str
    opts: Options

    @property
    def session(self) -> aiohttp.ClientSession:
        return self.up.session

    async def run_phase(
        self, phase: str, tag: str, profile_dir: Path | None = None
    ) -> tuple[dict[str, Any], Node]:
        cluster, bare = self.up.cluster, self.up.bare
        leader = await cluster.leader(self.session)
        nodes = [n.child.pid for n in cluster.nodes]
        if phase == "bare":
            host, servers, target = BARE_HOST, [bare.pid], bare.pid
        else:  # reads load the leader alone; writes all three nodes
            host, target = leader.host, leader.child.pid
            servers = nodes if phase == "write" else [target]

        async def counters() -> dict[str, int]:
            stats: dict[str, int] = (await cluster.status(self.session, leader))["stats"]
            return stats

        spec = build_spec(phase, host, self.token, self.opts, tag)
        profile = (target, profile_dir / f"{phase}.txt") if profile_dir else None
        res: dict[str, Any] = await measured_run(
            self.worker,
            spec,
            servers,
            [*nodes, bare.pid],
            profile,
            None if phase == "bare" else counters,
        )
        res["leader"] = leader.name
        return res, leader


async def _rounds(rig: Rig, log: Log) -> tuple[list[dict[str, Any]], dict[str, int]]:
    opts, session = rig.opts, rig.session
    rounds: list[dict[str, Any]] = []
    checks = {"read_mismatches": 0, "reads_checked": 0, "write_mismatches": 0, "writes_checked": 0}
    for r in range(opts.runs):
        rnd: dict[str, Any] = {}
        for phase in phase_order(r):
            tag = f"r{r}-{time.time_ns()}"
            res, leader = await rig.run_phase(phase, tag)
            if phase in ("stale", "linearizable"):
                stale = phase == "stale"
                bad = await verify_reads(session, leader.host, rig.token, opts.secrets, stale)
                checks["read_mismatches"] += bad
                checks["reads_checked"] += opts.secrets
            elif phase == "write":
                bad = await verify_writes(session, leader.host, rig.token, opts.clients, tag)
                checks["write_mismatches"] += bad
                checks["writes_checked"] += opts.clients * WRITE_KEYS
            rnd[phase] = res
            log(f"  round {r + 1} " + run_line(phase, res))
        rounds.append(rnd)
    return rounds, checks


def run_line(phase: str, res: dict[str, Any]) -> str:
    raft = ""
    if "leader_messages_sent_per_req" in res:
        raft = (
            f"  leader: {res['leader_messages_sent_per_req']:.2f} msgs/req"
            f" {res['leader_readies_per_req']:.2f} readies/req"
        )
    return (
        f"{phase:12} {res['throughput']:8.0f} req/s"
        f"  p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms"
        f"  errors {res['errors']}  client CPU {res['client_cpu_pct']:3.0f}%"
        f"  server {res['server_cores']:.2f} cores {res['server_us_per_req']:4.0f} µs/req"
        f"  other {res['other_cores']:.2f} cores  cpu pressure {res['cpu_pressure']}%"
        + raft
        + (f"  [{res['error_sample']}]" if res["errors"] else "")
    )


async def _profiles(rig: Rig, out_dir: Path, log: Log) -> dict[str, Any]:
    async def run(phase: str, out_dir: Path) -> dict[str, Any]:
        res, _ = await rig.run_phase(phase, f"profile-{time.time_ns()}", out_dir)
        return res

    return await vault_rig.profiles(PHASES, run, PARTS, out_dir, run_line, log)


# ================================================================ report
def markdown(result: dict[str, Any]) -> str:
    m, o = result["machine"], result["options"]
    lines = [
        f"Command: `{result['command']}`  ",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_total_gib']} GiB, "
        f"Linux {m['kernel']}, Python {m['python']}, aiohttp {result['versions']['aiohttp']}, "
        f"stack {result['versions']['stack'] or '?'}; {m['date']}; at start: load average "
        f"{m['loadavg_1m_at_start']}, CPU pressure {m['cpu_pressure_at_start']}%  ",
        f"{o['clients']} clients, {o['runs']} rounds of {o['duration_s']:g} s (after "
        f"{o['warmup_s']:g} s of warm-up) per phase, {o['secrets']} seeded secrets; "
        "median (min-max) over the rounds.",
        "",
        "| phase | req/s | ratio to bare | p50 ms | p99 ms | errors | client CPU % | server cores "
        "| server CPU µs/req | leader Raft msgs/req | other cores | CPU pressure % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for phase in PHASES:
        s = result["phases"][phase]
        ratio = result["ratios"].get(phase)
        rtxt = f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})" if ratio else "1"
        t = s["throughput"]
        lines.append(
            f"| {phase} | {t['median']:,.0f} ({t['min']:,.0f}-{t['max']:,.0f}) | {rtxt} "
            f"| {_f(s['p50_ms']['median'], '.2f')} | {_f(s['p99_ms']['median'], '.2f')} "
            f"| {s['errors']['max']:.0f} | {_f(s['client_cpu_pct']['median'], '.0f')} "
            f"| {_f(s['server_cores']['median'], '.2f')} "
            f"| {_f(s['server_us_per_req']['median'], '.0f')} "
            f"| {_f(s['leader_messages_sent_per_req']['median'], '.2f')} "
            f"| {_f(s['other_cores']['median'], '.2f')} "
            f"| {_f(s['cpu_pressure']['median'], '.0f')} |"
        )
    c = result["checks"]
    lines += [
        "",
        f"Checks: {c['reads_checked'] - c['read_mismatches']}/{c['reads_checked']} reads "
        f"returned the seeded value, {c['writes_checked'] - c['write_mismatches']}/"
        f"{c['writes_checked']} written secrets read back with their round's value.",
    ]
    return "\n".join(lines) + "\n"


# ================================================================ command line
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.vault_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    vault_rig.add_common_args(p)
    p.add_argument("--clients", type=int, default=64, help="concurrent keep-alive clients")
    p.add_argument("--secrets", type=int, default=1000, help="secrets seeded and read")
    vault_rig.add_output_args(
        p,
        markdown_help="write the table as Markdown",
        profile_help="then profile each phase's server with py-spy into DIR",
    )
    args = p.parse_args(argv)
    opts = Options(args.runs, args.duration, args.warmup, args.clients, args.secrets, args.profile)
    result = vault_rig.run_and_report(run_benchmark(opts, log_stderr), args, markdown)
    return 130 if result is None else 0


if __name__ == "__main__":
    sys.exit(main())
