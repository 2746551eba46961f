"""The Qwen-to-OpenAI translator: phases, snapshots, sources, usage, ends and failures."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from proxy.conformance.contract import exact_problems
from proxy.errors import (
    UpstreamCaptchaError,
    UpstreamEmptyError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamTruncatedError,
)
from proxy.qwen.translate import (
    Aggregate,
    ChunkEncoder,
    Failure,
    Finish,
    OutEvent,
    Sources,
    Text,
    Translator,
    Usage,
)


def delta(phase: str | None, content: str = "", status: str = "typing", **extra: Any) -> str:
    d: dict[str, Any] = {"role": "assistant", "content": content, "phase": phase, "status": status}
    d.update(extra)
    return json.dumps({"choices": [{"delta": d}]}, ensure_ascii=False)


CREATED = '{"response.created":{"chat_id":"c1","parent_id":"p1","response_id":"r1"}}'
FINISHED = delta("answer", "", "finished")


def run(frames: list[str], **kw: Any) -> list[OutEvent]:
    tr = Translator(**kw)
    out: list[OutEvent] = []
    for f in frames:
        out.extend(tr.feed(f))
    out.extend(tr.close())
    return out


def texts(events: list[OutEvent], kind: str) -> str:
    return "".join(e.text for e in events if isinstance(e, Text) and e.kind == kind)


def test_answer_frames_become_content_then_finish() -> None:
    """Answer deltas pass through in order, and the finished answer frame ends the stream."""
    out = run([CREATED, delta("answer", "Hel"), delta("answer", "lo"), FINISHED])
    assert texts(out, "content") == "Hello"
    assert out[-1] == Finish("stop")


def test_repeated_incremental_text_is_not_deduplicated() -> None:
    """Incremental text that repeats itself ("ha", "ha") is kept: only snapshots are diffed."""
    out = run([delta("answer", "ha"), delta("answer", "ha"), delta("answer", "ha"), FINISHED])
    assert texts(out, "content") == "hahaha"


def test_think_phase_is_reasoning_and_its_finish_does_not_end_the_stream() -> None:
    """think text becomes reasoning; a finished think frame is not the end of the answer."""
    out = run(
        [
            delta("think", "Let me "),
            delta("think", "think."),
            delta("think", "", "finished"),
            delta("answer", "42"),
            FINISHED,
        ]
    )
    assert texts(out, "reasoning") == "Let me think."
    assert texts(out, "content") == "42"
    assert isinstance(out[-1], Finish)


def summary(*thoughts: str, status: str = "typing") -> str:
    extra = {
        "summary_title": {"content": ["Step"] * len(thoughts)},
        "summary_thought": {"content": list(thoughts)},
    }
    return delta("thinking_summary", "", status, extra=extra)


def test_thinking_summary_snapshots_emit_only_what_is_new() -> None:
    """Cumulative thinking_summary snapshots are prefix-diffed: nothing is ever repeated."""
    out = run(
        [
            summary("The user"),
            summary("The user asks"),
            summary("The user asks"),
            summary("The user asks", "Colors"),
            summary("The user asks", "Colors: red", status="finished"),
            delta("answer", "Red."),
            FINISHED,
        ]
    )
    reasoning = [e.text for e in out if isinstance(e, Text) and e.kind == "reasoning"]
    assert reasoning == ["The user", " asks", "\n\nColors", ": red"]
    assert "".join(reasoning) == "\n\n".join(["The user asks", "Colors: red"])


def test_think_tags_mode_puts_reasoning_inline() -> None:
    """With reasoning="think_tags" the reasoning opens the content inside <think> tags."""
    out = run([delta("think", "hmm"), delta("answer", "ok"), FINISHED], reasoning="think_tags")
    assert texts(out, "content") == "<think>\nhmm\n</think>\n\nok"
    assert texts(out, "reasoning") == ""


def test_think_tags_mode_keeps_reasoning_that_comes_after_the_answer_started() -> None:
    """Phases think, answer, think, answer, …: each later reasoning is one more block where it
    comes (before, reasoning after answer text was dropped in think_tags mode)."""
    frames = [
        delta("think", "T1"),
        delta("answer", "A1"),
        delta("think", "T2"),
        delta("think", "", "finished"),
        delta("answer", "A2"),
        delta("think", "T3"),
        delta("answer", "A3"),
        FINISHED,
    ]
    out = run(frames, reasoning="think_tags")
    block = "<think>\n{}\n</think>\n\n"
    want = block.format("T1") + "A1" + block.format("T2") + "A2" + block.format("T3") + "A3"
    assert texts(out, "content") == want
    assert out[-1] == Finish("stop")
    inline = "".join(e.text for e in out if isinstance(e, Text) and e.inline_think)
    assert inline == block.format("T1") + block.format("T2") + block.format("T3")
    field = run(frames)
    assert texts(field, "reasoning") == "T1T2T3" and texts(field, "content") == "A1A2A3"


def test_a_late_think_block_comes_after_the_answer_frames_held_before_it() -> None:
    """Answer frames held as possible snapshots go out before a later think block, in order;
    a block still open at the end is closed before the finish."""
    frames = [delta("answer", "ha"), delta("answer", "ha"), delta("think", "T"), FINISHED]
    out = run(frames, reasoning="think_tags")
    assert texts(out, "content") == "haha<think>\nT\n</think>\n\n"
    assert out[-1] == Finish("stop")


def test_search_sources_are_collected_once() -> None:
    """web_search result docs become Sources, each URL once; the 2025 layout works too."""
    docs = [{"url": "https://a.example/", "title": "A"}, {"url": "https://b.example/"}]
    frames = [
        delta("web_search", "", function_call={"name": "web_search", "arguments": "{}"}),
        delta("web_search", "", "finished", extra={"tool_result": {"docs": docs}}),
        delta("web_search", "", "finished", extra={"web_search_info": docs[:1]}),
        delta("answer", "A and B."),
        FINISHED,
    ]
    out = run(frames)
    sources = [s.url for e in out if isinstance(e, Sources) for s in e.items]
    assert sources == ["https://a.example/", "https://b.example/"]


def test_usage_is_the_last_cumulative_value() -> None:
    """Upstream usage is cumulative per frame; the translator keeps the latest."""
    tr = Translator()
    for n in (1, 2, 3):
        tr.feed(
            json.dumps(
                {
                    "choices": [{"delta": {"content": "x", "phase": "answer"}}],
                    "usage": {"input_tokens": 10, "output_tokens": n},
                }
            )
        )
    assert tr.usage == Usage(10, 3)
    assert tr.usage.as_openai() == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}


def test_null_phase_content_counts_as_answer() -> None:
    """Frames without a phase (older models, docs/protocol.md §5.3) are answer text."""
    out = run([delta(None, "plain"), FINISHED])
    assert texts(out, "content") == "plain"


@pytest.mark.parametrize("end", ["[DONE]", '{"response.completed":{}}'])
def test_alternative_end_markers_finish_an_answered_stream(end: str) -> None:
    """[DONE] and response.completed end a stream that has an answer."""
    out = run([delta("answer", "hi"), end])
    assert out[-1] == Finish("stop")


def test_eof_without_answer_is_an_empty_failure() -> None:
    """A stream that ends with no answer text fails as upstream_empty, naming reasoning seen."""
    out = run([CREATED, delta("think", "only thinking")])
    assert isinstance(out[-1], Failure)
    assert isinstance(out[-1].error, UpstreamEmptyError)
    assert "reasoning but no answer" in out[-1].error.message


def test_eof_mid_answer_is_a_truncation() -> None:
    """Answer text without the finished frame, then EOF, fails as upstream_truncated."""
    out = run([delta("answer", "Once upon")])
    assert texts(out, "content") == "Once upon"
    assert isinstance(out[-1], Failure) and isinstance(out[-1].error, UpstreamTruncatedError)


def test_abort_reports_the_broken_connection() -> None:
    """abort() after partial text gives a truncation failure that counts the characters."""
    tr = Translator()
    tr.feed(delta("answer", "abc"))
    (failure,) = tr.abort("ClientPayloadError")
    assert isinstance(failure, Failure)
    assert "after 3 characters" in failure.error.message
    assert tr.abort("again") == []


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ('{"error":{"code":"Internal_Error","details":"boom"}}', UpstreamError),
        (
            '{"success":false,"data":{"code":"RateLimited","details":"limit","num":2}}',
            UpstreamRateLimitedError,
        ),
        ('{"data":{"error":{"code":"X","message":"y"}}}', UpstreamError),
        (
            '{"ret":["FAIL_SYS_USER_VALIDATE","RGV587_ERROR::SM::x"],"data":{"url":"u"}}',
            UpstreamCaptchaError,
        ),
    ],
)
def test_error_frames_mid_stream_fail_after_the_partial_answer(
    frame: str, kind: type[UpstreamError]
) -> None:
    """An error frame after some answer keeps the partial text and then fails with its kind."""
    out = run([delta("answer", "part"), frame, delta("answer", "ignored")])
    assert texts(out, "content") == "part"
    assert isinstance(out[-1], Failure) and isinstance(out[-1].error, kind)


def test_status_error_delta_fails() -> None:
    """A delta whose status is "error" fails the stream (docs/protocol.md §5.7)."""
    out = run([delta("answer", "a"), delta("answer", "", "error")])
    assert isinstance(out[-1], Failure)


def test_unknown_phases_are_ignored_and_reported() -> None:
    """Unknown phases are counted, not emitted, and named in the empty-answer error."""
    tr = Translator()
    tr.feed(delta("mystery", "zzz"))
    assert tr.ignored_phases == {"mystery": 1}
    (failure,) = tr.close()
    assert isinstance(failure, Failure) and "mystery" in failure.error.message


def test_non_json_frame_is_a_protocol_error() -> None:
    """A data line that is not JSON fails the stream rather than being skipped silently."""
    out = run(["not json"])
    assert isinstance(out[0], Failure)
    assert out[0].error.code == "upstream_protocol_error"


def parse_sse(raw: bytes) -> list[Any]:
    out = []
    for block in raw.decode().split("\n\n"):
        if block.startswith("data: "):
            payload = block[len("data: ") :]
            out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


def test_encoder_produces_openai_chunks() -> None:
    """The encoder writes role, deltas, sources, finish, usage and [DONE] as OpenAI chunks."""
    enc = ChunkEncoder(completion_id="chatcmpl-1", model="m", created=5, include_usage=True)
    raw = enc.role() + b"".join(
        enc.encode(e, Usage(3, 4))
        for e in [
            Text("reasoning", "r"),
            Text("content", "你好"),
            Sources(()),
            Finish("stop"),
        ]
    )
    chunks = parse_sse(raw)
    assert chunks[-1] == "[DONE]"
    assert chunks[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "",
        "refusal": None,
    }
    assert chunks[1]["choices"][0]["delta"] == {"reasoning_content": "r"}
    assert chunks[2]["choices"][0]["delta"] == {"content": "你好"}
    assert chunks[4]["choices"][0]["finish_reason"] == "stop"
    assert chunks[5]["choices"] == [] and chunks[5]["usage"]["total_tokens"] == 7
    for c in chunks[:-1]:
        assert c["id"] == "chatcmpl-1" and c["object"] == "chat.completion.chunk"
        # Every field the OpenAI API returns (qwen-proxy check --strict).
        assert exact_problems("chat.completion.chunk", c) == []
    assert all(c["usage"] is None for c in chunks[:-2])
    assert chunks[5]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert "你好".encode() in raw  # UTF-8, not \\u escapes
    plain = ChunkEncoder(completion_id="c", model="m", created=5, include_usage=False)
    assert "usage" not in parse_sse(plain.role())[0]


def test_encoder_failure_is_an_error_event_without_done() -> None:
    """A failure becomes an OpenAI error event and no [DONE] follows."""
    enc = ChunkEncoder(completion_id="c", model="m", created=1, include_usage=False)
    raw = enc.encode(Failure(UpstreamTruncatedError("cut")))
    assert parse_sse(raw) == [
        {
            "error": {
                "message": "cut",
                "type": "upstream_error",
                "param": None,
                "code": "upstream_truncated",
            }
        }
    ]


def test_aggregate_builds_a_completion_or_raises() -> None:
    """Aggregate folds events into one chat.completion, or raises the stream's failure."""
    agg = Aggregate()
    for e in run([delta("think", "r"), delta("answer", "a"), FINISHED]):
        agg.add(e)
    body = agg.completion(completion_id="c", model="m", created=1, usage=Usage(1, 2))
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "a",
        "refusal": None,
        "annotations": [],
        "reasoning_content": "r",
    }
    assert body["usage"]["total_tokens"] == 3
    assert exact_problems("chat.completion", body) == []  # qwen-proxy check --strict
    bad = Aggregate()
    for e in run([delta("answer", "a")]):
        bad.add(e)
    with pytest.raises(UpstreamTruncatedError):
        bad.completion(completion_id="c", model="m", created=1, usage=None)


