"""Errors shared across the project. Each subsystem keeps its own small module
of named errors; these are the ones the API layer maps to status codes."""

from __future__ import annotations


class StackError(Exception):
    """Base class of errors a user can see."""


class ConfigError(StackError):
    """A setting is missing, unknown or malformed."""


class BadRequest(StackError):
    """The request is malformed; nothing was changed."""


class NotFound(StackError):
    pass


class Conflict(StackError):
    """A check-and-set or other precondition did not hold; nothing was changed."""


class Unauthorized(StackError):
    """No token was presented."""


class Forbidden(StackError):
    """The token is unknown or not allowed to do this."""


class NoLeader(StackError):
    """The cluster has no leader right now (election in progress or no quorum)."""


class Unavailable(StackError):
    """The node cannot serve this now (starting, stopping, sealed)."""


class Sealed(Unavailable):
    """The operation needs the barrier unsealed (secrets, signing, join tokens)."""
