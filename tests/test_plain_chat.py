"""The plain chat body's path (:func:`proxy.frontdoors.openai_chat.plain_chat`).

It reads only the plainest body without pydantic; whatever it reads must come out exactly as
the validated path (:func:`conversation_of` of :func:`parse_chat_request`) gives it, and
whatever it does not read is left to that path, invalid bodies included.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.api_models import parse_chat_request
from proxy.conversation import Conversation, Turn
from proxy.errors import ClientRequestError
from proxy.frontdoors.openai_chat import conversation_of, parse_chat, plain_chat


def validated(body: Any) -> Conversation:
    return conversation_of(parse_chat_request(body))


HI = [{"role": "user", "content": "hi"}]

#: bodies the plain path reads, with the turns it must give
READ: list[tuple[str, dict[str, Any], list[Turn], bool]] = [
    (
        "the SDK's streamed call",
        {"model": "m", "messages": HI, "stream": True},
        [Turn("user", "hi")],
        True,
    ),
    ("no stream key", {"model": "m", "messages": HI}, [Turn("user", "hi")], False),
    ("stream false", {"model": "m", "messages": HI, "stream": False}, [Turn("user", "hi")], False),
    (
        "every role it reads, developer as system",
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "developer", "content": "d"},
                {"role": "user", "content": "u"},
                {"role": "assistant", "content": ""},
            ],
        },
        [Turn("system", "s"), Turn("system", "d"), Turn("user", "u"), Turn("assistant", "")],
        False,
    ),
    ("a one-character model", {"model": "m", "messages": HI}, [Turn("user", "hi")], False),
    ("a 256-character model", {"model": "m" * 256, "messages": HI}, [Turn("user", "hi")], False),
    (
        "Chinese text",
        {"model": "m", "messages": [{"role": "user", "content": "你好"}]},
        [Turn("user", "你好")],
        False,
    ),
]


@pytest.mark.parametrize(("name", "body", "turns", "stream"), READ, ids=[r[0] for r in READ])
def test_plain_body_is_read_as_validated(
    name: str, body: dict[str, Any], turns: list[Turn], stream: bool
) -> None:
    conv = plain_chat(body)
    assert conv is not None, name
    assert conv.turns == turns
    assert conv.stream is stream
    assert conv.model == body["model"]
    assert conv == validated(body)
    assert parse_chat(orjson.dumps(body)) == conv


def test_parse_chat_reads_a_plain_body_without_pydantic(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the plain path: the SDK's usual body skips the 35-field model."""

    def refuse(_body: Any) -> None:
        raise AssertionError("the plain body was validated by pydantic")

    monkeypatch.setattr("proxy.frontdoors.openai_chat.parse_chat_request", refuse)
    conv = parse_chat(orjson.dumps({"model": "m", "messages": HI, "stream": True}))
    assert conv.turns == [Turn("user", "hi")]
    with pytest.raises(AssertionError, match="pydantic"):
        parse_chat(orjson.dumps({"model": "m", "messages": HI, "seed": 1}))


#: the optional parameters it reads, each with the Conversation fields it sets
PARAMS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "the chat apps' sampling set",
        {"temperature": 0.7, "top_p": 1, "presence_penalty": 0, "frequency_penalty": 0},
        {},
    ),
    (
        "every bound, low",
        {"temperature": 0, "top_p": 0, "presence_penalty": -2, "frequency_penalty": -2},
        {},
    ),
    (
        "every bound, high",
        {"temperature": 2, "top_p": 1.0, "presence_penalty": 2, "frequency_penalty": 2.0},
        {},
    ),
    ("nulls", {"temperature": None, "top_p": None, "max_tokens": None, "stream_options": None}, {}),
    ("max_tokens", {"max_tokens": 1}, {"max_output_tokens": 1}),
    ("max_tokens, large", {"max_tokens": 4096}, {"max_output_tokens": 4096}),
    ("include_usage", {"stream_options": {"include_usage": True}}, {"include_usage": True}),
    ("include_usage off", {"stream_options": {"include_usage": False}}, {"include_usage": False}),
    ("empty stream_options", {"stream_options": {}}, {"include_usage": False}),
    ("temperature alone, no stream key", {"temperature": 1}, {}),
    ("temperature -0.0", {"temperature": -0.0}, {}),
    ("max_tokens beyond 64 bits", {"max_tokens": 2**64 - 1}, {"max_output_tokens": 2**64 - 1}),
]


