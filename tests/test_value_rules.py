"""Values of the right type that the real APIs refuse (a range, an enum, a required companion
field) are refused here too, with the ``param`` the API names; the boundary values they take
are accepted. One test per rule and value: the lists below are the rules.

Sources: OpenAI's API reference and the openai-python types (``logit_bias`` -100..100 keyed by
token id, ``response_format.json_schema.name`` required, a tool message's ``tool_call_id``
required, ``input_audio.format`` wav/mp3, ``image_url.detail`` auto/low/high/original,
``metadata`` 16 pairs of keys up to 64 and string values up to 512 characters, ``truncation``
auto/disabled); OpenAI's answer to a ``function_call_output`` whose call is nowhere ("No tool
call found for function call output with call_id …", param ``input``). Anthropic's Messages
reference and anthropic-sdk-python's types (``thinking.budget_tokens`` at least 1024 and below
``max_tokens``, except with the ``interleaved-thinking`` beta; a tool's ``input_schema.type``
is ``object``, required).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.conversation import Conversation, ToolCallRecord, Turn
from proxy.errors import ClientRequestError
from proxy.frontdoors.anthropic import parse_count_tokens, parse_messages
from proxy.frontdoors.openai_chat import parse_chat
from proxy.frontdoors.responses import build_conversation, parse_request

HI = [{"role": "user", "content": "hi"}]
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQ"
    "GAhKmMIQAAAABJRU5ErkJggg=="
)


def _chat(body: dict[str, Any]) -> Conversation:
    return parse_chat(json.dumps({"model": "m", "messages": HI, **body}).encode())


def _user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, *parts]}]}


def _image(**fields: Any) -> dict[str, Any]:
    return _user({"type": "image_url", "image_url": {"url": PNG, **fields}})


def _audio(**fields: Any) -> dict[str, Any]:
    return _user({"type": "input_audio", "input_audio": {"data": "UklGRg==", **fields}})


def _schema_format(**json_schema: Any) -> dict[str, Any]:
    return {"response_format": {"type": "json_schema", "json_schema": json_schema}}


_SIXTEEN = {f"k{i}": "v" for i in range(16)}

#: chat bodies the validated path refuses, and the param it names
CHAT_REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("logit_bias above 100", {"logit_bias": {"5": 101}}, "logit_bias.5"),
    ("logit_bias below -100", {"logit_bias": {"5": -100.5}}, "logit_bias.5"),
    ("logit_bias key not a number", {"logit_bias": {"abc": 1}}, "logit_bias.abc"),
    # (a location part holding "-" is read as one of pydantic's tags and left out of param)
    ("logit_bias key negative", {"logit_bias": {"-1": 1}}, "logit_bias"),
    ("logit_bias key with a space", {"logit_bias": {" 5": 1}}, "logit_bias. 5"),
    ("logit_bias key a decimal", {"logit_bias": {"5.0": 1}}, "logit_bias.5.0"),
    (
        "response_format json_schema without json_schema",
        {"response_format": {"type": "json_schema"}},
        "response_format.json_schema",
    ),
    (
        "response_format json_schema null",
        {"response_format": {"type": "json_schema", "json_schema": None}},
        "response_format.json_schema",
    ),
    (
        "json_schema without name",
        _schema_format(schema={"type": "object"}),
        "response_format.json_schema.name",
    ),
    ("json_schema name empty", _schema_format(name=""), "response_format.json_schema.name"),
    (
        "json_schema name with a space",
        _schema_format(name="a b"),
        "response_format.json_schema.name",
    ),
    ("json_schema name of 65", _schema_format(name="n" * 65), "response_format.json_schema.name"),
    ("json_schema name a number", _schema_format(name=5), "response_format.json_schema.name"),
    (
        "json_schema schema not an object",
        _schema_format(name="n", schema="object"),
        "response_format.json_schema.schema",
    ),
    (
        "tool message without tool_call_id",
        {"messages": [*HI, {"role": "tool", "content": "x"}]},
        "messages[1].tool_call_id",
    ),
    (
        "tool message with a null tool_call_id",
        {"messages": [{"role": "tool", "content": "x", "tool_call_id": None}]},
        "messages[0].tool_call_id",
    ),
    ("input_audio format ogg", _audio(format="ogg"), "messages[0].content[1].input_audio.format"),
    ("input_audio format WAV", _audio(format="WAV"), "messages[0].content[1].input_audio.format"),
    ("input_audio format a number", _audio(format=1), "messages[0].content[1].input_audio.format"),
    ("image detail ultra", _image(detail="ultra"), "messages[0].content[1].image_url.detail"),
    ("image detail empty", _image(detail=""), "messages[0].content[1].image_url.detail"),
    ("image detail a number", _image(detail=2), "messages[0].content[1].image_url.detail"),
    ("metadata of 17 pairs", {"metadata": {**_SIXTEEN, "k16": "v"}}, "metadata"),
    ("metadata key of 65", {"metadata": {"k" * 65: "v"}}, "metadata." + "k" * 65),
    ("metadata value of 513", {"metadata": {"k": "v" * 513}}, "metadata.k"),
    ("metadata value a number", {"metadata": {"k": 5}}, "metadata.k"),
    (
        "an assistant refusal part without a string",
        {"messages": [*HI, {"role": "assistant", "content": [{"type": "refusal"}]}]},
        "messages[1].content[0].refusal",
    ),
    (
        "a refusal part in a user message",
        {"messages": [{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}]},
        "messages[0].content[0].type",
    ),
    (
        "tool_choice allowed_tools with mode none",
        {
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "none"}},
        },
        "tool_choice.allowed_tools.mode",
    ),
    (
        "tool_choice allowed_tools required without tools",
        {"tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "required"}}},
        "tool_choice",
    ),
]


@pytest.mark.parametrize(("name", "body", "param"), CHAT_REFUSED, ids=[c[0] for c in CHAT_REFUSED])
def test_chat_refuses(name: str, body: dict[str, Any], param: str) -> None:
    with pytest.raises(ClientRequestError) as info:
        _chat(body)
    assert info.value.param == param, (name, info.value.message)
    assert info.value.http_status() == 400


#: the values at and inside the same rules' bounds, and the shapes the SDKs send
CHAT_ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("logit_bias at both bounds", {"logit_bias": {"50256": -100, "5": 100}}),
    ("logit_bias a decimal bias", {"logit_bias": {"0": 0.5}}),
    ("logit_bias empty", {"logit_bias": {}}),
    ("logit_bias null", {"logit_bias": None}),
    ("response_format text", {"response_format": {"type": "text"}}),
    ("response_format json_object", {"response_format": {"type": "json_object"}}),
    ("json_schema with a name only", _schema_format(name="n")),
    (
        "json_schema as the SDK's parse() sends it",
        _schema_format(name="Answer_v-2", schema={"type": "object", "properties": {}}, strict=True),
    ),
    ("json_schema name of 64", _schema_format(name="n" * 64)),
    (
        "a tool message with its call",
        {
            "messages": [
                *HI,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "content": "x", "tool_call_id": "call_1"},
            ]
        },
    ),
    ("a function message, no tool_call_id", {"messages": [{"role": "function", "content": "x"}]}),
    ("input_audio wav", _audio(format="wav")),
    ("input_audio mp3", _audio(format="mp3")),
    ("input_audio without a format", _audio()),
    *[(f"image detail {d}", _image(detail=d)) for d in ("auto", "low", "high", "original")],
    ("image without detail", _image()),
    ("metadata of 16 pairs", {"metadata": _SIXTEEN}),
    ("metadata key of 64, value of 512", {"metadata": {"k" * 64: "v" * 512}}),
    ("metadata empty", {"metadata": {}}),
    (
        "an assistant refusal part in the history (what OpenAI answered)",
        {
            "messages": [
                *HI,
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
                {"role": "user", "content": "why?"},
            ]
        },
    ),
    *[
        (
            f"tool_choice allowed_tools, mode {mode}",
            {
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {
                    "type": "allowed_tools",
                    "allowed_tools": {
                        "mode": mode,
                        "tools": [{"type": "function", "function": {"name": "f"}}],
                    },
                },
            },
        )
        for mode in ("auto", "required")
    ],
]


@pytest.mark.parametrize(("name", "body"), CHAT_ACCEPTED, ids=[c[0] for c in CHAT_ACCEPTED])
def test_chat_accepts(name: str, body: dict[str, Any]) -> None:
    assert _chat(body).model == "m"


def _fc(call_id: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "f", "arguments": "{}"}


def _fco(call_id: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": "ok"}


#: the history of a ``previous_response_id`` whose answer called ``prev_call``
PREVIOUS = (
    Turn("user", "hi"),
    Turn("assistant", None, tool_calls=(ToolCallRecord("prev_call", "f", "{}"),)),
)


def _responses(body: dict[str, Any], history: tuple[Turn, ...] = ()) -> Conversation:
    req = parse_request({"model": "m", "input": "hi", **body})
    return build_conversation(req, history)


#: Responses bodies (with the previous response's history or none) refused, and the param named
RESPONSES_REFUSED: list[tuple[str, dict[str, Any], tuple[Turn, ...], str]] = [
    ("metadata value a number", {"metadata": {"k": 5}}, (), "metadata.k"),
    ("metadata value null", {"metadata": {"k": None}}, (), "metadata.k"),
    ("metadata of 17 pairs", {"metadata": {**_SIXTEEN, "k16": "v"}}, (), "metadata"),
    ("metadata key of 65", {"metadata": {"k" * 65: "v"}}, (), "metadata." + "k" * 65),
    ("metadata value of 513", {"metadata": {"k": "v" * 513}}, (), "metadata.k"),
    ("truncation maybe", {"truncation": "maybe"}, (), "truncation"),
    ("truncation upper-case", {"truncation": "AUTO"}, (), "truncation"),
    ("an output and no call", {"input": [_fco("nope")]}, (), "input[0].call_id"),
    (
        "an output for another call",
        {"input": [{"role": "user", "content": "hi"}, _fc("c1"), _fco("c1"), _fco("c2")]},
        (),
        "input[3].call_id",
    ),
    (
        "an output no previous call answers",
        {"input": [_fco("nope")], "previous_response_id": "resp_1"},
        PREVIOUS,
        "input[0].call_id",
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "history", "param"), RESPONSES_REFUSED, ids=[c[0] for c in RESPONSES_REFUSED]
)
def test_responses_refuses(
    name: str, body: dict[str, Any], history: tuple[Turn, ...], param: str
) -> None:
    with pytest.raises(ClientRequestError) as info:
        _responses(body, history)
    assert info.value.param == param, (name, info.value.message)
    assert info.value.http_status() == 400


#: accepted: the bounds, and the loops of Codex (the whole history, calls and outputs, every
#: turn) and of the Agents SDK (only the outputs, with ``previous_response_id``)
RESPONSES_ACCEPTED: list[tuple[str, dict[str, Any], tuple[Turn, ...]]] = [
    ("metadata of 16 pairs", {"metadata": _SIXTEEN}, ()),
    ("metadata key of 64, value of 512", {"metadata": {"k" * 64: "v" * 512}}, ()),
    ("metadata null", {"metadata": None}, ()),
    ("truncation auto", {"truncation": "auto"}, ()),
    ("truncation disabled", {"truncation": "disabled"}, ()),
    ("truncation null", {"truncation": None}, ()),
    (
        "outputs after their calls (Codex)",
        {
            "input": [
                {"role": "user", "content": "hi"},
                _fc("c1"),
                _fc("c2"),
                _fco("c1"),
                _fco("c2"),
            ]
        },
        (),
    ),
    (
        "outputs of the previous response's call (Agents SDK)",
        {"input": [_fco("prev_call")], "previous_response_id": "resp_1"},
        PREVIOUS,
    ),
    (
        "an output of this input's call with a previous response",
        {"input": [_fc("c1"), _fco("c1")], "previous_response_id": "resp_1"},
        PREVIOUS,
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "history"), RESPONSES_ACCEPTED, ids=[c[0] for c in RESPONSES_ACCEPTED]
)
def test_responses_accepts(name: str, body: dict[str, Any], history: tuple[Turn, ...]) -> None:
    assert _responses(body, history).model == "m"


def _think(budget: int) -> dict[str, Any]:
    return {"thinking": {"type": "enabled", "budget_tokens": budget}}


def _tool(schema: dict[str, Any]) -> dict[str, Any]:
    return {"tools": [{"name": "f", "input_schema": schema}]}


def _messages(body: dict[str, Any], *, interleaved: bool = False) -> Conversation:
    full = {"model": "m", "max_tokens": 4096, "messages": HI, **body}
    return parse_messages(full, interleaved_thinking=interleaved)


def _count(body: dict[str, Any], *, interleaved: bool = False) -> Conversation:
    return parse_count_tokens({"model": "m", "messages": HI, **body})


#: Messages (and count_tokens) bodies refused, with the param their message starts with
MESSAGES_REFUSED: list[tuple[str, Any, dict[str, Any], str]] = [
    ("budget_tokens 10", _messages, _think(10), "thinking.budget_tokens"),
    ("budget_tokens 1023", _messages, _think(1023), "thinking.budget_tokens"),
    ("count_tokens, budget_tokens 10", _count, _think(10), "thinking.budget_tokens"),
    (
        "budget_tokens equal to max_tokens",
        _messages,
        {**_think(2048), "max_tokens": 2048},
        "thinking.budget_tokens",
    ),
    (
        "budget_tokens above max_tokens",
        _messages,
        {**_think(2048), "max_tokens": 1024},
        "thinking.budget_tokens",
    ),
    (
        "input_schema of type string",
        _messages,
        _tool({"type": "string"}),
        "tools.0.input_schema.type",
    ),
    (
        "input_schema without type",
        _messages,
        _tool({"properties": {}}),
        "tools.0.input_schema.type",
    ),
    ("input_schema of types", _messages, _tool({"type": ["object"]}), "tools.0.input_schema.type"),
    (
        "count_tokens, input_schema array",
        _count,
        _tool({"type": "array"}),
        "tools.0.input_schema.type",
    ),
]


@pytest.mark.parametrize(
    ("name", "conv_of", "body", "param"), MESSAGES_REFUSED, ids=[c[0] for c in MESSAGES_REFUSED]
)
def test_messages_refuses(name: str, conv_of: Any, body: dict[str, Any], param: str) -> None:
    with pytest.raises(ClientRequestError) as info:
        conv_of(body)
    assert info.value.param == param, (name, info.value.message)
    assert info.value.http_status() == 400


#: accepted: the bounds, thinking off or adaptive (no budget), and Claude Code's interleaved
#: thinking, whose budget may exceed max_tokens
MESSAGES_ACCEPTED: list[tuple[str, Any, dict[str, Any], bool]] = [
    ("budget_tokens 1024 below max_tokens", _messages, {**_think(1024), "max_tokens": 1025}, False),
    ("budget_tokens one below max_tokens", _messages, {**_think(2047), "max_tokens": 2048}, False),
    (
        "interleaved, budget above max_tokens",
        _messages,
        {**_think(31999), "max_tokens": 1024},
        True,
    ),
    ("interleaved, budget at max_tokens", _messages, {**_think(2048), "max_tokens": 2048}, True),
    ("thinking disabled", _messages, {"thinking": {"type": "disabled"}, "max_tokens": 1}, False),
    (
        "thinking disabled, a budget of 0 beside it",
        _messages,
        {"thinking": {"type": "disabled", "budget_tokens": 0}},
        False,
    ),
    ("thinking adaptive", _messages, {"thinking": {"type": "adaptive"}, "max_tokens": 1}, False),
    ("count_tokens, budget_tokens 1024", _count, _think(1024), False),
    ("count_tokens, a large budget", _count, _think(64000), False),
    ("input_schema of type object", _messages, _tool({"type": "object"}), False),
    (
        "input_schema as Claude Code sends it",
        _messages,
        _tool(
            {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            }
        ),
        False,
    ),
]


@pytest.mark.parametrize(
    ("name", "conv_of", "body", "interleaved"),
    MESSAGES_ACCEPTED,
    ids=[c[0] for c in MESSAGES_ACCEPTED],
)
def test_messages_accepts(name: str, conv_of: Any, body: dict[str, Any], interleaved: bool) -> None:
    assert conv_of(body, interleaved=interleaved).metadata["requested_model"] == "m"


def test_assistant_refusal_part_is_its_text() -> None:
    """A refusal part of an assistant message in the history is what the assistant said."""
    conv = _chat(
        {
            "messages": [
                *HI,
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
                {"role": "user", "content": "why?"},
            ]
        }
    )
    assert conv.turns[1].content == [{"type": "text", "text": "I can't."}]


@pytest.mark.parametrize(("mode", "want"), [("auto", "auto"), ("required", "required")])
def test_chat_allowed_tools_mode_is_the_choice(mode: str, want: str) -> None:
    """``allowed_tools``: its mode is the tool choice (the list is not used, as on
    /v1/responses)."""
    conv = _chat(
        {
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": []}},
        }
    )
    assert conv.tool_choice.mode == want
