"""Tokens, policies and token roles as replicated state (`stack/state/acl.py`):
Vault's parent/child and role policy rules, TTL defaults and caps, renewal,
revocation of trees, limited uses, the expiry sweep, and determinism."""

from __future__ import annotations

from typing import Any

import pytest
from state_helpers import Log

from stack.state import CommandRegistry, acl, register_substrate_commands, tokens
from stack.state.commands import ApplyContext, WriteResult
from stack.state.errors import ApplyFailed
from stack.state.fsm import FSM
from stack.state.store import StateStore

NOW = 1_700_000_000.0
HOUR = 3600
DAY = 24 * HOUR
ROOT_SECRET = "st.root-secret"


def _registry() -> CommandRegistry:
    registry = CommandRegistry()
    register_substrate_commands(registry)
    tokens.register(registry)
    acl.register(registry)
    return registry


class Acl:
    """A fresh FSM with the bootstrap root token, and shorthands for the commands."""

    def __init__(self, root: bool = True) -> None:
        self.log = Log(FSM(_registry()))
        self.reg = self.log.registry
        self.store = self.log.store
        if root:
            self.apply(
                tokens.encode_token_set(
                    self.reg,
                    secret_hash=tokens.hash_secret(ROOT_SECRET),
                    accessor="root",
                    policies=["root"],
                )
            )

    def apply(self, data: bytes) -> WriteResult:
        result = self.log.apply(data)
        assert isinstance(result, WriteResult)
        return result

    def create(self, accessor: str, parent: str = "root", **kw: Any) -> WriteResult:
        kw.setdefault("now", NOW)
        return self.apply(
            acl.encode_token_create(
                self.reg,
                secret_hash=tokens.hash_secret(f"st.{accessor}"),
                accessor=accessor,
                parent_accessor=parent,
                **kw,
            )
        )

    def renew(self, accessor: str, now: float, increment: int = 0) -> WriteResult:
        return self.apply(
            acl.encode_token_renew(self.reg, accessor=accessor, now=now, increment=increment)
        )

    def revoke(self, accessor: str, orphan_children: bool = False) -> WriteResult:
        return self.apply(
            acl.encode_token_revoke(self.reg, accessor=accessor, orphan_children=orphan_children)
        )

    def use(self, accessor: str) -> WriteResult:
        return self.apply(acl.encode_token_use(self.reg, accessor=accessor))

    def expire(self, now: float, limit: int = 100) -> WriteResult:
        return self.apply(acl.encode_token_expire(self.reg, now=now, limit=limit))

    def role(self, name: str, **kw: Any) -> WriteResult:
        return self.apply(acl.encode_role_set(self.reg, name=name, **kw))

    def view(self, accessor: str) -> acl.TokenView:
        found = acl.lookup_accessor(self.store, accessor)
        assert found is not None, accessor
        return found

    def error(self, result: WriteResult) -> str:
        assert not result.ok, result
        return str(result.data["error"])


def test_create_then_lookup_by_secret_and_by_accessor() -> None:
    a = Acl()
    result = a.create("a1", policies=["ops", "dev", "ops"], ttl=HOUR, meta={"b": "2", "a": "1"})
    assert result.ok and result.index == 2
    assert result.data["policies"] == ["dev", "ops"]  # sorted, deduplicated
    view = acl.lookup_secret(a.store, "st.a1")
    assert view is not None
    assert view == acl.lookup_accessor(a.store, "a1")
    assert view.secret_hash == tokens.hash_secret("st.a1")
    assert (view.accessor, view.policies, view.parent, view.orphan) == (
        "a1",
        ("dev", "ops"),
        "root",
        False,
    )
    assert (view.creation_time, view.ttl, view.expire_time) == (NOW, HOUR, NOW + HOUR)
    assert view.renewable and view.type == "service" and view.path == "auth/token/create"
    assert view.meta == {"a": "1", "b": "2"} and view.num_uses == 0
    assert view.ttl_remaining(NOW + 600) == HOUR - 600
    assert acl.lookup_secret(a.store, "st.unknown") is None
    assert acl.lookup_accessor(a.store, "nobody") is None
    assert acl.list_accessors(a.store) == ["a1", "root"]
    assert acl.children(a.store, "root") == ["a1"]
    # The secret itself is never stored, only its hash.
    assert "st.a1" not in repr(a.store.dump())


