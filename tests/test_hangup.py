"""Issue 9 §3: a client that leaves stops the upstream answer, streamed or not.

The upstream is the replay server on loopback; the "silent" cassette sends the answer's opening
frames and its first text at once, then nothing for a minute (at real speed). Each test hangs
up and checks, within one second, that the proxy released its upstream connection and sent the
site's stop call (docs/protocol.md §13.1), which the replay server records.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import CASSETTES_DIR, SCENARIO

from proxy.app import make_app
from proxy.config import Settings
from proxy.state import SERVICE, STORE
from recorder.cassette import Cassette, Interaction, load_all
from recorder.replay import CHATS_KEY, REQUESTS_KEY, make_replay_app
from recorder.synthetic import chats_new_interaction, synthetic_cassette

PROMPT = "Keep talking, slowly."
RESPONSE_ID = "resp-silent-1"
STOP_PATH = "/api/v2/chat/completions/stop"


def _sse(obj: Any) -> bytes:
    return ("data: " + json.dumps(obj) + "\n\n").encode()


def t2t_request_body(prompt: str) -> str:
    """The completion request body a one-message t2t turn sends (what a cassette matches)."""
    message = {
        "role": "user",
        "content": prompt,
        "chat_type": "t2t",
        "feature_config": {"thinking_enabled": False, "output_schema": "phase"},
    }
    return json.dumps({"model": "qwen3-max", "messages": [message]})


def _t2t_cassette(
    name: str, description: str, prompt: str, pieces: list[tuple[float, bytes]]
) -> Cassette:
    """A one-turn t2t cassette: ``chats/new``, then the completion body in timed ``pieces``
    (seconds from the start, bytes)."""
    completion = Interaction.streamed(
        method="POST",
        uri="https://chat.qwen.ai/api/v2/chat/completions?chat_id=c",
        request_headers={},
        request_body=t2t_request_body(prompt),
        pieces=pieces,
    )
    return synthetic_cassette(
        name,
        description,
        ["4.1", "5.2"],
        [chats_new_interaction(name, "qwen3-max", "t2t", 1795338000), completion],
    )


def silent_cassette(prompt: str = PROMPT, silence_s: float = 60.0) -> Cassette:
    """A t2t answer: created frame and first text at once, the rest after ``silence_s``."""
    created = {"response.created": {"chat_id": "c", "response_id": RESPONSE_ID}}
    first = {"choices": [{"delta": {"content": "Once", "phase": "answer", "status": "typing"}}]}
    rest = {"choices": [{"delta": {"content": " upon", "phase": "answer", "status": "typing"}}]}
    done = {"choices": [{"delta": {"content": "", "phase": "answer", "status": "finished"}}]}
    return _t2t_cassette(
        "silent",
        "test: an answer that goes silent after its first word",
        prompt,
        [(0.0, _sse(created) + _sse(first)), (silence_s, _sse(rest) + _sse(done))],
    )


async def until(predicate: Callable[[], bool], timeout_s: float) -> float:
    """Wait until ``predicate()`` holds; return the seconds it took. Fails after ``timeout_s``."""
    t0 = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t0 > timeout_s:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.005)
    return time.perf_counter() - t0


class CliServer:
    """The proxy served the way ``qwen-proxy serve`` serves it (``web.run_app``'s defaults: no
    ``handler_cancellation``, unlike pytest-aiohttp's test server, which cancels handlers of
    clients that left and would hide the behaviour under test)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.runner = web.AppRunner(app)
        self.port = 0

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def make_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class Rig:
    """Replay server (real-time speed) + proxy."""

    def __init__(self, replay: Any, proxy: CliServer) -> None:
        self.replay = replay
        self.proxy = proxy

    @property
    def stops(self) -> list[tuple[str, str | None]]:
        return self.replay.app[CHATS_KEY].stops

    def received(self, path: str) -> list[Any]:
        return [r for r in self.replay.app[REQUESTS_KEY] if r.path_qs.split("?")[0] == path]

    def upstream_busy(self) -> bool:
        connector = self.proxy.app[SERVICE].session.connector
        return bool(connector._acquired)

    def chat_ids(self) -> list[str]:
        return [c.id for c in self.replay.app[CHATS_KEY].chats.values()]


