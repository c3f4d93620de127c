"""One simulated run: a safety phase with faults, then a healing phase that must reach
liveness, then the end-of-run checks. Everything is a function of the seed."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field, replace

from stack.raft.types import Role
from stack.sim import checkers
from stack.sim.checkers import Violation
from stack.sim.clock import TICK
from stack.sim.cluster import Cluster
from stack.sim.coverage import Coverage
from stack.sim.host import ClusterParams, CoreLog, Host
from stack.sim.network import NetConfig
from stack.sim.workload import FaultParams, Membership, Nemesis, Workload, WorkloadParams

HOST_FAULTS = frozenset({"send_before_persist"})
RAFT_FAULTS = frozenset(
    {"double_vote_count", "commit_old_term", "read_without_quorum", "no_log_check_on_vote"}
)


@dataclass(frozen=True, slots=True)
class SimConfig:
    ticks: int = 20_000  # safety phase
    heal_ticks: int = 3_000  # bound on the healing phase
    check_every: int = 100  # ticks between whole-log comparisons
    cluster: ClusterParams = field(default_factory=ClusterParams)
    workload: WorkloadParams = field(default_factory=WorkloadParams)
    faults: FaultParams = field(default_factory=FaultParams)
    net: NetConfig = field(default_factory=lambda: NetConfig(5, 150, drop=0.02, duplicate=0.02))

    def with_faults(self, names: frozenset[str]) -> SimConfig:
        unknown = names - HOST_FAULTS - RAFT_FAULTS
        if unknown:
            raise ValueError(f"unknown faults: {sorted(unknown)}")
        cp = replace(
            self.cluster,
            raft_faults=names & RAFT_FAULTS,
            send_before_persist="send_before_persist" in names,
        )
        return replace(self, cluster=cp)


@dataclass(slots=True)
class RunResult:
    seed: int
    violation: Violation | None
    coverage: Coverage
    trace_hash: str
    trace: list[str]
    ops: int
    elapsed: float
    phase: str  # where the run ended: "safety", "healing", "final", "done"
    replay: str = ""  # how to rerun it (set by whoever knows the command line)

    @property
    def ok(self) -> bool:
        return self.violation is None

    def line(self) -> str:
        status = "ok" if self.violation is None else f"FAIL[{self.violation.checker}]"
        quiet = self.coverage.quiet()
        if quiet:  # a run that exercised little must not pass for a hard one
            status += f" QUIET[{','.join(quiet)}]"
        return (
            f"seed={self.seed} {status} ops={self.ops} {self.coverage.line()} "
            f"hash={self.trace_hash[:12]} {self.elapsed:.2f}s"
        )

    def report(self, last: int = 50) -> str:
        """What a failure prints: seed, checker, detail, and the last trace events."""
        if self.violation is None:
            return self.line()
        tail = self.trace[-last:]
        return "\n".join(
            [
                f"VIOLATION seed={self.seed} checker={self.violation.checker} phase={self.phase}",
                self.violation.detail,
                f"replay: {self.replay or f'python -m stack.sim --replay {self.seed}'}",
                f"last {len(tail)} trace events:",
                *tail,
            ]
        )


class _Run:
    def __init__(self, seed: int, config: SimConfig, trace_messages: bool) -> None:
        self.seed = seed
        self.config = config
        self.cluster = Cluster(
            seed, config.cluster, replace(config.net), trace_messages=trace_messages
        )
        self.workload = Workload(self.cluster, config.workload)
        self.membership = Membership(self.cluster, config.faults)
        self.nemesis = Nemesis(self.cluster, config.faults, config.net.drop)
        self.phase = "safety"

    def check_logs(self) -> None:
        logs = {h.id: CoreLog(h.core) for h in self.cluster.live() if h.core is not None}
        self.cluster.invariants.check_logs(logs)

    def safety(self) -> None:
        c = self.cluster
        step = self.config.check_every * TICK
        end = self.config.ticks * TICK
        while c.scheduler.now < end:
            c.run_until(min(end, c.scheduler.now + step))
            self.check_logs()

    def healing(self) -> None:
        self.phase = "healing"
        c = self.cluster
        self.nemesis.stop()
        self.membership.settle()
        c.note("healing: faults stopped, network healed, all members up")
        start = c.scheduler.now
        deadline = start + self.config.heal_ticks * TICK
        writes_at_start = c.coverage.writes_ok
        stage = "leader"
        while True:
            if c.scheduler.now >= deadline:
                raise Violation(
                    checkers.LIVENESS,
                    f"not healed after {self.config.heal_ticks} ticks: waiting for {stage}"
                    f" ({self._why(stage)})",
                )
            c.run_until(c.scheduler.now + TICK)
            if not self.membership.settled():
                self.membership.settle()
            if stage == "leader" and self._stable_leader():
                stage = "proposals"
            if stage == "proposals" and (
                self.membership.settled()
                and c.coverage.writes_ok > writes_at_start
                and not any(h.pending_writes for h in c.live())
                and self._stable_leader()
            ):
                self.workload.stop()
                stage = "clients"
            if stage == "clients" and self.workload.idle():
                stage = "convergence"
            if stage == "convergence" and self._converged():
                break
        c.coverage.ticks = c.scheduler.now // TICK
        c.note(f"healed after {(c.scheduler.now - start) / TICK:.0f} ticks")

    def _settled_view(self) -> tuple[Host, list[Host]] | None:
        """The one leader and the hosts of its configuration, if all are up and follow it."""
        c = self.cluster
        leaders = [h for h in c.live() if h.core is not None and h.core.role is Role.LEADER]
        if len(leaders) != 1:
            return None
        leader = leaders[0]
        core = leader.core
        if core is None:
            return None
        lid = leader.id
        hosts = []
        for nid in sorted(core.conf.members()):
            h = c.hosts.get(nid)
            if h is None or h.core is None or h.core.leader != lid:
                return None
            hosts.append(h)
        return leader, hosts

    def _stable_leader(self) -> bool:
        return self._settled_view() is not None

    def _converged(self) -> bool:
        view = self._settled_view()
        if view is None or view[0].core is None:
            return False
        leader, hosts = view
        assert leader.core is not None
        st = leader.core.status()
        if st.commit != st.last_index:
            return False
        if any(h.up and h not in hosts for h in self.cluster.members()):
            return False  # a removed node not shut down yet
        return all(h.sm.applied == st.commit for h in hosts)

    def _why(self, stage: str) -> str:
        c = self.cluster
        parts = []
        for h in c.members():
            if h.core is None:
                parts.append(f"n{h.id} down")
                continue
            st = h.core.status()
            parts.append(
                f"n{h.id} {st.role.name} t{st.term} leader={st.leader} commit={st.commit} "
                f"applied={h.sm.applied} last={st.last_index} pending={len(h.pending_writes)}"
            )
        parts.append(f"joining={self.membership.joining} idle={self.workload.idle()}")
        return "; ".join(parts)

    def final(self) -> None:
        self.phase = "final"
        c = self.cluster
        self.check_logs()
        view = self._settled_view()
        if view is None:
            raise Violation(checkers.LIVENESS, "the cluster lost its leader after converging")
        leader, hosts = view
        checkers.check_convergence({h.id: (h.sm.applied, h.sm.digest()) for h in hosts})
        checkers.check_acked_writes(self.workload.acked, leader.sm.cmds)
        summary = checkers.check_linearizable(self.workload.history)
        c.note(summary)
        self.phase = "done"


def run_seed(
    seed: int, config: SimConfig | None = None, *, trace_messages: bool = False
) -> RunResult:
    config = config or SimConfig()
    started = time.perf_counter()
    run = _Run(seed, config, trace_messages)
    c = run.cluster
    violation: Violation | None = None
    try:
        run.safety()
        run.healing()
        run.final()
    except Violation as v:
        violation = v
    except Exception as e:  # the core (or the harness) broke: report it like a violation
        tb = traceback.format_exception(e)
        violation = Violation(checkers.CORE_ERROR, "".join(tb[-6:]).rstrip())
    if violation is not None:
        c.note(f"VIOLATION {violation.checker}: {violation.detail.splitlines()[0]}")
    cov = c.coverage
    cov.ticks = c.scheduler.now // TICK
    st = c.network.stats
    cov.msgs_sent, cov.msgs_dropped = st.sent, st.dropped
    cov.msgs_cut, cov.msgs_duplicated = st.cut, st.duplicated
    return RunResult(
        seed=seed,
        violation=violation,
        coverage=cov,
        trace_hash=c.trace_hash(),
        trace=c.trace,
        ops=len(run.workload.history),
        elapsed=time.perf_counter() - started,
        phase=run.phase,
    )


# ---------------------------------------------------------------- presets

_CHURN_WEIGHTS = (("pause", 1),)
_QUICK_WEIGHTS = (
    ("crash", 7),
    ("partition", 3),
    ("isolate_leader", 2),
    ("one_way", 2),
    ("pause", 2),
    ("drop_burst", 2),
    ("transfer", 2),
    ("campaign", 1),
    ("power_loss", 1),
)
_FSYNC = (2, 30)  # units: 0.02 to 0.3 ticks, against network delays of 0.05 to 1.5 ticks

PRESETS: dict[str, SimConfig] = {
    # The long run: >= 20,000 ticks of faults, thousands of operations, several crashes.
    # Hosts fsync asynchronously (like node.py): leaders send appends before their fsync.
    "default": SimConfig(cluster=ClusterParams(fsync_delay=_FSYNC)),
    # What CI runs over hundreds of seeds: short, and faults come fast.
    "quick": SimConfig(
        ticks=700,
        heal_ticks=1_000,
        cluster=ClusterParams(compact_every=20, fsync_delay=_FSYNC),
        faults=FaultParams(
            interval=(8, 60),
            crash_down=(5, 80),
            partition_len=(5, 80),
            membership_every=(40, 150),
            weights=_QUICK_WEIGHTS,
        ),
    ),
    # Every planted bug but one shows within a few seeds here: five nodes, two may be down.
    "aggressive": SimConfig(
        ticks=600,
        heal_ticks=1_000,
        cluster=ClusterParams(nodes=5),
        faults=FaultParams(interval=(10, 60), max_down=2),
    ),
    # Leaders die right after their election (some before their first append arrives,
    # some just after they commit): the Figure 8 schedule of the Raft paper, over and over.
    "churn": SimConfig(
        ticks=1_000,
        heal_ticks=1_000,
        cluster=ClusterParams(max_size_per_msg=1),
        workload=WorkloadParams(clients=1),
        faults=FaultParams(
            interval=(50, 100),
            max_down=2,
            crash_down=(5, 60),
            crash_new_leader=0.9,
            new_leader_windows=((0, 1), (1, 4)),
            weights=_CHURN_WEIGHTS,
        ),
    ),
    # Elections collide: five nodes, cuts and forced campaigns all the time.
    "elections": SimConfig(
        ticks=400,
        heal_ticks=1_000,
        cluster=ClusterParams(nodes=5),
        workload=WorkloadParams(clients=2),
        faults=FaultParams(
            interval=(5, 30),
            max_down=2,
            partition_len=(5, 40),
            weights=(("partition", 3), ("one_way", 2), ("campaign", 4), ("crash", 2)),
        ),
    ),
    # The leader is cut off from its peers but not from its clients, who keep reading.
    "stale-reads": SimConfig(
        ticks=600,
        heal_ticks=1_000,
        workload=WorkloadParams(clients=6, keys=2, read_ratio=0.7, think=(0, 3)),
        faults=FaultParams(
            interval=(40, 80),
            partition_len=(30, 60),
            weights=(("isolate_leader", 1),),
        ),
    ),
    # Power losses: every node crashes at once and loses whatever it had not synced.
    "power": SimConfig(
        ticks=600,
        heal_ticks=1_000,
        faults=FaultParams(
            interval=(20, 80),
            max_down=2,
            crash_down=(5, 40),
            power_down=(1, 15),
            weights=(("power_loss", 3), ("crash", 2), ("partition", 1)),
        ),
    ),
}


def preset(name: str, *, nodes: int | None = None, ticks: int | None = None) -> SimConfig:
    try:
        config = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
    if nodes is not None:
        config = replace(config, cluster=replace(config.cluster, nodes=nodes))
    if ticks is not None:
        config = replace(config, ticks=ticks)
    return config
