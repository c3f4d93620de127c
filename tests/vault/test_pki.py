"""The PKI engine's pure core: the intermediate under the cluster root, Vault's role
name rules, issuing, TTL caps, signing CSRs (good, forged, out of role), CRLs and
serial numbers."""

from __future__ import annotations

import base64
import ipaddress
import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import DNSName, PolicyBuilder, Store

from stack.ca import authority
from stack.ca.authority import RootCA
from stack.state.pki_role import Role
from stack.vault import pki
from stack.vault.pki import Issuer, PkiError
from stack.vault.pki_names import name_allowed

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
HOUR = 3600.0


@pytest.fixture(scope="module")
def root() -> RootCA:
    return authority.create_root(cluster_id="c1", now=NOW - timedelta(days=1))


@pytest.fixture(scope="module")
def issuer(root: RootCA) -> Issuer:
    cert, key = pki.make_intermediate(root, mount="pki/", cluster_id="c1", now=NOW)
    return Issuer(cert, key, [root.cert_pem])


def role(**fields: object) -> Role:
    return Role(**fields).validated()  # type: ignore[arg-type]


EXAMPLE = role(allowed_domains=("example.com",), allow_subdomains=True)


def _verify(root: RootCA, issuer: Issuer, pem: str, name: str) -> list[x509.Certificate]:
    store = Store([x509.load_pem_x509_certificate(root.cert_pem)])
    verifier = PolicyBuilder().store(store).time(NOW).build_server_verifier(DNSName(name))
    leaf = x509.load_pem_x509_certificate(pem.encode())
    return verifier.verify(leaf, [issuer.cert])


def _issue(issuer: Issuer, r: Role = EXAMPLE, **kw: object) -> pki.IssuedCert:
    kw.setdefault("common_name", "a.example.com")
    return pki.issue(issuer, r, now=NOW, serial=pki.new_serial(), **kw)  # type: ignore[arg-type]


def _csr(
    cn: str = "svc.example.com",
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
) -> tuple[bytes, object]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM), key.public_key()


# -- the intermediate ----------------------------------------------------------------


def test_intermediate_is_a_leaf_only_ca_signed_by_the_cluster_root(
    root: RootCA, issuer: Issuer
) -> None:
    root_cert = x509.load_pem_x509_certificate(root.cert_pem)
    issuer.cert.verify_directly_issued_by(root_cert)
    bc = issuer.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    ku = issuer.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    aki = issuer.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert (
        isinstance(issuer.key, ec.EllipticCurvePrivateKey) and issuer.key.curve.name == "secp256r1"
    )
    assert issuer.ca_chain[1] == root.cert_pem.decode().strip()


def test_intermediate_never_outlives_the_root() -> None:
    short = authority.create_root(cluster_id="c1", now=NOW, lifetime=timedelta(days=10))
    cert, _ = pki.make_intermediate(short, mount="pki/", cluster_id="c1", now=NOW)
    assert authority.cert_not_after(cert) == authority.cert_not_after(short.cert_pem)


def test_issuer_refuses_a_key_that_is_not_its_own(root: RootCA) -> None:
    cert, _ = pki.make_intermediate(root, mount="pki/", cluster_id="c1", now=NOW)
    _, other_key = pki.make_intermediate(root, mount="pki/", cluster_id="c1", now=NOW)
    with pytest.raises(PkiError, match="does not match"):
        Issuer(cert, other_key)


def test_issuer_refuses_a_leaf_certificate(issuer: Issuer) -> None:
    got = _issue(issuer)
    with pytest.raises(PkiError, match=r"not a CA|lacks"):
        Issuer(got.certificate_pem.encode(), got.private_key_pem.encode())


# -- issuing -------------------------------------------------------------------------


