"""Linearizability checker for key/value client histories.

The simulator records every client operation (a read or a write of one key) with the time
it was invoked and the time its answer arrived.  :func:`check` decides whether that history
is linearizable with respect to a map of independent registers.

Algorithm
---------
Linearizability is *local* (P-compositional): a history of a map of registers is
linearizable iff each key's sub-history is linearizable against a single register.  So the
history is partitioned by key and every key is checked on its own, in sorted key order.

Each key is checked with the Wing & Gong search as improved by Lowe ("Testing for
linearizability", 2017): the call and return events are put in a doubly linked list in time
order; the search repeatedly picks a *minimal* operation (one whose call precedes the first
remaining return event), applies it to the register model and, if the model accepts it,
removes ("lifts") its events and continues; when the first remaining event is a return the
branch is stuck and the search backtracks.  Every (set-of-placed-ops, register value)
configuration is entered at most once: placed sets are integer bitsets and visited
configurations are kept in a ``set``.  One more exact pruning: a minimal read that the
register explains is placed at once and is never a branch point (moving it to the front of
any valid completion keeps the completion valid: nothing unplaced must precede it and reads
do not change the register).  The search stops after ``max_steps_per_key`` steps for one
key and reports :attr:`Status.UNKNOWN` (never a silent pass).

Semantics
---------
* Registers start absent (``None``) unless ``initial`` gives a value.  A write of ``None``
  deletes the key.  A read must observe exactly the register value at its linearization point.
* A read with ``ret=None`` (no answer) carries no information and is dropped.
* A write with ``ret=None`` is *indeterminate*: it may take effect at any time after its
  invoke, or never.  Left pending forever it would double the configurations reachable
  after it, so it is normalised exactly.  If such a write ``w`` of value ``v`` is placed
  after the last read (in linearization order) that observes ``v``, deleting it changes no
  read; otherwise the op right after it is a read of ``v`` (nothing else can come next).
  Hence: ``w`` is dropped up front if no answered read observed ``v`` (or all such reads
  returned before ``w`` was invoked); otherwise it gets a deadline, the latest return of a
  read that observed ``v``, where the search drops it if it is still unplaced; and it is only
  tried while a read of ``v`` is minimal.  If ``w`` is the *only* write of ``v`` and ``v``
  is not the initial value, ``w`` must precede every read of ``v``: it becomes an ordinary
  op whose return time is the earliest return of a read that observed ``v``.  Writing unique
  values (recommended for the simulator) keeps every indeterminate write in that last case.

Tie rule (timestamps from a virtual clock are often equal)
-----------------------------------------------------------
Operation A *precedes* B in real time only if ``A.ret < B.invoke`` (strictly).  If A
returns at the very instant B is invoked, the two are treated as concurrent and may be
linearized in either order.  Implemented by sorting events on ``(time, call-before-return)``.
This is the conservative choice: a violation is never reported that depends on how two
equal timestamps would have been ordered.  An operation with ``invoke == ret`` is fine.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["LinearizabilityResult", "OpKind", "Operation", "Status", "check"]

_SHOW_PREFIX = 8  # linearized ops shown before the point where the search got stuck
_SHOW_PENDING = 20  # unplaceable ops shown
_SHOW_UPCOMING = 3  # ops invoked after the stuck point shown


class OpKind(enum.Enum):
    READ = "read"
    WRITE = "write"


class Status(enum.Enum):
    OK = "ok"
    VIOLATION = "violation"
    UNKNOWN = "unknown"  # search budget exhausted: treat as a failure to investigate


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation on one key.

    ``value``: for a WRITE the value written, for a READ the value observed (None = absent).
    ``ret``: when the answer arrived; None = no answer (timed out / outcome unknown).
    """

    client: int
    key: str
    kind: OpKind
    value: bytes | None
    invoke: float
    ret: float | None
    op_id: int = 0


@dataclass(frozen=True, slots=True)
class LinearizabilityResult:
    status: Status
    key: str | None  # first key (in sorted order) that failed; None when OK
    explanation: str
    steps: int  # search steps summed over the keys that were checked

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def unknown(self) -> bool:
        return self.status is Status.UNKNOWN


