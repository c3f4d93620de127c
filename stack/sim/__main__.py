"""`python -m stack.sim --seeds A:B`: run a range of seeds; any violation prints its seed,
the checker, the last trace events and how to replay it, and makes the exit status 1.
`--replay SEED` reruns one seed and prints its whole trace, messages included."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from stack.sim.coverage import Coverage
from stack.sim.runner import PRESETS, RunResult, preset, run_seed


def _seeds(text: str) -> range:
    lo, sep, hi = text.partition(":")
    try:
        return range(int(lo), int(hi)) if sep else range(int(lo), int(lo) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like A:B, not {text!r}") from None


def _faults(text: str) -> frozenset[str]:
    return frozenset(f.strip() for f in text.split(",") if f.strip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stack.sim", description=__doc__)
    ap.add_argument("--seeds", type=_seeds, default=range(0, 10), help="A:B (B excluded)")
    ap.add_argument("--replay", type=int, metavar="SEED", help="rerun one seed, full trace")
    ap.add_argument("--ticks", type=int, help="length of the safety phase (default 20000)")
    ap.add_argument("--nodes", type=int, choices=(3, 5), help="initial voters")
    ap.add_argument("--faults", type=_faults, default=frozenset(), help="planted bugs, a,b")
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument(
        "--sync-host", action="store_true", help="hosts persist, send, apply in one step"
    )
    ap.add_argument("--verbose", action="store_true", help="print every seed's trace")
    ap.add_argument("--trace-tail", type=int, default=50, help="trace events on failure")
    args = ap.parse_args(argv)

    config = preset(args.preset, nodes=args.nodes, ticks=args.ticks).with_faults(args.faults)
    if args.sync_host:
        config = replace(config, cluster=replace(config.cluster, fsync_delay=(0, 0)))
    flags = [f"--preset {args.preset}"]
    if args.ticks is not None:
        flags.append(f"--ticks {args.ticks}")
    if args.nodes is not None:
        flags.append(f"--nodes {args.nodes}")
    if args.sync_host:
        flags.append("--sync-host")
    if args.faults:
        flags.append(f"--faults {','.join(sorted(args.faults))}")

    if args.replay is not None:
        result = run_seed(args.replay, config, trace_messages=True)
        print("\n".join(result.trace))
        print(result.line())
        if not result.ok:
            print(result.report(args.trace_tail))
        return 0 if result.ok else 1

    total = Coverage()
    failed: list[RunResult] = []
    started = time.perf_counter()
    for seed in args.seeds:
        result = run_seed(seed, config)
        result.replay = f"python -m stack.sim --replay {seed} {' '.join(flags)}"
        total.add(result.coverage)
        print(result.line(), flush=True)
        if args.verbose:
            print("\n".join(result.trace))
        if not result.ok:
            failed.append(result)
            print(result.report(args.trace_tail), flush=True)
    elapsed = time.perf_counter() - started
    n = len(args.seeds)
    print(f"{n} seeds, {len(failed)} failed, {elapsed:.1f}s ({elapsed / max(n, 1):.2f}s/seed)")
    print(f"total: {total.line()}")
    if failed:
        print(
            "failed seeds: "
            + " ".join(f"{r.seed}[{r.violation.checker}]" for r in failed if r.violation)
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
