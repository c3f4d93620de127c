"""This node's credentials and the CA duties it performs for the cluster.

- Authenticates peers by their certificates (for `net/rpc.py`): the cluster id in
  the certificate, and the deny list of removed nodes in the log.
- Keeps `tls/` in step with the log: the trusted roots, and the node's own
  certificate renewed at half its lifetime (or as soon as the CA rotated). An
  unsealed server signs for itself (it can read the CA key); others ask the
  leader over mutual TLS. Contexts reload in place, so established connections
  survive a renewal.
- Signs certificates (joins, renewals), rotates the CA with a cross-signed new
  root and retires the old root once everything it signed has expired, and
  keeps the join token's secret.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from cryptography import x509

from stack.ca import authority
from stack.ca.authority import CertError, NodeCertInfo, RootCA
from stack.errors import BadRequest, Sealed, StackError
from stack.net.rpc import AuthError, PeerAuth
from stack.net.tls import NodeTls, write_private
from stack.raft.types import Role
from stack.state import ca, nodes

if TYPE_CHECKING:
    from stack.agent import Agent

log = structlog.get_logger("stack.credentials")

TOKEN_PREFIX = "stack1"
JOIN_AAD = b"stack/ca/join"
GOSSIP_AAD = b"stack/ca/gossip"


def root_key_aad(gen: int) -> bytes:
    return f"stack/ca/root/{gen}".encode()


def parse_token(token: str) -> tuple[str, str]:
    """(CA fingerprint or "", secret). A full join token is `stack1.<fp>.<secret>`;
    any other text is taken as a bare shared secret (`--bootstrap-expect`)."""
    parts = token.strip().split(".")
    if len(parts) == 3 and parts[0] == TOKEN_PREFIX and len(parts[1]) in (0, 64):
        return parts[1].lower(), parts[2]
    return "", token.strip()


def join_proof(secret: str, nonce: bytes, roots: list[bytes]) -> bytes:
    """The server's proof that it knows the join secret, bound to the roots it sent."""
    fps = "".join(sorted(authority.fingerprint(r) for r in roots)).encode()
    return hmac.new(secret.encode(), b"stack join v1" + nonce + fps, hashlib.sha256).digest()


