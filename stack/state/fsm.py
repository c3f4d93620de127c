"""The replicated state machine: committed log entries in, state out.

The Raft host calls `apply` for every committed entry in log order, `snapshot`
when it compacts the log, and `restore` when it installs a leader's snapshot.
There is no asyncio here: the simulator drives the same object directly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from stack.state.commands import ApplyContext, CommandRegistry
from stack.state.errors import ApplyFailed, ApplyOutOfOrder, UnknownCommand
from stack.state.snapshot import decode_snapshot, iter_snapshot
from stack.state.store import StateStore


class FSM:
    """Applies commands from `registry` to `store`.

    `apply` returns whatever the command's apply function returns (e.g. a
    `WriteResult`); the host hands it to the request that proposed the entry.
    It raises, and the host must stop the node, on:
      - `CorruptEntry`: the payload is not a command;
      - `UnknownCommand`: a command this build does not know and that was not
        flagged ignorable (the state is left untouched);
      - `ApplyFailed`: an apply function raised (a bug), naming command and index;
      - `ApplyOutOfOrder`: the host applied an index twice or went backwards.
    """

    __slots__ = ("_log", "_skipped_types", "registry", "skipped", "store")

    def __init__(
        self,
        registry: CommandRegistry,
        store: StateStore | None = None,
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        self.registry = registry
        self.store = store if store is not None else StateStore()
        self.skipped = 0  # ignorable commands this build did not know
        self._skipped_types: set[int] = set()  # logged once per type, not per entry
        self._log = logger if logger is not None else logging.getLogger("stack.state.fsm")

    @property
    def applied_index(self) -> int:
        return self.store.index

    def apply(self, index: int, term: int, data: bytes) -> object:
        """Apply the committed entry at `index`. Empty `data` is the leader's
        no-op (and what the host passes for configuration-change entries): it
        only advances the applied index."""
        store = self.store
        if index <= store.index:
            raise ApplyOutOfOrder(index, store.index)
        if not data:
            store.advance(index)
            return None
        command = self.registry.decode(data, index)
        spec = self.registry.lookup(command.type_id)
        if spec is None:
            if not command.ignorable:
                raise UnknownCommand(command.type_id, index)
            self.skipped += 1
            if command.type_id not in self._skipped_types:
                self._skipped_types.add(command.type_id)
                self._log.warning(
                    "skipping unknown ignorable command type %d (first at log index %d); "
                    "this build is older than the cluster's log",
                    command.type_id,
                    index,
                )
            store.advance(index)
            return None
        try:
            result = spec.apply(ApplyContext(index, term, store), command.body)
        except Exception as exc:
            raise ApplyFailed(spec.name, spec.type_id, index, exc) from exc
        store.advance(index)
        return result

    def snapshot(self) -> bytes:
        """Every table and index as of the last applied entry (format: snapshot.py)."""
        return b"".join(iter_snapshot(self.store))

    def snapshot_chunks(self) -> Iterator[bytes]:
        """The same bytes as `snapshot()`, as chunks, for streaming to disk or a
        follower. Captured now; later applies do not leak into it."""
        return iter_snapshot(self.store)

    def restore(self, data: bytes) -> None:
        """Replace all state with a snapshot. Raises SnapshotCorrupt and keeps the
        current state if the snapshot does not validate. Wakes every watch."""
        tables, index = decode_snapshot(self.store, data)
        self.store.replace(tables, index)
