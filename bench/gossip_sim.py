"""The gossip ring's figures from issue 6, measured in the simulator.

    python -m bench.gossip_sim [--seeds 20] [--members 1000] [--jobs 2] [--quick]
                               [--only detect,fp,load] [--peers lifeguard,memberlist]

Every run is one seed of `stack.sim.gossip.GossipNet`: real `Gossip` cores, LAN
preset (1 s probe interval), 1 to 5 ms latency, the codec skipped unless said
(the same run either way, see the module). Rings start converged and quiet
(`converged_ring`). Three measurements:

* detect: one member of a `--members` ring crashes 10 to 11 s in. Time from the
  crash to the first failed probe of it, to the first member declaring it dead,
  and to every live member knowing it is dead (its FAILED event). Run for
  each of `--peers` (`PEERS`: stack's preset, memberlist with and without
  Lifeguard) on the same seeds: same ring, same victim, same crash time.
* fp: 10% of datagrams lost (push-pull rides TCP and is not), one random member
  paused for 5 s at a random time; nobody crashes, so every FAILED event is a
  false positive. Also counts failed probes, distinct suspicions (member and
  incarnation) and refutations. A `--members` ring for `--fp-duration` seconds
  (Lifeguard) and a `--fp-small-members` ring for `--fp-small-duration` (an
  hour) per seed, every peer of `--peers`.
* load: no faults; packets, messages (piggy-backed ones included) and bytes
  (codec on) sent per member per second, for each ring size in `--sizes`, in a
  window that holds a whole number of push-pull periods of every member.

Results print as they come (one line per run) and as a summary. `--out FILE`
appends each run to FILE (one JSON object a line) as soon as it ends; with
`--resume`, runs already in FILE are not run again (a run is a pure function of
its parameters), so an interrupted invocation can be finished.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from typing import Any

from stack.gossip.config import GossipConfig
from stack.gossip.core import push_pull_scale
from stack.gossip.suspicion import suspicion_timeout
from stack.gossip.types import EventKind, State
from stack.sim.gossip import CountingGossip, GossipNet, Seen

# "lifeguard" is stack's preset. "memberlist" is memberlist's own behaviour with
# Lifeguard (its LAN defaults): no last-chance check of a suspect before declaring
# it dead, no direct answer to a stale accusation (`recheck_suspects`).
# "no-lifeguard" is memberlist without Lifeguard: that, plus a fixed suspicion
# timeout (the minimum, 4 x log10(n) x probe interval, whatever the confirmations)
# and no local health awareness (probe interval and timeout never stretch). What
# stays in all: telling a suspect it is suspected along with the next probe.
# "retransmit-6" is the preset with each broadcast sent 1.5 times as often
# (memberlist's default retransmit_mult is 4): not run unless asked (`--peers`).
_MEMBERLIST = replace(GossipConfig.lan(), recheck_suspects=False)
PEERS: dict[str, GossipConfig] = {
    "lifeguard": GossipConfig.lan(),
    "memberlist": _MEMBERLIST,
    "no-lifeguard": replace(_MEMBERLIST, suspicion_max_timeout_mult=1, awareness_max_multiplier=1),
    "retransmit-6": replace(GossipConfig.lan(), retransmit_mult=6),
}


@dataclass(frozen=True, slots=True)
class Detection:
    seed: int
    members: int
    peer: str
    crashed: str
    crashed_at: float
    first_suspect: float | None  # seconds after the crash: first failed probe of it
    first_dead: float | None  # first member declares it DEAD
    all_dead: float | None  # every live member has (None: not within the limit)
    wrong_failed: int  # FAILED events about members that did not crash
    cpu: float  # CPU seconds the run took (the machine may be shared)

    def line(self) -> str:
        return (
            f"detect {self.peer:12} n={self.members} seed={self.seed}: "
            f"suspect {_s(self.first_suspect)} first dead {_s(self.first_dead)} "
            f"all dead {_s(self.all_dead)} wrong {self.wrong_failed} ({self.cpu:.0f}s CPU)"
        )


@dataclass(frozen=True, slots=True)
class FalsePositives:
    seed: int
    members: int
    peer: str
    duration: float
    loss: float
    paused: str
    paused_at: float
    false_failed: int  # FAILED events (nobody crashed: all are false)
    falsely_dead: int  # distinct members someone declared dead
    failed_probes: int  # each raised or confirmed a suspicion
    suspicions: int  # distinct (member, incarnation) suspected by a failed probe
    suspicions_of_paused: int  # ... of the paused member, from its pause to 1 s after
    refutations: int  # members defending themselves with a higher incarnation
    refutations_by_paused: int  # ... from its pause to 30 s after
    packets: int
    lost: int
    cpu: float  # CPU seconds the run took (the machine may be shared)

    def line(self) -> str:
        return (
            f"fp     {self.peer:12} n={self.members} seed={self.seed} {self.duration:.0f}s: "
            f"false FAILED {self.false_failed} suspicions {self.suspicions} "
            f"(paused {self.suspicions_of_paused}) refutations {self.refutations} "
            f"lost {self.lost}/{self.packets} ({self.cpu:.0f}s CPU)"
        )


@dataclass(frozen=True, slots=True)
class Load:
    seed: int
    members: int
    window: float
    packets: float  # per member per second, datagrams and streams
    streams: float  # per member per second, push-pull (TCP) only
    messages: float  # per member per second, piggy-backed ones included
    bytes: float  # per member per second
    cpu: float  # CPU seconds the run took (the machine may be shared)

    def line(self) -> str:
        return (
            f"load   n={self.members} seed={self.seed}: {self.packets:.3f} packets "
            f"({self.streams:.4f} push-pull) {self.messages:.3f} messages "
            f"{self.bytes:.0f} B per member per s ({self.cpu:.0f}s CPU)"
        )


Result = Detection | FalsePositives | Load


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


# ---- measurements ---------------------------------------------------------------


def measure_detection(
    seed: int,
    members: int,
    peer: str = "lifeguard",
    *,
    warmup: float = 10.0,
    limit: float = 240.0,
    codec: bool = False,
) -> Detection:
    started = time.process_time()
    net = GossipNet(seed=seed, config=PEERS[peer], core=CountingGossip, codec=codec)
    net.converged_ring(members)
    pick = random.Random(f"detect/{seed}")
    victim = net.name_of(pick.randrange(members))
    net.run_for(warmup + pick.random())
    crashed_at = net.now
    net.crash(victim)
    dead: dict[str, float] = {}

    def on_event(s: Seen) -> None:
        if s.kind is EventKind.FAILED and s.member == victim:
            dead.setdefault(s.observer, s.at - crashed_at)

    net.on_event = on_event
    while len(dead) < members - 1 and net.now < crashed_at + limit:
        net.run_for(1.0)
    # Every live member's FAILED event counts once; check the state agrees.
    everyone = len(dead) == members - 1
    if everyone and any(s is not State.DEAD for s in net.states(victim).values()):
        raise AssertionError(f"seed {seed}: FAILED seen but a member does not hold it DEAD")
    probes = [
        t - crashed_at
        for g in _counting(net)
        for t, target, _ in g.failed_probes
        if target == victim and t >= crashed_at
    ]
    return Detection(
        seed=seed,
        members=members,
        peer=peer,
        crashed=victim,
        crashed_at=crashed_at,
        first_suspect=min(probes, default=None),
        first_dead=min(dead.values(), default=None),
        all_dead=max(dead.values()) if everyone else None,
        wrong_failed=sum(s.kind is EventKind.FAILED and s.member != victim for s in net.seen),
        cpu=time.process_time() - started,
    )


def measure_false_positives(
    seed: int,
    members: int,
    duration: float,
    peer: str = "lifeguard",
    *,
    loss: float = 0.10,
    pause: float = 5.0,
    codec: bool = False,
) -> FalsePositives:
    started = time.process_time()
    net = GossipNet(seed=seed, config=PEERS[peer], core=CountingGossip, codec=codec, loss=loss)
    net.converged_ring(members)
    pick = random.Random(f"fp/{seed}")
    paused = net.name_of(pick.randrange(members))
    margin = min(60.0, duration / 4)  # room before the pause, and after it to settle
    paused_at = pick.uniform(margin, duration - margin)
    net.run_until(paused_at)
    before = net.node(paused).refutations
    net.pause(paused, pause)
    net.run_until(min(duration, paused_at + pause + 30.0))
    refuted = net.node(paused).refutations - before
    net.run_until(duration)
    cores = _counting(net)
    failed = [s for s in net.seen if s.kind is EventKind.FAILED]
    suspicions = {(target, inc) for g in cores for _, target, inc in g.failed_probes}
    return FalsePositives(
        seed=seed,
        members=members,
        peer=peer,
        duration=duration,
        loss=loss,
        paused=paused,
        paused_at=paused_at,
        false_failed=len(failed),
        falsely_dead=len({s.member for s in failed}),
        failed_probes=sum(len(g.failed_probes) for g in cores),
        suspicions=len(suspicions),
        suspicions_of_paused=len(
            {
                (target, inc)
                for g in cores
                for t, target, inc in g.failed_probes
                if target == paused and paused_at <= t <= paused_at + pause + 1.0
            }
        ),
        refutations=sum(g.refutations for g in cores),
        refutations_by_paused=refuted,
        packets=net.packets_sent,
        lost=net.packets_lost,
        cpu=time.process_time() - started,
    )


def load_window(members: int, config: GossipConfig, at_least: float = 150.0) -> float:
    """A window holding a whole number of every member's push-pull periods."""
    period = push_pull_scale(config.push_pull_interval, members)
    return period * math.ceil(at_least / period)