@pytest.fixture
async def rig(aiohttp_server: Any) -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    """Start a replay server for the given cassettes (and the models list) and a proxy for it."""
    started: list[CliServer] = []

    async def start(*cassettes: Cassette, speed: float = 1.0, **settings: Any) -> Rig:
        models = load_all([CASSETTES_DIR / "models_list.json"])
        replay = await aiohttp_server(make_replay_app([*models, *cassettes], speed=speed))
        url = str(replay.make_url("")).rstrip("/")
        proxy = CliServer(make_app(Settings(upstream_url=url, read_timeout_s=120, **settings)))
        await proxy.start()
        started.append(proxy)
        return Rig(replay, proxy)

    yield start
    for proxy in started:
        await proxy.runner.cleanup()


def body(prompt: str, *, stream: bool) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}]
    return {"model": "qwen3-max", "stream": stream, "messages": messages}


async def test_streamed_hangup_on_a_silent_upstream_stops_it(rig: Any) -> None:
    """Stream, read the first word, hang up while the site is silent: released and stopped."""
    r = await rig(silent_cassette())
    async with aiohttp.ClientSession() as s:
        url = r.proxy.make_url("/v1/chat/completions")
        resp = await s.post(url, json=body(PROMPT, stream=True))
        assert resp.status == 200
        seen = b""
        while b"Once" not in seen:
            seen += await resp.content.readany()
        assert r.upstream_busy()
        resp.close()  # hang up
        took = await until(lambda: not r.upstream_busy() and bool(r.stops), 1.0)
    assert took < 1.0
    [chat_id] = r.chat_ids()
    assert r.stops == [(chat_id, RESPONSE_ID)]
    [stop] = r.received(STOP_PATH)
    assert stop.path_qs == f"{STOP_PATH}?chat_id={chat_id}"
    assert json.loads(stop.body) == {"chat_id": chat_id, "response_id": RESPONSE_ID}


async def test_a_hangup_gives_the_account_slot_back(rig: Any) -> None:
    """With one answer in flight allowed per account, the slot of an abandoned answer is free
    again at once: the next request is served, not refused as busy."""
    t2t = load_all([CASSETTES_DIR / "t2t_answer.json"])
    r = await rig(silent_cassette(), *t2t, tokens=["tok-hangup-1"], max_inflight_per_account=1)
    store = r.proxy.app[STORE]
    async with aiohttp.ClientSession() as s:
        url = r.proxy.make_url("/v1/chat/completions")
        resp = await s.post(url, json=body(PROMPT, stream=True))
        seen = b""
        while b"Once" not in seen:
            seen += await resp.content.readany()
        assert (await store.inflight()).get("account-1") == 1
        resp.close()
        await until(lambda: not r.upstream_busy() and bool(r.stops), 1.0)
        assert not (await store.inflight()).get("account-1")
        prompt = SCENARIO["t2t_answer"].prompt
        async with s.post(url, json=body(prompt, stream=False)) as again:
            assert again.status == 200
            data = await again.json()
    assert data["choices"][0]["message"]["content"] == SCENARIO["t2t_answer"].expected_content


async def test_non_stream_hangup_stops_reading_upstream(rig: Any) -> None:
    """A non-stream client that leaves is noticed too (the answer is not read to its end)."""
    r = await rig(silent_cassette())
    async with aiohttp.ClientSession() as s:
        task = asyncio.get_running_loop().create_task(
            s.post(r.proxy.make_url("/v1/chat/completions"), json=body(PROMPT, stream=False))
        )
        await until(lambda: bool(r.received("/api/v2/chat/completions")), 5.0)
        await until(r.upstream_busy, 5.0)
        task.cancel()  # the client gives up and closes its connection
        with pytest.raises(asyncio.CancelledError):
            await task
    took = await until(lambda: not r.upstream_busy() and bool(r.stops), 1.0)
    assert took < 1.0
    [chat_id] = r.chat_ids()
    assert [c for c, _ in r.stops] == [chat_id]


async def test_hangup_mid_stream_at_recorded_speed(rig: Any) -> None:
    """A cassette streamed slowly: hanging up after the first chunk stops it within a second."""
    emoji = load_all([CASSETTES_DIR / "chinese_emoji.json"])
    r = await rig(*emoji, speed=0.25)
    prompt = SCENARIO["chinese_emoji"].prompt
    async with aiohttp.ClientSession() as s:
        url = r.proxy.make_url("/v1/chat/completions")
        resp = await s.post(url, json=body(prompt, stream=True))
        assert resp.status == 200
        await resp.content.readuntil(b"\n\n")
        resp.close()
        took = await until(lambda: not r.upstream_busy() and bool(r.stops), 1.0)
    assert took < 1.0
    [(chat_id, response_id)] = r.stops
    assert chat_id in r.chat_ids() and response_id


