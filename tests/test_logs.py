"""Log hygiene: a malformed HTTP request costs one short line, not a traceback."""

from __future__ import annotations

import logging
import sys

from aiohttp.http_exceptions import LineTooLong

from stack.logs import _BadHttpRequests


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        info = sys.exc_info()
    return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1,
                             "Error handling request", (), info)  # fmt: skip


def test_malformed_request_becomes_one_warning_line() -> None:
    rec = _record(LineTooLong(b"x" * 100, 8190))
    assert _BadHttpRequests().filter(rec)
    assert rec.levelno == logging.WARNING and rec.exc_info is None
    assert rec.getMessage() == "malformed HTTP request refused: LineTooLong"


def test_other_errors_keep_their_traceback() -> None:
    rec = _record(RuntimeError("a real bug"))
    assert _BadHttpRequests().filter(rec)
    assert rec.levelno == logging.ERROR and rec.exc_info is not None
