"""Offline outage recovery: give a stopped server a new Raft configuration.

When a cluster has lost its quorum for good (two of three servers' disks are gone),
no configuration change can commit. The operator stops the surviving server(s) and
runs `stack operator raft recover` on them. This module does the work, on one
server's `<data_dir>/raft`, like Consul's peers.json recovery (hashicorp/raft's
`RecoverCluster`):

1. Open the storage (its lock refuses a directory that a running agent holds) and
   read what is on disk.
2. Restore the state machine from the stored snapshot (if it has data). Then replay
   every entry in the log after it, **committed or not**. The survivor cannot tell
   which entries past its stored commit index the lost leader had committed, and
   the survivors' logs are the best record left. Dropping that tail could lose
   acknowledged writes. Keeping it means an entry that never committed becomes
   committed (docs/raft.md, "Outage recovery"). Configuration-change and empty
   (no-op) entries are not applied: they reach `apply_entry` with empty data,
   exactly as `RaftNode` passes them, so the state machine's applied index still
   ends at the new snapshot's index. The configuration they carried is replaced.
3. Write one snapshot at the last index (the old snapshot's index if the log is
   empty), with that entry's term, `ConfState(voters=voters)` (no learners) and
   the state machine's `snapshot()`. The snapshot install drops every log entry
   it covers (all of them). In the same save, write the hard state
   `(term=max(old term, snapshot term) + 1, vote=0, commit=snapshot index)`.
   The term goes up by one because clearing a vote within the same term could let
   this server vote twice in that term. A higher term with no vote is a step any
   Raft server may take at any time.
4. Reopen the directory and check that it reads back as exactly that.

It is all-or-nothing across a crash. `LogStorage.save` publishes the snapshot
first (tmp file, fsync, rename, directory fsync), then removes the segments, then
writes the hard state. Until the rename is durable, the directory opens as the old
state, untouched: nothing before it writes anything that recovery would keep. After
the rename, it opens as the recovered configuration and state (an interrupted
segment removal is finished at open, because a segment the snapshot covers is
dropped). The hard state may still be the old one then. That is harmless: the core
takes the snapshot's index as committed whatever the stored commit, and an old
vote in an old term is what the server had anyway. Running `recover` again on
either state gives the recovered one.

Refused with ValueError: an empty voter set, an id that is not a positive integer,
a directory that does not exist or holds no snapshot and no log. A directory in
use raises `StorageInUse`. An exception from `apply_entry` or `restore` leaves the
directory as it was (nothing has been written yet).

This module knows nothing about the agent: the caller passes a fresh state
machine's `apply`, `restore` and `snapshot` (e.g. those of
`FSM(agent.build_registry())`) and checks that the local node's id is among
`voters` (otherwise the server could not campaign).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from stack.raft.faultfs import FileSystem
from stack.raft.storage import LogStorage
from stack.raft.types import (
    NONE,
    ConfState,
    EntryType,
    HardState,
    NodeId,
    Snapshot,
    SnapshotMeta,
)


@dataclass(frozen=True, slots=True)
class RecoverResult:
    index: int  # index of the new snapshot (the last index the survivor had)
    term: int  # term of the new snapshot (of the entry at `index`)
    voters: frozenset[NodeId]
    entries_replayed: int  # log entries past the old snapshot folded into the new one


def recover(
    raft_dir: Path,
    voters: Iterable[NodeId],
    *,
    apply_entry: Callable[[int, int, bytes], object],
    restore: Callable[[bytes], None],
    snapshot: Callable[[], bytes],
    fs: FileSystem | None = None,
) -> RecoverResult:
    """Rewrite the stopped server's Raft state in `raft_dir` (`<data_dir>/raft`) so that
    `voters` alone are the configuration. See the module docstring. `fs` is the
    file-system seam of `LogStorage.open` (tests pass a fault-injecting one)."""
    ids = frozenset(voters)
    if not ids:
        raise ValueError("refusing to recover with an empty voter set: name at least one server")
    bad = [v for v in ids if type(v) is not int or v <= 0]
    if bad:
        raise ValueError(f"voter ids must be positive integers, got {bad!r}")
    if not raft_dir.is_dir():
        # Checked first: LogStorage.open would create it.
        raise ValueError(
            f"{raft_dir} does not exist; pass a server's Raft directory (<data_dir>/raft)"
        )
    storage = LogStorage.open(raft_dir, fs=fs)
    try:
        result, snap, hard_state = _rewrite(storage, raft_dir, ids, apply_entry, restore, snapshot)
    except BaseException:
        with contextlib.suppress(Exception):
            storage.close()
        raise
    storage.close()

    check = LogStorage.open(raft_dir, fs=fs)
    try:
        st = check.initial_state()
    finally:
        check.close()
    if st.snapshot != snap or st.entries or st.hard_state != hard_state:
        raise RuntimeError(
            f"{raft_dir}: recovery wrote a snapshot at {snap.meta.index} and {hard_state}, but "
            f"the directory reads back as snapshot "
            f"{st.snapshot.meta if st.snapshot else None}, {len(st.entries)} entries, "
            f"{st.hard_state}"
        )
    return result


def _rewrite(
    storage: LogStorage,
    raft_dir: Path,
    ids: frozenset[NodeId],
    apply_entry: Callable[[int, int, bytes], object],
    restore: Callable[[bytes], None],
    snapshot: Callable[[], bytes],
) -> tuple[RecoverResult, Snapshot, HardState]:
    st = storage.initial_state()
    old = st.snapshot
    if old is None and not st.entries:
        raise ValueError(
            f"{raft_dir} holds no Raft state (no snapshot and no log): nothing to recover; "
            "pass the Raft directory (<data_dir>/raft) of a server that was a cluster member"
        )
    index, term = (old.meta.index, old.meta.term) if old is not None else (0, 0)
    if old is not None and old.data:  # empty only for the index-0 bootstrap snapshot
        restore(old.data)
    for e in st.entries:
        # Committed or not: the survivor's log is the best record left. A conf change's
        # content is replaced by `ids`; it and a no-op only advance the applied index.
        apply_entry(e.index, e.term, e.data if e.type is EntryType.NORMAL else b"")
        index, term = e.index, e.term
    snap = Snapshot(SnapshotMeta(index, term, ConfState(voters=ids)), snapshot())
    hard_state = HardState(term=max(st.hard_state.term, term) + 1, vote=NONE, commit=index)
    # One save: the snapshot is published first (tmp, fsync, rename, directory fsync), and
    # that rename is the commit point. Before it the old state is intact; after it every
    # segment is covered by the snapshot, so even if the unlinks below are lost, open
    # drops them. The hard state comes last; an old one beside the new snapshot is safe
    # (module docstring).
    storage.save(snapshot=snap, hard_state=hard_state)
    return RecoverResult(index, term, ids, len(st.entries)), snap, hard_state
