"""End to end: the official openai SDK's Responses client -> the proxy -> the replay server.

``client.responses.create`` (streamed and not) and ``client.responses.stream`` (the SDK's own
accumulator, which checks the event order) on the synthetic scenarios; errors before and after
the stream began; ``previous_response_id`` and ``GET /v1/responses/{id}``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from helpers import (
    COMPLETIONS_PATH,
    SCENARIO,
    ServerFactory,
    Stack,
    cassettes,
    error_object,
    last_usage,
    start_stack,
)

from proxy.app import make_app
from proxy.config import Settings
from proxy.conversation import Turn
from proxy.errors import ClientRequestError
from proxy.frontdoors.responses import (
    build_conversation,
    dump_entry,
    input_items_page,
    parse_request,
)
from proxy.qwen.request import flatten_messages
from proxy.routes.responses import stored_response
from proxy.state import RESPONSES_IN_FLIGHT, STORE
from proxy.store import MemoryStore
from proxy.tools.prompt import build_prompt
from recorder.replay import UPLOADS_KEY, make_replay_app
from recorder.synthetic_media import BY_NAME as MEDIA
from recorder.synthetic_media import png
from recorder.synthetic_responses import CONTINUES, FOLLOWUP_QUESTION, RESPONSES_SCENARIOS
from recorder.synthetic_tools import BY_NAME, PARIS_Q, PARIS_RESULT, TOOLS, ToolScenario

FOLLOWUP = RESPONSES_SCENARIOS[0]
T2I = MEDIA["media_t2i"]

TEXT_SCENARIOS = ("t2t_answer", "think_answer", "thinking_summary", "chinese_emoji")


@pytest.fixture
async def stack(aiohttp_server: ServerFactory) -> Stack:
    """Replay server + proxy with default settings."""
    return await start_stack(aiohttp_server)


async def collect_stream(client: openai.AsyncOpenAI, **kw: Any) -> list[Any]:
    """Every event of a streamed ``responses.create``."""
    stream = await client.responses.create(stream=True, **kw)
    try:
        return [event async for event in stream]
    finally:
        await stream.close()


def reasoning_of(response: Any) -> str | None:
    texts = [s.text for item in response.output if item.type == "reasoning" for s in item.summary]
    return "".join(texts) if texts else None


@pytest.mark.parametrize("name", TEXT_SCENARIOS)
async def test_create_gives_output_text_reasoning_and_usage(stack: Stack, name: str) -> None:
    sc = SCENARIO[name]
    async with stack.async_client() as client:
        response = await client.responses.create(model=sc.openai_model, input=sc.prompt)
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.model == sc.openai_model
    assert response.output_text == sc.expected_content
    assert reasoning_of(response) == sc.expected_reasoning
    assert [i.type for i in response.output] == (
        ["reasoning", "message"] if sc.expected_reasoning else ["message"]
    )
    message = response.output[-1]
    assert message.role == "assistant" and message.status == "completed"
    input_tokens, output_tokens = last_usage(name)
    assert response.usage is not None
    assert response.usage.input_tokens == input_tokens
    assert response.usage.output_tokens == output_tokens
    assert response.usage.total_tokens == input_tokens + output_tokens


@pytest.mark.parametrize("name", TEXT_SCENARIOS)
async def test_stream_event_order_and_text(stack: Stack, name: str) -> None:
    sc = SCENARIO[name]
    async with stack.async_client() as client:
        events = await collect_stream(client, model=sc.openai_model, input=sc.prompt)
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == sc.expected_content
    reasoning = "".join(
        e.delta for e in events if e.type == "response.reasoning_summary_text.delta"
    )
    assert (reasoning or None) == sc.expected_reasoning
    final = events[-1].response
    assert final.output_text == sc.expected_content
    assert final.usage.total_tokens == sum(last_usage(name))
    # each item: added before its deltas, done after them, in output order
    added = [e.output_index for e in events if e.type == "response.output_item.added"]
    done = [e.output_index for e in events if e.type == "response.output_item.done"]
    assert added == done == list(range(len(final.output)))


@pytest.mark.parametrize("name", TEXT_SCENARIOS)
async def test_sdk_stream_helper_accumulates(stack: Stack, name: str) -> None:
    """``responses.stream`` checks ids, indexes and order as it folds the events."""
    sc = SCENARIO[name]
    async with (
        stack.async_client() as client,
        client.responses.stream(model=sc.openai_model, input=sc.prompt) as stream,
    ):
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    assert final.output_text == sc.expected_content


async def test_sync_client(stack: Stack) -> None:
    sc = SCENARIO["t2t_answer"]

    def run() -> tuple[str, str]:
        with stack.sync_client() as client:
            plain = client.responses.create(model=sc.openai_model, input=sc.prompt)
            with client.responses.stream(model=sc.openai_model, input=sc.prompt) as stream:
                streamed = stream.get_final_response()
        return plain.output_text, streamed.output_text

    assert await asyncio.to_thread(run) == (sc.expected_content, sc.expected_content)


async def test_search_sources_are_url_citations(stack: Stack) -> None:
    sc = SCENARIO["search_sources"]
    async with stack.async_client() as client:
        response = await client.responses.create(model=sc.openai_model, input=sc.prompt)
        events = await collect_stream(client, model=sc.openai_model, input=sc.prompt)
    annotations = response.output[-1].content[0].annotations
    assert [a.url for a in annotations] == list(sc.expected_sources)
    assert all(a.type == "url_citation" for a in annotations)
    streamed = events[-1].response.output[-1].content[0].annotations
    assert [a.url for a in streamed] == list(sc.expected_sources)
    assert response.output_text == sc.expected_content


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "name", ["error_ratelimited", "error_unauthorized", "error_waf_json", "empty_stream"]
)
async def test_errors_before_output_are_http_errors(stack: Stack, name: str, stream: bool) -> None:
    sc = SCENARIO[name]
    async with stack.async_client() as client:
        with pytest.raises(openai.APIStatusError) as exc:
            if stream:
                await collect_stream(client, model=sc.openai_model, input=sc.prompt)
            else:
                await client.responses.create(model=sc.openai_model, input=sc.prompt)
    assert exc.value.status_code == sc.expected_status
    assert error_object(exc.value)["code"] == sc.expected_error_code


@pytest.mark.parametrize("name", ["stream_cut", "error_frame"])
async def test_failure_after_output_is_error_then_response_failed(stack: Stack, name: str) -> None:
    sc = SCENARIO[name]
    async with stack.async_client() as client:
        events = await collect_stream(client, model=sc.openai_model, input=sc.prompt)
        with pytest.raises(openai.APIStatusError) as exc:
            await client.responses.create(model=sc.openai_model, input=sc.prompt)
    types = [e.type for e in events]
    assert types[-2:] == ["error", "response.failed"]
    assert "response.completed" not in types
    assert events[-2].code == sc.expected_error_code
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == sc.partial_content
    assert failed.output[0].status == "incomplete"
    assert exc.value.status_code == sc.expected_status


async def test_bad_requests_are_400_with_param(stack: Stack) -> None:
    async with stack.async_client() as client:
        with pytest.raises(openai.BadRequestError) as exc:
            await client.responses.create(
                model="qwen3-max",
                input=[{"type": "function_call", "name": "f", "arguments": "{}"}],  # type: ignore[list-item]
            )
        assert error_object(exc.value)["param"] == "input[0].call_id"
        with pytest.raises(openai.NotFoundError) as nf:
            await client.responses.create(model="no-such-model", input="hi")
        assert error_object(nf.value)["code"] == "model_not_found"


async def test_unknown_previous_response_id(stack: Stack) -> None:
    async with stack.async_client() as client:
        with pytest.raises(openai.BadRequestError) as exc:
            await client.responses.create(
                model="qwen3-max", input="hi", previous_response_id="resp_unknown"
            )
        err = error_object(exc.value)
        assert err["param"] == "previous_response_id"
        assert err["code"] == "previous_response_not_found"
        with pytest.raises(openai.NotFoundError) as nf:
            await client.responses.retrieve("resp_unknown")
        assert error_object(nf.value)["code"] == "response_not_found"


@pytest.mark.parametrize("stream", [False, True])
async def test_retrieve_returns_the_stored_response(stack: Stack, stream: bool) -> None:
    sc = SCENARIO["t2t_answer"]
    async with stack.async_client() as client:
        if stream:
            events = await collect_stream(client, model=sc.openai_model, input=sc.prompt)
            created = events[-1].response
        else:
            created = await client.responses.create(model=sc.openai_model, input=sc.prompt)
        got = await client.responses.retrieve(created.id)
    assert got.id == created.id
    assert got.output_text == sc.expected_content
    assert got.status == "completed"
    assert got.model_dump() == created.model_dump()


async def test_store_false_is_not_kept(stack: Stack) -> None:
    sc = SCENARIO["t2t_answer"]
    async with stack.async_client() as client:
        created = await client.responses.create(model=sc.openai_model, input=sc.prompt, store=False)
        assert created.store is False
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(created.id)


async def test_raw_stream_wire_format(stack: Stack) -> None:
    """``event:`` and ``data:`` lines agree, the content type is SSE, no ``[DONE]``."""
    sc = SCENARIO["t2t_answer"]
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            stack.url("/v1/responses"),
            json={"model": sc.openai_model, "input": sc.prompt, "stream": True},
        ) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = (await resp.read()).decode()
    blocks = [b for b in raw.split("\n\n") if b]
    assert "[DONE]" not in raw
    for block in blocks:
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        assert f'"type":"{event_line[7:]}"' in data_line


# -- previous_response_id ----------------------------------------------------------------------


def test_followup_cassette_prompt_is_what_the_proxy_sends() -> None:
    """The synthetic follow-up cassette holds the prompt the proxy flattens the conversation to
    (recorder repeats it because it never imports proxy)."""
    first = SCENARIO["t2t_answer"]
    history = [Turn("user", first.prompt), Turn("assistant", first.expected_content)]
    req = parse_request({"model": "qwen3-max", "input": FOLLOWUP_QUESTION})
    conv = build_conversation(req, history)
    assert flatten_messages(conv.turns) == FOLLOWUP.prompt
    assert build_prompt(conv) == FOLLOWUP.prompt
    assert build_prompt(conv, start=2) == CONTINUES["responses_followup"][1]


@pytest.mark.parametrize("mode", ["native", "flatten"])
@pytest.mark.parametrize("stream", [False, True])
async def test_previous_response_id_continues_the_conversation(
    aiohttp_server: ServerFactory, stream: bool, mode: str
) -> None:
    """The follow-up names the first response and sends only its new question. Upstream it
    continues the first chat (``conversations = "native"``: only the new text, ``parent_id``
    set) or is one flattened prompt in a new chat (``flatten``)."""
    stack = await start_stack(aiohttp_server, conversations=mode)
    first = SCENARIO["t2t_answer"]
    async with stack.async_client() as client:
        if stream:
            one = (await collect_stream(client, model="qwen3-max", input=first.prompt))[-1].response
            two = (
                await collect_stream(
                    client, model="qwen3-max", input=FOLLOWUP_QUESTION, previous_response_id=one.id
                )
            )[-1].response
        else:
            one = await client.responses.create(model="qwen3-max", input=first.prompt)
            two = await client.responses.create(
                model="qwen3-max", input=FOLLOWUP_QUESTION, previous_response_id=one.id
            )
        stored = await client.responses.retrieve(two.id)
    assert one.output_text == first.expected_content
    assert two.output_text == FOLLOWUP.expected_content
    assert two.previous_response_id == one.id
    assert stored.previous_response_id == one.id
    sent = json.loads(stack.upstream(COMPLETIONS_PATH)[-1].body)
    if mode == "native":
        assert sent["messages"][0]["content"] == FOLLOWUP_QUESTION
        assert sent["parent_id"] is not None
    else:
        assert sent["messages"][0]["content"] == FOLLOWUP.prompt
        assert sent["parent_id"] is None


async def test_explicit_history_items_give_the_same_prompt(stack: Stack) -> None:
    """The history sent as input items (what Codex does, with store: false) reaches the same
    upstream prompt as previous_response_id."""
    first = SCENARIO["t2t_answer"]
    async with stack.async_client() as client:
        response = await client.responses.create(
            model="qwen3-max",
            store=False,
            input=[
                {"role": "user", "content": [{"type": "input_text", "text": first.prompt}]},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [
                        {"type": "output_text", "text": first.expected_content, "annotations": []}
                    ],
                },
                {"role": "user", "content": FOLLOWUP_QUESTION},
            ],
        )
    assert response.output_text == FOLLOWUP.expected_content


# -- tools -------------------------------------------------------------------------------------
# The tool cassettes of recorder/synthetic_tools.py answer chat requests; the same conversation
# sent through /v1/responses (tools in the flat Responses shape) reaches the same prompt.

FLAT_TOOLS = [{"type": "function", **t["function"]} for t in TOOLS]
CALL_SCENARIOS = (
    "tool_preface_call",
    "tool_two_calls",
    "tool_xml_call",
    "tool_local_tool",
    "tool_required_retry",
)
NOTE_SCENARIOS = ("tool_malformed_json", "tool_unknown_tool", "tool_named_prose")


def responses_request(ts: ToolScenario) -> dict[str, Any]:
    """A tool scenario's chat request as a Responses request (flat tools and tool_choice)."""
    body: dict[str, Any] = {"model": "qwen3-max", "input": responses_input(ts), "tools": FLAT_TOOLS}
    choice = ts.tool_choice
    if isinstance(choice, dict):
        body["tool_choice"] = {"type": "function", "name": choice["function"]["name"]}
    elif choice is not None:
        body["tool_choice"] = choice
    return body


