"""Each rule of the harness's pure diagnosis functions on its own: image sniffing
(one test per format, the WebP check needing both RIFF and WEBP), every drawing-tutorial
pattern, the null-URL spellings, echo classification order, duplicated deltas, SSE framing."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.conformance import diagnosis as D
from proxy.conformance.diagnosis import (
    classify_echo,
    classify_image_answer,
    find_duplicated_deltas,
    parse_sse,
    sniff_image,
)

# -- sniff_image -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n....", "png"),
        (b"\xff\xd8\xff\xe0....", "jpeg"),
        (b"GIF87a....", "gif"),
        (b"GIF89a....", "gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),  # a RIFF file that is not WebP (audio)
        (b"XXXX\x00\x00\x00\x00WEBPVP8 ", None),  # WEBP without RIFF
        (b"RIFF\x00\x00\x00\x00WEB", None),  # too short
        (b"\x89PNG\r\n\x1a", None),
        (b"\xff\xd8", None),
        (b"GIF88a", None),
        (b"", None),
    ],
)
def test_sniff_each_format(data: bytes, kind: str | None) -> None:
    """Each magic number, and near misses of each."""
    assert sniff_image(data) == kind


def test_webp_needs_exactly_twelve_bytes() -> None:
    """Twelve bytes are enough for WebP."""
    assert sniff_image(b"RIFF\x01\x02\x03\x04WEBP") == "webp"


# -- classify_image_answer ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Step 1: start",
        "step2 then",
        "make a sketch",
        "take a pencil",
        "on the canvas now",
        "use a brush",
        "add shading here",
        "draw it",
        "a drawing of",
        "the outline first",
        "colour in the sky",
        "coloring it blue",
        "先画",
        "绘制",
        "步骤",
        "铅笔",
        "素描",
        "上色",
    ],
)
def test_each_drawing_pattern_counts(text: str) -> None:
    """Each drawing-tutorial pattern counts once; two matches make ``drawing_text``, one
    does not."""
    assert len(D._DRAWING.findall(text)) == 1, text
    assert classify_image_answer(text).kind == "text"
    assert classify_image_answer(text + " and then " + text).kind == "drawing_text"


@pytest.mark.parametrize("word", ["canvasses", "shadings", "drawn", "outlines", "brushing"])
def test_drawing_pattern_word_boundaries(word: str) -> None:
    """Patterns with word boundaries do not match inside other words."""
    assert not D._DRAWING.findall(f"x {word}") or word == "brushing"


@pytest.mark.parametrize("target", ["", "null", "None", "undefined", "nil", "NaN", " null "])
def test_each_null_url_spelling(target: str) -> None:
    """Each null-ish image target is the ``![image](null)`` symptom."""
    assert classify_image_answer(f"Here: ![image]({target})").kind == "null_url"


def test_image_urls_markdown_and_bare() -> None:
    """Markdown targets and bare URLs are images, de-duplicated in order."""
    text = "![a](https://c.example/1.png) see https://c.example/2.png and https://c.example/1.png"
    got = classify_image_answer(text)
    assert got.kind == "image"
    assert got.urls == ("https://c.example/1.png", "https://c.example/2.png")
    assert classify_image_answer('![a](<http://x.example/i.png> "t")').urls == (
        "http://x.example/i.png",
    )


def test_non_http_targets_are_not_images() -> None:
    """``https://`` alone or another scheme is not an image URL."""
    assert classify_image_answer("![a](ftp://x/y.png)").kind == "text"
    assert classify_image_answer("![a](https://)").kind == "text"


@pytest.mark.parametrize("text", [None, "", "   \n"])
def test_empty_answers(text: str | None) -> None:
    """No text at all is ``empty``."""
    assert classify_image_answer(text).kind == "empty"


# -- classify_echo ---------------------------------------------------------------------------

SENTENCE = "你好，世界：测试"


