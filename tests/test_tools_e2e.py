"""Tool calling end to end: the official openai SDK -> the proxy -> the replay server.

The tool cassettes (``recorder/synthetic_tools.py``) answer fixed requests whose upstream prompt
is built here by the proxy (:func:`proxy.tools.prompt.build_prompt`) and, independently, by the
builder: both must agree, or the replay server would not find the answers. Every scenario runs
streamed and not; the stream's wire shape (first delta of a call, indexes, finish reason) is
checked on raw bytes too, and the replay server's log shows what went upstream.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai
import pytest
from helpers import COMPLETIONS_PATH, ServerFactory, Stack, sse_data, start_stack

from proxy.frontdoors.openai_chat import parse_chat
from proxy.tools.prompt import build_prompt
from recorder.synthetic_tools import BY_NAME, PARIS_RESULT, TOOL_SCENARIOS, ToolScenario

NAMES = [t.name for t in TOOL_SCENARIOS]


@pytest.fixture
async def stack(aiohttp_server: ServerFactory) -> Stack:
    """Replay server + proxy with default settings."""
    return await start_stack(aiohttp_server)


@pytest.mark.parametrize("name", NAMES)
def test_cassette_prompt_is_what_the_proxy_sends(name: str) -> None:
    """The builder's prompt equals the proxy's for the scenario's request."""
    ts = BY_NAME[name]
    conv = parse_chat(json.dumps(ts.request()).encode())
    assert build_prompt(conv) == ts.scenario.prompt


def _calls_of(message_calls: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in message_calls or []]


async def _stream(client: openai.AsyncOpenAI, ts: ToolScenario, **kw: Any) -> dict[str, Any]:
    """Stream with the SDK and fold the deltas as an agent does (by ``index``)."""
    stream = await client.chat.completions.create(**ts.request(stream=True, **kw))
    content = ""
    calls: dict[int, dict[str, Any]] = {}
    firsts: list[Any] = []
    finish = None
    async for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            if tc.index not in calls:
                firsts.append(tc)
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            else:
                assert tc.id is None and (tc.function.name is None), "id/name repeated"
            calls[tc.index]["arguments"] += tc.function.arguments or ""
        finish = choice.finish_reason or finish
    return {"content": content, "calls": calls, "firsts": firsts, "finish": finish}


@pytest.mark.parametrize("name", NAMES)
async def test_non_stream_tool_calls(stack: Stack, name: str) -> None:
    """message.tool_calls carry the expected calls, content is null or the preface."""
    ts = BY_NAME[name]
    async with stack.async_client() as client:
        completion = await client.chat.completions.create(**ts.request())
    choice = completion.choices[0]
    assert choice.finish_reason == ts.expected_finish
    assert choice.message.content == ts.expected_content
    assert _calls_of(choice.message.tool_calls) == list(ts.expected_calls)
    ids = [c.id for c in choice.message.tool_calls or []]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("call_") and len(i) == 29 for i in ids)
    assert all(c.type == "function" for c in choice.message.tool_calls or [])
    assert "<tool_call" not in (choice.message.content or "")


@pytest.mark.parametrize("name", NAMES)
async def test_streamed_tool_calls(stack: Stack, name: str) -> None:
    """The stream gives the same content and calls; each call opens with index, id, type,
    name; the finish reason is tool_calls when calls were made."""
    ts = BY_NAME[name]
    async with stack.async_client() as client:
        out = await _stream(client, ts, stream_options={"include_usage": True})
    assert out["finish"] == ts.expected_finish
    assert out["content"] == (ts.expected_content or "")
    calls = [out["calls"][i] for i in sorted(out["calls"])]
    assert sorted(out["calls"]) == list(range(len(calls)))
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == list(ts.expected_calls)
    for first in out["firsts"]:
        assert first.id and first.id.startswith("call_")
        assert first.type == "function" and first.function.name
    assert len({c["id"] for c in calls}) == len(calls)


