"""Synthetic chat.qwen.ai cassettes for tool-calling turns (docs/agents.md §1).

Like every synthetic set (:mod:`recorder.synthetic`, whose frame helpers this module uses) no
byte here is captured: the answers are written from ``docs/protocol.md`` (the two-step flow of §3
and §4.1, the SSE frames of §5.1–§5.4, the ``local_tool`` frame of §5.5/§5.6) and from the tool-call
conventions of Qwen models described in ``docs/agents.md`` §1 (Hermes JSON inside
``<tool_call>`` tags, and the XML ``<function=…><parameter=…>`` form). Each cassette says so in
its provenance (``kind: synthetic``).

Every :class:`ToolScenario` holds a fixed OpenAI chat request (``messages`` + ``tools``) and the
outcome the proxy must give for it. The upstream prompt of each cassette is exactly what the
proxy sends for that request: :func:`render_prompt` writes it here, independently (``recorder``
never imports ``proxy``), and ``tests/test_tools_e2e.py`` checks it equals
``proxy.tools.prompt.build_prompt`` for the same request. So ``make serve`` (offline) answers
these requests, and the e2e tests drive them through the official ``openai`` SDK.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from recorder.cassette import Cassette, Interaction
from recorder.synthetic import (
    BASE_EPOCH_S,
    COMPLETIONS_URL,
    Scenario,
    _completions_headers,
    _Frames,
    _json_compact,
    _offset_in,
    _pieces,
    _t_headers,
    _uid,
    chats_new_interaction,
    synthetic_cassette,
    user_message,
)

__all__ = [
    "TOOLS",
    "TOOL_SCENARIOS",
    "ToolScenario",
    "build",
    "build_all",
    "render_prompt",
]

TOOLS_EPOCH_S = BASE_EPOCH_S + 7200
"""Tool scenario ``i`` happens ``i`` minutes after 2026-11-22T11:00:00Z."""

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
READ_FILE_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "read_file",
        "description": "Read a text file of the project.",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "limit": {"type": "integer", "description": "Lines to read"},
            },
            "required": ["path"],
        },
    },
}
TOOLS: tuple[dict[str, Any], ...] = (WEATHER_TOOL, READ_FILE_TOOL)
"""The OpenAI ``tools`` of every tool scenario."""

# The fixed sentences of Qwen's function-calling template (docs/agents.md §1.2), as the proxy sends.
_TOOLS_HEAD = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)
_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
_CLIENT_SIDE = (
    "These functions run on the user's side, not yours: to use one, answer with the "
    "<tool_call> block and stop; its result comes back in a <tool_response></tool_response> "
    "block."
)


def render_prompt(
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]],
    *,
    tool_choice: Any = "auto",
    parallel_tool_calls: bool = True,
    correction: str | None = None,
) -> str:
    """The one user message the proxy sends for an OpenAI request with ``tools``: the
    ``System:`` block with the ``# Tools`` section (and the ``tool_choice`` /
    ``parallel_tool_calls`` lines), then ``User:``/``Assistant:`` blocks; assistant calls as
    ``<tool_call>`` blocks, tool results as a ``User:`` block of ``<tool_response>`` blocks; a
    closing ``System:`` note for calls repeated with the same arguments; with ``correction``
    (the prose of a first answer to a ``required``/named choice), the corrective turn. String
    contents and answered calls only (what the synthetic sets use)."""
    named = tool_choice["function"]["name"] if isinstance(tool_choice, dict) else None
    lines = []
    for tool in tools:
        fn = tool["function"]
        if named is not None and fn["name"] != named:
            continue
        ordered: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            ordered["description"] = fn["description"]
        if fn.get("parameters") is not None:
            ordered["parameters"] = fn["parameters"]
        lines.append(json.dumps({"type": "function", "function": ordered}, ensure_ascii=False))
    section = [_TOOLS_HEAD + "\n".join(lines) + _TOOLS_TAIL, _CLIENT_SIDE]
    if tool_choice == "required":
        section.append("You must call at least one of these functions in this answer.")
    elif named is not None:
        section.append(f"You must call the function {named} in this answer.")
    if not parallel_tool_calls:
        section.append("Call at most one function in this answer.")
    system = [m["content"] for m in messages if m["role"] == "system" and m["content"]]
    blocks = ["System: " + "\n\n".join(["\n".join(system), *section] if system else section)]
    results: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    shown: dict[tuple[str, str], str] = {}
    for m in messages:
        if m["role"] == "tool":
            results.append(f"<tool_response>\n{m['content']}\n</tool_response>")
            continue
        if results:
            blocks.append("User: " + "\n".join(results))
            results = []
        if m["role"] == "user":
            blocks.append(f"User: {m['content']}")
        elif m["role"] == "assistant":
            parts = [m["content"]] if m.get("content") else []
            for call in m.get("tool_calls") or ():
                fn = call["function"]
                args = json.loads(fn["arguments"])
                obj = {"name": fn["name"], "arguments": args}
                parts.append(f"<tool_call>\n{json.dumps(obj, ensure_ascii=False)}\n</tool_call>")
                key = (fn["name"], json.dumps(args, sort_keys=True))
                seen[key] = seen.get(key, 0) + 1
                shown.setdefault(key, json.dumps(args, ensure_ascii=False))
            blocks.append("Assistant: " + "\n".join(parts))
    if results:
        blocks.append("User: " + "\n".join(results))
    notes = [
        f"You have already called {key[0]} with the arguments {shown[key]} {n} times in this "
        "conversation and received its result each time. Do not call it again with the same "
        "arguments: use the results you have, or do something different."
        for key, n in seen.items()
        if n > 1
    ]
    if notes:
        blocks.append("System: " + " ".join(notes))
    if correction is not None:
        if correction.strip():
            blocks.append(f"Assistant: {correction.strip()}")
        what = f"the function {named}" if named is not None else "one of the functions"
        blocks.append(
            f"System: You did not call a function, but this answer must call {what}. Answer "
            "again with only the <tool_call> block."
        )
    return "\n\n".join(blocks)


@dataclass(frozen=True)
class ToolScenario:
    """A tool-calling cassette, the OpenAI request that reaches it and the expected outcome.

    ``messages``: the OpenAI messages (sent with :data:`TOOLS`); ``expected_calls``:
    ``(name, arguments object)`` in order; ``expected_content``: the content the client gets
    (``None`` when the answer is only calls); ``expected_finish``: ``tool_calls`` or ``stop``;
    ``answer``: the upstream answer text pieces (one SSE frame each, ``None`` for the native
    ``local_tool`` frame); ``splits``: extra network chunk boundaries, as
    ``(piece index, text inside that piece, bytes past its start)``; ``tool_choice``: sent when
    not ``None``; ``retry``: the answer to the proxy's corrective turn (a second completion whose
    prompt carries the first answer and the correction line).
    """

    name: str
    description: str
    messages: tuple[dict[str, Any], ...]
    answer: tuple[str | None, ...]
    expected_calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    expected_content: str | None = None
    expected_finish: str = "tool_calls"
    local_tool: tuple[tuple[str, dict[str, Any]], ...] = ()
    splits: tuple[tuple[int, str, int], ...] = ()
    sections: tuple[str, ...] = ("3", "4.1", "5.1", "5.2", "5.3", "5.4")
    tool_choice: Any = None
    retry: tuple[str, ...] = ()
    scenario: Scenario = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "scenario",
            Scenario(
                name=self.name,
                description=self.description,
                protocol_sections=self.sections,
                model="qwen3-max",
                openai_model="qwen3-max",
                prompt=render_prompt(self.messages, TOOLS, tool_choice=self.tool_choice or "auto"),
                chat_type="t2t",
                thinking=False,
                expected_content=self.expected_content,
            ),
        )

    def request(self, **extra: Any) -> dict[str, Any]:
        """The OpenAI chat request body (``model``, ``messages``, ``tools``) plus ``extra``."""
        body: dict[str, Any] = {
            "model": "qwen3-max",
            "messages": [dict(m) for m in self.messages],
            "tools": [json.loads(json.dumps(t)) for t in TOOLS],
        }
        if self.tool_choice is not None:
            body["tool_choice"] = self.tool_choice
        return {**body, **extra}

    def retry_scenario(self) -> Scenario:
        """The :class:`Scenario` of the corrective turn (its prompt)."""
        first = "".join(p for p in self.answer if p is not None)
        prompt = render_prompt(
            self.messages, TOOLS, tool_choice=self.tool_choice or "auto", correction=first
        )
        return replace(self.scenario, prompt=prompt)


PARIS_Q = "What's the weather in Paris right now?"
PARIS_CALL = {
    "id": "call_0b5e2c7a9d314f6e8a1c2b3d",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
PARIS_PREFACE = "Let me check the weather."
PARIS_RESULT = '{"temperature_c": 18, "sky": "clear"}'

TOOL_SCENARIOS: tuple[ToolScenario, ...] = (
    ToolScenario(
        name="tool_preface_call",
        description=(
            "Synthetic tool turn: preface text, then a Hermes <tool_call> block whose tags are "
            "split across frames and network chunks."
        ),
        messages=({"role": "user", "content": PARIS_Q},),
        answer=(
            "Let me",
            " check the",
            " weather.\n",
            "<tool",
            '_call>\n{"name": "get_',
            'weather", "arguments": {"city": "Par',
            'is"}}\n</tool_',
            "call>",
        ),
        expected_calls=(("get_weather", {"city": "Paris"}),),
        expected_content=PARIS_PREFACE,
        splits=((4, "_ca", 2), (6, "</to", 3)),
    ),
    ToolScenario(
        name="tool_two_calls",
        description="Synthetic tool turn: two Hermes <tool_call> blocks (parallel calls).",
        messages=({"role": "user", "content": "Compare the weather in Paris and Tokyo."},),
        answer=(
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
            "\n",
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Tokyo", ',
            '"unit": "celsius"}}\n</tool_call>',
        ),
        expected_calls=(
            ("get_weather", {"city": "Paris"}),
            ("get_weather", {"city": "Tokyo", "unit": "celsius"}),
        ),
    ),
    ToolScenario(
        name="tool_xml_call",
        description=(
            "Synthetic tool turn in the XML form of Qwen3-Coder / Qwen3.5+: <function=…> with "
            "<parameter=…> items inside <tool_call>."
        ),
        messages=({"role": "user", "content": "Show me the first 20 lines of README.md."},),
        answer=(
            "<tool_call>\n<function=read_file>\n",
            "<parameter=path>\nREADME.md\n</parameter>\n",
            "<parameter=limit>\n20\n</para",
            "meter>\n</function>\n</tool_call>",
        ),
        expected_calls=(("read_file", {"path": "README.md", "limit": 20}),),
    ),
    ToolScenario(
        name="tool_local_tool",
        description=(
            "Synthetic native tool call: a phase 'local_tool' frame with extra.local_mcp "
            "(docs/protocol.md 5.5, 5.6) instead of markup in the answer."
        ),
        messages=({"role": "user", "content": "What's the weather in Oslo?"},),
        answer=(None,),
        local_tool=(("get_weather", {"city": "Oslo"}),),
        expected_calls=(("get_weather", {"city": "Oslo"}),),
        sections=("3", "4.1", "5.1", "5.2", "5.3", "5.4", "5.5", "5.6"),
    ),
    ToolScenario(
        name="tool_malformed_json",
        description=(
            "Synthetic tool turn whose <tool_call> block is not valid JSON (a brace missing): "
            "never a call; the client gets a note."
        ),
        messages=({"role": "user", "content": "Read the file setup.py."},),
        answer=(
            '<tool_call>\n{"name": "read_file", ',
            '"arguments": {"path": "setup.py"}\n</tool_call>',
        ),
        expected_content="(tool call dropped by the proxy: the call block is not valid JSON)",
        expected_finish="stop",
    ),
    ToolScenario(
        name="tool_unknown_tool",
        description=(
            "Synthetic tool turn calling a tool the client did not offer: never a call; the "
            "client gets a note."
        ),
        messages=({"role": "user", "content": "Delete the file old.log."},),
        answer=(
            "I'll remove it.\n",
            '<tool_call>\n{"name": "delete_file", "arguments": {"path": "old.log"}}\n</tool_call>',
        ),
        expected_content=(
            "I'll remove it.\n\n(tool call dropped by the proxy: no tool named 'delete_file' "
            "was offered)"
        ),
        expected_finish="stop",
    ),
    ToolScenario(
        name="tool_result_turn",
        description=(
            "Synthetic turn after a tool result: the history holds tool_preface_call's answer "
            "(preface and call) and a <tool_response> user turn; the model answers in prose."
        ),
        messages=(
            {"role": "user", "content": PARIS_Q},
            {"role": "assistant", "content": PARIS_PREFACE, "tool_calls": [PARIS_CALL]},
            {"role": "tool", "tool_call_id": PARIS_CALL["id"], "content": PARIS_RESULT},
        ),
        answer=("It is", " 18 °C", " and clear", " in Paris."),
        expected_content="It is 18 °C and clear in Paris.",
        expected_finish="stop",
    ),
    ToolScenario(
        name="tool_required_retry",
        description=(
            "Synthetic tool_choice 'required' answered in prose: the proxy's one corrective "
            "turn (the prose and a correction line in a fresh prompt) is answered with the call."
        ),
        messages=({"role": "user", "content": "Is it warm in Rome today?"},),
        answer=("Rome is", " usually warm", " in summer."),
        tool_choice="required",
        retry=(
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>',
        ),
        expected_calls=(("get_weather", {"city": "Rome"}),),
    ),
    ToolScenario(
        name="tool_named_prose",
        description=(
            "Synthetic named tool_choice answered in prose twice: after the one corrective "
            "turn the prose comes back with finish_reason stop."
        ),
        messages=({"role": "user", "content": "What is in the README?"},),
        answer=("The README", " explains the project."),
        tool_choice={"type": "function", "function": {"name": "read_file"}},
        retry=("I cannot", " open files."),
        expected_content="I cannot open files.",
        expected_finish="stop",
    ),
)

BY_NAME = {t.name: t for t in TOOL_SCENARIOS}


def _epoch(ts: ToolScenario) -> int:
    return TOOLS_EPOCH_S + 60 * [t.name for t in TOOL_SCENARIOS].index(ts.name)


def _completions_body(ts: ToolScenario, sc: Scenario) -> str:
    feature_config: dict[str, Any] = {"thinking_enabled": False, "output_schema": "phase"}
    epoch = _epoch(ts)
    body = {
        "stream": True,
        "version": "2.1",
        "incremental_output": True,
        "chat_id": _uid(sc.name, "chat_id"),
        "chat_mode": "normal",
        "model": sc.model,
        "parent_id": None,
        "timestamp": epoch + 1,
        "messages": [user_message(sc, feature_config, epoch)],
    }
    return _json_compact(body)


def _completion(
    ts: ToolScenario, sc: Scenario, answer: Sequence[str | None], splits: Sequence[Any] = ()
) -> Interaction:
    f = _Frames(sc)
    f.created()
    for piece in answer:
        if piece is not None:
            f.typing(piece, "answer")
            continue
        calls = [{"tool_name": f"★-{name}", "params": params} for name, params in ts.local_tool]
        delta = {
            "role": "assistant",
            "content": "",
            "phase": "local_tool",
            "status": "finished",
            "extra": {"local_mcp": {"★": calls}},
        }
        f.raw(f.delta_frame(delta, tokens=8))
    f.idle_typing()
    f.finished("answer", with_usage=False)
    cuts = [(i + 1, _offset_in(f.events[i + 1], text, extra)) for i, text, extra in splits]
    return Interaction.streamed(
        method="POST",
        uri=f"{COMPLETIONS_URL}?chat_id={_uid(sc.name, 'chat_id')}",
        request_headers=_completions_headers(),
        request_body=_completions_body(ts, sc),
        pieces=_pieces(sc, f.events, splits=cuts),
        t_headers_s=_t_headers(sc),
    )


def _build(ts: ToolScenario) -> list[Interaction]:
    sc = ts.scenario
    out = [
        chats_new_interaction(sc.name, sc.model, sc.chat_type, _epoch(ts)),
        _completion(ts, sc, ts.answer, ts.splits),
    ]
    if ts.retry:
        out.append(_completion(ts, ts.retry_scenario(), ts.retry))
    return out


_BUILDERS: dict[str, Callable[[ToolScenario], list[Interaction]]] = {
    t.name: _build for t in TOOL_SCENARIOS
}


def build(ts: ToolScenario) -> Cassette:
    """The cassette of one tool scenario (in memory)."""
    return synthetic_cassette(ts.name, ts.description, ts.sections, _BUILDERS[ts.name](ts))


def build_all() -> list[Cassette]:
    """Every tool cassette, in :data:`TOOL_SCENARIOS` order (written into ``cassettes/``)."""
    return [build(ts) for ts in TOOL_SCENARIOS]
