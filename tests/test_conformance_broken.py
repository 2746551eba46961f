"""The harness against broken proxies: each fault fixture fails exactly the matching checks.

The replay server serves one OpenAI-side cassette of ``tests/cassettes/broken/`` (built by
``tests/broken_proxies.py``) as if it were a deployed proxy; a small image server stands in for
the image CDN. The healthy fixture must pass every check; each broken one must fail exactly the
checks :data:`broken_proxies.BROKEN` names, with the named diagnosis, and pass all the others.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from broken_proxies import BROKEN, BROKEN_DIR, Proxy, build_broken, healthy
from broken_proxies import cassette as proxy_cassette

from proxy.conformance import Report, run_checks
from recorder.cassette import Cassette
from recorder.replay import make_replay_app

KEY = "sk-fixture-secret-4711"
CDN = "https://images.broken-proxy.test"


def tiny_png() -> bytes:
    """A valid 1×1 red PNG."""

    def part(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + part(b"IHDR", header) + part(b"IDAT", pixels) + part(b"IEND", b"")


@pytest.fixture
async def image_server(aiohttp_server: object) -> TestServer:
    """Serves the fixtures' image path as a PNG and anything else as text."""

    async def png(_: web.Request) -> web.Response:
        return web.Response(body=tiny_png(), content_type="image/png")

    async def other(_: web.Request) -> web.Response:
        return web.Response(text="not an image", content_type="image/png")

    app = web.Application()
    app.router.add_get("/probe/red-apple.png", png)
    app.router.add_get("/{tail:.*}", other)
    return await aiohttp_server(app)  # type: ignore[operator, no-any-return]


async def check_fixture(
    aiohttp_server: object, images: TestServer, cassette: Cassette, **kw: Any
) -> Report:
    """Serve ``cassette`` with the replay server and run every check against it."""
    replay = await aiohttp_server(make_replay_app([cassette], speed=0))  # type: ignore[operator]
    return await run_checks(
        str(replay.make_url("/v1")),
        key=KEY,
        oversize_bytes=200_000,  # the replay server reads at most 1 MiB
        url_rewrites={CDN: str(images.make_url("")).rstrip("/")},
        timeout_s=20,
        **kw,
    )


@pytest.mark.parametrize("cassette", build_broken(), ids=lambda c: c.name)
def test_committed_fixture_matches_builder(cassette: Cassette) -> None:
    """tests/cassettes/broken/<name>.json is what broken_proxies.py builds, byte for byte."""
    path = BROKEN_DIR / f"{cassette.name}.json"
    assert path.read_text(encoding="utf-8") == cassette.dumps(), (
        f"{path} is stale; run .venv/bin/python tests/broken_proxies.py"
    )
    assert sorted(p.stem for p in BROKEN_DIR.glob("*.json")) == sorted(BROKEN)


async def test_healthy_fixture_passes_every_check(
    aiohttp_server: object, image_server: TestServer
) -> None:
    """A proxy answering every probe correctly passes all checks, images included."""
    report = await check_fixture(aiohttp_server, image_server, healthy())
    statuses = {r.id: (r.status, r.diagnosis, r.message) for r in report.results}
    assert all(s == "passed" for s, _, _ in statuses.values()), statuses
    assert report.exit_code() == 0
    assert "PNG image" in report.by_id()["images.chat"].message


@pytest.mark.parametrize("name", sorted(BROKEN))
async def test_broken_fixture_fails_with_the_right_diagnosis(
    aiohttp_server: object, image_server: TestServer, name: str
) -> None:
    """The fixture's fault fails exactly its checks with its diagnosis; all else passes."""
    cassette = Cassette.load(BROKEN_DIR / f"{name}.json")
    report = await check_fixture(aiohttp_server, image_server, cassette)
    got = {r.id: r.diagnosis for r in report.results if r.status != "passed"}
    assert got == BROKEN[name].expect, report.to_markdown()
    assert all(report.by_id()[i].status == "failed" for i in got)
    required = any(report.by_id()[i].required for i in got)
    assert report.exit_code() == (1 if required else 0)


