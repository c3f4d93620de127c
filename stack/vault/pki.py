"""Vault's PKI engine, pure: the issuer, name rules, issuing, signing CSRs, CRLs.

No asyncio, no agent, no clock: time comes in as an aware UTC ``datetime`` and
serial numbers are chosen by the caller (`new_serial`), so everything here is a
function of its arguments except the fresh keys it generates. The engine
(`pki_backend.py`) keeps the replicated state (`stack/state/pki.py`).

The issuer of a PKI mount is an intermediate CA signed by the cluster root
(`make_intermediate`), so every workload that trusts the cluster already trusts
its certificates. `Issuer` loads its key and certificate once; `issue` then does
only the per-certificate work: one key generation, one signature.

Names follow Vault's role rules (`check_names`, in `pki_names.py`): bare domains, subdomains of any
depth (and wildcards over them), glob patterns, localhost, IP SANs, hostname
enforcement, emails. Deviations, each for a clearer 4xx: an alt name that is
neither a hostname nor an email is refused (Vault drops it silently); a lifetime
past the issuer's expiry is cut to it with a warning (Vault's
leaf_not_after_behavior "truncate"; our issuer is renewed well before it ends).

Errors are `PkiError` (a ValueError) with a message meant for the user (400).
"""

from __future__ import annotations

import base64
import functools
import math
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from stack.ca import authority
from stack.ca.authority import CertError, RootCA
from stack.state.pki import check_serial
from stack.state.pki_role import DEFAULT_BITS, Role
from stack.vault.pki_names import (
    IpAddress,
    Names,
    PkiError,
    check_names,
    checked_names,
    glob_match,
)
from stack.vault.timefmt import go_duration

__all__ = [
    "CRL_EXPIRY",
    "DEFAULT_TTL",
    "INTERMEDIATE_TTL",
    "MAX_TTL",
    "IssuedCert",
    "Issuer",
    "Names",
    "PkiError",
    "Role",
    "check_names",
    "format_serial",
    "glob_match",
    "issue",
    "make_crl",
    "make_intermediate",
    "new_serial",
    "parse_serial",
    "sign_csr",
]

# Vault's system default and maximum lease TTL (768h), which a mount's roles fall
# back to.
DEFAULT_TTL = 768 * 3600.0
MAX_TTL = 768 * 3600.0
INTERMEDIATE_TTL = timedelta(days=365)
CRL_EXPIRY = 72 * 3600.0  # Vault's default CRL lifetime

_CURVES: dict[int, ec.EllipticCurve] = {
    224: ec.SECP224R1(),
    256: ec.SECP256R1(),
    384: ec.SECP384R1(),
    521: ec.SECP521R1(),
}
_KEY_USAGE_ARGS = {
    "DigitalSignature": "digital_signature",
    "ContentCommitment": "content_commitment",
    "KeyEncipherment": "key_encipherment",
    "DataEncipherment": "data_encipherment",
    "KeyAgreement": "key_agreement",
    "CertSign": "key_cert_sign",
    "CRLSign": "crl_sign",
    "EncipherOnly": "encipher_only",
    "DecipherOnly": "decipher_only",
}
LeafPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


# -- serial numbers ------------------------------------------------------------------


def new_serial() -> int:
    """A random positive serial of at most 159 bits (20 octets in DER, RFC 5280)."""
    while True:
        serial = secrets.randbits(159)
        if serial:
            return serial


