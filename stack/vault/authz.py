"""Who is asking, and may they: tokens by the hash of their secret, ACLs from their
policies (one evaluator for every API, `policy.py`), limited-use tokens spent
through the log.

ACLs are cached per set of policy names and rebuilt when the policy table
changes (its index moves), so a request costs a hash, a dict lookup and the
path match.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from stack.errors import Forbidden, StackError
from stack.raft.types import Role
from stack.state import acl as aclstate
from stack.vault import policy as policylang
from stack.vault.logical import LogicalError, Operation

if TYPE_CHECKING:
    from stack.vault.service import SecretsService

DENIED = "permission denied"
CACHE_SIZE = 256


class Authorizer:
    def __init__(self, service: SecretsService) -> None:
        self.service = service
        self._cache: dict[tuple[str, ...], policylang.ACL] = {}
        self._cache_index = -1

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.service.agent.store

    async def authenticate(self, secret: str) -> aclstate.TokenView:
        if not secret:
            raise Forbidden(DENIED)
        token = aclstate.lookup_secret(self.store, secret, self.service.clock())
        if token is None and self.service.agent.node.role is not Role.LEADER:
            # Made a moment ago through another node? Catch up once, then decide.
            # (Only misses pay for the round trip to the leader.)
            with contextlib.suppress(StackError):
                await self.service.agent.read_barrier()
            token = aclstate.lookup_secret(self.store, secret, self.service.clock())
        if token is None:
            raise Forbidden(DENIED)
        return token

    def acl(self, token: aclstate.TokenView) -> policylang.ACL:
        index = self.store.query_index(aclstate.POLICIES_TABLE, "", prefix=True)
        if index != self._cache_index:
            self._cache.clear()
            self._cache_index = index
        key = tuple(token.policies)
        found = self._cache.get(key)
        if found is None:
            found = policylang.acl_for(list(key), self._policy)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = found
        return found

    def _policy(self, name: str) -> policylang.Policy | None:
        text = aclstate.get_policy(self.store, name)
        if text is None:
            return None
        try:
            return policylang.parse_policy(name, text)
        except policylang.PolicyError:
            return None  # stored text was validated on write; never widen on a surprise

    def capabilities(self, token: aclstate.TokenView, path: str) -> frozenset[str]:
        return self.acl(token).capabilities(path)

    def check(self, token: aclstate.TokenView, path: str, op: Operation, *, sudo: bool) -> None:
        acl = self.acl(token)
        if not acl.allowed(path, op.value) or (sudo and not acl.allowed(path, "sudo")):
            raise LogicalError(403, DENIED)

    async def spend_use(self, token: aclstate.TokenView) -> None:
        a = self.service.agent
        result = await a.apply(aclstate.encode_token_use(a.registry, accessor=token.accessor))
        if not result.ok:
            raise Forbidden(DENIED)
