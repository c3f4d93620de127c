"""Blocking queries: wait_for_change over store watches."""

from __future__ import annotations

import asyncio

from state_helpers import Log

from stack.state import kv
from stack.state.blocking import wait_for_change


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_returns_when_the_key_changes_past_min_index() -> None:
    log = Log()
    log.apply(kv.encode_set(log.registry, "a", b"1"))
    waiter = asyncio.create_task(wait_for_change(log.store, kv.KV_TABLE, "a", False, 1, 5.0))
    await _settle()
    log.apply(kv.encode_set(log.registry, "b", b"1"))  # another key: keeps waiting
    await _settle()
    assert not waiter.done()
    log.apply(kv.encode_set(log.registry, "a", b"2"))
    assert await asyncio.wait_for(waiter, 1.0) == 3
    assert log.store.watch_count == 0


async def test_returns_on_timeout_with_the_current_index() -> None:
    log = Log()
    log.apply(kv.encode_set(log.registry, "a", b"1"))
    log.apply(kv.encode_set(log.registry, "b", b"1"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    index = await wait_for_change(log.store, kv.KV_TABLE, "a", False, 1, 0.05)
    assert index == 1
    assert loop.time() - started >= 0.04
    assert log.store.watch_count == 0


async def test_returns_at_once_when_already_past() -> None:
    log = Log()
    log.apply(kv.encode_set(log.registry, "a", b"1"))
    log.apply(kv.encode_set(log.registry, "a", b"2"))
    assert (
        await asyncio.wait_for(wait_for_change(log.store, kv.KV_TABLE, "a", False, 1, 60.0), 0.5)
        == 2
    )
    assert (
        await asyncio.wait_for(wait_for_change(log.store, kv.KV_TABLE, "a", False, 0, 60.0), 0.5)
        == 2
    )


async def test_prefix_watch_wakes_on_a_child_key() -> None:
    log = Log()
    log.apply(kv.encode_set(log.registry, "svc/web", b"1"))
    _, index = kv.list_prefix(log.store, "svc/")
    waiter = asyncio.create_task(wait_for_change(log.store, kv.KV_TABLE, "svc/", True, index, 5.0))
    await _settle()
    log.apply(kv.encode_set(log.registry, "svcx", b"1"))  # not under "svc/"
    await _settle()
    assert not waiter.done()
    log.apply(kv.encode_set(log.registry, "svc/db/primary", b"1"))
    assert await asyncio.wait_for(waiter, 1.0) == 3


async def test_prefix_watch_wakes_on_a_delete() -> None:
    log = Log()
    log.apply(kv.encode_set(log.registry, "svc/web", b"1"))
    waiter = asyncio.create_task(wait_for_change(log.store, kv.KV_TABLE, "svc/", True, 1, 5.0))
    await _settle()
    log.apply(kv.encode_delete(log.registry, "svc/web"))
    assert await asyncio.wait_for(waiter, 1.0) == 2


async def test_restore_wakes_waiters() -> None:
    old = Log()
    old.apply(kv.encode_set(old.registry, "a", b"1"))
    snapshot = old.fsm.snapshot()
    log = Log()
    for _ in range(5):
        log.apply(kv.encode_set(log.registry, "a", b"x"))
    waiter = asyncio.create_task(wait_for_change(log.store, kv.KV_TABLE, "a", False, 5, 5.0))
    await _settle()
    log.fsm.restore(snapshot)  # an older state: the index went backwards
    assert await asyncio.wait_for(waiter, 1.0) == 1
