"""``qwen-proxy check`` as a real process against in-test servers: exit codes and report files."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer
from broken_proxies import BROKEN_DIR, healthy
from click.testing import CliRunner
from test_conformance_broken import CDN, image_server  # noqa: F401  (fixture)

from proxy.cli import main
from recorder.cassette import Cassette
from recorder.replay import make_replay_app

KEY = "sk-cli-secret-1234"
REPO_ROOT = Path(__file__).resolve().parents[1]


async def run_cli(*args: str) -> tuple[int, str, str]:
    """Run ``python -m proxy check ARGS`` without blocking the loop; (code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "check",
        *args,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def serve(aiohttp_server: object, cassette: Cassette) -> str:
    """The replay server for ``cassette``; its OpenAI base URL."""
    server = await aiohttp_server(make_replay_app([cassette], speed=0))  # type: ignore[operator]
    return str(server.make_url("/v1"))


async def test_cli_passes_and_writes_both_reports(
    aiohttp_server: object,
    image_server: TestServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A conforming target: exit 0, JSON and Markdown files, progress on stderr, no key anywhere."""
    base = await serve(aiohttp_server, healthy())
    json_file, md_file = tmp_path / "report.json", tmp_path / "report.md"
    code, out, err = await run_cli(
        base,
        "--key",
        KEY,
        "--json",
        str(json_file),
        "--markdown",
        str(md_file),
        "--oversize-bytes",
        "200000",
        "--rewrite-url",
        f"{CDN}={str(image_server.make_url('')).rstrip('/')}",
    )
    assert code == 0, err
    data = json.loads(json_file.read_text(encoding="utf-8"))
    assert data["verdict"] == "pass" and data["counts"]["failed"] == 0
    assert {r["id"] for r in data["results"]} >= {"chat.zh.stream", "images.generations"}
    assert md_file.read_text(encoding="utf-8").startswith("# Conformance report")
    assert out == ""  # the Markdown went to the file
    assert "PASS  chat.zh.stream (ok)" in err and "qwen-proxy check: PASS" in err
    for text in (out, err, json_file.read_text(), md_file.read_text()):
        assert KEY not in text


async def test_cli_fails_on_a_broken_target(aiohttp_server: object) -> None:
    """A target whose streams lack [DONE]: exit 1 and the diagnosis in the Markdown on stdout."""
    base = await serve(aiohttp_server, Cassette.load(BROKEN_DIR / "stream_no_done.json"))
    code, out, err = await run_cli(
        base, "--key", KEY, "--oversize-bytes", "200000", "--skip", "images"
    )
    assert code == 1, err
    assert "**FAIL**" in out and "`missing_done`" in out and "### `stream.done`" in out
    assert "FAIL  stream.done (missing_done)" in err


async def test_cli_unreachable_target_exits_2() -> None:
    """Nothing listening on the port: exit 2 and a one-line reason."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = await run_cli(f"http://127.0.0.1:{port}/v1", "--timeout", "5")
    assert code == 2
    assert "cannot reach the target" in err and out == ""


async def test_cli_stops_at_a_web_site_with_exit_2(aiohttp_server: object) -> None:
    """An ordinary web site (HTML 200 on every path): exit 2 with the cause, no check run and
    nothing posted to it (no 16 MiB oversized body either)."""
    posted: list[str] = []

    async def page(request: web.Request) -> web.Response:
        if request.method != "GET":
            posted.append(request.path)
        return web.Response(text="<html><body>My blog</body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    server = await aiohttp_server(app)  # type: ignore[operator]
    code, out, err = await run_cli(str(server.make_url("/v1")), "--key", KEY)
    assert code == 2, err
    assert "not an OpenAI-compatible API: GET " in err and "/v1/models answered text/html" in err
    assert out == "" and posted == []


def test_cli_usage_errors_exit_2() -> None:
    """A non-http URL or a pattern matching no check is a usage error (exit 2)."""
    runner = CliRunner()
    bad_url = runner.invoke(main, ["check", "ftp://example.org/v1"])
    assert bad_url.exit_code == 2 and "http(s) URL" in bad_url.output
    bad_skip = runner.invoke(main, ["check", "http://127.0.0.1:1/v1", "--skip", "nope"])
    assert bad_skip.exit_code == 2 and "matches no check" in bad_skip.output
    bad_rewrite = runner.invoke(main, ["check", "http://127.0.0.1:1/v1", "--rewrite-url", "x"])
    assert bad_rewrite.exit_code == 2
    help_text = runner.invoke(main, ["check", "--help"]).output
    assert "--required" in help_text and "Exit status" in help_text


def test_serve_command_is_untouched() -> None:
    """`qwen-proxy serve` is still there next to `check`."""
    assert {"serve", "check"} <= set(main.commands)  # type: ignore[attr-defined]
    assert isinstance(web.Application, type)


async def test_cli_compare_html_strict_and_profile(
    aiohttp_server: object,
    image_server: TestServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A cron run: yesterday's JSON passed; today the target duplicates streamed text.
    --compare names what got worse and exits 1; --html writes the page; --strict and
    --profile are accepted."""
    rewrite = f"{CDN}={str(image_server.make_url('')).rstrip('/')}"
    common = ("--key", KEY, "--oversize-bytes", "200000", "--rewrite-url", rewrite)
    old = tmp_path / "old.json"
    base = await serve(aiohttp_server, healthy())
    code, _, err = await run_cli(base, *common, "--strict", "--json", str(old))
    assert code == 0, err
    assert json.loads(old.read_text(encoding="utf-8"))["strict"] is True
    broken = await serve(aiohttp_server, Cassette.load(BROKEN_DIR / "duplicated_deltas.json"))
    page = tmp_path / "report.html"
    new = tmp_path / "new.json"
    code, out, err = await run_cli(
        broken, *common, "--compare", str(old), "--html", str(page), "--json", str(new)
    )
    assert code == 1
    assert "## Compared with the report of" in out and "`stream.no_duplicates`" in out
    assert "worse" in err
    assert json.loads(new.read_text(encoding="utf-8"))["comparison"]["regressions"] >= 4
    html_text = page.read_text(encoding="utf-8")
    assert html_text.startswith("<!DOCTYPE html>") and "<svg" in html_text
    assert KEY not in html_text
    code, _, err = await run_cli(base, *common, "--profile", "langchain", "--skip", "images")
    assert code == 0, err
    assert "SKIP  profile.cline (not_requested)" in err


def test_cli_rejects_unknown_profile_and_bad_compare(tmp_path: Path) -> None:
    """An unknown profile or a --compare file that is not a report: usage errors (exit 2)."""
    runner = CliRunner()
    bad = runner.invoke(main, ["check", "http://127.0.0.1:1/v1", "--profile", "emacs"])
    assert bad.exit_code == 2 and "not a profile" in bad.output
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": 1}', encoding="utf-8")
    bad = runner.invoke(main, ["check", "http://127.0.0.1:1/v1", "--compare", str(junk)])
    assert bad.exit_code == 2 and "not a qwen-proxy check JSON report" in bad.output
