"""Safety checkers for a simulated Raft cluster.

`RaftInvariants` is fed by the cluster harness as things happen (a node became leader, a
node persisted entries, learned a commit index, applied an entry, took or installed a
snapshot) and raises `Violation` the moment a property of the Raft paper breaks:

- election safety: at most one leader per term;
- log matching: one (index, term) names one entry, and logs that agree on an entry agree
  on everything before it;
- leader completeness: an entry committed in term t is in the log of every leader of a
  term after t;
- state-machine safety: no two nodes apply different entries (or install different
  snapshots) at one index; each node applies in index order.

The end-of-run checks compare the converged state machines, look for acknowledged writes
that vanished, and run the linearizability checker over the client history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from stack.raft.types import Entry
from stack.sim import linearizability
from stack.sim.linearizability import Operation

ELECTION_SAFETY = "election_safety"
LOG_MATCHING = "log_matching"
LEADER_COMPLETENESS = "leader_completeness"
STATE_MACHINE_SAFETY = "state_machine_safety"
APPLY_ORDER = "apply_order"
CONVERGENCE = "convergence"
ACKED_WRITE_LOST = "acked_write_lost"
LINEARIZABILITY = "linearizability"
LIVENESS = "liveness"
CORE_ERROR = "core_error"  # the core raised, or broke its contract with the host


class Violation(Exception):
    def __init__(self, checker: str, detail: str) -> None:
        self.checker = checker
        self.detail = detail
        super().__init__(f"{checker}: {detail}")


class LogView(Protocol):
    """What the checkers need to see of one node's log."""

    @property
    def snapshot_index(self) -> int: ...

    @property
    def last_index(self) -> int: ...

    def entry(self, index: int) -> Entry | None: ...


@dataclass(frozen=True, slots=True)
class StaticLog:
    """A log written out by hand (tests) or copied from a disk: entries after a snapshot."""

    entries: tuple[Entry, ...] = ()
    snapshot_index: int = 0

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot_index

    def entry(self, index: int) -> Entry | None:
        pos = index - self.snapshot_index - 1
        if 0 <= pos < len(self.entries):
            return self.entries[pos]
        return None


def _show(e: Entry | None) -> str:
    if e is None:
        return "nothing"
    data = e.data if len(e.data) <= 24 else e.data[:24] + b"..."
    return f"(index {e.index}, term {e.term}, {e.type.name}, {data!r})"


