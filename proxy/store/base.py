"""The gateway's shared state: one small async interface, two backends.

Everything several requests (or several gateway processes) must agree on goes through a
:class:`StateStore`: account rests and answers in flight, the conversation map of native
multi-turn, stored responses (``previous_response_id``), per-key counters and the bookkeeping of
chats to delete. Values are small: ids, hashes, numbers and short reasons. Never message text
and never a token: accounts are named by their label (``account-2``).

Times are wall-clock seconds since the epoch (``time.time()``), so that several processes, and
Redis, agree on them. Durations are seconds (``ttl_s``).

Backends: :class:`proxy.store.memory.MemoryStore` (in the process, the default) and
:class:`proxy.store.redis.RedisStore` (``redis_url``), which falls back to an embedded
``MemoryStore`` while Redis is unreachable.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["Health", "StateStore"]

#: ``"ok"``, or ``"degraded"`` when a shared backend is unreachable and the process serves
#: from its own memory.
Health = Literal["ok", "degraded"]


@runtime_checkable
class StateStore(Protocol):
    """The state every gateway process shares. All methods are coroutines and never raise for
    backend trouble (a shared backend that fails serves from memory and reports ``degraded``).
    """

    # -- accounts (rests, answers in flight) -----------------------------------------------------

    async def rest_account(self, label: str, until: float, reason: str) -> None:
        """Rest account ``label`` until ``until`` (epoch s) for ``reason`` (short, no secrets).
        A later rest replaces an earlier one only if it ends later."""
        ...

    async def rests(self) -> dict[str, tuple[float, str]]:
        """The rests still running: ``{label: (until, reason)}``."""
        ...

    async def try_acquire_inflight(self, label: str, limit: int) -> bool:
        """Count one more answer in flight on ``label`` if fewer than ``limit`` are (``limit``
        <= 0: no limit). Atomic; returns whether the slot was taken."""
        ...

    async def release_inflight(self, label: str) -> None:
        """Give back a slot taken by :meth:`try_acquire_inflight` (never below zero)."""
        ...

    async def inflight(self) -> dict[str, int]:
        """Answers in flight per account label (labels with none may be absent)."""
        ...

    # -- conversations (native multi-turn) -------------------------------------------------------

    async def put_conversation(self, key: str, entry: dict[str, Any], ttl_s: float) -> None:
        """Store ``entry`` (JSON-able: ids and hashes) under ``key`` for ``ttl_s`` seconds."""
        ...

    async def get_conversation(self, key: str) -> dict[str, Any] | None:
        """The entry under ``key``, or ``None`` (never stored, expired or deleted)."""
        ...

    async def delete_conversation(self, key: str) -> None:
        """Forget ``key`` (no error if absent)."""
        ...

    # -- stored responses (Responses API ``previous_response_id``, Anthropic) ------------------

    async def put_response(self, response_id: str, data: bytes, ttl_s: float) -> None:
        """Store ``data`` (opaque bytes, small) under ``response_id`` for ``ttl_s`` seconds."""
        ...

    async def get_response(self, response_id: str) -> bytes | None:
        """The bytes stored under ``response_id``, or ``None``."""
        ...

    # -- per-key limits --------------------------------------------------------------------------

    async def hit_rate(self, key_id: str, limit_per_min: int) -> float | None:
        """Count one request of API key ``key_id`` (a hash, never the key) in a sliding
        60-second window. ``None``: allowed (and counted); else the seconds to wait before a
        request would be allowed (not counted)."""
        ...

    async def try_acquire_stream(self, key_id: str, limit: int) -> bool:
        """Count one more open stream for ``key_id`` if fewer than ``limit`` are open."""
        ...

    async def release_stream(self, key_id: str) -> None:
        """Give back a stream slot (never below zero)."""
        ...

    # -- chat cleanup bookkeeping ----------------------------------------------------------------

    async def track_chat(self, chat_id: str, account_label: str, idle_deadline: float) -> None:
        """Remember that the gateway created ``chat_id`` on ``account_label``; it may be
        deleted after ``idle_deadline`` (epoch s)."""
        ...

    async def touch_chat(self, chat_id: str, idle_deadline: float) -> None:
        """Move a tracked chat's deadline (no effect on an untracked chat)."""
        ...

    async def due_chats(self, now: float, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` tracked chats whose deadline is ``<= now``, soonest first, as
        ``(chat_id, account_label)``. They stay tracked until :meth:`forget_chat`."""
        ...

    async def forget_chat(self, chat_id: str) -> None:
        """Stop tracking ``chat_id`` (no error if absent)."""
        ...

    # -- lifecycle -------------------------------------------------------------------------------

    def health(self) -> Health:
        """``"ok"``, or ``"degraded"`` when the shared backend is unreachable."""
        ...

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...
