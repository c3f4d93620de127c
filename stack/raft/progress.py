"""What a leader knows about each follower's log, and the flow control per follower."""

from __future__ import annotations

import enum
from collections import deque

from stack.raft.types import Snapshot


class ProgressState(enum.Enum):
    PROBE = "probe"  # one append in flight until we learn where the logs match
    REPLICATE = "replicate"  # optimistic pipelining, bounded by Inflights
    SNAPSHOT = "snapshot"  # sending a snapshot in chunks; appends paused


class Inflights:
    """The last index of each AppendEntries in flight, oldest first; bounded."""

    __slots__ = ("_q", "cap")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._q: deque[int] = deque()

    def add(self, last_index: int) -> None:
        self._q.append(last_index)

    def free_le(self, index: int) -> None:
        q = self._q
        while q and q[0] <= index:
            q.popleft()

    def free_first(self) -> None:
        if self._q:
            self._q.popleft()

    def reset(self) -> None:
        self._q.clear()

    def full(self) -> bool:
        return len(self._q) >= self.cap

    def __len__(self) -> int:
        return len(self._q)


class Progress:
    __slots__ = (
        "commit_sent",
        "inflights",
        "learner",
        "match",
        "next",
        "pinned",
        "probe_sent",
        "recent_active",
        "snapshot_index",
        "snapshot_offset",
        "snapshot_stall",
        "state",
    )

    def __init__(self, *, next_index: int, max_inflight: int, learner: bool) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False  # in PROBE: an append is in flight, wait for its answer
        self.recent_active = False
        self.learner = learner
        self.inflights = Inflights(max_inflight)
        self.snapshot_index = 0
        self.snapshot_offset = 0
        self.snapshot_stall = 0
        # The snapshot being sent: kept even if the leader compacts again meanwhile,
        # so a transfer slower than the compaction interval still finishes.
        self.pinned: Snapshot | None = None
        self.commit_sent = 0  # highest commit index this follower has been told

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.snapshot_index + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflights.reset()
        self.snapshot_index = 0
        self.pinned = None

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflights.reset()

    def become_snapshot(self, snapshot: Snapshot) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pinned = snapshot
        self.snapshot_index = snapshot.meta.index
        self.snapshot_offset = 0
        self.snapshot_stall = 0
        self.inflights.reset()

    def maybe_update(self, index: int) -> bool:
        """A follower acknowledged entries up to `index`. True if that is news."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A follower rejected an append at `rejected`. Returns False for stale rejections."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def sent_append(self, last_index: int, n_entries: int) -> None:
        if self.state is ProgressState.REPLICATE:
            if n_entries:
                self.next = last_index + 1
                self.inflights.add(last_index)
        else:
            self.probe_sent = True
