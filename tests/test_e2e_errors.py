"""End to end: every failure reaches the client as an OpenAI error with the right status and code.

Upstream failures come from the error cassettes (``recorder.synthetic`` says which status and code
each must give); client mistakes (bad encoding, bad JSON, unknown model, oversized body, API keys,
unknown paths) are sent directly. The openai SDK must see them as ``APIStatusError`` subclasses;
raw aiohttp checks cover what the SDK hides (headers, the exact SSE ending).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest
from helpers import (
    ERROR_SCENARIOS,
    SCENARIO,
    ServerFactory,
    Stack,
    acreate,
    astream,
    error_object,
    screate,
    sse_data,
    start_stack,
)

MID_STREAM = ("stream_cut", "error_frame")
"""Scenarios that fail after answer text was sent: a streamed client gets 200 + an error event."""

HTTP_ERROR_STREAMED = tuple(n for n in ERROR_SCENARIOS if n not in MID_STREAM)


@pytest.fixture
async def stack(aiohttp_server: ServerFactory) -> Stack:
    """Replay server + proxy with default settings."""
    return await start_stack(aiohttp_server)


def _check_error(exc: openai.APIStatusError, status: int, code: str) -> dict[str, Any]:
    assert exc.status_code == status
    err = error_object(exc)
    assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    assert "param" in err
    return err


def test_error_scenarios_cover_the_catalogue() -> None:
    """The error scenarios tested here are the ones the brief names, no more and no fewer."""
    assert set(ERROR_SCENARIOS) == {
        "error_ratelimited",
        "error_unauthorized",
        "error_waf_json",
        "error_waf_html",
        "error_bad_request",
        "empty_stream",
        "stream_cut",
        "error_frame",
    }


@pytest.mark.parametrize("name", ERROR_SCENARIOS)
async def test_non_stream_error_status_and_code(stack: Stack, name: str) -> None:
    """A non-streamed request gets the scenario's HTTP status and OpenAI error code via the SDK."""
    sc = SCENARIO[name]
    async with stack.async_client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await acreate(client, sc.openai_model, sc.prompt)
    assert sc.expected_error_code is not None
    _check_error(info.value, sc.expected_status, sc.expected_error_code)


@pytest.mark.parametrize("name", ERROR_SCENARIOS)
async def test_non_stream_error_sync_sdk(stack: Stack, name: str) -> None:
    """The sync SDK sees the same status and code for a non-streamed failing request."""
    sc = SCENARIO[name]

    def sync() -> openai.APIStatusError:
        with stack.sync_client() as client:
            try:
                screate(client, sc.openai_model, sc.prompt)
            except openai.APIStatusError as exc:
                return exc
        raise AssertionError("no error raised")

    exc = await asyncio.to_thread(sync)
    assert sc.expected_error_code is not None
    _check_error(exc, sc.expected_status, sc.expected_error_code)


@pytest.mark.parametrize("name", HTTP_ERROR_STREAMED)
async def test_stream_error_before_text_is_http_error(stack: Stack, name: str) -> None:
    """A streamed request that fails before any text gets a real HTTP error, not an empty 200."""
    sc = SCENARIO[name]
    async with stack.async_client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await astream(client, sc.openai_model, sc.prompt)
    assert sc.expected_error_code is not None
    _check_error(info.value, sc.expected_status, sc.expected_error_code)


async def _raw(
    stack: Stack,
    body: bytes | dict[str, Any] | None,
    *,
    method: str = "POST",
    path: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, bytes]:
    kw: dict[str, Any] = {"headers": headers}
    if isinstance(body, dict):
        kw["json"] = body
    elif body is not None:
        kw["data"] = body
        kw["headers"] = {"Content-Type": "application/json", **(headers or {})}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, stack.url(path), **kw) as resp,
    ):
        return resp.status, resp.headers.copy(), await resp.read()


def _json_error(status: int, headers: Any, raw: bytes) -> dict[str, Any]:
    assert headers["Content-Type"].startswith("application/json"), headers
    body = json.loads(raw)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", HTTP_ERROR_STREAMED)
async def test_raw_error_body_never_empty_200(
    aiohttp_server: ServerFactory, name: str, stream: bool
) -> None:
    """On the wire the failure is an OpenAI JSON error with the status, never a 200, no secrets."""
    stack = await start_stack(aiohttp_server, tokens=["tok-secret-123"])
    sc = SCENARIO[name]
    status, headers, raw = await _raw(
        stack,
        {
            "model": sc.openai_model,
            "messages": [{"role": "user", "content": sc.prompt}],
            "stream": stream,
        },
    )
    assert status == sc.expected_status != 200
    err = _json_error(status, headers, raw)
    assert err["code"] == sc.expected_error_code
    assert b"tok-secret-123" not in raw


