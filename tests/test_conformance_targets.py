"""The harness's readings of answers that the cassette fixtures cannot express.

Some cases need the exact bytes of one answer (an unknown Anthropic event type) and are read
directly from an :class:`~proxy.conformance.probes.Exchange`; others need a live target that
does something with headers or the connection (a body left open after ``[DONE]``, a charset
label, keys checked by header), served by a small aiohttp app on loopback.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from aiohttp import web
from helpers import openai_chunk

from proxy.conformance import Report, run_checks
from proxy.conformance.agents import _read_anthropic_stream
from proxy.conformance.checks import Outcome, _error_outcome, _http_failure
from proxy.conformance.probes import Client, Exchange, Probe
from proxy.conformance.profiles import _judge_xml_tools
from proxy.conformance.report import RequestRecord


def exchange(
    body: bytes,
    *,
    stream: bool = True,
    content_type: str = "text/event-stream",
    status: int = 200,
) -> Exchange:
    """An answer as the client would have recorded it."""
    probe = Probe("probe", "POST", "/chat/completions", b"{}", stream=stream)
    return Exchange(
        probe=probe,
        request=RequestRecord("POST", "http://t/v1/chat/completions"),
        status=status,
        headers={"content-type": content_type},
        body=body,
    )


def anthropic_sse(events: list[dict[str, Any]]) -> bytes:
    """Anthropic SSE frames: an ``event:`` line named after each data's type."""
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


ANTHROPIC_TEXT = [
    {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant"}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
    {"type": "message_stop"},
]


def test_anthropic_stream_ignores_unknown_event_types() -> None:
    """A new event type (Anthropic may add them; the SDKs skip them) is not out of order: it
    is ignored and noted, wherever it comes."""
    annotation = {"type": "content_block_annotation", "index": 0, "note": "x"}
    events = [*ANTHROPIC_TEXT[:3], annotation, *ANTHROPIC_TEXT[3:], dict(annotation)]
    s = _read_anthropic_stream(exchange(anthropic_sse(events)))
    assert s.problems == [] and s.text == "Hi" and s.stop_reason == "end_turn"
    assert s.unknown == ["content_block_annotation"] * 2
    assert "content_block_annotation" in s.notes()[0]


def test_anthropic_stream_still_fails_known_events_out_of_order() -> None:
    """A known event where the grammar does not allow it still fails."""
    events = [*ANTHROPIC_TEXT[:2], ANTHROPIC_TEXT[4], *ANTHROPIC_TEXT[2:4], ANTHROPIC_TEXT[5]]
    s = _read_anthropic_stream(exchange(anthropic_sse(events)))
    assert any("out of order" in p or "while blocks" in p for p in s.problems), s.problems


def test_a_charset_label_other_than_utf8_fails_only_with_non_ascii_text() -> None:
    """UTF-8 Chinese labelled iso-8859-1 fails (clients that honour the label garble it); no
    label, a UTF-8 label in any spelling, or an ASCII-only body is fine."""
    zh = json.dumps({"text": "我们"}, ensure_ascii=False).encode()
    ascii_only = json.dumps({"text": "我们"}).encode()  # \\u-escaped
    label = "application/json; charset=ISO-8859-1"
    failed = _http_failure(exchange(zh, stream=False, content_type=label))
    assert failed is not None and failed.diagnosis == "wrong_charset", failed
    assert "charset=iso-8859-1" in failed.message and "utf-8" in failed.message
    for content_type, body in (
        ("application/json", zh),
        ('application/json; charset="UTF-8"', zh),
        ("application/json;charset=utf8", zh),
        (label, ascii_only),
    ):
        assert _http_failure(exchange(body, stream=False, content_type=content_type)) is None


COMPLETE_STREAM = (
    openai_chunk({"role": "assistant", "content": ""})
    + openai_chunk({"content": "Hi"})
    + openai_chunk({}, "stop")
    + b"data: [DONE]\n\n"
)


async def _stream_target(aiohttp_server: Any, *, close: bool, after: bytes = b"") -> str:
    """A target whose one stream is complete; the body is then closed, or left open."""
    held = asyncio.Event()  # never set: the open body waits until the server shuts down

    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(COMPLETE_STREAM)
        await resp.write(after)
        if not close:
            await held.wait()
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    server = await aiohttp_server(app)
    return str(server.make_url("/v1"))


async def _send_stream(base: str, timeout_s: float = 30.0) -> Exchange:
    async with aiohttp.ClientSession() as session:
        client = Client(session, base, None, timeout_s=timeout_s, concurrency=1, done_grace_s=0.2)
        probe = Probe.json("s", "/chat/completions", {"stream": True}, stream=True)
        return await client.send(probe)


async def test_a_body_left_open_after_done_is_named_without_waiting_the_timeout(
    aiohttp_server: Any,
) -> None:
    """``[DONE]`` arrived but the body never closes: after a short grace (not the whole
    timeout) the answer fails as not closed, with the complete stream kept as evidence."""
    base = await _stream_target(aiohttp_server, close=False)
    t0 = time.perf_counter()
    ex = await _send_stream(base, timeout_s=30.0)
    assert time.perf_counter() - t0 < 10.0  # the grace, not the 30 s timeout
    assert ex.open_after_end == "data: [DONE]" and ex.body == COMPLETE_STREAM
    failed = _http_failure(ex)
    assert failed is not None and failed.diagnosis == "not_closed_after_done", failed
    assert "[DONE]" in failed.message and "never closed" in failed.message


async def test_a_body_closed_after_done_is_fine(aiohttp_server: Any) -> None:
    """Closed right after ``[DONE]`` (even with an event after it): a normal answer."""
    base = await _stream_target(aiohttp_server, close=True, after=openai_chunk({"content": "x"}))
    ex = await _send_stream(base)
    assert ex.error is None and ex.open_after_end is None
    assert ex.body == COMPLETE_STREAM + openai_chunk({"content": "x"})


# -- live targets: keys -------------------------------------------------------------------------

KEY = "sk-target-secret-4711"
ONLY_AUTH = [
    "chat",
    "stream",
    "wire",
    "reasoning",
    "images",
    "errors",
    "tools",
    "anthropic",
    "responses",
    "profile",
]
"""What the key tests leave out: everything but the model list and the auth checks."""


def openai_target(
    *,
    keys: str = "enforced",
    answer: str | None = "Hello.",
    models: tuple[str, ...] = ("m",),
    root_models: bool = False,
    chat_error: int | None = None,
) -> web.Application:
    """A minimal OpenAI chat target with one model. ``keys``: ``enforced`` (the key is
    required), ``when_sent`` (a sent key must be right, but none at all is let in: the classic
    ``if header and header != key`` bug) or ``none`` (no check). ``answer``: the reply, or
    ``None`` to repeat the user's message (as a model asked to echo does); ``models`` the
    listed ids; ``root_models`` also serves the list without ``/v1`` (chat only under it);
    ``chat_error`` a status every chat request gets past the key check instead of an answer."""

    def refused(request: web.Request) -> web.Response | None:
        sent = request.headers.get("Authorization")
        if keys == "none" or sent == f"Bearer {KEY}" or (keys == "when_sent" and sent is None):
            return None
        error = {"message": "Invalid API key", "type": "invalid_request_error", "code": "key"}
        return web.json_response({"error": error}, status=401)

    async def listing(request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 1, "owned_by": "x"} for m in models]
        return refused(request) or web.json_response({"object": "list", "data": data})

    async def chat(request: web.Request) -> web.Response:
        if (no := refused(request)) is not None:
            return no
        if chat_error is not None:
            error = {"message": "upstream trouble", "type": "server_error", "code": None}
            return web.json_response({"error": error}, status=chat_error)
        body = await request.json()
        text = answer if answer is not None else body["messages"][-1]["content"]
        message = {"role": "assistant", "content": text}
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
        )

    app = web.Application()
    app.router.add_get("/v1/models", listing)
    if root_models:
        app.router.add_get("/models", listing)
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def check(aiohttp_server: Any, app: web.Application, path: str = "/v1") -> Report:
    server = await aiohttp_server(app)
    return await run_checks(str(server.make_url(path)), KEY, skip=ONLY_AUTH, timeout_s=20)


