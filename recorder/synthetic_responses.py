"""Synthetic chat.qwen.ai cassettes for the Responses API front door (``/v1/responses``).

What chat.qwen.ai would answer to the requests the proxy makes for multi-turn Responses
conversations (``previous_response_id``, or the same history sent as input items). Like
:mod:`recorder.synthetic`, whose frame helpers this module uses, every byte is written from
``docs/protocol.md``, none is captured: the two-step flow of §3 and §4.1 (the history flattened into
one user message, §4.1 "One message only") and the SSE frames of §5.1–§5.4. Each cassette says
so in its provenance (``kind: synthetic``, the sections followed).

The prompts are the flattened conversations the proxy sends; they are written out here because
``recorder`` never imports ``proxy`` (docs/architecture.md), and
``tests/test_e2e_responses.py`` checks that the proxy flattens the conversations to exactly
these texts. The agent scenarios are the two turns of the OpenAI Agents SDK running a function
tool (the tool as the SDK declares it, strict schema and all); their tool prompts are written by
:func:`recorder.synthetic_tools.render_prompt`, and the answers use Qwen's ``<tool_call>``
markup (``docs/agents.md`` §1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from recorder.cassette import Cassette, Interaction
from recorder.synthetic import (
    BASE_EPOCH_S,
    COMPLETIONS_URL,
    SCENARIOS,
    Scenario,
    _completions_headers,
    _Frames,
    _json_compact,
    _pieces,
    _t_headers,
    _uid,
    chats_new_interaction,
    synthetic_cassette,
    user_message,
)
from recorder.synthetic_tools import render_prompt

__all__ = [
    "AGENT_CALL_ARGUMENTS",
    "AGENT_QUESTION",
    "AGENT_TOOL",
    "AGENT_TOOL_OUTPUT",
    "CONTINUES",
    "FOLLOWUP_QUESTION",
    "RESPONSES_SCENARIOS",
    "build",
    "build_all",
]

RESPONSES_EPOCH_S = BASE_EPOCH_S + 10800
"""Scenario ``i`` happens ``i`` minutes after 2026-11-22T12:00:00Z."""

_FIRST = next(s for s in SCENARIOS if s.name == "t2t_answer")
FOLLOWUP_QUESTION = "Now say goodbye in one short sentence."
"""The second user turn; the first turn is scenario ``t2t_answer`` (question and answer)."""

_GOODBYE_PIECES = ("Goodbye", "!", " Have", " a", " wonderful", " day", ".")

AGENT_QUESTION = "What's the weather in Paris?"
AGENT_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        # as the Agents SDK builds it from `def get_weather(city: str) -> str` (key order kept)
        "parameters": {
            "properties": {"city": {"title": "City", "type": "string"}},
            "required": ["city"],
            "title": "get_weather_args",
            "type": "object",
            "additionalProperties": False,
        },
    },
}
"""The agent scenarios' one tool (chat shape; the Responses shape is its ``function`` flat)."""
AGENT_CALL_ARGUMENTS = '{"city": "Paris"}'
AGENT_TOOL_OUTPUT = "Paris: sunny, 21 °C"
"""What the README's tool returns for Paris: the second turn's ``function_call_output``."""

_AGENT_CALL_PIECES = (
    "<tool_call>\n",
    '{"name": "get_weather", ',
    '"arguments": {"city": "Paris"}}\n</tool_call>',
)
_AGENT_ANSWER_PIECES = ("It is", " sunny", " and 21 °C", " in Paris", ".")
_AGENT_HISTORY: tuple[dict[str, Any], ...] = (
    {"role": "user", "content": AGENT_QUESTION},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_any",  # ids are not part of the prompt
                "type": "function",
                "function": {"name": "get_weather", "arguments": AGENT_CALL_ARGUMENTS},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_any", "content": AGENT_TOOL_OUTPUT},
)


def _join(pieces: Sequence[str]) -> str:
    return "".join(pieces)


_T2T = ("3", "4.1", "5.1", "5.2", "5.3", "5.4")

RESPONSES_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="responses_followup",
        description=(
            "Synthetic second turn of a Responses conversation: the t2t_answer exchange and a "
            "follow-up question, flattened into one user message."
        ),
        protocol_sections=_T2T,
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt=(
            f"User: {_FIRST.prompt}\n\nAssistant: {_FIRST.expected_content}\n\n"
            f"User: {FOLLOWUP_QUESTION}"
        ),
        chat_type="t2t",
        thinking=False,
        expected_content=_join(_GOODBYE_PIECES),
    ),
    Scenario(
        name="responses_agent_call",
        description=(
            "Synthetic first turn of an OpenAI Agents SDK run with one function tool: the model "
            "answers with a Hermes <tool_call> block."
        ),
        protocol_sections=_T2T,
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt=render_prompt(_AGENT_HISTORY[:1], [AGENT_TOOL]),
        chat_type="t2t",
        thinking=False,
        expected_content=None,
    ),
    Scenario(
        name="responses_agent_result",
        description=(
            "Synthetic second turn of that run: the call and the tool's output in the history "
            "(a <tool_response> user turn); the model answers in prose."
        ),
        protocol_sections=_T2T,
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt=render_prompt(_AGENT_HISTORY, [AGENT_TOOL]),
        chat_type="t2t",
        thinking=False,
        expected_content=_join(_AGENT_ANSWER_PIECES),
    ),
)