def test_lookup_with_now_hides_expired_tokens() -> None:
    a = Acl()
    a.create("a1", ttl=HOUR)
    assert acl.lookup_secret(a.store, "st.a1", NOW + HOUR - 1) is not None
    assert acl.lookup_secret(a.store, "st.a1", NOW + HOUR) is None
    assert acl.lookup_accessor(a.store, "a1", NOW + HOUR) is None
    view = acl.lookup_secret(a.store, "st.a1")  # no time given: as stored
    assert view is not None and view.expired(NOW + HOUR) and not view.expired(NOW + HOUR - 1)
    assert view.ttl_remaining(NOW + 2 * HOUR) == 0.0


def test_bootstrap_root_token_from_token_set_still_works() -> None:
    a = Acl()
    view = acl.lookup_secret(a.store, ROOT_SECRET, NOW + 1000 * DAY)
    assert view is not None and view == a.view("root")
    assert view.policies == ("root",) and view.is_root
    assert (view.parent, view.orphan, view.renewable) == ("", True, False)
    assert (view.ttl, view.expire_time, view.ttl_remaining(NOW)) == (0, 0.0, 0.0)
    assert view.display_name == "root" and view.path == "auth/token/root"
    # The first cut's dict lookup keeps answering, now with every field.
    legacy = tokens.lookup(a.store, ROOT_SECRET)
    assert legacy is not None and legacy["accessor"] == "root" and legacy["policies"] == ["root"]
    assert legacy["expire_time"] == 0.0
    # The row TOKEN_SET writes is unchanged; only the accessor index is new.
    row = a.store.table(tokens.TOKENS_TABLE).get(tokens.hash_secret(ROOT_SECRET))
    assert row is not None and row.value == {"accessor": "root", "policies": ["root"]}
    # The root token can make another root token, which never expires either.
    child = a.create("r2", policies=["root"])
    assert child.ok and child.data["expire_time"] == 0.0 and not child.data["renewable"]
    assert a.renew("root", NOW).data == {"error": "token root is not renewable"}


def test_child_policies_must_be_a_subset_unless_the_parent_is_root() -> None:
    a = Acl()
    assert a.create("a", policies=["dev", "ops", "default"]).ok  # root may grant anything
    assert a.create("b", parent="a", policies=["dev", "default"]).ok
    error = a.error(a.create("c", parent="a", policies=["dev", "prod"]))
    assert "subset" in error and "prod" in error
    # Orphans are still bounded by the token that creates them.
    assert "prod" in a.error(a.create("d", parent="a", policies=["prod"], orphan=True))
    # Only a root token makes root tokens, even for a parent holding every other policy.
    assert "root" in a.error(a.create("e", parent="a", policies=["root"]))
    assert acl.list_accessors(a.store) == ["a", "b", "root"]
    # No parent: only orphans, and never root.
    assert "orphan" in a.error(a.create("f", parent="", policies=["dev"]))
    assert a.create("g", parent="", policies=["anything"], orphan=True).ok
    assert "root" in a.error(a.create("h", parent="", policies=["root"], orphan=True))


def test_create_refuses_duplicates_unknown_expired_and_limited_parents() -> None:
    a = Acl()
    a.create("a", ttl=HOUR)
    assert "already exists" in a.error(a.create("a", ttl=HOUR))
    dup = acl.encode_token_create(
        a.reg, secret_hash=tokens.hash_secret("st.other"), accessor="a", parent_accessor="root",
        now=NOW,
    )  # fmt: skip
    assert "already in use" in a.error(a.apply(dup))
    assert "not found" in a.error(a.create("b", parent="ghost"))
    assert "expired" in a.error(a.create("b", parent="a", now=NOW + HOUR))
    assert a.create("b", parent="a", now=NOW + HOUR - 1).ok
    a.create("limited", num_uses=3)
    assert "use limit" in a.error(a.create("c", parent="limited"))