async def test_a_request_without_a_key_served_while_a_wrong_key_is_refused_fails(
    aiohttp_server: Any,
) -> None:
    """Keys enforced only when one is sent: a wrong key gets 401, none at all is served.
    Anyone can use the target, so the run fails; the model list is not called open."""
    report = await check(aiohttp_server, openai_target(keys="when_sent"))
    by_id = report.by_id()
    assert by_id["auth.wrong_key"].status == "passed"
    no_key = by_id["auth.no_key"]
    assert (no_key.status, no_key.diagnosis) == ("failed", "missing_key_accepted"), no_key
    assert "without any key was served" in no_key.message and "401" in no_key.message
    assert "open" not in by_id["models.no_key"].message
    assert report.exit_code() == 1


async def test_keys_enforced_pass_both_auth_checks(aiohttp_server: Any) -> None:
    report = await check(aiohttp_server, openai_target())
    by_id = report.by_id()
    assert by_id["auth.wrong_key"].status == by_id["auth.no_key"].status == "passed"
    assert report.exit_code() == 0


async def test_a_wrong_key_served_is_accepted_whatever_the_answer_says(
    aiohttp_server: Any,
) -> None:
    """No key check at all, with --key given: `wrong_key_accepted`, both when the model
    repeats the probe ("…a wrong API key.", not an error text) and when it says something
    neutral (not skipped as an open target)."""
    for answer in (None, "Hello."):
        report = await check(aiohttp_server, openai_target(keys="none", answer=answer))
        wrong = report.by_id()["auth.wrong_key"]
        assert (wrong.status, wrong.diagnosis) == ("failed", "wrong_key_accepted"), wrong
        assert "checks no key at all" in wrong.message
        assert report.by_id()["auth.no_key"].diagnosis == "not_enforced"
        assert report.exit_code() == 1


