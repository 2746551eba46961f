"""The harness's pure parts: echo classification, duplicate detection, images, SSE, contract."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.conformance import pick_models
from proxy.conformance.contract import EXACT_FIELDS, exact_problems, violations
from proxy.conformance.diagnosis import (
    arguments_problem,
    assemble_tool_call_deltas,
    classify_echo,
    classify_image_answer,
    cp1252_mojibake,
    find_duplicated_deltas,
    find_tool_markup,
    gbk_mojibake,
    latin1_mojibake,
    parse_sse,
    repeated_call,
    sniff_image,
)
from proxy.conformance.probes import ECHO_ZH_SENTENCE as ZH
from proxy.conformance.report import CheckResult, Report


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (ZH, "ok"),
        (f"  “{ZH}”\n", "ok"),
        (f"好的：{ZH}", "ok"),  # a model's own word before it: a note
        ("", "empty_answer"),
        (latin1_mojibake(ZH), "mojibake_latin1"),
        (cp1252_mojibake(ZH), "mojibake_latin1"),
        ("Sure! " + latin1_mojibake(ZH) + " 😊", "mojibake_latin1"),
        (gbk_mojibake(ZH)[0], "mojibake_gbk"),
        (gbk_mojibake(ZH)[-1], "mojibake_gbk"),
        (ZH.replace("京", "\ufffd\ufffd"), "replacement_chars"),
        ("Your message might be garbled; please resend it.", "garbled_claim"),
        ("您发送的内容似乎是乱码。", "garbled_claim"),
        ("I cannot read the characters: there seems to be an encoding issue.", "garbled_claim"),
        ("我们在上海的茶馆里讨论天气。", "echo_mismatch"),
    ],
)
def test_classify_echo(answer: str, code: str) -> None:
    """Each kind of broken echo gets its own diagnosis code."""
    assert classify_echo(ZH, answer).code == code


@given(st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5), min_size=4))
def test_latin1_mojibake_of_any_chinese_is_recognised(text: str) -> None:
    """UTF-8 read as Latin-1 is always named, for any CJK sentence."""
    assert classify_echo(text, latin1_mojibake(text)).code == "mojibake_latin1"


def test_short_legitimate_repetitions_are_not_duplicates() -> None:
    """'ha', 'ha', … and repeated commas are real text, not duplicated deltas."""
    assert find_duplicated_deltas(["ha", "ha", "ha", "ha", "ha", "!"]) is None
    assert find_duplicated_deltas(["One", ",", " two", ",", " three", ",", " four"]) is None
    assert find_duplicated_deltas(["ab", "abc"]) is None  # one short extension only
    assert find_duplicated_deltas(["", "Hello", "", " world"]) is None


def test_duplicated_deltas_are_found() -> None:
    """Cumulative snapshots, re-sent accumulated text and long repeated pieces are flagged."""
    snap = find_duplicated_deltas(["Hel", "Hello", "Hello wor", "Hello world"])
    assert snap is not None and snap.kind == "cumulative_snapshot" and snap.index == 2
    resent = find_duplicated_deltas(["Hello world", ", how", "Hello world, how are you"])
    assert resent is not None and resent.kind == "accumulated_resent"
    repeated = find_duplicated_deltas(["The answer is", " forty-two.", " forty-two."])
    assert repeated is not None and repeated.kind == "repeated_piece"
    assert "#2" in repeated.message()


@given(st.lists(st.text(min_size=1, max_size=7), max_size=30))
def test_cumulative_snapshots_of_long_text_are_always_flagged(words: list[str]) -> None:
    """Re-sending the whole text so far, once it is 8+ characters, is always caught."""
    text = "".join(["A long enough start", *words])
    snapshots = [text[:n] for n in range(10, len(text) + 1, 3)]
    if len(snapshots) >= 2:
        assert find_duplicated_deltas(snapshots) is not None


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("![image](https://cdn.example/a.png)", "image"),
        ("Here it is: https://cdn.example/a.png", "image"),
        ("![image](null)", "null_url"),
        ("![生成的图片]( undefined )", "null_url"),
        ("![image]()", "null_url"),
        ("Step 1: sketch a circle with a pencil. Step 2: draw the stem.", "drawing_text"),
        ("第一步：用铅笔画一个圆。第二步：上色。", "drawing_text"),
        ("I cannot help with that.", "text"),
        ("", "empty"),
        (None, "empty"),
    ],
)
def test_classify_image_answer(text: str | None, kind: str) -> None:
    """Image answers: a URL, a null URL, a drawing tutorial, other text, nothing."""
    assert classify_image_answer(text).kind == kind


def test_sniff_image() -> None:
    """Magic bytes of PNG, JPEG, GIF and WEBP; anything else is not an image."""
    assert sniff_image(b"\x89PNG\r\n\x1a\n....") == "png"
    assert sniff_image(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff_image(b"GIF89a") == "gif"
    assert sniff_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert sniff_image(b"<html>") is None


def test_parse_sse_framing() -> None:
    """Events end at blank lines (any newline style); comments, unknown lines and tails noted."""
    good = parse_sse(b': keep-alive\n\ndata: {"a": 1}\r\n\r\ndata: x\ndata: y\n\ndata: [DONE]\n\n')
    assert [e.data for e in good.events] == ['{"a": 1}', "x\ny", "[DONE]"]
    assert good.problems == [] and good.comments == 1
    assert good.events[-1].end == len(
        b': keep-alive\n\ndata: {"a": 1}\r\n\r\ndata: x\ndata: y\n\ndata: [DONE]\n\n'
    )
    bad = parse_sse(b'{"a"}\nhello\nfoo: 2\n\ndata: tail')
    assert any("without a field name" in p for p in bad.problems)
    assert any("unknown SSE field" in p for p in bad.problems)
    assert "tail" in bad.tail
    assert any("unterminated" in p for p in bad.problems)
    assert parse_sse(b"data: \xff\n\n").problems[0].startswith("the body is not valid UTF-8")


def chunk(**over: object) -> dict[str, object]:
    """A valid chat.completion.chunk with fields replaced by ``over``."""
    base: dict[str, object] = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
    }
    base.update(over)
    return base


def test_contract_is_strict_but_allows_extra_fields() -> None:
    """Types are not coerced and literals are exact; unknown extra fields are fine."""
    assert violations("chat.completion.chunk", chunk(reasoning_content="r", x_extra=1)) == []
    assert violations("chat.completion.chunk", chunk(created="1"))
    assert violations("chat.completion.chunk", chunk(created=1.5))
    assert violations("chat.completion.chunk", chunk(object="chat.completion"))
    assert violations("chat.completion.chunk", chunk(id=""))
    assert violations("chat.completion.chunk", json.loads('{"choices": []}'))
    assert violations("model.list", {"object": "list", "data": [{"id": "m"}]})
    assert violations("model.list", {"data": []})
    ok_list = {"object": "list", "data": [{"id": "m", "object": "model", "created": 0,
                                           "owned_by": "q"}]}  # fmt: skip
    assert violations("model.list", ok_list) == []
    assert violations("error", {"error": {"message": "m", "type": "t", "code": None}}) == []
    assert violations("error", {"detail": "Not Found"})
    assert violations("images", {"created": 1, "data": []})
    assert violations("chat.completion", "text")


def test_pick_models_prefers_given_then_listed() -> None:
    """--models wins; otherwise the first plain id and its -thinking / -image variants."""
    listed = ["qwen3-max", "qwen3-max-thinking", "qwen3-max-search", "qwen3.6-plus-image"]
    caps = pick_models(listed)
    assert (caps.text_model, caps.thinking_model, caps.image_model) == (
        "qwen3-max",
        "qwen3-max-thinking",
        "qwen3.6-plus-image",
    )
    mine = pick_models(listed, ["qwen3.6-plus", "qwen3.6-plus-thinking"])
    assert (mine.text_model, mine.thinking_model) == ("qwen3.6-plus", "qwen3.6-plus-thinking")
    none = pick_models(["only-model"])
    assert none.thinking_model is None and "thinking" in none.reasons
    assert none.image_model is None and "image" in none.reasons


def test_exit_code_counts_only_required_failures() -> None:
    """An optional failure or a skipped required check does not fail the run."""

    def result(status: str, required: bool) -> CheckResult:
        return CheckResult("x", "t", status, required, "d", "m")  # type: ignore[arg-type]

    def report(*results: CheckResult) -> Report:
        return Report("u", "now", 0.0, "0", {}, list(results))

    assert report(result("failed", False), result("skipped", True)).exit_code() == 0
    assert report(result("error", True)).exit_code() == 1
    assert report(result("failed", True)).exit_code() == 1
    assert "## Skipped" in report(result("skipped", True)).to_markdown()


# -- tool calls and wire exactness --------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "<tool_call>",
        "<function=read_file>\n<parameter=path>\nsrc/app.py\n</parameter>\n</function>",
        '✿FUNCTION✿: get_weather\n✿ARGS✿: {"city": "Paris"}',
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    ],
)
def test_tool_markup_is_found(text: str) -> None:
    """Every dialect of tool-call markup a Qwen model writes is recognised in content."""
    assert find_tool_markup(text) is not None


@pytest.mark.parametrize(
    "text", ["", None, "It is 21 °C in Berlin.", "Use <b>bold</b>", "<read_file><path>x</path>"]
)
def test_plain_text_is_not_markup(text: str | None) -> None:
    """Prose, HTML and Cline's own XML tools are not tool-call markup."""
    assert find_tool_markup(text) is None


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=0, max_size=6))
def test_assembled_arguments_do_not_depend_on_chunking(cuts: list[int]) -> None:
    """Argument pieces split anywhere assemble to the same text, without shape problems."""
    args = '{"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}'
    bounds = sorted({min(c, len(args)) for c in cuts} | {0, len(args)})
    pieces = [args[a:b] for a, b in itertools.pairwise(bounds)]
    first: dict[str, object] = {"index": 0, "id": "call_1", "type": "function"}
    first["function"] = {"name": "get_weather", "arguments": ""}
    deltas = [{"tool_calls": [first]}] + [
        {"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in pieces
    ]
    calls, problems = assemble_tool_call_deltas(deltas)
    assert problems == []
    assert [(c.id, c.name, c.arguments) for c in calls] == [("call_1", "get_weather", args)]


def test_assembly_names_the_shape_faults_clients_trip_over() -> None:
    """A repeated id (openai-python would concatenate it), a first fragment without a name,
    a fragment without index, arguments as an object."""
    deltas = [
        {"tool_calls": [{"index": 0, "id": "call_1", "function": {"arguments": ""}}]},
        {"tool_calls": [{"index": 0, "id": "call_1", "function": {"arguments": "{}"}}]},
        {"tool_calls": [{"function": {"arguments": "x"}}]},
        {"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "f", "arguments": {}}}]},
    ]
    _, problems = assemble_tool_call_deltas(deltas)
    text = " | ".join(problems)
    assert "first fragment of call 0 lacks name" in text
    assert "repeats `id`" in text and "no integer index" in text
    assert "arguments is not a string" in text


def test_arguments_and_repeated_calls() -> None:
    """Arguments must be a JSON object in a string; a call equal (as JSON) to an earlier one
    is a repeat."""
    assert arguments_problem('{"city": "Paris"}') is None
    assert "not JSON" in str(arguments_problem("{city: Paris}"))
    assert "not an object" in str(arguments_problem("[1]"))
    assert "not a JSON string" in str(arguments_problem({"city": "Paris"}))
    earlier = [("get_weather", '{"city": "Berlin"}')]
    assert repeated_call([("get_weather", '{ "city":"Berlin" }')], earlier) is not None
    assert repeated_call([("get_weather", '{"city": "Paris"}')], earlier) is None
    assert repeated_call([("f", "{}"), ("f", "{}")]) == ("f", "{}")


def test_exact_fields_name_what_openai_returns() -> None:
    """A bare completion lacks refusal, annotations, logprobs…; one carrying them has none
    missing; strict violations add them to the contract."""
    bare = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    missing = exact_problems("chat.completion", bare)
    paths = {p.split(":")[0] for p in missing}
    assert {
        "choices.0.message.refusal",
        "choices.0.message.annotations",
        "choices.0.logprobs",
        "system_fingerprint",
        "usage.prompt_tokens_details",
    } <= paths
    assert all("OpenAI returns it" in p for p in missing)
    assert violations("chat.completion", bare) == []
    assert violations("chat.completion", bare, strict=True) == missing
    full = json.loads(json.dumps(bare))
    full.update(system_fingerprint=None, service_tier="default")
    full["choices"][0].update(logprobs=None)
    full["choices"][0]["message"].update(refusal=None, annotations=[])
    full["usage"].update(prompt_tokens_details={}, completion_tokens_details={})
    assert exact_problems("chat.completion", full) == []
    full["choices"][0]["message"]["annotations"] = None
    assert exact_problems("chat.completion", full) == [
        "choices.0.message.annotations: must be array"
    ]
    usage_only = {"id": "c", "choices": [], "system_fingerprint": None, "service_tier": None}
    assert exact_problems("chat.completion.chunk", usage_only) == []
    assert EXACT_FIELDS["chat.completion"] and EXACT_FIELDS["chat.completion.chunk"]
