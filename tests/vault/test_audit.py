"""The audit log: HMAC'd secrets, the hash chain and its verifier, restart and torn
lines, and what happens when the sink is full or blocks."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stack.api.errors import status_for
from stack.errors import Unavailable
from stack.vault import audit
from stack.vault.audit import (
    GENESIS,
    AuditCorrupt,
    AuditLog,
    AuditUnavailable,
    hmac_value,
    verify,
    verify_cli,
)

KEY = b"audit-key-for-tests-0123456789ab"


def req(i: int, **over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "id": f"req-{i}",
        "operation": "update",
        "path": f"secret/data/app{i}",
        "client_token": f"s.token-{i}",
        "client_token_accessor": f"accessor-{i}",
        "remote_address": "127.0.0.1",
        "data": {"value": f"v{i}"},
        "policies": ["default"],
    }
    r.update(over)
    return r


def resp(status: int = 200, **over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"status": status, "data": None, "auth": None, "error": None}
    r.update(over)
    return r


async def write_pairs(path: Path, n: int, start: int = 1) -> AuditLog:
    log = AuditLog(path, KEY, node="n1")
    for i in range(start, start + n):
        assert await log.log_request(req(i)) == f"req-{i}"
        await log.log_response(req(i), resp())
    return log


async def closed(log: AuditLog) -> None:
    log.close()
    await log.wait_closed()


def entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def named(path: Path) -> set[int]:
    return {f.line for f in verify(path).problems}


async def test_chain_verifies_and_lines_have_the_documented_shape(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, KEY, node="n1", clock=lambda: 0.5)
    await log.log_request(req(1))
    await log.log_response(req(1), resp(403, error="permission denied"))
    await closed(log)
    result = verify(path)
    assert result.ok and result.lines == 2 and result.warnings == ()
    first, second = entries(path)
    assert (first["seq"], first["prev"], first["type"], first["node"]) == (
        1,
        GENESIS,
        "request",
        "n1",
    )
    assert first["time"] == "1970-01-01T00:00:00.500000+00:00"
    assert "response" not in first and "error" not in first
    assert (second["seq"], second["prev"], second["type"]) == (2, first["hash"], "response")
    assert second["response"]["status"] == 403 and second["error"] == "permission denied"
    assert second["request"]["id"] == "req-1"
    assert log.head == (2, second["hash"])
    # Every line is canonical JSON and its hash is the documented one.
    for line, entry in zip(path.read_bytes().splitlines(), entries(path), strict=True):
        assert line == json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
        assert entry["hash"] == audit.entry_hash(entry)


async def test_one_flipped_byte_is_named_at_exactly_its_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    await closed(await write_pairs(path, 5))
    clean = path.read_bytes()
    lines = clean.split(b"\n")[:-1]
    assert len(lines) == 10
    start = 0
    tried = 0
    for n, line in enumerate(lines, start=1):
        fields = [line.index(b'"seq":') + 6, line.index(b'"prev":"') + 20]
        fields += [line.index(b'"hash":"') + 30, line.index(b'"path":"') + 10]
        for pos in sorted({0, 1, len(line) - 2, len(line) - 1, *fields, *range(3, len(line), 17)}):
            data = bytearray(clean)
            data[start + pos] ^= 0x01
            path.write_bytes(data)
            assert named(path) == {n}, (n, pos, bytes(line[max(0, pos - 10) : pos + 10]))
            tried += 1
        start += len(line) + 1
    assert tried > 200


async def test_verify_cli_prints_the_line_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.log"
    await closed(await write_pairs(path, 3))
    assert verify_cli(path) == 0
    assert "ok: 6 lines, chain intact" in capsys.readouterr().out
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b"secret/data/app2", b"secret/data/app9")
    path.write_bytes(b"".join(lines))
    assert verify_cli(path) == 1
    out = capsys.readouterr().out
    assert "line 4: hash mismatch (edited or corrupted)" in out
    assert "line 5" not in out and "line 3" not in out
    assert verify_cli(tmp_path / "missing.log") == 2


async def test_a_reformatted_line_is_named_though_its_content_is_unchanged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.log"
    await closed(await write_pairs(path, 2))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = json.dumps(json.loads(lines[1]), indent=None).encode() + b"\n"  # ", " and ": "
    path.write_bytes(b"".join(lines))
    result = verify(path)
    assert [(f.line, f.reason) for f in result.problems] == [(2, "not in canonical form (edited)")]


async def test_a_deleted_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    await closed(await write_pairs(path, 4))
    lines = path.read_bytes().splitlines(keepends=True)
    for k in range(1, len(lines)):  # the last line is the tail: see the head test below
        path.write_bytes(b"".join(lines[: k - 1] + lines[k:]))
        result = verify(path)
        assert {f.line for f in result.problems} == {k}, k
        assert any("prev mismatch" in f.reason for f in result.problems)
        assert any("seq gap" in f.reason for f in result.problems)


async def test_truncating_the_tail_is_caught_only_by_the_recorded_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = await write_pairs(path, 2)
    head = log.head
    await closed(log)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))
    assert verify(path).ok  # a chain cannot know what came after its end ...
    last = entries(path)[-1]
    assert (last["seq"], last["hash"]) != head  # ... but the head recorded elsewhere does


async def test_reordered_and_replayed_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    await closed(await write_pairs(path, 4))
    lines = path.read_bytes().splitlines(keepends=True)
    for k in range(1, len(lines)):  # swap lines k and k+1
        swapped = [*lines]
        swapped[k - 1], swapped[k] = swapped[k], swapped[k - 1]
        path.write_bytes(b"".join(swapped))
        got = named(path)
        assert {k, k + 1} <= got <= {k, k + 1, k + 2}, (k, got)
    path.write_bytes(b"".join([*lines[:3], lines[1], *lines[3:]]))  # line 2 replayed at 4
    assert named(path) == {4, 5}


async def test_secrets_are_hmacd_and_never_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    plain = {
        "token": "s.PLAIN-client-token",
        "accessor": "PLAIN-client-accessor",
        "d1": "PLAIN-data-password",
        "d2": "PLAIN-nested-list-item",
        "d3": "PLAIN-response-secret",
        "t2": "s.PLAIN-issued-token",
        "a2": "PLAIN-issued-accessor",
        "a3": "PLAIN-nested-accessor",
    }
    r = req(
        1,
        client_token=plain["token"],
        client_token_accessor=plain["accessor"],
        data={"password": plain["d1"], "nested": {"list": [plain["d2"], 5, True, None], "n": 7}},
    )
    out = resp(
        data={"secret": plain["d3"], "ttl": 3600, "renewable": False},
        auth={
            "client_token": plain["t2"],
            "accessor": plain["a2"],
            "policies": ["default"],
            "entity": {"accessor": plain["a3"], "lease": 60},
        },
    )
    log = AuditLog(path, KEY, node="n1")
    await log.log_request(r)
    await log.log_response(r, out)
    await closed(log)
    raw = path.read_bytes()
    for value in plain.values():
        assert value.encode() not in raw, value
        assert hmac_value(KEY, value).encode() in raw, value
    request_line, response_line = entries(path)

    def h(value: str) -> str:
        return hmac_value(KEY, value)

    for entry in (request_line, response_line):
        logged = entry["request"]
        assert logged["client_token"] == h(plain["token"])
        assert logged["client_token_accessor"] == h(plain["accessor"])
        assert logged["data"] == {
            "password": h(plain["d1"]),
            "nested": {"list": [h(plain["d2"]), 5, True, None], "n": 7},
        }
        assert logged["path"] == "secret/data/app1" and logged["policies"] == ["default"]
    logged_resp = response_line["response"]
    assert logged_resp["data"] == {"secret": h(plain["d3"]), "ttl": 3600, "renewable": False}
    assert logged_resp["auth"] == {
        "client_token": h(plain["t2"]),
        "accessor": h(plain["a2"]),
        "policies": ["default"],
        "entity": {"accessor": h(plain["a3"]), "lease": 60},
    }
    assert hmac_value(b"another key", plain["token"]) != h(plain["token"])
    assert h(plain["token"]).startswith("hmac-sha256:") and len(h(plain["token"])) == 12 + 64


async def test_restart_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    first = await write_pairs(path, 2)
    head = first.head
    await closed(first)
    second = AuditLog(path, KEY, node="n1")
    assert second.head == head == (4, entries(path)[-1]["hash"])
    await second.log_request(req(3))
    await closed(second)
    got = entries(path)
    assert [e["seq"] for e in got] == [1, 2, 3, 4, 5]
    assert got[4]["prev"] == head[1] and "recovered" not in got[4]
    assert verify(path).ok and verify(path).warnings == ()


async def test_a_whole_last_line_missing_only_its_newline_is_not_torn(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    await closed(await write_pairs(path, 1))
    path.write_bytes(path.read_bytes()[:-1])
    log = AuditLog(path, KEY, node="n1")
    assert log.head == (2, entries(path)[-1]["hash"])
    await log.log_request(req(2))
    await closed(log)
    got = entries(path)
    assert [e["seq"] for e in got] == [1, 2, 3] and "recovered" not in got[2]
    assert verify(path).ok and verify(path).warnings == ()


async def test_a_second_writer_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, KEY, node="n1")
    with pytest.raises(AuditUnavailable, match="another audit writer"):
        AuditLog(path, KEY, node="n2")
    await closed(log)
    await closed(AuditLog(path, KEY, node="n2"))  # free again once closed


async def test_torn_last_line_is_a_warning_and_the_chain_continues(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    await closed(await write_pairs(path, 2))
    complete = entries(path)
    offset = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b'{"error":null,"hash":"ab12')  # the crash
    before = verify(path)
    assert before.ok and [f.line for f in before.warnings] == [5]
    assert "torn last line" in before.warnings[0].reason

    log = AuditLog(path, KEY, node="n1")
    assert log.head == (4, complete[-1]["hash"])
    await log.log_request(req(3))
    await closed(log)
    after = verify(path)
    assert after.ok and after.lines == 6
    assert [f.line for f in after.warnings] == [5] and "see line 6" in after.warnings[0].reason
    new = json.loads(path.read_bytes().split(b"\n")[5])
    assert new["seq"] == 5 and new["prev"] == complete[-1]["hash"]
    assert new["recovered"] == f"torn line at {offset}"

    # A planted fake: the same garbage without the recovery note is tampering.
    data = path.read_bytes().split(b"\n")
    data[5] = data[1]
    path.write_bytes(b"\n".join(data))
    assert 5 in named(path)


async def test_two_torn_lines_after_repeated_crashes(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    await closed(await write_pairs(path, 1))
    first = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b'{"seq":3,"ti\n')
        second = f.tell()
        f.write(b'{"recovered":"torn line at')
    log = AuditLog(path, KEY, node="n1")
    await log.log_request(req(2))
    await closed(log)
    tail = json.loads(path.read_bytes().split(b"\n")[-2])
    assert tail["seq"] == 3 and tail["recovered"] == f"torn lines at {first}, {second}"
    result = verify(path)
    assert result.ok and [f.line for f in result.warnings] == [3, 4]


async def test_a_file_ending_in_garbage_needs_an_operator(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b"not an audit line\n" * 40)
    with pytest.raises(AuditCorrupt, match="stack audit verify"):
        AuditLog(path, KEY, node="n1")


async def test_an_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(AuditUnavailable, match="cannot open"):
        AuditLog(tmp_path / "file" / "audit.log", KEY, node="n1")  # parent is a file


async def test_file_mode_and_directory(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "dir" / "audit.log"
    log = AuditLog(path, KEY, node="n1")
    await log.log_request(req(1))
    await closed(log)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.parent.is_dir()
    with pytest.raises(AuditUnavailable, match="closed"):
        await log.log_request(req(2))


async def test_full_disk_refuses_fast_and_writes_nothing() -> None:
    log = AuditLog(Path("/dev/full"), KEY, node="n1", write_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(AuditUnavailable, match="No space left") as info:
        await log.log_request(req(1))
    assert time.monotonic() - started < 1.0
    assert isinstance(info.value, Unavailable) and status_for(info.value) == 503
    assert log.head == (0, GENESIS) and not log.stalled  # the chain did not move
    with pytest.raises(AuditUnavailable):  # each request tries again, and fails again
        await log.log_response(req(1), resp())
    assert log.head == (0, GENESIS)
    await closed(log)


async def test_a_write_that_fails_part_way_leaves_a_recovered_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.log"
    log = await write_pairs(path, 1)
    real_write = os.write
    calls: list[int] = []

    def disk_fills(fd: int, data: Any) -> int:
        if not threading.current_thread().name.startswith("audit-"):
            return real_write(fd, data)
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:25]))  # part of the line lands ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    offset = path.stat().st_size
    monkeypatch.setattr(os, "write", disk_fills)
    with pytest.raises(AuditUnavailable):
        await log.log_request(req(2))
    monkeypatch.setattr(os, "write", real_write)
    assert log.head[0] == 2 and len(calls) == 2
    await log.log_request(req(3))
    await closed(log)
    raw = path.read_bytes().split(b"\n")
    assert len(raw[2]) == 25  # the torn fragment, on a line of its own
    after = json.loads(raw[3])
    assert after["seq"] == 3 and after["recovered"] == f"torn line at {offset}"
    assert after["request"]["id"] == "req-3"
    result = verify(path)
    assert result.ok and [f.line for f in result.warnings] == [3]


async def test_a_blocked_sink_fails_fast_then_drains_in_order(tmp_path: Path) -> None:
    fifo = tmp_path / "sink"
    os.mkfifo(fifo)
    got = bytearray()
    read_once = threading.Event()
    release = threading.Event()

    with pytest.raises(AuditUnavailable, match="No such device"):
        AuditLog(fifo, KEY, node="n1")  # no reader yet: refused, not hung
    read_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(read_fd, True)

    def reader() -> None:
        with open(read_fd, "rb", buffering=0) as f:
            got.extend(f.read(65536))
            read_once.set()
            release.wait(10)  # the sink stops reading: the pipe fills
            while chunk := f.read(65536):
                got.extend(chunk)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    log = AuditLog(fifo, KEY, node="n1", write_timeout=0.5)
    await log.log_request(req(1))
    assert await asyncio.to_thread(read_once.wait, 5)

    big = req(2, data={"numbers": list(range(100_000))})  # far more than a pipe holds
    started = time.monotonic()
    with pytest.raises(AuditUnavailable, match="did not accept"):
        await log.log_request(big)
    assert 0.4 < time.monotonic() - started < 2.0
    assert log.stalled

    started = time.monotonic()
    with pytest.raises(AuditUnavailable, match="blocked"):
        await log.log_request(req(3))  # refused without queueing
    with pytest.raises(AuditUnavailable, match="queued"):
        await log.log_response(req(1), resp())  # req-1 ran: its response is kept
    assert time.monotonic() - started < 0.2

    release.set()
    for _ in range(100):
        if not log.stalled:
            break
        await asyncio.sleep(0.05)
    assert not log.stalled
    await log.log_request(req(4))
    await closed(log)
    await asyncio.to_thread(thread.join, 5)
    assert not thread.is_alive()

    copy = tmp_path / "copy.log"
    copy.write_bytes(bytes(got))
    assert verify(copy).ok
    order = [(e["seq"], e["type"], e["request"]["id"]) for e in entries(copy)]
    assert order == [
        (1, "request", "req-1"),
        (2, "request", "req-2"),
        (3, "response", "req-2"),
        (4, "response", "req-1"),
        (5, "request", "req-4"),
    ]
    refusal = entries(copy)[2]
    assert refusal["response"]["status"] == 503 and "refused" in refusal["error"]
