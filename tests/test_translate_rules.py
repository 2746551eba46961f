"""Each rule of the translator, the chunk encoder and the aggregate on its own.

Assertions name the exact error class (``type(err) is …``) and the exact events, so a rule
broken on its own (a comparison flipped, a field ignored, a layout forgotten) fails a test."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.errors import (
    UpstreamBadMediaError,
    UpstreamBadRequestError,
    UpstreamCaptchaError,
    UpstreamEmptyError,
    UpstreamError,
    UpstreamNoMediaError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamTimeoutError,
    UpstreamTruncatedError,
)
from proxy.qwen.media import MediaPolicy
from proxy.qwen.translate import (
    Aggregate,
    ChunkEncoder,
    Failure,
    Finish,
    Media,
    OutEvent,
    Source,
    Sources,
    Text,
    ToolCall,
    Translator,
    Usage,
)

CDN = "https://cdn.qwenlm.ai/output/a/b.png?key=k"
CDN2 = "https://cdn.qwenlm.ai/output/a/c.png?key=k"


def f(obj: Any) -> str:
    return json.dumps(obj)


def delta(
    phase: str | None = "answer", content: Any = "", status: str = "typing", **kw: Any
) -> str:
    d: dict[str, Any] = {"content": content, "status": status, **kw}
    if phase is not None:
        d["phase"] = phase
    return f({"choices": [{"delta": d}]})


def run(tr: Translator, *frames: str) -> list[OutEvent]:
    out: list[OutEvent] = []
    for fr in frames:
        out.extend(tr.feed(fr))
    return out


def failure(events: list[OutEvent]) -> UpstreamError:
    assert events and isinstance(events[-1], Failure), events
    return events[-1].error


# -- feed: frame kinds -----------------------------------------------------------------------


@pytest.mark.parametrize("data", ["", "   ", "\n"])
def test_blank_data_is_ignored(data: str) -> None:
    """Blank data yields nothing and does not end the stream."""
    tr = Translator()
    assert tr.feed(data) == []
    assert not tr.done


def test_done_marker_after_text_finishes() -> None:
    """``[DONE]`` after text is a normal finish."""
    tr = Translator()
    assert run(tr, delta(content="Hi"), " [DONE] ") == [Text("content", "Hi"), Finish("stop")]
    assert tr.done and tr.failure is None


def test_done_marker_without_text_is_empty() -> None:
    """``[DONE]`` before any text is an empty answer."""
    assert type(failure(run(Translator(), "[DONE]"))) is UpstreamEmptyError


def test_non_json_frame_is_a_protocol_error() -> None:
    """A frame that is not JSON fails the stream, naming its length."""
    err = failure(Translator().feed("{oops"))
    assert type(err) is UpstreamProtocolError
    assert "(5 chars)" in err.message


@pytest.mark.parametrize("data", ["[1,2]", '"text"', "3", "null"])
def test_non_object_json_is_ignored(data: str) -> None:
    """JSON that is not an object is ignored."""
    tr = Translator()
    assert tr.feed(data) == [] and not tr.done


def _typing(content: str, usage: str = "") -> str:
    """An answer frame written by hand (JSON orjson refuses cannot come from json.dumps)."""
    tail = f', "usage": {usage}' if usage else ""
    head = '{"choices": [{"delta": {"content": "'
    return head + content + '", "phase": "answer", "status": "typing"}}]' + tail + "}"


@pytest.mark.parametrize(
    ("escaped", "text"),
    [
        ("x\\ud83dy", "x\ufffdy"),  # an emoji's first half, the second in the next frame
        ("\\ude00!", "\ufffd!"),
        ("\\ud83d\\ude00", "\U0001f600"),  # a whole pair is the emoji (orjson takes it)
    ],
)
def test_a_lone_surrogate_escape_is_read_as_u_fffd(escaped: str, text: str) -> None:
    """Valid JSON that orjson refuses (a lone surrogate escape) is read by the standard
    library instead, the lone half as U+FFFD; the answer goes on, and what the client gets is
    UTF-8 and JSON (before, the stream failed: "a stream frame that is not JSON")."""
    tr = Translator()
    out = run(tr, _typing("a"), _typing(escaped), delta("answer", "", "finished"))
    assert out == [Text("content", "a"), Text("content", text), Finish("stop")]
    enc = ChunkEncoder(completion_id="c", model="m", created=1, include_usage=False)
    chunk = enc.encode(out[1])
    assert json.loads(chunk.decode("utf-8")[len("data: ") :])["choices"][0]["delta"] == {
        "content": text
    }


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_a_non_finite_usage_count_is_a_missing_count(bad: str) -> None:
    """``NaN`` and ``Infinity`` (json.dumps writes them; orjson refuses them) and a number too
    large for a float do not end the answer; the count is missing, never NaN to the client."""
    tr = Translator()
    good = '{"input_tokens": 5, "output_tokens": 1}'
    usage = '{"input_tokens": ' + bad + ', "output_tokens": ' + bad + "}"
    out = run(tr, _typing("a", good), _typing("b", usage), delta("answer", "", "finished"))
    assert out == [Text("content", "a"), Text("content", "b"), Finish("stop")]
    assert tr.usage == Usage(5, 1)


def test_a_frame_no_json_reader_takes_still_fails() -> None:
    """Not JSON for the standard library either (or nested past its limit): a protocol
    error, as before."""
    for data in ("{'a': 1}", "{" * 10, "[" * 200_000 + "]" * 200_000):
        err = failure(Translator().feed(data))
        assert type(err) is UpstreamProtocolError


def test_a_leniently_read_answer_is_recorded() -> None:
    """``on_answer`` sees text that came in a frame read by the lenient reader."""
    got: list[str] = []
    tr = Translator(on_answer=lambda _t, text, _calls: got.append(text))
    run(tr, _typing("x\\ud83d"), delta("answer", "", "finished"))
    assert got == ["x\ufffd"]


def test_usage_is_read_from_choices_frames() -> None:
    """``usage`` beside ``choices`` sets the token counts; bad numbers leave them as they were."""
    tr = Translator()
    tr.feed(f({"choices": [], "usage": {"input_tokens": 7, "output_tokens": 3}}))
    assert tr.usage == Usage(7, 3)
    tr.feed(f({"choices": [], "usage": {"input_tokens": -1, "output_tokens": "9"}}))
    assert tr.usage == Usage(7, 3)
    tr.feed(f({"choices": [], "usage": "nope"}))
    assert tr.usage == Usage(7, 3)


_BAD_COUNTS = [True, False, -1, "9", 5.5, None, [3], {"n": 3}]


@pytest.mark.parametrize("bad", _BAD_COUNTS, ids=repr)
def test_a_usage_count_that_is_not_a_non_negative_integer_is_no_count(bad: Any) -> None:
    """A token count that is not a non-negative JSON integer is no count, a JSON boolean
    neither (Python's ``bool`` is an ``int``: ``true`` must not reach the client as
    ``"prompt_tokens": true``): no usage while no count was valid; a valid other count with
    it is taken, the bad one 0 until a valid one comes."""
    tr = Translator()
    tr.feed(f({"choices": [], "usage": {"input_tokens": bad, "output_tokens": bad}}))
    assert tr.usage is None
    tr.feed(f({"choices": [], "usage": {"input_tokens": 4, "output_tokens": bad}}))
    usage = tr.usage
    assert usage == Usage(4, 0)
    got = usage.as_openai()
    assert type(got["prompt_tokens"]) is int and type(got["completion_tokens"]) is int
    tr.feed(f({"choices": [], "usage": {"input_tokens": bad, "output_tokens": 2}}))
    assert tr.usage == Usage(4, 2)


@pytest.mark.parametrize("bad", _BAD_COUNTS, ids=repr)
def test_a_bad_count_on_the_finished_frame_keeps_the_last_valid_one(bad: Any) -> None:
    """The answer frames' counts (the fast path, not read until the end) stand when the
    finished frame's usage has bad ones, count by count (before, OpenAI chat and Responses
    reported 0/0/0 tokens for the answer)."""

    def answer(text: str, status: str, usage: dict[str, Any]) -> str:
        delta = {"content": text, "phase": "answer", "status": status}
        return f({"choices": [{"delta": delta}], "usage": usage})

    tr = Translator()
    for i in range(1, 4):
        tr.feed(answer(f"w{i} ", "typing", {"input_tokens": 10, "output_tokens": i}))
    assert tr.feed(answer("", "finished", {"input_tokens": -5, "output_tokens": bad}))
    assert tr.usage == Usage(10, 3)
    tr = Translator()
    tr.feed(answer("w ", "typing", {"input_tokens": 10, "output_tokens": 3}))
    tr.feed(answer("", "finished", {"input_tokens": 11, "output_tokens": bad}))
    assert tr.usage == Usage(11, 3)


def test_the_last_usage_of_the_answer_frames_wins_read_when_asked_for() -> None:
    """Answer frames (the common path) carry cumulative usage: the last one read wins, a frame
    without usage keeps it, and reading it twice gives the same object (built once)."""
    tr = Translator()
    assert tr.usage is None

    def answer(text: str, usage: Any = None) -> str:
        delta = {"content": text, "phase": "answer", "status": "typing"}
        return f({"choices": [{"delta": delta}], **({"usage": usage} if usage else {})})

    for i in range(1, 4):
        tr.feed(answer(f" w{i}", {"input_tokens": 9, "output_tokens": i}))
    assert tr.usage == Usage(9, 3)
    tr.feed(answer(" w4"))  # no usage: the last counts stand
    first = tr.usage
    assert first == Usage(9, 3) and tr.usage is first
    tr.feed(answer(" w5", {"input_tokens": 9, "output_tokens": 5}))
    assert tr.usage == Usage(9, 5)
    tr.feed(answer(" w6", {"input_tokens": 9, "output_tokens": 5.5}))  # not an int: no count
    assert tr.usage == Usage(9, 5)


@pytest.mark.parametrize(
    "frame",
    [{"choices": []}, {"choices": ["x"]}, {"choices": [{"delta": "x"}]}, {"choices": [{}]}],
)
def test_choices_without_a_delta_object(frame: dict[str, Any]) -> None:
    """Choices frames without a usable delta yield nothing."""
    tr = Translator()
    assert tr.feed(f(frame)) == [] and not tr.done


def test_response_created_sets_ids_once_given() -> None:
    """``response.created`` sets chat and response ids; missing ones keep the old values."""
    tr = Translator()
    tr.feed(f({"response.created": {"chat_id": "c1", "response_id": "r1"}}))
    assert (tr.chat_id, tr.response_id) == ("c1", "r1")
    tr.feed(f({"response.created": {}}))
    assert (tr.chat_id, tr.response_id) == ("c1", "r1")
    assert tr.feed(f({"response.created": "x"})) == []


def test_response_info_is_ignored() -> None:
    """``response.info`` frames yield nothing."""
    assert Translator().feed(f({"response.info": {"a": 1}})) == []


def test_response_completed_finishes_or_is_empty() -> None:
    """``response.completed`` ends the stream like ``[DONE]``."""
    tr = Translator()
    assert run(tr, delta(content="x"), f({"response.completed": {}}))[-1] == Finish("stop")
    assert type(failure(Translator().feed(f({"response.completed": {}})))) is UpstreamEmptyError


def test_error_frame_at_top_level_fails_with_its_class() -> None:
    """A top-level error envelope frame fails with the class its code says."""
    err = failure(Translator().feed(f({"error": {"code": "RateLimited", "details": "d"}})))
    assert type(err) is UpstreamRateLimitedError


def test_unknown_frame_is_ignored() -> None:
    """An object with none of the known keys is ignored."""
    tr = Translator()
    assert tr.feed(f({"something": 1})) == [] and not tr.done


def test_nothing_after_done() -> None:
    """After the end every input is ignored, and close/fail/abort return nothing."""
    tr = Translator()
    run(tr, delta(content="a"), "[DONE]")
    assert tr.feed(delta(content="more")) == []
    assert tr.close() == [] and tr.abort("x") == [] and tr.fail(UpstreamError("e")) == []


# -- answer deltas ---------------------------------------------------------------------------


def test_answer_text_and_phase_none() -> None:
    """Answer text with phase ``answer`` or no phase is content; empty text yields nothing."""
    tr = Translator()
    assert run(tr, delta(content="a"), delta(None, content="b"), delta(content="")) == [
        Text("content", "a"),
        Text("content", "b"),
    ]
    assert tr.answered


def test_answer_finished_status_finishes() -> None:
    """``status: finished`` on the answer phase ends it (with the last text first)."""
    tr = Translator()
    assert run(tr, delta(content="a", status="finished")) == [Text("content", "a"), Finish()]


def test_finished_without_phase_finishes() -> None:
    """``finished`` without a phase (the 2026 layout) ends the answer after its text."""
    tr = Translator()
    out = run(tr, delta(None, content="a", status="finished"))
    assert out[0] == Text("content", "a") and isinstance(out[-1], Finish)


def test_answer_finished_without_text_is_empty() -> None:
    """A finished answer with no text is an empty answer, not a success."""
    err = failure(Translator().feed(delta(content="", status="finished")))
    assert type(err) is UpstreamEmptyError


def test_non_string_content_is_ignored() -> None:
    """Content that is not a string is not text."""
    tr = Translator()
    assert tr.feed(delta(content=5)) == [] and not tr.answered


@pytest.mark.parametrize("inner", [{"code": "Bad_Request", "details": "too long"}, {}])
def test_status_error_in_a_delta(inner: dict[str, Any]) -> None:
    """``status: error`` fails the stream: with the envelope's class when the delta carries
    one, else a generic upstream error."""
    err = failure(Translator().feed(delta(content="", status="error", **inner)))
    if inner:
        assert type(err) is UpstreamBadRequestError and err.client_fault
    else:
        assert type(err) is UpstreamError
        assert err.message == "chat.qwen.ai reported an error inside the stream."


def test_status_error_only_when_error() -> None:
    """Other statuses do not fail."""
    tr = Translator()
    assert tr.feed(delta(content="x", status="typing")) == [Text("content", "x")]


# -- reasoning -------------------------------------------------------------------------------


def test_think_phase_is_reasoning() -> None:
    """``think`` text is reasoning, counted; empty think text yields nothing."""
    tr = Translator()
    assert run(tr, delta("think", content="hm"), delta("think", content="")) == [
        Text("reasoning", "hm")
    ]
    assert tr.reasoning_chars == 2 and not tr.answered


def test_think_tags_mode() -> None:
    """In think_tags mode reasoning opens ``<think>``, the answer closes it; reasoning after
    the answer started opens another block, closed by the answer or the finish."""
    tr = Translator(reasoning="think_tags")
    out = run(
        tr,
        delta("think", content="a"),
        delta("think", content="b"),
        delta(content="X"),
        delta("think", content="late"),
        delta(content="Y"),
        delta("think", content="last"),
        delta(content="", status="finished"),
    )
    assert out == [
        Text("content", "<think>\na", inline_think=True),
        Text("content", "b", inline_think=True),
        Text("content", "\n</think>\n\n", inline_think=True),
        Text("content", "X"),
        Text("content", "<think>\nlate", inline_think=True),
        Text("content", "\n</think>\n\n", inline_think=True),
        Text("content", "Y"),
        Text("content", "<think>\nlast", inline_think=True),
        Text("content", "\n</think>\n\n", inline_think=True),
        Finish(),
    ]


def test_think_tag_closed_on_finish_and_failure() -> None:
    """An open ``<think>`` is closed before the finish or the failure."""
    tr = Translator(reasoning="think_tags")
    run(tr, delta("think", content="a"))
    out = tr.feed("[DONE]")
    assert out[0] == Text("content", "\n</think>\n\n", inline_think=True) and isinstance(
        out[1], Failure
    )
    tr = Translator(reasoning="think_tags")
    run(tr, delta("think", content="a"))
    tr._answer_chars = 1  # an answer already counted (as after media)
    assert tr.feed("[DONE]") == [Text("content", "\n</think>\n\n", inline_think=True), Finish()]


def test_summary_array_cumulative_and_rewritten() -> None:
    """thinking_summary snapshots: only new text is sent; a rewrite sends what lies beyond
    the sent length; a shorter snapshot sends nothing."""
    tr = Translator()

    def s(content: Any) -> str:
        return delta("thinking_summary", extra={"summary_thought": {"content": content}})

    assert tr.feed(s(["A"])) == [Text("reasoning", "A")]
    assert tr.feed(s(["A", "B"])) == [Text("reasoning", "\n\nB")]
    assert tr.feed(s("ZZZZZtail")) == [Text("reasoning", "Ztail")]  # beyond the 4 sent
    assert tr.feed(s("short")) == []
    assert tr.feed(s([1, "x"])) == []


@pytest.mark.parametrize(
    "extra",
    [None, "x", {"summary_thought": "x"}, {"summary_thought": {"content": 5}}, {}],
)
def test_summary_without_content(extra: Any) -> None:
    """A summary frame without usable content yields nothing."""
    assert Translator().feed(delta("thinking_summary", extra=extra)) == []


# -- search ------------------------------------------------------------------------------------


def _docs() -> list[Any]:
    return [
        {"url": "https://a.example", "title": "A", "snippet": "s", "hostname": "a.example"},
        {"url": "https://b.example"},
        {"url": ""},
        {"url": 5},
        "not a dict",
    ]


@pytest.mark.parametrize(
    "extra",
    [
        {"tool_result": {"docs": _docs()}},  # 2026 layout
        {"tool_result": _docs()},  # a bare list
        {"web_search_info": _docs()},  # 2025 layout
    ],
)
def test_each_search_layout(extra: dict[str, Any]) -> None:
    """Each search layout gives the same sources; bad items are skipped."""
    out = Translator().feed(delta("web_search", extra=extra))
    assert out == [
        Sources(
            (
                Source("https://a.example", "A", "s", "a.example"),
                Source("https://b.example", "", "", ""),
            )
        )
    ]


def test_search_sources_are_deduplicated_across_frames() -> None:
    """A URL already sent is not sent again; a frame of only repeats yields nothing."""
    tr = Translator()
    tr.feed(delta("web_search", extra={"web_search_info": _docs()}))
    assert tr.feed(delta("web_search", extra={"web_search_info": _docs()})) == []


@pytest.mark.parametrize(
    "extra", [None, {"tool_result": "x"}, {"web_search_info": "x"}, {"tool_result": {"docs": 1}}]
)
def test_search_without_results(extra: Any) -> None:
    """No usable list: nothing."""
    assert Translator().feed(delta("web_search", extra=extra)) == []


def test_unknown_phase_is_counted() -> None:
    """Unknown phases are counted and named in the empty-answer message."""
    tr = Translator()
    tr.feed(delta("mystery", content="x"))
    tr.feed(delta("mystery", content="y"))
    assert tr.ignored_phases == {"mystery": 2}
    err = failure(tr.close())
    assert type(err) is UpstreamEmptyError
    assert "Phases seen but not understood: mystery" in err.message


# -- close / abort -------------------------------------------------------------------------------


def test_close_after_text_is_truncated() -> None:
    """EOF after some answer text: truncated, naming the count."""
    tr = Translator()
    tr.feed(delta(content="abc"))
    err = failure(tr.close())
    assert type(err) is UpstreamTruncatedError
    assert "(after 3 characters)" in err.message


def test_close_without_text_is_empty() -> None:
    """EOF before any text: empty; with reasoning the message says so."""
    err = failure(Translator().close())
    assert type(err) is UpstreamEmptyError and "reasoning" not in err.message
    tr = Translator()
    tr.feed(delta("think", content="hm"))
    assert "It sent reasoning but no answer." in failure(tr.close()).message


def test_abort_messages() -> None:
    """A broken connection is truncation, saying how far the answer got."""
    err = failure(Translator().abort("reset"))
    assert type(err) is UpstreamTruncatedError
    assert err.message == "the connection to chat.qwen.ai broke before any answer text: reset"
    tr = Translator()
    tr.feed(delta(content="ab"))
    assert failure(tr.abort("x")).message.endswith("after 2 characters of answer: x")


def test_abort_after_a_silence_is_a_timeout() -> None:
    """A stream gone silent for the read timeout is a timeout (504 before any text), not a
    broken connection, saying how far the answer got and naming the upstream."""
    err = failure(Translator().abort("quiet", upstream="the upstream at x", timed_out=True))
    assert type(err) is UpstreamTimeoutError
    assert err.message == "the upstream at x went silent before any answer text: quiet"
    assert err.http_status() == 504 and err.error_code() == "upstream_timeout"
    tr = Translator()
    tr.feed(delta(content="ab"))
    err = failure(tr.abort("quiet", timed_out=True))
    assert type(err) is UpstreamTimeoutError
    assert err.message == "chat.qwen.ai went silent after 2 characters of answer: quiet"


def test_fail_records_the_failure() -> None:
    """``fail`` ends the stream with the given error."""
    tr = Translator()
    e = UpstreamCaptchaError("c")
    assert tr.fail(e) == [Failure(e)]
    assert tr.failure is e and tr.done


def test_mask_applies_to_the_failure_message() -> None:
    """The ``mask`` hook rewrites the failure's message."""
    tr = Translator(mask=lambda s: s.replace("secret", "<x>"))
    err = failure(tr.fail(UpstreamError("a secret here")))
    assert err.message == "a <x> here"