def format_serial(serial: int) -> str:
    """Vault's form: big-endian bytes, lower-case hex, joined by ":" ("3a:0f:...")."""
    if serial <= 0:
        raise PkiError(f"serial numbers are positive, not {serial}")
    raw = serial.to_bytes((serial.bit_length() + 7) // 8, "big")
    return raw.hex(":")


def parse_serial(text: str) -> int:
    """A serial given as "xx:xx:..", "xx-xx-.." (both accepted by Vault's cert/<serial>)
    or plain hex, any case."""
    cleaned = text.strip().lower().replace("-", ":")
    if ":" not in cleaned and len(cleaned) % 2 == 0:
        cleaned = ":".join(cleaned[i : i + 2] for i in range(0, len(cleaned), 2))
    try:
        check_serial(cleaned)
    except ValueError as e:
        raise PkiError(str(e)) from None
    return int(cleaned.replace(":", ""), 16)


def canonical_serial(text: str) -> str:
    """Any accepted spelling of a serial in the stored "xx:xx:.." form."""
    return format_serial(parse_serial(text))


# -- the issuer ----------------------------------------------------------------------


def make_intermediate(
    root: RootCA, *, mount: str, cluster_id: str, now: datetime, ttl: timedelta = INTERMEDIATE_TTL
) -> tuple[bytes, bytes]:
    """(certificate PEM, PKCS8 key PEM) of a new P-256 intermediate CA for `mount`,
    signed by the cluster root: path length 0, keyCertSign and cRLSign, valid for
    `ttl` or until the root expires, whichever is first."""
    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cn = f"stack pki {mount.rstrip('/')} {cluster_id}"
    if len(cn) > 64:  # ub-common-name
        cn = cn[:63] + "~"
    try:
        cert_pem = authority.sign_intermediate(
            root, public_pem, subject_cn=cn, now=now, lifetime=ttl
        )
    except CertError as e:
        raise PkiError(f"cannot make the PKI issuer: {e}") from None
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert_pem, key_pem


class Issuer:
    """A loaded issuing CA: parsed once, then used for every certificate and CRL.

    `chain` is the PEM of the certificates above it (the cluster root, and the
    cross-certificate after a root rotation), as Vault's `ca_chain` shows them.
    """

    __slots__ = (
        "_aki",
        "_hash",
        "ca_chain",
        "cert",
        "cert_der",
        "issuing_ca",
        "key",
        "not_after",
        "subject",
    )

    def __init__(self, cert_pem: bytes, key_pem: bytes, chain: Sequence[bytes] = ()) -> None:
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
            above = [x509.load_pem_x509_certificate(c) for c in chain]
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise PkiError(f"unreadable issuer certificate or key: {e}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise PkiError("the issuer key must be EC or RSA")
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
            raise PkiError("the issuer key does not match the issuer certificate")
        try:
            if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                raise PkiError("the issuer certificate is not a CA certificate")
            ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound as e:
            raise PkiError(f"the issuer lacks extension {e.oid.dotted_string}") from None
        self.cert = cert
        self.key = key
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.subject = cert.subject
        self.not_after = cert.not_valid_after_utc
        self.issuing_ca = _pem(self.cert_der, "CERTIFICATE")
        above_pem = [_pem(c.public_bytes(serialization.Encoding.DER), "CERTIFICATE") for c in above]
        self.ca_chain = (self.issuing_ca, *above_pem)
        self._aki = x509.Extension(
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
            False,
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
        )
        self._hash: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 = hashes.SHA256()
        if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
            self._hash = hashes.SHA384() if key.curve.key_size <= 384 else hashes.SHA512()

    def sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.sign(self.key, self._hash)


# -- certificates --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedCert:
    certificate_pem: str  # PEM, no trailing newline (as Vault prints it)
    certificate_der: bytes  # what the state stores
    private_key_pem: str  # "" for a signed CSR
    private_key_type: str  # "ec", "rsa", "ed25519"; "" for a signed CSR
    serial_number: str  # "xx:xx:.."
    expiration: int  # unix seconds
    issuing_ca: str
    ca_chain: tuple[str, ...]  # the issuing CA, then the cluster root above it
    warnings: tuple[str, ...] = ()

    def to_response(self, fmt: str = "pem") -> dict[str, Any]:
        """Vault's response data for issue/ and sign/ in format pem, der or pem_bundle."""
        if fmt not in ("pem", "der", "pem_bundle"):
            raise PkiError(f'unknown format {fmt!r}: "pem", "der" or "pem_bundle"')
        conv = _pem_to_b64der if fmt == "der" else (lambda pem: pem)
        cert = conv(self.certificate_pem)
        if fmt == "pem_bundle":  # Vault: the key, the certificate and the issuing CA
            parts = (self.private_key_pem, self.certificate_pem, self.issuing_ca)
            cert = "\n".join(p for p in parts if p)
        data: dict[str, Any] = {
            "certificate": cert,
            "issuing_ca": conv(self.issuing_ca),
            "ca_chain": [conv(c) for c in self.ca_chain],
            "serial_number": self.serial_number,
            "expiration": self.expiration,
        }
        if self.private_key_pem:
            data["private_key"] = conv(self.private_key_pem)
            data["private_key_type"] = self.private_key_type
        return data


def issue(
    issuer: Issuer,
    role: Role,
    *,
    common_name: str,
    alt_names: Iterable[str] = (),
    ip_sans: Iterable[str] = (),
    ttl: float = 0.0,
    now: datetime,
    serial: int,
    exclude_cn_from_sans: bool = False,
    private_key_format: str = "der",
) -> IssuedCert:
    """A new key and a certificate for it (Vault's issue/<role>).

    `ttl` seconds (0: the role's, else DEFAULT_TTL), capped by the role's max_ttl
    (else MAX_TTL) and by the issuer's expiry, each with a warning.
    `private_key_format` "der" (Vault's default: SEC1 "EC PRIVATE KEY", PKCS1 for
    RSA) or "pkcs8".
    """
    if role.key_type == "any":
        raise PkiError('role key type "any" not allowed for issuing certificates, only signing')
    if private_key_format not in ("der", "pkcs8", ""):
        raise PkiError(f'unknown private_key_format {private_key_format!r}: "der" or "pkcs8"')
    names = check_names(
        role, common_name, alt_names, ip_sans, exclude_cn_from_sans=exclude_cn_from_sans
    )
    not_before, not_after, warnings = _validity(issuer, role, ttl, now)
    key = _generate_key(role)
    cert = _build(issuer, role, names, key.public_key(), serial, not_before, not_after)
    pkcs8 = private_key_format == "pkcs8" or role.key_type == "ed25519"
    fmt = (
        serialization.PrivateFormat.PKCS8
        if pkcs8
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    key_text = key_pem.decode().strip()
    return _issued(issuer, cert, serial, not_after, (key_text, role.key_type), warnings)


def sign_csr(
    issuer: Issuer,
    role: Role,
    csr: str | bytes,
    *,
    common_name: str = "",
    alt_names: Iterable[str] = (),
    ip_sans: Iterable[str] = (),
    ttl: float = 0.0,
    now: datetime,
    serial: int,
    exclude_cn_from_sans: bool = False,
) -> IssuedCert:
    """A certificate for the key in a PEM CSR (Vault's sign/<role>).

    The CSR must parse and its signature must verify; its key must suit the role.
    With the role's use_csr_common_name (default) the CSR's CN wins over
    `common_name`; with use_csr_sans (default) the CSR's SANs replace `alt_names`
    and `ip_sans`. Every name is then checked as for `issue`.
    """
    req = _load_csr(csr)
    try:
        public_key = req.public_key()
        valid = req.is_signature_valid
    except (ValueError, UnsupportedAlgorithm, InvalidSignature) as e:
        raise PkiError(f"certificate request could not be parsed: {e}") from None
    if not valid:
        raise PkiError("request signature invalid")
    public_key = _check_csr_key(role, public_key)
    cn = ""
    if role.use_csr_common_name:
        attrs = req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = str(attrs[0].value) if attrs else ""
    cn = cn or common_name
    if role.use_csr_sans:
        dns, emails, ips = _csr_sans(req)
        if ips and not role.allow_ip_sans:
            raise PkiError(
                "IP Subject Alternative Names are not allowed in this role, "
                "but was provided some via CSR"
            )
        names = checked_names(role, cn, dns, emails, ips, exclude_cn_from_sans)
    else:
        names = check_names(role, cn, alt_names, ip_sans, exclude_cn_from_sans=exclude_cn_from_sans)
    not_before, not_after, warnings = _validity(issuer, role, ttl, now)
    cert = _build(issuer, role, names, public_key, serial, not_before, not_after)
    return _issued(issuer, cert, serial, not_after, ("", ""), warnings)


def _load_csr(csr: str | bytes) -> x509.CertificateSigningRequest:
    data = csr.encode() if isinstance(csr, str) else csr
    if not data.strip():
        raise PkiError('"csr" is empty')
    if b"-----BEGIN" not in data:
        raise PkiError("csr contains no data (expected a PEM certificate request)")
    try:
        return x509.load_pem_x509_csr(data)
    except ValueError as e:
        raise PkiError(f"certificate request could not be parsed: {e}") from None


def _check_csr_key(role: Role, key: object) -> LeafPublicKey:
    """The CSR's key if it suits the role (Vault's rules: the role's key type or any,
    at least its key_bits, RSA at least 2048 bits)."""
    if isinstance(key, rsa.RSAPublicKey):
        actual, bits = "rsa", key.key_size
    elif isinstance(key, ec.EllipticCurvePublicKey):
        actual, bits = "ec", key.curve.key_size
    elif isinstance(key, ed25519.Ed25519PublicKey):
        actual, bits = "ed25519", 0
    else:
        raise PkiError(f"unknown key type in CSR: {type(key).__name__}")
    if role.key_type != "any" and actual != role.key_type:
        raise PkiError(f"role requires keys of type {role.key_type}")
    minimum = role.key_bits or DEFAULT_BITS[role.key_type]
    if role.key_type == "any":
        minimum = {"rsa": 2048, "ec": 224}.get(actual, 0)
    if bits < minimum:
        raise PkiError(
            f"role requires a minimum of a {minimum}-bit key, but CSR's key is {bits} bits"
        )
    if actual == "rsa" and bits < 2048:
        raise PkiError(f"Vault requires a minimum of a 2048-bit key, but CSR's key is {bits} bits")
    return key


def _csr_sans(req: x509.CertificateSigningRequest) -> tuple[list[str], list[str], list[IpAddress]]:
    try:
        san = req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], [], []
    except ValueError as e:
        raise PkiError(f"certificate request could not be parsed: {e}") from None
    dns = list(san.get_values_for_type(x509.DNSName))
    emails = list(san.get_values_for_type(x509.RFC822Name))
    ips = [ip for ip in san.get_values_for_type(x509.IPAddress) if isinstance(ip, IpAddress)]
    if san.get_values_for_type(x509.UniformResourceIdentifier):
        raise PkiError(
            "URI Subject Alternative Names are not allowed in this role, but were provided via CSR"
        )
    known = len(dns) + len(emails) + len(san.get_values_for_type(x509.IPAddress))
    if known != len(san):
        raise PkiError(
            "the CSR asks for subject alternative names of a type this engine does not sign"
        )
    return dns, emails, ips


def _validity(
    issuer: Issuer, role: Role, ttl: float, now: datetime
) -> tuple[datetime, datetime, tuple[str, ...]]:
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    if not (math.isfinite(ttl) and ttl >= 0):
        raise PkiError("ttl must be a non-negative duration")
    warnings: list[str] = []
    wanted = ttl or role.ttl or DEFAULT_TTL
    limit = role.max_ttl or MAX_TTL
    if wanted > limit:
        warnings.append(
            f'TTL "{go_duration(wanted)}" is longer than permitted maxTTL '
            f'"{go_duration(limit)}", so maxTTL is being used'
        )
        wanted = limit
    not_after = now + timedelta(seconds=wanted)
    if not_after > issuer.not_after:
        not_after = issuer.not_after
        warnings.append(
            f"the lifetime was cut to the issuer's expiry ({issuer.not_after.isoformat()})"
        )
    if not_after <= now:
        raise PkiError(f"the issuer expired at {issuer.not_after.isoformat()}")
    not_before = now - timedelta(seconds=role.not_before_duration)
    return not_before, not_after, tuple(warnings)


def _generate_key(
    role: Role,
) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    bits = role.key_bits or DEFAULT_BITS[role.key_type]
    if role.key_type == "ec":
        curve = _CURVES.get(bits)
        if curve is None:
            raise PkiError(f"unsupported bit length for EC key: {bits}")
        return ec.generate_private_key(curve)
    if role.key_type == "rsa":
        if bits < 2048:
            raise PkiError("RSA keys < 2048 bits are unsafe and not supported")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if role.key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise PkiError(f"unsupported key_type {role.key_type!r}")


@functools.lru_cache(maxsize=256)
def _role_extensions(role: Role) -> tuple[x509.Extension[Any], ...]:
    """The extensions every certificate of `role` shares, built once per role."""
    out: list[x509.Extension[Any]] = []
    if role.key_usage:
        flags = {arg: False for arg in _KEY_USAGE_ARGS.values()}
        for usage in role.key_usage:
            if usage not in _KEY_USAGE_ARGS:
                raise PkiError(f"unknown key_usage {usage!r}")
            flags[_KEY_USAGE_ARGS[usage]] = True
        out.append(x509.Extension(ExtensionOID.KEY_USAGE, True, x509.KeyUsage(**flags)))
    ekus = [
        oid
        for wanted, oid in (
            (role.server_flag, ExtendedKeyUsageOID.SERVER_AUTH),
            (role.client_flag, ExtendedKeyUsageOID.CLIENT_AUTH),
            (role.code_signing_flag, ExtendedKeyUsageOID.CODE_SIGNING),
            (role.email_protection_flag, ExtendedKeyUsageOID.EMAIL_PROTECTION),
        )
        if wanted
    ]
    if ekus:
        out.append(
            x509.Extension(ExtensionOID.EXTENDED_KEY_USAGE, False, x509.ExtendedKeyUsage(ekus))
        )
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _role_subject(role: Role) -> tuple[x509.NameAttribute[str], ...]:
    return tuple(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in role.organization]
        + [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, u) for u in role.ou]
    )