@pytest.mark.parametrize(("name", "params", "fields"), PARAMS, ids=[r[0] for r in PARAMS])
def test_plain_parameters_are_read_as_validated(
    name: str, params: dict[str, Any], fields: dict[str, Any]
) -> None:
    body = {"model": "m", "messages": HI, **params}
    conv = plain_chat(body)
    assert conv is not None, name
    for field, value in fields.items():
        assert getattr(conv, field) == value
    assert conv == validated(body)


#: bodies it leaves to the validated path; ``param`` is what that path refuses (None: valid)
LEFT: list[tuple[str, Any, str | None]] = [
    ("not an object", [HI], ""),
    ("another key", {"model": "m", "messages": HI, "seed": 5}, None),
    ("tools", {"model": "m", "messages": HI, "tools": []}, None),
    ("max_completion_tokens", {"model": "m", "messages": HI, "max_completion_tokens": 9}, None),
    ("max_tokens 0", {"model": "m", "messages": HI, "max_tokens": 0}, "max_tokens"),
    ("max_tokens a float", {"model": "m", "messages": HI, "max_tokens": 5.0}, "max_tokens"),
    ("max_tokens true", {"model": "m", "messages": HI, "max_tokens": True}, "max_tokens"),
    ("temperature too high", {"model": "m", "messages": HI, "temperature": 2.5}, "temperature"),
    ("temperature below 0", {"model": "m", "messages": HI, "temperature": -0.1}, "temperature"),
    ("temperature a string", {"model": "m", "messages": HI, "temperature": "hot"}, "temperature"),
    ("temperature true", {"model": "m", "messages": HI, "temperature": True}, "temperature"),
    ("top_p above 1", {"model": "m", "messages": HI, "top_p": 1.5}, "top_p"),
    (
        "presence_penalty below -2",
        {"model": "m", "messages": HI, "presence_penalty": -3},
        "presence_penalty",
    ),
    (
        "frequency_penalty above 2",
        {"model": "m", "messages": HI, "frequency_penalty": 2.01},
        "frequency_penalty",
    ),
    (
        "stream_options a list",
        {"model": "m", "messages": HI, "stream_options": []},
        "stream_options",
    ),
    (
        "stream_options, another key",
        {"model": "m", "messages": HI, "stream_options": {"x": 1}},
        None,
    ),
    (
        "include_usage a string",
        {"model": "m", "messages": HI, "stream_options": {"include_usage": "yes"}},
        "stream_options.include_usage",
    ),
    (
        "include_usage null",
        {"model": "m", "messages": HI, "stream_options": {"include_usage": None}},
        "stream_options.include_usage",
    ),
    ("an unknown key", {"model": "m", "messages": HI, "x": 1}, None),
    ("no model", {"messages": HI}, "model"),
    ("an empty model", {"model": "", "messages": HI}, "model"),
    ("a 257-character model", {"model": "m" * 257, "messages": HI}, "model"),
    ("a number as model", {"model": 7, "messages": HI}, "model"),
    ("no messages", {"model": "m"}, "messages"),
    ("no message", {"model": "m", "messages": []}, "messages"),
    ("messages as an object", {"model": "m", "messages": HI[0]}, "messages"),
    ("messages as a number", {"model": "m", "messages": 5}, "messages"),
    ("messages as a string", {"model": "m", "messages": "hi"}, "messages"),
    ("a message that is a string", {"model": "m", "messages": ["hi"]}, "messages.0"),
    ("a message with a name", {"model": "m", "messages": [{**HI[0], "name": "n"}]}, None),
    (
        "a message without a role",
        {"model": "m", "messages": [{"content": "hi"}]},
        "messages.0.role",
    ),
    ("a message without content", {"model": "m", "messages": [{"role": "user"}]}, None),
    (
        "a tool result",
        {"model": "m", "messages": [{"role": "tool", "content": "r", "tool_call_id": "c"}]},
        None,
    ),
    (
        "a tool result without its call's id",
        {"model": "m", "messages": [{"role": "tool", "content": "r"}]},
        "messages[0].tool_call_id",
    ),
    ("a function result", {"model": "m", "messages": [{"role": "function", "content": "r"}]}, None),
    (
        "an unknown role",
        {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
        "messages.0.role",
    ),
    (
        "a role that is a list",
        {"model": "m", "messages": [{"role": ["user"], "content": "x"}]},
        "messages.0.role",
    ),
    ("null content", {"model": "m", "messages": [{"role": "user", "content": None}]}, None),
    (
        "content parts",
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
        None,
    ),
    (
        "a number as content",
        {"model": "m", "messages": [{"role": "user", "content": 5}]},
        "messages.0.content",
    ),
    ("stream as a string", {"model": "m", "messages": HI, "stream": "yes"}, "stream"),
    ("stream as a number", {"model": "m", "messages": HI, "stream": 1}, "stream"),
    ("stream null", {"model": "m", "messages": HI, "stream": None}, "stream"),
]


@pytest.mark.parametrize(("name", "body", "param"), LEFT, ids=[r[0] for r in LEFT])
def test_other_bodies_are_left_to_validation(name: str, body: Any, param: str | None) -> None:
    assert plain_chat(body) is None, name
    raw = orjson.dumps(body)
    if param is None:
        assert parse_chat(raw) == validated(body)
        return
    with pytest.raises(ClientRequestError) as caught:
        parse_chat(raw)
    assert (caught.value.param or "") == param


_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-3, 300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4)
)
_roles = st.sampled_from(
    ["system", "developer", "user", "assistant", "tool", "function", "robot", ""]
)
_message = st.dictionaries(
    st.sampled_from(["role", "content", "name", "tool_call_id"]),
    _roles
    | st.text(max_size=3)
    | _json_leaf
    | st.lists(st.just({"type": "text", "text": "x"}), max_size=1),
    max_size=3,
) | st.fixed_dictionaries({"role": _roles, "content": st.text(max_size=5)})
_number = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2.5, 2.5) | st.just("1")
_options: st.SearchStrategy[Any] = (
    st.none()
    | st.dictionaries(
        st.sampled_from(["include_usage", "x"]), st.none() | st.booleans() | st.just(1), max_size=2
    )
    | st.just([])
)
_params = st.fixed_dictionaries(
    {},
    optional={
        "temperature": _number,
        "top_p": _number,
        "presence_penalty": _number,
        "frequency_penalty": _number,
        "max_tokens": st.none() | st.booleans() | st.integers(-1, 3) | st.just(2.0),
        "stream_options": _options,
        "seed": st.integers(0, 3),
    },
)
_body = st.dictionaries(
    st.sampled_from(["model", "messages", "stream", "temperature", "stop", "x"]),
    st.one_of(
        st.text(max_size=3),
        st.text(min_size=255, max_size=258, alphabet="ab"),
        st.lists(_message, max_size=3),
        _json_leaf,
    ),
    max_size=4,
) | st.fixed_dictionaries(
    {
        "model": st.text(min_size=1, max_size=8),
        "messages": st.lists(_message, min_size=1, max_size=3),
    },
    optional={"stream": st.booleans() | _json_leaf},
)
_plain_body = st.builds(
    lambda core, params: {**core, **params},
    st.fixed_dictionaries(
        {
            "model": st.text(min_size=1, max_size=3),
            "messages": st.lists(
                st.fixed_dictionaries({"role": _roles, "content": st.text(max_size=3)}),
                min_size=1,
                max_size=2,
            ),
        },
        optional={"stream": st.booleans()},
    ),
    _params,
)


@settings(max_examples=1000)
@given(_body | _plain_body)
def test_whatever_it_reads_the_validated_path_reads_the_same(body: dict[str, Any]) -> None:
    conv = plain_chat(body)
    if conv is None:
        return
    assert validated(body) == conv
