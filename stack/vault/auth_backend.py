"""Auth methods: AppRole (machines) and userpass (people) under `auth/<mount>/...`,
and `sys/auth` to enable, list and disable them; on the replicated state of
`stack/state/auth.py`, `approle.py` and `userpass.py`.

A login makes an orphan service token through the token state (120,
`acl.token_create`): no parent, `path` "auth/<mount>login" (AppRole) or
"auth/<mount>login/<user>" (userpass, as Vault records it), policies from the
role or user plus "default" (unless `token_no_default_policy`), metadata
`role_name` (and the secret ID's metadata) or `username`, TTL, period and uses
from the role or user; `token_max_ttl` becomes the token's explicit max TTL (the
cap renewals stop at). Wrong credentials answer 400 "invalid role or secret ID"
or "invalid username or password" without saying which part was wrong; a
limited secret ID spends its use through the log before the token is made, so
two logins racing for the last use cannot both win; an expired one is refused.

The pure half (request parsing, checks, answer shapes) is `authdata.py`.

Secrets stay on the serving node: a secret ID travels as its SHA-256, a password
as a salted scrypt record (`passwords.py`) hashed here before proposing and
verified here at login, in a worker thread (~50-80 ms of CPU and 16 MiB each,
at most `HASH_CONCURRENCY` at once per node). An unknown user is verified
against a decoy record, so timing does not reveal which usernames exist.

Not supported (refused with 400 rather than ignored): batch tokens, token and
secret ID `token_bound_cidrs`, custom secret IDs, tuning auth mounts.

What the composition must wire (service.py, sys_backend.py, agent.py; this
module edits none of them):
1. agent.build_registry(): `from stack.state import auth as authstate` and
   `authstate.register(registry)` (commands 180-192), after `acl.register`.
2. SecretsService.__init__: `self.auth = AuthBackend(self)`.
   SecretsService.route(), after the `auth/token/` branch:
       if path.startswith("auth/"):
           return self.auth, path[len("auth/"):]
   (`rel` is the path after "auth/"; unknown mounts answer 404 here).
3. Logins need no token and no ACL, as in Vault. In SecretsService.handle(),
   after the `can_serve` forward and before `authz.authenticate`:
       if self.auth.is_login(req.path):
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
   (`is_login` is true only for `auth/<approle mount>/login` and
   `auth/<userpass mount>/login/<name>` of mounts this node has applied; the
   audit hashes the password, the secret ID and the new client token like any
   string.) The native API's `auth_middleware` (stack/api/app.py) demands a
   token before `/v1/secrets/...` reaches the service; to log in there too, let
   `/v1/secrets/<path>` through when `agent.secrets.auth.is_login(<path>)`.
4. SysBackend.handle(): `if rel == "auth" or rel.startswith("auth/"):
   return await self.service.auth.sys_auth(rel, req, op)`; and in
   SysBackend.needs_sudo(): `or sys_auth_needs_sudo(rel)` (Vault: enabling and
   disabling need sudo, listing does not).
5. Optional, on the leader beside the token expiry in SecretsService.run():
   when `approle.next_secret_id_expiry(store)` has passed, `await
   self.auth.tidy_expired()` (Vault tidies expired secret IDs periodically too;
   without it they are refused at login but stay until `tidy/secret-id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from stack.errors import StackError
from stack.raft.types import Role
from stack.state import acl as aclstate
from stack.state import approle, tokens, userpass
from stack.state import auth as authstate
from stack.state.authfields import NAME, Refusal, TokenParams
from stack.vault import passwords
from stack.vault.authdata import (
    INVALID_APPROLE,
    INVALID_USERPASS,
    auth_block,
    check_role,
    check_role_id,
    check_user_token_fields,
    given,
    lesser,
    login_cidr_refusal,
    mount_json,
    parse_bool,
    parse_cidrs,
    parse_count,
    parse_list,
    parse_metadata,
    parse_name,
    parse_password,
    parse_policies,
    parse_role_fields,
    parse_seconds,
    parse_token_fields,
    role_json,
    secret_id_hash,
    secret_id_json,
    token_fields_json,
    token_policies,
)
from stack.vault.kv_backend import apply_here
from stack.vault.logical import LogicalError, Operation, Request, Response

if TYPE_CHECKING:
    from stack.agent import Agent
    from stack.vault.service import SecretsService

T = TypeVar("T")

HASH_CONCURRENCY = 2  # scrypt hashes at once per node (16 MiB and one core each)
TIDY_BATCH = 1000
_WRITE = (Operation.CREATE, Operation.UPDATE)
_REASON_STATUS = {Refusal.NO_MOUNT.value: 404}


def sys_auth_needs_sudo(rel: str) -> bool:
    """For SysBackend.needs_sudo: `sys/auth/<path>` needs sudo, `sys/auth` does not."""
    return rel.startswith("auth/")


class AuthBackend:
    def __init__(self, service: SecretsService) -> None:
        self.service = service
        self._hashing = asyncio.Semaphore(HASH_CONCURRENCY)

    @property
    def agent(self) -> Agent:
        return self.service.agent

    # ------------------------------------------------------------ routing
    def _split(self, rel: str) -> tuple[authstate.AuthMount, str]:
        mount = authstate.find_mount(self.agent.store, rel)
        if mount is None:
            raise LogicalError(404, f"no handler for route 'auth/{rel[:140]}': no auth method")
        return mount, rel[len(mount.path) :].strip("/")

    def is_login(self, path: str) -> bool:
        """Whether `path` is a login of a mounted method (served without a token)."""
        if not path.startswith("auth/"):
            return False
        mount = authstate.find_mount(self.agent.store, path[len("auth/") :])
        if mount is None:
            return False
        sub = path[len("auth/") + len(mount.path) :].strip("/")
        if mount.type == "approle":
            return sub == "login"
        return sub.startswith("login/") and sub.count("/") == 1

    async def login(self, req: Request) -> Response:
        """A login request (`is_login`), without a token or an ACL check."""
        if req.operation not in _WRITE:
            raise LogicalError(405, "log in with POST or PUT")
        mount, sub = self._split(req.path[len("auth/") :])
        if mount.type == "approle":
            return await self._approle_login(mount, req)
        return await self._userpass_login(mount, sub[len("login/") :], req)

    async def operation(self, rel: str, req: Request) -> Operation:
        """Writing a missing role or user is a create, an existing one an update (Vault)."""
        if req.operation is not Operation.UPDATE:
            return req.operation
        mount = authstate.find_mount(self.agent.store, rel)
        if mount is None:
            return req.operation
        parts = rel[len(mount.path) :].strip("/").split("/")
        if len(parts) != 2 or not NAME.fullmatch(parts[1].lower()):
            return req.operation
        store, name = self.agent.store, parts[1].lower()
        if mount.type == "approle" and parts[0] == "role":
            exists = approle.get_role(store, mount.path, name) is not None
        elif mount.type == "userpass" and parts[0] == "users":
            exists = userpass.get_user(store, mount.path, name) is not None
        else:
            return req.operation
        return Operation.UPDATE if exists else Operation.CREATE

    def needs_sudo(self, rel: str, op: Operation) -> bool:
        return False

    async def handle(self, rel: str, req: Request, op: Operation, token: Any) -> Response:
        mount, sub = self._split(rel)
        if op in (Operation.READ, Operation.LIST) and not req.stale:
            await self.agent.read_barrier()
        if mount.type == "approle":
            return await self._approle(mount, sub, req, op)
        return await self._userpass(mount, sub, req, op)

    # ------------------------------------------------------------ helpers
    async def _apply(self, cmd: bytes) -> dict[str, Any]:
        result = await apply_here(self.agent, cmd)
        if not result.ok:
            data = result.data if isinstance(result.data, dict) else {}
            status = _REASON_STATUS.get(str(data.get("reason")), 400)
            raise LogicalError(status, str(data.get("error", "refused")))
        return result.data if isinstance(result.data, dict) else {}

    async def _fresh(self, read: Callable[[], T | None]) -> T | None:
        """`read()`, and on a miss on a follower once more after catching up (a role,
        secret ID or user made a moment ago through another node)."""
        found = read()
        if found is None and self.agent.node.role is not Role.LEADER:
            with contextlib.suppress(StackError):
                await self.agent.read_barrier()
            found = read()
        return found

    async def _hash(self, password: str) -> dict[str, Any]:
        async with self._hashing:
            return await asyncio.to_thread(passwords.hash_password, password)

    async def _verify(self, password: str, record: dict[str, Any]) -> bool:
        async with self._hashing:
            return await asyncio.to_thread(passwords.verify_password, password, record)

    async def _issue(
        self, params: TokenParams, *, meta: dict[str, str], display_name: str, path: str
    ) -> Response:
        """An orphan service token for a login, answered as Vault's `auth` block."""
        a, now = self.agent, self.service.clock()
        secret, accessor = tokens.new_secret(), secrets.token_hex(12)
        await self._apply(
            aclstate.encode_token_create(
                a.registry,
                secret_hash=tokens.hash_secret(secret),
                accessor=accessor,
                now=now,
                parent_accessor="",
                policies=token_policies(params),
                ttl=params.ttl,
                explicit_max_ttl=lesser(params.max_ttl, params.explicit_max_ttl),
                period=params.period,
                num_uses=params.num_uses,
                renewable=True,
                orphan=True,
                display_name=display_name,
                meta=meta,
                path=path,
            )
        )
        created = aclstate.lookup_accessor(a.store, accessor)
        if created is None:
            raise LogicalError(500, "the token was not found after its creation")
        return Response(auth=auth_block(created, secret, created.ttl_remaining(now)))

    # ------------------------------------------------------------ AppRole
    async def _approle(
        self, mount: authstate.AuthMount, sub: str, req: Request, op: Operation
    ) -> Response:
        parts = sub.split("/")
        if sub == "login":
            _write_only(op)
            return await self._approle_login(mount, req)
        if sub == "tidy/secret-id":
            _write_only(op)
            n = await self.tidy_expired(mount.path)
            return Response(status=202, warnings=[f"tidy removed {n} expired secret IDs"])
        if parts[0] != "role":
            raise LogicalError(404, f"unsupported path auth/{mount.path}{sub}")
        if len(parts) == 1:
            if op is not Operation.LIST:
                raise LogicalError(405, "list roles with LIST")
            return _keys(approle.list_roles(self.agent.store, mount.path))
        name = parse_name(parts[1], "role name")
        rest = "/".join(parts[2:])
        if not rest:
            return await self._role(mount, name, req, op)
        if rest == "role-id":
            return await self._role_id(mount, name, req, op)
        if rest == "secret-id" or rest.startswith(("secret-id/", "secret-id-accessor/")):
            return await self._secret_id(mount, name, rest, req, op)
        raise LogicalError(404, f"unsupported path auth/{mount.path}{sub}")

    def _role_or_400(self, mount: authstate.AuthMount, name: str) -> approle.AppRole:
        role = approle.get_role(self.agent.store, mount.path, name)
        if role is None:
            raise LogicalError(400, f"role {name!r} does not exist")
        return role

    async def _role(
        self, mount: authstate.AuthMount, name: str, req: Request, op: Operation
    ) -> Response:
        a = self.agent
        if op is Operation.READ:
            role = approle.get_role(a.store, mount.path, name)
            if role is None:
                raise LogicalError(404, "")
            return Response(data=role_json(role))
        if op in _WRITE:
            body = req.data or {}
            changes = parse_role_fields(body)
            check_role(approle.get_role(a.store, mount.path, name), changes)
            role_id = body.get("role_id")
            if role_id is not None:
                check_role_id(role_id)
            await self._apply(
                approle.encode_role_set(
                    a.registry,
                    mount.path,
                    name,
                    generated_role_id=str(uuid.uuid4()),
                    now=self.service.clock(),
                    role_id=role_id,
                    **changes,
                )
            )
            return Response()
        if op is Operation.DELETE:
            await self._apply(approle.encode_role_delete(a.registry, mount.path, name))
            return Response()
        raise LogicalError(405, f"{op.value} is not supported on a role")

    async def _role_id(
        self, mount: authstate.AuthMount, name: str, req: Request, op: Operation
    ) -> Response:
        if op is Operation.READ:
            role = approle.get_role(self.agent.store, mount.path, name)
            if role is None:
                raise LogicalError(404, "")
            return Response(data={"role_id": role.role_id})
        _write_only(op)
        role_id = (req.data or {}).get("role_id")
        check_role_id(role_id)
        await self._apply(
            approle.encode_role_id_set(self.agent.registry, mount.path, name, str(role_id))
        )
        return Response()

    async def _secret_id(
        self, mount: authstate.AuthMount, name: str, rest: str, req: Request, op: Operation
    ) -> Response:
        a, body = self.agent, req.data or {}
        if rest == "secret-id" and op is Operation.LIST:
            return _keys(approle.list_secret_id_accessors(a.store, mount.path, name))
        if rest == "secret-id":
            _write_only(op)
            return await self._generate_secret_id(mount, self._role_or_400(mount, name), body)
        by_accessor = rest.startswith("secret-id-accessor/")
        action = rest.split("/", 1)[1]
        if action not in ("lookup", "destroy"):
            raise LogicalError(404, f"unsupported path auth/{mount.path}role/{name}/{rest}")
        if op not in (*_WRITE, Operation.DELETE) or (op is Operation.DELETE and action == "lookup"):
            raise LogicalError(405, f"use POST on {rest}")
        field = "secret_id_accessor" if by_accessor else "secret_id"
        value = body.get(field)
        if not isinstance(value, str) or not value:
            raise LogicalError(400, f"missing {field}")
        if by_accessor:
            entry = approle.secret_id_by_accessor(a.store, mount.path, name, value)
        else:
            entry = approle.get_secret_id(a.store, mount.path, name, secret_id_hash(value))
        if action == "lookup":
            if entry is None:
                if by_accessor:  # Vault: 404 for an accessor, an empty 204 for a secret ID
                    raise LogicalError(404, f"failed to find accessor entry for {value[:140]!r}")
                return Response()
            return Response(data=secret_id_json(entry))
        if entry is None and by_accessor:
            raise LogicalError(400, f"failed to find accessor entry for {value[:140]!r}")
        if entry is not None:
            await self._apply(
                approle.encode_secret_id_destroy(
                    a.registry, mount.path, name, secret_hash=entry.secret_hash
                )
            )
        return Response()

    async def _generate_secret_id(
        self, mount: authstate.AuthMount, role: approle.AppRole, body: dict[str, Any]
    ) -> Response:
        a = self.agent
        ttl = parse_seconds(body["ttl"], "ttl") if body.get("ttl") not in (None, "") else None
        uses = body.get("num_uses")
        num_uses = parse_count(uses, "num_uses") if uses not in (None, "") else None
        metadata = parse_metadata(body.get("metadata"))
        cidr_list = parse_cidrs(body.get("cidr_list"), "cidr_list")
        if parse_list(body.get("token_bound_cidrs"), "token_bound_cidrs"):
            raise LogicalError(400, "token_bound_cidrs is not supported")
        try:
            approle.secret_id_terms(role.secret_id_ttl, role.secret_id_num_uses, ttl, num_uses)
            approle.validate_secret_id_request(role, metadata, cidr_list)
        except ValueError as e:
            raise LogicalError(400, str(e)) from None
        secret_id, accessor = str(uuid.uuid4()), str(uuid.uuid4())
        answer = await self._apply(
            approle.encode_secret_id_create(
                a.registry,
                mount.path,
                role.name,
                secret_hash=secret_id_hash(secret_id),
                accessor=accessor,
                now=self.service.clock(),
                ttl=ttl,
                num_uses=num_uses,
                metadata=metadata,
                cidr_list=cidr_list,
            )
        )
        return Response(
            data={
                "secret_id": secret_id,
                "secret_id_accessor": accessor,
                "secret_id_ttl": int(answer.get("ttl", 0)),
                "secret_id_num_uses": int(answer.get("num_uses", 0)),
            }
        )

    async def _approle_login(self, mount: authstate.AuthMount, req: Request) -> Response:
        a, body = self.agent, req.data or {}
        role_id = body.get("role_id")
        if not isinstance(role_id, str) or not role_id:
            raise LogicalError(400, "missing role_id")
        role = await self._fresh(lambda: approle.role_by_id(a.store, mount.path, role_id))
        if role is None:
            raise LogicalError(400, INVALID_APPROLE)
        meta: dict[str, str] = {}
        entry: approle.SecretId | None = None
        if role.bind_secret_id:
            secret_id = body.get("secret_id")
            if not isinstance(secret_id, str) or not secret_id:
                raise LogicalError(400, "missing secret_id")
            digest = secret_id_hash(secret_id)
            entry = await self._fresh(
                lambda: approle.get_secret_id(a.store, mount.path, role.name, digest)
            )
            if entry is None or entry.expired(self.service.clock()):
                raise LogicalError(400, INVALID_APPROLE)
        if (refusal := login_cidr_refusal(role, entry, req.remote)) is not None:
            raise LogicalError(400, refusal)
        if entry is not None:
            meta = dict(entry.metadata)
            if entry.num_uses:  # spent through the log before the token exists
                result = await apply_here(
                    a,
                    approle.encode_secret_id_use(
                        a.registry,
                        mount.path,
                        role.name,
                        secret_hash=entry.secret_hash,
                        now=self.service.clock(),
                    ),
                )
                if not result.ok:
                    raise LogicalError(400, INVALID_APPROLE)
        meta["role_name"] = role.name
        return await self._issue(
            role.token, meta=meta, display_name="approle", path=f"auth/{mount.path}login"
        )

    async def tidy_expired(self, mount: str = "") -> int:
        """Delete expired secret IDs of `mount` ("": every mount) through the log, in
        batches; the number deleted. For `tidy/secret-id` and the leader's sweep."""
        total = 0
        while True:
            answer = await self._apply(
                approle.encode_secret_id_tidy(
                    self.agent.registry, now=self.service.clock(), mount=mount, limit=TIDY_BATCH
                )
            )
            total += int(answer.get("deleted", 0))
            if not answer.get("more"):
                return total

    # ------------------------------------------------------------ userpass
    async def _userpass(
        self, mount: authstate.AuthMount, sub: str, req: Request, op: Operation
    ) -> Response:
        a = self.agent
        parts = sub.split("/")
        if parts[0] == "login" and len(parts) == 2:
            _write_only(op)
            return await self._userpass_login(mount, parts[1], req)
        if parts[0] != "users" or len(parts) > 3:
            raise LogicalError(404, f"unsupported path auth/{mount.path}{sub}")
        if len(parts) == 1:
            if op is not Operation.LIST:
                raise LogicalError(405, "list users with LIST")
            return _keys(userpass.list_users(a.store, mount.path))
        name = parse_name(parts[1], "username")
        body = req.data or {}
        if len(parts) == 3:
            _write_only(op)
            return await self._user_field(mount, name, parts[2], body)
        if op is Operation.READ:
            user = userpass.get_user(a.store, mount.path, name)
            if user is None:
                raise LogicalError(404, "")
            return Response(data=token_fields_json(user.token))
        if op in _WRITE:
            old = userpass.get_user(a.store, mount.path, name)
            changes = parse_token_fields(body)
            check_user_token_fields(old, changes)
            record: dict[str, Any] | None = None
            if old is None or body.get("password") not in (None, ""):
                record = await self._hash(parse_password(body))
            await self._apply(
                userpass.encode_user_set(a.registry, mount.path, name, password=record, **changes)
            )
            return Response()
        if op is Operation.DELETE:
            await self._apply(userpass.encode_user_delete(a.registry, mount.path, name))
            return Response()
        raise LogicalError(405, f"{op.value} is not supported on a user")

    async def _user_field(
        self, mount: authstate.AuthMount, name: str, field: str, body: dict[str, Any]
    ) -> Response:
        """`users/<name>/password` and `users/<name>/policies`: an existing user."""
        a = self.agent
        if field == "password":
            record = await self._hash(parse_password(body))
            cmd = userpass.encode_user_password(a.registry, mount.path, name, record)
        elif field == "policies":
            found = given(body, "token_policies", "policies")
            policies = parse_policies(found[1], found[0]) if found else []
            check_user_token_fields(None, {"token_policies": policies})
            cmd = userpass.encode_user_policies(a.registry, mount.path, name, policies)
        else:
            raise LogicalError(404, f"unsupported path auth/{mount.path}users/{name}/{field}")
        await self._apply(cmd)
        return Response()

    async def _userpass_login(
        self, mount: authstate.AuthMount, raw_name: str, req: Request
    ) -> Response:
        a = self.agent
        password = (req.data or {}).get("password")
        if not isinstance(password, str) or not password:
            raise LogicalError(400, "missing password")
        name = raw_name.lower()
        user = None
        if NAME.fullmatch(name):
            user = await self._fresh(lambda: userpass.get_user(a.store, mount.path, name))
        record = passwords.decoy_record() if user is None else user.password
        matched = await self._verify(password, record)
        if user is None or not matched:
            raise LogicalError(400, INVALID_USERPASS)
        return await self._issue(
            user.token,
            meta={"username": name},
            display_name=f"userpass-{name}",
            path=f"auth/{mount.path}login/{name}",
        )

    # ------------------------------------------------------------ sys/auth
    def _token_mount(self) -> dict[str, Any]:
        digest = hashlib.sha256(self.agent.ident.cluster_id.encode()).hexdigest()[:8]
        return mount_json("token", "token based credentials", f"auth_token_{digest}")

    async def sys_auth(self, rel: str, req: Request, op: Operation) -> Response:
        """`sys/auth` (list, with the built-in "token/") and `sys/auth/<path>`
        (read, enable with {"type": "approle"|"userpass", "description"}, disable)."""
        a = self.agent
        rest = rel[len("auth") :].strip("/")
        if not rest:
            if op not in (Operation.READ, Operation.LIST):
                raise LogicalError(405, "unsupported operation")
            if not req.stale:
                await a.read_barrier()
            out = {"token/": self._token_mount()}
            for m in authstate.list_mounts(a.store):
                out[m.path] = mount_json(m.type, m.description, m.accessor)
            return Response(data=out)
        if rest == "tune" or rest.endswith("/tune"):
            raise LogicalError(400, "tuning auth methods is not supported")
        path = rest + "/"
        if path == authstate.TOKEN_MOUNT:
            if op is Operation.READ:
                return Response(data=self._token_mount())
            if op is Operation.DELETE:
                raise LogicalError(400, "token credential backend cannot be disabled")
            raise LogicalError(400, "path is already in use at token/")
        try:
            authstate.validate_mount_path(path)
        except ValueError as e:
            raise LogicalError(400, str(e)) from None
        if op is Operation.READ:
            if not req.stale:
                await a.read_barrier()
            mount = authstate.get_mount(a.store, path)
            if mount is None:
                raise LogicalError(400, f"No auth engine at {path}")
            return Response(data=mount_json(mount.type, mount.description, mount.accessor))
        if op in _WRITE:
            body = req.data or {}
            kind = body.get("type")
            if kind not in authstate.METHOD_TYPES:
                raise LogicalError(400, f"unsupported auth method type {kind!r}: approle, userpass")
            for name in ("config", "options"):
                if body.get(name):
                    raise LogicalError(400, f"auth method {name} is not supported")
            for name in ("local", "seal_wrap", "external_entropy_access"):
                if body.get(name) is not None and parse_bool(body[name], name):
                    raise LogicalError(400, f"{name} is not supported")
            await self._apply(
                authstate.encode_mount_enable(
                    a.registry,
                    path,
                    method_type=str(kind),
                    accessor=f"auth_{kind}_{secrets.token_hex(4)}",
                    now=self.service.clock(),
                    description=str(body.get("description") or ""),
                )
            )
            return Response()
        if op is Operation.DELETE:
            await self._apply(authstate.encode_mount_disable(a.registry, path))
            return Response()
        raise LogicalError(405, "unsupported operation")


def _write_only(op: Operation) -> None:
    if op not in _WRITE:
        raise LogicalError(405, "unsupported operation: use POST")


def _keys(keys: list[str]) -> Response:
    if not keys:
        raise LogicalError(404, "")
    return Response(data={"keys": keys})
