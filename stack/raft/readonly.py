"""ReadIndex bookkeeping on the leader (Raft thesis §6.4).

A read is registered with the commit index at the time it arrived; it may be
answered once a quorum of voters has acknowledged a heartbeat sent after that,
which proves no newer leader existed when the read arrived. Acknowledging one
round also acknowledges every earlier round, because heartbeats are answered in
order of the leader's sending.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stack.raft.types import NodeId, ReadState


@dataclass(slots=True)
class _Round:
    index: int
    ctx: bytes
    acks: set[NodeId] = field(default_factory=set)


class ReadOnly:
    __slots__ = ("_by_ctx", "_queue")

    def __init__(self) -> None:
        self._queue: list[_Round] = []
        self._by_ctx: dict[bytes, _Round] = {}

    def add(self, index: int, ctx: bytes, me: NodeId) -> None:
        if ctx in self._by_ctx:
            return
        r = _Round(index, ctx, {me})
        self._queue.append(r)
        self._by_ctx[ctx] = r

    def ack(self, ctx: bytes, frm: NodeId) -> set[NodeId] | None:
        r = self._by_ctx.get(ctx)
        if r is None:
            return None
        r.acks.add(frm)
        return r.acks

    def release_through(self, ctx: bytes) -> list[ReadState]:
        """Answer the round `ctx` and every round queued before it."""
        out: list[ReadState] = []
        if ctx not in self._by_ctx:
            return out
        while self._queue:
            r = self._queue.pop(0)
            del self._by_ctx[r.ctx]
            out.append(ReadState(r.index, r.ctx))
            if r.ctx == ctx:
                break
        return out

    def last_ctx(self) -> bytes:
        return self._queue[-1].ctx if self._queue else b""

    def pending(self) -> int:
        return len(self._queue)

    def reset(self) -> None:
        self._queue.clear()
        self._by_ctx.clear()
