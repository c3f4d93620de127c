"""Every checker, fed hand-made inputs: it passes what is fine and catches what is not."""

from __future__ import annotations

import pytest

from stack.raft.types import Entry, EntryType
from stack.sim import checkers
from stack.sim.checkers import AckedWrite, RaftInvariants, StaticLog, Violation
from stack.sim.linearizability import Operation, OpKind


def e(index: int, term: int, data: bytes = b"x") -> Entry:
    return Entry(term, index, EntryType.NORMAL, data)


def log(*entries: Entry, snapshot_index: int = 0) -> StaticLog:
    return StaticLog(tuple(entries), snapshot_index)


def raises(checker: str) -> pytest.RaisesExc[Violation]:
    return pytest.raises(Violation, match=f"^{checker}:")


# ---------------------------------------------------------------- election safety


def test_election_safety_allows_one_leader_per_term() -> None:
    inv = RaftInvariants()
    inv.on_leader(1, 1, log())
    inv.on_leader(1, 1, log())  # the same leader seen twice
    inv.on_leader(2, 2, log())


def test_election_safety_catches_two_leaders_in_one_term() -> None:
    inv = RaftInvariants()
    inv.on_leader(1, 3, log())
    with raises(checkers.ELECTION_SAFETY) as exc:
        inv.on_leader(2, 3, log())
    assert "term 3" in exc.value.detail


# ---------------------------------------------------------------- log matching


def test_log_matching_catches_two_entries_with_one_index_and_term() -> None:
    inv = RaftInvariants()
    inv.on_append(1, [e(1, 1, b"a"), e(2, 1, b"b")])
    inv.on_append(2, [e(1, 1, b"a")])  # the same entry again is fine
    with raises(checkers.LOG_MATCHING):
        inv.on_append(3, [e(2, 1, b"other")])


def test_log_matching_pairwise_accepts_divergent_uncommitted_tails() -> None:
    inv = RaftInvariants()
    a = log(e(1, 1, b"a"), e(2, 1, b"b"), e(3, 2, b"c"))
    b = log(e(1, 1, b"a"), e(2, 1, b"b"), e(3, 3, b"d"), e(4, 3, b"e"))
    inv.check_logs({1: a, 2: b})


def test_log_matching_pairwise_catches_different_prefixes() -> None:
    inv = RaftInvariants()
    a = log(e(1, 1, b"a"), e(2, 1, b"b"), e(3, 2, b"c"))
    b = log(e(1, 1, b"a"), e(2, 1, b"X"), e(3, 2, b"c"))
    with raises(checkers.LOG_MATCHING) as exc:
        inv.check_logs({1: a, 2: b})
    assert "differ at 2" in exc.value.detail


def test_log_matching_pairwise_ignores_compacted_prefixes() -> None:
    inv = RaftInvariants()
    a = log(e(3, 2, b"c"), snapshot_index=2)
    b = log(e(1, 1, b"a"), e(2, 1, b"Y"), e(3, 2, b"c"))
    inv.check_logs({1: a, 2: b})


# ---------------------------------------------------------------- leader completeness


def _committed(inv: RaftInvariants, *entries: Entry, term: int) -> None:
    inv.on_commit(1, term, entries[-1].index)
    inv.on_restore(1, entries[0].index - 1)
    for x in entries:
        inv.on_apply(1, x)


def test_leader_completeness_catches_a_leader_missing_a_committed_entry() -> None:
    inv = RaftInvariants()
    _committed(inv, e(1, 1, b"a"), e(2, 1, b"b"), term=1)
    with raises(checkers.LEADER_COMPLETENESS) as exc:
        inv.on_leader(2, 2, log(e(1, 1, b"a")))
    assert "at 2" in exc.value.detail


def test_leader_completeness_catches_a_different_entry_at_a_committed_index() -> None:
    inv = RaftInvariants()
    _committed(inv, e(1, 1, b"a"), term=1)
    with raises(checkers.LEADER_COMPLETENESS):
        inv.on_leader(2, 3, log(e(1, 2, b"z")))


def test_leader_completeness_accepts_compacted_entries_and_older_terms() -> None:
    inv = RaftInvariants()
    _committed(inv, e(1, 1, b"a"), e(2, 4, b"b"), term=4)
    inv.on_leader(2, 5, log(e(2, 4, b"b"), snapshot_index=1))  # index 1 is in its snapshot
    # A leader of a term before the commit does not have to hold it (a stale election).
    inv.on_leader(3, 3, log(e(1, 1, b"a")))


# ---------------------------------------------------------------- state machine safety


def test_state_machine_safety_catches_different_entries_applied_at_one_index() -> None:
    inv = RaftInvariants()
    assert inv.on_apply(1, e(1, 1, b"a")) is True
    assert inv.on_apply(2, e(1, 1, b"a")) is False
    with raises(checkers.STATE_MACHINE_SAFETY):
        inv.on_apply(3, e(1, 2, b"b"))


def test_state_machine_safety_catches_different_snapshots_at_one_index() -> None:
    inv = RaftInvariants()
    inv.on_snapshot(1, 10, 2, b"digest-a")
    inv.on_snapshot(2, 10, 2, b"digest-a")
    with raises(checkers.STATE_MACHINE_SAFETY):
        inv.on_snapshot(3, 10, 2, b"digest-b")


def test_state_machine_safety_catches_a_snapshot_of_the_wrong_term() -> None:
    inv = RaftInvariants()
    inv.on_apply(1, e(1, 3))
    with raises(checkers.STATE_MACHINE_SAFETY):
        inv.on_snapshot(2, 1, 2, b"d")


def test_apply_order_catches_a_gap() -> None:
    inv = RaftInvariants()
    inv.on_restore(1, 0)
    inv.on_apply(1, e(1, 1))
    with raises(checkers.APPLY_ORDER):
        inv.on_apply(1, e(3, 1))


# ---------------------------------------------------------------- end of run


def test_convergence() -> None:
    checkers.check_convergence({1: (5, b"d"), 2: (5, b"d")})
    with raises(checkers.CONVERGENCE):
        checkers.check_convergence({1: (5, b"d"), 2: (5, b"other")})
    with raises(checkers.CONVERGENCE):
        checkers.check_convergence({1: (5, b"d"), 2: (4, b"d")})
    with raises(checkers.CONVERGENCE):
        checkers.check_convergence({})


def test_acked_writes() -> None:
    acked = [AckedWrite(1, 1, 3), AckedWrite(2, 7, 4)]
    checkers.check_acked_writes(acked, {(1, 1): 3, (2, 7): 4, (3, 3): 5})
    with raises(checkers.ACKED_WRITE_LOST) as exc:
        checkers.check_acked_writes(acked, {(1, 1): 3})
    assert "missing" in exc.value.detail
    with raises(checkers.ACKED_WRITE_LOST) as exc:
        checkers.check_acked_writes(acked, {(1, 1): 3, (2, 7): 9})
    assert "at index 9" in exc.value.detail


def test_linearizability_catches_a_stale_read() -> None:
    w, r = OpKind.WRITE, OpKind.READ
    fine = [
        Operation(1, "k", w, b"1", 0.0, 1.0, 1),
        Operation(2, "k", r, b"1", 2.0, 3.0, 2),
    ]
    assert "linearizable" in checkers.check_linearizable(fine)
    stale = [
        Operation(1, "k", w, b"1", 0.0, 1.0, 1),
        Operation(1, "k", w, b"2", 2.0, 3.0, 2),
        Operation(2, "k", r, b"1", 4.0, 5.0, 3),
    ]
    with raises(checkers.LINEARIZABILITY):
        checkers.check_linearizable(stale)
