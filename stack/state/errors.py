"""Named errors of the FSM and state store.

Two families: registration mistakes (a programmer registered the same command
number or name twice) raise at start-up; apply failures stop the node, because a
replica that cannot apply an entry every other replica applied has diverged.
Expected domain outcomes (a failed check-and-set) are never errors: they are
return values every replica computes identically.
"""

from __future__ import annotations


class StateError(Exception):
    """Base class for errors of `stack.state`."""


class DuplicateCommand(StateError):
    """A command number or name is already registered: numbers are append-only."""


class CorruptEntry(StateError):
    """A log entry's payload is not a version byte followed by msgpack [type_id, body]."""

    def __init__(self, index: int, reason: str) -> None:
        self.index = index
        self.reason = reason
        super().__init__(f"log entry {index}: corrupt command payload: {reason}")


class UnknownCommand(StateError):
    """A log entry names a command type this build does not know and that is not
    flagged ignorable. The node must stop: applying around it would diverge."""

    def __init__(self, type_id: int, index: int) -> None:
        self.type_id = type_id
        self.index = index
        super().__init__(
            f"log entry {index}: unknown command type {type_id}; "
            "this build is older than the cluster's log: upgrade it"
        )


class ApplyFailed(StateError):
    """An apply function raised: a bug. The original exception is `__cause__`."""

    def __init__(self, name: str, type_id: int, index: int, error: BaseException) -> None:
        self.name = name
        self.type_id = type_id
        self.index = index
        super().__init__(
            f"log entry {index}: applying command {name} (type {type_id}) failed: "
            f"{type(error).__name__}: {error}"
        )


class ApplyOutOfOrder(StateError):
    """The host applied an index at or below one already applied (a double apply)."""

    def __init__(self, index: int, applied: int) -> None:
        self.index = index
        self.applied = applied
        super().__init__(f"apply of log entry {index} after entry {applied} was already applied")


class IndexRegression(StateError):
    """A write carried an index below the table's index: writes must move forward."""


class SnapshotCorrupt(StateError):
    """A snapshot failed validation; the state store was left unchanged."""
