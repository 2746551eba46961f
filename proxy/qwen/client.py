"""The upstream HTTP client: the only module of ``proxy.qwen`` that does I/O.

It speaks the v2 flow (PROTOCOL.md §3, §4) over the app's one ``aiohttp.ClientSession``:
``GET /api/models``, ``POST /api/v2/chats/new``, ``POST /api/v2/chat/completions?chat_id=…``.
Every answer that is not the expected JSON success or SSE stream is turned into an
:class:`~proxy.errors.UpstreamError` by :func:`proxy.qwen.envelope.classify_response`
(PROTOCOL.md §4.3: branch on the content type before parsing).

Requests carry UTF-8 JSON bytes with ``Content-Type: application/json; charset=utf-8`` and
ASCII-only headers (a non-ASCII ``timezone`` header broke other proxies, §11.9 (c)). The token
goes both in ``Authorization: Bearer`` and in the ``token`` cookie, as browsers and most proxies
send it (§1). No anti-bot token is generated or forged here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aiohttp
import orjson

from proxy.accounts import Account
from proxy.config import Settings
from proxy.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamReplayMissError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from proxy.qwen.envelope import classify_response, envelope_error
from proxy.qwen.request import encode_json

__all__ = ["QwenClient", "js_timezone_header"]

#: Bytes read from a non-stream error answer (an envelope is small; a WAF page a few KB).
ERROR_BODY_LIMIT = 256 * 1024

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def js_timezone_header(now: datetime | None = None) -> str:
    """The ``timezone`` header in JavaScript ``Date.toString()`` form, ASCII only.

    Example: ``Sun Oct 26 2025 10:50:29 GMT-0400`` (PROTOCOL.md §1). Built from numbers, never
    from the OS locale, so a Chinese-locale machine cannot put non-ASCII text in a header.
    """
    now = (now or datetime.now()).astimezone()
    offset = now.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    zone = f"GMT{sign}{minutes // 60:02d}{minutes % 60:02d}"
    return (
        f"{_DAYS[now.weekday()]} {_MONTHS[now.month - 1]} {now.day:02d} {now.year} "
        f"{now.hour:02d}:{now.minute:02d}:{now.second:02d} {zone}"
    )


class QwenClient:
    """Calls chat.qwen.ai for one app. ``session`` is the app's shared ``ClientSession``."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._base = settings.upstream_url
        self._settings = settings
        self._proxy = settings.upstream_proxy
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout_s, sock_read=settings.read_timeout_s
        )

    # -- headers -------------------------------------------------------------------------------

    def headers(self, account: Account, *, referer: str, stream: bool = False) -> dict[str, str]:
        """The header set for one upstream request (PROTOCOL.md §1). All values are ASCII."""
        s = self._settings
        h = {
            "Accept": "text/event-stream" if stream else "application/json, text/plain, */*",
            "Accept-Language": "en-US,en;q=0.9",
            "Content-Type": "application/json; charset=utf-8",
            "Origin": self._base,
            "Referer": f"{self._base}{referer}",
            "User-Agent": s.user_agent,
            "source": "web",
            "version": s.frontend_version,
            "timezone": js_timezone_header(),
            "x-request-id": str(uuid.uuid4()),
        }
        if stream:
            h["x-accel-buffering"] = "no"
        cookies: list[str] = []
        if account.token is not None:
            token = account.token.get_secret_value()
            h["Authorization"] = f"Bearer {token}"
            cookies.append(f"token={token}")
        if s.cookies is not None:
            cookies.append(s.cookies.get_secret_value())
        if cookies:
            h["Cookie"] = "; ".join(cookies)
        for name, value in h.items():
            if not value.isascii():
                raise UpstreamProtocolError(f"refusing to send a non-ASCII `{name}` header")
        return h

    # -- calls ---------------------------------------------------------------------------------

    async def fetch_models(self, account: Account) -> Any:
        """``GET /api/models``, or the 2026 ``GET /api/v2/models/`` when the first is gone.

        Returns the decoded JSON (PROTOCOL.md §2, §8). Raises :class:`UpstreamError`; when both
        paths fail, the error of the first.
        """
        try:
            return await self._json("GET", "/api/models", account, None, referer="/")
        except (UpstreamProtocolError, UpstreamReplayMissError) as first:
            try:
                return await self._json("GET", "/api/v2/models/", account, None, referer="/")
            except UpstreamError:
                raise first from None

    async def new_chat(self, account: Account, body: dict[str, Any]) -> str:
        """``POST /api/v2/chats/new``; returns the server-issued chat id (``data.id``, §3)."""
        payload = await self._json(
            "POST", "/api/v2/chats/new", account, body, referer="/c/new-chat"
        )
        data = payload.get("data") if isinstance(payload, dict) else None
        chat_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(chat_id, str) or not chat_id:
            raise UpstreamProtocolError("chat.qwen.ai created a chat but returned no chat id")
        return chat_id

    @asynccontextmanager
    async def completion(
        self, account: Account, chat_id: str, body: dict[str, Any]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open the completion stream; yields the response positioned at its first byte.

        Raises :class:`UpstreamError` (before yielding) when the answer is not an SSE stream.
        The connection is released when the block exits, also on error or client disconnect.
        """
        url = f"{self._base}/api/v2/chat/completions?chat_id={chat_id}"
        headers = self.headers(account, referer=f"/c/{chat_id}", stream=True)
        resp = await self._open("POST", url, encode_json(body), headers)
        try:
            ctype = resp.headers.get("Content-Type", "").lower()
            if resp.status != 200 or "text/event-stream" not in ctype:
                raise await self._failure(resp, ctype)
            yield resp
        finally:
            resp.release()

    # -- internals -----------------------------------------------------------------------------

    async def _json(
        self, method: str, path: str, account: Account, body: dict[str, Any] | None, *, referer: str
    ) -> Any:
        url = f"{self._base}{path}"
        headers = self.headers(account, referer=referer)
        data = encode_json(body) if body is not None else None
        resp = await self._open(method, url, data, headers)
        try:
            ctype = resp.headers.get("Content-Type", "").lower()
            if resp.status == 200:
                raw = await resp.read()
            else:
                raw = await resp.content.read(ERROR_BODY_LIMIT)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeoutError("chat.qwen.ai did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailableError(
                f"chat.qwen.ai broke the connection ({type(exc).__name__})"
            ) from exc
        finally:
            resp.release()
        if resp.status != 200 or "json" not in ctype:
            raise classify_response(resp.status, ctype, raw)
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise classify_response(resp.status, ctype, raw) from None
        err = envelope_error(payload)
        if err is not None:
            raise err
        return payload

    async def _open(
        self, method: str, url: str, data: bytes | None, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        """Send one request and return the response at its headers.

        A pooled keep-alive connection that the server closed while idle fails before any
        answer arrives (``ServerDisconnectedError`` / connection reset); that one case is sent
        again once, on a fresh connection. Raises :class:`UpstreamTimeoutError` or
        :class:`UpstreamUnavailableError`.
        """
        for attempt in (1, 2):
            try:
                return await self._session.request(
                    method,
                    url,
                    data=data,
                    headers=headers,
                    timeout=self._timeout,
                    proxy=self._proxy,
                )
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                raise UpstreamTimeoutError("chat.qwen.ai did not answer in time") from exc
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if attempt == 2 or isinstance(exc, aiohttp.ClientConnectorError):
                    raise UpstreamUnavailableError(
                        f"could not reach chat.qwen.ai ({type(exc).__name__})"
                    ) from exc
            except aiohttp.ClientError as exc:
                raise UpstreamUnavailableError(
                    f"could not reach chat.qwen.ai ({type(exc).__name__})"
                ) from exc
        raise AssertionError("unreachable")

    async def _failure(self, resp: aiohttp.ClientResponse, ctype: str) -> UpstreamError:
        try:
            raw = await asyncio.wait_for(resp.content.read(ERROR_BODY_LIMIT), timeout=30)
        except (TimeoutError, aiohttp.ClientError):
            raw = b""
        return classify_response(resp.status, ctype, raw)


def monotonic_ms() -> float:
    """Milliseconds on the monotonic clock (for Server-Timing)."""
    return time.perf_counter() * 1000.0
