"""Fuzzing: whatever chat.qwen.ai sends, the pure pipeline never raises.

The SSE decoder and the translator are fed arbitrary bytes and arbitrary JSON frames; they may
only emit events (a failure is an event), never raise. Contract as in mitmproxy's reader fuzzing.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.qwen.sse import SSEDecoder
from proxy.qwen.translate import ChunkEncoder, Failure, Finish, Translator

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)

KEYS = st.sampled_from(
    [
        "choices",
        "usage",
        "response.created",
        "response.info",
        "response.completed",
        "error",
        "success",
        "data",
        "ret",
        "code",
    ]
)
PHASES = (
    st.sampled_from(
        ["answer", "think", "thinking_summary", "web_search", "image_gen", "image_edit", None, "x"]
    )
    | JSON
)  # any JSON value too: a list or an object as the phase once raised TypeError
IDS = st.text(max_size=8) | JSON


@st.composite
def frames(draw: Any) -> str:
    """Frames shaped like Qwen's, with any values in any field."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        delta = {
            "content": draw(st.one_of(st.text(max_size=10), JSON)),
            "phase": draw(PHASES),
            "status": draw(st.sampled_from(["typing", "finished", "error", None]) | JSON),
            "extra": draw(JSON),
        }
        return json.dumps({"choices": [{"delta": delta}], "usage": draw(JSON)})
    if kind == 1:  # the stream's opening frame, its ids of any type
        ids = {"chat_id": draw(IDS), "response_id": draw(IDS), "parent_id": draw(IDS)}
        return json.dumps({"response.created": ids})
    return json.dumps({draw(KEYS): draw(JSON)})


def pump(chunks: list[bytes], *, media: bool) -> list[Any]:
    """Decode, translate and encode ``chunks``; the events. The turn's ids the translator keeps
    (the stop call's and the next turn's) are strings or absent, whatever the frames held."""
    dec = SSEDecoder()
    tr = Translator(expect_image=media)
    enc = ChunkEncoder(completion_id="c", model="m", created=0, include_usage=True)
    out: list[Any] = []
    for c in chunks:
        for ev in dec.feed(c):
            out.extend(tr.feed(ev.data))
    for ev in dec.close():
        out.extend(tr.feed(ev.data))
    out.extend(tr.close())
    for e in out:
        enc.encode(e, tr.usage)  # every event must be encodable
    assert tr.chat_id is None or (isinstance(tr.chat_id, str) and tr.chat_id)
    assert tr.response_id is None or (isinstance(tr.response_id, str) and tr.response_id)
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20), st.booleans())
def test_arbitrary_bytes_never_raise(chunks: list[bytes], media: bool) -> None:
    """Random bytes end in exactly one closing event (a finish or a failure), no exception."""
    out = pump(chunks, media=media)
    assert sum(isinstance(e, Finish | Failure) for e in out) == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(frames(), max_size=12), st.booleans())
def test_arbitrary_frames_never_raise(items: list[str], media: bool) -> None:
    """Qwen-shaped frames with arbitrary values end in exactly one closing event, no exception."""
    raw = b"".join(f"data: {f}\n\n".encode() for f in items)
    out = pump([raw], media=media)
    assert sum(isinstance(e, Finish | Failure) for e in out) == 1
