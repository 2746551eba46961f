"""Native multi-turn: which upstream chat an OpenAI history continues. Pure (no I/O, no clock).

chat.qwen.ai keeps a conversation's context on its side: a turn sent to the same chat with
``parent_id`` = the previous answer's ``response_id`` continues it (docs/protocol.md §4.1 (a), §3).
OpenAI clients re-send the whole history each turn instead. The gateway bridges the two with a
map from *a history up to one of its answers* to *where that answer lives upstream*:

- every message is reduced to a digest of its normalised form (:func:`message_digest`): the role
  (``developer`` counts as ``system``, ``function`` as ``tool``), the text with runs of
  whitespace collapsed and a leading ``<think>…</think>`` block of an assistant turn dropped
  (reasoning is not part of the history), a digest of each media part's URL or data, and the
  name and arguments of each tool call (arguments as canonical JSON; call ids are ignored);
- the key of a history is a digest of its message digests (:func:`conversation_key`), optionally
  scoped (to an API key's hash, a tool set);
- after an answer, the gateway stores ``{chat_id, account, parent_id, model, turn_hashes,
  updated}`` (:func:`conversation_entry`) under the key of *history + answer*;
- a request whose messages up to its last assistant turn have a stored key continues that chat
  (:func:`plan`): only the messages after that turn are sent. An edited or regenerated last turn
  still finds the answer before it, so it continues from the right earlier response (the site
  branches the chat there); an edit further back misses, and the history is flattened into a new
  chat.

Entries hold ids and hashes only, never message text: memory per conversation is bounded
(at most two entries, its last two answers, of at most :data:`MAX_TURN_HASHES` hashes each).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from proxy.api_models import nests_too_deep

__all__ = [
    "MAX_TURN_HASHES",
    "SCOPE_KEY",
    "Message",
    "Plan",
    "answer_digest",
    "conversation_entry",
    "conversation_key",
    "message_digest",
    "normalise_text",
    "plan",
    "scope_of",
    "tools_scope",
    "usable_entry",
]

MAX_TURN_HASHES = 16
"""At most this many message digests are kept in an entry (the newest)."""

_THINK = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)
_ROLES = {"developer": "system", "function": "tool"}
_MEDIA_TYPES = ("image_url", "input_image", "file", "input_file", "input_audio")


class Message(Protocol):
    """What a history message offers: OpenAI ``ChatMessage`` and the internal ``Turn`` both fit.

    ``content`` is text or OpenAI chat content parts; ``tool_calls`` (optional attribute)
    the calls an assistant turn made.
    """

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> Any: ...


def _h(data: str) -> str:
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def normalise_text(role: str, text: str) -> str:
    """``text`` as it counts for the history: whitespace runs collapsed to one space, trimmed;
    an assistant's leading ``<think>…</think>`` block (``think_tags`` reasoning) removed."""
    if role == "assistant":
        text = _THINK.sub("", text, count=1)
    return " ".join(text.split())


def _media_ref(part: dict[str, Any]) -> str:
    kind = str(part.get("type"))
    inner = part.get(kind)
    if isinstance(inner, dict):
        ref = inner.get("url") or inner.get("file_data") or inner.get("data") or inner
    else:
        ref = inner if inner is not None else part
    return f"{kind}:{_h(ref if isinstance(ref, str) else repr(ref))}"


def _pieces(content: Any) -> tuple[str, list[str]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    media: list[str] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in _MEDIA_TYPES:
            media.append(_media_ref(part))
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
    return "\n".join(texts), media


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _canonical_arguments(args: Any) -> str:
    """A call's arguments as they count for the history: JSON text re-serialised canonically
    (sorted keys, no spaces), so a client that re-encodes the arguments it received (Anthropic
    ``input`` objects, ``JSON.stringify``) still matches; other text with whitespace collapsed."""
    text = str(args or "")
    try:
        value = json.loads(text) if text.strip() else {}
    except (ValueError, RecursionError):  # (nested past the interpreter's recursion limit)
        value = None
    if value is None or nests_too_deep(value):
        return " ".join(text.split())
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _call_parts(calls: Iterable[Any]) -> list[str]:
    """OpenAI ``{"function": {"name", "arguments"}}`` calls or internal ``(name, arguments)``
    records, as ``call:<name>:<canonical arguments>`` (ids ignored)."""
    out: list[str] = []
    for call in calls:
        fn = _field(call, "function")
        src = fn if fn is not None else call
        args = _field(src, "arguments")
        out.append(f"call:{_field(src, 'name')}:{_canonical_arguments(args)}")
    return out


def _digest(role: str, text: str, media: Sequence[str], calls: Sequence[str]) -> str:
    role = _ROLES.get(role, role)
    parts = [role, normalise_text(role, text), *media, *calls]
    return _h("\x1f".join(parts))


def message_digest(message: Message) -> str:
    """The digest (32 hex chars) of one history message, normalised as the module describes."""
    text, media = _pieces(message.content)
    calls = _call_parts(getattr(message, "tool_calls", None) or ())
    return _digest(message.role, text, media, calls)


def answer_digest(text: str, tool_calls: Iterable[Any] = ()) -> str:
    """The digest of the assistant message a client will send back for an answer of ``text``
    (content only, reasoning excluded) and ``tool_calls``."""
    return _digest("assistant", text, (), _call_parts(tool_calls))


SCOPE_KEY = "conversation_scope"
"""The ``Conversation.metadata`` key a route sets to :func:`scope_of` its request's headers; the
service scopes the conversation map with it (and keeps it through corrective turns)."""


def scope_of(headers: Mapping[str, str]) -> str:
    """The conversation scope of a request (16 hex characters, ``""`` without a key): a hash of
    the API key it carries (``Authorization: Bearer`` or ``x-api-key``), so two clients of one
    gateway never continue each other's chats nor read each other's stored responses. A request
    carrying two different values (one in each header) is served when either is a valid key
    (:func:`proxy.app.gateway_middleware`), so its scope is a hash of both: only a client that
    sends that valid key too shares it."""
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    bearer = value.strip() if scheme.lower() == "bearer" else ""
    x_key = headers.get("x-api-key", "")
    key = f"{bearer}\n{x_key}" if bearer and x_key and bearer != x_key else bearer or x_key
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16] if key else ""


