"""This node's member of the cluster's one gossip ring, and the ring's one keyring.

The ring is named by the node id and tagged with what others need to know about
us (name, role, datacenter, RPC and HTTP addresses, version, keyring version).
Its failure detector is the cluster's only one: the leader's autopilot reads
`state()` and writes node status and voter changes through Raft.

The gossip keyring lives in the replicated `ca` table as barrier ciphertext, so
nothing in a data directory holds it in plaintext. A node gets the keys:
- at join, in the join answer (over mutual TLS);
- when unsealed and a server, by decrypting the table's row;
- otherwise (a client, or a server still sealed) by asking a server over mutual
  TLS (`gossip.keyring`), whenever its replica shows a newer keyring version.
The sockets are bound at start with a throwaway key, so a busy port fails the
start at once; the ring is joined when the real keys arrive.

Rotation (`stack keyring rotate`, on the leader) writes three keyring versions:
the new key installed, then made primary, then the old key removed; before each
next step every live member must advertise the version in its `kr` tag, so no
member is ever sent a packet it cannot open.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

import stack
from stack.config import parse_hostport
from stack.credentials import GOSSIP_AAD
from stack.errors import Conflict, NoLeader, Sealed, StackError, Unavailable
from stack.gossip.config import GossipConfig
from stack.gossip.core import Gossip
from stack.gossip.keyring import GossipKeyring, key_id
from stack.gossip.transport import GossipTransport, join_addr
from stack.gossip.types import EventKind, Member, State
from stack.net.rpc import RpcError
from stack.raft.types import Role
from stack.state import ca, nodes

if TYPE_CHECKING:
    from stack.agent import Agent

log = structlog.get_logger("stack.ring")

REJOIN_INTERVAL = 5.0  # while we see no other live member, join the seeds again
KEY_CHECK_INTERVAL = 5.0  # how often the replica's keyring version is compared to ours
CONFIRM_TIMEOUT = 60.0  # a rotation step waits this long for every member to confirm


@dataclass(frozen=True, slots=True)
class KeySet:
    keys: list[bytes]
    primary: int
    version: int

    def to_wire(self) -> dict[str, Any]:
        return {"keys": self.keys, "primary": self.primary, "version": self.version}

    @classmethod
    def from_wire(cls, body: Any) -> KeySet:
        if not isinstance(body, dict):
            raise ValueError("keyring must be a map")
        keys = [bytes(k) for k in body["keys"]]
        primary, version = int(body["primary"]), int(body["version"])
        if not keys or not 0 <= primary < len(keys) or any(len(k) != 32 for k in keys):
            raise ValueError("malformed keyring")
        return cls(keys, primary, version)


def profile(name: str) -> GossipConfig:
    return {"lan": GossipConfig.lan, "wan": GossipConfig.wan, "local": GossipConfig.local}[name]()


class Ring:
    def __init__(self, agent: Agent, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.agent = agent
        self.clock = clock
        self.core: Gossip | None = None
        self.transport: GossipTransport | None = None
        self.keyring: GossipKeyring | None = None
        self.version = 0  # keyring version in use; 0 until the real keys arrived
        self.started_at: float | None = None
        self.joined_keys: KeySet | None = None  # handed over in the join answer
        self.joined_seeds: list[str] = []
        self.changed = asyncio.Event()  # a member joined, failed, left or came back
        self._placeholder = secrets.token_bytes(32)
        self._syncing: asyncio.Task[None] | None = None
        self._watch: Any = None

    # ------------------------------------------------------------ identity
    @property
    def ring_id(self) -> str:
        """The ring this node is in: one per cluster, the LAN ring."""
        return f"{self.agent.ident.cluster_id}/lan"

    def address(self) -> str:
        return join_addr(self.agent.cfg.advertise_addr, self.agent.cfg.gossip_port)

    def tags(self) -> dict[str, str]:
        a = self.agent
        m = a.membership
        return {
            "name": a.ident.name,
            "role": "server" if a.cfg.server else "client",
            "dc": a.ident.datacenter,
            "rpc": m.my_rpc(),
            "http": m.my_http(),
            "ver": stack.__version__,
            "kr": str(self.version),
            "ring": self.ring_id,
        }

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind the ring's sockets (a busy port fails the start here)."""
        a = self.agent
        now = self.clock()
        self.keyring = GossipKeyring([self._placeholder], self._placeholder)
        self.core = Gossip(
            str(a.ident.id),
            self.address(),
            self.tags(),
            profile(a.cfg.gossip_profile),
            random.Random(secrets.randbits(64)),
            now,
        )
        self.transport = GossipTransport(
            self.core, self.keyring, bind=a.cfg.bind, port=a.cfg.gossip_port, clock=self.clock
        )
        self.transport.on_flush = self._on_flush
        try:
            await self.transport.start()
        except OSError as e:
            raise StackError(
                f"cannot bind the gossip port {a.cfg.bind}:{a.cfg.gossip_port}: {e.strerror}"
            ) from None
        self.started_at = now
        self._watch = a.store.watch(ca.CA_TABLE, "gossip")
        self._watch.add_callback(lambda _index: self._schedule_sync())

    async def run(self) -> None:
        """Get the keys, join the ring, then keep keys and membership current."""
        await self._sync_keys()
        self._join()
        last_join = self.clock()
        while True:
            await asyncio.sleep(1.0)
            now = self.clock()
            if now - last_join >= REJOIN_INTERVAL and self.alive_others() == 0:
                self._join()
                last_join = now
            row = ca.gossip_keyring(self.agent.store)
            if row is not None and row.version > self.version:
                self._schedule_sync()

    async def leave(self, timeout: float = 3.0) -> None:
        """Tell the ring we are leaving on purpose (members mark us left, not down)."""
        core, transport = self.core, self.transport
        if core is None or transport is None or self.version == 0:
            return
        core.leave(self.clock())
        transport.poke()
        deadline = self.clock() + timeout
        while core.pending_broadcasts() and self.clock() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.close()
        if self._syncing is not None:
            self._syncing.cancel()
        if self.transport is not None:
            await self.transport.stop()

    # ------------------------------------------------------------ membership
    def seeds(self) -> list[str]:
        me = str(self.agent.ident.id)
        found = [n.gossip for n in nodes.list_nodes(self.agent.store)[0] if n.id != me]
        return list(dict.fromkeys(s for s in (*found, *self.joined_seeds) if s))

    def _join(self) -> None:
        if self.core is None or self.transport is None or self.version == 0:
            return
        seeds = [s for s in self.seeds() if s != self.address()]
        if seeds:
            self.core.join(seeds, self.clock())
            self.transport.poke()

    def state(self, node_id: int) -> State | None:
        """What the ring says of a node (None: not a member we know)."""
        m = self.core.member(str(node_id)) if self.core is not None else None
        return None if m is None else m.state

    def members(self) -> list[Member]:
        return self.core.members() if self.core is not None else []

    def alive_others(self) -> int:
        me = str(self.agent.ident.id)
        return sum(1 for m in self.members() if m.name != me and m.state is State.ALIVE)

    def _on_flush(self) -> None:
        core = self.core
        if core is None:
            return
        events = core.events()
        if not events:
            return
        for ev in events:
            m = ev.member
            name = m.tags.get("name", m.name)
            if ev.kind in (EventKind.FAILED, EventKind.LEAVE, EventKind.RECOVER):
                log.warning(f"ring: member {ev.kind.value}", member=name, id=m.name)
            elif ev.kind is EventKind.JOIN:
                log.info("ring: member joined", member=name, id=m.name)
            if ev.kind is not EventKind.FAILED and ev.kind is not EventKind.LEAVE:
                self._learn_server(m)
        self.changed.set()

    def _learn_server(self, m: Member) -> None:
        """Clients (and anyone whose table lacks the address) find servers here."""
        a = self.agent
        if m.tags.get("role") != "server" or m.tags.get("ring") != self.ring_id:
            return
        try:
            nid = int(m.name)
            host, port = parse_hostport(m.tags.get("rpc", ""), 7481)
        except (ValueError, StackError):
            return
        row, _ = nodes.get_node(a.store, m.name)
        if (
            nid != a.ident.id
            and (row is None or not row.address)
            and not ca.is_revoked(a.store, nid)
        ):
            a.transport.set_peer(nid, host, port)

    # ------------------------------------------------------------ keys
    def _schedule_sync(self) -> None:
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.get_running_loop().create_task(self._sync_keys())

    async def _sync_keys(self) -> None:
        """Bring our keyring up to the newest version we can get (retrying)."""
        delay = 0.2
        while True:
            row = ca.gossip_keyring(self.agent.store)
            want = row.version if row is not None else 1
            ks = self._local_keys()
            if ks is None or ks.version < want:
                ks = await self._fetch_keys(want) or ks
            if ks is not None and ks.version >= want:
                if ks.version > self.version:
                    self._apply(ks)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _local_keys(self) -> KeySet | None:
        a = self.agent
        joined = self.joined_keys
        if a.cfg.server and not a.barrier.sealed:
            with contextlib.suppress(Sealed, StackError):
                ks = self.decrypt_keys()
                if joined is None or ks.version >= joined.version:
                    return ks
        return joined

    def decrypt_keys(self) -> KeySet:
        """The keyring from the replicated table (this node must be unsealed)."""
        a = self.agent
        row = ca.gossip_keyring(a.store)
        if row is None:
            raise StackError("no gossip keyring in the log yet")
        if a.barrier.sealed:
            raise Sealed("sealed: the gossip keyring is behind the barrier")
        keys = [a.barrier.decrypt(k, GOSSIP_AAD) for k in row.keys]
        return KeySet(keys, row.primary, row.version)

    async def _fetch_keys(self, want: int) -> KeySet | None:
        """Ask the leader, then every other server, for the keyring."""
        a = self.agent
        me = a.ident.id
        servers = [int(n.id) for n in nodes.list_nodes(a.store)[0] if n.role == "server"]
        order = list(dict.fromkeys(x for x in (a.node.leader, *servers) if x and x != me))
        for nid in order:
            try:
                body = await a.transport.request(nid, "gossip.keyring", None, 5.0)
                ks = KeySet.from_wire(body)
            except (RpcError, OSError, KeyError, TypeError, ValueError) as e:
                log.debug("gossip keyring fetch failed", peer=nid, error=str(e))
                continue
            if ks.version >= want:
                return ks
        return None

    def _apply(self, ks: KeySet) -> None:
        kr, core, transport = self.keyring, self.core, self.transport
        if kr is None or core is None or transport is None:
            return
        first = self.version == 0
        for k in ks.keys:
            kr.install(k)
        kr.use(ks.keys[ks.primary])
        kr.retain(ks.keys)
        self.version = ks.version
        log.info(
            "gossip keyring in use",
            version=ks.version,
            primary=key_id(ks.keys[ks.primary]).hex(),
            keys=len(ks.keys),
        )
        if first:
            self.started_at = self.clock()
        core.update_tags(self.tags(), self.clock())
        transport.poke()
        if first:
            self._join()

    def handle_keyring_request(self) -> dict[str, Any]:
        """`gossip.keyring` from a member (any role, over mutual TLS)."""
        return self.decrypt_keys().to_wire()

    # ------------------------------------------------------------ rotation (leader)
    async def rotate(self, progress: Callable[[str], None] = lambda _s: None) -> dict[str, Any]:
        a = self.agent
        if a.node.role is not Role.LEADER:
            raise NoLeader("keyring rotation runs on the leader")
        current = self.decrypt_keys()
        old = current.keys[current.primary]
        new = secrets.token_bytes(32)
        new_ct = a.barrier.encrypt(new, GOSSIP_AAD)
        old_ct = a.barrier.encrypt(old, GOSSIP_AAD)
        v = current.version
        steps = [
            ("install", [old_ct, new_ct], 0),
            ("use", [old_ct, new_ct], 1),
            ("remove", [new_ct], 0),
        ]
        for i, (what, keys, primary) in enumerate(steps, start=1):
            result = await a.apply(
                ca.encode_gossip_keyring(a.registry, keys=keys, primary=primary, version=v + i)
            )
            if not result.ok:
                raise Conflict("the gossip keyring changed meanwhile (another rotation?)")
            progress(f"{what}: version {v + i} written; waiting for every live member")
            await self.await_version(v + i)
            progress(f"{what}: every live member confirmed version {v + i}")
        return {"version": v + 3, "primary": key_id(new).hex(), "removed": key_id(old).hex()}

    def lagging(self, version: int) -> list[str]:
        out = [] if self.version >= version else [self.agent.ident.name]
        me = str(self.agent.ident.id)
        for m in self.members():
            if m.name == me or m.state not in (State.ALIVE, State.SUSPECT):
                continue
            try:
                kr = int(m.tags.get("kr", "0"))
            except ValueError:
                kr = 0
            if kr < version:
                out.append(m.tags.get("name", m.name))
        return out

    async def await_version(self, version: int, timeout: float = CONFIRM_TIMEOUT) -> None:
        deadline = self.clock() + timeout
        while True:
            lagging = self.lagging(version)
            if not lagging:
                return
            if self.clock() > deadline:
                raise Unavailable(
                    f"members {', '.join(sorted(lagging))} did not confirm gossip keyring "
                    f"version {version} within {timeout:.0f} s; the rotation stopped there "
                    "(every member can still read every other): run it again"
                )
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------ status
    def stats(self) -> dict[str, Any]:
        core, t, kr = self.core, self.transport, self.keyring
        counts = {s.name.lower(): 0 for s in State}
        for m in self.members():
            counts[m.state.name.lower()] += 1
        return {
            "ring_id": self.ring_id,
            "address": self.address(),
            "members": counts,
            "keyring_version": self.version,
            "primary_key_id": kr.primary_id.hex() if kr is not None and self.version else "",
            "key_ids": [k.hex() for k in kr.key_ids()] if kr is not None and self.version else [],
            "health_score": core.local_health() if core is not None else 0,
            "suspicions": core.suspicions if core is not None else 0,
            "refutations": core.refutations if core is not None else 0,
            "received": t.received if t is not None else 0,
            "rejected": dict(t.rejected) if t is not None else {},
            "send_errors": t.send_errors if t is not None else 0,
        }
