"""The asyncio host of one Raft core: persist -> send -> apply -> advance.

One task owns the core. Everything else (network input, proposals, reads,
admin operations, ticks) is queued and handed to the core in one go per loop
iteration, so many proposals share one fsync and one AppendEntries per follower
(group commit). The fsync runs in a dedicated thread while the loop keeps
queueing input; nothing else touches the core while a Ready is outstanding.

A leader may send its AppendEntries before its own fsync finishes (Raft thesis
§10.2.1): it counts itself towards a quorum only after `advance()`. Every other
message (votes, acknowledgements) waits for the fsync.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from stack.raft.core import Raft
from stack.raft.errors import NotLeader, OutcomeUnknown, ProposalDropped, RaftError
from stack.raft.types import (
    AnyMessage,
    AppendEntries,
    ConfChange,
    Entry,
    EntryType,
    HardState,
    Heartbeat,
    InstallSnapshot,
    Ready,
    Role,
    Snapshot,
    Status,
    TimeoutNow,
)

log = structlog.get_logger("stack.raft")

_LEADER_MESSAGES = (AppendEntries, Heartbeat, InstallSnapshot, TimeoutNow)


class StateMachine(Protocol):
    def apply(self, index: int, term: int, data: bytes) -> object: ...
    def snapshot(self) -> bytes: ...
    def restore(self, data: bytes) -> None: ...


class Storage(Protocol):
    def save(
        self,
        *,
        entries: tuple[Entry, ...] | list[Entry] = (),
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        sync: bool = True,
    ) -> None: ...
    def compact(self, snapshot: Snapshot) -> None: ...


@dataclass(slots=True)
class NodeStats:
    """Counters for status pages and benchmarks (how well batching works)."""

    readies: int = 0
    syncs: int = 0
    entries_persisted: int = 0
    entries_applied: int = 0
    messages_sent: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0


class NodeStopped(RaftError):
    """The node is shutting down or stopped after a fatal error."""


class RaftNode:
    def __init__(
        self,
        core: Raft,
        *,
        storage: Storage,
        fsm: StateMachine,
        send: Callable[[AnyMessage], None],
        tick_interval: float = 0.1,
        snapshot_threshold: int = 16384,
        on_conf_change: Callable[[ConfChange, int], None] | None = None,
        on_role_change: Callable[[Role, int], None] | None = None,
        inline_sync_entries: int = 4,
        inline_sync_seconds: float = 0.0005,
    ) -> None:
        self.core = core
        self._inline_sync_entries = inline_sync_entries
        self._inline_sync_seconds = inline_sync_seconds
        # What a save (write + fsync) has been taking, smoothed: decides whether a
        # small batch may be saved on the event loop (see `_handle_ready`).
        self._save_seconds = 0.0
        self._compacting: asyncio.Future[None] | None = None
        self._storage = storage
        self._fsm = fsm
        self._send = send
        self._tick_interval = tick_interval
        self._snapshot_threshold = snapshot_threshold
        self._on_conf_change = on_conf_change
        self._on_role_change = on_role_change
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="raft-io")
        self._wake = asyncio.Event()
        self._inbox: list[AnyMessage] = []
        self._proposals: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._reads: list[tuple[bytes, asyncio.Future[int]]] = []
        self._ops: list[tuple[Callable[[Raft], Any], asyncio.Future[Any]]] = []
        self._ticks = 0
        self._pending: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._read_waiting: dict[bytes, asyncio.Future[int]] = {}
        # (index, future, value): resolve `future` with `value` once `index` is applied.
        # Confirmed reads wait here (value = the read index), and so do wait_applied().
        self._applied_waiters: list[tuple[int, asyncio.Future[Any], Any]] = []
        self._ctx = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._stopping = False
        self.fatal: BaseException | None = None
        self.stats = NodeStats()
        self.applied = core.status().applied
        self.role = core.role
        self.leader = core.leader
        self.last_contact = time.monotonic()

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="raft-loop")
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop(), name="raft-tick")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for t in (self._ticker, self._task):
            if t is not None:
                t.cancel()
                # The loop already recorded any fatal error in self.fatal and logged it.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        self._fail_all(NodeStopped("node stopped"))
        self._io.shutdown(wait=True)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick_interval)
            self._ticks += 1
            self._wake.set()

    # ------------------------------------------------------------ inputs
    def step(self, msg: AnyMessage) -> None:
        self._inbox.append(msg)
        self._wake.set()

    def _check_running(self) -> None:
        if self._stopping or self.fatal is not None:
            raise NodeStopped("node is stopped" if self.fatal is None else f"fatal: {self.fatal}")

    async def propose(self, data: bytes) -> Any:
        """Replicate and apply `data`; returns the state machine's result.
        Raises NotLeader or ProposalDropped (the caller may retry elsewhere)."""
        self._check_running()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._proposals.append((data, fut))
        self._wake.set()
        return await fut

    async def read_index(self) -> int:
        """Linearizable read barrier on the leader: returns once the state machine has
        applied everything committed when the read arrived."""
        self._check_running()
        ctx = next(self._ctx).to_bytes(8, "big")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads.append((ctx, fut))
        self._wake.set()
        return await fut

    async def wait_applied(self, index: int) -> None:
        if self.applied >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((index, fut, None))
        await fut

    async def run_op(self, op: Callable[[Raft], Any]) -> Any:
        """Run `op(core)` inside the loop (conf changes, transfers, campaign control)."""
        self._check_running()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ops.append((op, fut))
        self._wake.set()
        return await fut

    async def propose_conf_change(self, cc: ConfChange) -> int:
        """Propose a configuration change and wait until this node has applied its index.
        (A leader change may replace it: callers check the configuration afterwards.)"""
        index: int = await self.run_op(lambda core: core.propose_conf_change(cc))
        await self.wait_applied(index)
        return index

    def status(self) -> Status:
        return self.core.status()

    # ------------------------------------------------------------ the loop
    async def _run(self) -> None:
        try:
            while not self._stopping:
                await self._wake.wait()
                self._wake.clear()
                self._feed_core()
                while self.core.has_ready() and not self._stopping:
                    await self._handle_ready(self.core.ready())
                    self._maybe_snapshot()
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # a failed apply or storage error: stop, loudly
            self.fatal = e
            log.error("raft loop stopped", error=repr(e))
            self._fail_all(NodeStopped(f"fatal: {e!r}"))
            raise

    def _feed_core(self) -> None:
        core = self.core
        inbox, self._inbox = self._inbox, []
        for msg in inbox:
            core.step(msg)
        ticks, self._ticks = self._ticks, 0
        for _ in range(min(ticks, 5)):  # after a stall, do not fire many timeouts at once
            core.tick()
        ops, self._ops = self._ops, []
        for op, opfut in ops:
            try:
                result = op(core)
            except (RaftError, ValueError) as e:
                opfut.set_exception(e)
            else:
                opfut.set_result(result)
        props, self._proposals = self._proposals, []
        for data, fut in props:
            if fut.done():
                continue
            try:
                index = core.propose(data)
            except RaftError as e:
                fut.set_exception(e)
            else:
                self._pending[index] = (core.term, fut)
        reads, self._reads = self._reads, []
        for ctx, rfut in reads:
            try:
                core.read_index(ctx)
            except RaftError as e:
                rfut.set_exception(e)
            else:
                self._read_waiting[ctx] = rfut

    def _timed_save(
        self,
        *,
        entries: tuple[Entry, ...] | list[Entry],
        hard_state: HardState | None,
        snapshot: Snapshot | None,
        sync: bool,
    ) -> None:
        started = time.perf_counter()
        self._storage.save(entries=entries, hard_state=hard_state, snapshot=snapshot, sync=sync)
        took = time.perf_counter() - started
        # One slow sync pushes saves to the I/O thread at once; they come back to
        # the loop only after the syncs have been fast for a while.
        self._save_seconds = max(took, 0.9 * self._save_seconds + 0.1 * took)

    async def _handle_ready(self, rd: Ready) -> None:
        self.stats.readies += 1
        # A Ready whose hard state only moved the commit index is not written on its own:
        # the commit index is re-learned from the leader after a restart, and it is saved
        # anyway with the next entries or term/vote change. That spares the leader one
        # trip through the I/O thread per batch.
        needs_persist = rd.must_sync
        early = needs_persist and all(isinstance(m, _LEADER_MESSAGES) for m in rd.messages)
        if early:
            self._send_all(rd)
        if needs_persist:
            save = functools.partial(
                self._timed_save,
                entries=rd.entries,
                hard_state=rd.hard_state,
                snapshot=rd.snapshot,
                sync=rd.must_sync,
            )
            if (
                len(rd.entries) <= self._inline_sync_entries
                and self._save_seconds <= self._inline_sync_seconds
                and rd.snapshot is None
                and (self._compacting is None or self._compacting.done())
            ):
                # A small batch on a fast disk: fsync right here. The hop to the I/O
                # thread and back costs more than a ~0.1 ms fdatasync. On a slow or
                # busy disk (milliseconds a sync) the loop must not stop for it: it
                # has requests to parse and answers to send meanwhile.
                save()
            else:
                await asyncio.get_running_loop().run_in_executor(self._io, save)
            self.stats.syncs += 1
            self.stats.entries_persisted += len(rd.entries)
        if not early:
            self._send_all(rd)
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.role, rd.soft_state.leader)
        if rd.snapshot is not None:
            if rd.snapshot.data:  # empty only for the index-0 bootstrap configuration
                self._fsm.restore(rd.snapshot.data)
            self.applied = rd.snapshot.meta.index
            self.stats.snapshots_installed += 1
            self._fail_pending_through(rd.snapshot.meta.index)
        for e in rd.committed:
            self._apply(e)
        for rs in rd.read_states:
            rfut = self._read_waiting.pop(rs.ctx, None)
            if rfut is not None and not rfut.done():
                self._applied_waiters.append((rs.index, rfut, rs.index))
        self.core.advance(rd)
        self._release_waiters()

    def _send_all(self, rd: Ready) -> None:
        for m in rd.messages:
            self._send(m)
        self.stats.messages_sent += len(rd.messages)

    def _apply(self, e: Entry) -> None:
        if e.type is EntryType.CONF_CHANGE:
            result: Any = self._fsm.apply(e.index, e.term, b"")
            if self._on_conf_change is not None:
                self._on_conf_change(ConfChange.decode(e.data), e.index)
        else:
            result = self._fsm.apply(e.index, e.term, e.data)
        self.applied = e.index
        self.stats.entries_applied += 1
        pending = self._pending.pop(e.index, None)
        if pending is not None:
            term, fut = pending
            if fut.done():
                return
            if term == e.term:
                fut.set_result(result)
            else:
                fut.set_exception(ProposalDropped("lost in a leader change; retry"))

    def _fail_pending_through(self, index: int) -> None:
        for idx in [i for i in self._pending if i <= index]:
            _, fut = self._pending.pop(idx)
            if not fut.done():
                fut.set_exception(OutcomeUnknown("in flight when a snapshot was installed"))

    def _release_waiters(self) -> None:
        applied = self.applied
        if self._applied_waiters:
            waiting = []
            for index, fut, value in self._applied_waiters:
                if index > applied:
                    waiting.append((index, fut, value))
                elif not fut.done():
                    fut.set_result(value)
            self._applied_waiters = waiting

    def _on_soft_state(self, role: Role, leader: int) -> None:
        was_leader = self.role is Role.LEADER
        self.role, self.leader = role, leader
        if was_leader and role is not Role.LEADER:
            # Reads in flight cannot be confirmed any more; proposals stay pending:
            # they may still commit under the next leader, or fail when replaced.
            for rfut in self._read_waiting.values():
                if not rfut.done():
                    rfut.set_exception(NotLeader(leader))
            self._read_waiting.clear()
        if self._on_role_change is not None:
            self._on_role_change(role, leader)

    def _maybe_snapshot(self) -> None:
        st = self.core.log
        if self.applied - st.snapshot.meta.index < self._snapshot_threshold:
            return
        data = self._fsm.snapshot()
        snap = self.core.compact(self.applied, data)
        self.stats.snapshots_taken += 1
        # Persisting the snapshot and dropping segments can happen off the loop: the
        # log still holds everything after it, and a crash before it lands just
        # leaves the older snapshot plus a longer log.
        done = asyncio.get_running_loop().run_in_executor(self._io, self._storage.compact, snap)
        done.add_done_callback(self._compaction_done)
        self._compacting = done

    def _compaction_done(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            self.fatal = fut.exception()
            log.error("snapshot persist failed; stopping", error=repr(self.fatal))
            self._stopping = True
            self._wake.set()

    def _fail_all(self, err: BaseException) -> None:
        # Proposals already in the log may still commit (a leader sends its appends
        # before its own fsync; a deposed one's entries may be on the new leader): their
        # outcome is unknown. NodeStopped would tell the caller to retry, applying twice.
        unknown = OutcomeUnknown(f"in flight when the node stopped ({err})")
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(unknown)
        self._pending.clear()
        for lst in (self._proposals, self._reads, self._ops):
            for item in lst:
                f = item[1]
                if not f.done():
                    f.set_exception(err)
            lst.clear()
        for rfut in self._read_waiting.values():
            if not rfut.done():
                rfut.set_exception(err)
        self._read_waiting.clear()
        for _, af, _ in self._applied_waiters:
            if not af.done():
                af.set_exception(err)
        self._applied_waiters.clear()
