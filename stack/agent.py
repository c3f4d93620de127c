"""The composition root: the one place that knows every part of a node.

It opens the data directory, builds the Raft core, its durable storage and
transport, the state machine with every engine's commands, the HTTP API, and
the background duties (joining, self-registration, promoting learners).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import random
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import structlog

from stack import identity, substrate
from stack.api.app import start_http
from stack.autopilot import Autopilot
from stack.config import AgentConfig, remember
from stack.credentials import Credentials
from stack.errors import (
    BadRequest,
    ConfigError,
    Conflict,
    NoLeader,
    NotFound,
    StackError,
    Unavailable,
)
from stack.membership import Membership
from stack.net.rpc import PeerTransport, RpcError, RpcServer
from stack.raft.config import RaftConfig
from stack.raft.core import Raft
from stack.raft.errors import NotLeader, OutcomeUnknown, ProposalDropped, RaftError
from stack.raft.node import NodeStopped, RaftNode
from stack.raft.storage import LogStorage, StoredState
from stack.raft.types import (
    AnyMessage,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Role,
    Snapshot,
    SnapshotMeta,
)
from stack.ring import Ring
from stack.state import acl, ca, register_substrate_commands, tokens
from stack.state import audit as auditstate
from stack.state import auth as authstate
from stack.state import pki as pkistate
from stack.state import seal as sealstate
from stack.state import secrets as secretsstate
from stack.state import transit as transitstate
from stack.state.commands import ApplyContext, Command, CommandRegistry, WriteResult
from stack.state.errors import CorruptEntry
from stack.state.fsm import FSM
from stack.unseal import Unsealer
from stack.vault import seal as sealing
from stack.vault.barrier import Barrier
from stack.vault.service import SecretsService

log = structlog.get_logger("stack.agent")

RETRYABLE = (NotLeader, ProposalDropped, NoLeader)


def build_registry() -> CommandRegistry:
    """Every engine registers its commands here, in one place, once."""
    registry = CommandRegistry()
    register_substrate_commands(registry)
    tokens.register(registry)
    ca.register(registry)
    sealstate.register(registry)
    acl.register(registry)
    authstate.register(registry)
    transitstate.register(registry)
    pkistate.register(registry)
    secretsstate.register(registry)
    auditstate.register(registry)
    return registry


# Methods a node in no cluster may call (it has no certificate yet), and methods
# only server certificates may call.
OPEN_METHODS = frozenset({"cluster.join", "cluster.discover", "cluster.ca", "cluster.join_refused"})
SERVER_METHODS = frozenset(
    {"seal.share", "cluster.conf_change", "cluster.transfer", "gossip.rotate"}
)


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
        self.vault_http: Any = None
        self.root_token: str | None = None
        self._bootstrap_snapshot: Snapshot | None = None
        self.barrier = Barrier()
        self._genesis_hard_state = HardState()
        self._bootstrap_lines: list[str] = []
        self._rpc_started = False
        self.ignored_raft = 0  # messages from learners with a term above ours
        self.credentials = Credentials(self)
        self.unsealer = Unsealer(self)
        self.ring = Ring(self)
        self.autopilot = Autopilot(self)
        self.secrets = SecretsService(self)

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
            node_id=ident.id,
            cluster_id=ident.cluster_id,
            local_host=cfg.bind,
            authenticate=self.credentials.authenticate,
        )
        self.membership = Membership(self)

        mode = "restart"
        if fresh:
            if cfg.join:
                mode = "join"
            elif cfg.bootstrap_expect > 1:
                mode = "expect"
                await self._start_rpc(tls=False)  # discovery only: no certificate yet
                await self.membership.discover_and_bootstrap()
                if self.cfg.join:  # found a cluster, or another server bootstraps it
                    mode = "join"
            else:
                mode = "bootstrap"
            if mode == "join":
                await self.membership.join_cluster()
            elif self._bootstrap_snapshot is None:
                self.bootstrap()
            if self._rpc_started:
                # Discovery stayed served while we joined, so the others could count
                # us; now the listener becomes the mutual-TLS one.
                await self.rpc.close()
                self._rpc_started = False
            if self._bootstrap_snapshot is not None:
                st = StoredState(self._genesis_hard_state, self._bootstrap_snapshot, [])
        elif not self.credentials.tls.has_cert:
            raise ConfigError(
                f"{data_dir} holds Raft state but no node certificate (tls/); "
                "was it copied without its tls directory?"
            )
        await self._start_rpc(tls=True)
        await self.ring.start()

        if cfg.server and self.barrier.sealed:
            self.unsealer.unseal_locally(st.entries)
        core = Raft(
            RaftConfig(id=ident.id, election_tick=cfg.election_ticks, heartbeat_tick=1),
            random.Random(secrets.randbits(64)),
            hard_state=st.hard_state,
            snapshot=st.snapshot,
            entries=st.entries,
            applied=st.snapshot.meta.index if st.snapshot else 0,
        )
        if not cfg.server or self.barrier.sealed:
            core.set_campaign_allowed(False)  # a sealed server votes but never leads
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
        if core.conf.voters == {ident.id} and cfg.server and not self.barrier.sealed:
            # A single-server cluster need not wait out an election timeout.
            await self.node.run_op(lambda c: c.campaign())

        self.http = await start_http(self)
        if cfg.vault_port >= 0:
            from stack.api.compat import vault as vault_api

            self.vault_http = await start_http(self, vault_api.make_app(self), cfg.vault_port)
        self._spawn(self.membership.run(mode))
        self._spawn(self.ring.run())
        self._spawn(self.autopilot.run())
        self._spawn(self.secrets.run())
        self._spawn(self.unsealer.run())
        self._spawn(self.credentials.run())
        log.info(
            "node started",
            name=ident.name,
            id=ident.id,
            mode=mode,
            http=f"{cfg.bind}:{self.http_port}",
            rpc=f"{cfg.bind}:{self.rpc.port}",
        )
        self._out(
            f"stack node {ident.name} ({mode}): API on {self.http_scheme}://{cfg.bind}:{self.http_port}"
        )
        for line in self._bootstrap_lines:
            self._out(line)
        self._bootstrap_lines = []

    async def _start_rpc(self, *, tls: bool) -> None:
        creds = self.credentials
        self.rpc = RpcServer(
            node_id=self.ident.id,
            cluster_id=self.ident.cluster_id,
            on_raft=self._step,
            on_request=self._on_request,
            open_methods=OPEN_METHODS if tls else frozenset({"cluster.discover"}),
            server_methods=SERVER_METHODS,
            ssl=creds.tls.server_context() if tls else None,
            authenticate=creds.authenticate if tls else None,
        )
        if tls:
            self.transport.ssl = creds.tls.client_context()
        await self.rpc.start(self.cfg.bind, self.cfg.rpc_port)
        self._rpc_started = True

    def _step(self, msg: AnyMessage) -> None:
        """A message from a learner (possibly a client node) never raises our term:
        a learner never campaigns, so a higher term from one is a bug or an attack,
        and obeying it would depose a healthy leader."""
        core = self.node.core
        if msg.term > core.term and msg.frm in core.log.conf().learners:
            self.ignored_raft += 1
            return
        self.node.step(msg)

    def unapplied_tail(self) -> list[Entry]:
        """Entries we hold past what we applied. After a full stop nothing commits
        until a leader exists, and the persisted commit index may lag the log:
        start-up duties that must not wait for a leader read from here."""
        raft_log = self.node.core.log
        lo, hi = self.node.applied + 1, raft_log.last_index()
        if hi < lo or lo < raft_log.first_index():
            return []
        return raft_log.slice(lo, hi, 1 << 30)

    def commands_in(self, entries: Iterable[Entry]) -> Iterator[Command]:
        """The well-formed commands among `entries` (no-ops, configuration changes
        and undecodable payloads skipped)."""
        for entry in entries:
            if entry.type is EntryType.NORMAL and entry.data:
                try:
                    yield self.registry.decode(entry.data, entry.index)
                except CorruptEntry:
                    continue

    @property
    def rpc_port(self) -> int:
        return self.rpc.port if self._rpc_started else self.cfg.rpc_port

    @property
    def http_scheme(self) -> str:
        return "http" if _is_loopback(self.cfg.bind) else "https"

    @property
    def http_port(self) -> int:
        return int(self.http.port) if self.http is not None else self.cfg.http_port

    def bootstrap(self, *, join_secret: str = "") -> None:
        """A new cluster with this node as its one voter: the CA, the seal, the root
        token and the configuration, written together as the genesis snapshot at
        index 1, last, so a crash before it leaves a fresh data dir that bootstraps
        anew (overwriting the files written before). The recovery shares and the
        join token are printed once and never stored."""
        me = self.ident.id
        cluster_id = secrets.token_hex(8)
        self.ident = self.ident.with_cluster(cluster_id)
        self.set_cluster_id(cluster_id)
        gen = sealing.genesis(me)
        self.unsealer.seal.set_unsealed(gen.row, gen.root, gen.keyring)
        self.unsealer.write_local_share(1, gen.local_share)
        secret = join_secret or secrets.token_urlsafe(24)
        ca_body = self.credentials.genesis(cluster_id, join_secret=secret)
        pub = self.credentials.node_public_key()
        self.root_token = tokens.new_secret()
        reg = self.registry
        commands = [
            sealstate.encode_epoch(reg, gen.row),
            ca.encode_init(
                reg, root=ca_body["root"], join_secret=ca_body["join"], gossip_key=ca_body["gossip"]
            ),
            ca.encode_node_key(reg, me, pub),
            tokens.encode_token_set(
                reg,
                secret_hash=tokens.hash_secret(self.root_token),
                accessor="root",
                policies=["root"],
            ),
            # Vault's dev default: a KV v2 engine at secret/.
            secretsstate.encode_mount_enable(
                reg,
                "secret/",
                version=2,
                now=time.time(),
                accessor="kv_" + secrets.token_hex(4),
                description="key/value secret storage",
            ),
        ]
        ctx = ApplyContext(1, 1, self.store)
        for data in commands:
            cmd = reg.decode(data, 1)
            spec = reg.lookup(cmd.type_id)
            assert spec is not None
            spec.apply(ctx, cmd.body)
        self.store.advance(1)
        identity.save(Path(self.cfg.data_dir), self.ident)
        self._save_root_token(self.root_token)
        snap = Snapshot(SnapshotMeta(1, 1, ConfState(voters=frozenset({me}))), self.fsm.snapshot())
        self._genesis_hard_state = HardState(term=1, vote=0, commit=1)
        self.storage.save(snapshot=snap, hard_state=self._genesis_hard_state)  # the commit point
        self._bootstrap_snapshot = snap
        self._bootstrap_lines = [
            f"root token: {self.root_token}",
            f"join token: {self.credentials.join_token()}",
            f"recovery shares ({gen.row['recovery_threshold']} of "
            f"{gen.row['recovery_shares']} unseal a cluster that lost its quorum; "
            "store them apart, they are not shown again):",
            *(f"recovery share: {r}" for r in gen.recovery_shares),
        ]

    def set_cluster_id(self, cluster_id: str) -> None:
        # (Before the TLS listener starts there is no RPC server yet: it takes the id then.)
        if self._rpc_started:
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
        if self.vault_http is not None:
            await self.vault_http.close()
        self.secrets.auditing.close()
        await self.ring.stop()
        await self.node.stop()
        await self.rpc.close()
        await self.transport.close()
        self.storage.close()
        self._stopped.set()
        log.info("node stopped", name=self.ident.name)

    async def _transfer_away(self, timeout: float) -> None:
        """Hand leadership to the most caught-up voter; if it does not take over
        (it may be sealed, and a sealed server never campaigns), try the next."""
        status = self.node.status()
        candidates = sorted(
            (
                (p.match, nid)
                for nid, p in status.progress.items()
                if nid != self.ident.id and nid in status.conf.voters
            ),
            reverse=True,
        )
        if not candidates:
            return
        deadline = time.monotonic() + timeout
        each = timeout / len(candidates)
        for _, target in candidates:
            try:
                await self.node.run_op(functools.partial(_transfer_to, target))
            except (RaftError, ValueError) as e:
                log.warning("leadership transfer failed", error=str(e))
                return
            until = min(time.monotonic() + each, deadline)
            while self.node.role is Role.LEADER and time.monotonic() < until:
                await asyncio.sleep(0.02)
            if self.node.role is not Role.LEADER:
                return
            log.info("leadership transfer not taken; trying another voter", target=target)
        log.warning("leadership transfer failed", error="no voter took over in time")

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
                result = WriteResult(bool(body["ok"]), int(body["index"]), body.get("data"))
                # Read your writes: the caller's next request here sees this one.
                remaining = max(deadline - time.monotonic(), 0.5)
                try:
                    await asyncio.wait_for(self.node.wait_applied(result.index), remaining)
                except TimeoutError:
                    log.info("forwarded write committed; not applied here yet", index=result.index)
                return result
            except RpcError as e:
                if e.code == "connection_lost":
                    # The leader may have committed it before the connection dropped.
                    raise OutcomeUnknown(f"forwarded write: {e.message}") from None
                if e.code not in ("not_leader", "dropped", "no_leader", "unavailable"):
                    raise from_rpc(e) from None
            except RETRYABLE:
                pass
            if time.monotonic() + delay > deadline:
                raise NoLeader("no leader could commit the write in time; retry later")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def read_barrier(self, timeout: float = 5.0) -> int:
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
                    raise from_rpc(e) from None
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
                return {"ok": result.ok, "index": result.index, "data": result.data}
            if method == "raft.read_index":
                if self.node.role is not Role.LEADER:
                    raise RpcError("not_leader", str(self.node.leader))
                return await asyncio.wait_for(self.node.read_index(), 5.0)
            if method == "seal.share":
                return self.unsealer.handle_share_request(peer_id)
            if method == "cluster.ca":
                if self.barrier.sealed:
                    return await self._to_leader(method, body)
                return self.credentials.handle_ca_probe(body)
            if method == "gossip.keyring":
                if self.barrier.sealed or not self.cfg.server:
                    raise RpcError("unavailable", "sealed or client node; ask another server")
                return self.ring.handle_keyring_request()
            if method == "gossip.rotate":
                if self.node.role is not Role.LEADER:
                    raise RpcError("not_leader", str(self.node.leader))
                return await self.ring.rotate()
            if method == "secrets.request":
                return await self.secrets.handle_forwarded(body)
            if method == "substrate.report":
                return substrate.report(self)
            if method == "ca.renew":
                if self.barrier.sealed or not self.cfg.server:
                    raise RpcError("unavailable", "sealed or client node; ask the leader")
                return self.credentials.handle_renew(peer_id, body)
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
        except (Unavailable, NoLeader) as e:
            raise RpcError("unavailable", str(e)) from None
        except Conflict as e:
            raise RpcError("conflict", str(e)) from None
        except NotFound as e:
            raise RpcError("not_found", str(e)) from None

    async def _to_leader(self, method: str, body: Any) -> Any:
        leader = self.node.leader
        if not leader or leader == self.ident.id:
            raise RpcError("unavailable", "this node is sealed and there is no leader to ask")
        return await self.transport.request(leader, method, body, 10.0)

    async def transfer_away_if_leader(self) -> None:
        if self.node.role is Role.LEADER:
            log.warning("sealed leader hands leadership away")
            await self._transfer_away(timeout=3.0)

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
            "sealed": self.barrier.sealed,
            "seal": self.unsealer.status(),
            "members": members,
            "ring": self.ring.stats(),
            "stats": {
                "readies": self.node.stats.readies,
                "syncs": self.node.stats.syncs,
                "entries_persisted": self.node.stats.entries_persisted,
                "entries_applied": self.node.stats.entries_applied,
                "messages_sent": self.node.stats.messages_sent,
                "snapshots_taken": self.node.stats.snapshots_taken,
                "snapshots_installed": self.node.stats.snapshots_installed,
                "rpc_dropped": self.transport.dropped,
                "rpc_sessions": self.transport.sessions,
                "raft_ignored_from_learners": self.ignored_raft,
                "cert_renewals": self.credentials.renewals,
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


def _transfer_to(target: int, core: Raft) -> None:
    core.transfer_leadership(target)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def from_rpc(e: RpcError) -> StackError:
    if e.code == "bad_request":
        return BadRequest(e.message)
    if e.code == "not_found":
        return NotFound(e.message)
    if e.code == "conflict":
        return Conflict(e.message)
    if e.code == "unavailable":
        return Unavailable(e.message)
    if e.code == "outcome_unknown":
        return StackError(f"outcome unknown: {e.message}")
    return StackError(f"{e.code}: {e.message}")
