"""Chats do not pile up in the user's account (docs/landscape.md §3.12): idle chats deleted.

Every chat the gateway creates is titled ``chat_title_prefix`` and, with
``chat_cleanup = "delete"``, tracked in the state store with a deadline ``conversation_ttl_s``
after its last turn (:meth:`proxy.service.ChatService.new_chat`; a continuation moves it).
:class:`ChatJanitor` then:

- **sweeps** every :func:`sweep_interval` seconds (a quarter of ``conversation_ttl_s``, between
  0.5 and 30 s): the tracked chats past their deadline are deleted
  (``DELETE /api/v2/chats/<id>``, docs/protocol.md §2) with the account that created them, and
  forgotten;
- **reconciles** at start-up (:data:`START_DELAY_S` after it) and every
  ``chat_reconcile_interval_s``: each account's chat list (``GET /api/v2/chats/?page=N``) is read
  and the chats titled with the prefix that no gateway tracks any more are deleted: leftovers of
  an earlier run (the in-process store forgets on restart), a crash or lost bookkeeping. Chats
  still tracked (live conversations, also those of other instances sharing Redis) are left to
  the sweep; a chat younger than :data:`GRACE_S` is left alone too (it may be tracked a moment
  after it was listed). A chat with any other title is the user's own and is never touched.
  While the shared store (Redis) is unreachable there is no reconciliation: what the other
  instances track is unknown then, and their live chats would look like leftovers. With Redis,
  an untracked chat is a leftover only once idle for ``conversation_ttl_s`` (a Redis restarted
  empty forgets the live chats too).

Only accounts with a token have a chat list to keep clean: without ``tokens`` (guest or offline
use) nothing is tracked and no janitor runs. Deletions (and list pages) are spaced to at most
``chat_deletes_per_minute``. Logs name the account label and the chat id, never a token. A sweep
claims the chats it takes (their deadline moves :data:`RETRY_S` on, in the same store step), so
instances sharing Redis each delete other chats; a chat deleted meanwhile by a reconciliation
elsewhere is found gone, which counts as done.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from proxy.accounts import Account
from proxy.errors import UpstreamError
from proxy.service import ChatService

__all__ = [
    "GRACE_S",
    "MAX_PAGES",
    "SWEEP_BATCH",
    "ChatJanitor",
    "is_leftover",
    "sweep_interval",
]

GRACE_S = 5.0
"""An untracked gateway chat younger than this (seconds) is not a leftover yet."""
MAX_TRACKED = 100_000
"""At most this many tracked chats are read to tell leftovers from live chats."""
SWEEP_BATCH = 50
"""Tracked chats deleted at most per sweep."""
MAX_PAGES = 10
"""List pages read per account and reconciliation."""
FAR_FUTURE = 1e18  # epoch s: "every tracked chat" in a due_chats query (finite for Redis)
RETRY_S = 600.0
"""A chat whose deletion failed is tried again this many seconds later."""
START_DELAY_S = 1.0
"""The start-up reconciliation waits this long, so it does not compete with the first requests."""

log = structlog.get_logger("proxy.cleanup")


def _seconds(value: Any) -> float | None:
    """An epoch timestamp in seconds (the site may give seconds or milliseconds)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value / 1000.0 if value > 1e11 else float(value)


def sweep_interval(ttl_s: float) -> float:
    """Seconds between two sweeps: a quarter of the idle time, between 0.5 and 30."""
    return min(30.0, max(0.5, ttl_s / 4))


def is_leftover(
    chat: dict[str, Any], prefix: str, now: float, tracked: set[str], grace_s: float = GRACE_S
) -> bool:
    """True when a listed chat (``id``, ``title``, ``updated_at``/``created_at`` in seconds or
    milliseconds) is one the gateway made (title starting with ``prefix``), that no gateway
    tracks (``tracked``: chat ids), and not younger than ``grace_s`` at ``now`` (epoch s)."""
    title = chat.get("title")
    chat_id = chat.get("id")
    if not isinstance(title, str) or not title.startswith(prefix):
        return False
    if not isinstance(chat_id, str) or not chat_id or chat_id in tracked:
        return False
    last = _seconds(chat.get("updated_at"))
    if last is None:
        last = _seconds(chat.get("created_at"))
    return last is None or now - last >= grace_s


def _gone(exc: UpstreamError) -> bool:
    text = exc.message.lower()
    return "not exist" in text or "not_found" in text or "not found" in text