# -- images ------------------------------------------------------------------------------------


def img(content: Any = "", status: str = "typing", phase: str = "image_gen", **extra: Any) -> str:
    return delta(phase, content=content, status=status, extra=extra or None)


@pytest.mark.parametrize("phase", ["image_gen", "image_edit", "image_gen_tool", "image_edit_tool"])
def test_each_image_phase(phase: str) -> None:
    """Each image phase's URL becomes one Media event (with a media policy)."""
    out = Translator(media=MediaPolicy()).feed(img(CDN, phase=phase))
    assert out == [Media("image", CDN, CDN)]


def test_image_phase_without_policy_is_ignored_phase() -> None:
    """Without a media policy image phases are not understood."""
    tr = Translator()
    assert tr.feed(img(CDN)) == [] and tr.ignored_phases == {"image_gen": 1}


@pytest.mark.parametrize(
    "extra",
    [
        {"image_list": [{"image": CDN}]},
        {"image_list": [{"url": CDN}]},
        {"image_list": [CDN]},
        {"image_list": {"image": CDN}},
        {"tool_result": [{"image": CDN}]},
        {"wanx": {"image_list": [{"url": CDN}]}},
    ],
)
def test_each_image_candidate_place(extra: dict[str, Any]) -> None:
    """Each place an image URL can sit in a frame."""
    out = Translator(media=MediaPolicy()).feed(img("", **extra))
    assert out == [Media("image", CDN, CDN)]


