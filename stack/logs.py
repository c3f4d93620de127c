"""structlog set-up: human-readable on a terminal, JSON lines with --log-json.

Log lines never carry token secrets or secret values: callers log accessors,
hashes or lengths instead.
"""

from __future__ import annotations

import logging
import sys

import structlog


class _BadHttpRequests(logging.Filter):
    """aiohttp logs a full traceback at ERROR for every malformed request (an oversized
    header, say): anyone could flood the log that way. Keep one short warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "malformed HTTP request refused: %s", (type(exc).__name__,)
            record.exc_info = record.exc_text = None
        return True


def configure(level: str = "info", json_lines: bool = False) -> None:
    lvl = getattr(logging, level.upper())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("aiohttp.server").addFilter(_BadHttpRequests())
