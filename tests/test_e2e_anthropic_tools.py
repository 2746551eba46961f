"""End to end: tool use through /v1/messages with the official anthropic SDK.

The tool cassettes of ``recorder.synthetic_tools`` hold OpenAI chat requests; each is sent here
as the equivalent Anthropic request (``tools`` with ``input_schema``, ``tool_use`` and
``tool_result`` blocks in the history), which must reach the very same upstream prompt, and the
answer must come back as Anthropic ``tool_use`` blocks: the same calls, the same preface text,
``stop_reason: "tool_use"`` (or ``end_turn`` when no call survived), streamed and not.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from helpers import COMPLETIONS_PATH, ServerFactory, Stack, start_stack

from recorder.synthetic_tools import BY_NAME, TOOL_SCENARIOS, TOOLS, ToolScenario


@pytest.fixture
async def stack(aiohttp_server: ServerFactory) -> Stack:
    return await start_stack(aiohttp_server)


def client_for(stack: Stack) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=str(stack.proxy.make_url("")), api_key="test", max_retries=0
    )


def anthropic_tools() -> list[dict[str, Any]]:
    """:data:`TOOLS` (OpenAI function tools) as Anthropic tools."""
    return [
        {
            "name": t["function"]["name"],
            "description": t["function"]["description"],
            "input_schema": t["function"]["parameters"],
        }
        for t in TOOLS
    ]


def anthropic_messages(ts: ToolScenario) -> list[dict[str, Any]]:
    """The scenario's OpenAI history as Anthropic messages (calls as ``tool_use`` blocks, results
    as ``tool_result`` blocks of a user message)."""
    out: list[dict[str, Any]] = []
    for m in ts.messages:
        if m["role"] == "user":
            out.append({"role": "user", "content": m["content"]})
        elif m["role"] == "assistant":
            blocks: list[dict[str, Any]] = []
            if m.get("content"):
                blocks.append({"type": "text", "text": m["content"]})
            for call in m.get("tool_calls") or ():
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": "toolu_" + call["id"].removeprefix("call_"),
                        "name": call["function"]["name"],
                        "input": json.loads(call["function"]["arguments"]),
                    }
                )
            out.append({"role": "assistant", "content": blocks})
        elif m["role"] == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": "toolu_" + m["tool_call_id"].removeprefix("call_"),
                "content": m["content"],
            }
            out.append({"role": "user", "content": [result]})
    return out


def anthropic_tool_choice(choice: Any) -> dict[str, Any] | None:
    """An OpenAI ``tool_choice`` as Anthropic's: ``required`` is ``any``, a named function is
    ``{"type": "tool", "name"}``."""
    if choice is None:
        return None
    if choice == "required":
        return {"type": "any"}
    if choice in ("auto", "none"):
        return {"type": choice}
    return {"type": "tool", "name": choice["function"]["name"]}


async def ask(stack: Stack, ts: ToolScenario, *, stream: bool, **kw: Any) -> Any:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "messages": anthropic_messages(ts),
        "tools": anthropic_tools(),
        **kw,
    }
    choice = anthropic_tool_choice(ts.tool_choice)
    if choice is not None:
        body["tool_choice"] = choice
    async with client_for(stack) as client:
        if stream:
            async with client.messages.stream(**body) as s:
                return await s.get_final_message()
        return await client.messages.create(**body)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", [t.name for t in TOOL_SCENARIOS])
async def test_tool_scenarios(stack: Stack, name: str, stream: bool) -> None:
    """Every tool cassette gives its calls as tool_use blocks (after its preface text)."""
    ts = BY_NAME[name]
    message = await ask(stack, ts, stream=stream)
    texts = [b.text for b in message.content if b.type == "text"]
    calls = [b for b in message.content if b.type == "tool_use"]
    assert "".join(texts) == (ts.expected_content or "")
    assert [(c.name, c.input) for c in calls] == [(n, a) for n, a in ts.expected_calls]
    assert all(c.id.startswith("toolu_") for c in calls)
    assert len({c.id for c in calls}) == len(calls)
    if calls:
        assert [b.type for b in message.content][-len(calls) :] == ["tool_use"] * len(calls)
    expected = "tool_use" if ts.expected_finish == "tool_calls" else "end_turn"
    assert message.stop_reason == expected
    sent = json.loads(stack.upstream(COMPLETIONS_PATH)[0].body)
    assert sent["messages"][0]["content"] == ts.scenario.prompt


async def test_tool_use_round_trip(stack: Stack) -> None:
    """The call of one turn goes back as tool_use + tool_result, and the model answers."""
    first = await ask(stack, BY_NAME["tool_preface_call"], stream=True)
    (call,) = [b for b in first.content if b.type == "tool_use"]
    result_ts = BY_NAME["tool_result_turn"]
    user_q = result_ts.messages[0]["content"]
    tool_result = result_ts.messages[2]["content"]
    async with client_for(stack) as client:
        second = await client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=1024,
            tools=anthropic_tools(),  # type: ignore[arg-type]
            messages=[
                {"role": "user", "content": user_q},
                {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": call.id, "content": tool_result}
                    ],
                },
            ],
        )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    assert second.content[0].text == result_ts.expected_content


async def test_tool_use_stream_wire(stack: Stack) -> None:
    """The raw stream: text block, then a tool_use block starting with ``input: {}`` whose
    input_json_delta pieces make the arguments, then stop_reason tool_use."""
    import aiohttp

    ts = BY_NAME["tool_preface_call"]
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "stream": True,
        "messages": anthropic_messages(ts),
        "tools": anthropic_tools(),
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(stack.url("/v1/messages"), json=body) as resp,
    ):
        raw = (await resp.read()).decode()
    frames = [json.loads(b.split("\n")[1][6:]) for b in raw.split("\n\n") if b.strip()]
    starts = [f["content_block"] for f in frames if f["type"] == "content_block_start"]
    assert [s["type"] for s in starts] == ["text", "tool_use"]
    assert starts[1]["input"] == {} and starts[1]["name"] == "get_weather"
    pieces = [
        f["delta"]["partial_json"]
        for f in frames
        if f["type"] == "content_block_delta" and f["delta"]["type"] == "input_json_delta"
    ]
    assert json.loads("".join(pieces)) == {"city": "Paris"}
    (delta,) = [f for f in frames if f["type"] == "message_delta"]
    assert delta["delta"]["stop_reason"] == "tool_use"


async def test_tool_choice_none_sends_no_tool_prompt(stack: Stack) -> None:
    """``tool_choice: none``: the tools are not described upstream (the plain prompt)."""
    from helpers import SCENARIO

    async with client_for(stack) as client:
        message = await client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=256,
            tools=anthropic_tools(),  # type: ignore[arg-type]
            tool_choice={"type": "none"},
            messages=[{"role": "user", "content": SCENARIO["t2t_answer"].prompt}],
        )
    assert message.content[0].type == "text"
    assert message.content[0].text == SCENARIO["t2t_answer"].expected_content
    assert message.stop_reason == "end_turn"


async def test_claude_code_shaped_request(stack: Stack) -> None:
    """What Claude Code adds around a turn (``?beta=true``, beta and app headers,
    ``cache_control`` everywhere, ``metadata``, ``context_management``, tool extras) changes
    nothing: the same upstream prompt, the same call."""
    import aiohttp

    ts = BY_NAME["tool_preface_call"]
    tools = [
        {**t, "cache_control": {"type": "ephemeral"}, "defer_loading": False, "input_examples": []}
        for t in anthropic_tools()
    ]
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 32000,
        "stream": True,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": ts.messages[0]["content"],
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            }
        ],
        "tools": tools,
        "metadata": {"user_id": "user_abc_account__session_1"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "temperature": 1,
    }
    headers = {
        "x-api-key": "test",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,"
        "fine-grained-tool-streaming-2025-05-14",
        "x-app": "cli",
        "User-Agent": "claude-cli/2.0.0 (external, cli)",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(stack.url("/v1/messages?beta=true"), json=body, headers=headers) as resp,
    ):
        assert resp.status == 200
        raw = (await resp.read()).decode()
    frames = [json.loads(b.split("\n")[1][6:]) for b in raw.split("\n\n") if b.strip()]
    starts = [f["content_block"] for f in frames if f["type"] == "content_block_start"]
    assert [(s["type"], s.get("name")) for s in starts] == [
        ("text", None),
        ("tool_use", "get_weather"),
    ]
    sent = json.loads(stack.upstream(COMPLETIONS_PATH)[0].body)
    assert sent["messages"][0]["content"] == ts.scenario.prompt