def test_finished_answer_without_text_is_empty_not_success() -> None:
    """A finished answer frame after no answer text is an empty answer (502), never a 200."""
    out = run([CREATED, delta("think", "hmm"), FINISHED])
    assert isinstance(out[-1], Failure)
    assert isinstance(out[-1].error, UpstreamEmptyError)


def test_fail_ends_the_stream_once() -> None:
    """fail() ends the stream with the given error; afterwards nothing more is emitted."""
    tr = Translator()
    (failure,) = tr.fail(UpstreamTruncatedError("x"))
    assert isinstance(failure, Failure) and tr.done
    assert tr.fail(UpstreamTruncatedError("y")) == [] and tr.feed(delta("answer", "z")) == []


def test_thinking_summary_as_a_single_string_is_diffed_too() -> None:
    """A summary_thought whose content is one growing string is prefix-diffed like an array."""
    frames = [
        delta("thinking_summary", "", extra={"summary_thought": {"content": "Step one"}}),
        delta("thinking_summary", "", extra={"summary_thought": {"content": "Step one, two"}}),
        delta("answer", "ok"),
        FINISHED,
    ]
    assert texts(run(frames), "reasoning") == "Step one, two"


def test_several_data_lines_without_a_blank_line_are_several_frames() -> None:
    """A producer that forgets the blank line between frames sends one SSE event whose data
    joins the frames with newlines: each line is read as its own frame, nothing fails."""
    t = Translator()
    frames = [
        {"response.created": {"chat_id": "c", "response_id": "r"}},
        {"choices": [{"delta": {"content": "Hi", "phase": "answer", "status": "typing"}}]},
        {"choices": [{"delta": {"content": "!", "phase": "answer", "status": "finished"}}]},
    ]
    events = t.feed("\n".join(json.dumps(f) for f in frames))
    assert [e for e in events if isinstance(e, Text)] == [
        Text("content", "Hi"),
        Text("content", "!"),
    ]
    assert isinstance(events[-1], Finish) and t.response_id == "r"
    assert isinstance(Translator().feed('{"a": 1}\nnot json')[-1], Failure)


