"""The first look at a continuation's stream (proxy.service._peek): accepted or refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.errors import UpstreamError
from proxy.service import _peek


class FakeContent:
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


class FakeResponse:
    def __init__(self, chunks: list[bytes], ctype: str = "text/event-stream") -> None:
        self.content = FakeContent(chunks)
        self.headers = {"Content-Type": ctype}


def sse(*frames: Any) -> bytes:
    return b"".join(f"data: {json.dumps(f)}\n\n".encode() for f in frames)


CREATED = {"response.created": {"chat_id": "c", "response_id": "r"}}


def delta(**d: Any) -> dict[str, Any]:
    return {"choices": [{"delta": d}]}


async def test_text_is_accepted_and_the_chunks_kept() -> None:
    chunks = [sse(CREATED), sse(delta(content="Hi", phase="answer", status="typing")), b"rest"]
    got = await _peek(FakeResponse(chunks))  # type: ignore[arg-type]
    assert got == chunks[:2]  # stops at the first event; the rest is read by the relay


async def test_a_native_tool_call_is_accepted() -> None:
    extra = {"local_mcp": {"T": [{"tool_name": "T-f", "params": {}}]}}
    frames = sse(
        CREATED,
        delta(content="", phase="local_tool", status="finished", extra=extra),
        delta(content="", phase="answer", status="finished"),
    )
    assert await _peek(FakeResponse([frames])) == [frames]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "chunks",
    [
        [sse(CREATED, {"error": {"code": "PARENT_NOT_FOUND", "details": "no parent"}})],
        [sse(CREATED, delta(status="error", code="Not_Found", details="is not exist"))],
        [b'{"success": false, "data": {"code": "Not_Found", "details": "The chat is not exist"}}'],
        [sse(CREATED)],  # an empty answer
        [],
    ],
)
async def test_refusals_before_text_raise(chunks: list[bytes]) -> None:
    with pytest.raises(UpstreamError):
        await _peek(FakeResponse(chunks))  # type: ignore[arg-type]
