"""`sys/...`: mounts, ACL policies, capabilities, audit devices, and the open
status endpoints (health, seal status, init, leader) in Vault's shapes.

Policy and mount administration needs the matching capability on the `sys/`
path, as in Vault (`sys/policies/acl/*`, `sys/mounts/*`); `sys/audit*` and
`sys/seal` also need `sudo`.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

import stack
from stack.state import acl as aclstate
from stack.state import audit as auditstate
from stack.state import secrets as secretsstate
from stack.vault import policy as policylang
from stack.vault.auditing import SALT_AAD
from stack.vault.auth_backend import sys_auth_needs_sudo
from stack.vault.kv_backend import apply_here
from stack.vault.logical import LogicalError, Operation, Request, Response

if TYPE_CHECKING:
    from stack.vault.service import SecretsService

VAULT_VERSION = "1.15.0+stack." + stack.__version__
SUDO_PATHS = ("audit", "seal", "raw", "rotate")
BUILTIN_POLICIES = ("root", "default")


def _name(rel: str, prefix: str) -> str:
    return rel[len(prefix) :].strip("/")


def _policy_name(name: str) -> str:
    # Checked before proposing: the log refuses nothing it is given, it stops.
    if not aclstate.POLICY_NAME.fullmatch(name):
        raise LogicalError(400, f"invalid policy name {name[:140]!r} (a-z, 0-9, '_', '.', '-')")
    return name


def _code(query: dict[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        code = int(raw)
    except ValueError:
        raise LogicalError(400, f"{name} must be an HTTP status code") from None
    if not 100 <= code <= 599:
        raise LogicalError(400, f"{name} must be an HTTP status code")
    return code


class SysBackend:
    def __init__(self, service: SecretsService) -> None:
        self.service = service

    @property
    def agent(self):  # type: ignore[no-untyped-def]
        return self.service.agent

    async def operation(self, rel: str, req: Request) -> Operation:
        if req.operation is Operation.UPDATE and rel.startswith(("policies/acl/", "policy/")):
            prefix = "policy/" if rel.startswith("policy/") else "policies/acl/"
            exists = aclstate.get_policy(self.agent.store, _name(rel, prefix).lower()) is not None
            return Operation.UPDATE if exists else Operation.CREATE
        return req.operation

    def needs_sudo(self, rel: str, op: Operation) -> bool:
        return (
            rel.startswith(SUDO_PATHS)
            or rel.startswith("leases/revoke-prefix")
            or sys_auth_needs_sudo(rel)
        )

    async def handle(self, rel: str, req: Request, op: Operation, token: Any) -> Response:
        if rel in ("policy", "policies/acl") or rel.startswith(("policy/", "policies/acl/")):
            return await self._policies(rel, req, op)
        if rel == "capabilities-self" or rel == "capabilities":
            return self._capabilities(req, token)
        if rel == "mounts" or rel.startswith("mounts/"):
            return await self.service.kv.sys_mounts(rel, req, op)
        if rel.startswith("internal/ui/mounts/") and op is Operation.READ:
            return self.service.kv.ui_mount(rel[len("internal/ui/mounts/") :])
        if rel == "audit" or rel.startswith("audit/"):
            return await self._audit(rel, req, op)
        if rel == "auth" or rel.startswith("auth/"):
            return await self.service.auth.sys_auth(rel, req, op)
        if rel == "leases" or rel.startswith("leases/"):
            return await self.service.leases.handle(rel, req, op)
        if rel.startswith("audit-hash/"):
            return self._audit_hash(req)
        raise LogicalError(404, f"unsupported path sys/{rel}")

    # ------------------------------------------------------------ policies
    async def _policies(self, rel: str, req: Request, op: Operation) -> Response:
        a = self.agent
        legacy = rel.startswith("policy")
        prefix = "policy" if legacy else "policies/acl"
        name = _name(rel, prefix).lower()
        if name:
            _policy_name(name)
        if not name:
            if op not in (Operation.READ, Operation.LIST):
                raise LogicalError(405, "unsupported operation")
            if self.service.can_serve and not req.stale:
                await a.read_barrier()
            names = sorted({*aclstate.list_policies(a.store), *BUILTIN_POLICIES})
            data: dict[str, Any] = {"keys": names}
            if legacy:
                data["policies"] = names
            return Response(data=data)
        if op is Operation.READ:
            if not req.stale:
                await a.read_barrier()
            text = self._policy_text(name)
            if text is None:
                raise LogicalError(404, f"no policy named {name!r}")
            data = {"name": name, "policy": text}
            if legacy:
                data["rules"] = text
            return Response(data=data)
        if op in (Operation.CREATE, Operation.UPDATE):
            body = req.data or {}
            text = body.get("policy", body.get("rules"))
            if not isinstance(text, str) or not text.strip():
                raise LogicalError(400, "'policy' parameter not supplied or empty")
            if name == "root":
                raise LogicalError(400, "cannot update the root policy")
            try:
                policylang.parse_policy(name, text)
            except policylang.PolicyError as e:
                raise LogicalError(400, f"failed to parse policy: {e}") from None
            result = await apply_here(
                a,
                aclstate.encode_policy_set(
                    a.registry, name=name, text=text, now=self.service.clock()
                ),
            )
            if not result.ok:
                raise LogicalError(400, str((result.data or {}).get("error", "refused")))
            return Response()
        if op is Operation.DELETE:
            if name in BUILTIN_POLICIES:
                raise LogicalError(400, f"cannot delete the {name} policy")
            await apply_here(a, aclstate.encode_policy_delete(a.registry, name=name))
            return Response()
        raise LogicalError(405, "unsupported operation")

    def _policy_text(self, name: str) -> str | None:
        if name == "root":
            return ""
        text = aclstate.get_policy(self.agent.store, name)
        if text is None and name == "default":
            return policylang.DEFAULT_POLICY_TEXT
        return text

    def _capabilities(self, req: Request, token: Any) -> Response:
        body = req.data or {}
        paths = body.get("paths", body.get("path"))
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise LogicalError(400, "'paths' must be a list of paths")
        target = token
        if body.get("token"):  # sys/capabilities: another token's view (needs sudo-ish read)
            found = aclstate.lookup_secret(
                self.agent.store, str(body["token"]), self.service.clock()
            )
            if found is None:
                raise LogicalError(400, "invalid token")
            target = found
        data: dict[str, Any] = {}
        every: set[str] = set()
        is_root = self.service.authz.acl(target).is_root
        for p in paths:
            caps = (
                ["root"]
                if is_root
                else sorted(self.service.authz.capabilities(target, p.lstrip("/"))) or ["deny"]
            )
            data[p] = caps
            every.update(caps)
        data["capabilities"] = data[paths[0]] if len(paths) == 1 else sorted(every)
        return Response(data=data)

    # ------------------------------------------------------------ audit
    async def _audit(self, rel: str, req: Request, op: Operation) -> Response:
        a = self.agent
        path = _name(rel, "audit")
        if not path:
            if op not in (Operation.READ, Operation.LIST):
                raise LogicalError(405, "unsupported operation")
            data = {
                d.path: {"type": d.type, "description": d.description, "options": d.options,
                         "path": d.path, "local": False}
                for d in auditstate.devices(a.store)
            }  # fmt: skip
            return Response(data=data)
        try:
            secretsstate.validate_path(path)
        except ValueError as e:
            raise LogicalError(400, f"invalid audit device path: {e}") from None
        path = path + "/"
        if op in (Operation.CREATE, Operation.UPDATE):
            body = req.data or {}
            kind = body.get("type")
            if kind != "file":
                raise LogicalError(400, f"unsupported audit device type {kind!r} (only 'file')")
            options = body.get("options") or {}
            if not isinstance(options, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in options.items()
            ):
                raise LogicalError(400, "options must map strings to strings")
            if options.get("file_path") in ("stdout", "discard"):
                raise LogicalError(400, "file_path must be a file (stdout/discard unsupported)")
            salt = auditstate.salt(a.store)
            salt_ct = salt or a.barrier.encrypt(secrets.token_bytes(32), SALT_AAD)
            result = await apply_here(
                a,
                auditstate.encode_enable(
                    a.registry,
                    path=path,
                    type="file",
                    description=str(body.get("description") or ""),
                    options={str(k): str(v) for k, v in options.items()},
                    salt=salt_ct,
                ),
            )
            if not result.ok:
                raise LogicalError(400, str((result.data or {}).get("error", "refused")))
            return Response()
        if op is Operation.DELETE:
            result = await apply_here(a, auditstate.encode_disable(a.registry, path))
            if not result.ok:
                raise LogicalError(400, str((result.data or {}).get("error", "refused")))
            return Response()
        raise LogicalError(405, "unsupported operation")

    def _audit_hash(self, req: Request) -> Response:
        from stack.vault.audit import hmac_value

        a = self.agent
        value = (req.data or {}).get("input")
        if not isinstance(value, str):
            raise LogicalError(400, "'input' must be a string")
        salt = auditstate.salt(a.store)
        if salt is None:
            raise LogicalError(400, "no audit device has been enabled")
        return Response(data={"hash": hmac_value(a.barrier.decrypt(salt, SALT_AAD), value)})

    # ------------------------------------------------------------ open endpoints
    async def open_endpoint(
        self, path: str, op: Operation, query: dict[str, str]
    ) -> tuple[int, dict[str, Any] | None]:
        a = self.agent
        sealed = a.barrier.sealed or not a.cfg.server
        if path == "sys/init":
            if op is not Operation.READ:
                return 400, {"errors": ["Vault is already initialized"]}
            return 200, {"initialized": True}
        if path == "sys/seal-status":
            return 200, self.seal_status()
        if path == "sys/leader":
            leader_http = ""
            for m in a.membership.members():
                if m["leader"]:
                    leader_http = m["http"]
            return 200, {
                "ha_enabled": True,
                "is_self": self.service.is_active(),
                "active_time": "0001-01-01T00:00:00Z",
                "leader_address": f"{a.http_scheme}://{leader_http}" if leader_http else "",
                "leader_cluster_address": "",
                "performance_standby": False,
                "performance_standby_last_remote_wal": 0,
                "raft_committed_index": a.node.status().commit,
                "raft_applied_index": a.node.applied,
            }
        if path == "sys/health":
            body = {
                "initialized": True,
                "sealed": sealed,
                "standby": not self.service.is_active(),
                "performance_standby": False,
                "replication_performance_mode": "disabled",
                "replication_dr_mode": "disabled",
                "server_time_utc": int(time.time()),
                "version": VAULT_VERSION,
                "cluster_name": f"stack-{a.ident.cluster_id}",
                "cluster_id": a.ident.cluster_id,
            }
            if sealed:
                code = _code(query, "sealedcode", 503)
            elif self.service.is_active():
                code = _code(query, "activecode", 200)
            elif query.get("standbyok", "false").lower() not in ("false", "0"):
                code = 200
            else:
                code = _code(query, "standbycode", 429)
            return code, (body if op is Operation.READ else None)
        raise LogicalError(404, f"unsupported path {path}")

    def seal_status(self) -> dict[str, Any]:
        a = self.agent
        st = a.unsealer.status()
        return {
            "type": "shamir",
            "initialized": True,
            "sealed": bool(st.get("sealed")),
            "t": int(st.get("recovery_needed", 0) or 0),
            "n": int(st.get("recovery_shares", 0) or 0),
            "progress": int(st.get("recovery_progress", 0) or 0),
            "nonce": "",
            "version": VAULT_VERSION,
            "build_date": "",
            "migration": False,
            "cluster_name": f"stack-{a.ident.cluster_id}",
            "cluster_id": a.ident.cluster_id,
            "recovery_seal": False,
            "storage_type": "raft",
        }
