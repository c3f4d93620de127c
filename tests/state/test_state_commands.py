"""The command registry and the FSM's apply path."""

from __future__ import annotations

import logging
from typing import Any

import msgpack
import pytest
from state_helpers import Log, substrate_registry

from stack.state import kv
from stack.state.commands import (
    ENCODING_VERSION,
    IGNORABLE_FLAG,
    ApplyContext,
    CommandRegistry,
    WriteResult,
)
from stack.state.errors import (
    ApplyFailed,
    ApplyOutOfOrder,
    CorruptEntry,
    DuplicateCommand,
    UnknownCommand,
)
from stack.state.fsm import FSM


def _noop(ctx: ApplyContext, body: Any) -> object:
    return None


def test_duplicate_number_refused() -> None:
    registry = CommandRegistry()
    registry.register(7, "a", _noop)
    with pytest.raises(DuplicateCommand, match="7"):
        registry.register(7, "b", _noop)
    assert registry.by_name("b") is None


def test_duplicate_name_refused() -> None:
    registry = CommandRegistry()
    registry.register(7, "a", _noop)
    with pytest.raises(DuplicateCommand, match="a"):
        registry.register(8, "a", _noop)
    assert 8 not in registry


def test_ignorable_registration_uses_the_same_number_space() -> None:
    registry = CommandRegistry()
    registry.register(9, "plain", _noop)
    with pytest.raises(DuplicateCommand):
        registry.register(9, "flagged", _noop, ignorable=True)


@pytest.mark.parametrize("bad", [0, -1, IGNORABLE_FLAG, IGNORABLE_FLAG | 3])
def test_number_out_of_range_refused(bad: int) -> None:
    with pytest.raises(ValueError):
        CommandRegistry().register(bad, "x", _noop)


def test_substrate_numbers_are_fixed() -> None:
    registry = substrate_registry()
    assert [(spec.type_id, spec.name) for spec in registry] == [
        (1, "kv.set"),
        (2, "kv.delete"),
        (3, "kv.delete_tree"),
        (4, "node.register"),
        (6, "state.tombstone_reap"),
        (15, "node.status"),
    ]


def test_encoding_is_version_byte_then_msgpack_pair() -> None:
    registry = CommandRegistry()
    registry.register(3, "plain", _noop)
    registry.register(4, "flagged", _noop, ignorable=True)
    plain = registry.encode(3, {"k": b"v"})
    assert plain[0] == ENCODING_VERSION
    assert msgpack.unpackb(plain[1:], raw=False) == [3, {"k": b"v"}]
    flagged = registry.encode(4, [1, 2])
    assert msgpack.unpackb(flagged[1:], raw=False) == [4 | IGNORABLE_FLAG, [1, 2]]
    decoded = registry.decode(flagged)
    assert (decoded.type_id, decoded.ignorable, decoded.body) == (4, True, [1, 2])


@pytest.mark.parametrize(
    "payload",
    [
        bytes([ENCODING_VERSION + 1]) + msgpack.packb([1, {}]),
        bytes([ENCODING_VERSION]) + b"\xc1",
        bytes([ENCODING_VERSION]) + msgpack.packb({"not": "a pair"}),
        bytes([ENCODING_VERSION]) + msgpack.packb(["one", {}]),
        bytes([ENCODING_VERSION]) + msgpack.packb([1, {}]) + b"\x00",
    ],
)
def test_corrupt_payload_stops_apply(payload: bytes) -> None:
    log = Log()
    with pytest.raises(CorruptEntry):
        log.apply(payload)
    assert log.fsm.applied_index == 0


def test_unknown_type_stops_and_changes_nothing() -> None:
    newer = substrate_registry()
    newer.register(300, "future.thing", _noop)
    log = Log()
    log.apply(kv.encode_set(log.registry, "a", b"1"))
    before = log.store.dump()
    with pytest.raises(UnknownCommand) as raised:
        log.apply(newer.encode(300, {"x": 1}))
    assert raised.value.type_id == 300
    assert raised.value.index == 2
    assert log.store.dump() == before
    assert log.fsm.applied_index == 1


def test_ignorable_unknown_type_is_skipped_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    newer = substrate_registry()
    newer.register(301, "future.hint", _noop, ignorable=True)
    log = Log()
    with caplog.at_level(logging.WARNING, logger="stack.state.fsm"):
        assert log.apply(newer.encode(301, {"x": 1})) is None
    assert log.fsm.applied_index == 1
    assert log.fsm.skipped == 1
    assert "301" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stack.state.fsm"):
        log.apply(newer.encode(301, {"x": 2}))
    assert log.fsm.skipped == 2
    assert caplog.text == ""  # one line per unknown number, not per entry
    # the node keeps going
    assert log.apply(kv.encode_set(log.registry, "a", b"1")) == WriteResult(True, 3)


def test_known_ignorable_command_is_applied() -> None:
    calls: list[int] = []
    registry = CommandRegistry()
    registry.register(6, "hint", lambda ctx, body: calls.append(ctx.index), ignorable=True)
    fsm = FSM(registry)
    fsm.apply(1, 1, registry.encode(6, None))
    assert calls == [1]
    assert fsm.skipped == 0


def test_raising_apply_is_wrapped_with_name_and_index() -> None:
    def broken(ctx: ApplyContext, body: Any) -> object:
        raise KeyError("missing")

    registry = CommandRegistry()
    registry.register(12, "engine.broken", broken)
    fsm = FSM(registry)
    fsm.apply(1, 1, b"")
    with pytest.raises(ApplyFailed) as raised:
        fsm.apply(2, 1, registry.encode(12, {}))
    assert raised.value.index == 2
    assert raised.value.type_id == 12
    assert "engine.broken" in str(raised.value)
    assert isinstance(raised.value.__cause__, KeyError)
    assert fsm.applied_index == 1


def test_malformed_kv_body_is_an_apply_failure() -> None:
    log = Log()
    with pytest.raises(ApplyFailed, match=r"kv\.set"):
        log.apply(log.registry.encode(kv.KV_SET, {"key": "a", "value": "not bytes"}))


def test_noop_only_advances_the_index() -> None:
    log = Log()
    assert log.apply(b"") is None
    assert log.fsm.applied_index == 1
    assert log.store.dump() == {"index": 1, "tables": {}}


def test_apply_out_of_order_refused() -> None:
    log = Log()
    log.fsm.apply(5, 1, b"")
    with pytest.raises(ApplyOutOfOrder):
        log.fsm.apply(5, 1, b"")
    with pytest.raises(ApplyOutOfOrder):
        log.fsm.apply(4, 1, kv.encode_set(log.registry, "a", b"1"))
    assert kv.get(log.store, "a")[0] is None


def test_apply_context_carries_index_and_term() -> None:
    seen: list[tuple[int, int]] = []
    registry = CommandRegistry()
    registry.register(1, "probe", lambda ctx, body: seen.append((ctx.index, ctx.term)))
    FSM(registry).apply(3, 7, registry.encode(1, None))
    assert seen == [(3, 7)]
