"""Synthetic cassettes: chat.qwen.ai traffic written by this script, not captured.

Every cassette built here is **synthetic**. No byte of it was recorded from the real server and
none is copied from a capture: the requests and responses are written from the protocol notes in
``docs/protocol.md`` (the section numbers below and in each cassette's
``provenance.protocol_sections`` refer to it), so they carry the shapes those notes describe (frame
layout, usage objects, error envelopes, WAF markers) with our own ids, texts and timings. Each
cassette says so in its metadata (``provenance.kind == "synthetic"``,
``tool == "qwen-record synth"``).

The output is deterministic: ids are ``uuid5`` values derived from the scenario name, timestamps
and chunk timings are fixed (timings come from a SHA-256 of the scenario name, not from a random
generator), and the file date is the constant :data:`SYNTH_DATE`. Running the builder again
reproduces ``cassettes/*.json`` byte for byte; ``tests/test_synthetic.py`` checks that.
Regenerate the files with::

    qwen-record synth -o cassettes/

Each :class:`Scenario` also states the outcome the proxy must produce for it (answer text,
reasoning, sources, HTTP status, error code, partial text), so proxy tests can read the expected
values from here instead of repeating them.

A synthetic cassette holds no credentials at all: requests carry only the non-secret headers
(``Content-Type``, ``Accept``, ``source``, ``version``, ``x-accel-buffering``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from recorder.cassette import Cassette, Interaction, Provenance

__all__ = [
    "SCENARIOS",
    "SYNTH_DATE",
    "SYNTH_TOOL",
    "SYNTH_TOOL_VERSION",
    "Scenario",
    "build",
    "build_all",
    "write_all",
]

SYNTH_DATE = "2026-11-22"
"""The fixed ``provenance.date`` of every synthetic cassette (kept constant for reproducibility)."""

SYNTH_TOOL = "qwen-record synth"
SYNTH_TOOL_VERSION = "0.1.0"

BASE_URL = "https://chat.qwen.ai"
CHATS_NEW_URL = f"{BASE_URL}/api/v2/chats/new"
COMPLETIONS_URL = f"{BASE_URL}/api/v2/chat/completions"
MODELS_URL = f"{BASE_URL}/api/models"

FRONTEND_VERSION = "0.2.91"
"""The ``version`` header (docs/protocol.md §1: frontend 0.2.91, 2026-09)."""

BASE_EPOCH_S = 1795338000
"""2026-11-22T09:00:00Z; scenario ``i`` happens ``i`` minutes later (seconds in completions)."""

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "qwen-gateway:synthetic-cassettes")

_JSON_RESPONSE_HEADERS = {"Content-Type": ["application/json; charset=utf-8"]}
_HTML_RESPONSE_HEADERS = {"Content-Type": ["text/html; charset=utf-8"]}


@dataclass(frozen=True)
class Scenario:
    """One synthetic cassette and the outcome the proxy must produce when it replays it.

    ``model`` is the upstream model id; ``openai_model`` the name an OpenAI client asks the
    proxy for (``model`` plus ``-thinking`` when thinking is on, ``-search`` for search).
    ``prompt`` is the user text, distinct per scenario (the replay server matches on it).

    Expected outcome: ``expected_content`` is the whole answer text and ``expected_reasoning``
    the whole reasoning text (``None`` when there is none); ``expected_sources`` the search result
    URLs in order; ``expected_status`` the HTTP status the proxy answers (200 for successes);
    ``expected_error_code`` the OpenAI-style error code for failures; ``partial_content`` the
    answer text streamed before a mid-stream failure.
    """

    name: str
    description: str
    protocol_sections: tuple[str, ...]
    model: str
    openai_model: str
    prompt: str
    chat_type: str
    thinking: bool
    expected_content: str | None = None
    expected_reasoning: str | None = None
    expected_sources: tuple[str, ...] = ()
    expected_status: int = 200
    expected_error_code: str | None = None
    partial_content: str | None = None


# --------------------------------------------------------------------------------------------
# Texts of the scenarios. Builders and Scenario expectations both derive from these, so the
# expected values always match the frames.

_T2T_PIECES = ("Hello", "!", " It", "'s", " nice", " to meet", " you", ".")

_THINK_PIECES = (
    "The user wants 17 multiplied by 23.",
    " I can split 23 into 20 + 3.",
    " First, 17 × 20 = 340.",
    " Then, 17 × 3 = 51.",
    " Adding them gives 340 + 51 = 391.",
    " So the answer is 391.",
)
_THINK_ANSWER_PIECES = ("17", " ×", " 23", " =", " 391", ".")

# (titles, thoughts) snapshots of extra.summary_title / extra.summary_thought, cumulative.
_SUMMARY_SNAPSHOTS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("Understanding the question",), ("The user asks for",)),
    (
        ("Understanding the question",),
        ("The user asks for the three primary colors.",),
    ),
    (
        ("Understanding the question",),
        ("The user asks for the three primary colors.",),
    ),  # unchanged repeat
    (
        ("Understanding the question", "Choosing the color model"),
        ("The user asks for the three primary colors.", "In the traditional painting model"),
    ),
    (
        ("Understanding the question", "Choosing the color model"),
        (
            "The user asks for the three primary colors.",
            "In the traditional painting model (RYB) they are red, yellow and blue.",
        ),
    ),
    (
        ("Understanding the question", "Choosing the color model", "Answering briefly"),
        (
            "The user asks for the three primary colors.",
            "In the traditional painting model (RYB) they are red, yellow and blue.",
            "A short list is enough.",
        ),
    ),
)
_SUMMARY_ANSWER_PIECES = ("Red", ",", " yellow", " and", " blue", ".")

_SEARCH_QUERY_ARGS = json.dumps({"queries": ["tallest mountain on Earth"]})
_SEARCH_DOCS: tuple[dict[str, str], ...] = (
    {
        "url": "https://www.example.org/geography/mount-everest",
        "title": "Mount Everest – Example Geography",
        "snippet": "Mount Everest is Earth's highest mountain above sea level, at 8,849 m.",
        "date": "2026-05-29",
        "hostname": "www.example.org",
    },
    {
        "url": "https://example.com/articles/highest-peaks-of-the-world",
        "title": "The highest peaks of the world",
        "snippet": "Everest tops the list of the fourteen peaks above 8,000 metres.",
        "date": "2025-12-02",
        "hostname": "example.com",
    },
    {
        "url": "https://encyclopedia.example.net/wiki/Everest",
        "title": "Everest – Example Encyclopedia",
        "snippet": "The 2020 survey measured the summit at 8,848.86 metres.",
        "date": "2024-08-17",
        "hostname": "encyclopedia.example.net",
    },
)
_SEARCH_ANSWER_PIECES = (
    "Mount Everest",
    ",",
    " at",
    " 8,849",
    " m",
    ",",
    " is the tallest",
    " mountain on Earth",
    ".",
)

_CHINESE_PIECES = ("你好", "！", "我是", "通义千问", "，", "很高兴", "认识你", "。", "😊", "🎉")

_STORY_PIECES = (
    "Once upon a time",
    ", a lighthouse keeper",
    " named Ada",
    " lived alone",
    " on a rocky island",
    ".",
)
_STORY_CUT_PIECE = " Every night she climbed the stairs"

_ERROR_FRAME_PIECES = ("Let me", " explain", " this step", " by step", ":")

_STREAM_CUT_ERROR = "upstream closed the connection mid-stream (synthetic)"


def _join(pieces: Sequence[str]) -> str:
    return "".join(pieces)


# --------------------------------------------------------------------------------------------
# Deterministic helpers


def _uid(scenario: str, role: str) -> str:
    """A stable UUID for ``role`` (e.g. ``"chat_id"``) in ``scenario``."""
    return str(uuid.uuid5(_NAMESPACE, f"{scenario}/{role}"))


def _jitter(scenario: str, salt: str, i: int) -> float:
    """A stable pseudo-random number in [0, 1) from SHA-256; never depends on ``random``."""
    digest = hashlib.sha256(f"{scenario}:{salt}:{i}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def _json_compact(obj: Any) -> str:
    """Compact JSON as a browser's ``JSON.stringify`` sends it and as JSON endpoints answer."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _sse_event(obj: Any) -> bytes:
    """One SSE event (docs/protocol.md §5.1): ``data: <json>`` and a blank line.

    Python's default separators (``", "``, ``": "``) and literal non-ASCII, like the real capture.
    """
    return ("data: " + json.dumps(obj, ensure_ascii=False) + "\n\n").encode("utf-8")