def test_role_policy_rules_and_settings() -> None:
    a = Acl()
    a.create("parent", policies=["dev"])
    assert a.role(
        "web", allowed_policies=["app", "db"], disallowed_policies=["db"], path_suffix="v2"
    ).ok
    # The role decides, not the parent's policies; "default" is implicitly allowed.
    made = a.create("t1", parent="parent", policies=["app", "default"], role="web")
    assert made.ok and made.data["path"] == "auth/token/create/web/v2"
    assert a.view("t1").role == "web"
    assert "not allowed by role web: prod" in a.error(
        a.create("t2", parent="parent", policies=["prod"], role="web")
    )
    assert "disallowed by role web: db" in a.error(
        a.create("t3", parent="parent", policies=["db"], role="web")
    )
    # Only disallowed: anything else goes, even beyond the parent's policies.
    a.role("deny-only", disallowed_policies=["secret"])
    assert a.create("t4", parent="parent", policies=["ops"], role="deny-only").ok
    assert not a.create("t5", parent="parent", policies=["secret"], role="deny-only").ok
    # Neither list: the parent's policies bound the child as without a role.
    a.role("plain")
    assert "subset" in a.error(a.create("t6", parent="parent", policies=["ops"], role="plain"))
    # Root still needs a root parent, role or not.
    a.role("everything", allowed_policies=["root"])
    assert "root" in a.error(a.create("t7", parent="parent", policies=["root"], role="everything"))
    assert "unknown token role" in a.error(a.create("t8", parent="parent", role="nope"))


def test_role_orphan_renewable_period_and_max_ttl_apply_to_its_tokens() -> None:
    a = Acl()
    a.role("svc", orphan=True, renewable=False, token_period=2 * HOUR,
           token_explicit_max_ttl=10 * HOUR)  # fmt: skip
    made = a.create("t", policies=["app"], role="svc", period=5 * HOUR, explicit_max_ttl=20 * HOUR)
    assert made.ok
    view = a.view("t")
    assert (view.parent, view.orphan, view.renewable) == ("", True, False)
    assert (view.period, view.explicit_max_ttl) == (2 * HOUR, 10 * HOUR)  # the lesser of each
    assert view.expire_time == NOW + 2 * HOUR
    assert acl.children(a.store, "root") == []  # an orphan is not linked to its creator
    a.role("ttl", token_ttl=HOUR)
    assert a.create("u", role="ttl").data["ttl"] == HOUR
    assert a.create("v", role="ttl", ttl=2 * HOUR).data["ttl"] == 2 * HOUR


def test_role_set_read_delete() -> None:
    a = Acl(root=False)
    assert a.role("r", allowed_policies=["b", "a", "b"], token_type="service").data == {"name": "r"}
    assert acl.get_role(a.store, "r") == acl.TokenRole(
        name="r",
        allowed_policies=("a", "b"),
        disallowed_policies=(),
        orphan=False,
        renewable=True,
        token_period=0,
        token_explicit_max_ttl=0,
        token_ttl=0,
        path_suffix="",
        token_type="service",
    )
    assert "not supported" in a.error(a.role("b", token_type="batch"))
    assert acl.list_roles(a.store) == ["r"]
    delete = acl.encode_role_delete(a.reg, name="r")
    assert a.apply(delete).data == {"deleted": True}
    assert a.apply(delete).data == {"deleted": False}
    assert acl.get_role(a.store, "r") is None