def test_echo_ok_and_empty() -> None:
    """The sentence inside the answer is ok; blank answers are empty."""
    assert classify_echo(SENTENCE, f"Sure: {SENTENCE}!").code == "ok"
    assert classify_echo(SENTENCE, "  ").code == "empty_answer"


def test_echo_latin1_and_cp1252() -> None:
    """Latin-1 and cp1252 mojibake of the sentence, as is or inside text."""
    assert classify_echo(SENTENCE, D.latin1_mojibake(SENTENCE)).code == "mojibake_latin1"
    assert classify_echo(SENTENCE, "x " + D.cp1252_mojibake(SENTENCE)).code == "mojibake_latin1"


def test_echo_gbk_each_variant() -> None:
    """Each GBK mojibake variant is recognised."""
    for variant in D.gbk_mojibake(SENTENCE):
        assert classify_echo(SENTENCE, variant).code == "mojibake_gbk", variant


def test_echo_replacement_chars_counted() -> None:
    """U+FFFD in an answer that is no known mojibake: counted in the message."""
    verdict = classify_echo(SENTENCE, "你好\ufffd\ufffd世界")
    assert verdict.code == "replacement_chars" and "2 U+FFFD" in verdict.message


@pytest.mark.parametrize(
    "answer",
    [
        "Your text looks garbled.",
        "This is mojibake",
        "我看到的是乱码",
        "It has corrupted characters",
        "an encoding issue",
        "charset problem",
        "unreadable characters here",
        "我无法识别这些字符",
        "存在编码问题",
    ],
)
def test_each_garbled_claim(answer: str) -> None:
    """Each way a model says the input is garbled."""
    assert classify_echo(SENTENCE, answer).code == "garbled_claim"


def test_echo_mismatch() -> None:
    """Anything else is a mismatch."""
    assert classify_echo(SENTENCE, "Hello there").code == "echo_mismatch"


# -- find_duplicated_deltas --------------------------------------------------------------------


def test_accumulated_resent() -> None:
    """A piece starting with all the text so far (8+ chars) is flagged at its index."""
    got = find_duplicated_deltas(["Hello ", "world", "Hello world again"])
    assert got is not None and got.kind == "accumulated_resent" and got.index == 2
    assert "starts with all the text" in got.message()


def test_accumulated_short_is_not_flagged() -> None:
    """Below ``min_len`` the same shape is not flagged."""
    assert find_duplicated_deltas(["ab", "abc"], min_len=8) is None


def test_repeated_piece() -> None:
    """The same long piece twice in a row."""
    got = find_duplicated_deltas(["x", "long piece!", "long piece!"])
    assert got is not None and got.kind == "repeated_piece" and got.index == 2
    assert find_duplicated_deltas(["ha", "ha", "ha"]) is None


def test_cumulative_snapshot_long_previous() -> None:
    """A piece extending a long previous piece is a snapshot."""
    got = find_duplicated_deltas(["a", "The quick", "The quick brown"])
    assert got is not None and got.kind == "cumulative_snapshot" and got.index == 2


def test_cumulative_snapshot_streak_of_two() -> None:
    """Short pieces extending each other twice in a row are snapshots; once is not."""
    got = find_duplicated_deltas(["z", "Th", "The", "Then"])
    assert got is not None and got.kind == "cumulative_snapshot" and got.index == 3
    assert find_duplicated_deltas(["z", "Th", "The", "x"]) is None


def test_empty_pieces_are_ignored() -> None:
    """Empty pieces neither count nor reset anything."""
    got = find_duplicated_deltas(["", "x", "long piece!", "", "long piece!"])
    assert got is not None and got.kind == "repeated_piece"
    assert got.index == 2  # among the non-empty pieces


def test_custom_min_len() -> None:
    """``min_len`` lowers the threshold."""
    assert find_duplicated_deltas(["ab", "ab"], min_len=2) is not None
    assert find_duplicated_deltas(["ab", "ab"], min_len=3) is None


