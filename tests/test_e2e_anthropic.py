"""End to end: the official anthropic SDK -> the proxy's /v1/messages -> the replay server.

The synthetic scenarios of ``recorder.synthetic`` (and the vision one of
``recorder.synthetic_media``) are asked for through the Anthropic Messages API, streamed and
not, under ``claude-…`` names (the model map) and Qwen names: the answer, the thinking, the
usage and every error must come back in Anthropic's shapes, the ones the SDK types and raises.
Raw aiohttp checks cover the wire the SDK hides (event lines, headers, error bodies).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp import web
from helpers import (
    COMPLETIONS_PATH,
    SCENARIO,
    ServerFactory,
    Stack,
    StubChat,
    cassettes,
    last_usage,
    start_stack,
)

from proxy.app import make_app
from proxy.config import Settings
from proxy.conversation import Conversation, Turn
from proxy.frontdoors.anthropic import AnthropicStream
from proxy.relay import relay
from proxy.state import SERVICE
from recorder.replay import UPLOADS_KEY, make_replay_app
from recorder.synthetic_media import BY_NAME as MEDIA
from recorder.synthetic_media import png

T2T = SCENARIO["t2t_answer"]
THINK = SCENARIO["think_answer"]
SUMMARY = SCENARIO["thinking_summary"]
ZH = SCENARIO["chinese_emoji"]
VISION = MEDIA["media_vision_chat"]


@pytest.fixture
async def stack(aiohttp_server: ServerFactory) -> Stack:
    """Replay server + proxy with default settings (``claude-*`` -> ``qwen3-max``)."""
    return await start_stack(aiohttp_server)


def client_for(stack: Stack, **kw: Any) -> anthropic.AsyncAnthropic:
    """An async anthropic client for the proxy (base URL without ``/v1``, no retries)."""
    kw.setdefault("api_key", "test")
    return anthropic.AsyncAnthropic(base_url=str(stack.proxy.make_url("")), max_retries=0, **kw)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def upstream_body(stack: Stack) -> dict[str, Any]:
    """The last completion request the replay server received."""
    return json.loads(stack.upstream(COMPLETIONS_PATH)[-1].body)


async def raw_post(
    stack: Stack, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(stack.url(path), json=body, headers=headers or {}) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


def sse_frames(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event, data)`` of every SSE frame; each has both lines and the same ``type``."""
    frames = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line[6:])
        assert data["type"] == event_line[7:]
        frames.append((event_line[7:], data))
    return frames


# -- answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["claude-sonnet-4-6-20250929", "qwen3-max"])
async def test_create_gets_the_answer(stack: Stack, model: str) -> None:
    """Non-stream: one text block with the whole answer, end_turn, the site's usage; the
    claude name goes upstream as qwen3-max and comes back as asked."""
    async with client_for(stack) as client:
        message = await client.messages.create(
            model=model, max_tokens=256, messages=user(T2T.prompt)
        )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == model
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == T2T.expected_content
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == last_usage("t2t_answer")
    assert upstream_body(stack)["model"] == "qwen3-max"


async def test_stream_gets_the_answer(stack: Stack) -> None:
    """Stream: the SDK's stream helper folds the events into the same message."""
    async with (
        client_for(stack) as client,
        client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=256, messages=user(T2T.prompt)
        ) as stream,
    ):
        texts = [t async for t in stream.text_stream]
        message = await stream.get_final_message()
    assert "".join(texts) == T2T.expected_content
    assert message.content[0].text == T2T.expected_content
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == last_usage("t2t_answer")