def responses_input(ts: ToolScenario) -> list[dict[str, Any]]:
    """A tool scenario's chat messages as Responses input items."""
    items: list[dict[str, Any]] = []
    for m in ts.messages:
        if m["role"] == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": m["tool_call_id"],
                    "output": m["content"],
                }
            )
            continue
        if m.get("content"):
            items.append({"role": m["role"], "content": m["content"]})
        for call in m.get("tool_calls") or ():
            items.append(
                {
                    "type": "function_call",
                    "call_id": call["id"],
                    "name": call["function"]["name"],
                    "arguments": call["function"]["arguments"],
                }
            )
    return items


def calls_of(response: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(i.name, json.loads(i.arguments)) for i in response.output if i.type == "function_call"]


@pytest.mark.parametrize("name", [t for t in BY_NAME])
def test_tool_cassette_prompt_is_what_responses_sends(name: str) -> None:
    ts = BY_NAME[name]
    req = parse_request(responses_request(ts))
    assert build_prompt(build_conversation(req)) == ts.scenario.prompt


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", CALL_SCENARIOS + NOTE_SCENARIOS)
async def test_function_calls(stack: Stack, name: str, stream: bool) -> None:
    """function_call items with call_id, name and arguments; text before them in a message."""
    ts = BY_NAME[name]
    kw = responses_request(ts)
    async with stack.async_client() as client:
        if stream:
            events = await collect_stream(client, **kw)
            response = events[-1].response
            assert events[-1].type == "response.completed"
            streamed = [
                (e.name, json.loads(e.arguments))
                for e in events
                if e.type == "response.function_call_arguments.done"
            ]
            assert streamed == list(ts.expected_calls)
        else:
            response = await client.responses.create(**kw)
    assert response.status == "completed"
    assert calls_of(response) == list(ts.expected_calls)
    assert response.output_text == (ts.expected_content or "")
    calls = [i for i in response.output if i.type == "function_call"]
    assert len({c.call_id for c in calls}) == len(calls)
    assert all(c.call_id.startswith("call_") and c.status == "completed" for c in calls)
    assert all(c.id and c.id.startswith("fc_") for c in calls)
    assert "<tool_call" not in response.output_text


