"""Audit devices, cluster-wide configuration (each node writes its own file).

AUDIT_ENABLE (140) {"path": "file/", "type": "file", "description", "options": {str: str},
                   "salt": barrier ciphertext of the HMAC key, "now"}
AUDIT_DISABLE (141) {"path"}

Rows in table `audit_devices`, keyed by path (ending "/"). The HMAC key (Vault's
"salt") is made once, by the leader, when the first device is enabled, and kept in
row "\\x00salt" so every node and every later device uses the same one: an operator
can HMAC a known token once and find it in every node's log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.store import StateStore

AUDIT_TABLE = "audit_devices"
AUDIT_ENABLE = 140
AUDIT_DISABLE = 141
SALT_KEY = "\x00salt"
TYPES = ("file",)


@dataclass(frozen=True, slots=True)
class AuditDevice:
    path: str
    type: str
    description: str
    options: dict[str, str]


def register(registry: CommandRegistry) -> None:
    registry.register(AUDIT_ENABLE, "audit.enable", apply_enable)
    registry.register(AUDIT_DISABLE, "audit.disable", apply_disable)


def encode_enable(
    registry: CommandRegistry,
    *,
    path: str,
    type: str,
    description: str,
    options: dict[str, str],
    salt: bytes,
) -> bytes:
    return registry.encode(
        AUDIT_ENABLE,
        {"path": path, "type": type, "description": description, "options": options,
         "salt": salt},
    )  # fmt: skip


def encode_disable(registry: CommandRegistry, path: str) -> bytes:
    return registry.encode(AUDIT_DISABLE, {"path": path})


def _path(body: Any) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("path"), str):
        raise TypeError("audit command needs a string path")
    path: str = body["path"]
    if not path.endswith("/") or path == "/" or path.startswith("/") or "\x00" in path:
        raise ValueError(f"bad audit device path {path!r}")
    return path


def apply_enable(ctx: ApplyContext, body: Any) -> WriteResult:
    path = _path(body)
    kind, desc, options, salt = (
        body.get("type"), body.get("description", ""), body.get("options"), body.get("salt")
    )  # fmt: skip
    if kind not in TYPES or not isinstance(desc, str) or not isinstance(salt, bytes):
        raise TypeError("audit device needs a known type, a string description and a salt")
    if not isinstance(options, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in options.items()
    ):
        raise TypeError("audit options must map strings to strings")
    table = ctx.store.table(AUDIT_TABLE)
    if table.get(path) is not None:
        return WriteResult(False, ctx.index, {"error": f"path {path!r} is already in use"})
    if table.get(SALT_KEY) is None:
        table.put(SALT_KEY, {"ct": salt}, ctx.index)
    table.put(path, {"type": kind, "description": desc, "options": dict(options)}, ctx.index)
    return WriteResult(True, ctx.index)


def apply_disable(ctx: ApplyContext, body: Any) -> WriteResult:
    path = _path(body)
    table = ctx.store.table(AUDIT_TABLE)
    if table.get(path) is None:
        return WriteResult(False, ctx.index, {"error": f"no audit device at {path!r}"})
    table.delete(path, ctx.index)
    return WriteResult(True, ctx.index)


def devices(store: StateStore) -> list[AuditDevice]:
    out = []
    for row in store.table(AUDIT_TABLE).scan():
        if row.key == SALT_KEY:
            continue
        v = row.value
        out.append(AuditDevice(row.key, v["type"], v["description"], dict(v["options"])))
    return out


def salt(store: StateStore) -> bytes | None:
    row = store.table(AUDIT_TABLE).get(SALT_KEY)
    return None if row is None else bytes(row.value["ct"])
