"""Majority arithmetic, kept apart so the rules can be read (and tested) on their own."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from stack.raft.types import NodeId


def majority(n_voters: int) -> int:
    return n_voters // 2 + 1


def committed_index(voters: Collection[NodeId], match: Mapping[NodeId, int]) -> int:
    """The largest index stored on a majority of voters (0 with no voters)."""
    if not voters:
        return 0
    acked = sorted((match.get(v, 0) for v in voters), reverse=True)
    return acked[majority(len(voters)) - 1]


class VoteOutcome:
    PENDING = 0
    WON = 1
    LOST = 2


def tally(voters: Collection[NodeId], votes: Mapping[NodeId, bool], weight: int = 1) -> int:
    """Election result given the votes received so far (`weight` > 1 only for a planted bug)."""
    granted = sum(weight for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    need = majority(len(voters))
    if granted >= need:
        return VoteOutcome.WON
    if rejected > len(voters) - need:
        return VoteOutcome.LOST
    return VoteOutcome.PENDING


def has_quorum(voters: Collection[NodeId], acks: Iterable[NodeId]) -> bool:
    return len(set(acks) & set(voters)) >= majority(len(voters)) if voters else False
