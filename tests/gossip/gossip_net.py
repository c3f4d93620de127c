"""The ring tests' network: the simulator's gossip ring (`stack.sim.gossip`)."""

from stack.sim.gossip import GossipNet as Net
from stack.sim.gossip import Seen

__all__ = ["Net", "Seen"]
