"""The translator's common answer frame (``Translator.feed``'s fast path) does everything the
general path does: it counts usage (both counts, whatever changes), counts the answer's
characters for later messages, honours the turn's response id, and emits the same events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.qwen.translate import Failure, Finish, Text, Translator, Usage

CREATED = '{"response.created":{"chat_id":"c1","parent_id":"p1","response_id":"r1"}}'


def frame(content: str, usage: Any = None, status: str = "typing", **top: Any) -> str:
    delta = {"role": "assistant", "content": content, "phase": "answer", "status": status}
    obj: dict[str, Any] = {"choices": [{"delta": delta}], **top}
    if usage is not None:
        obj["usage"] = usage
    return json.dumps(obj)


def tokens(p: Any, c: Any) -> dict[str, Any]:
    return {"input_tokens": p, "output_tokens": c}


def test_usage_is_counted_on_every_common_frame() -> None:
    tr = Translator()
    tr.feed(CREATED)
    for i in range(1, 4):
        assert tr.feed(frame(f"w{i}", tokens(33, i))) == [Text("content", f"w{i}")]
        assert tr.usage == Usage(33, i)


def test_a_change_of_either_count_is_taken() -> None:
    tr = Translator()
    tr.feed(CREATED)
    tr.feed(frame("a", tokens(20, 5)))
    tr.feed(frame("b", tokens(21, 5)))  # only the prompt count changed
    assert tr.usage == Usage(21, 5)
    tr.feed(frame("c", tokens(21, 6)))
    assert tr.usage == Usage(21, 6)


@pytest.mark.parametrize(
    ("p", "c"),
    [("5", 3), (5, "3"), (-1, 3), (5, -2), (None, 3), (5.0, 3), ([], {})],
)
def test_counts_that_are_not_natural_numbers_are_no_counts(p: Any, c: Any) -> None:
    tr = Translator()
    tr.feed(CREATED)
    assert tr.feed(frame("x", tokens(p, c))) == [Text("content", "x")]
    want_p = p if type(p) is int and p >= 0 else 0
    want_c = c if type(c) is int and c >= 0 else 0
    assert tr.usage == (Usage(want_p, want_c) if want_p or want_c else None)


def test_the_answer_length_in_a_truncation_counts_every_common_frame() -> None:
    tr = Translator()
    tr.feed(CREATED)
    for piece in ("abc", "de", "f"):
        tr.feed(frame(piece, tokens(1, 1)))
    [failure] = tr.close()
    assert isinstance(failure, Failure)
    assert "after 6 characters" in failure.error.message
    assert tr.answered


def test_frames_with_the_turns_response_id_give_the_same_events() -> None:
    plain, with_id = Translator(), Translator()
    plain.feed(CREATED)
    with_id.feed(CREATED)
    a, b = [], []
    for piece in ("Hello", ", ", "world"):
        a += plain.feed(frame(piece, tokens(2, 1)))
        b += with_id.feed(frame(piece, tokens(2, 1), response_id="r1"))
    a += plain.feed(frame("", status="finished"))
    b += with_id.feed(frame("", status="finished", response_id="r1"))
    assert a == b
    assert isinstance(a[-1], Finish)
    assert "".join(e.text for e in a if isinstance(e, Text)) == "Hello, world"


def test_a_frame_of_another_response_is_not_this_answer() -> None:
    tr = Translator()
    tr.feed(CREATED)
    assert tr.feed(frame("mine", response_id="r1")) == [Text("content", "mine")]
    assert tr.feed(frame("theirs", response_id="r2")) == []
    assert tr.foreign_frames == 1
    assert tr.feed(frame(" again", response_id="r1")) == [Text("content", " again")]
