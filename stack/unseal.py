"""Auto-unseal: a restarted server collects a quorum of root-key shares from the
current servers, which authenticate it by its node certificate; the leader
re-keys the seal whenever the voter set changes. The pure parts are in
`stack/vault/seal.py`.

A sealed server replicates and votes but never campaigns, and a sealed leader
hands leadership away: a leader must be able to encrypt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import structlog

from stack.errors import BadRequest, Sealed, StackError
from stack.net.rpc import RpcError
from stack.net.tls import write_private
from stack.raft.errors import RaftError
from stack.raft.types import Entry, Role
from stack.state import ca
from stack.state import seal as sealstate
from stack.vault import seal as sealing
from stack.vault.seal import Seal, SealError

if TYPE_CHECKING:
    from stack.agent import Agent

log = structlog.get_logger("stack.unseal")

ROUND_INTERVAL = 0.5


class Unsealer:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.seal = Seal(agent.barrier)
        self.removed: set[int] = set()  # voters removed since start, to revoke
        self._last_reason = ""
        self._watch: Any = None

    # ------------------------------------------------------------ the local share file
    @property
    def share_path(self) -> Path:
        cfg = self.agent.cfg
        return Path(cfg.seal_key_file) if cfg.seal_key_file else Path(cfg.data_dir) / "unseal-share"

    def write_local_share(self, epoch: int, share: bytes) -> None:
        blob = msgpack.packb(
            {"cluster": self.agent.ident.cluster_id, "epoch": epoch, "share": share}
        )
        write_private(self.share_path, blob)
        log.warning(
            "single-server cluster: its unseal share is kept in a local file, so this "
            "machine's disk alone unseals the cluster (the dev trade-off; see "
            "docs/security.md, or use --seal-key-file to keep it elsewhere)",
            path=str(self.share_path),
        )

    def _local_share(self) -> tuple[int, bytes] | None:
        try:
            raw = msgpack.unpackb(self.share_path.read_bytes())
            if raw["cluster"] != self.agent.ident.cluster_id:
                return None
            return int(raw["epoch"]), bytes(raw["share"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as e:
            log.error(
                "unseal share file is unreadable; ignoring it",
                path=str(self.share_path),
                error=type(e).__name__,
            )
            return None

    def _drop_stale_local_share(self) -> None:
        local = self._local_share()
        latest = sealstate.latest_epoch(self.agent.store)
        if local is not None and latest is not None and local[0] < int(latest["epoch"]):
            # The epoch it opened is gone: a copy of this disk must not unseal alone.
            self.share_path.unlink(missing_ok=True)
            log.info("removed the local unseal share of a past epoch", epoch=local[0])

    # ------------------------------------------------------------ shares
    def known_rows(self) -> list[dict[str, Any]]:
        """Seal epochs applied here, plus those still in the unapplied tail of our log.

        After a full cluster stop every server is sealed, so none campaigns and the
        commit index cannot move past what each persisted, which may predate the
        last re-key. Epoch rows are self-checking (a combined key must match the
        row's check value, and only a leader holding the root key could write
        one), so reading them from the log before they are applied is safe."""
        return self.rows_with(self.agent.unapplied_tail())

    def rows_with(self, entries: Iterable[Entry]) -> list[dict[str, Any]]:
        rows = sealstate.epochs(self.agent.store)
        for cmd in self.agent.commands_in(entries):
            try:
                if cmd.type_id == sealstate.SEAL_EPOCH:
                    rows.append(sealstate.validate_epoch(cmd.body))
                elif cmd.type_id == sealstate.SEAL_KEYRING and isinstance(cmd.body, dict):
                    # A keyring rotation not applied yet: the same epoch, newer keyring.
                    base = next((r for r in rows if r["epoch"] == cmd.body.get("epoch")), None)
                    if base is not None and isinstance(cmd.body.get("keyring"), bytes):
                        version = int(cmd.body["version"])
                        rows.append(
                            dict(base, keyring=cmd.body["keyring"], keyring_version=version)
                        )
            except (TypeError, KeyError, ValueError):
                continue
        return rows

    def unseal_locally(self, entries: Iterable[Entry]) -> bool:
        """At start-up, before any peer is reachable: enough with our own shares?
        (A single server's local share file, typically.)"""
        rows = self.rows_with(entries)
        if self.seal.try_shares(rows, self.own_shares(rows)):
            log.info("unsealed", via="own share", epoch=self.seal.epoch)
            if self._local_share() is not None:
                log.warning(
                    "single-server cluster: unsealed from the local share file alone; "
                    "whoever has this disk has the secrets (docs/security.md; "
                    "--seal-key-file keeps the share elsewhere)",
                    path=str(self.share_path),
                )
            return True
        return False

    def own_shares(self, rows: list[dict[str, Any]] | None = None) -> dict[int, list[bytes]]:
        a = self.agent
        key = a.credentials.tls.key_pem()
        out: dict[int, list[bytes]] = {}
        for row in self.known_rows() if rows is None else rows:
            share = sealing.own_share(row, a.ident.id, key)
            if share is not None:
                out.setdefault(int(row["epoch"]), []).append(share)
        local = self._local_share()
        if local is not None:
            out.setdefault(local[0], []).append(local[1])
        return out

    def handle_share_request(self, peer_id: int) -> dict[str, Any]:
        """`seal.share` (server certificates only): our shares of every kept epoch,
        for a current voter. Works while we are sealed too: that is how a whole
        cluster comes back by itself."""
        a = self.agent
        if peer_id not in a.node.status().conf.voters:
            raise BadRequest(f"node {peer_id} is not a voter; no share for it")
        known = self.known_rows()
        shares = self.own_shares(known)
        rows = [sealing.public_row(r) for r in known]
        return {
            "shares": [[e, s] for e, ss in shares.items() for s in ss],
            "rows": rows,
        }

    # ------------------------------------------------------------ unsealing
    async def attempt(self) -> bool:
        a = self.agent
        rows = self.known_rows()
        shares = self.own_shares(rows)
        me = a.ident.id
        peers = [n for n in sorted(a.node.status().conf.voters) if n != me]
        replies = await asyncio.gather(
            *(a.transport.request(p, "seal.share", None, 2.0) for p in peers),
            return_exceptions=True,
        )
        for reply in replies:
            if isinstance(reply, BaseException):
                continue
            try:
                for epoch, share in reply["shares"]:
                    if isinstance(share, bytes):
                        shares.setdefault(int(epoch), []).append(share)
                rows.extend(dict(r, shares={}) for r in reply["rows"])
            except (KeyError, TypeError, ValueError):
                log.warning("malformed seal.share reply ignored")
        try:
            ok = self.seal.try_shares(rows, shares)
        except Exception as e:  # a bad row from a peer must not stop unsealing
            log.warning("unseal attempt failed", error=f"{type(e).__name__}: {e}")
            return False
        if ok:
            await self._unsealed("quorum of shares")
        elif self.seal.reason != self._last_reason:
            self._last_reason = self.seal.reason
            log.info("sealed", reason=self.seal.reason)
        return ok

    async def recovery_share(self, text: str) -> dict[str, Any]:
        """`stack operator unseal`: one recovery share at a time."""
        if not self.seal.sealed:
            return self.status()
        try:
            share = sealing.decode_recovery_share(text)
            done = self.seal.add_recovery_share(self.known_rows(), share)
        except SealError as e:
            raise BadRequest(str(e)) from None
        if done:
            await self._unsealed("recovery shares")
        return self.status()

    async def seal_now(self) -> None:
        """`POST /v1/sys/seal`: forget the root key. A leader hands leadership away;
        auto-unseal brings the node back once its peers give it their shares."""
        self.seal.seal_now()
        self._last_reason = ""
        log.warning("sealed by an operator request")
        await self.agent.node.run_op(lambda core: core.set_campaign_allowed(False))
        await self.agent.transfer_away_if_leader()

    async def _unsealed(self, how: str) -> None:
        a = self.agent
        log.info("unsealed", via=how, epoch=self.seal.epoch)
        self._last_reason = ""
        if a.cfg.server:
            await a.node.run_op(lambda core: core.set_campaign_allowed(True))

    def status(self) -> dict[str, Any]:
        # The newest epoch we know of, applied or not: a restarted sealed server may
        # not have applied the re-keys in its log, and waits for that epoch's shares.
        rows = self.known_rows()
        latest = max(rows, key=lambda r: int(r["epoch"])) if rows else None
        st = self.seal.status(
            recovery_needed=int(latest["recovery_threshold"]) if latest else 0
        ).to_json()
        if not self.agent.cfg.server:
            st["reason"] = "client nodes hold no share and never unseal" if st["sealed"] else ""
        if latest is not None:
            st["shares_needed"] = st["shares_needed"] or int(latest["threshold"])
            st["voters"] = len(latest["voters"])
            st["recovery_shares"] = int(latest["recovery_shares"])
        return st

    # ------------------------------------------------------------ duties
    async def run(self) -> None:
        a = self.agent
        self._watch = a.store.watch(sealstate.SEAL_TABLE, "", prefix=True)
        loop = asyncio.get_running_loop()
        # After the apply, not inside it: a failure here must not stop the FSM.
        self._watch.add_callback(lambda _i: loop.call_soon(self._on_seal_table))
        while True:
            try:
                if self.seal.sealed and a.cfg.server:
                    await self.attempt()
                if a.node.role is Role.LEADER:
                    if self.seal.sealed:
                        await a.transfer_away_if_leader()
                    else:
                        await self._leader_duties()
            except (StackError, RaftError, RpcError, TimeoutError, SealError) as e:
                log.info("seal duty deferred", error=str(e))
            await asyncio.sleep(ROUND_INTERVAL)

    def _on_seal_table(self) -> None:
        try:
            if self.seal.follow(sealstate.epochs(self.agent.store)):
                log.info("seal epoch followed", epoch=self.seal.epoch)
            if not self.seal.sealed:
                self._drop_stale_local_share()
        except Exception as e:  # a row we cannot open: stay as we are, say so
            log.error("could not follow the seal table", error=f"{type(e).__name__}: {e}")

    async def _leader_duties(self) -> None:
        a = self.agent
        for nid in sorted(self.removed):
            if not ca.is_revoked(a.store, nid):
                await a.apply(ca.encode_revoke(a.registry, nid))
                log.info("revoked the certificates of a removed node", id=nid)
            self.removed.discard(nid)
        await self._maybe_rekey()

    async def _maybe_rekey(self) -> None:
        a = self.agent
        latest = sealstate.latest_epoch(a.store)
        root = self.seal.root
        if latest is None or root is None or self.seal.epoch != int(latest["epoch"]):
            return
        voters = sorted(a.node.status().conf.voters)
        if voters == list(latest["voters"]):
            return
        keys: dict[int, bytes] = {}
        for nid in voters:
            pub = ca.node_key(a.store, nid)
            if pub is None:
                log.warning("no public key recorded for voter; re-key deferred", id=nid)
                return
            keys[nid] = pub
        rk = sealing.rekey(latest, root, a.barrier.keyring, keys)
        if rk.local_share is not None:
            # We are the single voter: keep the share before the epoch exists.
            self.write_local_share(int(rk.row["epoch"]), rk.local_share)
        result = await a.apply(sealstate.encode_epoch(a.registry, rk.row))
        await asyncio.wait_for(a.node.wait_applied(result.index), 10.0)
        log.info(
            "seal re-keyed",
            epoch=rk.row["epoch"],
            voters=len(voters),
            threshold=rk.row["threshold"],
            ok=result.ok,
        )

    async def rotate_keyring(self) -> int:
        """`stack operator rotate`: a new keyring term for new encryptions."""
        a = self.agent
        latest = sealstate.latest_epoch(a.store)
        root = self.seal.root
        if root is None or latest is None:
            raise Sealed("sealed: cannot rotate the keyring")
        keyring = a.barrier.keyring.rotated()
        body = sealstate.encode_keyring(
            a.registry,
            epoch=int(latest["epoch"]),
            keyring=keyring.wrap(root),
            version=int(latest["keyring_version"]) + 1,
        )
        result = await a.apply(body)
        await a.node.wait_applied(result.index)
        if not result.ok:
            raise StackError("keyring rotation raced a re-key; try again")
        return keyring.active
