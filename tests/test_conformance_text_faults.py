"""The harness against text faults of streamed and echoed answers, one fake target per fault.

The target below answers every probe the chat, stream, reasoning, image, tool, Anthropic and
Responses checks send, correctly by default; each :class:`Faults` field breaks one thing the way
a real proxy does (a black-box test of ``qwen-proxy check`` with about 110 fake proxies found
them passing or misnamed): the last piece flushed twice, text after the finish_reason chunk,
``<think>`` blocks from a model that does not think, cumulative reasoning / Anthropic / Responses
/ tool-argument / image deltas, text damaged in transit (characters dropped at splits, ``?``
for CJK, snapshots diffed by byte length, overlapping or stripped deltas), ``length`` on a
complete answer, an upstream's raw error object in the stream, reasoning in
``delta.reasoning``, usage with Anthropic's field names. Each test names the check that must
fail and the diagnosis it must give; the healthy target must pass them all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from helpers import byte_length_diffed
from test_conformance_broken import tiny_png

from proxy.conformance import Report, run_checks
from proxy.conformance.probes import ECHO_EN_SENTENCE, ECHO_ZH_SENTENCE

TEXT, THINKING, IMAGE = "m", "m-thinking", "m-image"
USAGE = {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
REASONING = "221 is odd. 13 times 17 is 221, so it is not prime."


def pieces_of(text: str, n: int = 3) -> list[str]:
    """``text`` cut into pieces of ``n`` characters, as a model streams it."""
    return [text[i : i + n] for i in range(0, len(text), n)]


def cumulative(pieces: list[str]) -> list[str]:
    """Snapshots instead of deltas: each piece is all the text so far."""
    return [("".join(pieces[: i + 1])) for i in range(len(pieces))]


@dataclass(frozen=True)
class Faults:
    """What the fake target gets wrong (nothing by default)."""

    mangle: Callable[[list[str]], list[str]] | None = None
    """Applied to the text model's answer pieces (the non-streamed answer is their join)."""
    think: str = ""
    """Put before the text model's answer, streamed as its own piece."""
    after_finish: str = ""
    """Text streamed in a chunk after the finish_reason chunk."""
    finish: str = "stop"
    reasoning_field: str = "reasoning_content"
    reasoning_cumulative: bool = False
    args_cumulative: bool = False
    raw_error: dict[str, Any] | None = None
    """Streamed (after the role chunk) instead of any answer."""
    stream_usage: dict[str, Any] = field(default_factory=lambda: dict(USAGE))
    usage: dict[str, Any] = field(default_factory=lambda: dict(USAGE))
    image_cumulative: bool = False
    anthropic_cumulative: bool = False
    responses_cumulative: bool = False


def _answer(body: dict[str, Any]) -> tuple[str, str]:
    """``(reasoning, text)`` the model behind the fake target gives."""
    messages = body.get("messages") or [{}]
    last = messages[-1]
    if last.get("role") == "tool":
        return "", "It is 21 °C and sunny in Berlin."
    prompt = last.get("content") or ""
    if isinstance(prompt, list):
        prompt = "".join(p.get("text", "") for p in prompt if isinstance(p, dict))
    found = re.search(r"[:：]\s*(.+)$", prompt, re.S)
    text = found.group(1).strip() if found and ("Repeat" in prompt or "重复" in prompt) else ""
    text = text or "One, two, three."
    thinking = body.get("model") == THINKING
    return (REASONING if thinking else ""), ("No." if thinking else text)


