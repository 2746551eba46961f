"""The OpenAI contract, checked with the ``openai`` SDK's own pydantic types.

"Strict" here means, for every response body and every streamed chunk:

1. pydantic strict mode (``model_validate(obj, strict=True)``) on the SDK type
   (:class:`openai.types.chat.ChatCompletion`, :class:`~openai.types.chat.ChatCompletionChunk`,
   :class:`openai.types.Model`, :class:`openai.types.ImagesResponse`,
   :class:`openai.types.shared.ErrorObject`): every required field present, no type coercion
   (``"1"`` is not an integer, ``1`` is not a string, a float ``created`` is refused), no
   ``null`` where the type has no ``None``, and ``Literal`` values exact (``object`` must be
   ``"chat.completion.chunk"``, ``finish_reason`` one of OpenAI's values, ``role``
   ``"assistant"``);
2. a few rules the types leave optional but every OpenAI client relies on: a non-empty ``id``;
   a ``chat.completion`` has at least one choice whose message has text or tool calls; a model
   list is ``{"object": "list", "data": [...]}``; an images response has ``data`` with a ``url``
   or ``b64_json`` per image; an error body is ``{"error": {message, type, ...}}``.

Extra fields are never a violation: OpenAI's own types allow them (``extra="allow"``), and
proxies legitimately add ``reasoning_content`` or ``annotations``.

**Wire exactness** (``--strict``): the types above leave fields optional that the OpenAI API
always returns, and stricter clients and compliance suites require them. :data:`EXACT_FIELDS`
lists them per object, each with the reference it comes from; :func:`exact_problems` reports
the missing ones, and ``violations(..., strict=True)`` adds them to the contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from openai.types import ImagesResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.shared import ErrorObject
from pydantic import BaseModel, ValidationError

__all__ = ["EXACT_FIELDS", "ExactField", "Kind", "exact_problems", "violations"]

Kind = Literal["chat.completion", "chat.completion.chunk", "model.list", "images", "error"]

_TYPES: dict[str, type[BaseModel]] = {
    "chat.completion": ChatCompletion,
    "chat.completion.chunk": ChatCompletionChunk,
    "images": ImagesResponse,
}


_REF = "OpenAI API reference, Chat Completions"
_SPEC = "openai/openai-openapi openapi.yaml"


@dataclass(frozen=True)
class ExactField:
    """A field the OpenAI API returns: ``path`` (``choices[].message.refusal``; ``[]`` = every
    item), the JSON types it may have (``"null"``, ``"string"``, ``"array"``, ``"object"``,
    ``"integer"``), and ``source``: where the API says so."""

    path: str
    types: tuple[str, ...]
    source: str


EXACT_FIELDS: dict[str, tuple[ExactField, ...]] = {
    "chat.completion": (
        ExactField(
            "system_fingerprint",
            ("string", "null"),
            f"{_REF}, the chat completion object (deprecated, still returned); "
            f"{_SPEC} CreateChatCompletionResponse",
        ),
        ExactField(
            "service_tier",
            ("string", "null"),
            f"{_REF}, the chat completion object; {_SPEC} ServiceTier",
        ),
        ExactField(
            "choices[].logprobs",
            ("object", "null"),
            f"{_SPEC} CreateChatCompletionResponse.choices: required, nullable",
        ),
        ExactField(
            "choices[].message.refusal",
            ("string", "null"),
            f"{_SPEC} ChatCompletionResponseMessage: required (role, content, refusal)",
        ),
        ExactField(
            "choices[].message.annotations",
            ("array",),
            f"{_REF}, the chat completion object (example: annotations []); "
            f"{_SPEC} ChatCompletionResponseMessage.annotations",
        ),
        ExactField("usage", ("object",), f"{_SPEC} CompletionUsage"),
        ExactField(
            "usage.prompt_tokens_details",
            ("object",),
            f"{_REF}, the chat completion object (cached_tokens, audio_tokens); "
            f"{_SPEC} CompletionUsage",
        ),
        ExactField(
            "usage.completion_tokens_details",
            ("object",),
            f"{_REF}, the chat completion object (reasoning_tokens, audio_tokens, "
            f"accepted_prediction_tokens, rejected_prediction_tokens); {_SPEC} CompletionUsage",
        ),
    ),
    "chat.completion.chunk": (
        ExactField(
            "system_fingerprint",
            ("string", "null"),
            f"{_REF}, the chat completion chunk object; {_SPEC} CreateChatCompletionStreamResponse",
        ),
        ExactField(
            "service_tier",
            ("string", "null"),
            f"{_REF}, the chat completion chunk object",
        ),
        ExactField(
            "choices[].logprobs",
            ("object", "null"),
            f"{_REF}, the chat completion chunk object (choices[].logprobs)",
        ),
    ),
}
"""The fields OpenAI returns beyond what its SDK types require, per object kind."""

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "string": (str,),
    "array": (list,),
    "object": (dict,),
    "integer": (int,),
}


def _walk(obj: Any, parts: list[str], at: str) -> list[tuple[str, bool, Any]]:
    """``(path, present, value)`` for every place ``parts`` leads to in ``obj``."""
    if not parts:
        return [(at, True, obj)]
    head, rest = parts[0], parts[1:]
    many = head.endswith("[]")
    key = head[:-2] if many else head
    if not isinstance(obj, dict):
        return []
    where = f"{at}.{key}" if at else key
    if key not in obj:
        return [(where, False, None)]
    value = obj[key]
    if not many:
        return _walk(value, rest, where)
    if not isinstance(value, list):
        return []
    out: list[tuple[str, bool, Any]] = []
    for i, item in enumerate(value):
        out.extend(_walk(item, rest, f"{where}.{i}"))
    return out


def exact_problems(kind: str, obj: Any) -> list[str]:
    """The fields of :data:`EXACT_FIELDS` ``[kind]`` that ``obj`` lacks or carries with the
    wrong JSON type; ``[]`` when it carries them all. A usage-only chunk (``choices: []``)
    has no choice to check. Never raises."""
    problems: list[str] = []
    for rule in EXACT_FIELDS.get(kind, ()):
        for path, present, value in _walk(obj, rule.path.split("."), ""):
            if not present:
                problems.append(f"{path}: missing (OpenAI returns it: {rule.source})")
            elif not isinstance(value, tuple(t for n in rule.types for t in _JSON_TYPES[n])):
                problems.append(f"{path}: must be {' or '.join(rule.types)}")
    return problems


def _errors(exc: ValidationError, prefix: str = "") -> list[str]:
    out: list[str] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        value = err.get("input")
        shown = repr(value)[:60] if not isinstance(value, dict | list) else type(value).__name__
        out.append(f"{prefix}{loc or '(root)'}: {err.get('msg', 'invalid')} (got {shown})")
    return out


def _strict(model: type[BaseModel], obj: Any, prefix: str = "") -> list[str]:
    try:
        model.model_validate(obj, strict=True)
    except ValidationError as exc:
        return _errors(exc, prefix)
    return []


def violations(kind: Kind, obj: Any, *, strict: bool = False) -> list[str]:
    """Every way ``obj`` (decoded JSON) breaks the OpenAI contract for ``kind``; ``[]`` when
    none. Each item is ``"<field path>: <problem>"``. ``strict`` adds the wire-exactness
    fields (:func:`exact_problems`). Never raises."""
    problems = _violations(kind, obj)
    if strict and isinstance(obj, dict):
        problems += exact_problems(kind, obj)
    return problems


def _violations(kind: Kind, obj: Any) -> list[str]:
    if not isinstance(obj, dict):
        return [f"(root): expected a JSON object, got {type(obj).__name__}"]
    if kind == "model.list":
        return _model_list(obj)
    if kind == "error":
        inner = obj.get("error")
        if not isinstance(inner, dict):
            return ['error: expected an object {"error": {"message", "type", ...}}']
        return _strict(ErrorObject, inner, "error.")
    problems = _strict(_TYPES[kind], obj)
    if kind in ("chat.completion", "chat.completion.chunk"):
        if not (isinstance(obj.get("id"), str) and obj["id"]):
            problems.append("id: must be a non-empty string")
    if kind == "chat.completion" and not problems:
        choices = obj["choices"]
        if not choices:
            problems.append("choices: a completion needs at least one choice")
        for i, choice in enumerate(choices):
            message = choice.get("message") or {}
            if message.get("content") is None and not message.get("tool_calls"):
                problems.append(f"choices.{i}.message.content: null without tool_calls")
    if kind == "images" and not problems:
        data = obj.get("data")
        if not isinstance(data, list) or not data:
            problems.append("data: an images response needs a non-empty list")
    return problems


def _model_list(obj: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if obj.get("object") != "list":
        problems.append(f"object: must be 'list' (got {obj.get('object')!r})")
    data = obj.get("data")
    if not isinstance(data, list):
        return [*problems, "data: must be a list of model objects"]
    for i, entry in enumerate(data):
        problems.extend(_strict(Model, entry, f"data.{i}."))
        if len(problems) > 20:
            problems.append("… (further problems omitted)")
            break
    return problems
