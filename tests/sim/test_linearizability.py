from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stack.sim.linearizability import (
    LinearizabilityResult,
    Operation,
    OpKind,
    Status,
    check,
)

R, W = OpKind.READ, OpKind.WRITE
A, B, C = b"a", b"b", b"c"

_ids = itertools.count(1)


def w(
    value: bytes | None, invoke: float, ret: float | None, *, key: str = "k", client: int = 0
) -> Operation:
    return Operation(client, key, W, value, invoke, ret, next(_ids))


def r(
    value: bytes | None, invoke: float, ret: float | None, *, key: str = "k", client: int = 1
) -> Operation:
    return Operation(client, key, R, value, invoke, ret, next(_ids))


def ok(*ops: Operation, initial: Mapping[str, bytes | None] | None = None) -> LinearizabilityResult:
    res = check(ops, initial)
    assert res.status is Status.OK, res.explanation
    assert res.ok and not res.unknown and res.key is None
    return res


def bad(
    *ops: Operation, initial: Mapping[str, bytes | None] | None = None, key: str = "k"
) -> LinearizabilityResult:
    res = check(ops, initial)
    assert res.status is Status.VIOLATION, res.explanation
    assert not res.ok and not res.unknown
    assert res.key == key
    # Order of the input must not matter.
    assert check(list(reversed(ops)), initial).status is Status.VIOLATION
    return res


# ---------------------------------------------------------------------------------------------
# Legal histories


def test_empty_history_is_ok() -> None:
    res = ok()
    assert res.steps == 0


def test_sequential_history() -> None:
    ok(
        r(None, 0, 1),
        w(A, 2, 3),
        r(A, 4, 5),
        w(B, 6, 7),
        r(B, 8, 9),
        w(None, 10, 11),
        r(None, 12, 13),
    )


def test_initial_value_is_respected() -> None:
    ok(r(C, 0, 1), w(A, 2, 3), r(A, 4, 5), initial={"k": C})
    bad(r(None, 0, 1), initial={"k": C})


@pytest.mark.parametrize("seen", [A, B])
def test_overlapping_writes_later_read_sees_either(seen: bytes) -> None:
    ok(w(A, 0, 10, client=0), w(B, 1, 9, client=2), r(seen, 20, 21), r(seen, 22, 23))


@pytest.mark.parametrize("seen", [None, A])
def test_read_concurrent_with_write_sees_old_or_new(seen: bytes | None) -> None:
    ok(w(A, 0, 10), r(seen, 2, 3), r(A, 11, 12))


def test_concurrent_reads_may_flip_between_old_and_new_during_write() -> None:
    # Two overlapping reads during a write: one sees new, the other old, in "either" order.
    ok(w(B, 0, 10), r(B, 1, 5, client=1), r(A, 2, 6, client=2), initial={"k": A})


@pytest.mark.parametrize("seen", [A, B])
def test_indeterminate_write_may_or_may_not_be_seen(seen: bytes) -> None:
    ok(w(A, 0, 1), w(B, 2, None), r(seen, 5, 6), r(seen, 7, 8))


def test_indeterminate_write_can_take_effect_long_after_invoke() -> None:
    ok(w(A, 0, 1), w(B, 2, None), r(A, 5, 6), r(A, 7, 8), r(B, 100, 101), r(B, 102, 103))


def test_indeterminate_write_then_reads_new_then_old_concurrent_reads_ok() -> None:
    # R1 sees b, R2 sees a, but they overlap: R2 can be linearized before the write.
    ok(w(A, 0, 1), w(B, 2, None), r(B, 5, 8, client=1), r(A, 6, 7, client=2))


def test_indeterminate_write_old_then_new_sequential_reads_ok() -> None:
    ok(w(A, 0, 1), w(B, 2, None), r(A, 5, 6), r(B, 7, 8))


def test_indeterminate_write_whose_value_was_read_from_another_write_may_never_happen() -> None:
    # R1 reads b from W1.  W3 (b, no answer) is invoked after W2 (a) returned: had W3 taken
    # effect before R3, R3 would read b.  So W3 took effect after R3, or never.
    ok(w(B, 0, 1), w(A, 2, 3), r(B, 0.5, 10), w(B, 4, None), r(A, 11, 12))
    ok(w(B, 0, 1), w(A, 2, 3), r(B, 0.5, 10), w(B, 4, None), r(A, 11, 12), r(B, 13, 14))
    # ...but if a read of b after W2 shows that W3 did take effect, R3 is stale.
    bad(w(B, 0, 1), w(A, 2, 3), r(B, 0.5, 10), w(B, 4, None), r(B, 5, 6), r(A, 11, 12))