def measure_load(seed: int, members: int, *, codec: bool = True) -> Load:
    started = time.process_time()
    config = GossipConfig.lan()
    net = GossipNet(seed=seed, config=config, codec=codec)
    net.converged_ring(members)
    # Each member's first push-pull falls in [0, interval); from then on they come
    # one scaled period apart, so the window below sees each member's equally often.
    net.run_for(config.push_pull_interval)
    window = load_window(members, config)
    sims = list(net.members.values())
    before = [sum(getattr(m, f) for m in sims) for f in ("packets", "streams", "messages", "bytes")]
    net.run_for(window)
    after = [sum(getattr(m, f) for m in sims) for f in ("packets", "streams", "messages", "bytes")]
    rate = [(a - b) / (members * window) for a, b in zip(after, before, strict=True)]
    return Load(
        seed=seed,
        members=members,
        window=window,
        packets=rate[0],
        streams=rate[1],
        messages=rate[2],
        bytes=rate[3],
        cpu=time.process_time() - started,
    )


def _counting(net: GossipNet) -> list[CountingGossip]:
    return [g for g in net.nodes.values() if isinstance(g, CountingGossip)]


# ---- running many ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Task:
    key: tuple[Any, ...]  # what `key_of` gives for its result
    cost: float  # rough CPU seconds, to start the longest first
    fn: Callable[..., Result]
    args: tuple[Any, ...]


