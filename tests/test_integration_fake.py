"""The gateway against an independent fake chat.qwen.ai (``tests/fake_site.py``), via the SDKs.

Unlike the cassette tests, the upstream here answers any prompt from its own state: chat ids it
issues, a memory of each chat's turns, ``parent_id`` checks, odd chunking of bytes and text, and
a model that answers in Qwen's native ``<tool_call>`` markup. Clients are the official ``openai``
(chat completions, responses) and ``anthropic`` SDKs, as the held-out checks use them.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from fake_site import FakeQwen, Model, Reply
from helpers import assistant_call

from proxy.app import make_app
from proxy.config import Settings
from proxy.state import JANITOR, SERVICE

KEY = "sk-test"
TOKENS = ["tok-alpha", "tok-beta"]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "offset": {"type": "integer"}},
            "required": ["city", "offset"],
        },
    },
}


@dataclass
class Rig:
    fake: FakeQwen
    upstream: TestServer
    gateway: TestServer

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=str(self.gateway.make_url("/v1")), api_key=KEY, max_retries=0
        )

    def url(self, path: str) -> str:
        return str(self.gateway.make_url(path))

    async def settle(self) -> None:
        await self.gateway.app[SERVICE].close()


async def make_rig(aiohttp_server: Any, fake: FakeQwen | None = None, **settings: Any) -> Rig:
    fake = fake or FakeQwen(TOKENS)
    upstream = await aiohttp_server(fake.app())
    conf = {
        "upstream_url": str(upstream.make_url("")).rstrip("/"),
        "tokens": list(fake.accounts),
        "api_keys": [KEY],
        "chat_reconcile_interval_s": 0,
        **settings,
    }
    gateway = await aiohttp_server(make_app(Settings(**conf)))
    return Rig(fake, upstream, gateway)


@pytest.fixture
async def rig(aiohttp_server: Any) -> Rig:
    return await make_rig(aiohttp_server)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def collect(stream: Any) -> dict[str, Any]:
    """Fold an SDK chat stream as an agent does."""
    content, reasoning = "", ""
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    usage = None
    async for chunk in stream:
        usage = chunk.usage or usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        content += delta.content or ""
        reasoning += getattr(delta, "reasoning_content", None) or ""
        for tc in delta.tool_calls or []:
            if tc.index not in calls:
                assert tc.id and tc.function and tc.function.name, "first delta lacks id/name"
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            else:
                assert tc.id is None and (tc.function is None or tc.function.name is None)
            calls[tc.index]["arguments"] += (tc.function and tc.function.arguments) or ""
        finish = choice.finish_reason or finish
    return {
        "content": content,
        "reasoning": reasoning,
        "calls": [calls[i] for i in sorted(calls)],
        "finish": finish,
        "usage": usage,
    }


def calls_of(calls: list[Any]) -> list[tuple[str, Any]]:
    out = []
    for c in calls:
        if isinstance(c, dict):
            out.append((c["name"], json.loads(c["arguments"])))
        else:
            out.append((c.function.name, json.loads(c.function.arguments)))
    return out


async def chat(rig: Rig, stream: bool, **kw: Any) -> dict[str, Any]:
    """One chat completion, folded to the same shape streamed or not."""
    kw.setdefault("model", "qwen3-max")
    async with rig.client() as client:
        if stream:
            s = await client.chat.completions.create(
                stream=True, stream_options={"include_usage": True}, **kw
            )
            return await collect(s)
        c = await client.chat.completions.create(**kw)
    msg = c.choices[0].message
    return {
        "content": msg.content or "",
        "reasoning": getattr(msg, "reasoning_content", None) or "",
        "calls": [
            {"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
            for t in msg.tool_calls or []
        ],
        "finish": c.choices[0].finish_reason,
        "usage": c.usage,
        "message": msg,
    }


# -- plain chat ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_plain_answer_usage_and_clean_requests(rig: Rig, stream: bool) -> None:
    out = await chat(rig, stream, messages=user("hello there"))
    assert out["content"] == "Echo (turn 1): hello there — 好的 ✅"
    assert out["finish"] == "stop"
    assert out["usage"].prompt_tokens == max(1, len("hello there") // 4)
    assert out["usage"].completion_tokens > 0
    assert rig.fake.violations == []
    body = rig.fake.completions()[0]
    assert body["parent_id"] is None and body["chat_id"] in rig.fake.chats


@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_summary_becomes_reasoning(rig: Rig, stream: bool) -> None:
    out = await chat(rig, stream, model="qwen3-max-thinking", messages=user("why?"))
    assert out["reasoning"].startswith("Thinking about it.")
    assert "Answering plainly." in out["reasoning"]
    assert out["content"] == "Echo (turn 1): why? — 好的 ✅"


# -- tools ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_one_call(aiohttp_server: Any, stream: bool, fmt: str) -> None:
    rig = await make_rig(aiohttp_server, FakeQwen(TOKENS, model=Model(tool_format=fmt)))  # type: ignore[arg-type]
    out = await chat(
        rig, stream, messages=user("get_weather for city=Paris"), tools=[WEATHER, TIME]
    )
    assert out["finish"] == "tool_calls"
    assert calls_of(out["calls"]) == [("get_weather", {"city": "Paris"})]
    assert out["calls"][0]["id"].startswith("call_")
    assert not out["content"]
    prompt = rig.fake.completions()[0]["messages"][0]["content"]
    assert "<tools>" in prompt and "get_time" in prompt
    assert rig.fake.violations == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_parallel_calls_and_typed_xml_values(
    aiohttp_server: Any, stream: bool, fmt: str
) -> None:
    rig = await make_rig(aiohttp_server, FakeQwen(TOKENS, model=Model(tool_format=fmt)))  # type: ignore[arg-type]
    out = await chat(
        rig,
        stream,
        messages=user("get_weather and get_time, city=Oslo, offset=2"),
        tools=[WEATHER, TIME],
    )
    assert out["finish"] == "tool_calls"
    assert calls_of(out["calls"]) == [
        ("get_weather", {"city": "Oslo"}),
        ("get_time", {"city": "Oslo", "offset": 2}),
    ]
    assert len({c["id"] for c in out["calls"]}) == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_preface_then_call(aiohttp_server: Any, stream: bool) -> None:
    fake = FakeQwen(TOKENS, model=Model(preface="Let me check that for you.\n"))
    rig = await make_rig(aiohttp_server, fake)
    out = await chat(rig, stream, messages=user("get_weather city=Rome"), tools=[WEATHER])
    assert out["finish"] == "tool_calls"
    assert out["content"].strip() == "Let me check that for you."
    assert calls_of(out["calls"]) == [("get_weather", {"city": "Rome"})]


@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_before_a_call(rig: Rig, stream: bool) -> None:
    out = await chat(
        rig,
        stream,
        model="qwen3-max-thinking",
        messages=user("get_weather city=Lima"),
        tools=[WEATHER],
    )
    assert out["finish"] == "tool_calls"
    assert "I will call the function." in out["reasoning"]
    assert calls_of(out["calls"]) == [("get_weather", {"city": "Lima"})]
    assert "<tool_call" not in out["content"]


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_choice(rig: Rig, stream: bool) -> None:
    none = await chat(
        rig, stream, messages=user("get_weather city=Nice"), tools=[WEATHER], tool_choice="none"
    )
    assert none["finish"] == "stop" and none["calls"] == []
    assert "<tools>" not in rig.fake.completions()[-1]["messages"][0]["content"]
    req = await chat(
        rig, stream, messages=user("weather city=Nice"), tools=[WEATHER], tool_choice="required"
    )
    assert calls_of(req["calls"]) == [("get_weather", {"city": "Nice"})]
    named = await chat(
        rig,
        stream,
        messages=user("get_weather city=Nice, offset=1"),
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert calls_of(named["calls"]) == [("get_time", {"city": "Nice", "offset": 1})]
    assert rig.fake.violations == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("reencode", [False, True])
async def test_round_trip_continues_the_chat(rig: Rig, stream: bool, reencode: bool) -> None:
    """Call, then the result: the second turn goes to the same chat after the first answer
    (no settling pause: a client sends the result as soon as it has the call), also when the
    client re-encodes the arguments (``JSON.stringify``: compact)."""
    messages: list[dict[str, Any]] = user("get_weather city=Paris")
    first = await chat(rig, stream, messages=messages, tools=[WEATHER])
    call = first["calls"][0]
    if reencode:
        call["arguments"] = json.dumps(json.loads(call["arguments"]), separators=(",", ":"))
    messages += [
        assistant_call(call["id"], call["name"], call["arguments"]),
        {"role": "tool", "tool_call_id": call["id"], "content": "22 C, sunny"},
    ]
    second = await chat(rig, stream, messages=messages, tools=[WEATHER])
    assert second["finish"] == "stop"
    assert second["content"] == "Based on the tool result: 22 C, sunny."
    b1, b2 = rig.fake.completions()
    assert b2["chat_id"] == b1["chat_id"], "the result did not continue the chat"
    chat_rec = rig.fake.chats[b1["chat_id"]]
    first_turn = next(t for t in chat_rec.turns.values() if t.parent_id is None)
    assert b2["parent_id"] == first_turn.response_id
    assert "<tools>" not in b2["messages"][0]["content"]
    assert rig.fake.violations == []


# -- multi-turn ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_multi_turn_native_continuation(rig: Rig, stream: bool) -> None:
    a1 = await chat(rig, stream, messages=user("first question"))
    history = [
        *user("first question"),
        {"role": "assistant", "content": a1["content"]},
        *user("second question"),
    ]
    a2 = await chat(rig, stream, messages=history)
    assert a2["content"] == "Echo (turn 2): second question — 好的 ✅"
    b1, b2 = rig.fake.completions()
    assert b2["chat_id"] == b1["chat_id"]
    assert b2["messages"][0]["content"] == "second question"
    history += [{"role": "assistant", "content": a2["content"]}, *user("third")]
    a3 = await chat(rig, stream, messages=history)
    assert a3["content"] == "Echo (turn 3): third — 好的 ✅"
    assert len(rig.fake.live_chats()) == 1


@pytest.mark.parametrize("how", ["deleted", "parent_envelope", "parent_frame"])
async def test_continuation_falls_back_to_a_new_chat(aiohttp_server: Any, how: str) -> None:
    fake = FakeQwen(TOKENS, parent_error="frame" if how == "parent_frame" else "envelope")
    rig = await make_rig(aiohttp_server, fake)
    a1 = await chat(rig, False, messages=user("remember me"))
    (chat1,) = fake.live_chats()
    if how == "deleted":
        chat1.deleted = True
    else:
        chat1.turns.clear()  # the site forgot the answer: parent_id unknown
    history = [
        *user("remember me"),
        {"role": "assistant", "content": a1["content"]},
        *user("and now?"),
    ]
    a2 = await chat(rig, True, messages=history)
    assert a2["content"].startswith("Echo (turn 1): ")
    last = fake.completions()[-1]
    assert last["chat_id"] != chat1.id and last["parent_id"] is None
    assert "remember me" in last["messages"][0]["content"]


# -- hang-up, accounts, errors ---------------------------------------------------------------------


async def test_client_hangup_sends_the_stop_call(rig: Rig) -> None:
    rig.fake.hold = True
    body = {"model": "qwen3-max", "stream": True, "messages": user("a long story")}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(rig.url("/v1/chat/completions"), json=body, headers=headers) as r:
            assert r.status == 200
            got = b""
            while b'"content":"E' not in got:  # the first answer text arrived
                got += await r.content.readany()
    await asyncio.wait_for(rig.fake.stopped.wait(), 2)
    (stop,) = rig.fake.stops
    (chat_rec,) = rig.fake.live_chats()
    assert stop["chat_id"] == chat_rec.id
    assert stop.get("response_id") in chat_rec.turns


async def test_a_rate_limited_account_is_rested_and_the_other_serves(rig: Rig) -> None:
    rig.fake.accounts["tok-alpha"].behaviour = "ratelimited"
    results = []
    for _ in range(3):
        try:
            out = await chat(rig, False, messages=user("hi"))
            results.append(out["content"])
        except openai.RateLimitError as exc:
            assert exc.response.headers.get("retry-after")
            results.append("429")
    assert results[-1].startswith("Echo")
    assert results.count("429") <= 1
    # once rested, alpha is not asked again
    asked = [r for r in rig.fake.requests if r[2] == "tok-alpha" and r[0] == "POST"]
    assert len(asked) == 1


@pytest.mark.parametrize("kind", ["captcha_json", "captcha_html"])
async def test_captcha_is_a_503_with_advice(aiohttp_server: Any, kind: str) -> None:
    fake = FakeQwen(["tok-only"])
    fake.accounts["tok-only"].behaviour = kind  # type: ignore[assignment]
    rig = await make_rig(aiohttp_server, fake)
    with pytest.raises(openai.APIStatusError) as info:
        await chat(rig, False, messages=user("hi"))
    assert info.value.status_code == 503
    assert "tok-only" not in str(info.value.body)


async def test_chats_are_spread_over_accounts_and_not_left_behind(rig: Rig) -> None:
    await asyncio.gather(*(chat(rig, False, messages=user(f"q{i}")) for i in range(4)))
    used = {c.token for c in rig.fake.chats.values()}
    assert used == set(TOKENS)


# -- what the model may write ----------------------------------------------------------------------

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Bergen"}}\n</tool_call>'
SCRIPT = {
    "angles": Reply([], "Compare a <b> with 1<2 and <tool_c ok, <function it </tool_callx>"),
    "trailing": Reply([], CALL + "\nI called it."),
    "broken": Reply(
        [], '<tool_call>\n{"name": "get_weather", "arguments": {"city": }\n</tool_call>'
    ),
    "unknown": Reply([], '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>'),
    "fenced": Reply([], "```json\n" + CALL + "\n```"),
    "thinkcall": Reply(["I could write " + CALL + " here."], "No call needed: sunny."),
}


@pytest.fixture
async def scripted(aiohttp_server: Any) -> Rig:
    return await make_rig(aiohttp_server, FakeQwen(TOKENS, model=Model(script=SCRIPT)))


@pytest.mark.parametrize("stream", [False, True])
async def test_angle_brackets_in_prose_pass_through(scripted: Rig, stream: bool) -> None:
    out = await chat(scripted, stream, messages=user("angles please"), tools=[WEATHER])
    assert out["content"] == SCRIPT["angles"].answer.replace("</tool_callx>", "x>") or (
        out["content"] == SCRIPT["angles"].answer
    ), out["content"]
    assert out["finish"] == "stop" and out["calls"] == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("word", ["trailing", "fenced"])
async def test_call_with_text_around(scripted: Rig, stream: bool, word: str) -> None:
    out = await chat(scripted, stream, messages=user(f"{word} please"), tools=[WEATHER])
    assert out["finish"] == "tool_calls"
    assert calls_of(out["calls"]) == [("get_weather", {"city": "Bergen"})]
    assert "<tool_call" not in out["content"] and "```" not in out["content"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("word", ["broken", "unknown"])
async def test_a_bad_call_is_never_a_broken_call(scripted: Rig, stream: bool, word: str) -> None:
    out = await chat(scripted, stream, messages=user(f"{word} please"), tools=[WEATHER])
    assert out["calls"] == [] and out["finish"] == "stop"
    assert "<tool_call" not in out["content"]
    assert out["content"], "the client got an empty answer"


@pytest.mark.parametrize("stream", [False, True])
async def test_markup_inside_reasoning_is_not_a_call(scripted: Rig, stream: bool) -> None:
    out = await chat(
        scripted, stream, model="qwen3-max-thinking", messages=user("thinkcall"), tools=[WEATHER]
    )
    assert out["calls"] == [] and out["finish"] == "stop"
    assert out["content"] == "No call needed: sunny."


# -- failures mid-answer ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["error_midstream", "cut_midstream"])
async def test_failure_mid_answer(aiohttp_server: Any, kind: str) -> None:
    fake = FakeQwen(["tok-only"])
    fake.accounts["tok-only"].behaviour = kind  # type: ignore[assignment]
    rig = await make_rig(aiohttp_server, fake)
    with pytest.raises(openai.APIStatusError) as info:
        await chat(rig, False, messages=user("a fairly long question to answer"))
    assert info.value.status_code == 502
    with pytest.raises(openai.APIError):
        await chat(rig, True, messages=user("a fairly long question to answer"))


async def test_non_stream_hangup_sends_the_stop_call(rig: Rig) -> None:
    rig.fake.hold = True
    body = {"model": "qwen3-max", "messages": user("a long story")}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as s:
        task = asyncio.ensure_future(
            s.post(rig.url("/v1/chat/completions"), json=body, headers=headers)
        )
        await asyncio.wait_for(rig.fake.held.wait(), 2)  # the fake sent its first text
        task.cancel()
    await asyncio.wait_for(rig.fake.stopped.wait(), 2)
    assert rig.fake.stops[0]["chat_id"] in rig.fake.chats


async def test_an_unauthorized_token_is_rested(rig: Rig) -> None:
    rig.fake.accounts["tok-alpha"].behaviour = "unauthorized"
    outcomes = []
    for _ in range(3):
        try:
            outcomes.append((await chat(rig, False, messages=user("hi")))["content"][:4])
        except openai.APIStatusError as exc:
            outcomes.append(str(exc.status_code))
            assert "tok-alpha" not in str(exc.body)
    assert outcomes.count("401") <= 1 and outcomes[-1] == "Echo"
    asked = [r for r in rig.fake.requests if r[2] == "tok-alpha" and r[0] == "POST"]
    assert len(asked) <= 1


# -- chat cleanup ----------------------------------------------------------------------------------


async def test_janitor_deletes_idle_gateway_chats_only(aiohttp_server: Any) -> None:
    rig = await make_rig(aiohttp_server, chat_deletes_per_minute=60000)
    mine = rig.fake.add_chat("tok-alpha", "My holiday plans", age_s=10**6)
    leftover = rig.fake.add_chat("tok-beta", "qwen-gateway", age_s=10**6)
    await chat(rig, False, messages=user("hi"))
    (made,) = [c for c in rig.fake.live_chats() if c.id not in (mine.id, leftover.id)]
    janitor = rig.gateway.app[JANITOR]
    future = time.time() + 10**6
    await janitor.sweep(now=future)
    await janitor.reconcile(now=future)
    assert made.deleted and leftover.deleted and not mine.deleted


@pytest.mark.parametrize("stream", [False, True])
async def test_required_answered_in_prose_gets_one_correction(rig: Rig, stream: bool) -> None:
    """The model ignores tool_choice=required: one corrective turn, then the prose, finish
    stop (README "Agents"); the corrective turn is a valid upstream request too."""
    out = await chat(
        rig,
        stream,
        messages=user("chat only: how are you?"),
        tools=[WEATHER],
        tool_choice="required",
    )
    assert out["calls"] == [] and out["finish"] == "stop"
    assert out["content"].startswith("Echo")
    assert len(rig.fake.completions()) == 2
    assert rig.fake.violations == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "wire", ["crlf", "nospace", "comments", "no_blank_line", "last_in_finished"]
)
async def test_sse_variants(aiohttp_server: Any, stream: bool, wire: str) -> None:
    """What the SSE standard allows (CRLF, no space after ``data:``, comment and ``id:``
    lines), and text on the finished frame, change nothing."""
    if wire == "last_in_finished":
        fake = FakeQwen(TOKENS, last_in_finished=True)
    else:
        fake = FakeQwen(TOKENS, wire=wire)  # type: ignore[arg-type]
    rig = await make_rig(aiohttp_server, fake)
    out = await chat(rig, stream, messages=user("wire test"))
    assert out["content"] == "Echo (turn 1): wire test — 好的 ✅"
    tools = await chat(rig, stream, messages=user("get_weather city=Kyiv"), tools=[WEATHER])
    assert calls_of(tools["calls"]) == [("get_weather", {"city": "Kyiv"})]


PING = {"type": "function", "function": {"name": "ping"}}
WRITE = {
    "type": "function",
    "function": {
        "name": "write_file",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    },
}
CODE = "if a < b and c > d:\n    print(\"<tool_call> is </tool_call>\", '\\n')\n# 東京 ✅"
MORE = {
    "stringargs": Reply(
        [],
        '<tool_call>\n{"name": "get_weather", '
        '"arguments": "{\\"city\\": \\"Köln\\"}"}\n</tool_call>',
    ),
    "noargs": Reply([], '<tool_call>\n{"name": "ping", "arguments": {}}\n</tool_call>'),
    "tight": Reply([], '<tool_call>{"name":"get_weather","arguments":{"city":"東京"}}</tool_call>'),
    "listed": Reply(
        [],
        '<tool_call>\n[{"name": "get_weather", "arguments": {"city": "A"}}, '
        '{"name": "get_weather", "arguments": {"city": "B"}}]\n</tool_call>',
    ),
    "jsoncode": Reply(
        [],
        "<tool_call>\n"
        + json.dumps({"name": "write_file", "arguments": {"path": "a.py", "content": CODE}})
        + "\n</tool_call>",
    ),
    "xmlcode": Reply(
        [],
        "<tool_call>\n<function=write_file>\n<parameter=path>\na.py\n</parameter>\n"
        f"<parameter=content>\n{CODE.replace('</tool_call>', '')}\n</parameter>\n</function>\n"
        "</tool_call>",
    ),
}
EXPECTED = {
    "stringargs": [("get_weather", {"city": "Köln"})],
    "noargs": [("ping", {})],
    "tight": [("get_weather", {"city": "東京"})],
    "listed": [("get_weather", {"city": "A"}), ("get_weather", {"city": "B"})],
    "jsoncode": [("write_file", {"path": "a.py", "content": CODE})],
    "xmlcode": [("write_file", {"path": "a.py", "content": CODE.replace("</tool_call>", "")})],
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("word", sorted(MORE))
async def test_call_shapes_the_model_may_write(
    aiohttp_server: Any, stream: bool, word: str
) -> None:
    rig = await make_rig(aiohttp_server, FakeQwen(TOKENS, model=Model(script=MORE)))
    out = await chat(rig, stream, messages=user(f"{word} now"), tools=[WEATHER, PING, WRITE])
    assert calls_of(out["calls"]) == EXPECTED[word], out
    assert out["finish"] == "tool_calls"
    assert all(c["arguments"] for c in out["calls"])
    assert "<tool_call" not in out["content"] and "<function" not in out["content"]


async def test_a_continuation_whose_account_is_limited_moves_to_the_other(rig: Rig) -> None:
    """The chat's account draws a rate limit on the continuation: the history goes, flattened,
    to a new chat on the other account, transparently."""
    a1 = await chat(rig, False, messages=user("first question"))
    (first,) = rig.fake.live_chats()
    rig.fake.accounts[first.token].behaviour = "ratelimited"
    history = [
        *user("first question"),
        {"role": "assistant", "content": a1["content"]},
        *user("second question"),
    ]
    a2 = await chat(rig, True, messages=history)
    assert a2["content"] == "Echo (turn 1): second question — 好的 ✅"
    last = rig.fake.completions()[-1]
    assert rig.fake.chats[last["chat_id"]].token != first.token
    assert "first question" in last["messages"][0]["content"]


async def test_chat_stream_wire_shape(rig: Rig) -> None:
    """Raw bytes: one id, the role first, call deltas with index (id/name once), the finish,
    the usage chunk with ``choices: []``, ``[DONE]`` last; parallel_tool_calls=false: one call."""
    body = {
        "model": "qwen3-max",
        "stream": True,
        "stream_options": {"include_usage": True},
        "parallel_tool_calls": False,
        "tools": [WEATHER, TIME],
        "messages": user("get_weather and get_time city=Pisa, offset=1"),
    }
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(rig.url("/v1/chat/completions"), json=body, headers=headers) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            raw = await r.read()
    lines = [ln[6:] for ln in raw.decode().split("\n\n") if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls" and finishes.count("tool_calls") == 1
    deltas = [
        tc
        for c in chunks
        if c["choices"]
        for tc in c["choices"][0]["delta"].get("tool_calls") or []
    ]
    assert {d["index"] for d in deltas} == {0}
    assert [d.get("id") is not None for d in deltas].count(True) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_hangup_on_a_silent_upstream(rig: Rig, stream: bool) -> None:
    """The site opened the stream and then says nothing: the client leaves, the gateway
    releases the upstream connection and sends the stop call within a second."""
    rig.fake.hold_silent = True
    body = {"model": "qwen3-max", "stream": stream, "messages": user("a long story")}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as s:
        task = asyncio.ensure_future(
            s.post(rig.url("/v1/chat/completions"), json=body, headers=headers)
        )
        await asyncio.wait_for(rig.fake.held.wait(), 2)
        task.cancel()
    await asyncio.wait_for(rig.fake.stopped.wait(), 1.5)
    await asyncio.wait_for(rig.fake.disconnected.wait(), 1.5)
    (stop,) = rig.fake.stops
    (chat_rec,) = rig.fake.live_chats()
    assert stop["chat_id"] == chat_rec.id
    assert stop.get("response_id") in chat_rec.turns


async def test_concurrent_requests_do_not_cross(rig: Rig) -> None:
    """Eight agents at once over two accounts (the default limit is 4 answers in flight per
    account): each gets its own call and its own round trip."""
    cities = [f"City{i}" for i in range(8)]

    async def agent(i: int, city: str) -> str:
        msgs: list[dict[str, Any]] = user(f"get_weather city={city}")
        first = await chat(rig, i % 2 == 0, messages=msgs, tools=[WEATHER])
        (call,) = first["calls"]
        assert json.loads(call["arguments"]) == {"city": city}
        msgs += [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call["id"], "type": "function",
                 "function": {"name": call["name"], "arguments": call["arguments"]}}
            ]},
            {"role": "tool", "tool_call_id": call["id"], "content": f"{city} is warm"},
        ]  # fmt: skip
        second = await chat(rig, i % 2 == 1, messages=msgs, tools=[WEATHER])
        return str(second["content"])

    answers = await asyncio.gather(*(agent(i, c) for i, c in enumerate(cities)))
    assert answers == [f"Based on the tool result: {c} is warm." for c in cities]
    assert len(rig.fake.chats) == 8, "a round trip did not continue its own chat"
    assert rig.fake.violations == []


@pytest.mark.parametrize(
    ("kind", "status"),
    [("ratelimited", 429), ("captcha_json", 503), ("captcha_html", 503), ("unauthorized", 401)],
)
@pytest.mark.parametrize("where", ["new_chat", "completion"])
async def test_error_answers_that_arrive_in_pieces(
    aiohttp_server: Any, kind: str, status: int, where: str
) -> None:
    """An error envelope or page that arrives in several network reads is read whole before it
    is classified (not cut at the first read and taken for a protocol error)."""
    fake = FakeQwen(["tok-only"])
    fake.accounts["tok-only"].behaviour = kind  # type: ignore[assignment]
    fake.slow_errors = True
    fake.errors_on_new_chat = where == "new_chat"
    rig = await make_rig(aiohttp_server, fake)
    with pytest.raises(openai.APIStatusError) as info:
        await chat(rig, False, messages=user("hi"))
    assert info.value.status_code == status, info.value.body


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("word", ["preface", "broken", "trailing"])
async def test_what_the_client_got_is_what_continues(
    aiohttp_server: Any, stream: bool, word: str
) -> None:
    """The client sends back exactly what it got (a preface with the call, the proxy's note for
    a dropped call, a call whose trailing text was dropped): the next turn continues the chat."""
    script = {**SCRIPT, "preface": Reply([], "Let me look.\n" + CALL)}
    rig = await make_rig(aiohttp_server, FakeQwen(TOKENS, model=Model(script=script)))
    msgs: list[dict[str, Any]] = user(f"{word} please")
    first = await chat(rig, stream, messages=msgs, tools=[WEATHER])
    assistant: dict[str, Any] = {"role": "assistant", "content": first["content"] or None}
    if first["calls"]:
        assistant["tool_calls"] = [
            {"id": c["id"], "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in first["calls"]
        ]  # fmt: skip
    msgs.append(assistant)
    msgs += [
        {"role": "tool", "tool_call_id": c["id"], "content": "fine"} for c in first["calls"]
    ] or user("try again")
    await chat(rig, stream, messages=msgs, tools=[WEATHER])
    b1, b2 = rig.fake.completions()
    assert b2["chat_id"] == b1["chat_id"], (word, first["content"])


@pytest.mark.parametrize("stream", [False, True])
async def test_incremental_think_phase_becomes_reasoning(rig: Rig, stream: bool) -> None:
    """A site that answers reasoning as ``think`` increments, not summary snapshots."""
    rig.fake.thinking_style = "think"
    out = await chat(
        rig,
        stream,
        model="qwen3-max-thinking",
        messages=user("get_weather city=Bonn"),
        tools=[WEATHER],
    )
    assert out["reasoning"] == "The user wants get_weather. I will call the function."
    assert calls_of(out["calls"]) == [("get_weather", {"city": "Bonn"})]
    plain = await chat(rig, stream, model="qwen3-max-thinking", messages=user("why"))
    assert plain["reasoning"] == "Thinking about it. Answering plainly."
    assert plain["content"] == "Echo (turn 1): why — 好的 ✅"


async def test_dropped_calls_are_counted_in_metrics(scripted: Rig) -> None:
    for word in ("broken", "unknown"):
        await chat(scripted, False, messages=user(f"{word} please"), tools=[WEATHER])
    async with aiohttp.ClientSession() as s:
        headers = {"Authorization": f"Bearer {KEY}"}
        async with s.get(scripted.url("/metrics"), headers=headers) as r:
            assert r.status == 200
            text = await r.text()
    line = next(
        x for x in text.splitlines() if x.startswith("qwen_gateway_tool_call_parse_failures_total")
    )
    assert float(line.split()[-1]) == 2


async def test_tool_result_as_content_parts(rig: Rig) -> None:
    msgs: list[dict[str, Any]] = user("get_weather city=Ulm")
    first = await chat(rig, False, messages=msgs, tools=[WEATHER])
    m = first["message"]
    msgs += [
        m.model_dump(exclude_none=True),
        {
            "role": "tool",
            "tool_call_id": m.tool_calls[0].id,
            "content": [{"type": "text", "text": "5 C"}, {"type": "text", "text": "windy"}],
        },
    ]
    second = await chat(rig, True, messages=msgs, tools=[WEATHER])
    assert second["content"] == "Based on the tool result: 5 C\nwindy."
    b1, b2 = rig.fake.completions()
    assert b2["chat_id"] == b1["chat_id"]


async def test_native_continuation_goes_past_the_prompt_limit(rig: Rig) -> None:
    """A history longer than the site's 131,072 characters once flattened still works: the
    continuation sends only the new message (and without it the gateway says 400, never 200)."""
    big1, big2 = "a" * 100_000, "b" * 40_000
    a1 = await chat(rig, False, messages=user(big1))
    history = [*user(big1), {"role": "assistant", "content": a1["content"]}, *user(big2)]
    a2 = await chat(rig, True, messages=history)
    assert a2["content"].startswith("Echo (turn 2): bbbb")
    assert rig.fake.completions()[-1]["messages"][0]["content"] == big2
    with pytest.raises(openai.BadRequestError):  # a history the gateway never answered
        await chat(
            rig, False, messages=[*user(big1), {"role": "assistant", "content": "x"}, *user(big2)]
        )


async def test_idle_chats_are_deleted_on_their_own(aiohttp_server: Any) -> None:
    """With a short conversation_ttl_s the janitor deletes the gateway's chats by itself (real
    time: the fake signals the deletion), with the account that made them."""
    rig = await make_rig(aiohttp_server, conversation_ttl_s=0.3, chat_deletes_per_minute=60000)
    await chat(rig, False, messages=user("hi"))
    (made,) = rig.fake.live_chats()
    await asyncio.wait_for(rig.fake.deleted.wait(), 5)
    assert made.deleted
    (delete,) = [r for r in rig.fake.requests if r[0] == "DELETE"]
    assert delete[2] == made.token


async def test_leftovers_are_reconciled_at_start_up(aiohttp_server: Any) -> None:
    """Chats an earlier run left behind (gateway title, long idle) go at start-up, on every
    account; the user's own chats stay."""
    fake = FakeQwen(TOKENS)
    mine = fake.add_chat("tok-alpha", "Trip to Rome", age_s=10**6)
    left = [fake.add_chat(t, "qwen-gateway", age_s=10**6) for t in TOKENS]
    await make_rig(
        aiohttp_server, fake, chat_reconcile_interval_s=3600, chat_deletes_per_minute=60000
    )
    while not all(c.deleted for c in left):
        fake.deleted.clear()
        await asyncio.wait_for(fake.deleted.wait(), 5)
    assert not mine.deleted


