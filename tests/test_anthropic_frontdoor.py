"""The pure Anthropic front door: request parsing, renderers, errors and the token estimate.

The stream renderer's bytes are folded with the anthropic SDK's own accumulator
(``accumulate_event``) and its event models, so the shapes are checked by the client that reads
them; hypothesis checks that any event sequence gives a well-formed stream that agrees with the
non-stream body.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from proxy.config import ConfigError, Settings, load_settings
from proxy.errors import (
    AuthenticationError,
    BodyTooLargeError,
    ClientRequestError,
    ModelNotFoundError,
    NoUpstreamTokenError,
    ProxyError,
    UnsupportedContentError,
    UpstreamCaptchaError,
    UpstreamEmptyError,
    UpstreamRateLimitedError,
    UpstreamTimeoutError,
    UpstreamUnauthorizedError,
)
from proxy.frontdoors.anthropic import (
    AnthropicBody,
    AnthropicStream,
    count_tokens,
    estimate_tokens,
    parse_count_tokens,
    parse_messages,
    render_error,
    resolve_model,
    tool_use_id,
)
from proxy.qwen.translate import Failure, Finish, Media, OutEvent, Sources, Text, ToolCall, Usage

EVENTS = TypeAdapter(RawMessageStreamEvent)


def _req(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hi"}],
    }
    body.update(kw)
    return body


# -- parsing -------------------------------------------------------------------------------------


def test_minimal_request() -> None:
    conv = parse_messages(_req())
    assert conv.model == "qwen3-max"
    assert conv.metadata["requested_model"] == "claude-sonnet-4-5"
    assert [(t.role, t.content) for t in conv.turns] == [("user", "hi")]
    assert conv.max_output_tokens == 1024
    assert conv.stream is False
    assert conv.thinking is None
    assert conv.tools == ()
    assert count_tokens(conv) > 0


def test_system_string_and_blocks() -> None:
    conv = parse_messages(_req(system="Be brief."))
    assert (conv.turns[0].role, conv.turns[0].content) == ("system", "Be brief.")
    blocks = [
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Work in /repo."},
    ]
    conv = parse_messages(_req(system=blocks))
    assert conv.turns[0].content == "You are Claude Code.\n\nWork in /repo."
    with pytest.raises(ClientRequestError) as ei:
        parse_messages(_req(system=[{"type": "image", "source": {}}]))
    assert ei.value.param == "system.0.type"


def test_text_blocks_become_one_string() -> None:
    """A user message of text blocks reads like the same text sent as a string."""
    conv = parse_messages(
        _req(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}]}])
    )
    assert conv.turns[0].content == "a"


def test_images_base64_and_url() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    conv = parse_messages(_req(messages=[{"role": "user", "content": content}]))
    assert conv.turns[0].content == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]


def test_image_with_unknown_source_is_refused_with_param() -> None:
    content = [{"type": "image", "source": {"type": "file", "file_id": "f1"}}]
    with pytest.raises(UnsupportedContentError) as ei:
        parse_messages(_req(messages=[{"role": "user", "content": content}]))
    assert ei.value.param == "messages.0.content.0.source.type"


def test_a_tool_use_input_json_cannot_hold_is_a_client_error_naming_it() -> None:
    """An integer beyond 64 bits (given to the parser directly: JSON text never decodes to one)
    is a 400 naming the input, not a 500."""
    block = {"type": "tool_use", "id": "t1", "name": "f", "input": {"n": 2**64}}
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [block]}]
    with pytest.raises(ClientRequestError) as ei:
        parse_messages(_req(messages=messages))
    assert ei.value.param == "messages.1.content.0.input"


def test_documents() -> None:
    content = [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}},
        {
            "type": "document",
            "title": "r.pdf",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
        },
    ]
    conv = parse_messages(_req(messages=[{"role": "user", "content": content}]))
    assert conv.turns[0].content == [
        {"type": "text", "text": "x"},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "r.pdf"},
        },
    ]


def test_tool_round_trip_history() -> None:
    messages = [
        {"role": "user", "content": "Read setup.py"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should read it.", "signature": "sig"},
                {"type": "text", "text": "Reading it."},
                {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"path": "s.py"}},
                {"type": "tool_use", "id": "toolu_02", "name": "Glob", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "print(1)"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_02",
                    "content": [{"type": "text", "text": "no match"}],
                    "is_error": True,
                },
                {"type": "text", "text": "Now explain."},
            ],
        },
    ]
    tools = [
        {"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}},
        {"name": "Glob", "input_schema": {"type": "object", "properties": {}}},
    ]
    conv = parse_messages(_req(messages=messages, tools=tools))
    roles = [t.role for t in conv.turns]
    assert roles == ["user", "assistant", "tool", "tool", "user"]
    assistant = conv.turns[1]
    assert assistant.content == "Reading it."
    assert assistant.reasoning == "I should read it."
    assert [(c.id, c.name, json.loads(c.arguments)) for c in assistant.tool_calls] == [
        ("toolu_01", "Read", {"path": "s.py"}),
        ("toolu_02", "Glob", {}),
    ]
    first, second = conv.turns[2], conv.turns[3]
    assert (first.tool_call_id, first.name, first.content) == ("toolu_01", "Read", "print(1)")
    assert (second.tool_call_id, second.name, second.content) == (
        "toolu_02",
        "Glob",
        "Error:\nno match",
    )
    assert conv.turns[4].content == "Now explain."
    assert [t.name for t in conv.tools] == ["Read", "Glob"]
    assert conv.tools[0].description == "Read a file"
    assert conv.tools[0].parameters == {"type": "object"}
    assert conv.tool_choice.mode == "auto"


@pytest.mark.parametrize(
    ("choice", "mode", "name", "parallel"),
    [
        ({"type": "auto"}, "auto", None, True),
        ({"type": "any"}, "required", None, True),
        ({"type": "none"}, "none", None, True),
        ({"type": "tool", "name": "Read"}, "named", "Read", True),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", None, False),
    ],
)
def test_tool_choice(choice: dict[str, Any], mode: str, name: str | None, parallel: bool) -> None:
    tools = [{"name": "Read", "input_schema": {"type": "object"}}]
    conv = parse_messages(_req(tools=tools, tool_choice=choice))
    assert (conv.tool_choice.mode, conv.tool_choice.name) == (mode, name)
    assert conv.parallel_tool_calls is parallel


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"tools": [{"name": "x"}]}, "tools.0.input_schema"),
        ({"tools": [{"input_schema": {}}]}, "tools.0.name"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
        ({"tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"thinking": {"type": "maybe"}}, "thinking.type"),
        (
            {"messages": [{"role": "user", "content": [{"type": "wat"}]}]},
            "messages.0.content.0.type",
        ),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages.0.content.0.type"),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "a"}]}]},
            "messages.0.content.0.type",
        ),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "x"}]}]},
            "messages.0.content.0.id",
        ),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    req = _req(**body)
    if body.get("max_tokens", 1) is None:
        del req["max_tokens"]
    with pytest.raises(ClientRequestError) as ei:
        parse_messages(req)
    assert ei.value.param == param
    status, _, err = render_error(ei.value)
    assert status == 400
    assert err["error"]["type"] == "invalid_request_error"
    assert param in err["error"]["message"]


def test_unknown_fields_are_ignored() -> None:
    """What Claude Code sends beyond the documented core is accepted (never a 400)."""
    conv = parse_messages(
        _req(
            metadata={"user_id": "u"},
            context_management={"edits": []},
            temperature=1,
            tools=[
                {
                    "name": "Bash",
                    "input_schema": {"type": "object"},
                    "cache_control": {"type": "ephemeral"},
                    "defer_loading": False,
                    "input_examples": [],
                }
            ],
        )
    )
    assert [t.name for t in conv.tools] == ["Bash"]


@pytest.mark.parametrize(
    ("thinking", "expected"),
    [
        ({"type": "enabled", "budget_tokens": 2048}, True),
        ({"type": "disabled"}, False),
        ({"type": "adaptive"}, None),
    ],
)
def test_thinking(thinking: dict[str, Any], expected: bool | None) -> None:
    assert parse_messages(_req(thinking=thinking, max_tokens=4096)).thinking is expected


def test_stop_sequences_and_stream() -> None:
    conv = parse_messages(_req(stop_sequences=["END", ""], stream=True))
    assert conv.stop == ("END",)
    assert conv.stream is True


def test_count_tokens_request_needs_no_max_tokens() -> None:
    body = _req()
    del body["max_tokens"]
    conv = parse_count_tokens(body)
    assert count_tokens(conv) > 0


# -- model map -----------------------------------------------------------------------------------


def test_model_map() -> None:
    mapping = {"claude-opus-4-1": "qwen3-max-thinking", "claude-*haiku*": "qwen3.6-plus"}
    assert resolve_model("claude-opus-4-1", mapping, "qwen3-max") == "qwen3-max-thinking"
    assert resolve_model("Claude-Opus-4-1", mapping, "qwen3-max") == "qwen3-max-thinking"
    assert resolve_model("claude-3-5-haiku-20241022", mapping, "qwen3-max") == "qwen3.6-plus"
    assert resolve_model("claude-sonnet-4-5", mapping, "qwen3-max") == "qwen3-max"
    assert resolve_model("qwen3-coder-plus", mapping, "qwen3-max") == "qwen3-coder-plus"
    assert resolve_model("qwen3-max-thinking", {}, "qwen3-max") == "qwen3-max-thinking"
    conv = parse_messages(_req(model="claude-haiku-4-5"), model_map=mapping)
    assert conv.model == "qwen3.6-plus"


def test_exact_key_beats_an_earlier_pattern() -> None:
    mapping = {"claude-*": "qwen3-max", "claude-opus-4-1": "qwen3-max-thinking"}
    assert resolve_model("claude-opus-4-1", mapping, "x") == "qwen3-max-thinking"


# -- token estimate ------------------------------------------------------------------------------


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("你好") == 2
    long = "word " * 1000
    assert 1000 <= estimate_tokens(long) <= 1500


def test_count_tokens_counts_system_tools_and_images() -> None:
    base = count_tokens(parse_count_tokens(_req()))
    with_system = count_tokens(parse_count_tokens(_req(system="x " * 400)))
    assert with_system >= base + 150
    tools = [{"name": "Read", "description": "d" * 400, "input_schema": {"type": "object"}}]
    with_tools = count_tokens(parse_count_tokens(_req(tools=tools)))
    assert with_tools >= base + 100 + 160
    image = {"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}}
    with_image = count_tokens(
        parse_count_tokens(_req(messages=[{"role": "user", "content": [image]}]))
    )
    assert with_image >= 1600


# -- renderers -----------------------------------------------------------------------------------


def _parse_sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` pairs; each frame must have both lines and matching types."""
    out = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        lines = frame.split("\n")
        assert len(lines) == 2, frame
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        name, data = lines[0][7:], json.loads(lines[1][6:])
        assert data["type"] == name
        out.append((name, data))
    return out