def test_indeterminate_write_of_the_initial_value_may_never_happen() -> None:
    # R1 can read the initial a; the only write of a (no answer) must not be forced to happen.
    ok(r(A, 0, 10), w(B, 1, 2), w(A, 3, None), r(B, 11, 12), initial={"k": A})
    bad(r(A, 0, 10), w(B, 1, 2), w(A, 3, None), r(B, 11, 12), r(A, 13, 14), r(B, 15, 16))


def test_indeterminate_sole_writer_must_precede_first_read_of_its_value() -> None:
    # The unanswered write is the only source of b, so it happened before R1 returned.
    bad(w(B, 0, None), r(B, 1, 2), r(None, 3, 4), r(B, 5, 6))
    ok(w(B, 0, None), r(None, 1, 2), r(B, 3, 4), r(B, 5, 6))


def test_only_indeterminate_writes_is_ok() -> None:
    ok(w(A, 0, None), w(B, 1, None))


def test_unanswered_read_carries_no_information() -> None:
    ok(w(A, 0, 1), r(b"garbage", 2, None), r(A, 3, 4))


def test_write_of_none_deletes() -> None:
    ok(w(A, 0, 1), w(None, 2, 3), r(None, 4, 5))
    bad(w(A, 0, 1), w(None, 2, 3), r(A, 4, 5))


def test_many_duplicate_values() -> None:
    ok(w(A, 0, 1), w(A, 2, 3), w(B, 2, 6), r(A, 4, 5), r(B, 7, 8), w(A, 9, 10), r(A, 11, 12))


# ---------------------------------------------------------------------------------------------
# Tie rule: an op returning at t and one invoked at t are concurrent.


def test_touching_intervals_are_concurrent() -> None:
    # Write returns at 5, read invoked at 5 may still see the old value...
    ok(w(A, 0, 5), r(None, 5, 6))
    # ...but a read invoked strictly later may not.
    bad(w(A, 0, 5), r(None, 5.001, 6))


def test_touching_reads_new_then_old_not_a_violation() -> None:
    ok(w(B, 0, 10), r(B, 2, 4), r(A, 4, 5), initial={"k": A})
    bad(w(B, 0, 10), r(B, 2, 4), r(A, 4.5, 5), initial={"k": A})


def test_zero_length_operations() -> None:
    ok(w(A, 1, 1), r(A, 1, 1), w(B, 1, 1), r(B, 1, 1))
    ok(w(A, 1, 1), r(A, 2, 2))
    bad(w(A, 1, 1), r(None, 2, 2))


# ---------------------------------------------------------------------------------------------
# Violations


def test_stale_read() -> None:
    res = bad(w(A, 0, 1), w(B, 2, 3), r(A, 4, 5))
    assert "b'a'" in res.explanation and "b'b'" in res.explanation


def test_read_of_value_never_written() -> None:
    bad(w(A, 0, 1), r(b"zzz", 2, 3))
    bad(r(b"zzz", 0, 10), w(b"zzz", 11, 12))  # written only after the read returned
    bad(r(A, 0, 1), w(A, 2, None))  # indeterminate write invoked after the read returned


def test_sequential_reads_new_then_old() -> None:
    # Both reads overlap the (long) write but follow each other: new then old is impossible.
    bad(w(A, 0, 1), w(B, 2, 10), r(B, 3, 4), r(A, 5, 6))


def test_indeterminate_write_seen_then_unseen_by_sequential_reads() -> None:
    # R1 sees b, so the indeterminate write took effect before 6; R2 (after R1) can't see a.
    bad(w(A, 0, 1), w(B, 2, None), r(B, 5, 6), r(A, 7, 8))


def test_lost_acknowledged_write() -> None:
    bad(w(A, 0, 1), r(None, 2, 3))
    bad(w(A, 0, 1), r(C, 2, 3), initial={"k": C})
    bad(w(A, 0, 1), w(B, 2, 3), r(A, 4, 5), r(B, 6, 7))


def test_violation_on_one_key_among_many_clean_keys() -> None:
    ops: list[Operation] = []
    for i in range(10):
        key = f"k{i}"
        ops += [w(A, 0, 1, key=key), r(A, 2, 3, key=key), w(B, 4, 5, key=key)]
        ops.append(r(A if key == "k7" else B, 6, 7, key=key))
    res = check(ops)
    assert res.status is Status.VIOLATION
    assert res.key == "k7"
    assert "'k7'" in res.explanation


