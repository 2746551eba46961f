"""Two gateway instances, one real redis-server, the independent fake chat.qwen.ai (several
accounts, a memory of each chat): they behave as one gateway.

A conversation started on one instance continues natively on the other (same upstream chat,
``parent_id`` = the last answer), with no pause between the turns, as a client behind a load
balancer sends them; an account one instance rested is not used by the other. Skipped where
redis-server is absent (CI installs it).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestServer
from fake_qwen import make_jwt
from fake_site import FakeQwen

from proxy.app import make_app
from proxy.config import Settings
from proxy.state import JANITOR

KEY = "sk-team"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@dataclass
class Pair:
    fake: FakeQwen
    a: TestServer
    b: TestServer
    tokens: list[str]

    def client(self, which: str) -> openai.AsyncOpenAI:
        server = self.a if which == "a" else self.b
        return openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key=KEY, max_retries=0)

    responses_client = client


@pytest.fixture
async def pair(aiohttp_server: Any, redis_server: str) -> Pair:
    return await start_pair(aiohttp_server, redis_server)


async def start_pair(aiohttp_server: Any, redis_server: str) -> Pair:
    """The fake site (two accounts) and two gateways on one Redis (a fresh key prefix)."""
    tokens = [make_jwt(f"acct-{i}", time.time() + 30 * 86400) for i in (1, 2)]
    fake = FakeQwen(tokens)
    upstream = await aiohttp_server(fake.app())
    conf = {
        "upstream_url": str(upstream.make_url("")).rstrip("/"),
        "tokens": tokens,
        "api_keys": [KEY],
        "redis_url": redis_server,
        "redis_prefix": f"it-{uuid.uuid4().hex[:8]}:",
        "chat_reconcile_interval_s": 0,
        "chat_deletes_per_minute": 60000,
    }
    a = await aiohttp_server(make_app(Settings(**conf)))
    b = await aiohttp_server(make_app(Settings(**conf)))
    return Pair(fake, a, b, tokens)


async def ask(pair: Pair, which: str, stream: bool, **kw: Any) -> Any:
    kw.setdefault("model", "qwen3-max")
    async with pair.client(which) as client:
        if not stream:
            c = await client.chat.completions.create(**kw)
            return c.choices[0].message
        text = ""
        calls: dict[int, dict[str, str]] = {}
        async for chunk in await client.chat.completions.create(stream=True, **kw):
            if chunk.choices:
                d = chunk.choices[0].delta
                text += d.content or ""
                for tc in d.tool_calls or []:
                    slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                    slot["id"] += tc.id or ""
                    slot["name"] += (tc.function and tc.function.name) or ""
                    slot["arguments"] += (tc.function and tc.function.arguments) or ""
        return {"content": text, "calls": [calls[i] for i in sorted(calls)]}


def content(m: Any) -> str:
    return m["content"] if isinstance(m, dict) else m.content


@pytest.mark.parametrize("stream", [False, True])
async def test_a_conversation_moves_between_instances(pair: Pair, stream: bool) -> None:
    history: list[dict[str, Any]] = [{"role": "user", "content": "first"}]
    for n, which in enumerate("abab", start=1):
        answer = content(await ask(pair, which, stream, messages=history))
        assert answer.startswith(f"Echo (turn {n}): "), (which, answer)
        history += [{"role": "assistant", "content": answer}, {"role": "user", "content": f"q{n}"}]
    bodies = pair.fake.completions()
    assert len({b["chat_id"] for b in bodies}) == 1
    assert [b["messages"][0]["content"] for b in bodies] == ["first", "q1", "q2", "q3"]
    assert pair.fake.violations == []


async def test_a_tool_round_trip_across_instances(pair: Pair) -> None:
    history: list[dict[str, Any]] = [{"role": "user", "content": "get_weather city=Oslo"}]
    msg = await ask(pair, "a", False, messages=history, tools=[WEATHER])
    (call,) = msg.tool_calls
    history += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "-3 C"},
    ]
    answer = await ask(pair, "b", True, messages=history, tools=[WEATHER])
    assert answer["content"] == "Based on the tool result: -3 C."
    b1, b2 = pair.fake.completions()
    assert b2["chat_id"] == b1["chat_id"] and b2["parent_id"] is not None


async def test_an_account_rested_by_one_instance_is_rested_for_both(pair: Pair) -> None:
    alpha = pair.tokens[0]
    pair.fake.accounts[alpha].behaviour = "ratelimited"
    seen: list[str] = []
    for which in "abababab":
        try:
            seen.append(content(await ask(pair, which, False, messages=[
                {"role": "user", "content": "hi"}
            ]))[:4])  # fmt: skip
        except openai.RateLimitError:
            seen.append("429")
    assert seen.count("429") <= 1 and seen[-1] == "Echo"
    asked = [r for r in pair.fake.requests if r[2] == alpha and r[0] == "POST"]
    assert len(asked) == 1, "the other instance used the rested account again"


async def test_the_other_instance_deletes_an_idle_chat(pair: Pair) -> None:
    """Chat bookkeeping is shared: a chat made through A is swept by B's janitor, with the
    account that created it; the user's own chats stay."""
    mine = pair.fake.add_chat(pair.tokens[0], "My own chat", age_s=10**6)
    await ask(pair, "a", False, messages=[{"role": "user", "content": "hi"}])
    (made,) = [c for c in pair.fake.live_chats() if c.id != mine.id]
    janitor = pair.b.app[JANITOR]
    await janitor.sweep(now=time.time() + 10**6)
    assert made.deleted and not mine.deleted
    deletes = [r for r in pair.fake.requests if r[0] == "DELETE"]
    assert [r[2] for r in deletes] == [made.token]


