"""`auth/token/...`: Vault's token store on the replicated ACL state
(`stack/state/acl.py`): create (child, orphan, from a role), lookup, renew and
revoke (self, by token, by accessor), accessors, roles, tidy.

Secrets are made here (`st.` + 43 url-safe characters) and only their SHA-256
travels in the log. As in Vault: a new token inherits its parent's policies when
none are given; "default" is added unless `no_default_policy`; `no_parent`,
`create-orphan`, `revoke-orphan` and listing accessors need root or `sudo`;
custom token ids and batch tokens are refused.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from stack.state import acl as aclstate
from stack.state import tokens
from stack.vault.kv_backend import apply_here
from stack.vault.logical import LogicalError, Operation, Request, Response
from stack.vault.timefmt import parse_duration, rfc3339

if TYPE_CHECKING:
    from stack.agent import Agent
    from stack.vault.service import SecretsService

SUDO_PATHS = ("create-orphan", "revoke-orphan", "accessors")
EXPIRE_BATCH = 256


# Everything the log's apply functions would refuse by stopping the node (a bad name,
# a number out of range) is refused here first with a 400.


def _policies(value: Any, name: str = "policies") -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",") if p.strip()]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise LogicalError(400, f"{name} must be a list of names")
    out = [p.strip().lower() for p in value if p.strip()]
    for policy in out:
        if not aclstate.POLICY_NAME.fullmatch(policy):
            raise LogicalError(400, f"{name}: invalid policy name {policy[:140]!r}")
    return out


def _role_name(name: str) -> str:
    if not aclstate.NAME.fullmatch(name):
        raise LogicalError(400, f"invalid role name {name[:140]!r} (A-Z, a-z, 0-9, '_', '.', '-')")
    return name


def _count(value: Any, name: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise LogicalError(400, f"{name} must be an integer")
    try:
        out = int(value or 0)
    except ValueError:
        raise LogicalError(400, f"{name} must be an integer") from None
    if not 0 <= out <= aclstate.MAX_SECONDS:
        raise LogicalError(400, f"{name} must be between 0 and {aclstate.MAX_SECONDS}")
    return out


def _bool(value: Any, name: str, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise LogicalError(400, f"{name} must be a boolean")


def _seconds(body: dict[str, Any], *names: str) -> int:
    for name in names:
        if body.get(name) not in (None, ""):
            seconds = parse_duration(body[name], name)
            if not 0 <= seconds <= aclstate.MAX_SECONDS:  # also refuses nan and inf
                raise LogicalError(400, f"{name} must be between 0 and {aclstate.MAX_SECONDS}s")
            return int(seconds)
    return 0


class TokenBackend:
    def __init__(self, service: SecretsService) -> None:
        self.service = service

    @property
    def agent(self) -> Agent:
        return self.service.agent

    async def operation(self, rel: str, req: Request) -> Operation:
        return req.operation

    def needs_sudo(self, rel: str, op: Operation) -> bool:
        return rel.startswith(SUDO_PATHS)

    async def handle(self, rel: str, req: Request, op: Operation, token: Any) -> Response:
        rel = rel.strip("/")
        body = req.data or {}
        if rel == "create" or rel == "create-orphan" or rel.startswith("create/"):
            self._write_only(op)
            return await self._create(rel, body, token)
        if rel == "lookup-self":
            return self._lookup_view(token, with_id=req.token)
        if rel == "lookup":
            secret = self._field(body, req, "token")
            found = aclstate.lookup_secret(self.agent.store, secret, self.service.clock())
            if found is None:
                raise LogicalError(403, "bad token")
            return self._lookup_view(found, with_id=secret)
        if rel == "lookup-accessor":
            found = self._by_accessor(self._field(body, req, "accessor"))
            return self._lookup_view(found, with_id="")
        if rel in ("renew-self", "renew", "renew-accessor"):
            self._write_only(op)
            if rel == "renew-self":
                target, secret = token, req.token
            elif rel == "renew":
                secret = self._field(body, req, "token")
                target = aclstate.lookup_secret(self.agent.store, secret, self.service.clock())
                if target is None:
                    raise LogicalError(400, "invalid token")
            else:
                target, secret = self._by_accessor(self._field(body, req, "accessor")), ""
            return await self._renew(target, secret, body)
        if rel in ("revoke-self", "revoke", "revoke-accessor", "revoke-orphan"):
            self._write_only(op)
            if rel == "revoke-self":
                target = token
            elif rel in ("revoke", "revoke-orphan"):
                target = aclstate.lookup_secret(
                    self.agent.store, self._field(body, req, "token"), self.service.clock()
                )
                if target is None:
                    return Response()  # Vault: revoking an unknown token is not an error
            else:
                target = self._by_accessor(self._field(body, req, "accessor"))
            await self._apply(
                aclstate.encode_token_revoke(
                    self.agent.registry,
                    accessor=target.accessor,
                    orphan_children=rel == "revoke-orphan",
                )
            )
            return Response()
        if rel == "accessors":
            if op is not Operation.LIST:
                raise LogicalError(405, "list accessors with LIST")
            return Response(data={"keys": aclstate.list_accessors(self.agent.store)})
        if rel == "roles" or rel.startswith("roles/"):
            return await self._roles(rel[len("roles") :].strip("/"), req, op)
        if rel == "tidy":
            self._write_only(op)
            await self.expire_due()
            return Response(warnings=["tidy revoked every expired token"])
        raise LogicalError(404, f"unsupported path auth/token/{rel}")

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _write_only(op: Operation) -> None:
        if op not in (Operation.CREATE, Operation.UPDATE):
            raise LogicalError(405, "unsupported operation: use POST")

    @staticmethod
    def _field(body: dict[str, Any], req: Request, name: str) -> str:
        value = body.get(name, req.query.get(name))
        if not isinstance(value, str) or not value:
            raise LogicalError(400, f"missing {name}")
        return value

    def _by_accessor(self, accessor: str) -> aclstate.TokenView:
        found = aclstate.lookup_accessor(self.agent.store, accessor, self.service.clock())
        if found is None:
            raise LogicalError(400, "invalid accessor")
        return found

    async def _apply(self, cmd: bytes) -> dict[str, Any]:
        result = await apply_here(self.agent, cmd)
        if not result.ok:
            error = (result.data or {}).get("error", "refused")
            raise LogicalError(400, str(error))
        return result.data if isinstance(result.data, dict) else {}

    def _lookup_view(self, t: aclstate.TokenView, *, with_id: str) -> Response:
        now = self.service.clock()
        return Response(
            data={
                "accessor": t.accessor,
                "creation_time": int(t.creation_time),
                "creation_ttl": t.ttl,
                "display_name": t.display_name,
                "entity_id": "",
                "expire_time": rfc3339(t.expire_time) or None,
                "explicit_max_ttl": t.explicit_max_ttl,
                "id": with_id,
                "issue_time": rfc3339(t.creation_time) or None,
                "meta": t.meta or None,
                "num_uses": t.num_uses,
                "orphan": t.orphan,
                "path": t.path or "auth/token/create",
                "period": t.period or None,
                "policies": list(t.policies),
                "renewable": t.renewable,
                "role": t.role,
                "ttl": int(t.ttl_remaining(now)),
                "type": "service",
            }
        )

    def _auth(self, t: aclstate.TokenView, secret: str, lease: float) -> dict[str, Any]:
        return {
            "client_token": secret,
            "accessor": t.accessor,
            "policies": list(t.policies),
            "token_policies": list(t.policies),
            "identity_policies": None,
            "metadata": t.meta or None,
            "lease_duration": int(lease),
            "renewable": t.renewable,
            "entity_id": "",
            "token_type": "service",
            "orphan": t.orphan,
            "mfa_requirement": None,
            "num_uses": t.num_uses,
        }

    # ------------------------------------------------------------ create
    async def _create(self, rel: str, body: dict[str, Any], parent: Any) -> Response:
        a = self.agent
        authz = self.service.authz
        role_name = _role_name(rel.split("/", 1)[1]) if rel.startswith("create/") else ""
        role = aclstate.get_role(a.store, role_name) if role_name else None
        if role_name and role is None:
            raise LogicalError(400, f"unknown role {role_name!r}")
        if body.get("id"):
            raise LogicalError(400, "custom token ids are not supported")
        if body.get("type") not in (None, "", "service", "default"):
            raise LogicalError(400, "only service tokens are supported (no batch tokens)")
        if body.get("entity_alias"):
            raise LogicalError(400, "entity aliases are not supported")
        privileged = parent.is_root or authz.acl(parent).allowed("auth/token/create", "sudo")
        orphan = rel == "create-orphan" or _bool(body.get("no_parent"), "no_parent", False)
        if orphan and rel != "create-orphan" and not privileged:
            raise LogicalError(400, "root or sudo privileges required to create an orphan token")
        if (body.get("period") not in (None, "", 0, "0")) and not privileged and role is None:
            raise LogicalError(400, "root or sudo privileges required to create a periodic token")
        policies = _policies(body.get("policies"))
        if policies is None:
            policies = [p for p in parent.policies if p != "default"] if role is None else []
        no_default = _bool(body.get("no_default_policy"), "no_default_policy", False)
        if not no_default and "root" not in policies:
            policies.append("default")
        policies = sorted(set(policies))
        meta = body.get("meta") or {}
        if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
        ):
            raise LogicalError(400, "meta must map strings to strings")
        num_uses = _count(body.get("num_uses") or 0, "num_uses")
        secret = tokens.new_secret()
        accessor = secrets.token_hex(12)
        now = self.service.clock()
        path = "auth/token/" + rel
        await self._apply(
            aclstate.encode_token_create(
                a.registry,
                secret_hash=tokens.hash_secret(secret),
                accessor=accessor,
                now=now,
                parent_accessor="" if orphan else parent.accessor,
                policies=policies,
                ttl=_seconds(body, "ttl", "lease"),
                explicit_max_ttl=_seconds(body, "explicit_max_ttl"),
                period=_seconds(body, "period"),
                num_uses=num_uses,
                renewable=_bool(body.get("renewable"), "renewable", True),
                orphan=orphan,
                display_name="token-" + str(body.get("display_name") or "")[:64]
                if body.get("display_name")
                else "token",
                meta=dict(meta),
                role=role_name,
                path=path,
            )
        )
        created = aclstate.lookup_accessor(a.store, accessor)
        if created is None:
            raise LogicalError(500, "the token was not found after its creation")
        lease = created.ttl_remaining(now)
        return Response(auth=self._auth(created, secret, lease))

    # ------------------------------------------------------------ renew
    async def _renew(self, t: aclstate.TokenView, secret: str, body: dict[str, Any]) -> Response:
        increment = _seconds(body, "increment")
        answer = await self._apply(
            aclstate.encode_token_renew(
                self.agent.registry,
                accessor=t.accessor,
                now=self.service.clock(),
                increment=increment,
            )
        )
        renewed = aclstate.lookup_accessor(self.agent.store, t.accessor) or t
        return Response(auth=self._auth(renewed, secret, float(answer.get("ttl", 0))))

    # ------------------------------------------------------------ roles
    async def _roles(self, name: str, req: Request, op: Operation) -> Response:
        a = self.agent
        if name:
            _role_name(name)
        if not name:
            if op not in (Operation.LIST, Operation.READ):
                raise LogicalError(405, "list roles with LIST")
            keys = aclstate.list_roles(a.store)
            if not keys:
                raise LogicalError(404, "")
            return Response(data={"keys": keys})
        if op is Operation.READ:
            role = aclstate.get_role(a.store, name)
            if role is None:
                raise LogicalError(404, "")
            return Response(
                data={
                    "name": role.name,
                    "allowed_policies": list(role.allowed_policies),
                    "disallowed_policies": list(role.disallowed_policies),
                    "orphan": role.orphan,
                    "renewable": role.renewable,
                    "period": role.token_period,
                    "token_period": role.token_period,
                    "explicit_max_ttl": role.token_explicit_max_ttl,
                    "token_explicit_max_ttl": role.token_explicit_max_ttl,
                    "token_ttl": role.token_ttl,
                    "path_suffix": role.path_suffix,
                    "token_type": role.token_type,
                }
            )
        if op in (Operation.CREATE, Operation.UPDATE):
            body = req.data or {}
            suffix = str(body.get("path_suffix") or "")
            if not aclstate.PATH_SUFFIX.fullmatch(suffix) or ".." in suffix:
                raise LogicalError(400, f"invalid path_suffix {suffix[:140]!r}")
            token_type = str(body.get("token_type") or "default-service")
            if token_type in aclstate.BATCH_TOKEN_TYPES:
                raise LogicalError(400, "only service tokens are supported (no batch tokens)")
            if token_type not in aclstate.ROLE_TOKEN_TYPES:
                raise LogicalError(400, f"invalid token_type {token_type[:140]!r}")
            allowed = _policies(body.get("allowed_policies"), "allowed_policies")
            disallowed = _policies(body.get("disallowed_policies"), "disallowed_policies")
            await self._apply(
                aclstate.encode_role_set(
                    a.registry,
                    name=name,
                    allowed_policies=allowed or [],
                    disallowed_policies=disallowed or [],
                    orphan=_bool(body.get("orphan"), "orphan", False),
                    renewable=_bool(body.get("renewable"), "renewable", True),
                    token_period=_seconds(body, "token_period", "period"),
                    token_explicit_max_ttl=_seconds(
                        body, "token_explicit_max_ttl", "explicit_max_ttl"
                    ),
                    token_ttl=_seconds(body, "token_ttl"),
                    path_suffix=suffix,
                    token_type=token_type,
                )
            )
            return Response()
        if op is Operation.DELETE:
            await self._apply(aclstate.encode_role_delete(a.registry, name=name))
            return Response()
        raise LogicalError(405, "unsupported operation")

    # ------------------------------------------------------------ expiry (leader)
    async def expire_due(self) -> int:
        """Revoke every token past its expiry (and its children), in batches."""
        a = self.agent
        total = 0
        while True:
            answer = await self._apply(
                aclstate.encode_token_expire(
                    a.registry, now=self.service.clock(), limit=EXPIRE_BATCH
                )
            )
            total += len(answer.get("revoked") or [])
            if not answer.get("more"):
                return total
