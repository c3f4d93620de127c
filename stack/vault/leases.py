"""`sys/leases/...`: Vault's lease endpoints over what stack leases.

Two things are leases, each served by a provider that keeps no state of its own:
- a token with a TTL (`TokenLeases`): the id is `<creation path>/<accessor>` (for
  example `auth/token/create/5f0c...` or `auth/approle/login/9a1b...`), and the
  token state is the lease state;
- a PKI certificate issued by a role with `generate_lease` (`PkiLeases` in
  `pki_leases.py`): the id is `<mount>issue/<role>/<serial>` (or `sign/`), and the
  stored certificate is the lease, so neither can disagree with its lease.
Expiry is driven by the leader through the log (`SecretsService.run`): a lease due
while the leader dies is revoked by the next one, on time.

  PUT  sys/leases/lookup {"lease_id"}         -> id, issue_time, expire_time, ttl, renewable
  LIST sys/leases/lookup/<prefix>             -> the next path segment of every lease id
  PUT  sys/leases/renew {"lease_id", "increment"}
  PUT  sys/leases/revoke {"lease_id"}         (also sys/leases/revoke/<lease_id>)
  PUT  sys/leases/revoke-prefix/<prefix>      (sudo)

An unknown, ended or malformed lease id is 400 "invalid lease" and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from stack.state import acl as aclstate
from stack.vault.logical import LogicalError, Operation, Request, Response
from stack.vault.timefmt import parse_duration, rfc3339

if TYPE_CHECKING:
    from stack.vault.service import SecretsService

INVALID = "invalid lease"


@dataclass(frozen=True, slots=True)
class Lease:
    id: str
    issue_time: float
    expire_time: float
    renewable: bool


class LeaseProvider(Protocol):
    def find(self, lease_id: str) -> Lease | None:
        """The live lease with this id; None if it is not one of this provider's."""
        ...

    def leases(self, prefix: str) -> list[Lease]:
        """Every live lease whose id is `prefix` or starts with `prefix + "/"`
        (all of them for "")."""
        ...

    async def renew(self, lease: Lease, increment: int) -> int:
        """Extend the lease; its new TTL in seconds (LogicalError if refused)."""
        ...

    async def revoke(self, lease: Lease) -> None: ...


def under(lease_id: str, prefix: str) -> bool:
    return not prefix or lease_id == prefix or lease_id.startswith(prefix + "/")


def token_lease_id(t: aclstate.TokenView) -> str:
    return f"{(t.path or 'auth/token/create').strip('/')}/{t.accessor}"


def needs_sudo(rel: str) -> bool:
    return rel.startswith("leases/revoke-prefix")


class TokenLeases:
    """Tokens with a TTL (a token that never expires holds no lease)."""

    def __init__(self, service: SecretsService) -> None:
        self.service = service

    @staticmethod
    def _lease(t: aclstate.TokenView) -> Lease:
        return Lease(token_lease_id(t), t.creation_time, t.expire_time, t.renewable)

    def find(self, lease_id: str) -> Lease | None:
        accessor = lease_id.rsplit("/", 1)[-1]
        t = aclstate.lookup_accessor(self.service.agent.store, accessor, self.service.clock())
        if t is None or not t.expire_time or token_lease_id(t) != lease_id:
            return None
        return self._lease(t)

    def leases(self, prefix: str) -> list[Lease]:
        store, now = self.service.agent.store, self.service.clock()
        out = []
        for accessor in aclstate.list_accessors(store):
            t = aclstate.lookup_accessor(store, accessor, now)
            if t is not None and t.expire_time and under(token_lease_id(t), prefix):
                out.append(self._lease(t))
        return out

    async def renew(self, lease: Lease, increment: int) -> int:
        a = self.service.agent
        accessor = lease.id.rsplit("/", 1)[-1]
        result = await a.apply(
            aclstate.encode_token_renew(
                a.registry, accessor=accessor, now=self.service.clock(), increment=increment
            )
        )
        if not result.ok:
            raise LogicalError(400, str((result.data or {}).get("error", "refused")))
        return int((result.data or {}).get("ttl", 0))

    async def revoke(self, lease: Lease) -> None:
        a = self.service.agent
        accessor = lease.id.rsplit("/", 1)[-1]
        result = await a.apply(aclstate.encode_token_revoke(a.registry, accessor=accessor))
        if not result.ok and aclstate.lookup_accessor(a.store, accessor) is not None:
            raise LogicalError(400, str((result.data or {}).get("error", "refused")))


