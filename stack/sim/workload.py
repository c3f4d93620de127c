"""What happens to a simulated cluster: clients, membership changes, and faults.

Clients do linearizable reads (ReadIndex) and writes on a few keys, one operation at a
time each, and record every operation with virtual invoke/return times for the
linearizability checker. The membership driver adds brand-new nodes as learners,
promotes them and removes voters, one change at a time. The nemesis crashes, restarts,
partitions, pauses, drops bursts of packets, transfers leadership and forces elections.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from stack.raft.core import Raft
from stack.raft.errors import NotLeader, ProposalDropped
from stack.raft.types import ConfChange, ConfChangeType
from stack.sim.checkers import AckedWrite
from stack.sim.clock import TICK
from stack.sim.cluster import Cluster
from stack.sim.host import ClientRequest, Host, Outcome
from stack.sim.linearizability import Operation, OpKind


@dataclass(frozen=True, slots=True)
class WorkloadParams:
    clients: int = 4
    keys: int = 3
    read_ratio: float = 0.5
    think: tuple[int, int] = (0, 8)  # ticks between a client's operations
    op_timeout: int = 40  # ticks; a timed-out write is indeterminate, a timed-out read dropped


@dataclass(frozen=True, slots=True)
class FaultParams:
    interval: tuple[int, int] = (30, 250)  # ticks between two fault actions
    crash_down: tuple[int, int] = (10, 300)  # ticks a crashed node stays down
    power_down: tuple[int, int] = (1, 30)  # ticks each node stays down after a power loss
    partition_len: tuple[int, int] = (10, 300)
    pause_len: tuple[int, int] = (5, 60)
    burst_len: tuple[int, int] = (10, 100)
    burst_drop: float = 0.3
    max_down: int = 0  # most members down at once; 0 = a minority of the voters
    leader_bias: float = 0.5  # chance that a crash/pause/isolation targets the leader
    crash_new_leader: float = 0.0  # chance that a newly elected leader crashes right away
    # ticks after its election (one window drawn at random per crash)
    new_leader_windows: tuple[tuple[float, float], ...] = ((0, 3),)
    membership_every: tuple[int, int] = (100, 400)  # ticks between membership steps
    max_voters: int = 0  # 0 = initial size + 1
    # relative weights of the fault actions
    weights: tuple[tuple[str, int], ...] = (
        ("crash", 4),
        ("partition", 3),
        ("isolate_leader", 2),
        ("one_way", 2),
        ("pause", 2),
        ("drop_burst", 2),
        ("transfer", 2),
        ("campaign", 1),
        ("power_loss", 1),
    )


def _ticks(rng: random.Random, span: tuple[float, float]) -> int:
    return rng.randint(int(span[0] * TICK), int(span[1] * TICK))


# ---------------------------------------------------------------- clients


class Client:
    def __init__(self, cid: int, workload: Workload) -> None:
        self.id = cid
        self.w = workload
        self.rng = random.Random(f"{workload.cluster.seed}/client/{cid}")
        self.leader = 0  # who this client believes leads (0 = unknown)
        self.req: ClientRequest | None = None
        self.invoke = 0
        self.next_op = 1

    def schedule_next(self) -> None:
        self.w.cluster.scheduler.after(_ticks(self.rng, self.w.params.think), self._issue)

    def _issue(self, _: object = None) -> None:
        w = self.w
        if not w.active or self.req is not None:
            return
        p = w.params
        key = f"k{self.rng.randrange(p.keys)}"
        op_id = self.next_op
        self.next_op += 1
        write = self.rng.random() >= p.read_ratio
        value = b"%d.%d" % (self.id, op_id) if write else None
        self.req = ClientRequest(self.id, op_id, write, key, value, self._reply)
        self.invoke = w.cluster.scheduler.now
        w.cluster.scheduler.after(p.op_timeout * TICK, self._timeout, op_id)
        self._send(self.leader or self._any_node())

    def _any_node(self) -> int:
        return self.rng.choice([h.id for h in self.w.cluster.members()])

    def _send(self, node: int) -> None:
        if self.req is not None:
            self.w.cluster.submit(node, self.req)

    def _resend(self, attempt: tuple[ClientRequest, int]) -> None:
        req, node = attempt
        if req is self.req:  # not an attempt of an operation that has since ended
            self._send(node)

    def _reply(self, req: ClientRequest, outcome: str, arg: object) -> None:
        if req is not self.req:
            return  # an answer to an operation that already timed out
        c = self.w.cluster
        cov = c.coverage
        if outcome == Outcome.OK:
            if req.write:
                assert isinstance(arg, int)
                cov.writes_ok += 1
                self.w.acked.append(AckedWrite(req.client, req.op_id, arg))
                self._finish(req.value, ret=True)
            else:
                assert arg is None or isinstance(arg, bytes)
                cov.reads_ok += 1
                self._finish(arg, ret=True)
        elif outcome == Outcome.LOST:
            cov.writes_lost += 1
            self._finish(req.value, ret=False)
        else:
            # Nothing entered a log: safe to send the same operation again.
            cov.redirects += 1
            hint = arg if isinstance(arg, int) else 0
            if outcome == Outcome.NOT_LEADER and hint:
                self.leader = hint
                c.scheduler.after(0, self._resend, (req, hint))
            else:
                if outcome == Outcome.NOT_LEADER:
                    self.leader = 0
                node = self.leader or self._any_node()
                c.scheduler.after(self.rng.randint(TICK // 2, 3 * TICK), self._resend, (req, node))

    def _timeout(self, op_id: int) -> None:
        req = self.req
        if req is None or req.op_id != op_id:
            return
        self.leader = 0
        if req.write:
            self.w.cluster.coverage.writes_indeterminate += 1
            self._finish(req.value, ret=False)
        else:
            self.w.cluster.coverage.reads_timed_out += 1
            self.req = None
            self.schedule_next()

    def _finish(self, value: bytes | None, *, ret: bool) -> None:
        req = self.req
        assert req is not None
        now = self.w.cluster.scheduler.now
        kind = OpKind.WRITE if req.write else OpKind.READ
        self.w.history.append(
            Operation(
                self.id,
                req.key,
                kind,
                value,
                self.invoke / TICK,
                now / TICK if ret else None,
                req.op_id,
            )
        )
        if self.w.cluster.trace_ops:
            what = "write" if req.write else "read"
            end = "ok" if ret else "indeterminate"
            self.w.cluster.note(f"c{self.id} {what} {req.key}={value!r} {end}")
        self.req = None
        self.schedule_next()

    def idle(self) -> bool:
        return self.req is None


class Workload:
    def __init__(self, cluster: Cluster, params: WorkloadParams) -> None:
        self.cluster = cluster
        self.params = params
        self.active = True
        self.history: list[Operation] = []
        self.acked: list[AckedWrite] = []
        self.clients = [Client(i + 1, self) for i in range(params.clients)]
        for c in self.clients:
            c.schedule_next()

    def stop(self) -> None:
        self.active = False

    def idle(self) -> bool:
        return all(c.idle() for c in self.clients)


# ---------------------------------------------------------------- membership


class Membership:
    """Adds a new learner, promotes it, removes a voter: one change at a time, >= 3 voters."""

    def __init__(self, cluster: Cluster, params: FaultParams) -> None:
        self.cluster = cluster
        self.params = params
        self.rng = random.Random(f"{cluster.seed}/membership")
        self.joining: int = 0  # a started node the leader has not added yet
        self.max_voters = params.max_voters or cluster.params.nodes + 1
        self.active = True
        self._schedule()

    def _schedule(self) -> None:
        self.cluster.scheduler.after(_ticks(self.rng, self.params.membership_every), self._step)

    def _step(self, _: object = None) -> None:
        if not self.active:
            return
        self.step()
        self._schedule()

    def step(self) -> None:
        c = self.cluster
        leader = c.leader()
        if leader is None or leader.core is None:
            return
        core = leader.core
        conf = core.conf
        if self.joining and self.joining in conf.members():
            self.joining = 0
        cc: ConfChange
        if self.joining:
            if c.hosts[self.joining].removed:
                self.joining = 0
                return
            cc = ConfChange(ConfChangeType.ADD_LEARNER, self.joining)
        elif not self.active:
            return
        elif conf.learners:
            st = core.status()
            nid = min(conf.learners)
            pr = st.progress.get(nid)
            if pr is None or pr.match < st.commit:
                return
            cc = ConfChange(ConfChangeType.ADD_VOTER, nid)
        elif len(conf.voters) < self.max_voters:
            self.joining = c.add_node().id
            cc = ConfChange(ConfChangeType.ADD_LEARNER, self.joining)
        elif len(conf.voters) > 3:
            nid = self.rng.choice(sorted(conf.voters))
            cc = ConfChange(ConfChangeType.REMOVE_NODE, nid)
        else:
            return
        leader.admin(lambda core: self._propose(leader.id, core, cc))

    def _propose(self, nid: int, core: Raft, cc: ConfChange) -> None:
        try:
            index = core.propose_conf_change(cc)
        except (NotLeader, ProposalDropped):
            return
        self.cluster.note(f"n{nid} proposes {cc.type.name} n{cc.node_id} at {index}")

    def settle(self) -> None:
        """Healing phase: finish adding a node that was started, change nothing else."""
        self.active = False
        if self.joining:
            self.step()

    def settled(self) -> bool:
        return self.joining == 0


# ---------------------------------------------------------------- nemesis


class Nemesis:
    def __init__(self, cluster: Cluster, params: FaultParams, baseline_drop: float) -> None:
        self.cluster = cluster
        self.params = params
        self.rng = random.Random(f"{cluster.seed}/nemesis")
        self.active = True
        self.baseline_drop = baseline_drop
        self._names = [n for n, _ in params.weights]
        self._weights = [w for _, w in params.weights]
        self._partitioned = False
        self._bursting = False
        self._schedule()
        if params.crash_new_leader:
            cluster.leader_listeners.append(self._new_leader)

    def _new_leader(self, host: Host) -> None:
        if self.active and self.rng.random() < self.params.crash_new_leader:
            delay = _ticks(self.rng, self.rng.choice(self.params.new_leader_windows))
            self.cluster.scheduler.after(delay, self._crash_leader, (host.id, host.incarnation))

    def _crash_leader(self, who: tuple[int, int]) -> None:
        nid, incarnation = who
        c = self.cluster
        host = c.hosts[nid]
        down = sum(1 for h in c.members() if not h.up)
        if not self.active or host.incarnation != incarnation or down >= self._max_down():
            return
        c.crash(nid)
        c.scheduler.after(_ticks(self.rng, self.params.crash_down), self._restart, nid)

    def _schedule(self) -> None:
        self.cluster.scheduler.after(_ticks(self.rng, self.params.interval), self._act)

    def _act(self, _: object = None) -> None:
        if not self.active:
            return
        name = self.rng.choices(self._names, self._weights)[0]
        getattr(self, f"_{name}")()
        self._schedule()

    def _target(self) -> Host | None:
        c = self.cluster
        leader = c.leader()
        if leader is not None and self.rng.random() < self.params.leader_bias:
            return leader
        up = c.live()
        return self.rng.choice(up) if up else None

    def _max_down(self) -> int:
        if self.params.max_down:
            return self.params.max_down
        leader = self.cluster.leader()
        voters = len(leader.core.conf.voters) if leader and leader.core else 3
        return max(1, (voters - 1) // 2)

    def _crash(self) -> None:
        c = self.cluster
        down = sum(1 for h in c.members() if not h.up)
        target = self._target()
        if target is None or down >= self._max_down():
            return
        c.crash(target.id)
        c.scheduler.after(_ticks(self.rng, self.params.crash_down), self._restart, target.id)

    def _power_loss(self) -> None:
        """Every node loses power at once: whatever was not synced anywhere is gone."""
        c = self.cluster
        up = [h.id for h in c.live()]
        if not up:
            return
        c.note("power loss: every node crashes")
        for nid in up:
            c.crash(nid)
            c.scheduler.after(_ticks(self.rng, self.params.power_down), self._restart, nid)

    def _restart(self, nid: int) -> None:
        if self.active:
            self.cluster.restart(nid)

    def _cut(self, groups: list[list[int]] | None, one_way: tuple[int, list[int]] | None) -> None:
        c = self.cluster
        if groups is not None:
            c.network.partition(*groups)
            c.note(f"partition {groups}")
        elif one_way is not None:
            node, others = one_way
            if self.rng.random() < 0.5:
                c.network.block([node], others)
                c.note(f"one-way: n{node} cannot send")
            else:
                c.network.block(others, [node])
                c.note(f"one-way: n{node} cannot receive")
        c.coverage.partitions += 1
        self._partitioned = True
        c.scheduler.after(_ticks(self.rng, self.params.partition_len), self._heal)

    def _heal(self, _: object = None) -> None:
        if self._partitioned:
            self.cluster.network.heal()
            self.cluster.note("network healed")
            self._partitioned = False

    def _partition(self) -> None:
        ids = [h.id for h in self.cluster.members()]
        if self._partitioned or len(ids) < 2:
            return
        self.rng.shuffle(ids)
        k = self.rng.randint(1, len(ids) // 2)
        self._cut([sorted(ids[:k]), sorted(ids[k:])], None)

    def _isolate_leader(self) -> None:
        leader = self.cluster.leader()
        if self._partitioned or leader is None:
            return
        others = [h.id for h in self.cluster.members() if h.id != leader.id]
        self._cut([[leader.id], others], None)

    def _one_way(self) -> None:
        target = self._target()
        if self._partitioned or target is None:
            return
        others = [h.id for h in self.cluster.members() if h.id != target.id]
        self._cut(None, (target.id, others))

    def _pause(self) -> None:
        target = self._target()
        if target is not None:
            self.cluster.pause(target.id, _ticks(self.rng, self.params.pause_len))

    def _drop_burst(self) -> None:
        if self._bursting:
            return
        c = self.cluster
        c.network.config.drop = self.params.burst_drop
        self._bursting = True
        c.note(f"drop burst p={self.params.burst_drop}")
        c.scheduler.after(_ticks(self.rng, self.params.burst_len), self._end_burst)

    def _end_burst(self, _: object = None) -> None:
        if self._bursting:
            self.cluster.network.config.drop = self.baseline_drop
            self._bursting = False

    def _transfer(self) -> None:
        c = self.cluster
        leader = c.leader()
        if leader is None or leader.core is None:
            return
        voters = sorted(v for v in leader.core.conf.voters if v != leader.id)
        if not voters:
            return
        to = self.rng.choice(voters)
        leader.admin(lambda core: self._transfer_to(leader.id, core, to))

    def _transfer_to(self, nid: int, core: Raft, to: int) -> None:
        try:
            core.transfer_leadership(to)
        except (NotLeader, ValueError):
            return
        self.cluster.coverage.transfers += 1
        self.cluster.note(f"n{nid} transfers leadership to n{to}")

    def _campaign(self) -> None:
        now = self.cluster.scheduler.now
        up = [h for h in self.cluster.live() if h.core is not None and not h.clock.paused(now)]
        if not up:
            return
        self.rng.choice(up).admin(lambda core: core.campaign())

    def stop(self) -> None:
        """Healing: no new faults; heal the network, end bursts, restart every member."""
        self.active = False
        c = self.cluster
        self._heal()
        self._end_burst()
        c.network.config.drop = 0.0
        c.network.config.duplicate = 0.0
        for h in c.members():
            if not h.up:
                c.restart(h.id)
