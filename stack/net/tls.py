"""A node's TLS material on disk and the ``ssl.SSLContext``s built from it.

Three contexts per node: the cluster RPC server (client certificate optional,
verified against the cluster roots when presented), the RPC client (mutual TLS)
and the HTTPS API (no client certificate). Each is built once and reloaded in
place on renewal: OpenSSL copies the certificate and key into every connection
when it starts, so established connections keep the old ones and new
connections get the new ones.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
from collections.abc import Sequence
from pathlib import Path

from stack.ca.authority import (
    CertError,
    NodeCertInfo,
    cert_public_key_pem,
    new_node_key,
    parse_node_cert,
    public_key_pem,
    split_pem_chain,
)

KEY_FILE = "node.key"
CHAIN_FILE = "node.crt"
ROOTS_FILE = "ca.crt"


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600, durable once this returns."""
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask can only remove bits; make it exactly 0600
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class NodeTls:
    """A node's TLS material on disk (its key and certificate chain, each 0600) and the
    SSLContexts built from it, reloaded in place so established connections survive a renewal.

    Files: ``node.key`` (P-256, PKCS8 PEM), ``node.crt`` (leaf first, then any
    intermediates such as a cross-certificate) and ``ca.crt`` (the trusted roots).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._key_path = directory / KEY_FILE
        self._chain_path = directory / CHAIN_FILE
        self._roots_path = directory / ROOTS_FILE
        self._server: ssl.SSLContext | None = None
        self._client: ssl.SSLContext | None = None
        self._https: ssl.SSLContext | None = None
        self._roots: list[bytes] | None = None  # what ca.crt holds, once read
        self._leaf: NodeCertInfo | None = None  # node.crt's leaf, once parsed

    @property
    def has_cert(self) -> bool:
        return all(p.exists() for p in (self._key_path, self._chain_path, self._roots_path))

    def key_pem(self) -> bytes:
        """The node's private key, created (0600) on first use; renewals keep it."""
        try:
            return self._key_path.read_bytes()
        except FileNotFoundError:
            pass
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = new_node_key()
        write_private(self._key_path, key)
        return key

    def install(self, chain_pem: bytes, roots_pem: Sequence[bytes]) -> None:
        """Store a (renewed) certificate chain and the trusted roots, then reload every
        context already handed out.

        Checked before anything is written: the chain parses and its leaf holds
        this node's key, and there is at least one root.
        """
        chain = split_pem_chain(chain_pem)
        if not chain:
            raise CertError("install: the chain holds no certificate")
        try:
            key = self._key_path.read_bytes()
        except FileNotFoundError:
            raise CertError(f"install: no node key in {self.directory}") from None
        if public_key_pem(key) != cert_public_key_pem(chain[0]):
            raise CertError("install: the certificate is not for this node's key")
        roots = [c for r in roots_pem for c in split_pem_chain(r)]
        if not roots:
            raise CertError("install: no trusted root given")
        # Roots first: a crash between the two writes never leaves a new chain
        # whose root is not yet in ca.crt.
        write_private(self._roots_path, b"".join(roots))
        write_private(self._chain_path, b"".join(chain))
        self._roots, self._leaf = roots, None
        for ctx in (self._server, self._client):
            if ctx is not None:
                self._load_chain(ctx)
                # OpenSSL can only add to a live trust store. A root dropped from
                # ca.crt stays trusted by contexts built before, until restart;
                # the certificates it signed expire on their own.
                _load_roots(ctx, roots)
        if self._https is not None:
            self._load_chain(self._https)

    def roots(self) -> list[bytes]:
        if self._roots is None:  # read once, then kept in step by install()
            self._roots = split_pem_chain(self._roots_path.read_bytes())
        return list(self._roots)

    def chain(self) -> bytes:
        return self._chain_path.read_bytes()

    def leaf_info(self) -> NodeCertInfo:
        if self._leaf is not None:
            return self._leaf
        chain = split_pem_chain(self.chain())
        if not chain:
            raise CertError(f"{self._chain_path} holds no certificate")
        self._leaf = parse_node_cert(chain[0])
        return self._leaf

    def server_context(self) -> ssl.SSLContext:
        """For the cluster RPC port. The client certificate is optional: a node without
        one yet may connect to ask to join; the RPC layer authorises by certificate.
        A certificate that is presented must verify against the roots."""
        if self._server is None:
            ctx = self._new(ssl.PROTOCOL_TLS_SERVER)
            ctx.verify_mode = ssl.CERT_OPTIONAL
            _load_roots(ctx, self.roots())
            self._server = ctx
        return self._server

    def client_context(self) -> ssl.SSLContext:
        """For dialing peers: mutual TLS against the roots. No host name check: the
        RPC layer checks the node id in the peer's certificate instead."""
        if self._client is None:
            ctx = self._new(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_REQUIRED
            _load_roots(ctx, self.roots())
            self._client = ctx
        return self._client

    def https_context(self) -> ssl.SSLContext:
        """For the HTTP API: our certificate, no client certificate requested."""
        if self._https is None:
            ctx = self._new(ssl.PROTOCOL_TLS_SERVER)
            ctx.verify_mode = ssl.CERT_NONE
            self._https = ctx
        return self._https

    def _new(self, protocol: int) -> ssl.SSLContext:
        if not self.has_cert:
            raise CertError(f"no node certificate installed in {self.directory}")
        ctx = ssl.SSLContext(protocol)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load_chain(ctx)
        return ctx

    def _load_chain(self, ctx: ssl.SSLContext) -> None:
        ctx.load_cert_chain(certfile=self._chain_path, keyfile=self._key_path)


def probe_context() -> ssl.SSLContext:
    """An UNVERIFIED client context (no certificate check, no client certificate).

    Only for fetching the CA bundle before joining: the caller must then check
    that bundle against the fingerprint (or proof) in its join token before
    trusting anything it received. Never use it for anything else.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def verified_context(roots_pem: Sequence[bytes]) -> ssl.SSLContext:
    """A client context verifying the server against ``roots_pem`` (no host name check,
    no client certificate): for the join request, before the node has a certificate."""
    roots = [c for r in roots_pem for c in split_pem_chain(r)]
    if not roots:
        raise CertError("verified_context: no trusted root given")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_roots(ctx, roots)
    return ctx


def peer_cert_der(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bytes | None:
    """The peer's leaf certificate (DER), or None without TLS or without a peer certificate.

    ``ssl_object`` is what ``transport.get_extra_info("ssl_object")`` returns.
    """
    if ssl_object is None:
        return None
    return ssl_object.getpeercert(binary_form=True)


def _load_roots(ctx: ssl.SSLContext, roots: Sequence[bytes]) -> None:
    for root in roots:
        ctx.load_verify_locations(cadata=root.decode("ascii"))
