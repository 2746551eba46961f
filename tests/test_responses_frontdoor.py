"""The Responses front door, pure parts: request parsing, event order of the stream renderer,
the body renderer and stored history."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.conversation import ToolCallRecord, Turn
from proxy.errors import (
    ClientRequestError,
    UnsupportedContentError,
    UpstreamRateLimitedError,
    UpstreamTruncatedError,
)
from proxy.frontdoors.responses import (
    ResponseIds,
    ResponsesBodyRenderer,
    ResponsesStreamRenderer,
    build_conversation,
    dump_entry,
    load_entry,
    parse_request,
)
from proxy.qwen.translate import (
    Failure,
    Finish,
    OutEvent,
    Source,
    Sources,
    Text,
    ToolCall,
    Usage,
)

IDS = ResponseIds("resp_test", 1767225600)
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


def frames(raw: bytes) -> list[dict[str, Any]]:
    """Decode ``event:``/``data:`` frames, checking the two agree."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block or block.startswith(":"):
            continue
        lines = block.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        data = json.loads(lines[1][len("data: ") :])
        assert data["type"] == lines[0][len("event: ") :]
        out.append(data)
    return out


USAGE = Usage(10, 5)


def stream(events: list[OutEvent], usage: Usage | None = USAGE, **body: Any) -> list[Any]:
    req = parse_request({"model": "qwen3-max", "input": "hi", **body})
    r = ResponsesStreamRenderer(req, IDS)
    raw = r.head() + b"".join(r.render([e], usage) for e in events)
    return frames(raw)


# -- request parsing ---------------------------------------------------------------------------


def test_string_input_is_one_user_turn() -> None:
    req = parse_request({"model": "qwen3-max", "input": "Hello", "instructions": "Be brief."})
    conv = build_conversation(req)
    assert [(t.role, t.content) for t in conv.turns] == [
        ("system", "Be brief."),
        ("user", "Hello"),
    ]
    assert conv.model == "qwen3-max"
    assert conv.stream is False and conv.thinking is None


def test_items_become_turns_with_calls_and_results() -> None:
    req = parse_request(
        {
            "model": "m",
            "tools": TOOLS,
            "input": [
                {"role": "developer", "content": "Use tools."},
                {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": "Q"}]},
                {"type": "reasoning", "id": "rs_1",
                 "summary": [{"type": "summary_text", "text": "R"}]},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather",
                 "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call", "call_id": "call_2", "name": "get_weather",
                 "arguments": "{\"city\":\"Rome\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "call_2",
                 "output": [{"type": "input_text", "text": "rain"}]},
            ],
        }
    )  # fmt: skip
    conv = build_conversation(req)
    roles = [t.role for t in conv.turns]
    assert roles == ["system", "user", "assistant", "tool", "tool"]
    assistant = conv.turns[2]
    assert assistant.content is None
    assert assistant.reasoning == "R"
    assert assistant.tool_calls == (
        ToolCallRecord("call_1", "get_weather", '{"city":"Paris"}'),
        ToolCallRecord("call_2", "get_weather", '{"city":"Rome"}'),
    )
    assert [(t.tool_call_id, t.name, t.content) for t in conv.turns[3:]] == [
        ("call_1", "get_weather", "sunny"),
        ("call_2", "get_weather", "rain"),
    ]
    assert [t.name for t in conv.tools] == ["get_weather"]
    assert conv.tools[0].parameters == TOOLS[0]["parameters"]


def test_assistant_text_then_call_is_one_turn() -> None:
    req = parse_request(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "Q"},
                {"type": "message", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Looking.", "annotations": []}]},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""},
            ],
        }
    )  # fmt: skip
    turns = build_conversation(req).turns
    assert len(turns) == 2
    assert turns[1].content == "Looking."
    assert turns[1].tool_calls == (ToolCallRecord("c", "f", "{}"),)


