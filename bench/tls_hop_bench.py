"""CPU cost of one message hop over asyncio streams, plain TCP vs TLS.

    python bench/tls_hop_bench.py [--frames 20000] [--size 200] [--runs 5]

A client and an echo server in one process, over loopback (127.0.0.71), framed like
stack's RPC (4-byte length, then the payload). Two patterns: one frame in flight at a
time (sequential round trips, as a lone write's AppendEntries and ack), and bursts of
64 frames written together and then read back (as under load). TLS as the cluster
transport sets it up: an ECDSA P-256 certificate, TLS 1.2 or later (1.3 negotiated),
a client certificate required. Reported: CPU of the process (both ends) per message
hop, median of --runs; the CPU time, not the wall time, so a busy machine moves it
less.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ssl
import statistics
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.71"


def _contexts(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("bench")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for ctx in (server, client):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert_path, key_path)
        ctx.load_verify_locations(cert_path)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return server, client


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readexactly(4)
            body = await reader.readexactly(int.from_bytes(head, "big"))
            writer.write(head + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    except asyncio.CancelledError:
        pass  # server.close(): end normally (3.11 logs a cancelled handler's traceback)
    finally:
        writer.close()


async def one(
    tls: tuple[ssl.SSLContext, ssl.SSLContext] | None, frames: int, size: int, burst: int
) -> float:
    server = await asyncio.start_server(_echo, HOST, 0, ssl=tls[0] if tls else None)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection(
        HOST, port, ssl=tls[1] if tls else None, server_hostname="bench" if tls else None
    )
    frame = size.to_bytes(4, "big") + b"x" * size
    try:
        for _ in range(50):  # warm-up (and the handshake) outside the measurement
            writer.write(frame)
            await reader.readexactly(4 + size)
        cpu0 = time.process_time()
        for _ in range(frames // burst):
            writer.write(frame * burst)
            await writer.drain()
            await reader.readexactly((4 + size) * burst)
        cpu = time.process_time() - cpu0
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
    # Every frame makes two hops (there and back).
    return 1e6 * cpu / (2 * (frames // burst) * burst)


async def main_async(frames: int, size: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        ctxs = _contexts(Path(d))
        for burst in (1, 64):
            res = {}
            for name, tls in (("plain", None), ("tls", ctxs)):
                res[name] = statistics.median(
                    [await one(tls, frames, size, burst) for _ in range(runs)]
                )
            print(
                f"{size}-byte frames, {burst:2d} in flight: plain {res['plain']:6.1f} µs/hop, "
                f"TLS {res['tls']:6.1f} µs/hop, TLS adds {res['tls'] - res['plain']:5.1f} µs"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    asyncio.run(main_async(a.frames, a.size, a.runs))


if __name__ == "__main__":
    main()
