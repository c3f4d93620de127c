"""The KV secrets engine (Vault's KV v1 and v2) on top of the replicated state
(`stack/state/secrets.py`), plus `sys/mounts`.

Values are JSON objects, encrypted with the barrier before they are proposed
(AAD: the mount's accessor and the secret's path, so a ciphertext cannot be moved
to another secret), and decrypted only on the node answering. Reads are
linearizable (a read barrier first) unless the request says stale. Patch decrypts
the current version, merges (RFC 7386) and writes with check-and-set on the
version it read, so concurrent patches never lose an update.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import TYPE_CHECKING, Any

from stack.errors import Unavailable
from stack.state import secrets as st
from stack.state.commands import WriteResult
from stack.vault import kvdata
from stack.vault.logical import LogicalError, Operation, Request, Response
from stack.vault.timefmt import go_duration, parse_duration, rfc3339

if TYPE_CHECKING:
    from stack.agent import Agent
    from stack.vault.service import SecretsService

V2_PREFIXES = ("data/", "metadata/", "delete/", "undelete/", "destroy/", "subkeys/")
_REASON_STATUS = {st.Refusal.NO_MOUNT: 404}
# Bounds on numbers a request may carry: versions and counts fit the log's integers,
# durations stay finite and printable as times.
MAX_INT = 2**31 - 1
MAX_DURATION = 2**32
APPLIED_TIMEOUT = 10.0


async def apply_here(agent: Agent, cmd: bytes) -> WriteResult:
    """Commit `cmd` through the leader and wait until this node has applied it too, so
    the client's next request here sees its own write (a standby otherwise answers
    from a store that may not have it yet: a new mount, token or audit device)."""
    result = await agent.apply(cmd)
    try:
        await asyncio.wait_for(agent.node.wait_applied(result.index), APPLIED_TIMEOUT)
    except TimeoutError:
        raise Unavailable("the write committed but this node has not applied it yet") from None
    return result


def _aad(mount: st.Mount, path: str) -> bytes:
    return b"stack/secrets/" + mount.accessor.encode() + b"\x00" + path.encode()


def _refused(result_data: Any) -> LogicalError:
    data = result_data if isinstance(result_data, dict) else {}
    reason = data.get("reason", "")
    status = _REASON_STATUS.get(reason, 400)
    return LogicalError(status, str(data.get("error", "refused")))


def _versions(req: Request) -> list[int]:
    raw = (req.data or {}).get("versions")
    if isinstance(raw, str):
        raw = [x for x in raw.split(",") if x.strip()]
    if not isinstance(raw, list) or not raw:
        raise LogicalError(400, "no versions provided")
    out = [_as_int(v, "versions") for v in raw]
    if any(not 0 < v <= MAX_INT for v in out):
        raise LogicalError(400, f"versions must be between 1 and {MAX_INT}")
    return out


def _int_query(req: Request, name: str, default: int = 0) -> int:
    out = _as_int(req.query.get(name, (req.data or {}).get(name, default)), name)
    if abs(out) > MAX_INT:
        raise LogicalError(400, f"{name} is out of range")
    return out


def _duration(value: Any, name: str) -> float:
    seconds = parse_duration(value, name)
    if not 0 <= seconds <= MAX_DURATION:  # also refuses nan and inf
        raise LogicalError(400, f"{name}: must be between 0 and {MAX_DURATION} seconds")
    return seconds


def _version_meta(info: st.VersionInfo, custom: dict[str, str]) -> dict[str, Any]:
    return {
        "created_time": rfc3339(info.created_time),
        "custom_metadata": custom or None,
        "deletion_time": rfc3339(info.deletion_time),
        "destroyed": info.destroyed,
        "version": info.version,
    }


class KvBackend:
    def __init__(self, service: SecretsService) -> None:
        self.service = service

    @property
    def agent(self) -> Agent:
        return self.service.agent

    def mount_for(self, path: str) -> st.Mount | None:
        found = st.find_mount(self.agent.store, path)
        return found if found is not None and found.type == "kv" else None

    def _split(self, path: str) -> tuple[st.Mount, str]:
        mount = self.mount_for(path)
        if mount is None:
            raise LogicalError(404, f"no secrets engine mounted at {path!r}")
        return mount, path[len(mount.path) :] if path.startswith(mount.path) else ""

    # ------------------------------------------------------------ routing
    async def operation(self, rel: str, req: Request) -> Operation:
        if req.operation is not Operation.UPDATE:
            return req.operation
        mount, sub = self._split(rel)
        store = self.agent.store
        if mount.version == 1:
            exists = st.kv1_get(store, mount.path, sub) is not None
            return Operation.UPDATE if exists else Operation.CREATE
        for prefix in ("data/", "metadata/"):
            if sub.startswith(prefix):
                exists = st.kv2_metadata(store, mount.path, sub[len(prefix) :]) is not None
                return Operation.UPDATE if exists else Operation.CREATE
        return Operation.UPDATE

    def needs_sudo(self, rel: str, op: Operation) -> bool:
        return False

    async def handle(self, rel: str, req: Request, op: Operation, token: Any) -> Response:
        mount, sub = self._split(rel)
        if op in (Operation.READ, Operation.LIST) and not req.stale:
            await self.agent.read_barrier()
        if mount.version == 1:
            return await self._v1(mount, sub, req, op)
        if sub == "config":
            return await self._config(mount, req, op)
        for prefix in V2_PREFIXES:
            if sub.startswith(prefix) or sub == prefix.rstrip("/"):
                path = sub[len(prefix) :]
                resp: Response = await getattr(self, "_v2_" + prefix.rstrip("/"))(
                    mount, path, req, op
                )
                return resp
        raise LogicalError(
            404,
            f"unsupported path: {rel!r} (a KV v2 mount has data/, metadata/, delete/, "
            "undelete/, destroy/, subkeys/ and config)",
        )

    # ------------------------------------------------------------ crypto
    def _seal(self, mount: st.Mount, path: str, data: Any) -> bytes:
        try:
            clean = kvdata.validate_data(data)
        except ValueError as e:
            raise LogicalError(400, str(e)) from None
        raw = json.dumps(clean, separators=(",", ":"), ensure_ascii=False).encode()
        ct = self.agent.barrier.encrypt(raw, _aad(mount, path))
        try:
            st.check_ct(ct)
        except ValueError as e:
            raise LogicalError(413, str(e)) from None
        return ct

    def _open(self, mount: st.Mount, path: str, ct: bytes) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.agent.barrier.decrypt(ct, _aad(mount, path)))
        return value

    def _check_path(self, path: str, *, allow_empty: bool = False) -> None:
        if not path and allow_empty:
            return
        try:
            st.validate_path(path)
        except ValueError as e:
            raise LogicalError(400, str(e)) from None

    async def _apply(self, cmd: bytes) -> dict[str, Any]:
        result = await apply_here(self.agent, cmd)
        if not result.ok:
            raise _refused(result.data)
        return result.data if isinstance(result.data, dict) else {}

    # ------------------------------------------------------------ KV v1
    async def _v1(self, mount: st.Mount, path: str, req: Request, op: Operation) -> Response:
        reg, store = self.agent.registry, self.agent.store
        if op is Operation.LIST:
            return Response(data={"keys": self._list(mount, path)})
        self._check_path(path)
        if op is Operation.READ:
            ct = st.kv1_get(store, mount.path, path)
            if ct is None:
                raise LogicalError(404, "")
            return Response(data=self._open(mount, path, ct), lease_duration=2764800)
        if op in (Operation.CREATE, Operation.UPDATE):
            ct = self._seal(mount, path, req.data or {})
            await self._apply(st.encode_kv1_put(reg, mount.path, path, ct))
            return Response()
        if op is Operation.DELETE:
            await self._apply(st.encode_kv1_delete(reg, mount.path, path))
            return Response()
        raise LogicalError(405, f"{op.value} is not supported on a KV v1 secret")

    def _list(self, mount: st.Mount, prefix: str) -> list[str]:
        try:
            keys = st.kv_list(self.agent.store, mount.path, prefix)
        except ValueError as e:
            raise LogicalError(400, str(e)) from None
        if not keys:
            raise LogicalError(404, "")
        return keys

    # ------------------------------------------------------------ KV v2 data
    async def _v2_data(self, mount: st.Mount, path: str, req: Request, op: Operation) -> Response:
        self._check_path(path)
        if op is Operation.READ:
            return self._read_version(mount, path, _int_query(req, "version"))
        if op in (Operation.CREATE, Operation.UPDATE):
            body = req.data or {}
            if "data" not in body:
                raise LogicalError(400, "no data provided")
            return await self._put(mount, path, body["data"], self._cas(body))
        if op is Operation.PATCH:
            return await self._patch(mount, path, req.data or {})
        if op is Operation.DELETE:
            await self._apply(
                st.encode_kv2_delete(
                    self.agent.registry, mount.path, path, now=self.service.clock()
                )
            )
            return Response()
        raise LogicalError(405, f"{op.value} is not supported on {mount.path}data/")

    def _cas(self, body: dict[str, Any]) -> int | None:
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise LogicalError(400, "options must be an object")
        if "cas" not in options or options["cas"] is None:
            return None
        return _int_field(options["cas"], "options.cas")

    async def _put(self, mount: st.Mount, path: str, data: Any, cas: int | None) -> Response:
        ct = self._seal(mount, path, data)
        answer = await self._apply(
            st.encode_kv2_put(
                self.agent.registry, mount.path, path, ct, now=self.service.clock(), cas=cas
            )
        )
        info = st.VersionInfo(
            int(answer["version"]),
            float(answer["created_time"]),
            float(answer.get("deletion_time") or 0),
            bool(answer.get("destroyed", False)),
        )
        return Response(data=_version_meta(info, dict(answer.get("custom_metadata") or {})))

    def _read_version(self, mount: st.Mount, path: str, version: int) -> Response:
        got = st.kv2_version(
            self.agent.store, mount.path, path, version or None, now=self.service.clock()
        )
        if got.status is st.VersionStatus.NOT_FOUND or got.info is None:
            raise LogicalError(404, "")
        meta = _version_meta(got.info, got.custom_metadata)
        if got.status is not st.VersionStatus.OK or got.ct is None:
            raise LogicalError(404, "", data={"data": None, "metadata": meta})
        return Response(data={"data": self._open(mount, path, got.ct), "metadata": meta})

    async def _patch(self, mount: st.Mount, path: str, body: dict[str, Any]) -> Response:
        patch = body.get("data")
        if not isinstance(patch, dict):
            raise LogicalError(400, "no data provided")
        for _ in range(5):  # a concurrent write moved the version: read and merge again
            got = st.kv2_version(self.agent.store, mount.path, path, now=self.service.clock())
            if got.status is not st.VersionStatus.OK or got.ct is None or got.info is None:
                raise LogicalError(404, "")
            cas = self._cas(body)
            if cas is not None and cas != got.info.version:
                raise LogicalError(400, "check-and-set parameter did not match the current version")
            merged = kvdata.merge_patch(self._open(mount, path, got.ct), patch)
            try:
                return await self._put(mount, path, merged, got.info.version)
            except LogicalError as e:
                if cas is not None or "check-and-set" not in str(e):
                    raise
            await self.agent.read_barrier()
        raise LogicalError(409, "the secret kept changing while being patched; retry")

    async def _v2_subkeys(
        self, mount: st.Mount, path: str, req: Request, op: Operation
    ) -> Response:
        self._check_path(path)
        if op is not Operation.READ:
            raise LogicalError(405, "subkeys is read-only")
        resp = self._read_version(mount, path, _int_query(req, "version"))
        assert resp.data is not None
        depth = _int_query(req, "depth")
        if depth < 0:
            raise LogicalError(400, "depth must be >= 0")
        return Response(
            data={"subkeys": kvdata.subkeys(resp.data["data"], depth),
                  "metadata": resp.data["metadata"]}
        )  # fmt: skip

    # ------------------------------------------------------------ KV v2 versions
    async def _versions_op(self, mount: st.Mount, path: str, req: Request, what: str) -> Response:
        self._check_path(path)
        reg, now = self.agent.registry, self.service.clock()
        versions = _versions(req)
        if what == "delete":
            cmd = st.encode_kv2_delete(reg, mount.path, path, now=now, versions=versions)
        elif what == "undelete":
            cmd = st.encode_kv2_undelete(reg, mount.path, path, versions, now=now)
        else:
            cmd = st.encode_kv2_destroy(reg, mount.path, path, versions)
        await self._apply(cmd)
        return Response()

    async def _v2_delete(self, mount: st.Mount, path: str, req: Request, op: Operation) -> Response:
        if op not in (Operation.CREATE, Operation.UPDATE):
            raise LogicalError(405, "use POST or PUT on delete/")
        return await self._versions_op(mount, path, req, "delete")

    async def _v2_undelete(
        self, mount: st.Mount, path: str, req: Request, op: Operation
    ) -> Response:
        if op not in (Operation.CREATE, Operation.UPDATE):
            raise LogicalError(405, "use POST or PUT on undelete/")
        return await self._versions_op(mount, path, req, "undelete")

    async def _v2_destroy(
        self, mount: st.Mount, path: str, req: Request, op: Operation
    ) -> Response:
        if op not in (Operation.CREATE, Operation.UPDATE):
            raise LogicalError(405, "use POST or PUT on destroy/")
        return await self._versions_op(mount, path, req, "destroy")

    # ------------------------------------------------------------ KV v2 metadata
    async def _v2_metadata(
        self, mount: st.Mount, path: str, req: Request, op: Operation
    ) -> Response:
        reg, store = self.agent.registry, self.agent.store
        if op is Operation.LIST:
            return Response(data={"keys": self._list(mount, path)})
        self._check_path(path)
        if op is Operation.READ:
            meta = st.kv2_metadata(store, mount.path, path)
            if meta is None:
                raise LogicalError(404, "")
            return Response(data=self._metadata_json(meta))
        if op in (Operation.CREATE, Operation.UPDATE, Operation.PATCH):
            body = req.data or {}
            kwargs: dict[str, Any] = {}
            if "max_versions" in body:
                kwargs["max_versions"] = _int_field(body["max_versions"], "max_versions")
            if "cas_required" in body:
                kwargs["cas_required"] = _bool_field(body["cas_required"], "cas_required")
            if "delete_version_after" in body:
                kwargs["delete_version_after"] = _duration(
                    body["delete_version_after"], "delete_version_after"
                )
            if "custom_metadata" in body:
                custom = body["custom_metadata"]
                # PATCH removes a key given as null (RFC 7386), as Vault does.
                removable = (None,) if op is Operation.PATCH else ()
                if not isinstance(custom, dict) or not all(
                    isinstance(k, str) and (isinstance(v, str) or v in removable)
                    for k, v in custom.items()
                ):
                    raise LogicalError(400, "custom_metadata must map strings to strings")
                if op is Operation.PATCH:
                    old = st.kv2_metadata(store, mount.path, path)
                    base = dict(old.custom_metadata) if old else {}
                    for k, v in custom.items():
                        if v is None:
                            base.pop(k, None)
                        else:
                            base[k] = v
                    custom = base
                try:
                    st.validate_custom_metadata(custom)
                except ValueError as e:
                    raise LogicalError(400, str(e)) from None
                kwargs["custom_metadata"] = custom
            answer = await self._apply(
                st.encode_kv2_metadata_put(
                    reg, mount.path, path, now=self.service.clock(), **kwargs
                )
            )
            return Response(warnings=list(answer.get("warnings") or []))
        if op is Operation.DELETE:
            await self._apply(st.encode_kv2_metadata_delete(reg, mount.path, path))
            return Response()
        raise LogicalError(405, f"{op.value} is not supported on {mount.path}metadata/")

    def _metadata_json(self, meta: st.SecretMetadata) -> dict[str, Any]:
        return {
            "cas_required": meta.cas_required,
            "created_time": rfc3339(meta.created_time),
            "current_version": meta.current_version,
            "custom_metadata": meta.custom_metadata or None,
            "delete_version_after": go_duration(meta.delete_version_after),
            "max_versions": meta.max_versions,
            "oldest_version": meta.oldest_version,
            "updated_time": rfc3339(meta.updated_time),
            "versions": {
                str(n): {
                    "created_time": rfc3339(v.created_time),
                    "deletion_time": rfc3339(v.deletion_time),
                    "destroyed": v.destroyed,
                }
                for n, v in meta.versions.items()
            },
        }

    # ------------------------------------------------------------ config and mounts
    async def _config(self, mount: st.Mount, req: Request, op: Operation) -> Response:
        if op is Operation.READ:
            o = mount.options
            return Response(
                data={
                    "cas_required": o.cas_required,
                    "delete_version_after": go_duration(o.delete_version_after),
                    "max_versions": o.max_versions,
                }
            )
        if op in (Operation.CREATE, Operation.UPDATE):
            body = req.data or {}
            options: dict[str, Any] = {}
            if "max_versions" in body:
                options["max_versions"] = _int_field(body["max_versions"], "max_versions")
            if "cas_required" in body:
                options["cas_required"] = _bool_field(body["cas_required"], "cas_required")
            if "delete_version_after" in body:
                options["delete_version_after"] = _duration(
                    body["delete_version_after"], "delete_version_after"
                )
            await self._apply(
                st.encode_mount_tune(self.agent.registry, mount.path, options=options)
            )
            return Response()
        raise LogicalError(405, f"{op.value} is not supported on {mount.path}config")

    async def sys_mounts(self, rel: str, req: Request, op: Operation) -> Response:
        a = self.agent
        rest = rel[len("mounts") :].strip("/")
        if not rest:
            if op not in (Operation.READ, Operation.LIST):
                raise LogicalError(405, "unsupported operation")
            if not req.stale:
                await a.read_barrier()
            out = {m.path: self._mount_json(m) for m in st.list_mounts(a.store)}
            out["sys/"] = {
                "type": "system",
                "description": "system endpoints",
                "accessor": "",
                "config": {},
                "options": None,
                "local": False,
                "seal_wrap": False,
            }
            return Response(data=out)
        tune = rest.endswith("/tune")
        path = (rest[: -len("/tune")] if tune else rest).strip("/") + "/"
        if tune:
            return await self._tune(path, req, op)
        if op in (Operation.CREATE, Operation.UPDATE):
            body = req.data or {}
            kind = body.get("type")
            options = body.get("options") or {}
            if not isinstance(options, dict):
                raise LogicalError(400, "options must be an object")
            if kind == "kv-v2":
                kind, version = "kv", 2
            elif kind == "kv":
                version = {"1": 1, "2": 2, "": 1}.get(str(options.get("version", "1")), 0)
            elif kind in ("pki", "transit"):
                version = 1
                if options:
                    raise LogicalError(400, f"a {kind} mount takes no options")
            else:
                raise LogicalError(
                    400, f"unsupported secrets engine type {kind!r} (kv, kv-v2, transit, pki)"
                )
            if version not in (1, 2):
                raise LogicalError(400, "kv version must be 1 or 2")
            try:
                st.validate_mount_path(path)
            except ValueError as e:
                raise LogicalError(400, str(e)) from None
            await self._apply(
                st.encode_mount_enable(
                    a.registry,
                    path,
                    version=version,
                    now=self.service.clock(),
                    accessor=f"{kind}_" + secrets.token_hex(4),
                    description=str(body.get("description") or ""),
                    engine_type=kind,
                )
            )
            return Response()
        if op is Operation.DELETE:
            await self._apply(st.encode_mount_disable(a.registry, path))
            return Response()
        if op is Operation.READ:
            mount = st.get_mount(a.store, path)
            if mount is None:
                raise LogicalError(400, f"no secret engine mount at {path}")
            return Response(data=self._mount_json(mount))
        raise LogicalError(405, "unsupported operation")

    async def _tune(self, path: str, req: Request, op: Operation) -> Response:
        a = self.agent
        mount = st.get_mount(a.store, path)
        if mount is None:
            raise LogicalError(400, f"no secret engine mount at {path}")
        if op is Operation.READ:
            return Response(
                data={"default_lease_ttl": 2764800, "max_lease_ttl": 2764800,
                      "force_no_cache": False, "description": mount.description,
                      "options": {"version": str(mount.version)}}
            )  # fmt: skip
        if op not in (Operation.CREATE, Operation.UPDATE):
            raise LogicalError(405, "unsupported operation")
        body = req.data or {}
        warnings = [
            f"{k} is ignored: KV secrets carry no lease"
            for k in ("default_lease_ttl", "max_lease_ttl")
            if body.get(k) not in (None, "", 0, "0")
        ]
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise LogicalError(400, "options must be an object")
        if "version" in options and str(options["version"]) != str(mount.version):
            raise LogicalError(400, "changing the kv version of a mount is not supported")
        desc = body.get("description")
        await self._apply(
            st.encode_mount_tune(
                a.registry, path, description=str(desc) if desc is not None else None
            )
        )
        return Response(warnings=warnings)

    def ui_mount(self, path: str) -> Response:
        """`GET sys/internal/ui/mounts/<path>`: the mount serving a path, which the
        vault CLI asks before every `vault kv` command to learn the KV version."""
        mount = self.mount_for(path)
        if mount is None:
            raise LogicalError(404, f"no secrets engine mounted at {path!r}")
        return Response(data={"path": mount.path, **self._mount_json(mount)})

    def _mount_json(self, m: st.Mount) -> dict[str, Any]:
        return {
            "type": m.type,
            "description": m.description,
            "accessor": m.accessor,
            "config": {"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": False},
            "options": {"version": str(m.version)} if m.type == "kv" else None,
            "local": False,
            "seal_wrap": False,
        }


def _as_int(value: Any, name: str) -> int:
    """An int, a whole float or a numeric string (Vault decodes weakly); else 400."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise LogicalError(400, f"{name} must be an integer")
    try:
        return int(value)
    except ValueError:
        raise LogicalError(400, f"{name} must be an integer") from None


def _int_field(value: Any, name: str) -> int:
    out = _as_int(value, name)
    if not 0 <= out <= MAX_INT:
        raise LogicalError(400, f"{name} must be between 0 and {MAX_INT}")
    return out


def _bool_field(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise LogicalError(400, f"{name} must be a boolean")