# --------------------------------------------------------------------------------------------
# Requests (docs/protocol.md §1, §3, §4.1)


def _base_headers(accept: str) -> dict[str, list[str]]:
    return {"Accept": [accept], "source": ["web"], "version": [FRONTEND_VERSION]}


def _chats_new_headers() -> dict[str, list[str]]:
    return {
        "Content-Type": ["application/json; charset=utf-8"],
        **_base_headers("application/json, text/plain, */*"),
    }


def _completions_headers() -> dict[str, list[str]]:
    return {
        "Content-Type": ["application/json; charset=utf-8"],
        **_base_headers("*/*"),
        "x-accel-buffering": ["no"],
    }


def _epoch(sc: Scenario) -> int:
    """The scenario's fixed request time in seconds."""
    names = [s.name for s in SCENARIOS]
    return BASE_EPOCH_S + 60 * names.index(sc.name)


def chats_new_interaction(name: str, model: str, chat_type: str, epoch_s: int) -> Interaction:
    """Step 1 of the flow (§3) for scenario ``name``: create the chat; always a success.

    ``epoch_s`` is the scenario's clock in seconds; the request carries milliseconds (§3, §4.1
    field notes). Shared by every synthetic set.
    """
    body = {
        "title": "New Chat",
        "models": [model],
        "chat_mode": "normal",
        "chat_type": chat_type,
        "timestamp": epoch_s * 1000 - 1250,
    }
    answer = {
        "success": True,
        "request_id": _uid(name, "request_id/chats_new"),
        "data": {"id": _uid(name, "chat_id")},
    }
    return Interaction(
        method="POST",
        uri=CHATS_NEW_URL,
        request_headers=_chats_new_headers(),
        request_body=_json_compact(body),
        status=200,
        reason="OK",
        response_headers=dict(_JSON_RESPONSE_HEADERS),
        response_body=_json_compact(answer),
    )