async def test_stream_event_order_on_the_wire(stack: Stack) -> None:
    """message_start, ping, one text block (start, deltas, stop), message_delta, message_stop;
    ``text/event-stream`` and an ``event:`` line on every frame."""
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 256,
        "stream": True,
        "messages": user(T2T.prompt),
    }
    status, headers, raw = await raw_post(stack, "/v1/messages?beta=true", body)
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    frames = sse_frames(raw)
    names = [n for n, _ in frames]
    deltas = names.count("content_block_delta")
    assert deltas >= 2
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = frames[0][1]["message"]
    assert (start["content"], start["stop_reason"], start["usage"]["output_tokens"]) == (
        [],
        None,
        0,
    )
    assert frames[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    text = "".join(d["delta"]["text"] for n, d in frames if n == "content_block_delta")
    assert text == T2T.expected_content
    assert frames[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert frames[-2][1]["usage"]["output_tokens"] == last_usage("t2t_answer")[1]


@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_blocks(stack: Stack, stream: bool) -> None:
    """``thinking: enabled`` turns Qwen's thinking on; the reasoning is a thinking block before
    the text block (think phase and thinking_summary snapshots alike)."""
    for sc, model in ((THINK, "claude-opus-4-1"), (SUMMARY, "qwen3.6-plus")):
        kw: dict[str, Any] = {
            "model": model,
            "max_tokens": 4096,
            "messages": user(sc.prompt),
            "thinking": {"type": "enabled", "budget_tokens": 2048},
        }
        async with client_for(stack) as client:
            if stream:
                async with client.messages.stream(**kw) as s:
                    message = await s.get_final_message()
            else:
                message = await client.messages.create(**kw)
        assert [b.type for b in message.content] == ["thinking", "text"]
        assert message.content[0].thinking == sc.expected_reasoning
        assert message.content[1].text == sc.expected_content
        sent = upstream_body(stack)["messages"][0]["feature_config"]
        assert sent["thinking_enabled"] is True


async def test_thinking_blocks_even_with_think_tags(aiohttp_server: ServerFactory) -> None:
    """``reasoning = think_tags`` is for chat clients: /v1/messages still gets thinking blocks."""
    stack = await start_stack(aiohttp_server, reasoning="think_tags")
    async with client_for(stack) as client:
        message = await client.messages.create(
            model="qwen3-max-thinking", max_tokens=1024, messages=user(THINK.prompt)
        )
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[1].text == THINK.expected_content


async def test_system_blocks_and_chinese(stack: Stack) -> None:
    """A multi-byte answer arrives intact; text blocks of a single user message are sent as
    its text."""
    async with client_for(stack) as client:
        message = await client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=256,
            messages=[{"role": "user", "content": [{"type": "text", "text": ZH.prompt}]}],
        )
    assert message.content[0].text == ZH.expected_content
    assert upstream_body(stack)["messages"][0]["content"] == ZH.prompt


async def media_stack(aiohttp_server: ServerFactory) -> Stack:
    """Replay server + proxy whose object store is the replay server (the offline layout)."""
    replay = await aiohttp_server(make_replay_app(list(cassettes()), speed=0))
    base = str(replay.make_url("")).rstrip("/")
    settings = Settings(upstream_url=base, media_base_url=base, object_store_url=base)
    return Stack(replay=replay, proxy=await aiohttp_server(make_app(settings)))


async def test_image_block_is_uploaded(aiohttp_server: ServerFactory) -> None:
    """A base64 image block is uploaded like an OpenAI image part (byte for byte) and the
    answer about it comes back."""
    stack = await media_stack(aiohttp_server)
    picture = png(24, 24, lambda x, y: (x * 10, 200, y * 10))
    content = [
        {"type": "text", "text": VISION.prompt},
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": "image/png",
                "data": base64.b64encode(picture).decode(),
            },
        },
    ]
    async with client_for(stack) as client:
        message = await client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=256,
            messages=[{"role": "user", "content": content}],  # type: ignore[misc]
        )
    assert message.content[0].text == VISION.expected_content
    (stored,) = stack.replay.app[UPLOADS_KEY]
    assert stored.body == picture
    sent = upstream_body(stack)["messages"][0]
    assert sent["content"] == VISION.prompt
    assert [f["type"] for f in sent["files"]] == ["image"]


# -- count_tokens -------------------------------------------------------------------------------


