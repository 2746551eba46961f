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
"""

from __future__ import annotations

from typing import Any, Literal

from openai.types import ImagesResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.shared import ErrorObject
from pydantic import BaseModel, ValidationError

__all__ = ["Kind", "violations"]

Kind = Literal["chat.completion", "chat.completion.chunk", "model.list", "images", "error"]

_TYPES: dict[str, type[BaseModel]] = {
    "chat.completion": ChatCompletion,
    "chat.completion.chunk": ChatCompletionChunk,
    "images": ImagesResponse,
}


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


def violations(kind: Kind, obj: Any) -> list[str]:
    """Every way ``obj`` (decoded JSON) breaks the OpenAI contract for ``kind``; ``[]`` when
    none. Each item is ``"<field path>: <problem>"``. Never raises."""
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
