"""Valid answers with a large head are read, not refused as malformed.

aiohttp's defaults refuse a response header field over 8190 bytes and more than 128 fields
(a 502 "malformed HTTP answer"), although such answers are valid HTTP/1.1: a WAF's 9 KB
``Set-Cookie``, a CDN adding many headers. Upstream requests raise the bounds
(``proxy.qwen.client.UPSTREAM_MAX_FIELD_SIZE``, ``UPSTREAM_MAX_HEADERS``); past them an answer
is still refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from helpers import ServerFactory

from proxy.accounts import Account
from proxy.config import Settings
from proxy.errors import UpstreamUnavailableError
from proxy.qwen.client import UPSTREAM_MAX_FIELD_SIZE, UPSTREAM_MAX_HEADERS, QwenClient

ACCOUNT = Account("account-1", None)

#: the head of ``chats/new``'s answer, by case
HEADS: dict[str, list[tuple[str, str]]] = {
    "waf_cookie_9k": [("Set-Cookie", "x5sec=" + "a" * 9 * 1024 + "; Path=/")],
    "long_field_at_bound": [("X-Long", "b" * (UPSTREAM_MAX_FIELD_SIZE - len("X-Long")))],
    "200_headers": [(f"X-H{i}", "v") for i in range(200)],
    "headers_at_bound": [(f"X-H{i}", "v") for i in range(UPSTREAM_MAX_HEADERS - 10)],
}
TOO_BIG: dict[str, list[tuple[str, str]]] = {
    "field_over_bound": [("X-Long", "c" * (UPSTREAM_MAX_FIELD_SIZE + 1))],
    "headers_over_bound": [(f"X-H{i}", "v") for i in range(UPSTREAM_MAX_HEADERS + 1)],
}


class Site:
    """``chats/new`` answers ``chat-1`` with the head of :attr:`case`."""

    def __init__(self) -> None:
        self.case = ""

    async def new_chat(self, _: web.Request) -> web.Response:
        resp = web.json_response({"success": True, "data": {"id": "chat-1"}})
        for name, value in {**HEADS, **TOO_BIG}[self.case]:
            resp.headers.add(name, value)
        return resp


@pytest.fixture
async def site(aiohttp_server: ServerFactory) -> AsyncIterator[tuple[Site, QwenClient]]:
    fake = Site()
    app = web.Application()
    app.router.add_post("/api/v2/chats/new", fake.new_chat)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield fake, QwenClient(session, Settings(upstream_url=str(server.make_url("")).rstrip("/")))


@pytest.mark.parametrize("case", list(HEADS))
async def test_a_valid_answer_with_a_large_head_is_read(
    site: tuple[Site, QwenClient], case: str
) -> None:
    fake, client = site
    fake.case = case
    assert await client.new_chat(ACCOUNT, {}) == "chat-1"


@pytest.mark.parametrize("case", list(TOO_BIG))
async def test_a_head_past_the_bounds_is_still_refused(
    site: tuple[Site, QwenClient], case: str
) -> None:
    fake, client = site
    fake.case = case
    with pytest.raises(UpstreamUnavailableError) as caught:
        await client.new_chat(ACCOUNT, {})
    assert "malformed HTTP answer" in caught.value.message