async def test_count_tokens(stack: Stack) -> None:
    """An estimate that grows with system text and tools; nothing is sent upstream."""
    async with client_for(stack) as client:
        small = await client.messages.count_tokens(
            model="claude-sonnet-4-6", messages=user("hello there")
        )
        big = await client.messages.count_tokens(
            model="claude-sonnet-4-6",
            system="You are a careful assistant. " * 50,
            messages=user("hello there"),
            tools=[
                {
                    "name": "Read",
                    "description": "Read a file from the local filesystem.",
                    "input_schema": {
                        "type": "object",
                        "properties": {"file_path": {"type": "string"}},
                        "required": ["file_path"],
                    },
                }
            ],
        )
        beta = await client.beta.messages.count_tokens(
            model="claude-sonnet-4-6", messages=user("hello there")
        )
    assert 0 < small.input_tokens < big.input_tokens
    assert big.input_tokens >= small.input_tokens + 300
    assert beta.input_tokens == small.input_tokens
    assert stack.requests == []


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "kind", "exc_class"),
    [
        ("error_ratelimited", 429, "rate_limit_error", anthropic.RateLimitError),
        ("error_unauthorized", 401, "authentication_error", anthropic.AuthenticationError),
        ("error_waf_json", 529, "overloaded_error", anthropic.OverloadedError),
        ("error_waf_html", 529, "overloaded_error", anthropic.OverloadedError),
        ("error_bad_request", 502, "api_error", anthropic.InternalServerError),
        ("empty_stream", 502, "api_error", anthropic.InternalServerError),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_errors_before_any_text(
    stack: Stack, name: str, status: int, kind: str, exc_class: type[Exception], stream: bool
) -> None:
    """A failure before the first text is a real HTTP error in Anthropic's shape, streamed or
    not, with Retry-After on 429 (and the captcha's 529)."""
    async with client_for(stack) as client:
        with pytest.raises(anthropic.APIStatusError) as info:
            if stream:
                async with client.messages.stream(
                    model="claude-sonnet-4-6", max_tokens=64, messages=user(SCENARIO[name].prompt)
                ) as s:
                    await s.get_final_message()
            else:
                await client.messages.create(
                    model="claude-sonnet-4-6", max_tokens=64, messages=user(SCENARIO[name].prompt)
                )
    err = info.value
    assert isinstance(err, exc_class)
    assert err.status_code == status
    assert isinstance(err.body, dict)
    assert err.body["type"] == "error"
    assert err.body["error"]["type"] == kind
    assert err.body["error"]["message"]
    assert err.response.headers["request-id"].startswith("req_")
    if status in (429, 529):
        assert int(err.response.headers["retry-after"]) > 60
        assert err.response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("name", ["stream_cut", "error_frame"])
async def test_failure_after_text_is_an_error_event(stack: Stack, name: str) -> None:
    """Text already streamed stays; then an Anthropic ``error`` event (the SDK raises) and no
    message_stop."""
    sc = SCENARIO[name]
    got = ""
    async with client_for(stack) as client:
        with pytest.raises(anthropic.APIStatusError) as info:
            async with client.messages.stream(
                model="claude-sonnet-4-6", max_tokens=64, messages=user(sc.prompt)
            ) as s:
                async for text in s.text_stream:
                    got += text
    assert got == sc.partial_content
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["type"] == "api_error"
    body = {"model": "qwen3-max", "max_tokens": 64, "stream": True, "messages": user(sc.prompt)}
    status, _, raw = await raw_post(stack, "/v1/messages", body)
    names = [n for n, _ in sse_frames(raw)]
    assert status == 200 and names[-1] == "error" and "message_stop" not in names


async def test_unknown_model_is_not_found(stack: Stack) -> None:
    async with client_for(stack) as client:
        with pytest.raises(anthropic.NotFoundError) as info:
            await client.messages.create(
                model="qwen-does-not-exist", max_tokens=16, messages=user(T2T.prompt)
            )
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["type"] == "not_found_error"


async def test_unknown_path_under_messages_is_not_found(stack: Stack) -> None:
    async with client_for(stack) as client:
        with pytest.raises(anthropic.NotFoundError) as info:
            await client.messages.batches.retrieve("msgbatch_01")
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["type"] == "not_found_error"
    async with (
        aiohttp.ClientSession() as session,
        session.get(stack.url("/v1/messages")) as resp,
    ):
        assert resp.status == 405
        err = await resp.json()
    assert (err["type"], err["error"]["type"]) == ("error", "invalid_request_error")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "claude-sonnet-4-6", "messages": user("hi")}, "max_tokens"),
        ({"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": []}, "messages"),
        (
            {
                "model": "claude-sonnet-4-6",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": [{"type": "nonsense"}]}],
            },
            "messages.0.content.0.type",
        ),
    ],
)
async def test_bad_request_is_invalid_request_error(
    stack: Stack, body: dict[str, Any], param: str
) -> None:
    status, _, raw = await raw_post(stack, "/v1/messages", body)
    assert status == 400
    err = json.loads(raw)
    assert err["type"] == "error"
    assert err["error"]["type"] == "invalid_request_error"
    assert param in err["error"]["message"]
    assert stack.requests == []


async def test_not_json_is_invalid_request_error(stack: Stack) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            stack.url("/v1/messages"),
            data=b"{nope",
            headers={"Content-Type": "application/json"},
        ) as resp,
    ):
        assert resp.status == 400
        err = await resp.json()
    assert err["error"]["type"] == "invalid_request_error"