# -- parse_sse ---------------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_parse_sse_line_endings(eol: bytes) -> None:
    """Each line ending; ``end`` is the offset after the blank line."""
    raw = b"data: a" + eol + eol + b"data: b" + eol + eol
    out = parse_sse(raw)
    assert [e.data for e in out.events] == ["a", "b"]
    assert out.events[0].end == len(b"data: a" + eol + eol)
    assert out.events[1].end == len(raw)
    assert out.problems == [] and out.tail == ""


def test_parse_sse_fields() -> None:
    """data lines joined, event names kept, id and retry allowed, comments counted."""
    out = parse_sse(b": hi\nevent: e\nid: 1\nretry: 5\ndata: a\ndata:b\n\n")
    assert [(e.data, e.event) for e in out.events] == [("a\nb", "e")]
    assert out.comments == 1 and out.problems == []


def test_parse_sse_event_only_dispatches() -> None:
    """An event with only an ``event:`` line is dispatched (empty data)."""
    assert [(e.data, e.event) for e in parse_sse(b"event: ping\n\n").events] == [("", "ping")]


def test_parse_sse_unknown_field_and_bad_lines() -> None:
    """Unknown fields and lines without a colon are problems; more than 3 bad lines are
    summarised."""
    out = parse_sse(b"foo: 1\ndata: a\n\n")
    assert out.problems == ["unknown SSE field 'foo'"]
    out = parse_sse(b"x\ny\nz\nw\nv\n\n")
    assert len([p for p in out.problems if p.startswith("line without")]) == 3
    assert out.problems[-1] == "5 lines without a field name in all"
    out = parse_sse(b"x\ny\nz\n\n")
    assert len(out.problems) == 3


def test_parse_sse_invalid_utf8() -> None:
    """Invalid UTF-8 is a problem naming the byte offset."""
    out = parse_sse(b"data: \xff\n\n")
    assert out.problems == ["the body is not valid UTF-8 (byte 6)"]
    assert out.events[0].data == "\ufffd"


def test_parse_sse_unterminated_tail() -> None:
    """An event without its blank line, or a trailing partial line, is the tail."""
    out = parse_sse(b"data: a\n\ndata: b\n")
    assert out.tail == "b" and [e.data for e in out.events] == ["a"]
    assert "unterminated" in out.problems[-1]
    out = parse_sse(b"data: a\n\ndata: partial")
    assert out.tail == "data: partial"
    out = parse_sse(b"data: a\n\n  ")
    assert out.tail == "" and out.problems == []


# -- sharper checks (mutation testing) ---------------------------------------------------------


def test_partial_mojibake_is_found_by_undoing_it() -> None:
    """Only the start mangled: not found as is, found by undoing the cp1252/Latin-1 reading
    (C1 characters included: 丁 is E4 B8 81, and 0x81 passes through as U+0081)."""
    expected = "丁一二三四"
    for mangle in (D.cp1252_mojibake, D.latin1_mojibake):
        answer = "echo: " + mangle(expected[:2]) + expected[2:]
        assert mangle(expected) not in answer
        assert classify_echo(expected, answer).code == "mojibake_latin1"


def test_partial_gbk_mojibake_is_found_by_undoing_it() -> None:
    """The same for a GBK reading."""
    expected = "你好😀"  # the emoji is not in GBK: undoing keeps it as UTF-8
    head = "你好".encode().decode("gbk", errors="replace")
    answer = head + "😀"
    assert head + "😀" not in D.gbk_mojibake(expected)
    assert classify_echo(expected, answer).code == "mojibake_gbk"
    clean = "你好".encode().decode("gbk")  # 6 bytes decode cleanly as GBK
    assert classify_echo("你好", clean + "!").code == "mojibake_gbk"


def test_reverse_keeps_non_latin_characters() -> None:
    """Undoing mojibake keeps characters the encoding lacks as UTF-8."""
    assert D._reverse(D.cp1252_mojibake("丁") + "好", "cp1252") == "丁好"
    assert D._reverse(D.latin1_mojibake("中") + "好", "latin-1") == "中好"
    assert D._reverse("\u0081", "latin-1") == "\ufffd"  # a lone C1 byte is not UTF-8
    assert D._reverse("Ā", "cp1252") == "Ā"  # U+0100: not a byte, kept as UTF-8