async def test_an_expired_token_is_never_sent(aiohttp_server: Any, redis_server: str) -> None:
    expired = make_jwt("old", time.time() - 3600)
    valid = make_jwt("new", time.time() + 86400)
    fake = FakeQwen([expired, valid])
    upstream = await aiohttp_server(fake.app())
    gateway = await aiohttp_server(
        make_app(
            Settings(
                upstream_url=str(upstream.make_url("")).rstrip("/"),
                tokens=[expired, valid],
                api_keys=[KEY],
                redis_url=redis_server,
                redis_prefix=f"it-{uuid.uuid4().hex[:8]}:",
                chat_reconcile_interval_s=0,
            )
        )
    )
    async with openai.AsyncOpenAI(
        base_url=str(gateway.make_url("/v1")), api_key=KEY, max_retries=0
    ) as client:
        for _ in range(3):
            await client.chat.completions.create(
                model="qwen3-max", messages=[{"role": "user", "content": "hi"}]
            )
    assert {r[2] for r in fake.requests} == {valid}


async def test_two_gateway_processes_share_conversations_and_rests(
    aiohttp_server: Any, redis_server: str, tmp_path: Any
) -> None:
    """As the held-out check runs them: two `qwen-proxy serve` processes, one Redis, the fake
    site with two accounts. A conversation continues natively across the processes; an account
    rested by one is not used by the other."""
    import os

    from test_multi_instance import _start_gateway

    tokens = [make_jwt(f"proc-{i}", time.time() + 30 * 86400) for i in (1, 2)]
    fake = FakeQwen(tokens)
    upstream = await aiohttp_server(fake.app())
    config = tmp_path / "gateway.toml"
    config.write_text("chat_reconcile_interval_s = 0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN_PROXY_")}
    env |= {
        "QWEN_PROXY_UPSTREAM_URL": str(upstream.make_url("")).rstrip("/"),
        "QWEN_PROXY_TOKENS": ",".join(tokens),
        "QWEN_PROXY_API_KEYS": KEY,
        "QWEN_PROXY_REDIS_URL": redis_server,
        "QWEN_PROXY_REDIS_PREFIX": f"proc-{uuid.uuid4().hex[:8]}:",
    }
    procs = []
    try:
        a, pa = await _start_gateway(tmp_path, "a", env, config)
        procs.append(pa)
        b, pb = await _start_gateway(tmp_path, "b", env, config)
        procs.append(pb)
        urls = {"a": a, "b": b}
        history: list[dict[str, Any]] = [{"role": "user", "content": "first"}]
        for n, which in enumerate("abab", start=1):
            async with openai.AsyncOpenAI(
                base_url=urls[which] + "/v1", api_key=KEY, max_retries=0
            ) as client:
                c = await client.chat.completions.create(model="qwen3-max", messages=history)
            answer = c.choices[0].message.content or ""
            assert answer.startswith(f"Echo (turn {n}): "), (which, answer)
            history += [
                {"role": "assistant", "content": answer},
                {"role": "user", "content": f"q{n}"},
            ]
        assert len({body["chat_id"] for body in fake.completions()}) == 1
        fake.accounts[tokens[0]].behaviour = "ratelimited"
        before = len(fake.requests)
        served = 0
        for which in "abab":
            async with openai.AsyncOpenAI(
                base_url=urls[which] + "/v1", api_key=KEY, max_retries=0
            ) as client:
                try:
                    await client.chat.completions.create(
                        model="qwen3-max", messages=[{"role": "user", "content": "hi"}]
                    )
                    served += 1
                except openai.RateLimitError:
                    pass
        asked = [r for r in fake.requests[before:] if r[2] == tokens[0] and r[0] == "POST"]
        assert len(asked) <= 1, "the other process used the rested account again"
        assert served >= 3
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            await p.wait()