@pytest.mark.parametrize("stream", [False, True])
async def test_rate_limited_retry_after_six_hours(stack: Stack, stream: bool) -> None:
    """A RateLimited envelope (num=6 hours) becomes 429 with Retry-After: 21600."""
    sc = SCENARIO["error_ratelimited"]
    async with stack.async_client() as client:
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(
                model=sc.openai_model,
                messages=[{"role": "user", "content": sc.prompt}],
                stream=stream,
            )
    assert info.value.status_code == 429
    assert info.value.response.headers["Retry-After"] == "21600"
    err = error_object(info.value)
    assert err["code"] == "rate_limit_exceeded"
    assert err["type"] == "rate_limit_error"
    assert "6 hours" in err["message"]


@pytest.mark.parametrize("name", ["error_waf_json", "error_waf_html"])
async def test_waf_message_tells_user_to_solve_captcha(stack: Stack, name: str) -> None:
    """A WAF answer says to solve the captcha in a browser and quotes no x5secdata value."""
    sc = SCENARIO[name]
    async with stack.async_client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await acreate(client, sc.openai_model, sc.prompt)
    err = _check_error(info.value, 503, "upstream_captcha")
    message = err["message"]
    assert "browser" in message
    assert "captcha" in message.lower()
    assert "x5secdata" not in message
    assert "REDACTED" not in message
    assert "punish" not in message
    assert info.value.response.headers["Retry-After"].isdigit()


@pytest.mark.parametrize("name", MID_STREAM)
async def test_mid_stream_failure_sdk_gets_partial_then_error(stack: Stack, name: str) -> None:
    """A streamed mid-answer failure gives the partial text, then the SDK raises APIError."""
    sc = SCENARIO[name]
    async with stack.async_client() as client:
        out = await astream(client, sc.openai_model, sc.prompt)
    assert out.content == sc.partial_content
    assert isinstance(out.error, openai.APIError)
    assert not isinstance(out.error, openai.APIStatusError)
    assert error_object(out.error)["code"] == sc.expected_error_code
    assert out.chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].finish_reason is None for c in out.chunks if c.choices)


@pytest.mark.parametrize("name", MID_STREAM)
async def test_mid_stream_failure_raw_error_event_without_done(stack: Stack, name: str) -> None:
    """On the wire a mid-stream failure is a `data: {"error": …}` event and no `data: [DONE]`."""
    sc = SCENARIO[name]
    status, headers, raw = await _raw(
        stack,
        {
            "model": sc.openai_model,
            "messages": [{"role": "user", "content": sc.prompt}],
            "stream": True,
        },
    )
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert b"[DONE]" not in raw
    events = [json.loads(e) for e in sse_data(raw)]
    assert "error" in events[-1]
    assert events[-1]["error"]["code"] == sc.expected_error_code
    assert events[-1]["error"]["message"]
    assert all("error" not in e for e in events[:-1])
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert content == sc.partial_content
    assert raw.endswith(b"\n\n")


# -- client mistakes -----------------------------------------------------------------------------


async def test_gbk_body_is_rejected_naming_the_encoding(stack: Stack) -> None:
    """A GBK-encoded body gets 400 invalid_encoding whose message names GBK/GB18030."""
    body = '{"model":"qwen3-max","messages":[{"role":"user","content":"你好"}]}'.encode("gbk")
    status, headers, raw = await _raw(stack, body)
    assert status == 400
    err = _json_error(status, headers, raw)
    assert err["code"] == "invalid_encoding"
    assert err["type"] == "invalid_request_error"
    assert "GBK/GB18030" in err["message"]
    assert stack.requests == []  # nothing went upstream


async def test_malformed_json_is_400_invalid_json(stack: Stack) -> None:
    """A body that is not JSON gets 400 invalid_json."""
    status, headers, raw = await _raw(stack, b'{"model": "qwen3-max", "messages": [')
    assert status == 400
    assert _json_error(status, headers, raw)["code"] == "invalid_json"


async def test_empty_body_is_400_invalid_json(stack: Stack) -> None:
    """An empty body gets 400 invalid_json."""
    status, headers, raw = await _raw(stack, b"")
    assert status == 400
    assert _json_error(status, headers, raw)["code"] == "invalid_json"


async def test_missing_messages_is_400_with_param(stack: Stack) -> None:
    """A body without messages gets 400 naming the messages parameter."""
    status, headers, raw = await _raw(stack, {"model": "qwen3-max"})
    assert status == 400
    err = _json_error(status, headers, raw)
    assert err["param"] == "messages"
    assert err["type"] == "invalid_request_error"
    assert "messages" in err["message"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["no-such-model", "qwen3-coder-plus-thinking"])
