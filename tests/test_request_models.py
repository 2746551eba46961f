"""Pure request building: model routing, history flattening, v2 bodies, body decoding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, field_validator

from proxy.api_models import ChatMessage, decode_json_body, parse_body, parse_chat_request
from proxy.errors import (
    ClientRequestError,
    InvalidJSONError,
    ModelNotFoundError,
    UnsupportedContentError,
)
from proxy.qwen.models import Catalog, parse_models
from proxy.qwen.request import (
    ModelRoute,
    chats_new_body,
    completion_body,
    encode_json,
    flatten_messages,
    split_model_name,
)


def test_real_models_list_offers_variants_from_numeric_abilities(samples_dir: Path) -> None:
    """The captured guest model list parses, and variants follow abilities and chat types."""
    payload = json.loads((samples_dir / "models_list_2025-10-26.json").read_text())
    catalog = Catalog(parse_models(payload))
    ids = {m["id"] for m in catalog.openai_list()["data"]}
    assert {"qwen3-max", "qwen3-vl-plus", "qwen3-coder-plus", "qwen3-vl-32b"} <= ids
    for model in catalog.models.values():
        assert (f"{model.id}-search" in ids) == ("search" in model.chat_types)
        assert (f"{model.id}-thinking" in ids) == model.thinking


def test_numeric_abilities_count_as_true() -> None:
    """abilities.thinking = 1 (a number) enables the -thinking variant (docs/protocol.md §8)."""
    payload = {
        "data": [
            {"id": "m", "info": {"meta": {"abilities": {"thinking": 1}, "chat_type": ["t2t"]}}}
        ]
    }
    catalog = Catalog(parse_models(payload))
    assert catalog.route("m-thinking") == ModelRoute("m", "t2t", True)
    with pytest.raises(ModelNotFoundError):
        catalog.route("m-search")


def test_nested_2026_model_list_and_inactive_models() -> None:
    """data.data lists parse; inactive models are not offered."""
    payload = {"data": {"data": [{"id": "a"}, {"id": "b", "info": {"is_active": False}}]}}
    assert [m.id for m in parse_models(payload)] == ["a"]


def test_model_routing() -> None:
    """Suffixes select chat type and thinking; enable_thinking works without a suffix."""
    catalog = Catalog(
        parse_models(
            {
                "data": [
                    {
                        "id": "q",
                        "info": {
                            "meta": {"abilities": {"thinking": 1}, "chat_type": ["t2t", "search"]}
                        },
                    }
                ]
            }
        )
    )
    assert catalog.route("q") == ModelRoute("q", "t2t", False)
    assert catalog.route("q-search") == ModelRoute("q", "search", False)
    assert catalog.route("q-thinking-search") == ModelRoute("q", "search", True)
    assert catalog.route("q", enable_thinking=True) == ModelRoute("q", "t2t", True)
    with pytest.raises(ModelNotFoundError) as info:
        catalog.route("gpt-4o")
    assert info.value.param == "model"


def test_a_resolved_name_is_looked_up_and_a_refused_one_refused_again() -> None:
    """Routes are kept per (name, enable_thinking) in a bounded table: the same answers, every
    time, however many names clients send."""
    from proxy.qwen.models import _MAX_ROUTES

    meta = {"abilities": {"thinking": 1}, "chat_type": ["t2t", "search"]}
    catalog = Catalog(parse_models({"data": [{"id": "q", "info": {"meta": meta}}]}))
    first = catalog.route("q-search")
    assert catalog.route("q-search") is first  # looked up
    assert catalog.route("Q-SEARCH") == first
    assert catalog.route("q", enable_thinking=True) == ModelRoute("q", "t2t", True)
    assert catalog.route("q", enable_thinking=False) == ModelRoute("q", "t2t", False)
    base = "q-thinking-search"
    for _ in range(2):
        for i in range(_MAX_ROUTES + 5):  # more names than the table holds (letter cases)
            name = "".join(c.upper() if i >> k & 1 else c for k, c in enumerate(base))
            assert catalog.route(name) == ModelRoute("q", "search", True)
            with pytest.raises(ModelNotFoundError):
                catalog.route(f"unknown-{i}")  # refused, never kept
        assert catalog.route("q-thinking") == ModelRoute("q", "t2t", True)
    assert catalog._routes.cache_info().currsize <= _MAX_ROUTES
    assert split_model_name("a-search-thinking") == ("a", frozenset({"search", "thinking"}))


def test_single_user_message_is_sent_verbatim() -> None:
    """One user message becomes the prompt exactly, with no role labels added."""
    assert flatten_messages([ChatMessage(role="user", content="你好")]) == "你好"


def test_history_is_flattened_into_one_prompt() -> None:
    """System text comes first, then labelled turns separated by blank lines."""
    prompt = flatten_messages(
        [
            ChatMessage(role="user", content="Hi"),
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="assistant", content="Hello!"),
            ChatMessage(role="user", content=[{"type": "text", "text": "Who are you?"}]),
        ]
    )
    assert prompt == "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: Who are you?"


def test_unknown_parts_are_refused_clearly() -> None:
    """Unknown part types get a clear unsupported-content error; image parts are left to
    ``media_parts`` (uploaded), so an image-only message is not an empty prompt error with
    ``allow_empty``."""
    with pytest.raises(UnsupportedContentError):
        flatten_messages(
            [ChatMessage(role="user", content=[{"type": "hologram", "hologram": {"url": "x"}}])]
        )
    image_only = [
        ChatMessage(role="user", content=[{"type": "image_url", "image_url": {"url": "x"}}])
    ]
    assert flatten_messages(image_only, allow_empty=True) == ""
    with pytest.raises(UnsupportedContentError):
        flatten_messages([ChatMessage(role="user", content="   ")])


def test_completion_body_follows_the_v2_layout() -> None:
    """The completion body has every field docs/protocol.md §4.1 requires, one message, ids both
    ways."""
    ids = iter(["fid-1", "child-1"])
    body = completion_body(
        ModelRoute("qwen3-max", "search", True),
        chat_id="c-1",
        prompt="q",
        now_s=100,
        new_id=lambda: next(ids),
    )
    assert body["stream"] is True and body["incremental_output"] is True
    assert body["version"] == "2.1" and body["chat_id"] == "c-1"
    (msg,) = body["messages"]
    assert msg["content"] == "q" and msg["fid"] == "fid-1" and msg["childrenIds"] == ["child-1"]
    assert msg["chat_type"] == msg["sub_chat_type"] == "search"
    assert msg["extra"]["meta"]["subChatType"] == "search"
    assert msg["feature_config"]["output_schema"] == "phase"
    assert msg["feature_config"]["thinking_enabled"] is True
    assert chats_new_body(ModelRoute("m"), now_ms=5)["timestamp"] == 5


def test_json_is_encoded_as_utf8_bytes() -> None:
    """Upstream JSON carries Chinese as raw UTF-8, never as \\u escapes."""
    assert encode_json({"c": "你好"}) == '{"c":"你好"}'.encode()


def test_body_decoding_errors_are_specific() -> None:
    """Empty, non-UTF-8 (GBK) and malformed bodies each get their own clear error."""
    with pytest.raises(InvalidJSONError, match="empty"):
        decode_json_body(b"")
    with pytest.raises(InvalidJSONError, match="GB18030") as info:
        decode_json_body('{"content":"你好"}'.encode("gbk"))
    assert info.value.error_code() == "invalid_encoding"
    with pytest.raises(InvalidJSONError, match="not valid JSON"):
        decode_json_body(b'{"model": ')
    assert decode_json_body(b'\xef\xbb\xbf{"a":1}') == {"a": 1}


def test_request_validation_names_the_field() -> None:
    """A missing field gives a 400 naming it; unknown OpenAI parameters are accepted."""
    with pytest.raises(ClientRequestError) as info:
        parse_chat_request({"model": "m"})
    assert info.value.param == "messages"
    req = parse_chat_request(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0.2}
    )
    assert req.stream is False


class _Echoing(BaseModel):
    """A model whose validator quotes the value whole, as a future one might."""

    name: str = ""
    tags: dict[str, int] = {}

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        raise ValueError(f"no such name: {value}")


@pytest.mark.parametrize(
    ("body", "param"),
    [({"name": "N" * 5000}, "name"), ({"tags": {"N" * 5000: "x"}}, "tags." + "N" * 79 + "…")],
)
def test_validation_errors_quote_the_value_and_a_key_cut_to_80(
    body: dict[str, Any], param: str
) -> None:
    """A value the validator's message repeats, and a client's key in the field's location,
    come back at most 80 characters long."""
    with pytest.raises(ClientRequestError) as info:
        parse_body(_Echoing, body)
    assert info.value.param == param
    assert "N" * 80 not in info.value.message and "N" * 79 in info.value.message
