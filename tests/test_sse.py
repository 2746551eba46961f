"""The incremental SSE decoder: framing, line endings, UTF-8 across chunk boundaries."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.qwen.sse import SSEDecoder, SSEEvent


def decode_all(chunks: list[bytes]) -> list[SSEEvent]:
    dec = SSEDecoder()
    out: list[SSEEvent] = []
    for c in chunks:
        out.extend(dec.feed(c))
    out.extend(dec.close())
    return out


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for p in points:
        pieces.append(data[start:p])
        start = p
    pieces.append(data[start:])
    return pieces


STREAM = (
    'data: {"response.created":{"chat_id":"c"}} \n\n'
    ": keep-alive comment\n\n"
    'data: {"choices":[{"delta":{"content":"你好😊","phase":"answer"}}]}\n\n'
    "event: custom\nid: 7\ndata: line one\ndata: line two\n\n"
    "data:no-space\n\n"
).encode()


def test_whole_stream_in_one_chunk() -> None:
    """A complete stream fed at once yields every event with data, name and id."""
    events = decode_all([STREAM])
    assert [e.data for e in events] == [
        '{"response.created":{"chat_id":"c"}} ',
        '{"choices":[{"delta":{"content":"你好😊","phase":"answer"}}]}',
        "line one\nline two",
        "no-space",
    ]
    assert events[2].event == "custom" and events[2].id == "7"


def test_bytewise_feeding_keeps_multibyte_characters() -> None:
    """Feeding one byte at a time splits every UTF-8 character yet decodes it intact."""
    events = decode_all([STREAM[i : i + 1] for i in range(len(STREAM))])
    assert events == decode_all([STREAM])
    assert "\ufffd" not in "".join(e.data for e in events)


def test_events_wait_for_the_blank_line() -> None:
    """An event is not dispatched before its terminating blank line arrives."""
    dec = SSEDecoder()
    assert dec.feed(b'data: {"a":') == []
    assert dec.feed(b" 1}\n") == []
    assert dec.feed(b"\n") == [SSEEvent('{"a": 1}')]


def test_crlf_and_cr_line_endings() -> None:
    """CRLF and lone CR end lines as LF does, also when CR and LF arrive in separate chunks."""
    crlf = b"data: a\r\n\r\ndata: b\r\rdata: c\n\n"
    assert [e.data for e in decode_all([crlf])] == ["a", "b", "c"]
    assert [e.data for e in decode_all([b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"])] == ["a", "b"]


def test_close_flushes_an_unterminated_event() -> None:
    """An event missing its blank line at EOF is still delivered by close()."""
    dec = SSEDecoder()
    assert dec.feed(b"data: last") == []
    assert dec.close() == [SSEEvent("last")]


def test_invalid_utf8_is_replaced_and_counted() -> None:
    """A line with invalid UTF-8 does not raise: it is decoded with U+FFFD and counted."""
    dec = SSEDecoder()
    events = dec.feed(b"data: \xff\xfe ok\n\n")
    assert events == [SSEEvent("\ufffd\ufffd ok")]
    assert dec.invalid_lines == 1


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    """However the byte stream is cut into chunks, the decoded events are identical."""
    assert decode_all(split_at(STREAM, cuts)) == decode_all([STREAM])


_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=20,
)


@given(
    st.lists(_TEXT, min_size=1, max_size=8),
    st.lists(st.integers(min_value=0, max_value=1000), max_size=20),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
def test_arbitrary_text_round_trips(texts: list[str], cuts: list[int], eol: bytes) -> None:
    """Any text (any script, any line ending, any chunking) comes out exactly as it went in."""
    raw = b"".join(b"data: " + t.encode() + eol + eol for t in texts)
    assert [e.data for e in decode_all(split_at(raw, cuts))] == [t for t in texts if t]


def test_held_counts_an_unfinished_event_and_drops_to_zero_once_it_ends() -> None:
    """``held`` is what a stream that never finishes an event would grow: the bytes waiting
    for a line end (the fast path keeps whole unfinished events there) and the data lines
    taken so far (the general path)."""
    dec = SSEDecoder()
    assert dec.feed_data(b'data: {"a": 1}\n\ndata: 12345') == ['{"a": 1}']
    assert dec.held == len(b"data: 12345")
    assert dec.feed_data(b"6789") == [] and dec.held == len(b"data: 123456789")
    assert dec.feed_data(b"\n\n") == ["123456789"] and dec.held == 0
    assert dec.feed(b"data: abc\r\ndata: de\r\n") == []  # two data lines, no blank line yet
    assert dec.held == len("abc") + len("de")
    assert dec.feed(b"event: x\r\nid: 7\r\ndata: f\r\n") == [] and dec.held == 6
    assert [e.data for e in dec.feed(b"\r\n")] == ["abc\nde\nf"]
    assert dec.held == 0
    assert dec.feed(b"data:xy\n") == [] and dec.held == 2  # the general field form too