async def test_unknown_model_is_404(stack: Stack, model: str, stream: bool) -> None:
    """An unknown model, or a thinking variant of a model without thinking, gets 404."""
    async with stack.async_client() as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], stream=stream
            )
    err = _check_error(info.value, 404, "model_not_found")
    assert err["param"] == "model"
    assert stack.upstream("/api/v2/chats/new") == []


async def test_oversized_body_is_413(aiohttp_server: ServerFactory) -> None:
    """A 4 KB body against max_body_bytes=2048 gets 413 request_too_large."""
    stack = await start_stack(aiohttp_server, max_body_bytes=2048)
    body = json.dumps(
        {"model": "qwen3-max", "messages": [{"role": "user", "content": "x" * 4096}]}
    ).encode()
    assert len(body) > 4096
    status, headers, raw = await _raw(stack, body)
    assert status == 413
    err = _json_error(status, headers, raw)
    assert err["code"] == "request_too_large"
    assert "2048" in err["message"]


@pytest.mark.parametrize("key", ["sk-wrong", None])
async def test_wrong_or_missing_api_key_is_401(
    aiohttp_server: ServerFactory, key: str | None
) -> None:
    """With api_keys set, a wrong or missing key gets 401 authentication_error via the SDK."""
    stack = await start_stack(aiohttp_server, api_keys=["sk-right"])
    sc = SCENARIO["t2t_answer"]
    # The SDK insists on a key; for the missing case it is told to omit the header.
    kw: dict[str, Any] = {} if key else {"extra_headers": {"Authorization": openai.Omit()}}
    async with stack.async_client(api_key=key or "unused") as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await acreate(client, sc.openai_model, sc.prompt, **kw)
        with pytest.raises(openai.AuthenticationError):
            await client.models.list(**kw)
    err = _check_error(info.value, 401, "invalid_api_key")
    assert err["type"] == "authentication_error"
    assert "sk-right" not in err["message"]
    assert ("Missing" in err["message"]) is (key is None)
    assert stack.requests == []


async def test_missing_api_key_raw(aiohttp_server: ServerFactory) -> None:
    """A request without any Authorization header gets 401 authentication_error."""
    stack = await start_stack(aiohttp_server, api_keys=["sk-right"])
    status, headers, raw = await _raw(
        stack, {"model": "qwen3-max", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert status == 401
    err = _json_error(status, headers, raw)
    assert err["type"] == "authentication_error"
    assert "Missing" in err["message"]


async def test_right_api_key_works_and_healthz_is_open(aiohttp_server: ServerFactory) -> None:
    """The configured key is accepted (also as x-api-key) and /healthz needs no key."""
    stack = await start_stack(aiohttp_server, api_keys=["sk-right"])
    sc = SCENARIO["t2t_answer"]
    async with stack.async_client(api_key="sk-right") as client:
        out = await acreate(client, sc.openai_model, sc.prompt)
    assert out.content == sc.expected_content
    status, _, raw = await _raw(stack, None, method="GET", path="/healthz")
    assert status == 200
    assert json.loads(raw)["status"] == "ok"
    status, _, raw = await _raw(
        stack, None, method="GET", path="/v1/models", headers={"x-api-key": "sk-right"}
    )
    assert status == 200
    assert json.loads(raw)["object"] == "list"


async def test_unknown_path_is_openai_404(stack: Stack) -> None:
    """An unknown path gets an OpenAI-style 404 JSON error."""
    status, headers, raw = await _raw(stack, None, method="GET", path="/v1/nope")
    assert status == 404
    err = _json_error(status, headers, raw)
    assert err["code"] == "not_found"
    assert "/v1/nope" in err["message"]


async def test_get_on_chat_completions_is_405(stack: Stack) -> None:
    """GET on /v1/chat/completions gets a 405 OpenAI-style JSON error."""
    status, headers, raw = await _raw(stack, None, method="GET", path="/v1/chat/completions")
    assert status == 405
    err = _json_error(status, headers, raw)
    assert err["code"] == "method_not_allowed"
    assert "GET" in err["message"]


async def test_unknown_model_get_is_404(stack: Stack) -> None:
    """GET /v1/models/{id} for an unknown id gets 404 model_not_found; a known id works."""
    async with stack.async_client() as client:
        model = await client.models.retrieve("qwen3-max-thinking")
        assert model.id == "qwen3-max-thinking"
        with pytest.raises(openai.NotFoundError) as info:
            await client.models.retrieve("qwen3-coder-plus-thinking")
    _check_error(info.value, 404, "model_not_found")