def _build(
    issuer: Issuer,
    role: Role,
    names: Names,
    public_key: LeafPublicKey,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    attrs = list(_role_subject(role))
    if names.common_name:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, names.common_name))
    extensions = list(_role_extensions(role))
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in names.dns]
    sans += [x509.RFC822Name(e) for e in names.emails]
    sans += [x509.IPAddress(ip) for ip in names.ips]
    if sans:
        san = x509.SubjectAlternativeName(sans)
        extensions.append(x509.Extension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, False, san))
    extensions.append(issuer._aki)
    builder = x509.CertificateBuilder(
        issuer_name=issuer.subject,
        subject_name=x509.Name(attrs),
        public_key=public_key,
        serial_number=serial,
        not_valid_before=not_before,
        not_valid_after=not_after,
        extensions=extensions,
    )
    return issuer.sign(builder)


def _issued(
    issuer: Issuer,
    cert: x509.Certificate,
    serial: int,
    not_after: datetime,
    key: tuple[str, str],
    warnings: tuple[str, ...],
) -> IssuedCert:
    """The answer, from what the caller already knows (re-reading the certificate's
    fields would parse it again)."""
    der = cert.public_bytes(serialization.Encoding.DER)
    key_pem, key_type = key
    return IssuedCert(
        certificate_pem=_pem(der, "CERTIFICATE"),
        certificate_der=der,
        private_key_pem=key_pem,
        private_key_type=key_type,
        serial_number=format_serial(serial),
        expiration=int(not_after.timestamp()),
        issuing_ca=issuer.issuing_ca,
        ca_chain=issuer.ca_chain,
        warnings=warnings,
    )


