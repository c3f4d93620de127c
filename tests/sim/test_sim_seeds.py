"""Hundreds of seeds with faults: every safety checker and the healing phase must pass,
and every seed must actually have exercised crashes, elections, partitions and snapshots."""

from __future__ import annotations

import time
from dataclasses import replace

from stack.sim.coverage import Coverage
from stack.sim.runner import preset, run_seed

SEEDS = range(0, 200)


def test_many_seeds_with_faults() -> None:
    config = preset("quick")
    total = Coverage()
    failures: list[str] = []
    quiet: list[str] = []
    with_snapshot_install = 0
    started = time.perf_counter()
    for seed in SEEDS:
        result = run_seed(seed, config)
        total.add(result.coverage)
        if not result.ok:
            failures.append(result.report())
        with_snapshot_install += result.coverage.snapshots_installed > 0
        missing = result.coverage.quiet()
        if missing:
            quiet.append(f"seed {seed}: no {', '.join(missing)}")
    elapsed = time.perf_counter() - started
    print(f"{len(SEEDS)} seeds in {elapsed:.1f}s: {total.line()}")
    assert not failures, "\n\n".join(failures[:3])
    assert not quiet, quiet
    # Across the range, every kind of fault and every protocol path was taken.
    for name in (
        "elections",
        "leader_changes",
        "transfers",
        "conf_changes",
        "joins",
        "removals",
        "compactions",
        "snapshots_sent",
        "chunks_dropped",
        "snapshots_installed",
        "crashes",
        "partitions",
        "pauses",
        "msgs_dropped",
        "msgs_duplicated",
        "writes_ok",
        "writes_lost",
        "writes_indeterminate",
        "reads_ok",
    ):
        assert getattr(total, name) > 0, name
    assert total.ops_ok > 100 * len(SEEDS)
    assert with_snapshot_install >= 0.9 * len(SEEDS), with_snapshot_install


def test_five_nodes() -> None:
    config = preset("quick", nodes=5)
    for seed in range(1000, 1020):
        result = run_seed(seed, config)
        assert result.ok, result.report()
        assert not result.coverage.quiet(), result.line()


def test_synchronous_host() -> None:
    """The host variant that persists, sends, applies and advances in one step."""
    config = preset("quick")
    config = replace(config, cluster=replace(config.cluster, fsync_delay=(0, 0)))
    for seed in range(2000, 2020):
        result = run_seed(seed, config)
        assert result.ok, result.report()
        assert not result.coverage.quiet(), result.line()