SQUARE_STARTS = ["😂😂😂😂 that is funny", "...... wait", "hahahahaha no", "aaaa bbbb"]


@pytest.mark.parametrize("answer", SQUARE_STARTS)
async def test_answers_starting_with_repeats_are_kept_whole(
    aiohttp_server: Any, answer: str
) -> None:
    """Incremental answer text whose second piece starts with the first (😂 + 😂😂…) is not a
    cumulative snapshot: every character reaches the client, on any of these cuts."""
    for seed in range(6):
        fake = FakeQwen(TOKENS, seed=seed, model=Model(script={"go": Reply([], answer)}))
        rig = await make_rig(aiohttp_server, fake)
        out = await chat(rig, seed % 2 == 0, messages=user("go"))
        assert out["content"] == answer, seed


async def test_bad_tool_requests_are_400_with_param(rig: Rig) -> None:
    with pytest.raises(openai.BadRequestError) as named:
        await chat(
            rig,
            False,
            messages=user("hi"),
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert named.value.body["param"]  # type: ignore[index]
    bad = {"type": "function", "function": {"name": "x", "parameters": {"type": "objekt"}}}
    with pytest.raises(openai.BadRequestError) as schema:
        await chat(rig, False, messages=user("hi"), tools=[bad])
    assert schema.value.body["param"]  # type: ignore[index]
    assert rig.fake.completions() == [], "a bad request reached the site"


async def test_developer_role_and_names_are_accepted(rig: Rig) -> None:
    out = await chat(
        rig,
        True,
        messages=[
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "name": "alice", "content": "hello"},
        ],
    )
    assert out["content"] == "Echo (turn 1): hello — 好的 ✅"
    assert "Be terse." in rig.fake.completions()[0]["messages"][0]["content"]


@pytest.mark.parametrize(
    "ids",
    ["none", "other"],
)
async def test_parent_id_is_the_response_created_id(aiohttp_server: Any, ids: str) -> None:
    """The next turn's parent_id is the id response.created named (§4.1, §5.2), whatever id
    the content frames carry or not."""
    fake = FakeQwen(TOKENS)
    fake.frame_ids = ids  # type: ignore[assignment]
    rig = await make_rig(aiohttp_server, fake)
    a1 = await chat(rig, True, messages=user("one"))
    history = [*user("one"), {"role": "assistant", "content": a1["content"]}, *user("two")]
    a2 = await chat(rig, False, messages=history)
    assert a2["content"] == "Echo (turn 2): two — 好的 ✅"
    b1, b2 = fake.completions()
    assert b2["chat_id"] == b1["chat_id"] and b2["parent_id"] in fake.chats[b1["chat_id"]].turns