def test_image_part_becomes_image_url_part() -> None:
    req = parse_request(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                ]}
            ],
        }
    )  # fmt: skip
    assert req.turns[0].content == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "input"),
        ({"model": "", "input": "x"}, "model"),
        ({"model": "m", "input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user", "content": 3}]}, "input[0].content"),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
         "input[0].content[0].image_url"),
        ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "a b"}]},
         "tools[0].name"),
        ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f",
          "parameters": "no"}]}, "tools[0].parameters"),
        ({"model": "m", "input": "x", "tools": [{"type": "warp_drive"}]}, "tools[0].type"),
        ({"model": "m", "input": "x", "tools": TOOLS,
          "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"model": "m", "input": "x", "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "m", "input": "x", "tool_choice": "required"}, "tool_choice"),
        ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f",
          "parameters": {"type": 5}}]}, "tools[0].parameters"),
        ({"model": "m", "input": "x", "reasoning": {"effort": "max"}}, "reasoning.effort"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ClientRequestError) as exc:
        parse_request(body)
    assert exc.value.param == param
    assert exc.value.http_status() == 400


def test_unsupported_items_are_clear_errors() -> None:
    with pytest.raises(UnsupportedContentError) as exc:
        parse_request({"model": "m", "input": "x", "conversation": "conv_1"})
    assert exc.value.param == "conversation"
    with pytest.raises(UnsupportedContentError) as exc:
        parse_request({"model": "m", "input": [{"type": "item_reference", "id": "x"}]})
    assert exc.value.param == "input[0]"
    with pytest.raises(UnsupportedContentError) as exc:
        parse_request({"model": "m", "input": [{"type": "computer_call_output"}]})
    assert exc.value.param == "input[0].type"


