"""The relay's last resort: a bug after a stream is committed (the 200 and the first text are
out) still ends the stream with the front door's error event and a whole body, never a body cut
mid-answer; the traceback goes to the log once.

The bug is simulated: the translator raises once it has emitted answer text (after the commit,
since the first text is what commits the stream). Before this, the exception left the handler
and aiohttp cut the connection (found by a random upstream frame fuzzer: a list as ``phase``
raised ``TypeError`` there; that cause is fixed in the translator).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest
from helpers import SCENARIO, ServerFactory, Stack, start_stack

from proxy.qwen.translate import Translator
from proxy.relay import RELAY_FAILED

T2T = SCENARIO["t2t_answer"]


@pytest.fixture
async def broken(aiohttp_server: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """The offline stack whose translator fails on every chunk after its first answer text."""
    real = Translator.feed_all

    def feed_all(self: Translator, events: Any) -> Any:
        if self.answered:
            raise RuntimeError("a bug in the translator")
        return real(self, events)

    monkeypatch.setattr(Translator, "feed_all", feed_all)
    return await start_stack(aiohttp_server)


async def _post(stack: Stack, path: str, body: dict[str, Any]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(stack.url(path), json=body) as r,
    ):
        return r.status, (await r.read()).decode()


def _events(raw: str) -> tuple[list[str], Any]:
    """The ``event:`` names of a named-event SSE body and the data of its last event."""
    blocks = raw.strip().split("\n\n")
    names = [block.split("\n", 1)[0].removeprefix("event: ") for block in blocks]
    return names, json.loads(blocks[-1].split("data: ", 1)[1])


def _assert_logged_once(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    out = capsys.readouterr()
    text = caplog.text + out.out + out.err
    assert text.count("unhandled_error") == 1, text
    assert "a bug in the translator" in text  # the traceback is logged


async def test_a_chat_stream_ends_with_an_error_event_and_no_done(
    broken: Stack, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {
        "model": T2T.openai_model,
        "stream": True,
        "messages": [{"role": "user", "content": T2T.prompt}],
    }
    with caplog.at_level(logging.INFO):
        status, raw = await _post(broken, "/v1/chat/completions", body)
    assert status == 200
    frames = [f[len("data: ") :] for f in raw.strip().split("\n\n")]
    assert '"role":"assistant"' in frames[0]  # the answer had begun
    assert "[DONE]" not in raw
    last = json.loads(frames[-1])
    assert last["error"]["message"] == RELAY_FAILED
    assert last["error"]["code"] == "internal_error"
    _assert_logged_once(caplog, capsys)


async def test_a_messages_stream_ends_with_an_error_event(
    broken: Stack, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 256,
        "stream": True,
        "messages": [{"role": "user", "content": T2T.prompt}],
    }
    with caplog.at_level(logging.INFO):
        status, raw = await _post(broken, "/v1/messages", body)
    assert status == 200
    names, data = _events(raw)
    assert (names[0], names[-1]) == ("message_start", "error")
    assert "message_stop" not in names
    assert data["error"]["type"] == "api_error" and data["error"]["message"] == RELAY_FAILED
    _assert_logged_once(caplog, capsys)


async def test_a_responses_stream_ends_failed(
    broken: Stack, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {"model": T2T.openai_model, "stream": True, "input": T2T.prompt}
    with caplog.at_level(logging.INFO):
        status, raw = await _post(broken, "/v1/responses", body)
    assert status == 200
    names, failed = _events(raw)
    assert (names[0], names[-1]) == ("response.created", "response.failed")
    assert "response.completed" not in names
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["message"] == RELAY_FAILED
    _assert_logged_once(caplog, capsys)
