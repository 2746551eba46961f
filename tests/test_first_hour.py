"""What a new user meets first: one-line errors for a busy port, a bad config file or variable,
warnings for misspelt ``QWEN_PROXY_*`` variables."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner

from proxy.app import make_app
from proxy.cli import main
from proxy.config import ConfigError, Settings, closest_setting, load_settings, unknown_env_vars
from proxy.errors import ModelNotFoundError
from proxy.qwen.client import network_failure, upstream_label
from proxy.qwen.models import Catalog, UpstreamModel

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another socket is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("QWEN_PROXY_")}


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "proxy", "serve", "--offline", "--port"],
        [sys.executable, "-m", "recorder", "replay", "cassettes", "--port"],
    ],
    ids=["qwen-proxy serve", "qwen-record replay"],
)
def test_port_in_use_is_one_line_exit_2(argv: list[str], busy_port: int) -> None:
    """A busy port: exit 2, one line naming the port and the flag, no traceback, no banner."""
    proc = subprocess.run(
        [*argv, str(busy_port)],
        cwd=REPO_ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    out = proc.stdout + proc.stderr
    assert f"port {busy_port} is in use" in out
    assert "pass --port" in out
    assert "Traceback" not in out
    assert "OpenAI API at" not in out and "Replaying" not in out  # no "started" banner


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "qwen-proxy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_key_names_file_line_and_closest_setting(tmp_path: Path) -> None:
    path = _write(tmp_path, 'host = "127.0.0.1"\nprot = 8020\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == (
        f"config file {path}, line 2: unknown setting `prot`; did you mean `port`?"
    )


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "port = \n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(f"config file {path}: not valid TOML")
    assert "line 1" in message
    assert "\n" not in message


def test_wrong_type_in_file_is_rejected_even_when_a_flag_overrides_it(tmp_path: Path) -> None:
    path = _write(tmp_path, 'reasoning = "field"\nport = "abc"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, port=9000)
    message = str(info.value)
    assert message.startswith(f"config file {path}, line 2: `port`:")
    assert "'abc'" in message


def test_secret_values_are_never_quoted(tmp_path: Path) -> None:
    path = _write(tmp_path, "tokens = 12345678\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "`tokens`" in str(info.value)
    assert "12345678" not in str(info.value)


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_PROXY_PORT", "abc")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("environment variable QWEN_PROXY_PORT: ")
    assert "'abc'" in str(info.value)


def test_misspelt_environment_variables_are_warned_about() -> None:
    warnings = unknown_env_vars(
        {
            "QWEN_PROXY_TOKEN": "x",
            "QWEN_PROXY_PORT": "8000",
            "QWEN_PROXY_CONFIG": "a.toml",
            "QWEN_PROXY_CHECK_KEY": "k",
            "QWEN_PROXY_ZZZZ": "1",
            "OTHER": "1",
        }
    )
    assert warnings == [
        "QWEN_PROXY_TOKEN is not a qwen-proxy setting and is ignored; "
        "did you mean QWEN_PROXY_TOKENS?",
        "QWEN_PROXY_ZZZZ is not a qwen-proxy setting and is ignored",
    ]


def test_closest_setting() -> None:
    assert closest_setting("prot") == "port"
    assert closest_setting("PORT") == "port"
    assert closest_setting("upstream") == "upstream_url"
    assert closest_setting("zzzzzz") is None


def test_serve_prints_config_errors_in_one_line_per_problem(tmp_path: Path) -> None:
    path = _write(tmp_path, "prot = 8020\n")
    result = CliRunner(env={"QWEN_PROXY_CONFIG": None}).invoke(
        main, ["serve", "--config", str(path)]
    )
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"qwen-proxy: config file {path}, line 1: unknown setting `prot`; did you mean `port`?"
    )
    assert "Traceback" not in result.output


def test_serve_rejects_bad_environment_without_a_pydantic_dump() -> None:
    result = CliRunner(env={"QWEN_PROXY_PORT": "abc"}).invoke(main, ["serve"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("qwen-proxy: environment variable QWEN_PROXY_PORT:")
    assert "pydantic" not in result.output


def _catalog() -> Catalog:
    return Catalog(
        [
            UpstreamModel("qwen3-max", "Qwen3-Max", True, True, 0, ("t2t", "search")),
            UpstreamModel("qwen-plus-2025-09-11", "Qwen Plus", False, False, 0, ("t2t",)),
            UpstreamModel("Qwen3-Coder", "Qwen3-Coder", False, False, 0, ("t2t",)),
        ]
    )


def test_model_names_match_case_insensitively() -> None:
    catalog = _catalog()
    assert catalog.route("QWEN3-MAX").model == "qwen3-max"
    route = catalog.route("Qwen3-Max-Thinking")
    assert (route.model, route.thinking) == ("qwen3-max", True)
    assert catalog.route("qwen3-coder").model == "Qwen3-Coder"


def test_unknown_model_suggests_the_closest_and_lists_every_model() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        _catalog().route("qwen3-max-thinkng")
    message = info.value.message
    assert "Did you mean `qwen3-max-thinking`?" in message
    assert "The 3 models are: Qwen3-Coder, qwen-plus-2025-09-11, qwen3-max" in message
    assert info.value.param == "model"


def test_unknown_model_without_a_close_one_has_no_guess_and_a_capped_echo() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        _catalog().route("x" * 10_000)
    message = info.value.message
    assert "Did you mean" not in message
    assert len(message) < 500


# -- upstream failures are said in words and name the configured upstream -----------------------


def test_upstream_label() -> None:
    assert upstream_label("https://chat.qwen.ai") == "chat.qwen.ai"
    assert upstream_label("http://127.0.0.1:8001") == "the upstream at http://127.0.0.1:8001"
    assert upstream_label("https://user:pw@mirror.example/x") == (
        "the upstream at https://mirror.example"
    )


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (aiohttp.ServerDisconnectedError(), "it closed the connection without answering"),
        (aiohttp.ClientPayloadError("x"), "the answer was cut off before its end"),
        (TimeoutError(), "it did not answer in time"),
        (ConnectionResetError(104, "Connection reset by peer"), "(connection reset by peer)"),
        (RuntimeError("boom"), "a network error occurred"),
    ],
)
def test_network_failures_are_words_not_class_names(exc: BaseException, words: str) -> None:
    said = network_failure(exc)
    assert words in said
    assert type(exc).__name__ not in said


async def test_unreachable_upstream_is_named_and_said_in_words(aiohttp_client: Any) -> None:
    """A proxy pointed at a closed port: 502 naming that upstream, the refusal in words."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])  # closed again when the block ends: nothing listens
    client = await aiohttp_client(make_app(Settings(upstream_url=f"http://127.0.0.1:{port}")))
    resp = await client.get("/v1/models")
    assert resp.status == 502
    message = (await resp.json())["error"]["message"]
    assert message == (
        f"could not reach the upstream at http://127.0.0.1:{port}: the connection was refused "
        "(nothing listens there?)"
    )


