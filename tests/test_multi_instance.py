"""Two gateway processes, one redis-server, the replay server as chat.qwen.ai: one gateway.

An account rested by one instance is rested for the other, and per-key limits add up across
both. Skipped where redis-server is absent (CI installs it: .ci/run).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fake_qwen import make_jwt
from helpers import SCENARIO, cassettes
from redis.asyncio import Redis

from recorder.replay import REQUESTS_KEY, make_replay_app
from recorder.synthetic_conversations import CONVERSATIONS, response_id


@dataclass
class Gateways:
    """Two gateway URLs, the replay server they share, their tokens and Redis key prefix."""

    a: str
    b: str
    replay: Any
    tokens: list[str]
    prefix: str


REPO_ROOT = Path(__file__).resolve().parents[1]
ADMIN = {"Authorization": "Bearer admin-secret"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start_gateway(
    tmp_path: Path, name: str, env: dict[str, str], config: Path
) -> tuple[str, asyncio.subprocess.Process]:
    port = _free_port()
    with (tmp_path / f"{name}.log").open("wb") as log:  # the child keeps its own descriptor
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--port",
            str(port),
            "--config",
            str(config),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as s:
        for _ in range(400):  # readiness: /healthz answers (the process may need a few seconds)
            if proc.returncode is not None:
                break
            try:
                async with s.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        return base, proc
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    if proc.returncode is None:
        proc.kill()
    await proc.wait()
    pytest.fail(f"gateway {name} did not start:\n{(tmp_path / f'{name}.log').read_text()}")


@pytest.fixture
async def two_gateways(
    aiohttp_server: Any, redis_server: str, tmp_path: Path
) -> AsyncIterator[Gateways]:
    """Two `qwen-proxy serve` processes with two accounts each, one Redis (a fresh key prefix),
    the replay server as upstream."""
    replay = await aiohttp_server(make_replay_app(list(cassettes()), speed=0))
    tokens = [make_jwt(f"multi-{i}", time.time() + 30 * 86400) for i in (1, 2)]
    config = tmp_path / "gateway.toml"
    config.write_text(
        'admin_key = "admin-secret"\n'
        "max_inflight_per_account = 4\n"
        "[[keys]]\n"
        'key = "team-key"\n'
        'name = "team"\n'
        "requests_per_minute = 3\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN_PROXY_")}
    prefix = f"multi-{uuid.uuid4().hex[:8]}:"
    env |= {
        "QWEN_PROXY_UPSTREAM_URL": str(replay.make_url("")).rstrip("/"),
        "QWEN_PROXY_TOKENS": ",".join(tokens),
        "QWEN_PROXY_REDIS_URL": redis_server,
        "QWEN_PROXY_REDIS_PREFIX": prefix,
    }

    procs = []
    try:
        a, pa = await _start_gateway(tmp_path, "a", env, config)
        procs.append(pa)
        b, pb = await _start_gateway(tmp_path, "b", env, config)
        procs.append(pb)
        yield Gateways(a, b, replay, tokens, prefix)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 10)
            except TimeoutError:
                p.kill()
                await p.wait()


def _body(scenario: str) -> dict[str, Any]:
    sc = SCENARIO[scenario]
    return {"model": sc.openai_model, "messages": [{"role": "user", "content": sc.prompt}]}


async def _accounts(s: aiohttp.ClientSession, base: str) -> dict[str, dict[str, Any]]:
    async with s.get(f"{base}/admin/accounts", headers=ADMIN) as r:
        assert r.status == 200
        return {row["label"]: row for row in (await r.json())["data"]}


async def test_an_account_rested_by_one_instance_is_rested_for_the_other(
    two_gateways: Gateways,
) -> None:
    g = two_gateways
    a, b, replay, tokens = g.a, g.b, g.replay, g.tokens
    team = {"Authorization": "Bearer team-key"}
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{a}/v1/chat/completions", json=_body("error_ratelimited"), headers=team
        ) as r:
            assert r.status == 429
            assert r.headers["Retry-After"] == str(6 * 3600)
        completions = [
            q for q in replay.app[REQUESTS_KEY] if "/chat/completions" in q.path_qs.split("?")[0]
        ]
        rested_token = completions[-1].headers["Authorization"].removeprefix("Bearer ")
        rested = f"account-{tokens.index(rested_token) + 1}"
        other = "account-2" if rested == "account-1" else "account-1"
        for base in (a, b):
            rows = await _accounts(s, base)
            assert rows[rested]["state"] == "resting"
            assert rows[rested]["rest_reason"] == "RateLimited"
            assert rows[other]["state"] == "available"
        async with s.get(f"{b}/healthz") as r:
            health = await r.json()
            assert health["redis"] == "ok"
            assert health["accounts"]["resting"] == 1
        seen = len(replay.app[REQUESTS_KEY])
        for base in (b, a):  # the team key allows 3 requests a minute: one spent above
            async with s.post(
                f"{base}/v1/chat/completions", json=_body("t2t_answer"), headers=team
            ) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["choices"][0]["message"]["content"]
        used = {
            q.headers["Authorization"].removeprefix("Bearer ")
            for q in replay.app[REQUESTS_KEY][seen:]
            if "/chat/completions" in q.path_qs
        }
        assert used == {tokens[int(other[-1]) - 1]}


async def test_per_key_limits_add_up_across_instances(
    two_gateways: Gateways,
) -> None:
    a, b = two_gateways.a, two_gateways.b
    team = {"Authorization": "Bearer team-key"}
    async with aiohttp.ClientSession() as s:
        statuses = []
        for base in (a, b, a, b, a):
            async with s.post(
                f"{base}/v1/chat/completions", json=_body("t2t_answer"), headers=team
            ) as r:
                statuses.append(r.status)
                if r.status == 429:
                    body = await r.json()
                    assert body["error"]["code"] == "rate_limit_exceeded"
                    assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert statuses == [200, 200, 200, 429, 429]


async def test_a_conversation_started_on_one_instance_continues_on_the_other(
    two_gateways: Gateways, redis_server: str
) -> None:
    a, b, replay = two_gateways.a, two_gateways.b, two_gateways.replay
    conv = CONVERSATIONS[0]
    team = {"Authorization": "Bearer team-key"}
    redis = Redis.from_url(redis_server)
    try:
        async with aiohttp.ClientSession() as s:
            first = {"model": "qwen3-max", "messages": conv.first_messages()}
            async with s.post(f"{a}/v1/chat/completions", json=first, headers=team) as r:
                assert r.status == 200, await r.text()
            # A stores the conversation right after its answer (in the background): wait for it
            for _ in range(200):
                keys = [k async for k in redis.scan_iter(match=two_gateways.prefix + "conv:*")]
                if keys:
                    break
                await asyncio.sleep(0.02)
            assert keys, "instance A never stored the conversation"
            second = {"model": "qwen3-max", "messages": conv.messages()}
            async with s.post(f"{b}/v1/chat/completions", json=second, headers=team) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["choices"][0]["message"]["content"] == "".join(conv.answer2)
    finally:
        await redis.aclose()
    sent = [
        json.loads(q.body) for q in replay.app[REQUESTS_KEY] if "/chat/completions" in q.path_qs
    ]
    assert len(sent) == 2
    assert sent[1]["chat_id"] == sent[0]["chat_id"]
    assert sent[1]["parent_id"] == response_id(conv, "1")
    assert sent[1]["messages"][0]["content"] == conv.user2
