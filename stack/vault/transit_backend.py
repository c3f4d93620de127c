"""Vault's transit secrets engine behind the logical router: the HTTP paths of a mount
of type "transit", on the crypto of `transit.py` and the replicated key state of
`stack/state/transit.py` (commands 150-154).

Key material is generated on the node serving the request, encrypted with the barrier
(AAD: the mount's accessor, the key's name and the version number, so a version's
material cannot be moved to another key or version) and only then proposed, so the
Raft log, the tables and the snapshots hold no key in the clear. Every request that
reads a key does a read barrier first unless it says stale, so a raised
min_decryption_version holds on every node at once.

Paths (relative to the mount): keys (LIST), keys/<name> (POST create, GET read,
DELETE), keys/<name>/rotate, keys/<name>/config, keys/<name>/trim, encrypt/<name>
(creates a missing key, as Vault's upsert, which needs the `create` capability),
decrypt/<name>, rewrap/<name>, datakey/plaintext|wrapped/<name>,
sign/<name>[/<hash>], verify/<name>[/<hash>], hmac/<name>[/<algo>], hash[/<algo>],
random[/<source>][/<bytes>], export/<type>/<name>[/<version>]. encrypt, decrypt,
rewrap, sign, verify and hmac take `batch_input` and answer `batch_results` in
order with per-item errors; a batch of encrypt, decrypt or rewrap with any failed
item answers 400 (or `partial_failure_response_code` if some succeeded), as Vault.
Vault paths not implemented (backup, restore, import, wrapping_key, config/keys,
cache-config, byok-export, CMAC, RSA) are refused with 400 and a clear message.

Wiring (the lead does this; nothing here is wired yet):
1. `stack/agent.py` `build_registry`: `transitstate.register(registry)` with
   `from stack.state import transit as transitstate`.
2. `stack/state/secrets.py`: accept mount type "transit" (`MOUNT_TYPES`, and a
   version check only for "kv"; store the KV `DEFAULT_OPTIONS` so `secrets._mount`
   still reads the row); in `apply_mount_disable` also call
   `stack.state.transit.purge_mount(ctx, path)` (import inside the function: the
   transit state imports secrets for the mount table).
3. `kv_backend.sys_mounts`: accept `{"type": "transit"}` (accessor "transit_" +
   8 hex) and report the type in `_mount_json`.
4. `service.py`: `self.transit = TransitBackend(self)`; in `route`, after sys/ and
   auth/token/, `stack.state.transit.find_mount(store, path)` -> `(self.transit,
   path)` before the KV lookup (a transit mount must not reach `KvBackend`, and
   `KvBackend.mount_for` must skip non-kv mounts).
5. Auto-rotation, if wanted: on the leader, every minute, `rotate_due()` below.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from stack.state import transit as st
from stack.state.commands import WriteResult
from stack.vault import transit as tr
from stack.vault import transit_requests as rq
from stack.vault.kv_backend import apply_here
from stack.vault.logical import LogicalError, Operation, Request, Response
from stack.vault.timefmt import parse_duration

if TYPE_CHECKING:
    from stack.agent import Agent
    from stack.vault.barrier import Barrier
    from stack.vault.service import SecretsService

ROTATE_ATTEMPTS = 5
_REASON_STATUS = {st.Refusal.NO_MOUNT: 404, st.Refusal.CONFLICT: 409}


# -- key material behind the barrier


def _aad(mount: st.TransitMount, name: str, version: int) -> bytes:
    return b"\x00".join(
        (b"stack/transit", mount.accessor.encode(), name.encode(), str(version).encode())
    )


class _SealedVersions(Mapping[int, tr.KeyVersion]):
    """A key's versions, decrypted from the barrier only when an operation uses one
    (a key rotated hourly for a year has 8760 of them)."""

    def __init__(
        self,
        barrier: Barrier,
        mount: st.TransitMount,
        name: str,
        records: dict[int, st.VersionRecord],
    ) -> None:
        self._barrier, self._mount, self._name, self._records = barrier, mount, name, records
        self._open: dict[int, tr.KeyVersion] = {}

    def __getitem__(self, number: int) -> tr.KeyVersion:
        found = self._open.get(number)
        if found is None:
            record = self._records[number]
            raw = self._barrier.decrypt(record.ct, _aad(self._mount, self._name, number))
            try:
                found = tr.unpack_material(
                    raw, created=record.created, public_key=record.public_key
                )
            except tr.CorruptKeyMaterial as e:
                raise LogicalError(500, f"key {self._name} version {number}: {e}") from None
            self._open[number] = found
        return found

    def __iter__(self) -> Iterator[int]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


def _transit_key(record: st.KeyRecord, versions: Mapping[int, tr.KeyVersion]) -> tr.TransitKey:
    return tr.TransitKey(
        record.name,
        record.type,
        versions,
        record.latest_version,
        min_decryption_version=record.min_decryption_version,
        min_encryption_version=record.min_encryption_version,
        min_available_version=record.min_available_version,
        deletion_allowed=record.deletion_allowed,
        exportable=record.exportable,
        allow_plaintext_backup=record.allow_plaintext_backup,
        derived=record.derived,
        convergent_encryption=record.convergent,
        auto_rotate_period=record.auto_rotate_period,
        key_size=record.key_size,
    )


def _refused(data: Any) -> LogicalError:
    data = data if isinstance(data, dict) else {}
    status = _REASON_STATUS.get(data.get("reason", ""), 400)
    return LogicalError(status, str(data.get("error", "refused")))


class TransitBackend:
    """The backend protocol of `service.Backend`, for every mount of type "transit"."""

    def __init__(self, service: SecretsService) -> None:
        self.service = service

    @property
    def agent(self) -> Agent:
        return self.service.agent

    def mount_for(self, path: str) -> st.TransitMount | None:
        return st.find_mount(self.agent.store, path)

    def _split(self, path: str) -> tuple[st.TransitMount, str]:
        mount = self.mount_for(path)
        if mount is None:
            raise LogicalError(404, f"no transit secrets engine mounted at {path!r}")
        return mount, path[len(mount.path) :] if path.startswith(mount.path) else ""

    # ------------------------------------------------------------ protocol
    async def operation(self, rel: str, req: Request) -> Operation:
        """encrypt/<name> on a missing key creates it: Vault's existence check makes
        that the `create` capability. Every other write is `update`."""
        if req.operation is not Operation.UPDATE:
            return req.operation
        mount, sub = self._split(rel)
        parts = sub.split("/")
        encrypt = len(parts) == 2 and parts[0] == "encrypt" and parts[1]
        if encrypt and not st.key_exists(self.agent.store, mount.path, parts[1]):
            return Operation.CREATE
        return Operation.UPDATE

    def needs_sudo(self, rel: str, op: Operation) -> bool:
        return False

    async def handle(self, rel: str, req: Request, op: Operation, token: Any) -> Response:
        mount, sub = self._split(rel)
        body = dict(req.data or {})
        rq.refuse_params(body)
        parts = sub.split("/")
        head = parts[0]
        if head in rq.UNSUPPORTED_PATHS:
            what = rq.UNSUPPORTED_PATHS[head]
            raise LogicalError(400, f"{what} is not supported by stack's transit engine")
        if not req.stale:
            await self.agent.read_barrier()
        try:
            if head == "keys":
                return await self._keys(mount, parts[1:], req, op, body)
            if head == "export" and len(parts) in (3, 4):
                self._expect(op, Operation.READ)
                return self._export(mount, parts[1], parts[2], parts[3] if len(parts) == 4 else "")
            if head == "hash" and len(parts) <= 2:
                self._expect(op, Operation.UPDATE)
                return self._hash(parts[1] if len(parts) == 2 else "", body)
            if head == "random" and len(parts) <= 3:
                self._expect(op, Operation.UPDATE)
                return self._random(parts[1:], body)
            if head == "datakey" and len(parts) == 3:
                self._expect(op, Operation.UPDATE)
                return self._datakey(mount, parts[1], rq.key_name(parts[2]), body)
            if head in ("encrypt", "decrypt", "rewrap") and len(parts) == 2:
                self._expect(op, Operation.UPDATE)
                handler = getattr(self, "_" + head)
                resp: Response = await handler(mount, rq.key_name(parts[1]), body, op)
                return resp
            if head in ("sign", "verify", "hmac") and len(parts) in (2, 3):
                self._expect(op, Operation.UPDATE)
                url_algorithm = parts[2] if len(parts) == 3 else ""
                resp = getattr(self, "_" + head)(mount, rq.key_name(parts[1]), url_algorithm, body)
                return resp
        except tr.TransitError as e:
            raise LogicalError(400, str(e)) from None
        raise LogicalError(404, f"unsupported path: {rel!r}")

    @staticmethod
    def _expect(op: Operation, wanted: Operation) -> None:
        allowed = (Operation.CREATE, Operation.UPDATE) if wanted is Operation.UPDATE else (wanted,)
        if op not in allowed:
            raise LogicalError(405, f"{op.value} is not supported on this path")

    # ------------------------------------------------------------ state
    def _load(self, mount: st.TransitMount, name: str) -> tr.TransitKey | None:
        record = st.get_key(self.agent.store, mount.path, name)
        if record is None:
            return None
        versions = _SealedVersions(self.agent.barrier, mount, name, record.versions)
        return _transit_key(record, versions)

    def _need(self, mount: st.TransitMount, name: str, missing: str) -> tr.TransitKey:
        key = self._load(mount, name)
        if key is None:
            raise LogicalError(400, missing)
        return key

    def _seal(
        self, mount: st.TransitMount, name: str, number: int, version: tr.KeyVersion
    ) -> bytes:
        return self.agent.barrier.encrypt(tr.pack_material(version), _aad(mount, name, number))

    async def _apply(self, cmd: bytes) -> WriteResult:
        return await apply_here(self.agent, cmd)

    async def _create(
        self, mount: st.TransitMount, name: str, key: tr.TransitKey
    ) -> tuple[tr.TransitKey, bool]:
        """Propose `key` (version 1); (the key as stored, whether this call made it)."""
        first = key.versions[1]
        cmd = st.encode_key_create(
            self.agent.registry,
            mount.path,
            name,
            key.type,
            self._seal(mount, name, 1, first),
            now=first.created,
            public_key=first.public_key,
            derived=key.derived,
            convergent=key.convergent_encryption,
            exportable=key.exportable,
            allow_plaintext_backup=key.allow_plaintext_backup,
            auto_rotate_period=key.auto_rotate_period,
            key_size=key.key_size,
        )
        result = await self._apply(cmd)
        made = result.ok
        if not made and (result.data or {}).get("reason") != st.Refusal.EXISTS:
            raise _refused(result.data)
        return self._need(mount, name, "encryption key not found"), made

    # ------------------------------------------------------------ keys
    async def _keys(
        self,
        mount: st.TransitMount,
        rest: list[str],
        req: Request,
        op: Operation,
        body: dict[str, Any],
    ) -> Response:
        if not rest or rest == [""]:
            if op is not Operation.LIST:
                raise LogicalError(405, f"{op.value} is not supported on keys/; use LIST")
            names = st.list_keys(self.agent.store, mount.path)
            if not names:
                raise LogicalError(404, "")
            return Response(data={"keys": names})
        name = rq.key_name(rest[0])
        if len(rest) == 2 and rest[1] in ("rotate", "config", "trim"):
            self._expect(op, Operation.UPDATE)
            action: Callable[..., Any] = getattr(self, "_key_" + rest[1])
            resp: Response = await action(mount, name, body)
            return resp
        if len(rest) != 1:
            raise LogicalError(400, f"keys/{name}/{'/'.join(rest[1:])} is not supported by "
                               "stack's transit engine")  # fmt: skip
        if op is Operation.READ:
            key = self._load(mount, name)
            if key is None:
                raise LogicalError(404, "")
            context = rq.optional_b64(req.query.get("context", body.get("context")), "context")
            return Response(data=tr.key_info(key, context))
        if op is Operation.DELETE:
            result = await self._apply(st.encode_key_delete(self.agent.registry, mount.path, name))
            if not result.ok:
                raise _refused(result.data)
            return Response()
        if op in (Operation.CREATE, Operation.UPDATE):
            return await self._key_create(mount, name, body)
        raise LogicalError(405, f"{op.value} is not supported on keys/{name}")

    async def _key_create(
        self, mount: st.TransitMount, name: str, body: dict[str, Any]
    ) -> Response:
        # The body is checked even when the key exists: bad input is never a 200.
        period = parse_duration(body.get("auto_rotate_period", 0), "auto_rotate_period")
        key = tr.create_key(
            name,
            rq.as_str(body.get("type"), "type") or "aes256-gcm96",
            now=self.service.clock(),
            derived=rq.as_bool(body.get("derived", False), "derived"),
            convergent_encryption=rq.as_bool(
                body.get("convergent_encryption", False), "convergent_encryption"
            ),
            exportable=rq.as_bool(body.get("exportable", False), "exportable"),
            allow_plaintext_backup=rq.as_bool(
                body.get("allow_plaintext_backup", False), "allow_plaintext_backup"
            ),
            auto_rotate_period=period,
            key_size=rq.as_int(body.get("key_size", 0), "key_size"),
        )
        existing = self._load(mount, name)
        if existing is not None:
            return Response(data=tr.key_info(existing), warnings=[f"key {name} already existed"])
        stored, made = await self._create(mount, name, key)
        warnings = [] if made else [f"key {name} already existed"]
        return Response(data=tr.key_info(stored), warnings=warnings)

    async def _key_rotate(
        self, mount: st.TransitMount, name: str, body: dict[str, Any]
    ) -> Response:
        for _ in range(ROTATE_ATTEMPTS):
            key = self._need(mount, name, "key not found")
            number = key.latest_version + 1
            material = tr.new_key_material(
                key.type, key_size=key.key_size, now=self.service.clock()
            )
            cmd = st.encode_key_rotate(
                self.agent.registry,
                mount.path,
                name,
                number,
                self._seal(mount, name, number, material),
                now=material.created,
                public_key=material.public_key,
            )
            result = await self._apply(cmd)
            if result.ok:
                return Response(data=tr.key_info(self._need(mount, name, "key not found")))
            if (result.data or {}).get("reason") != st.Refusal.CONFLICT:
                raise _refused(result.data)
            await self.agent.read_barrier()
        raise LogicalError(409, f"key {name} kept being rotated concurrently; retry")

    async def _key_config(
        self, mount: st.TransitMount, name: str, body: dict[str, Any]
    ) -> Response:
        key = self._need(mount, name, f"no existing key named {name} could be found")
        changes: dict[str, Any] = {}
        for field in ("min_decryption_version", "min_encryption_version"):
            if body.get(field) is not None:
                changes[field] = rq.as_int(body[field], field)
        for field in ("deletion_allowed", "exportable", "allow_plaintext_backup"):
            if body.get(field) is not None:
                changes[field] = rq.as_bool(body[field], field)
        if body.get("auto_rotate_period") is not None:
            changes["auto_rotate_period"] = parse_duration(
                body["auto_rotate_period"], "auto_rotate_period"
            )
        tr.configure(key, **changes)  # Vault's refusals, before the log
        cmd = st.encode_key_config(
            self.agent.registry, mount.path, name, now=self.service.clock(), **changes
        )
        result = await self._apply(cmd)
        if not result.ok:
            raise _refused(result.data)
        warnings = list((result.data or {}).get("warnings") or [])
        stored = self._need(mount, name, f"no existing key named {name} could be found")
        return Response(data=tr.key_info(stored), warnings=warnings)

    async def _key_trim(self, mount: st.TransitMount, name: str, body: dict[str, Any]) -> Response:
        key = self._need(mount, name, "invalid key name")
        if body.get("min_available_version") is None:
            raise LogicalError(400, "missing min_available_version")
        min_available = rq.as_int(body["min_available_version"], "min_available_version")
        tr.trim(key, min_available)
        cmd = st.encode_key_trim(self.agent.registry, mount.path, name, min_available)
        result = await self._apply(cmd)
        if not result.ok:
            raise _refused(result.data)
        return Response(data=tr.key_info(self._need(mount, name, "invalid key name")))

    def _export(
        self, mount: st.TransitMount, export_type: str, name: str, version: str
    ) -> Response:
        key = self._load(mount, rq.key_name(name))
        if key is None:
            raise LogicalError(404, "")
        keys = tr.export(key, export_type, version or None)
        return Response(data={"name": name, "type": key.type, "keys": keys})

    # ------------------------------------------------------------ encrypt, decrypt, rewrap
    async def _encrypt(
        self, mount: st.TransitMount, name: str, body: dict[str, Any], op: Operation
    ) -> Response:
        batch = body.get("batch_input")
        items = batch if batch is not None else [body]
        if batch is None and "plaintext" not in body:
            raise LogicalError(400, "missing plaintext to encrypt")
        warnings: list[str] = []
        key = self._load(mount, name)
        if key is None:
            if op is not Operation.CREATE:
                raise LogicalError(400, "encryption key not found")
            key, made = await self._upsert(mount, name, body, items)
            if not made:
                warnings.append("Attempted creation of the key during the encrypt operation, "
                                "but it was created beforehand")  # fmt: skip
        found = key
        default_version = rq.as_int(body.get("key_version", 0), "key_version")

        def one(item: dict[str, Any]) -> dict[str, Any]:
            if "plaintext" not in item:
                raise tr.TransitError("missing plaintext to encrypt")
            number = rq.as_int(item.get("key_version", default_version), "key_version")
            ciphertext = tr.encrypt(
                found,
                rq.b64_field(item.get("plaintext"), "plaintext"),
                version=number,
                context=rq.optional_b64(item.get("context"), "context"),
                associated_data=rq.optional_b64(item.get("associated_data"), "associated_data"),
                nonce=rq.optional_b64(item.get("nonce"), "nonce"),
            )
            return {"ciphertext": ciphertext, "key_version": tr.encryption_version(found, number)}

        return self._crypt_response(body, batch, items, one, warnings)

    async def _upsert(
        self, mount: st.TransitMount, name: str, body: dict[str, Any], items: Any
    ) -> tuple[tr.TransitKey, bool]:
        """Vault's encrypt on a missing key: create it, derived when the request
        carries a context (in every item or in none)."""
        contexts = [bool(i.get("context")) for i in items if isinstance(i, dict)] or [False]
        if any(contexts) and not all(contexts):
            raise LogicalError(400, "context should be set either in all the request blocks or "
                               "in none")  # fmt: skip
        convergent = rq.as_bool(body.get("convergent_encryption", False), "convergent_encryption")
        if convergent and not contexts[0]:
            raise LogicalError(
                400,
                "convergent encryption requires derivation to be enabled, so context is required",
            )
        key_type = rq.as_str(body.get("type"), "type") or "aes256-gcm96"
        if key_type in st.ASYMMETRIC_TYPES or key_type == "hmac":
            raise LogicalError(400, f"key type {key_type} not supported for this operation")
        key = tr.create_key(
            name,
            key_type,
            now=self.service.clock(),
            derived=contexts[0],
            convergent_encryption=convergent,
        )
        return await self._create(mount, name, key)

    async def _decrypt(
        self, mount: st.TransitMount, name: str, body: dict[str, Any], op: Operation
    ) -> Response:
        batch = body.get("batch_input")
        if batch is None and "ciphertext" not in body:
            raise LogicalError(400, "missing ciphertext to decrypt")
        key = self._need(mount, name, "encryption key not found")

        def one(item: dict[str, Any]) -> dict[str, Any]:
            if "ciphertext" not in item:
                raise tr.TransitError("missing ciphertext to decrypt")
            plaintext = tr.decrypt(
                key,
                rq.as_str(item.get("ciphertext"), "ciphertext"),
                context=rq.optional_b64(item.get("context"), "context"),
                associated_data=rq.optional_b64(item.get("associated_data"), "associated_data"),
                nonce=rq.optional_b64(item.get("nonce"), "nonce"),
            )
            return {"plaintext": base64.b64encode(plaintext).decode()}

        return self._crypt_response(body, batch, batch if batch is not None else [body], one, [])

    async def _rewrap(
        self, mount: st.TransitMount, name: str, body: dict[str, Any], op: Operation
    ) -> Response:
        batch = body.get("batch_input")
        if batch is None and "ciphertext" not in body:
            raise LogicalError(400, "missing ciphertext to rewrap")
        key = self._need(mount, name, "encryption key not found")
        default_version = rq.as_int(body.get("key_version", 0), "key_version")

        def one(item: dict[str, Any]) -> dict[str, Any]:
            if "ciphertext" not in item:
                raise tr.TransitError("missing ciphertext to rewrap")
            if item.get("nonce"):
                raise tr.TransitError(tr.ERR_NONCE)
            number = rq.as_int(item.get("key_version", default_version), "key_version")
            ciphertext = tr.rewrap(
                key,
                rq.as_str(item.get("ciphertext"), "ciphertext"),
                version=number,
                context=rq.optional_b64(item.get("context"), "context"),
                associated_data=rq.optional_b64(item.get("associated_data"), "associated_data"),
            )
            return {"ciphertext": ciphertext, "key_version": tr.encryption_version(key, number)}

        return self._crypt_response(body, batch, batch if batch is not None else [body], one, [])

    @staticmethod
    def _crypt_response(
        body: dict[str, Any],
        batch: Any,
        items: Any,
        one: Callable[[dict[str, Any]], dict[str, Any]],
        warnings: list[str],
    ) -> Response:
        if batch is None:
            return Response(data=one(items[0]), warnings=warnings)
        outcome = rq.run_batch(batch, one)
        status, more = rq.batch_status(outcome, body.get("partial_failure_response_code"))
        return Response(
            data={"batch_results": outcome.results}, warnings=warnings + more, status=status
        )

    def _datakey(
        self, mount: st.TransitMount, kind: str, name: str, body: dict[str, Any]
    ) -> Response:
        if kind not in ("plaintext", "wrapped"):
            raise LogicalError(400, "Invalid path, must be 'plaintext' or 'wrapped'")
        key = self._need(mount, name, "encryption key not found")
        made = tr.datakey(
            key,
            kind,
            bits=rq.as_int(body.get("bits", 256), "bits") or 256,
            version=rq.as_int(body.get("key_version", 0), "key_version"),
            context=rq.optional_b64(body.get("context"), "context"),
        )
        if rq.optional_b64(body.get("nonce"), "nonce"):
            raise tr.TransitError(tr.ERR_NONCE)
        data: dict[str, Any] = {"ciphertext": made.ciphertext, "key_version": made.key_version}
        if made.plaintext is not None:
            data["plaintext"] = base64.b64encode(made.plaintext).decode()
        return Response(data=data)

    # ------------------------------------------------------------ sign, verify, hmac
    def _sign(
        self, mount: st.TransitMount, name: str, url_algorithm: str, body: dict[str, Any]
    ) -> Response:
        key = self._need(mount, name, "signing key not found")
        params = rq.signing_params(url_algorithm, body)
        default_version = rq.as_int(body.get("key_version", 0), "key_version")

        def one(item: dict[str, Any]) -> dict[str, Any]:
            if "input" not in item:
                raise tr.TransitError("missing input")
            number = rq.as_int(item.get("key_version", default_version), "key_version")
            context = rq.optional_b64(item.get("context"), "context")
            data = rq.b64_field(item.get("input"), "input")
            signature = tr.sign(
                key,
                data,
                version=number,
                context=context,
                hash_algorithm=params.hash_algorithm,
                prehashed=params.prehashed,
                marshaling_algorithm=params.marshaling_algorithm,
                signature_algorithm=params.signature_algorithm,
            )
            out: dict[str, Any] = {
                "signature": signature,
                "key_version": tr.encryption_version(key, number, "signing"),
            }
            if key.derived and context:
                public = tr.derived_public_key(key, out["key_version"], context)
                out["public_key"] = base64.b64encode(public).decode()
            return out

        return self._plain_batch(body, one)

    def _verify(
        self, mount: st.TransitMount, name: str, url_algorithm: str, body: dict[str, Any]
    ) -> Response:
        batch = body.get("batch_input")
        if batch is None:
            given = [f for f in ("signature", "hmac", "cmac") if body.get(f)]
            if "cmac" in given:
                raise LogicalError(400, "CMAC is not supported by stack's transit engine")
            if len(given) > 1:
                raise LogicalError(400, "provide one of 'signature' or 'hmac'")
            if not given:
                raise LogicalError(400, "neither a 'signature' nor an 'hmac' were given to verify")
        key = self._need(mount, name, "signature verification key not found")
        params = rq.signing_params(url_algorithm, body)

        def one(item: dict[str, Any]) -> dict[str, Any]:
            if "input" not in item:
                raise tr.TransitError("missing input")
            data = rq.b64_field(item.get("input"), "input")
            signature, mac = item.get("signature"), item.get("hmac")
            if signature and mac:
                raise tr.TransitError("provide one of 'signature' or 'hmac'")
            if mac:
                mac_text = rq.as_str(mac, "hmac")
                valid = tr.verify_hmac(key, data, mac_text, algorithm=params.hash_algorithm)
            elif signature:
                context = rq.optional_b64(item.get("context"), "context")
                valid = tr.verify(
                    key,
                    data,
                    rq.as_str(signature, "signature"),
                    context=context,
                    hash_algorithm=params.hash_algorithm,
                    prehashed=params.prehashed,
                    marshaling_algorithm=params.marshaling_algorithm,
                    signature_algorithm=params.signature_algorithm,
                )
            else:
                raise tr.TransitError("missing signature")
            return {"valid": valid}

        return self._plain_batch(body, one, error_fields={"valid": False})

    def _hmac(
        self, mount: st.TransitMount, name: str, url_algorithm: str, body: dict[str, Any]
    ) -> Response:
        key = self._need(mount, name, "encryption key not found")
        algorithm = rq.algorithm(url_algorithm, body)
        default_version = rq.as_int(body.get("key_version", 0), "key_version")

        def one(item: dict[str, Any]) -> dict[str, Any]:
            if "input" not in item:
                raise tr.TransitError("missing input for HMAC")
            number = rq.as_int(item.get("key_version", default_version), "key_version")
            data = rq.b64_field(item.get("input"), "input")
            return {"hmac": tr.hmac(key, data, version=number, algorithm=algorithm)}

        return self._plain_batch(body, one)

    @staticmethod
    def _plain_batch(
        body: dict[str, Any],
        one: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        error_fields: dict[str, Any] | None = None,
    ) -> Response:
        """sign, verify and hmac: a batch answers 200 whatever its items did."""
        batch = body.get("batch_input")
        if batch is None:
            return Response(data=one(body))
        outcome = rq.run_batch(batch, one, error_fields=error_fields)
        return Response(data={"batch_results": outcome.results})

    # ------------------------------------------------------------ hash, random
    def _hash(self, url_algorithm: str, body: dict[str, Any]) -> Response:
        data = rq.b64_field(body.get("input", ""), "input")
        algorithm = url_algorithm or rq.as_str(body.get("algorithm"), "algorithm") or "sha2-256"
        output_format = rq.as_str(body.get("format"), "format") or "hex"
        return Response(data={"sum": tr.hash_data(data, algorithm, output_format)})

    def _random(self, rest: list[str], body: dict[str, Any]) -> Response:
        source = rq.as_str(body.get("source"), "source") or "platform"
        count: Any = body.get("bytes", 32)
        if rest and rest[0] in ("platform", "seal", "all"):
            source, rest = rest[0], rest[1:]
        if rest:
            if not rest[0].isdigit():
                raise LogicalError(400, f"error parsing url-set byte count: {rest[0]!r}")
            count = rest[0]
        if source != "platform":
            raise LogicalError(400, f"random source {source!r} is not supported by stack's "
                               "transit engine (only \"platform\")")  # fmt: skip
        output_format = rq.as_str(body.get("format"), "format") or "base64"
        return Response(
            data={"random_bytes": tr.random_bytes(rq.as_int(count, "bytes"), output_format)}
        )

    # ------------------------------------------------------------ leader duty
    async def rotate_due(self) -> int:
        """Rotate every key whose auto_rotate_period has passed (call on the leader);
        how many were rotated."""
        rotated = 0
        for mount_path, name in st.rotation_due(self.agent.store, self.service.clock()):
            mount = self.mount_for(mount_path)
            if mount is not None:
                await self._key_rotate(mount, name, {})
                rotated += 1
        return rotated
