"""Real `stack up` processes for the node tests: addresses, processes, HTTP, waiting.

Every test builds a `Harness(request, tmp_path)`. It hands out 127.0.0.x addresses
that no other test uses (per xdist worker and locked across concurrent sessions,
never 127.0.0.1), gives
each node its own data directory and XDG_CONFIG_HOME under tmp_path, starts each
process in its own session with stdout/stderr in files, and in a finalizer
SIGKILLs every process group and prints the tail of every log (pytest shows that
output only when the test failed).

Plain synchronous code: `http.client` for HTTP (no proxies, no new dependency),
threads where a test needs concurrency, and `wait_until` for every wait, always
bounded in time.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import pytest

T = TypeVar("T")

HTTP_PORT = 17480
RPC_PORT = 17481
GOSSIP_PORT = 17482
VAULT_PORT = 17483

# Generous liveness bounds: the test machine is a loaded 2-core box.
FORM_TIMEOUT = 30.0
LEADER_TIMEOUT = 20.0
REQUEST_TIMEOUT = 15.0

# ---------------------------------------------------------------- addresses
# Worker w of pytest-xdist starts at 127.0.0.(FIRST + BLOCK*w) (workers past the last
# block that fits start at 127.0.w.FIRST) and hands addresses out in order, never
# twice, so no two tests of one session share an address, even under -n. Each
# address is also claimed with an flock held for the life of the worker process, so
# two pytest sessions running at once on this machine never share one either; an
# address whose ports something else still holds (a leftover process) is skipped.
FIRST = 100
BLOCK = 50
LOCK_DIR = Path(tempfile.gettempdir()) / "stack-node-test-addresses"
_claimed: dict[str, int] = {}  # address -> fd holding its lock (never closed)
_tried: set[str] = set()


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = worker.removeprefix("gw")
    return int(digits) if digits.isdigit() else 0


def _candidates(worker: int) -> Iterator[str]:
    if FIRST + BLOCK * (worker + 1) <= 255:
        yield from (f"127.0.0.{FIRST + BLOCK * worker + k}" for k in range(BLOCK))
    else:
        yield from (f"127.0.{worker}.{FIRST + k}" for k in range(BLOCK))
    # Then anything else in 127.0.0.100-254 and a few more /24s (all loopback).
    yield from (f"127.0.0.{i}" for i in range(FIRST, 255))
    yield from (f"127.0.{b}.{i}" for b in range(100, 104) for i in range(2, 255))


def _ports_free(addr: str) -> bool:
    for port in (HTTP_PORT, RPC_PORT, GOSSIP_PORT, VAULT_PORT):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((addr, port))
            except OSError:
                return False
    return True


def _claim(addr: str) -> bool:
    LOCK_DIR.mkdir(exist_ok=True)
    fd = os.open(LOCK_DIR / addr, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _claimed[addr] = fd
    return _ports_free(addr)


def allocate_addresses(n: int) -> list[str]:
    """n loopback addresses (never 127.0.0.1) that no other test gets."""
    out: list[str] = []
    for addr in _candidates(_worker_index()):
        if addr in _tried:
            continue
        _tried.add(addr)
        if _claim(addr):
            out.append(addr)
            if len(out) == n:
                return out
    raise RuntimeError("no free loopback test addresses left")


# ---------------------------------------------------------------- HTTP
@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def index(self) -> int:
        return int(self.headers.get("x-stack-index", "0"))


def http_request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> Response:
    """One request on a fresh connection; raises OSError if the node cannot be reached
    or does not answer within `timeout`."""
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["X-Stack-Token"] = token
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    except http.client.HTTPException as e:
        raise OSError(f"{method} {path}: {type(e).__name__}: {e}") from None
    finally:
        conn.close()


# ---------------------------------------------------------------- waiting
def wait_until(
    fn: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> T:
    """Call fn until it returns something truthy (returned) or timeout passes (the
    test fails, naming `what` and the last error or value)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = value
        except (OSError, ValueError, KeyError, AssertionError) as e:
            last = e
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


