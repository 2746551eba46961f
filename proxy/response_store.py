"""An in-process, bounded store of Responses API conversations (``previous_response_id``).

Stand-in for the shared state store (``proxy/store``, issue 9) until it lands: the same two
methods, ``put_response(id, data, ttl_s)`` and ``get_response(id)``, so the route switches by
using the other app key. Values are opaque bytes (:func:`proxy.frontdoors.responses.dump_entry`).

Bounds: entries older than their ``ttl_s`` are gone; past ``max_bytes`` (the sum of the values)
or ``max_entries`` the oldest entries are dropped first. All state lives in the instance (one
per app); the clock is injectable for tests.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["MemoryResponseStore"]


class MemoryResponseStore:
    """Response id -> bytes, with a TTL per entry and size bounds (oldest dropped first)."""

    def __init__(
        self,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._max_entries = max_entries
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    async def put_response(self, response_id: str, data: bytes, ttl_s: float) -> None:
        """Keep ``data`` under ``response_id`` for ``ttl_s`` seconds (replacing any old value).
        A value larger than the whole budget is not kept."""
        self._drop(response_id)
        now = self._clock()
        while self._entries:  # expired entries at the old end go first
            oldest, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                break
            self._drop(oldest)
        if len(data) > self._max_bytes:
            return
        self._entries[response_id] = (now + ttl_s, data)
        self._bytes += len(data)
        while self._bytes > self._max_bytes or len(self._entries) > self._max_entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    async def get_response(self, response_id: str) -> bytes | None:
        """The bytes kept under ``response_id``, or ``None`` (unknown, expired or dropped)."""
        entry = self._entries.get(response_id)
        if entry is None:
            return None
        expires, data = entry
        if self._clock() >= expires:
            self._drop(response_id)
            return None
        return data

    def _drop(self, response_id: str) -> None:
        entry = self._entries.pop(response_id, None)
        if entry is not None:
            self._bytes -= len(entry[1])