async def test_stream_wire_shape(stack: Stack) -> None:
    """Raw bytes: role chunk, preface, the call's two deltas, tool_calls finish, [DONE]."""
    ts = BY_NAME["tool_preface_call"]
    async with aiohttp.ClientSession() as s:
        async with s.post(stack.url("/v1/chat/completions"), json=ts.request(stream=True)) as r:
            assert r.status == 200
            data = sse_data(await r.read())
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    call_deltas = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert call_deltas[0]["index"] == 0
    assert call_deltas[0]["type"] == "function"
    assert call_deltas[0]["function"] == {"name": "get_weather", "arguments": ""}
    assert set(call_deltas[1]) == {"index", "function"}
    assert json.loads(call_deltas[1]["function"]["arguments"]) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert all("<" not in (d.get("content") or "") for d in deltas)


async def test_nothing_tool_specific_goes_upstream(stack: Stack) -> None:
    """No top-level `tools` field and no native local_mcp declaration (docs/protocol.md §13.2): the
    tools travel in the prompt only, as one fresh user turn."""
    ts = BY_NAME["tool_two_calls"]
    async with stack.async_client() as client:
        await client.chat.completions.create(**ts.request(tool_choice="auto"))
    (sent,) = stack.upstream(COMPLETIONS_PATH)
    body = json.loads(sent.body)
    assert "tools" not in body
    (message,) = body["messages"]
    assert message["role"] == "user"
    assert "local_mcp" not in json.dumps(message["feature_config"])
    assert "<tools>" in message["content"]


async def test_round_trip(stack: Stack) -> None:
    """An agent loop: call, run the tool, send the result back, get the prose answer."""
    first = BY_NAME["tool_preface_call"]
    async with stack.async_client() as client:
        completion = await client.chat.completions.create(**first.request())
        message = completion.choices[0].message
        assert message.tool_calls
        call = message.tool_calls[0]
        messages = [
            *first.request()["messages"],
            message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": PARIS_RESULT},
        ]
        final = await client.chat.completions.create(
            model="qwen3-max", messages=messages, tools=first.request()["tools"]
        )
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == BY_NAME["tool_result_turn"].expected_content
    assert final.choices[0].message.tool_calls is None


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, None),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": [1]}}]},
            "tools[0].function.parameters",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
            "tools[0].function.parameters",
        ),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, None),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ],
)
async def test_malformed_tool_fields_are_400_with_param(
    stack: Stack, patch: dict[str, Any], param: str | None
) -> None:
    body = BY_NAME["tool_two_calls"].request(**patch)
    async with aiohttp.ClientSession() as s:
        async with s.post(stack.url("/v1/chat/completions"), json=body) as r:
            assert r.status == 400
            err = (await r.json())["error"]
    assert err["type"] == "invalid_request_error"
    expected = param or (
        "tools[0].function.name" if "tools" in patch else "tool_choice.function.name"
    )
    assert err["param"] == expected
    assert not stack.upstream(COMPLETIONS_PATH)


_LOOP_CALL = {
    "id": "call_x",
    "type": "function",
    "function": {"name": "read_file", "arguments": '{"path": "a.py", "limit": 3}'},
}


