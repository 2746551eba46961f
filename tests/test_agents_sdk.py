"""The OpenAI Agents SDK (``openai-agents``) end to end: Agent -> the proxy's /v1/responses ->
the replay server.

An agent with one function tool runs its loop through the gateway: the model's ``<tool_call>``
markup becomes a ``function_call``, the SDK runs the Python function, sends its
``function_call_output`` back, and the model's prose is the final output (cassettes
``responses_agent_call`` and ``responses_agent_result``); streamed (``run_streamed``) too.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from agents import (
    Agent,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from helpers import SCENARIO, ServerFactory, Stack, start_stack

from proxy.frontdoors.responses import build_conversation, parse_request
from proxy.tools.prompt import build_prompt
from recorder.synthetic_responses import (
    AGENT_CALL_ARGUMENTS,
    AGENT_QUESTION,
    AGENT_TOOL,
    AGENT_TOOL_OUTPUT,
    CONTINUES,
    RESPONSES_SCENARIOS,
)

set_tracing_disabled(True)  # never send traces to OpenAI from the tests

BY_NAME = {s.name: s for s in RESPONSES_SCENARIOS}
FLAT_TOOL = {"type": "function", **AGENT_TOOL["function"], "strict": True}


@pytest.fixture
async def stack(aiohttp_server: ServerFactory) -> Stack:
    """Replay server + proxy with default settings."""
    return await start_stack(aiohttp_server)


def test_agent_cassette_prompts_are_what_the_proxy_sends() -> None:
    """The two requests the SDK sends (as it sends them) flatten to the cassettes' prompts."""
    first = {"model": "qwen3-max", "include": [], "tools": [FLAT_TOOL],
             "input": [{"content": AGENT_QUESTION, "role": "user"}]}  # fmt: skip
    call = {"arguments": AGENT_CALL_ARGUMENTS, "call_id": "call_1", "name": "get_weather",
            "type": "function_call", "id": "fc_1", "status": "completed"}  # fmt: skip
    output = {"call_id": "call_1", "output": AGENT_TOOL_OUTPUT, "type": "function_call_output"}
    second = {**first, "input": [*first["input"], call, output]}
    for body, name in ((first, "responses_agent_call"), (second, "responses_agent_result")):
        assert build_prompt(build_conversation(parse_request(body))) == BY_NAME[name].prompt
    # continued natively in the first turn's chat: only the tool result (turns 2…)
    conv = build_conversation(parse_request(second))
    assert build_prompt(conv, start=2) == CONTINUES["responses_agent_result"][1]


def weather_agent(client: openai.AsyncOpenAI, calls: list[str]) -> Agent[Any]:
    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        calls.append(city)
        return f"{city}: sunny, 21 °C"

    return Agent(
        name="assistant",
        tools=[get_weather],
        model=OpenAIResponsesModel(model="qwen3-max", openai_client=client),
    )


async def test_agent_runs_its_tool_loop(stack: Stack) -> None:
    calls: list[str] = []
    async with stack.async_client() as client:
        result = await Runner.run(weather_agent(client, calls), AGENT_QUESTION)
    assert calls == ["Paris"]
    assert result.final_output == BY_NAME["responses_agent_result"].expected_content
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    assert json.loads(result.new_items[0].raw_item.arguments) == {"city": "Paris"}


async def test_agent_streamed_run(stack: Stack) -> None:
    calls: list[str] = []
    text = ""
    async with stack.async_client() as client:
        result = Runner.run_streamed(weather_agent(client, calls), AGENT_QUESTION)
        async for event in result.stream_events():
            if (
                event.type == "raw_response_event"
                and event.data.type == "response.output_text.delta"
            ):
                text += event.data.delta
    assert calls == ["Paris"]
    assert text == result.final_output == BY_NAME["responses_agent_result"].expected_content


async def test_agent_without_tools_plain_answer(stack: Stack) -> None:
    sc = SCENARIO["t2t_answer"]
    async with stack.async_client() as client:
        agent: Agent[Any] = Agent(
            name="assistant",
            model=OpenAIResponsesModel(model=sc.openai_model, openai_client=client),
        )
        result = await Runner.run(agent, sc.prompt)
    assert result.final_output == sc.expected_content


async def test_agent_with_response_chaining(stack: Stack) -> None:
    """``auto_previous_response_id``: the SDK's second request sends only the tool output and
    names the first response; the gateway's stored history fills in the rest."""
    calls: list[str] = []
    async with stack.async_client() as client:
        result = await Runner.run(
            weather_agent(client, calls), AGENT_QUESTION, auto_previous_response_id=True
        )
        assert result.last_response_id is not None
        last = await client.responses.retrieve(result.last_response_id)
        assert last.previous_response_id is not None  # the SDK chained the second request
        first = await client.responses.retrieve(last.previous_response_id)
    assert calls == ["Paris"]
    assert result.final_output == BY_NAME["responses_agent_result"].expected_content
    assert [i.type for i in first.output] == ["function_call"]
