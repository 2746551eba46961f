"""``SSEDecoder.feed_data`` (the relay's fast path) gives exactly the ``data`` of the events
that ``feed`` gives, for any stream and any chunking: the fast path only takes whole
one-line ``data:`` events and hands everything else to the general WHATWG rules."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from proxy.qwen.sse import SSEDecoder

# Pieces of SSE streams, the usual and the unusual: data lines with and without the space,
# several data lines, comments, event/id/retry fields, every line end, blank lines, invalid
# UTF-8, multi-byte characters.
_LINES = st.sampled_from(
    [
        b'data: {"choices":[{"delta":{"content":"\xe4\xbd\xa0\xe5\xa5\xbd"}}]}',
        b"data: plain",
        b"data:nospace",
        b"data: ",
        b"data",
        b": keep-alive",
        b"event: message",
        b"id: 7",
        b"retry: 10",
        b"data: \xff\xfe broken",
        b"",
    ]
)
_EOL = st.sampled_from([b"\n", b"\n", b"\n", b"\r\n", b"\r"])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    out = b""
    for line, eol in draw(st.lists(st.tuples(_LINES, _EOL), max_size=25)):
        out += line + eol
    return out


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(streams(), st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
@example(b"data: a\ndata: b\n\n", [])
@example(b"data: a\r\n\r\ndata: b\n\n", [9])
@example(b"data: a\r\n\ndata: b\n\n", [9, 10])  # a partial event left by the general rules
def test_feed_data_equals_the_data_of_feed(stream: bytes, cuts: list[int]) -> None:
    chunks = _cut(stream, cuts)
    general, fast = SSEDecoder(), SSEDecoder()
    # chunk by chunk: each event comes out with the chunk that completes it, not later
    want = [[e.data for e in general.feed(c)] for c in chunks] + [[e.data for e in general.close()]]
    got = [fast.feed_data(c) for c in chunks] + [[e.data for e in fast.close()]]
    assert got == want


def test_usual_frames_take_the_fast_path_and_wait_for_their_blank_line() -> None:
    dec = SSEDecoder()
    assert dec.feed_data(b'data: {"a":1}\n\ndata: {"b"') == ['{"a":1}']
    assert dec.feed_data(b":2}\n") == []  # the event is not complete before its blank line
    assert dec.feed_data(b"\n") == ['{"b":2}']


def test_several_data_lines_in_one_event_are_joined() -> None:
    dec = SSEDecoder()
    assert dec.feed_data(b"data: a\ndata: b\n\ndata: c\n\n") == ["a\nb", "c"]
    assert dec.feed_data(b": note\ndata: d\n\nevent: x\ndata: e\n\n") == ["d", "e"]


def test_an_unfinished_multi_line_event_is_flushed_line_by_line_at_close() -> None:
    dec = SSEDecoder()
    assert dec.feed_data(b"data: a\ndata: b") == []
    assert [e.data for e in dec.close()] == ["a\nb"]


def test_invalid_utf8_goes_through_the_general_rules() -> None:
    dec = SSEDecoder()
    assert dec.feed_data(b"data: \xff ok\n\n") == ["\ufffd ok"]
    assert dec.invalid_lines == 1


@pytest.mark.parametrize(
    ("block", "want"),
    [
        (b": keep-alive", []),  # a comment
        (b"event: ping", []),  # a field without data
        (b"id: 7", []),
        (b"retry: 10", []),
        (b"data:nospace", ["nospace"]),  # data without the space
        (b"data: spaced", ["spaced"]),
    ],
)
def test_one_line_events_that_are_not_data_lines_follow_the_general_rules(
    block: bytes, want: list[str]
) -> None:
    assert SSEDecoder().feed_data(block + b"\n\n") == want


@pytest.mark.parametrize(
    ("chunk", "want"),
    [
        # the usual chunk, whole: every event one "data: " line (one with empty data: dropped)
        (b"data: a\n\ndata: \n\ndata: \xe4\xbd\xa0\n\n", ["a", "\u4f60"]),
        # the first event is not a "data: " line (no space after the colon)
        (b"data:a\n\ndata: b\n\n", ["a", "b"]),
        # a line end inside an event: two data lines, joined
        (b"data: a\ndata: b\n\ndata: c\n\n", ["a\nb", "c"]),
        # an event after the first that is not a data line (a comment, a field)
        (b"data: a\n\n: note\n\n", ["a"]),
        (b"data: a\n\nevent: x\n\n", ["a"]),
        # a blank line too many between two events
        (b"data: a\n\n\ndata: b\n\n", ["a", "b"]),
        # "data: " inside an event's text is text
        (b'data: {"t":"\\n\\ndata: "}\n\ndata: b\n\n', ['{"t":"\\n\\ndata: "}', "b"]),
        # bad UTF-8 in the second event: the first still comes out whole
        (b"data: a\n\ndata: \xff\n\n", ["a", "\ufffd"]),
    ],
)
def test_a_whole_chunk_of_events_gives_what_the_general_rules_give(
    chunk: bytes, want: list[str]
) -> None:
    assert SSEDecoder().feed_data(chunk) == want
    assert [e.data for e in SSEDecoder().feed(chunk)] == want


def _count_general_lines(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record every line that goes through the general WHATWG rules (``SSEDecoder._line``)."""
    seen: list[bytes] = []
    general = SSEDecoder._line

    def counting(self: SSEDecoder, raw: bytes, events: list[Any]) -> None:
        seen.append(raw)
        general(self, raw, events)

    monkeypatch.setattr(SSEDecoder, "_line", counting)
    return seen


def test_the_usual_chunk_never_reaches_the_general_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _count_general_lines(monkeypatch)
    chunk = b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: \xe4\xbd\xa0\n\n'
    assert SSEDecoder().feed_data(chunk) == ['{"a":1}', '{"b":2}', "\u4f60"]
    assert seen == []


def test_in_a_mixed_chunk_only_the_unusual_event_takes_the_general_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _count_general_lines(monkeypatch)
    chunk = b"data: a\n\n: keep-alive\n\ndata: b\n\n"
    assert SSEDecoder().feed_data(chunk) == ["a", "b"]
    assert seen == [b": keep-alive", b""]  # its line, then the blank line that ends it


@given(streams(), st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
@example(b"data: a\n\n", [1])
@example(b"data: a\n\n", [1, 2])
@example(b"data: a\n\n", [2, 3])
def test_a_leading_bom_is_not_part_of_the_stream(stream: bytes, cuts: list[int]) -> None:
    """One UTF-8 BOM before the stream (WHATWG), cut anywhere by the chunking, changes no
    event, through either reader."""
    chunks = _cut(b"\xef\xbb\xbf" + stream, cuts)
    without = SSEDecoder()
    want = without.feed(stream) + without.close()
    general, fast = SSEDecoder(), SSEDecoder()
    assert [e for c in chunks for e in general.feed(c)] + general.close() == want
    got = [d for c in chunks for d in fast.feed_data(c)] + [e.data for e in fast.close()]
    assert got == [e.data for e in want]


def test_a_bom_first_chunk_keeps_the_fast_path_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The BOM is dropped before parsing: the chunk it starts still takes the fast path."""
    seen = _count_general_lines(monkeypatch)
    dec = SSEDecoder()
    assert dec.feed_data(b'\xef\xbb\xbfdata: {"a":1}\n\n') == ['{"a":1}']
    assert dec.feed_data(b'data: {"b":2}\n\n') == ['{"b":2}']
    assert seen == []
