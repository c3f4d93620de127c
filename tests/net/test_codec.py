from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.codec import TAGS, DecodeError, decode_message, encode_message
from stack.raft.types import (
    AnyMessage,
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    SnapshotMeta,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)

pytestmark = pytest.mark.timeout(30)

CONF = ConfState(voters=frozenset({3, 1, 2}), learners=frozenset({7}))
CC = ConfChange(ConfChangeType.ADD_LEARNER, 7, b"127.0.0.7:7481").encode()

SAMPLES: list[AnyMessage] = [
    VoteRequest(1, 2, 5, last_index=10, last_term=4),
    VoteRequest(1, 2, 6, last_index=10, last_term=4, pre_vote=True, transfer=True),
    VoteResponse(2, 1, 5, granted=True),
    VoteResponse(2, 1, 6, granted=False, pre_vote=True),
    AppendEntries(1, 2, 5, prev_index=0, prev_term=0, entries=(), commit=0),
    AppendEntries(
        1,
        3,
        5,
        prev_index=9,
        prev_term=4,
        entries=(
            Entry(5, 10),
            Entry(5, 11, EntryType.NORMAL, b"\x00cmd\xff"),
            Entry(5, 12, EntryType.CONF_CHANGE, CC),
        ),
        commit=9,
    ),
    AppendResponse(2, 1, 5, index=12),
    AppendResponse(2, 1, 5, index=12, reject=True, hint_index=7, hint_term=3),
    Heartbeat(1, 2, 5, commit=12),
    Heartbeat(1, 2, 5, commit=12, ctx=b"read-42"),
    HeartbeatResponse(2, 1, 5),
    HeartbeatResponse(2, 1, 5, ctx=b"read-42"),
    InstallSnapshot(
        1,
        2,
        5,
        meta=SnapshotMeta(index=100, term=4, conf=CONF),
        offset=1 << 20,
        chunk=bytes(range(256)) * 64,
        done=False,
        total=3 << 20,
    ),
    InstallSnapshot(1, 2, 5, SnapshotMeta(1, 1, ConfState()), 0, b"", True),
    SnapshotResponse(2, 1, 5, index=100, next_offset=1 << 20),
    SnapshotResponse(2, 1, 5, index=100, next_offset=3 << 20, reject=True, done=True),
    TimeoutNow(1, 2, 5),
]


def test_every_message_type_is_sampled() -> None:
    assert {type(m) for m in SAMPLES} == set(TAGS)
    assert sorted(TAGS.values()) == list(range(1, len(TAGS) + 1))


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: AnyMessage) -> None:
    data = encode_message(msg)
    out = decode_message(data)
    assert out == msg
    assert type(out) is type(msg)
    assert decode_message(memoryview(data)) == msg
    assert decode_message(bytearray(data)) == msg


def test_layout_is_a_tagged_array() -> None:
    msg = SAMPLES[5]
    assert isinstance(msg, AppendEntries)
    raw = msgpack.unpackb(encode_message(msg))
    assert raw[:6] == [3, 1, 3, 5, 9, 4]
    assert raw[6][2] == [5, 12, 1, CC]
    snap = msgpack.unpackb(encode_message(SAMPLES[12]))
    assert snap[4] == [100, 4, [1, 2, 3], [7]]


def test_entry_types_and_conf_state_types_survive() -> None:
    out = decode_message(encode_message(SAMPLES[5]))
    assert isinstance(out, AppendEntries)
    assert out.entries[2].type is EntryType.CONF_CHANGE
    assert ConfChange.decode(out.entries[2].data).node_id == 7
    snap = decode_message(encode_message(SAMPLES[12]))
    assert isinstance(snap, InstallSnapshot)
    assert isinstance(snap.meta.conf.voters, frozenset)
    assert snap.meta.conf.members() == {1, 2, 3, 7}


def test_encode_rejects_non_messages() -> None:
    with pytest.raises(TypeError):
        encode_message(Entry(1, 1))  # type: ignore[arg-type]


def _pack(obj: Any) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


