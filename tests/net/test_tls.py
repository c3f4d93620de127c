from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stack.ca.authority import (
    ROLE_CLIENT,
    ROLE_SERVER,
    CertError,
    RootCA,
    create_root,
    cross_sign,
    fingerprint,
    make_csr,
    parse_node_cert,
    sign_node_cert,
    split_pem_chain,
)
from stack.net.tls import (
    NodeTls,
    peer_cert_der,
    probe_context,
    verified_context,
    write_private,
)

pytestmark = pytest.mark.timeout(30)

CLUSTER = "c0ffee12"


def now() -> datetime:
    return datetime.now(UTC)  # OpenSSL checks validity against the real clock


def leaf_for(tls: NodeTls, ca: RootCA, *, node_id: int, role: str = ROLE_SERVER) -> bytes:
    name = f"node-{node_id}"
    return sign_node_cert(
        ca,
        make_csr(tls.key_pem(), node_id=node_id, name=name),
        node_id=node_id,
        name=name,
        role=role,
        cluster_id=CLUSTER,
        addresses=["127.0.0.1"],
        now=now(),
        lifetime=timedelta(days=1),
    )


def make_node(
    directory: Path,
    ca: RootCA,
    *,
    node_id: int,
    role: str = ROLE_SERVER,
    extra_chain: bytes = b"",
    roots: tuple[RootCA, ...] = (),
) -> NodeTls:
    tls = NodeTls(directory)
    leaf = leaf_for(tls, ca, node_id=node_id, role=role)
    tls.install(leaf + extra_chain, [r.cert_pem for r in (roots or (ca,))])
    return tls


@pytest.fixture(scope="module")
def root() -> RootCA:
    return create_root(cluster_id=CLUSTER, now=now())


@pytest.fixture(scope="module")
def foreign_root() -> RootCA:
    return create_root(cluster_id=CLUSTER, now=now())  # same cluster id, another CA


class EchoServer:
    """A TLS echo server recording the certificate each accepted peer presented."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.peers: list[bytes | None] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ctx)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.peers.append(peer_cert_der(writer.get_extra_info("ssl_object")))
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def serving(ctx: ssl.SSLContext) -> AsyncIterator[EchoServer]:
    server = EchoServer(ctx)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @property
    def peer(self) -> bytes | None:
        return peer_cert_der(self.writer.get_extra_info("ssl_object"))

    async def echo(self, data: bytes) -> bytes:
        self.writer.write(data)
        await self.writer.drain()
        async with asyncio.timeout(5):
            return await self.reader.readexactly(len(data))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def connect(port: int, ctx: ssl.SSLContext) -> AsyncIterator[Conn]:
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    conn = Conn(reader, writer)
    try:
        yield conn
    finally:
        await conn.close()


async def refused(port: int, ctx: ssl.SSLContext) -> BaseException | None:
    """The error that ended an attempt to connect and echo, None if it worked.

    Under TLS 1.3 the client finishes its handshake before the server has checked
    its certificate; the server's refusal then arrives as an alert or a close."""
    try:
        async with connect(port, ctx) as conn:
            await conn.echo(b"ping")
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError) as e:
        return e
    return None


def serial_of(der: bytes | None) -> int:
    assert der is not None
    return parse_node_cert(der).serial


# -- (1) mutual TLS ---------------------------------------------------------------------


async def test_mutual_tls_server_sees_client_leaf(tmp_path: Path, root: RootCA) -> None:
    server = make_node(tmp_path / "s", root, node_id=1)
    client = make_node(tmp_path / "c", root, node_id=2, role=ROLE_CLIENT)
    async with (
        serving(server.server_context()) as srv,
        connect(srv.port, client.client_context()) as conn,
    ):
        assert await conn.echo(b"hello") == b"hello"
        assert conn.peer is not None
        assert fingerprint(conn.peer) == fingerprint(split_pem_chain(server.chain())[0])
    assert len(srv.peers) == 1
    seen = srv.peers[0]
    assert seen is not None
    info = parse_node_cert(seen)
    assert (info.node_id, info.role, info.cluster_id) == (2, ROLE_CLIENT, CLUSTER)
    assert info == client.leaf_info()


async def test_contexts_are_cached_and_configured(tmp_path: Path, root: RootCA) -> None:
    tls = make_node(tmp_path, root, node_id=1)
    srv, cli, https = tls.server_context(), tls.client_context(), tls.https_context()
    assert tls.server_context() is srv and tls.client_context() is cli
    assert tls.https_context() is https
    assert srv.verify_mode == ssl.CERT_OPTIONAL and not srv.check_hostname
    assert cli.verify_mode == ssl.CERT_REQUIRED and not cli.check_hostname
    assert https.verify_mode == ssl.CERT_NONE
    for ctx in (srv, cli, https):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