async def test_strict_requires_every_openai_field(
    aiohttp_server: object, image_server: TestServer
) -> None:
    """--strict: the healthy proxy still passes; one without refusal/annotations/… fails the
    wire checks (now required) and every chat check that reads a completion or chunks."""
    report = await check_fixture(aiohttp_server, image_server, healthy(), strict=True)
    assert report.exit_code() == 0 and report.strict, report.to_markdown()
    assert report.by_id()["wire.completion"].required
    lax = Cassette.load(BROKEN_DIR / "missing_openai_fields.json")
    report = await check_fixture(aiohttp_server, image_server, lax, strict=True)
    by_id = report.by_id()
    assert report.exit_code() == 1
    assert by_id["wire.completion"].diagnosis == "missing_openai_fields"
    assert "choices.0.message.refusal: missing" in by_id["wire.completion"].message
    assert by_id["chat.en"].diagnosis == "contract_violation"
    assert "refusal" in by_id["chat.en"].message
    assert by_id["stream.contract"].diagnosis == "contract_violation"


async def test_agent_checks_skip_without_the_endpoints(
    aiohttp_server: object, image_server: TestServer
) -> None:
    """A proxy without /v1/messages and /v1/responses: those checks and the profiles that
    need them are skipped with the reason; the run passes."""
    c = proxy_cassette("no_agents", "OpenAI chat only.", Proxy(agent_endpoints=False))
    report = await check_fixture(aiohttp_server, image_server, c)
    skipped = {r.id: r.diagnosis for r in report.results if r.status == "skipped"}
    agent = {i for i in report.by_id() if i.startswith(("anthropic.", "responses."))}
    assert set(skipped) == agent | {"profile.claude-code", "profile.codex-cli"}, skipped
    assert set(skipped.values()) == {"not_offered"}
    assert "no /messages (HTTP 404)" in report.by_id()["anthropic.stream"].message
    assert report.exit_code() == 0


async def test_profile_option_runs_only_the_named_profiles(
    aiohttp_server: object, image_server: TestServer
) -> None:
    """--profile langchain: the other profiles are skipped as not requested."""
    report = await check_fixture(aiohttp_server, image_server, healthy(), profiles=["langchain"])
    by_id = report.by_id()
    assert by_id["profile.langchain"].status == "passed"
    assert "invoke, stream" in by_id["profile.langchain"].message
    others = [
        r for r in report.results if r.id.startswith("profile.") and r.id != "profile.langchain"
    ]
    assert others and all(r.diagnosis == "not_requested" for r in others)
    with pytest.raises(ValueError, match="unknown profile"):
        await check_fixture(aiohttp_server, image_server, healthy(), profiles=["nope"])


async def test_a_profile_asked_for_by_name_fails_without_its_endpoint(
    aiohttp_server: object, image_server: TestServer
) -> None:
    """--profile claude-code against a proxy without /v1/messages: the one thing asked about
    could not be checked, so the run fails (by default the profile is only skipped)."""
    c = proxy_cassette("no_agents", "OpenAI chat only.", Proxy(agent_endpoints=False))
    report = await check_fixture(aiohttp_server, image_server, c, profiles=["claude-code"])
    r = report.by_id()["profile.claude-code"]
    assert (r.status, r.diagnosis) == ("failed", "not_offered"), r
    assert "--profile claude-code was asked for, but the target has no /messages" in r.message
    assert report.exit_code() == 1


async def test_report_shows_request_and_evidence_never_the_key(
    aiohttp_server: object, image_server: TestServer, tmp_path: Path
) -> None:
    """A failure names the exact request and evidence; neither form of the report holds the key."""
    cassette = Cassette.load(BROKEN_DIR / "garbled_gbk.json")
    report = await check_fixture(aiohttp_server, image_server, cassette)
    result = report.by_id()["chat.zh.stream"]
    assert result.request is not None and result.evidence is not None
    assert result.request.method == "POST" and result.request.url.endswith("/v1/chat/completions")
    assert "请原样重复这句话" in (result.request.body or "")
    assert result.request.headers["Authorization"] == "Bearer <key> (masked)"
    assert result.evidence.status == 200 and result.evidence.events
    assert result.ttft_s is not None and result.total_s is not None
    assert result.ttft_s <= result.total_s
    markdown, text = report.to_markdown(), report.to_json()
    assert KEY not in markdown and KEY not in text
    assert "### `chat.zh.stream`" in markdown and "mojibake_gbk" in markdown
    assert '"diagnosis": "mojibake_gbk"' in text
