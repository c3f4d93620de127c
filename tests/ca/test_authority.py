from __future__ import annotations

import base64
import ipaddress
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import DNSName
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from stack.ca.authority import (
    ROLE_CLIENT,
    ROLE_SERVER,
    CertError,
    RootCA,
    cert_not_after,
    create_root,
    cross_sign,
    fingerprint,
    load_root,
    make_csr,
    new_node_key,
    parse_node_cert,
    public_key_pem,
    renew_at,
    root_cluster_id,
    sign_node_cert,
    split_pem_chain,
)

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
CLUSTER = "c0ffee12"


def cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


T = TypeVar("T", bound=x509.ExtensionType)


def ext(c: x509.Certificate, kind: type[T]) -> x509.Extension[T]:
    return c.extensions.get_extension_for_class(kind)


def issue(
    ca: RootCA,
    *,
    node_id: int = 7,
    name: str = "node-a",
    role: str = ROLE_SERVER,
    cluster_id: str = CLUSTER,
    addresses: tuple[str, ...] = ("10.0.0.7", "::1", "node-a.internal"),
    lifetime: timedelta = timedelta(days=30),
    now: datetime = NOW,
    key: bytes | None = None,
) -> bytes:
    key = key or new_node_key()
    return sign_node_cert(
        ca,
        make_csr(key, node_id=node_id, name=name),
        node_id=node_id,
        name=name,
        role=role,
        cluster_id=cluster_id,
        addresses=addresses,
        now=now,
        lifetime=lifetime,
    )


@pytest.fixture(scope="module")
def root() -> RootCA:
    return create_root(cluster_id=CLUSTER, now=NOW)


