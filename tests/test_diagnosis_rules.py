"""Each rule of the harness's pure diagnosis functions on its own: image sniffing
(one test per format, the WebP check needing both RIFF and WEBP), every drawing-tutorial
pattern, the null-URL spellings, echo classification order, duplicated deltas, SSE framing."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import byte_length_diffed

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
    """Only the sentence itself is ok; blank answers are empty."""
    assert classify_echo(SENTENCE, SENTENCE).code == "ok"
    assert classify_echo(SENTENCE, f"Sure: {SENTENCE}!").code == "ok"  # the model's words
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


# -- exact echo comparison ---------------------------------------------------------------------

EN = "The quick brown fox."


@pytest.mark.parametrize(("left", "right"), D._QUOTES)
def test_each_quote_pair_is_forgiven(left: str, right: str) -> None:
    """One pair of quotes around the answer (and spaces inside it) is not a difference."""
    assert D.normalise_echo(f" {left} {EN}{right}\n") == EN
    assert classify_echo(EN, f"{left}{EN}{right}").code == "ok"


def test_normalise_echo_forgives_nothing_else() -> None:
    """Unpaired or inner quotes, and a lone quote, stay; whitespace around is removed."""
    assert D.normalise_echo(f'"{EN}') == f'"{EN}'
    assert D.normalise_echo(f"'{EN}\"") == f"'{EN}\""
    assert D.normalise_echo('"') == '"'
    assert D.normalise_echo('""') == ""
    assert D.normalise_echo(f"\t{EN}  ") == EN


def test_echo_ok_message_says_exactly() -> None:
    """A passing echo says the answer is the sentence, exactly."""
    assert classify_echo(EN, EN).message == "the answer is the sentence, exactly"


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        (
            f"{EN} Anything else?",
            "ok",
            "the answer holds the sentence, with the model's own words after it: ' Anything else?'",
        ),
        (
            f"Sure: {EN}",
            "ok",
            "the answer holds the sentence, with the model's own words before it: 'Sure: '",
        ),
        (
            f"Sure: {EN} Bye.",
            "ok",
            "the answer holds the sentence, with the model's own words before it ('Sure: ') "
            "and after it (' Bye.')",
        ),
        (
            f"{EN}x.",
            "echo_mismatch",
            "the sentence is followed by a repeat of its own last 2 character(s) ('x.'): its "
            "last piece of text was sent twice",
        ),
        (f"{EN}\n\n{EN}", "echo_mismatch", "the answer is the sentence twice"),
    ],
)
def test_extra_text_is_named(answer: str, code: str, message: str) -> None:
    """The sentence with something around it: a piece sent twice is a failure; other words
    (a model's "Sure:") are a note, saying what and where."""
    verdict = classify_echo(EN, answer)
    assert (verdict.code, verdict.message) == (code, message)


def test_extra_text_excerpt_is_capped() -> None:
    """Extra text is quoted up to 60 characters."""
    message = classify_echo(EN, EN + "y" * 100).message
    assert message.endswith(repr("y" * 59 + "…"))


def test_extra_text_comes_before_mojibake() -> None:
    """An answer holding the sentence is judged by what is around it, even mojibake."""
    assert classify_echo(SENTENCE, SENTENCE + D.latin1_mojibake(SENTENCE)).code == "echo_mismatch"


@pytest.mark.parametrize(
    "extra",
    [
        "\ufffd",
        D.latin1_mojibake(SENTENCE),
        D.cp1252_mojibake(SENTENCE),
        *[f for f in D.gbk_mojibake(SENTENCE) if f],
    ],
)
@pytest.mark.parametrize("where", ["before", "after"])
def test_damage_around_the_sentence_is_no_models_words(extra: str, where: str) -> None:
    """Text around the sentence is the model's own words (ok) unless it shows damage: U+FFFD or
    the sentence's own mojibake, before it or after it."""
    answer = extra + " " + SENTENCE if where == "before" else SENTENCE + " " + extra
    verdict = classify_echo(SENTENCE, answer)
    assert verdict.code == "echo_mismatch"
    assert verdict.message.startswith("the answer holds the sentence with extra text")
    assert classify_echo(SENTENCE, "好的： " + SENTENCE).code == "ok"


def test_mojibake_ending_in_a_space_like_character() -> None:
    """Mojibake is looked for in the answer as sent: 丠 read as Latin-1 ends in U+00A0,
    which the comparison's whitespace stripping would remove."""
    assert classify_echo("丠", D.latin1_mojibake("丠")).code == "mojibake_latin1"
    assert classify_echo("丠", D.gbk_mojibake("丠")[0] + " ").code == "mojibake_gbk"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("The quick", "the answer breaks off after 9 of the sentence's 20 characters: 'The quick'"),
        (
            "The slow brown fox.",
            "the answer differs from the sentence from character 4 on: expected 'quick brown "
            "fox.', got 'slow brown fox.'",
        ),
        (
            "The quick brown fox!!",
            "the answer differs from the sentence from character 19 on: expected '.', got '!!'",
        ),
    ],
)
def test_difference_is_located(answer: str, message: str) -> None:
    """Other text: where the answer breaks off or first differs."""
    verdict = classify_echo(EN, answer)
    assert (verdict.code, verdict.message) == ("echo_mismatch", message)


