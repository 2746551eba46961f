"""Property: any re-chunking of any recorded stream gives the same OpenAI output.

The pure pipeline (SSE decoder, translator, chunk encoder) is run over each streamed interaction
of every cassette in ``cassettes/`` (and over the published real capture of docs/protocol.md
§14 [S3] when present), first with the recorded chunk boundaries, then with boundaries
hypothesis draws. The encoded OpenAI bytes must be identical, byte for byte.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.qwen.sse import SSEDecoder
from proxy.qwen.translate import ChunkEncoder, Translator
from recorder.cassette import Interaction, load_all

REPO_ROOT = Path(__file__).resolve().parents[1]
CASSETTES_DIR = REPO_ROOT / "cassettes"
SHARED = Path(os.environ.get("QWEN_SHARED_DIR") or REPO_ROOT.parent / "shared")
REAL_SAMPLE = SHARED / "protocol/samples/sse_t2t_answer_no_thinking_2025-10-26.txt"


def openai_bytes(chunks: list[bytes], *, broken: bool, reasoning: str = "field") -> bytes:
    """What the proxy would send for this upstream byte sequence."""
    dec = SSEDecoder()
    tr = Translator(reasoning=reasoning)  # type: ignore[arg-type]
    enc = ChunkEncoder(completion_id="chatcmpl-x", model="m", created=0, include_usage=True)
    out = [enc.role()]
    for chunk in chunks:
        for event in dec.feed(chunk):
            out.extend(enc.encode(e, tr.usage) for e in tr.feed(event.data))
    for event in dec.close():
        out.extend(enc.encode(e, tr.usage) for e in tr.feed(event.data))
    tail = tr.abort("connection dropped") if broken else tr.close()
    out.extend(enc.encode(e, tr.usage) for e in tail)
    return b"".join(out)


def streamed_interactions() -> list[tuple[str, Interaction]]:
    found = []
    for cassette in load_all([CASSETTES_DIR]):
        for i, inter in enumerate(cassette.interactions):
            if inter.stream is not None and "event-stream" in inter.content_type:
                found.append((f"{cassette.name}[{i}]", inter))
    return found


STREAMS = streamed_interactions()


def rechunk(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    pieces, start = [], 0
    for p in points:
        pieces.append(body[start:p])
        start = p
    pieces.append(body[start:])
    return pieces


def test_there_are_streams_to_check() -> None:
    """The repository holds streamed cassettes for the property to run on."""
    assert len(STREAMS) >= 8


@pytest.mark.parametrize(("name", "inter"), STREAMS, ids=[n for n, _ in STREAMS])
@pytest.mark.parametrize("reasoning", ["field", "think_tags"])
@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=64))
def test_rechunked_cassette_streams_translate_identically(
    name: str, inter: Interaction, reasoning: str, cuts: list[int]
) -> None:
    """Any chunk boundaries, inside frames or inside characters, give identical OpenAI bytes."""
    broken = inter.stream is not None and inter.stream.end == "error"
    recorded = [c for _, c in inter.iter_chunks()]
    body = b"".join(recorded)
    expected = openai_bytes(recorded, broken=broken, reasoning=reasoning)
    assert openai_bytes(rechunk(body, cuts), broken=broken, reasoning=reasoning) == expected
    assert b"\xef\xbf\xbd" not in expected  # no U+FFFD ever produced


@pytest.mark.skipif(
    not REAL_SAMPLE.is_file(),
    reason="real capture absent: set QWEN_SHARED_DIR (see tests/conftest.py, samples_dir)",
)
@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=200))
def test_real_capture_rechunked_translates_identically(cuts: list[int]) -> None:
    """The real 2025-10-26 capture gives the same OpenAI bytes under any chunking."""
    body = REAL_SAMPLE.read_bytes()
    expected = openai_bytes([body], broken=False)
    assert openai_bytes(rechunk(body, cuts), broken=False) == expected
    assert b'"finish_reason":"stop"' in expected and expected.endswith(b"data: [DONE]\n\n")
