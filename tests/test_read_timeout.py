"""The upstream read timeout (``read_timeout_s``: the longest silence allowed between upstream
bytes) on the completion stream, watched by :class:`proxy.qwen.client.ReadWatch` (on the ticks
of the app's one sweeper instead of aiohttp's per-read timer): a silence after the first text
ends the stream with an error event and no ``[DONE]``; a silence before the answer's headers is
a 504; bytes that keep coming keep the stream alive however long it lasts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from helpers import CASSETTES_DIR, StubBody, StubChat, stream_reader
from test_hangup import PROMPT, CliServer, silent_cassette, t2t_request_body
from test_hangup_opening import slow_site

from proxy.app import make_app
from proxy.config import Settings
from proxy.errors import UpstreamError, UpstreamTimeoutError, UpstreamTruncatedError
from proxy.qwen.client import ReadWatch
from proxy.qwen.translate import Failure, Translator
from proxy.relay import _Pump
from proxy.service import _peek, drain
from proxy.sweep import Sweeper, sweep_interval
from recorder.cassette import Cassette, Interaction, load_all
from recorder.replay import make_replay_app
from recorder.synthetic import chats_new_interaction, synthetic_cassette

TIMEOUT_S = 0.4
LIMIT = aiohttp.ClientTimeout(total=10)  # a broken watch fails the test instead of hanging it


def _body(prompt: str, *, stream: bool) -> dict[str, Any]:
    return {
        "model": "qwen3-max",
        "stream": stream,
        "messages": [{"role": "user", "content": prompt}],
    }


def _sse(obj: Any) -> bytes:
    return ("data: " + json.dumps(obj) + "\n\n").encode()


def _text(t: str) -> bytes:
    return _sse({"choices": [{"delta": {"content": t, "phase": "answer", "status": "typing"}}]})


def paced_cassette(prompt: str, gap_s: float, words: int) -> Cassette:
    """A t2t answer whose words arrive ``gap_s`` seconds apart (longer in all than the
    timeout, each gap shorter)."""
    created = _sse({"response.created": {"chat_id": "c", "response_id": "resp-paced"}})
    done = _sse({"choices": [{"delta": {"content": "", "phase": "answer", "status": "finished"}}]})
    pieces = [(0.0, created + _text("w0"))]
    pieces += [(gap_s * i, _text(f" w{i}")) for i in range(1, words)]
    pieces.append((gap_s * words, done))
    completion = Interaction.streamed(
        method="POST",
        uri="https://chat.qwen.ai/api/v2/chat/completions?chat_id=c",
        request_headers={},
        request_body=t2t_request_body(prompt),
        pieces=pieces,
    )
    return synthetic_cassette(
        "paced",
        "test: an answer whose words arrive at a steady pace",
        ["4.1", "5.2"],
        [chats_new_interaction("paced", "qwen3-max", "t2t", 1795338000), completion],
    )


def mute_cassette(prompt: str) -> Cassette:
    """A t2t answer that says ``response.created`` at once, then nothing for 30 s."""
    created = _sse({"response.created": {"chat_id": "c", "response_id": "resp-mute"}})
    done = _sse({"choices": [{"delta": {"content": "", "phase": "answer", "status": "finished"}}]})
    completion = Interaction.streamed(
        method="POST",
        uri="https://chat.qwen.ai/api/v2/chat/completions?chat_id=c",
        request_headers={},
        request_body=t2t_request_body(prompt),
        pieces=[(0.0, created), (30.0, _text("late") + done)],
    )
    return synthetic_cassette(
        "mute",
        "test: an answer that goes silent after its created frame",
        ["4.1", "5.2"],
        [chats_new_interaction("mute", "qwen3-max", "t2t", 1795338000), completion],
    )


@pytest.fixture
async def proxy_for(aiohttp_server: Any) -> AsyncIterator[Any]:
    started: list[CliServer] = []

    async def start(*cassettes: Any) -> CliServer:
        models = load_all([CASSETTES_DIR / "models_list.json"])
        replay = await aiohttp_server(make_replay_app([*models, *cassettes], speed=1.0))
        url = str(replay.make_url("")).rstrip("/")
        proxy = CliServer(make_app(Settings(upstream_url=url, read_timeout_s=TIMEOUT_S)))
        await proxy.start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.runner.cleanup()


async def test_silence_after_the_first_text_ends_the_stream_with_an_error(proxy_for: Any) -> None:
    proxy = await proxy_for(silent_cassette(silence_s=30.0))
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(timeout=LIMIT) as s:
        resp = await s.post(proxy.make_url("/v1/chat/completions"), json=_body(PROMPT, stream=True))
        assert resp.status == 200
        raw = (await resp.read()).decode()
    took = time.perf_counter() - t0
    assert TIMEOUT_S <= took < TIMEOUT_S * 1.25 + 1.0
    assert '"content":"Once"' in raw
    assert "[DONE]" not in raw
    last = json.loads(raw.strip().split("\n\n")[-1].removeprefix("data: "))
    assert last["error"]["code"] == "upstream_timeout"
    assert last["error"]["message"].endswith(
        "went silent after 4 characters of answer: no data within the read timeout (0.4 s)"
    )


async def test_silence_in_a_non_stream_answer_is_an_error(proxy_for: Any) -> None:
    proxy = await proxy_for(silent_cassette(silence_s=30.0))
    async with aiohttp.ClientSession(timeout=LIMIT) as s:
        resp = await s.post(
            proxy.make_url("/v1/chat/completions"), json=_body(PROMPT, stream=False)
        )
        body = await resp.json()
    assert resp.status >= 500
    assert "read timeout" in body["error"]["message"]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
async def test_silence_after_the_headers_before_any_text_is_a_504(
    proxy_for: Any, stream: bool
) -> None:
    """The site sends its headers and ``response.created``, then nothing: nothing reached the
    client, so it gets a 504 ``upstream_timeout``, as when the headers themselves are late
    (README, "Streams"), not a 502 about a broken connection."""
    proxy = await proxy_for(mute_cassette("say nothing"))
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(timeout=LIMIT) as s:
        resp = await s.post(
            proxy.make_url("/v1/chat/completions"), json=_body("say nothing", stream=stream)
        )
        body = await resp.json()
    took = time.perf_counter() - t0
    assert resp.status == 504
    assert body["error"]["code"] == "upstream_timeout"
    assert body["error"]["message"].endswith(
        "went silent before any answer text: no data within the read timeout (0.4 s)"
    )
    assert TIMEOUT_S <= took < TIMEOUT_S * 1.25 + 1.0


async def test_words_that_keep_coming_keep_the_stream_alive(proxy_for: Any) -> None:
    words = 6  # 6 × 0.15 s = 0.9 s in all, more than twice the timeout
    proxy = await proxy_for(paced_cassette("pace me", TIMEOUT_S * 0.375, words))
    async with aiohttp.ClientSession(timeout=LIMIT) as s:
        resp = await s.post(
            proxy.make_url("/v1/chat/completions"), json=_body("pace me", stream=True)
        )
        raw = (await resp.read()).decode()
    assert raw.endswith("data: [DONE]\n\n"), raw[-300:]
    assert all(f"w{i}" in raw for i in range(words))


async def test_silence_before_the_answer_headers_is_a_504(aiohttp_server: Any) -> None:
    site, _, _ = slow_site()  # never answers the completion while the test runs
    upstream = await aiohttp_server(site)
    proxy = CliServer(
        make_app(
            Settings(upstream_url=str(upstream.make_url("")).rstrip("/"), read_timeout_s=TIMEOUT_S)
        )
    )
    await proxy.start()
    try:
        t0 = time.perf_counter()
        async with aiohttp.ClientSession(timeout=LIMIT) as s:
            resp = await s.post(
                proxy.make_url("/v1/chat/completions"), json=_body("hi", stream=True)
            )
            body = await resp.json()
        took = time.perf_counter() - t0
    finally:
        await proxy.runner.cleanup()
    assert resp.status == 504
    assert body["error"]["code"] == "upstream_timeout"
    assert TIMEOUT_S <= took < TIMEOUT_S + 1.0


async def test_the_watch_counts_silence_only_while_its_reader_waits() -> None:
    """Busy (``waiting`` off: the relay writing to a slow client, its reading paused by
    backpressure) is not the site's silence; waiting without a byte is."""
    content = stream_reader()
    sweeper = Sweeper(sweep_interval(0.2))
    watch = ReadWatch(content, 0.2, sweeper)
    # the sweeper's ticks are called by hand with the times they would have (nothing here
    # awaits, so its own timer never runs): the outcome does not depend on the machine's speed
    t = asyncio.get_running_loop().time()
    try:
        assert len(sweeper) == 1
        watch.waiting = False
        assert watch.check(t + 0.5)  # busy for longer than the timeout
        assert content.exception() is None
        watch.waiting = True
        content.feed_data(b"data: x\n\n")  # bytes keep it quiet...
        assert watch.check(t + 0.65)
        assert watch.check(t + 0.84)  # (0.19 s of silence since those bytes)
        assert content.exception() is None
        assert not watch.check(t + 0.86)  # ...and then a silence while waiting ends it
        failed = content.exception()
        assert isinstance(failed, aiohttp.ServerTimeoutError)
        assert not watch.check(t + 0.9)  # a failed body is not watched (nor failed) again
        assert content.exception() is failed
    finally:
        watch.cancel()
    assert len(sweeper) == 0
    sweeper.close()


