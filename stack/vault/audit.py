"""The audit log: every request and response, written by the node that served it,
secret values HMAC'd, each line hash-chained to the one before.

One JSON object per line (canonical: sorted keys, no spaces, ASCII)::

    {"seq": 7, "time": "...", "type": "request" | "response", "node": "n1",
     "request": {...}, "response": {...}, "error": "...", "recovered": "...",
     "prev": "<hash of line 6>", "hash": "<sha256(bytes(prev) || canonical(line minus hash))>"}

``response`` and ``error`` appear on response lines only (``error`` only when the
response carried one); ``recovered`` only after a torn line (below). The first line's
``prev`` is 64 zeros. Because each line's hash covers its ``prev``, editing,
deleting, inserting or reordering lines breaks the chain where it happened, and
``verify`` (``stack audit verify``) names the line. The chain is a plain SHA-256, so
it shows edits by someone who did not rewrite every later line too; truncating the
tail, or rewriting the whole tail, is only caught by comparing against a head
recorded elsewhere (``AuditLog.head``).

What is HMAC'd (HMAC-SHA256 under the node's audit key, written as
``hmac-sha256:<hex>``): the client token and its accessor, every string anywhere under
the request's and the response's ``data``, and the response auth's ``client_token``
and any ``accessor`` in it. Other values stay as they are, as in Vault: numbers,
booleans and null inside ``data``, and the path, operation, policies, status and
error. An operator who knows a value finds it with ``hmac_value`` (Vault's
``sys/audit-hash``).

Writing. Lines are built and appended by one writer thread, in the order the calls
were made, with ``os.write`` on an ``O_APPEND`` descriptor (no user-space buffer, so
nothing half-written can linger and reappear later) and ``os.fsync`` only if asked,
like Vault's file device. The chain state (``seq``, ``prev``) lives in that thread and
advances only when a whole line is in the file, so a failed write never leaves a gap.

When the sink fails or blocks. Vault refuses to answer until some audit device
accepts the line, so a stuck sink hangs every request. We choose to fail fast
instead, so the API stays responsive and says why: (1) a write that fails (OSError,
a full disk say) raises ``AuditUnavailable`` (503) at once; (2) a write not done
within ``write_timeout`` raises ``AuditUnavailable`` too, and the log is *stalled*
until its queue drains: meanwhile ``log_request`` refuses at once without queueing.
Either way the caller must refuse the request without executing it, so no
un-audited operation ever happens. Nothing queued is dropped or reordered: a line
whose caller gave up stays queued and is written in order when the sink unblocks,
followed by a response line recording that the request was refused (status 503). A
``log_response`` for a request that already ran is always queued (so its effect is
audited, late) even while stalled, but raises at once instead of waiting; the client
then sees a 503 although the operation happened, as Vault answers with an error when
the response cannot be audited. A line whose write failed is not retried: its caller
was told.

Torn lines. A crash, or a write that fails part-way, can leave a line without its
end. The next line starts on a new line, continues the chain from the last complete
line, and records ``"recovered": "torn line at <byte offset>"`` (``"torn lines at
a, b"`` for several), so ``verify`` reports a warning instead of tampering. On open
the writer reads the file backwards from its end, never the whole file, to find the
last complete line. Only one writer may hold a file (``flock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import os
import queue
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from stack.errors import StackError, Unavailable

__all__ = [
    "GENESIS",
    "AuditCorrupt",
    "AuditLog",
    "AuditUnavailable",
    "Finding",
    "VerifyResult",
    "entry_hash",
    "hmac_value",
    "verify",
    "verify_cli",
]

GENESIS = "0" * 64
HMAC_PREFIX = "hmac-sha256:"
_BLOCK = 64 * 1024
_MAX_TORN_TAIL = 16  # unparsable lines tolerated at the end of the file on open
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RECOVERED = re.compile(r"torn lines? at (\d+(?:, \d+)*)")


class AuditUnavailable(Unavailable):
    """The audit sink failed or is blocked: the request must be refused (503) unexecuted."""


class AuditCorrupt(StackError):
    """The end of an existing audit file is not audit lines; it needs an operator."""


def hmac_value(key: bytes, value: str) -> str:
    """What the log holds in place of ``value``: grep for it to find where it was used."""
    mac = hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return HMAC_PREFIX + mac.hexdigest()


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def entry_hash(entry: Mapping[str, Any]) -> str:
    """The hash of a line: over its ``prev`` and its canonical form without ``hash``."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(bytes.fromhex(entry["prev"]) + _canonical(body)).hexdigest()


# ---- redaction -----------------------------------------------------------------


