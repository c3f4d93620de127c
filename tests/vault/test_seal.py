"""The pure seal: genesis, re-keys, unsealing from shares, following epochs, recovery."""

from __future__ import annotations

import random
from typing import Any

import pytest

from stack.ca import authority
from stack.state import seal as sealstate
from stack.vault import seal as sealing
from stack.vault.barrier import Barrier, Keyring
from stack.vault.seal import Seal, SealError


def _rand(seed: int) -> Any:
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


KEYS = {nid: authority.new_node_key() for nid in (1, 2, 3, 4)}
PUBS = {nid: authority.public_key_pem(k) for nid, k in KEYS.items()}


def _three_voter_epochs() -> tuple[sealing.Genesis, list[dict[str, Any]], list[bytes]]:
    """Genesis with voter 1, then re-keys to {1, 2} and {1, 2, 3}."""
    gen = sealing.genesis(1, rand=_rand(1))
    rows = [gen.row]
    roots = [gen.root]
    for voters in ({1, 2}, {1, 2, 3}):
        rk = sealing.rekey(rows[-1], roots[-1], gen.keyring, {v: PUBS[v] for v in voters})
        rows.append(rk.row)
        roots.append(rk.root)
    for row in rows:
        sealstate.validate_epoch(row)  # what the leader proposes is what apply accepts
    return gen, rows, roots


def _shares(rows: list[dict[str, Any]], *nodes: int) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for row in rows:
        for nid in nodes:
            s = sealing.own_share(row, nid, KEYS[nid])
            if s is not None:
                out.setdefault(int(row["epoch"]), []).append(s)
    return out


def test_genesis_single_voter_has_no_share_in_the_log_and_its_local_share_unseals() -> None:
    gen = sealing.genesis(7)
    assert gen.row["shares"] == {} and gen.row["threshold"] == 1
    assert len(gen.recovery_shares) == 5 and gen.row["recovery_threshold"] == 3
    seal = Seal(Barrier())
    assert seal.try_shares([gen.row], {1: [gen.local_share]})
    assert seal.root == gen.root
    assert seal.barrier.keyring == gen.keyring


def test_quorum_of_shares_unseals_and_fewer_do_not() -> None:
    gen, rows, roots = _three_voter_epochs()
    assert rows[-1]["threshold"] == 2 and sorted(rows[-1]["shares"]) == ["1", "2", "3"]
    one = Seal(Barrier())
    assert not one.try_shares(rows, _shares(rows[-1:], 1))
    assert one.sealed and (one.shares_held, one.shares_needed) == (1, 2)
    assert "1 of the 2" in one.reason
    two = Seal(Barrier())
    assert two.try_shares(rows, _shares(rows[-1:], 1, 3))
    assert two.root == roots[-1] and two.epoch == 3
    assert two.barrier.keyring.decrypt(gen.keyring.encrypt(b"s3cret", b"a"), b"a") == b"s3cret"


def test_a_share_is_only_readable_with_its_own_node_key() -> None:
    _, rows, _ = _three_voter_epochs()
    assert sealing.own_share(rows[-1], 2, KEYS[3]) is None  # node 3's key, node 2's share
    assert sealing.own_share(rows[-1], 4, KEYS[4]) is None  # not a voter


def test_a_bad_share_is_skipped_when_there_are_spares() -> None:
    _, rows, roots = _three_voter_epochs()
    good = _shares(rows[-1:], 1, 2)[3]
    bad = bytes([good[0][0] ^ 1]) + good[0][1:-1] + b"\x09"
    seal = Seal(Barrier())
    assert seal.try_shares(rows, {3: [bad, *good]})
    assert seal.root == roots[-1]


def test_a_lagging_node_unseals_at_an_older_epoch_then_follows_forward() -> None:
    _gen, rows, roots = _three_voter_epochs()
    # Only epochs 1-2 applied here; peers hold shares of epoch 2 (kept) and 3.
    seal = Seal(Barrier())
    assert seal.try_shares(rows[:2], _shares(rows[:2], 1, 2))
    assert seal.epoch == 2
    assert seal.follow(rows)  # epoch 3's row carries the link from root 2
    assert seal.epoch == 3 and seal.root == roots[-1]
    assert not seal.follow(rows)  # nothing new


