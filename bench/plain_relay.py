"""A plain aiohttp translating relay: the reference the gateway's cost is measured against.

What a straightforward aiohttp proxy for chat.qwen.ai does per stream, and nothing more: one
shared ``ClientSession``; read and parse the client's JSON; ``POST /api/v2/chats/new``; stream
``POST /api/v2/chat/completions``; split the upstream body into SSE lines
(``async for line in resp.content``), ``json.loads`` each ``data:`` frame, build the OpenAI
``chat.completion.chunk`` dict and ``json.dumps`` it (the "parse relay" of
bench/README.md, "Method"); a role chunk first, ``[DONE]`` last. No logging, no
validation, no error mapping, no accounts.

Run: ``python bench/plain_relay.py PORT UPSTREAM_URL`` (used by ``bench/relay_bench.py``).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        app[SESSION] = s
        yield


def _chunk(cid: str, created: int, model: str, delta: dict[str, object], fin: str | None) -> bytes:
    obj = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": fin}],
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


async def completions(request: web.Request) -> web.StreamResponse:
    body = json.loads(await request.read())
    model = body["model"]
    prompt = body["messages"][-1]["content"]
    s = request.app[SESSION]
    base = request.app[UPSTREAM]
    async with s.post(f"{base}/api/v2/chats/new", json={"title": "x", "models": [model]}) as r:
        chat_id = (await r.json())["data"]["id"]
    payload = {
        "stream": True,
        "chat_id": chat_id,
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
    }
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    async with s.post(
        f"{base}/api/v2/chat/completions", params={"chat_id": chat_id}, json=payload
    ) as up:
        started = False
        async for raw in up.content:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            frame = json.loads(line[5:])
            choices = frame.get("choices")
            if not choices:
                continue
            d = choices[0].get("delta", {})
            out = b""
            if not started:
                await resp.prepare(request)
                out += _chunk(cid, created, model, {"role": "assistant", "content": ""}, None)
                started = True
            if d.get("content"):
                out += _chunk(cid, created, model, {"content": d["content"]}, None)
            if d.get("status") == "finished":
                out += _chunk(cid, created, model, {}, "stop") + b"data: [DONE]\n\n"
            if out:
                await resp.write(out)
    await resp.write_eof()
    return resp


async def health(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream
    app.cleanup_ctx.append(_session_ctx)
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/healthz", health)
    return app


if __name__ == "__main__":
    web.run_app(
        make_app(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None
    )
