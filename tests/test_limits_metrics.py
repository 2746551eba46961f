"""Per-key limits (429 + Retry-After in the API's error shape), /metrics and /healthz."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer
from fake_qwen import FakeQwen, make_jwt
from prometheus_client.parser import text_string_to_metric_families

from proxy.app import make_app
from proxy.config import Settings, load_settings
from proxy.state import METRICS, TOOL_COUNTERS

BODY = {"model": "qwen3-max", "messages": [{"role": "user", "content": "hi"}]}


async def gateway(aiohttp_server: Any, fake: FakeQwen, **settings: Any) -> TestClient:
    upstream = await aiohttp_server(fake.app())
    app = make_app(Settings(upstream_url=str(upstream.make_url("")).rstrip("/"), **settings))
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_key_limits_come_from_the_toml_file(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        'api_keys = ["plain"]\n'
        "[[keys]]\n"
        'key = "team-a-key"\n'
        'name = "team-a"\n'
        "requests_per_minute = 60\n"
        "max_streams = 2\n"
    )
    settings = load_settings(config)
    (limits,) = settings.keys
    assert (limits.name, limits.requests_per_minute, limits.max_streams) == ("team-a", 60, 2)
    assert "team-a-key" not in repr(settings)


async def test_requests_per_minute_gives_429_with_retry_after(aiohttp_server: Any) -> None:
    fake = FakeQwen()
    client = await gateway(
        aiohttp_server,
        fake,
        api_keys=["free"],
        keys=[{"key": "limited", "name": "team-a", "requests_per_minute": 2}],
    )
    try:
        url = str(client.make_url("/v1"))
        async with openai.AsyncOpenAI(base_url=url, api_key="limited", max_retries=0) as sdk:
            for _ in range(2):
                await sdk.chat.completions.create(**BODY)  # type: ignore[call-overload]
            with pytest.raises(openai.RateLimitError) as info:
                await sdk.chat.completions.create(**BODY)  # type: ignore[call-overload]
            assert 55 <= int(info.value.response.headers["Retry-After"]) <= 60
            assert info.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
            assert info.value.body["type"] == "rate_limit_error"  # type: ignore[index]
            assert "team-a" in info.value.message
            assert "limited" not in info.value.message.replace("limited to", "")
            # GETs are not counted; the unlimited key is not limited
            assert (await sdk.models.list()).data
        async with openai.AsyncOpenAI(base_url=url, api_key="free", max_retries=0) as sdk:
            for _ in range(3):
                await sdk.chat.completions.create(**BODY)  # type: ignore[call-overload]
        assert len(fake.served) == 5
    finally:
        await client.close()


async def test_streams_at_once_per_key(aiohttp_server: Any) -> None:
    fake = FakeQwen()
    token = make_jwt("u", time.time() + 86400)
    fake.behaviour[token] = "hold"
    client = await gateway(
        aiohttp_server,
        fake,
        tokens=[token],
        keys=[{"key": "k1", "max_streams": 1}],
    )
    try:
        headers = {"Authorization": "Bearer k1"}
        held = asyncio.ensure_future(
            client.post("/v1/chat/completions", json={**BODY, "stream": True}, headers=headers)
        )
        await asyncio.wait_for(fake.arrived.wait(), 10)
        refused = await client.post("/v1/chat/completions", json=BODY, headers=headers)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"
        body = await refused.json()
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert "1 answers at once" in body["error"]["message"]
        fake.release()
        first = await held
        assert first.status == 200
        await first.read()
        fake.behaviour.clear()
        again = await client.post("/v1/chat/completions", json=BODY, headers=headers)
        assert again.status == 200
    finally:
        fake.release()
        await client.close()


async def test_metrics_count_requests_ttft_errors_and_accounts(aiohttp_server: Any) -> None:
    fake = FakeQwen()
    t1, t2 = make_jwt("1", time.time() + 86400 * 9), make_jwt("2", time.time() + 86400 * 9)
    fake.behaviour[t1] = "captcha"
    client = await gateway(aiohttp_server, fake, tokens=[t1, t2], api_keys=["api"])
    try:
        headers = {"Authorization": "Bearer api"}
        assert (await client.get("/metrics")).status == 401  # guarded like the API
        assert (await client.post("/v1/chat/completions", json=BODY, headers=headers)).status == 503
        streamed = await client.post(
            "/v1/chat/completions", json={**BODY, "stream": True}, headers=headers
        )
        assert streamed.status == 200
        await streamed.read()
        client.app[METRICS].tool_call_parse_failures.inc()  # type: ignore[index]
        client.app[TOOL_COUNTERS].rejected["bad_json"] = 2  # type: ignore[index]
        client.app[TOOL_COUNTERS].calls = 5  # type: ignore[index]
        resp = await client.get("/metrics", headers=headers)
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        got = samples(await resp.text())
        route = "/v1/chat/completions"
        ok = frozenset({("route", route), ("status", "200"), ("model", "qwen3-max")})
        failed = frozenset({("route", route), ("status", "503"), ("model", "qwen3-max")})
        assert got[("qwen_gateway_requests_total", ok)] == 1
        assert got[("qwen_gateway_requests_total", failed)] == 1
        assert (
            got[("qwen_gateway_time_to_first_token_seconds_count", frozenset({("route", route)}))]
            == 1
        )
        code = frozenset({("code", "upstream_captcha")})
        assert got[("qwen_gateway_upstream_errors_total", code)] == 1
        assert got[("qwen_gateway_captcha_hits_total", frozenset())] == 1
        assert got[("qwen_gateway_accounts", frozenset({("state", "resting")}))] == 1
        assert got[("qwen_gateway_accounts", frozenset({("state", "available")}))] == 1
        assert got[("qwen_gateway_streams_in_flight", frozenset())] == 0
        assert got[("qwen_gateway_tool_call_parse_failures_total", frozenset())] == 3
        reason = frozenset({("reason", "bad_json")})
        assert got[("qwen_gateway_tool_call_rejections_total", reason)] == 2
        assert got[("qwen_gateway_tool_calls_total", frozenset())] == 5
        assert t1 not in await resp.text()
    finally:
        await client.close()


async def test_metrics_key_guards_metrics_alone(aiohttp_server: Any) -> None:
    client = await gateway(aiohttp_server, FakeQwen(), api_keys=["api"], metrics_key="scrape")
    try:
        api = {"Authorization": "Bearer api"}
        assert (await client.get("/metrics", headers=api)).status == 401
        ok = await client.get("/metrics", headers={"Authorization": "Bearer scrape"})
        assert ok.status == 200
        assert (
            await client.get("/v1/models", headers={"Authorization": "Bearer scrape"})
        ).status == 401
    finally:
        await client.close()


async def test_unreachable_redis_degrades_but_never_fails(aiohttp_server: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake = FakeQwen()
    toks = [make_jwt("1", None), make_jwt("2", None)]
    client = await gateway(
        aiohttp_server,
        fake,
        tokens=toks,
        redis_url=f"redis://127.0.0.1:{port}/0",
        keys=[{"key": "k", "requests_per_minute": 100, "max_streams": 5}],
    )
    try:
        headers = {"Authorization": "Bearer k"}
        for stream in (False, True):
            resp = await client.post(
                "/v1/chat/completions", json={**BODY, "stream": stream}, headers=headers
            )
            assert resp.status == 200
            await resp.read()
        health = await (await client.get("/healthz")).json()
        assert health["status"] == "degraded"
        assert health["redis"] == "degraded"
        assert health["upstream"]["state"] == "ok"
    finally:
        await client.close()


def test_empty_secret_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """compose passes `${VAR:-}` as an empty string: that must not enable an empty admin key."""
    for var in ("ADMIN_KEY", "METRICS_KEY", "REDIS_URL"):
        monkeypatch.setenv(f"QWEN_PROXY_{var}", "")
    settings = load_settings()
    assert settings.admin_key is None
    assert settings.metrics_key is None
    assert settings.redis_url is None


async def test_a_failure_after_the_answer_began_is_counted_once(aiohttp_server: Any) -> None:
    """A stream that breaks off after text (an error event, not an HTTP error) still reaches
    the upstream-error metrics, once."""
    from helpers import completion_interaction_body

    body = completion_interaction_body("t2t_answer").encode()
    cut = body.index(b"\n\n", body.index(b'"content": "Hello"')) + 2
    fake = FakeQwen()
    client = await gateway(aiohttp_server, fake)
    fake.body = body[:cut]  # the stream ends after the first text: upstream_truncated
    try:
        resp = await client.post("/v1/chat/completions", json={**BODY, "stream": True})
        assert resp.status == 200
        assert b'"error"' in await resp.read()
        got = samples(await (await client.get("/metrics")).text())
        code = frozenset({("code", "upstream_truncated")})
        assert got[("qwen_gateway_upstream_errors_total", code)] == 1
    finally:
        await client.close()


def test_a_redis_url_must_be_a_redis_url_and_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from proxy.config import ConfigError

    monkeypatch.setenv("QWEN_PROXY_REDIS_URL", "http://user:hunter2@cache:6379")
    with pytest.raises(ConfigError, match="redis://, rediss:// or unix://") as info:
        load_settings()
    assert "hunter2" not in str(info.value)
    monkeypatch.setenv("QWEN_PROXY_REDIS_URL", "rediss://cache:6380/1")
    assert load_settings().redis_url is not None


async def test_request_counts_are_applied_at_the_end_of_the_iteration_or_at_a_scrape() -> None:
    """``request_done`` and ``first_byte`` are applied once per loop iteration (proxy.batch); a
    scrape applies what waits first; the streams gauge is read when scraped."""
    from proxy.metrics import Metrics

    m = Metrics()
    route = "/v1/chat/completions"
    labels = {"route": route, "status": "200", "model": "qwen3-max"}

    def value(name: str, **labels: str) -> float | None:
        return m.registry.get_sample_value(name, labels)

    m.request_done(route, 200, "qwen3-max", 0.3)
    m.first_byte(route, 0.07)
    assert value("qwen_gateway_requests_total", **labels) is None  # not yet
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done  # the end of the iteration
    assert value("qwen_gateway_requests_total", **labels) == 1
    assert value("qwen_gateway_request_duration_seconds_sum", route=route) == pytest.approx(0.3)
    assert value("qwen_gateway_request_duration_seconds_bucket", route=route, le="0.25") == 0
    assert value("qwen_gateway_request_duration_seconds_bucket", route=route, le="0.5") == 1
    assert value("qwen_gateway_time_to_first_token_seconds_sum", route=route) == pytest.approx(0.07)
    assert value("qwen_gateway_time_to_first_token_seconds_count", route=route) == 1
    m.request_done(route, 200, "qwen3-max", 1.0)
    m.request_done(route, 502, "qwen3-max", 2.0)
    m.stream_opened()
    m.stream_opened()
    m.stream_closed()
    got = samples(m.render().decode())  # at once: the scrape applies what waits
    assert got[("qwen_gateway_requests_total", frozenset(labels.items()))] == 2
    failed = frozenset({**labels, "status": "502"}.items())
    assert got[("qwen_gateway_requests_total", failed)] == 1
    assert got[("qwen_gateway_streams_in_flight", frozenset())] == 1
