"""Change notification for blocking queries, without asyncio.

The store calls `WatchHub.notify(table, key, index)` for every row it writes or
deletes; each matching `WatchHandle` runs its callbacks with the write's index.
Callbacks run inside apply, so they must be cheap and must not raise or touch
the store: setting an `asyncio.Event` (see `blocking.py`) or recording a flag in
the simulator is the intended use.
"""

from __future__ import annotations

from collections.abc import Callable

WatchCallback = Callable[[int], None]


class WatchHandle:
    """Interest in one key or one key prefix of one table.

    `last_index` is the index of the latest change delivered (0 if none);
    `fired` counts deliveries (a delete of a whole tree delivers once per index).
    Close the handle when the query is done (or use it as a context manager).
    """

    __slots__ = ("_callbacks", "_closed", "_hub", "fired", "key", "last_index", "prefix", "table")

    def __init__(self, hub: WatchHub, table: str, key: str, prefix: bool) -> None:
        self._hub = hub
        self.table = table
        self.key = key
        self.prefix = prefix
        self.last_index = 0
        self.fired = 0
        self._callbacks: list[WatchCallback] = []
        self._closed = False

    def add_callback(self, callback: WatchCallback) -> None:
        self._callbacks.append(callback)

    def remove_callback(self, callback: WatchCallback) -> None:
        self._callbacks.remove(callback)

    @property
    def closed(self) -> bool:
        return self._closed

    def matches(self, key: str) -> bool:
        return key.startswith(self.key) if self.prefix else key == self.key

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._callbacks.clear()
            self._hub.remove(self)

    def __enter__(self) -> WatchHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fire(self, index: int, *, force: bool = False) -> None:
        if self._closed or (index == self.last_index and not force):
            return  # one delivery per index: a tree delete touches many keys at once
        self.last_index = index
        self.fired += 1
        for callback in tuple(self._callbacks):
            callback(index)


class WatchHub:
    """The watches of one store, indexed by table, then exact key or prefix."""

    __slots__ = ("_exact", "_prefix")

    def __init__(self) -> None:
        # dicts used as ordered sets so delivery order is registration order
        self._exact: dict[str, dict[str, dict[WatchHandle, None]]] = {}
        self._prefix: dict[str, dict[str, dict[WatchHandle, None]]] = {}

    def add(self, table: str, key: str, prefix: bool) -> WatchHandle:
        handle = WatchHandle(self, table, key, prefix)
        index = self._prefix if prefix else self._exact
        index.setdefault(table, {}).setdefault(key, {})[handle] = None
        return handle

    def remove(self, handle: WatchHandle) -> None:
        index = self._prefix if handle.prefix else self._exact
        by_key = index.get(handle.table)
        if by_key is None:
            return
        handles = by_key.get(handle.key)
        if handles is None:
            return
        handles.pop(handle, None)
        if not handles:
            del by_key[handle.key]
            if not by_key:
                del index[handle.table]

    def __len__(self) -> int:
        return sum(
            len(handles)
            for index in (self._exact, self._prefix)
            for by_key in index.values()
            for handles in by_key.values()
        )

    def notify(self, table: str, key: str, index: int) -> None:
        matched: list[WatchHandle] = []
        exact = self._exact.get(table)
        if exact is not None:
            handles = exact.get(key)
            if handles:
                matched.extend(handles)
        prefixes = self._prefix.get(table)
        if prefixes is not None:
            for watched, handles in prefixes.items():
                if key.startswith(watched):
                    matched.extend(handles)
        # collected first: a callback may close handles and shrink these dicts
        for handle in matched:
            handle._fire(index)

    def notify_all(self, index: int) -> None:
        """Wake every watch (after a restore replaced all state)."""
        matched = [
            handle
            for by_table in (self._exact, self._prefix)
            for by_key in by_table.values()
            for handles in by_key.values()
            for handle in handles
        ]
        for handle in matched:
            handle._fire(index, force=True)
