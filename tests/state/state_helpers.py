"""Shared helpers for tests/state: a registry with the substrate commands and
an FSM wrapper that hands out consecutive log indexes."""

from __future__ import annotations

from stack.state import CommandRegistry, register_substrate_commands
from stack.state.fsm import FSM


def substrate_registry() -> CommandRegistry:
    registry = CommandRegistry()
    register_substrate_commands(registry)
    return registry


class Log:
    """Applies payloads to an FSM at the next log index, like a Raft host."""

    def __init__(self, fsm: FSM | None = None, term: int = 1) -> None:
        self.fsm = fsm if fsm is not None else FSM(substrate_registry())
        self.registry = self.fsm.registry
        self.store = self.fsm.store
        self.term = term

    @property
    def next_index(self) -> int:
        return self.fsm.applied_index + 1

    def apply(self, data: bytes) -> object:
        return self.fsm.apply(self.next_index, self.term, data)