# -- CRLs ----------------------------------------------------------------------------


def make_crl(
    issuer: Issuer,
    revoked: Iterable[tuple[int, datetime]],
    *,
    number: int,
    now: datetime,
    next_update: datetime,
) -> tuple[bytes, bytes]:
    """(PEM, DER) of a CRL signed by the issuer listing `revoked` (serial, time)."""
    if next_update <= now:
        raise PkiError("a CRL's next update must come after its this update")
    entries = [
        x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        for serial, when in revoked
    ]
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=issuer.subject,
        last_update=now,
        next_update=next_update,
        extensions=[
            issuer._aki,
            x509.Extension(ExtensionOID.CRL_NUMBER, False, x509.CRLNumber(number)),
        ],
        revoked_certificates=entries,
    )
    crl = builder.sign(issuer.key, issuer._hash)
    return crl.public_bytes(serialization.Encoding.PEM), crl.public_bytes(
        serialization.Encoding.DER
    )


# -- PEM -----------------------------------------------------------------------------


def _pem(der: bytes, label: str) -> str:
    """PEM text without the trailing newline, as Vault returns it."""
    b64 = base64.b64encode(der).decode("ascii")
    body = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"


def pem_from_der(der: bytes, label: str = "CERTIFICATE") -> str:
    return _pem(der, label)


def _pem_to_b64der(pem: str) -> str:
    """Vault's format=der: the base64 of the DER, on one line."""
    return "".join(line for line in pem.splitlines() if line and not line.startswith("-----"))
