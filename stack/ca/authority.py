"""The cluster's one certificate authority, as pure functions over PEM bytes.

One ECDSA P-256 root per cluster (per generation: a rotated root is a new
generation, cross-signed by the old one so that nodes still trusting only the
old root accept leaves from the new one). The root signs node certificates whose
identity is a URI SAN ``stack://<cluster_id>/node/<node_id>/<role>``; the RPC
layer authorises peers by that URI, never by host name.

Nothing here reads a clock, a file or a global: time is passed in as an aware
UTC ``datetime``. Key material is only ever returned, never logged.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLE_SERVER = "server"
ROLE_CLIENT = "client"
ROLES = frozenset({ROLE_SERVER, ROLE_CLIENT})

ORGANIZATION = "stack"
URI_SCHEME = "stack://"

# Clock skew between nodes: certificates are valid from a little before "now".
BACKDATE = timedelta(minutes=5)

_ROOT_CN = re.compile(r"stack root CA (?P<cluster>\S+) gen (?P<gen>\d+)")
_CLUSTER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_NODE_URI = re.compile(r"stack://(?P<cluster>[^/]+)/node/(?P<node>[0-9]+)/(?P<role>[a-z]+)")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_CN_MAX = 64  # ub-common-name (RFC 5280)


class CertError(Exception):
    """Bad CSR or key, not a stack node certificate, wrong cluster, expired CA..."""


@dataclass(frozen=True, slots=True)
class RootCA:
    cert_pem: bytes  # self-signed root certificate
    key_pem: bytes  # PKCS8 PEM, unencrypted (the caller encrypts it before storing)


@dataclass(frozen=True, slots=True)
class NodeCertInfo:
    node_id: int
    role: str
    cluster_id: str
    name: str
    serial: int
    not_before: datetime
    not_after: datetime
    issuer_fingerprint_hint: str  # hex of the authority key id, "" if none


# -- keys ----------------------------------------------------------------------------


def new_node_key() -> bytes:
    """A fresh ECDSA P-256 private key, PKCS8 PEM, unencrypted."""
    return _key_to_pem(ec.generate_private_key(ec.SECP256R1()))


def public_key_pem(key_pem: bytes) -> bytes:
    """The SubjectPublicKeyInfo PEM of a private key."""
    return (
        _load_key(key_pem)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def make_csr(key_pem: bytes, *, node_id: int, name: str) -> bytes:
    """A PEM CSR with CN = ``name``; the node id rides along as UID for operators to see.

    The CA ignores everything in a CSR but its public key (and checks its signature).
    """
    key = _load_key(key_pem)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, _check_cn(name)),
            x509.NameAttribute(NameOID.USER_ID, str(node_id)),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


# -- roots ---------------------------------------------------------------------------


def create_root(
    *,
    cluster_id: str,
    now: datetime,
    lifetime: timedelta = timedelta(days=3650),
    generation: int = 1,
) -> RootCA:
    """A new self-signed P-256 root for ``cluster_id``.

    No path length limit: a node two rotations behind verifies through two
    cross-certificates (leaf, cross(gen3 by gen2), cross(gen2 by gen1)).
    """
    _check_now(now)
    _check_cluster_id(cluster_id)
    if generation < 1:
        raise CertError(f"root generation must be >= 1, not {generation}")
    if lifetime <= timedelta(0):
        raise CertError("root lifetime must be positive")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"stack root CA {cluster_id} gen {generation}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return RootCA(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_to_pem(key))


def load_root(cert_pem: bytes, key_pem: bytes) -> RootCA:
    """A RootCA from stored material, refusing a key that does not match the certificate
    or a certificate that is not a CA. The key comes back as PKCS8 PEM whatever it was."""
    cert = _load_cert(cert_pem)
    key = _load_key(key_pem)
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise CertError("the CA key does not match the CA certificate")
    if not _is_ca(cert):
        raise CertError("the certificate is not a CA certificate (basicConstraints ca=False)")
    return RootCA(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_to_pem(key))


def cross_sign(new_root_cert_pem: bytes, old: RootCA, *, now: datetime) -> bytes:
    """The new root's subject, public key and extensions, issued by the old root.

    Serving ``leaf, cross-cert`` lets a node that trusts only the old root verify
    a leaf signed by the new one. Valid until the earlier of the two roots' ends.
    """
    _check_now(now)
    new = _load_cert(new_root_cert_pem)
    old_cert = _load_cert(old.cert_pem)
    old_key = _load_key(old.key_pem)
    if not _is_ca(new):
        raise CertError("cross_sign: the new root is not a CA certificate")
    if new.subject == old_cert.subject:
        raise CertError(
            "cross_sign: the new root has the old root's subject; give it a new generation"
        )
    not_before = max(now - BACKDATE, old_cert.not_valid_before_utc)
    not_after = min(new.not_valid_after_utc, old_cert.not_valid_after_utc)
    if not_after <= not_before:
        raise CertError(f"cross_sign: no validity window left (ends {not_after.isoformat()})")
    builder = (
        x509.CertificateBuilder()
        .subject_name(new.subject)
        .issuer_name(old_cert.subject)
        .public_key(_p256_public(new.public_key(), "the new root's key"))
        .serial_number(_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for ext in new.extensions:
        if not isinstance(ext.value, x509.AuthorityKeyIdentifier):
            builder = builder.add_extension(ext.value, critical=ext.critical)
    builder = builder.add_extension(_aki(old_cert), critical=False)
    return builder.sign(old_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def cross_signed(cross: bytes, root: bytes, issuer: bytes) -> bool:
    """Whether `cross` certifies `root`'s subject and key and was signed by `issuer`:
    the link that makes two root generations one CA."""
    try:
        c, r, i = _load_cert(cross), _load_cert(root), _load_cert(issuer)
        if c.subject != r.subject or _spki(c.public_key()) != _spki(r.public_key()):
            return False
        c.verify_directly_issued_by(i)
    except (CertError, ValueError, TypeError, InvalidSignature):
        return False
    return True


def root_cluster_id(cert: bytes) -> str:
    """The cluster id a stack root (or its cross-certificate) names in its CN."""
    cn = _common_name(_load_cert(cert))
    m = _ROOT_CN.fullmatch(cn)
    if m is None:
        raise CertError(f"not a stack root CA certificate (CN {cn!r})")
    return m["cluster"]


# -- node certificates ---------------------------------------------------------------


def sign_node_cert(
    ca: RootCA,
    csr_pem: bytes,
    *,
    node_id: int,
    name: str,
    role: str,
    cluster_id: str,
    addresses: Sequence[str],
    now: datetime,
    lifetime: timedelta,
) -> bytes:
    """Issue a node certificate (leaf PEM only) for the key in ``csr_pem``.

    Only the CSR's key is used, after checking its signature; the subject, SANs,
    role and lifetime are the CA's decision. ``addresses`` are IPs (IPAddress
    SANs) or DNS names. The lifetime is capped at the CA's own expiry.
    """
    _check_now(now)
    _check_cluster_id(cluster_id)
    if role not in ROLES:
        raise CertError(f"role must be {ROLE_SERVER!r} or {ROLE_CLIENT!r}, not {role!r}")
    if node_id < 0:
        raise CertError(f"node id must be non-negative, not {node_id}")
    if lifetime <= timedelta(0):
        raise CertError("certificate lifetime must be positive")
    ca_cert = _load_cert(ca.cert_pem)
    ca_cluster = root_cluster_id(ca.cert_pem)
    if ca_cluster != cluster_id:
        raise CertError(f"this CA belongs to cluster {ca_cluster!r}, not {cluster_id!r}")
    public_key = _csr_public_key(csr_pem)

    sans: list[x509.GeneralName] = []
    if _is_dns_name(name):
        sans.append(x509.DNSName(name))
    for addr in addresses:
        sans.append(_address_san(addr))
    sans.append(x509.UniformResourceIdentifier(node_uri(cluster_id, node_id, role)))
    unique_sans = list(dict.fromkeys(sans))

    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, _check_cn(name)),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )
    not_before = now - BACKDATE
    not_after = min(now + lifetime, ca_cert.not_valid_after_utc)
    if not_after <= now:
        raise CertError(f"the CA expires {not_after.isoformat()}; rotate the root first")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(unique_sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_aki(ca_cert), critical=False)
        .sign(_load_key(ca.key_pem), hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def sign_intermediate(
    ca: RootCA,
    public_key_pem: bytes,
    *,
    subject_cn: str,
    now: datetime,
    lifetime: timedelta,
) -> bytes:
    """A CA certificate (PEM) for ``public_key_pem``, issued by the cluster root.

    Path length 0: it signs leaves only (a PKI mount's issuer, docs/pki.md), so
    everything that trusts the cluster roots trusts its leaves. Capped at the
    root's own expiry. Any EC or RSA key is accepted; stack makes P-256 ones.
    """
    _check_now(now)
    if lifetime <= timedelta(0):
        raise CertError("intermediate lifetime must be positive")
    ca_cert = _load_cert(ca.cert_pem)
    try:
        public_key = serialization.load_pem_public_key(public_key_pem)
    except ValueError as e:
        raise CertError(f"unreadable public key: {e}") from None
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise CertError("an intermediate CA key must be EC or RSA")
    not_before = max(now - BACKDATE, ca_cert.not_valid_before_utc)
    not_after = min(now + lifetime, ca_cert.not_valid_after_utc)
    if not_after <= now:
        raise CertError(f"the CA expires {not_after.isoformat()}; rotate the root first")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, _check_cn(subject_cn)),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_aki(ca_cert), critical=False)
        .sign(_load_key(ca.key_pem), hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def node_uri(cluster_id: str, node_id: int, role: str) -> str:
    return f"{URI_SCHEME}{cluster_id}/node/{node_id}/{role}"


def parse_node_cert(cert: bytes) -> NodeCertInfo:
    """The stack identity in a node certificate (PEM or DER).

    CertError unless it carries exactly one well-formed ``stack://`` URI SAN.
    Cheap enough per connection; callers cache by DER anyway.
    """
    c = _load_cert(cert)
    try:
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertError("not a stack node certificate: no subjectAltName") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    ours = [u for u in uris if u.startswith(URI_SCHEME)]
    if len(ours) != 1:
        raise CertError(
            f"not a stack node certificate: expected one stack:// URI SAN, found {len(ours)}"
        )
    m = _NODE_URI.fullmatch(ours[0])
    if m is None or m["role"] not in ROLES:
        raise CertError(f"malformed stack node URI {ours[0]!r}")
    try:
        aki = c.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        hint = aki.key_identifier.hex() if aki.key_identifier is not None else ""
    except x509.ExtensionNotFound:
        hint = ""
    return NodeCertInfo(
        node_id=int(m["node"]),
        role=m["role"],
        cluster_id=m["cluster"],
        name=_common_name(c),
        serial=c.serial_number,
        not_before=c.not_valid_before_utc,
        not_after=c.not_valid_after_utc,
        issuer_fingerprint_hint=hint,
    )


def renew_at(info: NodeCertInfo, fraction: float = 0.5) -> datetime:
    """When to renew: ``fraction`` of the way through the validity period."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], not {fraction}")
    return info.not_before + (info.not_after - info.not_before) * fraction


