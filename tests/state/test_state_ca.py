"""The CA table's commands: init once, rotate to the next generation only, retire
never the active root, join secret versions, revocations and node keys."""

from __future__ import annotations

import pytest

from stack.agent import build_registry
from stack.state import ca
from stack.state.commands import ApplyContext
from stack.state.fsm import FSM


def _root(gen: int) -> dict[str, object]:
    return {"gen": gen, "cert": f"cert{gen}".encode(), "key": f"ct{gen}".encode(), "cross": b""}


def _fsm() -> FSM:
    return FSM(build_registry())


def test_init_rotate_retire_revoke_through_the_log() -> None:
    fsm = _fsm()
    reg = fsm.registry
    i = iter(range(1, 100))
    fsm.apply(next(i), 1, ca.encode_init(reg, root=_root(1), join_secret=b"j1", gossip_key=b"g"))
    assert ca.active_root(fsm.store).gen == 1  # type: ignore[union-attr]
    # A second init changes nothing.
    r = fsm.apply(next(i), 1, ca.encode_init(reg, root=_root(5), join_secret=b"x", gossip_key=b"y"))
    assert not r.ok and ca.join_secret(fsm.store) == b"j1"  # type: ignore[attr-defined]
    # Rotation must name the next generation.
    assert not fsm.apply(next(i), 1, ca.encode_rotate(reg, root=_root(3), retire_after=9.0)).ok  # type: ignore[attr-defined]
    assert fsm.apply(next(i), 1, ca.encode_rotate(reg, root=_root(2), retire_after=9.0)).ok  # type: ignore[attr-defined]
    roots = ca.roots(fsm.store)
    assert [(r.gen, r.retire_after) for r in roots] == [(1, 9.0), (2, 0.0)]
    assert ca.active_root(fsm.store).gen == 2  # type: ignore[union-attr]
    # The active root is never retired; the old one is.
    assert not fsm.apply(next(i), 1, ca.encode_retire(reg, 2)).ok  # type: ignore[attr-defined]
    assert fsm.apply(next(i), 1, ca.encode_retire(reg, 1)).ok  # type: ignore[attr-defined]
    assert [r.gen for r in ca.roots(fsm.store)] == [2]
    fsm.apply(next(i), 1, ca.encode_join(reg, b"j2"))
    assert ca.join_secret(fsm.store) == b"j2"
    assert fsm.store.table(ca.CA_TABLE).get("join").value["version"] == 2  # type: ignore[union-attr]
    assert not ca.is_revoked(fsm.store, 42)
    fsm.apply(next(i), 1, ca.encode_revoke(reg, 42))
    assert ca.is_revoked(fsm.store, 42) and ca.revoked(fsm.store) == [42]
    fsm.apply(next(i), 1, ca.encode_node_key(reg, 42, b"PUB"))
    assert ca.node_key(fsm.store, 42) == b"PUB" and ca.node_key(fsm.store, 43) is None
    # Survives a snapshot round trip.
    other = _fsm()
    other.restore(fsm.snapshot())
    assert ca.roots(other.store) == ca.roots(fsm.store)
    assert ca.is_revoked(other.store, 42)


@pytest.mark.parametrize(
    "body",
    [
        None,
        {"root": {"gen": 0, "cert": b"", "key": b"", "cross": b""}, "join": b"", "gossip": b""},
        {"root": _root(1), "join": "text", "gossip": b""},
    ],
)
def test_malformed_init_is_a_bug_not_a_silent_change(body: object) -> None:
    store = _fsm().store
    with pytest.raises((TypeError, AttributeError)):
        ca.apply_init(ApplyContext(1, 1, store), body)
    assert ca.active_root(store) is None


def test_gossip_keyring_moves_one_version_at_a_time() -> None:
    fsm = _fsm()
    reg = fsm.registry
    i = iter(range(1, 100))
    assert ca.gossip_keyring(fsm.store) is None
    fsm.apply(next(i), 1, ca.encode_init(reg, root=_root(1), join_secret=b"j", gossip_key=b"g1"))
    assert ca.gossip_keyring(fsm.store) == ca.GossipKeyringRow([b"g1"], 0, 1)

    def put(keys: list[bytes], primary: int, version: int) -> bool:
        cmd = ca.encode_gossip_keyring(reg, keys=keys, primary=primary, version=version)
        return fsm.apply(next(i), 1, cmd).ok  # type: ignore[attr-defined, no-any-return]

    assert put([b"g1", b"g2"], 0, 2)
    assert not put([b"zz"], 0, 2), "a stale version (a concurrent rotation) changes nothing"
    assert not put([b"zz"], 0, 4), "nor does skipping one"
    assert put([b"g1", b"g2"], 1, 3)
    assert put([b"g2"], 0, 4)
    assert ca.gossip_keyring(fsm.store) == ca.GossipKeyringRow([b"g2"], 0, 4)


@pytest.mark.parametrize(
    "body",
    [
        None,
        {"keys": [], "primary": 0, "version": 2},
        {"keys": [b"k"], "primary": 1, "version": 2},
        {"keys": [b"k"], "primary": 0, "version": "2"},
        {"keys": ["k"], "primary": 0, "version": 2},
        {"keys": [b"k"], "primary": True, "version": 2},
    ],
)
def test_malformed_gossip_keyring_is_refused(body: object) -> None:
    fsm = _fsm()
    ctx = ApplyContext(1, 1, fsm.store)
    spec = fsm.registry.lookup(ca.CA_GOSSIP_KEYRING)
    assert spec is not None
    with pytest.raises((TypeError, ValueError)):
        spec.apply(ctx, body)