# ---------------------------------------------------------------- nodes
@dataclass
class Node:
    harness: Harness
    name: str
    addr: str
    args: list[str]
    env: dict[str, str]
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0
    logs: list[tuple[Path, Path]] = field(default_factory=list)
    _id: str = ""

    # ------------------------------------------------------------ process
    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def config_home(self) -> Path:
        return self.dir / "xdg"

    @property
    def rpc(self) -> str:
        return f"{self.addr}:{RPC_PORT}"

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "stack.cli", "up",
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--bind", self.addr,
            "--http-port", str(HTTP_PORT),
            "--rpc-port", str(RPC_PORT),
            "--gossip-port", str(GOSSIP_PORT),
            "--vault-port", str(VAULT_PORT),
            *self.args,
        ]  # fmt: skip

    def start(self) -> Node:
        """Start (or restart: same flags, same data dir) the process."""
        assert not self.running, f"{self.name} is already running"
        self.runs += 1
        out = self.dir / f"run{self.runs}.stdout"
        err = self.dir / f"run{self.runs}.stderr"
        self.logs.append((out, err))
        env = {k: v for k, v in os.environ.items() if not k.startswith("STACK_")}
        env.update(self.env)
        env["XDG_CONFIG_HOME"] = str(self.config_home)
        env["XDG_DATA_HOME"] = str(self.dir / "xdg-data")
        env["PYTHONUNBUFFERED"] = "1"
        with out.open("wb") as fo, err.open("wb") as fe:
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=fo,
                stderr=fe,
                cwd=self.dir,
                env=env,
                start_new_session=True,
            )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        """Send sig to the node's whole process group."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is None:
            return
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not exit within {timeout:.0f}s")

    def stdout(self, run: int | None = None) -> str:
        out, _ = self.logs[(run or self.runs) - 1]
        return out.read_text(errors="replace") if out.exists() else ""

    def stderr(self, run: int | None = None) -> str:
        _, err = self.logs[(run or self.runs) - 1]
        return err.read_text(errors="replace") if err.exists() else ""

    def printed(self, prefix: str) -> list[str]:
        """What follows `prefix` on stdout lines of every run."""
        out: list[str] = []
        for r in range(1, self.runs + 1):
            for line in self.stdout(r).splitlines():
                if line.startswith(prefix):
                    out.append(line[len(prefix) :].strip())
        return out

    def printed_root_token(self) -> str | None:
        """The token from a `root token: ...` line on stdout of any run, if any."""
        for run in range(1, self.runs + 1):
            for line in self.stdout(run).splitlines():
                if line.startswith("root token:"):
                    return line.split(":", 1)[1].strip()
        return None

    # ------------------------------------------------------------ HTTP
    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        token: str | None = None,
        auth: bool = True,
        headers: dict[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> Response:
        """HTTP to this node, with the cluster's root token unless auth=False or an
        explicit token is given."""
        if token is None and auth:
            token = self.harness.token
        return http_request(
            self.addr, HTTP_PORT, method, path, body, token=token, headers=headers,
            timeout=timeout,
        )  # fmt: skip

    def status(self, timeout: float = 3.0) -> dict[str, Any]:
        resp = self.request("GET", "/v1/status", auth=False, timeout=timeout)
        if resp.status != 200:
            raise OSError(f"{self.name}: /v1/status answered {resp.status}")
        st: dict[str, Any] = resp.json()
        self._id = st["id"]
        return st

    @property
    def id(self) -> str:
        if not self._id:
            self.status()
        return self._id

    def peers(self) -> list[dict[str, Any]]:
        resp = self.request("GET", "/v1/operator/raft/peers")
        assert resp.status == 200, (self.name, resp)
        peers: list[dict[str, Any]] = resp.json()
        return peers

    def put(self, key: str, value: bytes, timeout: float = REQUEST_TIMEOUT) -> int:
        """PUT that must succeed; returns the write's index."""
        resp = self.request("PUT", f"/v1/kv/{key}", value, timeout=timeout)
        assert resp.status == 200, f"PUT {key} on {self.name}: {resp.status} {resp.body!r}"
        return int(resp.json()["index"])

    def get(self, key: str, *, stale: bool = False, timeout: float = REQUEST_TIMEOUT) -> Response:
        return self.request("GET", f"/v1/kv/{key}" + ("?stale" if stale else ""), timeout=timeout)

    def wait_up(self, timeout: float = FORM_TIMEOUT) -> dict[str, Any]:
        """Until the HTTP API answers /v1/status (the process must stay alive)."""

        def up() -> dict[str, Any]:
            if not self.running:
                pytest.fail(f"{self.name} exited with {self.proc and self.proc.returncode}")
            return self.status()

        return wait_until(up, timeout, f"{self.name} to serve /v1/status")

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.addr}>"


