"""Values exchanged between the gossip core, its host and other members.

Messages are frozen, slotted dataclasses; tags are plain mappings the core never
mutates after handing them out. Members are named by a string (unique in the
ring) and reached at an opaque address string the transport understands.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class State(enum.IntEnum):
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@dataclass(frozen=True, slots=True)
class Member:
    """What this node believes about one member; `state_change` is local time."""

    name: str
    addr: str
    incarnation: int
    state: State
    tags: Mapping[str, str]
    state_change: float


@dataclass(frozen=True, slots=True)
class Ping:
    """Direct probe; `target` is the name the sender thinks lives at this address."""

    seq: int
    target: str
    source: str


@dataclass(frozen=True, slots=True)
class IndirectPing:
    """Ask the receiver to ping `target` at `target_addr` and relay the ack (or a
    nack if none comes within its probe timeout)."""

    seq: int
    target: str
    target_addr: str
    source: str


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    source: str


@dataclass(frozen=True, slots=True)
class Nack:
    seq: int
    source: str


@dataclass(frozen=True, slots=True)
class Alive:
    name: str
    incarnation: int
    addr: str
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Suspect:
    name: str
    incarnation: int
    from_: str


@dataclass(frozen=True, slots=True)
class Dead:
    """`from_ == name` means the member left on purpose (state LEFT)."""

    name: str
    incarnation: int
    from_: str


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """One member's state as carried in a push-pull exchange."""

    name: str
    addr: str
    incarnation: int
    state: State
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PushPull:
    """Full state. `join` marks the first exchange of a joining node; `reply`
    marks the answer, which is not answered again."""

    members: tuple[MemberRecord, ...]
    join: bool = False
    reply: bool = False


Message = Ping | IndirectPing | Ack | Nack | Alive | Suspect | Dead | PushPull
Broadcast = Alive | Suspect | Dead


@dataclass(frozen=True, slots=True)
class Packet:
    """Output of the core: messages for one address. `reliable` asks the transport
    for a stream (push-pull can exceed a datagram); otherwise it is one datagram."""

    to_addr: str
    messages: tuple[Message, ...]
    reliable: bool = False


class EventKind(enum.Enum):
    JOIN = "join"  # first seen alive, or back after LEFT
    UPDATE = "update"  # alive member changed tags or address
    FAILED = "failed"  # declared DEAD by the failure detector
    LEAVE = "leave"  # left on purpose (LEFT)
    RECOVER = "recover"  # alive again after having been declared DEAD


@dataclass(frozen=True, slots=True)
class MemberEvent:
    kind: EventKind
    member: Member
