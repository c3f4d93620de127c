"""`sys/leases/...`: Vault's lease endpoints over what stack leases today.

A lease id names what it covers: `<creation path>/<accessor>` for a token (for
example `auth/token/create/5f0c...` or `auth/approle/login/9a1b...`). The token
state is the lease state (issue time, expiry, renewable), so there is no second
table to keep in step; other leased things (PKI certificates issued with
`generate_lease`) add a provider here. Expiry is driven by the leader through the
log (`SecretsService.run`): a lease due while the leader dies is revoked by the
next one, on time.

  PUT  sys/leases/lookup {"lease_id"}         -> id, issue_time, expire_time, ttl, renewable
  LIST sys/leases/lookup/<prefix>             -> the next path segment of every lease id
  PUT  sys/leases/renew {"lease_id", "increment"}
  PUT  sys/leases/revoke {"lease_id"}         (also sys/leases/revoke/<lease_id>)
  PUT  sys/leases/revoke-prefix/<prefix>      (sudo)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.state import acl as aclstate
from stack.vault.logical import LogicalError, Operation, Request, Response
from stack.vault.timefmt import parse_duration, rfc3339

if TYPE_CHECKING:
    from stack.vault.service import SecretsService


def token_lease_id(t: aclstate.TokenView) -> str:
    return f"{(t.path or 'auth/token/create').strip('/')}/{t.accessor}"


def needs_sudo(rel: str) -> bool:
    return rel.startswith("leases/revoke-prefix")


class Leases:
    def __init__(self, service: SecretsService) -> None:
        self.service = service

    def _all(self) -> dict[str, aclstate.TokenView]:
        store = self.service.agent.store
        now = self.service.clock()
        out: dict[str, aclstate.TokenView] = {}
        for accessor in aclstate.list_accessors(store):
            t = aclstate.lookup_accessor(store, accessor, now)
            if t is not None and t.expire_time:  # never-expiring tokens hold no lease
                out[token_lease_id(t)] = t
        return out

    def _find(self, lease_id: str) -> aclstate.TokenView:
        accessor = lease_id.rstrip("/").rsplit("/", 1)[-1]
        t = aclstate.lookup_accessor(self.service.agent.store, accessor, self.service.clock())
        if t is None or not t.expire_time or token_lease_id(t) != lease_id.strip("/"):
            raise LogicalError(400, "invalid lease")
        return t

    @staticmethod
    def _lease_id(req: Request, tail: str) -> str:
        value = (req.data or {}).get("lease_id") or tail
        if not isinstance(value, str) or not value.strip("/"):
            raise LogicalError(400, "missing lease_id")
        return value.strip("/")

    async def handle(self, rel: str, req: Request, op: Operation) -> Response:
        a = self.service.agent
        rest = rel[len("leases") :].strip("/")
        if op in (Operation.READ, Operation.LIST) and not req.stale:
            await a.read_barrier()
        if rest == "lookup" or rest.startswith("lookup/"):
            prefix = rest[len("lookup") :].strip("/")
            if op is Operation.LIST:
                return self._list(prefix)
            t = self._find(self._lease_id(req, prefix))
            now = self.service.clock()
            return Response(
                data={
                    "id": token_lease_id(t),
                    "issue_time": rfc3339(t.creation_time),
                    "expire_time": rfc3339(t.expire_time) or None,
                    "last_renewal": None,
                    "renewable": t.renewable,
                    "ttl": int(t.ttl_remaining(now)),
                }
            )
        if op not in (Operation.CREATE, Operation.UPDATE):
            raise LogicalError(405, "unsupported operation: use PUT")
        if rest == "renew" or rest.startswith("renew/"):
            t = self._find(self._lease_id(req, rest[len("renew") :]))
            raw = (req.data or {}).get("increment")
            increment = int(parse_duration(raw, "increment")) if raw not in (None, "") else 0
            result = await a.apply(
                aclstate.encode_token_renew(
                    a.registry, accessor=t.accessor, now=self.service.clock(), increment=increment
                )
            )
            if not result.ok:
                raise LogicalError(400, str((result.data or {}).get("error", "refused")))
            ttl = int((result.data or {}).get("ttl", 0))
            return Response(
                data={
                    "lease_id": token_lease_id(t),
                    "renewable": t.renewable,
                    "lease_duration": ttl,
                }
            )
        if rest.startswith("revoke-prefix"):
            prefix = rest[len("revoke-prefix") :].strip("/")
            if not prefix:
                raise LogicalError(400, "missing prefix")
            for lease_id, t in sorted(self._all().items()):
                if lease_id == prefix or lease_id.startswith(prefix + "/"):
                    await self._revoke(t)
            return Response()
        if rest == "revoke" or rest.startswith("revoke/"):
            t = self._find(self._lease_id(req, rest[len("revoke") :]))
            await self._revoke(t)
            return Response()
        raise LogicalError(404, f"unsupported path sys/leases/{rest}")

    async def _revoke(self, t: aclstate.TokenView) -> None:
        a = self.service.agent
        result = await a.apply(aclstate.encode_token_revoke(a.registry, accessor=t.accessor))
        if not result.ok and aclstate.lookup_accessor(a.store, t.accessor) is not None:
            raise LogicalError(400, str((result.data or {}).get("error", "refused")))

    def _list(self, prefix: str) -> Response:
        keys: set[str] = set()
        base = prefix + "/" if prefix else ""
        for lease_id in self._all():
            if not lease_id.startswith(base):
                continue
            head, sep, _ = lease_id[len(base) :].partition("/")
            keys.add(head + sep)
        if not keys:
            raise LogicalError(404, "")
        return Response(data={"keys": sorted(keys)})
