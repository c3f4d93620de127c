"""Tuning and behaviour switches of one Raft core."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from stack.raft.types import NodeId


class ReadOnlyOption(enum.Enum):
    # A read is served once a quorum has confirmed the leader still leads (one round trip).
    SAFE = "safe"
    # A read is served at once if the leader heard from a quorum within the last election
    # timeout. Relies on bounded clock drift between nodes: faster, but a paused leader
    # whose lease silently ran out can serve a stale read. Requires check_quorum.
    LEASE_BASED = "lease"


@dataclass(frozen=True, slots=True)
class RaftConfig:
    id: NodeId
    election_tick: int = 10  # randomized in [election_tick, 2 * election_tick)
    heartbeat_tick: int = 1
    max_size_per_msg: int = 1 << 20  # bytes of entry data per AppendEntries
    max_inflight_msgs: int = 256  # AppendEntries in flight per follower (pipelining)
    max_uncommitted_bytes: int = 64 << 20  # proposals refused beyond this many unapplied bytes
    snapshot_chunk_size: int = 1 << 20
    pre_vote: bool = True
    check_quorum: bool = True
    read_only: ReadOnlyOption = ReadOnlyOption.SAFE
    # Test-only planted bugs, so the simulator's checkers can be shown to catch them.
    # Names: "double_vote_count", "commit_old_term", "read_without_quorum",
    # "no_log_check_on_vote". Never set outside tests.
    faults: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.id <= 0:
            raise ValueError("node id must be a positive integer")
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.read_only is ReadOnlyOption.LEASE_BASED and not self.check_quorum:
            raise ValueError("lease-based reads require check_quorum")
