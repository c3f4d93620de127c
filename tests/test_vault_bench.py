"""The pure parts of `bench.vault_bench` and `bench.pyspy`: spreads, ratios paired
within a round, the phase rotation, the load's requests, and py-spy's collapsed
stacks summed by function. No processes."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not installed

from bench.pyspy import frame_name, summarize
from bench.vault_bench import (
    PHASES,
    WRITE_KEYS,
    Options,
    build_spec,
    paired_ratios,
    phase_order,
    spread,
)


def test_spread_is_median_min_max_and_skips_nan() -> None:
    assert spread([3.0, 1.0, 10.0, float("nan")]) == {"median": 3.0, "min": 1.0, "max": 10.0}
    assert spread([1.0, 2.0]) == {"median": 1.5, "min": 1.0, "max": 2.0}
    assert all(math.isnan(v) for v in spread([float("nan")]).values())


def test_ratios_are_paired_within_a_round() -> None:
    rounds = [
        {"bare": {"throughput": 100.0}, "stale": {"throughput": 80.0}},
        {"bare": {"throughput": 50.0}, "stale": {"throughput": 45.0}},  # a slow round
        {"bare": {"throughput": 100.0}, "stale": {"throughput": 70.0}},
    ]
    r = paired_ratios(rounds, "stale")
    assert r == {"median": 0.8, "min": 0.7, "max": 0.9}
    # (The ratio of the medians, 80 / 100, would not see that round 2 was slow for both.)


def test_ratio_skips_a_round_without_its_bare_run() -> None:
    rounds = [{"stale": {"throughput": 80.0}}, {"bare": {"throughput": 0.0}, "stale": {}}]
    assert math.isnan(paired_ratios(rounds, "stale")["median"])


def test_each_phase_takes_every_position_once_in_four_rounds() -> None:
    orders = [phase_order(r) for r in range(len(PHASES))]
    assert all(sorted(o) == sorted(PHASES) for o in orders)
    for pos in range(len(PHASES)):
        assert {o[pos] for o in orders} == set(PHASES)


def test_reads_cover_every_secret_once_across_clients() -> None:
    opts = Options(clients=64, secrets=1000)
    spec = build_spec("stale", "127.0.0.81", "tok", opts)
    urls = [u for cycle in spec.requests for u, _ in cycle]
    assert spec.clients == 64 and spec.method == "GET"
    assert len(urls) == len(set(urls)) == 1000
    assert ("X-Vault-Stale", "true") in spec.headers
    lin = build_spec("linearizable", "127.0.0.81", "tok", opts)
    assert all(h != "X-Vault-Stale" for h, _ in lin.headers)


def test_writes_carry_the_round_tag_and_each_client_owns_its_keys() -> None:
    spec = build_spec("write", "127.0.0.81", "tok", Options(clients=4), tag="r1-x")
    assert spec.method == "PUT"
    urls = [u for cycle in spec.requests for u, _ in cycle]
    assert len(set(urls)) == 4 * WRITE_KEYS
    body = json.loads(spec.requests[2][3][1])
    assert body["data"]["round"] == "r1-x"
    assert spec.requests[2][3][0].endswith("/v1/secret/data/bench/w/c02/k03")


def test_frame_names_drop_line_numbers_and_long_paths() -> None:
    raw = "read_index (/tmp/vb-src/stack/raft/node.py:178)"
    assert frame_name(raw) == "read_index (raft/node.py)"
    assert frame_name("<module> (<string>:8)") == "<module> (<string>)"


def test_collapsed_stacks_give_self_and_inclusive_shares() -> None:
    text = "\n".join(
        [
            "main (a/app.py:1);handle (a/app.py:9);decrypt (b/crypto.py:4) 30",
            "main (a/app.py:1);handle (a/app.py:10) 10",
            "main (a/app.py:1);walk (a/t.py:2);walk (a/t.py:3);walk (a/t.py:3) 60",
            "garbage line",
        ]
    )
    prof = summarize(text)
    assert prof.samples == 100
    assert dict(prof.top_self(3)) == {
        "walk (a/t.py)": 0.6,
        "decrypt (b/crypto.py)": 0.3,
        "handle (a/app.py)": 0.1,
    }
    assert prof.share("handle") == 0.4
    assert prof.share("walk") == 0.6  # recursion counted once per sample, not three times
    assert prof.share("main (") == 1.0


def test_samples_go_to_the_first_matching_part() -> None:
    text = "\n".join(
        [
            "loop (asyncio/x.py:1);handle (vault/kv.py:2);Keyring.decrypt (vault/b.py:3) 3",
            "loop (asyncio/x.py:1);handle (vault/kv.py:2) 5",
            "loop (asyncio/x.py:1) 2",
        ]
    )
    parts = summarize(text).attribute(
        [("decrypt", "Keyring.decrypt"), ("backend", "vault/"), ("loop", "asyncio/")]
    )
    assert parts == {"backend": 0.5, "decrypt": 0.3, "loop": 0.2}
    # Wide rule first: it swallows the narrow one's samples.
    wide = summarize(text).attribute([("backend", "vault/"), ("decrypt", "Keyring.decrypt")])
    assert wide == {"backend": 0.8, "other": 0.2}
