"""What the benchmarks of the Vault port (`bench.vault_bench`,
`bench.secrets_engines_bench`) share: a 3-node stack cluster beside the bare
aiohttp server, one measured load run with the servers' CPU read from /proc, the
phases rotated per round, medians and ratios paired within a round, py-spy
profiles, and the end of the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import pyspy
from bench.clusters import STACK_VAULT_PORT, StackCluster
from bench.load import LoadSpec, LoadWorker
from bench.procs import (
    Child,
    ProcessSet,
    check_loopback,
    cpu_seconds,
    ensure_free,
    log_stderr,
    machine_busy_seconds,
    machine_info,
    pressure,
    run_benchmark_main,
    stack_version,
)

Log = Callable[[str], None]
# The figures of every phase (each benchmark adds its own after them).
FIGURES = (
    "throughput",
    "p50_ms",
    "p99_ms",
    "errors",
    "client_cpu_pct",
    "server_cores",
    "server_us_per_req",
)


@dataclass(frozen=True)
class RunOptions:
    """What every Vault-port benchmark takes; each adds its own."""

    runs: int = 3
    duration: float = 10.0
    warmup: float = 1.0


# ================================================================ pure: figures
def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of the values that are numbers (NaN when there are none)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        nan = float("nan")
        return {"median": nan, "min": nan, "max": nan}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def summarize(
    runs: Sequence[dict[str, Any]], figures: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per figure, its spread over the runs of one phase."""
    return {k: spread([r[k] for r in runs if k in r]) for k in figures}


def paired_ratios(
    rounds: Sequence[dict[str, dict[str, Any]]], phase: str, bare_phase: str
) -> dict[str, float]:
    """Throughput of `phase` over `bare_phase`'s, within each round (same minutes of
    the machine), then their spread."""
    ratios = []
    for rnd in rounds:
        bare, other = rnd.get(bare_phase), rnd.get(phase)
        if bare and other and bare["throughput"] > 0:
            ratios.append(other["throughput"] / bare["throughput"])
    return spread(ratios)


def rotated(phases: tuple[str, ...], round_no: int) -> tuple[str, ...]:
    """The phases rotated by the round number, so none always runs first or last."""
    k = round_no % len(phases)
    return phases[k:] + phases[:k]


def fmt(v: float, spec: str) -> str:
    return "-" if v is None or math.isnan(v) else format(v, spec)


# ================================================================ the result
def result_header(module: str, versions: dict[str, str], options: dict[str, Any]) -> dict[str, Any]:
    """The machine, the command, the versions (stack, Python, aiohttp, then
    `versions`) and the options."""
    return {
        "machine": machine_info(),
        "command": f"python -m {module} " + " ".join(sys.argv[1:]),
        "versions": {
            "stack": stack_version(),
            "python": sys.version.split()[0],
            "aiohttp": aiohttp.__version__,
            **versions,
        },
        "options": options,
    }


# ================================================================ the servers
_T = aiohttp.ClientTimeout(total=30)


async def vault_call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: aiohttp.ClientTimeout = _T,
) -> tuple[int, Any]:
    """One request with `token` (if any); the status and the answer's JSON (its bytes
    when it is not JSON)."""
    h = {"X-Vault-Token": token} if token else {}
    h.update(headers or {})
    async with session.request(method, url, json=body, headers=h, timeout=timeout) as resp:
        text = await resp.read()
        try:
            return resp.status, json.loads(text) if text else None
        except ValueError:
            return resp.status, text


def start_bare(procs: ProcessSet, workdir: Path, host: str) -> Child:
    check_loopback(host)
    ensure_free(host, (STACK_VAULT_PORT,))
    argv = [sys.executable, "-m", "bench.bare_http", "--host", host]
    argv += ["--port", str(STACK_VAULT_PORT)]
    return procs.spawn("bare", argv, log_path=workdir / "bare.log")


