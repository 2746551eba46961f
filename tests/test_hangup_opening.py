"""A client that leaves while the site has not yet answered the completion (its headers have not
come): the turn's opening is cancelled, the site's stop call goes out for the chat (without a
response id: none was seen, docs/protocol.md §13.1), the account slot and the upstream
connection are given back; the same as a hang-up after the first word (tests/test_hangup.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web
from test_hangup import CliServer, until

from proxy.app import make_app
from proxy.config import Settings
from proxy.state import SERVICE, STORE

MODELS = {"data": [{"id": "qwen3-max", "info": {"meta": {"chat_type": ["t2t"]}}}]}


def slow_site() -> tuple[web.Application, list[dict[str, Any]], asyncio.Event]:
    """A site whose completion answers nothing (no headers) until the test ends; it records the
    stop calls and sets the event once the completion request arrived."""
    stops: list[dict[str, Any]] = []
    asked = asyncio.Event()
    held = asyncio.Event()

    async def models(_: web.Request) -> web.Response:
        return web.json_response(MODELS)

    async def new_chat(_: web.Request) -> web.Response:
        return web.json_response({"success": True, "data": {"id": "chat-slow"}})

    async def completion(request: web.Request) -> web.Response:
        await request.read()
        asked.set()
        await held.wait()  # never set: the proxy must give up on its own when the client leaves
        return web.Response(text="late")

    async def stop(request: web.Request) -> web.Response:
        stops.append({"query": request.query_string, "body": json.loads(await request.read())})
        return web.json_response({"success": True, "data": {}})

    app = web.Application()
    app.router.add_get("/api/models", models)
    app.router.add_post("/api/v2/chats/new", new_chat)
    app.router.add_post("/api/v2/chat/completions", completion)
    app.router.add_post("/api/v2/chat/completions/stop", stop)
    return app, stops, asked


async def test_a_hangup_before_the_answer_headers_stops_the_chat_and_frees_the_account(
    aiohttp_server: Any,
) -> None:
    site, stops, asked = slow_site()
    upstream = await aiohttp_server(site)
    url = str(upstream.make_url("")).rstrip("/")
    settings = Settings(
        upstream_url=url, tokens=["tok-open-1"], max_inflight_per_account=1, read_timeout_s=120
    )
    proxy = CliServer(make_app(settings))
    await proxy.start()
    try:
        store = proxy.app[STORE]
        connector = proxy.app[SERVICE].session.connector
        assert connector is not None
        async with aiohttp.ClientSession() as s:
            body = {
                "model": "qwen3-max",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            }
            task = asyncio.ensure_future(s.post(proxy.make_url("/v1/chat/completions"), json=body))
            await asyncio.wait_for(asked.wait(), 5)
            assert (await store.inflight()).get("account-1") == 1
            task.cancel()  # the client hangs up while the site is still silent
            await asyncio.gather(task, return_exceptions=True)
            await until(lambda: bool(stops), 2.0)
        await until(lambda: not connector._acquired, 2.0)  # type: ignore[attr-defined]
        assert not (await store.inflight()).get("account-1")
        assert stops == [{"query": "chat_id=chat-slow", "body": {"chat_id": "chat-slow"}}]
    finally:
        await proxy.runner.cleanup()
