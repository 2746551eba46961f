"""Request matching for the replay server: fingerprints and an index over cassettes.

Pure functions and data only (no aiohttp). The rules are those of docs/cassette-format.md,
"How the replay server matches": method and path (without query, trailing slash ignored) must be
equal; for ``POST /api/v2/chat/completions`` also ``model``, ``messages[0].chat_type``,
``messages[0].feature_config.thinking_enabled``, the user text and, for a turn that continues a
chat, its ``parent_id`` (the answer it follows, docs/protocol.md section 4.1 (a));
for ``POST /api/v2/chats/new`` also ``chat_type`` (docs/protocol.md section 3). Server-issued ids
and timestamps are never compared.

OpenAI-side paths are matched by body too, so cassettes can stand in for a whole OpenAI-compatible
proxy (the conformance harness's broken-proxy fixtures): ``POST …/v1/chat/completions``,
``POST …/v1/messages`` (Anthropic) and ``POST …/v1/responses`` compare ``model``, ``stream`` and
the text of the last user message (for ``/v1/responses`` the ``input`` string or its last user
item); ``POST …/v1/images/generations`` compares ``model`` and ``prompt``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from recorder.cassette import Cassette, Interaction

__all__ = [
    "Closest",
    "Hit",
    "Index",
    "Miss",
    "fingerprint",
    "normalise_path",
    "prompt_diff",
    "similarity",
]

COMPLETIONS_PATH = "/api/v2/chat/completions"
CHATS_NEW_PATH = "/api/v2/chats/new"
OPENAI_CHAT_PATH = "/v1/chat/completions"
OPENAI_IMAGES_PATH = "/v1/images/generations"
ANTHROPIC_MESSAGES_PATH = "/v1/messages"
RESPONSES_PATH = "/v1/responses"
_TEXT_PART_TYPES = frozenset({"text", "input_text"})


def normalise_path(uri_or_path: str) -> str:
    """The path of a URI or path-with-query, without query and trailing slash (``"/"`` kept)."""
    path = urlsplit(uri_or_path).path or "/"
    stripped = path.rstrip("/")
    return stripped or "/"


def _parse_json(body: bytes | str | None) -> Any:
    if body is None:
        return None
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        return json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return None


def _user_text(content: Any) -> Any:
    """``messages[0].content``: a string as is; a list gives its text parts concatenated."""
    if isinstance(content, list):
        parts: list[str] = []
        for item in content:
            if isinstance(item, str):
                parts.append(item)
            elif isinstance(item, dict) and item.get("type") in _TEXT_PART_TYPES:
                text = item.get("text")
                if isinstance(text, str):
                    parts.append(text)
        return "".join(parts)
    return content


def _last_user_text(messages: Any) -> Any:
    """The text of the last ``role: "user"`` message of an OpenAI ``messages`` list, or ``None``."""
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _user_text(message.get("content"))
    return None


def _openai_fingerprint(fp: dict[str, Any], path: str, body: bytes | str | None) -> None:
    """Add the OpenAI-side fields of a ``POST …/v1/chat/completions`` or ``…/v1/images/…``."""
    data = _parse_json(body)
    if not isinstance(data, dict):
        return
    fp["model"] = data.get("model")
    if path.endswith((OPENAI_CHAT_PATH, ANTHROPIC_MESSAGES_PATH)):
        fp["stream"] = data.get("stream")
        fp["text"] = _last_user_text(data.get("messages"))
    elif path.endswith(RESPONSES_PATH):
        fp["stream"] = data.get("stream")
        given = data.get("input")
        fp["text"] = given if isinstance(given, str) else _last_user_text(given)
    else:
        fp["prompt"] = data.get("prompt")


def fingerprint(method: str, uri: str, body: bytes | str | None) -> dict[str, Any]:
    """The fields that decide whether two requests match.

    ``uri`` may be a full URL or a path with query. Always has ``method`` (upper-case) and
    ``path`` (no query, trailing slash removed). For a JSON object body sent to
    ``POST …/api/v2/chat/completions`` adds ``model``, ``chat_type``, ``thinking_enabled``
    (``None`` when absent), ``text`` and, when not null, ``parent_id`` (docs/protocol.md 4.1); for
    ``POST …/api/v2/chats/new`` adds
    ``chat_type`` (docs/protocol.md 3). OpenAI side: ``POST …/v1/chat/completions`` adds ``model``,
    ``stream`` (``None`` when absent) and ``text`` (the last user message's text), and so do
    ``POST …/v1/messages`` and ``POST …/v1/responses`` (``input`` text);
    ``POST …/v1/images/generations`` adds ``model`` and ``prompt``. Bodies that are not JSON
    objects add nothing. Never raises.
    """
    m = method.upper()
    path = normalise_path(uri)
    fp: dict[str, Any] = {"method": m, "path": path}
    if m != "POST":
        return fp
    if path.endswith(
        (OPENAI_CHAT_PATH, OPENAI_IMAGES_PATH, ANTHROPIC_MESSAGES_PATH, RESPONSES_PATH)
    ):
        _openai_fingerprint(fp, path, body)
        return fp
    is_completion = path.endswith(COMPLETIONS_PATH)
    is_new_chat = path.endswith(CHATS_NEW_PATH)
    if not (is_completion or is_new_chat):
        return fp
    data = _parse_json(body)
    if not isinstance(data, dict):
        return fp
    if is_new_chat:
        fp["chat_type"] = data.get("chat_type")
        return fp
    messages = data.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    first = first if isinstance(first, dict) else {}
    features = first.get("feature_config")
    features = features if isinstance(features, dict) else {}
    fp["model"] = data.get("model")
    fp["chat_type"] = first.get("chat_type")
    fp["thinking_enabled"] = features.get("thinking_enabled")
    fp["text"] = _user_text(first.get("content"))
    parent = data.get("parent_id")
    if parent is not None:  # absent == null: first turns keep their old fingerprints
        fp["parent_id"] = parent
    return fp


def _differs(recorded: dict[str, Any], received: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    keys = list(recorded) + [k for k in received if k not in recorded]
    return [
        (k, recorded.get(k), received.get(k)) for k in keys if recorded.get(k) != received.get(k)
    ]


@dataclass(frozen=True)
class Hit:
    """A matching recorded interaction: its cassette and its index in that cassette."""

    cassette: Cassette
    interaction_index: int
    interaction: Interaction


_TOKEN = re.compile(r"\s+|\w+|[^\w\s]", re.UNICODE)
_SIMILARITY_CHARS = 4000


def similarity(a: Any, b: Any) -> float:
    """How alike two prompts are, 0.0 … 1.0 (``difflib`` ratio over words; first 4000
    characters). Non-strings compare as equal (1.0) or not (0.0)."""
    if not isinstance(a, str) or not isinstance(b, str):
        return 1.0 if a == b else 0.0
    if a == b:
        return 1.0
    ta = _TOKEN.findall(a[:_SIMILARITY_CHARS])
    tb = _TOKEN.findall(b[:_SIMILARITY_CHARS])
    return difflib.SequenceMatcher(None, ta, tb, autojunk=False).ratio()


def _clip(text: str, n: int, *, tail: bool = False) -> str:
    text = text.replace("\n", "⏎")
    if len(text) <= n:
        return text
    return "…" + text[-(n - 1) :] if tail else text[: n - 1] + "…"


def prompt_diff(recorded: str, received: str, *, limit: int = 240, context: int = 24) -> str:
    """A short word diff of two prompts: unchanged stretches clipped to ``context``
    characters, removals as ``[-old-]``, additions as ``{+new+}``; at most ``limit`` characters.
    """
    a = _TOKEN.findall(recorded[:_SIMILARITY_CHARS])
    b = _TOKEN.findall(received[:_SIMILARITY_CHARS])
    parts: list[str] = []
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    for k, (tag, i1, i2, j1, j2) in enumerate(ops):
        if tag == "equal":
            same = "".join(a[i1:i2])
            if k == 0:
                parts.append(_clip(same, context, tail=True))
            elif k == len(ops) - 1:
                parts.append(_clip(same, context))
            elif len(same) > 2 * context:
                parts.append(_clip(same, context) + _clip(same, context, tail=True)[1:])
            else:
                parts.append(same.replace("\n", "⏎"))
            continue
        if i2 > i1:
            parts.append("[-" + _clip("".join(a[i1:i2]), 60) + "-]")
        if j2 > j1:
            parts.append("{+" + _clip("".join(b[j1:j2]), 60) + "+}")
    return _clip("".join(parts), limit)


@dataclass(frozen=True)
class Closest:
    """The recorded request nearest to a missed one. ``similarity``: of the prompts (0…1),
    ``None`` when the request has no prompt."""

    cassette: str
    interaction: int
    method: str
    uri: str
    fingerprint: dict[str, Any]
    similarity: float | None = None

    @property
    def path(self) -> str:
        """The recorded path, without host and query (never the upstream URL)."""
        return normalise_path(self.uri)


def _short_value(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    return repr(_clip(text, 60)) if isinstance(v, str) else text


@dataclass(frozen=True)
class Miss:
    """No match. ``differs`` lists ``(field, recorded, received)`` against ``closest``."""

    request: dict[str, Any]
    closest: Closest | None
    differs: list[tuple[str, Any, Any]] = field(default_factory=list)

    @property
    def prompt_diff(self) -> str | None:
        """A short diff of the recorded and received prompts, when they differ."""
        for name, recorded, received in self.differs:
            if name == "text" and isinstance(recorded, str) and isinstance(received, str):
                return prompt_diff(recorded, received)
        return None

    def message(self) -> str:
        """One readable sentence: the closest recording (by prompt similarity), the fields that
        differ, and a short diff of the prompt. Paths only, never a URL."""
        head = f"No recorded interaction matches {self.request['method']} {self.request['path']}"
        if self.closest is None:
            return f"{head}: no cassette holds any interaction."
        c = self.closest
        fields = "; ".join(
            f"{name} (recorded {_short_value(recorded)}, received {_short_value(received)})"
            for name, recorded, received in self.differs
            if name != "text"
        )
        if any(name == "text" for name, _, _ in self.differs):
            fields = "; ".join(filter(None, ["text (the prompt)", fields]))
        alike = f", prompt {round(c.similarity * 100)}% alike" if c.similarity is not None else ""
        out = (
            f"{head}; the closest recording is cassette {c.cassette!r} interaction "
            f"{c.interaction} ({c.method} {c.path}{alike}), which differs in {fields}."
        )
        diff = self.prompt_diff
        if diff:
            out += f" Prompt diff (recorded -> received): {diff}"
        return out

    def to_json(self) -> dict[str, Any]:
        """The ``closest`` object of the replay server's miss body, or ``None``."""
        if self.closest is None:
            return {"closest": None}
        c = self.closest
        return {
            "closest": {
                "cassette": c.cassette,
                "interaction": c.interaction,
                "method": c.method,
                "path": c.path,
                "similarity": None if c.similarity is None else round(c.similarity, 3),
                "differs": [{"field": f, "recorded": r, "received": x} for f, r, x in self.differs],
                "prompt_diff": self.prompt_diff,
            }
        }


@dataclass(frozen=True)
class _Entry:
    cassette: Cassette
    index: int
    interaction: Interaction
    fp: dict[str, Any]


class Index:
    """Recorded requests of several cassettes, looked up by fingerprint.

    Lookup is a dict access by ``(method, path)`` then a linear scan of that bucket; on several
    matches the first in load order (cassette order, then interaction order) wins.
    """

    def __init__(self, cassettes: Iterable[Cassette]) -> None:
        self._entries: list[_Entry] = []
        self._by_key: dict[tuple[str, str], list[_Entry]] = {}
        for cassette in cassettes:
            for i, inter in enumerate(cassette.interactions):
                fp = fingerprint(inter.method, inter.uri, inter.request_body)
                entry = _Entry(cassette, i, inter, fp)
                self._entries.append(entry)
                self._by_key.setdefault((fp["method"], fp["path"]), []).append(entry)

    def __len__(self) -> int:
        """The number of recorded interactions."""
        return len(self._entries)

    def find(self, fp: dict[str, Any]) -> Hit | Miss:
        """The first recorded interaction whose fingerprint equals ``fp``, else a ``Miss``.

        The miss names the closest recording: among those with the same method and path (else
        among all), the one whose prompt is most alike (:func:`similarity`), then the one with
        the fewest differing fields, then the first in load order.
        """
        bucket = self._by_key.get((fp.get("method", ""), fp.get("path", "")), [])
        for e in bucket:
            if e.fp == fp:
                return Hit(e.cassette, e.index, e.interaction)
        best = self._best(bucket, fp) or self._best(self._entries, fp)
        if best is None:
            return Miss(request=dict(fp), closest=None)
        e, differs, alike = best
        closest = Closest(
            e.cassette.name, e.index, e.interaction.method, e.interaction.uri, e.fp, alike
        )
        return Miss(request=dict(fp), closest=closest, differs=differs)

    @staticmethod
    def _best(
        entries: Sequence[_Entry], fp: dict[str, Any]
    ) -> tuple[_Entry, list[tuple[str, Any, Any]], float | None] | None:
        best: tuple[_Entry, list[tuple[str, Any, Any]], float | None] | None = None
        best_key: tuple[float, int] | None = None
        has_text = "text" in fp
        for entry in entries:
            differs = _differs(entry.fp, fp)
            alike = similarity(entry.fp.get("text"), fp.get("text")) if has_text else None
            key = (-(alike if alike is not None else 1.0), len(differs))
            if best_key is None or key < best_key:
                best, best_key = (entry, differs, alike), key
        return best
