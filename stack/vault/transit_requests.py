"""The request side of Vault's transit engine, pure: decoding parameters as Vault
does (weakly typed: "5" is 5, "true" is true), the parameters and paths stack refuses
rather than ignores, and batches (`batch_input` in, `batch_results` out)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stack.state import transit as st
from stack.vault import transit as tr
from stack.vault.logical import LogicalError

MAX_INT = 2**31 - 1
UNSUPPORTED_PATHS = {
    "backup": "key backup",
    "restore": "key restore",
    "import": "key import",
    "wrapping_key": "BYOK key import",
    "byok-export": "BYOK export",
    "config": "mount configuration (config/keys)",
    "cache-config": "the policy cache configuration",
    "cmac": "CMAC",
}
# Vault parameters stack does not implement: refused, never ignored.
REFUSED_PARAMS = {
    "padding_scheme": "RSA padding schemes",
    "salt_length": "RSA-PSS salt lengths",
    "managed_key_name": "managed keys",
    "managed_key_id": "managed keys",
    "parameter_set": "ML-DSA keys",
    "hybrid_key_type_pqc": "hybrid keys",
    "hybrid_key_type_ec": "hybrid keys",
    "allow_rotation": "imported keys",
}


# -- request parameters (Vault decodes weakly: "5" is 5, "true" is true)


def refuse_params(body: dict[str, Any]) -> None:
    for name in sorted(body):
        if name in REFUSED_PARAMS and body[name] not in (None, "", 0, False):
            what = REFUSED_PARAMS[name]
            raise LogicalError(400, f"{name}: {what} are not supported by stack's transit engine")


def as_int(value: Any, name: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise LogicalError(400, f"{name} must be an integer")
    if abs(value) > MAX_INT:
        raise LogicalError(400, f"{name} is out of range")
    return value


def as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise LogicalError(400, f"{name} must be a boolean")


def as_str(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise LogicalError(400, f"{name} must be a string")
    return value


def b64_field(value: Any, name: str) -> bytes:
    """A base64 request field (Vault's message names the field)."""
    try:
        return tr.b64decode(as_str(value, name))
    except tr.TransitError as e:
        raise tr.TransitError(f"unable to decode {name} as base64: {e}") from None


def optional_b64(value: Any, name: str) -> bytes | None:
    text = as_str(value, name)
    return b64_field(text, name) if text else None


def key_name(name: str) -> str:
    try:
        st.validate_name(name)
    except ValueError as e:
        raise LogicalError(400, str(e)) from None
    return name


# -- batches (pure)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    results: list[dict[str, Any]]
    user_error: bool  # some item failed
    success: bool  # some item succeeded


def run_batch(
    items: Any, one: Callable[[dict[str, Any]], dict[str, Any]], *, error_fields: Any = None
) -> BatchOutcome:
    """Run `one` on every item of a `batch_input`, in order. An item that fails with
    a TransitError or a 4xx LogicalError gets `{"error": message}` (plus
    `error_fields`, e.g. verify's `"valid": False`); every result carries the item's
    `reference`. Raises LogicalError(400) when `items` is not a non-empty list."""
    if not isinstance(items, list):
        raise LogicalError(400, "batch_input must be a list of objects")
    if not items:
        raise LogicalError(400, "missing batch input to process")
    results: list[dict[str, Any]] = []
    failed = succeeded = False
    for index, item in enumerate(items):
        reference = item.get("reference") if isinstance(item, dict) else None
        try:
            if not isinstance(item, dict):
                raise tr.TransitError(f"[{index}] expected a map, got {type(item).__name__}")
            result = one(item)
            succeeded = True
        except (tr.TransitError, LogicalError) as e:
            if isinstance(e, LogicalError) and e.status >= 500:
                raise
            result = {**(error_fields or {}), "error": str(e)}
            failed = True
        result["reference"] = reference if isinstance(reference, str) else ""
        results.append(result)
    return BatchOutcome(results, failed, succeeded)


def batch_status(
    outcome: BatchOutcome, partial_failure_response_code: Any
) -> tuple[int, list[str]]:
    """Vault's status for an encrypt, decrypt or rewrap batch: 400 if any item
    failed, unless some succeeded and `partial_failure_response_code` (1-599) says
    otherwise; 200 when none failed."""
    if not outcome.user_error:
        return 200, []
    if partial_failure_response_code in (None, "") or not outcome.success:
        return 400, []
    code = as_int(partial_failure_response_code, "partial_failure_response_code")
    if not 1 <= code <= 599:
        warning = (
            "invalid HTTP response code override from partial_failure_response_code, "
            "reverting to 400"
        )
        return 400, [warning]
    return code, []


@dataclass(frozen=True, slots=True)
class SigningParams:
    hash_algorithm: str
    prehashed: bool
    marshaling_algorithm: str
    signature_algorithm: str


def algorithm(url_algorithm: str, body: dict[str, Any], default: str = "sha2-256") -> str:
    """The hash algorithm of sign, verify and hmac: from the path, else
    `hash_algorithm`, else the deprecated `algorithm`."""
    return (
        url_algorithm
        or as_str(body.get("hash_algorithm"), "hash_algorithm")
        or as_str(body.get("algorithm"), "algorithm")
        or default
    )


def signing_params(url_algorithm: str, body: dict[str, Any]) -> SigningParams:
    marshaling = as_str(body.get("marshaling_algorithm"), "marshaling_algorithm")
    return SigningParams(
        algorithm(url_algorithm, body),
        as_bool(body.get("prehashed", False), "prehashed"),
        marshaling or "asn1",
        as_str(body.get("signature_algorithm"), "signature_algorithm"),
    )
