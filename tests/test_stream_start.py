"""The first turn of a streamed answer is made ready while the completion's headers are on their
way (:class:`proxy.relay.StreamStart`): here, the client's response (every header but
``Server-Timing``), which is then the one committed with the first event. Observed without
timing: the site notes how many responses the gateway had made when the completion request
reached it (the request is sent, then the turn is built, before the loop reads anything).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from test_hangup import CliServer

from proxy import relay
from proxy.app import make_app
from proxy.config import Settings

MODELS = {"data": [{"id": "qwen3-max", "info": {"meta": {"chat_type": ["t2t"]}}}]}
ANSWER = [
    {"response.created": {"chat_id": "chat-s", "response_id": "resp-s"}},
    {"choices": [{"delta": {"content": "ready", "phase": "answer", "status": "typing"}}]},
    {"choices": [{"delta": {"content": "", "phase": "answer", "status": "finished"}}]},
]


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

    async def models(_: web.Request) -> web.Response:
        return web.json_response(MODELS)

    async def new_chat(_: web.Request) -> web.Response:
        return web.json_response({"success": True, "data": {"id": "chat-s"}})

    async def completion(request: web.Request) -> web.StreamResponse:
        await request.read()
        seen_by_site.append(len(made))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for frame in ANSWER:
            await resp.write(f"data: {json.dumps(frame)}\n\n".encode())
        await resp.write_eof()
        return resp

    site = web.Application()
    site.router.add_get("/api/models", models)
    site.router.add_post("/api/v2/chats/new", new_chat)
    site.router.add_post("/api/v2/chat/completions", completion)
    upstream = await aiohttp_server(site)
    url = str(upstream.make_url("")).rstrip("/")
    gateway = CliServer(make_app(Settings(upstream_url=url, tokens=["tok-s-1"])))
    await gateway.start()
    try:
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
    finally:
        await gateway.runner.cleanup()
