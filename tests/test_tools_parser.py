"""The tool-call parser and stage: pure, any chunking, no markup as content, checked calls."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.api_models import MAX_JSON_DEPTH
from proxy.conversation import Conversation, ToolChoice, ToolSpec, Turn
from proxy.errors import UpstreamTruncatedError
from proxy.qwen.translate import (
    Failure,
    Finish,
    NativeToolCall,
    OutEvent,
    Text,
    ToolCall,
    Translator,
)
from proxy.tools.parser import BadBlock, Block, ParsedCall, ToolCallParser, decode_block
from proxy.tools.stage import ToolStage

MARKUP = ("<tool_call>", "</tool_call>", "<function=", "</function>")

WEATHER = ToolSpec(
    "get_weather",
    "Weather",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
)
READ = ToolSpec("read_file", "", {"type": "object", "properties": {"path": {"type": "string"}}})
TOOLS = (WEATHER, READ)


def _conv(**kw: Any) -> Conversation:
    return Conversation("qwen3-max", [Turn("user", "hi")], tools=TOOLS, **kw)


def _ids() -> Iterator[str]:
    return (f"call_{i:024d}" for i in itertools.count())


def _run(answer: str, cuts: list[int], **kw: Any) -> list[OutEvent]:
    """Feed ``answer`` cut at ``cuts`` through a stage, then the finish."""
    stage = ToolStage(_conv(**kw), new_id=_ids().__next__)
    out: list[OutEvent] = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(answer)]:
        if cut > prev:
            out += stage.feed([Text("content", answer[prev:cut])])
            prev = cut
    out += stage.feed([Finish()])
    return out


def _summary(events: list[OutEvent]) -> tuple[str, list[tuple[int, str, str, str]], Any]:
    content = "".join(e.text for e in events if isinstance(e, Text))
    calls = [(e.index, e.id, e.name, e.arguments) for e in events if isinstance(e, ToolCall)]
    finish = [e.reason for e in events if isinstance(e, Finish)]
    return content, calls, finish


def _parse(text: str, cuts: list[int]) -> tuple[str, list[Block]]:
    p = ToolCallParser()
    out: list[str | Block] = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(text)]:
        if cut > prev:
            out += p.feed(text[prev:cut])
            prev = cut
    out += p.close()
    return "".join(x for x in out if isinstance(x, str)), [x for x in out if isinstance(x, Block)]


# -- examples ------------------------------------------------------------------------------------

PREFACE = (
    "Let me check.\n<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
)


def test_preface_then_call() -> None:
    content, calls, finish = _summary(_run(PREFACE, []))
    assert content == "Let me check."
    assert calls == [(0, "call_" + "0" * 24, "get_weather", '{"city": "Paris"}')]
    assert finish == ["tool_calls"]


@pytest.mark.parametrize("cut", range(1, len(PREFACE)))
def test_split_at_every_boundary(cut: int) -> None:
    """Markup split at every character boundary gives the same content and call."""
    assert _summary(_run(PREFACE, [cut])) == _summary(_run(PREFACE, []))


def test_parallel_calls_get_distinct_ids_and_indexes() -> None:
    answer = (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "A"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "read_file", "arguments": {"path": "b"}}\n</tool_call>'
    )
    _, calls, finish = _summary(_run(answer, []))
    assert [c[0] for c in calls] == [0, 1]
    assert len({c[1] for c in calls}) == 2
    assert [c[2] for c in calls] == ["get_weather", "read_file"]
    assert finish == ["tool_calls"]


def test_parallel_off_keeps_the_first_call() -> None:
    answer = (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "A"}}</tool_call>'
        '<tool_call>{"name": "get_weather", "arguments": {"city": "B"}}</tool_call>'
    )
    stage = ToolStage(_conv(parallel_tool_calls=False), new_id=_ids().__next__)
    out = stage.feed([Text("content", answer), Finish()])
    assert [json.loads(c[3]) for c in _summary(out)[1]] == [{"city": "A"}]
    assert [r.reason for r in stage.rejections] == ["not_allowed"]


def test_xml_form_with_schema_coercion() -> None:
    answer = (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>"
    )
    _, calls, _ = _summary(_run(answer, [5, 30, 60]))
    assert [(c[2], json.loads(c[3])) for c in calls] == [
        ("get_weather", {"city": "New York", "days": 3})
    ]


def test_bare_xml_function_without_wrapper() -> None:
    answer = "Sure.\n<function=read_file>\n<parameter=path>\na.py\n</parameter>\n</function>"
    content, calls, _ = _summary(_run(answer, [9]))
    assert content == "Sure."
    assert [(c[2], json.loads(c[3])) for c in calls] == [("read_file", {"path": "a.py"})]


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        ('<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>', "not valid JSON"),
        ('<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', "no tool named 'rm_rf'"),
        ('<tool_call>{"name": "get_weather", "arguments": {"days": 2}}</tool_call>', "city"),
        ('<tool_call>{"name": "get_weather", "arguments": {"city": "P', "unfinished"),
        # arguments too deep to encode again (the Anthropic and Responses answers decode and
        # re-encode them), or to decode at all (a RecursionError was not caught)
        pytest.param(
            '<tool_call>{"name": "read_file", "arguments": {"x": '
            + "[" * MAX_JSON_DEPTH  # under the arguments object: one level too many
            + "]" * MAX_JSON_DEPTH
            + "}}</tool_call>",
            f"nest more than {MAX_JSON_DEPTH} levels",
            id="arguments_nested_too_deep",
        ),
        pytest.param(
            '<tool_call>{"name": "read_file", "arguments": {"x": '
            + "[" * 20_000
            + "]" * 20_000
            + "}}</tool_call>",
            "not valid JSON",
            id="arguments_nested_past_the_recursion_limit",
        ),
    ],
)
def test_bad_blocks_become_a_note_never_a_call(answer: str, detail: str) -> None:
    content, calls, finish = _summary(_run(answer, []))
    assert calls == [] and finish == ["stop"]
    assert content.startswith("(tool call dropped by the proxy: ") and detail in content
    assert not any(m in content for m in MARKUP)


def test_unclosed_but_complete_block_is_a_call() -> None:
    """A model that stops before </tool_call> still made a complete call."""
    _, calls, _ = _summary(_run('<tool_call>\n{"name": "read_file", "arguments": {}}\n', []))
    assert [c[2] for c in calls] == ["read_file"]


def test_text_after_a_call_is_dropped_and_counted() -> None:
    stage = ToolStage(_conv(), new_id=_ids().__next__)
    stage.feed([Text("content", '<tool_call>{"name": "read_file"}</tool_call> and done.')])
    out = stage.feed([Finish()])
    assert stage.dropped_chars == len("and done.")
    assert isinstance(out[-1], Finish) and out[-1].reason == "tool_calls"


def test_named_choice_rejects_other_tools_and_names_are_canonicalised() -> None:
    stage = ToolStage(_conv(tool_choice=ToolChoice("named", "read_file")), new_id=_ids().__next__)
    out = stage.feed(
        [
            Text("content", '<tool_call>{"name": "get_weather", "arguments": {"city": "x"}}'),
            Text("content", '</tool_call><tool_call>{"name": "functions.Read_File"}</tool_call>'),
            Finish(),
        ]
    )
    assert [c[2] for c in _summary(out)[1]] == ["read_file"]
    assert [r.reason for r in stage.rejections] == ["not_allowed"]


def test_plain_text_with_angle_brackets_passes_untouched() -> None:
    text = "if a < b and b > c: print('<tool>') # <t"
    content, calls, finish = _summary(_run(text, [1, 5, len(text) - 1]))
    assert content == text and calls == [] and finish == ["stop"]


def test_reasoning_is_never_parsed() -> None:
    stage = ToolStage(_conv(), new_id=_ids().__next__)
    thought = Text("reasoning", '<tool_call>{"name": "read_file"}</tool_call>')
    out = stage.feed([thought, Text("content", "No call."), Finish()])
    assert out[0] == thought
    assert _summary(out)[1] == []


def test_failure_discards_an_open_block() -> None:
    stage = ToolStage(_conv(), new_id=_ids().__next__)
    out = stage.feed([Text("content", 'Hi <tool_call>{"name": "read_file"')])
    fail = Failure(UpstreamTruncatedError("cut"))
    out += stage.feed([fail])
    assert _summary(out)[0] == "Hi" and out[-1] == fail
    assert not any(isinstance(e, ToolCall) for e in out)


def test_native_local_tool_frame_becomes_the_same_call() -> None:
    """phase local_tool (docs/protocol.md §5.5) -> NativeToolCall -> the same checked ToolCall."""
    tr = Translator(native_tools=True)
    frame = {
        "choices": [
            {
                "delta": {
                    "phase": "local_tool",
                    "status": "finished",
                    "content": "",
                    "extra": {
                        "local_mcp": {
                            "★": [{"tool_name": "★-get_weather", "params": {"city": "Oslo"}}]
                        }
                    },
                }
            }
        ]
    }
    events = tr.feed(json.dumps(frame)) + tr.feed(json.dumps(frame))  # repeated: once
    assert events == [NativeToolCall("get_weather", {"city": "Oslo"})]
    events += tr.close()
    assert isinstance(events[-1], Finish)
    stage = ToolStage(_conv(), new_id=_ids().__next__)
    _, calls, finish = _summary(stage.feed(events))
    assert [(c[2], json.loads(c[3])) for c in calls] == [("get_weather", {"city": "Oslo"})]
    assert finish == ["tool_calls"]
    assert Translator().feed(json.dumps(frame)) == []  # off by default: ignored as before


def test_decode_block_shapes() -> None:
    assert decode_block(Block('```json\n{"name": "f", "parameters": {"a": 1}}\n```', True)) == [
        ParsedCall("f", {"a": 1})
    ]
    assert decode_block(Block('[{"name": "f"}, {"tool": "g", "args": {}}]', True)) == [
        ParsedCall("f", None),
        ParsedCall("g", {}),
    ]
    assert isinstance(decode_block(Block('{"arguments": {}}', True)), BadBlock)


# -- properties ----------------------------------------------------------------------------------

_TEXT = st.text(alphabet="ab <>/=_\n{}\"'`tolcfunpjs", max_size=30).filter(
    lambda s: not any(m in s for m in MARKUP)
)
_NAME = st.sampled_from(["get_weather", "read_file", "nope"])
_ARGS = st.fixed_dictionaries({"city": st.text(alphabet="xyz <>", max_size=5)})


@st.composite
def _block(draw: st.DrawFn) -> str:
    name = draw(_NAME)
    args = draw(_ARGS)
    kind = draw(st.sampled_from(["json", "xml", "bare", "broken"]))
    if kind == "json":
        return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"
    if kind == "broken":
        return '<tool_call>\n{"name": "' + name + '", "arguments": {\n</tool_call>'
    params = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in args.items())
    fn = f"<function={name}>\n{params}</function>"
    return f"<tool_call>\n{fn}\n</tool_call>" if kind == "xml" else fn


@st.composite
def _answer_and_cuts(draw: st.DrawFn) -> tuple[str, list[int], list[int]]:
    parts = draw(st.lists(st.one_of(_TEXT, _block()), max_size=6))
    answer = "".join(parts)
    n = len(answer)
    cuts_a = draw(st.lists(st.integers(0, n), max_size=12)) if n else []
    cuts_b = draw(st.lists(st.integers(0, n), max_size=12)) if n else []
    return answer, cuts_a, cuts_b


@settings(max_examples=400, deadline=None)
@given(_answer_and_cuts())
def test_same_calls_and_content_on_any_rechunking(case: tuple[str, list[int], list[int]]) -> None:
    answer, cuts_a, cuts_b = case
    a = _summary(_run(answer, cuts_a))
    assert a == _summary(_run(answer, cuts_b))
    assert a == _summary(_run(answer, []))
    assert not any(m in a[0] for m in MARKUP), a[0]
    assert a[2] == (["tool_calls"] if a[1] else ["stop"])


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="<>/=_tolcafunixy\n{}", max_size=60), st.data())
def test_parser_is_chunking_invariant_on_any_text(text: str, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=15))
    assert _parse(text, cuts) == _parse(text, [])


def test_inline_think_tags_are_never_parsed() -> None:
    """reasoning="think_tags": a call written inside <think>…</think> is not a call."""
    tr = Translator(reasoning="think_tags")

    def frame(phase: str, content: str, status: str = "typing") -> str:
        delta = {"phase": phase, "content": content, "status": status}
        return json.dumps({"choices": [{"delta": delta}]})

    events = tr.feed(frame("think", 'maybe <tool_call>{"name": "read_file"}</tool_call>'))
    events += tr.feed(frame("answer", 'Ok.\n<tool_call>{"name": "get_weather", '))
    events += tr.feed(frame("answer", '"arguments": {"city": "Rome"}}</tool_call>'))
    events += tr.feed(frame("answer", "", "finished"))
    stage = ToolStage(_conv(), new_id=_ids().__next__)
    content, calls, finish = _summary(stage.feed(events))
    assert [c[2] for c in calls] == ["get_weather"]
    assert content.startswith("<think>\nmaybe <tool_call>") and content.endswith("</think>\n\nOk.")
    assert finish == ["tool_calls"]


def test_a_later_inline_think_block_is_not_parsed_and_parsing_goes_on() -> None:
    """think_tags, reasoning after answer text: the second block the translator opens is
    passed on unparsed (its markup is no call), even inside a call block being written (no
    markup in the arguments), and the calls after it are parsed."""
    tr = Translator(reasoning="think_tags")

    def frame(phase: str, content: str, status: str = "typing") -> str:
        delta = {"phase": phase, "content": content, "status": status}
        return json.dumps({"choices": [{"delta": delta}]})

    events = tr.feed(frame("think", "plan"))
    events += tr.feed(frame("answer", 'Ok. <tool_call>{"name": "get_weather", "arg'))
    events += tr.feed(frame("think", 'or <tool_call>{"name": "read_file"}</tool_call>?'))
    events += tr.feed(frame("answer", 'uments": {"city": "Rome"}}</tool_call>'))
    events += tr.feed(frame("think", "and Paris"))
    events += tr.feed(frame("answer", '<tool_call>{"name": "get_weather", '))
    events += tr.feed(frame("answer", '"arguments": {"city": "Paris"}}</tool_call>'))
    events += tr.feed(frame("answer", "", "finished"))
    stage = ToolStage(_conv(), new_id=_ids().__next__)
    content, calls, finish = _summary(stage.feed(events))
    assert [(c[2], json.loads(c[3])) for c in calls] == [
        ("get_weather", {"city": "Rome"}),
        ("get_weather", {"city": "Paris"}),
    ]
    assert content == (
        "<think>\nplan\n</think>\n\nOk."
        '<think>\nor <tool_call>{"name": "read_file"}</tool_call>?\n</think>\n\n'
        "<think>\nand Paris\n</think>\n\n"
    )
    assert finish == ["tool_calls"]


def _local_frame(status: str, params: dict[str, Any]) -> str:
    call = {"tool_name": "★-get_weather", "params": params}
    delta = {"phase": "local_tool", "status": status, "extra": {"local_mcp": {"★": [call]}}}
    return json.dumps({"choices": [{"delta": delta}]})


def test_native_typing_frames_wait_for_the_finished_one() -> None:
    """A typing local_tool frame may hold partial params: only the finished frame counts."""
    tr = Translator(native_tools=True)
    assert tr.feed(_local_frame("typing", {"city": "Os"})) == []
    assert tr.feed(_local_frame("finished", {"city": "Oslo"})) == [
        NativeToolCall("get_weather", {"city": "Oslo"})
    ]
    end = tr.feed(json.dumps({"choices": [{"delta": {"phase": "answer", "status": "finished"}}]}))
    assert end == [Finish()]


def test_native_typing_snapshot_is_used_when_no_finished_frame_comes() -> None:
    tr = Translator(native_tools=True)
    tr.feed(_local_frame("typing", {"city": "O"}))
    tr.feed(_local_frame("typing", {"city": "Oslo"}))
    assert tr.close() == [NativeToolCall("get_weather", {"city": "Oslo"}), Finish()]


def test_native_call_nested_past_what_orjson_encodes_is_rejected_not_a_crash() -> None:
    """Params nesting 300 levels (orjson decodes 1024, encodes 254): the frame's call is
    kept, not a TypeError out of the translator, and the tool stage rejects it as a call
    whose arguments nest too deep."""
    deep: Any = 1
    for _ in range(300):
        deep = {"a": deep}
    tr = Translator(native_tools=True)
    events = tr.feed(_local_frame("finished", {"city": "Oslo", "x": deep})) + tr.close()
    assert [type(e) for e in events] == [NativeToolCall, Finish]
    content, calls, finish = _summary(ToolStage(_conv(), new_id=_ids().__next__).feed(events))
    assert calls == [] and finish == ["stop"]
    assert f"nest more than {MAX_JSON_DEPTH} levels" in content


def test_hold_prose_releases_the_preface_with_the_call() -> None:
    """tool_choice required: text is held until a call comes, then sent before it."""
    stage = ToolStage(
        _conv(tool_choice=ToolChoice("required")), new_id=_ids().__next__, hold_prose=True
    )
    assert stage.feed([Text("reasoning", "hmm"), Text("content", "Let me check.\n<tool")]) == []
    out = stage.feed([Text("content", '_call>{"name": "read_file"}</tool_call>'), Finish()])
    assert out[:2] == [Text("reasoning", "hmm"), Text("content", "Let me check.")]
    assert isinstance(out[2], ToolCall) and out[-1] == Finish("tool_calls")
    assert not stage.wants_retry


def test_hold_prose_without_a_call_asks_for_the_corrective_turn() -> None:
    stage = ToolStage(_conv(tool_choice=ToolChoice("required")), hold_prose=True)
    assert stage.feed([Text("content", "It is sunny.")]) == []
    assert stage.feed([Finish()]) == []
    assert stage.wants_retry and stage.prose() == "It is sunny."


def test_hold_prose_failure_flushes_what_was_held() -> None:
    stage = ToolStage(_conv(tool_choice=ToolChoice("required")), hold_prose=True)
    stage.feed([Text("content", "Partial")])
    fail = Failure(UpstreamTruncatedError("cut"))
    assert stage.feed([Text("content", " answer"), fail]) == [
        Text("content", "Partial"),
        Text("content", " answer"),
        fail,
    ]


def test_tool_choice_none_never_calls_and_never_leaks_markup() -> None:
    content, calls, finish = _summary(
        _run(
            'Sure. <tool_call>{"name": "read_file"}</tool_call>',
            [9],
            tool_choice=ToolChoice("none"),
        )
    )
    assert calls == [] and finish == ["stop"]
    assert content == "Sure.\n\n(tool call dropped by the proxy: tool_choice is none)"


@pytest.mark.parametrize("cut", range(1, 40))
def test_a_code_fence_around_a_call_does_not_leak(cut: int) -> None:
    answer = 'Here:\n```json\n<tool_call>{"name": "read_file"}</tool_call>\n```'
    content, calls, _ = _summary(_run(answer, [cut]))
    assert content == "Here:" and [c[2] for c in calls] == ["read_file"]
    prose = "Code:\n```python\nprint(1)\n```"
    assert _summary(_run(prose, [cut]))[0] == prose


# -- a closing tag inside a JSON string (a coding agent writing about tool calls) ---------------

CODE_CALL = (
    "<tool_call>\n"
    + json.dumps(
        {
            "name": "read_file",
            "arguments": {"path": 'print("<tool_call> x </tool_call>", "\\\\")\n</tool_call>'},
        }
    )
    + "\n</tool_call>\nafter"
)


@pytest.mark.parametrize("cut", range(1, len(CODE_CALL)))
def test_a_closing_tag_inside_a_json_string_is_body(cut: int) -> None:
    """A coding agent writes code about tool calls: the tag inside the JSON string does not
    end the block, on any split (escaped quotes and backslashes included)."""
    content, calls, finish = _summary(_run(CODE_CALL, [cut]))
    assert [(c[2], json.loads(c[3])) for c in calls] == [
        ("read_file", {"path": 'print("<tool_call> x </tool_call>", "\\\\")\n</tool_call>'})
    ]
    assert finish == ["tool_calls"] and "tool_call" not in content


def test_an_unbalanced_quote_does_not_swallow_the_rest() -> None:
    """A broken block whose quote never closes still ends at its closing tag (as if strings
    were not tracked): a note, then the prose after it, never a call."""
    answer = '<tool_call>\n{"name": "read_file", "arguments": {"path": "a}}\n</tool_call>\nBye.'
    for cut in range(1, len(answer)):
        text, blocks = _parse(answer, [cut])
        assert text == "\nBye." and [b.closed for b in blocks] == [True]
    content, calls, _ = _summary(_run(answer, []))
    assert calls == [] and "dropped" in content


def test_the_xml_form_does_not_track_quotes() -> None:
    answer = '<tool_call>\n<function=read_file>\n<parameter=path>\na"b\n</parameter>\n</function>\n'
    answer += "</tool_call>"
    _, calls, _ = _summary(_run(answer, []))
    assert [(c[2], json.loads(c[3])) for c in calls] == [("read_file", {"path": 'a"b'})]


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet='<>/=_tolcafunixy\n{}"\\ ', max_size=60), st.data())
def test_parser_is_chunking_invariant_with_quotes_and_escapes(
    text: str, data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=15))
    assert _parse(text, cuts) == _parse(text, [])


# -- a closing tag inside an XML value (a coding agent writing about the format) -----------------

XML_VALUES = {
    "parameter_close": "use </parameter> tags",
    "tool_call_close": "the </tool_call> tag",
    "function_close": "the </function> tag",
    "parameter_close_at_line_end": "a </parameter>\nb",
    "opening_tags": "<tool_call>\n<function=x>\n<parameter=y>",
}


def _xml_call(value: str, wrapped: bool) -> str:
    fn = f"<function=read_file>\n<parameter=path>\n{value}\n</parameter>\n</function>"
    return "Reading.\n" + (f"<tool_call>\n{fn}\n</tool_call>" if wrapped else fn) + "\nafter"


@pytest.mark.parametrize("wrapped", [True, False], ids=["tool_call", "bare"])
@pytest.mark.parametrize("value", XML_VALUES.values(), ids=XML_VALUES.keys())
def test_a_closing_tag_inside_an_xml_value_is_value(value: str, wrapped: bool) -> None:
    """The tag counts only where it can end its element (vLLM's Qwen3 XML parser, agents.md
    §1.5): the value arrives whole, on any split, and no markup reaches the content."""
    answer = _xml_call(value, wrapped)
    one_by_one = list(range(1, len(answer)))
    for cuts in [[], one_by_one, *([c] for c in one_by_one)]:
        content, calls, finish = _summary(_run(answer, cuts))
        assert [(c[2], json.loads(c[3])) for c in calls] == [("read_file", {"path": value})]
        assert content == "Reading." and finish == ["tool_calls"], cuts


XML_OPEN_AT_THE_END = {
    "tool_call_close_in_value": "<tool_call>\n<function=read_file>\n<parameter=path>\n"
    "the </tool_call> tag\n",
    "function_close_in_value": "<function=read_file>\n<parameter=path>\nthe </function> tag",
    "parameter_close_then_prose": "<tool_call>\n<function=read_file>\n<parameter=path>\n"
    "a </parameter> b </tool_call> c",
}


@pytest.mark.parametrize("answer", XML_OPEN_AT_THE_END.values(), ids=XML_OPEN_AT_THE_END.keys())
def test_an_xml_call_still_in_a_value_at_the_end_is_a_note(answer: str) -> None:
    """The answer ends inside a value: the block is unfinished (a note, never a call), and the
    rest of the value never reaches the content."""
    for cut in range(len(answer)):
        content, calls, finish = _summary(_run(answer, [cut]))
        assert calls == [] and finish == ["stop"]
        assert (
            content
            == "(tool call dropped by the proxy: the answer ended inside an unfinished call)"
        )


XML_DECODED = {
    "parameter_close_then_newline": (
        "<function=f>\n<parameter=a>\nx </parameter>\ny\n</parameter>\n</function>",
        {"a": "x </parameter>\ny"},
    ),
    "function_close_without_parameter_close": (
        "<function=f>\n<parameter=a>\nx\n</function>",
        {"a": "x"},
    ),
    "two_parameters": (
        "<function=f>\n<parameter=a>\n1\n</parameter><parameter=b>\n</function> 2\n</parameter>\n"
        "</function>",
        {"a": "1", "b": "</function> 2"},
    ),
    "name_split_by_a_newline_is_not_a_tag": (
        "<function=f>\n<parameter=a\nb>\n1\n</parameter>\n<parameter=c>\n2\n</parameter>\n"
        "</function>",
        {"c": "2"},
    ),
}


@pytest.mark.parametrize(("body", "args"), XML_DECODED.values(), ids=XML_DECODED.keys())
def test_xml_values_end_only_where_a_tag_can_end_them(body: str, args: dict[str, str]) -> None:
    assert decode_block(Block(body, True)) == [ParsedCall("f", args, xml=True)]


# -- a <think> the model writes in its answer is answer text -------------------------------------

THINK_ANSWER = (
    "<think>\nplan\n</think>\n\nSure. <tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
)


def _think_frames(reasoning: tuple[str, ...], answer: str, cuts: list[int]) -> list[OutEvent]:
    """The translator's events for reasoning frames, then ``answer`` in frames cut at ``cuts``."""
    tr = Translator(reasoning="think_tags")

    def frame(phase: str, content: str, status: str = "typing") -> str:
        return json.dumps(
            {"choices": [{"delta": {"phase": phase, "content": content, "status": status}}]}
        )

    events = [e for r in reasoning for e in tr.feed(frame("think", r))]
    prev = 0
    for cut in [*cuts, len(answer)]:
        if cut > prev:
            events += tr.feed(frame("answer", answer[prev:cut]))
            prev = cut
    return events + tr.feed(frame("answer", "", "finished"))


