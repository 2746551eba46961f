"""Offline CI: ``qwen-proxy check`` against our own proxy in front of the replay server.

The replay server plays ``cassettes/`` (which hold the probe answers of
``recorder/synthetic_probes.py``) plus the in-memory t2i probe cassettes; our proxy runs in front
of it with an API key, and the harness must find every required check passing. Image checks run
as soon as the proxy offers ``-image`` models or ``/v1/images/generations``, and are skipped with
the reason until then.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from probe_upstream import agent_probe_cassettes, base_cassettes, committed
from test_conformance_broken import tiny_png

from proxy.app import make_app
from proxy.config import Settings
from proxy.conformance import Report, run_checks
from proxy.conformance.pytest_plugin import qwen_conformance  # noqa: F401  (the fixture)
from recorder.cassette import load_all
from recorder.replay import make_replay_app
from recorder.synthetic_probes import IMAGE_URL_BASE, build_image_probes

KEY = "sk-ci-conformance-0815"
Factory = Callable[[web.Application], Awaitable[TestServer]]


async def start_proxy(aiohttp_server: Factory, **settings: object) -> TestServer:
    """The replay server (cassettes/ + t2i probes + the agent and profile probe answers built
    from what our gateway sends upstream) and our proxy in front of it."""
    cassettes = [*load_all(["cassettes"]), *build_image_probes()]
    cassettes += await agent_probe_cassettes(aiohttp_server, cassettes, "sk-capture")
    replay = await aiohttp_server(make_replay_app(cassettes, speed=0))
    upstream = str(replay.make_url("")).rstrip("/")
    return await aiohttp_server(make_app(Settings(upstream_url=upstream, **settings)))  # type: ignore[arg-type]


@pytest.fixture
async def cdn(aiohttp_server: Factory) -> str:
    """A stand-in for cdn.qwenlm.ai serving a PNG at every path; its base URL."""

    async def png(_: web.Request) -> web.Response:
        return web.Response(body=tiny_png(), content_type="image/png")

    app = web.Application()
    app.router.add_get("/{tail:.*}", png)
    return str((await aiohttp_server(app)).make_url("")).rstrip("/")


AGENT_AREAS = ("tools", "anthropic", "responses", "profile", "wire")
"""Check areas the auth and override tests leave out (they are about other things)."""

PENDING: dict[str, str] = {}
"""Checks our gateway cannot pass until the named work lands on main. They run in every test
below and are reported; :func:`test_pending_agent_checks_still_pending` fails as soon as one of
them passes, so the entry must then be removed (and the check is required from then on)."""


async def _our_report(aiohttp_server: Factory, cdn: str, **kw: object) -> Report:
    proxy = await start_proxy(aiohttp_server, api_keys=[KEY])
    return await run_checks(
        str(proxy.make_url("/v1")),
        KEY,
        url_rewrites={IMAGE_URL_BASE: cdn + "/output"},
        **kw,  # type: ignore[arg-type]
    )


async def test_our_proxy_passes_every_required_check(
    aiohttp_server: Factory,
    cdn: str,
    qwen_conformance: Callable[..., Awaitable[Report]],  # noqa: F811
) -> None:
    """Every required check passes on our proxy, except those PENDING on other work (made
    optional here, and tracked by the next test); images are in the next-but-one test."""
    proxy = await start_proxy(aiohttp_server, api_keys=[KEY])
    report = await qwen_conformance(
        str(proxy.make_url("/v1")),
        KEY,
        url_rewrites={IMAGE_URL_BASE: cdn + "/output"},
        optional=["images", *PENDING],
    )
    by_id = report.by_id()
    not_passed = {r.id: (r.status, r.diagnosis) for r in report.results if r.status != "passed"}
    assert set(not_passed) <= {"images.chat", "images.chat.stream", "images.generations"} | set(
        PENDING
    ), not_passed
    assert report.capabilities["text_model"] == "qwen3-max"
    assert report.capabilities["thinking_model"] == "qwen3-max-thinking"
    assert by_id["chat.zh.stream"].ttft_s is not None
    assert by_id["auth.wrong_key"].evidence is not None
    assert by_id["auth.wrong_key"].evidence.status == 401
    assert by_id["auth.no_key"].evidence is not None
    assert by_id["auth.no_key"].evidence.status == 401
    for check_id in ("tools.call", "tools.call.stream", "tools.parallel", "tools.round_trip"):
        assert by_id[check_id].status == "passed", by_id[check_id]
        assert by_id[check_id].required == (check_id != "tools.parallel")
    for check_id in [i for i in by_id if i.startswith("anthropic.")]:
        assert by_id[check_id].status == "passed", by_id[check_id]
    for profile in ("cherry-studio", "open-webui", "langchain", "cline", "claude-code"):
        assert by_id[f"profile.{profile}"].status == "passed", by_id[f"profile.{profile}"]
    assert KEY not in report.to_json() and KEY not in report.to_markdown()


async def test_our_proxy_passes_strict(aiohttp_server: Factory, cdn: str) -> None:
    """--strict: our completions and chunks carry every field the OpenAI API returns, so every
    check that reads them still passes (the pending ones aside)."""
    report = await _our_report(
        aiohttp_server, cdn, strict=True, optional=list(PENDING), skip=["errors.oversize"]
    )
    failed = {r.id: r.message for r in report.results if r.status == "failed"}
    assert set(failed) <= set(PENDING), failed
    assert report.by_id()["wire.completion"].required
    assert report.by_id()["wire.chunks"].status == "passed"
    assert report.exit_code() == 0


async def test_pending_agent_checks_still_pending(aiohttp_server: Factory, cdn: str) -> None:
    """Each PENDING check still fails or is skipped on our proxy, for the expected reason.

    When this test fails because a pending check now passes, the work it waited for has
    landed: delete its PENDING entry, and the check is required by the test above."""
    report = await _our_report(aiohttp_server, cdn, skip=["images", "errors.oversize"])
    by_id = report.by_id()
    now_passing = [i for i in PENDING if by_id[i].status == "passed"]
    assert not now_passing, f"landed, remove from PENDING: {now_passing}"
    for check_id in PENDING:
        r = by_id[check_id]
        assert (r.status, r.diagnosis) == ("skipped", "not_offered"), r


async def test_our_proxy_image_checks_pass_or_skip(aiohttp_server: Factory, cdn: str) -> None:
    """Image checks pass when the proxy offers images, and are skipped with a reason otherwise."""
    proxy = await start_proxy(aiohttp_server, api_keys=[KEY])
    report = await run_checks(
        str(proxy.make_url("/v1")),
        KEY,
        url_rewrites={IMAGE_URL_BASE: cdn + "/output"},
        skip=[*AGENT_AREAS, "chat", "stream", "reasoning", "errors", "auth", "models.root"],
    )
    for check in ("images.chat", "images.chat.stream", "images.generations"):
        result = report.by_id()[check]
        assert result.status in ("passed", "skipped"), (check, result.diagnosis, result.message)
        assert result.message


async def test_committed_agent_probe_cassettes_match_the_gateway(aiohttp_server: Factory) -> None:
    """cassettes/agent_probe_*.json answer exactly what our gateway sends upstream today for
    the agent and profile probes (so `serve --offline` answers them too)."""
    fresh = await agent_probe_cassettes(aiohttp_server, base_cassettes(), "sk-capture")
    got = {c.name: c.dumps() for c in committed()}
    assert got == {c.name: c.dumps() for c in fresh}, (
        "cassettes/agent_probe_*.json are stale: run .venv/bin/python tests/probe_upstream.py"
    )


async def test_open_proxy_without_key_skips_auth_checks(aiohttp_server: Factory) -> None:
    """Without --key the auth checks are skipped, with the reason, and the run still passes."""
    proxy = await start_proxy(aiohttp_server)
    report = await run_checks(
        str(proxy.make_url("/v1")), skip=[*AGENT_AREAS, "images", "errors.oversize", "stream"]
    )
    by_id = report.by_id()
    assert (by_id["auth.wrong_key"].status, by_id["auth.wrong_key"].diagnosis) == (
        "skipped",
        "no_key",
    )
    assert by_id["models.no_key"].status == "skipped"
    assert (by_id["auth.no_key"].status, by_id["auth.no_key"].diagnosis) == ("skipped", "no_key")
    assert by_id["stream.done"].diagnosis == "not_requested"
    assert report.exit_code() == 0


async def test_open_proxy_with_a_key_given_fails_the_wrong_key_check(
    aiohttp_server: Factory,
) -> None:
    """A proxy without API keys, checked with --key: the user expects keys to be enforced, so
    a wrong key served is `wrong_key_accepted` whatever the answer says (to check an open
    proxy on purpose, run without --key)."""
    proxy = await start_proxy(aiohttp_server)
    report = await run_checks(
        str(proxy.make_url("/v1")),
        key="sk-anything",
        skip=[*AGENT_AREAS, "images", "errors", "stream"],
    )
    wrong = report.by_id()["auth.wrong_key"]
    assert (wrong.status, wrong.diagnosis) == ("failed", "wrong_key_accepted"), wrong
    # offline the answer is the replay's miss, the same for the right key: let through
    assert "with the right key too" in wrong.message and "without --key" in wrong.message
    no_key = report.by_id()["auth.no_key"]
    assert (no_key.status, no_key.diagnosis) == ("skipped", "not_enforced"), no_key
    assert report.exit_code() == 1


async def test_required_and_optional_overrides(aiohttp_server: Factory) -> None:
    """--optional makes a failing check harmless; --required makes an optional one count."""
    proxy = await start_proxy(aiohttp_server)
    base = str(proxy.make_url("/v1"))
    kinds = {"images", "stream", "reasoning", "errors", "chat", "auth", *AGENT_AREAS}
    report = await run_checks(base, models=["no-such-model"], skip=sorted(kinds - {"chat"}))
    assert report.by_id()["chat.en"].diagnosis == "http_status"  # the preferred model is unknown
    assert report.exit_code() == 1
    relaxed = await run_checks(
        base, models=["no-such-model"], skip=sorted(kinds - {"chat"}), optional=["chat"]
    )
    assert not relaxed.by_id()["chat.en"].required and relaxed.exit_code() == 0
    strict = await run_checks(base, skip=sorted(kinds), required=["models.root"])
    assert strict.by_id()["models.root"].required