@pytest.mark.parametrize(
    "extra",
    [
        {"image_list": [5]},
        {"image_list": [{"image": "ftp://x"}]},
        {"image_list": "x"},
        {"wanx": "x"},
        {"image_list": [{"image": None}]},
    ],
)
def test_non_url_candidates_are_skipped(extra: dict[str, Any]) -> None:
    """Items that are not http(s) URLs are skipped."""
    assert Translator(media=MediaPolicy()).feed(img("not a url", **extra)) == []


def test_image_urls_are_deduplicated_and_separated() -> None:
    """The same URL twice is one image; a second image after text is separated by a blank
    line."""
    tr = Translator(media=MediaPolicy())
    out = run(tr, img(CDN), img(CDN), img(CDN2))
    assert out == [Media("image", CDN, CDN), Text("content", "\n\n"), Media("image", CDN2, CDN2)]
    assert tr.media_urls == [CDN, CDN2]


def test_rewritten_public_url() -> None:
    """Offline the public URL is rewritten; the upstream URL is kept beside it."""
    tr = Translator(media=MediaPolicy(rewrite_to="http://127.0.0.1:9"))
    (m,) = tr.feed(img(CDN))
    assert m == Media("image", "http://127.0.0.1:9/output/a/b.png?key=k", CDN)


