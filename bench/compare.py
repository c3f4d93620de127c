"""Side by side: several `python -m bench raft --json` results of two (or more) builds.

    python -m bench.compare --set plain a1.json a2.json a3.json \\
                            --set mTLS b1.json b2.json b3.json [--markdown out.md]

Each set is one build of stack, run several times (ideally alternating with the other
sets, so drift on the machine hits all of them). Every figure is the median over the
set's invocations of that invocation's own median; stack/etcd ratios are taken per
invocation (stack and etcd ran in the same invocation, alternating) and then their
median. The last table lists every invocation in the order it ran.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Result = dict[str, Any]
Point = tuple[str, int]  # (target, clients)
SYSTEMS = ("stack", "etcd")


def _med(vals: Sequence[float | None]) -> float:
    xs = [v for v in vals if v is not None and not math.isnan(v)]
    return statistics.median(xs) if xs else float("nan")


def _f(v: float | None, fmt: str) -> str:
    if v is None or math.isnan(v):
        return "-"
    return format(v, fmt)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _points(results: Sequence[Result]) -> list[Point]:
    keys = {(p["target"], p["clients"]) for r in results for p in r["throughput"]}
    return sorted(keys, key=lambda k: (k[0] != "leader", k[1]))


def _metric(r: Result, system: str, point: Point, key: str) -> float | None:
    for p in r["throughput"]:
        if (p["system"], p["target"], p["clients"]) == (system, *point):
            v = p["median"].get(key)
            return float(v) if v is not None else None
    return None


def _ratio(r: Result, point: Point, key: str) -> float | None:
    s, e = _metric(r, "stack", point, key), _metric(r, "etcd", point, key)
    return s / e if s is not None and e else None


class Sets:
    def __init__(self, sets: list[tuple[str, list[Result]]]) -> None:
        self.sets = sets
        self.names = [n for n, _ in sets]
        self.points = _points([r for _, rs in sets for r in rs])

    def med(self, name: str, fn: Callable[[Result], float | None]) -> float:
        return _med([fn(r) for n, rs in self.sets if n == name for r in rs])

    def per_set(self, fn: Callable[[Result], float | None], fmt: str) -> list[str]:
        return [_f(self.med(n, fn), fmt) for n in self.names]

    def change(self, fn: Callable[[Result], float | None]) -> str:
        """Last set over first set, as a factor."""
        a, b = self.med(self.names[0], fn), self.med(self.names[-1], fn)
        return _f(b / a if a else None, ".2f")


def render(sets: list[tuple[str, list[Result]]]) -> str:
    S = Sets(sets)
    names = S.names
    last, first = names[-1], names[0]
    parts: list[str] = []

    def metric(system: str, pt: Point, key: str) -> Callable[[Result], float | None]:
        return lambda r: _metric(r, system, pt, key)

    def ratio(pt: Point, key: str) -> Callable[[Result], float | None]:
        return lambda r: _ratio(r, pt, key)

    # -- throughput
    header = ["target", "clients"]
    header += [f"stack w/s {n}" for n in names] + [f"{last}/{first}"]
    header += [f"etcd w/s ({n} runs)" for n in names]
    header += [f"stack/etcd {n}" for n in names]
    rows = []
    for pt in S.points:
        m = metric("stack", pt, "throughput")
        rows.append(
            [
                pt[0],
                str(pt[1]),
                *S.per_set(m, ",.0f"),
                S.change(m),
                *S.per_set(metric("etcd", pt, "throughput"), ",.0f"),
                *S.per_set(ratio(pt, "throughput"), ".2f"),
            ]
        )
    parts += ["Writes per second (median of the invocations' medians):", "", _table(header, rows)]

    # -- latency
    header = ["target", "clients"]
    for q in ("p50", "p99"):
        header += [f"stack {q} ms {n}" for n in names]
        header += [f"etcd {q} ms ({'/'.join(names)} runs)"]
    rows = []
    for pt in S.points:
        row = [pt[0], str(pt[1])]
        for q in ("p50_ms", "p99_ms"):
            row += S.per_set(metric("stack", pt, q), ".2f")
            row += [" / ".join(S.per_set(metric("etcd", pt, q), ".2f"))]
        rows.append(row)
    parts += ["", "Latency:", "", _table(header, rows)]

    # -- CPU
    header = ["target", "clients"]
    header += [f"stack µs/write {n}" for n in names] + [f"{last}/{first}"]
    header += [f"etcd µs/write ({'/'.join(names)} runs)"]
    header += [f"stack/etcd µs/write {n}" for n in names]
    both = "/".join(names)
    header += [
        f"stack server cores ({both})",
        f"stack entries/fsync ({both})",
        f"other cores in the stack runs ({both})",  # everything else on the machine
    ]
    rows = []
    for pt in S.points:
        m = metric("stack", pt, "server_cpu_us_per_write")
        rows.append(
            [
                pt[0],
                str(pt[1]),
                *S.per_set(m, ".0f"),
                S.change(m),
                " / ".join(S.per_set(metric("etcd", pt, "server_cpu_us_per_write"), ".0f")),
                *S.per_set(ratio(pt, "server_cpu_us_per_write"), ".2f"),
                " / ".join(S.per_set(metric("stack", pt, "server_cpu_cores"), ".2f")),
                " / ".join(S.per_set(metric("stack", pt, "entries_per_sync"), ".1f")),
                " / ".join(S.per_set(metric("stack", pt, "other_cpu_cores"), ".2f")),
            ]
        )
    parts += [
        "",
        "Server CPU per write (all three nodes), during the same runs:",
        "",
        _table(header, rows),
    ]

    # -- start-up, failover, memory
    def sec(part: str, system: str) -> Callable[[Result], float | None]:
        return lambda r: r.get(part, {}).get(system, {}).get("median_s")

    def rss(system: str) -> Callable[[Result], float | None]:
        return lambda r: _med([v / 1024 for v in r.get("rss_kib", {}).get(system, {}).values()])

    def fresh_rss(r: Result) -> float | None:
        runs = r.get("startup", {}).get("stack", {}).get("runs", [])
        return _med([x["rss_kib"] / 1024 for x in runs])

    header = ["", *[f"stack {n}" for n in names], f"{last}/{first}"]
    header += [f"etcd ({n} runs)" for n in names]
    rows = []
    for label, part in (
        ("start-up to first write, s", "startup"),
        ("leader failover after SIGKILL, s", "failover"),
    ):
        stack = sec(part, "stack")
        rows.append(
            [label, *S.per_set(stack, ".2f"), S.change(stack), *S.per_set(sec(part, "etcd"), ".2f")]
        )
    rows.append(
        [
            "RSS per node after the load, MiB (median node)",
            *S.per_set(rss("stack"), ".0f"),
            S.change(rss("stack")),
            *S.per_set(rss("etcd"), ".0f"),
        ]
    )
    rows.append(
        [
            "RSS of a fresh single node, MiB",
            *S.per_set(fresh_rss, ".0f"),
            S.change(fresh_rss),
            *["-"] * len(names),
        ]
    )
    parts += ["", _table(header, rows)]

    # -- every invocation, in the order it ran
    runs = sorted(
        ((r["machine"]["date"], n, i + 1, r) for n, rs in sets for i, r in enumerate(rs)),
        key=lambda x: x[0],
    )
    header = ["invocation", "stack", "started (UTC)", "load avg", "other cores (median)"]
    header += [f"s/e w/s {t[0][0]}{t[1]}" for t in S.points]
    header += ["start-up s (s/e)", "failover s (s/e)"]
    rows = []
    for date, n, i, r in runs:
        m = r["machine"]
        others = [_metric(r, s, pt, "other_cpu_cores") for s in SYSTEMS for pt in S.points]
        rows.append(
            [
                f"{n} {i}",
                r.get("versions", {}).get("stack", "?"),
                date.split()[1],
                _f(m.get("loadavg_1m_at_start"), ".2f"),
                _f(_med(others), ".2f"),
                *(_f(_ratio(r, pt, "throughput"), ".2f") for pt in S.points),
                " / ".join(_f(sec("startup", s)(r), ".2f") for s in SYSTEMS),
                " / ".join(_f(sec("failover", s)(r), ".2f") for s in SYSTEMS),
            ]
        )
    parts += [
        "",
        "Every invocation in the order it ran (s/e = stack/etcd writes/s; "
        "l = leader, f = follower, then clients):",
        "",
        _table(header, rows),
    ]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    p.add_argument(
        "--set",
        nargs="+",
        action="append",
        required=True,
        metavar=("NAME", "JSON"),
        help="a name, then the JSON results of that build",
    )
    p.add_argument("--markdown", metavar="PATH", help="write here instead of stdout")
    args = p.parse_args(argv)
    sets = []
    for name, *files in args.set:
        if not files:
            p.error(f"--set {name}: no JSON files")
        sets.append((name, [json.loads(Path(f).read_text()) for f in files]))
    text = render(sets)
    if args.markdown:
        Path(args.markdown).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
