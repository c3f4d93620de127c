"""The leader's housekeeping, driven by the gossip ring (the one failure detector).

Every round (half a second, or sooner when the ring reports a change) the leader:
1. reconciles the `nodes` table with the ring: a member the ring declares dead is
   marked `down`, one that left on purpose `left`, one alive again `alive`; a
   node the ring has not known for `UNKNOWN_GRACE` seconds is marked `down`;
2. promotes server learners that are caught up and alive in the ring;
3. demotes a voter that has been dead in the ring for `dead_server_grace` to a
   learner, never taking the voters below `min_quorum` (so a dead server stops
   counting in the quorum; it is promoted again once it is back and caught up).
   Raft may veto: a voter that still answers the leader's appends is not demoted,
   whatever the leader's ring view says;
4. reaps tombstones old enough that no blocking query can still need them.

One configuration change per round, and only on the leader; a new leader starts
its timers afresh, so nothing is demoted on a view it has not held for the whole
grace period itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from stack.errors import NoLeader
from stack.gossip.types import State
from stack.net.rpc import RpcError
from stack.raft.errors import RaftError
from stack.raft.types import ConfChange, ConfChangeType, Role
from stack.state import nodes, tombstones
from stack.state.tombstones import TombstoneGC

if TYPE_CHECKING:
    from stack.agent import Agent

log = structlog.get_logger("stack.autopilot")

INTERVAL = 0.5
PROMOTE_LAG = 64  # a learner within this many entries of the leader ...
PROMOTE_ROUNDS = 3  # ... for this many rounds in a row is promoted
UNKNOWN_GRACE = 10.0  # a registered node absent from the ring this long is down

_RING_STATUS = {
    State.ALIVE: "alive",
    State.SUSPECT: "alive",
    State.DEAD: "down",
    State.LEFT: "left",
}


class Autopilot:
    def __init__(self, agent: Agent, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.agent = agent
        self.clock = clock
        self._caught_up: dict[int, int] = {}
        self._unknown_since: dict[int, float] = {}
        self._dead_since: dict[int, float] = {}
        self.demotions = 0

    def forget(self, node_id: int) -> None:
        self._caught_up.pop(node_id, None)
        self._dead_since.pop(node_id, None)
        self._unknown_since.pop(node_id, None)

    async def run(self) -> None:
        gc = TombstoneGC()
        ring = self.agent.ring
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ring.changed.wait(), INTERVAL)
            ring.changed.clear()
            if self.agent.node.role is not Role.LEADER:
                gc.reset()
                self._caught_up.clear()
                self._unknown_since.clear()
                self._dead_since.clear()
                continue
            try:
                await self._reconcile()
                if not await self._promote_caught_up():
                    await self._demote_dead()
                await self._reap_tombstones(gc)
            except (NoLeader, RaftError, RpcError) as e:
                log.info("autopilot round deferred", error=str(e))

    # ------------------------------------------------------------ the ring's verdicts
    def ring_verdict(self, node_id: int) -> str | None:
        """alive, down or left as the ring sees the node now; None: no verdict yet."""
        a = self.agent
        if node_id == a.ident.id:
            return "alive"
        ring = a.ring
        if ring.version == 0:
            return None  # our own ring is not running yet
        state = ring.state(node_id)
        if state is not None:
            self._unknown_since.pop(node_id, None)
            return _RING_STATUS[state]
        since = self._unknown_since.setdefault(node_id, self.clock())
        return "down" if self.clock() - since >= UNKNOWN_GRACE else None

    async def _reconcile(self) -> None:
        a = self.agent
        for row in nodes.list_nodes(a.store)[0]:
            want = self.ring_verdict(int(row.id))
            if want is None or want == row.status:
                continue
            if want == "down" and row.status == "left":
                continue  # a member that left and was since forgotten stays left
            await a.apply(nodes.encode_status(a.registry, row.id, want), timeout=5.0)
            log.warning("node status from the ring", node=row.name, id=row.id, status=want)

    # ------------------------------------------------------------ voters
    async def _promote_caught_up(self) -> bool:
        a = self.agent
        st = a.node.status()
        rows = {n.id: n for n in nodes.list_nodes(a.store)[0]}
        for nid in sorted(st.conf.learners):
            prog = st.progress.get(nid)
            row = rows.get(str(nid))
            if prog is None or row is None or row.role != "server":
                continue
            healthy = a.ring.state(nid) is State.ALIVE
            if healthy and prog.recent_active and prog.match + PROMOTE_LAG >= st.last_index:
                self._caught_up[nid] = self._caught_up.get(nid, 0) + 1
            else:
                self._caught_up[nid] = 0
            if self._caught_up[nid] >= PROMOTE_ROUNDS:
                try:
                    await a.node.propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, nid))
                    log.info("promoted learner to voter", node=row.name, id=nid)
                except RaftError as e:
                    log.info("promotion deferred", node=row.name, error=str(e))
                return True  # one change at a time
        return False

    async def _demote_dead(self) -> None:
        a = self.agent
        cfg = a.cfg
        st = a.node.status()
        now = self.clock()
        for nid in st.conf.voters - {a.ident.id}:
            # The ring decides; Raft can only veto. A voter that still answers our
            # appends is not demoted whatever our ring view says (our own gossip may
            # be the broken part, e.g. a keyring we failed to update).
            prog = st.progress.get(nid)
            answering = prog is not None and prog.recent_active
            if self.ring_verdict(nid) in ("down", "left") and not answering:
                self._dead_since.setdefault(nid, now)
            else:
                self._dead_since.pop(nid, None)
        for nid in [n for n in self._dead_since if n not in st.conf.voters]:
            del self._dead_since[nid]
        overdue = sorted(n for n, t in self._dead_since.items() if now - t >= cfg.dead_server_grace)
        if not overdue or len(st.conf.voters) - 1 < cfg.min_quorum:
            return
        nid = overdue[0]
        row, _ = nodes.get_node(a.store, str(nid))
        name = row.name if row is not None else str(nid)
        try:
            await a.node.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, nid))
        except RaftError as e:
            log.info("demotion deferred", node=name, error=str(e))
            return
        self.demotions += 1
        since = self._dead_since.pop(nid, now)
        log.warning(
            "autopilot: a server dead in the ring past the grace period leaves the voters",
            node=name,
            id=nid,
            dead_for=round(now - since, 1),
            voters_left=len(st.conf.voters) - 1,
        )

    # ------------------------------------------------------------ tombstones
    async def _reap_tombstones(self, gc: TombstoneGC) -> None:
        """Deletes leave tombstones so blocking queries never see an index go backwards;
        once they are older than any reasonable blocking query, the leader reaps them
        through the log so every replica drops the same ones."""
        a = self.agent
        now = time.monotonic()
        gc.observe(now, a.node.applied)
        upto = gc.reap_index(now)
        oldest = a.store.oldest_tombstone()
        if upto is not None and oldest is not None and oldest <= upto:
            try:
                await a.apply(tombstones.encode_reap(a.registry, upto), timeout=5.0)
            except (NoLeader, RaftError, RpcError) as e:
                log.info("tombstone reap deferred", error=str(e))