def fake_target(faults: Faults) -> web.Application:
    """An OpenAI-compatible target (chat, images by URL, /v1/messages, /v1/responses)."""

    async def models(_: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "x"} for m in (TEXT,)]
        data += [dict(data[0], id=THINKING), dict(data[0], id=IMAGE)]
        return web.json_response({"object": "list", "data": data})

    async def png(_: web.Request) -> web.Response:
        return web.Response(body=tiny_png(), content_type="image/png")

    def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": TEXT,
            "choices": choices,
        }

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body.get("model")
        if model not in (TEXT, THINKING, IMAGE):
            return web.json_response(
                {"error": {"message": "no such model", "type": "invalid_request_error"}},
                status=404,
            )
        reasoning, text = _answer(body)
        call = None
        if body.get("tools") and not text.startswith("It is"):
            call = '{"city": "Paris"}'
        pieces = pieces_of(text)
        if model == IMAGE:
            pieces = pieces_of(f"![image](http://{request.host}/files/img.png)")
            pieces = cumulative(pieces) if faults.image_cumulative else pieces
        elif model == TEXT and call is None:
            pieces = faults.mangle(pieces) if faults.mangle else pieces
            pieces = [faults.think, *pieces] if faults.think else pieces
        finish = "tool_calls" if call else faults.finish
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces)}
            if call:
                message["content"] = None
                message["tool_calls"] = [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": call},
                    }
                ]
            return web.json_response(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": faults.usage,
                }
            )
        chunks = [chunk({"role": "assistant", "content": ""})]
        if faults.raw_error is not None:
            chunks.append(faults.raw_error)
        else:
            thoughts = pieces_of(reasoning, 5)
            thoughts = cumulative(thoughts) if faults.reasoning_cumulative else thoughts
            chunks += [chunk({faults.reasoning_field: r}) for r in thoughts]
            if call is not None:
                first = {"index": 0, "id": "call_1", "type": "function"}
                first["function"] = {"name": "get_weather", "arguments": ""}
                chunks.append(chunk({"tool_calls": [first]}))
                fragments = pieces_of(call, 5)
                fragments = cumulative(fragments) if faults.args_cumulative else fragments
                chunks += [
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": f}}]})
                    for f in fragments
                ]
            else:
                chunks += [chunk({"content": p}) for p in pieces]
            chunks.append(chunk({}, finish))
            if faults.after_finish:
                chunks.append(chunk({"content": faults.after_finish}))
            if (body.get("stream_options") or {}).get("include_usage"):
                chunks.append(dict(chunk(None), usage=faults.stream_usage))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for c in chunks:
            await resp.write(f"data: {json.dumps(c, ensure_ascii=False)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def messages(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        _, text = _answer(body)
        tools = bool(body.get("tools"))
        usage = {"input_tokens": 20, "output_tokens": 10}
        if tools:
            block: dict[str, Any] = {"type": "tool_use", "id": "toolu_1", "name": "get_weather"}
            stop = "tool_use"
        else:
            block, stop = {"type": "text", "text": ""}, "end_turn"
        if not body.get("stream"):
            content = [dict(block, input={"city": "Paris"})] if tools else [dict(block, text=text)]
            return web.json_response(
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": TEXT,
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": usage,
                }
            )
        if tools:
            parts = pieces_of('{"city": "Paris"}', 5)
            kind, key = "input_json_delta", "partial_json"
            block = dict(block, input={})
        else:
            parts, kind, key = pieces_of(text), "text_delta", "text"
        parts = cumulative(parts) if faults.anthropic_cumulative else parts
        start: dict[str, Any] = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": TEXT,
        }
        start.update(content=[], stop_reason=None, stop_sequence=None, usage=usage)
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": start},
            {"type": "content_block_start", "index": 0, "content_block": block},
            *(
                {"type": "content_block_delta", "index": 0, "delta": {"type": kind, key: p}}
                for p in parts
            ),
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": usage},
            {"type": "message_stop"},
        ]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for e in events:
            await resp.write(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode())
        return resp

    async def responses(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream") or body.get("tools"):
            return web.json_response({"error": {"message": "not here", "type": "x"}}, status=404)
        text = ECHO_EN_SENTENCE
        parts = pieces_of(text)
        parts = cumulative(parts) if faults.responses_cumulative else parts
        item: dict[str, Any] = {"id": "msg_1", "type": "message", "role": "assistant"}
        item["status"] = "completed"
        item["content"] = [{"type": "output_text", "text": text, "annotations": []}]
        response: dict[str, Any] = {
            "id": "resp_1",
            "object": "response",
            "created_at": 0,
            "model": TEXT,
        }
        response.update(status="completed", output=[item], usage=None)
        at = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
        events: list[dict[str, Any]] = [
            {
                "type": "response.created",
                "response": dict(response, output=[], status="in_progress"),
            },
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": dict(item, content=[]),
            },
            *({"type": "response.output_text.delta", **at, "delta": p} for p in parts),
            {"type": "response.output_text.done", **at, "text": text},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": response},
        ]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for n, e in enumerate(events):
            e["sequence_number"] = n
            await resp.write(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode())
        return resp

    async def count_tokens(_: web.Request) -> web.Response:
        return web.json_response({"input_tokens": 42})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/files/img.png", png)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app.router.add_post("/v1/responses", responses)
    return app


