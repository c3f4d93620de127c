"""Failure detection of a SIGKILLed member: stack's gossip ring against Serf, same run.

    python -m bench.detect_bench [--runs 5] [--members 5] [--json PATH]

Each run starts a fresh stack cluster (`--members` real `stack up` processes, default
gossip settings: memberlist's LAN preset) and as many Serf agents (Debian package
`serf`, installed here with apt-get if missing; default settings: Serf's `lan`
profile, memberlist's DefaultLANConfig), waits until every member of each ring sees
all of them alive, lets both settle (`--settle` seconds plus a random fraction of a
probe interval), then SIGKILLs one stack node that is not the Raft leader and one
Serf agent back to back (two `killpg` calls, a few milliseconds apart at most, so
both rings are measured under the same load), and polls every survivor every 50 ms:

* stack: `GET /v1/members` (root token); the victim's "ring" column (that survivor's
  own gossip view) turning "suspect" and "dead", and its "status" column (the nodes
  table, written by the Raft leader from its ring) turning "down";
* Serf: the `members` command of the agent's msgpack RPC (what `serf members`
  prints), the victim's status turning "failed". One persistent RPC connection per
  survivor instead of one `serf members` process per survivor and poll, which would
  spawn 80 Go processes a second on the machine under test.

A time is taken when the poll's answer arrives (seconds after the kill), so it is an
upper bound, late by up to one poll interval plus the request. Reported per run: the
first survivor to see the victim dead and the last one (every survivor), and the
ratio stack/Serf of each; then medians.

Addresses: stack nodes bind 127.0.0.200-224 and Serf agents 127.0.0.230-254 (the
next `--members` addresses of each block every run, wrapping); an address is used
only once its ports are free and the node tests' lock file for it is held (see
`Addresses`). Every process runs in its own session and is killed with its group
when its run ends, and on any exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

from bench.clusters import (
    STACK_GOSSIP_PORT,
    STACK_HTTP_PORT,
    STACK_RPC_PORT,
    ClusterError,
    Node,
    StackCluster,
    _fail_with_logs,
    _get_json,
    apt_install,
)
from bench.procs import (
    ProcessSet,
    cancel_on_signals,
    check_loopback,
    ensure_free,
    loadavg,
    log_stderr,
    machine_info,
    pressure,
    run_benchmark_main,
    stack_version,
)

Log = Callable[[str], None]

STACK_BASE = 200  # stack nodes: 127.0.0.200-224
SERF_BASE = 230  # Serf agents: 127.0.0.230-254
BLOCK = 25
SERF_BIND_PORT = 7946
SERF_RPC_PORT = 7373
POLL = 0.05
_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, ClusterError, KeyError, ValueError)


# The node tests (tests/node/cluster.py) pick addresses in 127.0.0.100-254 and hold a
# lock file per address there while they may use it: take the same locks, so that a
# test run on the same machine never gets one of ours, nor we one of theirs.
ADDRESS_LOCKS = Path(tempfile.gettempdir()) / "stack-node-test-addresses"


class Addresses:
    """Loopback addresses claimed (lock file held, ports checked free) until release."""

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}

    def claim(
        self, base: int, start: int, n: int, tcp: Sequence[int], udp: Sequence[int]
    ) -> list[str]:
        """`n` addresses of 127.0.0.{base}..{base + BLOCK - 1}, trying them from `start` on."""
        ADDRESS_LOCKS.mkdir(exist_ok=True)
        out: list[str] = []
        for k in range(BLOCK):
            host = f"127.0.0.{base + (start + k) % BLOCK}"
            if host in self.fds:
                continue
            fd = os.open(ADDRESS_LOCKS / host, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                ensure_free(host, tcp, udp)
            except (BlockingIOError, RuntimeError):
                os.close(fd)
                continue
            self.fds[host] = fd
            out.append(host)
            if len(out) == n:
                return out
        raise ClusterError(f"fewer than {n} free addresses in 127.0.0.{base}-{base + BLOCK - 1}")

    def release(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


# ================================================================ Serf
def ensure_serf(log: Log = print) -> tuple[str, dict[str, str]]:
    """Find or install Serf (Debian package `serf`); returns (path, versions)."""
    path = shutil.which("serf")
    if path is None:
        log("serf not found: apt-get install -y serf")
        apt_install("serf")
        path = shutil.which("serf")
    if path is None:
        raise SystemExit(
            "cannot install Serf: `apt-get install -y serf` failed or is not available "
            "(needs root on Debian/Ubuntu); install it, or put a `serf` binary on PATH"
        )
    return path, serf_versions(path)


def serf_versions(path: str) -> dict[str, str]:
    """What `serf version` reports, and the Debian package (and the memberlist it was
    built with) when it comes from one."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        text = subprocess.run([path, "version"], capture_output=True, text=True, timeout=30).stdout
        out["serf version"] = text.strip().splitlines()[0] if text.strip() else ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        text = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}\\n${Built-Using}", "serf"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        if text.strip():
            version, _, built = text.partition("\n")
            out["debian package"] = version.strip()
            m = re.search(r"golang-github-hashicorp-memberlist \(= ([^)]+)\)", built)
            if m:
                out["memberlist"] = m.group(1)
    return out


