"""The log line a request writes: the direct path of ``configure_logging`` (one processor, a
logger class that renders and writes without structlog's generic steps) writes exactly the line
structlog's processor chain wrote (level, timestamp, redacted secret keys, masked secret values,
console or JSON layout), and everything the direct path does not take still works."""

from __future__ import annotations

import io
import json
import re
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
