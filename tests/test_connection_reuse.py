"""A finished answer's upstream connection goes back to the pool (``proxy.service._drain``).

chat.qwen.ai's last frame can arrive before the end of the chunked body; a response released
before its end has its connection closed, and the next request pays a new TCP and TLS
handshake. The turn's exit reads what is left first (bounded), but only for an answer that
finished: a client that left gets the stop call and the connection is dropped at once.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from helpers import stream_reader

from proxy.config import Settings
from proxy.service import DRAIN_LIMIT, ChatService, _drain


class _Response:
    """Records whether the body had been read to its end when it was released."""

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self.content = content
        self.released_at_eof: bool | None = None

    def release(self) -> None:
        self.released_at_eof = self.content.is_eof()


def _opened(account: Any, response: _Response, *, finished: bool) -> Any:
    """What ``ChatService._close_turn`` reads of an ``OpenChat``."""
    return SimpleNamespace(
        account=account,
        _translator=SimpleNamespace(done=finished, failure=None),
        finished=finished,
        chat_id="chat-1",
        response_id="r-1",
        read_watch=None,
        response=response,
        committed=lambda: None,
    )


async def _close(exc: BaseException | None, *, finished: bool) -> _Response:
    async with aiohttp.ClientSession() as session:
        service = ChatService(session, Settings(upstream_url="http://127.0.0.1:9"))
        account = await service.pool.acquire()
        content = stream_reader()
        content.feed_data(b'data: {"choices": []}\n\n')  # read by nobody yet: not at its end
        response = _Response(content)
        opened = _opened(account, response, finished=finished)
        asyncio.get_running_loop().call_soon(content.feed_eof)  # the chunked body's end
        await service._close_turn(opened, exc)
        await service.close()
        return response


async def test_a_finished_answer_is_read_to_its_end_before_release() -> None:
    response = await _close(None, finished=True)
    assert response.released_at_eof is True


@pytest.mark.parametrize(
    ("exc", "finished"),
    [(asyncio.CancelledError(), True), (None, False)],
    ids=["client_left", "not_finished"],
)
async def test_an_abandoned_answer_is_released_at_once(
    exc: BaseException | None, finished: bool
) -> None:
    response = await _close(exc, finished=finished)
    assert response.released_at_eof is False


async def test_the_drain_is_bounded() -> None:
    """A body that keeps coming after the last frame is not read forever."""
    content = stream_reader()
    content.feed_data(b"x" * (DRAIN_LIMIT + 10))
    await _drain(content)  # returns without EOF: the limit was reached
    assert not content.is_eof()
    done = stream_reader()
    done.feed_eof()
    await _drain(done)  # nothing to read
    assert done.is_eof()


async def test_the_account_is_free_before_the_body_ends() -> None:
    """The body's end is awaited in the background: the account slot is given back at once,
    even when the site is slow to end a finished answer's body."""
    async with aiohttp.ClientSession() as session:
        service = ChatService(session, Settings(upstream_url="http://127.0.0.1:9"))
        account = await service.pool.acquire()
        content = stream_reader()
        response = _Response(content)
        opened = _opened(account, response, finished=True)
        await service._close_turn(opened, None)
        [status] = await service.pool.statuses()
        assert status.inflight == 0  # the slot is free
        assert response.released_at_eof is None  # the body is still being read
        content.feed_eof()
        await service.settle()
        assert response.released_at_eof is True