async def test_api_keys_x_api_key_and_bearer(aiohttp_server: ServerFactory) -> None:
    """The proxy's API keys, sent as x-api-key (ANTHROPIC_API_KEY) or as a Bearer token
    (ANTHROPIC_AUTH_TOKEN); a wrong key is an Anthropic authentication_error."""
    stack = await start_stack(aiohttp_server, api_keys=["sk-right"])
    for kw in ({"api_key": "sk-right"}, {"api_key": None, "auth_token": "sk-right"}):
        async with client_for(stack, **kw) as client:
            message = await client.messages.create(
                model="claude-sonnet-4-6", max_tokens=64, messages=user(T2T.prompt)
            )
        assert message.content[0].text == T2T.expected_content
    for kw in ({"api_key": "sk-wrong"}, {"api_key": None, "auth_token": "sk-wrong"}):
        async with client_for(stack, **kw) as client:
            with pytest.raises(anthropic.AuthenticationError) as info:
                await client.messages.count_tokens(model="claude-sonnet-4-6", messages=user("x"))
        assert isinstance(info.value.body, dict)
        assert info.value.body["error"]["type"] == "authentication_error"
        assert "sk-wrong" not in json.dumps(info.value.body)
    status, _, raw = await raw_post(
        stack, "/v1/messages/count_tokens", {"model": "x", "messages": user("x")}
    )
    err = json.loads(raw)
    assert (status, err["error"]["type"]) == (401, "authentication_error")
    assert "x-api-key" in err["error"]["message"]


async def test_model_map_setting(aiohttp_server: ServerFactory) -> None:
    """``anthropic_model_map`` sends a haiku name to the mapped model (and its thinking)."""
    stack = await start_stack(
        aiohttp_server, anthropic_model_map={"claude-*haiku*": "qwen3.6-plus-thinking"}
    )
    async with client_for(stack) as client:
        message = await client.messages.create(
            model="claude-3-5-haiku-20241022", max_tokens=1024, messages=user(SUMMARY.prompt)
        )
    assert message.model == "claude-3-5-haiku-20241022"
    assert message.content[-1].text == SUMMARY.expected_content
    assert upstream_body(stack)["model"] == "qwen3.6-plus"


# -- native multi-turn -----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_second_turn_continues_the_upstream_chat(
    aiohttp_server: ServerFactory, stream: bool
) -> None:
    """Claude-style history (top-level ``system``, text blocks) continues the gateway's chat:
    the second turn sends only the new user text, to the same chat, after the first answer."""
    from recorder.synthetic_conversations import CONVERSATIONS, flattened, response_id

    conv = next(c for c in CONVERSATIONS if c.name == "conversation_system_prompt")
    stack = await start_stack(aiohttp_server)

    async def ask(messages: list[dict[str, Any]]) -> str:
        kw: dict[str, Any] = {
            "model": "claude-sonnet-4-6",
            "max_tokens": 256,
            "system": [{"type": "text", "text": conv.system}],
            "messages": messages,
        }
        async with client_for(stack) as client:
            if stream:
                async with client.messages.stream(**kw) as s:
                    message = await s.get_final_message()
            else:
                message = await client.messages.create(**kw)
        return "".join(b.text for b in message.content if b.type == "text")

    first = [{"role": "user", "content": [{"type": "text", "text": conv.user1}]}]
    assert await ask(first) == "".join(conv.answer1)
    await stack.proxy.app[SERVICE].close()  # let the conversation store's put finish
    second = [
        *first,
        {"role": "assistant", "content": [{"type": "text", "text": "".join(conv.answer1)}]},
        {"role": "user", "content": conv.user2},
    ]
    assert await ask(second) == "".join(conv.answer2)
    one, two = (json.loads(r.body) for r in stack.upstream(COMPLETIONS_PATH))
    assert one["messages"][0]["content"] == flattened(conv.first_messages())
    assert two["chat_id"] == one["chat_id"]
    assert two["messages"][0]["content"] == conv.user2
    assert two["parent_id"] == response_id(conv, "1")


# -- models ----------------------------------------------------------------------------------------


