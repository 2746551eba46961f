"""Synthetic drift fixtures: healthy "before" traffic and the real breakages of
docs/protocol.md §11.

Every cassette here is **synthetic**: written by this module from the protocol notes
(``docs/protocol.md``; sections cited per cassette in ``provenance.protocol_sections``), with our
own ids, texts and timings; nothing is copied from a capture. They are test fixtures for
``qwen-record diff`` and live in ``tests/cassettes/drift/`` -- never in ``cassettes/``, which the
offline proxy serves and which must stay current, protocol-faithful traffic.

``baseline_*`` cassettes are the healthy state (t2t answer, think phase, t2i image stream); the
schemas inferred from them are the baseline the ``drift_*`` cassettes are diffed against:

=========================  =====================================================================
``drift_phase_missing``    ``feature_config.output_schema`` dropped, frames without ``phase``
                           (§4.1 field notes, §5.3 "absent", §11.7)
``drift_thinking_summary`` reasoning as ``thinking_summary`` snapshots (§5.3, §5.5, §11.6)
``drift_t2i_envelope``     a t2i turn answered by a RateLimited JSON envelope, not SSE
                           (§6.1, §6.4 (1), §11.4: the ``![image](null)`` cause)
``drift_waf``              the baxia ``FAIL_SYS_USER_VALIDATE`` JSON and the slider page
                           (§4.3, §10, §11.8)
``drift_stream_false``     ``stream: false`` answered with ``Bad_Request`` (§4.2, §10, §11.3)
``drift_token_expired``    the token expired: chats/new answers HTTP 401 ``Unauthorized``
                           (§3, §9, §10, §11.11)
``drift_summary_thought``  after §11.6: ``thinking_summary`` frames no longer carry
                           ``extra.summary_thought`` (only the titles); diffed against the
                           baseline plus ``drift_thinking_summary`` (§5.3, §5.5, §11)
``drift_unknown_code``     an error envelope with a code nobody has seen (§5.7, §10, §11)
=========================  =====================================================================

:func:`probe_drift` derives, from the synthetic answers to the conformance probes
(``recorder/synthetic_probes.py``), the reasoning probe's answer with ``extra.summary_thought``
gone: served by the replay server it makes ``qwen-proxy doctor`` see ``reasoning.thinking`` fail
and the drift that explains it (``tests/test_doctor.py``).

Output is deterministic (uuid5 ids, fixed timestamps and chunk timings). Regenerate with::

    python -m recorder.synthetic_drift tests/cassettes/drift
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recorder.cassette import Cassette, Interaction, Provenance

__all__ = ["DRIFT_DATE", "DRIFT_TOOL", "build_all", "mutate_frames", "probe_drift", "write_all"]

DRIFT_DATE = "2026-11-22"
DRIFT_TOOL = "recorder.synthetic_drift"
DRIFT_TOOL_VERSION = "0.1.0"

_BASE = "https://chat.qwen.ai"
_NS = uuid.uuid5(uuid.NAMESPACE_URL, "qwen-gateway:synthetic-drift")
_EPOCH = 1795345200  # 2026-11-22T11:00:00Z
_JSON = {"Content-Type": ["application/json; charset=utf-8"]}
_HTML = {"Content-Type": ["text/html; charset=utf-8"]}


def _uid(name: str, role: str) -> str:
    return str(uuid.uuid5(_NS, f"{name}/{role}"))


def _compact(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _event(obj: Any) -> bytes:
    """One SSE event (§5.1): ``data: <json>`` and a blank line."""
    return ("data: " + json.dumps(obj, ensure_ascii=False) + "\n\n").encode("utf-8")


def _headers(accept: str) -> dict[str, list[str]]:
    return {
        "Content-Type": ["application/json; charset=utf-8"],
        "Accept": [accept],
        "source": ["web"],
        "version": ["0.2.91"],
    }


def _chats_new(name: str, chat_type: str, model: str) -> Interaction:
    """``POST /api/v2/chats/new`` (§3) answered with the new chat's id."""
    body = {
        "title": "New Chat",
        "models": [model],
        "chat_mode": "normal",
        "chat_type": chat_type,
        "timestamp": _EPOCH * 1000,
    }
    answer = {
        "success": True,
        "request_id": _uid(name, "req/new"),
        "data": {"id": _uid(name, "chat")},
    }
    return Interaction(
        method="POST",
        uri=f"{_BASE}/api/v2/chats/new",
        request_headers=_headers("application/json, text/plain, */*"),
        request_body=_compact(body),
        status=200,
        reason="OK",
        response_headers=dict(_JSON),
        response_body=_compact(answer),
    )