async def test_no_context_before_a_certificate(tmp_path: Path) -> None:
    tls = NodeTls(tmp_path)
    assert not tls.has_cert
    with pytest.raises(CertError, match="no node certificate"):
        tls.server_context()


# -- (2) refusing strangers, admitting certificate-less joiners ------------------------


@pytest.mark.parametrize("tls_max", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=str)
async def test_client_from_another_ca_is_refused(
    tmp_path: Path, root: RootCA, foreign_root: RootCA, tls_max: ssl.TLSVersion
) -> None:
    server = make_node(tmp_path / "s", root, node_id=1)
    # Trusts our root (so it would accept the server) but holds a foreign leaf.
    stranger = make_node(
        tmp_path / "x", foreign_root, node_id=9, roots=(foreign_root, root), role=ROLE_CLIENT
    )
    ctx = stranger.client_context()
    ctx.maximum_version = tls_max
    async with serving(server.server_context()) as srv:
        assert await refused(srv.port, ctx) is not None
        assert srv.peers == []  # the server never accepted the connection


async def test_client_without_certificate_connects_but_is_anonymous(
    tmp_path: Path, root: RootCA
) -> None:
    server = make_node(tmp_path / "s", root, node_id=1)
    async with serving(server.server_context()) as srv:
        async with connect(srv.port, verified_context([root.cert_pem])) as conn:
            assert await conn.echo(b"join?") == b"join?"
            assert conn.peer is not None  # the joiner did verify the server
        assert srv.peers == [None]


async def test_https_context_asks_for_no_client_certificate(tmp_path: Path, root: RootCA) -> None:
    server = make_node(tmp_path / "s", root, node_id=1)
    client = make_node(tmp_path / "c", root, node_id=2)
    async with serving(server.https_context()) as srv:
        async with connect(srv.port, client.client_context()) as conn:
            assert await conn.echo(b"GET") == b"GET"
        assert srv.peers == [None]


# -- (3) renewal in place ----------------------------------------------------------------


async def test_renewal_reaches_new_connections_and_spares_old_ones(
    tmp_path: Path, root: RootCA
) -> None:
    server = make_node(tmp_path / "s", root, node_id=1)
    client = make_node(tmp_path / "c", root, node_id=2, role=ROLE_CLIENT)
    server_ctx = server.server_context()
    key_before = server.key_pem()
    old_serial = server.leaf_info().serial
    async with serving(server_ctx) as srv, connect(srv.port, client.client_context()) as old:
        assert await old.echo(b"before") == b"before"
        assert serial_of(old.peer) == old_serial

        server.install(leaf_for(server, root, node_id=1), [root.cert_pem])
        new_serial = server.leaf_info().serial
        assert new_serial != old_serial
        assert server.key_pem() == key_before  # renewal keeps the key
        assert server.server_context() is server_ctx  # reloaded in place, not rebuilt

        async with connect(srv.port, client.client_context()) as new:
            assert await new.echo(b"fresh") == b"fresh"
            assert serial_of(new.peer) == new_serial

        # The established connection still works both ways, on its old certificate.
        for i in range(3):
            payload = f"after-{i}".encode() * 1000
            assert await old.echo(payload) == payload
        assert serial_of(old.peer) == old_serial


async def test_client_renewal_is_presented_on_new_connections(tmp_path: Path, root: RootCA) -> None:
    server = make_node(tmp_path / "s", root, node_id=1)
    client = make_node(tmp_path / "c", root, node_id=2, role=ROLE_CLIENT)
    ctx = client.client_context()
    async with serving(server.server_context()) as srv:
        async with connect(srv.port, ctx) as conn:
            await conn.echo(b"a")
        client.install(leaf_for(client, root, node_id=2, role=ROLE_CLIENT), [root.cert_pem])
        async with connect(srv.port, ctx) as conn:
            await conn.echo(b"b")
    assert len(srv.peers) == 2
    assert serial_of(srv.peers[0]) != serial_of(srv.peers[1])
    assert serial_of(srv.peers[1]) == client.leaf_info().serial


async def test_install_adds_roots_to_live_contexts(
    tmp_path: Path, root: RootCA, foreign_root: RootCA
) -> None:
    server = make_node(tmp_path / "s", root, node_id=1)
    other = make_node(
        tmp_path / "o", foreign_root, node_id=3, roots=(foreign_root, root), role=ROLE_CLIENT
    )
    ctx = server.server_context()
    async with serving(ctx) as srv:
        assert await refused(srv.port, other.client_context()) is not None
        server.install(server.chain(), [root.cert_pem, foreign_root.cert_pem])
        assert server.server_context() is ctx
        assert await refused(srv.port, other.client_context()) is None
    assert [fingerprint(r) for r in server.roots()] == [
        fingerprint(root.cert_pem),
        fingerprint(foreign_root.cert_pem),
    ]


