"""The harness's readings of answers that the cassette fixtures cannot express.

Some cases need the exact bytes of one answer (an unknown Anthropic event type) and are read
directly from an :class:`~proxy.conformance.probes.Exchange`; others need a live target that
does something with headers or the connection (a body left open after ``[DONE]``, a charset
label, keys checked by header), served by a small aiohttp app on loopback.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.conformance.agents import _read_anthropic_stream
from proxy.conformance.checks import _http_failure
from proxy.conformance.probes import Exchange, Probe
from proxy.conformance.report import RequestRecord


def exchange(
    body: bytes,
    *,
    stream: bool = True,
    content_type: str = "text/event-stream",
    status: int = 200,
) -> Exchange:
    """An answer as the client would have recorded it."""
    probe = Probe("probe", "POST", "/chat/completions", b"{}", stream=stream)
    return Exchange(
        probe=probe,
        request=RequestRecord("POST", "http://t/v1/chat/completions"),
        status=status,
        headers={"content-type": content_type},
        body=body,
    )


def anthropic_sse(events: list[dict[str, Any]]) -> bytes:
    """Anthropic SSE frames: an ``event:`` line named after each data's type."""
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


ANTHROPIC_TEXT = [
    {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant"}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
    {"type": "message_stop"},
]


def test_anthropic_stream_ignores_unknown_event_types() -> None:
    """A new event type (Anthropic may add them; the SDKs skip them) is not out of order: it
    is ignored and noted, wherever it comes."""
    annotation = {"type": "content_block_annotation", "index": 0, "note": "x"}
    events = [*ANTHROPIC_TEXT[:3], annotation, *ANTHROPIC_TEXT[3:], dict(annotation)]
    s = _read_anthropic_stream(exchange(anthropic_sse(events)))
    assert s.problems == [] and s.text == "Hi" and s.stop_reason == "end_turn"
    assert s.unknown == ["content_block_annotation"] * 2
    assert "content_block_annotation" in s.notes()[0]


def test_anthropic_stream_still_fails_known_events_out_of_order() -> None:
    """A known event where the grammar does not allow it still fails."""
    events = [*ANTHROPIC_TEXT[:2], ANTHROPIC_TEXT[4], *ANTHROPIC_TEXT[2:4], ANTHROPIC_TEXT[5]]
    s = _read_anthropic_stream(exchange(anthropic_sse(events)))
    assert any("out of order" in p or "while blocks" in p for p in s.problems), s.problems


def test_a_charset_label_other_than_utf8_fails_only_with_non_ascii_text() -> None:
    """UTF-8 Chinese labelled iso-8859-1 fails (clients that honour the label garble it); no
    label, a UTF-8 label in any spelling, or an ASCII-only body is fine."""
    zh = json.dumps({"text": "我们"}, ensure_ascii=False).encode()
    ascii_only = json.dumps({"text": "我们"}).encode()  # \\u-escaped
    label = "application/json; charset=ISO-8859-1"
    failed = _http_failure(exchange(zh, stream=False, content_type=label))
    assert failed is not None and failed.diagnosis == "wrong_charset", failed
    assert "charset=iso-8859-1" in failed.message and "utf-8" in failed.message
    for content_type, body in (
        ("application/json", zh),
        ('application/json; charset="UTF-8"', zh),
        ("application/json;charset=utf8", zh),
        (label, ascii_only),
    ):
        assert _http_failure(exchange(body, stream=False, content_type=content_type)) is None
