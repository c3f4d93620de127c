"""`bench.load`'s load generator, plus what a benchmark needs to check answers in
passing: every 200 answer is counted, the warm-up and the requests still in flight
at the end included (so a server-side count can be compared with it exactly), and
each client keeps a few of its requests with their answers.

The per-request work is `bench.load`'s plus one counter and, for the sampled few,
one list append, so the client's cost stays the same as there.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from bench.load import LoadSpec, LoadWorker, percentile

Sample = tuple[str, bytes, bytes]  # url, request body, response body


async def drive_sampled(spec: LoadSpec, stride: int, per_client: int) -> dict[str, Any]:
    """`bench.load`'s driver, plus: every 200 answer is counted (`ok_total`, the
    warm-up and the requests still in flight at the end included) and each client
    keeps the request and answer of its 1st, (stride+1)th, ... 200 (at most
    `per_client`). Figures are over the measurement window, as `bench.load`'s."""
    perf = time.perf_counter
    latencies: list[float] = []
    errors = errors_total = ok_total = 0
    error_sample = ""
    samples: list[Sample] = []
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
            nonlocal errors, errors_total, ok_total, error_sample
            n, i, mine, kept = len(cycle), 0, 0, 0
            request = session.request
            method = spec.method
            while True:
                url, body = cycle[i % n]
                i += 1
                t0 = perf()
                if t0 >= end:
                    return
                ok = False
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
                if ok:
                    ok_total += 1
                    if mine % stride == 0 and kept < per_client:
                        samples.append((url, body, text))
                        kept += 1
                    mine += 1
                else:
                    errors_total += 1
                if start <= t1 < end:
                    if ok:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1

        async def cpu_clock() -> None:
            await asyncio.sleep(max(start - perf(), 0))
            cpu["start"], cpu["start_wall"] = time.process_time(), perf()
            await asyncio.sleep(max(end - perf(), 0))
            cpu["end"], cpu["end_wall"] = time.process_time(), perf()

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
        "ok_total": ok_total,
        "errors_total": errors_total,
        "samples": samples,
        "window_s": spec.duration,
        "throughput": ops / spec.duration,
        "p50_ms": percentile(latencies, 50) * ms,
        "p90_ms": percentile(latencies, 90) * ms,
        "p99_ms": percentile(latencies, 99) * ms,
        "max_ms": (latencies[-1] if latencies else float("nan")) * ms,
        "client_cpu_s": client_cpu,
        "client_cpu_pct": 100.0 * client_cpu / window if window > 0 else float("nan"),
    }


def run_sampled(spec: LoadSpec, stride: int, per_client: int) -> dict[str, Any]:
    """Entry point inside the worker process."""
    return asyncio.run(drive_sampled(spec, stride, per_client))


class SamplingWorker(LoadWorker):
    """`bench.load.LoadWorker` running `run_sampled` instead of `run_load`."""

    async def run_sampled(self, spec: LoadSpec, stride: int, per_client: int) -> dict[str, Any]:
        fut = self._pool.submit(run_sampled, spec, stride, per_client)
        result: dict[str, Any] = await asyncio.wait_for(
            asyncio.wrap_future(fut), spec.warmup + spec.duration + spec.timeout + 30
        )
        return result
