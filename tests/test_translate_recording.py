"""The translator's recording of an answer (``on_answer``, native multi-turn): the content text
the client got, from every path that emits it (the common frame with and without a response
id, the general path, the end of stream), and its tool calls; called once, when the answer
finished, and never for a failed one."""

from __future__ import annotations

import json
from typing import Any

from proxy.qwen.translate import Finish, Text, Translator


def frame(content: str, phase: str = "answer", status: str = "typing", **top: Any) -> str:
    delta = {"role": "assistant", "content": content, "phase": phase, "status": status}
    return json.dumps({"choices": [{"delta": delta}], **top})


CREATED = '{"response.created":{"chat_id":"c1","parent_id":"p1","response_id":"r1"}}'
THOUGHT_THEN_YES = [
    CREATED,
    frame("hmm", phase="think"),
    frame("", "think", "finished"),
    frame("Yes"),
    frame("", status="finished"),
]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Translator, str, tuple[Any, ...]]] = []

    def __call__(self, tr: Translator, text: str, tool_calls: tuple[Any, ...]) -> None:
        self.calls.append((tr, text, tool_calls))


def feed_all(tr: Translator, frames: list[str]) -> list[Any]:
    out: list[Any] = []
    for f in frames:
        out.extend(tr.feed(f))
    return out


def test_the_answer_is_recorded_once_when_it_finishes() -> None:
    rec = Recorder()
    tr = Translator(on_answer=rec)
    out = feed_all(
        tr,
        [
            CREATED,
            frame("Hello"),  # the common frame
            frame(", world", response_id="r1"),  # the common frame with a response id
            frame("", status="finished"),
        ],
    )
    assert [e for e in out if isinstance(e, Text)] == [
        Text("content", "Hello"),
        Text("content", ", world"),
    ]
    assert any(isinstance(e, Finish) for e in out)
    assert len(rec.calls) == 1
    got_tr, text, calls = rec.calls[0]
    assert got_tr is tr
    assert text == "Hello, world"
    assert calls == ()
    assert tr.feed(frame("late")) == []  # done: nothing more, and no second call
    assert len(rec.calls) == 1


def test_reasoning_is_not_recorded_but_think_tags_content_is() -> None:
    rec = Recorder()
    tr = Translator(on_answer=rec)  # reasoning as a field: not the content the client keeps
    feed_all(
        tr,
        THOUGHT_THEN_YES,
    )
    assert rec.calls[0][1] == "Yes"
    rec2 = Recorder()
    tr2 = Translator(reasoning="think_tags", on_answer=rec2)  # the tags are content then
    feed_all(
        tr2,
        THOUGHT_THEN_YES,
    )
    assert rec2.calls[0][1].startswith("<think>")
    assert rec2.calls[0][1].endswith("Yes")


def test_an_answer_that_ends_with_the_stream_is_recorded_at_close() -> None:
    rec = Recorder()
    tr = Translator(on_answer=rec)
    feed_all(tr, [CREATED, frame("Short."), '{"response.completed": {}}'])
    if not rec.calls:  # the end marker may finish it; else the clean EOF does
        tr.close()
    assert [t for _, t, _ in rec.calls] == ["Short."]


def test_an_answer_ended_by_done_is_recorded() -> None:
    """``[DONE]`` (an accepted end, §5.1) finishes the answer: it is recorded then (before, the
    Finish it gave went out unrecorded, and native multi-turn forgot the answer)."""
    rec = Recorder()
    tr = Translator(on_answer=rec)
    out = feed_all(tr, [CREATED, frame("Short."), "[DONE]"])
    assert isinstance(out[-1], Finish)
    assert [t for _, t, _ in rec.calls] == ["Short."]


def test_a_failed_answer_is_not_recorded() -> None:
    rec = Recorder()
    tr = Translator(on_answer=rec)
    feed_all(tr, [CREATED, frame("Half")])
    tr.close()  # ended before its finish: truncated
    assert rec.calls == []
    rec2 = Recorder()
    tr2 = Translator(on_answer=rec2)
    feed_all(tr2, [CREATED, frame("Half")])
    tr2.abort("the connection broke")
    assert rec2.calls == []


def test_native_tool_calls_are_recorded_with_the_answer() -> None:
    rec = Recorder()
    tr = Translator(native_tools=True, on_answer=rec)
    call = {
        "role": "assistant",
        "content": "",
        "phase": "local_tool",
        "status": "finished",
        "extra": {
            "local_mcp": {"★": [{"tool_name": "★-get_weather", "params": {"city": "Paris"}}]}
        },
    }
    feed_all(
        tr,
        [
            CREATED,
            frame("Let me check."),
            json.dumps({"choices": [{"delta": call}]}),
            frame("", status="finished"),
        ],
    )
    assert len(rec.calls) == 1
    _, text, calls = rec.calls[0]
    assert text == "Let me check."
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]


def test_without_on_answer_nothing_is_kept() -> None:
    tr = Translator()
    feed_all(tr, [CREATED, frame("Hi"), frame("", status="finished")])
    assert tr.done