def test_captcha_image_url_fails() -> None:
    """The WAF punish link instead of an image fails with a bad-media error."""
    url = "https://cdn.qwenlm.ai/x/_____tmd_____/punish?x5secdata=1"
    err = failure(Translator(media=MediaPolicy()).feed(img(url)))
    assert type(err) is UpstreamBadMediaError and "captcha" in err.message


def test_off_cdn_url_is_rejected_and_named_at_the_end() -> None:
    """A URL off the allow-list is not an image; the final error names why."""
    tr = Translator(media=MediaPolicy(), expect_image=True)
    assert tr.feed(img("https://evil.example/x.png")) == []
    err = failure(tr.close())
    assert type(err) is UpstreamBadMediaError
    assert "evil.example" in err.message


def test_excluded_source_echo() -> None:
    """The uploaded source echoed back is not the answer; the error says it was echoed."""
    tr = Translator(media=MediaPolicy(exclude=frozenset({CDN})), expect_image=True)
    assert tr.feed(img(CDN)) == []
    err = failure(tr.close())
    assert type(err) is UpstreamNoMediaError
    assert "only echoed the source image back (once)" in err.message


def test_image_finish_needs_finished_and_an_image() -> None:
    """An expected image finishes on ``finished`` only once there is an image."""
    tr = Translator(expect_image=True)
    assert tr.feed(img("", status="finished")) == []
    assert not tr.done
    assert tr.feed(img(CDN, status="typing")) == [Media("image", CDN, CDN)]
    assert not tr.done
    assert tr.feed(img(CDN2, status="finished"))[-1] == Finish()