SKIP: tuple[str, ...] = ("models", "auth", "errors", "wire", "images.generations")
SKIP += ("tools.parallel", "anthropic.round_trip", "anthropic.errors", "responses.basic")
SKIP += ("responses.tools", "responses.round_trip", "responses.errors")
"""Checks these tests leave out (about other things, or endpoints the fake lacks)."""


async def check(aiohttp_server: Any, faults: Faults = Faults(), **kw: Any) -> Report:
    """Serve a fake target with ``faults`` and run the checks against it."""
    server = await aiohttp_server(fake_target(faults))
    return await run_checks(str(server.make_url("/v1")), skip=SKIP, timeout_s=20, **kw)


def failures(report: Report) -> dict[str, str]:
    """Check id → diagnosis of every check that did not pass or get skipped."""
    return {r.id: r.diagnosis for r in report.results if r.status not in ("passed", "skipped")}


async def test_healthy_target_passes(aiohttp_server: Any) -> None:
    """The fake target without faults passes every check these tests look at."""
    report = await check(aiohttp_server)
    assert failures(report) == {}, report.to_markdown()
    assert report.exit_code() == 0
    assert report.by_id()["reasoning.thinking"].status == "passed"
    assert report.by_id()["responses.stream"].status == "passed"
    assert report.by_id()["images.chat.stream"].status == "passed"


# -- R01: the last piece flushed twice -----------------------------------------------------------


async def test_last_piece_sent_twice(aiohttp_server: Any) -> None:
    """``…river.`` then ``r.`` again: the streamed echo names the re-sent piece, the plain echo
    says the sentence is followed by a repeat of its end; neither says "exactly"."""
    report = await check(aiohttp_server, Faults(mangle=lambda p: [*p, p[-1]]))
    by_id = report.by_id()
    assert by_id["chat.en.stream"].diagnosis == "duplicated_deltas"
    assert "is the piece before it sent again" in by_id["chat.en.stream"].message
    assert by_id["chat.zh.stream"].diagnosis == "duplicated_deltas"
    assert by_id["chat.en"].diagnosis == "echo_mismatch"
    assert "repeat of its own last 2 character(s) ('r.')" in by_id["chat.en"].message
    assert by_id["profile.langchain"].diagnosis == "echo_mismatch"
    assert report.exit_code() == 1


# -- R02: text after the finish_reason chunk -------------------------------------------------------


async def test_text_after_finish_reason(aiohttp_server: Any) -> None:
    """A content chunk after the ``stop`` chunk fails stream.finish_reason and the streamed
    echoes with ``content_after_finish``; the non-streamed echo passes."""
    report = await check(aiohttp_server, Faults(after_finish=" Anything else?"))
    got = failures(report)
    assert got["stream.finish_reason"] == "content_after_finish"
    assert got["chat.en.stream"] == got["chat.zh.stream"] == "content_after_finish"
    assert "' Anything else?'" in report.by_id()["stream.finish_reason"].message
    assert "chat.en" not in got


# -- R05: think tags from a model that does not think ----------------------------------------------


@pytest.mark.parametrize(
    "think", ["<think>\n\n</think>\n\n", "<think>\nThe user wants an echo.\n</think>\n\n"]
)
async def test_think_tags_in_content(aiohttp_server: Any, think: str) -> None:
    """An empty or full ``<think>`` block before the answer of the text model fails the echoes
    and the LangChain profile (which shows it verbatim) with ``think_tags_in_content``; Cherry
    Studio and Open WebUI split think tags out, so their profiles pass."""
    report = await check(aiohttp_server, Faults(think=think))
    got = failures(report)
    for check_id in ("chat.en", "chat.en.stream", "chat.zh", "chat.zh.stream"):
        assert got[check_id] == "think_tags_in_content", check_id
    assert got["profile.langchain"] == "think_tags_in_content"
    assert "without them the answer is the sentence" in report.by_id()["chat.en"].message
    assert "profile.cherry-studio" not in got and "profile.open-webui" not in got