def check(
    history: Iterable[Operation],
    initial: Mapping[str, bytes | None] | None = None,
    *,
    max_steps_per_key: int = 2_000_000,
) -> LinearizabilityResult:
    """Check that ``history`` is linearizable; see the module docstring for semantics.

    Returns the first VIOLATION in sorted key order; otherwise the first UNKNOWN key (if the
    budget ran out on some key); otherwise OK.  Raises ``ValueError`` for malformed ops.
    """
    if max_steps_per_key < 1:
        raise ValueError("max_steps_per_key must be positive")
    init = initial or {}
    by_key: dict[str, list[Operation]] = {}
    n_ops = 0
    for op in history:
        _validate(op)
        if op.kind is OpKind.READ and op.ret is None:
            continue  # an unanswered read says nothing
        by_key.setdefault(op.key, []).append(op)
        n_ops += 1

    total_steps = 0
    first_unknown: tuple[str, str] | None = None
    for key in sorted(by_key):
        status, steps, text = _check_key(key, by_key[key], init.get(key), max_steps_per_key)
        total_steps += steps
        if status is Status.VIOLATION:
            return LinearizabilityResult(Status.VIOLATION, key, text, total_steps)
        if status is Status.UNKNOWN and first_unknown is None:
            first_unknown = (key, text)
    if first_unknown is not None:
        key, text = first_unknown
        return LinearizabilityResult(Status.UNKNOWN, key, text, total_steps)
    text = f"linearizable: {len(by_key)} keys, {n_ops} ops, {total_steps} steps"
    return LinearizabilityResult(Status.OK, None, text, total_steps)


def _validate(op: Operation) -> None:
    if not isinstance(op.kind, OpKind):
        raise ValueError(f"operation has invalid kind {op.kind!r}: {op}")
    if not math.isfinite(op.invoke):
        raise ValueError(f"operation has non-finite invoke time: {op}")
    if op.ret is not None and (not math.isfinite(op.ret) or op.ret < op.invoke):
        raise ValueError(f"operation returns before it is invoked (or at a bad time): {op}")


def _check_key(
    key: str, history: Sequence[Operation], init: bytes | None, budget: int
) -> tuple[Status, int, str]:
    """WGL search for one key.  Returns (status, steps, explanation)."""
    reduced = _reduce(history, init)
    n = len(reduced)
    if n == 0:
        return Status.OK, 0, f"key {key!r}: linearizable"
    ops = [op for op, _, _ in reduced]
    events: list[tuple[float, int, int]] = []  # (time, 0 = call / 1 = return, op index)
    for i, (op, ret, _) in enumerate(reduced):
        events += [(op.invoke, 0, i), (ret, 1, i)]
    events.sort()  # ties: calls before returns => touching intervals count as concurrent

    # Doubly linked list over event nodes 1..m; node 0 is the head, node m + 1 the tail.
    # Head and tail map to the sentinel op index n, which behaves like an unexplained return.
    m = len(events)
    nxt = [*range(1, m + 2), m + 1]
    prv = [0, *range(m + 1)]
    node_op = [n] * (m + 2)
    is_call = [False] * (m + 2)
    call_node = [0] * n
    ret_node = [0] * n
    for node, (_, kind, i) in enumerate(events, start=1):
        node_op[node] = i
        is_call[node] = kind == 0
        (ret_node if kind else call_node)[i] = node
    writes = [op.kind is OpKind.WRITE for op in ops]
    values = [op.value for op in ops]
    optional = [opt for _, _, opt in reduced] + [False]
    bits = [1 << i for i in range(n)]
    full = (1 << n) - 1

    state = init
    placed = 0  # bitset of ops linearized or (indeterminate writes only) dropped
    stack: list[tuple[int, bytes | None, int]] = []  # (call node, register before, _WRITE...)
    seen: set[tuple[int, bytes | None]] = set()
    best: _DeadEnd | None = None  # the dead end that got furthest in time
    steps = 0
    entry = nxt[0]
    while True:
        steps += 1
        if steps > budget:
            why = f"search budget of {budget} steps exhausted; result unknown"
            return Status.UNKNOWN, steps - 1, _explain(key, ops, init, why, best)
        i = node_op[entry]
        how = -1
        if is_call[entry]:
            if writes[i]:
                how, new_state = _WRITE, values[i]
                if optional[i]:  # only useful right before a read of its value (see top)
                    node = nxt[0]
                    while is_call[node] and (
                        writes[node_op[node]] or values[node_op[node]] != new_state
                    ):
                        node = nxt[node]
                    if not is_call[node]:
                        entry = nxt[entry]
                        continue
            elif values[i] == state:
                how, new_state = _READ, state
            else:
                entry = nxt[entry]
                continue
        elif optional[i]:  # deadline of an unplaced indeterminate write: drop it
            how, new_state = _DROP, state
        elif best is None or (entry, len(stack)) > (best.node, best.depth):
            # Stuck: the op returning here must come before everything still unplaced.
            pending: list[int] = []
            node = nxt[0]
            while node != entry:
                pending.append(node_op[node])
                node = nxt[node]
            upcoming: list[int] = []
            while len(upcoming) < _SHOW_UPCOMING and is_call[node := nxt[node]]:
                upcoming.append(node_op[node])
            prefix = [node_op[c] for c, _, h in stack if h != _DROP]
            best = _DeadEnd(entry, len(stack), prefix, state, pending, upcoming)
        if how >= 0:
            config = (placed | bits[i], new_state)
            if config not in seen:
                seen.add(config)
                call = call_node[i]
                stack.append((call, state, how))
                placed, state = config
                _lift(call, ret_node[i], nxt, prv)
                if placed == full:
                    return Status.OK, steps, f"key {key!r}: linearizable"
                # Place a minimal read that the register explains first, if there is one.
                entry = node = nxt[0]
                while is_call[node]:
                    if not writes[node_op[node]] and values[node_op[node]] == state:
                        entry = node
                        break
                    node = nxt[node]
                continue
            if how == _WRITE:  # already explored from an equivalent configuration
                entry = nxt[entry]
                continue
        # Backtrack to the last write placed.  Reads and drops are not branch points: each
        # was the only move left to try (a drop) or could not have been the wrong move (a read).
        while True:
            if not stack:
                return Status.VIOLATION, steps, _explain(key, ops, init, "not linearizable", best)
            call, state, how = stack.pop()
            i = node_op[call]
            placed &= ~bits[i]
            _unlift(call, ret_node[i], nxt, prv)
            if how == _WRITE:
                break
        entry = nxt[call]