async def wait_bare(session: aiohttp.ClientSession, child: Child, host: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            url = f"http://{host}:{STACK_VAULT_PORT}/v1/x"
            async with session.get(url, timeout=_T) as resp:
                if resp.status == 200:
                    return
        if not child.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the bare server did not start:\n{child.log_tail()}")
        await asyncio.sleep(0.05)


@dataclass
class Servers:
    """The running cluster and bare server, and the load worker once there is one."""

    session: aiohttp.ClientSession
    cluster: StackCluster
    bare: Child
    worker: LoadWorker | None = None


@contextlib.asynccontextmanager
async def servers(hosts: Sequence[str], bare_host: str, prefix: str) -> AsyncIterator[Servers]:
    """Start the cluster on `hosts` and the bare server on `bare_host`; afterwards
    close the worker (if one was set), stop every process and remove the work dir."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    procs = ProcessSet()
    up: Servers | None = None
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            cluster = StackCluster(procs, workdir, hosts)
            await cluster.start(session)
            bare = start_bare(procs, workdir, bare_host)
            await wait_bare(session, bare, bare_host)
            up = Servers(session, cluster, bare)
            yield up
    finally:
        if up is not None and up.worker is not None:
            up.worker.close()
        procs.close()
        shutil.rmtree(workdir, ignore_errors=True)


# ================================================================ one measured run
@dataclass(frozen=True)
class Window:
    """CPU seconds of the watched processes at both ends of the measured window."""

    cpu0: dict[int, float]
    cpu1: dict[int, float]
    wall: float

    def used(self, pids: Sequence[int]) -> float:
        return sum(self.cpu1[p] - self.cpu0[p] for p in pids)


async def measured_run(
    load: Awaitable[dict[str, Any]],
    spec: LoadSpec,
    servers: Sequence[int],
    watched: Sequence[int],
    profile: tuple[int, Path] | None = None,
    counters: Callable[[], Awaitable[dict[str, int]]] | None = None,
    raft_keys: Sequence[str] = ("messages_sent", "readies"),
    more: Callable[[Window, int], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Run the load; meanwhile read the CPU of `watched` (the servers and the load
    worker; the rest of the machine is "other") and the leader's Raft counters over
    the measured window (the parent sleeps through the warm-up, give or take the
    worker's few ms to start). `servers` are the phase's servers; `more(window,
    ops)` adds figures after theirs."""
    task = asyncio.ensure_future(load)
    await asyncio.sleep(spec.warmup)
    raft0 = await counters() if counters else {}
    spy = None
    if profile is not None:
        spy = asyncio.ensure_future(pyspy.record(profile[0], spec.duration, profile[1]))
    cpu0 = {pid: cpu_seconds(pid) or 0.0 for pid in watched}
    busy0, wall0 = machine_busy_seconds(), time.perf_counter()
    await asyncio.sleep(spec.duration)
    cpu1 = {pid: cpu_seconds(pid) or 0.0 for pid in watched}
    busy1, wall1 = machine_busy_seconds(), time.perf_counter()
    raft1 = await counters() if counters else {}
    res: dict[str, Any] = await task
    win = Window(cpu0, cpu1, wall1 - wall0)
    used = win.used(servers)
    ops = res["ops"]
    res["server_cores"] = used / win.wall
    res["server_us_per_req"] = 1e6 * used / ops if ops else float("nan")
    if more is not None:
        res.update(more(win, ops))
    res["other_cores"] = max(0.0, (busy1 - busy0 - win.used(watched)) / win.wall)
    res["cpu_pressure"] = pressure("cpu")
    if raft0 and raft1 and ops:
        for k in raft_keys:
            res[f"leader_{k}_per_req"] = (raft1[k] - raft0[k]) / ops
    if spy is not None and profile is not None:
        res["profile"] = await spy
        # The profiled process alone (`servers` may be more than it).
        spied = cpu1.get(profile[0], 0.0) - cpu0.get(profile[0], 0.0)
        res["profiled_us_per_req"] = 1e6 * spied / ops if ops else float("nan")
    return res


async def profiles(
    phases: Sequence[str],
    run: Callable[[str, Path], Awaitable[dict[str, Any]]],
    parts: Sequence[tuple[str, str]],
    out_dir: Path,
    line: Callable[[str, dict[str, Any]], str],
    log: Log,
) -> dict[str, Any]:
    """One more run of each phase, `run(phase, out_dir)`, while py-spy samples its
    server; where the samples go."""
    if not pyspy.available():
        log("py-spy not found: no profiles (pip install py-spy)")
        return {}
    out_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    for phase in phases:
        res = await run(phase, out_dir)
        prof: pyspy.Profile = res.pop("profile")
        out[phase] = {
            "throughput": res["throughput"],
            "process_us_per_req": res["profiled_us_per_req"],
            "samples": prof.samples,
            "raw": str(out_dir / f"{phase}.txt"),
            "parts": prof.attribute(parts),
            "top_self": prof.top_self(30),
            "top_total": prof.top_total(60),
        }
        log(f"  profiled {line(phase, res)}  ({prof.samples} samples)")
    return out


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
def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=3, help="rounds of the four phases (median)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per phase")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")


def add_output_args(p: argparse.ArgumentParser, markdown_help: str, profile_help: str) -> None:
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--markdown", metavar="PATH", help=markdown_help)
    p.add_argument("--profile", metavar="DIR", type=Path, help=profile_help)


def run_and_report(
    main: Coroutine[Any, Any, dict[str, Any]],
    args: argparse.Namespace,
    markdown: Callable[[dict[str, Any]], str],
) -> dict[str, Any] | None:
    """Run the benchmark; print its Markdown (and profiles), write --json and
    --markdown. None when it was interrupted."""
    result = run_benchmark_main(main, log_stderr)
    if result is None:
        return None
    text = markdown(result)
    print(text)
    if result.get("profiles"):
        print(profile_text(result["profiles"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text)
    return result