def test_difference_when_the_answer_is_longer() -> None:
    """An answer that starts like the sentence and goes on differently: located at the end of
    the common part."""
    message = classify_echo("abc", "abXYZ").message
    assert (
        message
        == "the answer differs from the sentence from character 2 on: expected 'c', got 'XYZ'"
    )


# -- think tags --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "what", "rest"),
    [
        (f"<think>\n\n</think>\n\n{EN}", "an empty <think></think> block", "the sentence"),
        (f"<think>I echo.</think>{EN}", "<think> tags", "the sentence"),
        (f"<THINK></THINK>{EN}", "an empty <think></think> block", "the sentence"),
        (f"</think>\n{EN}", "<think> tags", repr(f"</think>\n{EN}")),
        ("<think>x</think>Hello", "<think> tags", "'Hello'"),
    ],
)
def test_think_tags_in_content(answer: str, what: str, rest: str) -> None:
    """Think tags in the answer of a model that does not think: named, with what the answer is
    without them."""
    verdict = classify_echo(EN, answer)
    assert verdict.code == "think_tags_in_content"
    assert verdict.message.startswith(f"the answer holds {what}: reasoning markup leaked")
    assert verdict.message.endswith(f"show it verbatim; without them the answer is {rest}")


def test_strip_think_blocks() -> None:
    """Blocks and the whitespace after each go; the rest stays."""
    assert D.strip_think_blocks(f"<think>a\nb</think>\n\n{EN}") == EN
    assert D.strip_think_blocks("x<Think></Think> y") == "xy"
    assert D.strip_think_blocks(EN) == EN


# -- question marks ------------------------------------------------------------------------------


def test_question_mark_forms() -> None:
    """Each single-byte encoder's way of writing what it cannot encode."""
    assert D.question_mark_forms("é中x") == ("é?x", "??x", "?????x")


@pytest.mark.parametrize("form", range(3))
def test_each_question_mark_form_is_named(form: int) -> None:
    """The Chinese sentence in each ``?`` form is ``question_marks``."""
    answer = D.question_mark_forms(SENTENCE)[form]
    assert classify_echo(SENTENCE, answer).code == "question_marks"


def test_question_marks_need_characters_to_replace() -> None:
    """An ASCII sentence has no ``?`` form: a ``?`` in its answer is other text."""
    assert classify_echo("abc", "a?c").code == "echo_mismatch"


# -- damage rules ------------------------------------------------------------------------------

ZH_PIECES = ["我们在", "北京的", "咖啡馆", "里讨论", "量子计", "算。"]
ZH_TEXT = "".join(ZH_PIECES)


def _split_ignored(text: str, size: int = 4) -> list[str]:
    raw = text.encode()
    return [raw[i : i + size].decode("utf-8", errors="ignore") for i in range(0, len(raw), size)]


EN_PIECES = ["The", " qu", "ick", " br", "own", " fo", "x."]

DAMAGE_CASES: dict[str, tuple[str, list[str]]] = {
    "byte_length_diffing": (ZH_TEXT, byte_length_diffed(ZH_PIECES)),
    "split_chars_dropped": (ZH_TEXT, _split_ignored(ZH_TEXT)),
    "overlapping_deltas": (
        ZH_TEXT,
        [p if i == 0 else ZH_PIECES[i - 1][-1] + p for i, p in enumerate(ZH_PIECES)],
    ),
    "stripped_deltas": (EN, [p.strip() for p in EN_PIECES]),
}
"""One streamed case per damage rule."""


def test_every_damage_rule_has_a_case() -> None:
    """The cases below cover :data:`DAMAGE_RULES`, in order."""
    assert [r.code for r in D.DAMAGE_RULES] == list(DAMAGE_CASES)


