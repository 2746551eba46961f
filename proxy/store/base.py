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

from collections.abc import Sequence
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

    async def acquire_account(
        self, labels: Sequence[str], limit: int, now: float
    ) -> tuple[str | None, float]:
        """In one atomic step (one round trip): among ``labels`` (in order of preference), take
        an answer slot on the least busy account that is not resting at ``now`` and has fewer
        than ``limit`` answers in flight (``limit`` <= 0: no limit).

        Returns ``(label, 0.0)``, or ``(None, until)`` when none qualifies: ``until`` is the end
        (epoch s) of the soonest rest when every account rests, ``0.0`` when some are only busy.
        The slot is given back with :meth:`release_inflight`.
        """
        ...

    async def admit_and_acquire(
        self,
        key_id: str,
        per_min: int,
        streams: int,
        labels: Sequence[str],
        limit: int,
        now: float,
    ) -> tuple[str | None, float, tuple[str, float] | None]:
        """:meth:`admit_key` and :meth:`acquire_account` in one atomic step (one round trip,
        the request path of a key with limits). Returns ``(label, soonest, refused)``:
        ``refused`` is ``(limit_name, retry_after_s)`` when the key is over a limit (nothing
        counted, no slot); ``label`` ``None`` when no account qualifies (``soonest`` as in
        :meth:`acquire_account`; the key's request is not counted either); else the request is
        counted, a stream slot taken if ``streams`` > 0 and an answer slot on ``label``.
        """
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

    async def admit_key(self, key_id: str, per_min: int, streams: int) -> tuple[str, float] | None:
        """Both per-key limits in one atomic step (one round trip): ``None`` when admitted (one
        request counted by :meth:`hit_rate` and, if ``streams`` > 0, one stream slot taken, to be
        given back with :meth:`release_stream`); else ``(limit_name, retry_after_s)`` with
        ``limit_name`` ``"requests_per_minute"`` or ``"streams"`` and nothing counted."""
        ...

    # -- chat cleanup bookkeeping ----------------------------------------------------------------

    async def track_chat(self, chat_id: str, account_label: str, idle_deadline: float) -> None:
        """Remember that the gateway created ``chat_id`` on ``account_label``; it may be
        deleted after ``idle_deadline`` (epoch s)."""
        ...

    async def touch_chat(self, chat_id: str, idle_deadline: float) -> None:
        """Move a tracked chat's deadline (no effect on an untracked chat)."""
        ...

    async def due_chats(
        self, now: float, limit: int, claim_until: float | None = None
    ) -> list[tuple[str, str]]:
        """Up to ``limit`` tracked chats whose deadline is ``<= now``, soonest first, as
        ``(chat_id, account_label)``. They stay tracked until :meth:`forget_chat`;
        ``claim_until`` (epoch s) moves their deadline there in the same step, so that other
        processes sharing the store do not get them too (one deletion per chat)."""
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
