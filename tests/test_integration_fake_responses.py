"""/v1/responses against the independent fake chat.qwen.ai, via the official openai SDK.

Same rig as ``test_integration_fake.py``: the fake answers any prompt from its own chat memory,
in Qwen's ``<tool_call>`` markup when tools are offered, with odd chunking of bytes and text.
Skipped until the Responses front door (branch agents-responses) is in the tree.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest

pytest.importorskip("proxy.frontdoors.responses", reason="the Responses front door is not merged")
from fake_site import FakeQwen, Model
from test_integration_fake import KEY, TOKENS, Rig, make_rig
from test_integration_fake_redis import Pair, start_pair

from proxy.api_models import MAX_JSON_DEPTH

WEATHER_R = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}


@pytest.fixture
async def rig(aiohttp_server: Any) -> Rig:
    return await make_rig(aiohttp_server)


def _depth(value: Any) -> int:
    """The nesting levels of objects and arrays in ``value`` (a scalar: 0, ``{}``: 1)."""
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((_depth(c) for c in children), default=0)
    return 0


# -- Responses ------------------------------------------------------------------------------------


def oclient(rig: Rig) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(rig.gateway.make_url("/v1")), api_key=KEY, max_retries=0)


async def respond(rig: Rig, stream: bool, **kw: Any) -> tuple[Any, list[str]]:
    kw.setdefault("model", "qwen3-max")
    async with oclient(rig) as client:
        if not stream:
            return await client.responses.create(**kw), []
        types: list[str] = []
        final = None
        s = await client.responses.create(stream=True, **kw)
        async for event in s:
            types.append(event.type)
            if event.type == "response.completed":
                final = event.response
        assert final is not None, types
        return final, types


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_plain_and_previous_response_id(rig: Rig, stream: bool) -> None:
    r1, types = await respond(rig, stream, input="hello", instructions="Be brief.")
    assert r1.output_text == "Echo (turn 1): hello — 好的 ✅"
    assert r1.status == "completed" and r1.usage.input_tokens > 0
    if stream:
        assert types[:2] == ["response.created", "response.in_progress"]
        assert types[-1] == "response.completed"
    r2, _ = await respond(rig, stream, input="again", previous_response_id=r1.id)
    assert r2.output_text == "Echo (turn 2): again — 好的 ✅"
    b1, b2 = rig.fake.completions()
    assert b2["chat_id"] == b1["chat_id"] and b2["messages"][0]["content"] == "again"
    assert rig.fake.violations == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_responses_function_call_round_trip(
    aiohttp_server: Any, stream: bool, fmt: str
) -> None:
    rig = await make_rig(aiohttp_server, FakeQwen(TOKENS, model=Model(tool_format=fmt)))  # type: ignore[arg-type]
    r1, _ = await respond(rig, stream, input="get_weather city=Paris, days=3", tools=[WEATHER_R])
    (call,) = [o for o in r1.output if o.type == "function_call"]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris", "days": 3}
    out = [{"type": "function_call_output", "call_id": call.call_id, "output": "9 C, fog"}]
    r2, _ = await respond(rig, stream, input=out, previous_response_id=r1.id, tools=[WEATHER_R])
    assert r2.output_text == "Based on the tool result: 9 C, fog."
    b1, b2 = rig.fake.completions()
    assert b2["chat_id"] == b1["chat_id"]
    assert rig.fake.violations == []


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_with_a_schema_nested_to_the_limit_is_answered_and_stored(
    rig: Rig, stream: bool
) -> None:
    """A body nesting exactly ``MAX_JSON_DEPTH`` levels (in a tool's ``parameters``) is
    answered, stored and read back: the response object and the stored entry nest the
    client's values a few levels deeper, still encodable (past 254 levels encoding them failed
    after the upstream call, a 500)."""
    # body > tools > [0] > parameters > properties: 5 levels, then the schema of `x`: object
    # schemas of 2 levels each, down to a leaf schema of 1 or 2
    levels = MAX_JSON_DEPTH - 5
    deep: Any = {"type": "string"} if levels % 2 else {"type": "array", "items": {}}
    for _ in range((levels - 1) // 2):
        deep = {"type": "object", "properties": {"y": deep}}
    tool = {**WEATHER_R, "parameters": {"type": "object", "properties": {"x": deep}}}
    body = {"input": "chat only: hello", "tools": [tool]}
    assert _depth(body) == MAX_JSON_DEPTH
    r1, _ = await respond(rig, stream, **body)
    assert r1.status == "completed"
    async with aiohttp.ClientSession() as s:
        async with s.get(
            rig.gateway.make_url(f"/v1/responses/{r1.id}"),
            headers={"Authorization": f"Bearer {KEY}"},
        ) as r:
            assert r.status == 200, await r.text()
            stored = await r.json()
    assert stored["tools"][0]["parameters"] == tool["parameters"]


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_stateless_round_trip(rig: Rig, stream: bool) -> None:
    """Codex-style: store false, the whole input list every time."""
    items: list[Any] = [{"role": "user", "content": "get_weather city=Rome"}]
    r1, _ = await respond(rig, stream, input=items, tools=[WEATHER_R], store=False)
    (call,) = [o for o in r1.output if o.type == "function_call"]
    items += [
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": "30 C"},
    ]
    r2, _ = await respond(rig, stream, input=items, tools=[WEATHER_R], store=False)
    assert r2.output_text == "Based on the tool result: 30 C."


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_reasoning(rig: Rig, stream: bool) -> None:
    r, _ = await respond(rig, stream, model="qwen3-max-thinking", input="why")
    kinds = [o.type for o in r.output]
    assert kinds[0] == "reasoning" and kinds[-1] == "message"
    assert r.output_text == "Echo (turn 1): why — 好的 ✅"


@pytest.mark.parametrize("tools", [False, True])
async def test_responses_stream_events_are_coherent(rig: Rig, tools: bool) -> None:
    """What Codex relies on: output_item.done items are the final output items (history is
    built from them), arguments .done equal the item's, sequence numbers increase."""
    kw: dict[str, Any] = {"tools": [WEATHER_R]} if tools else {}
    text = "get_weather and get_weather city=Lima" if tools else "hello"
    async with oclient(rig) as client:
        stream = await client.responses.create(
            model="qwen3-max-thinking", input=text, stream=True, **kw
        )
        events = [e async for e in stream]
    seq = [e.sequence_number for e in events]
    assert seq == sorted(seq) and len(set(seq)) == len(seq)
    final = events[-1]
    assert final.type == "response.completed"
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert [i.model_dump() for i in done] == [o.model_dump() for o in final.response.output]
    added = [e.output_index for e in events if e.type == "response.output_item.added"]
    assert added == list(range(len(done)))
    for e in events:
        if e.type == "response.function_call_arguments.done":
            item = final.response.output[e.output_index]
            assert e.arguments == item.arguments
    if tools:
        assert [o.type for o in final.response.output][-1] == "function_call"


