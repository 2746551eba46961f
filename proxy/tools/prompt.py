"""The Qwen prompt of a conversation with tools, in Qwen's own function-calling convention (pure).

chat.qwen.ai takes one user message per turn (docs/protocol.md §4.1), so the history is flattened
as for plain chats (``System:``/``User:``/``Assistant:`` blocks, :func:`flatten_messages`),
with the Hermes-style template Qwen models are trained on (docs/agents.md §1.2, §1.3):

- the system block ends with a ``# Tools`` section: the fixed sentences of Qwen's chat template,
  one ``{"type": "function", "function": {...}}`` JSON line per tool inside ``<tools></tools>``,
  and the ``<tool_call>`` answer format; a line for ``tool_choice`` ``required``/named and for
  ``parallel_tool_calls: false``;
- an assistant turn that called tools is its text then one ``<tool_call>`` block per call;
- tool results go back as a user turn of ``<tool_response>`` blocks (consecutive results share
  one turn, in call order), never as a ``role: "function"`` continuation (that draws the
  captcha wall, §13.2); a call the client never answered gets a placeholder result;
- a call repeated with identical arguments in the history is named in a closing system note,
  so the model stops looping (docs/agents.md §6.4);
- the corrective turn (``tool_choice`` ``required``/named answered in prose, see
  :mod:`proxy.relay`): the same prompt, then the prose as an ``Assistant:`` block and a system
  line asking for the call.

No top-level ``tools`` field is ever sent upstream (it switches on summary thinking, §13.2):
the tools exist only in this text. A conversation without tools and without tool history gets
exactly :func:`flatten_messages`'s prompt, so plain chats are unchanged.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from proxy.api_models import nests_too_deep
from proxy.conversation import Conversation, ToolSpec, Turn
from proxy.qwen.request import flatten_messages, no_text, text_of

__all__ = [
    "CORRECTION_KEY",
    "NO_RESULT",
    "build_prompt",
    "choice_lines",
    "correction_line",
    "repeated_calls",
    "tools_section",
]

# The fixed sentences of Qwen's chat template / Qwen-Agent's nous prompt (docs/agents.md §1.2).
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
NO_RESULT = "(no result was given for this call)"
"""The placeholder result of a call the client never answered."""

CORRECTION_KEY = "tool_correction"
"""``Conversation.metadata`` key: the prose the model answered although ``tool_choice`` asked
for a call; its presence makes :func:`build_prompt` write the corrective turn."""


def correction_line(conv: Conversation) -> str:
    """The system line of the corrective turn (``tool_choice`` ``required`` or named)."""
    choice = conv.tool_choice
    what = f"the function {choice.name}" if choice.mode == "named" else "one of the functions"
    return (
        f"You did not call a function, but this answer must call {what}. Answer again with "
        "only the <tool_call> block."
    )


def _tool_line(spec: ToolSpec) -> str:
    fn: dict[str, Any] = {"name": spec.name}
    if spec.description:
        fn["description"] = spec.description
    if spec.parameters is not None:
        fn["parameters"] = spec.parameters
    return json.dumps({"type": "function", "function": fn}, ensure_ascii=False)


def tools_section(conv: Conversation) -> str:
    """The ``# Tools`` section for the conversation's tools and ``tool_choice``."""
    choice = conv.tool_choice
    tools = conv.tools
    if choice.mode == "named":
        tools = tuple(t for t in tools if t.name == choice.name)
    lines = [_TOOLS_HEAD + "\n".join(_tool_line(t) for t in tools) + _TOOLS_TAIL, _CLIENT_SIDE]
    return "\n\n".join(lines + choice_lines(conv))


def choice_lines(conv: Conversation) -> list[str]:
    """The per-answer lines for ``tool_choice`` ``required``/named and
    ``parallel_tool_calls: false`` (none for ``auto`` with parallel calls)."""
    choice = conv.tool_choice
    lines = []
    if choice.mode == "required":
        lines.append("You must call at least one of these functions in this answer.")
    elif choice.mode == "named":
        lines.append(f"You must call the function {choice.name} in this answer.")
    if not conv.parallel_tool_calls:
        lines.append("Call at most one function in this answer.")
    return lines


def _args_obj(arguments: str) -> Any:
    """The decoded arguments, or ``None`` for text that is not JSON, or nests deeper than
    :data:`~proxy.api_models.MAX_JSON_DEPTH` (then used as text: never re-encoded)."""
    try:
        obj = json.loads(arguments) if arguments.strip() else {}
    except (ValueError, RecursionError):  # (nested past the interpreter's recursion limit)
        return None
    return None if nests_too_deep(obj) else obj


