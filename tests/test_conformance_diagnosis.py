"""The harness's pure parts: echo classification, duplicate detection, images, SSE, contract."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.conformance import pick_models
from proxy.conformance.contract import violations
from proxy.conformance.diagnosis import (
    classify_echo,
    classify_image_answer,
    cp1252_mojibake,
    find_duplicated_deltas,
    gbk_mojibake,
    latin1_mojibake,
    parse_sse,
    sniff_image,
)
from proxy.conformance.probes import ECHO_ZH_SENTENCE as ZH
from proxy.conformance.report import CheckResult, Report


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (ZH, "ok"),
        (f"好的：{ZH}", "ok"),
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