def test_ttl_defaults_and_caps() -> None:
    a = Acl()
    max_ttl = 768 * HOUR
    assert a.create("default", policies=["dev"]).data["ttl"] == max_ttl  # ttl 0: the default
    assert a.view("default").expire_time == NOW + max_ttl
    assert a.create("long", ttl=max_ttl * 2).data["ttl"] == max_ttl  # the system max
    made = a.create("capped", ttl=10 * HOUR, explicit_max_ttl=HOUR)
    assert (made.data["ttl"], made.data["expire_time"]) == (HOUR, NOW + HOUR)
    # Root-policy tokens without a TTL never expire; with an explicit max they do.
    forever = a.create("forever", policies=["root"])
    assert (forever.data["ttl"], forever.data["expire_time"]) == (0, 0.0)
    assert not forever.data["renewable"]
    bounded = a.create("bounded", policies=["root"], explicit_max_ttl=HOUR)
    assert bounded.data["expire_time"] == NOW + HOUR
    short_root = a.create("short-root", policies=["root"], ttl=HOUR)
    assert short_root.data["expire_time"] == NOW + HOUR
    # An expiring root token cannot mint a non-expiring one.
    assert "non-expiring" in a.error(a.create("x", parent="short-root", policies=["root"]))
    assert a.create("y", parent="short-root", policies=["root"], ttl=60).ok


def test_periodic_tokens_renew_by_their_period_without_a_max() -> None:
    a = Acl()
    made = a.create("p", period=HOUR, ttl=5 * HOUR)
    assert made.data["expire_time"] == NOW + HOUR  # the period, not the ttl
    renewed = a.renew("p", NOW + 1800, increment=99 * HOUR)  # the increment is ignored
    assert renewed.data == {"accessor": "p", "ttl": HOUR, "expire_time": NOW + 1800 + HOUR}
    # Past the system max TTL a periodic token keeps renewing.
    t = NOW
    for _ in range(40 * 24):
        t += HOUR - 60
        assert a.renew("p", t).ok
    assert a.view("p").expire_time == t + HOUR and t > NOW + 32 * DAY
    # With an explicit max it stops there.
    a.create("pm", period=HOUR, explicit_max_ttl=90 * 60)
    assert a.renew("pm", NOW + 3000).data["expire_time"] == NOW + 90 * 60
    last = a.renew("pm", NOW + 90 * 60 - 1)
    assert last.data == {"accessor": "pm", "ttl": 1.0, "expire_time": NOW + 90 * 60}
    assert "expired" in a.error(a.renew("pm", NOW + 90 * 60))


def test_renew_is_capped_by_explicit_max_and_system_max() -> None:
    a = Acl()
    a.create("t", ttl=HOUR, explicit_max_ttl=2 * HOUR)
    assert a.renew("t", NOW + 3000, increment=1000).data["expire_time"] == NOW + 4000
    capped = a.renew("t", NOW + 3500, increment=10 * HOUR)
    assert capped.data == {"accessor": "t", "ttl": 2 * HOUR - 3500, "expire_time": NOW + 2 * HOUR}
    # Without an increment the token's own ttl is used.
    assert a.renew("t", NOW + 3600).data["expire_time"] == NOW + 2 * HOUR
    a.create("s", ttl=10 * DAY)
    assert a.renew("s", NOW + 9 * DAY).data["expire_time"] == NOW + 19 * DAY
    at = NOW + 18 * DAY
    assert a.renew("s", at, increment=20 * DAY).data["expire_time"] == NOW + 32 * DAY
    # The expiry index follows the renewal.
    assert tokens.next_expiry(a.store) == NOW + 2 * HOUR
    assert [acc for acc, _ in tokens.due(a.store, NOW + 2 * HOUR)] == ["t"]


def test_renew_refusals_change_nothing() -> None:
    a = Acl()
    a.create("fixed", ttl=HOUR, renewable=False)
    a.create("t", ttl=HOUR)
    before = a.store.dump()["tables"]
    assert "not renewable" in a.error(a.renew("fixed", NOW + 10))
    assert "expired" in a.error(a.renew("t", NOW + HOUR))
    assert "not found" in a.error(a.renew("ghost", NOW))
    assert a.store.dump()["tables"] == before