# -- generic helpers -----------------------------------------------------------------


def fingerprint(cert: bytes) -> str:
    """SHA-256 of the certificate's DER, lower-case hex. Accepts PEM or DER."""
    return _load_cert(cert).fingerprint(hashes.SHA256()).hex()


def cert_public_key_pem(cert: bytes) -> bytes:
    """The SubjectPublicKeyInfo PEM of a certificate (PEM or DER)."""
    return (
        _load_cert(cert)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def cert_not_after(cert: bytes) -> datetime:
    return _load_cert(cert).not_valid_after_utc


def split_pem_chain(data: bytes) -> list[bytes]:
    """Each certificate of a PEM bundle as its own PEM, in order.

    Non-certificate PEM blocks are dropped; no certificate at all gives [].
    """
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return []
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise CertError(f"malformed PEM certificate bundle: {e}") from None
    return [c.public_bytes(serialization.Encoding.PEM) for c in certs]


def _load_cert(data: bytes) -> x509.Certificate:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as e:
        raise CertError(f"malformed certificate: {e}") from None


def _load_key(key_pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:  # TypeError: encrypted, no password given
        raise CertError(f"unreadable private key ({type(e).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise CertError("the private key is not ECDSA P-256")
    return key


def _csr_public_key(csr_pem: bytes) -> ec.EllipticCurvePublicKey:
    try:
        if csr_pem.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(csr_pem)
        else:
            csr = x509.load_der_x509_csr(csr_pem)
        key = csr.public_key()
    except ValueError as e:
        raise CertError(f"malformed CSR: {e}") from None
    key = _p256_public(key, "the CSR's key")
    try:
        valid = csr.is_signature_valid
    except (ValueError, InvalidSignature):
        valid = False
    if not valid:
        raise CertError("the CSR's signature is invalid")
    return key


def _key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _spki(key: object) -> bytes:
    return _p256_public(key, "the key").public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _p256_public(key: object, what: str) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise CertError(f"{what} is not ECDSA P-256")
    return key


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        ski = x509.SubjectKeyIdentifier.from_public_key(
            _p256_public(issuer.public_key(), "the issuer's key")
        )
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return ""
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _address_san(addr: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(addr))
    except ValueError:
        pass
    if not _is_dns_name(addr):
        raise CertError(f"address {addr!r} is neither an IP address nor a DNS name")
    return x509.DNSName(addr)


def _is_dns_name(name: str) -> bool:
    if not name or len(name) > 253 or not name.isascii():
        return False
    return all(_DNS_LABEL.fullmatch(label) for label in name.split("."))


def _check_cn(name: str) -> str:
    if not name or len(name) > _CN_MAX:
        raise CertError(f"node name must be 1 to {_CN_MAX} characters, not {len(name)}")
    return name


def _check_cluster_id(cluster_id: str) -> None:
    if not _CLUSTER_ID.fullmatch(cluster_id):
        raise CertError(
            f"cluster id {cluster_id!r} must be 1 to 32 of A-Z a-z 0-9 . _ - "
            "(it is the host part of node URIs)"
        )


def _check_now(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


def _serial() -> int:
    # 159 random bits: positive and at most 20 octets once DER-encoded (RFC 5280 4.1.2.2).
    while True:
        serial = secrets.randbits(159)
        if serial:
            return serial
