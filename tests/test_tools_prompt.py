"""The tool prompt: Qwen's Hermes convention, history as text, tool_choice lines, loop notes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import assistant_call

from proxy.conversation import Conversation, ToolCallRecord, ToolChoice, ToolSpec, Turn
from proxy.errors import ClientRequestError
from proxy.frontdoors.openai_chat import parse_chat
from proxy.qwen.request import flatten_messages
from proxy.tools import validate
from proxy.tools.prompt import NO_RESULT, build_prompt, repeated_calls
from proxy.tools.validate import ToolBox, check_tool_schema, coerce_xml_params

F = ToolSpec("f", "does f", {"type": "object", "properties": {"x": {"type": "integer"}}})
G = ToolSpec("g")


def _conv(turns: list[Turn], **kw: Any) -> Conversation:
    return Conversation("qwen3-max", turns, **kw)


def test_without_tools_the_prompt_is_unchanged() -> None:
    turns = [Turn("system", "be brief"), Turn("user", "hi"), Turn("assistant", "hello")]
    assert build_prompt(_conv(turns)) == flatten_messages(turns)
    assert build_prompt(_conv([Turn("user", "hi")])) == "hi"


def test_tool_choice_none_sends_no_tool_prompt() -> None:
    conv = _conv([Turn("user", "hi")], tools=(F,), tool_choice=ToolChoice("none"))
    assert build_prompt(conv) == "hi"


def test_tools_section_follows_qwens_template() -> None:
    prompt = build_prompt(_conv([Turn("system", "Be kind."), Turn("user", "hi")], tools=(F, G)))
    system, user = prompt.split("\n\nUser: ")
    assert user == "hi"
    assert system.startswith("System: Be kind.\n\n# Tools\n\n")
    assert "You may call one or more functions to assist with the user query." in system
    inside = system.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0].split("\n")
    assert [json.loads(line) for line in inside] == [
        {
            "type": "function",
            "function": {"name": "f", "description": "does f", "parameters": F.parameters},
        },
        {"type": "function", "function": {"name": "g"}},
    ]
    assert '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n' in system


@pytest.mark.parametrize(
    ("choice", "parallel", "line"),
    [
        (ToolChoice("required"), True, "You must call at least one of these functions"),
        (ToolChoice("named", "g"), True, "You must call the function g in this answer."),
        (ToolChoice("auto"), False, "Call at most one function in this answer."),
    ],
)
def test_choice_lines(choice: ToolChoice, parallel: bool, line: str) -> None:
    prompt = build_prompt(
        _conv([Turn("user", "hi")], tools=(F, G), tool_choice=choice, parallel_tool_calls=parallel)
    )
    assert line in prompt
    if choice.mode == "named":
        assert '"name": "f"' not in prompt  # only the named tool is offered


def test_history_renders_calls_and_results_as_fresh_user_turns() -> None:
    turns = [
        Turn("user", "go"),
        Turn(
            "assistant",
            "Working.",
            tool_calls=(ToolCallRecord("c1", "f", '{"x": 1}'), ToolCallRecord("c2", "g", "")),
        ),
        Turn("tool", "one", tool_call_id="c1"),
        Turn("tool", [{"type": "text", "text": "two"}], tool_call_id="c2"),
        Turn("assistant", None, tool_calls=(ToolCallRecord("c3", "f", '{"x": 5}'),)),
        Turn("user", "never mind"),
    ]
    prompt = build_prompt(_conv(turns, tools=(F, G)))
    blocks = prompt.split("\n\n")
    tail = "\n\n".join(blocks[blocks.index("User: go") :])
    assert tail == (
        "User: go\n\n"
        "Assistant: Working.\n<tool_call>\n"
        '{"name": "f", "arguments": {"x": 1}}\n</tool_call>\n<tool_call>\n'
        '{"name": "g", "arguments": {}}\n</tool_call>\n\n'
        "User: <tool_response>\none\n</tool_response>\n<tool_response>\ntwo\n</tool_response>"
        "\n\nAssistant: <tool_call>\n"
        '{"name": "f", "arguments": {"x": 5}}\n</tool_call>\n\n'
        f"User: <tool_response>\n{NO_RESULT}\n</tool_response>\n\n"
        "User: never mind"
    )
    assert "Tool:" not in prompt and "function" not in prompt.split("# Tools")[0]


def test_tool_history_is_rendered_even_when_tools_are_off() -> None:
    turns = [
        Turn("user", "go"),
        Turn("assistant", None, tool_calls=(ToolCallRecord("c1", "f", "{}"),)),
        Turn("tool", "done", tool_call_id="c1"),
    ]
    prompt = build_prompt(_conv(turns))
    assert "# Tools" not in prompt
    assert "<tool_response>\ndone\n</tool_response>" in prompt


def test_repeated_identical_calls_are_named_in_a_closing_note() -> None:
    call = '{"x": 1}'
    turns = [Turn("user", "go")]
    for i in range(3):
        turns.append(Turn("assistant", None, tool_calls=(ToolCallRecord(f"c{i}", "f", call),)))
        turns.append(Turn("tool", "same", tool_call_id=f"c{i}"))
    turns.append(Turn("assistant", None, tool_calls=(ToolCallRecord("c9", "f", '{"x": 2}'),)))
    assert repeated_calls(turns) == [("f", '{"x": 1}', 3)]
    prompt = build_prompt(_conv(turns, tools=(F,)))
    assert prompt.endswith(
        'System: You have already called f with the arguments {"x": 1} 3 times in this '
        "conversation and received its result each time. Do not call it again with the same "
        "arguments: use the results you have, or do something different."
    )


def test_openai_history_fields_reach_the_conversation() -> None:
    conv = parse_chat(
        json.dumps(
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "go"},
                    assistant_call("c1", "f", '{"x": 1}'),
                    {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                ],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "f"}},
                "parallel_tool_calls": False,
            }
        ).encode()
    )
    assert conv.turns[1].tool_calls == (ToolCallRecord("c1", "f", '{"x": 1}'),)
    assert conv.turns[2].tool_call_id == "c1"
    assert conv.tool_choice == ToolChoice("named", "f")
    assert conv.parallel_tool_calls is False


def test_assistant_call_without_name_is_400() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]}],
    }
    with pytest.raises(ClientRequestError) as info:
        parse_chat(json.dumps(body).encode())
    assert info.value.param == "messages[0].tool_calls[0].function.name"


def test_toolbox_checks_and_canonicalises() -> None:
    box = ToolBox((F, G))
    assert box.check("f", {"x": 2}) == ("f", '{"x": 2}')
    assert box.check(" functions.F ", '{"x": 2}') == ("f", '{"x": 2}')
    assert box.check("g", None) == ("g", "{}")
    bad = box.check("f", {"x": "two"})
    assert not isinstance(bad, tuple) and bad.reason == "invalid_arguments" and "x" in bad.detail
    unknown = box.check("h", {})
    assert not isinstance(unknown, tuple) and unknown.reason == "unknown_tool"


def test_a_valid_schema_is_checked_against_its_metaschema_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An agent's tools come again every turn: a schema found valid is remembered (by its
    canonical JSON), an invalid one is refused every time."""
    calls: list[object] = []
    real = validate.jsonschema.validators.validator_for

    def counting(schema: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(schema)
        return real(schema, *args, **kwargs)

    monkeypatch.setattr(validate.jsonschema.validators, "validator_for", counting)
    validate._check_schema_text.cache_clear()
    good = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    for _ in range(3):
        check_tool_schema(dict(reversed(good.items())), param="tools[0].function.parameters")
    assert calls.count(good) == 1  # (the check itself looks up the metaschemas too)
    bad = {"type": "object", "properties": "true"}
    for _ in range(2):
        with pytest.raises(ClientRequestError):
            check_tool_schema(bad, param="tools[0].function.parameters")
    assert calls.count(good) == 1 and calls.count(bad) == 2


def test_schema_check_and_xml_coercion() -> None:
    with pytest.raises(ClientRequestError) as info:
        check_tool_schema({"type": "objekt"}, param="tools[0].function.parameters")
    assert info.value.param == "tools[0].function.parameters"
    spec = ToolSpec(
        "t",
        parameters={
            "type": "object",
            "properties": {
                "n": {"type": "integer"},
                "r": {"type": "number"},
                "b": {"type": "boolean"},
                "o": {"type": "object"},
                "s": {"type": "string"},
                "z": {"type": ["null", "string"]},
            },
        },
    )
    raw = {"n": "3", "r": "2.5", "b": "True", "o": '{"a": 1}', "s": "42", "z": "null", "q": "x"}
    assert coerce_xml_params(raw, spec) == {
        "n": 3,
        "r": 2.5,
        "b": True,
        "o": {"a": 1},
        "s": "42",
        "z": None,
        "q": "x",
    }


def test_quoted_numbers_are_typed_before_rejecting() -> None:
    box = ToolBox((F,))
    assert box.check("f", {"x": "7"}) == ("f", '{"x": 7}')
    bad = box.check("f", {"x": "seven"})
    assert not isinstance(bad, tuple) and bad.reason == "invalid_arguments"


def test_continuation_sends_only_the_tail_without_the_tools_section() -> None:
    turns = [
        Turn("system", "sys"),
        Turn("user", "go"),
        Turn(
            "assistant",
            None,
            tool_calls=(ToolCallRecord("c1", "f", "{}"), ToolCallRecord("c2", "g", "{}")),
        ),
        Turn("tool", "one", tool_call_id="c1"),
        Turn("user", "and?"),
    ]
    conv = _conv(turns, tools=(F, G), tool_choice=ToolChoice("required"))
    assert build_prompt(conv, start=3) == (
        "System: You must call at least one of these functions in this answer.\n\n"
        f"User: <tool_response>\none\n</tool_response>\n<tool_response>\n{NO_RESULT}\n"
        "</tool_response>\n\nUser: and?"
    )
    plain = _conv([Turn("user", "a"), Turn("assistant", "b"), Turn("user", "c")])
    assert build_prompt(plain, start=2) == "c"


NUM = ToolSpec(
    "num",
    parameters={
        "type": "object",
        "properties": {"n": {"type": "number"}, "i": {"type": "integer"}, "s": {"type": "string"}},
    },
)
BIG = int("9" * 4000) * 10**400  # more digits than Python writes out (4300)

#: arguments a model can write that no JSON text carries: a rejection, never invalid JSON
UNWRITABLE: dict[str, Any] = {
    "nan": '{"n": NaN}',
    "infinity": '{"n": Infinity}',
    "minus_infinity": '{"n": -Infinity}',
    "overflow": '{"n": 1e999}',
    "lone_surrogate": '{"s": "a\\ud800b"}',
    "huge_integer": {"i": BIG},
}


@pytest.mark.parametrize("case", sorted(UNWRITABLE))
def test_arguments_json_cannot_carry_are_rejected(case: str) -> None:
    got = ToolBox((NUM,)).check("num", UNWRITABLE[case])
    assert not isinstance(got, tuple), got
    assert got.reason == "invalid_arguments" and "JSON cannot carry" in got.detail


#: raw XML values for typed parameters: JSON's grammar only, else left a string (and then
#: refused by the schema check), never a Python-only reading or an exception
TYPED: list[tuple[str, str, Any]] = [
    ("i", "12", 12),
    ("i", "+7", 7),
    ("i", "-3", -3),
    ("i", "1_000", "1_000"),
    ("i", "١٢٣", "١٢٣"),
    ("i", "9" * 5000, "9" * 5000),
    ("n", "-3.5e2", -350.0),
    ("n", "12", 12),
    ("n", "1_000", "1_000"),
    ("n", "nan", "nan"),
    ("n", "inf", "inf"),
    ("n", "1e999", "1e999"),
    ("n", "0x10", "0x10"),
    ("n", "9" * 5000, "9" * 5000),
]


@pytest.mark.parametrize(("param", "raw", "typed"), TYPED)
def test_xml_values_are_typed_by_json_grammar(param: str, raw: str, typed: Any) -> None:
    assert coerce_xml_params({param: raw}, NUM) == {param: typed}
