"""Child processes for benchmarks: each in its own process group, all killed on exit.

Servers are started with ``start_new_session=True`` so a SIGKILL of the group takes
any helper they fork with them. ``ProcessSet.close`` runs from ``finally`` blocks:
SIGTERM to every group still alive, a bounded wait, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")

_SETPRIV = shutil.which("setpriv") is not None


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    started: float  # time.monotonic() just before Popen

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ProcessSet:
    children: list[Child] = field(default_factory=list)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        # If the benchmark itself is killed (SIGKILL, OOM), its servers die with it.
        guard = ["setpriv", "--pdeathsig", "KILL", "--"] if _SETPRIV else []
        started = time.monotonic()
        proc = subprocess.Popen(
            [*guard, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        child = Child(name, proc, log_path, log_file, started)
        self.children.append(child)
        return child

    def kill(self, child: Child, sig: int = signal.SIGKILL) -> None:
        """Signal the child's whole process group (it leads its own session)."""
        if child.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, sig)

    def stop(self, child: Child, timeout: float = 5.0) -> None:
        self.kill(child, signal.SIGTERM)
        try:
            child.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(child, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(5.0)
        # A group may outlive its leader (a forked helper): make sure it is gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        child.log_file.close()
        if child in self.children:
            self.children.remove(child)

    def close(self, timeout: float = 5.0) -> None:
        live = list(self.children)
        for child in live:
            self.kill(child, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(max(deadline - time.monotonic(), 0.01))
        for child in live:
            self.stop(child, timeout=0.1)


def rss_kib(pid: int) -> int | None:
    """Resident set size from /proc/PID/status (VmRSS), in KiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def ensure_free(host: str, ports: Sequence[int], udp: Sequence[int] = ()) -> None:
    """Fail early, with a clear message, if another process holds a port we need
    (TCP `ports`, UDP `udp`)."""
    checks = [(socket.SOCK_STREAM, "tcp", p) for p in ports]
    checks += [(socket.SOCK_DGRAM, "udp", p) for p in udp]
    for kind, proto, port in checks:
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as e:
                raise RuntimeError(f"{host}:{port}/{proto} is in use ({e.strerror})") from None


def check_loopback(host: str) -> None:
    if not host.startswith("127.") or host == "127.0.0.1":
        raise ValueError(f"benchmarks bind 127.0.0.x addresses other than 127.0.0.1: {host}")


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg_1m_at_start": loadavg(),
        "cpu_pressure_at_start": pressure("cpu"),
        "io_pressure_at_start": pressure("io"),
    }


def stack_version() -> str:
    """Commit of the stack under test, "+dirty" when stack/ differs from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=root,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "stack"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=root,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{rev}+dirty" if rev and dirty else rev


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle by the whole machine, summed over all CPUs (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def pressure(resource: str) -> float | None:
    """Pressure stall information: share of the last 10 s in which some runnable task
    waited for `resource` ("cpu", "io", "memory"), in percent; None if not available."""
    try:
        with open(f"/proc/pressure/{resource}") as f:
            for line in f:
                if line.startswith("some"):
                    return float(line.split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None
    return None


# ================================================================ a benchmark's command line
def log_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cancel_on_signals() -> None:
    """Inside the event loop: SIGTERM and SIGINT cancel the running task, so every
    `finally` (ProcessSet.close above all) runs."""
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    assert me is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, me.cancel)


def run_benchmark_main(main: Coroutine[Any, Any, T], log: Callable[[str], None]) -> T | None:
    """`asyncio.run(main)`, with SIGTERM unwinding through the `finally` blocks outside
    the event loop too; None when it was interrupted."""

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        return asyncio.run(main)
    except asyncio.CancelledError:
        log("interrupted; every process started was stopped")
        return None