def test_image_answer_phase_finishes_only_with_an_image() -> None:
    """With an expected image, answer text is a caption; ``finished`` ends only with images."""
    tr = Translator(expect_image=True)
    assert tr.feed(delta(content="A cat", status="finished")) == []
    assert not tr.done
    tr.feed(img(CDN))
    assert tr.feed(delta(content="", status="finished")) == [Finish()]


def test_expected_image_never_sent() -> None:
    """No image at all: no-media error quoting the caption and ignored phases."""
    tr = Translator(expect_image=True)
    tr.feed(delta(content="I cannot draw that"))
    tr.feed(delta("odd_phase"))
    err = failure(tr.close())
    assert type(err) is UpstreamNoMediaError
    assert "its text: 'I cannot draw that'" in err.message
    assert "odd_phase" in err.message
    assert type(failure(Translator(expect_image=True).feed("[DONE]"))) is UpstreamNoMediaError


def test_image_side_phases_are_quiet_with_expected_image() -> None:
    """image_gen_think / image_gen_websearch frames yield nothing and are not 'ignored'."""
    tr = Translator(expect_image=True)
    assert tr.feed(delta("image_gen_think", content="x")) == []
    assert tr.feed(delta("image_gen_websearch", content="x")) == []
    assert tr.ignored_phases == {}


