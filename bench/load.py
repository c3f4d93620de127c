"""The load generator: N keep-alive HTTP clients writing as fast as they are answered.

It runs in a worker process of its own (see `LoadWorker`), so its event loop shares
a GIL with nothing else, and its CPU time (getrusage) says whether the client, not
the servers, was the bottleneck. Requests are built before the clock starts: each
client cycles through a list of (url, body) pairs, so the only per-request work is
aiohttp's.

A request counts if it completes inside the measurement window, which starts after
the warm-up (the connections are opened then); its latency runs from just before
the request is sent to the end of reading the response.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import multiprocessing
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp


@dataclass(frozen=True, slots=True)
class LoadSpec:
    method: str
    requests: tuple[tuple[tuple[str, bytes], ...], ...]  # one cycle of (url, body) per client
    headers: tuple[tuple[str, str], ...]
    warmup: float
    duration: float
    timeout: float = 10.0

    @property
    def clients(self) -> int:
        return len(self.requests)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# Called after each answer with (ok, url, request body, response body); ok is a 200.
OnAnswer = Callable[[bool, str, bytes, bytes], None]


class Watcher(Protocol):
    """What the driver can be given to see every answer (warm-up and tail included)."""

    def client(self) -> OnAnswer:
        """A new client's hook (clients keep their own state)."""
        ...

    def figures(self) -> dict[str, Any]:
        """Added to the result, after `error_sample`."""
        ...


async def drive(spec: LoadSpec, watcher: Watcher | None = None) -> dict[str, Any]:
    """Run the load in this process; `watcher`, if any, sees every answer."""
    perf = time.perf_counter
    latencies: list[float] = []
    errors = 0
    error_sample = ""
    connector = aiohttp.TCPConnector(limit=spec.clients, limit_per_host=spec.clients)
    timeout = aiohttp.ClientTimeout(total=spec.timeout)
    cpu: dict[str, float] = {}
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=dict(spec.headers)
    ) as session:
        begin = perf()
        start = begin + spec.warmup
        end = start + spec.duration

        async def client(cycle: tuple[tuple[str, bytes], ...]) -> None:
            nonlocal errors, error_sample
            n, i = len(cycle), 0
            on_answer = watcher.client() if watcher is not None else None
            request = session.request
            method = spec.method
            while True:
                url, body = cycle[i % n]
                i += 1
                t0 = perf()
                if t0 >= end:
                    return
                ok, text = False, b""
                try:
                    async with request(method, url, data=body) as resp:
                        text = await resp.read()
                        ok = resp.status == 200
                        if not ok and not error_sample:
                            error_sample = f"HTTP {resp.status}: {text[:200]!r}"
                except (aiohttp.ClientError, TimeoutError, OSError) as e:
                    if not error_sample:
                        error_sample = f"{type(e).__name__}: {e}"
                    await asyncio.sleep(0.01)  # a refused connection must not spin
                t1 = perf()
                if on_answer is not None:
                    on_answer(ok, url, body, text)
                if start <= t1 < end:
                    if ok:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1

        async def cpu_clock() -> None:
            await asyncio.sleep(max(start - perf(), 0))
            cpu["start"], cpu["start_wall"] = _cpu_seconds(), perf()
            await asyncio.sleep(max(end - perf(), 0))
            cpu["end"], cpu["end_wall"] = _cpu_seconds(), perf()

        await asyncio.gather(cpu_clock(), *(client(c) for c in spec.requests))
    latencies.sort()
    ops = len(latencies)
    window = cpu["end_wall"] - cpu["start_wall"]
    client_cpu = cpu["end"] - cpu["start"]
    ms = 1000.0
    return {
        "clients": spec.clients,
        "ops": ops,
        "errors": errors,
        "error_sample": error_sample,
        **(watcher.figures() if watcher is not None else {}),
        "window_s": spec.duration,
        "throughput": ops / spec.duration,
        "p50_ms": percentile(latencies, 50) * ms,
        "p90_ms": percentile(latencies, 90) * ms,
        "p99_ms": percentile(latencies, 99) * ms,
        "max_ms": (latencies[-1] if latencies else float("nan")) * ms,
        "mean_ms": (sum(latencies) / ops if ops else float("nan")) * ms,
        "client_cpu_s": client_cpu,
        "client_cpu_pct": 100.0 * client_cpu / window if window > 0 else float("nan"),
    }


def run_load(spec: LoadSpec) -> dict[str, Any]:
    """Entry point inside the worker process."""
    return asyncio.run(drive(spec))


def _warm() -> int:
    return 0


def _die_with_parent() -> None:
    """Worker initializer: if the benchmark is killed outright, take this process along."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LoadWorker:
    """One long-lived worker process (spawned, so no state is inherited from the parent)."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"), initializer=_die_with_parent
        )
        self._pool.submit(_warm).result(timeout=60)  # pay the interpreter start-up now

    @property
    def pid(self) -> int | None:
        procs = list(getattr(self._pool, "_processes", {}).values())
        return procs[0].pid if procs else None

    async def run(self, spec: LoadSpec) -> dict[str, Any]:
        return await self.call(run_load, spec)

    async def call(
        self, entry: Callable[..., dict[str, Any]], spec: LoadSpec, *args: Any
    ) -> dict[str, Any]:
        """`entry(spec, *args)` in the worker process (a module-level function)."""
        fut = self._pool.submit(entry, spec, *args)
        wrapped = asyncio.wrap_future(fut)
        result: dict[str, Any] = await asyncio.wait_for(
            wrapped, spec.warmup + spec.duration + spec.timeout + 30
        )
        return result

    def close(self) -> None:
        procs = list(getattr(self._pool, "_processes", {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:  # a worker stuck in a run must not outlive the benchmark
            if p.is_alive():
                p.terminate()
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