def _tree(a: Acl) -> None:
    """root -> a -> (b1 -> c, b2); root -> x"""
    for accessor, parent in [("a", "root"), ("b2", "a"), ("b1", "a"), ("c", "b1"), ("x", "root")]:
        assert a.create(accessor, parent=parent, ttl=HOUR).ok


def test_revoke_a_three_level_tree_children_first() -> None:
    a = Acl()
    _tree(a)
    result = a.revoke("a")
    assert result.ok and result.data == {"revoked": ["c", "b1", "b2", "a"]}
    for gone in ("a", "b1", "b2", "c"):
        assert acl.lookup_accessor(a.store, gone) is None
        assert acl.lookup_secret(a.store, f"st.{gone}") is None
    assert acl.list_accessors(a.store) == ["root", "x"]
    assert acl.children(a.store, "root") == ["x"]
    # No index entry outlives its token.
    assert a.store.table(tokens.CHILDREN_TABLE).keys() == ["root/x"]
    assert [k.split("/")[1] for k in a.store.table(tokens.EXPIRY_TABLE).keys("")] == ["x"]
    assert "not found" in a.error(a.revoke("a"))


def test_revoke_with_orphan_children_keeps_them_as_orphans() -> None:
    a = Acl()
    _tree(a)
    assert a.revoke("a", orphan_children=True).data == {"revoked": ["a"]}
    for orphan in ("b1", "b2"):
        view = a.view(orphan)
        assert (view.parent, view.orphan) == ("", True)
    assert acl.children(a.store, "a") == []
    assert acl.children(a.store, "b1") == ["c"]  # grandchildren stay with their parent
    assert a.revoke("b1").data == {"revoked": ["c", "b1"]}
    assert acl.list_accessors(a.store) == ["b2", "root", "x"]


def test_num_uses_count_down_then_revoke() -> None:
    a = Acl()
    a.create("limited", num_uses=2, ttl=HOUR)
    assert a.use("limited").data == {"remaining": 1, "revoked": []}
    assert a.view("limited").num_uses == 1
    assert a.use("limited").data == {"remaining": 0, "revoked": ["limited"]}
    assert acl.lookup_secret(a.store, "st.limited") is None
    assert "not found" in a.error(a.use("limited"))
    a.create("unlimited", ttl=HOUR)
    assert "no use limit" in a.error(a.use("unlimited"))
    a.create("stale", num_uses=5, ttl=HOUR)
    late = a.apply(acl.encode_token_use(a.reg, accessor="stale", now=NOW + HOUR))
    assert "expired" in a.error(late) and a.view("stale").num_uses == 5


def test_expiry_sweep_in_order_with_a_limit() -> None:
    a = Acl()
    # Created out of order; "e2" and "e1" expire in the same second.
    a.create("late", ttl=5 * HOUR)
    a.create("e3", ttl=3 * HOUR)
    a.create("e2", ttl=HOUR, now=NOW + 0.25)
    a.create("e1", ttl=HOUR, now=NOW + 0.5)
    a.create("e1kid", parent="e1", ttl=10 * HOUR)  # outlived by nothing: goes with e1
    a.create("e0", ttl=HOUR - 10)
    assert tokens.next_expiry(a.store) == NOW + HOUR - 10
    assert a.expire(NOW).data == {"revoked": [], "more": False}
    first = a.expire(NOW + 4 * HOUR, limit=2)
    assert first.data == {"revoked": ["e0", "e1kid", "e1"], "more": True}
    assert tokens.next_expiry(a.store) == NOW + 0.25 + HOUR
    second = a.expire(NOW + 4 * HOUR, limit=2)
    assert second.data == {"revoked": ["e2", "e3"], "more": False}
    assert acl.list_accessors(a.store) == ["late", "root"]
    assert tokens.next_expiry(a.store) == NOW + 5 * HOUR
    # Within a second, only what has really expired goes.
    a.create("frac", ttl=HOUR, now=NOW + 0.75)
    assert a.expire(NOW + HOUR + 0.5).data["revoked"] == []
    assert a.expire(NOW + HOUR + 0.75).data["revoked"] == ["frac"]


