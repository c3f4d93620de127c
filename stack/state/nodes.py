"""The nodes table: every node the cluster knows, servers and clients.

NODE_REGISTER (4) upserts one node:
  {"id": str, "name": str, "address": str, "role": str, "datacenter": str, "status": str,
   "http": str (optional)}
`address` is the node's cluster RPC address (HOST:PORT), `http` its API address,
`gossip` its ring address. The row keeps exactly these fields.

NODE_STATUS (15) sets an existing node's `status` ("alive", "down" or "left"): the
leader writes it when the gossip ring declares a member dead, sees it leave, or
sees it back. A node the table does not hold is not created (a no-op).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stack.state.commands import ApplyContext, CommandRegistry, WriteResult
from stack.state.store import Row, StateStore

NODES_TABLE = "nodes"
NODE_REGISTER = 4
NODE_STATUS = 15

NODE_FIELDS = ("id", "name", "address", "role", "datacenter", "status")
OPTIONAL_FIELDS = ("http", "gossip")
STATUSES = ("alive", "down", "left")


@dataclass(frozen=True, slots=True)
class NodeEntry:
    id: str
    name: str
    address: str
    role: str
    datacenter: str
    status: str
    create_index: int
    modify_index: int
    http: str = ""  # the node's API address, when it registered one
    gossip: str = ""  # the node's gossip ring address, when it registered one


def register(registry: CommandRegistry) -> None:
    registry.register(NODE_REGISTER, "node.register", apply_register)
    registry.register(NODE_STATUS, "node.status", apply_status)


def encode_register(
    registry: CommandRegistry,
    *,
    id: str,
    name: str,
    address: str,
    role: str,
    datacenter: str,
    status: str,
    http: str = "",
    gossip: str = "",
) -> bytes:
    body = {
        "id": id,
        "name": name,
        "address": address,
        "role": role,
        "datacenter": datacenter,
        "status": status,
    }
    if http:
        body["http"] = http
    if gossip:
        body["gossip"] = gossip
    return registry.encode(NODE_REGISTER, body)


def encode_status(registry: CommandRegistry, node_id: str, status: str) -> bytes:
    return registry.encode(NODE_STATUS, {"id": node_id, "status": status})


def apply_status(ctx: ApplyContext, body: Any) -> WriteResult:
    if not isinstance(body, dict):
        raise TypeError(f"body must be a map, got {type(body).__name__}")
    nid, status = body.get("id"), body.get("status")
    if not isinstance(nid, str) or not isinstance(status, str):
        raise TypeError("id and status must be strings")
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    table = ctx.store.table(NODES_TABLE)
    row = table.get(nid)
    if row is None or row.value.get("status") == status:
        return WriteResult(False, ctx.index)
    table.put(nid, {**row.value, "status": status}, ctx.index)
    return WriteResult(True, ctx.index)


def apply_register(ctx: ApplyContext, body: Any) -> WriteResult:
    if not isinstance(body, dict):
        raise TypeError(f"body must be a map, got {type(body).__name__}")
    row: dict[str, str] = {}
    for field in NODE_FIELDS:
        value = body[field]
        if not isinstance(value, str):
            raise TypeError(f"{field} has type {type(value).__name__}")
        row[field] = value
    for field in OPTIONAL_FIELDS:
        if field in body:
            if not isinstance(body[field], str):
                raise TypeError(f"{field} has type {type(body[field]).__name__}")
            row[field] = body[field]
    if not row["id"]:
        raise ValueError("node id must not be empty")
    ctx.store.table(NODES_TABLE).put(row["id"], row, ctx.index)
    return WriteResult(True, ctx.index)


def _entry(row: Row) -> NodeEntry:
    v: dict[str, str] = row.value
    return NodeEntry(
        v["id"],
        v["name"],
        v["address"],
        v["role"],
        v["datacenter"],
        v["status"],
        row.create_index,
        row.modify_index,
        v.get("http", ""),
        v.get("gossip", ""),
    )


def get_node(store: StateStore, node_id: str) -> tuple[NodeEntry | None, int]:
    row = store.table(NODES_TABLE).get(node_id)
    return (None if row is None else _entry(row)), store.query_index(NODES_TABLE, node_id)


def list_nodes(store: StateStore) -> tuple[list[NodeEntry], int]:
    rows = store.table(NODES_TABLE).scan()
    return [_entry(row) for row in rows], store.query_index(NODES_TABLE, "", prefix=True)