def _completion_body(
    name: str,
    prompt: str,
    *,
    chat_type: str = "t2t",
    model: str = "qwen3-max",
    thinking: bool = False,
    stream: bool = True,
    output_schema: bool = True,
    thinking_format: str | None = None,
) -> str:
    """The v2 completions body (§4.1); the knobs reproduce the breakages."""
    features: dict[str, Any] = {"thinking_enabled": thinking}
    if output_schema:
        features["output_schema"] = "phase"
    if thinking_format is not None:
        features["thinking_format"] = thinking_format
    body: dict[str, Any] = {
        "stream": stream,
        "version": "2.1",
        "incremental_output": True,
        "chat_id": _uid(name, "chat"),
        "chat_mode": "normal",
        "model": model,
        "parent_id": None,
        "timestamp": _EPOCH + 1,
        "messages": [
            {
                "fid": _uid(name, "fid"),
                "parentId": None,
                "parent_id": None,
                "childrenIds": [_uid(name, "child")],
                "role": "user",
                "content": prompt,
                "user_action": "chat",
                "files": [],
                "timestamp": _EPOCH,
                "models": [model],
                "chat_type": chat_type,
                "sub_chat_type": chat_type,
                "feature_config": features,
                "extra": {"meta": {"subChatType": chat_type}},
            }
        ],
    }
    if chat_type == "t2i":
        body["size"] = "16:9"
    return _compact(body)