@pytest.mark.parametrize("stream", [False, True])
async def test_function_call_round_trip_with_full_input(stack: Stack, stream: bool) -> None:
    """An agent loop without stored state: call, run the tool, send the call and its output
    back as input items, get the prose answer."""
    async with stack.async_client() as client:
        first = await client.responses.create(
            model="qwen3-max", input=PARIS_Q, tools=FLAT_TOOLS, store=False
        )
        (call,) = [i for i in first.output if i.type == "function_call"]
        follow: list[Any] = [
            {"role": "user", "content": PARIS_Q},
            *[i.model_dump(exclude_none=True) for i in first.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": PARIS_RESULT},
        ]
        kw: dict[str, Any] = {"model": "qwen3-max", "input": follow, "tools": FLAT_TOOLS}
        if stream:
            final = (await collect_stream(client, **kw))[-1].response
        else:
            final = await client.responses.create(**kw)
    assert final.output_text == BY_NAME["tool_result_turn"].expected_content
    assert calls_of(final) == []


@pytest.mark.parametrize("stream", [False, True])
async def test_function_call_round_trip_with_previous_response_id(
    stack: Stack, stream: bool
) -> None:
    """The follow-up sends only the function_call_output; the call comes from the store."""
    async with stack.async_client() as client:
        first = await client.responses.create(model="qwen3-max", input=PARIS_Q, tools=FLAT_TOOLS)
        (call,) = [i for i in first.output if i.type == "function_call"]
        kw: dict[str, Any] = {
            "model": "qwen3-max",
            "previous_response_id": first.id,
            "input": [
                {"type": "function_call_output", "call_id": call.call_id, "output": PARIS_RESULT}
            ],
            "tools": FLAT_TOOLS,
        }
        if stream:
            final = (await collect_stream(client, **kw))[-1].response
        else:
            final = await client.responses.create(**kw)
    assert final.output_text == BY_NAME["tool_result_turn"].expected_content
    assert final.previous_response_id == first.id


async def test_sdk_stream_helper_with_function_calls(stack: Stack) -> None:
    """The SDK's accumulator (identity checks per call_id) accepts the parallel calls."""
    ts = BY_NAME["tool_two_calls"]
    async with (
        stack.async_client() as client,
        client.responses.stream(
            model="qwen3-max", input=responses_input(ts), tools=FLAT_TOOLS
        ) as stream,
    ):
        deltas = [e async for e in stream if e.type == "response.function_call_arguments.delta"]
        final = await stream.get_final_response()
    assert calls_of(final) == list(ts.expected_calls)
    assert [d.snapshot for d in deltas] == [c.arguments for c in final.output]


async def test_codex_shaped_request(stack: Stack) -> None:
    """A request shaped like Codex CLI's (constructed: its top-level fields, a function tool and
    one inside a namespace tool, a hosted web_search tool, a reasoning summary ask, store false),
    streamed: 200, the items Codex builds its history from (output_item.done), a call carrying
    its namespace, response.completed with id and usage."""
    ts = BY_NAME["tool_xml_call"]  # a call of read_file, offered inside a namespace here
    weather, read_file = FLAT_TOOLS
    body = {
        "model": "qwen3-max",
        "stream": True,
        "input": [
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": ts.messages[0]["content"]}]}
        ],
        "tools": [
            {**weather, "strict": False},
            {"type": "namespace", "name": "files", "description": "Project files.",
             "tools": [{**read_file, "strict": False}]},
            {"type": "web_search", "external_web_access": False},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0000-session",
        "client_metadata": {"x-codex-turn-metadata": "{}"},
    }  # fmt: skip
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            stack.url("/v1/responses"), json=body, headers={"Accept": "text/event-stream"}
        ) as resp,
    ):
        assert resp.status == 200
        raw = await resp.read()
    events = [
        json.loads(line[6:]) for line in raw.decode().split("\n") if line.startswith("data: ")
    ]
    done_items = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [i["type"] for i in done_items] == ["function_call"]
    call = done_items[0]
    assert (call["name"], json.loads(call["arguments"])) == ts.expected_calls[0]
    assert call["namespace"] == "files"
    completed = events[-1]
    assert completed["type"] == "response.completed"
    assert completed["response"]["id"].startswith("resp_")
    usage = completed["response"]["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True])
async def test_image_model_answers_a_markdown_image(stack: Stack, stream: bool) -> None:
    """A -image model through /v1/responses: the answer is ![image](<url>), never null."""
    kw: dict[str, Any] = {"model": "qwen3-max-image", "input": T2I.prompt}
    async with stack.async_client() as client:
        if stream:
            text = (await collect_stream(client, **kw))[-1].response.output_text
        else:
            text = (await client.responses.create(**kw)).output_text
    assert text.startswith("![image](http") and text.endswith(")")
    assert "null" not in text


async def test_video_model_is_refused(stack: Stack) -> None:
    async with stack.async_client() as client:
        with pytest.raises(openai.BadRequestError) as exc:
            await client.responses.create(model="qwen3-max-video", input="a cat")
    assert error_object(exc.value)["param"] == "model"
    assert not stack.upstream(COMPLETIONS_PATH)


async def test_lookup_waits_for_an_answer_being_stored() -> None:
    """A follow-up that arrives between the last event and the store write waits for it; an
    unknown id does not wait."""
    app = web.Application()
    store = MemoryStore()
    app[STORE] = store
    app[RESPONSES_IN_FLIGHT] = {}
    event = asyncio.Event()
    app[RESPONSES_IN_FLIGHT]["resp_x"] = event

    entry = dump_entry([Turn("user", "Q")], {"id": "resp_x"}, scope="k1")

    async def finish_storing() -> None:
        await store.put_response("resp_x", entry, ttl_s=60)
        event.set()

    # gather starts the lookup first: it finds nothing, waits, then the store write runs
    found, _ = await asyncio.gather(stored_response(app, "resp_x", "k1"), finish_storing())
    assert found is not None and found.response == {"id": "resp_x"}
    assert await stored_response(app, "resp_unknown", "k1") is None
    assert await stored_response(app, "resp_x", "another key") is None


@pytest.mark.parametrize("stream", [False, True])
async def test_max_output_tokens_gives_incomplete(stack: Stack, stream: bool) -> None:
    """The output-token limit (emulated by the relay) ends the answer early: status incomplete,
    incomplete_details.reason max_output_tokens, the text so far kept."""
    sc = SCENARIO["t2t_answer"]
    kw: dict[str, Any] = {"model": sc.openai_model, "input": sc.prompt, "max_output_tokens": 2}
    async with stack.async_client() as client:
        if stream:
            events = await collect_stream(client, **kw)
            assert events[-1].type == "response.incomplete"
            response = events[-1].response
        else:
            response = await client.responses.create(**kw)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[-1].status == "incomplete"
    assert sc.expected_content.startswith(response.output_text)
    assert 0 < len(response.output_text) < len(sc.expected_content)


async def test_input_image_is_uploaded(aiohttp_server: ServerFactory) -> None:
    """An input_image part (data: URI) is uploaded like a chat image_url part and the answer is
    the vision cassette's."""
    replay = await aiohttp_server(make_replay_app(list(cassettes()), speed=0))
    base = str(replay.make_url("")).rstrip("/")
    settings = Settings(upstream_url=base, media_base_url=base, object_store_url=base)
    stack = Stack(replay=replay, proxy=await aiohttp_server(make_app(settings)))
    vision = MEDIA["media_vision_chat"]
    picture = png(24, 24, lambda x, y: (x * 10, 200, y * 10))
    uri = "data:image/png;base64," + base64.b64encode(picture).decode()
    async with stack.async_client() as client:
        response = await client.responses.create(
            model="qwen3-max",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": vision.prompt},
                        {"type": "input_image", "image_url": uri, "detail": "auto"},
                    ],
                }
            ],
        )
    assert response.output_text == vision.expected_content
    (stored,) = stack.replay.app[UPLOADS_KEY]
    assert stored.body == picture
    (sent,) = stack.upstream(COMPLETIONS_PATH)
    message = json.loads(sent.body)["messages"][0]
    assert message["content"] == vision.prompt
    assert len(message["files"]) == 1