@pytest.mark.parametrize("cut", range(len(THINK_ANSWER)))
def test_a_think_tag_in_the_answer_is_parsed_on_any_frame_split(cut: int) -> None:
    """The answer's own <think> is text: the call is read whatever the frame boundaries (the
    first frame starting with "<think>\\n" included: cut 0 sends the answer in one frame)."""
    content, calls, finish = _summary(_run(THINK_ANSWER, [cut]))
    assert [(c[2], json.loads(c[3])) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert content == "<think>\nplan\n</think>\n\nSure." and finish == ["tool_calls"]


THINK_CASES = {
    "answer_only": ((), "<think>\nplan\n</think>\n\nSure."),
    "after_inline_reasoning": (
        ("hmm", "\n</think>\n\n", '<tool_call>{"name": "read_file", "arguments": {}}</tool_call>'),
        '<think>\nhmm\n</think>\n\n<tool_call>{"name": "read_file", "arguments": {}}</tool_call>'
        "\n</think>\n\n<think>\nplan\n</think>\n\nSure.",
    ),
}


@pytest.mark.parametrize(("reasoning", "content"), THINK_CASES.values(), ids=THINK_CASES.keys())
def test_only_the_translators_own_think_block_is_left_unparsed(
    reasoning: tuple[str, ...], content: str
) -> None:
    """think_tags mode: the block the translator opened is not parsed (its call is not a call,
    even when the reasoning itself writes "\\n</think>\\n\\n"); the answer's own <think> is
    parsed like any text, in one frame or cut anywhere."""
    for cuts in [[], *([c] for c in range(1, len(THINK_ANSWER)))]:
        stage = ToolStage(_conv(), new_id=_ids().__next__)
        got, calls, finish = _summary(stage.feed(_think_frames(reasoning, THINK_ANSWER, cuts)))
        assert [(c[2], json.loads(c[3])) for c in calls] == [("get_weather", {"city": "Paris"})]
        assert got == content and finish == ["tool_calls"], cuts
