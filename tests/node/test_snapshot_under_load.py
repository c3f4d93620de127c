"""A follower that fell behind a compaction catches up by a ~10 MB snapshot while a
writer keeps going, and nobody notices: the term never moves.

Three real `stack up` processes with STACK_SNAPSHOT_THRESHOLD low and ~10 MB of KV
data. One follower goes away (SIGKILL, later restarted from its data dir; or
SIGSTOP, later SIGCONT), writes go on until the leader has compacted past
everything that follower has, then it comes back and must install the leader's
snapshot (its /v1/status stats.snapshots_installed goes up) while a writer keeps
writing at a moderate rate. Threads poll every node's /v1/status every 50 ms the
whole time; the test fails if any node ever reports a term other than the one
the cluster had before the fill, or if an acknowledged write is not readable
(linearizably) on the caught-up follower. It prints how long the install took
and the slowest /v1/status answer of each node (a blocked event loop shows there).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    REQUEST_TIMEOUT,
    Harness,
    Node,
    kv_dump,
    wait_leader,
    wait_until,
)

pytestmark = pytest.mark.slow

SNAPSHOT_THRESHOLD = 100  # entries between compactions
FILL_BYTES = 10 << 20
FILL_VALUE = 64 << 10  # 160 PUTs of 64 KiB
WRITE_RATE = 25.0  # writes per second while the follower is away and catching up
WINDOW = 60.0  # the term is watched for at most this long
MAX_INFLIGHT = 256  # RaftConfig.max_inflight_msgs


@dataclass
class Sample:
    t: float
    name: str
    status: dict[str, Any] | None
    took: float  # the /v1/status round trip: a stalled event loop shows here


@dataclass
class Monitor:
    """Polls /v1/status of every node every `interval` seconds, one thread per node
    (a stopped node must not slow down the sampling of the others)."""

    nodes: list[Node]
    interval: float = 0.05
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Monitor:
        for n in self.nodes:
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _run(self, node: Node) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                st: dict[str, Any] | None = node.status(timeout=1.0)
            except OSError:
                st = None
            self.samples.append(Sample(t0, node.name, st, time.monotonic() - t0))
            self._stop.wait(self.interval)

    def timeline(self, t0: float) -> str:
        """One line per node whenever its term, role, leader, snapshot or
        installed-snapshot count changed, plus its applied index then."""
        lines, last = [], {}
        for s in sorted(self.samples, key=lambda s: s.t):
            st = s.status
            key = (
                None
                if st is None
                else (st["term"], st["role"], st["leader"], st["snapshot_index"],
                      st["stats"]["snapshots_installed"])
            )  # fmt: skip
            if last.get(s.name, 0) != key:
                last[s.name] = key
                where = "down" if st is None else f"applied={st['applied_index']}"
                lines.append(f"{s.t - t0:7.2f}s {s.name} {key} {where}")
        return "\n".join(lines)

    def slowest(self, name: str, after: float) -> float:
        return max(
            (s.took for s in self.samples if s.name == name and s.t >= after and s.status),
            default=0.0,
        )

    def terms(self) -> dict[int, list[tuple[float, str]]]:
        out: dict[int, list[tuple[float, str]]] = {}
        for s in self.samples:
            if s.status is not None:
                out.setdefault(s.status["term"], []).append((s.t, s.name))
        return out

    def first(self, name: str, pred: Any, after: float = 0.0) -> Sample | None:
        for s in self.samples:
            if s.name == name and s.t >= after and s.status is not None and pred(s.status):
                return s
        return None


class Writer:
    """Threads PUTting distinct keys to `target`; `acked` holds every 200 answer.
    With `rate`, all threads together write about that many keys a second."""

    def __init__(
        self,
        target: Node,
        prefix: str,
        value_size: int,
        *,
        threads: int = 1,
        rate: float | None = None,
        limit: int | None = None,
    ) -> None:
        self.target = target
        self.prefix = prefix
        self.value_size = value_size
        self.rate = rate
        self.limit = limit
        self.acked: dict[str, bytes] = {}
        self.attempted: dict[str, bytes] = {}
        self.failures: dict[str, int] = {}
        self.slowest = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._seq = iter(range(10**9))
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> Writer:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self) -> None:
        for t in self._threads:
            t.join(REQUEST_TIMEOUT + 10)
            assert not t.is_alive(), "a writer thread is stuck"

    def _run(self) -> None:
        period = len(self._threads) / self.rate if self.rate else 0.0
        while not self._stop.is_set():
            with self._lock:
                i = next(self._seq)
                if self.limit is not None and i >= self.limit:
                    return
            key = f"{self.prefix}/{i:06d}"
            value = key.encode() + b"=" + os.urandom(self.value_size)
            with self._lock:
                self.attempted[key] = value
            t0 = time.monotonic()
            try:
                resp = self.target.request("PUT", f"/v1/kv/{key}", value)
                outcome = str(resp.status)
            except OSError as e:
                resp, outcome = None, type(e).__name__
            took = time.monotonic() - t0
            with self._lock:
                self.slowest = max(self.slowest, took)
                if resp is not None and resp.status == 200:
                    self.acked[key] = value
                else:
                    self.failures[outcome] = self.failures.get(outcome, 0) + 1
            self._stop.wait(max(period - took, 0.0) if period else 0.0)


def _check(node: Node, writer: Writer) -> None:
    """Every acknowledged write of `writer` reads back from `node` (linearizably)."""
    have = kv_dump(node, writer.prefix + "/")
    missing = sorted(k for k in writer.acked if k not in have)
    assert not missing, f"{node.name} lacks {len(missing)} acknowledged writes: {missing[:5]}"
    wrong = sorted(k for k, v in have.items() if writer.attempted.get(k) != v)
    assert not wrong, f"{node.name} has unexpected values for {wrong[:5]}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["sigkill", "sigstop"])
def test_follower_catches_up_by_10mb_snapshot_under_load(
    request: pytest.FixtureRequest, tmp_path: Path, how: str
) -> None:
    h = Harness(request, tmp_path)
    h.env["STACK_SNAPSHOT_THRESHOLD"] = str(SNAPSHOT_THRESHOLD)
    nodes = h.three_nodes()
    leader = wait_leader(nodes)
    follower = next(n for n in nodes if n is not leader)
    term = leader.status()["term"]
    monitor = Monitor(nodes).start()
    t_start = time.monotonic()
    report: list[str] = [f"follower {follower.name} goes away by {how}"]
    try:
        # ~10 MB of data, through the leader.
        fill = Writer(leader, "fill", FILL_VALUE, threads=4, limit=FILL_BYTES // FILL_VALUE)
        t0 = time.monotonic()
        fill.start().join()
        assert not fill.failures, fill.failures
        report.append(f"fill: {len(fill.acked)} x {FILL_VALUE >> 10} KiB in "
                      f"{time.monotonic() - t0:.1f}s")  # fmt: skip

        # The follower goes away; writes go on (as fast as one client can) until the
        # leader has compacted past everything the follower has or was sent. A
        # SIGSTOPped follower's socket still takes in what the leader sends, up to
        # MAX_INFLIGHT appends (one entry each with one client), so past those.
        installed_before = follower.status()["stats"]["snapshots_installed"]
        gone_at = leader.status()["last_index"]
        if how == "sigkill":
            follower.kill()
            installed_before = 0  # a new process counts from zero
            past = gone_at
        else:
            follower.signal(signal.SIGSTOP)
            past = gone_at + MAX_INFLIGHT + SNAPSHOT_THRESHOLD
        burst = Writer(leader, "burst", 1024).start()
        t0 = time.monotonic()
        wait_until(
            lambda: leader.status()["snapshot_index"] > past,
            30.0,
            f"the leader to compact past index {past}",
        )
        burst.stop()
        lst = leader.status()
        report.append(
            f"away: {len(burst.acked)} writes in {time.monotonic() - t0:.1f}s; leader "
            f"compacted to {lst['snapshot_index']}, follower had <= {gone_at}"
        )
        load = Writer(leader, "load", 1024, rate=WRITE_RATE).start()
        time.sleep(0.5)

        # Back it comes, and must take the snapshot.
        t_back = time.monotonic()
        if how == "sigkill":
            follower.start()
            follower.wait_up()
        else:
            follower.signal(signal.SIGCONT)
        t_up = time.monotonic()

        def caught_up() -> bool:
            fst, lst = follower.status(), leader.status()
            return (
                fst["stats"]["snapshots_installed"] > installed_before
                and fst["applied_index"] >= lst["commit_index"] - 2 * WRITE_RATE
            )

        wait_until(caught_up, 30.0, f"{follower.name} to install a snapshot and catch up")
        t_caught = time.monotonic()
        time.sleep(2.0)  # the writer goes on a little with the follower back in
        load.stop()
        final = leader.status()["commit_index"]
        wait_until(
            lambda: follower.status()["applied_index"] >= final,
            REQUEST_TIMEOUT,
            f"{follower.name} to apply {final}",
        )
    finally:
        monitor.stop()
        print(monitor.timeline(t_start))
    window = time.monotonic() - t_start

    installed = monitor.first(
        follower.name,
        lambda st: st["stats"]["snapshots_installed"] > installed_before,
        after=t_back,
    )
    assert installed is not None
    fst = follower.status()
    snaps = sorted((follower.data_dir / "raft").glob("snap-*.snap"))
    snap_bytes = snaps[-1].stat().st_size if snaps else 0
    report += [
        f"follower's snapshot file: {snap_bytes / (1 << 20):.1f} MiB",
        f"follower back -> API answering: {t_up - t_back:.2f}s",
        f"back -> snapshot installed (first status showing it; polled every "
        f"{monitor.interval * 1000:.0f} ms): {installed.t - t_back:.2f}s",
        f"back -> caught up: {t_caught - t_back:.2f}s",
        f"follower snapshot_index {fst['snapshot_index']}, snapshots_installed "
        f"{installed_before} -> {fst['stats']['snapshots_installed']}, "
        f"applied {fst['applied_index']}",
        "slowest /v1/status once back: "
        + ", ".join(f"{n.name} {monitor.slowest(n.name, t_up) * 1000:.0f} ms" for n in nodes),
        f"load: {len(load.acked)} acked, failures {load.failures}, slowest PUT "
        f"{load.slowest:.2f}s; window {window:.1f}s, {len(monitor.samples)} status samples",
    ]
    print("\n".join(report))

    terms = monitor.terms()
    assert set(terms) == {term}, (
        f"the term moved during the snapshot catch-up: {sorted(terms)} "
        f"(first sighting of each: { {t: v[0] for t, v in terms.items()} })"
    )
    assert window <= WINDOW, f"took {window:.0f}s"
    assert fst["term"] == term and fst["leader"] == leader.id
    assert snap_bytes >= FILL_BYTES, f"the snapshot is only {snap_bytes} bytes"
    for w in (fill, burst, load):
        _check(follower, w)
