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
    """Without cors_origins no Access-Control header is sent, so web pages cannot use the proxy."""
    stack = await start_stack(aiohttp_server)
    proxy = stack.proxy
    async with aiohttp.ClientSession() as s:
        async with s.get(
            proxy.make_url("/v1/models"), headers={"Origin": "https://evil.example"}
        ) as r:
            assert r.status == 200
            assert "Access-Control-Allow-Origin" not in r.headers


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