def key_of(r: Result) -> tuple[Any, ...]:
    if isinstance(r, Detection):
        return ("Detection", r.seed, r.members, r.peer)
    if isinstance(r, FalsePositives):
        return ("FalsePositives", r.seed, r.members, r.duration, r.peer)
    return ("Load", r.seed, r.members)


KINDS: dict[str, type[Detection] | type[FalsePositives] | type[Load]] = {
    "Detection": Detection,
    "FalsePositives": FalsePositives,
    "Load": Load,
}


def to_json(r: Result) -> str:
    return json.dumps({"kind": type(r).__name__, **asdict(r)})


def from_json(line: str) -> Result:
    fields = json.loads(line)
    return KINDS[fields.pop("kind")](**fields)


def _call(task: Task) -> Result:
    return task.fn(*task.args)


def run_tasks(
    tasks: Sequence[Task], jobs: int, on_result: Callable[[Result], None]
) -> list[Result]:
    ordered = sorted(tasks, key=lambda t: -t.cost)
    results: list[Result] = []
    if jobs <= 1:
        for t in ordered:
            results.append(_call(t))
            on_result(results[-1])
        return results
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures: list[Future[Result]] = [pool.submit(_call, t) for t in ordered]
        for f in as_completed(futures):
            results.append(f.result())
            on_result(results[-1])
    return results