def _chats_new(sc: Scenario) -> Interaction:
    return chats_new_interaction(sc.name, sc.model, sc.chat_type, _epoch(sc))


def _completions_uri(sc: Scenario) -> str:
    return f"{COMPLETIONS_URL}?chat_id={_uid(sc.name, 'chat_id')}"


def user_message(sc: Scenario, feature_config: dict[str, Any], ts: int) -> dict[str, Any]:
    """The one user message of a v2 completions body (§4.1); ``ts`` in seconds."""
    return {
        "fid": _uid(sc.name, "fid"),
        "parentId": None,
        "parent_id": None,
        "childrenIds": [_uid(sc.name, "children_id")],
        "role": "user",
        "content": sc.prompt,
        "user_action": "chat",
        "files": [],
        "timestamp": ts,
        "models": [sc.model],
        "chat_type": sc.chat_type,
        "sub_chat_type": sc.chat_type,
        "feature_config": feature_config,
        "extra": {"meta": {"subChatType": sc.chat_type}},
    }


def _completions_body(sc: Scenario, *, thinking_format: str | None = None) -> str:
    """The v2 completions body of §4.1: one message, seconds timestamps, phase output."""
    chat_id = _uid(sc.name, "chat_id")
    feature_config: dict[str, Any] = {"thinking_enabled": sc.thinking, "output_schema": "phase"}
    if thinking_format is not None:
        feature_config["thinking_format"] = thinking_format
    ts = _epoch(sc)
    body = {
        "stream": True,
        "version": "2.1",
        "incremental_output": True,
        "chat_id": chat_id,
        "chat_mode": "normal",
        "model": sc.model,
        "parent_id": None,
        "timestamp": ts + 1,
        "messages": [user_message(sc, feature_config, ts)],
    }
    return _json_compact(body)


def _completions_json(sc: Scenario, answer: str, headers: dict[str, list[str]]) -> Interaction:
    """Step 2 answered with a whole non-SSE body (HTTP 200, §4.3)."""
    return Interaction(
        method="POST",
        uri=_completions_uri(sc),
        request_headers=_completions_headers(),
        request_body=_completions_body(sc),
        status=200,
        reason="OK",
        response_headers=dict(headers),
        response_body=answer,
    )


def _error_envelope(sc: Scenario, data: dict[str, Any]) -> str:
    """The app-level error envelope of §2 / §5.7 / §10."""
    return _json_compact(
        {"success": False, "request_id": _uid(sc.name, "request_id/completions"), "data": data}
    )


# --------------------------------------------------------------------------------------------
# SSE frames (docs/protocol.md §5)


class _Frames:
    """Builds the SSE events of one completion, tracking the cumulative usage of §5.4."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.events: list[bytes] = []
        self.input_tokens = 12 + len(sc.prompt.encode("utf-8")) // 4
        self.output_tokens = 0

    def usage(self) -> dict[str, Any]:
        """Cumulative usage (§5.4): no prompt_tokens/completion_tokens fields."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "characters": 0,
            "total_tokens": self.input_tokens + self.output_tokens,
            "input_tokens_details": {"text_tokens": self.input_tokens},
            "output_tokens_details": {"text_tokens": self.output_tokens},
            "cached_tokens": 0,
        }

    def created(self) -> None:
        """The opening frame (§5.2 (1)); the ids are server-issued, unlike fid/childrenIds."""
        self.events.append(
            _sse_event(
                {
                    "response.created": {
                        "chat_id": _uid(self.sc.name, "chat_id"),
                        "parent_id": _uid(self.sc.name, "user_message_id"),
                        "response_id": _uid(self.sc.name, "response_id"),
                    }
                }
            )
        )

    def delta_frame(self, delta: dict[str, Any], *, tokens: int = 1) -> dict[str, Any]:
        """A delta frame with the usage after ``tokens`` more output tokens (not yet added)."""
        self.output_tokens += tokens
        return {"choices": [{"delta": delta}], "usage": self.usage()}

    def typing(self, content: str, phase: str, *, tokens: int = 1, **more: Any) -> None:
        """An incremental ``status: "typing"`` frame (§5.2 (3), §5.4)."""
        delta: dict[str, Any] = {
            "role": "assistant",
            "content": content,
            "phase": phase,
            "status": "typing",
        }
        delta.update(more)
        self.events.append(_sse_event(self.delta_frame(delta, tokens=tokens)))

    def pieces(self, pieces: Sequence[str], phase: str) -> None:
        for piece in pieces:
            self.typing(piece, phase)

    def idle_typing(self, count: int = 2) -> None:
        """The empty answer ``typing`` frames the capture shows before the end (§5.1)."""
        for _ in range(count):
            self.typing("", "answer", tokens=0)

    def finished(
        self, phase: str, *, with_usage: bool, extra: dict[str, Any] | None = None
    ) -> None:
        """A ``status: "finished"`` frame; the final answer one carries no usage (§5.4)."""
        delta: dict[str, Any] = {
            "content": "",
            "role": "assistant",
            "status": "finished",
            "phase": phase,
        }
        if extra is not None:
            delta["extra"] = extra
        frame: dict[str, Any] = {"choices": [{"delta": delta}]}
        if with_usage:
            frame["usage"] = self.usage()
        self.events.append(_sse_event(frame))

    def raw(self, obj: Any) -> None:
        self.events.append(_sse_event(obj))