def test_issued_leaf_chains_to_the_cluster_root(root: RootCA, issuer: Issuer) -> None:
    got = _issue(issuer, alt_names=["b.example.com"], ip_sans=["10.0.0.7"])
    chain = _verify(root, issuer, got.certificate_pem, "b.example.com")
    assert len(chain) == 3
    leaf = x509.load_pem_x509_certificate(got.certificate_pem.encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["a.example.com", "b.example.com"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "a.example.com"
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert got.issuing_ca == issuer.issuing_ca and got.ca_chain == issuer.ca_chain
    assert got.certificate_der == leaf.public_bytes(serialization.Encoding.DER)


def test_issued_key_is_p256_sec1_and_matches_the_certificate(issuer: Issuer) -> None:
    got = _issue(issuer)
    assert got.private_key_type == "ec"
    assert got.private_key_pem.startswith("-----BEGIN EC PRIVATE KEY-----")
    key = serialization.load_pem_private_key(got.private_key_pem.encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    leaf = x509.load_pem_x509_certificate(got.certificate_pem.encode())
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert key.public_key().public_bytes(der, spki) == leaf.public_key().public_bytes(der, spki)
    pkcs8 = _issue(issuer, private_key_format="pkcs8")
    assert pkcs8.private_key_pem.startswith("-----BEGIN PRIVATE KEY-----")


def test_each_issue_makes_a_new_key(issuer: Issuer) -> None:
    assert _issue(issuer).private_key_pem != _issue(issuer).private_key_pem


def test_rsa_and_ed25519_roles(root: RootCA, issuer: Issuer) -> None:
    got = _issue(
        issuer, role(allowed_domains=("example.com",), allow_subdomains=True, key_type="rsa")
    )
    assert got.private_key_type == "rsa"
    assert got.private_key_pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    _verify(root, issuer, got.certificate_pem, "a.example.com")
    ed = _issue(
        issuer, role(allowed_domains=("example.com",), allow_subdomains=True, key_type="ed25519")
    )
    assert ed.private_key_type == "ed25519"
    with pytest.raises(PkiError, match='"any" not allowed for issuing'):
        _issue(issuer, role(allow_any_name=True, key_type="any"))


def test_response_shapes(issuer: Issuer) -> None:
    got = _issue(issuer)
    data = got.to_response()
    assert set(data) == {"certificate", "issuing_ca", "ca_chain", "private_key",
                         "private_key_type", "serial_number", "expiration"}  # fmt: skip
    assert isinstance(data["expiration"], int) and isinstance(data["ca_chain"], list)
    der = got.to_response("der")
    assert "-----" not in der["certificate"]
    assert x509.load_der_x509_certificate(base64.b64decode(der["certificate"]))
    bundle = got.to_response("pem_bundle")["certificate"]
    assert bundle.count("BEGIN CERTIFICATE") == 2 and "PRIVATE KEY" in bundle
    with pytest.raises(PkiError, match="unknown format"):
        got.to_response("pkcs12")


def test_organization_and_ou_from_the_role(issuer: Issuer) -> None:
    r = role(allow_any_name=True, organization=("Acme",), ou=("Ops", "Web"))
    leaf = x509.load_pem_x509_certificate(_issue(issuer, r).certificate_pem.encode())
    assert [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "Acme"
    ]
    ous = leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [a.value for a in ous] == ["Ops", "Web"]


# -- TTLs ----------------------------------------------------------------------------


def test_ttl_defaults_to_the_role_then_to_768h(issuer: Issuer) -> None:
    assert _issue(issuer).expiration == int(NOW.timestamp() + pki.DEFAULT_TTL)
    r = role(allowed_domains=("example.com",), allow_subdomains=True, ttl=2 * HOUR)
    assert _issue(issuer, r).expiration == int(NOW.timestamp() + 2 * HOUR)
    assert _issue(issuer, r, ttl=HOUR).expiration == int(NOW.timestamp() + HOUR)


def test_ttl_is_capped_by_the_role_max_ttl_with_a_warning(issuer: Issuer) -> None:
    r = role(allowed_domains=("example.com",), allow_subdomains=True, max_ttl=HOUR)
    got = _issue(issuer, r, ttl=5 * HOUR)
    assert got.expiration == int(NOW.timestamp() + HOUR)
    assert got.warnings == ('TTL "5h0m0s" is longer than permitted maxTTL "1h0m0s", '
                            "so maxTTL is being used",)  # fmt: skip


def test_ttl_is_capped_by_the_issuer_expiry(root: RootCA) -> None:
    cert, key = pki.make_intermediate(
        root, mount="pki/", cluster_id="c1", now=NOW, ttl=timedelta(hours=2)
    )
    short = Issuer(cert, key)
    got = _issue(short, ttl=10 * HOUR)
    assert got.expiration == int(short.not_after.timestamp())
    assert any("issuer's expiry" in w for w in got.warnings)
    with pytest.raises(PkiError, match="issuer expired"):
        pki.issue(short, EXAMPLE, common_name="a.example.com",
                  now=NOW + timedelta(hours=3), serial=1)  # fmt: skip


def test_not_before_is_backdated_by_the_role(issuer: Issuer) -> None:
    leaf = x509.load_pem_x509_certificate(_issue(issuer).certificate_pem.encode())
    assert leaf.not_valid_before_utc == NOW - timedelta(seconds=30)


# -- role name rules (Vault's validateNames) -----------------------------------------

SUB = {"allowed_domains": ("example.com",), "allow_subdomains": True}
BARE = {"allowed_domains": ("example.com",), "allow_bare_domains": True}
GLOB = {"allowed_domains": ("ftp*.example.com", "*.glob.org"), "allow_glob_domains": True}


@pytest.mark.parametrize(
    ("fields", "name", "allowed"),
    [
        (SUB, "foo.example.com", True),
        (SUB, "a.b.c.example.com", True),  # any depth
        (SUB, "example.com", False),  # the bare domain needs allow_bare_domains
        (SUB, "*.example.com", True),  # a wildcard over the domain
        (SUB, "*.foo.example.com", True),
        (SUB, "fooexample.com", False),
        (SUB, "foo.example.org", False),
        (SUB, "*.*.example.com", False),  # one wildcard at most
        (SUB, "a.*.example.com", False),  # only in the left-most label
        (SUB, "foo*.example.com", True),  # a partial left-most wildcard (RFC 6125)
        ({**SUB, "allow_wildcard_certificates": False}, "*.example.com", False),
        (BARE, "example.com", True),
        (BARE, "EXAMPLE.com", True),  # bare matches ignore case
        (BARE, "foo.example.com", False),
        ({**BARE, **SUB}, "example.com", True),
        (GLOB, "ftp01.example.com", True),
        (GLOB, "ftp.a.example.com", True),  # "*" crosses dots, as go-glob does
        (GLOB, "www.example.com", False),
        (GLOB, "a.b.glob.org", True),
        ({**GLOB, "allow_glob_domains": False}, "ftp01.example.com", False),
        ({}, "localhost", True),  # allow_localhost defaults to true
        ({"allow_localhost": False}, "localhost", False),
        ({}, "foo.localhost", False),
        ({"allow_subdomains": True}, "foo.localhost", True),
        ({"allow_any_name": True}, "anything.at.all", True),
        ({"allow_any_name": True}, "bad_name.example.com", False),  # enforce_hostnames
        ({"allow_any_name": True, "enforce_hostnames": False}, "bad_name.example.com", True),
        ({}, "foo.example.com", False),  # nothing allowed at all
    ],
)
def test_role_name_rules(fields: dict[str, object], name: str, allowed: bool) -> None:
    r = role(**fields)
    assert name_allowed(r, name) is allowed
    if "_" in name:
        return  # a DNS SAN never carries "_": check_names refuses it whatever the role
    if allowed:
        assert pki.check_names(r, name).common_name == name
    else:
        with pytest.raises(PkiError, match=f"common name {re.escape(name)} not allowed"):
            pki.check_names(r, name)


def test_alt_names_are_checked_one_by_one_and_named_in_the_error() -> None:
    with pytest.raises(PkiError, match=r"subject alternate name evil.org not allowed"):
        pki.check_names(role(**SUB), "a.example.com", ["b.example.com", "evil.org"])
    with pytest.raises(PkiError, match=r"common name evil.org not allowed"):
        pki.check_names(role(**SUB), "evil.org")


def test_emails_follow_the_domain_rules() -> None:
    assert pki.check_names(role(**BARE), "me@example.com").emails == ("me@example.com",)
    assert pki.check_names(role(**SUB), "me@mail.example.com").emails == ("me@mail.example.com",)
    with pytest.raises(PkiError, match=r"email address you@evil.org not allowed"):
        pki.check_names(role(**BARE), "example.com", ["you@evil.org"])
    with pytest.raises(PkiError, match=r"common name a@b@example.com"):
        pki.check_names(role(**BARE), "a@b@example.com")


def test_ip_sans_need_allow_ip_sans_and_must_parse() -> None:
    got = pki.check_names(role(**SUB), "a.example.com", ip_sans=["10.1.2.3", "::1"])
    assert [str(ip) for ip in got.ips] == ["10.1.2.3", "::1"]
    with pytest.raises(PkiError, match="IP Subject Alternative Names are not allowed"):
        pki.check_names(role(**SUB, allow_ip_sans=False), "a.example.com", ip_sans=["10.1.2.3"])
    with pytest.raises(PkiError, match="not a valid IP address"):
        pki.check_names(role(**SUB), "a.example.com", ip_sans=["10.1.2"])


def test_common_name_rules() -> None:
    with pytest.raises(PkiError, match="common_name field is required"):
        pki.check_names(role(**SUB), "")
    assert pki.check_names(role(**SUB, require_cn=False), "", ["a.example.com"]).common_name == ""
    with pytest.raises(PkiError, match="at most 64"):
        pki.check_names(role(allow_any_name=True), "a" * 60 + ".example.com")
    # exclude_cn_from_sans keeps the CN out of the SANs but still checks it
    got = pki.check_names(
        role(**SUB), "a.example.com", ["b.example.com"], exclude_cn_from_sans=True
    )
    assert got.dns == ("b.example.com",)
    # cn_validations "disabled" skips the role's rules for the CN only
    free = pki.check_names(role(**SUB, cn_validations=("disabled",)), "Any Name At All")
    assert free.common_name == "Any Name At All" and free.dns == ()
    with pytest.raises(PkiError, match=r"common name me@example.com"):
        pki.check_names(role(**BARE, cn_validations=("hostname",)), "me@example.com")


def test_alt_names_that_are_not_names_are_refused() -> None:
    with pytest.raises(PkiError, match="neither a DNS name nor an email"):
        pki.check_names(role(allow_any_name=True), "a.example.com", ["not a name"])
    with pytest.raises(PkiError, match="empty or overlong label"):
        pki.check_names(role(allow_any_name=True), "a.example.com", ["a..example.com"])


def test_internationalized_names_become_a_labels() -> None:
    for allowed in ("bücher.example", "xn--bcher-kva.example"):
        r = role(allowed_domains=(allowed,), allow_subdomains=True, allow_bare_domains=True)
        assert pki.check_names(r, "bücher.example").dns == ("xn--bcher-kva.example",)
        assert pki.check_names(r, "a.bücher.example").dns == ("a.xn--bcher-kva.example",)


@pytest.mark.parametrize(
    ("pattern", "name", "match"),
    [
        ("*", "anything", True),
        ("abc", "abc", True),
        ("abc", "abcd", False),
        ("a*c", "abbbc", True),
        ("a*c", "abbbd", False),
        ("*.example.com", "x.y.example.com", True),
        ("*.example.com", "example.com", False),
        ("ftp*", "ftp.example.com", True),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "aXcYb", False),
        ("*mid*", "xxmidyy", True),
    ],
)
def test_glob_match_is_go_glob(pattern: str, name: str, match: bool) -> None:
    assert pki.glob_match(pattern, name) is match


# -- signing CSRs --------------------------------------------------------------------


def test_sign_uses_the_csr_key_and_names(root: RootCA, issuer: Issuer) -> None:
    csr, public_key = _csr("svc.example.com", dns=("svc2.example.com",), ips=("10.0.0.9",))
    got = pki.sign_csr(issuer, EXAMPLE, csr, now=NOW, serial=77)
    assert got.private_key_pem == "" and "private_key" not in got.to_response()
    leaf = x509.load_pem_x509_certificate(got.certificate_pem.encode())
    assert leaf.public_key() == public_key
    assert leaf.serial_number == 77 and got.serial_number == "4d"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["svc.example.com", "svc2.example.com"]
    _verify(root, issuer, got.certificate_pem, "svc2.example.com")


def test_sign_refuses_a_csr_with_a_bad_signature(issuer: Issuer) -> None:
    csr, _ = _csr()
    der = bytearray(x509.load_pem_x509_csr(csr).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the ECDSA signature's last integer
    forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(PkiError, match="request signature invalid"):
        pki.sign_csr(issuer, EXAMPLE, forged, now=NOW, serial=1)


def test_sign_refuses_names_outside_the_role(issuer: Issuer) -> None:
    csr, _ = _csr("svc.example.com", dns=("evil.org",))
    with pytest.raises(PkiError, match=r"subject alternate name evil.org not allowed"):
        pki.sign_csr(issuer, EXAMPLE, csr, now=NOW, serial=1)
    csr, _ = _csr("evil.org")
    with pytest.raises(PkiError, match=r"common name evil.org not allowed"):
        pki.sign_csr(issuer, EXAMPLE, csr, now=NOW, serial=1)
    csr, _ = _csr("svc.example.com", ips=("10.0.0.1",))
    with pytest.raises(PkiError, match="but was provided some via CSR"):
        pki.sign_csr(issuer, role(**SUB, allow_ip_sans=False), csr, now=NOW, serial=1)


@pytest.mark.parametrize(
    ("csr", "message"),
    [
        ("", '"csr" is empty'),
        ("hello", "csr contains no data"),
        ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
         "could not be parsed"),
    ],
)  # fmt: skip
def test_sign_refuses_what_is_not_a_csr(issuer: Issuer, csr: str, message: str) -> None:
    with pytest.raises(PkiError, match=message):
        pki.sign_csr(issuer, EXAMPLE, csr, now=NOW, serial=1)


def test_sign_checks_the_key_type_and_size(issuer: Issuer) -> None:
    rsa_csr, _ = _csr(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(PkiError, match="role requires keys of type ec"):
        pki.sign_csr(issuer, EXAMPLE, rsa_csr, now=NOW, serial=1)
    assert pki.sign_csr(issuer, role(**SUB, key_type="any"), rsa_csr, now=NOW, serial=1)
    p256, _ = _csr()
    with pytest.raises(PkiError, match="minimum of a 384-bit key"):
        pki.sign_csr(issuer, role(**SUB, key_bits=384), p256, now=NOW, serial=1)


def test_sign_can_take_names_from_the_request_instead(issuer: Issuer) -> None:
    csr, _ = _csr("evil.org", dns=("evil.org",))
    r = role(**SUB, use_csr_common_name=False, use_csr_sans=False)
    got = pki.sign_csr(issuer, r, csr, common_name="ok.example.com", now=NOW, serial=1)
    leaf = x509.load_pem_x509_certificate(got.certificate_pem.encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ok.example.com"]


# -- CRLs ----------------------------------------------------------------------------


def test_crl_lists_revoked_serials_and_is_signed_by_the_intermediate(
    root: RootCA, issuer: Issuer
) -> None:
    revoked = [(0x1234, NOW - timedelta(hours=1)), (0xABCDEF, NOW)]
    pem, der = pki.make_crl(issuer, revoked, number=7, now=NOW, next_update=NOW + timedelta(days=3))
    crl = x509.load_pem_x509_crl(pem)
    assert crl.public_bytes(serialization.Encoding.DER) == der
    assert crl.is_signature_valid(issuer.cert.public_key())  # type: ignore[arg-type]
    root_key = x509.load_pem_x509_certificate(root.cert_pem).public_key()
    assert not crl.is_signature_valid(root_key)  # type: ignore[arg-type]
    assert crl.issuer == issuer.subject
    entry = crl.get_revoked_certificate_by_serial_number(0xABCDEF)
    assert entry is not None and entry.revocation_date_utc == NOW
    assert crl.get_revoked_certificate_by_serial_number(0x9999) is None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    assert crl.next_update_utc == NOW + timedelta(days=3)
    with pytest.raises(PkiError):
        pki.make_crl(issuer, [], number=1, now=NOW, next_update=NOW)


# -- serial numbers ------------------------------------------------------------------


def test_serial_format_is_vaults() -> None:
    assert pki.format_serial(0x0102) == "01:02"
    assert pki.format_serial(0xFF) == "ff"
    assert pki.format_serial(0x80_00) == "80:00"  # no sign byte, as Go's big.Int.Bytes
    for text in ("01:02", "01-02", "0102", "01:02".upper()):
        assert pki.parse_serial(text) == 0x0102
    assert pki.canonical_serial("0A-0B") == "0a:0b"
    for bad in ("", "1:2", "00:01", "zz", "01:02:"):
        with pytest.raises(PkiError):
            pki.parse_serial(bad)
    with pytest.raises(PkiError):
        pki.format_serial(0)


def test_issued_serial_number_is_the_certificates(issuer: Issuer) -> None:
    got = pki.issue(issuer, EXAMPLE, common_name="a.example.com", now=NOW, serial=0x1F_00_AB)
    leaf = x509.load_pem_x509_certificate(got.certificate_pem.encode())
    assert got.serial_number == "1f:00:ab" == pki.format_serial(leaf.serial_number)
    assert 0 < pki.new_serial() < 2**159
