"""Named errors of the gossip core. Local errors: the host asked for something the
core cannot do. Bad remote input is never raised from `receive`: the core ignores
stale or unknown claims, and only the codec rejects malformed bytes."""

from __future__ import annotations


class GossipError(Exception):
    """Base class for errors the gossip core reports to its host."""


class AlreadyLeft(GossipError):
    """This node has left the ring; it cannot rejoin or change its tags."""


class DecodeError(GossipError, ValueError):
    """Bytes from the network are not a valid gossip packet: drop them."""
