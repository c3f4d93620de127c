"""A simulated Raft cluster: real `Raft` cores driven by hosts (`host.py`) over a simulated
network and disks. Every source of nondeterminism (tick phases, skew, core RNGs, network,
client latency) is derived from the seed."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

from stack.raft.types import (
    AnyMessage,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    InstallSnapshot,
    Role,
    Snapshot,
    SnapshotMeta,
)
from stack.sim.checkers import RaftInvariants
from stack.sim.clock import TICK, NodeClock, Scheduler
from stack.sim.coverage import Coverage
from stack.sim.host import ClientRequest, ClusterParams, CoreLog, Host
from stack.sim.network import NetConfig, Network

__all__ = ["ClientRequest", "Cluster", "ClusterParams", "Host"]


# ---------------------------------------------------------------- cluster


class Cluster:
    def __init__(
        self,
        seed: int,
        params: ClusterParams,
        net: NetConfig,
        *,
        trace_messages: bool = False,
        trace_ops: bool = True,
    ) -> None:
        self.seed = seed
        self.params = params
        self.scheduler = Scheduler()
        self.invariants = RaftInvariants()
        self.coverage = Coverage()
        self.trace: list[str] = []
        self.trace_messages = trace_messages
        self.trace_ops = trace_ops
        self._mix = 0  # rolling fingerprint of every delivery, for replay checks
        self.rng = random.Random(f"{seed}/cluster")
        self.network: Network[AnyMessage] = Network(
            self.scheduler,
            random.Random(f"{seed}/network"),
            self._deliver,
            net,
            on_lost=self._lost,
        )
        self.hosts: dict[int, Host] = {}
        self.dirty: list[Host] = []
        self.next_id = params.nodes + 1
        self.leader_hint = 0
        self.leader_listeners: list[Callable[[Host], None]] = []
        voters = frozenset(range(1, params.nodes + 1))
        boot = Snapshot(SnapshotMeta(0, 0, ConfState(voters=voters)), b"")
        for nid in sorted(voters):
            host = self._new_host(nid)
            host.disk.write_snapshot(boot)
            host.disk.sync()
            self._start(host)

    # -- plumbing
    def note(self, text: str) -> None:
        self.trace.append(f"{self.scheduler.now / TICK:10.2f} {text}")

    def trace_hash(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        for line in self.trace:
            h.update(line.encode())
            h.update(b"\n")
        h.update(self._mix.to_bytes(8, "big"))
        return h.hexdigest()

    def _new_host(self, nid: int) -> Host:
        clock = NodeClock.skewed(self.rng, self.params.max_skew)
        host = Host(self, nid, clock)
        self.hosts[nid] = host
        return host

    def _start(self, host: Host) -> None:
        host.start(random.Random(f"{self.seed}/raft/{host.id}/{host.incarnation}"))

    def flush(self) -> None:
        while self.dirty:
            batch, self.dirty = self.dirty, []
            for host in batch:
                host.dirty = False
                host.handle_ready()

    def run_until(self, end: int) -> None:
        self.scheduler.run_until(end, self.flush)

    def send_all(self, msgs: tuple[AnyMessage, ...]) -> None:
        send = self.network.send
        cov = self.coverage
        for m in msgs:
            if type(m) is InstallSnapshot:
                cov.chunks_sent += 1
                if m.offset == 0:
                    cov.snapshots_sent += 1
            send(m.frm, m.to, m)

    def _deliver(self, to: int, msg: AnyMessage) -> None:
        self._mix = (self._mix * 1_000_003 + self.scheduler.now * 31 + to * 7 + msg.frm) & (
            (1 << 64) - 1
        )
        host = self.hosts.get(to)
        if host is None or not host.up:
            return
        if self.trace_messages:
            self.note(f"n{msg.frm}->n{to} {type(msg).__name__} t{msg.term}")
        host.on_message(msg)

    def _lost(self, msg: AnyMessage) -> None:
        if type(msg) is InstallSnapshot:
            self.coverage.chunks_dropped += 1

    # -- observations from hosts
    def on_leader(self, host: Host) -> None:
        core = host.core
        assert core is not None
        self.coverage.leader_changes += 1
        self.leader_hint = host.id
        self.note(f"n{host.id} leads term {core.term}")
        self.invariants.on_leader(host.id, core.term, CoreLog(core))
        for listener in self.leader_listeners:
            listener(host)

    def on_conf_committed(self, e: Entry, cc: ConfChange) -> None:
        self.coverage.conf_changes += 1
        self.note(f"conf change {cc.type.name} n{cc.node_id} committed at {e.index}")
        if cc.type is ConfChangeType.REMOVE_NODE:
            # Give the removed node a moment to learn it, then switch it off for good.
            self.scheduler.after(5 * TICK, self._decommission, cc.node_id)

    # -- faults and membership (the workload decides when)
    def live(self) -> list[Host]:
        return [h for h in self.hosts.values() if h.up]

    def members(self) -> list[Host]:
        return [h for h in self.hosts.values() if not h.removed]

    def leader(self) -> Host | None:
        """The up, unpaused leader with the highest term, if any."""
        best: Host | None = None
        best_term = -1
        now = self.scheduler.now
        for h in self.hosts.values():
            core = h.core
            if core is None or core.role is not Role.LEADER or h.clock.paused(now):
                continue
            if core.term > best_term:
                best, best_term = h, core.term
        return best

    def crash(self, nid: int) -> None:
        host = self.hosts[nid]
        if not host.up:
            return
        host.crash()
        self.network.reset(nid)
        self.coverage.crashes += 1
        self.note(f"n{nid} crashed")

    def restart(self, nid: int) -> None:
        host = self.hosts[nid]
        if host.up or host.removed:
            return
        self._start(host)
        self.note(f"n{nid} restarted (applied {host.sm.applied})")

    def pause(self, nid: int, duration: int) -> None:
        host = self.hosts[nid]
        if not host.up:
            return
        end = host.clock.pause(self.scheduler.now, duration)
        self.coverage.pauses += 1
        self.note(f"n{nid} paused until {end / TICK:.2f}")
        self.scheduler.at(end, host.resume, host.incarnation)

    def add_node(self) -> Host:
        """Start a brand-new, empty node; it waits until the leader adds it."""
        host = self._new_host(self.next_id)
        self.next_id += 1
        self._start(host)
        self.coverage.joins += 1
        self.note(f"n{host.id} started empty (joining)")
        return host

    def _decommission(self, nid: int) -> None:
        host = self.hosts.get(nid)
        if host is None or host.removed:
            return
        host.removed = True
        if host.up:
            host.crash()
        self.network.set_down(nid, True)
        self.coverage.removals += 1
        self.note(f"n{nid} removed and shut down")

    def submit(self, nid: int, req: ClientRequest) -> None:
        """A client request travels to node `nid` (never synchronously: the client may be
        answering inside a host's Ready handling)."""
        lo, hi = self.params.client_delay
        host = self.hosts.get(nid)
        if host is None:
            return
        self.scheduler.after(self.rng.randint(lo, hi), host.on_client, req)
