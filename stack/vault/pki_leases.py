"""PKI certificates as leases: Vault's `generate_lease` role option (docs/pki.md).

A certificate issued or signed by a role with `generate_lease` (and without
`no_store`, which wins as in Vault) is stored with its lease path ("issue/<role>"
or "sign/<role>") and issue time in the same `pki.cert_store` entry, so the lease
is durable the moment the certificate is and no second record can fall out of step.
Its id is `<mount>issue/<role>/<serial, "-" between bytes>`; it ends at the
certificate's notAfter and is not renewable (Vault's PKI leases are not).

- `sys/leases/revoke` revokes the certificate (`pki.revoke`: it goes on the CRL),
  which ends the lease; so does `<mount>revoke`, or tidying the certificate away.
- At expiry the leader ends it through the log (`pki.lease_expire`, from
  `SecretsService.run`), without a CRL entry: the certificate has expired and
  needs none (Vault's revocation of an expired PKI lease adds none either). Until
  then a lookup shows it with ttl 0, and revoking it ends it the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from stack.state import pki as st
from stack.state import secrets as secretsstate
from stack.vault.kv_backend import apply_here
from stack.vault.leases import Lease, under
from stack.vault.logical import LogicalError

if TYPE_CHECKING:
    from stack.vault.service import SecretsService

log = structlog.get_logger("stack.secrets")


def lease_id(mount: str, path: str, serial: str) -> str:
    """`mount` ends with "/"; `path` is "issue/<role>" or "sign/<role>"."""
    return f"{mount}{path}/{serial.replace(':', '-')}"


class PkiLeases:
    def __init__(self, service: SecretsService) -> None:
        self.service = service

    def _mounts(self, prefix: str = "") -> list[secretsstate.Mount]:
        """The pki mounts that can hold a lease id under `prefix`."""
        return [
            m
            for m in secretsstate.list_mounts(self.service.agent.store)
            if m.type == st.MOUNT_TYPE
            and (not prefix or m.path.startswith(prefix + "/") or (prefix + "/").startswith(m.path))
        ]

    def _lease(self, mount: str, serial: str, path: str) -> Lease | None:
        """The lease of a stored certificate, if `path` is where it came from. One
        past its expiry stays (ttl 0) until the leader's sweep ends it, as in Vault."""
        row = st.get_cert(self.service.agent.store, mount, serial)
        if row is None or not row.lease or (path and row.lease != path):
            return None
        return Lease(lease_id(mount, row.lease, serial), row.issued, row.expiration, False)

    def _parse(self, lease: str) -> tuple[str, str, str] | None:
        """(mount, lease path, serial) of a well-formed PKI lease id."""
        mount = secretsstate.find_mount(self.service.agent.store, lease)
        if mount is None or mount.type != st.MOUNT_TYPE:
            return None
        path, _, tail = lease[len(mount.path) :].rpartition("/")
        serial = tail.replace("-", ":")
        try:
            st.check_lease_path(path)
            st.check_serial(serial)
        except ValueError:
            return None
        return mount.path, path, serial

    def find(self, lease: str) -> Lease | None:
        parsed = self._parse(lease)
        return None if parsed is None else self._lease(parsed[0], parsed[2], parsed[1])

    def leases(self, prefix: str) -> list[Lease]:
        store = self.service.agent.store
        out = []
        for mount in self._mounts(prefix):
            for serial in st.leased_serials(store, mount.path):
                found = self._lease(mount.path, serial, "")
                if found is not None and under(found.id, prefix):
                    out.append(found)
        return out

    async def renew(self, lease: Lease, increment: int) -> int:
        raise LogicalError(400, "lease is not renewable")

    async def revoke(self, lease: Lease) -> None:
        parsed = self._parse(lease.id)
        if parsed is None:
            raise LogicalError(400, "invalid lease")
        a = self.service.agent
        mount, _, serial = parsed
        now = self.service.clock()
        if lease.expire_time > now:
            result = await apply_here(a, st.encode_revoke(a.registry, mount, serial, time=now))
            # Refused because it was revoked or tidied meanwhile: the lease is gone all
            # the same, which is what was asked.
            if result.ok or self.find(lease.id) is None:
                return
            if (result.data or {}).get("reason") != st.Refusal.EXPIRED:
                raise LogicalError(400, str((result.data or {}).get("error", "refused")))
        # Past notAfter there is nothing to put on the CRL: end it as the sweep would.
        cmd = st.encode_lease_expire(a.registry, mount, now=self.service.clock())
        result = await apply_here(a, cmd)
        if not result.ok and self.find(lease.id) is not None:
            raise LogicalError(400, str((result.data or {}).get("error", "refused")))

    async def expire_due(self) -> int:
        """On the leader: end every lease whose certificate has expired, in batches."""
        a = self.service.agent
        total = 0
        for mount in self._mounts():
            due = st.next_lease_expiry(a.store, mount.path)
            if due is None or due > self.service.clock():
                continue
            while True:
                cmd = st.encode_lease_expire(a.registry, mount.path, now=self.service.clock())
                result = await a.apply(cmd)
                if not result.ok:  # the mount went away meanwhile
                    log.info("pki lease expiry refused", mount=mount.path, result=result.data)
                    break
                total += int(result.data["expired"])
                if not result.data["more"]:
                    break
        return total
