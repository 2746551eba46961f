"""/v1/messages against the independent fake chat.qwen.ai, via the official anthropic SDK.

Same rig as ``test_integration_fake.py``: the fake answers any prompt from its own chat memory,
in Qwen's ``<tool_call>`` markup when tools are offered, with odd chunking of bytes and text.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import anthropic
import pytest
from fake_site import FakeQwen, Model
from test_integration_fake import KEY, TOKENS, Rig, make_rig

WEATHER_A = {
    "name": "get_weather",
    "description": "Current weather of a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}
TIME_A = {
    "name": "get_time",
    "description": "Local time of a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
async def rig(aiohttp_server: Any) -> Rig:
    return await make_rig(aiohttp_server)


def aclient(rig: Rig) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=str(rig.gateway.make_url("")), api_key=KEY, max_retries=0
    )


async def message(rig: Rig, stream: bool, **kw: Any) -> Any:
    """One /v1/messages call; the final Message (streamed: folded by the SDK's helper), and for
    streams the event types seen."""
    kw.setdefault("model", "claude-sonnet-4-6")
    kw.setdefault("max_tokens", 1024)
    async with aclient(rig) as client:
        if not stream:
            return await client.messages.create(**kw), []
        types: list[str] = []
        async with client.messages.stream(**kw) as s:
            async for event in s:
                types.append(event.type)
            return await s.get_final_message(), types


def blocks(msg: Any, kind: str) -> list[Any]:
    return [b for b in msg.content if b.type == kind]


# -- Anthropic ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_plain(rig: Rig, stream: bool) -> None:
    msg, types = await message(
        rig,
        stream,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "hello"}],
    )
    assert [b.text for b in blocks(msg, "text")] == ["Echo (turn 1): hello — 好的 ✅"]
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    if stream:
        assert types[0] == "message_start" and types[-1] == "message_stop"
    body = rig.fake.completions()[0]
    assert body["model"] == "qwen3-max"
    assert "Be brief." in body["messages"][0]["content"]
    assert rig.fake.violations == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_messages_tool_use(aiohttp_server: Any, stream: bool, fmt: str) -> None:
    rig = await make_rig(aiohttp_server, FakeQwen(TOKENS, model=Model(tool_format=fmt)))  # type: ignore[arg-type]
    msg, _ = await message(
        rig,
        stream,
        tools=[WEATHER_A, TIME_A],
        messages=[{"role": "user", "content": "get_weather city=Paris, days=2"}],
    )
    assert msg.stop_reason == "tool_use"
    (use,) = blocks(msg, "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Paris", "days": 2}
    assert use.id.startswith("toolu_")
    assert not [b for b in blocks(msg, "text") if "<tool_call" in b.text]


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_parallel_tool_use(rig: Rig, stream: bool) -> None:
    msg, _ = await message(
        rig,
        stream,
        tools=[WEATHER_A, TIME_A],
        messages=[{"role": "user", "content": "get_time and get_weather city=Oslo"}],
    )
    uses = blocks(msg, "tool_use")
    assert [(u.name, u.input) for u in uses] == [
        ("get_time", {"city": "Oslo"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    assert len({u.id for u in uses}) == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_tool_result_round_trip(rig: Rig, stream: bool) -> None:
    history: list[dict[str, Any]] = [{"role": "user", "content": "get_weather city=Paris"}]
    first, _ = await message(rig, stream, tools=[WEATHER_A], messages=history)
    use = blocks(first, "tool_use")[0]
    history += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C, rain"}],
        },
    ]
    second, _ = await message(rig, stream, tools=[WEATHER_A], messages=history)
    assert second.stop_reason == "end_turn"
    assert blocks(second, "text")[0].text == "Based on the tool result: 18 C, rain."
    b1, b2 = rig.fake.completions()
    assert b2["chat_id"] == b1["chat_id"] and b2["parent_id"] is not None
    assert rig.fake.violations == []


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_thinking(rig: Rig, stream: bool) -> None:
    msg, _ = await message(
        rig,
        stream,
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "think"}],
    )
    (th,) = blocks(msg, "thinking")
    assert "Thinking about it." in th.thinking
    assert blocks(msg, "text")[0].text == "Echo (turn 1): think — 好的 ✅"
    assert rig.fake.completions()[0]["messages"][0]["feature_config"]["thinking_enabled"]


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_multi_turn(rig: Rig, stream: bool) -> None:
    m1, _ = await message(rig, stream, messages=[{"role": "user", "content": "one"}])
    history = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": blocks(m1, "text")[0].text},
        {"role": "user", "content": "two"},
    ]
    m2, _ = await message(rig, stream, messages=history)
    assert blocks(m2, "text")[0].text == "Echo (turn 2): two — 好的 ✅"


async def test_messages_errors(aiohttp_server: Any) -> None:
    fake = FakeQwen(["tok-only"])
    rig = await make_rig(aiohttp_server, fake)
    with pytest.raises(anthropic.NotFoundError) as nf:
        await message(
            rig, False, model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError):
        async with anthropic.AsyncAnthropic(
            base_url=str(rig.gateway.make_url("")), api_key="wrong", max_retries=0
        ) as client:
            await client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=10,
                messages=[{"role": "user", "content": "x"}],
            )
    fake.accounts["tok-only"].behaviour = "ratelimited"
    with pytest.raises(anthropic.RateLimitError) as rl:
        await message(rig, False, messages=[{"role": "user", "content": "x"}])
    assert rl.value.response.headers.get("retry-after")
    assert rl.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


async def test_count_tokens(rig: Rig) -> None:
    async with aclient(rig) as client:
        n = await client.messages.count_tokens(
            model="claude-sonnet-4-6",
            messages=[{"role": "user", "content": "hello"}],
            tools=[WEATHER_A],  # type: ignore[list-item]
        )
    assert n.input_tokens > 0


@pytest.mark.parametrize("tools", [False, True])
async def test_messages_stream_events_are_coherent(rig: Rig, tools: bool) -> None:
    """Raw events: blocks opened, filled and closed in index order with the delta type of
    their block; message_delta carries the stop reason and output tokens."""
    kw: dict[str, Any] = {"tools": [WEATHER_A]} if tools else {}
    text = "get_weather city=Paris" if tools else "hello"
    async with aclient(rig) as client:
        stream = await client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=2048,
            stream=True,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": text}],
            **kw,
        )
        events = [e async for e in stream]
    types = [e.type for e in events if e.type != "ping"]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    open_block: dict[int, str] = {}
    closed: list[int] = []
    for e in events:
        if e.type == "content_block_start":
            assert e.index == len(closed) and e.index not in open_block
            open_block[e.index] = e.content_block.type
        elif e.type == "content_block_delta":
            want = {"text_delta": "text", "input_json_delta": "tool_use"}
            want |= {"thinking_delta": "thinking", "signature_delta": "thinking"}
            assert open_block[e.index] == want[e.delta.type]
        elif e.type == "content_block_stop":
            closed.append(e.index)
            del open_block[e.index]
    assert not open_block
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.delta.stop_reason == ("tool_use" if tools else "end_turn")
    assert delta.usage.output_tokens > 0


@pytest.mark.parametrize("kind", ["error_midstream", "cut_midstream"])
async def test_messages_failure_mid_answer(aiohttp_server: Any, kind: str) -> None:
    fake = FakeQwen(["tok-only"])
    fake.accounts["tok-only"].behaviour = kind  # type: ignore[assignment]
    rig = await make_rig(aiohttp_server, fake)
    long = [{"role": "user", "content": "a fairly long question to answer"}]
    with pytest.raises(anthropic.APIStatusError) as info:
        await message(rig, False, messages=long)
    assert info.value.status_code == 502
    assert info.value.body["type"] == "error"  # type: ignore[index]
    with pytest.raises(anthropic.APIError):
        await message(rig, True, messages=long)


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_hangup_sends_the_stop_call(rig: Rig, stream: bool) -> None:
    rig.fake.hold = True
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "stream": stream,
        "messages": [{"role": "user", "content": "a long story"}],
    }
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as s:
        task = asyncio.ensure_future(s.post(rig.url("/v1/messages"), json=body, headers=headers))
        await asyncio.wait_for(rig.fake.held.wait(), 2)
        task.cancel()
    await asyncio.wait_for(rig.fake.stopped.wait(), 2)
    (stop,) = rig.fake.stops
    assert stop["chat_id"] in rig.fake.chats


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_tool_choice(rig: Rig, stream: bool) -> None:
    text = [{"role": "user", "content": "get_weather city=Riga"}]
    none, _ = await message(
        rig, stream, tools=[WEATHER_A], tool_choice={"type": "none"}, messages=text
    )
    assert none.stop_reason == "end_turn" and not blocks(none, "tool_use")
    any_, _ = await message(
        rig,
        stream,
        tools=[WEATHER_A, TIME_A],
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "weather city=Riga"}],
    )
    assert [b.name for b in blocks(any_, "tool_use")] == ["get_weather"]
    named, _ = await message(
        rig,
        stream,
        tools=[WEATHER_A, TIME_A],
        tool_choice={"type": "tool", "name": "get_time"},
        messages=text,
    )
    assert [(b.name, b.input) for b in blocks(named, "tool_use")] == [
        ("get_time", {"city": "Riga"})
    ]
    single, _ = await message(
        rig,
        stream,
        tools=[WEATHER_A, TIME_A],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "get_weather and get_time city=Riga"}],
    )
    assert len(blocks(single, "tool_use")) == 1
    assert rig.fake.violations == []


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_stop_sequences_and_max_tokens(rig: Rig, stream: bool) -> None:
    msg, _ = await message(
        rig, stream, stop_sequences=["turn"], messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "turn"
    assert blocks(msg, "text")[0].text == "Echo ("
    short, _ = await message(
        rig, stream, max_tokens=3, messages=[{"role": "user", "content": "a long answer"}]
    )
    assert short.stop_reason == "max_tokens"
    assert short.usage.output_tokens <= 4


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_round_trip_with_thinking_and_preface(
    aiohttp_server: Any, stream: bool
) -> None:
    """Claude Code sends the thinking block (with its signature) and the preface text back with
    the tool_use: the result still continues the chat natively."""
    fake = FakeQwen(TOKENS, model=Model(preface="Checking the weather now.\n"))
    rig = await make_rig(aiohttp_server, fake)
    think = {"type": "enabled", "budget_tokens": 1024}
    history: list[dict[str, Any]] = [{"role": "user", "content": "get_weather city=Graz"}]
    kw: dict[str, Any] = {"tools": [WEATHER_A], "thinking": think, "max_tokens": 2048}
    first, _ = await message(rig, stream, messages=history, **kw)
    assert [b.type for b in first.content] == ["thinking", "text", "tool_use"]
    use = blocks(first, "tool_use")[0]
    history += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "12 C"}],
        },
    ]
    second, _ = await message(rig, stream, messages=history, **kw)
    assert blocks(second, "text")[-1].text == "Based on the tool result: 12 C."
    b1, b2 = rig.fake.completions()
    assert b2["chat_id"] == b1["chat_id"] and b2["parent_id"] is not None


async def test_interleaved_thinking_lets_the_budget_exceed_max_tokens(rig: Rig) -> None:
    """Anthropic refuses ``budget_tokens`` >= ``max_tokens``, except with the
    ``interleaved-thinking`` beta (Claude Code sends it): there the budget spans the turn."""
    kw: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "messages": [{"role": "user", "content": "think"}],
    }
    async with aclient(rig) as client:
        msg = await client.beta.messages.create(
            **kw, betas=["claude-code-20250219", "interleaved-thinking-2025-05-14"]
        )
        assert blocks(msg, "thinking")
        with pytest.raises(anthropic.BadRequestError) as info:
            await client.messages.create(**kw)
    assert "thinking.budget_tokens" in info.value.message


async def test_claude_code_beta_paths(rig: Rig) -> None:
    """Claude Code calls /v1/messages?beta=true (the SDK's beta namespace) with beta headers."""
    async with aclient(rig) as client:
        msg = await client.beta.messages.create(
            model="claude-haiku-4-5",
            max_tokens=1,
            messages=[{"role": "user", "content": "quota"}],
            betas=["claude-code-20250219", "interleaved-thinking-2025-05-14"],
        )
        n = await client.beta.messages.count_tokens(
            model="claude-haiku-4-5", messages=[{"role": "user", "content": "quota"}]
        )
    assert msg.type == "message" and msg.content
    assert n.input_tokens > 0


async def test_tool_result_blocks_and_errors(rig: Rig) -> None:
    history: list[dict[str, Any]] = [{"role": "user", "content": "get_weather city=Ulm"}]
    first, _ = await message(rig, False, tools=[WEATHER_A], messages=history)
    use = blocks(first, "tool_use")[0]
    history += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": use.id,
                    "is_error": True,
                    "content": [{"type": "text", "text": "service down"}],
                }
            ],
        },
    ]
    second, _ = await message(rig, True, tools=[WEATHER_A], messages=history)
    text = blocks(second, "text")[0].text
    assert text.startswith("Based on the tool result:") and "service down" in text
