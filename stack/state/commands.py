"""The numbered command registry: every Raft log entry is one command.

Like Nomad's `MessageType`, each command has a number that is written into the
log and never reused. A log entry's payload is one version byte
(`ENCODING_VERSION`) followed by msgpack `[wire_id, body]`, where the body is any
msgpack value the command's apply function understands.

Numbers are 15 bits (1..0x7FFF). The high bit of the 16-bit wire id,
`IGNORABLE_FLAG` (0x8000), marks a command that an older build which does not
know it may skip (Nomad's `IgnoreUnknownTypeFlag`, widened from 8 to 16 bits so
three engines' commands fit). The flag is a property of the registration: the
registry sets it when encoding, and strips it before looking a command up.
Everything else that is unknown stops the node (`UnknownCommand`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from stack.state.errors import CorruptEntry, DuplicateCommand, StateError

if TYPE_CHECKING:
    from stack.state.store import StateStore

ENCODING_VERSION = 1
IGNORABLE_FLAG = 0x8000
MAX_TYPE_ID = IGNORABLE_FLAG - 1


@dataclass(frozen=True, slots=True)
class ApplyContext:
    """What an apply function sees: the entry's position in the log and the store.

    Apply functions must be deterministic: no clock, randomness, I/O or iteration
    over unordered sets. Timestamps and generated ids travel in the body, chosen
    by the leader when it builds the command.
    """

    index: int
    term: int
    store: StateStore


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of a write command. `ok=False` is an expected, deterministic
    outcome (a check-and-set that did not match), never an error. `index` is the
    log index at which the command was applied. `data` is an optional msgpack-able
    answer for the caller (e.g. the version a secret write created, or why a
    check failed); it crosses the forwarding RPC unchanged."""

    ok: bool
    index: int
    data: Any = None


ApplyFn = Callable[[ApplyContext, Any], object]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    type_id: int
    name: str
    apply: ApplyFn
    ignorable: bool

    @property
    def wire_id(self) -> int:
        return self.type_id | IGNORABLE_FLAG if self.ignorable else self.type_id


@dataclass(frozen=True, slots=True)
class Command:
    """A decoded log entry: the command number (flag stripped), whether the
    writer flagged it ignorable, and the msgpack body."""

    type_id: int
    body: Any
    ignorable: bool = False


class CommandRegistry:
    """Append-only map from command numbers to apply functions.

    One instance per node, filled by the composition root: each engine calls
    `register` for the commands it owns. Every node in a cluster must register
    the same numbers for the same meanings; a number is never reused, even after
    its command is retired (keep a registration whose apply raises instead).
    """

    __slots__ = ("_by_id", "_by_name")

    def __init__(self) -> None:
        self._by_id: dict[int, CommandSpec] = {}
        self._by_name: dict[str, CommandSpec] = {}

    def register(
        self, type_id: int, name: str, apply: ApplyFn, *, ignorable: bool = False
    ) -> CommandSpec:
        if isinstance(type_id, bool) or not isinstance(type_id, int):
            raise TypeError(f"command number must be an int, not {type(type_id).__name__}")
        if not 1 <= type_id <= MAX_TYPE_ID:
            raise ValueError(f"command number {type_id} outside 1..{MAX_TYPE_ID}")
        if not name:
            raise ValueError("command name must not be empty")
        if type_id in self._by_id:
            raise DuplicateCommand(
                f"command number {type_id} already registered as {self._by_id[type_id].name}"
            )
        if name in self._by_name:
            raise DuplicateCommand(
                f"command name {name} already registered as number {self._by_name[name].type_id}"
            )
        spec = CommandSpec(type_id, name, apply, ignorable)
        self._by_id[type_id] = spec
        self._by_name[name] = spec
        return spec

    def lookup(self, type_id: int) -> CommandSpec | None:
        return self._by_id.get(type_id)

    def by_name(self, name: str) -> CommandSpec | None:
        return self._by_name.get(name)

    def __contains__(self, type_id: object) -> bool:
        return type_id in self._by_id

    def __iter__(self) -> Iterator[CommandSpec]:
        return iter(sorted(self._by_id.values(), key=lambda spec: spec.type_id))

    def __len__(self) -> int:
        return len(self._by_id)

    def encode(self, type_id: int, body: Any) -> bytes:
        """The log entry payload for command `type_id` with `body`."""
        spec = self._by_id.get(type_id)
        if spec is None:
            raise StateError(f"cannot encode unregistered command number {type_id}")
        packed: bytes = msgpack.packb([spec.wire_id, body], use_bin_type=True)
        return bytes((ENCODING_VERSION,)) + packed

    @staticmethod
    def decode(data: bytes, index: int = 0) -> Command:
        """Parse a payload (without looking the command up). Raises CorruptEntry;
        `index` only labels the error."""
        if not data:
            raise CorruptEntry(index, "empty payload")
        if data[0] != ENCODING_VERSION:
            raise CorruptEntry(index, f"encoding version {data[0]}, expected {ENCODING_VERSION}")
        try:
            decoded = msgpack.unpackb(memoryview(data)[1:], raw=False, strict_map_key=False)
        except Exception as exc:
            raise CorruptEntry(index, f"msgpack: {exc}") from exc
        if not isinstance(decoded, list) or len(decoded) != 2:
            raise CorruptEntry(index, "expected a [type_id, body] pair")
        wire_id, body = decoded
        if isinstance(wire_id, bool) or not isinstance(wire_id, int) or not 0 <= wire_id <= 0xFFFF:
            raise CorruptEntry(index, f"bad command number {wire_id!r}")
        return Command(wire_id & MAX_TYPE_ID, body, bool(wire_id & IGNORABLE_FLAG))