def test_removed_voters_share_is_useless_after_the_rekey() -> None:
    gen, rows, roots = _three_voter_epochs()
    rk = sealing.rekey(rows[-1], roots[-1], gen.keyring, {1: PUBS[1], 2: PUBS[2]})
    new_rows = [*rows, rk.row]
    # Node 3 (removed) keeps its epoch-3 share; with one current share it cannot
    # open epoch 4, and epoch 4 has no share for it.
    assert sealing.own_share(rk.row, 3, KEYS[3]) is None
    seal = Seal(Barrier())
    assert not seal.try_shares([rk.row], {4: _shares([rk.row], 1)[4]})
    assert seal.try_shares(new_rows, {4: _shares([rk.row], 1, 2)[4]})
    assert seal.root == rk.root != roots[-1]


def test_recovery_shares_unseal_the_newest_epoch() -> None:
    gen, rows, roots = _three_voter_epochs()
    seal = Seal(Barrier())
    shares = [sealing.decode_recovery_share(s) for s in gen.recovery_shares]
    assert not seal.add_recovery_share(rows, shares[0])
    assert not seal.add_recovery_share(rows, shares[0])  # a repeat does not count
    assert seal.recovery_progress == 1
    assert not seal.add_recovery_share(rows, shares[3])
    assert seal.add_recovery_share(rows, shares[4])
    assert seal.root == roots[-1] and seal.epoch == 3


def test_wrong_recovery_shares_are_refused_and_start_over() -> None:
    _gen, rows, _ = _three_voter_epochs()
    other = sealing.genesis(1, rand=_rand(99))
    seal = Seal(Barrier())
    wrong = [sealing.decode_recovery_share(s) for s in other.recovery_shares[:3]]
    seal.add_recovery_share(rows, wrong[0])
    seal.add_recovery_share(rows, wrong[1])
    with pytest.raises(SealError):
        seal.add_recovery_share(rows, wrong[2])
    assert seal.sealed and seal.recovery_progress == 0


def test_recovery_share_text_is_checked() -> None:
    with pytest.raises(SealError):
        sealing.decode_recovery_share("not base64 !!")
    with pytest.raises(SealError):
        sealing.decode_recovery_share("AAAA")


def test_keyring_rotation_within_an_epoch_is_followed() -> None:
    gen, rows, roots = _three_voter_epochs()
    seal = Seal(Barrier())
    assert seal.try_shares(rows, _shares(rows[-1:], 2, 3))
    rotated = gen.keyring.rotated()
    newer = dict(
        rows[-1], keyring=rotated.wrap(roots[-1]), keyring_version=rows[-1]["keyring_version"] + 1
    )
    assert seal.follow([*rows, newer])
    assert seal.barrier.keyring.active == rotated.active == 2


def test_seal_now_forgets_the_key() -> None:
    _gen, rows, _ = _three_voter_epochs()
    seal = Seal(Barrier())
    assert seal.try_shares(rows, _shares(rows[-1:], 1, 2))
    seal.seal_now()
    assert seal.sealed and seal.barrier.sealed
    assert not seal.follow(rows)  # a sealed node cannot follow on its own


def test_apply_epoch_accepts_only_the_next_epoch_and_keeps_three() -> None:
    from stack.state.commands import ApplyContext
    from stack.state.store import StateStore

    gen, rows, roots = _three_voter_epochs()
    store = StateStore()
    results = [sealstate.apply_epoch(ApplyContext(i + 1, 1, store), r) for i, r in enumerate(rows)]
    assert all(r.ok for r in results)
    assert not sealstate.apply_epoch(ApplyContext(10, 1, store), rows[1]).ok  # stale
    rk = sealing.rekey(rows[-1], roots[-1], gen.keyring, {1: PUBS[1]})
    assert sealstate.apply_epoch(ApplyContext(11, 1, store), rk.row).ok
    assert [r["epoch"] for r in sealstate.epochs(store)] == [2, 3, 4]
    with pytest.raises(TypeError):
        sealstate.apply_epoch(ApplyContext(12, 1, store), {"epoch": "x"})


def test_keyring_wrap_round_trip_through_epoch_rows() -> None:
    gen, rows, roots = _three_voter_epochs()
    for row, root in zip(rows, roots, strict=True):
        assert Keyring.unwrap(root, row["keyring"]) == gen.keyring
