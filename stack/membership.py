"""Who is in the cluster: joining, bootstrap-expect discovery, self-registration,
and the address book the transport dials from (the replicated `nodes` table).
The leader's housekeeping (promotions, status from the ring) is `autopilot.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import secrets
import time
from typing import TYPE_CHECKING, Any

import structlog

from stack import identity
from stack.ca import authority
from stack.ca.authority import CertError
from stack.config import AgentConfig, parse_hostport
from stack.credentials import join_proof, parse_token
from stack.errors import BadRequest, ConfigError, NoLeader, NotFound
from stack.gossip.types import State
from stack.net import tls
from stack.net.rpc import AuthError, RpcError
from stack.raft.errors import NotLeader, ProposalDropped, RaftError
from stack.raft.types import ConfChange, ConfChangeType, Role
from stack.ring import KeySet
from stack.state import ca, nodes

if TYPE_CHECKING:
    from stack.agent import Agent

log = structlog.get_logger("stack.membership")


class Membership:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.discovery_known: dict[int, str] = {}  # --bootstrap-expect: servers heard of
        self._watch: Any = None

    # ------------------------------------------------------------ address book
    def my_rpc(self) -> str:
        return f"{self.agent.cfg.advertise_addr}:{self.agent.rpc_port}"

    def my_http(self) -> str:
        return f"{self.agent.cfg.advertise_addr}:{self.agent.http_port}"

    def seed_peers_from_store(self) -> None:
        self._sync_peers()
        self._seed_peers_from_log_tail()
        self._watch = self.agent.store.watch(nodes.NODES_TABLE, "", prefix=True)
        self._watch.add_callback(lambda _index: self._sync_peers())

    def _sync_peers(self) -> None:
        me = self.agent.ident.id
        for n in nodes.list_nodes(self.agent.store)[0]:
            nid = int(n.id)
            if nid != me and n.address:
                host, port = parse_hostport(n.address, 7481)
                self.agent.transport.set_peer(nid, host, port)

    def _seed_peers_from_log_tail(self) -> None:
        """At start-up, peers registered in entries we hold but have not applied yet.
        The stored commit index may predate them (a leader saves it only with a term
        change), and a restarted server must reach its peers to collect their seal
        shares and to answer their votes. Only peers the store has no address for:
        once applied, the store is the address book again."""
        a = self.agent
        known = {int(n.id) for n in nodes.list_nodes(a.store)[0] if n.address}
        found: dict[int, str] = {}
        for cmd in a.commands_in(a.unapplied_tail()):
            if cmd.type_id == nodes.NODE_REGISTER:
                try:
                    found[int(cmd.body["id"])] = str(cmd.body["address"])
                except (TypeError, KeyError, ValueError):
                    continue
        for nid, address in found.items():
            if nid != a.ident.id and nid not in known and address:
                host, port = parse_hostport(address, 7481)
                a.transport.set_peer(nid, host, port)

    def on_conf_change(self, cc: ConfChange, index: int) -> None:
        if cc.type is ConfChangeType.REMOVE_NODE:
            if cc.node_id == self.agent.ident.id:
                log.warning("this node was removed from the cluster", index=index)
            else:
                self.agent.transport.remove_peer(cc.node_id)
                self.agent.rpc.disconnect(cc.node_id)
                self.agent.unsealer.removed.add(cc.node_id)  # the leader revokes it
        self.agent.autopilot.forget(cc.node_id)

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
                    "ring": _ring_name(self.agent.ring.state(nid)),
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
        await self._register_self()

    async def join_cluster(self) -> None:
        """Join with the token: check the cluster (CA fingerprint, and its proof that
        it knows the secret), then send a CSR over TLS verified against its roots and
        get our certificate. A refused token stops the node with a clear message."""
        a = self.agent
        fp, secret = parse_token(a.cfg.token)
        if not secret:
            raise ConfigError("--join needs --token (print one with `stack token join`)")
        delay = 0.2
        while True:
            for addr in a.cfg.join:
                try:
                    await self._join_via(addr, fp, secret)
                    return
                except (RpcError, OSError, KeyError, TypeError, ValueError, CertError) as e:
                    log.warning("join failed; retrying", target=addr, error=str(e))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _join_via(self, addr: str, fp: str, secret: str) -> None:
        a = self.agent
        host, port = parse_hostport(addr, 7481)
        nonce = secrets.token_bytes(32)
        probe = await a.transport.request_addr(
            host,
            port,
            "cluster.ca",
            {"nonce": nonce},
            10.0,
            cluster_id="",
            tls=tls.probe_context(),
        )
        roots = [bytes(r) for r in probe["roots"]]
        if not hmac.compare_digest(bytes(probe["proof"]), join_proof(secret, nonce, roots)):
            # The secret is not sent to a server that does not know it; the cluster is
            # only told that someone failed, so its side of the story is in its log.
            with contextlib.suppress(RpcError, OSError):
                await a.transport.request_addr(
                    host, port, "cluster.join_refused",
                    {"name": a.ident.name, "reason": "join token does not match this cluster"},
                    5.0, cluster_id="", tls=tls.probe_context(),
                )  # fmt: skip
            raise ConfigError(
                f"join token refused: the cluster at {addr} does not know this token's "
                "secret (wrong or replaced token?)"
            )
        if fp and fp not in {authority.fingerprint(r) for r in roots}:
            raise ConfigError(
                f"the cluster at {addr} is not the one this join token names "
                "(CA fingerprint mismatch)"
            )
        creds = a.credentials
        csr = authority.make_csr(creds.tls.key_pem(), node_id=a.ident.id, name=a.ident.name)
        body = {
            "id": a.ident.id,
            "name": a.ident.name,
            "rpc": self.my_rpc(),
            "http": self.my_http(),
            "gossip": a.ring.address(),
            "datacenter": a.ident.datacenter,
            "server": a.cfg.server,
            "secret": secret,
            "csr": csr,
            "addresses": creds.addresses(),
        }
        try:
            resp = await a.transport.request_addr(
                host,
                port,
                "cluster.join",
                body,
                20.0,
                cluster_id="",
                tls=tls.verified_context(roots),
                check_peer=_server_cert,
            )
        except RpcError as e:
            if e.code == "bad_request":
                raise ConfigError(f"join refused by {addr}: {e.message}") from None
            raise
        cluster_id = str(resp["cluster_id"])
        a.ident = a.ident.with_cluster(cluster_id)
        creds.tls.install(bytes(resp["chain"]), [bytes(r) for r in resp["roots"]])
        creds.save_bundle([bytes(r) for r in resp["roots"]])
        identity.save(a.cfg.data_dir, a.ident)
        a.set_cluster_id(cluster_id)
        a.ring.joined_keys = KeySet.from_wire(resp["gossip"])
        a.ring.joined_seeds = [str(x) for x in resp.get("gossip_seeds") or []]
        for nid, rpc in resp["peers"]:
            if int(nid) != a.ident.id:
                h, p = parse_hostport(str(rpc), 7481)
                a.transport.set_peer(int(nid), h, p)
        log.info("joined cluster", via=addr, cluster=cluster_id)

    async def discover_and_bootstrap(self) -> None:
        """--bootstrap-expect N: ask the --retry-join addresses who they know until N
        servers know each other; the lowest id of the first N bootstraps the cluster
        with the shared --token as its join secret, and the others join it. A server
        that answers over TLS already belongs to a cluster: join that."""
        cfg = self.agent.cfg
        me = self.agent.ident.id
        known = self.discovery_known
        known[me] = self.my_rpc()
        _, secret = parse_token(cfg.token)
        while True:
            for addr in (*cfg.retry_join, *cfg.join):
                resp = await self._discover(addr)
                if resp is None:
                    continue
                if resp.get("cluster_id"):
                    log.info("found an existing cluster; joining it", via=addr)
                    self.agent.cfg = _with_join(cfg, addr)
                    return
                for nid, rpc in resp["known"]:
                    known[int(nid)] = str(rpc)
            if len(known) >= cfg.bootstrap_expect:
                chosen = dict(sorted(known.items())[: cfg.bootstrap_expect])
                owner = min(chosen)
                if owner == me:
                    self.agent.bootstrap(join_secret=secret)
                    log.info("bootstrapped; the other expected servers join", servers=len(chosen))
                    return
                if me in chosen:
                    self.agent.cfg = _with_join(cfg, chosen[owner])
                    return
            await asyncio.sleep(0.3)

    async def _discover(self, addr: str) -> dict[str, Any] | None:
        host, port = parse_hostport(addr, 7481)
        t = self.agent.transport
        for ctx in (False, tls.probe_context()):  # plaintext while discovering, then TLS
            try:
                resp = await t.request_addr(
                    host, port, "cluster.discover", None, 2.0, cluster_id="", tls=ctx
                )
            except (RpcError, OSError):
                continue
            if isinstance(resp, dict):
                return resp
        return None

    async def _register_self(self) -> None:
        a = self.agent
        delay = 0.1
        while True:
            row, _ = nodes.get_node(a.store, str(a.ident.id))
            if row is not None and (row.name, row.address, row.http, row.gossip) == (
                a.ident.name,
                self.my_rpc(),
                self.my_http(),
                a.ring.address(),
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
                            gossip=a.ring.address(),
                            role="server" if a.cfg.server else "client",
                            datacenter=a.ident.datacenter,
                            status=row.status if row is not None else "alive",
                        ),
                        timeout=5.0,
                    )
                    await asyncio.wait_for(a.node.wait_applied(result.index), 10.0)
                    continue
                except (NoLeader, RaftError, RpcError, TimeoutError) as e:
                    log.debug("self-registration pending", error=str(e))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

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
            }
        if method == "cluster.join":
            return await self._handle_join(body)
        if method == "cluster.join_refused":
            name = str(body.get("name", ""))[:64] if isinstance(body, dict) else ""
            log.warning("join refused: a node tried a join token this cluster does not know "
                        "(wrong or replaced token)", node=name)  # fmt: skip
            return None
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
            gossip_addr = str(body.get("gossip", ""))
            server = bool(body.get("server", True))
            dc = str(body.get("datacenter", "dc1"))
            secret, csr = str(body["secret"]), bytes(body["csr"])
            addresses = [str(x) for x in body.get("addresses") or []][:8]
            parse_hostport(rpc, 7481)
        except (KeyError, TypeError, ValueError) as e:
            raise BadRequest(f"malformed join request: {e}") from None
        if a.node.role is not Role.LEADER:
            leader = a.node.leader
            if not leader:
                raise RpcError("no_leader", "no leader; retry")
            return await a.transport.request(leader, "cluster.join", body, 15.0)
        try:
            a.credentials.check_join_secret(secret)
        except BadRequest:
            log.warning("join refused: wrong or replaced join token", node=name, rpc=rpc)
            raise
        if ca.is_revoked(a.store, nid):
            raise BadRequest(
                f"node id {nid} was removed from this cluster; wipe its data directory "
                "to join as a new node"
            )
        role = authority.ROLE_SERVER if server else authority.ROLE_CLIENT
        chain = a.credentials.sign(csr, node_id=nid, name=name, role=role, addresses=addresses)
        pub = authority.cert_public_key_pem(authority.split_pem_chain(chain)[0])
        host, port = parse_hostport(rpc, 7481)
        a.transport.set_peer(nid, host, port)
        await a.apply(ca.encode_node_key(a.registry, nid, pub))
        await a.apply(
            nodes.encode_register(
                a.registry,
                id=str(nid),
                name=name,
                address=rpc,
                http=http,
                gossip=gossip_addr,
                role="server" if server else "client",
                datacenter=dc,
                status="alive",
            )
        )
        if nid not in a.node.status().conf.members():
            await self.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, nid))
        peers = [[int(n.id), n.address] for n in nodes.list_nodes(a.store)[0]]
        peers.append([a.ident.id, self.my_rpc()])
        seeds = [n.gossip for n in nodes.list_nodes(a.store)[0] if n.gossip and n.id != str(nid)]
        log.info("node joined as learner", node=name, id=nid, role=role)
        return {
            "cluster_id": a.ident.cluster_id,
            "leader": a.ident.id,
            "peers": peers,
            "chain": chain,
            "roots": a.credentials.roots(),
            "gossip": a.ring.decrypt_keys().to_wire(),
            "gossip_seeds": [a.ring.address(), *seeds],
        }


def _server_cert(der: bytes | None) -> None:
    """The join request goes only to a server of the cluster (its roots verified the chain)."""
    if der is None:
        raise AuthError("the server showed no certificate")
    try:
        info = authority.parse_node_cert(der)
    except CertError as e:
        raise AuthError(str(e)) from None
    if info.role != authority.ROLE_SERVER:
        raise AuthError("the join address is not a server")


def _ring_name(state: State | None) -> str:
    return "none" if state is None else state.name.lower()


def _with_join(cfg: AgentConfig, addr: str) -> AgentConfig:
    return dataclasses.replace(cfg, join=(addr,))
