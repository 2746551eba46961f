"""Bytes that arrive on a kept-alive upstream connection while no request waits for an answer
close it; they are never read as the next request's answer.

HTTP/1.1 matches answers to requests by their order only. aiohttp left a pooled connection's
parser in place between requests: an unsolicited answer written after a complete one (a broken
site or middlebox) was parsed and queued, and the next request on the connection (any
account's: the pool is shared) read it as its own: a foreign chat id from ``chats/new``,
another request's stream, and every later answer on that connection one behind. The lean
protocol (``proxy.qwen.client._LeanResponseHandler``) closes such a connection as soon as the
bytes arrive, so the connector hands out another one.

The integration test runs a raw asyncio fake of the site: after a complete streamed answer it
writes whatever the case asks for on the same connection, once the client has put the
connection back in the pool; the unit tests feed the protocol directly, the one way to put the
end of an answer and what follows it in one network read for sure.
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
from proxy.qwen.client import QwenClient, _LeanResponseHandler, upstream_connector

ACCOUNT = Account("account-1", None)

_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def _json_answer(obj: object) -> bytes:
    body = json.dumps(obj).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body


_HIJACK = _json_answer({"success": True, "data": {"id": "HIJACKED"}})
#: what the site writes after the first (complete) answer, by case
UNSOLICITED = {
    # a whole answer pair: a chats/new JSON and a stream
    "whole_answers": _HIJACK + _SSE_HEAD + _chunked(b'data: {"injected": true}\n\n'),
    # the head of an answer whose body is never finished
    "partial_answer": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 999"
    b"\r\n\r\n{",
    # an answer's status line alone
    "status_line": b"HTTP/1.1 200 OK\r\n",
    # a doubled last chunk, a late keep-alive, junk (aiohttp's parser fails on these itself)
    "last_chunk": b"0\r\n\r\n",
    "late_frame": b"data: {}\n\n",
    "junk": b"xyz\r\n",
}


class Site:
    """Answers ``chats/new`` with ``chat-<n>`` (n: the request's number at the site) and the
    completion with a short stream; after the completion's answer, once :attr:`pooled` is
    set, writes :attr:`unsolicited` on the same connection."""

    def __init__(self, unsolicited: bytes) -> None:
        self.unsolicited = unsolicited
        self.requests: list[str] = []
        self.connections = 0
        self.pooled = asyncio.Event()  # the client put the connection back in the pool
        self.written = asyncio.Event()  # the unsolicited bytes are written
        self.dirty_closed = asyncio.Event()  # the client closed that connection

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        dirty = False
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    if dirty:
                        self.dirty_closed.set()
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                path = head.split(b" ")[1].decode()
                self.requests.append(path)
                if path.startswith("/api/v2/chats/new"):
                    chat_id = f"chat-{len(self.requests)}"
                    writer.write(_json_answer({"success": True, "data": {"id": chat_id}}))
                    await writer.drain()
                    continue
                frame = b'data: {"choices": [{"delta": {"content": "ok"}}]}\n\n'
                writer.write(_SSE_HEAD + _chunked(frame))
                await writer.drain()
                await self.pooled.wait()
                writer.write(self.unsolicited)
                await writer.drain()
                dirty = True
                self.written.set()
        finally:
            writer.close()


@pytest.fixture
async def site(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Site, str]]:
    fake = Site(UNSOLICITED[request.param])
    async with raw_site(fake.handle) as url:
        yield fake, url


@contextlib.asynccontextmanager
async def client_of(url: str) -> AsyncIterator[QwenClient]:
    """A :class:`QwenClient` for ``url`` on a pool of its own (the app's connector)."""
    async with aiohttp.ClientSession(
        connector=upstream_connector(limit=0), cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        yield QwenClient(session, Settings(upstream_url=url))


@pytest.mark.parametrize("site", list(UNSOLICITED), indirect=True)
async def test_a_connection_that_receives_unasked_bytes_is_closed_and_never_reused(
    site: tuple[Site, str],
) -> None:
    fake, url = site
    async with client_of(url) as client:
        resp, watch = await client.open_stream(ACCOUNT, "chat-0", {"stream": True})
        try:
            assert b"ok" in await resp.content.read()  # the whole answer, to its end
        finally:
            watch.cancel()
            resp.release()  # back in the pool
        fake.pooled.set()
        await fake.written.wait()
        async with asyncio.timeout(5):  # (a bound, not a synchronisation)
            await fake.dirty_closed.wait()  # closed by the client as the bytes arrived
        # each later request gets its own answer, on another connection
        assert await client.new_chat(ACCOUNT, {}) == "chat-2"
        assert await client.new_chat(ACCOUNT, {}) == "chat-3"
        ids = await asyncio.gather(*(client.new_chat(ACCOUNT, {}) for _ in range(3)))
        assert sorted(ids) == ["chat-4", "chat-5", "chat-6"]
    # each request reached the site once: none lost, none sent twice
    assert len(fake.requests) == 6
    assert fake.requests[0].startswith("/api/v2/chat/completions")
    assert fake.connections >= 2


# -- the protocol alone --------------------------------------------------------------------------


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


def _protocol() -> tuple[_LeanResponseHandler, _Transport]:
    proto = _LeanResponseHandler(asyncio.get_running_loop())
    transport = _Transport()
    proto.connection_made(transport)
    proto.set_response_params()  # taken for a request
    return proto, transport


async def _answer(proto: _LeanResponseHandler) -> bytes:
    message, payload = await proto.read()
    body = await payload.read()
    assert message.code == 200
    return body


async def test_bytes_after_an_answer_in_the_same_network_read_close_the_connection() -> None:
    proto, transport = _protocol()
    proto.data_received(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + UNSOLICITED["whole_answers"]
    )
    assert await _answer(proto) == b"ok"  # the answer itself is read as usual
    assert transport.closed
    assert proto.should_close
    assert not proto.is_connected()  # the connector will not hand it out


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ],
    ids=["length", "chunked"],
)
async def test_a_byte_after_the_answer_closes_the_connection(head: bytes) -> None:
    proto, transport = _protocol()
    proto.data_received(head)
    assert await _answer(proto) == b"ok"
    assert not transport.closed  # a complete answer leaves the connection reusable
    proto.data_received(b"\r\n")
    assert transport.closed


async def test_informational_answers_are_not_the_answer() -> None:
    """A 1xx comes before the answer: what follows it is the answer, not unasked bytes."""
    proto, transport = _protocol()
    proto.data_received(b"HTTP/1.1 100 Continue\r\n\r\n")
    proto.data_received(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
    proto.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
    proto.data_received(b"ok")
    assert not transport.closed
    message, payload = await proto.read()
    while 100 <= message.code <= 199:  # (ClientResponse.start skips them so)
        message, payload = await proto.read()
    assert await payload.read() == b"ok"
    proto.data_received(b"x")
    assert transport.closed


async def test_an_answer_without_a_body_ends_at_its_head() -> None:
    proto, transport = _protocol()
    proto.data_received(b"HTTP/1.1 204 No Content\r\n\r\n")
    message, _ = await proto.read()
    assert message.code == 204 and not transport.closed
    proto.data_received(b"HTTP/1.1 200 OK\r\n")
    assert transport.closed


async def test_the_next_request_reads_its_answer_as_usual() -> None:
    """Taken for the next request, the connection parses answers again."""
    proto, transport = _protocol()
    proto.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert await _answer(proto) == b"ok"
    for _ in range(3):
        proto.set_response_params()
        proto.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
        proto.data_received(b"\r\nok")
        assert await _answer(proto) == b"ok"
    assert not transport.closed