CONTINUES: dict[str, tuple[str, str]] = {
    "responses_followup": ("t2t_answer", FOLLOWUP_QUESTION),
    "responses_agent_result": (
        "responses_agent_call",
        f"User: <tool_response>\n{AGENT_TOOL_OUTPUT}\n</tool_response>",
    ),
}
"""Second turns also recorded as native continuations (§4.1 (a)): scenario name -> (the
scenario whose answer it follows, the prompt of the continuation, which carries only the new
messages; a tool result as the proxy renders it, the ``# Tools`` section not repeated)."""


def _epoch(sc: Scenario) -> int:
    names = [s.name for s in RESPONSES_SCENARIOS]
    return RESPONSES_EPOCH_S + 60 * names.index(sc.name)


def _completions_body(sc: Scenario, *, chat_id: str, parent_id: str | None, ts: int) -> str:
    """The v2 body of §4.1: one user message; ``parent_id`` set for a continuation (§4.1 (a))."""
    feature_config: dict[str, Any] = {"thinking_enabled": sc.thinking, "output_schema": "phase"}
    message = user_message(sc, feature_config, ts)
    message["parentId"] = message["parent_id"] = parent_id
    body: dict[str, Any] = {
        "stream": True,
        "version": "2.1",
        "incremental_output": True,
        "chat_id": chat_id,
        "chat_mode": "normal",
        "model": sc.model,
        "parent_id": parent_id,
        "timestamp": ts + 1,
        "messages": [message],
    }
    return _json_compact(body)


def _completion(
    sc: Scenario, f: _Frames, coalesce: Sequence[int], *, chat_id: str, parent_id: str | None
) -> Interaction:
    ts = _epoch(sc) + (30 if parent_id else 0)
    return Interaction.streamed(
        method="POST",
        uri=f"{COMPLETIONS_URL}?chat_id={chat_id}",
        request_headers=_completions_headers(),
        request_body=_completions_body(sc, chat_id=chat_id, parent_id=parent_id, ts=ts),
        pieces=_pieces(sc, f.events, coalesce=coalesce),
        t_headers_s=_t_headers(sc),
    )


def _stream(
    sc: Scenario, pieces: Sequence[str], *, coalesce: Sequence[int] = ()
) -> list[Interaction]:
    """The two steps (§3, §4) of a new chat, step 2 answered with ``pieces`` (§5); for a second
    turn (:data:`CONTINUES`) also its native continuation: the same answer to the chat of the
    first turn, ``parent_id`` = that answer's ``response_id`` (from its ``response.created``)."""
    chat_id = _uid(sc.name, "chat_id")
    out = [
        chats_new_interaction(sc.name, sc.model, sc.chat_type, _epoch(sc)),
        _completion(sc, _answer(sc, pieces), coalesce, chat_id=chat_id, parent_id=None),
    ]
    if sc.name in CONTINUES:
        first, prompt = CONTINUES[sc.name]
        native = replace(sc, prompt=prompt)
        out.append(
            _completion(
                native,
                _answer(native, pieces),
                coalesce,
                chat_id=_uid(first, "chat_id"),
                parent_id=_uid(first, "response_id"),
            )
        )
    return out


def _answer(sc: Scenario, pieces: Sequence[str]) -> _Frames:
    """Incremental answer frames (§5.1–5.4): created, one per piece, two idle, finished."""
    f = _Frames(sc)
    f.created()
    f.pieces(pieces, "answer")
    f.idle_typing()
    f.finished("answer", with_usage=False)
    return f


def _build_followup(sc: Scenario) -> list[Interaction]:
    """Events: 0 created, 1..7 answer, 8..9 idle, 10 finished."""
    return _stream(sc, _GOODBYE_PIECES, coalesce=(2, 8))


def _build_agent_call(sc: Scenario) -> list[Interaction]:
    """The call block over three frames (events 1..3), two of them in one network chunk."""
    return _stream(sc, _AGENT_CALL_PIECES, coalesce=(1,))


def _build_agent_result(sc: Scenario) -> list[Interaction]:
    """Prose after the tool result: events 0 created, 1..5 answer, 6..7 idle, 8 finished."""
    return _stream(sc, _AGENT_ANSWER_PIECES, coalesce=(3,))


_BUILDERS: dict[str, Callable[[Scenario], list[Interaction]]] = {
    "responses_followup": _build_followup,
    "responses_agent_call": _build_agent_call,
    "responses_agent_result": _build_agent_result,
}


def build(sc: Scenario) -> Cassette:
    """The cassette of one scenario (in memory)."""
    return synthetic_cassette(sc.name, sc.description, sc.protocol_sections, _BUILDERS[sc.name](sc))


def build_all() -> list[Cassette]:
    """Every cassette of this set, in :data:`RESPONSES_SCENARIOS` order."""
    return [build(sc) for sc in RESPONSES_SCENARIOS]