class ChatJanitor:
    """Deletes the gateway's idle chats (see the module docstring). ``clock``: epoch seconds."""

    def __init__(self, service: ChatService, *, clock: Callable[[], float] = time.time) -> None:
        self._service = service
        self._settings = service.settings
        self._clock = clock
        self._gap_s = 60.0 / self._settings.chat_deletes_per_minute
        self._next_call = 0.0
        self.deleted = 0

    async def run(self) -> None:
        """Reconcile (after :data:`START_DELAY_S`), then sweep every :func:`sweep_interval` and
        reconcile every ``chat_reconcile_interval_s`` seconds (``0``: never), until cancelled."""
        interval = self._settings.chat_reconcile_interval_s
        if interval > 0:
            await asyncio.sleep(START_DELAY_S)
            await self._guarded(self.reconcile)
        last_reconcile = time.monotonic()
        while True:
            await asyncio.sleep(sweep_interval(self._settings.conversation_ttl_s))
            await self._guarded(self.sweep)
            if interval > 0 and time.monotonic() - last_reconcile >= interval:
                last_reconcile = time.monotonic()
                await self._guarded(self.reconcile)

    async def _guarded(self, job: Callable[[], Any]) -> None:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:  # never let the janitor die; the next round tries again
            log.exception("chat_cleanup_failed")

    async def _pace(self) -> None:
        """Space upstream calls ``60 / chat_deletes_per_minute`` seconds apart."""
        now = time.monotonic()
        wait = self._next_call - now
        if wait > 0:
            await asyncio.sleep(wait)
        self._next_call = max(now, self._next_call) + self._gap_s

    def _account(self, label: str) -> Account | None:
        # None also for an expired token: it must not be sent upstream
        return self._service.pool.by_label(label)

    async def sweep(self, now: float | None = None) -> int:
        """Delete the tracked chats past their deadline at ``now`` (epoch s; default: the
        clock). Returns how many were deleted (or found gone)."""
        now = self._clock() if now is None else now
        store = self._service.store
        done = 0
        # claimed: another instance sharing the store does not delete them too
        due = await store.due_chats(now, SWEEP_BATCH, claim_until=now + RETRY_S)
        resting = await self._service.pool.resting_labels() if due else set()
        for chat_id, label in due:
            account = self._account(label)
            if account is None:  # the token is no longer configured: nothing can delete it
                await store.forget_chat(chat_id)
                continue
            if account.label in resting:  # resting: do not poke it now
                await store.touch_chat(chat_id, now + RETRY_S)
                continue
            if await self._delete(account, chat_id, reason="idle"):
                await store.forget_chat(chat_id)
                done += 1
            else:
                await store.touch_chat(chat_id, now + RETRY_S)
        return done

    async def reconcile(self, now: float | None = None) -> int:
        """Delete leftover gateway chats (:func:`is_leftover`) from every account's chat list.
        Returns how many were deleted."""
        now = self._clock() if now is None else now
        prefix = self._settings.chat_title_prefix
        store = self._service.store
        done = 0
        if store.health() == "degraded":
            self._skipped()
            return 0
        # Shared state: a chat no instance tracks is a leftover only once idle for the whole
        # conversation_ttl_s (a Redis restarted empty forgets what live instances track; their
        # chats in use were updated within it). Alone, the in-process store forgets on restart
        # and the earlier run's chats go at once.
        grace = GRACE_S
        if self._settings.redis_url is not None:
            grace = max(GRACE_S, self._settings.conversation_ttl_s)
        resting = await self._service.pool.resting_labels()
        for account in self._service.pool.check_expiry():  # expired tokens are never sent
            if account.label in resting:
                continue
            listed: list[dict[str, Any]] = []
            for page in range(1, MAX_PAGES + 1):
                await self._pace()
                try:
                    chats = await self._service.client.list_chats(account, page)
                except UpstreamError as exc:
                    log.info("chat_list_failed", account=account.label, error=exc.error_code())
                    break
                if not chats:
                    break
                listed += chats
            # read after the list: a chat listed and tracked meanwhile counts as tracked
            tracked = {c for c, _ in await store.due_chats(FAR_FUTURE, MAX_TRACKED)}
            if store.health() == "degraded":  # that read came from memory alone
                self._skipped()
                return done
            leftovers = [c["id"] for c in listed if is_leftover(c, prefix, now, tracked, grace)]
            for chat_id in leftovers:
                if await self._delete(account, chat_id, reason="leftover"):
                    await store.forget_chat(chat_id)
                    done += 1
        return done

    def _skipped(self) -> None:
        """No reconciliation while the shared store is unreachable: the chats other instances
        track are not known then, and would look like leftovers (their live chats)."""
        log.info(
            "chat_reconcile_skipped",
            reason="the shared state store is unreachable: other instances' chats are unknown",
        )

    async def _delete(self, account: Account, chat_id: str, *, reason: str) -> bool:
        await self._pace()
        try:
            await self._service.client.delete_chat(account, chat_id)
        except UpstreamError as exc:
            if _gone(exc):
                return True
            await self._service.pool.report(account, exc)
            log.info(
                "chat_delete_failed", account=account.label, chat_id=chat_id, error=exc.error_code()
            )
            return False
        self.deleted += 1
        log.info("chat_deleted", account=account.label, chat_id=chat_id, reason=reason)
        return True
