"""An in-process cluster of real RaftNodes for crash tests.

Each node is what `stack/agent.py` builds: a `LogStorage` (here on its own
`FaultyFileSystem`, so a crash loses exactly the unsynced writes), an `FSM` with
the agent's command registry, a `Raft` core rebuilt from `storage.initial_state()`
and a `RaftNode` host. Nodes talk through `Net`, an in-memory transport that
delivers each message to the target's `step` with `loop.call_soon` and can drop
or hold messages.

Crash points are wrappers around what the host is given (`CrashingStorage`,
`CrashingFSM`): once their `Trigger` is armed and matches, they do their part of
the step and raise `Crash`, which stops the host's loop exactly there (nothing
after that point in `_handle_ready` runs). `Cluster.crash()` then finishes the
job: the node is cut off the network, its tasks and IO thread are stopped and
its disk loses every unsynced write. `Cluster.boot()` restarts it from disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stack.agent import build_registry
from stack.raft.config import RaftConfig
from stack.raft.core import Raft
from stack.raft.errors import NotLeader, ProposalDropped, RaftError
from stack.raft.faultfs import FaultyFileSystem
from stack.raft.node import NodeStopped, RaftNode
from stack.raft.storage import LogStorage, StoredState
from stack.raft.types import (
    AnyMessage,
    ConfState,
    Entry,
    HardState,
    Role,
    Snapshot,
    SnapshotMeta,
)
from stack.state import kv
from stack.state.commands import WriteResult
from stack.state.fsm import FSM

# What a caller may take to mean "this proposal did not and will not commit": the
# agent retries after these (NodeStopped becomes the retryable RPC code "unavailable").
NOT_APPLIED = (NotLeader, ProposalDropped, NodeStopped)


class Crash(Exception):
    """An injected crash point fired: the node must be treated as dead from here on."""


# ================================================================ crash points


@dataclass
class Trigger:
    """One-shot crash point. `match` sees the wrapped call's arguments; the wrapper
    fires on the first matching call after `arm()`."""

    match: Callable[..., bool] = lambda *a, **k: True
    armed: bool = False
    fired: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _event: asyncio.Event | None = None

    def arm(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self.armed = True

    def should_fire(self, *args: Any, **kwargs: Any) -> bool:
        """Called from whichever thread runs the wrapped call."""
        with self._lock:
            if not self.armed or self.fired or not self.match(*args, **kwargs):
                return False
            self.fired = True
            self.armed = False
            return True

    def fire(self) -> Crash:
        assert self._loop is not None and self._event is not None
        self._loop.call_soon_threadsafe(self._event.set)
        return Crash(f"crash point fired: {self.detail}")

    async def wait(self, timeout: float) -> None:
        assert self._event is not None, "arm() first"
        await asyncio.wait_for(self._event.wait(), timeout)


class CrashingStorage:
    """Wraps LogStorage. mode="after_save": the save completes (synced as asked) and
    then the node dies, before the host sends anything that waited for it.
    mode="unsynced": the save's bytes are written but never synced, then the node
    dies (a crash in the middle of the fsync)."""

    def __init__(self, inner: LogStorage, trigger: Trigger, mode: str = "after_save") -> None:
        assert mode in ("after_save", "unsynced")
        self.inner = inner
        self.trigger = trigger
        self.mode = mode

    def save(
        self,
        *,
        entries: Sequence[Entry] = (),
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        sync: bool = True,
    ) -> None:
        kw: dict[str, Any] = {"entries": entries, "hard_state": hard_state, "snapshot": snapshot}
        if not self.trigger.should_fire(**kw, sync=sync):
            self.inner.save(**kw, sync=sync)
            return
        self.trigger.detail.update(
            mode=self.mode,
            entries=[(e.term, e.index) for e in entries],
            hard_state=hard_state,
            sync=sync,
        )
        self.inner.save(**kw, sync=sync and self.mode == "after_save")
        raise self.trigger.fire()

    def compact(self, snapshot: Snapshot) -> None:
        self.inner.compact(snapshot)


class CrashingFSM:
    """Wraps the FSM: dies just before applying the first matching entry (after the
    host persisted and sent that Ready)."""

    def __init__(self, inner: FSM, trigger: Trigger) -> None:
        self.inner = inner
        self.trigger = trigger

    def apply(self, index: int, term: int, data: bytes) -> object:
        if self.trigger.should_fire(index=index, term=term, data=data):
            self.trigger.detail.update(index=index, term=term, applied=self.inner.applied_index)
            raise self.trigger.fire()
        return self.inner.apply(index, term, data)

    def snapshot(self) -> bytes:
        return self.inner.snapshot()

    def restore(self, data: bytes) -> None:
        self.inner.restore(data)


# ================================================================ network


class Net:
    """In-memory transport. Filters see every message at send time and return
    None (deliver), "drop" or "hold" (kept in `held` until `release()`)."""

    def __init__(self) -> None:
        self.hosts: dict[int, Host] = {}
        self.filters: list[Callable[[AnyMessage], str | None]] = []
        self.held: list[AnyMessage] = []
        self.sent = 0
        self.dropped = 0

    def sender(self, host: Host) -> Callable[[AnyMessage], None]:
        incarnation = host.incarnation
        loop = asyncio.get_running_loop()

        def send(m: AnyMessage) -> None:
            if not host.up or host.incarnation != incarnation:
                return  # a dead process sends nothing
            self.sent += 1
            for f in self.filters:
                verdict = f(m)
                if verdict == "drop":
                    self.dropped += 1
                    return
                if verdict == "hold":
                    self.held.append(m)
                    return
            loop.call_soon(self._deliver, m)

        return send

    def _deliver(self, m: AnyMessage) -> None:
        target = self.hosts.get(m.to)
        if target is not None and target.up:
            target.node.step(m)

    def release(self) -> None:
        held, self.held = self.held, []
        loop = asyncio.get_running_loop()
        for m in held:
            loop.call_soon(self._deliver, m)


# ================================================================ hosts


@dataclass(eq=False)
class Host:
    id: int
    dir: Path
    fs: FaultyFileSystem
    storage: LogStorage | None = None
    fsm: FSM | None = None
    node: RaftNode = None  # type: ignore[assignment]
    up: bool = False
    incarnation: int = 0
    boots: int = 0
    recovered: StoredState | None = None  # what the last boot read from disk

    @property
    def raft_dir(self) -> Path:
        return self.dir / "raft"

    def last_segment(self) -> Path:
        return sorted(self.raft_dir.glob("log-*.seg"))[-1]


@dataclass
class Workload:
    """Writers proposing unique keys through whoever leads; `acked` holds the writes
    whose propose() returned an ok WriteResult."""

    acked: dict[str, bytes] = field(default_factory=dict)
    attempted: set[str] = field(default_factory=set)
    failures: int = 0
    # Writes refused with an error that tells the client it did not happen (so it may
    # retry it anywhere): key -> that error.
    refused: dict[str, str] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopping: bool = False


class Cluster:
    def __init__(
        self,
        root: Path,
        *,
        n: int = 3,
        seed: int = 1,
        tick: float = 0.01,
        election_ticks: int = 10,
        snapshot_threshold: int = 16384,
    ) -> None:
        self.root = root
        self.ids = list(range(1, n + 1))
        self.rng = random.Random(seed)
        self.tick = tick
        self.election_ticks = election_ticks
        self.snapshot_threshold = snapshot_threshold
        self.registry = build_registry()
        self.net = Net()
        self.hosts = {i: Host(i, root / f"n{i}", FaultyFileSystem()) for i in self.ids}
        self.net.hosts = self.hosts
        self._keys = itertools.count()
        self._workloads: list[Workload] = []

    # ------------------------------------------------------------ lifecycle
    def bootstrap(self) -> None:
        """What the agent's multi-server bootstrap writes: the voter set as the
        snapshot at index 0, on every server."""
        snap = Snapshot(SnapshotMeta(0, 0, ConfState(voters=frozenset(self.ids))), b"")
        for h in self.hosts.values():
            st = LogStorage.open(h.raft_dir, fs=h.fs)
            st.save(snapshot=snap)
            st.close()

    async def start(
        self,
        *,
        wrap_storage: Callable[[int, LogStorage], Any] | None = None,
        wrap_fsm: Callable[[int, FSM], Any] | None = None,
    ) -> None:
        self.bootstrap()
        for nid in self.ids:
            self.boot(
                nid,
                wrap_storage=(lambda s, n=nid: wrap_storage(n, s)) if wrap_storage else None,
                wrap_fsm=(lambda f, n=nid: wrap_fsm(n, f)) if wrap_fsm else None,
            )

    def boot(
        self,
        nid: int,
        *,
        wrap_storage: Callable[[LogStorage], Any] | None = None,
        wrap_fsm: Callable[[FSM], Any] | None = None,
    ) -> Host:
        """Start (or restart) a node from its disk exactly as Agent.start does."""
        h = self.hosts[nid]
        assert not h.up
        storage = LogStorage.open(h.raft_dir, fs=h.fs)
        st = storage.initial_state()
        h.recovered = st
        fsm = FSM(self.registry)
        if st.snapshot is not None and st.snapshot.data:
            fsm.restore(st.snapshot.data)
        core = Raft(
            RaftConfig(id=nid, election_tick=self.election_ticks, heartbeat_tick=1),
            random.Random(self.rng.getrandbits(64)),
            hard_state=st.hard_state,
            snapshot=st.snapshot,
            entries=st.entries,
            applied=st.snapshot.meta.index if st.snapshot else 0,
        )
        h.incarnation += 1
        h.boots += 1
        h.storage, h.fsm, h.up = storage, fsm, True
        h.node = RaftNode(
            core,
            storage=wrap_storage(storage) if wrap_storage else storage,
            fsm=wrap_fsm(fsm) if wrap_fsm else fsm,
            send=self.net.sender(h),
            tick_interval=self.tick,
            snapshot_threshold=self.snapshot_threshold,
        )
        h.node.start()
        return h

    async def crash(self, nid: int) -> None:
        """Power cut: off the network, tasks and IO thread gone, unsynced writes lost."""
        h = self.hosts[nid]
        assert h.up
        h.up = False
        await h.node.stop()
        h.fs.crash()
        h.storage = None

    async def stop_all(self) -> None:
        for h in self.hosts.values():
            if h.up:
                h.up = False
                await h.node.stop()
                assert h.storage is not None
                h.storage.close()
                h.storage = None

    async def crash_all(self) -> None:
        for nid in self.ids:
            if self.hosts[nid].up:
                await self.crash(nid)

    async def shutdown(self) -> None:
        """Teardown whatever state a test left: writers stopped, nodes stopped, files
        closed. Safe to call after stop_all() or a failed assertion."""
        tasks = [t for wl in self._workloads for t in wl.tasks]
        for wl in self._workloads:
            wl.stopping = True
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for h in self.hosts.values():
            if h.up:
                h.up = False
                with contextlib.suppress(Exception):
                    await h.node.stop()
            if h.storage is not None:
                with contextlib.suppress(Exception):
                    h.storage.close()
                h.storage = None

    def up_hosts(self) -> list[Host]:
        return [h for h in self.hosts.values() if h.up]

    # ------------------------------------------------------------ observation
    def leader(self) -> Host | None:
        """The up node that leads in the highest term, if any."""
        best: Host | None = None
        for h in self.up_hosts():
            core = h.node.core
            leads = h.node.fatal is None and core.role is Role.LEADER
            if leads and (best is None or core.term > best.node.core.term):
                best = h
        return best

    async def wait_leader(self, timeout: float = 5.0, *, not_id: int = 0) -> Host:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            h = self.leader()
            if h is not None and h.id != not_id:
                return h
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no leader within {timeout}s: {self.describe()}")
            await asyncio.sleep(0.005)

    async def wait_converged(self, timeout: float = 10.0) -> Host:
        """Every node up, one leader everybody follows, every log complete and applied."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            lead = self.leader()
            if lead is not None and self._converged(lead):
                return lead
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no convergence within {timeout}s: {self.describe()}")
            await asyncio.sleep(0.01)

    def _converged(self, lead: Host) -> bool:
        ls = lead.node.status()
        if ls.commit != ls.last_index:
            return False
        for h in self.hosts.values():
            if not h.up or h.node.fatal is not None:
                return False
            st = h.node.status()
            if (st.term, st.leader, st.last_index, st.commit) != (
                ls.term,
                lead.id,
                ls.last_index,
                ls.commit,
            ):
                return False
            if h.node.applied != ls.commit:
                return False
        return True

    def describe(self) -> str:
        out = []
        for h in self.hosts.values():
            if not h.up:
                out.append(f"n{h.id}: down")
                continue
            st = h.node.status()
            out.append(
                f"n{h.id}: {st.role.name} t{st.term} lead={st.leader} last={st.last_index} "
                f"commit={st.commit} applied={h.node.applied} fatal={h.node.fatal!r}"
            )
        return "; ".join(out)

    # ------------------------------------------------------------ workload
    def start_writers(self, n: int = 4, *, value_size: int = 64) -> Workload:
        wl = Workload()
        self._workloads.append(wl)
        for w in range(n):
            wl.tasks.append(asyncio.create_task(self._writer(wl, w, value_size)))
        return wl

    async def _writer(self, wl: Workload, w: int, value_size: int) -> None:
        while not wl.stopping:
            lead = self.leader()
            if lead is None:
                await asyncio.sleep(0.005)
                continue
            key = f"w{w}/k{next(self._keys):06d}"
            value = key.encode() + b":" + self.rng.randbytes(value_size)
            wl.attempted.add(key)
            try:
                result = await asyncio.wait_for(
                    lead.node.propose(kv.encode_set(self.registry, key, value)), 2.0
                )
            except (RaftError, NodeStopped, TimeoutError) as e:
                wl.failures += 1
                if isinstance(e, NOT_APPLIED):
                    wl.refused[key] = repr(e)
                await asyncio.sleep(0.002)
                continue
            assert isinstance(result, WriteResult) and result.ok, result
            wl.acked[key] = value

    async def wait_acked(self, wl: Workload, count: int, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(wl.acked) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"only {len(wl.acked)}/{count} writes acknowledged in {timeout}s: "
                    f"{self.describe()}"
                )
            await asyncio.sleep(0.005)

    async def more_acks(self, wl: Workload, count: int, timeout: float = 10.0) -> None:
        await self.wait_acked(wl, len(wl.acked) + count, timeout)

    @staticmethod
    async def stop_writers(wl: Workload) -> None:
        wl.stopping = True
        await asyncio.gather(*wl.tasks, return_exceptions=False)

    # ------------------------------------------------------------ checks
    def check(self, wl: Workload) -> None:
        """After convergence: logs agree, state machines agree, every acknowledged
        write is there with its value, and nothing appeared that nobody wrote."""
        hosts = list(self.hosts.values())
        logs = {h.id: h.node.core.log for h in hosts}
        lo = max(lg.first_index() for lg in logs.values())
        hi = min(lg.last_index() for lg in logs.values())
        ref_id = hosts[0].id
        for h in hosts[1:]:
            # (None in common when a node's snapshot ends at the last index.)
            for i in range(lo, hi + 1):
                a, b = logs[ref_id].entry(i), logs[h.id].entry(i)
                assert a == b, f"logs of n{ref_id} and n{h.id} differ at {i}: {a} != {b}"
            a_t, b_t = logs[ref_id].term(hi), logs[h.id].term(hi)
            assert a_t == b_t, f"n{ref_id} and n{h.id} disagree on the term at {hi}"
        dumps = {h.id: _kv_dump(h) for h in hosts}
        for h in hosts[1:]:
            assert dumps[h.id] == dumps[ref_id], f"KV state of n{h.id} differs from n{ref_id}"
        for h in hosts:
            assert h.fsm is not None
            missing = [k for k in wl.acked if kv.get(h.fsm.store, k)[0] is None]
            assert not missing, f"n{h.id} lost {len(missing)} acknowledged writes: {missing[:5]}"
            wrong = [k for k, v in wl.acked.items() if kv.get(h.fsm.store, k)[0].value != v]  # type: ignore[union-attr]
            assert not wrong, f"n{h.id} has wrong values for {wrong[:5]}"
            phantom = set(dumps[h.id]) - wl.attempted
            assert not phantom, f"n{h.id} has keys nobody wrote: {sorted(phantom)[:5]}"
            applied_anyway = {k: e for k, e in wl.refused.items() if k in dumps[h.id]}
            assert not applied_anyway, (
                f"n{h.id}: {len(applied_anyway)} writes were refused as not applied, "
                f"yet they committed: {sorted(applied_anyway.items())[:3]}"
            )


def _kv_dump(h: Host) -> dict[str, bytes]:
    assert h.fsm is not None
    return {e.key: e.value for e in kv.list_prefix(h.fsm.store, "")[0]}