def test_mojibake_functions_exact_output() -> None:
    """The three mojibake forms of a known text."""
    assert D.latin1_mojibake("é") == "Ã©"
    assert D.cp1252_mojibake("丁") == "ä¸\x81"
    assert D.cp1252_mojibake("€") == "â‚¬"
    variants = D.gbk_mojibake("你好")
    assert variants == tuple(sorted(set(variants), key=len, reverse=True))
    assert "浣犲ソ" in variants
    assert len(variants[0]) >= len(variants[-1])


def test_gbk_variants_longest_first() -> None:
    """Variants are distinct and ordered longest first (replace before ignore)."""
    variants = D.gbk_mojibake("丁")  # E4 B8 81: one valid GBK pair and a lone byte
    assert len(variants) == len(set(variants)) >= 2
    assert [len(v) for v in variants] == sorted((len(v) for v in variants), reverse=True)


@pytest.mark.parametrize("n", [7, 8])
def test_duplicate_thresholds_are_inclusive(n: int) -> None:
    """Exactly ``min_len`` characters is enough, one fewer is not (each rule)."""
    piece = "x" * n
    flagged = n >= 8
    assert (find_duplicated_deltas(["y", piece, piece]) is not None) is flagged
    assert (find_duplicated_deltas([piece, piece + "z"]) is not None) is flagged
    acc = find_duplicated_deltas(["a" * (n - 1), "b", "a" * (n - 1) + "b" + "c"])
    assert (acc is not None and acc.kind == "accumulated_resent") is flagged


def test_first_piece_is_never_a_duplicate() -> None:
    """A single long piece is nothing."""
    assert find_duplicated_deltas(["a long first piece"]) is None


def test_finding_carries_the_piece_and_a_message() -> None:
    """The finding names the index and quotes the piece (at most 60 characters)."""
    got = find_duplicated_deltas(["z", "Th", "The", "Then"])
    assert got is not None and got.piece == "Then"
    long = "p" * 70
    got = find_duplicated_deltas(["q", long, long])
    assert got is not None
    assert got.message() == (
        f"streamed piece #2 is the same long piece as the one before it: {('p' * 60)!r}"
    )
    snap = find_duplicated_deltas(["q", "abcdefgh", "abcdefghij"])
    assert snap is not None and snap.message().startswith("streamed piece #2 repeats")


def test_parse_sse_counts_every_comment() -> None:
    """Each comment line counts."""
    assert parse_sse(b": a\n: b\n:c\ndata: x\n\n").comments == 3


def test_parse_sse_event_name_is_none_without_event_field() -> None:
    """Events without ``event:`` have ``None``, and the name does not leak to the next."""
    out = parse_sse(b"data: a\n\nevent: e\ndata: b\n\ndata: c\n\n")
    assert [e.event for e in out.events] == [None, "e", None]


def test_parse_sse_exactly_four_bad_lines_are_summarised() -> None:
    """Three bad lines are listed; the fourth adds the summary."""
    out = parse_sse(b"w\nx\ny\nz\n\n")
    assert out.problems[-1] == "4 lines without a field name in all"


def test_parse_sse_bad_line_quote_is_capped() -> None:
    """A bad line is quoted up to 80 characters."""
    line = "q" * 100
    out = parse_sse(line.encode() + b"\n\n")
    assert out.problems == [f"line without a field name and colon: {line[:80]!r}"]


def test_parse_sse_tail_kept_as_is_and_capped_in_the_message() -> None:
    """A tail after the last event is kept unstripped; the message quotes 80 characters."""
    out = parse_sse(b"data: a\n\n  partial \xff")
    assert out.tail == "  partial \ufffd"
    long = b"data: " + b"t" * 120
    out = parse_sse(long)
    assert out.tail == "data: " + "t" * 120
    assert out.problems[-1] == (
        "the body does not end with a blank line: the last event is unterminated "
        f"({out.tail[:80]!r})"
    )


