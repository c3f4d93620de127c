"""The report of `bench.secrets_engines_bench`: one line per run for the terminal,
Markdown tables for docs/benchmarks.md."""

from __future__ import annotations

from typing import Any

from bench.crypto_alone import CRYPTO
from bench.vault_rig import fmt as _f


def crypto_line(rates: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:,.0f}/s" for k, v in rates.items())


def run_line(phase: str, res: dict[str, Any]) -> str:
    extra = ""
    if "followers_us_per_req" in res:
        extra = f"  followers {res['followers_us_per_req']:4.0f} µs/req"
    if "leader_messages_sent_per_req" in res:
        extra += (
            f"  leader {res['leader_messages_sent_per_req']:.2f} msgs/req"
            f" {res['leader_syncs_per_req']:.3f} fsyncs/req"
        )
    return (
        f"{phase:8} {res['throughput']:8.0f} req/s"
        f"  p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms"
        f"  errors {res['errors']}  client CPU {res['client_cpu_pct']:3.0f}%"
        f"  server {res['server_cores']:.2f} cores {res['server_us_per_req']:4.0f} µs/req"
        + extra
        + f"  other {res['other_cores']:.2f} cores  cpu pressure {res['cpu_pressure']}%"
        + (f"  [{res['error_sample']}]" if res["errors"] else "")
    )


LABELS = {  # the phases, in the order of the table
    "bare16": "bare aiohttp, issue requests",
    "issue": "pki/issue (leader)",
    "bare64": "bare aiohttp, encrypt requests",
    "encrypt": "transit/encrypt (leader)",
}


def markdown(result: dict[str, Any]) -> str:
    m, o, v = result["machine"], result["options"], result["versions"]
    lines = [
        f"Command: `{result['command']}`  ",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_total_gib']} GiB, "
        f"Linux {m['kernel']}, Python {m['python']}, aiohttp {v['aiohttp']}, "
        f"cryptography {v['cryptography']}, stack {v['stack'] or '?'}; {m['date']}; at start: "
        f"load average {m['loadavg_1m_at_start']}, CPU pressure {m['cpu_pressure_at_start']}%  ",
        f"{o['runs']} rounds of {o['duration_s']:g} s (after {o['warmup_s']:g} s of warm-up) "
        "per phase, phases rotated per round; median (min-max) over the rounds; ratios taken "
        "within a round, then the median.",
        "",
        "| phase | clients | req/s | ratio to bare | p50 ms | p99 ms | errors | client CPU % "
        "| server cores | server CPU µs/req | followers CPU µs/req | leader Raft msgs/req "
        "| leader fsyncs/req | other cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    clients = {"bare16": "issue_clients", "issue": "issue_clients"}
    for phase, label in LABELS.items():
        s = result["phases"][phase]
        ratio = result["ratios"].get(phase)
        rtxt = f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})" if ratio else "1"
        t = s["throughput"]
        lines.append(
            f"| {label} | {o[clients.get(phase, 'encrypt_clients')]} "
            f"| {t['median']:,.0f} ({t['min']:,.0f}-{t['max']:,.0f}) | {rtxt} "
            f"| {_f(s['p50_ms']['median'], '.2f')} | {_f(s['p99_ms']['median'], '.2f')} "
            f"| {s['errors']['max']:.0f} | {_f(s['client_cpu_pct']['median'], '.0f')} "
            f"| {_f(s['server_cores']['median'], '.2f')} "
            f"| {_f(s['server_us_per_req']['median'], '.0f')} "
            f"| {_f(s['followers_us_per_req']['median'], '.0f')} "
            f"| {_f(s['leader_messages_sent_per_req']['median'], '.2f')} "
            f"| {_f(s['leader_syncs_per_req']['median'], '.3f')} "
            f"| {_f(s['other_cores']['median'], '.2f')} |"
        )
    lines += [
        "",
        f"The crypto alone, in the benchmark's process, per CPU second on one core "
        f"({o['crypto_seconds']:g} s each, once per round):",
        "",
        "| operation | per CPU second | µs each |",
        "|---|---|---|",
    ]
    for key, label in CRYPTO:
        c = result["crypto"][key]
        lines.append(
            f"| {label} | {c['median']:,.0f} ({c['min']:,.0f}-{c['max']:,.0f}) "
            f"| {_f(1e6 / c['median'] if c['median'] else float('nan'), '.1f')} |"
        )
    g, c = result["goal"], result["checks"]
    lines += [
        "",
        f"Certificates per second: {g['certs_per_s']:,.0f}, {g['of_goal']:.2f} of the "
        f"{g['goal_certs_per_s']:,.0f}/s goal and {g['times_consul_default']:.1f} x Consul's "
        f"built-in CA default rate limit ({g['consul_default_csr_per_s']:.0f} CSR/s, "
        "`csr_max_per_second`: a documented constant, not measured).",
        "",
        f"Checks: {c['certs_answered']:,} certificates answered, `LIST pki/certs` grew by "
        f"{c['certs_stored']:,}; {c['certs_sampled']} sampled certificates checked (CN, SAN, "
        f"chain to the issuing CA and the cluster root, P-256 key), "
        f"{c['cert_problem_count']} problems; {c['certs_read_back']} read back from "
        f"`pki/cert/<serial>`, {c['read_back_mismatches']} different; "
        f"{c['decrypts_checked']} sampled ciphertexts decrypted, "
        f"{c['decrypt_mismatches']} mismatches.",
    ]
    return "\n".join(lines) + "\n"
