"""API tokens, stored only as SHA-256 hashes of their secrets.

In this first cut the only token is the root token; the secrets engine extends
the same table with policies, TTLs and accessors.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from typing import Any

from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.store import StateStore

TOKEN_SET = 5
TOKENS_TABLE = "acl_tokens"


def new_secret() -> str:
    return "st." + secrets.token_urlsafe(32)


@functools.lru_cache(maxsize=1024)
def hash_secret(secret: str) -> str:
    # surrogateescape: a header's undecodable bytes (aiohttp keeps them as lone
    # surrogates) hash to an unknown token instead of raising.
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def register(registry: CommandRegistry) -> None:
    registry.register(TOKEN_SET, "acl.token_set", apply_token_set)


def encode_token_set(
    registry: CommandRegistry, *, secret_hash: str, accessor: str, policies: list[str]
) -> bytes:
    return registry.encode(
        TOKEN_SET, {"hash": secret_hash, "accessor": accessor, "policies": policies}
    )


def apply_token_set(ctx: ApplyContext, body: Any) -> WriteResult:
    if not isinstance(body, dict) or not isinstance(body.get("hash"), str):
        raise TypeError("token body must be a map with a string hash")
    policies = body.get("policies")
    if not isinstance(policies, list) or not all(isinstance(p, str) for p in policies):
        raise TypeError("policies must be a list of strings")
    row = {"accessor": str(body.get("accessor", "")), "policies": policies}
    ctx.store.table(TOKENS_TABLE).put(body["hash"], row, ctx.index)
    return WriteResult(True, ctx.index)


def lookup(store: StateStore, secret: str) -> dict[str, Any] | None:
    row = store.table(TOKENS_TABLE).get(hash_secret(secret))
    return None if row is None else dict(row.value)


def has_any(store: StateStore) -> bool:
    return len(store.table(TOKENS_TABLE)) > 0