# ---------------------------------------------------------------- the harness
class Harness:
    """Nodes of one test, cleaned up whatever happens."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.nodes: list[Node] = []
        self.token: str | None = None
        self.join_token: str | None = None
        # --bootstrap-expect servers share a secret that becomes the join secret.
        self.shared_secret = "shared-test-secret-" + os.urandom(6).hex()
        self.env: dict[str, str] = {}
        self._addrs: list[str] = []
        request.addfinalizer(self._finalize)

    def node(
        self,
        name: str,
        *,
        join: Sequence[Node] = (),
        retry_join: Sequence[str] = (),
        bootstrap_expect: int | None = None,
        extra: Sequence[str] = (),
        addr: str | None = None,
    ) -> Node:
        """A node (not started) with its own address, data dir and config home."""
        if addr is None:
            addr = allocate_addresses(1)[0]
        args: list[str] = []
        for other in join:
            args += ["--join", other.rpc]
        if join and "--token" not in extra:
            assert self.join_token, "bootstrap a cluster before joining it"
            args += ["--token", self.join_token]
        for target in retry_join:
            args += ["--retry-join", target]
        if bootstrap_expect is not None:
            args += ["--bootstrap-expect", str(bootstrap_expect)]
            if "--token" not in extra:
                args += ["--token", self.shared_secret]
        args += list(extra)
        d = self.tmp / name
        d.mkdir(parents=True)
        n = Node(self, name, addr, args, dict(self.env), d)
        self.nodes.append(n)
        return n

    # ------------------------------------------------------------ clusters
    def bootstrap(self, name: str = "n1", *, extra: Sequence[str] = ()) -> Node:
        """Start a single-node cluster, wait for its leader and root token."""
        n1 = self.node(name, extra=extra).start()
        n1.wait_up()
        token_file = n1.config_home / "stack" / "root-token"
        self.token = wait_until(
            lambda: token_file.read_text().strip() if token_file.exists() else None,
            FORM_TIMEOUT,
            "the root token file",
        )
        assert n1.printed_root_token() == self.token
        self.join_token = n1.printed("join token:")[0]
        wait_until(lambda: n1.status()["role"] == "leader", LEADER_TIMEOUT, "n1 to lead")
        # The root token is usable once its Raft entry is applied.
        wait_until(lambda: n1.request("GET", "/v1/members").status == 200, FORM_TIMEOUT,
                   "the root token to work")  # fmt: skip
        return n1

    def join(self, name: str, via: Node) -> Node:
        return self.node(name, join=[via]).start()

    def three_nodes(self, *, extra: Sequence[str] = ()) -> list[Node]:
        """Bootstrap n1, join n2 and n3 (each with `extra` flags), wait until all three
        are voters."""
        n1 = self.bootstrap(extra=extra)
        n2 = self.node("n2", join=[n1], extra=extra).start()
        n3 = self.node("n3", join=[n1], extra=extra).start()
        nodes = [n1, n2, n3]
        wait_voters(nodes, nodes)
        # Formed means usable: every server has its seal share and is unsealed.
        wait_until(lambda: all(not n.status()["sealed"] for n in nodes), FORM_TIMEOUT,
                   "all three to unseal")  # fmt: skip
        return nodes

    # ------------------------------------------------------------ cleanup
    def _finalize(self) -> None:
        for n in self.nodes:
            if n.proc is not None:
                n.kill()
        for n in self.nodes:
            for run, (out, err) in enumerate(n.logs, 1):
                for label, path in (("stdout", out), ("stderr", err)):
                    text = path.read_text(errors="replace") if path.exists() else ""
                    lines = text.splitlines()[-120:]
                    print(f"----- {n.name} {n.addr} run {run} {label} ({path}) -----")
                    print("\n".join(lines))


# ---------------------------------------------------------------- cluster helpers
def statuses(nodes: Iterable[Node], timeout: float = 3.0) -> dict[str, dict[str, Any] | None]:
    """name -> /v1/status, or None where the node did not answer."""
    out: dict[str, dict[str, Any] | None] = {}
    for n in nodes:
        try:
            out[n.name] = n.status(timeout)
        except OSError:
            out[n.name] = None
    return out


def agreed_leader(nodes: Sequence[Node]) -> Node | None:
    """The node every one of `nodes` names as leader (one of them, claiming the role,
    all in the same term), or None."""
    sts = statuses(nodes)
    if any(st is None for st in sts.values()):
        return None
    leaders = {st["leader"] for st in sts.values() if st}
    terms = {st["term"] for st in sts.values() if st}
    if len(leaders) != 1 or len(terms) != 1 or "" in leaders:
        return None
    lid = leaders.pop()
    for n in nodes:
        st = sts[n.name]
        if st and st["id"] == lid and st["role"] == "leader":
            return n
    return None


def wait_leader(nodes: Sequence[Node], timeout: float = LEADER_TIMEOUT) -> Node:
    return wait_until(lambda: agreed_leader(nodes), timeout,
                      f"one leader agreed by {[n.name for n in nodes]}")  # fmt: skip


def wait_voters(nodes: Sequence[Node], voters: Sequence[Node], timeout: float = FORM_TIMEOUT,
                *, learners: Sequence[Node] = ()) -> None:  # fmt: skip
    """Until every node in `nodes` lists exactly `voters` as the Raft voters (and
    `learners` as the learners)."""
    want = {v.name for v in voters}

    def ok() -> bool:
        for n in nodes:
            peers = n.peers()
            have = {p["name"] for p in peers if p["raft"] == "voter"}
            if have != want or len(peers) != len(want) + len(learners):
                raise AssertionError(f"{n.name} sees peers {peers}")
        return True

    wait_until(ok, timeout, f"voters {sorted(want)} on {[n.name for n in nodes]}", 0.2)


def wait_caught_up(node: Node, index: int, timeout: float = FORM_TIMEOUT) -> None:
    wait_until(lambda: node.status()["applied_index"] >= index, timeout,
               f"{node.name} to apply index {index}")  # fmt: skip


def assert_values(node: Node, expected: dict[str, bytes], *, stale: bool = False) -> None:
    """Every key reads back from `node` with its value."""
    for key, value in expected.items():
        resp = node.get(key, stale=stale)
        assert resp.status == 200, f"GET {key} on {node.name}: {resp.status} {resp.body!r}"
        assert resp.body == value, f"GET {key} on {node.name}: {resp.body!r} != {value!r}"


def kv_dump(node: Node, prefix: str = "", *, stale: bool = False) -> dict[str, bytes]:
    """Every key under prefix (one recursive GET), key -> value."""
    import base64

    q = "?recurse" + ("&stale" if stale else "")
    resp = node.request("GET", f"/v1/kv/{prefix}{q}")
    assert resp.status == 200, f"recurse {prefix!r} on {node.name}: {resp.status} {resp.body!r}"
    return {e["key"]: base64.b64decode(e["value"]) for e in resp.json()}


# ---------------------------------------------------------------- load
class Writers:
    """Client threads writing distinct keys, round-robin over `targets`, each key once
    with a value derived from it; `acked` holds the writes answered 200."""

    def __init__(self, targets: Sequence[Node], prefix: str, threads: int = 4) -> None:
        import threading

        self.targets = list(targets)
        self.prefix = prefix
        self.acked: dict[str, bytes] = {}
        self.attempted: dict[str, bytes] = {}
        self.failures: dict[str, int] = {}
        self.last_ack = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)
        ]

    @staticmethod
    def value_for(key: str) -> bytes:
        return f"value of {key}".encode()

    def start(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = REQUEST_TIMEOUT + 10) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
            assert not t.is_alive(), "a writer thread is stuck"

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def _run(self, t: int) -> None:
        i = 0
        while not self._stop.is_set():
            key = f"{self.prefix}/{t}/{i:06d}"
            value = self.value_for(key)
            node = self.targets[(t + i) % len(self.targets)]
            with self._lock:
                self.attempted[key] = value
            try:
                resp = node.request("PUT", f"/v1/kv/{key}", value)
                outcome = str(resp.status)
            except OSError as e:
                resp, outcome = None, type(e).__name__
            with self._lock:
                if resp is not None and resp.status == 200:
                    self.acked[key] = value
                    self.last_ack = time.monotonic()
                else:
                    self.failures[outcome] = self.failures.get(outcome, 0) + 1
            if resp is None or resp.status != 200:
                time.sleep(0.05)  # a dead or leaderless target answers at once
            i += 1

    def check(self, node: Node, *, stale: bool = False) -> dict[str, bytes]:
        """Every acknowledged write reads back from `node` with its value, and every
        key it has under the prefix is one we attempted, with that value."""
        have = kv_dump(node, self.prefix + "/", stale=stale)
        missing = sorted(k for k in self.acked if k not in have)
        assert not missing, f"{node.name} lost {len(missing)} acknowledged writes: {missing[:5]}"
        wrong = sorted(k for k, v in have.items() if self.attempted.get(k) != v)
        assert not wrong, f"{node.name} has keys nobody wrote (or wrong values): {wrong[:5]}"
        return have


# ---------------------------------------------------------------- network namespaces
@dataclass
class NetnsNode(Node):
    """A node whose process runs inside a network namespace (`ip netns exec`, which
    execs, so the process group is still the node's)."""

    netns: str = ""

    def argv(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *super().argv()]


class Netns:
    """A private network namespace with loopback up and one non-loopback address,
    10.a.b.2/24, on a veth pair (or a dummy interface) that lives entirely inside it,
    so nothing is visible from, or sent to, the host's networks. The name carries the
    pid and a random suffix; a finalizer kills the processes started in it and
    deletes it. Skips the test if not root or `ip netns` is unavailable."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        import secrets
        import shutil

        if os.geteuid() != 0:
            pytest.skip("network namespaces need root (`ip netns add`)")
        if shutil.which("ip") is None:
            pytest.skip("the `ip` command is missing (Debian package iproute2)")
        self.name = f"stack-test-{os.getpid()}-{secrets.token_hex(4)}"
        # A /24 per worker and pid, so parallel runs never share one (each namespace is
        # private anyway; this only keeps addresses distinct in logs).
        self.subnet = f"10.{64 + _worker_index() % 64}.{os.getpid() % 250 + 1}"
        self.addr = f"{self.subnet}.2"
        self.nodes: list[Node] = []
        created = subprocess.run(["ip", "netns", "add", self.name], capture_output=True)
        if created.returncode != 0:
            pytest.skip(f"`ip netns add` is unavailable here: {created.stderr.decode().strip()}")
        request.addfinalizer(self.delete)
        self.ip("link", "set", "lo", "up")
        # Both ends of the veth pair stay inside; a dummy interface where there is no
        # veth (this machine kind has no dummy module, hence veth first).
        veth = self.run(["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        if veth.returncode == 0:
            dev = "v0"
            self.ip("link", "set", "v1", "up")
        else:
            dev = "d0"
            self.ip("link", "add", dev, "type", "dummy")
        self.ip("addr", "add", f"{self.addr}/24", "dev", dev)
        self.ip("link", "set", dev, "up")

    def ip(self, *args: str) -> None:
        done = self.run(["ip", *args], timeout=10)
        assert done.returncode == 0, f"ip {' '.join(args)} in {self.name}: {done.stderr!r}"

    def run(
        self, argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[bytes]:
        """Run argv inside the namespace, output captured; killed after `timeout`."""
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=timeout,
        )

    def node(self, h: Harness, name: str, *, extra: Sequence[str] = ()) -> NetnsNode:
        """Like `h.node`, at this namespace's address, run inside it (not started);
        the harness prints its logs at the end."""
        d = h.tmp / name
        d.mkdir(parents=True)
        n = NetnsNode(h, name, self.addr, list(extra), dict(h.env), d, netns=self.name)
        h.nodes.append(n)
        self.nodes.append(n)
        return n

    def delete(self) -> None:
        for n in self.nodes:
            n.kill()
        # Anything else still in the namespace is ours (it is uniquely named).
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


# ---------------------------------------------------------------- the CLI
def run_cli(node: Node, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`python -m stack.cli <args> --addr http://<node>` as the node's operator would run
    it: the node's XDG_CONFIG_HOME (so the CLI finds its root token), no STACK_* vars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACK_")}
    env["XDG_CONFIG_HOME"] = str(node.config_home)
    return subprocess.run(
        [sys.executable, "-m", "stack.cli", *args, "--addr", f"http://{node.addr}:{HTTP_PORT}"],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=node.dir,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


# ---------------------------------------------------------------- the RPC port, raw
# Frame kinds (stack.net.rpc.Kind) and the frame layout, written out independently.
RAFT, REQUEST, RESPONSE, HELLO = 1, 2, 3, 4


def rpc_frame(kind: int, payload: bytes, version: int = 1) -> bytes:
    return (len(payload) + 2).to_bytes(4, "big") + bytes((version, kind)) + payload


def pack(obj: object) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def read_frames(data: bytes) -> list[tuple[int, Any]]:
    """The complete frames in data, (kind, unpacked payload); a Raft payload is left
    as bytes."""
    out: list[tuple[int, Any]] = []
    while len(data) >= 6 and len(data) >= 4 + int.from_bytes(data[:4], "big"):
        length = int.from_bytes(data[:4], "big")
        body, data = data[4 : 4 + length], data[4 + length :]
        payload = body[2:]
        out.append((body[1], payload if body[1] == RAFT else msgpack.unpackb(payload, raw=False)))
    return out


def tls_client(tls_dir: Path | None = None) -> ssl.SSLContext:
    """A client context for a node's RPC port that does not check the server (as
    stack.net.tls.probe_context); given a node's `tls/` directory, it presents that
    node's certificate chain and key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if tls_dir is not None:
        ctx.load_cert_chain(tls_dir / "node.crt", tls_dir / "node.key")
    return ctx


