"""Smaller behaviours of the app: the 2026 model-list path, CORS, health."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from helpers import start_stack

from proxy.app import make_app
from proxy.config import Settings


async def test_models_fall_back_to_the_2026_path(aiohttp_server: Any, aiohttp_client: Any) -> None:
    """When /api/models is gone, the model list comes from /api/v2/models/ (data.data)."""

    async def v2_models(_: web.Request) -> web.Response:
        return web.json_response({"success": True, "data": {"data": [{"id": "qwen3.8-max"}]}})

    upstream = web.Application()
    upstream.router.add_get("/api/v2/models/", v2_models)
    fake: TestServer = await aiohttp_server(upstream)
    client = await aiohttp_client(
        make_app(Settings(upstream_url=str(fake.make_url("")).rstrip("/")))
    )
    resp = await client.get("/v1/models")
    assert resp.status == 200
    assert [m["id"] for m in (await resp.json())["data"]] == ["qwen3.8-max"]


async def test_cors_is_off_by_default(aiohttp_server: Any) -> None:
    """Without cors_origins no Access-Control header is sent, and (no API key being set) a
    browser Origin is refused outright, so web pages cannot use the proxy."""
    stack = await start_stack(aiohttp_server)
    proxy = stack.proxy
    async with aiohttp.ClientSession() as s:
        async with s.get(
            proxy.make_url("/v1/models"), headers={"Origin": "https://evil.example"}
        ) as r:
            assert r.status == 403
            assert (await r.json())["error"]["code"] == "forbidden_origin"
            assert "Access-Control-Allow-Origin" not in r.headers
        async with s.get(proxy.make_url("/v1/models")) as r:
            assert r.status == 200


async def test_cors_preflight_and_streamed_responses(aiohttp_server: Any) -> None:
    """A configured origin gets preflight answers and CORS headers on streamed answers too."""
    stack = await start_stack(aiohttp_server, cors_origins=["http://localhost:3000"])
    proxy = stack.proxy
    origin = {"Origin": "http://localhost:3000"}
    async with aiohttp.ClientSession() as s:
        async with s.options(
            proxy.make_url("/v1/chat/completions"),
            headers={
                **origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        ) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
            assert "authorization" in r.headers["Access-Control-Allow-Headers"]
        body = {
            "model": "qwen3-max",
            "stream": True,
            "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        }
        async with s.post(proxy.make_url("/v1/chat/completions"), json=body, headers=origin) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
            assert "Server-Timing" in r.headers["Access-Control-Expose-Headers"]
            assert (await r.read()).endswith(b"data: [DONE]\n\n")
        async with s.get(
            proxy.make_url("/v1/models"), headers={"Origin": "https://other.example"}
        ) as r:
            assert "Access-Control-Allow-Origin" not in r.headers


async def _fake_upstream(aiohttp_server: Any, completion_body: bytes, ctype: str) -> str:
    """A minimal chat.qwen.ai: one model, chats/new, and a fixed completions answer."""

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "qwen3-max"}]})

    async def new_chat(_: web.Request) -> web.Response:
        return web.json_response({"success": True, "data": {"id": "chat-1"}})

    async def completions(_: web.Request) -> web.Response:
        return web.Response(body=completion_body, headers={"Content-Type": ctype})

    app = web.Application()
    app.router.add_get("/api/models", models)
    app.router.add_post("/api/v2/chats/new", new_chat)
    app.router.add_post("/api/v2/chat/completions", completions)
    return str((await aiohttp_server(app)).make_url("")).rstrip("/")


async def test_envelope_labelled_as_a_stream_is_still_classified(
    aiohttp_server: Any, aiohttp_client: Any
) -> None:
    """An error envelope sent with Content-Type text/event-stream still gives 429, not 502."""
    envelope = (
        b'{"success":false,"request_id":"r","data":{"code":"RateLimited",'
        b'"details":"You\'ve reached the upper limit for today\'s usage.","num":2}}'
    )
    upstream = await _fake_upstream(aiohttp_server, envelope, "text/event-stream; charset=utf-8")
    client = await aiohttp_client(make_app(Settings(upstream_url=upstream)))
    for stream in (True, False):
        body = {
            "model": "qwen3-max",
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        }
        resp = await client.post("/v1/chat/completions", json=body)
        assert resp.status == 429
        assert resp.headers["Retry-After"] == str(2 * 3600)
        assert (await resp.json())["error"]["code"] == "rate_limit_exceeded"


async def test_answer_finished_without_text_is_a_502(
    aiohttp_server: Any, aiohttp_client: Any
) -> None:
    """A stream whose answer finishes with no text gives 502 upstream_empty, never an empty 200."""
    sse = (
        b'data: {"response.created":{"chat_id":"chat-1","response_id":"r"}}\n\n'
        b'data: {"choices":[{"delta":{"content":"","phase":"answer","status":"finished"}}]}\n\n'
    )
    upstream = await _fake_upstream(aiohttp_server, sse, "text/event-stream; charset=utf-8")
    client = await aiohttp_client(make_app(Settings(upstream_url=upstream)))
    for stream in (True, False):
        body = {
            "model": "qwen3-max",
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        }
        resp = await client.post("/v1/chat/completions", json=body)
        assert resp.status == 502
        assert (await resp.json())["error"]["code"] == "upstream_empty"


async def test_client_disconnect_mid_stream_releases_the_upstream(aiohttp_server: Any) -> None:
    """A client that hangs up mid-stream frees the upstream connection long before the end."""
    import asyncio

    from proxy.state import SERVICE
    from recorder.cassette import load_all
    from recorder.replay import make_replay_app

    cassettes = load_all(["cassettes/models_list.json", "cassettes/chinese_emoji.json"])
    # 10x slower than recorded: the answer would take another 4 s to relay after its headers.
    replay = await aiohttp_server(make_replay_app(cassettes, speed=0.1))
    proxy = await aiohttp_server(
        make_app(Settings(upstream_url=str(replay.make_url("")).rstrip("/")))
    )
    connector = proxy.app[SERVICE].session.connector
    body = {
        "model": "qwen3-max",
        "stream": True,
        "messages": [{"role": "user", "content": "用一句话介绍你自己，并加一个表情。"}],
    }
    async with aiohttp.ClientSession() as s:
        resp = await s.post(proxy.make_url("/v1/chat/completions"), json=body)
        assert resp.status == 200
        await resp.content.readuntil(b"\n\n")  # the first chunk, then hang up
        resp.close()
    for _ in range(200):  # the proxy notices at its next write (0.1-0.4 s apart at this speed)
        if not connector._acquired:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.01)
    assert not connector._acquired  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.make_url("/healthz")) as r:
            assert r.status == 200
