"""The first token is not held behind the rest of its network chunk (``_Pump.eager``).

At low load a short answer often arrives in one read. Before, the relay translated the whole
chunk (and, the answer being done, logged the request) before writing anything; now the
batch that commits the stream ends with the first event that gives the client something.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from helpers import StubChat, sse_data
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import relay as relay_mod
from proxy.app import make_app
from proxy.config import Settings
from proxy.conversation import Conversation, Turn
from proxy.frontdoors.openai_chat import ChatStream
from proxy.qwen.translate import Text

CREATED = b'data: {"response.created": {"chat_id": "c", "parent_id": "p", "response_id": "r"}}\n\n'


def _delta(content: str, status: str = "typing") -> bytes:
    delta = {"phase": "answer", "content": content, "status": status}
    frame = {"choices": [{"delta": delta}], "usage": {"input_tokens": 1, "output_tokens": 1}}
    return f"data: {json.dumps(frame)}\n\n".encode()


WORDS = ["one", " two", " three", " four", " five"]
ANSWER = CREATED + b"".join(_delta(w) for w in WORDS) + _delta("", "finished")


async def _batches(chunks: list[bytes], *, eager: bool) -> list[list[Any]]:
    chat = StubChat(chunks)
    pump = relay_mod._Pump(chat, chat.translator())  # type: ignore[arg-type]
    pump.eager = eager
    out = []
    while (batch := await pump.next_batch()) is not None:
        out.append(batch)
    return out


async def test_an_eager_pump_ends_its_batch_at_the_first_text() -> None:
    eager = await _batches([ANSWER], eager=True)
    whole = await _batches([ANSWER], eager=False)
    assert len(whole) == 1  # one chunk, one batch
    first = [e for e in eager[0] if isinstance(e, Text)]
    assert [t.text for t in first] == ["one"]
    assert [e for b in eager for e in b] == whole[0]


async def test_end_of_body_events_are_not_split() -> None:
    """The body's last event without its blank line is translated with the end of the body
    (the answer is closed after it, not before)."""
    body = [CREATED + _delta("one"), _delta(" six").rstrip(b"\n")]
    eager = await _batches(body, eager=True)
    texts = [e.text for b in eager for e in b if isinstance(e, Text)]
    assert texts == ["one", " six"]


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=len(ANSWER) - 1), max_size=8))
async def test_eager_batches_hold_the_same_events_in_any_chunking(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [ANSWER[a:b] for a, b in zip([0, *points], [*points, len(ANSWER)], strict=True)]
    eager = await _batches(chunks, eager=True)
    whole = await _batches(chunks, eager=False)
    assert [e for b in eager for e in b] == [e for b in whole for e in b]


async def test_the_first_write_carries_the_first_text_only(
    aiohttp_client: Any, monkeypatch: Any
) -> None:
    writes: list[bytes] = []
    events: list[str] = []
    original = web.StreamResponse.write

    async def spy(self: web.StreamResponse, data: bytes) -> None:
        writes.append(bytes(data))
        events.append("write")
        await original(self, data)

    class _Chat(StubChat):
        def committed(self) -> None:
            events.append("commit")

    monkeypatch.setattr(relay_mod._SSEResponse, "write", spy)
    app = make_app(Settings(upstream_url="http://127.0.0.1:9"))

    async def handler(request: web.Request) -> web.StreamResponse:
        conv = Conversation("m", [Turn("user", "hi")], stream=True)
        return await relay_mod.relay(request, conv, _Chat([ANSWER]), ChatStream(conv))  # type: ignore[arg-type]

    app.router.add_post("/stub", handler)
    client = await aiohttp_client(app)
    resp = await client.post("/stub")
    raw = await resp.read()
    assert b'"one"' in writes[0] and b'" two"' not in writes[0]
    assert events[:2] == ["write", "commit"]  # the next spare is asked for after the first byte
    contents = [json.loads(d)["choices"][0]["delta"].get("content") for d in sse_data(raw)[:-1]]
    assert "".join(c or "" for c in contents) == "".join(WORDS)
    assert raw.endswith(b"data: [DONE]\n\n")