def _call_block(name: str, arguments: str) -> str:
    obj = _args_obj(arguments)
    if obj is None:  # not JSON: inserted verbatim, as Qwen's template does with strings
        inner = '{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments": '
        inner += arguments + "}"
    else:
        inner = json.dumps({"name": name, "arguments": obj}, ensure_ascii=False)
    return f"<tool_call>\n{inner}\n</tool_call>"


def repeated_calls(turns: list[Turn]) -> list[tuple[str, str, int]]:
    """``(name, arguments, count)`` for every call made more than once with the same arguments
    in the history (arguments compared as JSON, key order ignored), in first-seen order."""
    counts: Counter[tuple[str, str]] = Counter()
    shown: dict[tuple[str, str], str] = {}
    for t in turns:
        for c in t.tool_calls:
            obj = _args_obj(c.arguments)
            key = (c.name, json.dumps(obj, sort_keys=True) if obj is not None else c.arguments)
            counts[key] += 1
            shown.setdefault(
                key, json.dumps(obj, ensure_ascii=False) if obj is not None else c.arguments
            )
    return [(k[0], shown[k], n) for k, n in counts.items() if n > 1]


def _text(turn: Turn) -> str:
    return text_of(turn) if turn.content is not None else ""


def build_prompt(conv: Conversation, *, start: int = 0, allow_empty: bool = False) -> str:
    """The one user message for ``conv`` (see the module doc). Raises
    :class:`~proxy.errors.UnsupportedContentError` for unknown content parts or an empty prompt
    (:func:`~proxy.qwen.request.no_text`).

    ``start`` > 0: a native continuation (:mod:`proxy.continuation`) sends only
    ``conv.turns[start:]`` to the chat that already holds the rest. The ``# Tools`` section is not
    repeated (a continuation implies the same tool set, which the chat's first prompt carried);
    the ``tool_choice`` lines, the loop note (over the whole history) and a corrective turn are.
    """
    turns = conv.turns[start:]
    active = conv.tools_active
    owed: list[str] = []
    if start and conv.turns[start - 1].role == "assistant":
        owed = [c.id for c in conv.turns[start - 1].tool_calls]
    has_history = bool(owed) or any(t.tool_calls or t.role == "tool" for t in turns)
    if not active and not has_history and CORRECTION_KEY not in conv.metadata:
        return flatten_messages(turns, allow_empty=allow_empty, param=conv.turns_param)
    if start:
        system = "\n\n".join(choice_lines(conv)) if active else ""
    else:
        system = "\n".join(s for s in (_text(t) for t in turns if t.role == "system") if s)
        if active:
            system = (system + "\n\n" if system else "") + tools_section(conv)
    blocks = [f"System: {system}"] if system else []
    answered = {t.tool_call_id for t in conv.turns if t.role == "tool" and t.tool_call_id}
    pending: list[str] = []  # tool_response blocks of the current user turn
    # placeholders owed by the last assistant turn
    unanswered: list[str] = [i for i in owed if i not in answered]

    def flush() -> None:
        if pending or unanswered:
            rs = pending + [f"<tool_response>\n{NO_RESULT}\n</tool_response>"] * len(unanswered)
            blocks.append("User: " + "\n".join(rs))
            pending.clear()
            unanswered.clear()

    for t in turns:
        if t.role == "system":
            continue
        if t.role == "tool":
            pending.append(f"<tool_response>\n{_text(t)}\n</tool_response>")
            if t.tool_call_id in unanswered:
                unanswered.remove(t.tool_call_id)
            elif unanswered and t.tool_call_id is None:
                unanswered.pop(0)
            continue
        flush()
        text = _text(t)
        if t.role == "assistant":
            parts = [text] if text else []
            parts += [_call_block(c.name, c.arguments) for c in t.tool_calls]
            if parts:
                blocks.append("Assistant: " + "\n".join(parts))
            unanswered.extend(c.id for c in t.tool_calls if c.id not in answered)
        elif text:
            blocks.append(f"User: {text}")
    if pending:
        flush()
    notes = [
        f"You have already called {name} with the arguments {args} {n} times in this "
        "conversation and received its result each time. Do not call it again with the same "
        "arguments: use the results you have, or do something different."
        for name, args, n in repeated_calls(conv.turns)
    ]
    if notes:
        blocks.append("System: " + " ".join(notes))
    if CORRECTION_KEY in conv.metadata and active:
        prose = str(conv.metadata[CORRECTION_KEY]).strip()
        if prose:
            blocks.append(f"Assistant: {prose}")
        blocks.append("System: " + correction_line(conv))
    prompt = "\n\n".join(blocks)
    if not prompt.strip() and not allow_empty:
        raise no_text(turns, conv.turns_param)
    return prompt
