"""The log line a request writes: the direct path of ``configure_logging`` (one processor, a
logger class that renders and writes without structlog's generic steps) writes exactly the line
structlog's processor chain wrote (level, timestamp, redacted secret keys, masked secret values,
console or JSON layout), and everything the direct path does not take still works."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from typing import Any

import pytest
import structlog

from proxy.cli import _console_line, _drop_secrets, _json_line, _timestamper, configure_logging
from proxy.secrets import SecretMasker

SECRET = "sk-planted-0123456789abcdef"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _reference(fmt: str, secrets: list[str] | None) -> tuple[io.StringIO, Any]:
    """A logger with structlog's own machinery and the four processors the gateway used
    before the direct path (the expected output)."""
    out = io.StringIO()
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json_line) if fmt == "json" else _console_line
    )
    if secrets:
        masker = SecretMasker(secrets)
        inner = renderer

        def renderer(logger: Any, name: str, event: Any) -> str:
            return masker.mask(inner(logger, name, event))

    logger = structlog.wrap_logger(
        structlog.WriteLogger(out),
        processors=[structlog.processors.add_log_level, _timestamper(), _drop_secrets, renderer],
        wrapper_class=structlog.make_filtering_bound_logger("debug"),
    )
    return out, logger


def _configured(fmt: str, secrets: list[str] | None) -> tuple[io.StringIO, Any]:
    out = io.StringIO()
    configure_logging("debug", fmt, secrets, stream=out, cache=True)
    return out, structlog.get_logger("test").bind()  # the concrete logger (as first use caches)


def _lines(buf: io.StringIO) -> list[str]:
    return [TIMESTAMP.sub("<ts>", line) for line in buf.getvalue().splitlines()]


CALLS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "info",
        "chat_completion",
        {
            "completion_id": "chatcmpl-0123",
            "model": "qwen3-max",
            "account": "guest",
            "prompt_tokens": 20,
            "completion_tokens": 2,
            "failure": None,
            "ignored_phases": {"think": 2},
        },
    ),
    ("warning", "upstream_error", {"message": f"the site said {SECRET}", "status": 502}),
    ("error", "odd", {"Token": "abc", "cookie": "a=b", "api_key": SECRET, "path": "/v1/x"}),
    ("debug", "quoted", {"text": 'it\'s "quoted"\nand long', "n": 1.5, "flag": True}),
    ("info", "no_fields", {}),
]


@pytest.mark.parametrize("fmt", ["console", "json"])
@pytest.mark.parametrize("secrets", [None, [SECRET]])
def test_the_direct_line_is_the_processor_chains_line(fmt: str, secrets: list[str] | None) -> None:
    got_buf, got = _configured(fmt, secrets)
    want_buf, want = _reference(fmt, secrets)
    for method, event, kw in CALLS:
        getattr(got, method)(event, **kw)
        getattr(want, method)(event, **kw)
    assert type(got).__name__.startswith("Direct")  # the direct path was the one taken
    got_lines, want_lines = _lines(got_buf), _lines(want_buf)
    assert got_lines == want_lines
    assert len(got_lines) == len(CALLS)  # one line per call
    text = got_buf.getvalue()
    if secrets:
        assert SECRET not in text
    assert "'abc'" not in text and '"abc"' not in text  # a secret key's value is redacted
    if fmt == "json":
        first = json.loads(got_buf.getvalue().splitlines()[0])
        assert first["event"] == "chat_completion" and first["level"] == "info"
        assert list(first)[-3:] == ["event", "level", "timestamp"]


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_what_the_direct_path_does_not_take_still_logs(fmt: str) -> None:
    got_buf, got = _configured(fmt, [SECRET])
    want_buf, want = _reference(fmt, [SECRET])
    for log in (got, want):
        log.bind(request="r1").info("bound", key=SECRET)  # bound context
        log.info("formatted %s", "arg")  # % arguments
        try:
            raise ValueError(f"boom {SECRET}")
        except ValueError:
            log.exception("failed")  # exc_info through error()
    assert _lines(got_buf) == _lines(want_buf)
    assert SECRET not in got_buf.getvalue()
    assert "request" in got_buf.getvalue() and "formatted arg" in got_buf.getvalue()


def test_the_level_filters_and_capture_logs_still_sees_events() -> None:
    out = io.StringIO()
    configure_logging("warning", "json", None, stream=out, cache=False)
    log = structlog.get_logger("test")
    log.info("dropped")
    log.warning("kept", n=1)
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["kept"]
    with structlog.testing.capture_logs() as captured:
        structlog.get_logger("test").warning("captured", n=2)
    assert captured == [{"event": "captured", "n": 2, "log_level": "warning"}]


async def _next_iteration() -> None:
    """Return once the loop has run the callbacks scheduled before this call."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done


@pytest.mark.parametrize("fmt", ["console", "json"])
async def test_lines_of_one_loop_iteration_are_written_together_at_its_end(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    configure_logging("debug", fmt, [SECRET], stream=out, cache=False)
    log = structlog.get_logger("test")
    writes: list[str] = []
    real_write = out.write

    def write(text: str) -> int:
        writes.append(text)
        return real_write(text)

    monkeypatch.setattr(out, "write", write)
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)
    log.info("first", n=1, token=SECRET)
    monkeypatch.setattr(time, "time", lambda: 1_700_000_003.5)
    log.warning("second", n=2)
    assert out.getvalue() == ""  # not yet: at the end of this iteration
    monkeypatch.setattr(time, "time", lambda: 1_700_000_009.0)
    await _next_iteration()
    lines = out.getvalue().splitlines()
    assert len(writes) == 1 and len(lines) == 2  # one write for the iteration's lines
    assert "first" in lines[0] and "second" in lines[1]  # in the order logged
    # stamped when logged, not when written
    assert "2023-11-14T22:13:20.250000Z" in lines[0]
    assert "2023-11-14T22:13:23.500000Z" in lines[1]
    assert SECRET not in out.getvalue()  # the batch renders through the same masking
    log.info("third")
    await _next_iteration()
    assert len(out.getvalue().splitlines()) == 3


async def test_a_traceback_line_is_written_at_once_after_the_waiting_lines() -> None:
    out = io.StringIO()
    configure_logging("debug", "console", None, stream=out, cache=False)
    log = structlog.get_logger("test")
    log.info("before")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")  # the exception being handled is only known now
    text = out.getvalue()
    assert text.index("before") < text.index("failed") < text.index("ValueError: boom")
    assert "RuntimeError" not in text


def test_without_a_running_loop_a_line_is_written_at_once() -> None:
    out = io.StringIO()
    configure_logging("debug", "json", None, stream=out, cache=False)
    structlog.get_logger("test").info("now", n=1)
    assert json.loads(out.getvalue())["event"] == "now"
