"""The upstream connector's lean protocol (``proxy.qwen.client.upstream_connector``).

aiohttp's ``StreamReader`` asks its protocol to resume reading after every read; the lean
protocol passes that on only when reading is paused. These tests hold the two halves of that
bargain against the aiohttp installed: the saving is in place, and a body large enough to
pause reading (flow control) still arrives whole, every pause resumed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_proto import ResponseHandler

from proxy.qwen.client import _LeanResponseHandler, upstream_connector

BLOCK = bytes(range(256)) * 256  # 64 KiB
BLOCKS = 512  # 32 MiB: more than aiohttp's buffer and the kernel's socket buffers hold


@pytest.fixture
async def big_body_server() -> AsyncIterator[str]:
    async def body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        if request.query.get("gzip"):
            # compressed: the client decompresses in bounded steps, pausing in between, and
            # relies on the resume to go on with the compressed bytes it holds
            resp.enable_compression(web.ContentCoding.gzip)
        await resp.prepare(request)
        for _ in range(BLOCKS):
            await resp.write(BLOCK)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/big", body)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_the_connector_makes_its_connections_with_the_lean_protocol() -> None:
    connector = upstream_connector(limit=0)
    try:
        factory = connector._factory
        assert factory.func is _LeanResponseHandler  # the saving is live on this aiohttp
        assert issubclass(_LeanResponseHandler, ResponseHandler)
        assert factory.keywords.get("loop") is asyncio.get_running_loop()
    finally:
        await connector.close()


@pytest.mark.parametrize("query", ["", "?gzip=1"])
async def test_a_body_that_pauses_reading_arrives_whole_and_unpaused_reads_skip_the_resume(
    big_body_server: str, monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    resumed: list[bool] = []
    paused = asyncio.Event()
    real_resume = ResponseHandler.resume_reading
    real_pause = ResponseHandler.pause_reading

    def counting_resume(self: ResponseHandler, resume_parser: bool = True) -> None:
        resumed.append(self._reading_paused)
        real_resume(self, resume_parser)

    def noting_pause(self: ResponseHandler) -> None:
        paused.set()
        real_pause(self)

    monkeypatch.setattr(ResponseHandler, "resume_reading", counting_resume)
    monkeypatch.setattr(ResponseHandler, "pause_reading", noting_pause)
    digest = hashlib.sha256()
    reads = 0
    async with aiohttp.ClientSession(connector=upstream_connector(limit=0)) as session:
        async with asyncio.timeout(20):  # a pause never resumed would hang here
            async with session.get(f"{big_body_server}/big{query}") as resp:
                assert resp.headers.get("Content-Encoding") == ("gzip" if query else None)
                # Nothing is read until the reader's buffer is over its high-water mark and
                # reading is paused (flow control); then all of it, each pause resumed.
                await paused.wait()
                while chunk := await resp.content.readany():
                    reads += 1
                    digest.update(chunk)
    expected = hashlib.sha256(BLOCK * BLOCKS).hexdigest()
    assert digest.hexdigest() == expected
    assert resumed, "reading was never resumed"
    assert all(resumed), "the protocol was asked to resume while it was not paused"
    if not query:  # (compressed, nearly every read drains a paused, bounded decompression)
        assert len(resumed) < reads / 2  # most reads found reading unpaused and skipped it