def test_close_with_expected_image_present_finishes() -> None:
    """EOF after an expected image is a finish."""
    tr = Translator(expect_image=True)
    tr.feed(img(CDN))
    assert tr.close() == [Finish()]


def test_caption_is_capped() -> None:
    """The caption stops growing past 300 characters."""
    tr = Translator(expect_image=True)
    for _ in range(50):
        tr.feed(delta(content="x" * 10))
    assert 300 <= len(tr._caption) < 310


# -- encoder and aggregate ---------------------------------------------------------------------


def _enc(include_usage: bool = False) -> ChunkEncoder:
    return ChunkEncoder(completion_id="id1", model="m", created=5, include_usage=include_usage)


def _chunk(raw: bytes) -> dict[str, Any]:
    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
    return json.loads(raw[6:].split(b"\n\n")[0])


def test_encoder_role_and_text() -> None:
    """Role chunk, content and reasoning chunks: OpenAI chunk shape."""
    e = _enc()
    role = _chunk(e.role())
    assert {k: role[k] for k in ("id", "object", "created", "model")} == {
        "id": "id1",
        "object": "chat.completion.chunk",
        "created": 5,
        "model": "m",
    }
    (choice,) = role["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] is None
    assert choice["logprobs"] is None
    assert {k: choice["delta"][k] for k in ("role", "content")} == {
        "role": "assistant",
        "content": "",
    }
    assert _chunk(e.encode(Text("content", "a")))["choices"][0]["delta"] == {"content": "a"}
    assert _chunk(e.encode(Text("reasoning", "r")))["choices"][0]["delta"] == {
        "reasoning_content": "r"
    }


def test_encoder_media_and_sources() -> None:
    """Media is Markdown content; sources are url_citation annotations."""
    e = _enc()
    assert _chunk(e.encode(Media("image", "http://u")))["choices"][0]["delta"] == {
        "content": "![image](http://u)"
    }
    assert _chunk(e.encode(Media("video", "http://v")))["choices"][0]["delta"] == {
        "content": "[video](http://v)"
    }
    ann = _chunk(e.encode(Sources((Source("http://s", "T"),))))["choices"][0]["delta"]
    assert ann == {
        "annotations": [
            {
                "type": "url_citation",
                "url_citation": {"url": "http://s", "title": "T", "start_index": 0, "end_index": 0},
            }
        ]
    }


def test_encoder_finish_with_and_without_usage() -> None:
    """Finish: empty delta with finish_reason, then (if asked) usage, then [DONE]."""
    raw = _enc().encode(Finish("stop"))
    assert raw.endswith(b"data: [DONE]\n\n") and b'"usage"' not in raw
    fin = _chunk(raw)
    assert fin["choices"][0]["delta"] == {} and fin["choices"][0]["finish_reason"] == "stop"
    raw = _enc(True).encode(Finish("stop"), Usage(2, 3))
    parts = raw.split(b"\n\n")
    usage = json.loads(parts[1][6:])
    assert usage["choices"] == []
    assert {
        k: usage["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")
    } == {
        "prompt_tokens": 2,
        "completion_tokens": 3,
        "total_tokens": 5,
    }
    raw = _enc(True).encode(Finish("stop"), None)
    assert json.loads(raw.split(b"\n\n")[1][6:])["usage"]["total_tokens"] == 0


def test_encoder_failure_has_no_done() -> None:
    """A failure is an error event and no [DONE]."""
    raw = _enc().encode(Failure(UpstreamEmptyError("e")))
    assert b"[DONE]" not in raw
    assert _chunk(raw) == {
        "error": {"message": "e", "type": "upstream_error", "param": None, "code": "upstream_empty"}
    }


def test_encoder_rejects_unknown_events() -> None:
    """Anything else is a programming error."""
    with pytest.raises(TypeError):
        _enc().encode("x")  # type: ignore[arg-type]


def test_aggregate_folds_every_event() -> None:
    """Aggregate: content, reasoning, media as Markdown, sources, finish reason, usage."""
    agg = Aggregate()
    for ev in (
        Text("reasoning", "r"),
        Text("content", "a"),
        Media("image", "http://i"),
        Sources((Source("http://s", "T"),)),
        Finish("length"),
    ):
        agg.add(ev)
    body = agg.completion(completion_id="c", model="m", created=1, usage=Usage(1, 2))
    msg = {k: v for k, v in body["choices"][0]["message"].items() if k != "refusal"}
    assert msg == {
        "role": "assistant",
        "content": "a![image](http://i)",
        "reasoning_content": "r",
        "annotations": [
            {
                "type": "url_citation",
                "url_citation": {"url": "http://s", "title": "T", "start_index": 0, "end_index": 0},
            }
        ],
    }
    assert body["choices"][0]["finish_reason"] == "length"
    assert {
        k: body["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")
    } == {
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
    }
    assert body["object"] == "chat.completion" and body["id"] == "c" and body["created"] == 1
    assert agg.media == [Media("image", "http://i")]


def test_aggregate_defaults_and_failure() -> None:
    """No finish: "stop"; no usage: zeros; a failure is raised."""
    agg = Aggregate()
    agg.add(Text("content", "a"))
    body = agg.completion(completion_id="c", model="m", created=1, usage=None)
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == 0
    assert "reasoning_content" not in body["choices"][0]["message"]
    agg.add(Failure(UpstreamTruncatedError("t")))
    with pytest.raises(UpstreamTruncatedError):
        agg.completion(completion_id="c", model="m", created=1, usage=None)


# -- sharper checks (mutation testing) ---------------------------------------------------------


def test_initial_state() -> None:
    """A fresh translator: nothing done, no usage, no ids, nothing counted."""
    tr = Translator()
    assert tr.done is False and tr.usage is None and tr.failure is None
    assert tr.chat_id is None and tr.response_id is None
    assert tr.reasoning_chars == 0 and not tr.answered and tr.media_urls == []
    tr.feed(f({"response.created": {"x": 1}}))
    assert tr.chat_id is None and tr.response_id is None


def test_answer_and_reasoning_counts_accumulate() -> None:
    """Counts add up over pieces (the truncation message names the total)."""
    tr = Translator()
    run(tr, delta("think", content="ab"), delta("think", content="cde"))
    assert tr.reasoning_chars == 5
    run(tr, delta(content="a"), delta(content="bc"))
    assert failure(tr.close()).message.endswith("(after 3 characters).")


def test_empty_message_names_reasoning_and_phases_together() -> None:
    """Both facts are in the empty-answer message."""
    tr = Translator()
    run(tr, delta("think", content="x"), delta("odd"))
    msg = failure(tr.close()).message
    assert "It sent reasoning but no answer." in msg
    assert "Phases seen but not understood: odd" in msg


def test_response_info_frames_are_ignored_even_with_error_keys() -> None:
    """A ``response.info`` frame is informational whatever else it holds."""
    tr = Translator()
    assert tr.feed(f({"response.info": {}, "code": "Weird"})) == [] and not tr.done


def test_http_image_urls_and_non_string_content() -> None:
    """http:// URLs count, in content and in lists; a non-string content is skipped."""
    url = "http://cdn.qwenlm.ai/o/x.png"
    assert Translator(media=MediaPolicy()).feed(img(url)) == [Media("image", url, url)]
    out = Translator(media=MediaPolicy()).feed(img(None, image_list=[url]))
    assert out == [Media("image", url, url)]


def test_bad_list_items_do_not_hide_later_ones() -> None:
    """Skipped items (not a URL, an echo, off the CDN, a repeat) do not stop the scan."""
    src = "https://cdn.qwenlm.ai/src.png"
    tr = Translator(media=MediaPolicy(exclude=frozenset({src})))
    out = tr.feed(img("", image_list=[5, src, "https://evil.example/a.png", CDN]))
    assert out == [Media("image", CDN, CDN)]
    out = tr.feed(img("", image_list=[CDN, CDN2]))
    assert out == [Text("content", "\n\n"), Media("image", CDN2, CDN2)]


def test_echo_count_in_the_message() -> None:
    """The no-image message says how often the source came back."""
    src = "https://cdn.qwenlm.ai/src.png"
    tr = Translator(media=MediaPolicy(exclude=frozenset({src})), expect_image=True)
    tr.feed(img(src))
    tr.feed(img(src))
    assert "(2 times)" in failure(tr.close()).message


def test_media_counts_as_answer_text() -> None:
    """An image after text counts its separator and Markdown as answer characters."""
    tr = Translator(media=MediaPolicy())
    run(tr, delta(content="ab"), img(CDN))
    n = 2 + 2 + len(f"![image]({CDN})")
    assert failure(tr.close()).message.endswith(f"(after {n} characters).")


def test_think_tag_closed_before_an_image() -> None:
    """In think_tags mode an image closes the open ``<think>`` first."""
    tr = Translator(reasoning="think_tags", media=MediaPolicy())
    out = run(tr, delta("think", content="hm"), img(CDN))
    assert out == [
        Text("content", "<think>\nhm", inline_think=True),
        Text("content", "\n</think>\n\n", inline_think=True),
        Media("image", CDN, CDN),
    ]


def test_no_image_message_details() -> None:
    """The caption is quoted up to 200 characters; without reasons there are no brackets;
    at most three refusals are listed."""
    tr = Translator(expect_image=True)
    tr.feed(delta(content="c" * 250))
    msg = failure(tr.close()).message
    assert "c" * 199 + "…" in msg and "c" * 200 not in msg
    msg = failure(Translator(expect_image=True).close()).message
    assert msg.startswith("chat.qwen.ai ended the image request without an image.")
    tr = Translator(expect_image=True)
    for i in range(4):
        tr.feed(img(f"https://evil{i}.example/a.png"))
    msg = failure(tr.close()).message
    assert "evil2.example" in msg and "evil3.example" not in msg


def test_search_bad_items_first() -> None:
    """Bad search items before good ones do not stop the scan."""
    docs = [5, {"url": ""}, {"url": "https://ok.example"}]
    assert Translator().feed(delta("web_search", extra={"web_search_info": docs})) == [
        Sources((Source("https://ok.example"),))
    ]


def test_summary_rewrite_of_equal_length_sends_nothing() -> None:
    """A rewritten snapshot no longer than what was sent adds nothing."""
    tr = Translator()

    def s(content: Any) -> str:
        return delta("thinking_summary", extra={"summary_thought": {"content": content}})

    assert tr.feed(s("abc")) == [Text("reasoning", "abc")]
    assert tr.feed(s("xyz")) == []
    assert tr.feed(s("xyzw")) == [Text("reasoning", "w")]


def test_tool_call_chunks_and_aggregate() -> None:
    """A tool call is two chunks (id/name, then arguments); the aggregate lists it and the
    content becomes null."""
    call = ToolCall(0, "call_abc", "get_weather", '{"city":"Paris"}')
    raw = _enc().encode(call)
    first, second = (json.loads(p[6:]) for p in raw.split(b"\n\n") if p)
    assert first["choices"][0]["delta"] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    assert second["choices"][0]["delta"] == {
        "tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Paris"}'}}]
    }
    agg = Aggregate()
    agg.add(call)
    agg.add(Finish("tool_calls"))
    body = agg.completion(completion_id="c", model="m", created=1, usage=None)
    choice = body["choices"][0]
    assert choice["index"] == 0 and body["model"] == "m"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_abc",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]
    assert choice["finish_reason"] == "tool_calls"
    agg = Aggregate()
    agg.add(Text("content", "let me check"))
    agg.add(call)
    msg = agg.completion(completion_id="c", model="m", created=1, usage=None)["choices"][0]
    assert msg["message"]["content"] == "let me check"