@pytest.mark.parametrize("code", list(DAMAGE_CASES))
def test_each_damage_rule_streamed(code: str) -> None:
    """Each rule names its damage from the streamed pieces."""
    expected, pieces = DAMAGE_CASES[code]
    verdict = classify_echo(expected, "".join(pieces), pieces)
    assert verdict.code == code, verdict.message


def test_damage_rules_messages_streamed() -> None:
    """Streamed, the messages say the damage sits where pieces meet."""
    expected, pieces = DAMAGE_CASES["split_chars_dropped"]
    message = classify_echo(expected, "".join(pieces), pieces).message
    assert message.startswith(
        "8 multi-byte character(s) are missing ('们在的咖里讨子计'), exactly where one streamed "
        "piece ends and the next begins: UTF-8 split"
    )
    expected, pieces = DAMAGE_CASES["overlapping_deltas"]
    message = classify_echo(expected, "".join(pieces), pieces).message
    assert message.startswith("5 character(s) appear twice in a row where the sentence has them")
    assert "each streamed piece starts with the last character of the piece before it" in message
    expected, pieces = DAMAGE_CASES["stripped_deltas"]
    message = classify_echo(expected, "".join(pieces), pieces).message
    assert message.startswith(
        "3 whitespace character(s) are missing at the boundaries between streamed pieces "
        "('Thequickbrownfox.'): the proxy strips"
    )
    expected, pieces = DAMAGE_CASES["byte_length_diffing"]
    message = classify_echo(expected, "".join(pieces), pieces).message
    assert message.startswith("the answer keeps only 3 of the sentence's 17 characters ('我们在')")


@pytest.mark.parametrize("code", ["split_chars_dropped", "overlapping_deltas", "stripped_deltas"])
def test_damage_rules_without_pieces(code: str) -> None:
    """Not streamed, the damage is still named from the text alone, without the claim about
    piece boundaries."""
    expected, pieces = DAMAGE_CASES[code]
    verdict = classify_echo(expected, "".join(pieces))
    assert verdict.code == code
    assert "streamed piece" not in verdict.message and "between streamed" not in verdict.message


def test_byte_length_diffing_needs_the_pieces() -> None:
    """Not streamed, text lost by byte-length diffing is only a cut-off answer."""
    expected, pieces = DAMAGE_CASES["byte_length_diffing"]
    assert classify_echo(expected, "".join(pieces)).code == "echo_mismatch"


def test_damage_not_at_piece_boundaries_is_not_named() -> None:
    """Streamed damage inside pieces, not where they meet, is not blamed on the pieces."""
    expected = ZH_TEXT
    dropped = ZH_TEXT.replace("北", "").replace("咖", "")
    assert classify_echo(expected, dropped, [dropped]).code == "echo_mismatch"
    doubled = ZH_TEXT.replace("北", "北北")
    assert classify_echo(expected, doubled, [doubled]).code == "echo_mismatch"
    stripped = EN.replace(" ", "")
    assert classify_echo(EN, stripped, [stripped]).code == "echo_mismatch"


def test_piece_boundaries_allow_for_the_normalisation() -> None:
    """Boundaries are counted in the compared text: a leading newline piece and a pair of
    quotes shift them."""
    pieces = ["\n", '"', *(p.strip() for p in EN_PIECES), '"']
    assert classify_echo(EN, "".join(pieces), pieces).code == "stripped_deltas"


def test_boundaries_are_shifted_not_mirrored() -> None:
    """With a leading newline piece, the compared text starts one character in: a gap at its
    offset 1 is inside the piece ``"ab"``, not at a boundary."""
    assert classify_echo("a b", "\nab", ["\n", "ab"]).code == "echo_mismatch"
    assert classify_echo("a b", "\nab", ["\n", "a", "b"]).code == "stripped_deltas"


def test_overlap_in_a_run_of_equal_characters() -> None:
    """Which copy of a doubled character is the extra one cannot be told: a piece starting
    anywhere in the run counts."""
    pieces = ["xa", "aab"]  # "xa" + "ab" with a one-character overlap
    assert classify_echo("xaab", "xaaab", pieces).code == "overlapping_deltas"
    assert classify_echo("xaab", "xaaab", ["xaaab"]).code == "echo_mismatch"


def test_dropped_characters_must_be_multi_byte() -> None:
    """Missing ASCII characters are not split UTF-8."""
    assert classify_echo(EN, "The quick bown fox.").code == "echo_mismatch"