BAD: dict[str, bytes] = {
    "empty": b"",
    "garbage": b"\xc1\xc1\xc1",
    "not an array": _pack(3),
    "map": _pack({"tag": 3}),
    "short array": _pack([9, 1, 2]),
    "unknown tag": _pack([99, 1, 2, 3]),
    "tag zero": _pack([0, 1, 2, 3]),
    "bool tag": _pack([True, 1, 2, 3]),
    "str tag": _pack(["9", 1, 2, 3]),
    "too many items": _pack([9, 1, 2, 3, 4]),
    "too few items": _pack([5, 1, 2, 3, 4]),
    "negative term": _pack([9, 1, 2, -1]),
    "bool where int": _pack([9, True, 2, 3]),
    "bytes where int": _pack([9, b"\x01", 2, 3]),
    "float where int": _pack([9, 1.0, 2, 3]),
    "int where bool": _pack([2, 2, 1, 5, 1, 0]),
    "str where bytes": _pack([6, 2, 1, 5, "ctx"]),
    "negative entry index": _pack([3, 1, 2, 5, 0, 0, [[5, -1, 0, b""]], 0]),
    "unknown entry type": _pack([3, 1, 2, 5, 0, 0, [[5, 1, 2, b""]], 0]),
    "entry arity": _pack([3, 1, 2, 5, 0, 0, [[5, 1, 0]], 0]),
    "entries not array": _pack([3, 1, 2, 5, 0, 0, b"", 0]),
    "None data": _pack([3, 1, 2, 5, 0, 0, [[5, 1, 0, None]], 0]),
    "unsorted voters": _pack([7, 1, 2, 5, [1, 1, [2, 1], []], 0, b"", True, 0]),
    "duplicate learners": _pack([7, 1, 2, 5, [1, 1, [], [4, 4]], 0, b"", True, 0]),
    "negative voter": _pack([7, 1, 2, 5, [1, 1, [-1], []], 0, b"", True, 0]),
    "meta arity": _pack([7, 1, 2, 5, [1, 1, []], 0, b"", True, 0]),
    "ext type": _pack([9, msgpack.ExtType(1, b"x"), 2, 3]),
    "trailing data": encode_message(TimeoutNow(1, 2, 3)) + b"\x00",
    "two messages": encode_message(TimeoutNow(1, 2, 3)) * 2,
    "deep nesting": b"\x91" * 5000 + b"\x00",
    "huge array header": b"\xdd\xff\xff\xff\xff",
    "huge bin header": b"\xc6\xff\xff\xff\xff",
    "bad utf8": _pack([9, 1, 2, 3])[:-1] + b"\xa2\xff\xfe",
}


@pytest.mark.parametrize("data", BAD.values(), ids=BAD.keys())
def test_malformed_raises_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_message(data)


def test_non_bytes_input_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_message("hello")  # type: ignore[arg-type]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_truncation_raises_decode_error(msg: AnyMessage) -> None:
    data = encode_message(msg)
    cuts = range(len(data)) if len(data) < 300 else [*range(300), *range(300, len(data), 997)]
    for n in cuts:
        with pytest.raises(DecodeError):
            decode_message(data[:n])


# ---------------------------------------------------------------- properties

u64 = st.integers(0, 2**64 - 1)
small = st.integers(0, 2**31)
blob = st.binary(max_size=64)
ids = st.frozensets(u64, max_size=5)
entries = st.lists(
    st.builds(Entry, small, small, st.sampled_from(EntryType), blob), max_size=8
).map(tuple)
meta = st.builds(SnapshotMeta, small, small, st.builds(ConfState, ids, ids))
messages: st.SearchStrategy[AnyMessage] = st.one_of(
    st.builds(VoteRequest, u64, u64, u64, u64, u64, st.booleans(), st.booleans()),
    st.builds(VoteResponse, u64, u64, u64, st.booleans(), st.booleans()),
    st.builds(AppendEntries, u64, u64, u64, u64, u64, entries, u64),
    st.builds(AppendResponse, u64, u64, u64, u64, st.booleans(), u64, u64),
    st.builds(Heartbeat, u64, u64, u64, u64, blob),
    st.builds(HeartbeatResponse, u64, u64, u64, blob),
    st.builds(InstallSnapshot, u64, u64, u64, meta, u64, blob, st.booleans(), u64),
    st.builds(SnapshotResponse, u64, u64, u64, u64, u64, st.booleans(), st.booleans()),
    st.builds(TimeoutNow, u64, u64, u64),
)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.binary(max_size=16)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_round_trip_property(msg: AnyMessage) -> None:
    assert decode_message(encode_message(msg)) == msg


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_decode_error(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except DecodeError:
        return
    assert type(msg) in TAGS  # the rare valid encoding must decode to a real message


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(TAGS.values())), st.lists(values, min_size=3, max_size=9))
def test_tagged_arrays_of_arbitrary_values_only_raise_decode_error(
    tag: int, fields: list[Any]
) -> None:
    try:
        msg = decode_message(_pack([tag, *fields]))
    except DecodeError:
        return
    assert TAGS[type(msg)] == tag


@settings(max_examples=500, deadline=None)
@given(messages, st.data())
def test_one_corrupted_field_only_raises_decode_error(msg: AnyMessage, data: st.DataObject) -> None:
    raw = msgpack.unpackb(encode_message(msg))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(values)
    try:
        out = decode_message(_pack(raw))
    except DecodeError:
        return
    assert type(out) in TAGS


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_flipped_byte_only_raises_decode_error(msg: AnyMessage, data: st.DataObject) -> None:
    enc = bytearray(encode_message(msg))
    i = data.draw(st.integers(0, len(enc) - 1))
    enc[i] = data.draw(st.integers(0, 255))
    try:
        out = decode_message(bytes(enc))
    except DecodeError:
        return
    assert type(out) in TAGS
