"""Wire encoding of Raft messages (msgpack).

Every message is one msgpack array: ``[tag, frm, to, term, *fields]`` where
``tag`` is the small number in ``TAGS`` and the fields follow the dataclass
field order of ``stack.raft.types``. Nested values:

* an ``Entry`` is ``[term, index, type, data]``;
* a ``SnapshotMeta`` is ``[index, term, [voters], [learners]]`` with the node
  id sets as strictly ascending lists;
* bytes are msgpack ``bin``, booleans msgpack ``bool``.

``decode_message`` never trusts its input: anything that is not exactly such an
array (wrong tag or arity, a bool or bytes where an int is expected, a negative
number, an unknown entry type, unsorted id lists, msgpack garbage, trailing
bytes, oversized containers) raises ``DecodeError`` and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from stack.raft.types import (
    AnyMessage,
    AppendEntries,
    AppendResponse,
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

__all__ = [
    "MAX_ARRAY_LEN",
    "MAX_BIN_LEN",
    "TAGS",
    "DecodeError",
    "decode_message",
    "encode_message",
]

MAX_BIN_LEN = 64 << 20  # one bytes field (entry data, snapshot chunk, ctx)
MAX_ARRAY_LEN = 1 << 20  # entries per AppendEntries, ids per ConfState

TAGS: dict[type[AnyMessage], int] = {
    VoteRequest: 1,
    VoteResponse: 2,
    AppendEntries: 3,
    AppendResponse: 4,
    Heartbeat: 5,
    HeartbeatResponse: 6,
    InstallSnapshot: 7,
    SnapshotResponse: 8,
    TimeoutNow: 9,
}


class DecodeError(ValueError):
    """The bytes are not a well-formed encoded Raft message."""


# ---------------------------------------------------------------- encoding

_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def _enc_meta(m: SnapshotMeta) -> tuple[int, int, list[int], list[int]]:
    return (m.index, m.term, sorted(m.conf.voters), sorted(m.conf.learners))


_ENCODERS: dict[type[Any], Callable[[Any], tuple[Any, ...]]] = {
    AppendEntries: lambda m: (
        3,
        m.frm,
        m.to,
        m.term,
        m.prev_index,
        m.prev_term,
        [(e.term, e.index, e.type, e.data) for e in m.entries],
        m.commit,
    ),
    AppendResponse: lambda m: (
        4,
        m.frm,
        m.to,
        m.term,
        m.index,
        m.reject,
        m.hint_index,
        m.hint_term,
    ),
    Heartbeat: lambda m: (5, m.frm, m.to, m.term, m.commit, m.ctx),
    HeartbeatResponse: lambda m: (6, m.frm, m.to, m.term, m.ctx),
    VoteRequest: lambda m: (
        1,
        m.frm,
        m.to,
        m.term,
        m.last_index,
        m.last_term,
        m.pre_vote,
        m.transfer,
    ),
    VoteResponse: lambda m: (2, m.frm, m.to, m.term, m.granted, m.pre_vote),
    InstallSnapshot: lambda m: (
        7,
        m.frm,
        m.to,
        m.term,
        _enc_meta(m.meta),
        m.offset,
        m.chunk,
        m.done,
        m.total,
    ),
    SnapshotResponse: lambda m: (
        8,
        m.frm,
        m.to,
        m.term,
        m.index,
        m.next_offset,
        m.reject,
        m.done,
    ),
    TimeoutNow: lambda m: (9, m.frm, m.to, m.term),
}


def encode_message(msg: AnyMessage) -> bytes:
    """Encode one Raft message. Raises TypeError for anything that is not one."""
    enc = _ENCODERS.get(type(msg))
    if enc is None:
        raise TypeError(f"not a Raft message: {type(msg).__name__}")
    out: bytes = _packb(enc(msg))
    return out


# ---------------------------------------------------------------- decoding

_U, _B, _Y, _ENTRIES, _META = range(5)  # field kinds: uint, bool, bytes, entries, meta

# tag -> (class, kinds of the fields after frm, to, term)
_SCHEMA: dict[int, tuple[type[Any], tuple[int, ...]]] = {
    1: (VoteRequest, (_U, _U, _B, _B)),
    2: (VoteResponse, (_B, _B)),
    3: (AppendEntries, (_U, _U, _ENTRIES, _U)),
    4: (AppendResponse, (_U, _B, _U, _U)),
    5: (Heartbeat, (_U, _Y)),
    6: (HeartbeatResponse, (_Y,)),
    7: (InstallSnapshot, (_META, _U, _Y, _B, _U)),
    8: (SnapshotResponse, (_U, _U, _B, _B)),
    9: (TimeoutNow, ()),
}
_ENTRY_TYPES = tuple(EntryType)  # indexable by value: values are 0..n-1
assert all(t.value == i for i, t in enumerate(_ENTRY_TYPES))


def _uint(v: object, what: str) -> int:
    if type(v) is not int or v < 0:
        raise DecodeError(f"{what}: expected a non-negative int, got {type(v).__name__}")
    return v


def _ids(v: object, what: str) -> frozenset[int]:
    if type(v) is not tuple:
        raise DecodeError(f"{what}: expected an array, got {type(v).__name__}")
    prev = -1
    for x in v:
        if type(x) is not int or x <= prev:
            raise DecodeError(f"{what}: expected strictly ascending non-negative ints")
        prev = x
    return frozenset(v)


def _entries(v: object) -> tuple[Entry, ...]:
    if type(v) is not tuple:
        raise DecodeError(f"entries: expected an array, got {type(v).__name__}")
    out = []
    for e in v:
        if type(e) is not tuple or len(e) != 4:
            raise DecodeError("entry: expected [term, index, type, data]")
        term, index, etype, data = e
        if (
            type(term) is not int
            or term < 0
            or type(index) is not int
            or index < 0
            or type(etype) is not int
            or not 0 <= etype < len(_ENTRY_TYPES)
            or type(data) is not bytes
        ):
            raise DecodeError("entry: bad field type or value")
        out.append(Entry(term, index, _ENTRY_TYPES[etype], data))
    return tuple(out)


def _meta(v: object) -> SnapshotMeta:
    if type(v) is not tuple or len(v) != 4:
        raise DecodeError("snapshot meta: expected [index, term, voters, learners]")
    return SnapshotMeta(
        _uint(v[0], "meta.index"),
        _uint(v[1], "meta.term"),
        ConfState(_ids(v[2], "voters"), _ids(v[3], "learners")),
    )


def _field(kind: int, v: object) -> object:
    if kind == _U:
        return _uint(v, "field")
    if kind == _B:
        if type(v) is not bool:
            raise DecodeError(f"field: expected a bool, got {type(v).__name__}")
        return v
    if kind == _Y:
        if type(v) is not bytes:
            raise DecodeError(f"field: expected bytes, got {type(v).__name__}")
        return v
    if kind == _ENTRIES:
        return _entries(v)
    return _meta(v)


def decode_message(data: bytes | bytearray | memoryview) -> AnyMessage:
    """Decode one Raft message; raises DecodeError (only) on any malformed input."""
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=False,
            max_bin_len=MAX_BIN_LEN,
            max_array_len=MAX_ARRAY_LEN,
            max_str_len=0,  # no Raft field is a string
            max_map_len=0,  # nor a map
            max_ext_len=0,  # nor an extension type
        )
    except Exception as exc:  # msgpack raises ValueError, TypeError, UnicodeError, ...
        raise DecodeError(f"not a msgpack value: {type(exc).__name__}") from None
    if type(obj) is not tuple or len(obj) < 4:
        raise DecodeError("expected an array [tag, frm, to, term, ...]")
    tag = obj[0]
    schema = _SCHEMA.get(tag) if type(tag) is int else None
    if schema is None:
        raise DecodeError(f"unknown message tag ({type(tag).__name__})")
    cls, kinds = schema
    if len(obj) != 4 + len(kinds):
        raise DecodeError(f"{cls.__name__}: expected {4 + len(kinds)} items, got {len(obj)}")
    args: list[object] = [_uint(obj[1], "frm"), _uint(obj[2], "to"), _uint(obj[3], "term")]
    args.extend(_field(k, v) for k, v in zip(kinds, obj[4:], strict=True))
    msg: AnyMessage = cls(*args)
    return msg