@pytest.mark.parametrize(
    ("messages", "extra"),
    [
        (
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
            {"tool_choice": "required", "parallel_tool_calls": False},
        ),
        (
            [{"role": "user", "content": "hi"}],
            {"tool_choice": {"type": "function", "function": {"name": "read_file"}}},
        ),
        (
            [
                {"role": "user", "content": "read a.py"},
                {"role": "assistant", "content": None, "tool_calls": [_LOOP_CALL]},
                {"role": "tool", "tool_call_id": "call_x", "content": "x = 1"},
                {"role": "assistant", "content": "Again.", "tool_calls": [_LOOP_CALL]},
                {"role": "tool", "tool_call_id": "call_x", "content": "x = 1"},
            ],
            {},
        ),
    ],
)
def test_builder_prompt_matches_the_proxy_for_choices_and_loops(
    messages: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    """recorder.synthetic_tools.render_prompt (for other synthetic sets, e.g. conformance
    probes) writes the proxy's prompt for tool_choice, parallel_tool_calls and loop notes too."""
    from recorder.synthetic_tools import TOOLS, render_prompt

    body = {"model": "qwen3-max", "messages": messages, "tools": list(TOOLS), **extra}
    conv = parse_chat(json.dumps(body).encode())
    kw = {k: v for k, v in extra.items() if k in ("tool_choice", "parallel_tool_calls")}
    assert render_prompt(messages, TOOLS, **kw) == build_prompt(conv)


@pytest.mark.parametrize("name", [t.name for t in TOOL_SCENARIOS if t.retry])
def test_corrective_turn_prompt_is_what_the_proxy_sends(name: str) -> None:
    from dataclasses import replace

    from proxy.tools.prompt import CORRECTION_KEY

    ts = BY_NAME[name]
    conv = parse_chat(json.dumps(ts.request()).encode())
    prose = "".join(p for p in ts.answer if p is not None)
    corrected = replace(conv, metadata={CORRECTION_KEY: prose})
    assert build_prompt(corrected) == ts.retry_scenario().prompt


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", [t.name for t in TOOL_SCENARIOS if t.retry])
async def test_required_choice_gets_one_corrective_turn(
    stack: Stack, name: str, stream: bool
) -> None:
    """tool_choice required/named answered in prose: exactly one more upstream turn; the first
    prose never reaches the client."""
    ts = BY_NAME[name]
    async with stack.async_client() as client:
        if stream:
            out = await _stream(client, ts)
            content, finish = out["content"], out["finish"]
            calls = [(c["name"], json.loads(c["arguments"])) for c in out["calls"].values()]
        else:
            completion = await client.chat.completions.create(**ts.request())
            choice = completion.choices[0]
            content, finish = choice.message.content or "", choice.finish_reason
            calls = _calls_of(choice.message.tool_calls)
    assert len(stack.upstream(COMPLETIONS_PATH)) == 2
    assert calls == list(ts.expected_calls)
    assert content == (ts.expected_content or "")
    assert finish == ts.expected_finish
    first = "".join(p for p in ts.answer if p is not None)
    assert first not in content


async def test_sdk_stream_helper_accumulates_the_calls(stack: Stack) -> None:
    """The SDK's own stream helper (chat.completions.stream) folds our deltas into the same
    final completion as the non-stream answer."""
    ts = BY_NAME["tool_two_calls"]
    async with stack.async_client() as client:
        async with client.chat.completions.stream(**ts.request()) as stream:
            async for _ in stream:
                pass
            final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert _calls_of(choice.message.tool_calls) == list(ts.expected_calls)


async def test_sync_sdk_stream(stack: Stack) -> None:
    """The sync SDK, streamed (in a thread: the stack lives in this loop): the same calls."""
    import asyncio

    ts = BY_NAME["tool_xml_call"]

    def run() -> list[tuple[str, dict[str, Any]]]:
        calls: dict[int, list[str]] = {}
        with stack.sync_client() as client:
            for chunk in client.chat.completions.create(**ts.request(stream=True)):
                for tc in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
                    entry = calls.setdefault(tc.index, [tc.function.name or "", ""])
                    entry[1] += tc.function.arguments or ""
        return [(n, json.loads(a)) for n, a in calls.values()]

    assert await asyncio.to_thread(run) == list(ts.expected_calls)


@pytest.mark.parametrize("fault", ["bytewise", "coalesce", "split_utf8"])
async def test_tool_calls_on_any_network_chunking(
    aiohttp_server: ServerFactory, fault: str
) -> None:
    """The replay server re-cuts every stream (one byte per chunk, everything in one chunk…):
    every tool scenario still gives exactly its calls and content, streamed."""
    stack = await start_stack(aiohttp_server, fault=fault)
    async with stack.async_client() as client:
        for ts in TOOL_SCENARIOS:
            out = await _stream(client, ts)
            calls = [out["calls"][i] for i in sorted(out["calls"])]
            assert [(c["name"], json.loads(c["arguments"])) for c in calls] == list(
                ts.expected_calls
            ), ts.name
            assert out["content"] == (ts.expected_content or ""), ts.name
            assert out["finish"] == ts.expected_finish, ts.name


async def test_connection_lost_inside_a_call_never_gives_a_broken_call(
    aiohttp_server: ServerFactory,
) -> None:
    """The upstream connection drops in the middle of the <tool_call> block: the client gets
    the preface, then an error event; never a half call, never markup."""
    from aiohttp import web
    from helpers import cassette, completion_interaction_body

    from proxy.app import make_app
    from proxy.config import Settings

    body = completion_interaction_body("tool_preface_call").encode()
    cut = body.index(b'weather\\", \\"arguments')
    models = cassette("models_list").interactions[0].response_body

    async def models_h(_: web.Request) -> web.Response:
        return web.Response(text=models, content_type="application/json")

    async def new_h(_: web.Request) -> web.Response:
        return web.json_response({"success": True, "data": {"id": "c1"}})

    async def completions_h(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(body[:cut])
        assert request.transport is not None
        request.transport.close()  # no clean end: the proxy sees a broken connection
        return resp

    upstream = web.Application()
    upstream.router.add_get("/api/models", models_h)
    upstream.router.add_post("/api/v2/chats/new", new_h)
    upstream.router.add_post("/api/v2/chat/completions", completions_h)
    fake = await aiohttp_server(upstream)
    proxy = await aiohttp_server(
        make_app(Settings(upstream_url=str(fake.make_url("")).rstrip("/")))
    )
    ts = BY_NAME["tool_preface_call"]
    async with aiohttp.ClientSession() as s:
        url = proxy.make_url("/v1/chat/completions")
        async with s.post(url, json=ts.request(stream=True)) as r:
            assert r.status == 200
            data = sse_data(await r.read())
    assert data[-1] != "[DONE]"
    events = [json.loads(d) for d in data]
    assert events[-1]["error"]["code"] == "upstream_truncated"
    deltas = [e["choices"][0]["delta"] for e in events[:-1]]
    assert not any("tool_calls" in d for d in deltas)
    assert "".join(d.get("content") or "" for d in deltas) == "Let me check the weather."


async def test_native_continuation_of_a_tool_turn(stack: Stack) -> None:
    """conversations = native: the answer remembered for a tool turn is the one the client got
    (preface + call, no markup), so the agent's next request continues that chat with only the
    tool result; the tools section is not repeated. (The replay server has no recording of that
    continuation, so the proxy then falls back to the flattened history, as it must.)"""
    first = BY_NAME["tool_preface_call"]
    async with stack.async_client() as client:
        completion = await client.chat.completions.create(**first.request())
        message = completion.choices[0].message
        call = message.tool_calls[0]
        messages = [
            *first.request()["messages"],
            message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": PARIS_RESULT},
        ]
        final = await client.chat.completions.create(
            model="qwen3-max", messages=messages, tools=first.request()["tools"]
        )
    assert final.choices[0].message.content == BY_NAME["tool_result_turn"].expected_content
    sent = [json.loads(r.body) for r in stack.upstream(COMPLETIONS_PATH)]
    assert len(sent) == 3  # first turn, the continuation attempt, the flattened fallback
    attempt = sent[1]
    assert (
        attempt["messages"][0]["content"]
        == f"User: <tool_response>\n{PARIS_RESULT}\n</tool_response>"
    )
    assert attempt["parent_id"] is not None
    assert sent[2]["messages"][0]["content"] == BY_NAME["tool_result_turn"].scenario.prompt