def test_explanation_shows_prefix_and_unplaceable_op() -> None:
    stale = r(A, 4, 5)
    res = bad(w(A, 0, 1), w(B, 2, 3), stale)
    assert "linearizable prefix: 2 ops" in res.explanation
    assert f"#{stale.op_id} " in res.explanation
    assert "register holds b'b'" in res.explanation


def test_invalid_operations_are_rejected() -> None:
    with pytest.raises(ValueError):
        check([w(A, 5, 4)])
    with pytest.raises(ValueError):
        check([r(A, float("nan"), 1)])
    with pytest.raises(ValueError):
        check([w(A, 0, 1)], max_steps_per_key=0)


# ---------------------------------------------------------------------------------------------
# Budget


def test_budget_exhaustion_is_unknown_not_ok() -> None:
    ops = [w(A, 0, 1), r(A, 2, 3), r(A, 4, 5)]
    res = check(ops, max_steps_per_key=2)
    assert res.status is Status.UNKNOWN
    assert res.unknown and not res.ok
    assert res.key == "k"
    assert res.steps <= 2
    assert "budget" in res.explanation
    assert check(ops).ok


def test_violation_on_a_later_key_beats_unknown() -> None:
    ops = [w(A, 0, 1, key="a"), r(A, 2, 3, key="a"), r(A, 4, 5, key="a"), r(C, 0, 1, key="b")]
    res = check(ops, max_steps_per_key=2)
    assert res.status is Status.VIOLATION
    assert res.key == "b"


# ---------------------------------------------------------------------------------------------
# Reference implementation: brute force over all subsets/permutations (tiny histories only)


def brute_force(ops: Sequence[Operation], init: bytes | None) -> bool:
    ops = [op for op in ops if op.kind is W or op.ret is not None]
    optional = [i for i, op in enumerate(ops) if op.ret is None]
    for drop_n in range(len(optional) + 1):
        for dropped in itertools.combinations(optional, drop_n):
            kept = [op for i, op in enumerate(ops) if i not in dropped]
            for perm in itertools.permutations(kept):
                if _legal_order(perm, init):
                    return True
    return False


def _legal_order(perm: Sequence[Operation], init: bytes | None) -> bool:
    for i, later in enumerate(perm):
        for earlier in perm[:i]:
            if later.ret is not None and later.ret < earlier.invoke:
                return False  # `later` really finished before `earlier` started
    state = init
    for op in perm:
        if op.kind is W:
            state = op.value
        elif op.value != state:
            return False
    return True


@st.composite
def tiny_histories(draw: st.DrawFn) -> tuple[list[Operation], bytes | None]:
    ops: list[Operation] = []
    for n in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(OpKind))
        value = draw(st.sampled_from([None, A, B]))
        invoke = draw(st.integers(0, 6))
        ret = None if draw(st.integers(0, 4)) == 0 else invoke + draw(st.integers(0, 4))
        ops.append(Operation(n % 3, "k", kind, value, invoke, ret, n))
    return ops, draw(st.sampled_from([None, A]))


@settings(max_examples=400, deadline=None)
@given(tiny_histories())
def test_matches_brute_force(case: tuple[list[Operation], bytes | None]) -> None:
    ops, init = case
    res = check(ops, {"k": init})
    assert res.status is not Status.UNKNOWN
    assert res.ok == brute_force(ops, init), res.explanation


# ---------------------------------------------------------------------------------------------
# Property: histories produced by a real register (with jittered intervals) are linearizable


def simulate(
    rng: random.Random,
    *,
    n_clients: int,
    n_keys: int,
    ops_per_client: int,
    values: Sequence[bytes | None],
    timeout_p: float = 0.05,
    integer_times: bool = False,
) -> tuple[list[Operation], dict[str, bytes | None]]:
    """Run a real register: each op takes effect at a point inside its recorded interval."""
    keys = [f"k{i}" for i in range(n_keys)]
    initial: dict[str, bytes | None] = {k: rng.choice([None, b"init"]) for k in keys}

    def span(lo: float, hi: float) -> float:
        return float(rng.randint(int(lo), int(hi))) if integer_times else rng.uniform(lo, hi)

    planned = []  # (linearization point, tie-break, op fields...)
    for client in range(n_clients):
        t = span(0, 5)
        for _ in range(ops_per_client):
            key, kind = rng.choice(keys), rng.choice([R, W])
            value = rng.choice(values) if kind is W else None
            invoke = t
            lin = invoke + span(0, 4)
            ret: float | None = lin + span(0, 4)
            applied = True
            if rng.random() < timeout_p:  # client gives up: outcome unknown
                applied = rng.random() < 0.5
                lin = invoke + span(0, 12)  # may take effect after the client gave up
                t = invoke + span(0, 6)
                ret = None
            else:
                assert ret is not None
                t = ret
            t += span(0, 3)
            if not applied:
                lin = float("inf")  # never takes effect (an unanswered read is dropped)
            planned.append((lin, rng.random(), client, key, kind, value, invoke, ret))
    planned.sort(key=lambda p: (p[0], p[1]))
    state = dict(initial)
    ops: list[Operation] = []
    for lin, _, client, key, kind, value, invoke, ret in planned:
        if lin != float("inf"):
            if kind is W:
                state[key] = value
            else:
                value = state[key] if ret is not None else b"garbage"
        ops.append(Operation(client, key, kind, value, invoke, ret, len(ops)))
    rng.shuffle(ops)
    return ops, initial