# -- R03, R24, Responses: cumulative reasoning, Anthropic and Responses deltas ---------------------


async def test_cumulative_reasoning(aiohttp_server: Any) -> None:
    """reasoning_content sent as snapshots fails reasoning.thinking with duplicated_deltas."""
    report = await check(aiohttp_server, Faults(reasoning_cumulative=True))
    result = report.by_id()["reasoning.thinking"]
    assert (result.status, result.diagnosis) == ("failed", "duplicated_deltas")
    assert result.message.startswith("reasoning: streamed piece")


async def test_cumulative_anthropic_deltas(aiohttp_server: Any) -> None:
    """text_delta and input_json_delta snapshots on /v1/messages: duplicated_deltas in
    anthropic.stream, anthropic.tools.stream and the Claude Code profile."""
    report = await check(aiohttp_server, Faults(anthropic_cumulative=True))
    got = failures(report)
    assert got["anthropic.stream"] == "duplicated_deltas"
    assert report.by_id()["anthropic.stream"].message.startswith("text_delta: ")
    assert got["anthropic.tools.stream"] == "duplicated_deltas"
    assert report.by_id()["anthropic.tools.stream"].message.startswith("input_json_delta: ")
    assert got["profile.claude-code"] == "duplicated_deltas"


async def test_cumulative_responses_deltas(aiohttp_server: Any) -> None:
    """response.output_text.delta snapshots fail responses.stream with duplicated_deltas."""
    report = await check(aiohttp_server, Faults(responses_cumulative=True))
    assert failures(report)["responses.stream"] == "duplicated_deltas"
    assert report.by_id()["responses.stream"].message.startswith("output_text.delta: ")


# -- R17: cumulative tool-call arguments -----------------------------------------------------------


async def test_cumulative_tool_arguments(aiohttp_server: Any) -> None:
    """Argument fragments sent as snapshots are named as re-sent fragments, not as arguments
    that are not JSON."""
    report = await check(aiohttp_server, Faults(args_cumulative=True))
    result = report.by_id()["tools.call.stream"]
    assert result.diagnosis == "duplicated_deltas", result.message
    assert result.message.startswith("call 0's arguments: streamed piece #")


# -- R09: a cumulative image answer ----------------------------------------------------------------


async def test_cumulative_image_stream(aiohttp_server: Any) -> None:
    """The image model's Markdown sent as snapshots (``![i``, ``![ima``, …) is duplicated_deltas,
    with the request and evidence, not a harness error."""
    report = await check(aiohttp_server, Faults(image_cumulative=True))
    result = report.by_id()["images.chat.stream"]
    assert (result.status, result.diagnosis) == ("failed", "duplicated_deltas")
    assert result.request is not None and result.evidence is not None


# -- R10: text damaged on the way, each with its cause ---------------------------------------------


def _split_ignore(pieces: list[str]) -> list[str]:
    raw = "".join(pieces).encode()
    return [raw[i : i + 4].decode("utf-8", errors="ignore") for i in range(0, len(raw), 4)]


@pytest.mark.parametrize(
    ("mangle", "check_id", "code"),
    [
        (_split_ignore, "chat.zh.stream", "split_chars_dropped"),
        (_split_ignore, "chat.zh", "split_chars_dropped"),
        (
            lambda ps: [p.encode("latin-1", errors="replace").decode("latin-1") for p in ps],
            "chat.zh.stream",
            "question_marks",
        ),
        (byte_length_diffed, "chat.zh.stream", "byte_length_diffing"),
        (
            lambda ps: [p if i == 0 else ps[i - 1][-1] + p for i, p in enumerate(ps)],
            "chat.zh.stream",
            "overlapping_deltas",
        ),
        (lambda ps: [p.strip() for p in ps], "chat.en.stream", "stripped_deltas"),
        (lambda ps: [p.strip() for p in ps], "chat.en", "stripped_deltas"),
    ],
)
async def test_damaged_text_has_its_cause(
    aiohttp_server: Any, mangle: Callable[[list[str]], list[str]], check_id: str, code: str
) -> None:
    """Each kind of damage gets its own diagnosis instead of the generic echo_mismatch."""
    report = await check(aiohttp_server, Faults(mangle=mangle))
    assert report.by_id()[check_id].diagnosis == code, report.by_id()[check_id].message