def test_parse_sse_unterminated_event_joins_its_data_lines() -> None:
    """An unterminated event's data lines are joined with newlines in the tail."""
    out = parse_sse(b"data: a\ndata: b\n")
    assert out.tail == "a\nb"


# -- tool-call fragments -------------------------------------------------------------------------


def _frag(
    index: Any,
    *,
    id: str | None = None,
    name: str | None = None,
    args: Any = None,
    type: str | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {"index": index}
    if id is not None:
        item["id"] = id
    if type is not None:
        item["type"] = type
    fn: dict[str, Any] = {}
    if name is not None:
        fn["name"] = name
    if args is not None:
        fn["arguments"] = args
    if fn:
        item["function"] = fn
    return item


def test_assemble_well_formed_calls() -> None:
    """Two calls, fragments interleaved: ids, types, names and arguments put together, in index
    order, no problem."""
    deltas = [
        {"tool_calls": [_frag(1, id="c2", type="function", name="g", args="")]},
        {"tool_calls": [_frag(0, id="c1", type="function", name="f", args='{"a"')]},
        {"content": "x"},
        {"tool_calls": [_frag(0, args=":1}"), _frag(1, args="{}")]},
    ]
    calls, problems = D.assemble_tool_call_deltas(deltas)
    assert problems == []
    assert [(c.index, c.id, c.type, c.name, c.arguments) for c in calls] == [
        (0, "c1", "function", "f", '{"a":1}'),
        (1, "c2", "function", "g", "{}"),
    ]


def test_assemble_reports_each_problem() -> None:
    """Each malformed shape is named, and the rest still assembles."""
    deltas = [
        {"tool_calls": "nope"},
        {"tool_calls": [{"no": "index"}, _frag("0"), _frag(0, args="{")]},
        {"tool_calls": [_frag(0, id="late", name="late_name", type="function", args=5)]},
        {"tool_calls": [_frag(0, id="again", name="again_name", args="}")]},
    ]
    calls, problems = D.assemble_tool_call_deltas(deltas)
    assert problems[0] == "delta.tool_calls is not a list: 'nope'"
    assert problems[1].startswith("a tool_calls fragment has no integer index: {'no'")
    assert problems[2].startswith("a tool_calls fragment has no integer index: {'index': '0'")
    assert problems[3] == "the first fragment of call 0 lacks id and name"
    assert problems[4] == (
        "call 0 repeats `id` ('late') in a later fragment: openai-python concatenates it"
    )
    assert problems[5].startswith("call 0 repeats `name` ('late_name')")
    assert problems[6] == "call 0: function.arguments is not a string: 5"
    assert problems[7].startswith("call 0 repeats `id` ('again')")
    (call,) = calls
    assert (call.id, call.name, call.type, call.arguments) == (
        "late",
        "late_name",
        "function",
        "{}",
    )


def test_assemble_first_fragment_lacks_only_one() -> None:
    """A first fragment with a name but no id names only the id (and the reverse)."""
    _, problems = D.assemble_tool_call_deltas([{"tool_calls": [_frag(0, name="f")]}])
    assert problems == ["the first fragment of call 0 lacks id"]
    _, problems = D.assemble_tool_call_deltas([{"tool_calls": [_frag(0, id="c")]}])
    assert problems == ["the first fragment of call 0 lacks name"]


def test_assemble_caps_quoted_fragments() -> None:
    """Quoted fragments are cut (120 characters for the list, 160 for an item)."""
    _, problems = D.assemble_tool_call_deltas([{"tool_calls": "x" * 500}])
    assert len(problems[0]) == 120
    _, problems = D.assemble_tool_call_deltas([{"tool_calls": [{"index": None, "p": "y" * 500}]}])
    assert len(problems[0]) == 160
