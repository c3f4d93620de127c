"""Wire encoding of gossip messages (msgpack).

A packet body is one msgpack array of messages; each message is an array
``[tag, *fields]`` with fields in dataclass order. Tags are maps of str to str;
a push-pull member is ``[name, addr, incarnation, state, tags]``.

`decode` never trusts its input: anything that is not exactly that (unknown
tag, wrong arity or type, a bool where an int belongs, a negative number, an
unknown state, msgpack garbage, trailing bytes, oversized containers) raises
`DecodeError` and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgpack

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

__all__ = ["TAGS", "DecodeError", "decode", "encode", "encoded_size"]

MAX_STR_LEN = 1 << 16
MAX_ARRAY_LEN = 1 << 16
MAX_MAP_LEN = 1 << 10
MAX_UINT = (1 << 64) - 1

TAGS: dict[type[Any], int] = {
    Ping: 1,
    IndirectPing: 2,
    Ack: 3,
    Nack: 4,
    Alive: 5,
    Suspect: 6,
    Dead: 7,
    PushPull: 8,
}


def _tags_out(tags: Mapping[str, str]) -> dict[str, str]:
    return dict(sorted(tags.items()))


def _to_wire(m: Message) -> list[Any]:
    tag = TAGS[type(m)]
    if isinstance(m, Ping | Ack | Nack):
        if isinstance(m, Ping):
            return [tag, m.seq, m.target, m.source]
        return [tag, m.seq, m.source]
    if isinstance(m, IndirectPing):
        return [tag, m.seq, m.target, m.target_addr, m.source]
    if isinstance(m, Alive):
        return [tag, m.name, m.incarnation, m.addr, _tags_out(m.tags)]
    if isinstance(m, Suspect | Dead):
        return [tag, m.name, m.incarnation, m.from_]
    members = [[r.name, r.addr, r.incarnation, int(r.state), _tags_out(r.tags)] for r in m.members]
    return [tag, members, m.join, m.reply]


def encode(messages: Sequence[Message]) -> bytes:
    out: bytes = msgpack.packb([_to_wire(m) for m in messages], use_bin_type=True)
    return out


def encoded_size(message: Message) -> int:
    """Bytes one message adds to a packet (its array; the outer header aside)."""
    out: bytes = msgpack.packb(_to_wire(message), use_bin_type=True)
    return len(out)


def _uint(v: object, what: str) -> int:
    if type(v) is not int or v < 0 or v > MAX_UINT:
        raise DecodeError(f"{what}: expected an unsigned int")
    return v


def _str(v: object, what: str) -> str:
    if type(v) is not str:
        raise DecodeError(f"{what}: expected a string")
    return v


def _bool(v: object, what: str) -> bool:
    if type(v) is not bool:
        raise DecodeError(f"{what}: expected a bool")
    return v


def _tags(v: object) -> dict[str, str]:
    if type(v) is not dict:
        raise DecodeError("tags: expected a map")
    out: dict[str, str] = {}
    for k, val in v.items():
        out[_str(k, "tag key")] = _str(val, "tag value")
    return out


def _state(v: object) -> State:
    n = _uint(v, "state")
    try:
        return State(n)
    except ValueError:
        raise DecodeError(f"unknown member state {n}") from None


def _record(v: object) -> MemberRecord:
    if type(v) is not tuple or len(v) != 5:
        raise DecodeError("member: expected [name, addr, incarnation, state, tags]")
    return MemberRecord(
        _str(v[0], "name"),
        _str(v[1], "addr"),
        _uint(v[2], "incarnation"),
        _state(v[3]),
        _tags(v[4]),
    )


def _push_pull(f: tuple[Any, ...]) -> PushPull:
    if type(f[0]) is not tuple:
        raise DecodeError("push-pull: expected an array of members")
    return PushPull(tuple(_record(r) for r in f[0]), _bool(f[1], "join"), _bool(f[2], "reply"))


_DECODERS: dict[int, tuple[int, Callable[[tuple[Any, ...]], Message]]] = {
    1: (3, lambda f: Ping(_uint(f[0], "seq"), _str(f[1], "target"), _str(f[2], "source"))),
    2: (
        4,
        lambda f: IndirectPing(
            _uint(f[0], "seq"), _str(f[1], "target"), _str(f[2], "addr"), _str(f[3], "source")
        ),
    ),
    3: (2, lambda f: Ack(_uint(f[0], "seq"), _str(f[1], "source"))),
    4: (2, lambda f: Nack(_uint(f[0], "seq"), _str(f[1], "source"))),
    5: (
        4,
        lambda f: Alive(_str(f[0], "name"), _uint(f[1], "inc"), _str(f[2], "addr"), _tags(f[3])),
    ),
    6: (3, lambda f: Suspect(_str(f[0], "name"), _uint(f[1], "inc"), _str(f[2], "from"))),
    7: (3, lambda f: Dead(_str(f[0], "name"), _uint(f[1], "inc"), _str(f[2], "from"))),
    8: (3, _push_pull),
}


def _message(v: object) -> Message:
    if type(v) is not tuple or not v:
        raise DecodeError("message: expected a non-empty array")
    tag = v[0]
    entry = _DECODERS.get(tag) if type(tag) is int else None
    if entry is None:
        raise DecodeError("unknown message tag")
    arity, build = entry
    if len(v) != 1 + arity:
        raise DecodeError(f"message tag {tag}: expected {arity} fields, got {len(v) - 1}")
    return build(v[1:])


def decode(data: bytes | bytearray | memoryview) -> list[Message]:
    """Decode one packet body; raises DecodeError (only) on any malformed input."""
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=False,
            max_str_len=MAX_STR_LEN,
            max_bin_len=0,
            max_array_len=MAX_ARRAY_LEN,
            max_map_len=MAX_MAP_LEN,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises ValueError, TypeError, UnicodeError, ...
        raise DecodeError(f"not a msgpack value: {type(exc).__name__}") from None
    if type(obj) is not tuple:
        raise DecodeError("expected an array of messages")
    return [_message(m) for m in obj]
