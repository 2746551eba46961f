"""Spare chats: the next chat is created ahead, so a request does not wait for ``chats/new``.

Every text turn on chat.qwen.ai needs a server-issued chat (``POST /api/v2/chats/new``,
docs/protocol.md §3) before its completion can start: one whole round trip to the site before
the first token. :class:`SpareChats` keeps two chats ready per account, model and chat type
(two, so that requests sent back to back each find one while the next is made). A request
takes one (no round trip); one that finds none ready while the next is being made waits for
that one (less than a round trip); the first request of a kind, or one that finds neither,
creates its chat inline as before. Spares are asked for once the request's first byte is out
(:meth:`SpareChats.want`, called by the relay through ``OpenChat.after_commit``), so making
them never delays that first byte; they are made one at a time. So a client sees the same
answers, one round trip sooner.

- Only the text chat types get spares (``t2t`` and ``search``): those are the ones a client
  waits on token by token.
- A spare is used only while it is younger than ``max_age_s`` seconds (at most half of
  ``conversation_ttl_s``, so a chat tracked for deletion is never swept while it waits); an
  older one is dropped and left to the chat cleanup (:mod:`proxy.cleanup`) like any idle chat.
- A failed creation is logged (account label and error code, never a token) and the kind gets
  no spare for ``retry_s`` seconds: the next request creates its chat inline and meets the
  error itself, where it is reported to the account pool.
- :meth:`SpareChats.drain` hands back the unused spares at shutdown, for deletion.

Pure bookkeeping: chat creation and background tasks are the caller's (``create``, ``spawn``),
so this module does no I/O of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from proxy.accounts import Account
from proxy.errors import UpstreamError
from proxy.qwen.request import ModelRoute

__all__ = ["SPARE_CHAT_TYPES", "SpareChats"]

#: Chat types that get spare chats: the streamed text turns.
SPARE_CHAT_TYPES = frozenset({"t2t", "search"})

log = structlog.get_logger("proxy.spares")

_Key = tuple[str, str, str]  # account label, model, chat type


@dataclass(slots=True, frozen=True)
class _Spare:
    account: Account
    chat_id: str
    made: float  # monotonic seconds


@dataclass(slots=True)
class _Fill:
    """A spare on its way; ``claimed`` when a request waits for it (it gets the chat id, or
    ``None`` if the creation failed)."""

    account: Account
    result: asyncio.Future[str | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    claimed: bool = False


class SpareChats:
    """Up to ``depth`` ready chats per (account label, model, chat type), made one at a time.

    ``create(account, route)`` makes one chat (``chats/new`` and its cleanup tracking) and
    returns its id, raising :class:`~proxy.errors.UpstreamError`; ``spawn(coro, name)`` runs a
    coroutine in the background. ``depth``: spares kept per kind (two, so that requests sent
    back to back each find one ready while the next is made); ``max_age_s``: seconds a spare
    stays usable; ``retry_s``: seconds without spares for a kind after a failed creation;
    ``clock``: monotonic seconds.
    """

    __slots__ = (
        "_clock",
        "_create",
        "_depth",
        "_failed",
        "_filling",
        "_max_age",
        "_ready",
        "_retry",
        "_spawn",
    )

    def __init__(
        self,
        create: Callable[[Account, ModelRoute], Awaitable[str]],
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
        *,
        max_age_s: float,
        depth: int = 2,
        retry_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._create = create
        self._spawn = spawn
        self._max_age = max_age_s
        self._depth = depth
        self._retry = retry_s
        self._clock = clock
        self._ready: dict[_Key, deque[_Spare]] = {}
        self._filling: dict[_Key, _Fill] = {}
        self._failed: dict[_Key, float] = {}  # key -> monotonic time until which no spare

    @staticmethod
    def wanted(route: ModelRoute) -> bool:
        """True when turns of ``route`` get spare chats (:data:`SPARE_CHAT_TYPES`)."""
        return route.chat_type in SPARE_CHAT_TYPES

    async def take(self, account: Account, route: ModelRoute) -> str | None:
        """A ready chat of this kind if a fresh one is there (the oldest; each is handed out
        once), else the one on its way if no other request waits for it; ``None`` when there
        is neither (or the one waited for failed): the caller creates its own. Never raises
        :class:`~proxy.errors.UpstreamError` (a failed spare is only logged)."""
        key = (account.label, route.model, route.chat_type)
        ready = self._ready.get(key)
        now = self._clock()
        while ready:
            spare = ready.popleft()
            if spare.account is account and now - spare.made < self._max_age:
                return spare.chat_id
        fill = self._filling.get(key)
        if fill is None or fill.claimed or fill.account is not account:
            return None
        fill.claimed = True
        try:
            return await asyncio.shield(fill.result)
        except asyncio.CancelledError:
            fill.claimed = False  # gone: the chat becomes a spare again when it comes
            raise

    def want(self, account: Account, route: ModelRoute) -> None:
        """Make sure ``depth`` spares of this kind are ready or on their way (unless a
        creation failed less than ``retry_s`` seconds ago). One is made at a time."""
        key = (account.label, route.model, route.chat_type)
        if key in self._filling or len(self._ready.get(key, ())) >= self._depth:
            return
        until = self._failed.get(key)
        if until is not None:
            if self._clock() < until:
                return
            del self._failed[key]
        fill = _Fill(account)
        self._filling[key] = fill
        self._spawn(self._fill(key, fill, route), "spare-chat")

    async def _fill(self, key: _Key, fill: _Fill, route: ModelRoute) -> None:
        chat_id: str | None = None
        try:
            chat_id = await self._create(fill.account, route)
        except UpstreamError as exc:
            self._failed[key] = self._clock() + self._retry
            log.info("spare_chat_failed", account=fill.account.label, error=exc.error_code())
        finally:
            del self._filling[key]
            if fill.claimed:
                fill.result.set_result(chat_id)
            elif chat_id is not None:
                self._ready.setdefault(key, deque()).append(
                    _Spare(fill.account, chat_id, self._clock())
                )
        if chat_id is not None and not fill.claimed:
            self.want(fill.account, route)  # the next one, up to the depth (a request that
            # waited for this one asks for more once its first byte is out)

    def drain(self) -> list[tuple[Account, str]]:
        """Every unused spare as ``(account, chat_id)``, forgotten here (at shutdown)."""
        out = [(s.account, s.chat_id) for ready in self._ready.values() for s in ready]
        self._ready.clear()
        return out
