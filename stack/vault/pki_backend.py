"""Vault's PKI secrets engine for a mount of type "pki" (docs/pki.md).

Paths, relative to the mount (Vault's names and response shapes):

- `roles` LIST; `roles/<name>` POST/PUT (replace), PATCH (merge), GET, DELETE.
- `issue/<role>` POST/PUT: certificate, issuing_ca, ca_chain, private_key,
  private_key_type, serial_number, expiration; `sign/<role>` (`csr`): the same
  without the key. With a `generate_lease` role the answer also carries Vault's
  lease_id, lease_duration (until notAfter) and renewable false (`pki_leases.py`).
- `revoke` POST/PUT (`serial_number`, or `certificate` PEM): revocation_time,
  revocation_time_rfc3339.
- raw: `ca` and `cert/ca/raw` (DER, application/pkix-cert); `ca/pem` and
  `cert/ca/raw/pem` (PEM, application/pem-certificate-chain); `ca_chain` (the PEM
  chain: issuer, then cluster root; application/pkix-cert); `crl` and
  `cert/crl/raw` (DER, application/pkix-crl); `crl/pem` and `cert/crl/raw/pem`
  (PEM, application/x-pem-file); `cert/<serial>/raw` (DER) and
  `cert/<serial>/raw/pem` (PEM) as for `ca`.
- JSON: `cert/<serial>`, `cert/ca`, `cert/crl`, `cert/ca_chain`: certificate,
  revocation_time, revocation_time_rfc3339 (and ca_chain); `crl/rotate` GET.
- `certs`, `certs/revoked` LIST: serials.
- `tidy` POST/PUT (tidy_cert_store, tidy_revoked_certs, safety_buffer): 202 and
  the counts.

Raw answers follow Vault's convention for non-JSON bodies: the response data holds
only `http_content_type`, `http_raw_body` (bytes) and `http_status_code` (200, or
204 when the body is empty); the HTTP layer must write the body as is with that
content type instead of the JSON envelope.

The issuer is made lazily: the first request that needs it (issue, sign, ca, crl,
...) creates a P-256 intermediate signed by the active cluster root and proposes
it (`pki.issuer_set`, a compare-and-set on its version, so two servers racing
make one). It is replaced the same way once two thirds of its life have passed or
when the cluster root rotates; certificates it signed stay valid, their chain
ends at a root the cluster still trusts until it retires. The CRL is signed by
the current issuer.

Issuing is local to the answering (unsealed) server; only storing the certificate
goes through the log, and concurrent issues on one mount share log entries (one
`pki.cert_store` in flight per mount; what arrives meanwhile waits for the next).
A certificate's lease, if its role has generate_lease, goes in the same entry. A
role with no_store writes nothing at all (and no_store wins over generate_lease).

Wiring (the lead does this; nothing here is wired yet):
1. `stack/agent.py` `build_registry`: `pkistate.register(registry)` with
   `from stack.state import pki as pkistate` (commands 160-167).
2. `stack/state/secrets.py`: accept mount type "pki" (`MOUNT_TYPES`; the version
   check only for "kv"; store the KV `DEFAULT_OPTIONS` so `secrets._mount` still
   reads the row); in `apply_mount_disable` also call
   `stack.state.pki.purge_mount(ctx, path)` (import inside the function: the pki
   state imports secrets for the mount table).
3. `kv_backend.sys_mounts`: accept `{"type": "pki"}` (accessor "pki_" + 8 hex) and
   report the type in `_mount_json`; `KvBackend.mount_for` must skip non-kv mounts.
4. `service.py`: `self.pki = PkiBackend(self)`; in `route`, after sys/ and
   auth/token/, `if self.pki.mount_for(path) is not None: return self.pki, path`
   before the KV lookup.
5. HTTP (Vault port and native): a response whose data has `http_raw_body` is
   written raw (bytes, `http_content_type`, `http_status_code`), not as JSON; the
   audit entry should drop or hash `http_raw_body` (bytes). `Response.status` 202
   (tidy) should reach the client.
6. Vault serves these without a token (its PathsSpecial.Unauthenticated): `ca`,
   `ca/pem`, `ca_chain`, `crl`, `crl/pem`, `cert/*`; route them like the other
   open endpoints if that is wanted (they are public data).
7. Optional: call `await service.pki.issuer(mount)` right after enabling a pki
   mount to make the issuer eagerly instead of on first use.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from stack.ca import authority
from stack.credentials import root_key_aad
from stack.state import ca as castate
from stack.state import pki as st
from stack.state import secrets as secretsstate
from stack.state.commands import WriteResult
from stack.state.pki_role import Role, validate_role_name
from stack.vault import pki
from stack.vault import pki_requests as rq
from stack.vault.kv_backend import apply_here
from stack.vault.logical import LogicalError, Operation, Request, Response
from stack.vault.pki_leases import lease_id
from stack.vault.timefmt import rfc3339

if TYPE_CHECKING:
    from stack.agent import Agent
    from stack.vault.service import SecretsService

_REASON_STATUS = {st.Refusal.NO_MOUNT: 404, st.Refusal.CONFLICT: 409}
_WRITE = (Operation.CREATE, Operation.UPDATE)
DEFAULT_SAFETY_BUFFER = 72 * 3600.0
RENEW_FRACTION = 2 / 3  # replace the issuer this far through its life
CT_CERT = "application/pkix-cert"
CT_PEM_CHAIN = "application/pem-certificate-chain"
CT_CRL = "application/pkix-crl"
CT_PEM_FILE = "application/x-pem-file"


def raw(content_type: str, body: bytes) -> Response:
    """Vault's raw (non-JSON) answer; see the module docstring."""
    return Response(
        data={
            "http_content_type": content_type,
            "http_raw_body": body,
            "http_status_code": 200 if body else 204,
        }
    )