def _answer_frames(*pieces: str, end: str = "finished") -> list[str]:
    frames = [
        json.dumps({"choices": [{"delta": {"content": p, "phase": "answer", "status": "typing"}}]})
        for p in pieces
    ]
    if end == "finished":
        frames.append(
            json.dumps(
                {"choices": [{"delta": {"content": "", "phase": "answer", "status": "finished"}}]}
            )
        )
    return frames


def _fold(frames: list[str], *, eof: bool = False) -> tuple[str, list[Any]]:
    t = Translator()
    events: list[Any] = []
    for f in frames:
        events += t.feed(f)
    if eof:
        events += t.close()
    return "".join(e.text for e in events if isinstance(e, Text)), events


@pytest.mark.parametrize(
    "pieces",
    [("😂", "😂😂 th", "at is funny"), ("..", "....", " wait"), ("ha", "hah", "aha"), ("a", "aa")],
)
def test_incremental_pieces_that_start_with_the_answer_are_kept(pieces: tuple[str, ...]) -> None:
    text, events = _fold(_answer_frames(*pieces))
    assert text == "".join(pieces) and isinstance(events[-1], Finish)


def test_cumulative_answer_snapshots_send_only_the_new_parts() -> None:
    answer = "Hello world, this is a snapshot stream."
    text, _ = _fold(_answer_frames(*(answer[:n] for n in (2, 5, 9, 11, 20, 32, 39, 39))))
    assert text == answer
    # too short to tell from tokens that repeat the text before them: text, every piece whole
    text, _ = _fold(_answer_frames("He", "Hello", "Hello wor", "Hello world", "Hello world"))
    assert text == "HeHelloHello worHello worldHello world"


def test_a_held_piece_is_sent_before_the_end_or_the_failure() -> None:
    text, events = _fold(_answer_frames("a", "ab"))  # finished frame next
    assert text == "aab" and isinstance(events[-1], Finish)
    text, events = _fold(_answer_frames("a", "ab", end="none"), eof=True)
    assert text == "aab" and isinstance(events[-1], Failure)
    err = json.dumps({"error": {"code": "Internal_Server_Error", "details": "x"}})
    text, events = _fold([*_answer_frames("a", "ab", end="none"), err])
    assert text == "aab" and isinstance(events[-1], Failure)