# ---- summary --------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return (
        f"{statistics.median(values):.2f} / {pct(values, 0.9):.2f} / {max(values):.2f}"
        f" (min {min(values):.2f})"
    )


def summarize(results: Sequence[Result]) -> list[str]:
    out: list[str] = []
    det = [r for r in results if isinstance(r, Detection)]
    if det:
        n = det[0].members
        floor = suspicion_timeout(4, n, 1.0)
        out.append(
            f"Detection, {n} members, one crashed; seconds after the crash, "
            f"median / p90 / max over seeds (memberlist floor: {floor:.1f} s of suspicion)"
        )
        out.append("| peer | seeds | first failed probe | first DEAD | all know DEAD | missed |")
        out.append("| --- | --- | --- | --- | --- | --- |")
        for peer in PEERS:
            rs = sorted((r for r in det if r.peer == peer), key=lambda r: r.seed)
            if not rs:
                continue
            out.append(
                f"| {peer} | {len(rs)} "
                f"| {spread([r.first_suspect for r in rs if r.first_suspect is not None])} "
                f"| {spread([r.first_dead for r in rs if r.first_dead is not None])} "
                f"| {spread([r.all_dead for r in rs if r.all_dead is not None])} "
                f"| {sum(r.all_dead is None for r in rs)} |"
            )
        wrong = sum(r.wrong_failed for r in det)
        out.append(f"FAILED about members that did not crash: {wrong}")
        out.append("")
    fps = [r for r in results if isinstance(r, FalsePositives)]
    if fps:
        out.append("False positives: 10% datagram loss, one member paused 5 s, nobody crashed")
        out.append(
            "| peer | members | seeds x time | false FAILED | members falsely dead "
            "| failed probes | suspicions (of paused) | refutations (by paused) | loss |"
        )
        out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        groups = sorted({(r.members, r.duration, r.peer) for r in fps}, key=lambda k: (-k[0], k))
        for members, duration, peer in groups:
            fr = [r for r in fps if (r.members, r.duration, r.peer) == (members, duration, peer)]
            lost = sum(r.lost for r in fr) / max(1, sum(r.packets for r in fr))
            out.append(
                f"| {peer} | {members} | {len(fr)} x {duration:.0f} s "
                f"| {sum(r.false_failed for r in fr)} | {sum(r.falsely_dead for r in fr)} "
                f"| {sum(r.failed_probes for r in fr)} "
                f"| {sum(r.suspicions for r in fr)} ({sum(r.suspicions_of_paused for r in fr)}) "
                f"| {sum(r.refutations for r in fr)} ({sum(r.refutations_by_paused for r in fr)}) "
                f"| {lost:.1%} |"
            )
        out.append("")
    loads = [r for r in results if isinstance(r, Load)]
    if loads:
        sizes = sorted({r.members for r in loads})
        base = {
            f: statistics.median(getattr(r, f) for r in loads if r.members == sizes[0])
            for f in ("packets", "messages", "bytes")
        }
        out.append("Steady state, no faults: sent per member per second, median over seeds")
        out.append(
            f"| members | seeds | window | packets | vs n={sizes[0]} | of which push-pull "
            f"| messages | vs n={sizes[0]} | bytes | vs n={sizes[0]} |"
        )
        out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for n in sizes:
            lr = [r for r in loads if r.members == n]
            med = {f: statistics.median(getattr(r, f) for r in lr) for f in base}
            streams = statistics.median(r.streams for r in lr)
            out.append(
                f"| {n} | {len(lr)} | {lr[0].window:.0f} s | {med['packets']:.3f} "
                f"| {med['packets'] / base['packets']:.3f} | {streams:.4f} "
                f"| {med['messages']:.3f} | {med['messages'] / base['messages']:.3f} "
                f"| {med['bytes']:.0f} | {med['bytes'] / base['bytes']:.2f} |"
            )
        out.append("")
    return out


# ---- command line -----------------------------------------------------------------


