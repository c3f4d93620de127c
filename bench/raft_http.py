"""Replicated writes over HTTP: a 3-node stack cluster beside a 3-member etcd cluster.

    python -m bench raft [--runs 3] [--duration 5] [--clients 1,16,64] [--json out.json]

What one invocation measures, every figure for stack and for etcd on the same machine:

* write throughput and latency (p50/p99) of 100-byte values at each client count,
  sent to the leader and to a follower (which forwards), each point the median of
  --runs runs of --duration seconds after a --warmup; stack and etcd runs alternate
  so drift on the machine hits both alike;
* the load generator's own CPU (it runs in a process of its own) and the servers'
  CPU (all three nodes, in cores) during each run;
* resident memory of every node after the load;
* start-up to ready of a single node (process start until a write succeeds);
* leader failover: SIGKILL the leader, time until a write succeeds on a survivor.

Stack nodes bind 127.0.0.11-13, etcd 127.0.0.21-23, failover trials 127.0.0.31-49,
start-up trials 127.0.0.51-65: nothing leaves 127.0.0.0/8. Every process runs in its
own process group and is killed in a finally block; data lives in one temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.clusters import (
    Cluster,
    ClusterError,
    EtcdCluster,
    Node,
    StackCluster,
    ensure_etcd,
    follower,
    write_once,
)
from bench.load import LoadSpec, LoadWorker
from bench.procs import (
    ProcessSet,
    cancel_on_signals,
    cpu_seconds,
    loadavg,
    machine_busy_seconds,
    machine_info,
    pressure,
    rss_kib,
    run_benchmark_main,
    stack_version,
)

STACK_HOSTS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
ETCD_HOSTS = ("127.0.0.21", "127.0.0.22", "127.0.0.23")
VALUE = (b"0123456789" * 10)[:100]
KEYS_PER_CLIENT = 256  # each client overwrites its own keys: state stays bounded
NUMERIC = (
    "throughput",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "mean_ms",
    "errors",
    "client_cpu_pct",
    "server_cpu_cores",
    "server_cpu_us_per_write",
    "other_cpu_cores",
    "entries_per_sync",
    "entries_per_ready",
    "cpu_pressure",
    "io_pressure",
)

Log = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    runs: int = 3
    duration: float = 5.0
    warmup: float = 1.0
    clients: tuple[int, ...] = (1, 16, 64)
    targets: tuple[str, ...] = ("leader", "follower")
    etcd: bool = True
    startup_runs: int = 5
    failover_runs: int = 3
    keep: bool = False


def _median(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return statistics.median(vals) if vals else float("nan")


def build_spec(cluster: Cluster, node: Node, clients: int, opts: Options) -> LoadSpec:
    requests = tuple(
        tuple(
            cluster.write_request(node, f"bench/c{c:03d}/k{k:03d}", VALUE)
            for k in range(KEYS_PER_CLIENT)
        )
        for c in range(clients)
    )
    return LoadSpec(
        method=cluster.method,
        requests=requests,
        headers=tuple(cluster.headers().items()),
        warmup=opts.warmup,
        duration=opts.duration,
    )


async def _target_node(cluster: Cluster, session: aiohttp.ClientSession, target: str) -> Node:
    if target == "leader":
        return await cluster.leader(session)
    return await follower(cluster, session)


def _servers_cpu(cluster: Cluster) -> float:
    return sum(cpu_seconds(n.child.pid) or 0.0 for n in cluster.nodes)


async def _stack_counters(
    cluster: Cluster, session: aiohttp.ClientSession
) -> dict[str, int] | None:
    if not isinstance(cluster, StackCluster):
        return None
    leader = await cluster.leader(session)
    stats: dict[str, int] = (await cluster.status(session, leader))["stats"]
    return stats


async def one_run(
    cluster: Cluster,
    session: aiohttp.ClientSession,
    worker: LoadWorker,
    target: str,
    clients: int,
    opts: Options,
) -> dict[str, Any]:
    node = await _target_node(cluster, session, target)
    spec = build_spec(cluster, node, clients, opts)
    counters0 = await _stack_counters(cluster, session)
    wpid = worker.pid or 0
    load0 = loadavg()
    busy0, wcpu0 = machine_busy_seconds(), cpu_seconds(wpid) or 0.0
    cpu0, wall0 = _servers_cpu(cluster), time.perf_counter()
    res = await worker.run(spec)
    cpu1, wall1 = _servers_cpu(cluster), time.perf_counter()
    busy1, wcpu1 = machine_busy_seconds(), cpu_seconds(wpid) or 0.0
    counters1 = await _stack_counters(cluster, session)
    res["node"] = node.name
    # Over the whole call (warm-up included): the servers' average load.
    wall = wall1 - wall0
    res["server_cpu_cores"] = (cpu1 - cpu0) / wall
    # What else ran on the machine meanwhile (other users, the other cluster's idle
    # heartbeats): busy cores less the servers and the load generator.
    res["other_cpu_cores"] = max(0.0, (busy1 - busy0 - (cpu1 - cpu0) - (wcpu1 - wcpu0)) / wall)
    res["loadavg_before"] = load0
    res["cpu_pressure"] = pressure("cpu")  # over the last 10 s: most of this run
    res["io_pressure"] = pressure("io")
    res["server_cpu_us_per_write"] = (
        1e6 * res["server_cpu_cores"] / res["throughput"] if res["throughput"] else float("nan")
    )
    if counters0 is not None and counters1 is not None:
        d = {k: counters1[k] - counters0[k] for k in ("readies", "syncs", "entries_persisted")}
        res["leader_counters"] = d
        res["entries_per_sync"] = d["entries_persisted"] / d["syncs"] if d["syncs"] else 0.0
        res["entries_per_ready"] = d["entries_persisted"] / d["readies"] if d["readies"] else 0.0
    return res


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {
        k: _median([float(r[k]) for r in runs if r.get(k) is not None])
        for k in NUMERIC
        if any(r.get(k) is not None for r in runs)
    }


async def throughput_phase(
    clusters: Sequence[Cluster],
    session: aiohttp.ClientSession,
    worker: LoadWorker,
    opts: Options,
    log: Log,
) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for target in opts.targets:
        for clients in opts.clients:
            runs: dict[str, list[dict[str, Any]]] = {c.system: [] for c in clusters}
            for r in range(opts.runs):
                for cluster in clusters:  # alternate, so drift hits both systems alike
                    res = await one_run(cluster, session, worker, target, clients, opts)
                    runs[cluster.system].append(res)
                    log(
                        f"  {cluster.system:5} {target:8} c={clients:<3} run {r + 1}: "
                        f"{res['throughput']:8.0f} w/s  p50 {res['p50_ms']:6.2f} ms  "
                        f"p99 {res['p99_ms']:6.2f} ms  client CPU {res['client_cpu_pct']:3.0f}%"
                        f"  servers {res['server_cpu_cores']:.2f} cores"
                        f"  other {res['other_cpu_cores']:.2f} cores"
                        + f"  cpu pressure {res['cpu_pressure']}%"
                        + (f"  errors {res['errors']}" if res["errors"] else "")
                    )
            for system, rs in runs.items():
                points.append(
                    {
                        "system": system,
                        "target": target,
                        "clients": clients,
                        "median": summarize(rs),
                        "runs": rs,
                    }
                )
    return points


def ratios(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(p["system"], p["target"], p["clients"]): p["median"] for p in points}
    out = []
    for (system, target, clients), s in by.items():
        e = by.get(("etcd", target, clients))
        if system != "stack" or e is None:
            continue
        out.append(
            {
                "target": target,
                "clients": clients,
                "throughput": s["throughput"] / e["throughput"],
                "p50": s["p50_ms"] / e["p50_ms"],
                "p99": s["p99_ms"] / e["p99_ms"],
            }
        )
    return out


# ================================================================ start-up and failover
async def _poll_health(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(f"{url}/v1/health", timeout=aiohttp.ClientTimeout(1)) as r:
            body = await r.json(content_type=None)
            return r.status == 200 and body.get("status") == "ok"
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return False


async def stack_startup(
    procs: ProcessSet, workdir: Path, host: str, session: aiohttp.ClientSession
) -> dict[str, float]:
    cluster = StackCluster(procs, workdir, [host])
    node = cluster.spawn(0, None)
    t0 = node.child.started
    deadline = t0 + 60
    token_file = node.data_dir / "config" / "stack" / "root-token"
    try:
        while not await _poll_health(session, node.url):
            if not node.child.alive() or time.monotonic() > deadline:
                raise ClusterError(f"stack did not start:\n{node.child.log_tail()}")
            await asyncio.sleep(0.01)
        healthy = time.monotonic() - t0
        while True:
            if token_file.exists():
                cluster.token = token_file.read_text().strip()
                if cluster.token and await write_once(session, cluster, node, "bench/s", VALUE):
                    break
            if time.monotonic() > deadline:
                raise ClusterError(f"stack took no write:\n{node.child.log_tail()}")
            await asyncio.sleep(0.01)
        ready = time.monotonic() - t0
        return {"health_s": healthy, "ready_s": ready, "rss_kib": rss_kib(node.child.pid) or 0}
    finally:
        procs.stop(node.child)


async def etcd_startup(
    procs: ProcessSet, workdir: Path, host: str, binary: str, session: aiohttp.ClientSession
) -> dict[str, float]:
    cluster = EtcdCluster(procs, workdir, [host], binary)
    cluster.spawn_all()
    node = cluster.nodes[0]
    t0 = node.child.started
    deadline = t0 + 60
    try:
        while not (
            (cluster.prefix or await cluster.find_prefix(session))
            and await write_once(session, cluster, node, "bench/s", VALUE, timeout=1.0)
        ):
            if not node.child.alive() or time.monotonic() > deadline:
                raise ClusterError(f"etcd did not start:\n{node.child.log_tail()}")
            await asyncio.sleep(0.01)
        ready = time.monotonic() - t0
        return {"ready_s": ready, "rss_kib": rss_kib(node.child.pid) or 0}
    finally:
        procs.stop(node.child)


async def first_write_after(
    session: aiohttp.ClientSession,
    cluster: Cluster,
    nodes: Sequence[Node],
    t0: float,
    limit: float = 30.0,
) -> tuple[float, str]:
    """Start a write every 50 ms (round-robin over `nodes`, each with a 5 s timeout);
    returns when the first one succeeds, seconds after t0, and the node it went to."""
    first: list[tuple[float, str]] = []
    done = asyncio.Event()

    async def probe(node: Node, k: int) -> None:
        if await write_once(session, cluster, node, f"bench/failover/{k}", VALUE, timeout=5.0):
            if not first:
                first.append((time.perf_counter() - t0, node.name))
            done.set()

    tasks: set[asyncio.Task[None]] = set()
    k = 0
    try:
        while not done.is_set():
            if time.perf_counter() - t0 > limit:
                raise ClusterError(f"no write succeeded {limit:.0f} s after the leader died")
            tasks.add(asyncio.create_task(probe(nodes[k % len(nodes)], k)))
            k += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.05)
        return first[0]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def failover_trial(
    make: Callable[[], Cluster], procs: ProcessSet, session: aiohttp.ClientSession
) -> dict[str, Any]:
    cluster = make()
    try:
        await cluster.start(session)
        await asyncio.sleep(1.0)  # settle: heartbeats flowing, followers caught up
        leader = await cluster.leader(session)
        survivors = [n for n in cluster.nodes if n is not leader]
        t0 = time.perf_counter()
        procs.kill(leader.child, signal.SIGKILL)
        seconds, via = await first_write_after(session, cluster, survivors, t0)
        new_leader = await cluster.leader(session)
        return {
            "seconds": seconds,
            "write_via": via,
            "killed": leader.name,
            "new_leader": new_leader.name,
        }
    finally:
        for n in cluster.nodes:
            procs.stop(n.child)


# ================================================================ the whole run
async def run_benchmark(opts: Options, log: Log) -> dict[str, Any]:
    result: dict[str, Any] = {
        "machine": machine_info(),
        "command": "python -m bench raft " + " ".join(sys.argv[2:]),
        "options": {
            "runs": opts.runs,
            "duration_s": opts.duration,
            "warmup_s": opts.warmup,
            "clients": list(opts.clients),
            "targets": list(opts.targets),
            "value_bytes": len(VALUE),
            "keys_per_client": KEYS_PER_CLIENT,
        },
        "versions": {
            "stack": stack_version(),
            "python": sys.version.split()[0],
            "aiohttp": aiohttp.__version__,
        },
    }
    etcd_bin = ""
    if opts.etcd:
        etcd_bin, etcd_version = ensure_etcd(log)
        result["versions"]["etcd"] = etcd_version
    # SIGTERM and SIGINT cancel this task, so every finally below runs.
    cancel_on_signals()
    workdir = Path(tempfile.mkdtemp(prefix="stack-bench-"))
    procs = ProcessSet()
    worker: LoadWorker | None = None
    started = time.monotonic()
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            log(f"start-up to ready (single node, median of {opts.startup_runs})")
            startup: dict[str, Any] = {"stack": [], "etcd": []}
            for i in range(opts.startup_runs):
                s = await stack_startup(procs, workdir / f"start{i}", f"127.0.0.{51 + i}", session)
                startup["stack"].append(s)
                log(
                    f"  stack run {i + 1}: ready {s['ready_s']:.2f} s "
                    f"(health {s['health_s']:.2f} s)"
                )
                if opts.etcd:
                    e = await etcd_startup(
                        procs, workdir / f"estart{i}", f"127.0.0.{61 + i}", etcd_bin, session
                    )
                    startup["etcd"].append(e)
                    log(f"  etcd  run {i + 1}: ready {e['ready_s']:.2f} s")
            result["startup"] = {
                system: {"median_s": _median([r["ready_s"] for r in rs]), "runs": rs}
                for system, rs in startup.items()
                if rs
            }

            log("throughput and latency")
            worker = LoadWorker()
            clusters: list[Cluster] = []
            stack = StackCluster(procs, workdir / "tput", STACK_HOSTS)
            await stack.start(session)
            clusters.append(stack)
            if opts.etcd:
                etcd = EtcdCluster(procs, workdir / "tput", ETCD_HOSTS, etcd_bin)
                await etcd.start(session)
                clusters.append(etcd)
            points = await throughput_phase(clusters, session, worker, opts, log)
            result["throughput"] = points
            result["ratios"] = ratios(points)
            result["rss_kib"] = {
                c.system: {n.name: rss_kib(n.child.pid) or 0 for n in c.nodes} for c in clusters
            }
            for c in clusters:
                for n in c.nodes:
                    procs.stop(n.child)

            log(f"leader failover (SIGKILL, median of {opts.failover_runs})")
            failover: dict[str, list[dict[str, Any]]] = {"stack": [], "etcd": []}
            for i in range(opts.failover_runs):
                hosts = [f"127.0.0.{31 + 3 * i + j}" for j in range(3)]
                f = await failover_trial(
                    functools.partial(StackCluster, procs, workdir / f"fo{i}", hosts),
                    procs,
                    session,
                )
                failover["stack"].append(f)
                log(f"  stack run {i + 1}: {f['seconds']:.2f} s (write via {f['write_via']})")
                if opts.etcd:
                    hosts = [f"127.0.0.{41 + 3 * i + j}" for j in range(3)]
                    f = await failover_trial(
                        functools.partial(EtcdCluster, procs, workdir / f"efo{i}", hosts, etcd_bin),
                        procs,
                        session,
                    )
                    failover["etcd"].append(f)
                    log(f"  etcd  run {i + 1}: {f['seconds']:.2f} s (write via {f['write_via']})")
            result["failover"] = {
                system: {"median_s": _median([r["seconds"] for r in rs]), "runs": rs}
                for system, rs in failover.items()
                if rs
            }
    finally:
        if worker is not None:
            worker.close()
        procs.close()
        if opts.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result["elapsed_s"] = time.monotonic() - started
    return result


# ================================================================ command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=3, help="runs per data point (median)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    p.add_argument("--clients", default="1,16,64", help="concurrent clients, comma-separated")
    p.add_argument("--targets", default="leader,follower", help="leader and/or follower")
    p.add_argument("--no-etcd", action="store_true", help="stack only (no ratios)")
    p.add_argument("--startup-runs", type=int, default=5)
    p.add_argument("--failover-runs", type=int, default=3)
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="write the results as JSON to PATH (or stdout: the table goes to stderr)",
    )
    p.add_argument("--markdown", metavar="PATH", help="also write the tables as Markdown")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (node logs)")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bench.report import markdown, print_report

    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    if not set(targets) <= {"leader", "follower"}:
        raise SystemExit("--targets takes leader and/or follower")
    opts = Options(
        runs=args.runs,
        duration=args.duration,
        warmup=args.warmup,
        clients=tuple(int(c) for c in args.clients.split(",")),
        targets=targets,
        etcd=not args.no_etcd,
        startup_runs=args.startup_runs,
        failover_runs=args.failover_runs,
        keep=args.keep,
    )
    to_stdout = args.json == "-"
    console = Console(stderr=to_stdout)
    if not console.is_terminal:
        console = Console(stderr=to_stdout, width=200)
    err = Console(stderr=True, soft_wrap=True)

    def log(line: str) -> None:
        err.print(line, markup=False, highlight=False)

    result = run_benchmark_main(run_benchmark(opts, log), log)
    if result is None:
        return 130
    print_report(result, console)
    if args.json:
        text = json.dumps(result, indent=2)
        if to_stdout:
            sys.stdout.write(text + "\n")
        else:
            Path(args.json).write_text(text + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(result))
    return 0
