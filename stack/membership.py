"""Who is in the cluster: joining, bootstrap-expect discovery, self-registration,
promotion of caught-up learners (a first autopilot), and the address book the
transport dials from (the replicated `nodes` table).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

import structlog

from stack import identity
from stack.config import AgentConfig, parse_hostport
from stack.errors import BadRequest, NoLeader, NotFound
from stack.net.rpc import RpcError
from stack.raft.errors import NotLeader, ProposalDropped, RaftError
from stack.raft.types import ConfChange, ConfChangeType, Role
from stack.state import nodes, tokens, tombstones
from stack.state.tombstones import TombstoneGC

if TYPE_CHECKING:
    from stack.agent import Agent

log = structlog.get_logger("stack.membership")

PROMOTE_LAG = 64  # a learner within this many entries of the leader ...
PROMOTE_ROUNDS = 3  # ... for this many autopilot rounds in a row is promoted
AUTOPILOT_INTERVAL = 0.5


class Membership:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.pending_root_hash: str | None = None
        self._caught_up: dict[int, int] = {}
        # --bootstrap-expect: servers heard of so far, and the voters we bootstrapped with.
        self.discovery_known: dict[int, str] = {}
        self.expect_voters: dict[int, str] = {}
        self._watch: Any = None

    # ------------------------------------------------------------ address book
    def my_rpc(self) -> str:
        return f"{self.agent.cfg.advertise_addr}:{self.agent.rpc.port}"

    def my_http(self) -> str:
        return f"{self.agent.cfg.advertise_addr}:{self.agent.http_port}"

    def seed_peers_from_store(self) -> None:
        self._sync_peers()
        self._watch = self.agent.store.watch(nodes.NODES_TABLE, "", prefix=True)
        self._watch.add_callback(lambda _index: self._sync_peers())

    def _sync_peers(self) -> None:
        me = self.agent.ident.id
        for n in nodes.list_nodes(self.agent.store)[0]:
            nid = int(n.id)
            if nid != me and n.address:
                host, port = parse_hostport(n.address, 7481)
                self.agent.transport.set_peer(nid, host, port)

    def on_conf_change(self, cc: ConfChange, index: int) -> None:
        if cc.type is ConfChangeType.REMOVE_NODE:
            if cc.node_id == self.agent.ident.id:
                log.warning("this node was removed from the cluster", index=index)
            else:
                self.agent.transport.remove_peer(cc.node_id)
        self._caught_up.pop(cc.node_id, None)

    def members(self) -> list[dict[str, Any]]:
        st = self.agent.node.status()
        rows = {n.id: n for n in nodes.list_nodes(self.agent.store)[0]}
        out: list[dict[str, Any]] = []
        for nid in sorted(st.conf.members() | {int(i) for i in rows}):
            row = rows.get(str(nid))
            raft_role = (
                "voter"
                if nid in st.conf.voters
                else "learner"
                if nid in st.conf.learners
                else "none"
            )
            prog = st.progress.get(nid)
            out.append(
                {
                    "id": str(nid),
                    "name": row.name if row else "",
                    "address": row.address if row else "",
                    "http": row.http if row else "",
                    "datacenter": row.datacenter if row else "",
                    "role": row.role if row else "server",
                    "raft": raft_role,
                    "leader": nid == st.leader,
                    "match_index": prog.match if prog else None,
                    "status": row.status if row else "unknown",
                }
            )
        return out

    def resolve(self, ident: str) -> int:
        """A node by id or name."""
        for m in self.members():
            if ident in (m["id"], m["name"]):
                return int(m["id"])
        raise NotFound(f"no member {ident!r}")

    # ------------------------------------------------------------ background duties
    async def run(self, mode: str) -> None:
        if mode == "join":
            await self._join_loop()
        await asyncio.gather(self._register_self(), self._root_token(), self._autopilot())

    async def _join_loop(self) -> None:
        body = {
            "id": self.agent.ident.id,
            "name": self.agent.ident.name,
            "rpc": self.my_rpc(),
            "http": self.my_http(),
            "datacenter": self.agent.ident.datacenter,
            "server": self.agent.cfg.server,
        }
        delay = 0.2
        while True:
            for addr in self.agent.cfg.join:
                host, port = parse_hostport(addr, 7481)
                try:
                    resp = await self.agent.transport.request_addr(
                        host, port, "cluster.join", body, 10.0, cluster_id=""
                    )
                except (RpcError, OSError) as e:
                    log.warning("join failed; retrying", target=addr, error=str(e))
                    continue
                cluster_id = str(resp["cluster_id"])
                self.agent.ident = self.agent.ident.with_cluster(cluster_id)
                identity.save(self.agent.cfg.data_dir, self.agent.ident)
                self.agent.set_cluster_id(cluster_id)
                for nid, rpc in resp["peers"]:
                    if int(nid) != self.agent.ident.id:
                        h, p = parse_hostport(str(rpc), 7481)
                        self.agent.transport.set_peer(int(nid), h, p)
                log.info("joined cluster", via=addr, cluster=cluster_id)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def discover_and_bootstrap(self) -> None:
        """--bootstrap-expect N: ask the --retry-join addresses who they know until N
        servers know each other, then every one of them writes the same initial
        configuration. If one already belongs to a cluster, join it instead."""
        cfg = self.agent.cfg
        me = self.agent.ident.id
        known = self.discovery_known
        known[me] = self.my_rpc()
        while True:
            for addr in (*cfg.retry_join, *cfg.join):
                host, port = parse_hostport(addr, 7481)
                try:
                    resp = await self.agent.transport.request_addr(
                        host, port, "cluster.discover", None, 2.0, cluster_id=""
                    )
                except (RpcError, OSError):
                    continue
                if resp.get("cluster_id"):
                    voters = {int(n): str(r) for n, r in resp.get("voters") or []}
                    if me in voters:
                        # It bootstrapped a configuration that includes us before we
                        # saw enough peers: write the same one (joining would wait
                        # forever for a leader that needs our vote).
                        self._expect_bootstrap(voters)
                        return
                    log.info("found an existing cluster; joining it", via=addr)
                    self.agent.cfg = _with_join(cfg, addr)
                    return
                for nid, rpc in resp["known"]:
                    known[int(nid)] = str(rpc)
            if len(known) >= cfg.bootstrap_expect:
                chosen = dict(sorted(known.items())[: cfg.bootstrap_expect])
                if me in chosen:
                    self._expect_bootstrap(chosen)
                    return
            await asyncio.sleep(0.3)

    def _expect_bootstrap(self, chosen: dict[int, str]) -> None:
        self.expect_voters = chosen
        voters = {nid: parse_hostport(rpc, 7481) for nid, rpc in chosen.items()}
        self.agent.bootstrap(voters, owner=self.agent.ident.id == min(chosen))
        log.info("bootstrapped", servers=len(chosen))

    async def _register_self(self) -> None:
        a = self.agent
        delay = 0.1
        while True:
            row, _ = nodes.get_node(a.store, str(a.ident.id))
            if row is not None and (row.name, row.address, row.http) == (
                a.ident.name,
                self.my_rpc(),
                self.my_http(),
            ):
                return
            if a.ident.cluster_id and a.node.leader:
                try:
                    result = await a.apply(
                        nodes.encode_register(
                            a.registry,
                            id=str(a.ident.id),
                            name=a.ident.name,
                            address=self.my_rpc(),
                            http=self.my_http(),
                            role="server" if a.cfg.server else "client",
                            datacenter=a.ident.datacenter,
                            status="alive",
                        ),
                        timeout=5.0,
                    )
                    await asyncio.wait_for(a.node.wait_applied(result.index), 10.0)
                    continue
                except (NoLeader, RaftError, RpcError, TimeoutError) as e:
                    log.debug("self-registration pending", error=str(e))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _root_token(self) -> None:
        a = self.agent
        while self.pending_root_hash is not None:
            if a.store.table(tokens.TOKENS_TABLE).get(self.pending_root_hash) is not None:
                self.pending_root_hash = None
                return
            if a.node.leader:
                try:
                    result = await a.apply(
                        tokens.encode_token_set(
                            a.registry,
                            secret_hash=self.pending_root_hash,
                            accessor="root",
                            policies=["root"],
                        ),
                        timeout=5.0,
                    )
                    await asyncio.wait_for(a.node.wait_applied(result.index), 10.0)
                    continue
                except (NoLeader, RaftError, RpcError, TimeoutError) as e:
                    log.debug("root token pending", error=str(e))
            await asyncio.sleep(0.1)

    async def _autopilot(self) -> None:
        gc = TombstoneGC()
        while True:
            await asyncio.sleep(AUTOPILOT_INTERVAL)
            if self.agent.node.role is not Role.LEADER:
                gc.reset()
                continue
            await self._promote_caught_up()
            await self._reap_tombstones(gc)

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

    async def _promote_caught_up(self) -> None:
        st = self.agent.node.status()
        rows = {n.id: n for n in nodes.list_nodes(self.agent.store)[0]}
        for nid in sorted(st.conf.learners):
            prog = st.progress.get(nid)
            row = rows.get(str(nid))
            if prog is None or row is None or row.role != "server":
                continue
            if prog.recent_active and prog.match + PROMOTE_LAG >= st.last_index:
                self._caught_up[nid] = self._caught_up.get(nid, 0) + 1
            else:
                self._caught_up[nid] = 0
            if self._caught_up[nid] >= PROMOTE_ROUNDS:
                try:
                    await self.agent.node.propose_conf_change(
                        ConfChange(ConfChangeType.ADD_VOTER, nid)
                    )
                    log.info("promoted learner to voter", node=row.name, id=nid)
                except RaftError as e:
                    log.info("promotion deferred", node=row.name, error=str(e))
                return  # one change at a time

    async def propose_conf_change(self, cc: ConfChange, timeout: float = 10.0) -> int:
        """On the leader, retrying while another change is still uncommitted; forwarded
        to the leader from anywhere else."""
        a = self.agent
        deadline = time.monotonic() + timeout
        while True:
            try:
                if a.node.role is Role.LEADER:
                    return await a.node.propose_conf_change(cc)
                if not a.node.leader:
                    raise NoLeader("no leader")
                body = {"type": int(cc.type), "id": cc.node_id}
                return int(
                    await a.transport.request(
                        a.node.leader,
                        "cluster.conf_change",
                        body,
                        max(deadline - time.monotonic(), 0.1),
                    )
                )
            except (ProposalDropped, NotLeader, NoLeader) as e:
                if time.monotonic() > deadline:
                    raise NoLeader(f"configuration change not accepted: {e}") from None
            except RpcError as e:
                if e.code not in ("dropped", "not_leader") or time.monotonic() > deadline:
                    raise BadRequest(e.message) from None
            await asyncio.sleep(0.1)

    async def transfer(self, ident: str | None) -> int:
        a = self.agent
        st = a.node.status()
        if ident:
            target = self.resolve(ident)
        else:
            others = [
                (p.match, n)
                for n, p in st.progress.items()
                if n != a.ident.id and n in st.conf.voters
            ]
            if not others:
                raise BadRequest("no other voter to transfer leadership to")
            target = max(others)[1]
        try:
            await a.node.run_op(lambda core: core.transfer_leadership(target))
        except ValueError as e:
            raise BadRequest(str(e)) from None
        deadline = time.monotonic() + 5.0
        while a.node.leader != target and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if a.node.leader != target:
            raise NoLeader("leadership transfer did not complete in 5s")
        return target

    # ------------------------------------------------------------ RPC methods
    async def handle(self, peer_id: int, method: str, body: Any) -> Any:
        a = self.agent
        if method == "cluster.discover":
            return {
                "id": a.ident.id,
                "cluster_id": a.ident.cluster_id,
                "known": [[k, v] for k, v in self.discovery_known.items()]
                or [[a.ident.id, self.my_rpc()]],
                "voters": [[k, v] for k, v in self.expect_voters.items()],
            }
        if method == "cluster.join":
            return await self._handle_join(body)
        if method == "cluster.conf_change":
            if not isinstance(body, dict):
                raise BadRequest("bad conf change")
            cc = ConfChange(ConfChangeType(int(body["type"])), int(body["id"]))
            if a.node.role is not Role.LEADER:
                raise NotLeader(a.node.leader)
            return await a.node.propose_conf_change(cc)
        if method == "cluster.transfer":
            if a.node.role is not Role.LEADER:
                raise NotLeader(a.node.leader)
            to = str(body.get("to", "")) if isinstance(body, dict) else ""
            return await self.transfer(to or None)
        raise RpcError("unknown_method", f"unknown method {method!r}")

    async def _handle_join(self, body: Any) -> Any:
        a = self.agent
        if not a.ident.cluster_id:
            raise RpcError("unavailable", "this node has not joined a cluster yet")
        try:
            nid = int(body["id"])
            name, rpc, http = str(body["name"]), str(body["rpc"]), str(body.get("http", ""))
            server = bool(body.get("server", True))
            dc = str(body.get("datacenter", "dc1"))
            parse_hostport(rpc, 7481)
        except (KeyError, TypeError, ValueError) as e:
            raise BadRequest(f"malformed join request: {e}") from None
        if a.node.role is not Role.LEADER:
            leader = a.node.leader
            if not leader:
                raise RpcError("no_leader", "no leader; retry")
            return await a.transport.request(leader, "cluster.join", body, 10.0)
        host, port = parse_hostport(rpc, 7481)
        a.transport.set_peer(nid, host, port)
        await a.apply(
            nodes.encode_register(
                a.registry,
                id=str(nid),
                name=name,
                address=rpc,
                http=http,
                role="server" if server else "client",
                datacenter=dc,
                status="alive",
            )
        )
        if nid not in a.node.status().conf.members():
            await self.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, nid))
        peers = [[int(n.id), n.address] for n in nodes.list_nodes(a.store)[0]]
        peers.append([a.ident.id, self.my_rpc()])
        log.info("node joined as learner", node=name, id=nid)
        return {"cluster_id": a.ident.cluster_id, "leader": a.ident.id, "peers": peers}


def _with_join(cfg: AgentConfig, addr: str) -> AgentConfig:
    return dataclasses.replace(cfg, join=(addr,))