# -- R19: finish_reason length on a complete answer ------------------------------------------------


async def test_length_on_a_complete_answer(aiohttp_server: Any) -> None:
    """A complete echo with finish_reason 'length' (no max_tokens asked) fails the echoes with
    wrong_finish_reason."""
    report = await check(aiohttp_server, Faults(finish="length"))
    got = failures(report)
    assert got["chat.en"] == got["chat.en.stream"] == "wrong_finish_reason"
    assert "'length'" in report.by_id()["chat.en"].message


# -- R23: an upstream's raw error object in the stream ---------------------------------------------


async def test_raw_upstream_error_in_stream(aiohttp_server: Any) -> None:
    """chat.qwen.ai's ``{"success": false, …}`` relayed as a stream event is named as such in
    the tool, echo, stream and profile checks, not as dropped calls or an empty answer."""
    envelope = {"success": False, "data": {"code": "RateLimited", "details": "limit reached"}}
    report = await check(aiohttp_server, Faults(raw_error=envelope))
    got = failures(report)
    for check_id in (
        "tools.call.stream",
        "chat.en.stream",
        "stream.no_duplicates",
        "stream.finish_reason",
        "profile.langchain",
    ):
        assert got[check_id] == "upstream_error_in_stream", (check_id, got[check_id])
    assert "success: false" in report.by_id()["tools.call.stream"].message


# -- R11: reasoning in delta.reasoning -------------------------------------------------------------


async def test_reasoning_field_is_named(aiohttp_server: Any) -> None:
    """Reasoning in ``delta.reasoning`` passes, named as such, with a note on the clients that
    read only reasoning_content."""
    report = await check(aiohttp_server, Faults(reasoning_field="reasoning"))
    result = report.by_id()["reasoning.thinking"]
    assert result.status == "passed"
    assert "`delta.reasoning`" in result.message and "reasoning_content" not in result.message
    notes = " ".join(result.evidence.notes if result.evidence else [])
    assert "NextChat, Cline and Roo Code read only `delta.reasoning_content`" in notes


# -- R20: usage field names, and the non-streamed total --------------------------------------------


async def test_usage_with_anthropic_names(aiohttp_server: Any) -> None:
    """Usage with input_tokens/output_tokens is named as the wrong field names."""
    faults = Faults(stream_usage={"input_tokens": 20, "output_tokens": 10})
    result = (await check(aiohttp_server, faults)).by_id()["stream.usage"]
    assert result.diagnosis == "usage_shape"
    assert "lacks prompt_tokens, completion_tokens, total_tokens" in result.message
    assert "Anthropic's input_tokens, output_tokens" in result.message
    assert "not integers" not in result.message


async def test_non_streamed_usage_total(aiohttp_server: Any) -> None:
    """A non-streamed usage whose total is not prompt + completion fails stream.usage (the
    usage check, optional) naming the non-streamed answer."""
    faults = Faults(usage={"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 7})
    result = (await check(aiohttp_server, faults)).by_id()["stream.usage"]
    assert result.diagnosis == "usage_inconsistent" and not result.required
    assert result.message.startswith("the non-streamed answer (chat.en)")


def test_zh_sentence_is_what_the_fake_echoes() -> None:
    """The fake echoes the text after the colon of the probe prompts."""
    from proxy.conformance.probes import ECHO_EN_PROMPT, ECHO_ZH_PROMPT

    for prompt, sentence in (
        (ECHO_EN_PROMPT, ECHO_EN_SENTENCE),
        (ECHO_ZH_PROMPT, ECHO_ZH_SENTENCE),
    ):
        body = {"model": TEXT, "messages": [{"role": "user", "content": prompt}]}
        assert _answer(body) == ("", sentence)
