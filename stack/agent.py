"""The composition root: the one place that knows every part of a node.

It opens the data directory, builds the Raft core, its durable storage and
transport, the state machine with every engine's commands, the HTTP API, and
the background duties (joining, self-registration, promoting learners).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from stack import identity
from stack.api.app import start_http
from stack.config import AgentConfig, remember
from stack.errors import BadRequest, NoLeader, NotFound, StackError
from stack.membership import Membership
from stack.net.rpc import PeerTransport, RpcError, RpcServer
from stack.raft.config import RaftConfig
from stack.raft.core import Raft
from stack.raft.errors import NotLeader, OutcomeUnknown, ProposalDropped, RaftError
from stack.raft.node import NodeStopped, RaftNode
from stack.raft.storage import LogStorage, StoredState
from stack.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    HardState,
    Role,
    Snapshot,
    SnapshotMeta,
)
from stack.state import register_substrate_commands, tokens
from stack.state.commands import CommandRegistry, WriteResult
from stack.state.fsm import FSM

log = structlog.get_logger("stack.agent")

RETRYABLE = (NotLeader, ProposalDropped, NoLeader)


def build_registry() -> CommandRegistry:
    """Every engine registers its commands here, in one place, once."""
    registry = CommandRegistry()
    register_substrate_commands(registry)
    tokens.register(registry)
    return registry


class Agent:
    def __init__(self, cfg: AgentConfig, *, out: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self._out = out
        self.registry = build_registry()
        self.fsm = FSM(self.registry)
        self.store = self.fsm.store
        self.started_at = time.monotonic()
        self.ready_at: float | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = asyncio.Event()
        self._stopping: asyncio.Future[None] | None = None
        self.ident: identity.NodeIdentity
        self.storage: LogStorage
        self.node: RaftNode
        self.rpc: RpcServer
        self.transport: PeerTransport
        self.membership: Membership
        self.http: Any = None
        self.root_token: str | None = None
        self._bootstrap_snapshot: Snapshot | None = None

    # ================================================================ lifecycle
    async def start(self) -> None:
        cfg = self.cfg
        data_dir = Path(cfg.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        remember(cfg)
        ident = identity.load(data_dir)
        if ident is None:
            ident = identity.NodeIdentity(identity.new_node_id(), cfg.node_name, "", cfg.datacenter)
            identity.save(data_dir, ident)
        self.ident = ident
        self.storage = LogStorage.open(data_dir / "raft")
        st = self.storage.initial_state()
        fresh = st.snapshot is None and not st.entries and st.hard_state == HardState()
        if st.snapshot is not None and st.snapshot.data:
            self.fsm.restore(st.snapshot.data)

        self.transport = PeerTransport(
            node_id=ident.id, cluster_id=ident.cluster_id, local_host=cfg.bind
        )
        self.rpc = RpcServer(
            node_id=ident.id,
            cluster_id=ident.cluster_id,
            on_raft=lambda m: self.node.step(m),
            on_request=self._on_request,
            open_methods=frozenset({"cluster.join", "cluster.discover"}),
        )
        await self.rpc.start(cfg.bind, cfg.rpc_port)
        self.membership = Membership(self)

        mode = "restart"
        if fresh:
            if cfg.join:
                mode = "join"
            elif cfg.bootstrap_expect > 1:
                mode = "expect"
                await self.membership.discover_and_bootstrap()
                if self.cfg.join:  # found a cluster that already exists
                    mode = "join"
            else:
                mode = "bootstrap"
                self.bootstrap({ident.id: (cfg.advertise_addr, self.rpc.port)}, owner=True)
            if self._bootstrap_snapshot is not None:
                st = StoredState(HardState(), self._bootstrap_snapshot, [])

        core = Raft(
            RaftConfig(id=ident.id, election_tick=cfg.election_ticks, heartbeat_tick=1),
            random.Random(secrets.randbits(64)),
            hard_state=st.hard_state,
            snapshot=st.snapshot,
            entries=st.entries,
            applied=st.snapshot.meta.index if st.snapshot else 0,
        )
        if not cfg.server:
            core.set_campaign_allowed(False)
        self.node = RaftNode(
            core,
            storage=self.storage,
            fsm=self.fsm,
            send=self.transport.send,
            tick_interval=cfg.tick_ms / 1000,
            snapshot_threshold=cfg.snapshot_threshold,
            on_conf_change=self.membership.on_conf_change,
            on_role_change=self._on_role_change,
        )
        self.membership.seed_peers_from_store()
        self.node.start()
        if core.conf.voters == {ident.id} and cfg.server:
            # A single-server cluster need not wait out an election timeout.
            await self.node.run_op(lambda c: c.campaign())

        self.http = await start_http(self)
        self._spawn(self.membership.run(mode))
        log.info(
            "node started",
            name=ident.name,
            id=ident.id,
            mode=mode,
            http=f"{cfg.bind}:{self.http_port}",
            rpc=f"{cfg.bind}:{self.rpc.port}",
        )
        self._out(f"stack node {ident.name} ({mode}): API on http://{cfg.bind}:{self.http_port}")
        if self.root_token is not None:
            self._out(f"root token: {self.root_token}")

    @property
    def http_port(self) -> int:
        return int(self.http.port) if self.http is not None else self.cfg.http_port

    def bootstrap(self, voters: dict[int, tuple[str, int]], *, owner: bool) -> None:
        """Write the initial configuration as the snapshot at index 0 and, on the one
        node chosen to, mint the root token (proposed once a leader exists)."""
        cluster_id = secrets.token_hex(8) if len(voters) == 1 else _cluster_id_for(sorted(voters))
        snap = Snapshot(SnapshotMeta(0, 0, ConfState(voters=frozenset(voters))), b"")
        self.storage.save(snapshot=snap)
        self._bootstrap_snapshot = snap
        self.ident = self.ident.with_cluster(cluster_id)
        identity.save(Path(self.cfg.data_dir), self.ident)
        self.set_cluster_id(cluster_id)
        for nid, (host, port) in voters.items():
            if nid != self.ident.id:
                self.transport.set_peer(nid, host, port)
        if owner:
            self.root_token = tokens.new_secret()
            self._save_root_token(self.root_token)
            self.membership.pending_root_hash = tokens.hash_secret(self.root_token)

    def set_cluster_id(self, cluster_id: str) -> None:
        self.rpc.cluster_id = cluster_id
        self.transport.cluster_id = cluster_id

    def _save_root_token(self, token: str) -> None:
        cdir = Path(self.cfg.config_dir)
        cdir.mkdir(parents=True, exist_ok=True)
        path = cdir / "root-token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.chmod(path, 0o600)

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(t)

    async def stop(self, *, transfer: bool = True) -> None:
        """Stop once, however many signals or requests ask for it meanwhile."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(transfer=transfer))
        await asyncio.shield(self._stopping)

    async def _stop(self, *, transfer: bool) -> None:
        if transfer and self.node.role is Role.LEADER:
            await self._transfer_away(timeout=3.0)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.close()
        await self.node.stop()
        await self.rpc.close()
        await self.transport.close()
        self.storage.close()
        self._stopped.set()
        log.info("node stopped", name=self.ident.name)

    async def _transfer_away(self, timeout: float) -> None:
        status = self.node.status()
        candidates = [
            (p.match, nid)
            for nid, p in status.progress.items()
            if nid != self.ident.id and nid in status.conf.voters
        ]
        if not candidates:
            return
        target = max(candidates)[1]
        try:
            await self.node.run_op(lambda core: core.transfer_leadership(target))
        except (RaftError, ValueError) as e:
            log.warning("leadership transfer failed", error=str(e))
            return
        deadline = time.monotonic() + timeout
        while self.node.role is Role.LEADER and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # ================================================================ writes and reads
    async def apply(self, data: bytes, timeout: float = 10.0) -> WriteResult:
        """Commit one command through the leader, wherever we are; returns its result."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                if self.node.role is Role.LEADER:
                    remaining = max(deadline - time.monotonic(), 0.01)
                    try:
                        result = await asyncio.wait_for(self.node.propose(data), remaining)
                    except TimeoutError:
                        # In the log but not committed in time (a deposed leader's entry
                        # may still commit later): the client must not assume either way.
                        raise OutcomeUnknown("write not committed in time") from None
                    if isinstance(result, WriteResult):
                        return result
                    raise StackError(f"command returned {type(result).__name__}")
                leader = self.node.leader
                if not leader:
                    raise NoLeader("no leader")
                remaining = max(deadline - time.monotonic(), 0.01)
                body = await self.transport.request(leader, "raft.apply", data, remaining)
                return WriteResult(bool(body["ok"]), int(body["index"]))
            except RpcError as e:
                if e.code == "connection_lost":
                    # The leader may have committed it before the connection dropped.
                    raise OutcomeUnknown(f"forwarded write: {e.message}") from None
                if e.code not in ("not_leader", "dropped", "no_leader", "unavailable"):
                    raise _from_rpc(e) from None
            except RETRYABLE:
                pass
            if time.monotonic() + delay > deadline:
                raise NoLeader("no leader could commit the write in time; retry later")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def barrier(self, timeout: float = 5.0) -> int:
        """Linearizable read barrier: afterwards the local store reflects every write
        acknowledged before the call. Returns the read index."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                if self.node.role is Role.LEADER:
                    return await asyncio.wait_for(self.node.read_index(), timeout)
                leader = self.node.leader
                if not leader:
                    raise NoLeader("no leader")
                remaining = max(deadline - time.monotonic(), 0.01)
                reply = await self.transport.request(leader, "raft.read_index", None, remaining)
                index = int(reply)
                await asyncio.wait_for(self.node.wait_applied(index), remaining)
                return index
            except RpcError as e:
                if e.code not in ("not_leader", "no_leader", "unavailable", "connection_lost"):
                    raise _from_rpc(e) from None
            except RETRYABLE:
                pass
            except TimeoutError:
                raise NoLeader("read barrier timed out; is there a quorum?") from None
            if time.monotonic() + delay > deadline:
                raise NoLeader("no leader could confirm the read in time; retry later")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    # ================================================================ RPC
    async def _on_request(self, peer_id: int, method: str, body: Any) -> Any:
        try:
            if method == "raft.apply":
                if not isinstance(body, bytes):
                    raise RpcError("bad_request", "raft.apply takes bytes")
                if self.node.role is not Role.LEADER:
                    raise RpcError("not_leader", str(self.node.leader))
                result = await self.node.propose(body)
                if not isinstance(result, WriteResult):
                    raise RpcError("internal", "command returned no result")
                return {"ok": result.ok, "index": result.index}
            if method == "raft.read_index":
                if self.node.role is not Role.LEADER:
                    raise RpcError("not_leader", str(self.node.leader))
                return await asyncio.wait_for(self.node.read_index(), 5.0)
            return await self.membership.handle(peer_id, method, body)
        except NotLeader as e:
            raise RpcError("not_leader", str(e.leader)) from None
        except ProposalDropped as e:
            raise RpcError("dropped", str(e)) from None
        except OutcomeUnknown as e:
            raise RpcError("outcome_unknown", str(e)) from None
        except NodeStopped as e:
            raise RpcError("unavailable", str(e)) from None
        except TimeoutError:
            raise RpcError("unavailable", "timed out") from None
        except BadRequest as e:
            raise RpcError("bad_request", str(e)) from None
        except NotFound as e:
            raise RpcError("not_found", str(e)) from None

    def _on_role_change(self, role: Role, leader: int) -> None:
        log.info("raft role", role=role.name.lower(), leader=leader, term=self.node.core.term)

    # ================================================================ status
    def status(self) -> dict[str, Any]:
        st = self.node.status()
        members = self.membership.members()
        leader_name = next((m["name"] for m in members if m["id"] == str(st.leader)), "")
        return {
            "name": self.ident.name,
            "id": str(self.ident.id),
            "cluster_id": self.ident.cluster_id,
            "datacenter": self.ident.datacenter,
            "role": st.role.name.lower(),
            "server": self.cfg.server,
            "leader": str(st.leader) if st.leader else "",
            "leader_name": leader_name,
            "term": st.term,
            "commit_index": st.commit,
            "applied_index": self.node.applied,
            "last_index": st.last_index,
            "snapshot_index": st.snapshot_index,
            "sealed": False,
            "members": members,
            "stats": {
                "readies": self.node.stats.readies,
                "syncs": self.node.stats.syncs,
                "entries_persisted": self.node.stats.entries_persisted,
                "entries_applied": self.node.stats.entries_applied,
                "messages_sent": self.node.stats.messages_sent,
                "snapshots_taken": self.node.stats.snapshots_taken,
                "snapshots_installed": self.node.stats.snapshots_installed,
                "rpc_dropped": self.transport.dropped,
            },
        }

    async def remove_peer(self, ident: str) -> int:
        nid = self.membership.resolve(ident)
        cc = ConfChange(ConfChangeType.REMOVE_NODE, nid)
        return await self.membership.propose_conf_change(cc)

    async def transfer_leader(self, ident: str | None) -> int:
        if self.node.role is not Role.LEADER:
            leader = self.node.leader
            if not leader:
                raise NoLeader("no leader")
            body = {"to": ident or ""}
            return int(await self.transport.request(leader, "cluster.transfer", body, 5.0))
        return await self.membership.transfer(ident)


def _cluster_id_for(ids: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16]


def _from_rpc(e: RpcError) -> StackError:
    if e.code == "bad_request":
        return BadRequest(e.message)
    if e.code == "not_found":
        return NotFound(e.message)
    if e.code == "outcome_unknown":
        return StackError(f"outcome unknown: {e.message}")
    return StackError(f"{e.code}: {e.message}")