class Credentials:
    def __init__(self, agent: Agent, *, now: Callable[[], datetime] | None = None) -> None:
        self.agent = agent
        self.tls = NodeTls(Path(agent.cfg.data_dir) / "tls")
        self._now = now or (lambda: datetime.now(UTC))
        self._certs: dict[bytes, NodeCertInfo] = {}
        self.renewals = 0

    @property
    def lifetime(self) -> timedelta:
        return timedelta(seconds=self.agent.cfg.cert_ttl)

    # ------------------------------------------------------------ peers
    def authenticate(self, der: bytes | None) -> PeerAuth:
        if der is None:
            return PeerAuth(None, "")
        info = self._certs.get(der)
        if info is None:
            try:
                info = authority.parse_node_cert(der)
            except CertError as e:
                raise AuthError(str(e)) from None
            if len(self._certs) > 4096:
                self._certs.clear()
            self._certs[der] = info
        if info.cluster_id != self.agent.ident.cluster_id:
            raise AuthError(f"certificate of cluster {info.cluster_id}")
        if ca.is_revoked(self.agent.store, info.node_id):
            raise AuthError(f"node {info.node_id} was removed; its certificate is revoked")
        return PeerAuth(info.node_id, info.role)

    # ------------------------------------------------------------ bootstrap
    def genesis(self, cluster_id: str, *, join_secret: str) -> dict[str, Any]:
        """A new CA for a new cluster: our own certificate installed, and the ca.init
        body (root key, join secret and gossip key encrypted) for the genesis state."""
        a = self.agent
        now = self._now()
        root = authority.create_root(cluster_id=cluster_id, now=now)
        leaf = self._leaf(
            root,
            self.own_csr(),
            node_id=a.ident.id,
            name=a.ident.name,
            role=self.own_role,
            addresses=self.addresses(),
            cluster_id=cluster_id,
        )
        self.tls.install(leaf, [root.cert_pem])
        self.save_bundle([root.cert_pem])
        barrier = a.barrier
        return {
            "root": {
                "gen": 1,
                "cert": root.cert_pem,
                "key": barrier.encrypt(root.key_pem, root_key_aad(1)),
                "cross": b"",
            },
            "join": barrier.encrypt(join_secret.encode(), JOIN_AAD),
            "gossip": barrier.encrypt(secrets.token_bytes(32), GOSSIP_AAD),
        }

    @property
    def own_role(self) -> str:
        return authority.ROLE_SERVER if self.agent.cfg.server else authority.ROLE_CLIENT

    def own_csr(self) -> bytes:
        a = self.agent
        return authority.make_csr(self.tls.key_pem(), node_id=a.ident.id, name=a.ident.name)

    def node_public_key(self) -> bytes:
        return authority.public_key_pem(self.tls.key_pem())

    def addresses(self) -> list[str]:
        cfg = self.agent.cfg
        return list(dict.fromkeys(a for a in (cfg.advertise_addr, cfg.bind) if a))

    def save_bundle(self, roots: list[bytes]) -> None:
        """The roots for local CLIs and HTTPS clients (public)."""
        path = Path(self.agent.cfg.config_dir)
        path.mkdir(parents=True, exist_ok=True)
        write_private(path / "ca.crt", b"".join(roots))

    # ------------------------------------------------------------ signing (unsealed)
    def _active(self) -> tuple[ca.RootRow, RootCA]:
        store, barrier = self.agent.store, self.agent.barrier
        row = ca.active_root(store)
        if row is None:
            raise StackError("no CA in the log yet")
        if barrier.sealed:
            raise Sealed("sealed: this node cannot sign certificates")
        key = barrier.decrypt(row.key, root_key_aad(row.gen))
        return row, authority.load_root(row.cert, key)

    def sign(
        self, csr: bytes, *, node_id: int, name: str, role: str, addresses: list[str]
    ) -> bytes:
        """A node certificate chain: the leaf and, after a rotation, the cross-cert."""
        row, root = self._active()
        leaf = self._leaf(root, csr, node_id=node_id, name=name, role=role,
                          addresses=addresses, cluster_id=self.agent.ident.cluster_id)  # fmt: skip
        return leaf + row.cross

    def _leaf(self, root: RootCA, csr: bytes, *, node_id: int, name: str, role: str,
              addresses: list[str], cluster_id: str) -> bytes:  # fmt: skip
        return authority.sign_node_cert(
            root,
            csr,
            node_id=node_id,
            name=name,
            role=role,
            cluster_id=cluster_id,
            addresses=addresses,
            now=self._now(),
            lifetime=self.lifetime,
        )

    def roots(self) -> list[bytes]:
        return [r.cert for r in ca.roots(self.agent.store)]

    def join_secret(self) -> str:
        blob = ca.join_secret(self.agent.store)
        if blob is None:
            raise StackError("no join secret in the log yet")
        if self.agent.barrier.sealed:
            raise Sealed("sealed: the join secret is behind the barrier")
        return self.agent.barrier.decrypt(blob, JOIN_AAD).decode()

    def join_token(self) -> str:
        row = ca.active_root(self.agent.store)
        if row is None:
            raise StackError("no CA in the log yet")
        return f"{TOKEN_PREFIX}.{authority.fingerprint(row.cert)}.{self.join_secret()}"

    def check_join_secret(self, offered: str) -> None:
        if not hmac.compare_digest(offered.encode(), self.join_secret().encode()):
            raise BadRequest("join token refused: wrong or replaced join token")

    async def rotate_join(self) -> str:
        secret = secrets.token_urlsafe(24)
        blob = self.agent.barrier.encrypt(secret.encode(), JOIN_AAD)
        result = await self.agent.apply(ca.encode_join(self.agent.registry, blob))
        await self.agent.node.wait_applied(result.index)
        return self.join_token()

    async def rotate_ca(self) -> int:
        """A new root, cross-signed by the old one; the old one retires once every
        certificate it signed has expired (at most one lifetime from now)."""
        row, old = self._active()
        now = self._now()
        gen = row.gen + 1
        new = authority.create_root(cluster_id=self.agent.ident.cluster_id, now=now, generation=gen)
        cross = authority.cross_sign(new.cert_pem, old, now=now)
        body = {
            "gen": gen,
            "cert": new.cert_pem,
            "key": self.agent.barrier.encrypt(new.key_pem, root_key_aad(gen)),
            "cross": cross,
        }
        margin = min(timedelta(minutes=10), self.lifetime / 10)  # clock skew
        retire_after = (now + self.lifetime + margin).timestamp()
        result = await self.agent.apply(
            ca.encode_rotate(self.agent.registry, root=body, retire_after=retire_after)
        )
        if not result.ok:
            raise StackError("CA rotation raced another; try again")
        await self.agent.node.wait_applied(result.index)
        return gen

    # ------------------------------------------------------------ duties
    async def run(self) -> None:
        """Keep trust and our certificate current; on the leader, retire old roots."""
        while True:
            try:
                await self._tick()
            except (StackError, CertError, OSError) as e:
                log.warning("certificate upkeep failed; will retry", error=str(e))
            await asyncio.sleep(min(1.0, max(self.lifetime.total_seconds() / 20, 0.2)))

    async def _tick(self) -> None:
        a = self.agent
        roots = self.roots()
        if roots and sorted(roots) != sorted(self.tls.roots()):
            self.tls.install(self.tls.chain(), roots)
            self.save_bundle(roots)
            log.info("trusted roots updated", roots=len(roots))
        active = ca.active_root(a.store)
        info = self.tls.leaf_info()
        now = self._now()
        stale_issuer = active is not None and info.issuer_fingerprint_hint != _ski_hex(active.cert)
        if now >= _renew_time(info) or stale_issuer:
            await self.renew()
        if a.node.role is Role.LEADER and not a.barrier.sealed:
            for r in ca.roots(a.store):
                if r.retire_after and r.retire_after < now.timestamp():
                    await a.apply(ca.encode_retire(a.registry, r.gen))
                    log.info("retired CA root", gen=r.gen)

    async def renew(self) -> None:
        """Called only from the upkeep loop, so never twice at once."""
        a = self.agent
        csr = self.own_csr()
        if a.cfg.server and not a.barrier.sealed:
            chain = self.sign(csr, node_id=a.ident.id, name=a.ident.name, role=self.own_role,
                              addresses=self.addresses())  # fmt: skip
        else:
            leader = a.node.leader
            if not leader:
                return
            reply = await a.transport.request(
                leader, "ca.renew", {"csr": csr, "addresses": self.addresses()}, 10.0
            )
            chain = bytes(reply["chain"])
        self.tls.install(chain, self.roots() or self.tls.roots())
        self.renewals += 1
        info = self.tls.leaf_info()
        log.info(
            "node certificate renewed",
            serial=hex(info.serial)[:18],
            not_after=info.not_after.isoformat(),
        )

    # ------------------------------------------------------------ RPC
    def handle_ca_probe(self, body: Any) -> dict[str, Any]:
        """`cluster.ca` (open): the roots, and proof that we know the join secret."""
        nonce = body.get("nonce") if isinstance(body, dict) else None
        if not isinstance(nonce, bytes) or len(nonce) != 32:
            raise BadRequest("cluster.ca needs a 32-byte nonce")
        roots = self.roots()
        return {
            "cluster_id": self.agent.ident.cluster_id,
            "roots": roots,
            "proof": join_proof(self.join_secret(), nonce, roots),
        }

    def handle_renew(self, peer_id: int, body: Any) -> dict[str, Any]:
        a = self.agent
        if not isinstance(body, dict) or not isinstance(body.get("csr"), bytes):
            raise BadRequest("ca.renew needs a csr")
        row, _ = nodes.get_node(a.store, str(peer_id))
        if row is None:
            raise BadRequest(f"node {peer_id} is not registered")
        addresses = [str(x) for x in body.get("addresses") or []][:8]
        role = authority.ROLE_SERVER if row.role == "server" else authority.ROLE_CLIENT
        chain = self.sign(
            body["csr"], node_id=peer_id, name=row.name, role=role, addresses=addresses
        )
        return {"chain": chain}


@functools.lru_cache(maxsize=8)
def _ski_hex(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return ski.digest.hex()


def _renew_time(info: NodeCertInfo) -> datetime:
    """Half way through the certificate's life as issued. Its not-before is backdated
    by ``authority.BACKDATE`` (clock skew), which must not count: half of
    ``[not_before, not_after]`` would fall in the past for any --cert-ttl under
    twice the backdate, and the node would renew on every tick."""
    issued = min(info.not_before + authority.BACKDATE, info.not_after)
    return issued + (info.not_after - issued) / 2
