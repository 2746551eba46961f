"""``qwen-proxy serve --offline`` as a real process, and the command line's help texts."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from click.testing import CliRunner
from helpers import SCENARIO

from proxy.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
READY_ATTEMPTS = 300
"""How many times /healthz is polled before giving up (each attempt waits at most 0.05 s)."""

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthz(base: str) -> dict[str, object] | None:
    try:
        with _NO_PROXY.open(f"{base}/healthz", timeout=2) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m proxy serve --offline`` on a free port, ready (``/healthz`` answered)."""
    port = _free_port()
    log = (tmp_path / "serve.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN_PROXY_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--offline", "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(READY_ATTEMPTS):
            if proc.poll() is not None:
                break
            health = _healthz(base)
            if health is not None:
                assert health["status"] == "ok"
                assert health["offline"] is True
                break
            try:
                proc.wait(timeout=0.05)  # returns early only if the process died
            except subprocess.TimeoutExpired:
                pass
        else:
            pytest.fail(f"qwen-proxy did not answer /healthz after {READY_ATTEMPTS} attempts")
        if proc.poll() is not None:
            log.flush()
            output = (tmp_path / "serve.log").read_text(errors="replace")
            pytest.fail(f"qwen-proxy exited with {proc.returncode}:\n{output}")
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()


def test_serve_offline_answers_and_terminates(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    """The offline server answers t2t_answer through the sync SDK and exits on SIGTERM."""
    base, proc = served
    sc = SCENARIO["t2t_answer"]
    with openai.OpenAI(base_url=f"{base}/v1", api_key="test", max_retries=0) as client:
        completion = client.chat.completions.create(
            model=sc.openai_model, messages=[{"role": "user", "content": sc.prompt}]
        )
        assert completion.choices[0].message.content == sc.expected_content
        text = ""
        for chunk in client.chat.completions.create(
            model=sc.openai_model, messages=[{"role": "user", "content": sc.prompt}], stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        assert text == sc.expected_content
    proc.terminate()
    assert proc.wait(timeout=10) == 0


def test_cli_help() -> None:
    """`qwen-proxy --help` lists the serve command."""
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    assert "serve" in result.output
    assert "OpenAI-compatible" in result.output


def test_cli_serve_help() -> None:
    """`qwen-proxy serve --help` documents the serving flags and where secrets come from."""
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    for flag in ("--offline", "--port", "--host", "--replay", "--reasoning", "--config"):
        assert flag in result.output
    assert "QWEN_PROXY_TOKENS" in result.output


def test_cli_version() -> None:
    """`qwen-proxy --version` prints the package version."""
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert "0.1.0" in result.output


def test_serve_rejects_bad_reasoning_value() -> None:
    """An invalid --reasoning choice is a usage error (exit code 2), not a crash."""
    result = CliRunner().invoke(main, ["serve", "--reasoning", "inline"])
    assert result.exit_code == 2
    assert "--reasoning" in result.output


def test_tasks_left_when_serving_stops_are_cancelled_before_the_loop_closes() -> None:
    """What still runs once serving stopped (a connection reading a refused body, background
    work) is cancelled and unwound, as ``web.run_app`` does: none is destroyed pending."""
    from proxy.cli import _cancel_leftovers

    loop = asyncio.new_event_loop()
    unwound: list[str] = []

    async def lingering(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            unwound.append(name)

    try:
        tasks = [loop.create_task(lingering(n)) for n in ("a", "b")]
        loop.run_until_complete(asyncio.sleep(0))  # both wait
        _cancel_leftovers(loop)
        assert all(t.cancelled() for t in tasks)
        assert sorted(unwound) == ["a", "b"]
        _cancel_leftovers(loop)  # nothing left: nothing to do
    finally:
        loop.close()