def _pieces(
    sc: Scenario,
    events: Sequence[bytes],
    *,
    coalesce: Sequence[int] = (),
    splits: Sequence[tuple[int, int]] = (),
) -> list[tuple[float, bytes]]:
    """Cut the event bytes into network chunks with stable timings.

    By default each event is one chunk. ``coalesce`` lists events ``i`` whose end is *not* a
    chunk boundary (event ``i`` and ``i + 1`` arrive together); ``splits`` lists
    ``(event index, byte offset inside the event)`` where an extra boundary falls (an event split
    over two chunks; the offset may fall inside a multi-byte UTF-8 character). The first chunk
    arrives with the headers (offset 0); later gaps are 10–40 ms.
    """
    starts: list[int] = []
    pos = 0
    for ev in events:
        starts.append(pos)
        pos += len(ev)
    total = pos
    cuts = {starts[i] + len(events[i]) for i in range(len(events))}
    for i in coalesce:
        cuts.discard(starts[i] + len(events[i]))
    for i, offset in splits:
        if not 0 < offset < len(events[i]):
            raise ValueError(f"split offset {offset} outside event {i}")
        cuts.add(starts[i] + offset)
    cuts.add(total)
    body = b"".join(events)
    out: list[tuple[float, bytes]] = []
    prev = 0
    ms = 0
    for k, cut in enumerate(sorted(c for c in cuts if c > 0)):
        if k > 0:
            ms += 10 + int(_jitter(sc.name, "gap", k) * 31)
        out.append((ms / 1000, body[prev:cut]))
        prev = cut
    return out


def _t_headers(sc: Scenario) -> float:
    """Seconds to the response headers: 50–400 ms, 400–600 ms when the model thinks."""
    j = _jitter(sc.name, "headers", 0)
    ms = 400 + int(j * 201) if sc.thinking else 50 + int(j * 351)
    return ms / 1000


def _completions_stream(
    sc: Scenario,
    frames: _Frames,
    *,
    coalesce: Sequence[int] = (),
    splits: Sequence[tuple[int, int]] = (),
    end: Literal["eof", "error"] = "eof",
    error: str | None = None,
    thinking_format: str | None = None,
) -> Interaction:
    """Step 2 of the flow (§4) answered with an SSE stream (§5)."""
    return Interaction.streamed(
        method="POST",
        uri=_completions_uri(sc),
        request_headers=_completions_headers(),
        request_body=_completions_body(sc, thinking_format=thinking_format),
        pieces=_pieces(sc, frames.events, coalesce=coalesce, splits=splits),
        end=end,
        error=error,
        t_headers_s=_t_headers(sc),
    )


def _offset_in(event: bytes, text: str, extra: int = 0) -> int:
    """Byte offset of ``text`` (UTF-8) inside ``event``, plus ``extra`` bytes."""
    at = event.find(text.encode("utf-8"))
    if at < 0:
        raise ValueError(f"{text!r} not in event")
    return at + extra


# --------------------------------------------------------------------------------------------
# Scenario builders


def _build_models_list(sc: Scenario) -> list[Interaction]:
    """``GET /api/models`` (§2, §8): three models, abilities as numbers, capabilities booleans.

    ``qwen3-coder-plus`` has no thinking key at all and no search chat type, so a proxy derives
    neither a ``-thinking`` nor a ``-search`` variant for it.
    """
    owner = _uid(sc.name, "owner")

    def model(
        model_id: str,
        name: str,
        description: str,
        short: str,
        capabilities: dict[str, bool],
        abilities: dict[str, int],
        chat_types: list[str],
        *,
        context: int,
        generation: int,
        thinking_length: int | None,
        created: int,
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "profile_image_url": "/static/favicon.png",
            "description": description,
            "capabilities": capabilities,
            "short_description": short,
            "max_context_length": context,
            "max_generation_length": generation,
        }
        if thinking_length is not None:
            meta["max_thinking_generation_length"] = thinking_length
            meta["max_summary_generation_length"] = generation
        meta["abilities"] = abilities
        meta["chat_type"] = chat_types
        meta["mcp"] = ["image-generation", "code-interpreter"]
        meta["modality"] = ["text"]
        return {
            "id": model_id,
            "name": name,
            "object": "model",
            "owned_by": "qwen",
            "info": {
                "id": model_id,
                "user_id": owner,
                "base_model_id": None,
                "name": name,
                "meta": meta,
                "access_control": None,
                "is_active": True,
                "is_visitor_active": True,
                "updated_at": created + 86400,
                "created_at": created,
            },
            "preset": True,
            "action_ids": [],
        }

    models = [
        model(
            "qwen3-max",
            "Qwen3-Max",
            "Synthetic entry: a large general model with reasoning, search and media tools.",
            "Synthetic flagship model.",
            {
                "vision": True,
                "document": True,
                "video": True,
                "audio": True,
                "citations": True,
                "thinking": True,
                "thinking_budget": True,
            },
            {
                "vision": 1,
                "document": 1,
                "video": 1,
                "audio": 1,
                "mcp": 1,
                "citations": 1,
                "thinking": 1,
                "thinking_budget": 1,
            },
            ["t2t", "t2v", "t2i", "image_edit", "search", "artifacts", "web_dev", "deep_research"],
            context=262144,
            generation=32768,
            thinking_length=81920,
            created=1790000000,
        ),
        model(
            "qwen3.6-plus",
            "Qwen3.6-Plus",
            "Synthetic entry: a fast model that streams its thinking as summaries.",
            "Synthetic fast thinking model.",
            {"vision": True, "document": True, "citations": True, "thinking": True},
            {"vision": 1, "document": 1, "mcp": 1, "citations": 1, "thinking": 1},
            ["t2t", "search", "t2i", "artifacts"],
            context=1000000,
            generation=65536,
            thinking_length=81920,
            created=1791000000,
        ),
        model(
            "qwen3-coder-plus",
            "Qwen3-Coder",
            "Synthetic entry: a coding model without a thinking mode.",
            "Synthetic coding model.",
            {"vision": False, "document": True},
            {"vision": 0, "document": 1},
            ["t2t", "artifacts"],
            context=1048576,
            generation=65536,
            thinking_length=None,
            created=1789000000,
        ),
    ]
    return [
        Interaction(
            method="GET",
            uri=MODELS_URL,
            request_headers=_base_headers("application/json, text/plain, */*"),
            request_body=None,
            status=200,
            reason="OK",
            response_headers=dict(_JSON_RESPONSE_HEADERS),
            response_body=_json_compact({"data": models}),
        )
    ]