class RaftInvariants:
    """Continuous Raft safety checks; every `on_*` call may raise `Violation`."""

    def __init__(self) -> None:
        self.leader_of_term: dict[int, int] = {}
        self._by_index_term: dict[tuple[int, int], Entry] = {}
        self.applied: dict[int, Entry] = {}  # first entry applied anywhere at each index
        # For each committed index, an upper bound on the term in which it was committed:
        # the term of the first node seen knowing it committed (a node learns commit
        # indexes only from leaders of its own term or older ones).
        self._commit_term: dict[int, int] = {}
        self.max_commit = 0
        self._node_applied: dict[int, int] = {}
        self._snapshot_digest: dict[int, tuple[int, bytes]] = {}  # index -> (term, digest)

    # -- election safety + leader completeness
    def on_leader(self, node: int, term: int, log: LogView) -> None:
        other = self.leader_of_term.setdefault(term, node)
        if other != node:
            raise Violation(ELECTION_SAFETY, f"nodes {other} and {node} both lead term {term}")
        self._check_complete(node, term, log)

    def _check_complete(self, node: int, term: int, log: LogView) -> None:
        snap = log.snapshot_index
        for index in range(snap + 1, self.max_commit + 1):
            committed = self.applied.get(index)
            if committed is None or self._commit_term.get(index, term) >= term:
                continue
            have = log.entry(index)
            if have != committed:
                raise Violation(
                    LEADER_COMPLETENESS,
                    f"node {node} leads term {term} but holds {_show(have)} at {index}, "
                    f"where {_show(committed)} was committed by term "
                    f"{self._commit_term[index]}",
                )

    # -- log matching
    def on_append(self, node: int, entries: Iterable[Entry]) -> None:
        seen = self._by_index_term
        for e in entries:
            key = (e.index, e.term)
            prior = seen.get(key)
            if prior is None:
                seen[key] = e
            elif prior != e:
                raise Violation(
                    LOG_MATCHING,
                    f"node {node} stores {_show(e)}; another log has {_show(prior)}",
                )

    def check_logs(self, logs: Mapping[int, LogView]) -> None:
        """Pairwise: if two logs hold the same (index, term), they agree up to there."""
        nodes = sorted(logs)
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                _check_pair(a, logs[a], b, logs[b])

    # -- commit, apply, snapshots
    def on_commit(self, node: int, term: int, commit: int) -> None:
        if commit > self.max_commit:
            for index in range(self.max_commit + 1, commit + 1):
                self._commit_term[index] = term
            self.max_commit = commit

    def on_apply(self, node: int, entry: Entry) -> bool:
        """Record an applied entry; returns True if it is the first time any node applied
        this index (the cluster counts conf changes and snapshots once that way)."""
        last = self._node_applied.get(node)
        if last is not None and entry.index != last + 1:
            raise Violation(APPLY_ORDER, f"node {node} applies {entry.index} right after {last}")
        self._node_applied[node] = entry.index
        prior = self.applied.get(entry.index)
        if prior is None:
            self.applied[entry.index] = entry
            return True
        if prior != entry:
            raise Violation(
                STATE_MACHINE_SAFETY,
                f"node {node} applies {_show(entry)}; another node applied {_show(prior)}",
            )
        return False

    def on_snapshot(self, node: int, index: int, term: int, digest: bytes) -> None:
        """A node took (or installed and restored) a state machine snapshot at `index`."""
        prior = self._snapshot_digest.setdefault(index, (term, digest))
        if prior != (term, digest):
            raise Violation(
                STATE_MACHINE_SAFETY,
                f"node {node} has a snapshot at {index} (term {term}) that differs from "
                f"another node's (term {prior[0]})",
            )
        applied = self.applied.get(index)
        if applied is not None and applied.term != term:
            raise Violation(
                STATE_MACHINE_SAFETY,
                f"node {node} has a snapshot at {index} of term {term}, "
                f"but {_show(applied)} was applied there",
            )

    def on_restore(self, node: int, index: int) -> None:
        """The node's state machine now reflects exactly the entries up to `index`."""
        self._node_applied[node] = index


def _check_pair(a: int, la: LogView, b: int, lb: LogView) -> None:
    lo = max(la.snapshot_index, lb.snapshot_index) + 1
    hi = min(la.last_index, lb.last_index)
    matched = False
    for index in range(hi, lo - 1, -1):
        ea, eb = la.entry(index), lb.entry(index)
        if ea is None or eb is None:
            continue
        if ea.term == eb.term or matched:
            matched = True
            if ea != eb:
                raise Violation(
                    LOG_MATCHING,
                    f"nodes {a} and {b} agree on a later entry but differ at {index}: "
                    f"{_show(ea)} vs {_show(eb)}",
                )


# ------------------------------------------------------------------ end of run


def check_convergence(states: Mapping[int, tuple[int, bytes]]) -> None:
    """Every live node's state machine: (applied index, digest of its contents)."""
    if not states:
        raise Violation(CONVERGENCE, "no live node to compare")
    first = min(states)
    want = states[first]
    for node in sorted(states):
        if states[node] != want:
            raise Violation(
                CONVERGENCE,
                f"node {node} applied {states[node][0]} with digest {states[node][1].hex()[:12]},"
                f" node {first} applied {want[0]} with digest {want[1].hex()[:12]}",
            )


@dataclass(frozen=True, slots=True)
class AckedWrite:
    client: int
    op_id: int
    index: int  # where it was applied when it was acknowledged


def check_acked_writes(acked: Iterable[AckedWrite], final: Mapping[tuple[int, int], int]) -> None:
    """`final` maps (client, op_id) of every command in a converged state machine to its
    index: an acknowledged write must be there, at the index it was acknowledged at."""
    for w in acked:
        got = final.get((w.client, w.op_id))
        if got != w.index:
            where = "missing" if got is None else f"at index {got}"
            raise Violation(
                ACKED_WRITE_LOST,
                f"client {w.client} op {w.op_id} was acknowledged at index {w.index}, "
                f"but the final state has it {where}",
            )


def check_linearizable(history: Iterable[Operation]) -> str:
    """Raises Violation unless the history is linearizable; returns the checker's summary.
    An exhausted search budget counts as a failure, never as a pass."""
    result = linearizability.check(history)
    if not result.ok:
        raise Violation(LINEARIZABILITY, result.explanation)
    return result.explanation
