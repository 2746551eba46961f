"""Each rule of the SSE decoder on its own: line endings (LF, CRLF, CR alone, a
CRLF split across chunks), fields, comments, dispatch, UTF-8 handling, end of stream."""

from __future__ import annotations

import pytest

from proxy.qwen.sse import SSEDecoder, SSEEvent


def _run(chunks: list[bytes], *, close: bool = True) -> list[SSEEvent]:
    d = SSEDecoder()
    out: list[SSEEvent] = []
    for c in chunks:
        out.extend(d.feed(c))
    if close:
        out.extend(d.close())
    return out


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_each_line_ending(eol: bytes) -> None:
    """LF, CRLF and CR alone each end lines; two in a row dispatch (without close)."""
    body = b"data: a" + eol + b"data: b" + eol + eol + b"data: c" + eol + eol
    events = _run([body], close=False)
    assert events == [SSEEvent("a\nb"), SSEEvent("c")]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_each_line_ending_byte_by_byte(eol: bytes) -> None:
    """Fed one byte at a time, every line ending gives the same events (no doubled blank line
    from a CRLF split between chunks)."""
    body = b"data: a" + eol + b"data: b" + eol + eol + b"data: c" + eol + eol
    events = _run([body[i : i + 1] for i in range(len(body))], close=False)
    assert events == [SSEEvent("a\nb"), SSEEvent("c")]


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    """ "\\r" ending one chunk and "\\n" starting the next are one line end, not two: the event
    is not dispatched early, and its second data line is kept."""
    d = SSEDecoder()
    assert d.feed(b"data: a\r") == []
    assert d.feed(b"\ndata: b\r") == []
    assert d.feed(b"\n\r") == [SSEEvent("a\nb")]
    assert d.feed(b"\n") == []  # the "\n" of the last CRLF: no empty event, nothing else


def test_cr_at_chunk_end_then_other_byte() -> None:
    """A chunk ending in "\\r" followed by a chunk not starting with "\\n": the "\\r" alone was
    the line end and the next byte starts a new line."""
    d = SSEDecoder()
    assert d.feed(b"data: a\r") == []
    assert d.feed(b"\r") == [SSEEvent("a")]
    assert d.feed(b"data: z\n\n") == [SSEEvent("z")]


def test_cr_inside_one_chunk_before_lf_is_one_line_end() -> None:
    """ "\\r\\n" inside one chunk ends one line."""
    assert _run([b"data: x\r\ndata: y\r\n\r\n"], close=False) == [SSEEvent("x\ny")]


def test_mixed_line_endings() -> None:
    """LF and CR lines mixed in one chunk."""
    assert _run([b"data: 1\rdata: 2\n\rdata: 3\r\n\n"], close=False) == [
        SSEEvent("1\n2"),
        SSEEvent("3"),
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"data: v", SSEEvent("v")),
        (b"data:v", SSEEvent("v")),
        (b"data:  v", SSEEvent(" v")),
        (b"data", None),  # a field with no value: empty data, not dispatched
        (b"data:", None),
        (b": comment", None),
        (b":", None),
        (b"retry: 10", None),
        (b"unknown: x", None),
    ],
)
def test_field_parsing(line: bytes, expected: SSEEvent | None) -> None:
    """Each field form: space after the colon removed once; comments and other fields ignored;
    an event whose data is empty is not dispatched."""
    events = _run([line + b"\n\n"], close=False)
    assert events == ([expected] if expected else [])


def test_event_and_id_fields() -> None:
    """``event`` names the next event only; ``id`` persists; an id with NUL is ignored."""
    body = b"event: e1\nid: 7\ndata: a\n\ndata: b\n\nid: x\0y\ndata: c\n\n"
    assert _run([body], close=False) == [
        SSEEvent("a", "e1", "7"),
        SSEEvent("b", None, "7"),
        SSEEvent("c", None, "7"),
    ]


def test_event_field_without_data_dispatches_nothing_and_resets() -> None:
    """A blank line after only ``event:`` dispatches nothing and forgets the name."""
    assert _run([b"event: e\n\ndata: a\n\n"], close=False) == [SSEEvent("a")]


def test_comment_does_not_dispatch_or_join() -> None:
    """A comment line between data lines neither dispatches nor adds a line."""
    assert _run([b"data: a\n: keep-alive\ndata: b\n\n"], close=False) == [SSEEvent("a\nb")]


def test_utf8_split_inside_a_character() -> None:
    """A character split across chunks is decoded whole."""
    raw = "data: 你好\n\n".encode()
    cut = raw.index("你".encode()) + 1
    assert _run([raw[:cut], raw[cut:]], close=False) == [SSEEvent("你好")]