def _build_t2t_answer(sc: Scenario) -> list[Interaction]:
    """Plain answer (§3, §4.1, §5.1–5.4): incremental answer frames, two empty typing frames,
    the finished frame without usage, no ``[DONE]``."""
    f = _Frames(sc)
    f.created()
    f.pieces(_T2T_PIECES, "answer")
    f.idle_typing()
    f.finished("answer", with_usage=False)
    # events: 0 created, 1..8 answer, 9..10 idle, 11 finished
    return [
        _chats_new(sc),
        _completions_stream(
            sc, f, coalesce=(3, 9), splits=((6, _offset_in(f.events[6], '"usage"', 3)),)
        ),
    ]


def _build_think_answer(sc: Scenario) -> list[Interaction]:
    """Thinking in the ``think`` phase (§4.1 feature_config, §5.3, §5.4): incremental think
    frames, a finished think frame (not the end), then the answer and its finished frame."""
    f = _Frames(sc)
    f.created()
    f.pieces(_THINK_PIECES, "think")
    f.finished("think", with_usage=True)
    f.pieces(_THINK_ANSWER_PIECES, "answer")
    f.idle_typing()
    f.finished("answer", with_usage=False)
    # events: 0 created, 1..6 think, 7 think finished, 8..13 answer, 14..15 idle, 16 finished
    return [
        _chats_new(sc),
        _completions_stream(
            sc, f, coalesce=(2, 7), splits=((10, _offset_in(f.events[10], '"phase"', 2)),)
        ),
    ]


def _build_thinking_summary(sc: Scenario) -> list[Interaction]:
    """Thinking as ``thinking_summary`` snapshots (§4.1 thinking_format, §5.3, §5.5, §11.6):
    content is ``""``; ``extra.summary_title/summary_thought.content`` repeat the whole arrays
    so far (one frame repeats the previous snapshot unchanged); a finished thinking_summary
    frame; then the answer."""
    f = _Frames(sc)
    f.created()

    def extra(titles: Sequence[str], thoughts: Sequence[str]) -> dict[str, Any]:
        return {
            "summary_title": {"content": list(titles)},
            "summary_thought": {"content": list(thoughts)},
        }

    for titles, thoughts in _SUMMARY_SNAPSHOTS:
        f.typing("", "thinking_summary", tokens=4, extra=extra(titles, thoughts))
    f.finished("thinking_summary", with_usage=True, extra=extra(*_SUMMARY_SNAPSHOTS[-1]))
    f.pieces(_SUMMARY_ANSWER_PIECES, "answer")
    f.idle_typing()
    f.finished("answer", with_usage=False)
    # events: 0 created, 1..6 snapshots, 7 finished, 8..13 answer, 14..15 idle, 16 finished
    return [
        _chats_new(sc),
        _completions_stream(
            sc,
            f,
            coalesce=(2, 12),
            splits=((5, _offset_in(f.events[5], '"summary_thought"', 5)),),
            thinking_format="summary",
        ),
    ]


def _build_search_sources(sc: Scenario) -> list[Interaction]:
    """Built-in web search, 2026 shape (§4.1 chat_type, §5.2, §5.3, §5.5): a web_search call
    whose arguments arrive in two pieces, a ``role: "function"`` result frame with
    ``extra.tool_result.docs``, then the answer."""
    f = _Frames(sc)
    f.created()
    function_id = "round_0_1"
    half = len(_SEARCH_QUERY_ARGS) // 2
    for part in (_SEARCH_QUERY_ARGS[:half], _SEARCH_QUERY_ARGS[half:]):
        f.typing(
            "",
            "web_search",
            function_call={"name": "web_search", "arguments": part},
            function_id=function_id,
            extra={"display_position": "answer"},
        )
    result = {
        "role": "function",
        "content": "",
        "phase": "web_search",
        "status": "finished",
        "name": "web_search",
        "extra": {
            "tool_result": {"docs": [dict(d) for d in _SEARCH_DOCS]},
            "function_id": function_id,
        },
    }
    f.raw(f.delta_frame(result, tokens=0))
    f.pieces(_SEARCH_ANSWER_PIECES, "answer")
    f.idle_typing()
    f.finished("answer", with_usage=False)
    # events: 0 created, 1..2 call, 3 result, 4..12 answer, 13..14 idle, 15 finished
    return [
        _chats_new(sc),
        _completions_stream(
            sc, f, coalesce=(1, 13), splits=((3, _offset_in(f.events[3], "example.com")),)
        ),
    ]


