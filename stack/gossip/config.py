"""Timing knobs of the gossip ring, with memberlist's LAN, WAN and local presets.

All durations are seconds (floats): the core never reads a clock, the host
passes `now` in the same unit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """One ring's timing. Field comments say what each knob controls."""

    probe_interval: float = 1.0
    """Time between two failure-detector probes (scaled by local health awareness)."""
    probe_timeout: float = 0.5
    """How long to wait for a direct ack before asking k members to ping indirectly."""
    indirect_checks: int = 3
    """k: members asked to ping a target indirectly after a direct probe timed out."""
    suspicion_mult: int = 4
    """Min suspicion timeout = suspicion_mult * max(1, log10(n)) * probe_interval."""
    suspicion_max_timeout_mult: int = 6
    """Max suspicion timeout = this * min suspicion timeout (Lifeguard)."""
    retransmit_mult: int = 4
    """A broadcast is sent retransmit_mult * ceil(log10(n + 1)) times."""
    gossip_interval: float = 0.2
    """Time between two rounds of piggy-backing queued broadcasts to random members."""
    gossip_nodes: int = 3
    """Members picked at random for each gossip round."""
    gossip_to_the_dead_time: float = 30.0
    """Keep gossiping to a dead member this long (it may be alive and need to refute),
    and forget it after this long."""
    push_pull_interval: float = 30.0
    """Time between full-state exchanges with one random member (0 disables them).
    Scaled up for rings of more than 32 members, as memberlist does."""
    awareness_max_multiplier: int = 8
    """Local health score is 0..this-1; probe interval and timeout scale by score + 1."""
    dead_node_reclaim_time: float = 0.0
    """After a member has been dead this long, another address may claim its name
    (0: never)."""
    recheck_suspects: bool = True
    """One probe interval before a suspicion expires, ping the suspect again (directly
    and through `indirect_checks` members) and drop the suspicion if it acks; and
    answer a member that passes on a stale suspicion or death of us with our current
    Alive. Not in memberlist (False behaves like it): under packet loss a member can
    miss a refutation and declare a live member dead."""
    packet_size: int = 1400
    """Byte budget of one packet: probes and gossip piggy-back broadcasts up to it."""

    @classmethod
    def lan(cls) -> GossipConfig:
        """memberlist's DefaultLANConfig."""
        return cls()

    @classmethod
    def wan(cls) -> GossipConfig:
        """memberlist's DefaultWANConfig: slower probes, more patience."""
        return replace(
            cls.lan(),
            suspicion_mult=6,
            push_pull_interval=60.0,
            probe_timeout=3.0,
            probe_interval=5.0,
            gossip_nodes=4,
            gossip_interval=0.5,
            gossip_to_the_dead_time=60.0,
        )

    @classmethod
    def local(cls) -> GossipConfig:
        """memberlist's DefaultLocalConfig: loopback or one host, fast and few."""
        return replace(
            cls.lan(),
            indirect_checks=1,
            retransmit_mult=2,
            suspicion_mult=3,
            push_pull_interval=15.0,
            probe_timeout=0.2,
            probe_interval=1.0,
            gossip_interval=0.1,
            gossip_to_the_dead_time=15.0,
        )