async def test_responses_unknown_previous_id_is_a_400(rig: Rig) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await respond(rig, False, input="x", previous_response_id="resp_doesnotexist")
    assert info.value.body["param"] == "previous_response_id"  # type: ignore[index]


@pytest.mark.parametrize("kind", ["error_midstream", "cut_midstream"])
async def test_responses_failure_mid_answer(aiohttp_server: Any, kind: str) -> None:
    fake = FakeQwen(["tok-only"])
    fake.accounts["tok-only"].behaviour = kind  # type: ignore[assignment]
    rig = await make_rig(aiohttp_server, fake)
    with pytest.raises(openai.APIStatusError) as info:
        await respond(rig, False, input="a fairly long question to answer")
    assert info.value.status_code == 502
    async with oclient(rig) as client:
        stream = await client.responses.create(
            model="qwen3-max", input="a fairly long question to answer", stream=True
        )
        events = [e async for e in stream]
    types = [e.type for e in events]
    assert "response.completed" not in types
    assert types[-1] == "response.failed", types
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None and failed.error.message


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_hangup_sends_the_stop_call(rig: Rig, stream: bool) -> None:
    rig.fake.hold = True
    body = {"model": "qwen3-max", "input": "a long story", "stream": stream}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as s:
        task = asyncio.ensure_future(s.post(rig.url("/v1/responses"), json=body, headers=headers))
        await asyncio.wait_for(rig.fake.held.wait(), 2)
        task.cancel()
    await asyncio.wait_for(rig.fake.stopped.wait(), 2)
    (stop,) = rig.fake.stops
    assert stop["chat_id"] in rig.fake.chats


