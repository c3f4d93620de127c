"""The Raft consensus core (API skeleton; implementation in progress)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from stack.raft.config import RaftConfig
from stack.raft.types import (
    AnyMessage,
    ConfChange,
    ConfState,
    Entry,
    HardState,
    NodeId,
    Ready,
    Role,
    Snapshot,
    Status,
)


class Raft:
    """A synchronous Raft state machine: no clock, socket, file, thread or global RNG.

    Construct from what the host has on stable storage: the hard state, the last
    snapshot (whose meta carries the configuration; a brand-new cluster is
    bootstrapped by persisting a snapshot at index 0 whose meta.conf lists the
    initial voters and whose data is empty) and the entries after it. `applied`
    is the index the host's state machine already reflects (usually the snapshot
    index after a restart, since state machines live in memory).
    A node whose configuration does not list it as a voter never campaigns; a
    joining node starts with no snapshot and waits for the leader.
    """

    def __init__(
        self,
        config: RaftConfig,
        rng: random.Random,
        *,
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        entries: Sequence[Entry] = (),
        applied: int = 0,
    ) -> None: ...

    # -- inputs
    def tick(self) -> None:
        """Advance logical time by one tick (elections, heartbeats, check-quorum)."""

    def step(self, msg: AnyMessage) -> None:
        """Feed one message from the network. Never raises on bad remote input."""

    def propose(self, data: bytes) -> int:
        """Append a command; returns its log index. The proposal succeeded iff the entry
        later applied at that index has the term that `term` had right after this call.
        Raises NotLeader (with leader hint) or ProposalDropped."""
        raise NotImplementedError

    def propose_conf_change(self, cc: ConfChange) -> int:
        """One server at a time; refused (ProposalDropped) while another change is
        uncommitted or before an entry of the leader's current term has committed."""
        raise NotImplementedError

    def read_index(self, ctx: bytes) -> None:
        """Start a linearizable read; a ReadState(index, ctx) appears in a later Ready.
        Raises NotLeader."""

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to `to` once it is caught up. Raises NotLeader/ValueError."""

    def campaign(self) -> None:
        """Start an election now (skipping the election timeout)."""

    def set_campaign_allowed(self, allowed: bool) -> None:
        """A sealed server must never lead: when False it never campaigns and a leader
        transfers leadership away."""

    def compact(self, index: int, data: bytes) -> None:
        """The host took a snapshot of its state machine at `index` (<= applied): drop the
        log up to it and keep the snapshot to send to followers that fall behind."""

    # -- outputs
    def has_ready(self) -> bool:
        raise NotImplementedError

    def ready(self) -> Ready:
        raise NotImplementedError

    def advance(self, rd: Ready) -> None:
        """The host has persisted, sent and applied everything in `rd`."""

    # -- inspection
    @property
    def id(self) -> NodeId:
        raise NotImplementedError

    @property
    def term(self) -> int:
        raise NotImplementedError

    @property
    def role(self) -> Role:
        raise NotImplementedError

    @property
    def leader(self) -> NodeId:
        raise NotImplementedError

    @property
    def conf(self) -> ConfState:
        raise NotImplementedError

    def status(self) -> Status:
        raise NotImplementedError

    def entry(self, index: int) -> Entry | None:
        """The entry at `index` if the log still holds it (None if compacted/absent)."""
        raise NotImplementedError
