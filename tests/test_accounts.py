"""The account pool (proxy/accounts.py) through the app, against a fake multi-account site.

JWT expiry, the least busy account with max_inflight_per_account, rests for the limit codes of
docs/protocol.md §10/§13.3 mapped to 429 + Retry-After, /admin/accounts and `qwen-proxy accounts`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from fake_qwen import FakeQwen, make_jwt
from pydantic import SecretStr

from proxy.accounts import AccountPool, jwt_expiry
from proxy.app import make_app
from proxy.cli import main
from proxy.config import Settings
from proxy.errors import NoUpstreamTokenError
from proxy.state import JANITOR, SERVICE
from proxy.store import MemoryStore

DAY = 86400.0
BODY = {"model": "qwen3-max", "messages": [{"role": "user", "content": "hi"}]}


def tokens(n: int, exp: float | None = None) -> list[str]:
    return [make_jwt(f"user-{i + 1}", exp or time.time() + 30 * DAY) for i in range(n)]


async def gateway(
    aiohttp_server: Any, fake: FakeQwen, *, host: str = "127.0.0.1", **settings: Any
) -> tuple[TestServer, TestClient]:
    """The fake and a gateway in front of it, which reaches it as ``host``."""
    upstream = await aiohttp_server(fake.app())
    app = make_app(Settings(upstream_url=f"http://{host}:{upstream.port}", **settings))
    client = TestClient(TestServer(app))
    await client.start_server()
    return upstream, client


def test_jwt_expiry_is_read_without_a_signature_check() -> None:
    assert jwt_expiry(make_jwt("a", 1_900_000_000)) == 1_900_000_000.0
    assert jwt_expiry(make_jwt("a", None)) is None
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.%%%.c") is None


async def test_expired_tokens_are_skipped_and_reported_by_label() -> None:
    now = time.time()
    expired, soon, fine = make_jwt("1", now - 60), make_jwt("2", now + 3600), make_jwt("3", None)
    with structlog.testing.capture_logs() as logs:
        pool = AccountPool([SecretStr(t) for t in (expired, soon, fine)], MemoryStore())
    events = {(e["event"], e["account"]) for e in logs}
    assert ("account_token_expired", "account-1") in events
    assert ("account_token_expires_soon", "account-2") in events
    assert all(expired not in repr(e) for e in logs)
    seen = {(await pool.acquire()).label for _ in range(4)}
    assert seen == {"account-2", "account-3"}
    rows = {r.label: r for r in await pool.statuses()}
    assert rows["account-1"].state == "expired"
    assert rows["account-2"].expires_soon


async def test_all_tokens_expired_is_a_clear_503() -> None:
    pool = AccountPool([SecretStr(make_jwt("1", time.time() - 5))], MemoryStore())
    with pytest.raises(NoUpstreamTokenError, match=r"account-1 on \d{4}-\d\d-\d\d"):
        await pool.acquire()


async def test_cookies_the_site_sets_never_ride_on_another_accounts_requests(
    aiohttp_server: Any,
) -> None:
    """Every upstream request carries its own account's token and nothing the site set.

    The fake answers each request with ``Set-Cookie: token=<that account's token>`` and an
    ``acw_tc``, as chat.qwen.ai may. A cookie jar shared by the app's one session would send
    account-1's token cookie with account-2's requests (aiohttp's jar keeps cookies of host
    names, not of IP addresses: the fake is reached as ``localhost``)."""
    fake = FakeQwen(set_cookies=True)
    t1, t2 = tokens(2)
    _, client = await gateway(
        aiohttp_server, fake, host="localhost", tokens=[t1, t2], read_timeout_s=10
    )
    try:
        for _ in range(3):  # equally busy accounts take turns: account-1, account-2, account-1
            resp = await client.post("/v1/chat/completions", json=BODY)
            assert resp.status == 200, await resp.text()
    finally:
        await client.close()
    assert fake.served == [t1, t2, t1]
    assert {token for token, _ in fake.cookies} == {t1, t2}
    for token, cookie in fake.cookies:
        assert cookie == f"token={token}"


async def test_requests_go_to_the_least_busy_account(aiohttp_server: Any) -> None:
    fake = FakeQwen()
    t1, t2 = tokens(2)
    fake.behaviour[t1] = "hold"
    _, client = await gateway(aiohttp_server, fake, tokens=[t1, t2], max_inflight_per_account=1)
    try:
        held = asyncio.ensure_future(client.post("/v1/chat/completions", json=BODY))
        await asyncio.wait_for(fake.arrived.wait(), 10)
        # account-1 holds its one answer: the next requests all go to account-2, one at a time
        for _ in range(3):
            resp = await client.post("/v1/chat/completions", json=BODY)
            assert resp.status == 200
        assert fake.served == [t1, t2, t2, t2]
        fake.behaviour[t2] = "hold"
        fake.arrived.clear()
        second = asyncio.ensure_future(client.post("/v1/chat/completions", json=BODY))
        await asyncio.wait_for(fake.arrived.wait(), 10)
        busy = await client.post("/v1/chat/completions", json=BODY)
        assert busy.status == 429
        assert busy.headers["Retry-After"] == "1"
        assert (await busy.json())["error"]["code"] == "accounts_busy"
        fake.release()
        assert (await held).status == 200
        assert (await second).status == 200
    finally:
        fake.release()
        await client.close()


@pytest.mark.parametrize(
    ("code", "rest_s"),
    [
        ("ParallelLimited", 30),
        ("Too_Many_Requests", 60),
        ("quotaLimited", 2 * 3600),  # the fake names num=2 hours: that wins
        ("ExceedLimit", 2 * 3600),
        ("quota_exhausted", 2 * 3600),
        ("RateLimited", 2 * 3600),
    ],
)
async def test_limit_codes_rest_the_account_and_give_429(
    aiohttp_server: Any, code: str, rest_s: int
) -> None:
    fake = FakeQwen()
    t1, t2 = tokens(2)
    fake.behaviour[t1] = code
    _, client = await gateway(aiohttp_server, fake, tokens=[t1, t2], admin_key="adm")
    try:
        async with openai.AsyncOpenAI(
            base_url=str(client.make_url("/v1")), api_key="x", max_retries=0
        ) as sdk:
            with pytest.raises(openai.RateLimitError) as info:
                await sdk.chat.completions.create(**BODY)  # type: ignore[call-overload]
            assert info.value.response.headers["Retry-After"] == str(rest_s)
            assert info.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
            for _ in range(2):  # account-1 rests: every next answer comes from account-2
                done = await sdk.chat.completions.create(**BODY)  # type: ignore[call-overload]
                assert done.choices[0].message.content
        assert fake.served == [t1, t2, t2]
        resp = await client.get("/admin/accounts", headers={"Authorization": "Bearer adm"})
        rows = {r["label"]: r for r in (await resp.json())["data"]}
        assert rows["account-1"]["state"] == "resting"
        assert rows["account-1"]["rest_reason"] == code
        assert rows["account-1"]["last_error"] == code
        assert rows["account-1"]["resting_until"] == pytest.approx(time.time() + rest_s, abs=5)
        assert rows["account-2"]["state"] == "available"
    finally:
        await client.close()


async def test_a_captcha_rests_the_account(aiohttp_server: Any) -> None:
    fake = FakeQwen()
    t1, t2 = tokens(2)
    fake.behaviour[t1] = "captcha"
    _, client = await gateway(aiohttp_server, fake, tokens=[t1, t2], account_cooldown_s=120)
    try:
        first = await client.post("/v1/chat/completions", json=BODY)
        assert first.status == 503
        assert (await client.post("/v1/chat/completions", json=BODY)).status == 200
        health = await (await client.get("/healthz")).json()
        assert health["accounts"]["resting"] == 1
        assert health["accounts"]["available"] == 1
        assert health["upstream"]["state"] == "ok"
        assert health["redis"] == "off"
    finally:
        await client.close()


async def test_a_single_account_is_never_rested_but_the_429_says_when(
    aiohttp_server: Any,
) -> None:
    fake = FakeQwen()
    (t1,) = tokens(1)
    fake.behaviour[t1] = "ParallelLimited"
    _, client = await gateway(aiohttp_server, fake, tokens=[t1])
    try:
        for _ in range(2):
            resp = await client.post("/v1/chat/completions", json=BODY)
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "30"
        assert len(fake.served) == 2
    finally:
        await client.close()


async def test_admin_accounts_is_guarded_and_never_shows_tokens(aiohttp_server: Any) -> None:
    fake = FakeQwen()
    toks = tokens(2)
    _, client = await gateway(aiohttp_server, fake, tokens=toks, api_keys=["api"])
    try:
        off = await client.get("/admin/accounts")  # no admin_key: off, and says so
        assert off.status == 403
        assert (await off.json())["error"]["code"] == "admin_disabled"
    finally:
        await client.close()
    _, client = await gateway(aiohttp_server, fake, tokens=toks, api_keys=["api"], admin_key="adm")
    try:
        assert (await client.get("/admin/accounts")).status == 401
        wrong = await client.get("/admin/accounts", headers={"Authorization": "Bearer api"})
        assert wrong.status == 401
        assert (await wrong.json())["error"]["code"] == "invalid_api_key"
        ok = await client.get("/admin/accounts", headers={"Authorization": "Bearer adm"})
        text = await ok.text()
        assert ok.status == 200
        assert all(t not in text and t.split(".")[1] not in text for t in toks)
        labels = [r["label"] for r in (await ok.json())["data"]]
        assert labels == ["account-1", "account-2"]
    finally:
        await client.close()


async def test_qwen_proxy_accounts_prints_a_table(aiohttp_server: Any) -> None:
    fake = FakeQwen()
    t1, t2 = tokens(2)
    fake.behaviour[t1] = "ParallelLimited"
    _, client = await gateway(aiohttp_server, fake, tokens=[t1, t2], admin_key="adm")
    try:
        assert (await client.post("/v1/chat/completions", json=BODY)).status == 429
        url = str(client.make_url("")).rstrip("/")
        # (the gateway's log lines, written in this process while the command's output is
        # captured, are kept out of that output)
        with structlog.testing.capture_logs():
            result = await asyncio.to_thread(
                CliRunner().invoke, main, ["accounts", "--url", url, "--admin-key", "adm"]
            )
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[0].split() == [
            "LABEL",
            "STATE",
            "RESTS",
            "UNTIL",
            "IN",
            "FLIGHT",
            "LAST",
            "ERROR",
            "EXPIRES",
        ]
        assert lines[1].startswith("account-1") and "resting" in lines[1]
        assert "(ParallelLimited)" in lines[1]
        assert lines[2].startswith("account-2") and "available" in lines[2]
        assert t1 not in result.output
        bad = await asyncio.to_thread(
            CliRunner().invoke, main, ["accounts", "--url", url, "--admin-key", "nope"]
        )
        assert bad.exit_code != 0
        assert "HTTP 401" in bad.output
    finally:
        await client.close()


async def test_the_pool_takes_its_limit_from_settings(aiohttp_server: Any) -> None:
    fake = FakeQwen()
    _, client = await gateway(aiohttp_server, fake, tokens=tokens(1), max_inflight_per_account=7)
    try:
        assert client.app is not None
        assert client.app[SERVICE].pool.max_inflight == 7
    finally:
        await client.close()


async def test_quota_codes_without_a_wait_rest_an_hour(aiohttp_server: Any) -> None:
    fake = FakeQwen(extra={})
    t1, t2 = tokens(2)
    fake.behaviour[t1] = "quota_exhausted"
    _, client = await gateway(aiohttp_server, fake, tokens=[t1, t2])
    try:
        resp = await client.post("/v1/chat/completions", json=BODY)
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "3600"
    finally:
        await client.close()


async def test_every_account_over_its_limits_is_a_429_not_a_503(aiohttp_server: Any) -> None:
    fake = FakeQwen(extra={})
    t1, t2 = tokens(2)
    fake.behaviour[t1] = "quota_exhausted"
    fake.behaviour[t2] = "ParallelLimited"
    _, client = await gateway(aiohttp_server, fake, tokens=[t1, t2])
    try:
        for _ in range(2):
            assert (await client.post("/v1/chat/completions", json=BODY)).status == 429
        third = await client.post("/v1/chat/completions", json=BODY)
        assert third.status == 429
        assert 25 <= int(third.headers["Retry-After"]) <= 30  # the soonest rest ends first
        body = await third.json()
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert "ParallelLimited" in body["error"]["message"]
        assert len(fake.served) == 2  # the third never reached the site
    finally:
        await client.close()


async def test_a_captcha_rest_on_every_account_stays_a_503(aiohttp_server: Any) -> None:
    fake = FakeQwen()
    t1, t2 = tokens(2)
    fake.behaviour[t1] = fake.behaviour[t2] = "captcha"
    _, client = await gateway(aiohttp_server, fake, tokens=[t1, t2])
    try:
        for _ in range(2):
            assert (await client.post("/v1/chat/completions", json=BODY)).status == 503
        third = await client.post("/v1/chat/completions", json=BODY)
        assert third.status == 503
        assert (await third.json())["error"]["code"] == "no_upstream_account"
    finally:
        await client.close()


@pytest.mark.parametrize("spelling", ["parallel_limited", "PARALLELLIMITED", "ParallelLimited"])
def test_limit_codes_are_recognised_in_any_spelling(spelling: str) -> None:
    from proxy.errors import UpstreamRateLimitedError
    from proxy.qwen.envelope import envelope_error

    err = envelope_error({"success": False, "data": {"code": spelling, "details": "busy"}})
    assert isinstance(err, UpstreamRateLimitedError)
    assert err.upstream_code == "ParallelLimited"


async def test_an_expired_token_is_never_sent_upstream(aiohttp_server: Any) -> None:
    """Not for answers, the model list, nor the chat cleanup's chat listing and deletes."""
    fake = FakeQwen()
    expired = make_jwt("old", time.time() - 3600)
    fine = make_jwt("new", time.time() + 30 * DAY)
    _, client = await gateway(aiohttp_server, fake, tokens=[expired, fine])
    try:
        for _ in range(3):
            assert (await client.post("/v1/chat/completions", json=BODY)).status == 200
        assert client.app is not None
        janitor = client.app[JANITOR]
        await janitor.reconcile()
        await janitor.sweep(now=time.time() + 10 * DAY)
        assert fine in fake.seen_tokens
        assert expired not in fake.seen_tokens
    finally:
        await client.close()
