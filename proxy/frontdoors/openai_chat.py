"""The OpenAI Chat Completions front door (``POST /v1/chat/completions``), pure.

- :func:`parse_chat` / :func:`conversation_of`: the request body -> :class:`Conversation`
  (roles ``developer`` -> ``system``, ``function`` -> ``tool``; content parts kept as OpenAI
  chat parts, so media uploads work unchanged).
- :class:`ChatStream`: the :class:`~proxy.relay.StreamRenderer`, OpenAI ``chat.completion.chunk``
  SSE bytes (:class:`~proxy.qwen.translate.ChunkEncoder`), ending ``data: [DONE]``; a failure is
  ``data: {"error": {...}}`` and no ``[DONE]``.
- :class:`ChatBody`: the :class:`~proxy.relay.BodyRenderer`, one ``chat.completion``
  (:class:`~proxy.qwen.translate.Aggregate`).
- :func:`render_error`: :func:`proxy.errors.to_openai`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from proxy.api_models import (
    ChatCompletionRequest,
    ChatMessage,
    decode_json_body,
    parse_chat_request,
)
from proxy.conversation import Conversation, Role, Turn
from proxy.errors import ProxyError, to_openai
from proxy.frontdoors import FrontDoor
from proxy.qwen.translate import Aggregate, ChunkEncoder, OutEvent, Usage

__all__ = [
    "OPENAI_CHAT",
    "ChatBody",
    "ChatStream",
    "conversation_of",
    "new_completion_id",
    "parse_chat",
    "render_error",
]

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}


def new_completion_id() -> str:
    """A fresh ``chatcmpl-<32 hex>`` id."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def parse_chat(raw: bytes) -> Conversation:
    """Decode and validate a ``/v1/chat/completions`` body. Raises
    :class:`~proxy.errors.InvalidJSONError` or :class:`~proxy.errors.ClientRequestError`
    (with ``param``)."""
    return conversation_of(parse_chat_request(decode_json_body(raw)))


def _turn(message: ChatMessage) -> Turn:
    return Turn(role=_ROLES[message.role], content=message.content, name=message.name)


def conversation_of(req: ChatCompletionRequest) -> Conversation:
    """The :class:`Conversation` of a validated chat request."""
    return Conversation(
        model=req.model,
        turns=[_turn(m) for m in req.messages],
        stream=req.stream,
        thinking=req.enable_thinking,
        size=req.size,
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
    )


class ChatStream:
    """Streams one completion as OpenAI ``chat.completion.chunk`` events (see module doc)."""

    __slots__ = ("_encoder", "content_type", "id")

    def __init__(self, conv: Conversation, *, completion_id: str | None = None) -> None:
        self.id = completion_id or new_completion_id()
        self.content_type = "text/event-stream; charset=utf-8"
        self._encoder = ChunkEncoder(
            completion_id=self.id,
            model=conv.model,
            created=int(time.time()),
            include_usage=conv.include_usage,
        )

    def head(self) -> bytes:
        """The role chunk."""
        return self._encoder.role()

    def render(self, events: list[OutEvent], usage: Usage | None) -> bytes:
        """The chunks of ``events`` (``[DONE]`` after the finish, none after a failure)."""
        enc = self._encoder
        if len(events) == 1:
            return enc.encode(events[0], usage)
        return b"".join([enc.encode(e, usage) for e in events])

    def keepalive(self) -> bytes:
        """An SSE comment line."""
        return b": keep-alive\n\n"


class ChatBody:
    """Folds the events into one OpenAI ``chat.completion`` object."""

    __slots__ = ("_agg", "_created", "_model", "id")

    def __init__(self, conv: Conversation, *, completion_id: str | None = None) -> None:
        self.id = completion_id or new_completion_id()
        self._model = conv.model
        self._created = int(time.time())
        self._agg = Aggregate()

    def add(self, event: OutEvent) -> None:
        """Record one event."""
        self._agg.add(event)

    def body(self, usage: Usage | None) -> dict[str, Any]:
        """The ``chat.completion``; raises the stream's error if it failed."""
        return self._agg.completion(
            completion_id=self.id, model=self._model, created=self._created, usage=usage
        )


def render_error(exc: ProxyError) -> tuple[int, dict[str, str], dict[str, Any]]:
    """``(status, headers, {"error": {message, type, param, code}})``."""
    return to_openai(exc)


OPENAI_CHAT = FrontDoor("openai_chat", render_error)
