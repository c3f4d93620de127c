"""A slow disk must not stop the event loop: a node saves small batches inline only
while its saves have been fast (`RaftNode._handle_ready`).

The disk is the real `LogStorage` (on the crash tests' in-memory file system);
`SlowStorage` adds a sleep to every save, as a busy disk taking milliseconds to
fsync does. Each test records on which thread each save ran.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from inproc import Cluster

from stack.raft.storage import LogStorage
from stack.raft.types import Entry, HardState, Snapshot

pytestmark = pytest.mark.timeout(60)


class SlowStorage:
    def __init__(self, inner: LogStorage, delay: float, threads: list[str]) -> None:
        self.inner = inner
        self.delay = delay
        self.threads = threads

    def save(
        self,
        *,
        entries: Sequence[Entry] = (),
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        sync: bool = True,
    ) -> None:
        self.threads.append(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        self.inner.save(entries=entries, hard_state=hard_state, snapshot=snapshot, sync=sync)

    def compact(self, snapshot: Snapshot) -> None:
        self.inner.compact(snapshot)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    await c.shutdown()


async def _saves_under_writes(c: Cluster, delay: float) -> dict[int, list[str]]:
    threads: dict[int, list[str]] = {nid: [] for nid in c.ids}
    wrap: Callable[[int, LogStorage], Any] = lambda nid, s: SlowStorage(s, delay, threads[nid])  # noqa: E731
    await c.start(wrap_storage=wrap)
    await c.wait_leader()
    wl = c.start_writers(2)
    await c.wait_acked(wl, 200, timeout=40.0)
    await c.stop_writers(wl)
    await c.wait_converged(timeout=20.0)
    c.check(wl)  # and nothing acknowledged was lost on the way
    return threads


async def test_slow_saves_leave_the_event_loop(cluster: Cluster) -> None:
    threads = await _saves_under_writes(cluster, 0.004)
    for nid, names in threads.items():
        later = names[len(names) // 4 :]  # after the first slow save was seen
        on_loop = [n for n in later if not n.startswith("raft-io")]
        assert len(later) > 20, (nid, len(names))
        assert len(on_loop) <= 2, (nid, on_loop[:5], len(later))


async def test_fast_small_saves_stay_on_the_loop(cluster: Cluster) -> None:
    threads = await _saves_under_writes(cluster, 0.0)
    main = threading.current_thread().name
    for nid, names in threads.items():
        assert names.count(main) > len(names) // 2, (nid, names[:10])