def test_tool_choice_and_reasoning_map_to_the_conversation() -> None:
    req = parse_request(
        {
            "model": "m",
            "input": "x",
            "tools": [*TOOLS, {"type": "web_search"}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "parallel_tool_calls": False,
            "reasoning": {"effort": "high", "summary": "auto"},
            "stream": True,
        }
    )
    conv = build_conversation(req)
    assert conv.tool_choice.mode == "named" and conv.tool_choice.name == "get_weather"
    assert conv.parallel_tool_calls is False
    assert conv.thinking is True and conv.stream is True
    assert req.ignored_tools == ("web_search",)
    assert req.echo["tool_choice"] == {"type": "function", "name": "get_weather"}
    off = parse_request({"model": "m", "input": "x", "reasoning": {"effort": "none"}})
    assert off.thinking is False
    for choice in ("auto", "none", "required"):
        req = parse_request({"model": "m", "input": "x", "tool_choice": choice, "tools": TOOLS})
        assert req.tool_choice.mode == choice


def test_unknown_fields_are_ignored() -> None:
    req = parse_request(
        {
            "model": "m",
            "input": "x",
            "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "abc",
            "text": {"verbosity": "low"},
            "store": False,
        }
    )
    assert req.store is False


def test_history_then_input_instructions_not_carried() -> None:
    history = [Turn("user", "Q1"), Turn("assistant", "A1")]
    req = parse_request({"model": "m", "input": "Q2", "instructions": "New rules."})
    turns = build_conversation(req, history).turns
    assert [(t.role, t.content) for t in turns] == [
        ("system", "New rules."),
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q2"),
    ]
    assert history[0].content == "Q1"  # not mutated


# -- stream renderer ---------------------------------------------------------------------------


def test_text_stream_event_order() -> None:
    evs = stream([Text("content", "Hel"), Text("content", "lo"), Finish("stop")])
    assert [e["type"] for e in evs] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    assert evs[0]["response"]["status"] == "in_progress" and evs[0]["response"]["output"] == []
    item_id = evs[2]["item"]["id"]
    assert item_id.startswith("msg_")
    assert all(e["item_id"] == item_id for e in evs[3:8])
    assert evs[6]["text"] == "Hello"
    done = evs[8]["item"]
    assert done["status"] == "completed"
    assert done["content"] == [
        {"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}
    ]
    final = evs[-1]["response"]
    assert final["status"] == "completed" and final["output"] == [done]
    assert final["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 15,
    }


def test_reasoning_then_text_are_two_items() -> None:
    evs = stream([Text("reasoning", "Think"), Text("reasoning", "ing"), Text("content", "A"),
                  Finish("stop")])  # fmt: skip
    assert [e["type"] for e in evs][2:] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    output = evs[-1]["response"]["output"]
    assert [i["type"] for i in output] == ["reasoning", "message"]
    assert output[0]["summary"] == [{"type": "summary_text", "text": "Thinking"}]
    assert evs[2]["output_index"] == 0 and evs[9]["output_index"] == 1


def test_text_then_parallel_calls() -> None:
    calls = [
        ToolCall(0, "call_" + "a" * 24, "get_weather", '{"city":"Paris"}'),
        ToolCall(1, "call_" + "b" * 24, "get_weather", '{"city":"Rome"}'),
    ]
    evs = stream([Text("content", "Checking."), *calls, Finish("tool_calls")])
    types = [e["type"] for e in evs]
    call_part = [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert types[2:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        *call_part,
        *call_part,
        "response.completed",
    ]
    added = evs[8]["item"]
    assert added == {
        "id": "fc_" + "a" * 24,
        "type": "function_call",
        "status": "in_progress",
        "call_id": "call_" + "a" * 24,
        "name": "get_weather",
        "arguments": "",
    }
    assert evs[9]["delta"] == '{"city":"Paris"}' and evs[9]["output_index"] == 1
    assert evs[10]["arguments"] == '{"city":"Paris"}' and evs[10]["name"] == "get_weather"
    output = evs[-1]["response"]["output"]
    assert [i["type"] for i in output] == ["message", "function_call", "function_call"]
    assert [i.get("call_id") for i in output[1:]] == [c.id for c in calls]
    assert all(i["status"] == "completed" for i in output)


def test_failure_after_text_is_error_then_failed() -> None:
    err = UpstreamTruncatedError("cut")
    evs = stream([Text("content", "Part"), Failure(err)])
    assert [e["type"] for e in evs][-2:] == ["error", "response.failed"]
    assert "response.completed" not in [e["type"] for e in evs]
    assert evs[-2]["code"] == "upstream_truncated" and evs[-2]["message"] == "cut"
    failed = evs[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "cut"}
    assert failed["output"][0]["status"] == "incomplete"
    assert failed["output"][0]["content"][0]["text"] == "Part"


def test_rate_limit_failure_says_when_to_retry() -> None:
    err = UpstreamRateLimitedError("quota", retry_after_s=60)
    evs = stream([Text("content", "x"), Failure(err)])
    assert evs[-1]["response"]["error"]["code"] == "rate_limit_exceeded"
    assert "try again in 60s" in evs[-1]["response"]["error"]["message"]


def test_length_finish_is_incomplete() -> None:
    evs = stream([Text("content", "abc"), Finish("length")], max_output_tokens=3)
    assert evs[-1]["type"] == "response.incomplete"
    resp = evs[-1]["response"]
    assert resp["status"] == "incomplete"
    assert resp["incomplete_details"] == {"reason": "max_output_tokens"}
    assert resp["output"][0]["status"] == "incomplete"


def test_sources_become_url_citations() -> None:
    evs = stream(
        [Sources((Source("https://a.example/", "A"),)), Text("content", "x"),
         Sources((Source("https://b.example/", "B"),)), Finish("stop")]
    )  # fmt: skip
    types = [e["type"] for e in evs]
    assert types.count("response.output_text.annotation.added") == 2
    part = evs[-1]["response"]["output"][0]["content"][0]
    assert [a["url"] for a in part["annotations"]] == ["https://a.example/", "https://b.example/"]
    assert all(a["type"] == "url_citation" for a in part["annotations"])


def test_echoes_request_fields() -> None:
    evs = stream([Text("content", "x"), Finish("stop")], tools=TOOLS, instructions="I",
                 metadata={"k": "v"}, previous_response_id=None)  # fmt: skip
    resp = evs[-1]["response"]
    assert resp["id"] == "resp_test" and resp["object"] == "response"
    assert resp["created_at"] == IDS.created_at and resp["model"] == "qwen3-max"
    assert resp["instructions"] == "I" and resp["metadata"] == {"k": "v"}
    assert resp["tools"][0]["name"] == "get_weather" and resp["tools"][0]["type"] == "function"
    assert resp["tool_choice"] == "auto" and resp["parallel_tool_calls"] is True


_EVENT = st.one_of(
    st.builds(Text, st.sampled_from(["content", "reasoning"]), st.text(min_size=1, max_size=5)),
    st.builds(
        ToolCall,
        st.just(0),
        st.text("0123456789abcdef", min_size=24, max_size=24).map(lambda h: "call_" + h),
        st.sampled_from(["f", "g"]),
        st.just("{}"),
    ),
    st.builds(Sources, st.just((Source("https://s.example/"),))),
)


@settings(deadline=None)  # a loaded CI machine is no failure
@given(st.lists(_EVENT, max_size=12), st.sampled_from(["finish", "failure"]))
def test_any_event_sequence_is_well_formed(events: list[OutEvent], end: str) -> None:
    """Any sequence: increasing sequence numbers, every delta inside an added/done pair of its
    item, one terminal event last, and the final output equals the done items (SDK rules)."""
    last: OutEvent = Finish("stop") if end == "finish" else Failure(UpstreamTruncatedError("x"))
    evs = stream([*events, last])
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    open_items: dict[int, str] = {}
    done_items: dict[int, dict[str, Any]] = {}
    for e in evs[2:-1]:
        t = e["type"]
        if t == "response.output_item.added":
            assert e["output_index"] not in open_items and e["output_index"] not in done_items
            open_items[e["output_index"]] = e["item"]["id"]
        elif t == "response.output_item.done":
            assert open_items.pop(e["output_index"]) == e["item"]["id"]
            done_items[e["output_index"]] = e["item"]
        elif "item_id" in e:
            assert open_items[e["output_index"]] == e["item_id"], e
    terminal = evs[-1]
    if end == "finish":
        assert terminal["type"] == "response.completed" and not open_items
        assert terminal["response"]["output"] == [done_items[i] for i in sorted(done_items)]
    else:
        assert [e["type"] for e in evs[-2:]] == ["error", "response.failed"]
    text = "".join(e.text for e in events if isinstance(e, Text) and e.kind == "content")
    out_text = "".join(
        p["text"]
        for i in terminal["response"]["output"]
        if i["type"] == "message"
        for p in i["content"]
    )
    assert out_text == text


# -- body renderer -----------------------------------------------------------------------------


def test_body_matches_stream_output() -> None:
    events: list[OutEvent] = [
        Text("reasoning", "R"),
        Text("content", "A"),
        ToolCall(0, "call_" + "c" * 24, "get_weather", "{}"),
        Finish("tool_calls"),
    ]
    req = parse_request({"model": "m", "input": "x"})
    body_r = ResponsesBodyRenderer(req, IDS)
    for e in events:
        body_r.add(e)
    body = body_r.body(Usage(3, 4))
    streamed = stream(events, Usage(3, 4), model="m")[-1]["response"]

    def strip_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in i.items() if k != "id"} for i in items]

    assert strip_ids(body["output"]) == strip_ids(streamed["output"])
    assert body["status"] == "completed"
    assert body["usage"]["total_tokens"] == 7


def test_body_raises_recorded_failure() -> None:
    r = ResponsesBodyRenderer(parse_request({"model": "m", "input": "x"}), IDS)
    r.add(Text("content", "x"))
    r.add(Failure(UpstreamTruncatedError("cut")))
    with pytest.raises(UpstreamTruncatedError):
        r.body(None)


# -- stored history ----------------------------------------------------------------------------


def test_entry_round_trip_and_assistant_turn() -> None:
    req = parse_request({"model": "m", "input": "Q", "tools": TOOLS})
    r = ResponsesStreamRenderer(req, IDS)
    r.head()
    call = ToolCall(0, "call_" + "d" * 24, "get_weather", '{"city":"Oslo"}')
    r.render([Text("reasoning", "R"), Text("content", "Let me check."), call,
              Finish("tool_calls")], Usage(1, 2))  # fmt: skip
    turn = r.output.assistant_turn()
    assert turn.content == "Let me check." and turn.reasoning == "R"
    assert turn.tool_calls == (ToolCallRecord(call.id, call.name, call.arguments),)
    data = dump_entry([Turn("user", "Q0"), *req.turns, turn], r.output.response())
    stored = load_entry(data)
    assert [(t.role, t.content) for t in stored.turns] == [
        ("user", "Q0"),
        ("user", "Q"),
        ("assistant", "Let me check."),
    ]
    assert stored.turns[2].tool_calls == turn.tool_calls
    assert stored.response["id"] == "resp_test"
    with pytest.raises(ValueError):
        load_entry(b'{"v": 2}')


def test_namespace_tools_are_offered_and_calls_carry_the_namespace() -> None:
    """Codex groups some function tools in ``{"type": "namespace", "tools": [...]}``."""
    ns_tool = {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "Sub-agents.",
        "tools": [{"type": "function", "name": "close_agent", "parameters": {"type": "object"}}],
    }
    req = parse_request({"model": "m", "input": "x", "tools": [*TOOLS, ns_tool]})
    assert [t.name for t in req.tools] == ["get_weather", "close_agent"]
    assert req.echo["tools"][1] == ns_tool
    r = ResponsesStreamRenderer(req, IDS)
    r.head()
    raw = r.render(
        [ToolCall(0, "call_" + "e" * 24, "close_agent", "{}"),
         ToolCall(1, "call_" + "f" * 24, "get_weather", '{"city":"Oslo"}'),
         Finish("tool_calls")], None
    )  # fmt: skip
    output = frames(raw)[-1]["response"]["output"]
    assert output[0]["namespace"] == "multi_agent_v1"
    assert "namespace" not in output[1]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_ITEM = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(
            ["message", "function_call", "function_call_output", "reasoning", "x", 3]
        ),
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool", None]),
        "content": _JSON,
        "call_id": _JSON,
        "name": _JSON,
        "arguments": _JSON,
        "output": _JSON,
        "summary": _JSON,
    },
)


