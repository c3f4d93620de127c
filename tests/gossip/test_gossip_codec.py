"""Gossip wire codec: exact round trips, and nothing but DecodeError on garbage."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.gossip.codec import decode, encode
from stack.gossip.errors import DecodeError
from stack.gossip.types import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    MemberRecord,
    Message,
    Nack,
    Ping,
    PushPull,
    State,
    Suspect,
)

names = st.text(max_size=20)
uints = st.integers(min_value=0, max_value=(1 << 64) - 1)
tags = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4)
records = st.builds(MemberRecord, names, names, uints, st.sampled_from(State), tags)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Ping, uints, names, names),
    st.builds(IndirectPing, uints, names, names, names),
    st.builds(Ack, uints, names),
    st.builds(Nack, uints, names),
    st.builds(Alive, names, uints, names, tags),
    st.builds(Suspect, names, uints, names),
    st.builds(Dead, names, uints, names),
    st.builds(PushPull, st.lists(records, max_size=4).map(tuple), st.booleans(), st.booleans()),
)


@given(st.lists(messages, max_size=6))
def test_round_trip(ms: list[Message]) -> None:
    assert decode(encode(ms)) == ms


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_garbage_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


wire_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=10,
)


@settings(max_examples=150)
@given(st.lists(st.tuples(st.integers(0, 9), st.lists(wire_values, max_size=5)), max_size=3))
def test_well_formed_msgpack_of_wrong_shape_raises_only_decode_error(
    body: list[tuple[int, list[object]]],
) -> None:
    data = msgpack.packb([[tag, *fields] for tag, fields in body])
    with contextlib.suppress(DecodeError):
        decode(data)


@pytest.mark.parametrize(
    "wire",
    [
        [[1, True, "a", "b"]],  # bool is not a seq
        [[1, -1, "a", "b"]],  # negative seq
        [[1, 1, "a"]],  # arity
        [[9, 1]],  # unknown tag
        [[5, "a", 1, "addr", {"k": 1}]],  # tag value not a string
        [[8, [["a", "x", 1, 7, {}]], False, False]],  # unknown state
        [[8, [], 0, False]],  # int where a bool belongs
        {"not": "a list"},
    ],
)
def test_specific_malformations_are_rejected(wire: object) -> None:
    with pytest.raises(DecodeError):
        decode(msgpack.packb(wire))


def test_trailing_bytes_rejected() -> None:
    with pytest.raises(DecodeError):
        decode(encode([Ack(1, "a")]) + b"\x00")
