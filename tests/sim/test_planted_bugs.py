"""Each planted bug is caught by the checker that should catch it, within a bounded number
of seeds; the same seeds pass without the bug; a failure names its seed and replays exactly."""

from __future__ import annotations

import pytest

from stack.sim import checkers
from stack.sim.__main__ import main
from stack.sim.runner import RunResult, preset, run_seed

MAX_SEEDS = 200

# fault, preset tuned to show it quickly, checkers that may catch it
PLANTED: list[tuple[str, str, frozenset[str]]] = [
    # A candidate counting each grant twice wins with a minority: two leaders in one term.
    ("double_vote_count", "elections", frozenset({checkers.ELECTION_SAFETY})),
    # Raft paper, Figure 8: an old-term entry counted as committed is overwritten later.
    (
        "commit_old_term",
        "churn",
        frozenset({checkers.LEADER_COMPLETENESS, checkers.STATE_MACHINE_SAFETY}),
    ),
    # A deposed leader that still believes it leads answers reads with stale data.
    ("read_without_quorum", "stale-reads", frozenset({checkers.LINEARIZABILITY})),
    # A node with a stale log is elected and drops committed entries.
    (
        "no_log_check_on_vote",
        "power",
        frozenset({checkers.LEADER_COMPLETENESS, checkers.STATE_MACHINE_SAFETY}),
    ),
    # Host fault: acknowledgements and votes sent before they were synced die in a crash.
    (
        "send_before_persist",
        "power",
        frozenset(
            {
                checkers.LEADER_COMPLETENESS,
                checkers.ACKED_WRITE_LOST,
                checkers.ELECTION_SAFETY,
                checkers.STATE_MACHINE_SAFETY,
            }
        ),
    ),
]


def _first_catch(fault: str, preset_name: str, expected: frozenset[str]) -> RunResult:
    config = preset(preset_name).with_faults(frozenset({fault}))
    other: list[str] = []
    for seed in range(MAX_SEEDS):
        result = run_seed(seed, config)
        if result.violation is None:
            continue
        if result.violation.checker in expected:
            return result
        other.append(f"seed {seed}: {result.violation.checker}")
    pytest.fail(f"{fault} not caught by {sorted(expected)} in {MAX_SEEDS} seeds; other: {other}")


@pytest.mark.parametrize(("fault", "preset_name", "expected"), PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_bug_is_caught(fault: str, preset_name: str, expected: frozenset[str]) -> None:
    caught = _first_catch(fault, preset_name, expected)
    assert caught.violation is not None
    print(f"{fault}: seed {caught.seed} -> {caught.violation.checker}")
    # The report names the seed and the checker and ends with the last trace events.
    report = caught.report()
    assert f"seed={caught.seed}" in report
    assert f"checker={caught.violation.checker}" in report
    lines = report.splitlines()
    tail = next(i for i, line in enumerate(lines) if line.endswith("trace events:"))
    assert 0 < len(lines) - tail - 1 <= 50
    # Without the bug, the very same seed passes: the checker fired because of the bug.
    clean = run_seed(caught.seed, preset(preset_name))
    assert clean.ok, clean.report()
    # And the failure replays exactly.
    again = run_seed(caught.seed, preset(preset_name).with_faults(frozenset({fault})))
    assert again.violation is not None
    assert again.violation.checker == caught.violation.checker
    assert again.trace_hash == caught.trace_hash


def test_same_seed_same_trace_and_different_seeds_differ() -> None:
    config = preset("quick", ticks=300)
    a, b, c = run_seed(11, config), run_seed(11, config), run_seed(12, config)
    assert a.ok and b.ok and c.ok
    assert a.trace == b.trace and a.trace_hash == b.trace_hash
    assert a.coverage == b.coverage
    assert a.trace_hash != c.trace_hash


def test_cli_reports_a_violation_with_seed_checker_and_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    caught = _first_catch("double_vote_count", "elections", frozenset({checkers.ELECTION_SAFETY}))
    seed = caught.seed
    argv = [
        "--preset",
        "elections",
        "--faults",
        "double_vote_count",
        "--seeds",
        f"{seed}:{seed + 1}",
    ]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert f"VIOLATION seed={seed} checker=election_safety" in out
    assert f"python -m stack.sim --replay {seed} --preset elections" in out
    assert "last 50 trace events" in out or "trace events:" in out
    assert main(["--preset", "quick", "--ticks", "200", "--seeds", "3:5"]) == 0
    assert "2 seeds, 0 failed" in capsys.readouterr().out


def test_cli_replay_prints_the_whole_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--replay", "4", "--preset", "quick", "--ticks", "150"]) == 0
    out = capsys.readouterr().out
    assert "AppendEntries" in out and "leads term" in out and "seed=4 ok" in out


def test_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown faults"):
        preset("quick").with_faults(frozenset({"no_such_bug"}))