def _build_chinese_emoji(sc: Scenario) -> list[Interaction]:
    """CJK and emoji with chunk boundaries inside UTF-8 characters (§5.1 "Split chunks",
    §11.9 (a)): a 3-byte CJK character split after 1 and after 2 bytes, a 4-byte emoji split
    after 2 bytes, another emoji split after 3 bytes with its rest coalesced with the next
    event, and one event split in the middle of its JSON (ASCII position)."""
    f = _Frames(sc)
    f.created()
    f.pieces(_CHINESE_PIECES, "answer")
    f.idle_typing()
    f.finished("answer", with_usage=False)
    ev = f.events
    # events: 0 created, 1 你好, 2 ！, 3 我是, 4 通义千问, 5 ，, 6 很高兴, 7 认识你, 8 。,
    # 9 😊, 10 🎉, 11..12 idle, 13 finished
    splits = (
        (1, _offset_in(ev[1], "你", 1)),  # inside 3-byte 你
        (4, _offset_in(ev[4], "千", 2)),  # inside 3-byte 千
        (6, _offset_in(ev[6], '"usage"', 4)),  # mid-JSON, ASCII
        (9, _offset_in(ev[9], "😊", 2)),  # inside 4-byte 😊
        (10, _offset_in(ev[10], "🎉", 3)),  # inside 4-byte 🎉; rest goes with event 11
    )
    return [
        _chats_new(sc),
        _completions_stream(sc, f, coalesce=(2, 10), splits=splits),
    ]


def _build_error_ratelimited(sc: Scenario) -> list[Interaction]:
    """Daily quota (§4.3, §5.7, §10): HTTP 200 JSON envelope ``RateLimited`` with ``num`` hours;
    the proxy answers 429."""
    answer = _error_envelope(
        sc,
        {
            "code": "RateLimited",
            "details": "You've reached the upper limit for today's usage.",
            "template": (
                "You have reached the daily usage limit. "
                "Please wait {{num}} hours before trying again."
            ),
            "num": 6,
        },
    )
    return [_chats_new(sc), _completions_json(sc, answer, _JSON_RESPONSE_HEADERS)]


def _build_error_unauthorized(sc: Scenario) -> list[Interaction]:
    """Expired token (§9, §10 "Bad token"): HTTP 200 JSON envelope ``Unauthorized``."""
    answer = _error_envelope(
        sc, {"code": "Unauthorized", "details": "401 Unauthorized: token has expired"}
    )
    return [_chats_new(sc), _completions_json(sc, answer, _JSON_RESPONSE_HEADERS)]


def _build_error_waf_json(sc: Scenario) -> list[Interaction]:
    """baxia risk control as JSON (§4.3, §10 "WAF / baxia", §11.8): ``ret`` with
    ``FAIL_SYS_USER_VALIDATE`` / ``RGV587_ERROR`` and a punish URL whose x5secdata is a
    placeholder."""
    punish = (
        "https://chat.qwen.ai:443//api/v2/chat/completions/_____tmd_____/punish"
        "?x5secdata=REDACTED__bx__chat.qwen.ai:443/api/v2/chat/completions"
        "&x5step=2&action=captcha&pureCaptcha="
    )
    answer = _json_compact(
        {
            "ret": ["FAIL_SYS_USER_VALIDATE", "RGV587_ERROR::SM::哎哟喂,被挤爆啦,请稍后重试"],
            "data": {"url": punish},
        }
    )
    return [_chats_new(sc), _completions_json(sc, answer, _JSON_RESPONSE_HEADERS)]


_WAF_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="aliyun_waf_aa" content="synthetic">
<title>Access Verification</title>
</head>
<body>
<!-- synthetic slider page built from docs/protocol.md section 10; not a capture -->
<div id="aliyun_waf_slider" class="captcha">
  <h1>Access Verification</h1>
  <p>Please slide to verify that you are human.</p>
  <div id="nc_1_wrapper" class="nc-container"></div>
</div>
<script>
var x5secdata = "REDACTED";
var punishUrl = "/api/v2/chat/completions/_____tmd_____/punish?x5secdata=" + x5secdata
  + "&x5step=2&action=captcha&pureCaptcha=";