def _completions(
    name: str, body: str, headers: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    return {
        "method": "POST",
        "uri": f"{_BASE}/api/v2/chat/completions?chat_id={_uid(name, 'chat')}",
        "request_headers": headers or {**_headers("*/*"), "x-accel-buffering": ["no"]},
        "request_body": body,
    }


def _stream(name: str, body: str, events: Sequence[bytes]) -> Interaction:
    """Completions answered with SSE, one event per chunk, gaps of 20-39 ms (§5.1)."""
    pieces: list[tuple[float, bytes]] = []
    ms = 0
    for i, ev in enumerate(events):
        if i:
            ms += 20 + (i * 7) % 20
        pieces.append((ms / 1000, ev))
    return Interaction.streamed(**_completions(name, body), pieces=pieces, t_headers_s=0.25)


def _plain(name: str, body: str, answer: str, headers: dict[str, list[str]]) -> Interaction:
    """Completions answered with a whole non-SSE body, HTTP 200 (§4.3)."""
    return Interaction(
        **_completions(name, body),
        status=200,
        reason="OK",
        response_headers=dict(headers),
        response_body=answer,
    )


class _Frames:
    """SSE frames of §5.2 with the cumulative text usage of §5.4."""

    def __init__(self, name: str, *, phase_field: bool = True) -> None:
        self.name = name
        self.phase_field = phase_field
        self.events: list[bytes] = []
        self.out = 0

    def created(self) -> None:
        self.events.append(
            _event(
                {
                    "response.created": {
                        "chat_id": _uid(self.name, "chat"),
                        "parent_id": _uid(self.name, "user-msg"),
                        "response_id": _uid(self.name, "response"),
                    }
                }
            )
        )

    def usage(self) -> dict[str, Any]:
        return {
            "input_tokens": 21,
            "output_tokens": self.out,
            "characters": 0,
            "total_tokens": 21 + self.out,
            "input_tokens_details": {"text_tokens": 21},
            "output_tokens_details": {"text_tokens": self.out},
            "cached_tokens": 0,
        }

    def delta(self, content: str, phase: str, status: str = "typing", **more: Any) -> None:
        delta: dict[str, Any] = {"role": "assistant", "content": content}
        if self.phase_field:
            delta["phase"] = phase
        delta["status"] = status
        delta.update(more)
        frame: dict[str, Any] = {"choices": [{"delta": delta}]}
        if status == "typing":
            self.out += 1
        if status == "typing" or phase != "answer":  # the final answer frame has no usage (5.4)
            frame["usage"] = self.usage()
        self.events.append(_event(frame))


def _provenance(sections: Sequence[str]) -> Provenance:
    return Provenance(
        kind="synthetic",
        date=DRIFT_DATE,
        tool=DRIFT_TOOL,
        tool_version=DRIFT_TOOL_VERSION,
        protocol_sections=list(sections),
        source=None,
    )


def _cassette(
    name: str, description: str, sections: Sequence[str], inters: list[Interaction]
) -> Cassette:
    return Cassette(name, description, _provenance(sections), inters)


# ------------------------------------------------------------------------------------------------
# Baseline (healthy) traffic


def _baseline_t2t() -> Cassette:
    name = "baseline_t2t"
    f = _Frames(name)
    f.created()
    for piece in ("Sure", ",", " here", " it", " is", "."):
        f.delta(piece, "answer")
    f.delta("", "answer", "finished")
    body = _completion_body(name, "Say something short.")
    return _cassette(
        name,
        "Synthetic healthy t2t turn: answer frames with phase, finished frame (baseline).",
        ("3", "4.1", "5.1", "5.2", "5.3", "5.4"),
        [_chats_new(name, "t2t", "qwen3-max"), _stream(name, body, f.events)],
    )


def _baseline_think() -> Cassette:
    name = "baseline_think"
    f = _Frames(name)
    f.created()
    for piece in ("Two plus two", " is four."):
        f.delta(piece, "think")
    f.delta("", "think", "finished")
    for piece in ("2 + 2", " = 4."):
        f.delta(piece, "answer")
    f.delta("", "answer", "finished")
    body = _completion_body(name, "What is 2 + 2? Think first.", thinking=True)
    return _cassette(
        name,
        "Synthetic healthy t2t turn with thinking in the think phase (baseline).",
        ("3", "4.1", "5.1", "5.2", "5.3", "5.4"),
        [_chats_new(name, "t2t", "qwen3-max"), _stream(name, body, f.events)],
    )


_IMAGE_URL = "https://cdn.qwenlm.ai/output/synthetic/drift/image.png?key=<REDACTED:key:1>"


def _baseline_t2i() -> Cassette:
    name = "baseline_t2i"
    f = _Frames(name)
    f.created()
    t2i_usage = {
        "input_tokens": 0,
        "output_tokens": 0,
        "characters": 0,
        "width": 2688,
        "height": 1536,
        "image_count": 1,
    }
    f.events.append(
        _event(
            {
                "choices": [
                    {
                        "delta": {
                            "role": "assistant",
                            "content": _IMAGE_URL,
                            "phase": "image_gen",
                            "status": "typing",
                            "extra": {"output_image_hw": [[1536, 2688]]},
                        }
                    }
                ],
                "usage": t2i_usage,
            }
        )
    )
    f.delta("", "image_gen", "finished")
    body = _completion_body(name, "A lighthouse at dusk.", chat_type="t2i")
    return _cassette(
        name,
        "Synthetic healthy t2i turn streamed: image_gen frame whose content is the URL (baseline).",
        ("3", "4.1", "5.1", "5.2", "5.3", "5.4", "5.5", "6.1"),
        [_chats_new(name, "t2i", "qwen3-max"), _stream(name, body, f.events)],
    )


# ------------------------------------------------------------------------------------------------
# The breakages


def _drift_phase_missing() -> Cassette:
    name = "drift_phase_missing"
    f = _Frames(name, phase_field=False)
    f.created()
    for piece in ("Sure", ",", " here", " it", " is", "."):
        f.delta(piece, "answer")
    f.delta("", "answer", "finished")
    body = _completion_body(name, "Say something short.", output_schema=False)
    return _cassette(
        name,
        "Synthetic §11.7 breakage: output_schema dropped from feature_config, so no frame "
        "carries delta.phase.",
        ("3", "4.1", "5.2", "5.3", "11"),
        [_chats_new(name, "t2t", "qwen3-max"), _stream(name, body, f.events)],
    )


def _drift_thinking_summary() -> Cassette:
    name = "drift_thinking_summary"
    f = _Frames(name)
    f.created()
    titles: list[str] = []
    thoughts: list[str] = []
    for title, thought in (("Reading", "The user asks for 2 + 2."), ("Adding", "That is 4.")):
        titles.append(title)
        thoughts.append(thought)
        extra = {
            "summary_title": {"content": list(titles)},
            "summary_thought": {"content": list(thoughts)},
        }
        f.delta("", "thinking_summary", extra=extra)
    f.delta("", "thinking_summary", "finished", extra=extra)
    for piece in ("2 + 2", " = 4."):
        f.delta(piece, "answer")
    f.delta("", "answer", "finished")
    body = _completion_body(
        name, "What is 2 + 2? Think first.", thinking=True, thinking_format="summary"
    )
    return _cassette(
        name,
        "Synthetic §11.6 change: reasoning as cumulative thinking_summary snapshots in "
        "extra.summary_title/summary_thought.",
        ("4.1", "5.3", "5.5", "11"),
        [_chats_new(name, "t2t", "qwen3-max"), _stream(name, body, f.events)],
    )


def _drift_t2i_envelope() -> Cassette:
    name = "drift_t2i_envelope"
    answer = _compact(
        {
            "success": False,
            "request_id": _uid(name, "req/completions"),
            "data": {
                "code": "RateLimited",
                "details": "You've reached the upper limit for today's usage.",
                "template": "Please wait {{num}} hours before trying again.",
                "num": 5,
            },
        }
    )
    body = _completion_body(name, "A lighthouse at dusk.", chat_type="t2i")
    return _cassette(
        name,
        "Synthetic §11.4 breakage (the ![image](null) cause): a t2i turn answered with a JSON "
        "error envelope instead of SSE.",
        ("4.3", "5.7", "6.1", "6.4", "10", "11"),
        [_chats_new(name, "t2i", "qwen3-max"), _plain(name, body, answer, _JSON)],
    )


_SLIDER = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta name="aliyun_waf_aa" content="synthetic">
<title>Access Verification</title></head>
<body><!-- synthetic slider page written from docs/protocol.md section 10 -->
<div id="aliyun_waf_slider" class="captcha"><h1>Access Verification</h1></div>
<script>var url = "/_____tmd_____/punish?x5secdata=REDACTED&x5step=2&action=captcha";</script>
</body></html>
"""


def _drift_waf() -> Cassette:
    name = "drift_waf"
    punish = (
        "https://chat.qwen.ai:443//api/v2/chat/completions/_____tmd_____/punish"
        "?x5secdata=REDACTED&x5step=2&action=captcha&pureCaptcha="
    )
    waf = _compact(
        {"ret": ["FAIL_SYS_USER_VALIDATE", "RGV587_ERROR::SM::synthetic"], "data": {"url": punish}}
    )
    return _cassette(
        name,
        "Synthetic §11.8 breakage: completions answered by the baxia FAIL_SYS_USER_VALIDATE "
        "JSON, then by the text/html slider page.",
        ("4.3", "10", "11"),
        [
            _chats_new(name, "t2t", "qwen3-max"),
            _plain(name, _completion_body(name, "Say something short."), waf, _JSON),
            _plain(name, _completion_body(name, "Say something else."), _SLIDER, _HTML),
        ],
    )


def _drift_stream_false() -> Cassette:
    name = "drift_stream_false"
    answer = _compact(
        {
            "success": False,
            "request_id": _uid(name, "req/completions"),
            "data": {"code": "Bad_Request", "details": "Bad Request"},
        }
    )
    body = _completion_body(name, "Say something short.", stream=False)
    return _cassette(
        name,
        "Synthetic §11.3 breakage: stream:false answered with a Bad_Request envelope.",
        ("4.1", "4.2", "10", "11"),
        [_chats_new(name, "t2t", "qwen3-max"), _plain(name, body, answer, _JSON)],
    )


def _drift_token_expired() -> Cassette:
    name = "drift_token_expired"
    answer = _compact(
        {
            "success": False,
            "request_id": _uid(name, "req/new"),
            "data": {"code": "Unauthorized", "details": "401 Token has expired"},
        }
    )
    inter = _chats_new(name, "t2t", "qwen3-max")
    expired = Interaction(
        method=inter.method,
        uri=inter.uri,
        request_headers=inter.request_headers,
        request_body=inter.request_body,
        status=401,
        reason="Unauthorized",
        response_headers=dict(_JSON),
        response_body=answer,
    )
    return _cassette(
        name,
        "Synthetic §11.11 breakage: the token expired, chats/new answers HTTP 401 Unauthorized.",
        ("3", "9", "10", "11"),
        [expired],
    )


def _drift_summary_thought() -> Cassette:
    name = "drift_summary_thought"
    f = _Frames(name)
    f.created()
    titles: list[str] = []
    extra: dict[str, Any] = {}
    for title in ("Reading", "Adding"):
        titles.append(title)
        extra = {"summary_title": {"content": list(titles)}}
        f.delta("", "thinking_summary", extra=extra)
    f.delta("", "thinking_summary", "finished", extra=extra)
    for piece in ("2 + 2", " = 4."):
        f.delta(piece, "answer")
    f.delta("", "answer", "finished")
    body = _completion_body(
        name, "What is 2 + 2? Think first.", thinking=True, thinking_format="summary"
    )
    return _cassette(
        name,
        "Synthetic drift after §11.6: thinking_summary frames carry only extra.summary_title, "
        "no extra.summary_thought.",
        ("4.1", "5.3", "5.5", "11"),
        [_chats_new(name, "t2t", "qwen3-max"), _stream(name, body, f.events)],
    )


def _drift_unknown_code() -> Cassette:
    name = "drift_unknown_code"
    answer = _compact(
        {
            "success": False,
            "request_id": _uid(name, "req/completions"),
            "data": {"code": "Account_Frozen", "details": "This account is frozen."},
        }
    )
    body = _completion_body(name, "Say something short.")
    return _cassette(
        name,
        "Synthetic drift: completions answered with an error code never seen before.",
        ("4.3", "5.7", "10", "11"),
        [_chats_new(name, "t2t", "qwen3-max"), _plain(name, body, answer, _JSON)],
    )


def mutate_frames(
    cassette: Cassette,
    fn: Callable[[Any], Any],
    *,
    name: str,
    description: str,
    sections: Sequence[str],
) -> Cassette:
    """A synthetic copy of ``cassette`` whose streamed SSE frames went through ``fn`` (parsed
    JSON in, JSON out); requests are kept, so the replay server matches the same requests.
    Streams are re-chunked one event per chunk, 20 ms apart."""
    from recorder.schema import sse_data

    inters: list[Interaction] = []
    for inter in cassette.interactions:
        if inter.stream is None:
            inters.append(inter)
            continue
        events = []
        for data in sse_data(inter.response_body):
            try:
                obj = json.loads(data)
            except ValueError:
                events.append(("data: " + data + "\n\n").encode("utf-8"))
                continue
            events.append(_event(fn(obj)))
        inters.append(
            Interaction.streamed(
                method=inter.method,
                uri=inter.uri,
                request_headers=inter.request_headers,
                request_body=inter.request_body,
                pieces=[(i * 0.02, ev) for i, ev in enumerate(events)],
                status=inter.status,
                reason=inter.reason,
                response_headers=inter.response_headers,
                t_headers_s=inter.stream.t_headers_s,
            )
        )
    return _cassette(name, description, sections, inters)


def _without_summary_thought(frame: Any) -> Any:
    if isinstance(frame, dict) and isinstance(frame.get("choices"), list):
        delta = frame["choices"][0].get("delta", {})
        extra = delta.get("extra")
        if delta.get("phase") == "thinking_summary" and isinstance(extra, dict):
            extra.pop("summary_thought", None)
    return frame


def probe_drift() -> Cassette:
    """The conformance reasoning probe's answer, with ``extra.summary_thought`` gone from its
    ``thinking_summary`` frames (named ``probe_thinking``, so it replaces the healthy one)."""
    from recorder.synthetic_probes import build_all as build_probes

    healthy = next(c for c in build_probes() if c.name == "probe_thinking")
    return mutate_frames(
        healthy,
        _without_summary_thought,
        name="probe_thinking",
        description=(
            "Synthetic drift of the reasoning probe's answer: thinking_summary frames no longer "
            "carry extra.summary_thought."
        ),
        sections=("5.3", "5.5", "11"),
    )


def build_all() -> list[Cassette]:
    """The baseline cassettes, then the drift cassettes (in the module docstring's order)."""
    return [
        _baseline_t2t(),
        _baseline_think(),
        _baseline_t2i(),
        _drift_phase_missing(),
        _drift_thinking_summary(),
        _drift_t2i_envelope(),
        _drift_waf(),
        _drift_stream_false(),
        _drift_token_expired(),
        _drift_summary_thought(),
        _drift_unknown_code(),
    ]


def write_all(out_dir: Path) -> list[Path]:
    """Write ``<out_dir>/<name>.json`` for every cassette (atomically); return the paths."""
    return [c.save(Path(out_dir) / f"{c.name}.json") for c in build_all()]


if __name__ == "__main__":  # pragma: no cover
    for written in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/cassettes/drift")):
        print(written)