@settings(deadline=None)  # a loaded CI machine is no failure
@given(
    st.fixed_dictionaries(
        {"model": st.just("m")},
        optional={
            "input": st.one_of(st.text(max_size=5), st.lists(_ITEM, max_size=5), _JSON),
            "tools": _JSON,
            "tool_choice": _JSON,
            "reasoning": _JSON,
            "instructions": _JSON,
        },
    )
)
# a value JSON cannot hold (an integer beyond 64 bits, given to the parser directly)
@example({"model": "m", "input": [{"type": "function_call_output", "output": -(2**63) - 1}]})
@example(
    {
        "model": "m",
        "input": [
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": {"n": 2**64}}
        ],
    }
)
def test_any_body_parses_or_is_a_client_error(body: dict[str, Any]) -> None:
    """Whatever the shape, parsing gives a request or a 400-class error naming a param."""
    try:
        req = parse_request(body)
        build_conversation(req)
    except ClientRequestError as exc:
        assert exc.http_status() == 400
        assert exc.param


@settings(deadline=None)  # a loaded CI machine is no failure
@given(st.lists(_EVENT, max_size=12))
def test_fast_delta_frames_equal_the_event_objects(events: list[OutEvent]) -> None:
    """The renderer's cached-head delta frames decode to exactly the events the slow path
    builds (item ids aside, which are random per response)."""
    req = parse_request({"model": "m", "input": "x"})
    fast = ResponsesStreamRenderer(req, IDS)
    got = frames(fast.head() + fast.render([*events, Finish("stop")], USAGE))
    slow_renderer = ResponsesStreamRenderer(req, IDS)
    slow = slow_renderer.output
    want = frames(slow_renderer.head()) + [
        e for ev in [*events, Finish("stop")] for e in slow.on_event(ev, USAGE)
    ]

    def normalised(evs: list[dict[str, Any]], items: list[dict[str, Any]]) -> str:
        text = json.dumps(evs, sort_keys=True)
        for n, item in enumerate(items):
            text = text.replace(item["id"], f"item{n}")
        return text

    assert normalised(got, fast.output.items) == normalised(want, slow.items)


def test_head_is_the_start_whenever_it_is_asked_for() -> None:
    """The relay may render the first batch before it asks for the head: the head still holds
    sequence numbers 0 and 1 and a response with no output, and the events follow from 2."""
    r = ResponsesStreamRenderer(parse_request({"model": "m", "input": "x"}), IDS)
    body = r.render([Text("content", "Hi"), Finish("stop")], USAGE)
    evs = frames(r.head() + body)
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    assert evs[0]["type"] == "response.created" and evs[0]["response"]["output"] == []
    assert evs[1]["response"]["status"] == "in_progress"
    assert evs[-1]["type"] == "response.completed"