</script>
</body>
</html>
"""


def _build_error_waf_html(sc: Scenario) -> list[Interaction]:
    """baxia/Aliyun WAF slider page as ``text/html`` (§4.3, §10 markers: aliyun_waf,
    _____tmd_____, x5secdata, punish, captcha, "Access Verification")."""
    return [_chats_new(sc), _completions_json(sc, _WAF_HTML, _HTML_RESPONSE_HEADERS)]


def _build_error_bad_request(sc: Scenario) -> list[Interaction]:
    """``Bad_Request`` with details "Internal error" (§5.7, §10 "Bad request"): the proxy
    maps it to 502."""
    answer = _error_envelope(sc, {"code": "Bad_Request", "details": "Internal error"})
    return [_chats_new(sc), _completions_json(sc, answer, _JSON_RESPONSE_HEADERS)]


def _build_stream_cut(sc: Scenario) -> list[Interaction]:
    """Connection lost mid-stream (§5.1, §5.7): complete answer frames, then the last chunk
    ends inside an event's JSON and the transport fails (``end: "error"``)."""
    f = _Frames(sc)
    f.created()
    f.pieces(_STORY_PIECES, "answer")
    f.typing(_STORY_CUT_PIECE, "answer")
    cut_event = f.events.pop()
    cut = _offset_in(cut_event, '"phase"', 3)  # after the content, before the end of the JSON
    f.events.append(cut_event[:cut])
    # events: 0 created, 1..6 answer, 7 truncated
    return [
        _chats_new(sc),
        _completions_stream(sc, f, coalesce=(2,), end="error", error=_STREAM_CUT_ERROR),
    ]


def _build_error_frame(sc: Scenario) -> list[Interaction]:
    """An error frame inside the stream (§5.7 "Mid-stream"): a few answer frames, then
    ``{"error": {"code", "details"}}`` and EOF."""
    f = _Frames(sc)
    f.created()
    f.pieces(_ERROR_FRAME_PIECES, "answer")
    f.raw({"error": {"code": "Internal_Error", "details": "The model service failed."}})
    # events: 0 created, 1..5 answer, 6 error
    return [
        _chats_new(sc),
        _completions_stream(sc, f, splits=((6, _offset_in(f.events[6], '"details"')),)),
    ]


def _build_empty_stream(sc: Scenario) -> list[Interaction]:
    """Silent cut-off (§5.7, §10 "Empty/aborted stream"): only ``response.created``, then EOF."""
    f = _Frames(sc)
    f.created()
    return [_chats_new(sc), _completions_stream(sc, f)]


# --------------------------------------------------------------------------------------------
# The scenario table

