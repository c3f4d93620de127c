"""The pure parts of `bench.detect_bench`: Serf's member lists (CLI JSON and RPC),
finding the stack victim's member id, and the per-run summary. No processes, no Serf."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not installed

from bench.detect_bench import (
    SerfRpc,
    first_and_all,
    markdown,
    serf_cli_statuses,
    serf_rpc_statuses,
    stack_member_id,
    summarize,
)

# What `serf members -format=json` printed (serf 0.9.4, Debian), one member failed.
CLI_JSON = """{
  "members": [
    {"name": "serf-127.0.0.230", "addr": "127.0.0.230:7946", "port": 7946, "tags": {},
     "status": "alive", "protocol": {"max": 5, "min": 2, "version": 5}},
    {"name": "serf-127.0.0.234", "addr": "127.0.0.234:7946", "port": 7946, "tags": {},
     "status": "failed", "protocol": {"max": 5, "min": 2, "version": 5}}
  ]
}"""


def test_serf_cli_statuses() -> None:
    assert serf_cli_statuses(CLI_JSON) == {
        "serf-127.0.0.230": "alive",
        "serf-127.0.0.234": "failed",
    }
    assert serf_cli_statuses('{"members": null}') == {}


def test_serf_rpc_statuses() -> None:
    body = {
        "Members": [
            {"Name": "a", "Addr": b"\x7f\x00\x00\xe6", "Port": 7946, "Status": "alive"},
            {"Name": "b", "Addr": b"\x7f\x00\x00\xe7", "Port": 7946, "Status": "failed"},
        ]
    }
    assert serf_rpc_statuses(body) == {"a": "alive", "b": "failed"}


async def test_serf_rpc_client_against_a_fake_agent() -> None:
    """Handshake then `members`, with the answer split across reads."""
    got: list[Any] = []
    done = asyncio.Event()

    async def agent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        members = msgpack.packb({"Members": [{"Name": "a", "Addr": b"\xff", "Status": "failed"}]})
        while data := await reader.read(4096):  # until the client closes
            unpacker.feed(data)
            for obj in unpacker:
                got.append(obj)
                if obj.get("Command") == "members":
                    answer = msgpack.packb({"Seq": obj["Seq"], "Error": ""}) + members
                    for i in range(0, len(answer), 7):  # in pieces
                        writer.write(answer[i : i + 7])
                        await writer.drain()
                elif "Version" in obj:  # the handshake's body
                    writer.write(msgpack.packb({"Seq": 0, "Error": ""}))
        writer.close()
        await writer.wait_closed()
        done.set()

    server = await asyncio.start_server(agent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rpc = SerfRpc(f"127.0.0.1:{port}")
    try:
        assert await asyncio.wait_for(rpc.members(), 5.0) == {"a": "failed"}
    finally:
        await rpc.aclose()
        await asyncio.wait_for(done.wait(), 5.0)
        server.close()
        await server.wait_closed()
    assert got == [
        {"Command": "handshake", "Seq": 0},
        {"Version": 1},
        {"Command": "members", "Seq": 1},
    ]


def test_stack_member_id() -> None:
    rows = [
        {"id": "11", "address": "127.0.0.200:17481", "http": "http://127.0.0.200:17480"},
        {"id": "12", "address": "127.0.0.201:17481", "http": ""},
        {"id": "13", "address": "", "http": "http://127.0.0.202:17480"},
    ]
    assert stack_member_id(rows, "127.0.0.201") == "12"
    assert stack_member_id(rows, "127.0.0.202") == "13"
    with pytest.raises(RuntimeError):
        stack_member_id(rows, "127.0.0.20")


def test_first_and_all() -> None:
    seen: dict[str, dict[str, float | None]] = {
        "a": {"dead": 5.2},
        "b": {"dead": 5.4},
        "c": {"dead": 5.3},
    }
    assert first_and_all(seen, "dead") == [5.2, 5.4]
    seen["c"]["dead"] = None
    assert first_and_all(seen, "dead") == [5.2, None]  # one never saw it: no "every"


def _run(n: int, dead: tuple[float, float], failed: tuple[float, float]) -> dict[str, Any]:
    return {
        "run": n,
        "load_at_kill": {"loadavg_1m": 2.0},
        "stack": {"dead": list(dead), "down": [dead[0], dead[1]], "suspect": [1.0, 1.1]},
        "serf": {"failed": list(failed)},
    }


def test_summary_medians_and_ratios() -> None:
    runs = [
        _run(1, (5.0, 5.5), (6.0, 6.2)),
        _run(2, (4.0, 4.1), (8.0, 8.2)),
        _run(3, (6.0, 6.6), (6.0, 6.6)),
    ]
    s = summarize(runs)
    assert s["stack ring dead, first"] == 5.0
    assert s["serf failed, every"] == 6.6
    # Ratios are taken per run (same machine load), then their median.
    assert s["ratio stack/serf, first"] == pytest.approx(5.0 / 6.0)
    assert s["ratio stack/serf, every"] == pytest.approx(5.5 / 6.2)
    table = markdown({"runs": runs, "summary": s})
    assert table.count("\n") == 2 + 3 + 1
    assert "| **median** | 5.00 | 5.50 |" in table
    json.dumps(s)  # goes into the --json output as is
