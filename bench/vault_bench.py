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
import contextlib
import hashlib
import json
import math
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import pyspy
from bench.clusters import STACK_VAULT_PORT, Node, StackCluster
from bench.load import LoadSpec, LoadWorker
from bench.procs import (
    Child,
    ProcessSet,
    check_loopback,
    cpu_seconds,
    ensure_free,
    machine_busy_seconds,
    machine_info,
    pressure,
    stack_version,
)

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
    "throughput",
    "p50_ms",
    "p99_ms",
    "errors",
    "client_cpu_pct",
    "server_cores",
    "server_us_per_req",
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

Log = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    runs: int = 3
    duration: float = 10.0
    warmup: float = 1.0
    clients: int = 64
    secrets: int = 1000
    profile: Path | None = None


# ================================================================ pure: figures
def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of the values that are numbers (NaN when there are none)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        nan = float("nan")
        return {"median": nan, "min": nan, "max": nan}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per figure, its spread over the runs of one phase."""
    return {k: spread([r[k] for r in runs if k in r]) for k in FIGURES}


def paired_ratios(rounds: Sequence[dict[str, dict[str, Any]]], phase: str) -> dict[str, float]:
    """Throughput of `phase` over bare's, within each round (same minutes of the
    machine), then their spread."""
    ratios = []
    for rnd in rounds:
        bare, other = rnd.get("bare"), rnd.get(phase)
        if bare and other and bare["throughput"] > 0:
            ratios.append(other["throughput"] / bare["throughput"])
    return spread(ratios)


def phase_order(round_no: int) -> tuple[str, ...]:
    """The phases rotated by the round number, so none always runs first or last."""
    k = round_no % len(PHASES)
    return PHASES[k:] + PHASES[:k]


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
            tuple((base + secret_path(i), b"") for i in range(c, opts.secrets, opts.clients))
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
    over the measured window (the parent sleeps through the warm-up, give or take the
    worker's few ms to start)."""
    task = asyncio.ensure_future(worker.run(spec))
    await asyncio.sleep(spec.warmup)
    raft0 = await counters() if counters else {}
    spy = None
    if profile is not None:
        spy = asyncio.ensure_future(pyspy.record(profile[0], spec.duration, profile[1]))
    mine = [*all_servers, worker.pid or 0]
    cpu0 = {pid: cpu_seconds(pid) or 0.0 for pid in mine}
    busy0, wall0 = machine_busy_seconds(), time.perf_counter()
    await asyncio.sleep(spec.duration)
    cpu1 = {pid: cpu_seconds(pid) or 0.0 for pid in mine}
    busy1, wall1 = machine_busy_seconds(), time.perf_counter()
    raft1 = await counters() if counters else {}
    res: dict[str, Any] = await task
    wall = wall1 - wall0
    used = sum(cpu1[p] - cpu0[p] for p in servers)
    ops = res["ops"]
    res["server_cores"] = used / wall
    res["server_us_per_req"] = 1e6 * used / ops if ops else float("nan")
    res["other_cores"] = max(0.0, (busy1 - busy0 - sum(cpu1[p] - cpu0[p] for p in mine)) / wall)
    res["cpu_pressure"] = pressure("cpu")
    if raft0 and raft1 and ops:
        for k in ("messages_sent", "readies"):
            res[f"leader_{k}_per_req"] = (raft1[k] - raft0[k]) / ops
    if spy is not None and profile is not None:
        res["profile"] = await spy
        # The profiled process alone (for writes `servers` is all three nodes).
        spied = cpu1.get(profile[0], 0.0) - cpu0.get(profile[0], 0.0)
        res["profiled_us_per_req"] = 1e6 * spied / ops if ops else float("nan")
    return res


# ================================================================ set-up and checks
async def _call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    h = {"X-Vault-Token": token, **(headers or {})}
    async with session.request(method, url, json=body, headers=h, timeout=_T) as resp:
        text = await resp.read()
        try:
            return resp.status, json.loads(text) if text else None
        except ValueError:
            return resp.status, text


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


def start_bare(procs: ProcessSet, workdir: Path) -> Child:
    check_loopback(BARE_HOST)
    ensure_free(BARE_HOST, (STACK_VAULT_PORT,))
    argv = [
        sys.executable,
        "-m",
        "bench.bare_http",
        "--host",
        BARE_HOST,
        "--port",
        str(STACK_VAULT_PORT),
    ]
    return procs.spawn("bare", argv, log_path=workdir / "bare.log")


async def wait_bare(session: aiohttp.ClientSession, child: Child) -> None:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with session.get(_vault(BARE_HOST) + "x", timeout=_T) as resp:
                if resp.status == 200:
                    return
        if not child.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the bare server did not start:\n{child.log_tail()}")
        await asyncio.sleep(0.05)