def test_policy_set_and_delete_rules() -> None:
    a = Acl(root=False)

    def set_policy(name: str, text: str, now: float = NOW) -> WriteResult:
        return a.apply(acl.encode_policy_set(a.reg, name=name, text=text, now=now))

    def delete(name: str) -> WriteResult:
        return a.apply(acl.encode_policy_delete(a.reg, name=name))

    assert set_policy("dev", 'path "kv/*" { capabilities = ["read"] }').ok
    assert acl.get_policy(a.store, "dev") == 'path "kv/*" { capabilities = ["read"] }'
    assert set_policy("dev", "v2", now=NOW + 5).ok
    row = a.store.table(acl.POLICIES_TABLE).get("dev")
    assert row is not None and (row.value["create_time"], row.value["update_time"]) == (
        NOW,
        NOW + 5,
    )
    assert "root policy cannot be changed" in a.error(set_policy("root", "x"))
    assert acl.get_policy(a.store, "root") is None
    assert set_policy("default", "override").ok  # default may be overridden...
    assert "cannot be deleted" in a.error(delete("default"))  # ...but not deleted
    assert "cannot be deleted" in a.error(delete("root"))
    assert acl.list_policies(a.store) == ["default", "dev"]
    assert delete("dev").data == {"deleted": True}
    assert delete("dev").data == {"deleted": False}
    assert acl.get_policy(a.store, "dev") is None and acl.list_policies(a.store) == ["default"]


def _script(reg: CommandRegistry) -> list[bytes]:
    h = tokens.hash_secret
    return [
        tokens.encode_token_set(reg, secret_hash=h(ROOT_SECRET), accessor="root",
                                policies=["root"]),
        acl.encode_policy_set(reg, name="dev", text="dev rules", now=NOW),
        acl.encode_role_set(reg, name="r", allowed_policies=["dev"], orphan=True),
        acl.encode_token_create(reg, secret_hash=h("1"), accessor="a", parent_accessor="root",
                                policies=["dev"], ttl=HOUR, meta={"k": "v"}, now=NOW),
        acl.encode_token_create(reg, secret_hash=h("2"), accessor="b", parent_accessor="a",
                                policies=["dev"], ttl=2 * HOUR, now=NOW + 1),
        acl.encode_token_create(reg, secret_hash=h("3"), accessor="c", parent_accessor="a",
                                role="r", policies=["dev"], num_uses=2, now=NOW + 2),
        acl.encode_token_renew(reg, accessor="a", increment=HOUR, now=NOW + 100),
        acl.encode_token_use(reg, accessor="c"),
        acl.encode_token_expire(reg, now=NOW + 3 * HOUR, limit=10),
        acl.encode_policy_delete(reg, name="dev"),
    ]  # fmt: skip


def test_same_commands_give_equal_states() -> None:
    one, two = Log(FSM(_registry())), Log(FSM(_registry()))
    results = []
    for data in _script(one.registry):
        results.append(one.apply(data))
        two.apply(data)
    assert one.store.dump() == two.store.dump()
    assert [r.ok for r in results if isinstance(r, WriteResult)] == [True] * 10
    assert acl.list_accessors(one.store) == ["c", "root"]  # a and b expired; c is an orphan
    # And a snapshot carries all of it.
    restored = FSM(_registry())
    restored.restore(one.fsm.snapshot())
    assert restored.store.dump() == one.store.dump()
    assert acl.lookup_secret(restored.store, "3") == acl.lookup_secret(one.store, "3")


def test_command_numbers_are_ours_or_free_in_the_agent_registry() -> None:
    from stack.agent import build_registry  # here: the rest of this file needs no node

    mine = CommandRegistry()
    acl.register(mine)
    assert [spec.type_id for spec in mine] == list(range(120, 129))
    agent = build_registry()
    for spec in mine:
        theirs = agent.lookup(spec.type_id)
        assert theirs is None or (theirs.name, theirs.apply) == (spec.name, spec.apply)
        named = agent.by_name(spec.name)
        assert named is None or named.type_id == spec.type_id


