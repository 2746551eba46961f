"""Broken chunked framing in a later network read of an answer's body fails its reader at once.

aiohttp's protocol put its parser's error on itself only (where the next answer's head is read)
and closed the connection; the body being read was left waiting until the read timeout
(``read_timeout_s``: 180 s by default), then reported as a silence (504 ``upstream_timeout``)
although the site had sent a malformed answer. The lean protocol
(``proxy.qwen.client._LeanResponseHandler``) fails the body's reader too, at once: the stream
ends with a 502-kind error saying the answer was malformed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from helpers import raw_site
from test_upstream_unsolicited import ACCOUNT, _protocol, client_of

from proxy.errors import UpstreamTruncatedError
from proxy.qwen.client import network_failure
from proxy.qwen.translate import Failure, Translator
from proxy.service import drain

_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_FRAME = b'data: {"choices": [{"delta": {"content": "Hi", "phase": "answer"}}]}\n\n'
#: what follows the good chunks, by case
BROKEN = {
    "size_not_hex": b"zz\r\n" + _FRAME + b"\r\n",
    # a chunk shorter than its size says, then the next chunk: no CRLF where its data ends
    "short_chunk": b"%x\r\n%s\r\n5\r\nhello\r\n" % (len(_FRAME) + 4, _FRAME),
}


class Site:
    """Answers the completion with good chunks, then, once :attr:`read` is set (the client
    has read them), the broken bytes; then keeps the connection open."""

    def __init__(self, broken: bytes) -> None:
        self.broken = broken
        self.read = asyncio.Event()
        self.done = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            writer.write(_HEAD + b"%x\r\n%s\r\n" % (len(_FRAME), _FRAME))
            await writer.drain()
            await self.read.wait()
            writer.write(self.broken)
            await writer.drain()
            await self.done.wait()  # the site never closes: only the parse error can tell
        finally:
            writer.close()


@pytest.fixture
async def site(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Site, str]]:
    fake = Site(BROKEN[request.param])
    async with raw_site(fake.handle) as url:
        yield fake, url
        fake.done.set()


@pytest.mark.parametrize("site", list(BROKEN), indirect=True)
async def test_broken_framing_after_good_chunks_fails_the_stream_at_once(
    site: tuple[Site, str],
) -> None:
    fake, url = site
    async with client_of(url) as client:
        resp, watch = await client.open_stream(ACCOUNT, "chat-1", {"stream": True})
        try:
            assert await resp.content.readany() == _FRAME  # the good chunk, in its own read
            fake.read.set()
            async with asyncio.timeout(5):  # (a bound: the read timeout is 180 s)
                events = await drain(resp, Translator())
        finally:
            watch.cancel()
            resp.release()
    failure = events[-1]
    assert isinstance(failure, Failure)
    assert isinstance(failure.error, UpstreamTruncatedError)  # 502, not a 504 timeout
    assert failure.error.http_status() == 502
    assert "malformed HTTP answer" in failure.error.message


async def test_the_parse_error_reaches_the_body_being_read() -> None:
    proto, transport = _protocol()
    proto.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    _, payload = await proto.read()
    assert await payload.readany() == b"hello"
    proto.data_received(b"zz\r\n")
    assert transport.closed
    with pytest.raises(aiohttp.ClientPayloadError) as caught:
        async with asyncio.timeout(5):  # (a bound, not a synchronisation)
            await payload.readany()
    assert network_failure(caught.value) == "it sent a malformed HTTP answer"
