"""bench/gossip_sim.py at small scale, so the issue 6 figures cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.gossip_sim import (
    PEERS,
    Detection,
    FalsePositives,
    Load,
    load_window,
    main,
    measure_detection,
    measure_false_positives,
    measure_load,
    summarize,
)
from stack.gossip.config import GossipConfig
from stack.gossip.suspicion import suspicion_timeout

N = 30


@pytest.mark.parametrize("seed", [0, 1])
def test_detection_every_member_learns_and_suspicion_lasts_at_least_the_minimum(
    seed: int,
) -> None:
    lo = suspicion_timeout(4, N, 1.0)
    runs = {peer: measure_detection(seed, N, peer) for peer in PEERS}
    for r in runs.values():
        assert r.all_dead is not None, r
        assert r.first_suspect is not None and r.first_dead is not None
        assert 0 < r.first_suspect < r.first_dead <= r.all_dead
        assert r.first_dead - r.first_suspect >= lo - 1e-6  # never below the floor
        assert r.all_dead - r.first_dead < 5.0  # the Dead spreads in a few rounds
        assert r.wrong_failed == 0
    # Same seed, same ring, same victim, same crash time for both peers.
    a, b = runs["lifeguard"], runs["no-lifeguard"]
    assert (a.crashed, a.crashed_at, a.first_suspect) == (b.crashed, b.crashed_at, b.first_suspect)
    # Without Lifeguard the first suspector's fixed timer is exactly the floor.
    assert b.first_dead is not None and b.first_suspect is not None
    assert b.first_dead - b.first_suspect == pytest.approx(lo, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 2])  # seed 1's pause falls between probes of it
def test_lossy_run_with_a_pause_suspects_refutes_and_fails_no_one(seed: int) -> None:
    r = measure_false_positives(seed, N, 60.0)
    assert r.false_failed == 0, r  # these seeds; longer runs can have some (see docs)
    assert r.suspicions > 0 and r.refutations > 0
    assert r.failed_probes >= r.suspicions
    assert r.suspicions_of_paused > 0 and r.refutations_by_paused > 0
    assert 0.07 < r.lost / r.packets < 0.13


def test_load_per_member_is_flat_from_10_to_30_members() -> None:
    small, big = measure_load(0, 10), measure_load(0, 30)
    lan = GossipConfig.lan()
    for r in (small, big):
        # A ping and an ack per member per second, and one push-pull exchange
        # (two streams) per member per period.
        assert r.window == load_window(r.members, lan) == 150.0
        assert r.streams == pytest.approx(2 / lan.push_pull_interval, rel=0.02)
        assert r.packets == pytest.approx(2.0 + r.streams, abs=0.01)
        assert r.messages == pytest.approx(r.packets, abs=1e-9)  # nothing to piggy-back
        assert r.bytes > 0
    assert 0.8 <= big.packets / small.packets <= 1.2


def test_command_line_runs_every_measurement_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs.jsonl"
    argv = [
        "--seeds=1",
        "--members=20",
        "--jobs=1",
        "--fp-duration=40",
        "--fp-small-members=10",
        "--fp-small-duration=40",
        "--sizes=10",
        f"--out={out}",
    ]
    assert main(argv) == 0
    lines = out.read_text().splitlines()
    kinds = sorted(json.loads(line)["kind"] for line in lines)
    assert kinds == ["Detection"] * 2 + ["FalsePositives"] * 3 + ["Load"]
    first = capsys.readouterr().out
    # Interrupted after the first run: --resume runs only the other five, and the
    # summary is the same.
    out.write_text(lines[0] + "\n")
    assert main([*argv, "--resume"]) == 0
    again = capsys.readouterr().out
    assert "1 runs already in" in again
    assert again.count("\ndetect ") + again.count("\nfp ") + again.count("\nload ") == 5
    assert len(out.read_text().splitlines()) == 6
    table = first[first.index("Detection, 20 members") : first.index("6 runs")]
    assert table in again


def test_summary_tables() -> None:
    det = [
        Detection(s, 9, p, "n01", 10.0, 1.0, 13.0 + s, 14.0 + s, 0, 0.0)
        for s in range(3)
        for p in PEERS
    ]
    fp = [
        FalsePositives(s, 9, "lifeguard", 60.0, 0.1, "n02", 20.0, s, s, 5, 4, 1, 4, 1, 100, 10, 0)
        for s in range(2)
    ]
    load = [Load(0, n, 150.0, 2.0 + n / 1000, 0.01, 2.0, 30.0 + n, 0.0) for n in (10, 100)]
    text = "\n".join(summarize([*det, *fp, *load]))
    assert "| lifeguard | 3 | 1.00 / 1.00 / 1.00 (min 1.00) | 14.00 / 15.00 / 15.00" in text
    assert "| lifeguard | 9 | 2 x 60 s | 1 | 1 | 10 | 8 (2) | 8 (2) | 10.0% |" in text
    assert "| 100 | 1 | 150 s | 2.100 | 1.045 |" in text