@pytest.fixture
async def pair(aiohttp_server: Any, redis_server: str) -> Pair:
    return await start_pair(aiohttp_server, redis_server)


async def test_previous_response_id_on_the_other_instance(pair: Pair) -> None:
    """Two instances, one Redis: a response made on A is continued on B, natively."""
    async with pair.responses_client("a") as a:
        r1 = await a.responses.create(model="qwen3-max", input="hello")
    async with pair.responses_client("b") as b:
        r2 = await b.responses.create(model="qwen3-max", input="again", previous_response_id=r1.id)
    assert r2.output_text == "Echo (turn 2): again — 好的 ✅"
    b1, b2 = pair.fake.completions()
    assert b2["chat_id"] == b1["chat_id"]


@pytest.mark.parametrize("streamed", [False, True])
async def test_an_agents_sdk_agent_runs_its_tool_loop(rig: Rig, streamed: bool) -> None:
    """The OpenAI Agents SDK's own loop: call, the Python function runs, its output goes back,
    the model's prose is the final output; the second turn continues the first's chat."""
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    ran: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        ran.append(city)
        return f"{city}: sunny, 21 C"

    async with oclient(rig) as client:
        agent: Agent[Any] = Agent(
            name="assistant",
            instructions="You help with the weather.",
            tools=[get_weather],
            model=OpenAIResponsesModel(model="qwen3-max", openai_client=client),
        )
        if streamed:
            run = Runner.run_streamed(agent, "get_weather city=Turin")
            async for _ in run.stream_events():
                pass
            final = run.final_output
        else:
            final = (await Runner.run(agent, "get_weather city=Turin")).final_output
    assert ran == ["Turin"]
    assert final == "Based on the tool result: Turin: sunny, 21 C."
    b1, b2 = rig.fake.completions()
    assert b2["chat_id"] == b1["chat_id"], "the tool output did not continue the chat"
    assert rig.fake.violations == []


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_tool_choice(rig: Rig, stream: bool) -> None:
    time_tool = {**WEATHER_R, "name": "get_time"}
    none, _ = await respond(
        rig, stream, input="get_weather city=Bari", tools=[WEATHER_R], tool_choice="none"
    )
    assert [o.type for o in none.output] == ["message"]
    named, _ = await respond(
        rig,
        stream,
        input="get_weather city=Bari",
        tools=[WEATHER_R, time_tool],
        tool_choice={"type": "function", "name": "get_time"},
    )
    assert [(o.type, o.name) for o in named.output if o.type == "function_call"] == [
        ("function_call", "get_time")
    ]
    required, _ = await respond(
        rig, stream, input="weather city=Bari", tools=[WEATHER_R], tool_choice="required"
    )
    assert [o.type for o in required.output][-1] == "function_call"


@pytest.mark.parametrize("stream", [False, True])
async def test_codex_style_round_trip_with_reasoning_items(rig: Rig, stream: bool) -> None:
    """Codex: store false, instructions every turn, the whole input list each time including
    the reasoning item and the preface message it got: the result continues the chat."""
    items: list[Any] = [{"role": "user", "content": "get_weather city=Nantes"}]
    kw: dict[str, Any] = {
        "model": "qwen3-max-thinking",
        "instructions": "You are Codex.",
        "tools": [WEATHER_R],
        "store": False,
        "include": ["reasoning.encrypted_content"],
    }
    r1, _ = await respond(rig, stream, input=items, **kw)
    kinds = [o.type for o in r1.output]
    assert kinds[0] == "reasoning" and kinds[-1] == "function_call"
    items += [o.model_dump(exclude_none=True) for o in r1.output]
    call = r1.output[-1]
    items.append({"type": "function_call_output", "call_id": call.call_id, "output": "rain"})
    r2, _ = await respond(rig, stream, input=items, **kw)
    assert r2.output_text == "Based on the tool result: rain."
    b1, b2 = rig.fake.completions()
    assert b2["chat_id"] == b1["chat_id"], "the tool output did not continue the chat"