async def test_a_finished_answer_is_not_stopped(rig: Any) -> None:
    """Only abandoned answers get the stop call."""
    t2t = load_all([CASSETTES_DIR / "t2t_answer.json"])
    r = await rig(*t2t, speed=0)
    prompt = SCENARIO["t2t_answer"].prompt
    async with aiohttp.ClientSession() as s:
        for stream in (True, False):
            async with s.post(
                r.proxy.make_url("/v1/chat/completions"), json=body(prompt, stream=stream)
            ) as resp:
                assert resp.status == 200
                await resp.read()
    await r.proxy.app[SERVICE].close()
    assert r.stops == [] and r.received(STOP_PATH) == []


def flood_cassette(prompt: str = "Write a very long story.") -> Cassette:
    """An answer of about 6.5 MB sent at once (more than loopback's socket buffers hold), whose
    end comes a minute later."""
    created = {"response.created": {"chat_id": "c", "response_id": RESPONSE_ID}}
    text = "word " * 1600  # 8 kB per frame
    frame = {"choices": [{"delta": {"content": text, "phase": "answer", "status": "typing"}}]}
    done = {"choices": [{"delta": {"content": "", "phase": "answer", "status": "finished"}}]}
    return _t2t_cassette(
        "flood",
        "test: a long answer sent at once",
        prompt,
        [(0.0, _sse(created) + _sse(frame) * 800), (60.0, _sse(done))],
    )


async def test_a_client_that_stops_reading_is_dropped_and_its_slot_freed(rig: Any) -> None:
    """A client that keeps its connection but reads nothing: once the answer's bytes have
    waited unsent for ``write_timeout_s``, the gateway drops the connection, sends the site's
    stop call and frees the account's one answer slot (before, the handler waited on the
    client for good, and every other request got 429)."""
    prompt = "Write a very long story."
    r = await rig(
        flood_cassette(prompt),
        tokens=["tok-stall-1"],
        max_inflight_per_account=1,
        write_timeout_s=0.3,
    )
    store = r.proxy.app[STORE]
    raw = json.dumps(body(prompt, stream=True)).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", r.proxy.port))
    _reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(raw) + raw
    )
    await writer.drain()
    try:
        await until(lambda: bool(r.stops), 10.0)  # never read: dropped, and the site stopped
        await until(lambda: not r.upstream_busy(), 1.0)
        assert not (await store.inflight()).get("account-1")
        [chat_id] = r.chat_ids()
        assert r.stops == [(chat_id, RESPONSE_ID)]
    finally:
        writer.close()


async def test_a_chat_is_idle_from_the_end_of_its_answer(rig: Any) -> None:
    """With ``chat_cleanup = "delete"`` a chat's idle deadline counts from the end of its
    answer, not from its start: an answer longer than ``conversation_ttl_s`` is not deleted
    while it streams, and the next turn has the whole idle time (before, the deadline was set
    when the chat was made and when a turn began)."""
    prompt = "A slow answer."
    created = {"response.created": {"chat_id": "c", "response_id": RESPONSE_ID}}
    text = {"choices": [{"delta": {"content": "slow", "phase": "answer", "status": "typing"}}]}
    done = {"choices": [{"delta": {"content": "", "phase": "answer", "status": "finished"}}]}
    slow = _t2t_cassette(
        "slow",
        "test: an answer taking 0.5 s",
        prompt,
        [(0.0, _sse(created)), (0.5, _sse(text) + _sse(done))],
    )
    ttl = 3600.0
    r = await rig(slow, tokens=["tok-idle-1"], conversation_ttl_s=ttl)
    store = r.proxy.app[STORE]
    t0 = time.time()
    async with aiohttp.ClientSession() as s:
        async with s.post(
            r.proxy.make_url("/v1/chat/completions"), json=body(prompt, stream=True)
        ) as resp:
            assert resp.status == 200
            assert b"slow" in await resp.read()
    await r.proxy.app[SERVICE].settle()
    [chat_id] = r.chat_ids()
    # due only once idle for the whole ttl after the answer's end (at least 0.5 s after t0)
    assert await store.due_chats(t0 + ttl + 0.4, 10) == []
    assert await store.due_chats(time.time() + ttl + 1, 10) == [(chat_id, "account-1")]
