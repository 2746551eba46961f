"""The chat service: model catalog cache, account choice and the v2 flow, per app.

One :class:`ChatService` lives in the app state (created in ``cleanup_ctx``). Handlers ask it to
:meth:`~ChatService.open_chat` and get back an :class:`OpenChat`: the upstream response positioned
at the first SSE byte, plus the timing the proxy spent waiting on chat.qwen.ai.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import structlog

from proxy.accounts import Account, AccountPool
from proxy.api_models import ChatCompletionRequest
from proxy.config import Settings
from proxy.errors import ClientRequestError, UpstreamError
from proxy.qwen.client import QwenClient
from proxy.qwen.models import Catalog, parse_models
from proxy.qwen.request import (
    MAX_PROMPT_CHARS,
    ModelRoute,
    chats_new_body,
    completion_body,
    flatten_messages,
)

__all__ = ["ChatService", "OpenChat"]

log = structlog.get_logger("proxy.service")


@dataclass(slots=True)
class OpenChat:
    """A completion stream that chat.qwen.ai accepted.

    ``upstream_wait_s`` is the time (seconds) spent waiting on chat.qwen.ai for the chat id and
    the stream's headers.
    """

    response: aiohttp.ClientResponse
    route: ModelRoute
    account: Account
    chat_id: str
    upstream_wait_s: float


class ChatService:
    """Holds the per-app upstream state: accounts, the cached catalog and the client."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self.settings = settings
        self.client = QwenClient(session, settings)
        self.pool = AccountPool(settings.tokens, cooldown_s=settings.account_cooldown_s)
        self._catalog: Catalog | None = None
        self._catalog_at = 0.0
        self._catalog_lock = asyncio.Lock()

    async def catalog(self) -> Catalog:
        """The model catalog, fetched from ``/api/models`` at most every ``models_ttl_s``."""
        now = time.monotonic()
        if self._catalog is not None and now - self._catalog_at < self.settings.models_ttl_s:
            return self._catalog
        async with self._catalog_lock:
            if self._catalog is not None and time.monotonic() - self._catalog_at < (
                self.settings.models_ttl_s
            ):
                return self._catalog
            account = self.pool.acquire()
            try:
                payload = await self.client.fetch_models(account)
            except UpstreamError as exc:
                self.pool.report(account, exc)
                if self._catalog is not None:
                    log.warning("models_refresh_failed", error=exc.message, account=account.label)
                    return self._catalog  # serve the stale list rather than fail
                raise
            self._catalog = Catalog(parse_models(payload))
            self._catalog_at = time.monotonic()
            log.debug("models_loaded", count=len(self._catalog.models))
            return self._catalog

    @asynccontextmanager
    async def open_chat(self, req: ChatCompletionRequest) -> AsyncIterator[OpenChat]:
        """Resolve the model, create the chat and open the stream (PROTOCOL.md §3, §4).

        Raises :class:`~proxy.errors.ClientRequestError` for bad input and
        :class:`~proxy.errors.UpstreamError` when chat.qwen.ai refuses; the account that drew a
        quota, captcha or token error is rested (:class:`AccountPool`).
        """
        prompt = flatten_messages(req.messages)
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ClientRequestError(
                f"the conversation is {len(prompt)} characters long once flattened; chat.qwen.ai "
                f"accepts at most {MAX_PROMPT_CHARS}",
                param="messages",
            )
        t0 = time.perf_counter()
        route = (await self.catalog()).route(req.model, enable_thinking=req.enable_thinking)
        account = self.pool.acquire()
        try:
            chat_id = await self.client.new_chat(
                account, chats_new_body(route, now_ms=int(time.time() * 1000))
            )
            body = completion_body(route, chat_id=chat_id, prompt=prompt, now_s=int(time.time()))
            async with self.client.completion(account, chat_id, body) as resp:
                wait = time.perf_counter() - t0
                log.debug(
                    "upstream_stream_open",
                    model=route.model,
                    chat_type=route.chat_type,
                    thinking=route.thinking,
                    account=account.label,
                    wait_ms=round(wait * 1000, 2),
                )
                yield OpenChat(resp, route, account, chat_id, wait)
        except UpstreamError as exc:
            self.pool.report(account, exc)
            raise
