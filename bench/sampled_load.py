"""`bench.load`'s load generator, plus what a benchmark needs to check answers in
passing: every 200 answer is counted, the warm-up and the requests still in flight
at the end included (so a server-side count can be compared with it exactly), and
each client keeps a few of its requests with their answers.

The per-request work is `bench.load`'s plus one call, one counter and, for the
sampled few, one list append, so the client's cost stays the same as there.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.load import LoadSpec, LoadWorker, OnAnswer, drive

Sample = tuple[str, bytes, bytes]  # url, request body, response body


class Sampler:
    """`bench.load.Watcher`: counts every 200 answer (`ok_total`) and every other one
    (`errors_total`); each client keeps the request and answer of its 1st,
    (stride+1)th, ... 200 (at most `per_client`)."""

    def __init__(self, stride: int, per_client: int) -> None:
        self.stride, self.per_client = stride, per_client
        self.ok_total = self.errors_total = 0
        self.samples: list[Sample] = []

    def client(self) -> OnAnswer:
        stride, per_client, samples = self.stride, self.per_client, self.samples
        mine = kept = 0

        def on_answer(ok: bool, url: str, body: bytes, text: bytes) -> None:
            nonlocal mine, kept
            if ok:
                self.ok_total += 1
                if mine % stride == 0 and kept < per_client:
                    samples.append((url, body, text))
                    kept += 1
                mine += 1
            else:
                self.errors_total += 1

        return on_answer

    def figures(self) -> dict[str, Any]:
        return {
            "ok_total": self.ok_total,
            "errors_total": self.errors_total,
            "samples": self.samples,
        }


async def drive_sampled(spec: LoadSpec, stride: int, per_client: int) -> dict[str, Any]:
    """`bench.load`'s driver, plus a `Sampler`'s figures. Figures are over the
    measurement window, as `bench.load`'s."""
    res = await drive(spec, Sampler(stride, per_client))
    del res["mean_ms"]  # not among this driver's figures
    return res


def run_sampled(spec: LoadSpec, stride: int, per_client: int) -> dict[str, Any]:
    """Entry point inside the worker process."""
    return asyncio.run(drive_sampled(spec, stride, per_client))


class SamplingWorker(LoadWorker):
    """`bench.load.LoadWorker` running `run_sampled` instead of `run_load`."""

    async def run_sampled(self, spec: LoadSpec, stride: int, per_client: int) -> dict[str, Any]:
        return await self.call(run_sampled, spec, stride, per_client)
