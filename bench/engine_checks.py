"""Checks of answers taken in passing by `bench.secrets_engines_bench`: pure
functions over the bytes of a request and its answer, each returning what is wrong
(so a test can plant a fault and see it caught)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.sampled_load import Sample


def check_issued(
    answer: bytes, requested_cn: str, issuer: x509.Certificate, now: datetime
) -> list[str]:
    """What is wrong with one issue/ answer (empty: nothing): the CN and DNS SAN are
    the requested name, the certificate verifies under `issuer` (and its issuing_ca
    is it), is valid now, and the private key is P-256 and matches it."""
    try:
        data = json.loads(answer)["data"]
        cert = x509.load_pem_x509_certificate(data["certificate"].encode())
        issuing = x509.load_pem_x509_certificate(data["issuing_ca"].encode())
        key = serialization.load_pem_private_key(data["private_key"].encode(), password=None)
    except (ValueError, KeyError, TypeError) as e:
        return [f"unreadable answer: {type(e).__name__}: {e}"]
    problems = []
    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns != [requested_cn]:
        problems.append(f"CN {cns} instead of {requested_cn!r}")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    if requested_cn not in dns:
        problems.append(f"DNS SANs {dns} lack {requested_cn!r}")
    if issuing != issuer:
        problems.append("issuing_ca is not the mount's issuing CA")
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as e:
        problems.append(f"does not verify under the issuing CA ({type(e).__name__})")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        problems.append(f"not valid now ({cert.not_valid_before_utc}-{cert.not_valid_after_utc})")
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        problems.append(f"private key is not EC P-256: {type(key).__name__}")
    else:
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
            problems.append("private key does not match the certificate")
    if data.get("private_key_type") != "ec":
        problems.append(f"private_key_type {data.get('private_key_type')!r}")
    return problems


def check_chain(issuer: x509.Certificate, root: x509.Certificate) -> list[str]:
    try:
        issuer.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as e:
        return [f"the issuing CA does not verify under the cluster root ({type(e).__name__})"]
    return []


def issue_requested_cn(body: bytes) -> str:
    cn: str = json.loads(body)["common_name"]
    return cn


def encrypt_pairs(samples: Sequence[Sample]) -> list[tuple[str, str]]:
    """(plaintext sent, ciphertext answered) of sampled encrypt requests, both base64."""
    out = []
    for _, body, answer in samples:
        out.append((json.loads(body)["plaintext"], json.loads(answer)["data"]["ciphertext"]))
    return out


def decrypt_mismatches(pairs: Sequence[tuple[str, str]], results: Sequence[Any]) -> int:
    """How many batch decrypt results do not give back the plaintext sent (a missing
    or failed item counts)."""
    bad = abs(len(pairs) - len(results))
    for (pt, ct), res in zip(pairs, results, strict=False):
        opened = isinstance(res, dict) and not res.get("error") and res.get("plaintext") == pt
        if not (ct.startswith("vault:v1:") and opened):
            bad += 1
    return bad
