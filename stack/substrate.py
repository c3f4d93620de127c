"""One of each, counted: what every live member says it runs on.

`report()` is one node's answer (RPC `substrate.report`): the Raft group and gossip
ring it is in, the roots it trusts (with the cross-signature that links a root to
the one before it), and its gossip keyring's key ids. `survey()` asks every member
the ring knows alive, and counts distinct Raft groups, rings, CAs (roots linked by
verified cross-signatures are one CA: a rotation in progress is one CA with two
roots), root fingerprints and primary gossip keys. Beside the counts it shows, as a
reference, what the HashiStack runs for the same job.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from stack.ca import authority
from stack.gossip.types import State
from stack.net.rpc import RpcError
from stack.state import ca

if TYPE_CHECKING:
    from stack.agent import Agent

ASK_TIMEOUT = 5.0

# What the HashiStack needs for 1 secrets cluster and 2 regions of 2 datacenters
# each (Vault with integrated storage; Consul servers per datacenter plus a WAN
# ring; Nomad servers per region plus their server ring), from DESIGN.md.
HASHISTACK_REFERENCE = {
    "topology": "1 secrets cluster + 2 regions x 2 datacenters",
    "raft_groups": 7,
    "gossip_rings": 8,
    "cas": 4,
    "gossip_keys": 2,
}


def report(agent: Agent) -> dict[str, Any]:
    """This node's substrate, as it uses it now."""
    trusted = agent.credentials.tls.roots()
    links = _cross_links(agent)
    roots = []
    for cert in trusted:
        fp = authority.fingerprint(cert)
        roots.append({"fp": fp, "cross_signed_by": links.get(fp, "")})
    stats = agent.ring.stats()
    alive = stats["members"].get("alive", 0) + stats["members"].get("suspect", 0)
    return {
        "id": str(agent.ident.id),
        "name": agent.ident.name,
        "datacenter": agent.ident.datacenter,
        "role": "server" if agent.cfg.server else "client",
        "raft_group": agent.ident.cluster_id,
        "ring": agent.ring.ring_id if agent.ring.version else "",
        "ring_alive": alive,
        "roots": roots,
        "gossip_primary": stats["primary_key_id"],
        "gossip_keys": stats["key_ids"],
    }


def _cross_links(agent: Agent) -> dict[str, str]:
    """fingerprint of a root -> fingerprint of the earlier root that cross-signed it
    (checked, not taken on trust from the table)."""
    rows = ca.roots(agent.store)
    by_gen = {r.gen: r for r in rows}
    out: dict[str, str] = {}
    for r in rows:
        prev = by_gen.get(r.gen - 1)
        if r.cross and prev is not None and authority.cross_signed(r.cross, r.cert, prev.cert):
            out[authority.fingerprint(r.cert)] = authority.fingerprint(prev.cert)
    return out


async def survey(agent: Agent) -> dict[str, Any]:
    """Ask every live member (and ourselves) and count."""
    me = agent.ident.id
    targets: dict[int, str] = {}
    for m in agent.ring.members():
        if m.state in (State.ALIVE, State.SUSPECT) and m.name != str(me):
            try:
                targets[int(m.name)] = m.tags.get("name", m.name)
            except ValueError:
                continue

    async def ask(nid: int) -> dict[str, Any] | str:
        try:
            body = await agent.transport.request(nid, "substrate.report", None, ASK_TIMEOUT)
        except (RpcError, OSError, TimeoutError) as e:
            return str(e) or type(e).__name__
        return body if isinstance(body, dict) else "malformed answer"

    answers = await asyncio.gather(*(ask(n) for n in targets))
    reports = [report(agent)]
    unreachable = []
    for (nid, name), ans in zip(targets.items(), answers, strict=True):
        if isinstance(ans, dict):
            reports.append(ans)
        else:
            unreachable.append({"id": str(nid), "name": name, "error": ans})
    return {"counts": count(reports), "hashistack": HASHISTACK_REFERENCE,
            "members": reports, "unreachable": unreachable}  # fmt: skip


def count(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Distinct substrate pieces across the reports."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    fps: set[str] = set()
    for r in reports:
        for root in r.get("roots", []):
            fp, signer = str(root.get("fp", "")), str(root.get("cross_signed_by", ""))
            fps.add(fp)
            find(fp)
            if signer:
                parent[find(fp)] = find(signer)
    cas = {find(fp) for fp in fps}
    return {
        "members_asked": len(reports),
        "raft_groups": len({r.get("raft_group") for r in reports if r.get("raft_group")}),
        "gossip_rings": len({r.get("ring") for r in reports if r.get("ring")}),
        "cas": len(cas),
        "root_fingerprints": sorted(fps),
        "gossip_keys": len({r.get("gossip_primary") for r in reports if r.get("gossip_primary")}),
        "gossip_primary_ids": sorted(
            {str(r.get("gossip_primary")) for r in reports if r.get("gossip_primary")}
        ),
    }