# -- live targets: the base URL and the model list ----------------------------------------------


async def test_a_base_url_without_v1_is_not_an_open_target_and_gets_a_hint(
    aiohttp_server: Any,
) -> None:
    """Every chat request 404s because the base URL lacks /v1: the auth checks cannot tell
    (a 404 is neither refused nor served), and a note says the URL probably needs /v1, whether
    the model list answers without /v1 or not."""
    for root_models in (False, True):
        report = await check(aiohttp_server, openai_target(root_models=root_models), path="")
        by_id = report.by_id()
        for check_id in ("auth.wrong_key", "auth.no_key"):
            r = by_id[check_id]
            assert (r.status, r.diagnosis) == ("skipped", "not_offered"), r
            assert "with the right key too" in r.message
        assert any(
            "probably needs /v1" in n and "/v1/models answers HTTP 200" in n for n in (report.notes)
        ), report.notes


async def test_a_404_web_page_for_the_model_list_leaves_the_oversized_body_out(
    aiohttp_server: Any,
) -> None:
    """GET /models answers an HTML 404 page: a note says this may not be an API, and the
    oversized-body probe is not uploaded to it."""
    uploads: list[int] = []

    async def page(request: web.Request) -> web.Response:
        uploads.append(len(await request.read()))
        return web.Response(status=404, text="<html>Not here</html>", content_type="text/html")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", page)
    server = await aiohttp_server(app)
    report = await run_checks(
        str(server.make_url("/v1")), KEY, skip=[*ONLY_AUTH[:5], *ONLY_AUTH[6:]], timeout_s=20
    )
    oversize = report.by_id()["errors.oversize"]
    assert (oversize.status, oversize.diagnosis) == ("skipped", "not_api"), oversize
    assert max(uploads) < 100_000
    assert any("not JSON" in n and "oversized-body probe" in n for n in report.notes)


async def test_an_empty_model_list_skips_the_chat_checks(aiohttp_server: Any) -> None:
    """No model listed, none given: the chat checks are skipped as no_models instead of
    asking a made-up model (a cascade of 404s); models.list fails with the cause."""
    report = await run_checks(
        str((await aiohttp_server(openai_target(models=()))).make_url("/v1")),
        KEY,
        skip=["anthropic", "responses", "tools", "profile", "images", "reasoning", "errors"],
        timeout_s=20,
    )
    by_id = report.by_id()
    assert (by_id["models.list"].status, by_id["models.list"].diagnosis) == ("failed", "no_models")
    for check_id in ("chat.en", "chat.zh.stream", "stream.done", "wire.completion"):
        r = by_id[check_id]
        assert (r.status, r.diagnosis) == ("skipped", "no_models"), r
        assert "lists no model" in r.message
    assert by_id["auth.wrong_key"].status == "passed"
    assert report.exit_code() == 1


def test_a_server_error_says_when_its_body_is_a_web_page() -> None:
    """An HTML 500 for an error probe: the message says the body was HTML, not an error object."""
    page = exchange(b"<html>Internal Server Error</html>", stream=False, content_type="text/html")
    page.status = 500
    out = _error_outcome(page, (400,), "malformed JSON")
    assert out.diagnosis == "server_error"
    assert out.message == (
        "malformed JSON: HTTP 500 with an HTML page, not an OpenAI error object"
    ), out.message


def test_cline_xml_judgement_fails_only_what_the_proxy_did() -> None:
    """No text at all stays the text judgement's empty answer; text without any XML block
    passes with a note (whether the model writes one is model behaviour); the XML as text
    passes as is."""
    ex = exchange(COMPLETE_STREAM)
    empty = Outcome("failed", "empty_answer", "the answer is empty")
    assert _judge_xml_tools(ex, empty, [], "") is empty
    plain = _judge_xml_tools(ex, Outcome("passed", "ok", "ok"), [], "I would read the README.")
    assert plain.status == "passed" and "no XML tool block" in plain.notes[-1]
    xml = "<read_file>\n<path>README.md</path>\n</read_file>"
    kept = _judge_xml_tools(ex, Outcome("passed", "ok", "ok"), [], xml)
    assert kept.status == "passed" and kept.notes == []


async def test_an_error_past_the_key_check_tells_whether_the_key_was_let_through(
    aiohttp_server: Any,
) -> None:
    """No key check, and every chat request fails past it with a 400: a wrong key gets what
    the right key gets, so it was let through. A 503 for every request proves nothing (it may
    come before any key check): a server error, not an accepted key."""
    report = await check(aiohttp_server, openai_target(keys="none", chat_error=400))
    wrong = report.by_id()["auth.wrong_key"]
    assert (wrong.status, wrong.diagnosis) == ("failed", "wrong_key_accepted"), wrong
    assert "with the right key too" in wrong.message
    report = await check(aiohttp_server, openai_target(keys="none", chat_error=503))
    by_id = report.by_id()
    assert by_id["auth.wrong_key"].diagnosis == "server_error", by_id["auth.wrong_key"]
    assert by_id["auth.no_key"].diagnosis == "not_enforced", by_id["auth.no_key"]
