"""The crypto of one PKI issue and one transit encrypt alone, in this process, per
CPU second on one core: where the ceiling of `bench.secrets_engines_bench` is.

`crypto_ceiling` times, each over about `seconds` of CPU (`time.process_time`, so
other work on a shared machine does not count against it): an EC P-256 key
generation; a P-256 key plus a leaf certificate (CN, DNS SAN, EKU, AKI) signed with
`cryptography` by a P-256 intermediate, with the DER and the key's PEM; the same
through `stack.vault.pki.issue` and `to_response` (the engine's pure work per
certificate: names checked, PEM answer); AES-256-GCM of a 48-byte plaintext with
the `AESGCM` object kept; `stack.vault.transit.encrypt` of the same (a new `AESGCM`
per call, base64, the `vault:v1:` prefix).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CRYPTO = (
    ("ec_keygen", "EC P-256 key generation"),
    ("leaf_sign", "P-256 key + leaf certificate signed (cryptography)"),
    ("pki_issue", "stack.vault.pki.issue + to_response (the engine's pure work)"),
    ("aes_gcm", "AES-256-GCM encrypt, 48 bytes (AESGCM object kept)"),
    ("transit_encrypt", "stack.vault.transit.encrypt, 48 bytes"),
)
DOMAIN = "bench.internal"
CN = f"c00-n000.{DOMAIN}"
PLAINTEXT = b"bench-00-00-".ljust(48, b"x")


def _timed(fn: Callable[[], object], seconds: float) -> float:
    """Calls of `fn` per CPU second of this process, over about `seconds` of CPU."""
    fn()  # warm
    n, cpu0 = 0, time.process_time()
    batch = 8
    while True:
        for _ in range(batch):
            fn()
        n += batch
        used = time.process_time() - cpu0
        if used >= seconds:
            return n / used
        batch = min(batch * 2, 512)


def crypto_ceiling(seconds: float) -> dict[str, float]:
    """The crypto of one request alone, per CPU second on one core (see CRYPTO)."""
    from stack.ca import authority
    from stack.state.pki_role import Role
    from stack.vault import pki
    from stack.vault import transit as tr

    now = datetime.now(UTC)
    root = authority.create_root(cluster_id="bench", now=now)
    cert_pem, key_pem = pki.make_intermediate(root, mount="pki/", cluster_id="bench", now=now)
    issuer = pki.Issuer(cert_pem, key_pem, [root.cert_pem])
    role = Role(allowed_domains=(DOMAIN,), allow_subdomains=True, ttl=3600.0).validated()
    ca_key = issuer.key
    ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cn = CN

    def leaf_sign() -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert.public_bytes(serialization.Encoding.DER)
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    def pki_issue() -> None:
        pki.issue(
            issuer, role, common_name=cn, ttl=3600.0, now=now, serial=pki.new_serial()
        ).to_response("pem")

    aead = AESGCM(AESGCM.generate_key(256))
    data = PLAINTEXT
    tkey = tr.create_key("bench", now=time.time())

    return {
        "ec_keygen": _timed(lambda: ec.generate_private_key(ec.SECP256R1()), seconds),
        "leaf_sign": _timed(leaf_sign, seconds),
        "pki_issue": _timed(pki_issue, seconds),
        "aes_gcm": _timed(lambda: aead.encrypt(os.urandom(12), data, None), seconds),
        "transit_encrypt": _timed(lambda: tr.encrypt(tkey, data), seconds),
    }
