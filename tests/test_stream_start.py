"""The first turn of a streamed answer is made ready while the completion's headers are on their
way (:class:`proxy.relay.StreamStart`): here, the client's response (every header but
``Server-Timing``), which is then the one committed with the first event. Observed without
timing: the site notes how many responses the gateway had made when the completion request
reached it (the request is sent, then the turn is built, before the loop reads anything).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import site_app
from test_hangup import CliServer

from proxy import relay
from proxy.app import make_app
from proxy.config import Settings

ANSWER = [
    {"response.created": {"chat_id": "chat-s", "response_id": "resp-s"}},
    {"choices": [{"delta": {"content": "ready", "phase": "answer", "status": "typing"}}]},
    {"choices": [{"delta": {"content": "", "phase": "answer", "status": "finished"}}]},
]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def gateway_before(aiohttp_server: Any, completion: Handler) -> AsyncIterator[CliServer]:
    """A gateway in front of a site that lists one model, makes chat ``chat-s`` and answers the
    completion with ``completion``."""

    site = site_app(completion, chat_id="chat-s")
    upstream = await aiohttp_server(site)
    url = str(upstream.make_url("")).rstrip("/")
    gateway = CliServer(make_app(Settings(upstream_url=url, tokens=["tok-s-1"])))
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.runner.cleanup()


async def test_the_stream_response_is_made_before_the_completion_answers(
    aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[web.StreamResponse] = []
    seen_by_site: list[int] = []
    real = relay._sse_response

    def recording(renderer: Any) -> web.StreamResponse:
        resp = real(renderer)
        made.append(resp)
        return resp

    monkeypatch.setattr(relay, "_sse_response", recording)

    async def completion(request: web.Request) -> web.StreamResponse:
        await request.read()
        seen_by_site.append(len(made))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for frame in ANSWER:
            await resp.write(f"data: {json.dumps(frame)}\n\n".encode())
        await resp.write_eof()
        return resp

    async with gateway_before(aiohttp_server, completion) as gateway:
        body = {
            "model": "qwen3-max",
            "stream": True,
            "messages": [{"role": "user", "content": "go"}],
        }
        async with aiohttp.ClientSession() as s:
            async with s.post(gateway.make_url("/v1/chat/completions"), json=body) as resp:
                raw = await resp.read()
                assert resp.status == 200
                assert resp.headers["Server-Timing"].startswith("proxy;dur=")
                assert resp.headers["Content-Type"].startswith("text/event-stream")
                assert resp.headers["X-Accel-Buffering"] == "no"
        assert b'"content":"ready"' in raw and raw.endswith(b"data: [DONE]\n\n")
        # one response, made before the site had the completion request, and committed
        assert seen_by_site == [1]
        assert len(made) == 1 and made[0].prepared


@pytest.mark.parametrize(
    ("path", "body", "ping"),
    [
        (
            "/v1/chat/completions",
            {"model": "qwen3-max", "stream": True, "messages": [{"role": "user", "content": "go"}]},
            b": keep-alive\n\n",
        ),
        (
            "/v1/messages",
            {
                "model": "qwen3-max",
                "max_tokens": 50,
                "stream": True,
                "messages": [{"role": "user", "content": "go"}],
            },
            b"event: ping\n",
        ),
    ],
)
async def test_a_silent_site_gets_the_client_keep_alives(
    aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch, path: str, body: Any, ping: bytes
) -> None:
    """After the first text, a site that sends nothing at all (no frame, no byte) still gets
    the client a keep-alive every ``keepalive_s`` (on the read watch's ticks), as frames that
    give the client nothing do: a proxy between the client and the gateway would close a
    connection idle for long. The site goes on only once the client has had one."""
    monkeypatch.setitem(relay.relay.__kwdefaults__, "keepalive_s", 0.05)
    go_on = asyncio.Event()

    async def completion(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for frame in ANSWER[:2]:
            await resp.write(f"data: {json.dumps(frame)}\n\n".encode())
        await go_on.wait()  # silent until the client had its keep-alive
        await resp.write(f"data: {json.dumps(ANSWER[2])}\n\n".encode())
        await resp.write_eof()
        return resp

    try:
        async with gateway_before(aiohttp_server, completion) as gateway:
            async with aiohttp.ClientSession() as s, asyncio.timeout(10):
                async with s.post(gateway.make_url(path), json=body) as resp:
                    assert resp.status == 200
                    seen = b""
                    async for chunk in resp.content.iter_any():
                        seen += chunk
                        if b"ready" in seen and ping in seen.split(b"ready", 1)[1]:
                            go_on.set()  # a keep-alive after the text, while the site was silent
                    assert go_on.is_set()
    finally:
        go_on.set()  # (a failed test must not leave the site waiting)
    assert b"ready" in seen
    assert seen.endswith(b"data: [DONE]\n\n") or b"message_stop" in seen


class _Transport:
    def __init__(self) -> None:
        self.unsent = 0

    def get_write_buffer_size(self) -> int:
        return self.unsent


class _Resp:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.written.append(data)


class _Renderer:
    def keepalive(self) -> bytes:
        return b": keep-alive\n\n"


async def test_keep_alives_on_silence_follow_keepalive_s_and_a_reading_client() -> None:
    """The silence ticks write a keep-alive only once ``keepalive_s`` passed since the last
    write, only to a client that read what it was sent, and never after the end."""
    transport = _Transport()
    request = type("R", (), {"transport": transport})()
    turn = relay._Turn(request, _Renderer(), 3600.0)  # type: ignore[arg-type]
    resp = _Resp()
    turn._silence()  # nothing committed yet: nothing to keep alive
    turn.resp = resp  # type: ignore[assignment]
    turn.last_write = time.perf_counter()
    turn._silence()
    assert resp.written == []  # written just now
    turn.keepalive_s = 0.0
    transport.unsent = 10
    turn._silence()
    assert resp.written == []  # the client has not read the last bytes
    transport.unsent = 0
    turn._silence()
    assert resp.written == [b": keep-alive\n\n"]
    turn.ended = True
    turn._silence()
    assert len(resp.written) == 1
