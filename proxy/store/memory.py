"""The in-process :class:`~proxy.store.base.StateStore` (the default: no server needed).

Plain dicts owned by one instance (one per app, never a module global). Everything that can
grow is bounded: conversations and stored responses expire after their TTL and the oldest go
first beyond ``max_conversations`` entries / ``max_response_bytes`` bytes. The event loop is
single-threaded and no method awaits in the middle of an update, so each method is atomic.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

from proxy.store.base import Health

__all__ = ["RATE_WINDOW_S", "MemoryStore"]

#: The sliding window of :meth:`MemoryStore.hit_rate`, seconds.
RATE_WINDOW_S = 60.0


class MemoryStore:
    """:class:`~proxy.store.base.StateStore` in the process's memory.

    ``clock`` returns epoch seconds (injectable for tests). ``max_conversations`` caps the
    conversation map (oldest dropped first), ``max_response_bytes`` the stored responses' total
    size in bytes.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        max_conversations: int = 100_000,
        max_response_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._clock = clock
        self._max_conversations = max_conversations
        self._max_response_bytes = max_response_bytes
        self._rests: dict[str, tuple[float, str]] = {}
        self._inflight: dict[str, int] = {}
        self._conversations: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._responses: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._response_bytes = 0
        self._hits: dict[str, deque[float]] = {}
        self._streams: dict[str, int] = {}
        self._chats: dict[str, tuple[str, float]] = {}

    # -- accounts --------------------------------------------------------------------------------

    async def rest_account(self, label: str, until: float, reason: str) -> None:
        current = self._rests.get(label)
        if current is None or current[0] < until:
            self._rests[label] = (until, reason)

    async def rests(self) -> dict[str, tuple[float, str]]:
        now = self._clock()
        for label in [k for k, (until, _) in self._rests.items() if until <= now]:
            del self._rests[label]
        return dict(self._rests)

    async def try_acquire_inflight(self, label: str, limit: int) -> bool:
        return _acquire(self._inflight, label, limit)

    async def release_inflight(self, label: str) -> None:
        _release(self._inflight, label)

    async def inflight(self) -> dict[str, int]:
        return dict(self._inflight)

    async def acquire_account(
        self, labels: Sequence[str], limit: int, now: float
    ) -> tuple[str | None, float]:
        best: str | None = None
        best_n = 0
        soonest = 0.0
        resting = 0
        for label in labels:
            rest = self._rests.get(label)
            if rest is not None and rest[0] > now:
                resting += 1
                soonest = rest[0] if soonest == 0.0 else min(soonest, rest[0])
                continue
            n = self._inflight.get(label, 0)
            if (limit <= 0 or n < limit) and (best is None or n < best_n):
                best, best_n = label, n
        if best is not None:
            self._inflight[best] = best_n + 1
            return best, 0.0
        return None, soonest if resting == len(labels) else 0.0

    async def admit_and_acquire(
        self,
        key_id: str,
        per_min: int,
        streams: int,
        labels: Sequence[str],
        limit: int,
        now: float,
    ) -> tuple[str | None, float, tuple[str, float] | None]:
        if streams > 0 and self._streams.get(key_id, 0) >= streams:
            return None, 0.0, ("streams", 1.0)
        hits = self._hits.setdefault(key_id, deque())
        while hits and hits[0] <= now - RATE_WINDOW_S:
            hits.popleft()
        if per_min > 0 and len(hits) >= per_min:
            wait = max(0.001, hits[len(hits) - per_min] + RATE_WINDOW_S - now)
            return None, 0.0, ("requests_per_minute", wait)
        label, soonest = await self.acquire_account(labels, limit, now)
        if label is None:
            return None, soonest, None
        hits.append(now)
        if streams > 0:
            self._streams[key_id] = self._streams.get(key_id, 0) + 1
        return label, 0.0, None

    # -- conversations ---------------------------------------------------------------------------

    async def put_conversation(self, key: str, entry: dict[str, Any], ttl_s: float) -> None:
        now = self._clock()
        self._conversations[key] = (now + ttl_s, dict(entry))
        self._conversations.move_to_end(key)
        _expire_front(self._conversations, now)
        while len(self._conversations) > self._max_conversations:
            self._conversations.popitem(last=False)

    async def get_conversation(self, key: str) -> dict[str, Any] | None:
        item = self._conversations.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            del self._conversations[key]
            return None
        return dict(item[1])

    async def delete_conversation(self, key: str) -> None:
        self._conversations.pop(key, None)

    # -- responses -------------------------------------------------------------------------------

    async def put_response(self, response_id: str, data: bytes, ttl_s: float) -> None:
        now = self._clock()
        old = self._responses.pop(response_id, None)
        if old is not None:
            self._response_bytes -= len(old[1])
        self._responses[response_id] = (now + ttl_s, bytes(data))
        self._response_bytes += len(data)
        while self._responses:
            first_id, (deadline, first) = next(iter(self._responses.items()))
            if deadline > now and self._response_bytes <= self._max_response_bytes:
                break
            del self._responses[first_id]
            self._response_bytes -= len(first)

    async def get_response(self, response_id: str) -> bytes | None:
        item = self._responses.get(response_id)
        if item is None:
            return None
        if item[0] <= self._clock():
            del self._responses[response_id]
            self._response_bytes -= len(item[1])
            return None
        return item[1]

    # -- per-key limits --------------------------------------------------------------------------

    async def hit_rate(self, key_id: str, limit_per_min: int) -> float | None:
        now = self._clock()
        hits = self._hits.setdefault(key_id, deque())
        while hits and hits[0] <= now - RATE_WINDOW_S:
            hits.popleft()
        if limit_per_min > 0 and len(hits) >= limit_per_min:
            return max(0.001, hits[len(hits) - limit_per_min] + RATE_WINDOW_S - now)
        hits.append(now)
        return None

    async def try_acquire_stream(self, key_id: str, limit: int) -> bool:
        return _acquire(self._streams, key_id, limit)

    async def release_stream(self, key_id: str) -> None:
        _release(self._streams, key_id)

    async def admit_key(self, key_id: str, per_min: int, streams: int) -> tuple[str, float] | None:
        if streams > 0 and self._streams.get(key_id, 0) >= streams:
            return ("streams", 1.0)
        wait = await self.hit_rate(key_id, per_min)
        if wait is not None:
            return ("requests_per_minute", wait)
        if streams > 0:
            _acquire(self._streams, key_id, streams)
        return None

    # -- chat cleanup ----------------------------------------------------------------------------

    async def track_chat(self, chat_id: str, account_label: str, idle_deadline: float) -> None:
        self._chats[chat_id] = (account_label, idle_deadline)

    async def touch_chat(self, chat_id: str, idle_deadline: float) -> None:
        item = self._chats.get(chat_id)
        if item is not None:
            self._chats[chat_id] = (item[0], idle_deadline)

    async def due_chats(
        self, now: float, limit: int, claim_until: float | None = None
    ) -> list[tuple[str, str]]:
        due = sorted(
            ((deadline, chat_id, label) for chat_id, (label, deadline) in self._chats.items()),
        )
        out = [(chat_id, label) for deadline, chat_id, label in due if deadline <= now][
            : max(0, limit)
        ]
        if claim_until is not None:
            for chat_id, label in out:
                self._chats[chat_id] = (label, claim_until)
        return out

    async def forget_chat(self, chat_id: str) -> None:
        self._chats.pop(chat_id, None)

    # -- lifecycle -------------------------------------------------------------------------------

    def health(self) -> Health:
        return "ok"

    async def close(self) -> None:
        return None


def _acquire(counts: dict[str, int], name: str, limit: int) -> bool:
    n = counts.get(name, 0)
    if limit > 0 and n >= limit:
        return False
    counts[name] = n + 1
    return True


def _release(counts: dict[str, int], name: str) -> None:
    n = counts.get(name, 0)
    if n <= 1:
        counts.pop(name, None)
    else:
        counts[name] = n - 1


def _expire_front(items: OrderedDict[str, tuple[float, Any]], now: float) -> None:
    """Drop expired entries from the front (the least recently written) until a live one."""
    while items:
        first = next(iter(items.values()))
        if first[0] > now:
            return
        items.popitem(last=False)
