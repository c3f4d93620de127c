"""Blocking queries on the state store, for the asyncio side of the node.

The store knows nothing of asyncio: a `WatchHandle` runs plain callbacks on
each write. Here a callback sets an `asyncio.Event` that the waiting request
awaits. Apply and the waiters share one event loop thread, so a waiter never
sees half an apply.
"""

from __future__ import annotations

import asyncio

from stack.state.store import StateStore


async def wait_for_change(
    store: StateStore,
    table: str,
    key: str,
    prefix: bool,
    min_index: int,
    timeout: float,
) -> int:
    """Wait until the index of `key` (or of the prefix `key`) in `table` passes
    `min_index`, and return it. Returns the current index at once if it already
    has (or if `min_index` is 0), and after `timeout` seconds regardless, like a
    Consul blocking query (the caller adds jitter and caps the wait). Also
    returns early when a snapshot restore replaced the state, since indexes may
    have moved backwards."""
    current = store.query_index(table, key, prefix)
    if current > min_index or min_index <= 0 or timeout <= 0:
        return current
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    generation = store.generation
    changed = asyncio.Event()
    with store.watch(table, key, prefix) as handle:
        handle.add_callback(lambda _index: changed.set())
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                break
            changed.clear()
            current = store.query_index(table, key, prefix)
            if current > min_index or store.generation != generation:
                return current
    return store.query_index(table, key, prefix)
