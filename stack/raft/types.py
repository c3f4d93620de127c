"""Values exchanged between the Raft core and its host.

Everything here is an immutable, slotted dataclass: the core never mutates a
message after it has been handed out, so a host (or the simulator) may keep,
duplicate or reorder them freely.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

NodeId = int
NONE: NodeId = 0  # "no node": no vote cast, no leader known


class EntryType(enum.IntEnum):
    NORMAL = 0  # opaque application command (empty data = leader's no-op)
    CONF_CHANGE = 1  # data is an encoded ConfChange


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on stable storage before any message that depends on it is sent."""

    term: int = 0
    vote: NodeId = NONE
    commit: int = 0


class ConfChangeType(enum.IntEnum):
    ADD_VOTER = 0  # also promotes an existing learner
    ADD_LEARNER = 1
    REMOVE_NODE = 2


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ConfChangeType
    node_id: NodeId
    context: bytes = b""  # opaque to the core (the host puts the node's address here)

    def encode(self) -> bytes:
        return bytes([int(self.type)]) + self.node_id.to_bytes(8, "big") + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        if len(data) < 9:
            raise ValueError("conf change entry shorter than 9 bytes")
        return cls(ConfChangeType(data[0]), int.from_bytes(data[1:9], "big"), data[9:])


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()

    def apply(self, cc: ConfChange) -> ConfState:
        voters, learners = set(self.voters), set(self.learners)
        if cc.type is ConfChangeType.ADD_VOTER:
            learners.discard(cc.node_id)
            voters.add(cc.node_id)
        elif cc.type is ConfChangeType.ADD_LEARNER:
            # Also demotes a voter: one voter leaves the quorum, as with a removal,
            # so a single-step change stays safe; the node keeps replicating.
            voters.discard(cc.node_id)
            learners.add(cc.node_id)
        else:
            voters.discard(cc.node_id)
            learners.discard(cc.node_id)
        return ConfState(frozenset(voters), frozenset(learners))

    def members(self) -> frozenset[NodeId]:
        return self.voters | self.learners


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int
    term: int
    conf: ConfState


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: serve the read once the state machine has applied `index`."""

    index: int
    ctx: bytes


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state that hosts surface (status pages, metrics); never persisted."""

    leader: NodeId
    role: Role


# ---------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Message:
    frm: NodeId
    to: NodeId
    term: int


@dataclass(frozen=True, slots=True)
class VoteRequest(Message):
    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False  # campaign caused by leadership transfer: ignore leader lease


@dataclass(frozen=True, slots=True)
class VoteResponse(Message):
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries(Message):
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendResponse(Message):
    index: int  # on success: last index now matching the leader; on reject: the rejected prev_index
    reject: bool = False
    hint_index: int = 0  # on reject: the follower's best guess of a matching index ...
    hint_term: int = 0  # ... and its term there, so the leader can skip whole terms


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    commit: int
    ctx: bytes = b""  # ReadIndex round identifier


@dataclass(frozen=True, slots=True)
class HeartbeatResponse(Message):
    ctx: bytes = b""


@dataclass(frozen=True, slots=True)
class InstallSnapshot(Message):
    meta: SnapshotMeta
    offset: int
    chunk: bytes
    done: bool
    total: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotResponse(Message):
    index: int  # snapshot index this response is about
    next_offset: int  # where the follower wants the next chunk to start
    reject: bool = False  # the chunk did not start where the follower expected
    done: bool = False  # the follower has installed it


@dataclass(frozen=True, slots=True)
class TimeoutNow(Message):
    pass


AnyMessage = (
    VoteRequest
    | VoteResponse
    | AppendEntries
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | SnapshotResponse
    | TimeoutNow
)


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the host, to be done in order:

    1. persist `snapshot` (if any), then `entries` (an append that replaces any
       stored entries at or after entries[0].index), then `hard_state`, and sync;
    2. send `messages`;
    3. restore `snapshot` into the state machine, then apply `committed`;
       answer `read_states` once the state machine has applied their index;
    4. call `advance(ready)`.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    committed: tuple[Entry, ...] = ()
    messages: tuple[AnyMessage, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    must_sync: bool = False

    def empty(self) -> bool:
        return not (
            self.soft_state
            or self.hard_state
            or self.entries
            or self.snapshot
            or self.committed
            or self.messages
            or self.read_states
        )


@dataclass(frozen=True, slots=True)
class ProgressView:
    """A read-only view of what the leader knows about one peer."""

    match: int
    next: int
    state: str
    recent_active: bool
    learner: bool


@dataclass(frozen=True, slots=True)
class Status:
    id: NodeId
    role: Role
    term: int
    leader: NodeId
    commit: int
    applied: int
    last_index: int
    first_index: int
    snapshot_index: int
    conf: ConfState
    progress: dict[NodeId, ProgressView] = field(default_factory=dict)
    transferee: NodeId = NONE