async def test_responses_are_kept_per_api_key(aiohttp_server: ServerFactory) -> None:
    """A response made with one API key is not found with another (retrieve or continue)."""
    stack = await start_stack(aiohttp_server, api_keys=["sk-one", "sk-two"])
    sc = SCENARIO["t2t_answer"]
    async with stack.async_client("sk-one") as one, stack.async_client("sk-two") as two:
        created = await one.responses.create(model=sc.openai_model, input=sc.prompt)
        assert (await one.responses.retrieve(created.id)).id == created.id
        with pytest.raises(openai.NotFoundError):
            await two.responses.retrieve(created.id)
        with pytest.raises(openai.BadRequestError) as exc:
            await two.responses.create(
                model="qwen3-max", input=FOLLOWUP_QUESTION, previous_response_id=created.id
            )
    assert error_object(exc.value)["code"] == "previous_response_not_found"


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_stays_an_item_with_think_tags_setting(
    aiohttp_server: ServerFactory, stream: bool
) -> None:
    """``reasoning = "think_tags"`` is for chat clients: /v1/responses still returns the
    reasoning as a reasoning item, never as <think> text."""
    stack = await start_stack(aiohttp_server, reasoning="think_tags")
    sc = SCENARIO["think_answer"]
    async with stack.async_client() as client:
        if stream:
            response = (await collect_stream(client, model=sc.openai_model, input=sc.prompt))[
                -1
            ].response
        else:
            response = await client.responses.create(model=sc.openai_model, input=sc.prompt)
    assert response.output_text == sc.expected_content
    assert reasoning_of(response) == sc.expected_reasoning