async def test_models_for_anthropic_clients(stack: Stack) -> None:
    """The anthropic SDK lists and retrieves models (Claude Code's gateway model discovery);
    the OpenAI shape is unchanged, with the Anthropic fields added."""
    async with client_for(stack) as client:
        page = await client.models.list()
        ids = [m.id async for m in page]
        one = await client.models.retrieve("qwen3-max")
        with pytest.raises(anthropic.NotFoundError) as info:
            await client.models.retrieve("qwen-nope")
    assert "qwen3-max" in ids and "qwen3-max-thinking" in ids
    assert (one.id, one.type, one.display_name) == ("qwen3-max", "model", "qwen3-max")
    assert one.created_at.year >= 2000
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["type"] == "not_found_error"
    async with stack.async_client() as openai_client:
        listed = await openai_client.models.list()
    assert [m.id for m in listed.data] == ids
    assert all(m.object == "model" for m in listed.data)


# -- max_tokens and stop_sequences -----------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_sequence_and_max_tokens(stack: Stack, stream: bool) -> None:
    """``stop_sequences`` cut the text before the sequence (``stop_reason: "stop_sequence"``,
    the sequence named); a small ``max_tokens`` ends the answer early with ``max_tokens``."""

    async def ask(**kw: Any) -> anthropic.types.Message:
        body: dict[str, Any] = {"model": "claude-sonnet-4-6", "messages": user(T2T.prompt), **kw}
        async with client_for(stack) as client:
            if stream:
                async with client.messages.stream(**body) as s:
                    return await s.get_final_message()
            return await client.messages.create(**body)

    cut = await ask(max_tokens=256, stop_sequences=["nice", "zzz"])
    assert cut.content[0].type == "text"
    assert cut.content[0].text == T2T.expected_content.split("nice")[0]
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", "nice")
    short = await ask(max_tokens=2)
    assert short.stop_reason == "max_tokens"
    assert short.content[0].type == "text"
    text = short.content[0].text
    assert text and len(text) < len(T2T.expected_content)
    assert T2T.expected_content.startswith(text)


# -- pings ---------------------------------------------------------------------------------------


def _frame(obj: Any) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def _delta(phase: str, content: str, status: str = "typing") -> bytes:
    delta = {"phase": phase, "content": content, "status": status}
    return _frame({"choices": [{"delta": delta}], "usage": {"input_tokens": 3, "output_tokens": 2}})


async def test_pings_while_the_site_sends_nothing_new(aiohttp_client: Any) -> None:
    """After message_start, site keep-alives that give the client nothing become ``ping``
    events (the relay's interval is 0 here), in place, and the stream still ends properly;
    under ``reasoning = think_tags`` the reasoning is still a thinking block."""
    info = _frame({"response.info": {"action": "keep_alive"}})
    chunks = [
        _delta("think", "hmm"),
        info,
        _delta("answer", "Yes"),
        info,
        info,
        _delta("answer", "", "finished"),
    ]
    app = make_app(Settings(upstream_url="http://127.0.0.1:9", reasoning="think_tags"))

    async def handler(request: web.Request) -> web.StreamResponse:
        conv = Conversation("m", [Turn("user", "hi")], stream=True)
        renderer = AnthropicStream(model="claude-sonnet-4-6", input_tokens=1)
        return await relay(request, conv, StubChat(chunks), renderer, keepalive_s=0)  # type: ignore[arg-type]

    app.router.add_post("/stub", handler)
    client = await aiohttp_client(app)
    resp = await client.post("/stub")
    assert resp.status == 200
    frames = sse_frames(await resp.read())
    names = [n for n, _ in frames]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "ping",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "ping",
        "ping",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert frames[2][1]["content_block"]["type"] == "thinking"
    assert frames[7][1]["delta"] == {"type": "text_delta", "text": "Yes"}


async def test_sync_client_stream_and_create(stack: Stack) -> None:
    """The sync SDK (what scripts use), in a thread: the same answer streamed and not."""
    import asyncio

    def run() -> tuple[str, str]:
        with anthropic.Anthropic(
            base_url=str(stack.proxy.make_url("")), api_key="test", max_retries=0
        ) as client:
            created = client.messages.create(
                model="claude-sonnet-4-6", max_tokens=256, messages=user(ZH.prompt)
            )
            with client.messages.stream(
                model="claude-sonnet-4-6", max_tokens=256, messages=user(ZH.prompt)
            ) as s:
                streamed = "".join(s.text_stream)
        assert created.content[0].type == "text"
        return created.content[0].text, streamed

    created, streamed = await asyncio.to_thread(run)
    assert created == streamed == ZH.expected_content
