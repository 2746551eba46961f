"""The chat id from ``chats/new`` cannot change the URLs it goes in.

It was pasted as is into ``POST /api/v2/chat/completions?chat_id=<id>`` and the ``Referer``
``/c/<id>``: an id ``abc&chat_id=OTHER&model=evil`` added query parameters. Now
:meth:`proxy.qwen.client.QwenClient.new_chat` takes only URL-safe ids (letters, digits, ``-``,
``_``; at most 128 characters: the site's are UUIDs, docs/protocol.md §3) and refuses any other
as a protocol error that does not quote it, and every URL that carries a chat id percent-encodes
it (an id from elsewhere: the conversation store, the chat list).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from helpers import ServerFactory

from proxy.accounts import Account
from proxy.config import Settings
from proxy.errors import UpstreamProtocolError
from proxy.qwen.client import QwenClient

ACCOUNT = Account("account-1", None)


class Site:
    """``chats/new`` answers :attr:`chat_id`; the completion (streamed or not) and the stop call
    record their query and ``Referer``."""

    def __init__(self) -> None:
        self.chat_id: object = "c1"
        self.seen: list[tuple[list[tuple[str, str]], str]] = []

    def app(self) -> web.Application:
        async def new_chat(_: web.Request) -> web.Response:
            return web.json_response({"success": True, "data": {"id": self.chat_id}})

        async def completion(request: web.Request) -> web.StreamResponse:
            self.seen.append((list(request.query.items()), request.headers["Referer"]))
            if not (await request.json()).get("stream"):  # the stop call, a t2v turn
                return web.json_response({"success": True, "data": {}})
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b"data: {}\n\n")
            return resp

        app = web.Application()
        app.router.add_post("/api/v2/chats/new", new_chat)
        app.router.add_post("/api/v2/chat/completions", completion)
        app.router.add_post("/api/v2/chat/completions/stop", completion)
        return app


@pytest.fixture
async def site(aiohttp_server: ServerFactory) -> AsyncIterator[tuple[Site, QwenClient]]:
    fake = Site()
    server = await aiohttp_server(fake.app())
    async with aiohttp.ClientSession() as session:
        yield fake, QwenClient(session, Settings(upstream_url=str(server.make_url("")).rstrip("/")))


@pytest.mark.parametrize(
    "chat_id",
    [
        "abc&chat_id=OTHER&model=evil",
        "../../admin?x=1#",
        "a b",
        "a%26b",
        "é",
        "a\r\nX-Injected: 1",
        "x" * 129,
    ],
)
async def test_a_chat_id_that_is_not_url_safe_is_refused_unquoted(
    site: tuple[Site, QwenClient], chat_id: str
) -> None:
    fake, client = site
    fake.chat_id = chat_id
    with pytest.raises(UpstreamProtocolError) as caught:
        await client.new_chat(ACCOUNT, {})
    assert caught.value.http_status() == 502
    assert chat_id not in caught.value.message and "OTHER" not in caught.value.message


@pytest.mark.parametrize(
    "chat_id", ["5f3c1b1e-2c6a-4f1a-9c7e-0a1b2c3d4e5f", "chat-1", "c_1", "x" * 128]
)
async def test_a_url_safe_chat_id_is_taken_and_sent_as_is(
    site: tuple[Site, QwenClient], chat_id: str
) -> None:
    fake, client = site
    fake.chat_id = chat_id
    assert await client.new_chat(ACCOUNT, {}) == chat_id
    resp, watch = await client.open_stream(ACCOUNT, chat_id, {"stream": True})
    watch.cancel()
    resp.release()
    [(query, referer)] = fake.seen
    assert query == [("chat_id", chat_id)]
    assert referer.endswith(f"/c/{chat_id}")


async def test_every_url_percent_encodes_the_chat_id(site: tuple[Site, QwenClient]) -> None:
    """An id that did not come from ``chats/new`` just now (a stored one) is encoded anyway."""
    fake, client = site
    odd = "a&chat_id=b/c"
    resp, watch = await client.open_stream(ACCOUNT, odd, {"stream": True})
    watch.cancel()
    resp.release()
    await client.completion_json(ACCOUNT, odd, {"stream": False})
    await client.stop(ACCOUNT, odd, "r1")
    assert len(fake.seen) == 3
    for query, referer in fake.seen:
        assert query == [("chat_id", odd)]
        assert referer.endswith("/c/a%26chat_id%3Db%2Fc")
