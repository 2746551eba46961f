"""/v1/messages under the gateway's per-key limits and metrics (on the fake chat.qwen.ai).

Claude Code sends its key as ``x-api-key`` and calls ``count_tokens`` in bursts: the key's limits
apply to messages (429 ``rate_limit_error`` in Anthropic's shape, with ``retry-after``), never to
``count_tokens``, which reaches no account; metrics label the answer with the catalog model.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from fake_qwen import FakeQwen
from prometheus_client.parser import text_string_to_metric_families

from proxy.app import make_app
from proxy.config import Settings

MESSAGE = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hi"}],
}


async def test_key_limits_and_metrics_for_messages(aiohttp_server: Any) -> None:
    fake = FakeQwen()
    upstream = await aiohttp_server(fake.app())
    settings = Settings(
        upstream_url=str(upstream.make_url("")).rstrip("/"),
        keys=[{"key": "limited", "name": "team-a", "requests_per_minute": 2}],
    )
    proxy = await aiohttp_server(make_app(settings))
    base = str(proxy.make_url(""))
    async with anthropic.AsyncAnthropic(base_url=base, api_key="limited", max_retries=0) as sdk:
        for _ in range(2):
            message = await sdk.messages.create(**MESSAGE)  # type: ignore[arg-type]
            assert message.content[0].type == "text" and message.content[0].text
        for _ in range(5):  # a Claude Code start-up burst: never limited, never upstream
            counted = await sdk.messages.count_tokens(
                model="claude-sonnet-4-6",
                messages=MESSAGE["messages"],  # type: ignore[arg-type]
            )
            assert counted.input_tokens > 0
        with pytest.raises(anthropic.RateLimitError) as info:
            await sdk.messages.create(**MESSAGE)  # type: ignore[arg-type]
    err = info.value
    assert isinstance(err.body, dict)
    assert (err.body["type"], err.body["error"]["type"]) == ("error", "rate_limit_error")
    assert "team-a" in err.body["error"]["message"]
    assert 1 <= int(err.response.headers["retry-after"]) <= 60
    assert len(fake.served) == 2
    async with anthropic.AsyncAnthropic(base_url=base, api_key="limited", max_retries=0) as sdk:
        metrics = await sdk.get("/metrics", cast_to=str)  # type: ignore[type-var]
    got = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(str(metrics))
        for s in family.samples
    }
    ok = frozenset({("route", "/v1/messages"), ("status", "200"), ("model", "qwen3-max")})
    assert got[("qwen_gateway_requests_total", ok)] == 2
    limited = frozenset({("route", "/v1/messages"), ("status", "429"), ("model", "qwen3-max")})
    assert got[("qwen_gateway_requests_total", limited)] == 1
