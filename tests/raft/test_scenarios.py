"""Scripted Raft scenarios with golden output (tests/raft/testdata/*.txt).

Each file is a sequence of blocks:

    command arg key=value
    ----
    expected output

A block whose command starts with `expect` asserts instead of printing; a failing
expectation names the file and line. Set STACK_REWRITE=1 to rewrite the expected
output after a deliberate behaviour change, then read the diff like a story.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import Cluster

from stack.raft.errors import RaftError
from stack.raft.types import Role

TESTDATA = Path(__file__).parent / "testdata"


def _ids(v: str) -> list[int]:
    return [int(x) for x in v.split(",") if x]


def _kv(args: list[str]) -> tuple[list[str], dict[str, str]]:
    pos = [a for a in args if "=" not in a]
    kv = dict(a.split("=", 1) for a in args if "=" in a)
    return pos, kv


def run_command(c: Cluster, line: str) -> list[str]:
    cmd, *rest = line.split()
    pos, kv = _kv(rest)
    handlers: dict[str, Callable[[], list[str]]] = {}

    def add_nodes() -> list[str]:
        n = int(pos[0])
        start = int(kv.get("start", "1"))
        ids = list(range(start, start + n))
        if "faults" in kv:
            c.faults = frozenset(kv["faults"].split(","))
        for key in (
            "election_tick",
            "max_inflight_msgs",
            "snapshot_chunk_size",
            "max_size_per_msg",
        ):
            if key in kv:
                c.cfg_overrides[key] = int(kv[key])
        for key in ("pre_vote", "check_quorum"):
            if key in kv:
                c.cfg_overrides[key] = kv[key] == "true"  # type: ignore[assignment]
        voters = _ids(kv["voters"]) if "voters" in kv else None
        c.add_nodes(ids, voters, blank=kv.get("blank") == "true")
        return [c.state(i) for i in ids]

    def campaign() -> list[str]:
        c.nodes[int(pos[0])].raft.campaign()
        if kv.get("stabilize") == "false":
            return c.process_ready(int(pos[0]))
        return c.stabilize()

    def tick() -> list[str]:
        """Tick the nodes one round at a time, delivering everything after each round."""
        out: list[str] = []
        for _ in range(int(kv.get("n", "1"))):
            for nid in _ids(pos[0]):
                c.tick(nid)
            out.extend(c.stabilize())
        return [] if kv.get("quiet") == "true" else out

    def tick_no_deliver() -> list[str]:
        for nid in _ids(pos[0]):
            c.tick(nid, int(kv.get("n", "1")))
        out: list[str] = []
        for nid in sorted(c.nodes):
            out.extend(c.process_ready(nid))
        return out

    def propose() -> list[str]:
        nid = int(pos[0])
        count = int(kv.get("count", "1"))
        out = [c.propose(nid, f"{pos[1]}{i if count > 1 else ''}".encode()) for i in range(count)]
        return out if count <= 3 else [out[0], "...", out[-1]]

    def stabilize() -> list[str]:
        return c.stabilize(quiet=kv.get("quiet") == "true")

    def process_ready() -> list[str]:
        out: list[str] = []
        for nid in _ids(pos[0]):
            out.extend(c.process_ready(nid))
        return out

    def deliver() -> list[str]:
        drop = set(_ids(kv.get("drop", "")))
        only = int(kv["to"]) if "to" in kv else None
        return c.deliver(drop=drop, only_to=only)

    def drop_first() -> list[str]:
        """Drop the first queued message matching a type name (e.g. Snap)."""
        kind, frm, to = pos[0], int(kv["from"]), int(kv["to"])
        for i, m in enumerate(c.queue):
            if type(m).__name__ == kind and m.frm == frm and m.to == to:
                del c.queue[i]
                return [f"dropped first {kind} {frm}->{to}"]
        raise AssertionError(f"no queued {kind} {frm}->{to}")

    def partition() -> list[str]:
        groups = [set(_ids(g)) for g in pos]
        c.cut = {(a, b) for g in groups for a in g for b in c.nodes if b not in g}
        return []

    def cut() -> list[str]:
        """One-way cut: messages from `from` to `to` are dropped."""
        for a in _ids(kv["from"]):
            for b in _ids(kv["to"]):
                c.cut.add((a, b))
        return []

    def heal() -> list[str]:
        c.cut = set()
        return []

    def status() -> list[str]:
        return [c.state(nid) for nid in (_ids(pos[0]) if pos else sorted(c.nodes))]

    def log() -> list[str]:
        from harness import fmt_entries

        n = c.nodes[int(pos[0])]
        return [f"{pos[0]}: {fmt_entries(n.raft.log.entries)}"]

    def compact() -> list[str]:
        nid, index = int(pos[0]), int(pos[1])
        n = c.nodes[nid]
        data = kv.get("data", "x" * int(kv.get("size", "0"))).encode()
        snap = n.raft.compact(index, data)
        n.disk.snapshot = snap
        n.disk.entries = [e for e in n.disk.entries if e.index > index]
        return [f"{nid}: compacted to {snap.meta.term}/{snap.meta.index}"]

    def transfer() -> list[str]:
        try:
            c.nodes[int(pos[0])].raft.transfer_leadership(int(pos[1]))
        except (RaftError, ValueError) as e:
            return [f"transfer refused: {e}"]
        return []

    def read_index() -> list[str]:
        try:
            c.nodes[int(pos[0])].raft.read_index(pos[1].encode())
        except RaftError as e:
            return [f"read refused: {e}"]
        return []

    def conf_change() -> list[str]:
        return [c.conf_change(int(pos[0]), pos[1], int(pos[2]))]

    def restart() -> list[str]:
        for nid in _ids(pos[0]):
            c.restart(nid)
        return [c.state(nid) for nid in _ids(pos[0])]

    def set_campaign() -> list[str]:
        c.nodes[int(pos[0])].raft.set_campaign_allowed(pos[1] == "true")
        return []

    def add_blank() -> list[str]:
        c.add_nodes(_ids(pos[0]), None, blank=True)
        return [c.state(nid) for nid in _ids(pos[0])]

    def expect_leader() -> list[str]:
        want = int(pos[0])
        leaders = [nid for nid, n in c.nodes.items() if n.raft.role is Role.LEADER]
        term_max = max(n.raft.term for n in c.nodes.values())
        actual = [nid for nid in leaders if c.nodes[nid].raft.term == term_max]
        assert actual == ([want] if want else []), f"leader {actual}, want {want}"
        return []

    def expect_role() -> list[str]:
        nid, role = int(pos[0]), pos[1]
        assert c.nodes[nid].raft.role.name.lower() == role, c.state(nid)
        return []

    def expect_applied() -> list[str]:
        """expect-applied 1,2,3 data=a,b : these data values are applied (in order) on each."""
        want = [d.encode() for d in kv["data"].split(",")]
        for nid in _ids(pos[0]):
            got = [e.data for e in c.nodes[nid].applied if e.data and e.type == 0]
            assert got == want, f"node {nid} applied {got}, want {want}"
        return []

    def expect_logs_equal() -> list[str]:
        ids = _ids(pos[0])
        ref = {e.index: e for e in c.nodes[ids[0]].applied}
        for nid in ids[1:]:
            for e in c.nodes[nid].applied:
                if e.index in ref:
                    assert ref[e.index] == e, f"node {nid} applied {e} != {ref[e.index]}"
        return []

    def expect_msgs_at_most() -> list[str]:
        """expect-msgs-at-most N type=App from=1 to=2: count queued messages."""
        n = int(pos[0])
        got = [
            m
            for m in c.queue
            if type(m).__name__ == kv["type"] and m.frm == int(kv["from"]) and m.to == int(kv["to"])
        ]
        assert len(got) <= n, f"{len(got)} {kv['type']} messages queued, want <= {n}"
        return [f"{len(got)} queued"]

    def expect_round_trips() -> list[str]:
        """expect-round-trips-at-most N from=A to=B: stabilize, counting A->B appends."""
        out = c.stabilize()
        tag = f"  {kv['from']}->{kv['to']} "
        n = sum(1 for line in out if line.startswith(tag) and " App " in line)
        assert n <= int(pos[0]), f"{n} appends {kv['from']}->{kv['to']}, want <= {pos[0]}"
        return [f"{n} appends"]

    def expect_safety() -> list[str]:
        c.check_election_safety()
        return []

    handlers.update(
        {
            "add-nodes": add_nodes,
            "add-blank": add_blank,
            "campaign": campaign,
            "tick": tick,
            "tick-no-deliver": tick_no_deliver,
            "propose": propose,
            "stabilize": stabilize,
            "process-ready": process_ready,
            "deliver": deliver,
            "drop-first": drop_first,
            "partition": partition,
            "cut": cut,
            "heal": heal,
            "status": status,
            "log": log,
            "compact": compact,
            "transfer": transfer,
            "read-index": read_index,
            "conf-change": conf_change,
            "restart": restart,
            "set-campaign": set_campaign,
            "expect-leader": expect_leader,
            "expect-role": expect_role,
            "expect-applied": expect_applied,
            "expect-logs-equal": expect_logs_equal,
            "expect-msgs-at-most": expect_msgs_at_most,
            "expect-safety": expect_safety,
            "expect-round-trips-at-most": expect_round_trips,
        }
    )
    if cmd not in handlers:
        raise AssertionError(f"unknown command {cmd!r}")
    return handlers[cmd]()


def parse_blocks(text: str) -> list[tuple[int, str, str]]:
    """Blocks of (line number, comment lines + command, expected output)."""
    blocks: list[tuple[int, str, str]] = []
    lines = text.splitlines()
    i = 0
    comments: list[str] = []
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            comments.append(line)
        if not line.strip() or line.startswith("#"):
            i += 1
            continue
        start = i + 1
        cmd = "\n".join([*comments, line.strip()])
        comments = []
        i += 1
        assert i < len(lines) and lines[i] == "----", f"line {start}: expected ---- after command"
        i += 1
        out: list[str] = []
        while i < len(lines) and lines[i] != "":
            out.append(lines[i])
            i += 1
        blocks.append((start, cmd, "\n".join(out)))
    return blocks


def render(blocks: list[tuple[int, str, str]], outputs: list[str]) -> str:
    parts = []
    for (_, cmd, _), out in zip(blocks, outputs, strict=True):
        parts.append(f"{cmd}\n----\n{out}\n" if out else f"{cmd}\n----\n")
    return "\n".join(parts)


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.txt")), ids=lambda p: p.stem)
def test_scenario(path: Path) -> None:
    blocks = parse_blocks(path.read_text())
    c = Cluster()
    outputs: list[str] = []
    rewrite = bool(os.environ.get("STACK_REWRITE"))
    try:
        for lineno, cmd, expected in blocks:
            out = "\n".join(run_command(c, cmd.splitlines()[-1]))
            outputs.append(out)
            c.check_election_safety()
            if not rewrite:
                assert out == expected, (
                    f"{path.name}:{lineno}: {cmd}\n--- expected\n{expected}\n--- got\n{out}"
                )
    finally:
        if rewrite:
            outputs += ["(not reached)"] * (len(blocks) - len(outputs))
            path.write_text(render(blocks, outputs))