def test_install_refuses_a_certificate_for_another_key(tmp_path: Path, root: RootCA) -> None:
    tls = make_node(tmp_path / "a", root, node_id=1)
    other = make_node(tmp_path / "b", root, node_id=2)
    chain_before = tls.chain()
    with pytest.raises(CertError, match="not for this node's key"):
        tls.install(other.chain(), [root.cert_pem])
    with pytest.raises(CertError, match="no trusted root"):
        tls.install(tls.chain(), [])
    assert tls.chain() == chain_before
    with pytest.raises(CertError, match="no node key"):
        NodeTls(tmp_path / "empty").install(tls.chain(), [root.cert_pem])


# -- (4) root rotation -------------------------------------------------------------------


async def test_leaf_of_new_root_verifies_through_cross_cert(tmp_path: Path, root: RootCA) -> None:
    new_root = create_root(cluster_id=CLUSTER, now=now(), generation=2)
    cross = cross_sign(new_root.cert_pem, root, now=now())
    rotated = make_node(
        tmp_path / "s", new_root, node_id=1, extra_chain=cross, roots=(root, new_root)
    )
    without_cross = make_node(tmp_path / "w", new_root, node_id=4, roots=(root, new_root))
    old_node = make_node(tmp_path / "c", root, node_id=2, role=ROLE_CLIENT)  # trusts only root
    assert [r for r in old_node.roots()] == [root.cert_pem]

    async with serving(rotated.server_context()) as srv:
        async with connect(srv.port, old_node.client_context()) as conn:
            assert await conn.echo(b"rotated") == b"rotated"
            assert serial_of(conn.peer) == rotated.leaf_info().serial
        async with connect(srv.port, verified_context([root.cert_pem])) as conn:
            assert await conn.echo(b"join") == b"join"
        assert serial_of(srv.peers[0]) == old_node.leaf_info().serial

    # Control: the same new-root leaf without its cross cert is not trusted.
    async with serving(without_cross.server_context()) as srv:
        with pytest.raises(ssl.SSLCertVerificationError):
            async with connect(srv.port, old_node.client_context()):
                pass

    # And the other way round: a rotated client is accepted by an old-root-only server.
    async with serving(old_node.server_context()) as srv:
        async with connect(srv.port, rotated.client_context()) as conn:
            assert await conn.echo(b"back") == b"back"
        assert serial_of(srv.peers[0]) == rotated.leaf_info().serial


# -- (5) files -------------------------------------------------------------------------


def test_files_are_private(tmp_path: Path, root: RootCA) -> None:
    tls = make_node(tmp_path / "n", root, node_id=1)
    for name in ("node.key", "node.crt", "ca.crt"):
        mode = stat.S_IMODE((tmp_path / "n" / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert tls.has_cert
    assert sorted(p.name for p in (tmp_path / "n").iterdir()) == ["ca.crt", "node.crt", "node.key"]


def test_write_private_replaces_atomically_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"old")
    path.chmod(0o644)
    old_umask = os.umask(0)
    try:
        write_private(path, b"new" * 100_000)
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"new" * 100_000
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_key_is_created_once(tmp_path: Path) -> None:
    tls = NodeTls(tmp_path / "fresh")
    key = tls.key_pem()
    assert key.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert NodeTls(tmp_path / "fresh").key_pem() == key
    assert stat.S_IMODE((tmp_path / "fresh" / "node.key").stat().st_mode) == 0o600
    assert not tls.has_cert


# -- (6) probe and verified contexts ----------------------------------------------------


async def test_probe_connects_to_anything_verified_does_not(
    tmp_path: Path, root: RootCA, foreign_root: RootCA
) -> None:
    stranger = make_node(tmp_path / "x", foreign_root, node_id=9)
    assert probe_context().verify_mode == ssl.CERT_NONE
    async with serving(stranger.server_context()) as srv:
        async with connect(srv.port, probe_context()) as conn:
            assert await conn.echo(b"ca?") == b"ca?"
            assert conn.peer is not None
            assert fingerprint(conn.peer) == fingerprint(stranger.chain())
        with pytest.raises(ssl.SSLCertVerificationError):
            async with connect(srv.port, verified_context([root.cert_pem])):
                pass
        async with connect(srv.port, verified_context([foreign_root.cert_pem])) as conn:
            assert await conn.echo(b"ok") == b"ok"
        assert srv.peers == [None, None]  # neither context sends a client certificate


def test_verified_context_needs_a_root() -> None:
    with pytest.raises(CertError):
        verified_context([])


def test_peer_cert_der_of_nothing_is_none() -> None:
    assert peer_cert_der(None) is None