class Leases:
    def __init__(self, service: SecretsService) -> None:
        from stack.vault.pki_leases import PkiLeases

        self.service = service
        self.tokens = TokenLeases(service)
        self.pki = PkiLeases(service)
        self.providers: tuple[LeaseProvider, ...] = (self.tokens, self.pki)

    def _find(self, lease_id: str) -> tuple[LeaseProvider, Lease]:
        for provider in self.providers:
            lease = provider.find(lease_id)
            if lease is not None:
                return provider, lease
        raise LogicalError(400, INVALID)

    def _all(self, prefix: str) -> list[tuple[LeaseProvider, Lease]]:
        return [(p, lease) for p in self.providers for lease in p.leases(prefix)]

    @staticmethod
    def _lease_id(req: Request, tail: str) -> str:
        value = (req.data or {}).get("lease_id") or tail
        if not isinstance(value, str) or not value.strip("/"):
            raise LogicalError(400, "missing lease_id")
        return value.strip("/")

    async def handle(self, rel: str, req: Request, op: Operation) -> Response:
        rest = rel[len("leases") :].strip("/")
        if op in (Operation.READ, Operation.LIST) and not req.stale:
            await self.service.agent.read_barrier()
        if rest == "lookup" or rest.startswith("lookup/"):
            prefix = rest[len("lookup") :].strip("/")
            if op is Operation.LIST:
                return self._list(prefix)
            _, lease = self._find(self._lease_id(req, prefix))
            return Response(
                data={
                    "id": lease.id,
                    "issue_time": rfc3339(lease.issue_time),
                    "expire_time": rfc3339(lease.expire_time) or None,
                    "last_renewal": None,
                    "renewable": lease.renewable,
                    "ttl": int(max(0.0, lease.expire_time - self.service.clock())),
                }
            )
        if op not in (Operation.CREATE, Operation.UPDATE):
            raise LogicalError(405, "unsupported operation: use PUT")
        if rest == "renew" or rest.startswith("renew/"):
            provider, lease = self._find(self._lease_id(req, rest[len("renew") :]))
            if not lease.renewable:
                raise LogicalError(400, "lease is not renewable")  # Vault's words
            raw = (req.data or {}).get("increment")
            increment = int(parse_duration(raw, "increment")) if raw not in (None, "") else 0
            ttl = await provider.renew(lease, increment)
            return Response(
                data={"lease_id": lease.id, "renewable": lease.renewable, "lease_duration": ttl}
            )
        if rest.startswith("revoke-prefix"):
            prefix = rest[len("revoke-prefix") :].strip("/")
            if not prefix:
                raise LogicalError(400, "missing prefix")
            for provider, lease in sorted(self._all(prefix), key=lambda pl: pl[1].id):
                await provider.revoke(lease)
            return Response()
        if rest == "revoke" or rest.startswith("revoke/"):
            provider, lease = self._find(self._lease_id(req, rest[len("revoke") :]))
            await provider.revoke(lease)
            return Response()
        raise LogicalError(404, f"unsupported path sys/leases/{rest}")

    def _list(self, prefix: str) -> Response:
        keys: set[str] = set()
        base = prefix + "/" if prefix else ""
        for _, lease in self._all(prefix):
            if not lease.id.startswith(base):
                continue  # the lease named by the prefix itself
            head, sep, _ = lease.id[len(base) :].partition("/")
            keys.add(head + sep)
        if not keys:
            raise LogicalError(404, "")
        return Response(data={"keys": sorted(keys)})