_T2T = ("3", "4.1", "5.1", "5.2", "5.3", "5.4")

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="models_list",
        description="Synthetic GET /api/models: qwen3-max, qwen3.6-plus, qwen3-coder-plus.",
        protocol_sections=("2", "8"),
        model="",
        openai_model="",
        prompt="",
        chat_type="",
        thinking=False,
    ),
    Scenario(
        name="t2t_answer",
        description="Synthetic plain t2t answer without thinking (chats/new, then SSE).",
        protocol_sections=_T2T,
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="Say hello in one short sentence.",
        chat_type="t2t",
        thinking=False,
        expected_content=_join(_T2T_PIECES),
    ),
    Scenario(
        name="think_answer",
        description="Synthetic answer with reasoning in phase 'think', then phase 'answer'.",
        protocol_sections=_T2T,
        model="qwen3-max",
        openai_model="qwen3-max-thinking",
        prompt="What is 17 * 23? Think step by step.",
        chat_type="t2t",
        thinking=True,
        expected_content=_join(_THINK_ANSWER_PIECES),
        expected_reasoning=_join(_THINK_PIECES),
    ),
    Scenario(
        name="thinking_summary",
        description=(
            "Synthetic thinking_format 'summary': cumulative thinking_summary snapshots, "
            "then the answer."
        ),
        protocol_sections=(*_T2T, "5.5", "11"),
        model="qwen3.6-plus",
        openai_model="qwen3.6-plus-thinking",
        prompt="Name three primary colors.",
        chat_type="t2t",
        thinking=True,
        expected_content=_join(_SUMMARY_ANSWER_PIECES),
        expected_reasoning="\n\n".join(_SUMMARY_SNAPSHOTS[-1][1]),
    ),
    Scenario(
        name="search_sources",
        description="Synthetic search chat: web_search call, tool_result docs, then the answer.",
        protocol_sections=(*_T2T, "5.5"),
        model="qwen3-max",
        openai_model="qwen3-max-search",
        prompt="What is the tallest mountain on Earth?",
        chat_type="search",
        thinking=False,
        expected_content=_join(_SEARCH_ANSWER_PIECES),
        expected_sources=tuple(d["url"] for d in _SEARCH_DOCS),
    ),
    Scenario(
        name="chinese_emoji",
        description=(
            "Synthetic CJK + emoji answer whose network chunks end inside multi-byte UTF-8 "
            "characters and inside an event's JSON."
        ),
        protocol_sections=(*_T2T, "11"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="用一句话介绍你自己，并加一个表情。",
        chat_type="t2t",
        thinking=False,
        expected_content=_join(_CHINESE_PIECES),
    ),
    Scenario(
        name="error_ratelimited",
        description="Synthetic RateLimited JSON envelope (HTTP 200) instead of SSE.",
        protocol_sections=("3", "4.1", "4.3", "5.7", "10"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="Trigger the daily limit.",
        chat_type="t2t",
        thinking=False,
        expected_status=429,
        expected_error_code="rate_limit_exceeded",
    ),
    Scenario(
        name="error_unauthorized",
        description="Synthetic Unauthorized JSON envelope (HTTP 200): expired token.",
        protocol_sections=("3", "4.1", "4.3", "9", "10"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="Trigger an expired token.",
        chat_type="t2t",
        thinking=False,
        expected_status=401,
        expected_error_code="upstream_unauthorized",
    ),
    Scenario(
        name="error_waf_json",
        description="Synthetic baxia FAIL_SYS_USER_VALIDATE JSON (HTTP 200) with a punish URL.",
        protocol_sections=("3", "4.1", "4.3", "10"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="Trigger the captcha (JSON).",
        chat_type="t2t",
        thinking=False,
        expected_status=503,
        expected_error_code="upstream_captcha",
    ),
    Scenario(
        name="error_waf_html",
        description="Synthetic Aliyun WAF slider page (HTTP 200, text/html) instead of SSE.",
        protocol_sections=("3", "4.1", "4.3", "10"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="Trigger the captcha (HTML).",
        chat_type="t2t",
        thinking=False,
        expected_status=503,
        expected_error_code="upstream_captcha",
    ),
    Scenario(
        name="error_bad_request",
        description="Synthetic Bad_Request JSON envelope (HTTP 200), details 'Internal error'.",
        protocol_sections=("3", "4.1", "4.3", "5.7", "10"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="Trigger a bad request.",
        chat_type="t2t",
        thinking=False,
        expected_status=502,
        expected_error_code="upstream_bad_request",
    ),
    Scenario(
        name="stream_cut",
        description=(
            "Synthetic SSE answer cut off mid-stream: the last chunk ends inside an event's "
            "JSON and the connection fails."
        ),
        protocol_sections=(*_T2T, "5.7"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="Tell me a short story about a lighthouse.",
        chat_type="t2t",
        thinking=False,
        expected_status=502,
        expected_error_code="upstream_truncated",
        partial_content=_join(_STORY_PIECES),
    ),
    Scenario(
        name="error_frame",
        description="Synthetic SSE answer interrupted by an error frame, then EOF.",
        protocol_sections=(*_T2T, "5.7"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="Trigger an error mid-stream.",
        chat_type="t2t",
        thinking=False,
        expected_status=502,
        expected_error_code="upstream_error",
        partial_content=_join(_ERROR_FRAME_PIECES),
    ),
    Scenario(
        name="empty_stream",
        description="Synthetic SSE stream holding only response.created, then EOF.",
        protocol_sections=("3", "4.1", "5.1", "5.2", "5.7", "10"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="Trigger an empty answer.",
        chat_type="t2t",
        thinking=False,
        expected_status=502,
        expected_error_code="upstream_empty",
    ),
)

_BUILDERS: dict[str, Callable[[Scenario], list[Interaction]]] = {
    "models_list": _build_models_list,
    "t2t_answer": _build_t2t_answer,
    "think_answer": _build_think_answer,
    "thinking_summary": _build_thinking_summary,
    "search_sources": _build_search_sources,
    "chinese_emoji": _build_chinese_emoji,
    "error_ratelimited": _build_error_ratelimited,
    "error_unauthorized": _build_error_unauthorized,
    "error_waf_json": _build_error_waf_json,
    "error_waf_html": _build_error_waf_html,
    "error_bad_request": _build_error_bad_request,
    "stream_cut": _build_stream_cut,
    "error_frame": _build_error_frame,
    "empty_stream": _build_empty_stream,
}


def synthetic_cassette(
    name: str, description: str, sections: Sequence[str], interactions: list[Interaction]
) -> Cassette:
    """A cassette labelled as synthetic: built by this tool on :data:`SYNTH_DATE`, following
    the ``docs/protocol.md`` ``sections``. Shared by every synthetic set."""
    return Cassette(
        name=name,
        description=description,
        provenance=Provenance(
            kind="synthetic",
            date=SYNTH_DATE,
            tool=SYNTH_TOOL,
            tool_version=SYNTH_TOOL_VERSION,
            protocol_sections=list(sections),
            source=None,
        ),
        interactions=interactions,
    )


def build(sc: Scenario) -> Cassette:
    """The cassette of one scenario (in memory; nothing is written)."""
    return synthetic_cassette(sc.name, sc.description, sc.protocol_sections, _BUILDERS[sc.name](sc))


def build_all() -> list[Cassette]:
    """Every synthetic cassette of this module, in :data:`SCENARIOS` order."""
    return [build(sc) for sc in SCENARIOS]


#: Further synthetic sets, each in its own module exposing ``build_all() -> list[Cassette]``
#: (chat-side scenarios for images/video, probe answers for the conformance harness). They are
#: written into ``cassettes/`` together with this module's set.
EXTRA_SETS = (
    "recorder.synthetic_media",
    "recorder.synthetic_probes",
    "recorder.synthetic_conversations",
    "recorder.synthetic_tools",
    "recorder.synthetic_2026",
    "recorder.synthetic_responses",
)


def build_everything() -> list[Cassette]:
    """This module's cassettes, then those of every module in :data:`EXTRA_SETS` present."""
    cassettes = build_all()
    for module_name in EXTRA_SETS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        cassettes.extend(module.build_all())
    return cassettes


def write_all(out_dir: Path) -> list[Path]:
    """Write ``<out_dir>/<name>.json`` for every synthetic cassette (atomically); return paths."""
    out_dir = Path(out_dir)
    return [cassette.save(out_dir / f"{cassette.name}.json") for cassette in build_everything()]