def test_dropped_characters_not_only_at_the_end() -> None:
    """Only the end missing is a cut-off answer, not dropped characters."""
    verdict = classify_echo(ZH_TEXT, ZH_TEXT[:5])
    assert verdict.code == "echo_mismatch" and "breaks off after 5" in verdict.message
    assert classify_echo(ZH_TEXT, ZH_TEXT[1:5]).code == "split_chars_dropped"


def test_stripped_needs_only_whitespace_missing() -> None:
    """Missing whitespace and a missing letter are not stripped deltas."""
    assert classify_echo(EN, "Thequick brown fox").code == "echo_mismatch"


def test_deletions() -> None:
    """Where characters are missing, matched greedily; ``None`` when not a subsequence."""
    assert D.deletions("abc", "ac") == [(1, "b")]
    assert D.deletions("abc", "ab") == [(2, "c")]
    assert D.deletions("abcd", "ad") == [(1, "bc")]
    assert D.deletions("abc", "abc") == []
    assert D.deletions("abc", "") == [(0, "abc")]
    assert D.deletions("abc", "abd") is None
    assert D.deletions("abc", "ba") is None


def test_stutters() -> None:
    """Characters repeating the one before them that the expected text lacks."""
    assert D.stutters("abc", "abbc") == [2]
    assert D.stutters("abc", "aabcc") == [1, 4]
    assert D.stutters("abc", "abc") == []
    assert D.stutters("abc", "abx") is None
    assert D.stutters("abc", "ab") is None
    assert D.stutters("abc", "xabc") is None


def test_byte_length_diffing() -> None:
    """Only pieces that byte-length diffing of growing snapshots of the text gives."""
    assert D.byte_length_diffing(ZH_TEXT, byte_length_diffed(ZH_PIECES))
    assert D.byte_length_diffing(
        ZH_TEXT, byte_length_diffed(["我", "们", "在北京的咖啡馆里讨论量子计算。"])
    )
    assert not D.byte_length_diffing(ZH_TEXT, ZH_PIECES)  # correct deltas
    assert not D.byte_length_diffing(ZH_TEXT, ["我们在"])  # never reaches the whole text
    assert not D.byte_length_diffing(ZH_TEXT, ["我们在", "x"])
    assert not D.byte_length_diffing(EN, [EN])  # ASCII: byte and character counts agree
    mixed = "ab中cd"
    assert D.byte_length_diffing(mixed, byte_length_diffed(["ab中", "c", "d"]))


# -- re-sent pieces against the expected text ---------------------------------------------------


def test_resent_last_piece() -> None:
    """The last piece flushed twice: flagged at its index, only against the expected text."""
    pieces = [*EN_PIECES, "x."]
    got = find_duplicated_deltas(pieces, expected=EN)
    assert got is not None and (got.kind, got.index, got.piece) == ("resent_piece", 7, "x.")
    assert got.message() == (
        "streamed piece #7 is the piece before it sent again (without it the text is what the "
        "probe asked for): 'x.'"
    )
    assert find_duplicated_deltas(pieces) is None


def test_resent_piece_in_the_middle_and_with_empty_pieces() -> None:
    """Any identical neighbour counts; empty pieces in between are ignored."""
    pieces = ["The", "", " qu", " qu", "ick", " br", "own", " fo", "x."]
    got = find_duplicated_deltas(pieces, expected=EN)
    assert got is not None and (got.kind, got.index) == ("resent_piece", 2)


def test_repeats_the_expected_text_has_are_not_resent() -> None:
    """A doubling the text asked for holds is not a re-send; nor is a repeat whose removal
    does not give the expected text; the expected text itself is never flagged."""
    assert find_duplicated_deltas(["ha", "ha", "!"], expected="haha!") is None
    assert find_duplicated_deltas(["ab", "ab", "c"], expected="xyz") is None
    assert find_duplicated_deltas(EN_PIECES, expected=EN) is None
    assert find_duplicated_deltas([*EN_PIECES, "\n"], expected=EN) is None


def test_resent_piece_uses_the_normalisation() -> None:
    """The joined pieces are compared as the echo is (a trailing newline does not matter)."""
    pieces = [*EN_PIECES, "x.", "\n"]
    got = find_duplicated_deltas(pieces, expected=EN)
    assert got is not None and got.kind == "resent_piece"


# -- re-sent JSON fragments ----------------------------------------------------------------------


