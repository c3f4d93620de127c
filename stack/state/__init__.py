"""FSM and state store: numbered commands, in-memory tables, snapshots, watches.

See docs/state.md. The composition root builds one `CommandRegistry`, calls
`register_substrate_commands` and each engine's register function, and hands
the registry to `FSM`.
"""

from __future__ import annotations

from stack.state import kv, nodes, tombstones
from stack.state.commands import (
    IGNORABLE_FLAG,
    ApplyContext,
    Command,
    CommandRegistry,
    CommandSpec,
    WriteResult,
)
from stack.state.errors import (
    ApplyFailed,
    ApplyOutOfOrder,
    CorruptEntry,
    DuplicateCommand,
    IndexRegression,
    SnapshotCorrupt,
    StateError,
    UnknownCommand,
)
from stack.state.fsm import FSM
from stack.state.store import Row, StateStore, Table, Tombstone
from stack.state.watch import WatchHandle


def register_substrate_commands(registry: CommandRegistry) -> None:
    """Commands owned by the state substrate: KV (1-3), nodes (4), tombstone reaping (6)."""
    kv.register(registry)
    nodes.register(registry)
    tombstones.register(registry)


__all__ = [
    "FSM",
    "IGNORABLE_FLAG",
    "ApplyContext",
    "ApplyFailed",
    "ApplyOutOfOrder",
    "Command",
    "CommandRegistry",
    "CommandSpec",
    "CorruptEntry",
    "DuplicateCommand",
    "IndexRegression",
    "Row",
    "SnapshotCorrupt",
    "StateError",
    "StateStore",
    "Table",
    "Tombstone",
    "UnknownCommand",
    "WatchHandle",
    "WriteResult",
    "register_substrate_commands",
]
