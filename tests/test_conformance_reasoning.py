"""The reasoning check on targets without ``-thinking`` models (the ``enable_thinking`` switch)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from proxy.conformance import run_checks


def fake_target(*, honours_flag: bool) -> web.Application:
    """An OpenAI-style target listing one model; it reasons only when asked with the flag."""

    async def models(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "x"}],
            }
        )

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            obj = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(obj)}\n\n".encode()

        await resp.write(chunk({"role": "assistant", "content": ""}))
        if honours_flag and body.get("enable_thinking"):
            await resp.write(chunk({"reasoning_content": "Let me think."}))
        await resp.write(chunk({"content": "42"}))
        await resp.write(chunk({}, "stop") + b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def test_enable_thinking_switch_counts_as_reasoning(aiohttp_server: Any) -> None:
    """With no -thinking model listed, a target that reasons on enable_thinking passes."""
    server = await aiohttp_server(fake_target(honours_flag=True))
    report = await run_checks(
        str(server.make_url("/v1")), skip=["models", "auth", "chat", "stream", "images", "errors"]
    )
    result = report.by_id()["reasoning.thinking"]
    assert result.status == "passed", result.message
    assert "enable_thinking" in result.message


async def test_no_reasoning_capability_is_skipped_not_failed(aiohttp_server: Any) -> None:
    """With no -thinking model and no reasoning on enable_thinking, the check is skipped."""
    server = await aiohttp_server(fake_target(honours_flag=False))
    report = await run_checks(
        str(server.make_url("/v1")), skip=["models", "auth", "chat", "stream", "images", "errors"]
    )
    result = report.by_id()["reasoning.thinking"]
    assert (result.status, result.diagnosis) == ("skipped", "no_capability")
    assert "enable_thinking" in result.message