def build_tasks(args: argparse.Namespace) -> list[Task]:
    seeds = range(args.seeds)
    only = set(args.only)
    n = args.members
    tasks: list[Task] = []
    # A task's key is its result's `key_of`: the kind, then the arguments in order.
    if "detect" in only:
        for seed in seeds:
            for peer in args.peers:
                det = (seed, n, peer)
                tasks.append(Task(("Detection", *det), 0.05 * n, measure_detection, det))
    if "fp" in only:
        for seed in seeds:
            runs = []
            if args.fp_duration > 0:
                runs.append((seed, n, args.fp_duration, "lifeguard"))
            if args.fp_small_duration > 0:
                small = (seed, args.fp_small_members, args.fp_small_duration)
                runs.extend((*small, peer) for peer in args.peers)
            for fp in runs:
                cost = 1.3e-3 * fp[1] * fp[2]
                tasks.append(Task(("FalsePositives", *fp), cost, measure_false_positives, fp))
    if "load" in only:
        for seed in range(min(args.load_seeds, args.seeds)):
            for size in args.sizes:
                tasks.append(Task(("Load", seed, size), 0.08 * size, measure_load, (seed, size)))
    return tasks


def machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {load}"
    )


def _peers(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = set(names) - set(PEERS)
    if bad:
        raise argparse.ArgumentTypeError(f"unknown peer(s): {', '.join(sorted(bad))}")
    return names


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = set(names) - {"detect", "fp", "load"}
    if bad:
        raise argparse.ArgumentTypeError(f"unknown measurement(s): {', '.join(sorted(bad))}")
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gossip_sim", description=__doc__)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--members", type=int, default=1000, help="ring for detect and fp")
    ap.add_argument("--jobs", type=int, default=2, help="processes (seeds run in parallel)")
    ap.add_argument("--quick", action="store_true", help="small rings, few seeds: a smoke run")
    ap.add_argument("--only", type=_names, default=["detect", "fp", "load"])
    ap.add_argument(
        "--peers",
        type=_peers,
        default=["lifeguard", "memberlist"],
        help=f"configurations for detect and the small fp ring, of {', '.join(PEERS)}",
    )
    ap.add_argument("--fp-duration", type=float, default=180.0, help="s per seed, big ring")
    ap.add_argument("--fp-small-members", type=int, default=100)
    ap.add_argument("--fp-small-duration", type=float, default=3600.0)
    ap.add_argument("--sizes", type=_ints, default=[10, 30, 100, 300, 1000])
    ap.add_argument(
        "--load-seeds",
        type=int,
        default=5,
        help="seeds per ring size for load (each already averages every member over minutes)",
    )
    ap.add_argument("--out", help="append every run here as it ends (JSON lines)")
    ap.add_argument("--resume", action="store_true", help="skip the runs already in --out")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds = min(args.seeds, 3)
        args.members = min(args.members, 100)
        args.fp_duration = min(args.fp_duration, 120.0)
        args.fp_small_members = min(args.fp_small_members, 30)
        args.fp_small_duration = min(args.fp_small_duration, 300.0)
        args.sizes = [s for s in args.sizes if s <= 100]

    if args.resume and not args.out:
        ap.error("--resume needs --out")

    tasks = build_tasks(args)
    wanted = {t.key for t in tasks}
    done: list[Result] = []
    if args.resume and os.path.exists(args.out):
        with open(args.out) as f:
            done = [r for line in f if line.strip() and key_of(r := from_json(line)) in wanted]
    have = {key_of(r) for r in done}
    out = open(args.out, "a" if args.resume else "w") if args.out else None  # noqa: SIM115

    def on_result(r: Result) -> None:
        print(r.line(), flush=True)
        if out is not None:
            out.write(to_json(r) + "\n")
            out.flush()

    print(machine(), flush=True)
    if done:
        print(f"{len(done)} runs already in {args.out}", flush=True)
    started = time.perf_counter()
    try:
        results = done + run_tasks([t for t in tasks if t.key not in have], args.jobs, on_result)
    finally:
        if out is not None:
            out.close()
    wall = time.perf_counter() - started
    print()
    print("\n".join(summarize(results)))
    cpu = sum(r.cpu for r in results)
    print(
        f"{len(results)} runs ({len(done)} from before), {wall:.0f} s wall with --jobs "
        f"{args.jobs}; the runs took {cpu:.0f} CPU seconds"
    )
    bad = [r for r in results if isinstance(r, Detection) and r.all_dead is None]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
