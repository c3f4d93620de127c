"""Raft core throughput: proposals committed per second in a 3-node cluster.

The network has zero latency and the disks are lists: what is measured is the core
(propose, step, ready, advance) plus the thinnest possible host loop. A "batch" is how
many proposals the host takes per loop iteration before it handles the Ready: with 64,
one persist, one AppendEntries per follower and one commit cover 64 proposals.

    python bench/raft_core_bench.py [--proposals N] [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from stack.raft.config import RaftConfig
from stack.raft.core import Raft
from stack.raft.types import AnyMessage, ConfState, Entry, Role, Snapshot, SnapshotMeta

PAYLOAD = b"x" * 64


class BenchCluster:
    def __init__(self, seed: int) -> None:
        voters = frozenset({1, 2, 3})
        boot = Snapshot(SnapshotMeta(0, 0, ConfState(voters=voters)), b"")
        self.nodes = {
            nid: Raft(RaftConfig(id=nid), random.Random(seed * 10 + nid), snapshot=boot)
            for nid in sorted(voters)
        }
        self.logs: dict[int, list[Entry]] = {nid: [] for nid in voters}
        self.applied = 0  # entries applied on the leader
        self.inflight: list[AnyMessage] = []
        leader = self.nodes[1]
        leader.campaign()
        self.drain()
        if leader.role is not Role.LEADER:
            raise RuntimeError("node 1 did not become leader")
        self.applied = 0

    def drain(self) -> None:
        nodes = self.nodes
        while True:
            busy = False
            for nid, node in nodes.items():
                while node.has_ready():
                    busy = True
                    rd = node.ready()
                    if rd.entries:
                        log = self.logs[nid]
                        first = rd.entries[0].index
                        del log[first - 1 :]
                        log.extend(rd.entries)
                    self.inflight.extend(rd.messages)
                    if nid == 1:
                        self.applied += len(rd.committed)
                    node.advance(rd)
            if not self.inflight:
                if not busy:
                    return
                continue
            msgs, self.inflight = self.inflight, []
            for m in msgs:
                nodes[m.to].step(m)


def run(batch: int, proposals: int, seed: int) -> float:
    """Proposals committed (and applied on the leader) per second."""
    c = BenchCluster(seed)
    leader = c.nodes[1]
    start_applied = c.applied
    rounds = proposals // batch
    started = time.perf_counter()
    for _ in range(rounds):
        for _ in range(batch):
            leader.propose(PAYLOAD)
        c.drain()
    elapsed = time.perf_counter() - started
    committed = c.applied - start_applied
    if committed < rounds * batch:
        raise RuntimeError(f"only {committed} of {rounds * batch} proposals committed")
    return committed / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--proposals", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    for batch in (1, 64):
        rates = [run(batch, args.proposals, seed) for seed in range(args.runs)]
        print(
            f"batch {batch:>2}: median {statistics.median(rates):>9,.0f} proposals/s "
            f"(min {min(rates):,.0f}, max {max(rates):,.0f}; {args.runs} runs of "
            f"{args.proposals:,} proposals, 3 nodes, zero-latency network)"
        )


if __name__ == "__main__":
    main()
