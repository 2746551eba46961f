"""The real 2025-10-26 capture, imported by our own importer, through the whole proxy path.

The model list, the chats/new answer and the streamed completion captured from chat.qwen.ai and
published by another project (docs/protocol.md §14 [S3]; read from
``../shared/protocol/samples`` or ``$QWEN_SHARED_DIR/protocol/samples``, skipped when absent)
are imported into a cassette, replayed by the replay server, and asked for by the official
``openai`` SDK through the proxy. The answer must be exactly the text of the capture's answer
frames, streamed and not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestServer

from proxy.app import make_app
from proxy.config import Settings
from recorder.importers import build_cassette, import_http_pair
from recorder.redact import Redactor
from recorder.replay import REQUESTS_KEY, make_replay_app

SSE = "sse_t2t_answer_no_thinking_2025-10-26.txt"


def expected_answer(path: Path) -> tuple[str, dict[str, Any]]:
    """The answer text and last usage, read from the capture independently of the proxy."""
    text, usage = [], {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("data: "):
            continue
        frame = json.loads(line[len("data: ") :])
        for choice in frame.get("choices", []):
            delta = choice["delta"]
            if delta.get("phase") == "answer":
                text.append(delta.get("content") or "")
        usage = frame.get("usage") or usage
    return "".join(text), usage


@pytest.fixture
async def servers(samples_dir: Path, tmp_path: Path, aiohttp_server: Any) -> Any:
    redactor = Redactor()
    pairs = [
        ("models_request_guest_2025-10-26.http", "models_list_2025-10-26.json"),
        ("chats_new_request_guest_2025-10-26.http", "chats_new_response_2025-10-26.json"),
        ("request_stream_t2t_logged_in_2025-10-26.http", SSE),
    ]
    interactions = [
        import_http_pair(samples_dir / req, samples_dir / resp, redactor=redactor)
        for req, resp in pairs
    ]
    cassette = build_cassette(
        name="real_t2t_2025_10_26",
        description="real capture",
        interactions=interactions,
        sources=[p for pair in pairs for p in pair],
    )
    cassette.save(tmp_path / "real.json")
    replay: TestServer = await aiohttp_server(make_replay_app([cassette], speed=0))
    proxy: TestServer = await aiohttp_server(
        make_app(Settings(upstream_url=str(replay.make_url("")).rstrip("/")))
    )
    return replay, proxy


async def test_real_capture_streamed_gives_exactly_its_text(
    servers: Any, samples_dir: Path
) -> None:
    """Streamed through the proxy, the real capture yields exactly its answer and usage."""
    replay, proxy = servers
    text, usage = expected_answer(samples_dir / SSE)
    client = openai.AsyncOpenAI(base_url=str(proxy.make_url("/v1")), api_key="x", max_retries=0)
    stream = await client.chat.completions.create(
        model="qwen3-vl-plus",
        messages=[{"role": "user", "content": "explain law to an alien"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, last_usage = [], [], None
    async for chunk in stream:
        if chunk.usage:
            last_usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    await client.close()
    assert "".join(pieces) == text
    assert len(text) > 3000 and "🌌" in text
    assert finish == ["stop"]
    assert last_usage is not None
    assert last_usage.prompt_tokens == usage["input_tokens"]
    assert last_usage.completion_tokens == usage["output_tokens"]
    sent = replay.app[REQUESTS_KEY][-1]
    assert sent.matched == "real_t2t_2025_10_26"


async def test_real_capture_non_streamed_gives_exactly_its_text(
    servers: Any, samples_dir: Path
) -> None:
    """Non-streamed, the proxy aggregates the real capture into exactly its answer."""
    _, proxy = servers
    text, usage = expected_answer(samples_dir / SSE)
    client = openai.AsyncOpenAI(base_url=str(proxy.make_url("/v1")), api_key="x", max_retries=0)
    completion = await client.chat.completions.create(
        model="qwen3-vl-plus",
        messages=[{"role": "user", "content": "explain law to an alien"}],
    )
    await client.close()
    assert completion.choices[0].message.content == text
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == usage["output_tokens"]