# ================================================================ the whole run
async def run_benchmark(opts: Options, log: Log) -> dict[str, Any]:
    result: dict[str, Any] = {
        "machine": machine_info(),
        "command": "python -m bench.vault_bench " + " ".join(sys.argv[1:]),
        "versions": {
            "stack": stack_version(),
            "python": sys.version.split()[0],
            "aiohttp": aiohttp.__version__,
        },
        "options": {
            "runs": opts.runs,
            "duration_s": opts.duration,
            "warmup_s": opts.warmup,
            "clients": opts.clients,
            "secrets": opts.secrets,
        },
    }
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    assert me is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, me.cancel)
    workdir = Path(tempfile.mkdtemp(prefix="stack-vault-bench-"))
    procs = ProcessSet()
    worker: LoadWorker | None = None
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            cluster = StackCluster(procs, workdir, HOSTS)
            await cluster.start(session)
            bare = start_bare(procs, workdir)
            await wait_bare(session, bare)
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
            worker = LoadWorker()
            rig = Rig(session, cluster, bare, worker, token, opts)
            rounds, checks = await _rounds(rig, log)
            result["rounds"] = rounds
            result["checks"] = checks
            result["phases"] = {p: summarize([r[p] for r in rounds]) for p in PHASES}
            result["ratios"] = {p: paired_ratios(rounds, p) for p in PHASES if p != "bare"}
            if opts.profile is not None:
                result["profiles"] = await _profiles(rig, opts.profile, log)
    finally:
        if worker is not None:
            worker.close()
        procs.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


@dataclass
class Rig:
    """What is running: the cluster, the bare server, the load worker, the token."""

    session: aiohttp.ClientSession
    cluster: StackCluster
    bare: Child
    worker: LoadWorker
    token: str
    opts: Options

    async def run_phase(
        self, phase: str, tag: str, profile_dir: Path | None = None
    ) -> tuple[dict[str, Any], Node]:
        leader = await self.cluster.leader(self.session)
        nodes = [n.child.pid for n in self.cluster.nodes]
        if phase == "bare":
            host, servers, target = BARE_HOST, [self.bare.pid], self.bare.pid
        else:  # reads load the leader alone; writes all three nodes
            host, target = leader.host, leader.child.pid
            servers = nodes if phase == "write" else [target]

        async def counters() -> dict[str, int]:
            stats: dict[str, int] = (await self.cluster.status(self.session, leader))["stats"]
            return stats

        spec = build_spec(phase, host, self.token, self.opts, tag)
        profile = (target, profile_dir / f"{phase}.txt") if profile_dir else None
        res: dict[str, Any] = await measured_run(
            self.worker,
            spec,
            servers,
            [*nodes, self.bare.pid],
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
    if not pyspy.available():
        log("py-spy not found: no profiles (pip install py-spy)")
        return {}
    out_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    for phase in PHASES:
        res, _ = await rig.run_phase(phase, f"profile-{time.time_ns()}", out_dir)
        prof: pyspy.Profile = res.pop("profile")
        out[phase] = {
            "throughput": res["throughput"],
            "process_us_per_req": res["profiled_us_per_req"],
            "samples": prof.samples,
            "raw": str(out_dir / f"{phase}.txt"),
            "parts": prof.attribute(PARTS),
            "top_self": prof.top_self(30),
            "top_total": prof.top_total(60),
        }
        log(f"  profiled {run_line(phase, res)}  ({prof.samples} samples)")
    return out


# ================================================================ report
def _f(v: float, fmt: str) -> str:
    return "-" if v is None or math.isnan(v) else format(v, fmt)


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


def profile_text(profiles: dict[str, Any], n: int = 15) -> str:
    out = []
    for phase, p in profiles.items():
        out.append(
            f"{phase}: {p['samples']} samples at {p['throughput']:.0f} req/s, "
            f"{p['process_us_per_req']:.0f} µs CPU/req in this process ({p['raw']})"
        )
        us = p["process_us_per_req"]
        out.append("  parts (share of samples, and of the CPU per request):")
        out += [f"    {sh * 100:5.1f}%  {sh * us:5.0f} µs  {lb}" for lb, sh in p["parts"].items()]
        out.append("  self:")
        out += [f"    {share * 100:5.1f}%  {f}" for f, share in p["top_self"][:n]]
        out.append("  inclusive (below the event loop):")
        top = p["top_total"]
        root = top[0][1] if top else 0.0
        below = [(f, share) for f, share in top if share < 0.97 * root]  # not the main chain
        out += [f"    {share * 100:5.1f}%  {f}" for f, share in below[: n * 2]]
    return "\n".join(out) + "\n"


# ================================================================ command line
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.vault_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--runs", type=int, default=3, help="rounds of the four phases (median)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per phase")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    p.add_argument("--clients", type=int, default=64, help="concurrent keep-alive clients")
    p.add_argument("--secrets", type=int, default=1000, help="secrets seeded and read")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the table as Markdown")
    p.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        help="then profile each phase's server with py-spy into DIR",
    )
    args = p.parse_args(argv)
    opts = Options(args.runs, args.duration, args.warmup, args.clients, args.secrets, args.profile)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        result = asyncio.run(run_benchmark(opts, log))
    except asyncio.CancelledError:
        log("interrupted; every process started was stopped")
        return 130
    text = markdown(result)
    print(text)
    if result.get("profiles"):
        print(profile_text(result["profiles"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