def _issuer_aad(mount: secretsstate.Mount, version: int) -> bytes:
    return b"stack/pki/" + mount.accessor.encode() + b"\x00issuer/" + str(version).encode()


def _refused(data: Any) -> LogicalError:
    info = data if isinstance(data, dict) else {}
    status = _REASON_STATUS.get(info.get("reason", ""), 400)
    return LogicalError(status, str(info.get("error", "refused")))


NO_STORE_WINS = (
    "mutually exclusive values no_store=true and generate_lease=true were both specified; "
    "no_store=true takes priority"
)
LEASES_DISCOURAGED = (
    "it is encouraged to disable generate_lease and rely on PKI's native capabilities when "
    "possible; this option can cause Vault-wide issues with large numbers of issued certificates"
)
# Certificate stores in flight per mount: enough to keep the leader busy while
# earlier batches wait for their commit (with one, 16 clients left it half idle).
STORES_IN_FLIGHT = 4
_INTERRUPTED = LogicalError(503, "storing the certificate was interrupted; retry")


def _settle(
    batch: list[tuple[st.CertEntry, asyncio.Future[None]]], error: Exception | None
) -> None:
    for _, done in batch:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class PkiBackend:
    def __init__(self, service: SecretsService) -> None:
        self.service = service
        # (mount accessor, issuer version) -> the loaded issuer; a mount re-enabled at
        # the same path has a new accessor, so it never sees the old one's issuer.
        self._issuers: dict[tuple[str, int], pki.Issuer] = {}
        self._roles: dict[tuple[str, str], tuple[int, Role]] = {}
        self._crls: dict[str, tuple[tuple[str, int, int], bytes, bytes]] = {}
        self._issuer_lock = asyncio.Lock()
        self._pending: dict[str, list[tuple[st.CertEntry, asyncio.Future[None]]]] = {}
        self._flushing: dict[str, int] = {}  # mount -> stores in flight
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def agent(self) -> Agent:
        return self.service.agent

    def _now(self) -> float:
        return self.service.clock()

    def mount_for(self, path: str) -> secretsstate.Mount | None:
        found = secretsstate.find_mount(self.agent.store, path)
        return found if found is not None and found.type == st.MOUNT_TYPE else None

    def _split(self, path: str) -> tuple[secretsstate.Mount, str]:
        mount = self.mount_for(path)
        if mount is None:
            raise LogicalError(404, f"no pki secrets engine mounted at {path!r}")
        return mount, path[len(mount.path) :] if path.startswith(mount.path) else ""

    # ------------------------------------------------------------ routing
    async def operation(self, rel: str, req: Request) -> Operation:
        if req.operation is not Operation.UPDATE:
            return req.operation
        mount, sub = self._split(rel)
        if sub.startswith("roles/"):
            exists = st.role_index(self.agent.store, mount.path, sub[len("roles/") :]) != 0
            return Operation.UPDATE if exists else Operation.CREATE
        return Operation.UPDATE

    def needs_sudo(self, rel: str, op: Operation) -> bool:
        return False

    async def handle(self, rel: str, req: Request, op: Operation, token: Any) -> Response:
        mount, sub = self._split(rel)
        if op in (Operation.READ, Operation.LIST) and not req.stale:
            await self.agent.read_barrier()
        sub = sub.rstrip("/") if op is Operation.LIST else sub
        body = req.data or {}
        if sub == "roles" and op is Operation.LIST:
            return self._keys(st.list_roles(self.agent.store, mount.path))
        if sub.startswith("roles/"):
            return await self._role(mount, sub[len("roles/") :], body, op)
        for prefix, write in (("issue/", self._issue), ("sign/", self._sign)):
            if sub.startswith(prefix):
                self._expect(op, _WRITE, sub)
                return await write(mount, sub[len(prefix) :], body)
        if sub == "revoke":
            self._expect(op, _WRITE, sub)
            return await self._revoke(mount, body)
        if sub == "tidy":
            self._expect(op, _WRITE, sub)
            return await self._tidy(mount, body)
        if sub == "certs" and op is Operation.LIST:
            return self._keys(st.list_certs(self.agent.store, mount.path))
        if sub == "certs/revoked" and op is Operation.LIST:
            return self._keys([r.serial for r in st.list_revoked(self.agent.store, mount.path)])
        self._expect(op, (Operation.READ,), sub)
        return await self._fetch(mount, sub)

    @staticmethod
    def _expect(op: Operation, allowed: tuple[Operation, ...], sub: str) -> None:
        if op not in allowed:
            raise LogicalError(405, f"{op.value} is not supported on {sub!r}")

    @staticmethod
    def _keys(keys: list[str]) -> Response:
        if not keys:
            raise LogicalError(404, "")
        return Response(data={"keys": keys})

    async def _apply(self, cmd: bytes) -> dict[str, Any]:
        result: WriteResult = await apply_here(self.agent, cmd)
        if not result.ok:
            raise _refused(result.data)
        return result.data if isinstance(result.data, dict) else {}

    # ------------------------------------------------------------ the issuer
    async def issuer(self, mount: secretsstate.Mount) -> tuple[st.IssuerRow, pki.Issuer]:
        """The mount's issuer, made or replaced first when needed (see module doc)."""
        store = self.agent.store
        row = st.get_issuer(store, mount.path)
        if row is None or self._due(row):
            async with self._issuer_lock:
                row = st.get_issuer(store, mount.path)
                if row is None or self._due(row):
                    await self._make_issuer(mount, row)
                    row = st.get_issuer(store, mount.path)
        if row is None:
            raise LogicalError(503, "the PKI issuer could not be created; retry")
        key = (mount.accessor, row.version)
        loaded = self._issuers.get(key)
        if loaded is None:
            key_pem = self.agent.barrier.decrypt(row.key, _issuer_aad(mount, row.version))
            loaded = pki.Issuer(row.cert, key_pem, row.chain)
            self._issuers = {k: v for k, v in self._issuers.items() if k[0] != mount.accessor}
            self._issuers[key] = loaded
        return row, loaded

    def _due(self, row: st.IssuerRow) -> bool:
        # Only the active root's generation is needed (every issue asks): not its row.
        active = self.agent.store.table(castate.CA_TABLE).get("active")
        if active is not None and int(active.value["gen"]) != row.root_gen:
            return True
        return self._now() >= row.created + (row.not_after - row.created) * RENEW_FRACTION

    async def _make_issuer(self, mount: secretsstate.Mount, row: st.IssuerRow | None) -> None:
        a = self.agent
        active = castate.active_root(a.store)
        if active is None:
            raise LogicalError(503, "the cluster has no CA yet")
        root = authority.load_root(
            active.cert, a.barrier.decrypt(active.key, root_key_aad(active.gen))
        )
        now = self._now()
        try:
            cert, key_pem = pki.make_intermediate(
                root, mount=mount.path, cluster_id=a.ident.cluster_id, now=_at(now)
            )
        except pki.PkiError as e:
            raise LogicalError(500, str(e)) from None
        version = (row.version if row is not None else 0) + 1
        chain = [active.cert] + ([active.cross] if active.cross else [])
        cmd = st.encode_issuer_set(
            a.registry,
            mount.path,
            cert=cert,
            key_ct=a.barrier.encrypt(key_pem, _issuer_aad(mount, version)),
            chain=chain,
            root_gen=active.gen,
            not_after=authority.cert_not_after(cert).timestamp(),
            version=version,
            now=now,
        )
        result = await apply_here(a, cmd)
        if not result.ok and (result.data or {}).get("reason") != st.Refusal.CONFLICT:
            raise _refused(result.data)  # a conflict: another server made one; use it

    # ------------------------------------------------------------ roles
    def _load_role(self, mount: secretsstate.Mount, name: str) -> Role | None:
        store = self.agent.store
        index = st.role_index(store, mount.path, name)
        if index == 0:
            return None
        cached = self._roles.get((mount.accessor, name))
        if cached is not None and cached[0] == index:
            return cached[1]
        role = st.get_role(store, mount.path, name)
        if role is None:
            return None
        if len(self._roles) > 4096:
            self._roles.clear()
        self._roles[(mount.accessor, name)] = (index, role)
        return role

    async def _role(
        self, mount: secretsstate.Mount, name: str, body: dict[str, Any], op: Operation
    ) -> Response:
        try:
            validate_role_name(name)
        except ValueError as e:
            raise LogicalError(400, str(e)) from None
        reg = self.agent.registry
        if op is Operation.READ:
            role = self._load_role(mount, name)
            if role is None:
                raise LogicalError(404, "")
            return Response(data=rq.role_json(role))
        if op is Operation.DELETE:
            await self._apply(st.encode_role_delete(reg, mount.path, name))
            return Response()
        if op in (*_WRITE, Operation.PATCH):
            base = Role()
            if op is Operation.PATCH:
                existing = self._load_role(mount, name)
                if existing is None:
                    raise LogicalError(404, f"no role named {name!r} to patch")
                base = existing
            role, ignored = rq.role_from_request(body, base)
            warnings = []
            if ignored:
                warnings.append(f"Endpoint ignored these unrecognized parameters: {ignored}")
            if role.generate_lease:  # Vault's words; no_store wins, as in Vault
                warnings.append(NO_STORE_WINS if role.no_store else LEASES_DISCOURAGED)
                role = dataclasses.replace(role, generate_lease=not role.no_store)
            try:
                role = role.validated()
            except ValueError as e:
                raise LogicalError(400, str(e)) from None
            await self._apply(st.encode_role_write(reg, mount.path, name, role))
            return Response(data=rq.role_json(role), warnings=warnings)
        raise LogicalError(405, f"{op.value} is not supported on roles/{name}")

    def _role_for_issue(self, mount: secretsstate.Mount, name: str) -> Role:
        role = self._load_role(mount, name)
        if role is None:
            raise LogicalError(400, f"unknown role: {name}")
        return role

    # ------------------------------------------------------------ issue and sign
    async def _issue(self, mount: secretsstate.Mount, name: str, body: dict[str, Any]) -> Response:
        role = self._role_for_issue(mount, name)
        _, issuer = await self.issuer(mount)
        fmt, now = rq.issue_format(body), self._now()
        try:
            issued = pki.issue(
                issuer,
                role,
                common_name=rq.text(body, "common_name"),
                alt_names=rq.names(body.get("alt_names")),
                ip_sans=rq.names(body.get("ip_sans")),
                ttl=rq.duration(body.get("ttl")),
                now=_at(now),
                serial=pki.new_serial(),
                exclude_cn_from_sans=rq.flag(body, "exclude_cn_from_sans"),
                private_key_format=rq.text(body, "private_key_format") or "der",
            )
            data = issued.to_response(fmt)
        except pki.PkiError as e:
            raise LogicalError(400, str(e)) from None
        return await self._keep(mount, role, f"issue/{name}", issued, data, now)

    async def _sign(self, mount: secretsstate.Mount, name: str, body: dict[str, Any]) -> Response:
        role = self._role_for_issue(mount, name)
        _, issuer = await self.issuer(mount)
        fmt, now = rq.issue_format(body), self._now()
        try:
            issued = pki.sign_csr(
                issuer,
                role,
                rq.text(body, "csr"),
                common_name=rq.text(body, "common_name"),
                alt_names=rq.names(body.get("alt_names")),
                ip_sans=rq.names(body.get("ip_sans")),
                ttl=rq.duration(body.get("ttl")),
                now=_at(now),
                serial=pki.new_serial(),
                exclude_cn_from_sans=rq.flag(body, "exclude_cn_from_sans"),
            )
            data = issued.to_response(fmt)
        except pki.PkiError as e:
            raise LogicalError(400, str(e)) from None
        return await self._keep(mount, role, f"sign/{name}", issued, data, now)

    async def _keep(
        self,
        mount: secretsstate.Mount,
        role: Role,
        path: str,
        issued: pki.IssuedCert,
        data: dict[str, Any],
        now: float,
    ) -> Response:
        """Store the certificate (unless no_store) and answer. A role with
        generate_lease makes it a lease in the same log entry (`pki_leases.py`):
        Vault's lease_id, lease_duration until notAfter, not renewable."""
        warnings = list(issued.warnings)
        if role.no_store:
            return Response(data=data, warnings=warnings)
        leased = path if role.generate_lease else ""
        serial = issued.serial_number
        expiration = float(issued.expiration)
        await self._store(
            mount, st.CertEntry(serial, issued.certificate_der, expiration, leased, now)
        )
        if not leased:
            return Response(data=data, warnings=warnings)
        return Response(
            data=data,
            warnings=warnings,
            lease_id=lease_id(mount.path, leased, serial),
            lease_duration=max(0, int(expiration - self._now())),
            renewable=False,
        )

    async def _store(self, mount: secretsstate.Mount, entry: st.CertEntry) -> None:
        """Keep the certificate, sharing log entries with concurrent issues on the
        same mount: up to `STORES_IN_FLIGHT` stores per mount, each taking every
        certificate that waits when it starts (so batches grow under load, and a
        batch does not wait for the previous one's commit)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(mount.path, []).append((entry, done))
        if self._flushing.get(mount.path, 0) < STORES_IN_FLIGHT:
            self._flushing[mount.path] = self._flushing.get(mount.path, 0) + 1
            task = asyncio.get_running_loop().create_task(self._flush(mount.path))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await done

    async def _flush(self, mount_path: str) -> None:
        try:
            while pending := self._pending.get(mount_path):
                batch, self._pending[mount_path] = pending[: st.MAX_BATCH], pending[st.MAX_BATCH :]
                cmd = st.encode_cert_store(self.agent.registry, mount_path, [e for e, _ in batch])
                try:
                    await self._apply(cmd)
                except Exception as e:  # every waiter gets the failure
                    _settle(batch, e)
                else:
                    _settle(batch, None)
        finally:
            left = self._flushing.pop(mount_path, 1) - 1
            if left:
                self._flushing[mount_path] = left
            else:  # cancelled (shutdown): nobody is left waiting for ever
                _settle(self._pending.pop(mount_path, []), _INTERRUPTED)

    # ------------------------------------------------------------ revoke and tidy
    async def _revoke(self, mount: secretsstate.Mount, body: dict[str, Any]) -> Response:
        store, now = self.agent.store, self._now()
        expiration: float | None = None
        if body.get("certificate"):
            _, issuer = await self.issuer(mount)
            try:
                cert = x509.load_pem_x509_certificate(rq.text(body, "certificate").encode())
                cert.verify_directly_issued_by(issuer.cert)
            except (ValueError, TypeError, InvalidSignature):
                raise LogicalError(
                    400, "the certificate is not a PEM certificate issued by this mount"
                ) from None
            serial = pki.format_serial(cert.serial_number)
            expiration = cert.not_valid_after_utc.timestamp()
        elif body.get("serial_number"):
            try:
                serial = pki.canonical_serial(rq.text(body, "serial_number"))
            except pki.PkiError as e:
                raise LogicalError(400, str(e)) from None
            if st.get_cert(store, mount.path, serial) is None and self._has_no_store_role(mount):
                # Possibly a no_store certificate: it cannot outlive the issuer.
                row, _ = await self.issuer(mount)
                expiration = row.not_after
        else:
            raise LogicalError(400, "The serial number must be provided")
        answer = await self._apply(
            st.encode_revoke(
                self.agent.registry, mount.path, serial, time=now, expiration=expiration
            )
        )
        when = float(answer["revocation_time"])
        return Response(
            data={"revocation_time": int(when), "revocation_time_rfc3339": rfc3339(when)}
        )

    def _has_no_store_role(self, mount: secretsstate.Mount) -> bool:
        store = self.agent.store
        return any(
            (role := self._load_role(mount, name)) is not None and role.no_store
            for name in st.list_roles(store, mount.path)
        )

    async def _tidy(self, mount: secretsstate.Mount, body: dict[str, Any]) -> Response:
        certs, revoked = rq.flag(body, "tidy_cert_store"), rq.flag(body, "tidy_revoked_certs")
        buffer = DEFAULT_SAFETY_BUFFER
        if body.get("safety_buffer") not in (None, ""):
            buffer = rq.duration(body["safety_buffer"], "safety_buffer")
        if not (certs or revoked):
            return Response(
                status=202,
                warnings=[
                    "No targets to tidy; specify tidy_cert_store=true or "
                    "tidy_revoked_certs=true to start a tidy operation."
                ],
            )
        answer = await self._apply(
            st.encode_tidy(
                self.agent.registry,
                mount.path,
                now=self._now(),
                safety_buffer=buffer,
                tidy_cert_store=certs,
                tidy_revoked_certs=revoked,
            )
        )
        data = {k: answer[k] for k in ("cert_store_deleted", "revoked_cert_deleted")}
        return Response(status=202, data=data, warnings=["Tidy operation finished."])

    # ------------------------------------------------------------ fetching
    async def crl(self, mount: secretsstate.Mount) -> tuple[bytes, bytes]:
        """(PEM, DER) of the mount's CRL, rebuilt only when its number changed; a CRL
        past half its lifetime gets a new number first, so the published one never
        goes stale."""
        row, issuer = await self.issuer(mount)
        store = self.agent.store
        info = st.crl_info(store, mount.path)
        if info is None or self._now() >= info.this_update + pki.CRL_EXPIRY / 2:
            await self._apply(st.encode_crl_bump(self.agent.registry, mount.path, now=self._now()))
            info = st.crl_info(store, mount.path)
            assert info is not None
        key = (mount.accessor, row.version, info.number)
        cached = self._crls.get(mount.path)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        revoked = [
            (pki.parse_serial(r.serial), _at(r.time)) for r in st.list_revoked(store, mount.path)
        ]
        pem, der = pki.make_crl(
            issuer,
            revoked,
            number=info.number,
            now=_at(info.this_update),
            next_update=_at(info.this_update + pki.CRL_EXPIRY),
        )
        self._crls[mount.path] = (key, pem, der)
        return pem, der

    async def _fetch(self, mount: secretsstate.Mount, sub: str) -> Response:
        if sub in ("ca", "cert/ca/raw", "ca/pem", "cert/ca/raw/pem", "cert/ca"):
            _, issuer = await self.issuer(mount)
            if sub in ("ca", "cert/ca/raw"):
                return raw(CT_CERT, issuer.cert_der)
            if sub == "cert/ca":
                return Response(data=rq.cert_json(issuer.issuing_ca, None))
            return raw(CT_PEM_CHAIN, issuer.issuing_ca.encode())
        if sub in ("ca_chain", "cert/ca_chain"):
            _, issuer = await self.issuer(mount)
            chain = "\n".join(issuer.ca_chain)
            if sub == "ca_chain":
                return raw(CT_CERT, chain.encode())
            return Response(data={**rq.cert_json(chain, None), "ca_chain": chain})
        if sub in ("crl", "cert/crl/raw", "crl/pem", "cert/crl/raw/pem", "cert/crl"):
            pem, der = await self.crl(mount)
            if sub in ("crl", "cert/crl/raw"):
                return raw(CT_CRL, der)
            if sub == "cert/crl":
                return Response(data=rq.cert_json(pem.decode().strip(), None))
            return raw(CT_PEM_FILE, pem.strip())
        if sub == "crl/rotate":
            await self.issuer(mount)
            await self._apply(st.encode_crl_bump(self.agent.registry, mount.path, now=self._now()))
            return Response(data={"success": True})
        if sub.startswith("cert/"):
            return self._cert(mount, sub[len("cert/") :])
        raise LogicalError(
            404,
            f"unsupported path {sub!r} on a pki mount (roles/, issue/, sign/, revoke, ca, "
            "ca/pem, ca_chain, crl, crl/pem, cert/<serial>, certs, tidy)",
        )

    def _cert(self, mount: secretsstate.Mount, rest: str) -> Response:
        serial_text, _, form = rest.partition("/")
        if form not in ("", "raw", "raw/pem"):
            raise LogicalError(404, f"unsupported path cert/{rest!r}")
        try:
            serial = pki.canonical_serial(serial_text)
        except pki.PkiError as e:
            raise LogicalError(400, str(e)) from None
        row = st.get_cert(self.agent.store, mount.path, serial)
        if row is None:
            raise LogicalError(404, "")
        if form == "raw":
            return raw(CT_CERT, row.der)
        pem = pki.pem_from_der(row.der)
        if form == "raw/pem":
            return raw(CT_PEM_CHAIN, pem.encode())
        return Response(data=rq.cert_json(pem, row.revocation_time))