@st.composite
def register_histories(draw: st.DrawFn) -> tuple[list[Operation], dict[str, bytes | None]]:
    rng = random.Random(draw(st.integers(0, 2**32)))
    return simulate(
        rng,
        n_clients=draw(st.integers(1, 6)),
        n_keys=draw(st.integers(1, 3)),
        ops_per_client=draw(st.integers(0, 10)),
        values=draw(st.sampled_from([[A, B], [A, B, C, None], [bytes([i]) for i in range(50)]])),
        timeout_p=draw(st.sampled_from([0.0, 0.1, 0.3])),
        integer_times=draw(st.booleans()),
    )


@settings(max_examples=300, deadline=None)
@given(register_histories())
def test_register_histories_are_linearizable(
    case: tuple[list[Operation], dict[str, bytes | None]],
) -> None:
    ops, initial = case
    res = check(ops, initial)
    assert res.status is Status.OK, res.explanation


@settings(max_examples=300, deadline=None)
@given(register_histories(), st.data())
def test_mutated_read_is_a_violation(
    case: tuple[list[Operation], dict[str, bytes | None]], data: st.DataObject
) -> None:
    ops, initial = case
    reads = [i for i, op in enumerate(ops) if op.kind is R and op.ret is not None]
    assume(reads)
    i = data.draw(st.sampled_from(reads))
    victim = ops[i]
    ops[i] = Operation(
        victim.client, victim.key, R, b"never written", victim.invoke, victim.ret, victim.op_id
    )
    res = check(ops, initial)
    assert res.status is Status.VIOLATION
    assert res.key == victim.key
    assert f"#{victim.op_id} " in res.explanation


# ---------------------------------------------------------------------------------------------
# Performance sanity (step counts, not wall-clock)


def test_large_history_stays_well_under_budget() -> None:
    rng = random.Random(1234)
    ops, initial = simulate(
        rng, n_clients=10, n_keys=20, ops_per_client=200, values=[A, B, C], timeout_p=0.02
    )
    assert len(ops) == 2000
    res = check(ops, initial)
    assert res.status is Status.OK, res.explanation
    assert res.steps < 20 * len(ops)


def test_single_hot_key_with_ten_clients_stays_under_budget() -> None:
    rng = random.Random(99)
    ops, initial = simulate(
        rng, n_clients=10, n_keys=1, ops_per_client=100, values=[A, B], timeout_p=0.05
    )
    res = check(ops, initial, max_steps_per_key=200_000)
    assert res.status is Status.OK, res.explanation


@pytest.mark.parametrize("seed", range(3))
def test_hot_key_violation_with_timeouts_is_found_within_budget(seed: int) -> None:
    # Unique values (as the simulator writes them) keep indeterminate writes cheap: a
    # violation at the very end of a 200-op, 10-client, single-key history is still found.
    rng = random.Random(seed)
    values = [f"v{i}".encode() for i in range(10_000)]
    ops, initial = simulate(
        rng, n_clients=10, n_keys=1, ops_per_client=20, values=values, timeout_p=0.1
    )
    assert check(ops, initial).ok
    last = max(
        (i for i, op in enumerate(ops) if op.kind is R and op.ret is not None),
        key=lambda i: ops[i].invoke,
    )
    victim = ops[last]
    ops[last] = Operation(victim.client, "k0", R, b"bogus", victim.invoke, victim.ret, 999)
    res = check(ops, initial, max_steps_per_key=200_000)
    assert res.status is Status.VIOLATION, res.explanation
    assert "#999 " in res.explanation
