"""Counters of what a simulated run actually exercised.

A seed that never crashed a node, never changed leader and never installed a snapshot
proves little; printing these next to every seed keeps a quiet run from passing for a
hard one, and `Coverage.quiet()` names what a run failed to exercise.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class Coverage:
    ticks: int = 0
    elections: int = 0  # a node became candidate (after a pre-vote, or by transfer)
    leader_changes: int = 0  # a node became leader
    transfers: int = 0  # leadership transfers started
    conf_changes: int = 0  # configuration entries committed
    joins: int = 0  # brand-new nodes started
    removals: int = 0  # nodes removed and shut down
    compactions: int = 0
    snapshots_sent: int = 0  # InstallSnapshot streams started (first chunk sent)
    chunks_sent: int = 0
    chunks_dropped: int = 0
    snapshots_installed: int = 0
    crashes: int = 0
    lost_writes: int = 0  # unsynced disk writes lost to crashes
    partitions: int = 0
    pauses: int = 0
    msgs_sent: int = 0
    msgs_dropped: int = 0
    msgs_cut: int = 0  # lost to partitions or down nodes
    msgs_duplicated: int = 0
    writes_ok: int = 0
    writes_lost: int = 0  # a different entry took the write's index: not applied
    writes_indeterminate: int = 0  # timed out: outcome unknown
    reads_ok: int = 0
    reads_timed_out: int = 0
    redirects: int = 0

    @property
    def ops_ok(self) -> int:
        return self.writes_ok + self.reads_ok

    def line(self) -> str:
        short = {
            "ticks": "ticks",
            "elections": "elect",
            "leader_changes": "leaders",
            "transfers": "xfer",
            "conf_changes": "conf",
            "joins": "join",
            "removals": "rm",
            "compactions": "compact",
            "snapshots_sent": "snap_sent",
            "chunks_sent": "chunks",
            "chunks_dropped": "chunks_lost",
            "snapshots_installed": "snap_inst",
            "crashes": "crash",
            "lost_writes": "lost_disk",
            "partitions": "part",
            "pauses": "pause",
            "msgs_sent": "msgs",
            "msgs_dropped": "drop",
            "msgs_cut": "cut",
            "msgs_duplicated": "dup",
            "writes_ok": "w_ok",
            "writes_lost": "w_fail",
            "writes_indeterminate": "w_indet",
            "reads_ok": "r_ok",
            "reads_timed_out": "r_to",
            "redirects": "redir",
        }
        return " ".join(f"{short[f.name]}={getattr(self, f.name)}" for f in fields(self))

    def add(self, other: Coverage) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def quiet(self) -> list[str]:
        """What a faulty run was expected to exercise and did not."""
        wanted = {
            "leader_changes": 2,
            "crashes": 1,
            "partitions": 1,
            "writes_ok": 1,
            "reads_ok": 1,
            "compactions": 1,
        }
        return [name for name, least in wanted.items() if getattr(self, name) < least]