async def test_delete_forgets_a_response(stack: Stack) -> None:
    sc = SCENARIO["t2t_answer"]
    async with stack.async_client() as client:
        created = await client.responses.create(model=sc.openai_model, input=sc.prompt)
        await client.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.delete(created.id)
        with pytest.raises(openai.BadRequestError) as exc:
            await client.responses.create(
                model="qwen3-max", input=FOLLOWUP_QUESTION, previous_response_id=created.id
            )
    assert error_object(exc.value)["param"] == "previous_response_id"


async def test_sdk_stream_helper_sees_the_failure(stack: Stack) -> None:
    """The SDK's accumulator takes the error and response.failed events without choking; there
    is no final response to get."""
    sc = SCENARIO["stream_cut"]
    async with (
        stack.async_client() as client,
        client.responses.stream(model=sc.openai_model, input=sc.prompt) as stream,
    ):
        types = [e.type async for e in stream]
        with pytest.raises(RuntimeError):
            await stream.get_final_response()
    assert types[-2:] == ["error", "response.failed"]


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_effort_turns_thinking_on(stack: Stack, stream: bool) -> None:
    """``reasoning.effort`` on a plain model name asks the site for thinking (the think_answer
    cassette is a thinking turn of qwen3-max); the thinking comes back as a reasoning item."""
    sc = SCENARIO["think_answer"]
    kw: dict[str, Any] = {"model": "qwen3-max", "input": sc.prompt, "reasoning": {"effort": "high"}}
    async with stack.async_client() as client:
        if stream:
            response = (await collect_stream(client, **kw))[-1].response
        else:
            response = await client.responses.create(**kw)
    assert reasoning_of(response) == sc.expected_reasoning
    assert response.output_text == sc.expected_content
    assert response.reasoning is not None and response.reasoning.effort == "high"
    sent = json.loads(stack.upstream(COMPLETIONS_PATH)[-1].body)
    assert sent["messages"][0]["feature_config"]["thinking_enabled"] is True