_WRITE, _READ, _DROP = 0, 1, 2  # how an op left the event list (kept on the search stack)


class _DeadEnd(NamedTuple):
    node: int  # the return event the search was stuck at
    depth: int  # search stack depth there
    prefix: list[int]  # ops linearized, in order
    state: bytes | None  # register after the prefix
    pending: list[int]  # minimal ops, none of which led anywhere
    upcoming: list[int]  # the next few ops invoked after the stuck point


def _reduce(ops: Sequence[Operation], init: bytes | None) -> list[tuple[Operation, float, bool]]:
    """(op, return time, optional?) per op, indeterminate writes normalised (see top)."""
    first_seen: dict[bytes | None, float] = {}  # value -> earliest return of a read seeing it
    last_seen: dict[bytes | None, float] = {}  # value -> latest return of a read seeing it
    writers: dict[bytes | None, int] = {}
    for op in ops:
        if op.kind is OpKind.WRITE:
            writers[op.value] = writers.get(op.value, 0) + 1
        elif op.ret is not None:
            first_seen[op.value] = min(first_seen.get(op.value, math.inf), op.ret)
            last_seen[op.value] = max(last_seen.get(op.value, -math.inf), op.ret)
    out: list[tuple[Operation, float, bool]] = []
    for op in ops:
        if op.ret is not None:
            out.append((op, op.ret, False))
            continue
        first, last = first_seen.get(op.value), last_seen.get(op.value, -math.inf)
        if first is None or last < op.invoke:
            continue  # can precede no read of its value: never needed
        if writers[op.value] == 1 and op.value != init and first >= op.invoke:
            out.append((op, first, False))
        else:
            out.append((op, last, True))
    return out


def _lift(call: int, ret: int, nxt: list[int], prv: list[int]) -> None:
    nxt[prv[call]] = nxt[call]
    prv[nxt[call]] = prv[call]
    nxt[prv[ret]] = nxt[ret]
    prv[nxt[ret]] = prv[ret]


def _unlift(call: int, ret: int, nxt: list[int], prv: list[int]) -> None:
    nxt[prv[ret]] = ret
    prv[nxt[ret]] = ret
    nxt[prv[call]] = call
    prv[nxt[call]] = call


def _fmt_time(t: float | None) -> str:
    return "?" if t is None else f"{t:g}"


def _fmt_op(op: Operation) -> str:
    what = "read ->" if op.kind is OpKind.READ else "write"
    span = f"[{_fmt_time(op.invoke)}, {_fmt_time(op.ret)}]"
    return f"#{op.op_id} client {op.client} {what} {op.value!r} {span}"


def _explain(
    key: str,
    ops: Sequence[Operation],
    init: bytes | None,
    why: str,
    best: _DeadEnd | None,
) -> str:
    lines = [f"key {key!r}: {why} ({len(ops)} ops; initial value {init!r})"]
    if best is None:
        return "\n".join(lines)
    _, _, prefix, state, pending, upcoming = best
    lines.append(f"linearizable prefix: {len(prefix)} ops (the dead end that got furthest in time)")
    if len(prefix) > _SHOW_PREFIX:
        lines.append(f"  ... {len(prefix) - _SHOW_PREFIX} earlier ops")
    lines.extend(f"  {_fmt_op(ops[i])}" for i in prefix[-_SHOW_PREFIX:])
    lines.append(f"register after the prefix: {state!r}")
    lines.append("ops that could not be placed next (every order tried fails):")
    for i in pending[:_SHOW_PENDING]:
        op = ops[i]
        if op.kind is OpKind.READ and op.value != state:
            note = f"reads {op.value!r} but register holds {state!r}"
        else:
            note = "placeable, but every continuation fails"
        lines.append(f"  {_fmt_op(op)}  <- {note}")
    if len(pending) > _SHOW_PENDING:
        lines.append(f"  ... {len(pending) - _SHOW_PENDING} more")
    if upcoming:
        lines.append("invoked next:")
        lines.extend(f"  {_fmt_op(ops[i])}" for i in upcoming)
    return "\n".join(lines)