async def test_the_relay_waits_only_while_it_reads() -> None:
    """The pump marks its watch waiting during each read of the body and busy once a chunk is
    in hand (so a relay blocked writing to its client is never taken for a silent site)."""
    seen: list[bool] = []
    watch = SimpleNamespace(waiting=None)

    class Body(StubBody):
        async def readany(self) -> bytes:
            seen.append(watch.waiting)
            return await super().readany()

    chat = StubChat([], read_watch=watch)
    chat.response.content = Body([_text("one"), _text(" two")])
    pump = _Pump(chat, Translator())  # type: ignore[arg-type]
    batch = await pump.next_batch()
    assert batch and watch.waiting is False
    while batch is not None:
        batch = await pump.next_batch()
    assert seen == [True, True, True]


#: how a body's reader fails (the read watch's silence, a broken connection) and the error due
SILENCE_OR_BROKEN = pytest.mark.parametrize(
    ("failed", "kind"),
    [
        (aiohttp.ServerTimeoutError("Timeout on reading data from socket"), UpstreamTimeoutError),
        (aiohttp.ClientPayloadError("cut"), UpstreamTruncatedError),
    ],
    ids=["silence", "broken"],
)


@SILENCE_OR_BROKEN
async def test_a_continuation_peek_that_times_out_raises_a_timeout(
    failed: Exception, kind: type
) -> None:
    """A continuation's first read failing as :class:`ReadWatch` fails it (silence) raises an
    :class:`UpstreamTimeoutError`, which is not retried as a new chat (README, "a timeout is
    not retried"); a broken connection stays a truncation (retried)."""
    content = stream_reader()
    content.feed_data(_sse({"response.created": {"chat_id": "c", "response_id": "r"}}))
    content.set_exception(failed)
    with pytest.raises(UpstreamError) as caught:
        await _peek(SimpleNamespace(content=content, headers={}))  # type: ignore[arg-type]
    assert type(caught.value) is kind


@SILENCE_OR_BROKEN
async def test_a_drained_stream_that_times_out_ends_in_a_timeout(
    failed: Exception, kind: type
) -> None:
    """:func:`proxy.service.drain` (media answers read whole): silence is a timeout, a broken
    connection a truncation."""
    content = stream_reader()
    content.feed_data(_text("par"))
    content.set_exception(failed)
    events = await drain(SimpleNamespace(content=content), Translator())  # type: ignore[arg-type]
    assert isinstance(events[-1], Failure) and type(events[-1].error) is kind
