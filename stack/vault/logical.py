"""Logical requests: what the secrets engine serves, whichever API a call came in on.

The native API (`/v1/secrets/...`, `/v1/acl/...`) and the Vault-compatible port
both turn an HTTP request into a `Request` (an operation on a logical path, such
as `secret/data/app/db` or `auth/token/lookup-self`), and a `Response` back into
their own wire shape. One router, one ACL check and one audit trail serve both.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from stack.errors import StackError


class Operation(enum.StrEnum):
    CREATE = "create"
    READ = "read"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"
    LIST = "list"


@dataclass(slots=True)
class Request:
    operation: Operation
    path: str  # no leading slash
    data: dict[str, Any] | None = None
    query: dict[str, str] = field(default_factory=dict)
    token: str = ""
    remote: str = ""
    id: str = ""
    stale: bool = False  # a read that may be served without a read barrier


@dataclass(slots=True)
class Response:
    data: dict[str, Any] | None = None
    auth: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    status: int = 200
    lease_duration: int = 0
    renewable: bool = False
    lease_id: str = ""  # a secret that is a lease (a PKI certificate with generate_lease)

    def to_wire(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "auth": self.auth,
            "warnings": self.warnings or None,
            "status": self.status,
            "lease_duration": self.lease_duration,
            "renewable": self.renewable,
            "lease_id": self.lease_id,
        }

    @classmethod
    def from_wire(cls, body: Any) -> Response:
        if not isinstance(body, dict):
            raise StackError("malformed forwarded response")
        return cls(
            data=body.get("data"),
            auth=body.get("auth"),
            warnings=list(body.get("warnings") or []),
            status=int(body.get("status", 200)),
            lease_duration=int(body.get("lease_duration", 0)),
            renewable=bool(body.get("renewable", False)),
            lease_id=str(body.get("lease_id") or ""),
        )


class LogicalError(StackError):
    """An error with Vault's status code and optional body data (KV v2 answers a
    deleted version with 404 and its metadata)."""

    def __init__(self, status: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.data = data


def request_to_wire(req: Request) -> dict[str, Any]:
    return {
        "operation": req.operation.value,
        "path": req.path,
        "data": req.data,
        "query": req.query,
        "token": req.token,
        "remote": req.remote,
        "id": req.id,
        "stale": req.stale,
    }


def request_from_wire(body: Any) -> Request:
    if not isinstance(body, dict):
        raise StackError("malformed forwarded request")
    data = body.get("data")
    query = body.get("query") or {}
    if data is not None and not isinstance(data, dict):
        raise StackError("malformed forwarded request data")
    if not isinstance(query, dict):
        raise StackError("malformed forwarded request query")
    return Request(
        operation=Operation(str(body["operation"])),
        path=str(body["path"]),
        data=data,
        query={str(k): str(v) for k, v in query.items()},
        token=str(body.get("token", "")),
        remote=str(body.get("remote", "")),
        id=str(body.get("id", "")),
        stale=bool(body.get("stale", False)),
    )
