"""Stop sequences and the output-token limit (proxy/stop.py), unit, property and end to end."""

from __future__ import annotations

from typing import Any

from helpers import SCENARIO, ServerFactory, start_stack
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import UpstreamTruncatedError
from proxy.qwen.translate import Failure, Finish, OutEvent, Text, Usage
from proxy.stop import StopStage


def _run(text: str, cuts: list[int], stops: tuple[str, ...]) -> tuple[str, Any]:
    stage = StopStage(stops)
    out: list[OutEvent] = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(text)]:
        if cut > prev:
            out += stage.feed([Text("content", text[prev:cut])], None)
            prev = cut
    out += stage.feed([Finish()], None)
    finishes = [e for e in out if isinstance(e, Finish)]
    assert len(finishes) == 1
    return "".join(e.text for e in out if isinstance(e, Text)), finishes[0]


def test_cut_before_the_first_stop_sequence() -> None:
    text, finish = _run("one, two. three END four", [3, 14, 21], ("END", "."))
    assert text == "one, two" and finish == Finish("stop", stop_sequence=".")


def test_no_stop_sequence_passes_everything() -> None:
    text, finish = _run("abc<E", [1, 4], ("END",))
    assert text == "abc<E" and finish == Finish("stop")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abENDxy", max_size=40), st.data())
def test_same_cut_on_any_rechunking(text: str, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=10))
    stops = ("END", "ab")
    got = _run(text, cuts, stops)
    assert got == _run(text, [], stops)
    positions = [text.find(s) for s in stops if s in text]
    expected = text[: min(positions)] if positions else text
    assert got[0] == expected


def test_reasoning_is_never_cut_and_a_failure_flushes_held_text() -> None:
    stage = StopStage(("STOP",))
    fail = Failure(UpstreamTruncatedError("cut"))
    out = stage.feed([Text("reasoning", "STOP"), Text("content", "x ST"), fail], None)
    assert out == [Text("reasoning", "STOP"), Text("content", "x "), Text("content", "ST"), fail]


def test_token_limit_ends_with_length() -> None:
    stage = StopStage(max_output_tokens=3)
    assert stage.feed([Text("content", "a")], Usage(1, 2)) == [Text("content", "a")]
    assert stage.feed([Text("content", "b")], Usage(1, 3)) == [
        Text("content", "b"),
        Finish("length"),
    ]
    assert stage.done and stage.feed([Text("content", "c")], Usage(1, 4)) == []


async def test_openai_stop_and_max_tokens_end_to_end(aiohttp_server: ServerFactory) -> None:
    sc = SCENARIO["t2t_answer"]  # "Hello! It's nice to meet you."
    stack = await start_stack(aiohttp_server)
    async with stack.async_client() as client:
        done = await client.chat.completions.create(
            model=sc.openai_model, messages=[{"role": "user", "content": sc.prompt}], stop="nice"
        )
        assert done.choices[0].message.content == "Hello! It's "
        assert done.choices[0].finish_reason == "stop"
        stream = await client.chat.completions.create(
            model=sc.openai_model,
            messages=[{"role": "user", "content": sc.prompt}],
            stream=True,
            max_tokens=2,
        )
        content, finish = "", None
        async for chunk in stream:
            content += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "length"
    assert content and sc.expected_content and sc.expected_content.startswith(content)
    assert content != sc.expected_content
