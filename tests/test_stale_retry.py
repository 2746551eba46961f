"""A request that fails on pooled connections the server closed is sent again until it gets a
live one (at most three attempts).

:meth:`proxy.qwen.client.QwenClient._open` sends a request again when its pooled keep-alive
connection turns out closed. Before, it did so once, back through the pool, and could take
another connection the server had closed too (a server whose idle timeout fired for all of
them at once), so the client got 502 ``upstream_unavailable`` with a working upstream. A failed
connection is closed, never pooled again, so each attempt takes another one. Here a loopback
server answers the first request of each connection and closes any connection on its second
request (what an idle timeout firing at that moment looks like); two connections are pooled
first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from helpers import raw_site

from proxy.accounts import Account
from proxy.config import Settings
from proxy.errors import UpstreamUnavailableError
from proxy.qwen.client import QwenClient, upstream_connector


class OneShotServer:
    """Answers ``chats/new`` once per connection; closes a connection on its second request.
    ``hold``: the first answers wait until that many requests arrived (to open connections
    side by side)."""

    def __init__(self) -> None:
        self.connections = 0
        self.killed = 0
        self.hold = 1
        self._arrived = 0
        self._all_in = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        served = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                served += 1
                if served > 1:
                    self.killed += 1
                    return
                self._arrived += 1
                if self._arrived >= self.hold:
                    self._all_in.set()
                await self._all_in.wait()
                body = json.dumps({"success": True, "data": {"id": f"c{number}"}})
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode())
                )
                await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def site() -> AsyncIterator[tuple[OneShotServer, str]]:
    fake = OneShotServer()
    async with raw_site(fake.handle) as url:
        yield fake, url


ACCOUNT = Account("account-1", None)


@contextlib.asynccontextmanager
async def client_of(url: str) -> AsyncIterator[QwenClient]:
    """A :class:`QwenClient` for ``url`` on a pool of its own (the app's connector)."""
    async with aiohttp.ClientSession(
        connector=upstream_connector(limit=0), cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        yield QwenClient(session, Settings(upstream_url=url))


async def test_the_retries_after_dead_pooled_connections_reach_a_new_one(
    site: tuple[OneShotServer, str],
) -> None:
    fake, url = site
    async with client_of(url) as client:
        fake.hold = 2  # two chats/new side by side: two pooled connections
        chats = await asyncio.gather(client.new_chat(ACCOUNT, {}), client.new_chat(ACCOUNT, {}))
        assert sorted(chats) == ["c1", "c2"] and fake.connections == 2
        # both pooled connections now die on their next request: two attempts fail, each
        # closing its connection, and the third opens a new one
        assert await client.new_chat(ACCOUNT, {}) == "c3"
        assert (fake.connections, fake.killed) == (3, 2)
        # the new connection was pooled: it dies on the next request, which goes on a new one
        assert await client.new_chat(ACCOUNT, {}) == "c4"
        assert (fake.connections, fake.killed) == (4, 3)


async def test_three_dead_connections_in_a_row_are_an_upstream_failure(
    site: tuple[OneShotServer, str],
) -> None:
    """The attempts are bounded: with three dead pooled connections the request fails with
    ``upstream_unavailable`` (502), it does not go on."""
    fake, url = site
    async with client_of(url) as client:
        fake.hold = 3
        chats = await asyncio.gather(*(client.new_chat(ACCOUNT, {}) for _ in range(3)))
        assert sorted(chats) == ["c1", "c2", "c3"]
        with pytest.raises(UpstreamUnavailableError):
            await client.new_chat(ACCOUNT, {})
        assert (fake.connections, fake.killed) == (3, 3)
