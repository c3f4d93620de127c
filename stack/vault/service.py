"""The secrets engine's front door: authenticate, authorise, audit, route, answer.

`handle(request)` serves one logical request (`logical.py`) for either HTTP API:
1. A node that cannot decrypt (sealed, or a client node) forwards the whole
   request to the leader (RPC `secrets.request`) and relays the answer.
2. The token is looked up by the hash of its secret; unknown, expired, revoked
   or used-up tokens get 403 "permission denied", as in Vault.
3. The router picks the backend by path (`sys/`, `auth/token/`, or the longest
   mounted secrets engine path); the backend says whether a write is a create or
   an update (Vault's distinction), and whether the path needs `sudo`.
4. The token's ACL (its policies merged, `policy.py`) must grant that capability
   on the path. Default deny.
5. The request is written to every enabled audit device before it is executed;
   an audit device that cannot be written fails the request with 503 and nothing
   changes (`audit.py`). The response is audited after.
6. A token with limited uses spends one (through the log) before the backend runs.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from stack.errors import Forbidden, NoLeader, StackError
from stack.net.rpc import RpcError
from stack.raft.types import Role
from stack.vault.logical import (
    LogicalError,
    Operation,
    Request,
    Response,
    request_from_wire,
    request_to_wire,
)

if TYPE_CHECKING:
    from stack.agent import Agent

log = structlog.get_logger("stack.secrets")

FORWARD_TIMEOUT = 30.0
EXPIRY_INTERVAL = 1.0
ROTATION_CHECK_INTERVAL = 60.0  # transit keys with an auto_rotate_period
# PKI reads Vault serves without a token: the CA, its chain, CRLs, certificates.
PKI_PUBLIC_READS = ("ca", "ca/pem", "ca_chain", "crl", "crl/pem", "cert/")


class Backend(Protocol):
    async def operation(self, rel: str, req: Request) -> Operation:
        """The capability a request needs (create vs update decided by existence)."""
        ...

    def needs_sudo(self, rel: str, op: Operation) -> bool: ...

    async def handle(self, rel: str, req: Request, op: Operation, token: Any) -> Response: ...


class SecretsService:
    def __init__(self, agent: Agent, *, clock: Callable[[], float] = time.time) -> None:
        from stack.vault.auditing import Auditing
        from stack.vault.auth_backend import AuthBackend
        from stack.vault.authz import Authorizer
        from stack.vault.kv_backend import KvBackend
        from stack.vault.leases import Leases
        from stack.vault.pki_backend import PkiBackend
        from stack.vault.sys_backend import SysBackend
        from stack.vault.token_backend import TokenBackend
        from stack.vault.transit_backend import TransitBackend

        self.agent = agent
        self.clock = clock
        self.authz = Authorizer(self)
        self.auditing = Auditing(self)
        self.sys = SysBackend(self)
        self.tokens = TokenBackend(self)
        self.kv = KvBackend(self)
        self.leases = Leases(self)
        self.auth = AuthBackend(self)
        self.transit = TransitBackend(self)
        self.pki = PkiBackend(self)

    # ------------------------------------------------------------ requests
    @property
    def can_serve(self) -> bool:
        a = self.agent
        return a.cfg.server and not a.barrier.sealed

    async def handle(self, req: Request) -> Response:
        if not req.id:
            req.id = str(uuid.uuid4())
        if not self.can_serve:
            return await self._forward(req)
        if self.auth.is_login(req.path):
            return await self._login(req)  # no token and no ACL, as in Vault
        backend, rel = self.route(req.path)
        if backend is self.pki and self._pki_public(req):
            return await self._public(backend, rel, req)
        token = await self.authz.authenticate(req.token)
        op = await backend.operation(rel, req)
        self.authz.check(token, req.path, op, sudo=backend.needs_sudo(rel, op))
        audit_req = self.auditing.request_entry(req, op, token)
        await self.auditing.log_request(audit_req)
        if token.num_uses:
            await self.authz.spend_use(token)
        try:
            resp = await backend.handle(rel, req, op, token)
        except LogicalError as e:
            await self.auditing.log_response(audit_req, Response(status=e.status), str(e))
            raise
        except StackError as e:
            await self.auditing.log_response(audit_req, Response(status=500), str(e))
            raise
        await self.auditing.log_response(audit_req, resp, None)
        return resp

    def _pki_public(self, req: Request) -> bool:
        if req.operation is not Operation.READ:
            return False
        mount = self.pki.mount_for(req.path)
        sub = req.path[len(mount.path) :] if mount is not None else ""
        return sub in PKI_PUBLIC_READS[:-1] or sub.startswith(PKI_PUBLIC_READS[-1])

    async def _public(self, backend: Backend, rel: str, req: Request) -> Response:
        """A read anyone may make (still audited)."""
        audit_req = self.auditing.request_entry(req, Operation.READ, None)
        await self.auditing.log_request(audit_req)
        resp = await backend.handle(rel, req, Operation.READ, None)
        await self.auditing.log_response(audit_req, resp, None)
        return resp

    async def _login(self, req: Request) -> Response:
        audit_req = self.auditing.request_entry(req, Operation.UPDATE, None)
        await self.auditing.log_request(audit_req)
        try:
            resp = await self.auth.login(req)
        except StackError as e:  # LogicalError included
            status = e.status if isinstance(e, LogicalError) else 500
            await self.auditing.log_response(audit_req, Response(status=status), str(e))
            raise
        await self.auditing.log_response(audit_req, resp, None)
        return resp

    def route(self, path: str) -> tuple[Backend, str]:
        if path.startswith("sys/") or path == "sys":
            return self.sys, path[4:]
        if path.startswith("auth/token/") or path == "auth/token":
            return self.tokens, path[len("auth/token/") :]
        if path.startswith("auth/"):
            return self.auth, path[len("auth/") :]
        if self.transit.mount_for(path) is not None:
            return self.transit, path
        if self.pki.mount_for(path) is not None:
            return self.pki, path
        found = self.kv.mount_for(path)
        if found is None:
            raise LogicalError(
                404 if path else 400, f"no handler for route {path!r}: no secrets engine there"
            )
        return self.kv, path

    async def _forward(self, req: Request) -> Response:
        a = self.agent
        leader = a.node.leader
        if not leader or leader == a.ident.id:
            raise NoLeader("this node cannot decrypt secrets (sealed or a client) and no leader")
        try:
            body = await a.transport.request(
                leader, "secrets.request", request_to_wire(req), FORWARD_TIMEOUT
            )
        except RpcError as e:
            if e.code == "logical":
                try:
                    info = json.loads(e.message)
                    status, message, data = int(info["status"]), str(info["message"]), info["data"]
                except (ValueError, KeyError, TypeError):
                    status, message, data = 500, e.message, None
                raise LogicalError(
                    status, message, data if isinstance(data, dict) else None
                ) from None
            if e.code == "forbidden_token":
                raise Forbidden(e.message) from None
            from stack.agent import from_rpc

            raise from_rpc(e) from None
        return Response.from_wire(body)

    async def handle_forwarded(self, body: Any) -> dict[str, Any]:
        """RPC `secrets.request` on the leader (or any unsealed server)."""
        if not self.can_serve:
            raise RpcError("unavailable", "this node cannot serve secrets (sealed or a client)")
        req = request_from_wire(body)
        try:
            resp = await self.handle(req)
        except LogicalError as e:
            detail = {"status": e.status, "message": str(e), "data": e.data}
            raise RpcError("logical", json.dumps(detail)) from None
        except Forbidden as e:
            raise RpcError("forbidden_token", str(e)) from None
        return resp.to_wire()

    # ------------------------------------------------------------ open endpoints
    async def open_endpoint(
        self, path: str, op: Operation, query: dict[str, str]
    ) -> tuple[int, dict[str, Any] | None]:
        return await self.sys.open_endpoint(path, op, query)

    def is_active(self) -> bool:
        return self.agent.node.role is Role.LEADER and not self.agent.barrier.sealed

    # ------------------------------------------------------------ leader duties
    async def run(self) -> None:
        """On the leader: revoke tokens and end PKI leases once they expire (the log
        carries it, so a new leader picks up where the old one stopped)."""
        from stack.state import approle
        from stack.state import tokens as tokenstate

        last_rotation = 0.0
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL)
            if not self.is_active():
                continue
            now = self.clock()
            try:
                due = tokenstate.next_expiry(self.agent.store)
                if due is not None and due <= now:
                    n = await self.tokens.expire_due()
                    if n:
                        log.info("expired tokens revoked", count=n)
                n = await self.leases.pki.expire_due()
                if n:
                    log.info("expired pki certificate leases ended", count=n)
                due = approle.next_secret_id_expiry(self.agent.store)
                if due is not None and due <= now:
                    await self.auth.tidy_expired()
                if now - last_rotation >= ROTATION_CHECK_INTERVAL:
                    last_rotation = now
                    n = await self.transit.rotate_due()
                    if n:
                        log.info("transit keys rotated on schedule", count=n)
            except (StackError, RpcError) as e:
                log.info("expiry sweep deferred", error=str(e))