def test_unknown_event_type_error_names_it() -> None:
    """The TypeError names the event."""
    with pytest.raises(TypeError, match="unknown event 'x'"):
        _enc().encode("x")  # type: ignore[arg-type]


def test_openai_usage_object_shape() -> None:
    """The usage object: the counts, their total, and detail objects of zeros."""
    from proxy.qwen.translate import openai_usage

    assert openai_usage(Usage(2, 3)) == {
        "prompt_tokens": 2,
        "completion_tokens": 3,
        "total_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    none = openai_usage(None)
    assert (none["prompt_tokens"], none["completion_tokens"], none["total_tokens"]) == (0, 0, 0)


def test_feed_all_is_feed_event_by_event_and_stops_at_the_end() -> None:
    """The relay's per-chunk call gives exactly what feeding the events one by one gives (the
    common answer frame, every other frame, text that is not JSON), and nothing after the
    answer ended."""

    def delta(**d: Any) -> str:
        return f({"choices": [{"delta": d}], "usage": {"input_tokens": 4, "output_tokens": 2}})

    answer = [
        f({"response.created": {"chat_id": "c", "response_id": "r1"}}),
        delta(content="Let me think", phase="think", status="typing"),
        delta(content="", phase="think", status="finished"),
        delta(content="Hello", phase="answer", status="typing"),
        f({"response.info": {"action": "keep_alive"}}),
        delta(content=" world", phase="answer", status="typing"),
    ]
    endings = [
        [delta(content="", phase="answer", status="finished")],
        ["not json"],  # a failure ends it too
    ]
    for reasoning in ("field", "think_tags", "hide"):
        for ending in endings:
            events = [*answer, *ending, delta(content=" after", phase="answer", status="typing")]
            texts: dict[str, list[str]] = {"one": [], "all": []}
            one = Translator(
                reasoning=reasoning, on_answer=lambda _t, text, _c, t=texts: t["one"].append(text)
            )
            expected = [repr(e) for data in events for e in one.feed(data)]
            all_ = Translator(
                reasoning=reasoning, on_answer=lambda _t, text, _c, t=texts: t["all"].append(text)
            )
            assert [repr(e) for e in all_.feed_all(events)] == expected
            assert all_.done and all_.usage == one.usage == Usage(4, 2)
            assert texts["all"] == texts["one"]  # the answer recorded alike
            assert all_.feed_all(answer[3:4]) == []  # done: nothing more


# -- values of the wrong type where the site sends a name or an id --------------------------------


@pytest.mark.parametrize(
    ("phase", "counted"),
    [
        (["answer"], "<list>"),
        ({"a": 1}, "<dict>"),
        (3, "<int>"),
        (True, "<bool>"),
        (1.5, "<float>"),
    ],
)
def test_a_phase_that_is_not_a_string_is_an_unknown_phase(phase: Any, counted: str) -> None:
    """A list or an object as ``phase`` raised TypeError (it was looked up in a set): now the
    frame is an unknown phase's (skipped, counted by its type) and the answer goes on."""
    tr = Translator()
    frame = f({"choices": [{"delta": {"content": "lost", "phase": phase, "status": "typing"}}]})
    out = run(tr, frame, delta(content="kept"), delta(status="finished"))
    assert out == [Text("content", "kept"), Finish("stop")]
    assert tr.ignored_phases == {counted: 1}


def test_a_phase_that_is_not_a_string_in_an_image_turn_is_skipped() -> None:
    tr = Translator(expect_image=True)
    frame = f(
        {"choices": [{"delta": {"content": "x", "phase": ["image_gen"], "status": "typing"}}]}
    )
    assert run(tr, frame) == []
    assert tr.ignored_phases == {"<list>": 1}


@pytest.mark.parametrize("value", [{}, [], ["r"], {"id": "r"}, 7, True, ""])
def test_ids_of_response_created_that_are_not_strings_are_not_kept(value: Any) -> None:
    """The turn's ``chat_id`` and ``response_id`` (the stop call's, the next turn's parent,
    store keys) are kept only as non-empty strings: an object there once reached a dict key
    (TypeError, a 500)."""
    tr = Translator()
    run(tr, f({"response.created": {"chat_id": value, "response_id": value}}))
    assert tr.chat_id is None and tr.response_id is None
    run(tr, f({"response.created": {"chat_id": "c2", "response_id": "r2"}}))
    assert (tr.chat_id, tr.response_id) == ("c2", "r2")  # the first usable ones


def test_the_first_string_ids_of_response_created_stay() -> None:
    tr = Translator()
    run(
        tr,
        f({"response.created": {"chat_id": "c1", "response_id": "r1"}}),
        f({"response.created": {"chat_id": "c2", "response_id": "r2"}}),
    )
    assert (tr.chat_id, tr.response_id) == ("c1", "r1")