def test_cumulative_argument_fragments() -> None:
    """Snapshots of the arguments: flagged at the last fragment."""
    args = '{"city": "Paris"}'
    snaps = [args[:n] for n in (5, 10, 15, len(args))]
    got = D.resent_fragments(["", *snaps])
    assert got is not None and (got.kind, got.index, got.piece) == ("cumulative_snapshot", 3, args)


def test_whole_arguments_resent_at_the_end() -> None:
    """Proper fragments, then the whole text again."""
    got = D.resent_fragments(['{"city"', ': "Paris"}', '{"city": "Paris"}'])
    assert got is not None and got.kind == "accumulated_resent"
    cut = D.resent_fragments(['{"c', '{"ci', '{"cit'])  # snapshots of a call cut short
    assert cut is not None and (cut.kind, cut.index) == ("cumulative_snapshot", 2)


@pytest.mark.parametrize(
    "fragments",
    [
        ['{"city"', ': "Paris"}'],  # fine
        ['{"city": "Paris"}'],  # one fragment
        ["{city: ", "Paris}"],  # not JSON, not re-sent
        ['{"a', 'b"}'],  # not JSON, no repeat
        [],
    ],
)
def test_fragments_that_are_not_resent(fragments: list[str]) -> None:
    """Valid arguments, single fragments and other broken JSON are not re-sent fragments."""
    assert D.resent_fragments(fragments) is None


