"""Render a `bench.raft_http` result: rich tables for the terminal, Markdown for docs/."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

COLUMNS = (
    "target",
    "clients",
    "stack w/s",
    "etcd w/s",
    "stack/etcd",
    "stack p50 ms",
    "etcd p50 ms",
    "stack p99 ms",
    "etcd p99 ms",
    "client CPU % (s/e)",
    "server cores (s/e)",
    "server CPU µs/write (s/e)",
    "other cores (s/e)",
    "CPU pressure % (s/e)",
    "entries/fsync",
)


def _f(v: float | None, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, fmt)


def throughput_rows(result: dict[str, Any]) -> list[list[str]]:
    by = {(p["system"], p["target"], p["clients"]): p["median"] for p in result["throughput"]}
    keys = sorted({(t, c) for (_, t, c) in by}, key=lambda k: (k[0] != "leader", k[1]))
    rows = []
    for target, clients in keys:
        s = by.get(("stack", target, clients), {})
        e = by.get(("etcd", target, clients), {})
        ratio = s["throughput"] / e["throughput"] if s and e and e.get("throughput") else None
        rows.append(
            [
                target,
                str(clients),
                _f(s.get("throughput"), ",.0f"),
                _f(e.get("throughput"), ",.0f"),
                _f(ratio, ".2f"),
                _f(s.get("p50_ms"), ".2f"),
                _f(e.get("p50_ms"), ".2f"),
                _f(s.get("p99_ms"), ".2f"),
                _f(e.get("p99_ms"), ".2f"),
                f"{_f(s.get('client_cpu_pct'), '.0f')} / {_f(e.get('client_cpu_pct'), '.0f')}",
                f"{_f(s.get('server_cpu_cores'), '.2f')} / {_f(e.get('server_cpu_cores'), '.2f')}",
                f"{_f(s.get('server_cpu_us_per_write'), '.0f')} / "
                f"{_f(e.get('server_cpu_us_per_write'), '.0f')}",
                f"{_f(s.get('other_cpu_cores'), '.2f')} / {_f(e.get('other_cpu_cores'), '.2f')}",
                f"{_f(s.get('cpu_pressure'), '.0f')} / {_f(e.get('cpu_pressure'), '.0f')}",
                _f(s.get("entries_per_sync"), ".1f"),
            ]
        )
    return rows


def other_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    st, fo, rss = result.get("startup", {}), result.get("failover", {}), result.get("rss_kib", {})

    def pair(d: dict[str, Any], key: str, fmt: str) -> list[str]:
        return [_f(d.get(sys_, {}).get(key), fmt) for sys_ in ("stack", "etcd")]

    if st:
        rows.append(["start-up to first write, s (median)", *pair(st, "median_s", ".2f")])
    if fo:
        rows.append(["leader failover after SIGKILL, s (median)", *pair(fo, "median_s", ".2f")])
    for system_rss in (rss,):
        if system_rss:
            vals = []
            for sys_ in ("stack", "etcd"):
                nodes = system_rss.get(sys_, {})
                vals.append(" / ".join(f"{v / 1024:.0f}" for v in nodes.values()) if nodes else "-")
            rows.append(["RSS per node after the load, MiB", *vals])
    if st:
        idle = []
        for sys_ in ("stack", "etcd"):
            runs = st.get(sys_, {}).get("runs", [])
            idle.append(
                _f(sorted(r["rss_kib"] for r in runs)[len(runs) // 2] / 1024, ".0f")
                if runs
                else "-"
            )
        rows.append(["RSS of a fresh single node, MiB", *idle])
    return rows


def machine_line(result: dict[str, Any]) -> str:
    m, v = result["machine"], result["versions"]
    return (
        f"{m['nproc']} CPUs ({m['cpu_model']}), {m['mem_total_gib']} GiB, Linux {m['kernel']}, "
        f"Python {v['python']}, aiohttp {v['aiohttp']}, etcd {v.get('etcd', '-')}, "
        f"stack {v.get('stack') or '?'}; {m['date']}; "
        f"at start: load average {m.get('loadavg_1m_at_start', '?')}, "
        f"CPU pressure {m.get('cpu_pressure_at_start', '?')}%, "
        f"IO pressure {m.get('io_pressure_at_start', '?')}%"
    )


def print_report(result: dict[str, Any], console: Console) -> None:
    o = result["options"]
    t = Table(
        *COLUMNS,
        title=(
            f"Writes of {o['value_bytes']}-byte values, 3 nodes each; median of {o['runs']} "
            f"runs of {o['duration_s']:g} s"
        ),
    )
    for row in throughput_rows(result):
        t.add_row(*row)
    console.print(t)
    t2 = Table("", "stack", "etcd")
    for row in other_rows(result):
        t2.add_row(*row)
    console.print(t2)
    console.print(machine_line(result), highlight=False)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def markdown(result: dict[str, Any]) -> str:
    o = result["options"]
    parts = [
        f"Command: `{result['command']}`  ",
        f"Machine: {machine_line(result)}  ",
        f"{o['value_bytes']}-byte values, each client overwriting {o['keys_per_client']} keys "
        f"of its own; {o['runs']} runs of {o['duration_s']:g} s after {o['warmup_s']:g} s "
        "of warm-up per point, stack and etcd runs alternating; figures are medians.",
        "",
        _md_table(list(COLUMNS), throughput_rows(result)),
        "",
        _md_table(["", "stack", "etcd"], other_rows(result)),
        "",
    ]
    return "\n".join(parts)
