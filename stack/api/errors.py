"""Exception classes to HTTP status codes, in one table. Every error body is
`{"errors": ["..."]}`."""

from __future__ import annotations

from aiohttp import web

from stack import errors
from stack.raft.errors import NotLeader, OutcomeUnknown, ProposalDropped
from stack.raft.node import NodeStopped
from stack.vault.barrier import Sealed as BarrierSealed

STATUS: list[tuple[type[BaseException], int]] = [
    (errors.BadRequest, 400),
    (errors.ConfigError, 400),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.NoLeader, 503),
    (BarrierSealed, 503),
    (errors.Unavailable, 503),
    (NotLeader, 503),
    (ProposalDropped, 503),
    (NodeStopped, 503),
    (OutcomeUnknown, 504),
    (errors.StackError, 500),
]


def status_for(exc: BaseException) -> int | None:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return None


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"errors": [message]}, status=status)