def test_root_is_a_self_signed_p256_ca(root: RootCA) -> None:
    c = cert(root.cert_pem)
    key = c.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    bc = ext(c, x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ext(c, x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    ski = ext(c, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key)
    assert c.subject == c.issuer
    c.verify_directly_issued_by(c)
    cn = c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == f"stack root CA {CLUSTER} gen 1"
    assert c.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "stack"
    assert c.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert c.not_valid_after_utc == NOW + timedelta(days=3650)
    assert root_cluster_id(root.cert_pem) == CLUSTER
    assert root.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted
    assert public_key_pem(root.key_pem) == key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_root_generation_is_in_the_subject() -> None:
    c = cert(create_root(cluster_id=CLUSTER, now=NOW, generation=3).cert_pem)
    assert c.subject.rfc4514_string().startswith(f"O=stack,CN=stack root CA {CLUSTER} gen 3")


def test_time_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        create_root(cluster_id=CLUSTER, now=datetime(2030, 1, 1))


def test_bad_cluster_id_is_refused() -> None:
    with pytest.raises(CertError, match="cluster id"):
        create_root(cluster_id="a/b", now=NOW)


def test_node_cert_identity_sans_and_usages(root: RootCA) -> None:
    key = new_node_key()
    c = cert(issue(root, key=key, node_id=42, name="node-a", role=ROLE_CLIENT))
    san = ext(c, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.7"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["node-a", "node-a.internal"]
    assert "localhost" not in san.get_values_for_type(x509.DNSName)
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"stack://{CLUSTER}/node/42/client"
    ]
    subject = c.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-a"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "stack"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "client"
    assert list(ext(c, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    bc = ext(c, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = ext(c, x509.KeyUsage).value
    assert ku.digital_signature and ku.key_agreement and not ku.key_cert_sign
    root_ski = ext(cert(root.cert_pem), x509.SubjectKeyIdentifier).value.digest
    assert ext(c, x509.AuthorityKeyIdentifier).value.key_identifier == root_ski
    assert c.issuer == cert(root.cert_pem).subject
    c.verify_directly_issued_by(cert(root.cert_pem))
    assert c.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == public_key_pem(key)
    assert 0 < c.serial_number < 2**159
    assert c.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert c.not_valid_after_utc == NOW + timedelta(days=30)


def test_name_that_is_not_a_dns_name_gets_no_dns_san(root: RootCA) -> None:
    c = cert(issue(root, name="my laptop", addresses=("192.168.1.2",)))
    assert c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "my laptop"
    san = ext(c, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == []
    assert len(san.get_values_for_type(x509.IPAddress)) == 1


def test_duplicate_sans_are_dropped(root: RootCA) -> None:
    c = cert(issue(root, name="node-a", addresses=("node-a", "10.0.0.1", "10.0.0.1")))
    san = ext(c, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node-a"]
    assert len(san.get_values_for_type(x509.IPAddress)) == 1


def test_address_that_is_neither_ip_nor_dns_is_refused(root: RootCA) -> None:
    with pytest.raises(CertError, match="neither an IP address nor a DNS name"):
        issue(root, addresses=("10.0.0.1:7481",))


def test_sans_requested_in_the_csr_are_ignored(root: RootCA) -> None:
    key = serialization.load_pem_private_key(new_node_key(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("evil.example"),
                    x509.UniformResourceIdentifier(f"stack://{CLUSTER}/node/1/server"),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    pem = sign_node_cert(
        root,
        csr,
        node_id=9,
        name="node-b",
        role=ROLE_CLIENT,
        cluster_id=CLUSTER,
        addresses=(),
        now=NOW,
        lifetime=timedelta(days=1),
    )
    c = cert(pem)
    san = ext(c, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node-b"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"stack://{CLUSTER}/node/9/client"
    ]
    assert c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-b"


def test_lifetime_is_capped_at_the_ca_expiry() -> None:
    short = create_root(cluster_id=CLUSTER, now=NOW, lifetime=timedelta(days=10))
    c = cert(issue(short, lifetime=timedelta(days=30)))
    assert c.not_valid_after_utc == NOW + timedelta(days=10)
    assert cert_not_after(short.cert_pem) == c.not_valid_after_utc


def test_expired_ca_refuses_to_sign() -> None:
    short = create_root(cluster_id=CLUSTER, now=NOW, lifetime=timedelta(days=1))
    with pytest.raises(CertError, match="rotate the root"):
        issue(short, now=NOW + timedelta(days=2))


def test_serials_are_unique(root: RootCA) -> None:
    key = new_node_key()
    serials = {cert(issue(root, key=key)).serial_number for _ in range(40)}
    assert len(serials) == 40


def _pem_csr(der: bytes) -> bytes:
    body = base64.encodebytes(der)
    return b"-----BEGIN CERTIFICATE REQUEST-----\n" + body + b"-----END CERTIFICATE REQUEST-----\n"


def test_csr_with_a_bad_signature_is_refused(root: RootCA) -> None:
    csr = x509.load_pem_x509_csr(make_csr(new_node_key(), node_id=1, name="n"))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # last byte of the ECDSA signature's s value
    tampered = x509.load_der_x509_csr(bytes(der))
    assert not tampered.is_signature_valid
    for blob in (bytes(der), _pem_csr(bytes(der))):
        with pytest.raises(CertError, match="signature is invalid"):
            sign_node_cert(
                root,
                blob,
                node_id=1,
                name="n",
                role=ROLE_SERVER,
                cluster_id=CLUSTER,
                addresses=(),
                now=NOW,
                lifetime=timedelta(days=1),
            )


def test_non_p256_csr_and_garbage_are_refused(root: RootCA) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "n")]))
        .sign(p384, hashes.SHA384())
        .public_bytes(serialization.Encoding.PEM)
    )
    for blob, match in ((csr, "P-256"), (b"not a csr", "malformed CSR")):
        with pytest.raises(CertError, match=match):
            sign_node_cert(
                root,
                blob,
                node_id=1,
                name="n",
                role=ROLE_SERVER,
                cluster_id=CLUSTER,
                addresses=(),
                now=NOW,
                lifetime=timedelta(days=1),
            )


def test_wrong_role_and_wrong_cluster_are_refused(root: RootCA) -> None:
    with pytest.raises(CertError, match="role must be"):
        issue(root, role="admin")
    with pytest.raises(CertError, match="belongs to cluster"):
        issue(root, cluster_id="other")


def test_parse_node_cert_round_trip(root: RootCA) -> None:
    pem = issue(root, node_id=1234567890123, name="node-z", role=ROLE_SERVER)
    der = cert(pem).public_bytes(serialization.Encoding.DER)
    root_ski = ext(cert(root.cert_pem), x509.SubjectKeyIdentifier).value.digest
    for blob in (pem, der):
        info = parse_node_cert(blob)
        assert info.node_id == 1234567890123
        assert info.role == ROLE_SERVER
        assert info.cluster_id == CLUSTER
        assert info.name == "node-z"
        assert info.serial == cert(pem).serial_number
        assert info.not_before == NOW - timedelta(minutes=5)
        assert info.not_after == NOW + timedelta(days=30)
        assert info.issuer_fingerprint_hint == root_ski.hex()


def _self_signed(sans: list[x509.GeneralName]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    "sans",
    [
        [],
        [x509.DNSName("example.com")],
        [x509.UniformResourceIdentifier("spiffe://td/ns/x")],
        [x509.UniformResourceIdentifier("stack://c/node/x/server")],
        [x509.UniformResourceIdentifier("stack://c/node/1/admin")],
        [
            x509.UniformResourceIdentifier("stack://c/node/1/server"),
            x509.UniformResourceIdentifier("stack://c/node/2/server"),
        ],
    ],
)
def test_parse_node_cert_refuses_non_stack_certs(sans: list[x509.GeneralName]) -> None:
    with pytest.raises(CertError, match="stack"):
        parse_node_cert(_self_signed(sans))


def test_parse_node_cert_refuses_the_root_and_garbage(root: RootCA) -> None:
    with pytest.raises(CertError):
        parse_node_cert(root.cert_pem)
    with pytest.raises(CertError, match="malformed certificate"):
        parse_node_cert(b"\x30\x03\x02\x01\x01")


def test_renew_at_is_half_life(root: RootCA) -> None:
    info = parse_node_cert(issue(root, lifetime=timedelta(days=30)))
    half = info.not_before + (info.not_after - info.not_before) / 2
    assert renew_at(info) == half
    assert renew_at(info, 0.75) == info.not_before + (info.not_after - info.not_before) * 0.75
    with pytest.raises(ValueError):
        renew_at(info, 1.5)


def test_cross_signed_new_root_verifies_leaf_up_to_old_root(root: RootCA) -> None:
    new = create_root(cluster_id=CLUSTER, now=NOW + timedelta(days=1), generation=2)
    later = NOW + timedelta(days=2)
    cross_pem = cross_sign(new.cert_pem, root, now=later)
    leaf = cert(issue(new, name="node-a", now=later))
    cross, new_c, old_c = cert(cross_pem), cert(new.cert_pem), cert(root.cert_pem)

    assert cross.subject == new_c.subject
    assert cross.issuer == old_c.subject
    assert cross.public_key() == new_c.public_key()
    assert (
        ext(cross, x509.SubjectKeyIdentifier).value == ext(new_c, x509.SubjectKeyIdentifier).value
    )
    old_ski = ext(old_c, x509.SubjectKeyIdentifier).value.digest
    assert ext(cross, x509.AuthorityKeyIdentifier).value.key_identifier == old_ski
    assert ext(cross, x509.BasicConstraints).value.ca
    assert cross.not_valid_after_utc == min(new_c.not_valid_after_utc, old_c.not_valid_after_utc)
    cross.verify_directly_issued_by(old_c)
    leaf.verify_directly_issued_by(cross)

    policy = PolicyBuilder().store(Store([old_c])).time(later)
    chain = policy.build_server_verifier(DNSName("node-a")).verify(leaf, [cross])
    assert [c.subject for c in chain] == [leaf.subject, new_c.subject, old_c.subject]
    client = policy.build_client_verifier().verify(leaf, [cross])
    assert x509.UniformResourceIdentifier(f"stack://{CLUSTER}/node/7/server") in (
        client.subjects or []
    )
    # Without the cross-certificate the old root alone does not reach the leaf.
    with pytest.raises(VerificationError):
        policy.build_client_verifier().verify(leaf, [])
    # And the leaf is not signed by the old root directly.
    with pytest.raises((ValueError, InvalidSignature)):
        leaf.verify_directly_issued_by(old_c)


def test_cross_sign_validity_is_capped_by_the_old_root() -> None:
    old = create_root(cluster_id=CLUSTER, now=NOW, lifetime=timedelta(days=100))
    new = create_root(cluster_id=CLUSTER, now=NOW, generation=2)
    cross = cert(cross_sign(new.cert_pem, old, now=NOW))
    assert cross.not_valid_after_utc == NOW + timedelta(days=100)


def test_cross_sign_needs_a_new_subject(root: RootCA) -> None:
    same_gen = create_root(cluster_id=CLUSTER, now=NOW, generation=1)
    with pytest.raises(CertError, match="new generation"):
        cross_sign(same_gen.cert_pem, root, now=NOW)


def test_load_root_round_trip_and_mismatched_key(root: RootCA) -> None:
    assert load_root(root.cert_pem, root.key_pem) == root
    other = create_root(cluster_id=CLUSTER, now=NOW)
    with pytest.raises(CertError, match="does not match"):
        load_root(root.cert_pem, other.key_pem)
    with pytest.raises(CertError, match="unreadable private key"):
        load_root(root.cert_pem, b"garbage")
    key = new_node_key()
    leaf = issue(root, key=key)
    with pytest.raises(CertError, match="not a CA"):
        load_root(leaf, key)


def test_load_root_normalises_the_key_to_pkcs8(root: RootCA) -> None:
    key = serialization.load_pem_private_key(root.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    sec1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert sec1.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert load_root(root.cert_pem, sec1).key_pem == root.key_pem


def test_fingerprint_accepts_pem_and_der(root: RootCA) -> None:
    c = cert(root.cert_pem)
    der = c.public_bytes(serialization.Encoding.DER)
    fp = fingerprint(root.cert_pem)
    assert fp == fingerprint(der) == c.fingerprint(hashes.SHA256()).hex()
    assert len(fp) == 64
    assert fp != fingerprint(create_root(cluster_id=CLUSTER, now=NOW).cert_pem)


def test_split_pem_chain(root: RootCA) -> None:
    leaf = issue(root)
    bundle = leaf + b"\n" + new_node_key() + root.cert_pem
    parts = split_pem_chain(bundle)
    assert [fingerprint(p) for p in parts] == [fingerprint(leaf), fingerprint(root.cert_pem)]
    assert all(b"PRIVATE KEY" not in p for p in parts)
    assert split_pem_chain(b"") == []
    with pytest.raises(CertError):
        split_pem_chain(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_make_csr(root: RootCA) -> None:
    key = new_node_key()
    csr = x509.load_pem_x509_csr(make_csr(key, node_id=5, name="node-q"))
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-q"
    assert csr.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == public_key_pem(key)
    with pytest.raises(CertError, match="1 to 64"):
        make_csr(key, node_id=5, name="x" * 65)