def _ctx() -> ApplyContext:
    return ApplyContext(1, 1, StateStore())


GOOD_HASH = tokens.hash_secret("x")


@pytest.mark.parametrize(
    ("apply", "body", "error"),
    [
        (acl.apply_token_create, None, TypeError),
        (acl.apply_token_create, {"accessor": "a", "parent_accessor": "", "policies": [],
                                  "now": NOW}, TypeError),  # no hash
        (acl.apply_token_create, {"hash": "nothex", "accessor": "a", "policies": [],
                                  "now": NOW}, ValueError),
        (acl.apply_token_create, {"hash": GOOD_HASH, "accessor": "a/b", "policies": [],
                                  "now": NOW}, ValueError),
        (acl.apply_token_create, {"hash": GOOD_HASH, "accessor": "a", "policies": ["Bad!"],
                                  "now": NOW}, ValueError),
        (acl.apply_token_create, {"hash": GOOD_HASH, "accessor": "a", "policies": "dev",
                                  "now": NOW}, TypeError),
        (acl.apply_token_create, {"hash": GOOD_HASH, "accessor": "a", "policies": [],
                                  "now": NOW, "ttl": -1}, ValueError),
        (acl.apply_token_create, {"hash": GOOD_HASH, "accessor": "a", "policies": [],
                                  "now": NOW, "ttl": 1.5}, TypeError),
        (acl.apply_token_create, {"hash": GOOD_HASH, "accessor": "a", "policies": [],
                                  "now": NOW, "orphan": 1}, TypeError),
        (acl.apply_token_create, {"hash": GOOD_HASH, "accessor": "a", "policies": [],
                                  "now": NOW, "meta": {"k": 1}}, TypeError),
        (acl.apply_token_create, {"hash": GOOD_HASH, "accessor": "a", "policies": []},
         TypeError),  # no now
        (acl.apply_token_create, {"hash": GOOD_HASH, "accessor": "a", "policies": [],
                                  "now": float("nan")}, ValueError),
        (acl.apply_token_renew, {"accessor": "a"}, TypeError),
        (acl.apply_token_renew, {"accessor": "a", "now": True}, TypeError),
        (acl.apply_token_revoke, {"accessor": 7}, TypeError),
        (acl.apply_token_revoke, {"accessor": "a", "orphan_children": "yes"}, TypeError),
        (acl.apply_token_use, ["a"], TypeError),
        (acl.apply_token_expire, {"now": NOW, "limit": 0}, ValueError),
        (acl.apply_token_expire, {"limit": 5}, TypeError),
        (acl.apply_policy_set, {"name": "Dev", "text": "", "now": NOW}, ValueError),
        (acl.apply_policy_set, {"name": "dev", "text": b"x", "now": NOW}, TypeError),
        (acl.apply_policy_delete, {"name": ""}, ValueError),
        (acl.apply_role_set, {"name": "r", "token_type": "weird"}, ValueError),
        (acl.apply_role_set, {"name": "r", "path_suffix": "../up"}, ValueError),
        (acl.apply_role_set, {"name": "r", "allowed_policies": [1]}, TypeError),
        (acl.apply_role_delete, {}, TypeError),
    ],
)  # fmt: skip
def test_malformed_bodies_raise(apply: Any, body: Any, error: type[Exception]) -> None:
    ctx = _ctx()
    with pytest.raises(error):
        apply(ctx, body)
    assert ctx.store.dump()["tables"] == {}  # nothing was written before the check


def test_a_malformed_body_stops_the_fsm() -> None:
    a = Acl()
    bad = a.reg.encode(acl.TOKEN_CREATE, {"hash": "x", "accessor": "a", "policies": [],
                                          "now": NOW})  # fmt: skip
    with pytest.raises(ApplyFailed) as info:
        a.apply(bad)
    assert isinstance(info.value.__cause__, ValueError)