async def test_input_items_list(stack: Stack) -> None:
    """``responses.input_items.list``: this response's input (not the earlier history), with
    ids, newest first by default; ``order`` and ``limit``/``after`` paging."""
    first = SCENARIO["t2t_answer"]
    async with stack.async_client() as client:
        one = await client.responses.create(model="qwen3-max", input=first.prompt)
        two = await client.responses.create(
            model="qwen3-max",
            previous_response_id=one.id,
            input=[
                {"role": "user", "content": [{"type": "input_text", "text": FOLLOWUP_QUESTION}]}
            ],
        )
        (only,) = [i async for i in client.responses.input_items.list(one.id)]
        (follow,) = [i async for i in client.responses.input_items.list(two.id)]
        with pytest.raises(openai.NotFoundError):
            await client.responses.input_items.list("resp_unknown")
    assert only.type == "message" and only.role == "user" and only.id.startswith("msg_")
    assert only.content[0].type == "input_text" and only.content[0].text == first.prompt
    assert follow.content[0].text == FOLLOWUP_QUESTION


def test_input_items_page_order_and_paging() -> None:
    items = [{"id": f"i{n}"} for n in range(5)]
    page = input_items_page(items, limit=2)
    assert [i["id"] for i in page["data"]] == ["i4", "i3"] and page["has_more"] is True
    page = input_items_page(items, limit=2, after=page["last_id"])
    assert [i["id"] for i in page["data"]] == ["i2", "i1"]
    page = input_items_page(items, order="asc", limit=10)
    assert [i["id"] for i in page["data"]] == ["i0", "i1", "i2", "i3", "i4"]
    assert page["has_more"] is False and (page["first_id"], page["last_id"]) == ("i0", "i4")
    for bad, param in (
        ({"order": "up"}, "order"),
        ({"limit": 0}, "limit"),
        ({"after": "x"}, "after"),
    ):
        with pytest.raises(ClientRequestError) as exc:
            input_items_page(items, **bad)  # type: ignore[arg-type]
        assert exc.value.param == param