def serf_cli_statuses(text: str) -> dict[str, str]:
    """Member name -> status from `serf members -format=json`."""
    doc = json.loads(text)
    return {str(m["name"]): str(m["status"]) for m in doc.get("members") or []}


def serf_rpc_statuses(body: Mapping[str, Any]) -> dict[str, str]:
    """Member name -> status from the body of the RPC `members` answer."""
    return {str(m["Name"]): str(m["Status"]) for m in body.get("Members") or []}


class SerfRpc:
    """A minimal client of the agent's msgpack RPC: handshake, then `members`."""

    def __init__(self, addr: str) -> None:
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.seq = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._unpacker = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape")

    async def _next(self, reader: asyncio.StreamReader) -> Any:
        while True:
            with contextlib.suppress(StopIteration):
                return next(self._unpacker)
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("serf RPC closed the connection")
            self._unpacker.feed(data)

    async def _call(self, command: str, body: Mapping[str, Any] | None, answer: bool) -> Any:
        if self._reader is None or self._writer is None:
            raise ConnectionError("not connected")
        header = msgpack.packb({"Command": command, "Seq": self.seq})
        self._writer.write(header + (msgpack.packb(body) if body is not None else b""))
        self.seq += 1
        await self._writer.drain()
        head = await self._next(self._reader)
        if head.get("Error"):
            raise ClusterError(f"serf RPC {command}: {head['Error']}")
        return await self._next(self._reader) if answer else None

    async def connect(self) -> None:
        self.close()
        self._unpacker = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape")
        self.seq = 0
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        await self._call("handshake", {"Version": 1}, answer=False)

    async def members(self) -> dict[str, str]:
        try:
            if self._writer is None:
                await self.connect()
            return serf_rpc_statuses(await self._call("members", None, answer=True))
        except BaseException:
            self.close()  # a half-read answer would desynchronise the stream
            raise

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def aclose(self) -> None:
        writer = self._writer
        self.close()
        if writer is not None:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class SerfRing:
    """`serf agent` processes joined to the first one."""

    def __init__(self, procs: ProcessSet, workdir: Path, hosts: Sequence[str], binary: str):
        for h in hosts:
            check_loopback(h)
        self.procs = procs
        self.workdir = workdir
        self.hosts = list(hosts)
        self.binary = binary
        self.nodes: list[Node] = []
        self.rpc: dict[str, SerfRpc] = {}

    def spawn(self, host: str, join: str | None) -> Node:
        ensure_free(host, (SERF_BIND_PORT, SERF_RPC_PORT), (SERF_BIND_PORT,))
        name = f"serf-{host}"
        ndir = self.workdir / name
        ndir.mkdir(parents=True, exist_ok=True)
        rpc = f"{host}:{SERF_RPC_PORT}"
        argv = [
            self.binary,
            "agent",
            f"-node={name}",
            f"-bind={host}:{SERF_BIND_PORT}",
            f"-rpc-addr={rpc}",
        ]
        if join:
            argv.append(f"-join={join}")
        child = self.procs.spawn(name, argv, log_path=ndir / "agent.log", cwd=ndir)
        node = Node(name, host, rpc, child, ndir)
        self.nodes.append(node)
        self.rpc[name] = SerfRpc(rpc)
        return node

    async def start(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        first = self.spawn(self.hosts[0], None)
        while True:  # the first agent must answer before the others join it
            with contextlib.suppress(*_ERRORS):
                await self.statuses(first)
                break
            self._check(deadline, "first serf agent does not answer RPC")
            await asyncio.sleep(0.05)
        for host in self.hosts[1:]:
            self.spawn(host, f"{first.host}:{SERF_BIND_PORT}")

    def _check(self, deadline: float, what: str) -> None:
        children = [n.child for n in self.nodes]
        if any(not c.alive() for c in children) or time.monotonic() > deadline:
            raise _fail_with_logs(what, children)

    async def statuses(self, node: Node) -> dict[str, str]:
        return await asyncio.wait_for(self.rpc[node.name].members(), 2.0)

    async def converged(self) -> bool:
        want = {n.name for n in self.nodes}
        try:
            views = await asyncio.gather(*(self.statuses(n) for n in self.nodes))
        except _ERRORS:
            return False
        return all(
            {name for name, st in v.items() if st == "alive"} == want and set(v) == want
            for v in views
        )

    def cli_statuses(self, node: Node) -> dict[str, str]:
        """`serf members -format=json` on one agent (a cross-check of the RPC polls)."""
        out = subprocess.run(
            [self.binary, "members", f"-rpc-addr={node.url}", "-format=json"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode != 0:
            raise ClusterError(f"serf members: {out.stderr.strip()}")
        return serf_cli_statuses(out.stdout)

    async def aclose(self) -> None:
        await asyncio.gather(*(rpc.aclose() for rpc in self.rpc.values()))


# ================================================================ stack
async def stack_members(
    session: aiohttp.ClientSession, cluster: StackCluster, node: Node
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await _get_json(
        session, f"{node.url}/v1/members", cluster.headers()
    )
    return rows


def stack_member_id(rows: Sequence[Mapping[str, Any]], host: str) -> str:
    """The id of the member whose RPC or HTTP address is on `host`."""
    for m in rows:
        for key in ("address", "http"):
            addr = str(m.get(key) or "")
            addr = addr.split("://", 1)[-1]
            if addr.rsplit(":", 1)[0] == host:
                return str(m["id"])
    raise ClusterError(f"no member at {host} in {[m.get('address') for m in rows]}")


def stack_all_alive(rows: Sequence[Mapping[str, Any]], n: int) -> bool:
    return len(rows) == n and all(m["ring"] == "alive" and m["status"] == "alive" for m in rows)


async def stack_converged(session: aiohttp.ClientSession, cluster: StackCluster) -> bool:
    try:
        views = await asyncio.gather(*(stack_members(session, cluster, n) for n in cluster.nodes))
    except _ERRORS:
        return False
    return all(stack_all_alive(v, len(cluster.nodes)) for v in views)


# ================================================================ one run
async def watch(
    fetch: Callable[[], Awaitable[Any]],
    conditions: Mapping[str, Callable[[Any], bool]],
    t0: float,
    deadline: float,
) -> dict[str, float | None]:
    """Poll `fetch` on the 50 ms grid from `t0` until every condition has held once (or
    the deadline); returns, per condition, the seconds after `t0` at which the first
    answer satisfying it arrived (None: never)."""
    seen: dict[str, float | None] = dict.fromkeys(conditions)
    while any(v is None for v in seen.values()) and time.perf_counter() < deadline:
        with contextlib.suppress(*_ERRORS):
            value = await asyncio.wait_for(fetch(), 2.0)
            now = time.perf_counter() - t0
            for name, cond in conditions.items():
                if seen[name] is None and cond(value):
                    seen[name] = now
        elapsed = time.perf_counter() - t0
        await asyncio.sleep((math.floor(elapsed / POLL) + 1) * POLL - elapsed)
    return seen


def first_and_all(per_survivor: Mapping[str, Mapping[str, float | None]], key: str) -> list[Any]:
    """(first, every) survivor's time for `key`; every is None if one never saw it."""
    times = [v[key] for v in per_survivor.values()]
    seen = [t for t in times if t is not None]
    return [min(seen) if seen else None, max(seen) if len(seen) == len(times) else None]


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise ClusterError(what)
        await asyncio.sleep(0.1)
    return time.monotonic() - started


@dataclass
class Options:
    runs: int
    members: int
    settle: float
    timeout: float
    keep: bool


async def one_run(
    run: int,
    opts: Options,
    serf_bin: str,
    workdir: Path,
    session: aiohttp.ClientSession,
    log: Log,
) -> dict[str, Any]:
    procs = ProcessSet()
    addrs = Addresses()
    start = run * opts.members  # the next addresses of the block each run (it wraps)
    stack_ports = (STACK_HTTP_PORT, STACK_RPC_PORT, STACK_GOSSIP_PORT)
    stack_hosts = addrs.claim(STACK_BASE, start, opts.members, stack_ports, (STACK_GOSSIP_PORT,))
    serf_ports = (SERF_BIND_PORT, SERF_RPC_PORT)
    serf_hosts = addrs.claim(SERF_BASE, start, opts.members, serf_ports, (SERF_BIND_PORT,))
    stack = StackCluster(procs, workdir / f"run{run}", stack_hosts)
    serf = SerfRing(procs, workdir / f"run{run}", serf_hosts, serf_bin)
    try:
        await stack.start(session, timeout=120.0)
        await serf.start()
        t_stack = await wait_until(
            lambda: stack_converged(session, stack), 60.0, "stack ring did not converge"
        )
        t_serf = await wait_until(serf.converged, 60.0, "serf ring did not converge")
        # Both rings probe on a period whose phase is set when the process starts
        # (memberlist's ticker is created at start-up): a random extra wait of up to
        # one probe interval puts the kill at a random point of the probe rounds in
        # every run, as in real life, rather than at about the same point each time.
        jitter = random.uniform(0.0, 1.0)
        log(
            f"run {run + 1}: {opts.members} stack nodes and {opts.members} serf agents "
            f"converged ({t_stack:.1f} s, {t_serf:.1f} s); settling {opts.settle + jitter:.2f} s"
        )
        await asyncio.sleep(opts.settle + jitter)
        if not (await stack_converged(session, stack) and await serf.converged()):
            raise ClusterError("a ring lost a member while settling")

        leader = await stack.leader(session)
        s_victim = next(n for n in reversed(stack.nodes) if n is not leader)
        s_id = stack_member_id(await stack_members(session, stack, leader), s_victim.host)
        s_survivors = [n for n in stack.nodes if n is not s_victim]
        f_victim = serf.nodes[-1]
        f_survivors = serf.nodes[:-1]
        before = {"loadavg_1m": loadavg(), "cpu_pressure_10s": pressure("cpu")}

        first = "stack" if run % 2 == 0 else "serf"  # who is signalled first, alternating
        order = [s_victim, f_victim] if first == "stack" else [f_victim, s_victim]
        t0 = time.perf_counter()
        for victim in order:
            procs.kill(victim.child, signal.SIGKILL)
        gap_us = (time.perf_counter() - t0) * 1e6
        deadline = t0 + opts.timeout

        def victim_row(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
            return next((m for m in rows if str(m["id"]) == s_id), {})

        def stack_fetch(node: Node) -> Callable[[], Awaitable[Any]]:
            async def fetch() -> Mapping[str, Any]:
                return victim_row(await stack_members(session, stack, node))

            return fetch

        def serf_fetch(node: Node) -> Callable[[], Awaitable[Any]]:
            async def fetch() -> str | None:
                return (await serf.statuses(node)).get(f_victim.name)

            return fetch

        stack_conds: dict[str, Callable[[Any], bool]] = {
            "suspect": lambda m: m.get("ring") in ("suspect", "dead"),
            "dead": lambda m: m.get("ring") == "dead",
            "down": lambda m: m.get("status") == "down",
        }
        serf_conds: dict[str, Callable[[Any], bool]] = {"failed": lambda st: st == "failed"}
        watches = [watch(stack_fetch(n), stack_conds, t0, deadline) for n in s_survivors]
        watches += [watch(serf_fetch(n), serf_conds, t0, deadline) for n in f_survivors]
        seen = await asyncio.gather(*watches)
        s_seen = {n.name: s for n, s in zip(s_survivors, seen[: len(s_survivors)], strict=True)}
        f_seen = {n.name: s for n, s in zip(f_survivors, seen[len(s_survivors) :], strict=True)}
        after = {"loadavg_1m": loadavg(), "cpu_pressure_10s": pressure("cpu")}

        cli = await asyncio.to_thread(serf.cli_statuses, f_survivors[0])
        # The victims stayed dead, and nothing else was declared dead on the way.
        stack_final = await stack_members(session, stack, leader)
        return {
            "run": run + 1,
            "signalled_first": first,
            "kill_gap_us": round(gap_us, 1),
            "converged_s": {"stack": round(t_stack, 2), "serf": round(t_serf, 2)},
            "settle_s": round(opts.settle + jitter, 3),
            "load_at_kill": before,
            "load_after": after,
            "stack": {
                "victim": s_victim.name,
                "leader": leader.name,
                "suspect": first_and_all(s_seen, "suspect"),
                "dead": first_and_all(s_seen, "dead"),
                "down": first_and_all(s_seen, "down"),
                "per_survivor": s_seen,
                "others_not_alive": [
                    m["name"]
                    for m in stack_final
                    if str(m["id"]) != s_id and (m["ring"], m["status"]) != ("alive", "alive")
                ],
            },
            "serf": {
                "victim": f_victim.name,
                "failed": first_and_all(f_seen, "failed"),
                "per_survivor": f_seen,
                "cli_check": cli.get(f_victim.name, "absent"),
                "others_not_alive": [
                    name for name, st in cli.items() if name != f_victim.name and st != "alive"
                ],
            },
        }
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serf.aclose(), 5.0)
        procs.close()
        addrs.release()


# ================================================================ summary
def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def median(values: Sequence[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


SERIES: tuple[tuple[str, str, str, int], ...] = (
    # (label, system, key, 0 = first survivor / 1 = every survivor)
    ("stack ring dead, first", "stack", "dead", 0),
    ("stack ring dead, every", "stack", "dead", 1),
    ("stack status down, first", "stack", "down", 0),
    ("stack status down, every", "stack", "down", 1),
    ("stack ring suspect, first", "stack", "suspect", 0),
    ("serf failed, first", "serf", "failed", 0),
    ("serf failed, every", "serf", "failed", 1),
)


def ratios(run: Mapping[str, Any]) -> dict[str, float | None]:
    return {
        "first": ratio(run["stack"]["dead"][0], run["serf"]["failed"][0]),
        "every": ratio(run["stack"]["dead"][1], run["serf"]["failed"][1]),
    }


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    out = {label: median([r[system][key][i] for r in runs]) for label, system, key, i in SERIES}
    rs = [ratios(r) for r in runs]
    out["ratio stack/serf, first"] = median([r["first"] for r in rs])
    out["ratio stack/serf, every"] = median([r["every"] for r in rs])
    return out


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def markdown(result: Mapping[str, Any]) -> str:
    """The per-run table and the medians, as Markdown."""
    head = [
        "run",
        "stack dead first",
        "stack dead every",
        "stack down every",
        "serf failed first",
        "serf failed every",
        "ratio first",
        "ratio every",
        "load 1m",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["runs"]:
        rt = ratios(r)
        cells = [
            str(r["run"]),
            _f(r["stack"]["dead"][0]),
            _f(r["stack"]["dead"][1]),
            _f(r["stack"]["down"][1]),
            _f(r["serf"]["failed"][0]),
            _f(r["serf"]["failed"][1]),
            _f(rt["first"]),
            _f(rt["every"]),
            _f(r["load_at_kill"]["loadavg_1m"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    s = result["summary"]
    rt_first, rt_every = s["ratio stack/serf, first"], s["ratio stack/serf, every"]
    cells = [
        "**median**",
        _f(s["stack ring dead, first"]),
        _f(s["stack ring dead, every"]),
        _f(s["stack status down, every"]),
        _f(s["serf failed, first"]),
        _f(s["serf failed, every"]),
        _f(rt_first),
        _f(rt_every),
        "",
    ]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ================================================================ the whole run
async def run_benchmark(opts: Options, log: Log) -> dict[str, Any]:
    serf_bin, serf_ver = ensure_serf(log)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "command": "python -m bench.detect_bench " + " ".join(sys.argv[1:]),
        "options": {
            "runs": opts.runs,
            "members": opts.members,
            "settle_s": opts.settle,
            "poll_s": POLL,
        },
        "versions": {
            "stack": stack_version(),
            "python": sys.version.split()[0],
            "serf": serf_ver,
        },
        "runs": [],
    }
    cancel_on_signals()
    workdir = Path(tempfile.mkdtemp(prefix="stack-detect-"))
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            for i in range(opts.runs):
                r = await one_run(i, opts, serf_bin, workdir, session, log)
                result["runs"].append(r)
                rt = ratios(r)
                log(
                    f"run {i + 1}: stack dead first {_f(r['stack']['dead'][0])} s, "
                    f"every {_f(r['stack']['dead'][1])} s, down every "
                    f"{_f(r['stack']['down'][1])} s | serf failed first "
                    f"{_f(r['serf']['failed'][0])} s, every {_f(r['serf']['failed'][1])} s"
                    f" | ratio {_f(rt['first'])} / {_f(rt['every'])}"
                    f" | load {r['load_at_kill']['loadavg_1m']:.2f}"
                )
    finally:
        if opts.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result["summary"] = summarize(result["runs"])
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.detect_bench", description=__doc__)
    p.add_argument("--runs", type=int, default=5, help="fresh clusters, one kill each")
    p.add_argument("--members", type=int, default=5, help="members of each ring")
    p.add_argument("--settle", type=float, default=3.0, help="seconds between converged and kill")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for detection")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (node logs)")
    args = p.parse_args(argv)
    if args.members < 3:
        p.error("--members must be at least 3 (a leader, a victim and a witness)")
    opts = Options(args.runs, args.members, args.settle, args.timeout, args.keep)

    result = run_benchmark_main(run_benchmark(opts, log_stderr), log_stderr)
    if result is None:
        return 130
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result), end="")
    print(json.dumps({"summary": result["summary"], "elapsed_s": result["elapsed_s"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