def test_assembly_keeps_the_fragments() -> None:
    """Each call keeps its argument fragments in order."""
    first = {"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}
    more = [{"tool_calls": [{"index": 0, "function": {"arguments": a}}]} for a in ("{", "}")]
    calls, _ = D.assemble_tool_call_deltas([{"tool_calls": [first]}, *more])
    assert calls[0].fragments == ["", "{", "}"] and calls[0].arguments == "{}"


# -- error payloads ------------------------------------------------------------------------------

ERROR_CASES: dict[str, dict[str, Any]] = {
    "error_object": {"error": {"message": "upstream died", "type": "server_error"}},
    "qwen_envelope": {"success": False, "data": {"code": "RateLimited", "details": "limit"}},
    "code_message": {"code": "Throttling", "message": "Requests throttled", "request_id": "r"},
    "detail": {"detail": "Not Found"},
}


def test_every_error_shape_has_a_case() -> None:
    """The cases below cover :data:`ERROR_SHAPES`, in order."""
    assert [s.code for s in D.ERROR_SHAPES] == list(ERROR_CASES)


@pytest.mark.parametrize("code", list(ERROR_CASES))
def test_each_error_shape(code: str) -> None:
    """Each shape is recognised, and named for the report."""
    shape = D.error_payload(ERROR_CASES[code])
    assert shape is not None and shape.code == code and shape.what


def test_code_with_msg_is_an_error() -> None:
    """``msg`` counts like ``message`` next to ``code``."""
    shape = D.error_payload({"code": 429, "msg": "slow down"})
    assert shape is not None and shape.code == "code_message"


@pytest.mark.parametrize(
    "obj",
    [
        {"choices": [], "error": {"message": "x"}},  # a chunk is never an error
        {"choices": [], "usage": {}},
        {"id": "c", "object": "chat.completion.chunk"},
        {"success": True, "data": {}},
        {"code": "x"},
        {"message": "x"},
        "error",
        None,
    ],
)
def test_not_error_payloads(obj: Any) -> None:
    """Chunks, successes and other objects are not error payloads."""
    assert D.error_payload(obj) is None


def test_error_object_wins() -> None:
    """An object with ``error`` is OpenAI's shape whatever else it holds."""
    shape = D.error_payload({"error": {"message": "x"}, "success": False})
    assert shape is not None and shape.code == "error_object"


# -- bare URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("trailer", list(D._URL_TRAILER))
def test_each_url_trailer_is_left_out(trailer: str) -> None:
    """Punctuation after a bare URL is not part of it."""
    got = classify_image_answer(f"See https://c.example/a.png{trailer} ok")
    assert got.urls == ("https://c.example/a.png",)


@pytest.mark.parametrize("end", ["[1]", "(x)", "<br>", '"', "'", "`", " ", "]"])
def test_bare_url_ends_at(end: str) -> None:
    """Brackets (a footnote marker), parentheses, angle brackets, quotes and spaces end a bare
    URL."""
    got = classify_image_answer(f"Here: https://c.example/a.png{end}\n\n[1]: note")
    assert got.urls == ("https://c.example/a.png",)


def test_ipv6_hosts_and_malformed_urls() -> None:
    """A bracketed IPv6 host is part of the URL; a malformed Markdown target is kept as written
    (the download reports it)."""
    assert classify_image_answer("http://[::1]:8000/a.png").urls == ("http://[::1]:8000/a.png",)
    assert classify_image_answer("![x](http://[::1]:8/a.png)").urls == ("http://[::1]:8/a.png",)
    assert classify_image_answer("![x](http://[bad/a.png)").urls == ("http://[bad/a.png",)


# -- sharper checks of the new rules (mutation testing) ------------------------------------------


def test_excerpts_keep_sixty_characters() -> None:
    """Quoted text is kept whole up to 60 characters, else cut to 59 and an ellipsis."""
    assert D._excerpt("a" * 60) == repr("a" * 60)
    assert D._excerpt("a" * 61) == repr("a" * 59 + "…")
    long = "z" * 80
    assert classify_echo(EN, long).message.endswith(f"got {'z' * 59 + '…'!r}")


def test_difference_at_the_first_character() -> None:
    """Answers that differ from the start are located at character 0."""
    message = classify_echo("abc", "xbc").message
    assert (
        message
        == "the answer differs from the sentence from character 0 on: expected 'abc', got 'xbc'"
    )


def test_two_empty_think_blocks_are_empty() -> None:
    """Several blocks, all empty, are still called empty."""
    verdict = classify_echo(EN, f"<think></think><think>\n</think>{EN}")
    assert verdict.message.startswith("the answer holds an empty <think></think> block")


@pytest.mark.parametrize(
    ("got", "i", "cuts", "found"),
    [
        ("xaa", 2, {2}, True),
        ("xaa", 2, {1}, False),  # a piece starting at the run's first copy overlaps nothing
        ("aa", 1, {1}, True),
        ("aa", 1, {0}, False),  # the run starts the text: nothing before it
        ("xaaa", 3, {2}, True),
    ],
)
def test_run_has_cut(got: str, i: int, cuts: set[int], found: bool) -> None:
    """A piece must start after the first copy of the doubled character, within its run."""
    assert D._run_has_cut(got, i, frozenset(cuts)) is found


def test_dropped_characters_in_one_place() -> None:
    """One run of multi-byte characters missing inside the text counts too."""
    verdict = classify_echo(ZH_TEXT, ZH_TEXT.replace("北京", ""))
    assert verdict.code == "split_chars_dropped"
    assert verdict.message == (
        "2 multi-byte character(s) are missing ('北京'): UTF-8 split across network chunks was "
        "decoded piece by piece with errors ignored (errors='ignore'), so every character cut "
        "in two was dropped"
    )


def test_stripped_message_not_streamed() -> None:
    """Not streamed, the message makes no claim about piece boundaries."""
    verdict = classify_echo(EN, "Thequick brownfox.")
    assert verdict.message == (
        "2 whitespace character(s) are missing ('Thequick brownfox.'): the proxy strips each "
        "delta (or piece of text) before sending it on"
    )


def test_byte_length_diffing_snapshots_only_grow() -> None:
    """Snapshots never shrink: the whole text re-sent after an empty piece is not byte-length
    diffing."""
    assert not D.byte_length_diffing("中ab", ["中", "", "中ab"])


def test_resent_piece_edge_cases() -> None:
    """The first piece has no piece before it; two pieces are enough."""
    assert find_duplicated_deltas(["ab", "c", "ab"], expected="cab") is None
    got = find_duplicated_deltas(["ab", "ab"], expected="ab")
    assert got is not None and (got.kind, got.index) == ("resent_piece", 1)


def test_fragments_joining_to_json_are_never_resent() -> None:
    """Arguments that parse are fine, whatever repeats inside them."""
    assert D.resent_fragments(['{"k": "', "abcdefgh", "abcdefgh", '"}']) is None
    assert D.resent_fragments(['{"a": [', "12345678, ", "12345678, ", "0]}"]) is None


def test_two_cumulative_fragments() -> None:
    """Two fragments, the second the whole arguments starting with the first, are snapshots."""
    got = D.resent_fragments(['{"a"', '{"a": 1}'])
    assert got is not None and (got.kind, got.index) == ("cumulative_snapshot", 1)


def test_stutter_needs_a_character_before() -> None:
    """The first character cannot repeat the one before it (there is none)."""
    assert D.stutters("ab", "bab") is None