def test_replay_server_logs_a_client_hang_up_as_one_debug_line() -> None:
    """A client that leaves mid-stream is one debug line on the replay console, no traceback.

    A real ``qwen-record replay`` process (the test server of aiohttp cancels handlers on a
    hang-up, so only a real one shows what users see), five times slower than recorded.
    """
    import http.client
    from urllib.parse import urlsplit

    from recorder.cassette import Cassette

    cas = Cassette.load(REPO_ROOT / "cassettes" / "chinese_emoji.json")
    inter = next(i for i in cas.interactions if i.stream is not None)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "recorder", "replay", "cassettes/chinese_emoji.json", "-v"),
            *("--port", str(port), "--speed", "0.2"),
        ],
        cwd=REPO_ROOT,
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    watchdog = threading.Timer(60, proc.kill)  # bounds the reads below if the server stalls
    watchdog.start()
    lines: list[str] = []
    try:
        for line in proc.stdout:  # the banner comes once the port is bound
            lines.append(line)
            if "Replaying" in line:
                break
        url = urlsplit(inter.uri)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(
            inter.method,
            url.path + (f"?{url.query}" if url.query else ""),
            body=inter.request_body_bytes(),
            headers={"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read1(65536)  # the first chunk, then hang up
        conn.sock.close()  # type: ignore[union-attr]
        conn.close()
        for line in proc.stdout:  # the handler ends at its next write: then the access line
            lines.append(line)
            if "aiohttp.access" in line or "Error handling request" in line:
                break
    finally:
        watchdog.cancel()
        proc.terminate()
        rest, _ = proc.communicate(timeout=30)
        lines.append(rest)
    output = "".join(lines)
    assert "client hung up during POST /api/v2/chat/completions" in output
    assert "Traceback" not in output
    assert "Error handling request" not in output


# -- `qwen-proxy check` against a keyed target without --key ------------------------------------


def _keyed_target() -> web.Application:
    async def refuse(request: web.Request) -> web.Response:
        body = {"error": {"message": "Missing API key", "type": "invalid_request_error"}}
        return web.json_response(body, status=401)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    return app


async def test_check_says_once_at_the_top_that_the_target_wants_a_key(aiohttp_server: Any) -> None:
    from proxy.conformance import run_checks

    server = await aiohttp_server(_keyed_target())
    base = str(server.make_url("/v1"))
    report = await run_checks(base, None, timeout_s=10)
    assert len(report.notes) == 1
    assert "wants an API key" in report.notes[0] and "--key" in report.notes[0]
    markdown = report.to_markdown()
    head = markdown.split("| ", 1)[0]  # everything above the results table
    assert head.count("wants an API key") == 1
    assert report.to_dict()["notes"] == report.notes
    assert type(report).from_dict(report.to_dict()).notes == report.notes

    keyed = await run_checks(base, "sk-some-key", timeout_s=10)
    assert keyed.notes == []


async def test_get_model_matches_case_insensitively(aiohttp_server: Any) -> None:
    """GET /v1/models/QWEN3-MAX answers the canonical entry (was a 500), unknown ids a 404."""
    from helpers import start_stack

    stack = await start_stack(aiohttp_server)
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.url("/v1/models/QWEN3-MAX")) as resp:
            assert resp.status == 200
            assert (await resp.json())["id"] == "qwen3-max"
        async with session.get(stack.url("/v1/models/qwen3-max-nope")) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["param"] == "model"


async def test_error_bodies_are_read_whole_across_network_chunks() -> None:
    """An error envelope arriving in several chunks is read whole (one ``read(n)`` call returns
    only the first chunk, which cut long replay-miss and envelope bodies mid-JSON)."""
    from unittest import mock

    from proxy.qwen.client import read_capped

    stream = aiohttp.StreamReader(mock.Mock(_reading_paused=False), 2**16)
    stream.feed_data(b'{"success": false, "data": ')
    stream.feed_data(b'{"code": "RateLimited", "num": 2}}')
    stream.feed_eof()
    assert await read_capped(stream, 1 << 20) == (
        b'{"success": false, "data": {"code": "RateLimited", "num": 2}}'
    )

    capped = aiohttp.StreamReader(mock.Mock(_reading_paused=False), 2**16)
    capped.feed_data(b"0123456789")
    capped.feed_data(b"abcdef")
    capped.feed_eof()
    assert await read_capped(capped, 12) == b"0123456789ab"


IGNORED_PARAMETERS: dict[str, Any] = {
    "temperature": 0.2,
    "top_p": 0.9,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "seed": 7,
    "logit_bias": {"1": 2},
    "logprobs": True,
    "top_logprobs": 2,
    "response_format": {"type": "json_object"},
    "reasoning_effort": "low",
    "user": "someone",
    "metadata": {"k": "v"},
    "store": False,
    "service_tier": "auto",
    "modalities": ["text"],
    "functions": [{"name": "f", "parameters": {"type": "object"}}],
}


@pytest.mark.parametrize("param", sorted(IGNORED_PARAMETERS))
async def test_parameters_the_readme_calls_ignored_are_accepted(
    aiohttp_server: Any, param: str
) -> None:
    """Each parameter of the README's "ignored" table is accepted and changes nothing."""
    from helpers import SCENARIO, start_stack

    sc = SCENARIO["t2t_answer"]
    stack = await start_stack(aiohttp_server)
    body = {
        "model": sc.openai_model,
        "messages": [{"role": "user", "content": sc.prompt}],
        param: IGNORED_PARAMETERS[param],
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(stack.url("/v1/chat/completions"), json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
    assert answer["choices"][0]["message"]["content"] == sc.expected_content


# -- the two quick-start commands started together on a fresh clone ----------------------------

_FAKE_PYTHON = """#!/bin/sh
# Stands in for python3.13 (-m venv) and for the venv's python (pip installs, logged slowly).
if [ "$1 $2" = "-m venv" ]; then
    mkdir -p "$3/bin"
    cp "$0" "$3/bin/python"
    exit 0
fi
echo "start $*" >> "$(dirname "$0")/../../setup.log"
sleep 0.3
echo "end $*" >> "$(dirname "$0")/../../setup.log"
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_two_set_ups_at_once_install_once_without_interleaving(tmp_path: Path) -> None:
    """`make serve` and `make test` started together on a fresh clone: one builds `.venv`, the
    other waits for it and finds it ready (the set-up recipe of the Makefile, with a stand-in
    Python so no package is downloaded)."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    fake = tmp_path / "fakepython"
    fake.write_text(_FAKE_PYTHON, encoding="utf-8")
    fake.chmod(0o755)
    cmd = ["make", "--no-print-directory", "-C", str(tmp_path), ".venv/.installed"]
    cmd.append(f"PYTHON={fake}")
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    log = (tmp_path / "setup.log").read_text(encoding="utf-8").splitlines()
    assert log == [
        "start -m pip install --quiet --upgrade pip",
        "end -m pip install --quiet --upgrade pip",
        "start -m pip install --quiet -e .[test]",
        "end -m pip install --quiet -e .[test]",
    ]
    assert (tmp_path / ".venv" / ".installed").is_file()
    assert not (tmp_path / ".venv.lock").exists()
    assert sum("waiting for another set-up" in out for out in outputs) == 1


def test_license_is_an_spdx_string() -> None:
    """`project.license` as a table made setuptools print ~30 deprecation lines on install."""
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "MIT"
