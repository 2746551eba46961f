"""End to end: the official openai SDK -> the proxy -> the replay server serving ``cassettes/``.

Every success scenario of ``recorder.synthetic`` goes through the async and the sync SDK, streamed
and not, and must give exactly the scenario's answer, reasoning and search sources. Raw aiohttp
checks cover the wire format the SDK hides, and the replay server's request log shows what the
proxy sent upstream.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import openai
import pytest
from helpers import (
    CHATS_NEW_PATH,
    COMPLETIONS_PATH,
    SCENARIO,
    SUCCESS_SCENARIOS,
    ServerFactory,
    Stack,
    acreate,
    astream,
    error_object,
    last_usage,
    screate,
    sse_data,
    sstream,
    start_stack,
)


@pytest.fixture
async def stack(aiohttp_server: ServerFactory) -> Stack:
    """Replay server + proxy with default settings."""
    return await start_stack(aiohttp_server)


async def _run(stack: Stack, mode: str, model: str, prompt: str, **kw: Any) -> Any:
    if mode == "async_stream":
        async with stack.async_client() as client:
            return await astream(client, model, prompt, **kw)
    if mode == "async_create":
        async with stack.async_client() as client:
            return await acreate(client, model, prompt, **kw)

    def sync() -> Any:
        with stack.sync_client() as client:
            if mode == "sync_stream":
                return sstream(client, model, prompt, **kw)
            return screate(client, model, prompt, **kw)

    return await asyncio.to_thread(sync)


@pytest.mark.parametrize("mode", ["async_stream", "async_create", "sync_stream", "sync_create"])
@pytest.mark.parametrize("name", SUCCESS_SCENARIOS)
async def test_sdk_gets_exact_answer(stack: Stack, name: str, mode: str) -> None:
    """Each success scenario gives exactly its content, reasoning and sources via every SDK mode."""
    sc = SCENARIO[name]
    out = await _run(stack, mode, sc.openai_model, sc.prompt)
    assert out.error is None
    assert out.content == sc.expected_content
    assert out.reasoning == sc.expected_reasoning
    assert out.sources == list(sc.expected_sources)


@pytest.mark.parametrize("name", SUCCESS_SCENARIOS)
async def test_stream_chunk_structure_and_usage(stack: Stack, name: str) -> None:
    """A stream opens with role assistant, has one stop chunk and ends with the cassette's usage."""
    sc = SCENARIO[name]
    async with stack.async_client() as client:
        out = await astream(
            client, sc.openai_model, sc.prompt, stream_options={"include_usage": True}
        )
    assert out.error is None
    first = out.chunks[0]
    assert first.choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in out.chunks)
    assert len({c.id for c in out.chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in out.chunks if c.choices]
    assert [f for f in finishes if f is not None] == ["stop"]
    last = out.chunks[-1]
    assert last.choices == []
    prompt_tokens, completion_tokens = last_usage(name)
    assert last.usage.prompt_tokens == prompt_tokens
    assert last.usage.completion_tokens == completion_tokens
    assert last.usage.total_tokens == prompt_tokens + completion_tokens
    assert all(c.usage is None for c in out.chunks[:-1])


@pytest.mark.parametrize("name", SUCCESS_SCENARIOS)
async def test_stream_without_include_usage_has_no_usage_chunk(stack: Stack, name: str) -> None:
    """Without stream_options.include_usage no chunk carries usage and every chunk has a choice."""
    sc = SCENARIO[name]
    async with stack.async_client() as client:
        out = await astream(client, sc.openai_model, sc.prompt)
    assert out.error is None
    assert all(c.usage is None and len(c.choices) == 1 for c in out.chunks)


@pytest.mark.parametrize("name", SUCCESS_SCENARIOS)
async def test_non_stream_usage_and_finish(stack: Stack, name: str) -> None:
    """A non-streamed completion reports the cassette's last usage and finish_reason stop."""
    sc = SCENARIO[name]
    async with stack.async_client() as client:
        out = await acreate(client, sc.openai_model, sc.prompt)
    completion = out.completion
    assert completion.object == "chat.completion"
    assert completion.model == sc.openai_model
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.role == "assistant"
    prompt_tokens, completion_tokens = last_usage(name)
    assert completion.usage.prompt_tokens == prompt_tokens
    assert completion.usage.completion_tokens == completion_tokens


async def test_models_list(stack: Stack) -> None:
    """models.list() offers the thinking and search variants only where the model supports them."""
    async with stack.async_client() as client:
        ids = [m.id async for m in client.models.list()]
    assert {"qwen3-max", "qwen3-max-thinking", "qwen3-max-search"} <= set(ids)
    assert "qwen3-coder-plus" in ids
    assert "qwen3-coder-plus-thinking" not in ids
    assert len(ids) == len(set(ids))


async def test_models_list_sync(stack: Stack) -> None:
    """The sync SDK sees the same model list as the async one."""

    def sync() -> list[str]:
        with stack.sync_client() as client:
            return [m.id for m in client.models.list()]

    ids = await asyncio.to_thread(sync)
    assert {"qwen3-max", "qwen3-max-thinking", "qwen3-max-search"} <= set(ids)
    assert "qwen3-coder-plus-thinking" not in ids


@pytest.mark.parametrize("mode", ["async_stream", "async_create"])
async def test_think_tags_inline_reasoning(aiohttp_server: ServerFactory, mode: str) -> None:
    """reasoning="think_tags" puts the reasoning in <think> tags at the start of the content."""
    stack = await start_stack(aiohttp_server, reasoning="think_tags")
    sc = SCENARIO["think_answer"]
    out = await _run(stack, mode, sc.openai_model, sc.prompt)
    assert out.error is None
    assert out.content.startswith("<think>")
    assert out.content == f"<think>\n{sc.expected_reasoning}\n</think>\n\n{sc.expected_content}"
    assert out.reasoning is None


# -- raw wire checks -----------------------------------------------------------------------------


async def _post(
    stack: Stack, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, Any, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(stack.url("/v1/chat/completions"), json=body, headers=headers) as resp,
    ):
        return resp.status, resp.headers.copy(), await resp.read()


@pytest.mark.parametrize("name", SUCCESS_SCENARIOS)
async def test_raw_stream_ends_with_done(stack: Stack, name: str) -> None:
    """The raw SSE body is text/event-stream, ends with `data: [DONE]` and has Server-Timing."""
    sc = SCENARIO[name]
    status, headers, raw = await _post(
        stack,
        {
            "model": sc.openai_model,
            "messages": [{"role": "user", "content": sc.prompt}],
            "stream": True,
        },
    )
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert raw.endswith(b"data: [DONE]\n\n")
    assert raw.count(b"data: [DONE]") == 1
    assert "proxy;dur=" in headers["Server-Timing"]
    events = sse_data(raw)
    assert events[-1] == "[DONE]"
    assert all("error" not in json.loads(e) for e in events[:-1])
    assert "\ufffd" not in raw.decode("utf-8")


async def test_raw_non_stream_has_server_timing(stack: Stack) -> None:
    """A non-streamed answer is JSON with a Server-Timing header naming the proxy's time."""
    sc = SCENARIO["chinese_emoji"]
    status, headers, raw = await _post(
        stack, {"model": sc.openai_model, "messages": [{"role": "user", "content": sc.prompt}]}
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert "proxy;dur=" in headers["Server-Timing"]
    assert json.loads(raw)["choices"][0]["message"]["content"] == sc.expected_content


async def test_upstream_request_shape(stack: Stack) -> None:
    """The proxy sends chats/new then one UTF-8 JSON completions request of the v2.1 shape."""
    sc = SCENARIO["chinese_emoji"]
    async with stack.async_client() as client:
        out = await astream(client, sc.openai_model, sc.prompt)
    assert out.content == sc.expected_content

    paths = [r.path_qs.split("?", 1)[0] for r in stack.requests]
    assert paths[-2:] == [CHATS_NEW_PATH, COMPLETIONS_PATH]
    assert all(r.matched is not None for r in stack.requests)
    for r in stack.requests:
        assert all(k.isascii() and v.isascii() for k, v in r.headers.items()), r.headers
    for r in stack.requests:
        if r.method == "POST":
            assert r.headers["Content-Type"] == "application/json; charset=utf-8"

    (new,) = stack.upstream(CHATS_NEW_PATH)
    assert json.loads(new.body)["chat_type"] == "t2t"

    (req,) = stack.upstream(COMPLETIONS_PATH)
    assert sc.prompt.encode("utf-8") in req.body  # raw UTF-8, not \u escapes
    assert b"\\u" not in req.body
    body = json.loads(req.body.decode("utf-8"))
    assert body["stream"] is True
    assert body["incremental_output"] is True
    assert body["version"] == "2.1"
    assert body["model"] == sc.model
    assert len(body["messages"]) == 1
    message = body["messages"][0]
    assert message["role"] == "user"
    assert message["content"] == sc.prompt
    assert message["chat_type"] == "t2t"
    assert message["feature_config"]["output_schema"] == "phase"
    assert message["feature_config"]["thinking_enabled"] is False
    query = parse_qs(urlsplit(req.path_qs).query)
    assert query["chat_id"] == [body["chat_id"]]
    assert body["chat_id"]


async def test_upstream_thinking_and_search_flags(stack: Stack) -> None:
    """-thinking turns on thinking_enabled and -search sends chat_type search upstream."""
    for name in ("think_answer", "search_sources"):
        sc = SCENARIO[name]
        async with stack.async_client() as client:
            await acreate(client, sc.openai_model, sc.prompt)
        req = stack.upstream(COMPLETIONS_PATH)[-1]
        message = json.loads(req.body)["messages"][0]
        assert message["feature_config"]["thinking_enabled"] is sc.thinking
        assert message["chat_type"] == sc.chat_type
        new = stack.upstream(CHATS_NEW_PATH)[-1]
        assert json.loads(new.body)["chat_type"] == sc.chat_type


async def test_upstream_token_sent_as_bearer_and_cookie(aiohttp_server: ServerFactory) -> None:
    """With tokens=["tok-A"] every upstream request carries Bearer tok-A and a token cookie."""
    stack = await start_stack(aiohttp_server, tokens=["tok-A"])
    sc = SCENARIO["t2t_answer"]
    async with stack.async_client() as client:
        out = await acreate(client, sc.openai_model, sc.prompt)
    assert out.content == sc.expected_content
    assert len(stack.requests) == 3
    for r in stack.requests:
        assert r.headers["Authorization"] == "Bearer tok-A"
        cookies = [c.strip() for c in r.headers["Cookie"].split(";")]
        assert "token=tok-A" in cookies


async def test_no_token_sends_no_credentials(stack: Stack) -> None:
    """Without tokens the proxy sends no Authorization header and no Cookie upstream."""
    sc = SCENARIO["t2t_answer"]
    async with stack.async_client() as client:
        await acreate(client, sc.openai_model, sc.prompt)
    for r in stack.requests:
        assert "Authorization" not in r.headers
        assert "Cookie" not in r.headers


async def test_multi_turn_flattened_and_replay_miss(stack: Stack) -> None:
    """A multi-turn history goes upstream as one message; the replay miss is an OpenAI 404."""
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello in one short sentence."},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Now say it in French."},
    ]
    async with stack.async_client() as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="qwen3-max", messages=messages)
    assert info.value.status_code == 404
    err = error_object(info.value)
    assert err["code"] == "replay_miss"
    assert err["message"]

    (req,) = stack.upstream(COMPLETIONS_PATH)
    assert req.matched is None
    body = json.loads(req.body)
    assert len(body["messages"]) == 1
    content = body["messages"][0]["content"]
    assert body["messages"][0]["role"] == "user"
    for m in messages:
        assert m["content"] in content
    positions = [content.index(m["content"]) for m in messages]
    assert positions == sorted(positions)
    assert content.startswith("System: You are terse.")


async def test_multi_turn_streamed_replay_miss_is_http_404(stack: Stack) -> None:
    """A streamed request that misses the replay gets an HTTP 404, not an empty 200 stream."""
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ]
    async with stack.async_client() as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="qwen3-max", messages=messages, stream=True)
    assert error_object(info.value)["code"] == "replay_miss"
