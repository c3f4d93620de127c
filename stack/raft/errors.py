"""Named errors of the Raft core. Local errors: the caller asked for something
the core cannot do now. The core never raises on a bad remote message: it drops
it (stale terms, unknown senders) because the network may deliver anything."""

from __future__ import annotations

from stack.raft.types import NONE, NodeId


class RaftError(Exception):
    """Base class for errors the Raft core reports to its host."""


class NotLeader(RaftError):
    """Proposals and reads go to the leader; `leader` is who that is (NONE if unknown)."""

    def __init__(self, leader: NodeId = NONE) -> None:
        self.leader = leader
        super().__init__(f"not leader; leader is {leader or 'unknown'}")


class ProposalDropped(RaftError):
    """The leader will not take this proposal now (leadership transfer under way,
    a configuration change already pending, or none of its own term committed yet)."""


class Compacted(RaftError):
    """The requested index is behind the last snapshot."""


class Unavailable(RaftError):
    """The requested index is past the end of the log."""


class OutcomeUnknown(RaftError):
    """The proposal may or may not have been applied: it was in the log when this node
    stopped or installed a snapshot, did not commit in time, or was forwarded over a
    connection that dropped. Retrying a non-idempotent command is the caller's call."""