def _hmac_strings(key: bytes, value: Any) -> Any:
    if isinstance(value, str):
        return hmac_value(key, value)
    if isinstance(value, Mapping):
        return {k: _hmac_strings(key, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_hmac_strings(key, v) for v in value]
    return value


def _hmac_accessors(key: bytes, value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: hmac_value(key, v)
            if k == "accessor" and isinstance(v, str)
            else _hmac_accessors(key, v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_hmac_accessors(key, v) for v in value]
    return value


def _redact_request(key: bytes, req: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(req)
    for name in ("client_token", "client_token_accessor"):
        if isinstance(out.get(name), str):
            out[name] = hmac_value(key, out[name])
    if "data" in out:
        out["data"] = _hmac_strings(key, out["data"])
    return out


def _redact_response(key: bytes, resp: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in resp.items() if k != "error"}
    if "data" in out:
        out["data"] = _hmac_strings(key, out["data"])
    auth = out.get("auth")
    if isinstance(auth, Mapping):
        auth = _hmac_accessors(key, auth)
        if isinstance(auth.get("client_token"), str):
            auth["client_token"] = hmac_value(key, auth["client_token"])
        out["auth"] = auth
    return out


# ---- reading lines back --------------------------------------------------------


def _parse_entry(line: bytes) -> dict[str, Any] | str:
    """The entry on ``line``, or why it is not one."""
    try:
        entry = json.loads(line)
    except ValueError:
        return "bad JSON"
    if not isinstance(entry, dict):
        return "not an audit entry (not an object)"
    seq = entry.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return "not an audit entry (bad 'seq')"
    for name in ("prev", "hash"):
        value = entry.get(name)
        if not isinstance(value, str) or not _HEX64.fullmatch(value):
            return f"not an audit entry (bad {name!r})"
    return entry


def _rfind_newline(fd: int, end: int) -> int:
    """Offset of the last newline before ``end``, or -1; reads backwards in blocks."""
    while end > 0:
        start = max(0, end - _BLOCK)
        block = os.pread(fd, end - start, start)
        i = block.rfind(b"\n")
        if i >= 0:
            return start + i
        end = start
    return -1


@dataclass(slots=True)
class _Tail:
    seq: int = 0
    hash: str = GENESIS
    size: int = 0
    torn: list[int] = field(default_factory=list)
    need_newline: bool = False


def _read_tail(fd: int, size: int) -> _Tail:
    """Where the chain ends in an existing file: its last line that is an entry, and the
    offsets of any torn (unparsable) lines after it."""
    tail = _Tail(size=size, need_newline=size > 0 and os.pread(fd, 1, size - 1) != b"\n")
    end = size if tail.need_newline else size - 1  # end of the last line's content
    while end > 0:
        nl = _rfind_newline(fd, end)
        start = nl + 1
        entry = _parse_entry(os.pread(fd, end - start, start))
        if isinstance(entry, dict):
            tail.seq, tail.hash = entry["seq"], entry["hash"]
            break
        if len(tail.torn) == _MAX_TORN_TAIL:
            raise AuditCorrupt(
                f"the last {_MAX_TORN_TAIL} lines of the audit log are not audit entries; "
                "run `stack audit verify` and move the file aside"
            )
        tail.torn.insert(0, start)
        end = nl
    return tail


# ---- the writer ----------------------------------------------------------------


@dataclass(slots=True)
class _Job:
    body: dict[str, Any]
    loop: asyncio.AbstractEventLoop
    waiter: asyncio.Future[None]
    done: bool = False  # set by the writer thread, under AuditLog._lock
    error: BaseException | None = None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class AuditLog:
    """Appends audit lines to ``path`` from one writer thread; see the module docstring."""

    def __init__(
        self,
        path: Path,
        hmac_key: bytes,
        *,
        node: str,
        clock: Callable[[], float] = time.time,
        write_timeout: float = 5.0,
        fsync: bool = False,
    ) -> None:
        self.path = path
        self.node = node
        self._key = hmac_key
        self._clock = clock
        self._timeout = write_timeout
        self._fsync = fsync
        # Non-blocking open: a FIFO with no reader fails now instead of hanging the caller.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, flags, 0o600)
        except OSError as e:
            raise AuditUnavailable(f"cannot open the audit log {path}: {e.strerror}") from e
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
            self._regular = stat.S_ISREG(os.fstat(fd).st_mode)
            tail = _Tail()
            if self._regular:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise AuditUnavailable(f"{path} is held by another audit writer") from None
                with open(path, "rb") as reader:
                    tail = _read_tail(reader.fileno(), os.fstat(fd).st_size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._tail = tail  # the chain state: touched only by the writer thread after start
        self._head = (tail.seq, tail.hash)
        self._lock = threading.Lock()
        self._pending = 0
        self._stalled = False
        self._closed = False
        self._finished = threading.Event()
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()  # None: close
        self._thread = threading.Thread(target=self._run, name=f"audit-{node}", daemon=True)
        self._thread.start()

    # -- the asyncio side --

    @property
    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last line written; record it elsewhere to catch truncation."""
        with self._lock:
            return self._head

    @property
    def stalled(self) -> bool:
        """True from a write timeout until every queued line is written."""
        with self._lock:
            return self._stalled

    async def log_request(self, req: Mapping[str, Any]) -> str:
        """Audit ``req`` before it runs; returns its id. ``AuditUnavailable``: refuse it."""
        body = self._body("request", req)
        with self._lock:
            self._check_open()
            if self._stalled:
                raise AuditUnavailable(
                    f"audit log blocked ({self._pending} lines waiting for the sink)"
                )
        job = self._submit(body)
        try:
            await self._wait(job)
        except _TimedOut as e:
            refusal = {"status": 503, "data": None, "auth": None, "error": _REFUSED}
            self._submit(self._body("response", req, refusal))
            raise AuditUnavailable(str(e)) from None
        return str(req["id"])

    async def log_response(self, req: Mapping[str, Any], resp: Mapping[str, Any]) -> None:
        """Audit the response to ``req``. Queued even when stalled, so it is never lost."""
        body = self._body("response", req, resp)
        with self._lock:
            self._check_open()
            stalled = self._stalled
        job = self._submit(body)
        if stalled:
            raise AuditUnavailable("audit log blocked; the response is queued behind it")
        try:
            await self._wait(job)
        except _TimedOut as e:
            raise AuditUnavailable(str(e)) from None

    def close(self) -> None:
        """Refuse new lines; the writer thread writes what is queued, then closes the file.
        Does not wait (``wait_closed`` does), so it is safe on the event loop."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)

    async def wait_closed(self) -> None:
        """Wait for ``close`` to finish; ``AuditUnavailable`` if the sink has not drained
        within ``write_timeout`` (the thread still closes the file once it does)."""
        if not await asyncio.to_thread(self._finished.wait, self._timeout):
            raise AuditUnavailable("the audit sink did not drain before close")

    def _check_open(self) -> None:
        if self._closed:
            raise AuditUnavailable("audit log is closed")

    def _body(
        self, kind: str, req: Mapping[str, Any], resp: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        when = datetime.fromtimestamp(self._clock(), tz=UTC).isoformat(timespec="microseconds")
        body: dict[str, Any] = {
            "time": when,
            "type": kind,
            "node": self.node,
            "request": _redact_request(self._key, req),
        }
        if resp is not None:
            body["response"] = _redact_response(self._key, resp)
            if resp.get("error") is not None:
                body["error"] = resp["error"]
        return body

    def _submit(self, body: dict[str, Any]) -> _Job:
        loop = asyncio.get_running_loop()
        job = _Job(body, loop, loop.create_future())
        with self._lock:  # the check and the put together, so nothing lands after close's
            self._check_open()
            self._pending += 1
            self._queue.put(job)
        return job

    async def _wait(self, job: _Job) -> None:
        await asyncio.wait({job.waiter}, timeout=self._timeout)
        with self._lock:  # the outcome is read here, so a write that just made it counts
            if not job.done:
                self._stalled = True
                raise _TimedOut(f"audit sink did not accept a line within {self._timeout}s")
            error = job.error
        if isinstance(error, OSError):
            raise AuditUnavailable(f"cannot write the audit log: {error}") from error
        if error is not None:
            raise error

    # -- the writer thread --

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                os.close(self._fd)
                self._finished.set()
                return
            error: BaseException | None = None
            try:
                self._append(job.body)
            except Exception as e:  # reported to the caller, who raises it
                error = e
            with self._lock:
                job.done, job.error = True, error
                self._head = (self._tail.seq, self._tail.hash)
                self._pending -= 1
                if self._pending == 0:
                    self._stalled = False
            self._notify(job)

    @staticmethod
    def _notify(job: _Job) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            job.loop.call_soon_threadsafe(_wake, job.waiter)

    def _append(self, body: dict[str, Any]) -> None:
        t = self._tail
        entry = dict(body, seq=t.seq + 1, prev=t.hash)
        if t.torn:
            many = len(t.torn) > 1
            offsets = ", ".join(map(str, t.torn))
            entry["recovered"] = f"torn line{'s' if many else ''} at {offsets}"
        entry["hash"] = entry_hash(entry)
        lead = b"\n" if t.need_newline else b""
        data = memoryview(lead + _canonical(entry) + b"\n")
        written = 0
        try:
            while written < len(data):
                n = os.write(self._fd, data[written:])
                if n == 0:
                    raise OSError(errno.EIO, "audit sink accepted no bytes")
                written += n
        except OSError:
            if written > len(lead):  # part of the line is in the file: a torn line
                t.torn.append(t.size + len(lead))
                t.need_newline = True
            elif written == len(lead) == 1:
                t.need_newline = False
            t.size += written
            raise
        t.size += written
        t.seq, t.hash, t.torn, t.need_newline = entry["seq"], entry["hash"], [], False
        if self._fsync and self._regular:
            os.fsync(self._fd)


class _TimedOut(Exception):
    pass


_REFUSED = "request refused: the audit sink did not accept its request line in time"


# ---- verification --------------------------------------------------------------


class Finding(NamedTuple):
    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    lines: int
    problems: tuple[Finding, ...]  # tampering or corruption
    warnings: tuple[Finding, ...]  # torn lines from crashes or failed writes

    @property
    def ok(self) -> bool:
        return not self.problems


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(offset, content, ended by a newline) for each line, streamed."""
    offset = 0
    with open(path, "rb") as f:
        for raw in f:
            complete = raw.endswith(b"\n")
            yield offset, raw[:-1] if complete else raw, complete
            offset += len(raw)


def verify(path: Path) -> VerifyResult:
    """Check the chain line by line; each break is reported once, at the line where it is."""
    problems: list[Finding] = []
    warnings: list[Finding] = []
    # What the next entry may chain to; None after an unreadable line (unknown).
    links: set[str] | None = {GENESIS}
    seqs: set[int] | None = {1}
    unread: list[tuple[int, int, bool]] = []  # (line, offset, complete) since the last entry
    count = 0
    for count, (offset, line, complete) in enumerate(_lines(path), start=1):
        entry = _parse_entry(line)
        if isinstance(entry, str):
            if entry == "bad JSON":
                unread.append((count, offset, complete))
            else:
                problems.append(Finding(count, entry))
                links = seqs = None
            continue
        claimed: set[int] = set()
        recovered = entry.get("recovered")
        if recovered is not None:
            m = _RECOVERED.fullmatch(recovered) if isinstance(recovered, str) else None
            if m is None:
                problems.append(Finding(count, "bad 'recovered' field"))
            else:
                claimed = {int(x) for x in m.group(1).split(", ")}
        torn_offsets = {off for _, off, _ in unread}
        for n, off, _ in unread:
            if off in claimed:
                warnings.append(Finding(n, f"torn line (crash or failed write), see line {count}"))
            else:
                problems.append(Finding(n, "bad JSON (edited or corrupted)"))
        for off in sorted(claimed - torn_offsets):
            problems.append(Finding(count, f"claims a torn line at offset {off} that is not there"))
        if any(off not in claimed for off in torn_offsets):
            links = seqs = None
        unread = []

        computed = entry_hash(entry)
        if computed != entry["hash"]:
            problems.append(Finding(count, "hash mismatch (edited or corrupted)"))
        elif _canonical(entry) != line:
            problems.append(Finding(count, "not in canonical form (edited)"))
        if links is not None and entry["prev"] not in links:
            problems.append(Finding(count, "prev mismatch (a line was deleted, inserted or moved)"))
        if seqs is not None and entry["seq"] not in seqs:
            want = min(seqs)
            problems.append(Finding(count, f"seq gap (expected {want}, found {entry['seq']})"))
        if computed == entry["hash"]:
            links, seqs = {computed}, {entry["seq"] + 1}
        else:  # this line is already named; let the next one chain to either version
            links = {computed, entry["hash"]}
            seqs = {entry["seq"] + 1} | ({s + 1 for s in seqs} if seqs else set())
    for n, _off, complete in unread:
        if complete:
            problems.append(Finding(n, "bad JSON (edited or corrupted)"))
        else:
            warnings.append(Finding(n, "torn last line (crash mid-write)"))
    problems.sort()
    warnings.sort()
    return VerifyResult(count, tuple(problems), tuple(warnings))


def verify_cli(path: Path) -> int:
    """``stack audit verify``: 0 when the chain is intact, 1 when tampered, 2 unreadable."""
    try:
        result = verify(path)
    except OSError as e:
        print(f"cannot read {path}: {e.strerror or e}")
        return 2
    for f in result.warnings:
        print(f"line {f.line}: warning: {f.reason}")
    for f in result.problems:
        print(f"line {f.line}: {f.reason}")
    if result.ok:
        print(f"ok: {result.lines} lines, chain intact")
        return 0
    print(f"TAMPERED: {len(result.problems)} problems in {result.lines} lines")
    return 1