def tools_scope(tools: Iterable[Any]) -> str:
    """A scope suffix for a request's tool set (name, description, parameters of each): the
    tools are part of the first prompt, so another tool set must not continue that chat."""
    parts = [
        f"{_field(t, 'name')}\x1f{_field(t, 'description')}\x1f{_field(t, 'parameters')!r}"
        for t in tools
    ]
    return ":tools=" + _h("\x1e".join(parts)) if parts else ""


def conversation_key(digests: Sequence[str], scope: str = "") -> str:
    """The key (40 hex chars) of a history given its message digests, within ``scope``."""
    raw = "v1\x1e" + scope + "\x1e" + "\x1f".join(digests)
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


class Plan:
    """How a request relates to stored conversations.

    ``digests``: every message's digest. ``key``: the key of the messages up to the last
    assistant turn (``None`` when there is none, or nothing after it to send). ``tail_start``:
    the index of the first message after that turn (what a continuation sends). ``scope``: as
    given to :func:`plan`, for the keys of the answers. ``stale_key``: the key of the messages
    up to the assistant turn before the last one; once this request's answer is stored, that
    entry is dropped, so a conversation holds at most two entries (its last two answers: the
    next turn, or a regenerated last turn, can continue).

    A history without an assistant turn (a conversation's first request) needs its digests
    only to store the answer: they are computed when first read (after the answer, with the
    other bookkeeping of the loop's iteration), not before the request goes upstream.
    """

    __slots__ = ("_digests", "_messages", "key", "scope", "stale_key", "tail_start")

    def __init__(
        self,
        digests: tuple[str, ...] | None,
        key: str | None,
        tail_start: int,
        scope: str = "",
        stale_key: str | None = None,
        *,
        messages: Sequence[Message] = (),
    ) -> None:
        self._digests = digests
        self._messages = messages if digests is None else ()
        self.key = key
        self.tail_start = tail_start
        self.scope = scope
        self.stale_key = stale_key

    @property
    def digests(self) -> tuple[str, ...]:
        """Every message's digest (:func:`message_digest`), in order."""
        if self._digests is None:
            self._digests = tuple(message_digest(m) for m in self._messages)
            self._messages = ()
        return self._digests

    def __repr__(self) -> str:
        return (
            f"Plan(key={self.key!r}, tail_start={self.tail_start}, scope={self.scope!r}, "
            f"stale_key={self.stale_key!r}, digests={self.digests!r})"
        )


def plan(messages: Sequence[Message], scope: str = "") -> Plan:
    """The :class:`Plan` of ``messages`` (see the module docstring)."""
    answers = [i for i, m in enumerate(messages) if m.role == "assistant"]
    if not answers:  # a first turn: nothing to look up; the digests are for the answer
        return Plan(None, None, len(messages), scope, None, messages=messages)
    digests = tuple(message_digest(m) for m in messages)
    last = answers[-1]
    stale = conversation_key(digests[: answers[-2] + 1], scope) if len(answers) > 1 else None
    tail = messages[last + 1 :]
    if not tail or not any(m.role in ("user", "tool", "function") for m in tail):
        return Plan(digests, None, len(messages), scope, stale)
    return Plan(digests, conversation_key(digests[: last + 1], scope), last + 1, scope, stale)


def conversation_entry(
    *,
    chat_id: str,
    account: str,
    parent_id: str,
    model: str,
    digests: Sequence[str],
    now: float,
) -> dict[str, Any]:
    """The stored entry (what the state store keeps per answer): ids and hashes, no text.
    ``parent_id`` is the answer's ``response_id``; ``now`` epoch seconds."""
    return {
        "chat_id": chat_id,
        "account": account,
        "parent_id": parent_id,
        "model": model,
        "turn_hashes": list(digests[-MAX_TURN_HASHES:]),
        "updated": now,
    }


def usable_entry(entry: Any, prefix: Sequence[str]) -> bool:
    """True when ``entry`` has the ids a continuation needs and its hashes end like ``prefix``
    (a guard against a stale or foreign entry)."""
    if not isinstance(entry, dict):
        return False
    if not all(isinstance(entry.get(k), str) and entry[k] for k in ("chat_id", "account")):
        return False
    if not isinstance(entry.get("parent_id"), str) or not entry["parent_id"]:
        return False
    hashes = entry.get("turn_hashes")
    if not isinstance(hashes, list):
        return False
    n = min(len(hashes), len(prefix))
    return n > 0 and list(prefix[len(prefix) - n :]) == hashes[len(hashes) - n :]