def test_invalid_utf8_is_replaced_and_counted() -> None:
    """An invalid byte becomes U+FFFD; the line is counted; valid lines are not."""
    d = SSEDecoder()
    events = d.feed(b"data: a\xffb\n\ndata: ok\n\n")
    assert events == [SSEEvent("a\ufffdb"), SSEEvent("ok")]
    assert d.invalid_lines == 1


def test_close_flushes_a_last_line_and_event() -> None:
    """At EOF a last line without terminator is taken, and the event dispatched."""
    d = SSEDecoder()
    assert d.feed(b"data: a\ndata: b") == []
    assert d.close() == [SSEEvent("a\nb")]
    assert d.close() == []


def test_close_with_only_a_complete_unterminated_event() -> None:
    """An event with its data line ended but no blank line is dispatched by close."""
    d = SSEDecoder()
    assert d.feed(b"data: a\n") == []
    assert d.close() == [SSEEvent("a")]


def test_close_of_nothing() -> None:
    """Closing an empty decoder, or one holding a comment, gives nothing."""
    assert SSEDecoder().close() == []
    d = SSEDecoder()
    d.feed(b": hi")
    assert d.close() == []


def test_empty_chunks_are_ignored() -> None:
    """``feed(b"")`` returns nothing and does not disturb a pending CR."""
    d = SSEDecoder()
    assert d.feed(b"") == []
    assert d.feed(b"data: a\r") == []
    assert d.feed(b"") == []
    assert d.feed(b"\n\n") == [SSEEvent("a")]


def test_lf_fast_path_keeps_the_partial_line() -> None:
    """Without CR, a partial line after the last LF waits for the next chunk."""
    d = SSEDecoder()
    assert d.feed(b"data: a\n\ndata: par") == [SSEEvent("a")]
    assert d.feed(b"tial\n\n") == [SSEEvent("partial")]


# -- sharper checks (mutation testing) ---------------------------------------------------------


def test_invalid_lines_are_counted_each() -> None:
    """Every invalid line counts."""
    d = SSEDecoder()
    d.feed(b"data: \xff\n\ndata: \xfe\n\nevent: \xfd\ndata: ok\n\n")
    assert d.invalid_lines == 3


def test_value_keeps_later_colons() -> None:
    """Only the first colon separates field and value (also without the space)."""
    assert _run([b"data:a:b\nevent:e:f\n\n"], close=False) == [SSEEvent("a:b", "e:f")]
    assert _run([b"data::x\n\n"], close=False) == [SSEEvent(":x")]


def test_crlf_at_the_very_end_of_a_chunk() -> None:
    """A chunk ending in a complete CRLF: one line end, no early dispatch."""
    d = SSEDecoder()
    assert d.feed(b"data: a\r\n") == []
    assert d.feed(b"data: b\r\n\r\n") == [SSEEvent("a\nb")]


def test_pending_cr_is_used_once() -> None:
    """After a CR ending a chunk, only the very next LF is swallowed; a later LF is a line
    end of its own."""
    d = SSEDecoder()
    assert d.feed(b"data: a\r") == []
    assert d.feed(b"\n") == []
    assert d.feed(b"\n") == [SSEEvent("a")]


@pytest.mark.parametrize("cut", range(12))
def test_a_leading_bom_is_dropped_wherever_the_chunks_cut_it(cut: int) -> None:
    """WHATWG: one U+FEFF at the start of the stream is not part of it, so the first line is
    a data line, not an unknown field (before, the first event was lost)."""
    body = b"\xef\xbb\xbfdata: a\n\ndata: b\n\n"
    assert _run([body[:cut], body[cut:]]) == [SSEEvent("a"), SSEEvent("b")]
    assert _run([body[i : i + 1] for i in range(len(body))]) == [SSEEvent("a"), SSEEvent("b")]


def test_only_one_bom_and_only_at_the_very_start_is_dropped() -> None:
    """A BOM after the first byte is text (or a field name's first character), as the spec
    reads it; a second leading BOM too."""
    assert _run([b"data: a\n\n\xef\xbb\xbfdata: b\n\n"]) == [SSEEvent("a")]
    assert _run([b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\n"]) == []
    assert _run([b"\xef\xbb\xbf", b"data: \xef\xbb\xbfx\n\n"]) == [SSEEvent("\ufeffx")]


def test_bytes_that_only_begin_like_a_bom_are_kept() -> None:
    """The first bytes of a BOM wait for the next chunk; when it is no BOM they are parsed."""
    d = SSEDecoder()
    assert d.feed(b"\xef\xbb") == []
    assert d.held == 2
    assert d.feed(b"x: y\ndata: a\n\n") == [SSEEvent("a")]
    assert d.invalid_lines == 1  # the line "\xef\xbbx: y" is not UTF-8: read with U+FFFD
    assert _run([b"\xef\xbb"]) == []  # a stream of those bytes alone: nothing, no error