class RpcConn:
    """One raw connection to a node's RPC port, plaintext or TLS. TLS runs over memory
    BIOs, so a test can send close_notify (half-close) and still read what comes back.
    The constructor raises ssl.SSLError (or OSError) if the handshake fails."""

    def __init__(self, addr: str, ctx: ssl.SSLContext | None, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((addr, RPC_PORT), timeout=timeout)
        self.data = b""  # everything received (decrypted), in order
        self.closed = False  # the server closed the connection (or aborted TLS)
        self.tls: ssl.SSLObject | None = None
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        if ctx is None:
            return
        try:
            self.tls = ctx.wrap_bio(self._in, self._out, server_side=False)
            while True:
                try:
                    self.tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush()
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        raise ssl.SSLEOFError("closed during the TLS handshake") from None
                    self._in.write(chunk)
            self._flush()
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self) -> RpcConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _flush(self) -> None:
        pending = self._out.read()
        if pending:
            self.sock.sendall(pending)

    def send(self, data: bytes) -> None:
        """Send (a broken pipe marks the connection closed rather than raising)."""
        try:
            if self.tls is None:
                self.sock.sendall(data)
                return
            view = memoryview(data)
            while view:
                view = view[self.tls.write(view) :]
            self._flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.closed = True

    def close_write(self) -> None:
        """End our side: close_notify under TLS, then a TCP half-close."""
        try:
            if self.tls is not None:
                with contextlib.suppress(ssl.SSLWantReadError):
                    self.tls.unwrap()
                self._flush()
            self.sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.closed = True

    def _drain_tls(self) -> None:
        assert self.tls is not None
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLError:  # close_notify, an alert, or EOF without close_notify
                self.closed = True
                return
            if not chunk:
                self.closed = True
                return
            self.data += chunk

    def read(self, frames: int = 0, timeout: float = 10.0) -> list[tuple[int, Any]]:
        """Read until the server closes, `timeout` passes or (if given) that many frames
        arrived in all; returns every complete frame received so far."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            if frames and len(read_frames(self.data)) >= frames:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                self.closed = True
                break
            if self.tls is None:
                self.data += chunk
                self.closed = not chunk
                continue
            if chunk:
                self._in.write(chunk)
            else:
                self._in.write_eof()
            self._drain_tls()
            with contextlib.suppress(OSError):
                self._flush()
        return read_frames(self.data)


def gossip_keys(node: Node) -> list[bytes]:
    """The node's gossip keyring in plaintext, asked for as a member would (mutual TLS
    with the node's own certificate, RPC `gossip.keyring`): the only way to see it."""
    st = node.status()
    with RpcConn(node.addr, tls_client(node.data_dir / "tls")) as c:
        c.send(rpc_frame(HELLO, pack([int(st["id"]), st["cluster_id"]]))
               + rpc_frame(REQUEST, pack([1, "gossip.keyring", None])))  # fmt: skip
        frames = c.read(frames=2)
    [(_kind, (rid, ok, body))] = [f for f in frames if f[0] == RESPONSE]
    assert ok is True and rid == 1, frames
    keys = [bytes(k) for k in body["keys"]]
    assert keys and all(len(k) == 32 for k in keys)
    return keys


def rpc_exchange(addr: str, data: bytes, ctx: ssl.SSLContext | None, *,
                 half_close: bool = False, frames: int = 0,
                 timeout: float = 10.0) -> tuple[list[tuple[int, Any]], RpcConn]:  # fmt: skip
    """Connect, send data (then half-close if asked), read as RpcConn.read; returns the
    frames and the (closed) connection, for its .data and .closed."""
    with RpcConn(addr, ctx, timeout) as conn:
        conn.send(data)
        if half_close:
            conn.close_write()
        return conn.read(frames, timeout), conn
