"""The one internal request representation every front door converts its API into.

Pure (no I/O, no aiohttp). ``/v1/chat/completions``, ``/v1/messages`` and ``/v1/responses``
each parse their body into a :class:`Conversation`; :class:`proxy.service.ChatService` takes it
from there (model route, uploads, account, the v2 flow of docs/protocol.md §3-§4), and the answer's
events (:mod:`proxy.qwen.translate`) are rendered back by the front door's renderers.

Shapes (the contract between the front doors, docs/architecture.md):

- :class:`Turn` ``content`` is text, or a list of OpenAI chat content parts
  (``{"type": "text", "text"}``, ``{"type": "image_url", "image_url": {"url"}}``,
  ``{"type": "file", "file": {...}}``, ``{"type": "input_audio", ...}``); media parts are uploaded
  as today (docs/protocol.md §7), whichever API they came from.
- Tool calls already made are :class:`ToolCallRecord` (``arguments`` is JSON text, as OpenAI
  carries it); a tool result is a ``role="tool"`` turn with ``tool_call_id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Conversation",
    "Role",
    "ToolCallRecord",
    "ToolChoice",
    "ToolSpec",
    "Turn",
]

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One function tool the client offers.

    ``parameters`` is the JSON Schema of the arguments object (``None``: no arguments).
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """Whether and which tool the model may call.

    ``mode``: ``auto`` (the model decides), ``none`` (never a call), ``required`` (at least one
    call) or ``named`` (a call of the tool ``name``).
    """

    mode: Literal["auto", "none", "required", "named"] = "auto"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """A call the assistant already made, in the history: ``arguments`` is JSON object text."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Turn:
    """One message of the history, API-neutral.

    ``content``: text, OpenAI chat content parts, or ``None``. ``tool_calls``: the calls an
    assistant turn made. ``tool_call_id`` / ``name``: on tool turns, the call this result answers
    and the tool's name when known. ``reasoning``: assistant reasoning the client sent back.

    Where the turn is in the client's request, for the ``param`` of an error about it (not part
    of the turn: equal turns may come from different places, and a stored history keeps none):
    ``where``, the path of its content (``input[2].content``, ``messages.1.content``);
    ``part_params``, when ``content`` is a list, the path of what each part carries (its text,
    URL or data: ``messages[0].content[1].image_url.url``), in order. Empty when not known.
    """

    role: Role
    content: str | list[dict[str, Any]] | None = None
    tool_calls: tuple[ToolCallRecord, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    reasoning: str | None = None
    where: str | None = field(default=None, compare=False)
    part_params: tuple[str, ...] = field(default=(), compare=False)


@dataclass(slots=True)
class Conversation:
    """A whole request, API-neutral.

    ``model``: the name the client asked for (after any model map). ``thinking``: ``None`` lets
    the model name decide (``-thinking``). ``size``: the Qwen extension for ``-image`` models.
    ``stop``: stop sequences (emulated: the text is cut at the first one). ``max_output_tokens``:
    emulated where possible. ``include_usage``: OpenAI ``stream_options.include_usage``.
    ``metadata``: front-door specific extras. ``turns_param``: the request field the turns come
    from (``messages``; ``input`` on the Responses API), the ``param`` of an error about them
    all (no text to send, too many media parts).
    """

    model: str
    turns: list[Turn]
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = ToolChoice()
    parallel_tool_calls: bool = True
    stream: bool = False
    thinking: bool | None = None
    size: str | None = None
    stop: tuple[str, ...] = ()
    max_output_tokens: int | None = None
    include_usage: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    turns_param: str = "messages"

    @property
    def tools_active(self) -> bool:
        """True when tools are offered and ``tool_choice`` is not ``none`` (the tool prompt is
        sent and the answer is parsed for calls)."""
        return bool(self.tools) and self.tool_choice.mode != "none"