def _fold(raw: bytes) -> Any:
    """Fold a rendered stream with the SDK's accumulator (validating every event model)."""
    snapshot = None
    bufs: dict[int, bytes] = {}
    for name, data in _parse_sse(raw):
        if name in ("ping", "error"):
            continue
        event = EVENTS.validate_python(data)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=bufs)
    return snapshot


def _render(events: list[OutEvent], usage: Usage | None = None, **kw: Any) -> bytes:
    stream = AnthropicStream(model="claude-sonnet-4-5", input_tokens=kw.pop("input_tokens", 42))
    raw = stream.head()
    for e in events:
        raw += stream.render([e], usage)
    return raw


CALL = ToolCall(index=0, id="call_" + "a" * 24, name="Read", arguments='{"path": "s.py"}')


def test_stream_text_then_tool_use_grammar() -> None:
    events: list[OutEvent] = [
        Text("reasoning", "Think."),
        Text("content", "Reading"),
        Text("content", " it."),
        CALL,
        Finish("tool_calls"),
    ]
    raw = _render(events, Usage(812, 31))
    names = [n for n, _ in _parse_sse(raw)]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    frames = [f for f in _parse_sse(raw) if f[0] != "ping"]
    assert frames[0][1]["message"]["usage"] == {"input_tokens": 812, "output_tokens": 0}
    assert frames[8][1]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_" + "a" * 24,
        "name": "Read",
        "input": {},
    }
    assert frames[9][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"path": "s.py"}'}
    assert frames[11][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert frames[11][1]["usage"] == {"input_tokens": 812, "output_tokens": 31}
    message = _fold(raw)
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[0].thinking == "Think."
    assert message.content[1].text == "Reading it."
    assert message.content[2].input == {"path": "s.py"}
    assert message.stop_reason == "tool_use"


@pytest.mark.parametrize(
    ("finish", "reason", "sequence"),
    [
        (Finish("stop"), "end_turn", None),
        (Finish("length"), "max_tokens", None),
        (Finish("tool_calls"), "tool_use", None),
        (Finish("stop", stop_sequence="END"), "stop_sequence", "END"),
    ],
)
def test_stop_reasons(finish: Finish, reason: str, sequence: str | None) -> None:
    events: list[OutEvent] = [Text("content", "x"), finish]
    message = _fold(_render(events))
    assert (message.stop_reason, message.stop_sequence) == (reason, sequence)
    body = AnthropicBody(model="m", input_tokens=1)
    for e in events:
        body.add(e)
    out = Message.model_validate(body.body(None))
    assert (out.stop_reason, out.stop_sequence) == (reason, sequence)


def test_usage_falls_back_to_estimates() -> None:
    """Without the site's usage: the request's estimate (computed only then) and the
    answer's length."""
    calls: list[int] = []

    def estimate() -> int:
        calls.append(1)
        return 77

    raw = _render([Text("content", "abcdefgh"), Finish()], None, input_tokens=estimate)
    frames = _parse_sse(raw)
    assert frames[0][1]["message"]["usage"]["input_tokens"] == 77
    assert frames[-2][1]["usage"] == {"input_tokens": 77, "output_tokens": 2}
    assert calls == [1]  # computed once for message_start and message_delta
    calls.clear()
    _render([Text("content", "abcdefgh"), Finish()], Usage(5, 6), input_tokens=estimate)
    assert calls == []


def test_failure_after_text_is_an_error_event() -> None:
    raw = _render([Text("content", "partial"), Failure(UpstreamEmptyError("gone"))])
    frames = _parse_sse(raw)
    assert frames[-1] == (
        "error",
        {
            "type": "error",
            "error": {"type": "api_error", "message": "gone"},
            "request_id": frames[-1][1]["request_id"],
        },
    )
    assert "message_stop" not in [n for n, _ in frames]


def test_media_and_sources() -> None:
    events: list[OutEvent] = [
        Sources(()),
        Text("content", "Here:"),
        Media("image", "https://cdn/x.png"),
        Finish(),
    ]
    message = _fold(_render(events))
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Here:![image](https://cdn/x.png)"


def test_keepalive_is_a_ping() -> None:
    stream = AnthropicStream(model="m", input_tokens=1)
    assert _parse_sse(stream.keepalive()) == [("ping", {"type": "ping"})]


def test_body_validates_as_sdk_message() -> None:
    body = AnthropicBody(model="claude-sonnet-4-5", input_tokens=5)
    for e in [
        Text("reasoning", "a"),
        Text("reasoning", "b"),
        Text("content", "x"),
        CALL,
        Finish("tool_calls"),
    ]:
        body.add(e)
    out = Message.model_validate(body.body(Usage(10, 3)))
    assert out.type == "message" and out.role == "assistant"
    assert [b.type for b in out.content] == ["thinking", "text", "tool_use"]
    assert out.content[0].thinking == "ab"
    assert out.content[2].id == "toolu_" + "a" * 24
    assert out.content[2].input == {"path": "s.py"}
    assert (out.usage.input_tokens, out.usage.output_tokens) == (10, 3)


def test_body_raises_the_recorded_failure() -> None:
    body = AnthropicBody(model="m", input_tokens=1)
    body.add(Text("content", "x"))
    body.add(Failure(UpstreamEmptyError("nothing")))
    with pytest.raises(UpstreamEmptyError):
        body.body(None)


def test_tool_use_id() -> None:
    assert tool_use_id("call_abc") == "toolu_abc"
    assert tool_use_id("toolu_abc") == "toolu_abc"


_text = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12)
_event = st.one_of(
    st.builds(Text, st.sampled_from(["content", "reasoning"]), _text),
    st.builds(Media, st.just("image"), st.sampled_from(["https://cdn/a.png", "https://cdn/b"])),
    st.builds(Sources, st.just(())),
    st.builds(
        lambda i, name, arg: ToolCall(i, f"call_{i:024x}", name, json.dumps({"a": arg})),
        st.integers(0, 5),
        st.sampled_from(["Read", "Bash"]),
        _text,
    ),
)


@given(
    st.lists(_event, max_size=12),
    st.sampled_from([Finish("stop"), Finish("tool_calls"), Failure(UpstreamEmptyError("x"))]),
    st.integers(1, 4),
)
def test_stream_and_body_agree_on_any_events(
    events: list[OutEvent], last: OutEvent, batch: int
) -> None:
    """Any event sequence, in any batching: a well-formed stream (block indexes in order, every
    block started, delta'd and stopped, one terminator) that folds to the non-stream body."""
    seq = [*events, last]
    stream = AnthropicStream(model="m", input_tokens=3)
    raw = stream.head()
    for i in range(0, len(seq), batch):
        raw += stream.render(seq[i : i + batch], Usage(3, 4))
    frames = _parse_sse(raw)
    assert frames[0][0] == "message_start"
    open_index = None
    next_index = 0
    for name, data in frames[1:]:
        if name == "ping":
            continue
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index, next_index = data["index"], next_index + 1
        elif name in ("content_block_delta", "content_block_stop"):
            assert data["index"] == open_index
            if name == "content_block_stop":
                open_index = None
    names = [n for n, _ in frames]
    body = AnthropicBody(model="m", input_tokens=3)
    for e in seq:
        body.add(e)
    if isinstance(last, Failure):
        assert names[-1] == "error" and "message_stop" not in names
        with pytest.raises(UpstreamEmptyError):
            body.body(Usage(3, 4))
        return
    assert names[-2:] == ["message_delta", "message_stop"] and open_index is None
    folded = _fold(raw).to_dict()
    expected = body.body(Usage(3, 4))
    assert folded["content"] == expected["content"]
    assert folded["stop_reason"] == expected["stop_reason"]


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status", "kind", "sdk_class"),
    [
        (ClientRequestError("bad"), 400, "invalid_request_error", anthropic.BadRequestError),
        (AuthenticationError("key"), 401, "authentication_error", anthropic.AuthenticationError),
        (
            UpstreamUnauthorizedError("token"),
            401,
            "authentication_error",
            anthropic.AuthenticationError,
        ),
        (ModelNotFoundError("m"), 404, "not_found_error", anthropic.NotFoundError),
        (BodyTooLargeError("big"), 413, "request_too_large", anthropic.ContentTooLargeError),
        (
            UpstreamRateLimitedError("quota", retry_after_s=3600),
            429,
            "rate_limit_error",
            anthropic.RateLimitError,
        ),
        (UpstreamEmptyError("empty"), 502, "api_error", anthropic.InternalServerError),
        (UpstreamTimeoutError("slow"), 504, "api_error", anthropic.InternalServerError),
        (NoUpstreamTokenError("all resting"), 529, "overloaded_error", anthropic.OverloadedError),
        (UpstreamCaptchaError("captcha"), 529, "overloaded_error", anthropic.OverloadedError),
        (ValueError("boom"), 500, "api_error", anthropic.InternalServerError),
    ],
)
def test_error_mapping(
    exc: BaseException, status: int, kind: str, sdk_class: type[Exception]
) -> None:
    """Each error of the tree gets its Anthropic status and type (``sdk_class``: what the
    anthropic SDK raises for that status; checked end to end in test_e2e_anthropic)."""
    got_status, headers, body = render_error(exc)
    assert (got_status, body["type"], body["error"]["type"]) == (status, "error", kind)
    assert body["request_id"].startswith("req_") and headers["request-id"] == body["request_id"]
    assert getattr(sdk_class, "status_code", status) == status
    if isinstance(exc, ProxyError):
        assert body["error"]["message"] == exc.message


def test_permission_error_for_403() -> None:
    class Forbidden(ProxyError):
        status = 403

    status, _, body = render_error(Forbidden("no"))
    assert (status, body["error"]["type"]) == (403, "permission_error")


def test_retry_after_is_kept() -> None:
    """Retry-After passes through; a wait over a minute also says x-should-retry: false."""
    _, headers, _ = render_error(UpstreamRateLimitedError("q", retry_after_s=7200))
    assert (headers["Retry-After"], headers["x-should-retry"]) == ("7200", "false")
    _, headers, _ = render_error(NoUpstreamTokenError("r", retry_after_s=30))
    assert headers["Retry-After"] == "30" and "x-should-retry" not in headers
    _, headers, _ = render_error(UpstreamCaptchaError("c"))
    assert (headers["Retry-After"], headers["x-should-retry"]) == ("600", "false")
    _, headers, _ = render_error(UpstreamEmptyError("e"))
    assert "Retry-After" not in headers and "x-should-retry" not in headers


# -- settings ------------------------------------------------------------------------------------


def test_model_map_settings_from_env_and_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The map comes from a TOML table, or from the environment as pairs or JSON."""
    toml = tmp_path / "proxy.toml"
    toml.write_text(
        'anthropic_default_model = "qwen3.6-plus"\n\n'
        '[anthropic_model_map]\n"claude-*haiku*" = "qwen3.6-plus"\n"claude-*opus*" = "qwen3-max"\n'
    )
    settings = load_settings(toml)
    assert settings.anthropic_model_map == {
        "claude-*haiku*": "qwen3.6-plus",
        "claude-*opus*": "qwen3-max",
    }
    assert settings.anthropic_default_model == "qwen3.6-plus"
    monkeypatch.setenv("QWEN_PROXY_ANTHROPIC_MODEL_MAP", " claude-*haiku* = a , claude-x=b ")
    assert load_settings().anthropic_model_map == {"claude-*haiku*": "a", "claude-x": "b"}
    monkeypatch.setenv("QWEN_PROXY_ANTHROPIC_MODEL_MAP", '{"claude-y": "c"}')
    assert load_settings().anthropic_model_map == {"claude-y": "c"}
    monkeypatch.setenv("QWEN_PROXY_ANTHROPIC_MODEL_MAP", "no-equals-sign")
    with pytest.raises(ConfigError, match="pattern=model"):
        load_settings()
    monkeypatch.delenv("QWEN_PROXY_ANTHROPIC_MODEL_MAP")
    assert Settings().anthropic_default_model == "qwen3-max"
    assert Settings().anthropic_model_map == {}


# -- fuzzing the parser ----------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
_block_type = st.sampled_from(
    ["text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking", "x"]
)
_fuzzy_block = st.fixed_dictionaries(
    {"type": _block_type},
    optional={
        "text": _json,
        "source": st.fixed_dictionaries(
            {"type": st.sampled_from(["base64", "url", "text", "content", "file"])},
            optional={"media_type": _json, "data": _json, "url": _json, "content": _json},
        ),
        "id": _json,
        "name": _json,
        "input": _json,
        "tool_use_id": _json,
        "content": _json | st.lists(st.fixed_dictionaries({"type": _block_type, "text": _json})),
        "thinking": _json,
        "is_error": _json,
    },
)
_s = st.text(max_size=6)
_block = st.one_of(
    _fuzzy_block,
    st.fixed_dictionaries({"type": st.just("text"), "text": _s}),
    st.fixed_dictionaries(
        {
            "type": st.just("image"),
            "source": st.fixed_dictionaries(
                {"type": st.just("base64"), "media_type": st.just("image/png"), "data": _s}
            )
            | st.fixed_dictionaries({"type": st.just("url"), "url": _s}),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("tool_use"),
            "id": _s,
            "name": _s,
            "input": st.dictionaries(_s, _json, max_size=2),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("tool_result"),
            "tool_use_id": _s,
            "content": _s | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": _s})),
            "is_error": st.booleans(),
        }
    ),
    st.fixed_dictionaries({"type": st.just("thinking"), "thinking": _s, "signature": _s}),
)
_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(
            ["user", "assistant", "user", "assistant", "user", "assistant", "system"]
        ),
        "content": st.text(max_size=5) | st.lists(_block, max_size=3),
    }
)


@given(
    st.fixed_dictionaries(
        {
            "model": st.sampled_from(["claude-x", "qwen3-max", "claude-y", ""]),
            "messages": st.lists(_message, min_size=1, max_size=3),
            "max_tokens": st.integers(1, 9) | st.integers(1, 9) | _json,
        },
        optional={
            "system": st.text(max_size=5) | _json,
            "tools": _json
            | st.lists(
                st.fixed_dictionaries(
                    {"name": _s, "input_schema": st.just({"type": "object"})},
                    optional={"description": _json, "type": st.sampled_from(["custom", "bash"])},
                ),
                max_size=2,
            ),
            "tool_choice": _json
            | st.fixed_dictionaries(
                {"type": st.sampled_from(["auto", "any", "tool", "none"])},
                optional={"name": _s, "disable_parallel_tool_use": _json},
            ),
            "thinking": _json,
            "stop_sequences": _json,
            "stream": _json,
        },
    )
    | _json
)
@settings(max_examples=300)
def test_parser_never_fails_other_than_with_a_client_error(body: Any) -> None:
    """Any body either parses (and its estimate is positive) or is a 400-class client error."""
    try:
        conv = parse_messages(body)
    except ClientRequestError as exc:
        status, _, err = render_error(exc)
        assert status == 400 and err["error"]["type"] == "invalid_request_error"
        return
    assert count_tokens(conv) >= 1
