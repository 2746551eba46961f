"""Hostile input: malformed multipart, HTTP-parser refusals, echoed values, bad
parameter types, slow and abandoned bodies. Every answer is an OpenAI error object with a 4xx
status naming what is wrong, never a 500, never an echo of a header value."""

from __future__ import annotations

import asyncio
import gzip
import importlib
import io
import json
import logging
import re
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import openai
import pytest
import structlog
from helpers import SCENARIO, ServerFactory, Stack, assistant_call, messages_for, start_stack

from proxy.api_models import MAX_JSON_DEPTH
from proxy.app import make_app
from proxy.config import Settings
from proxy.guard import DECODED_CODINGS, GatewayRunner
from recorder.replay import REQUESTS_KEY

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    """structlog's defaults (every level, printed to stdout) whatever an earlier test set."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def _logs(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Everything logged so far: stdlib records and structlog's printed lines."""
    out = capsys.readouterr()
    return caplog.text + out.out + out.err


@pytest.fixture
async def stack(aiohttp_server: ServerFactory) -> Stack:
    return await start_stack(aiohttp_server)


async def _post(
    stack: Stack, path: str, body: bytes, ctype: str | None, **headers: str
) -> tuple[int, dict[str, Any]]:
    hdrs = dict(headers)
    data: Any = io.BytesIO(body) if len(body) > 1_000_000 else body
    if ctype is not None:
        hdrs["Content-Type"] = ctype
    async with (
        aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as s,
        s.post(stack.proxy.make_url(path), data=data, headers=hdrs) as r,
    ):
        raw = await r.read()
        assert r.headers["Content-Type"].startswith("application/json"), raw[:200]
        return r.status, json.loads(raw)


def _part(name: str | None, value: bytes, *, filename: str | None = None) -> bytes:
    disp = "form-data"
    if name is not None:
        disp += f'; name="{name}"'
    if filename is not None:
        disp += f'; filename="{filename}"'
    ctype = "Content-Type: image/png\r\n" if filename else ""
    return f"Content-Disposition: {disp}\r\n{ctype}\r\n".encode() + value


def _multipart(parts: list[bytes], boundary: str = "XyZ", *, close: bool = True) -> bytes:
    out = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return out + (b"--" + boundary.encode() + b"--\r\n" if close else b"")


GOOD_PARTS = [_part("image", PNG, filename="a.png"), _part("prompt", b"make it blue")]

MALFORMED_MULTIPART = {
    "no_boundary": (_multipart(GOOD_PARTS), "multipart/form-data"),
    "wrong_boundary": (_multipart(GOOD_PARTS), "multipart/form-data; boundary=OTHER"),
    "truncated": (_multipart(GOOD_PARTS)[:-40], "multipart/form-data; boundary=XyZ"),
    "part_without_name": (
        _multipart([_part(None, b"x"), *GOOD_PARTS]),
        "multipart/form-data; boundary=XyZ",
    ),
    "non_utf8_text_field": (
        _multipart([GOOD_PARTS[0], _part("prompt", "蓝色".encode("gbk") + b"\xff")]),
        "multipart/form-data; boundary=XyZ",
    ),
    "garbage": (b"\x00\x01garbage" * 10, "multipart/form-data; boundary=XyZ"),
    "part_headers_cut": (
        b"--XyZ\r\nContent-Disposition: form-data\r\nCon",
        "multipart/form-data; boundary=XyZ",
    ),
    "secret_boundary": (_multipart(GOOD_PARTS), "multipart/form-data; boundary=sk-SECRETb0undary"),
    "empty": (b"", "multipart/form-data; boundary=XyZ"),
    # a transfer encoding aiohttp's part reader does not know (it raised RuntimeError: a 500)
    "unknown_transfer_encoding_text": (
        _multipart(
            [GOOD_PARTS[0], b"Content-Transfer-Encoding: x-gzip\r\n" + _part("prompt", b"blue")]
        ),
        "multipart/form-data; boundary=XyZ",
    ),
    "unknown_transfer_encoding_image": (
        _multipart(
            [b"Content-Transfer-Encoding: uuencode\r\n" + GOOD_PARTS[0], GOOD_PARTS[1]],
        ),
        "multipart/form-data; boundary=XyZ",
    ),
    "bad_base64_transfer_encoding": (
        _multipart(
            [GOOD_PARTS[0], b"Content-Transfer-Encoding: base64\r\n" + _part("prompt", b"abc")]
        ),
        "multipart/form-data; boundary=XyZ",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_MULTIPART))
async def test_malformed_multipart_is_a_400_naming_the_problem(
    stack: Stack, case: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each malformed multipart body to /v1/images/edits is a 400 invalid_request_error, with
    no traceback logged."""
    body, ctype = MALFORMED_MULTIPART[case]
    with caplog.at_level(logging.DEBUG):
        status, payload = await _post(stack, "/v1/images/edits", body, ctype)
    assert status == 400, payload
    err = payload["error"]
    assert err["type"] == "invalid_request_error"
    assert "multipart" in err["message"] or "image" in err["message"], err
    assert "SECRET" not in err["message"]  # a header value (the boundary) is never quoted
    text = _logs(caplog, capsys)
    assert "Traceback" not in text and "unhandled_error" not in text
    assert "SECRET" not in text


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/images/edits"])
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_a_body_that_does_not_match_its_content_encoding_is_a_400(
    stack: Stack,
    path: str,
    encoding: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Compressed bodies are decoded by the server; one that is not what its
    ``Content-Encoding`` says is a 400 malformed_http, not a 500 with a traceback."""
    if path == "/v1/images/edits":
        body, ctype = _multipart(GOOD_PARTS), "multipart/form-data; boundary=XyZ"
    else:
        body, ctype = b'{"model": "qwen3-max", "messages": []}', "application/json"
    with caplog.at_level(logging.DEBUG):
        status, payload = await _post(stack, path, body, ctype, **{"Content-Encoding": encoding})
    assert status == 400, payload
    error = payload["error"]
    message = error["message"]
    assert "Content-Encoding" in message and "decompressed" in message
    if path != "/v1/messages":
        assert error["code"] == "malformed_http"
    text = _logs(caplog, capsys)
    assert "Traceback" not in text and "unhandled_error" not in text


#: ``Content-Encoding`` values the server does not decode (its parser decodes one of gzip,
#: deflate, br and zstd, given alone): each is a 415 naming it, not a body read as identity
UNDECODED_CODINGS = {
    "x-foo": "x-foo",
    "identity, x": "'x'",
    "gzip, x": "'x'",
    "identity, gzip, x": "'x'",
    "compress": "compress",
    "x-gzip": "x-gzip",
    "gzip, gzip": "gzip, gzip",
    "gzip, identity": "`Content-Encoding: gzip` alone",
    "identity, gzip": "`Content-Encoding: gzip` alone",
}


@pytest.mark.parametrize("coding", sorted(UNDECODED_CODINGS))
async def test_a_content_encoding_the_server_does_not_decode_is_a_415(
    stack: Stack, coding: str
) -> None:
    """A coding the server would not decode is refused, naming it, before the body is read
    (it was read as if not encoded: a plain body went through, a gzip one was a 400 about
    its JSON); nothing is sent upstream."""
    sc = SCENARIO["t2t_answer"]
    plain = json.dumps({"model": sc.openai_model, "messages": messages_for(sc.prompt)}).encode()
    body = gzip.compress(plain) if "gzip" in coding else plain
    status, payload = await _post(
        stack, "/v1/chat/completions", body, "application/json", **{"Content-Encoding": coding}
    )
    assert status == 415, payload
    error = payload["error"]
    assert error["code"] == "unsupported_media_type"
    assert UNDECODED_CODINGS[coding] in error["message"], error
    assert not stack.requests


async def test_an_undecoded_content_encoding_on_messages_is_an_anthropic_415(
    stack: Stack,
) -> None:
    body = json.dumps({"model": "claude-3-5-haiku", "max_tokens": 5, "messages": [_HI]})
    status, payload = await _post(
        stack, "/v1/messages", body.encode(), "application/json", **{"Content-Encoding": "x-foo"}
    )
    assert status == 415, payload
    assert payload["type"] == "error" and "x-foo" in payload["error"]["message"]


#: ``Content-Encoding`` values served, with the compression of the body sent
DECODED: dict[str, Callable[[bytes], bytes]] = {
    "identity": lambda b: b,
    "identity, identity": lambda b: b,
    "gzip": gzip.compress,
    "GZIP": gzip.compress,
    "deflate": zlib.compress,
}
if "br" in DECODED_CODINGS:  # aiohttp found a Brotli package
    DECODED["br"] = importlib.import_module("brotli").compress


@pytest.mark.parametrize("coding", sorted(DECODED))
async def test_a_content_encoding_the_server_decodes_is_served(stack: Stack, coding: str) -> None:
    """``identity`` entries are no-ops; gzip, deflate and br bodies are decoded (any case)."""
    sc = SCENARIO["t2t_answer"]
    plain = json.dumps({"model": sc.openai_model, "messages": messages_for(sc.prompt)}).encode()
    status, payload = await _post(
        stack,
        "/v1/chat/completions",
        DECODED[coding](plain),
        "application/json",
        **{"Content-Encoding": coding},
    )
    assert status == 200, payload
    assert payload["choices"][0]["message"]["content"] == sc.expected_content


@pytest.mark.parametrize(("ctype", "status"), [("text/plain", 415), ("application/json", 401)])
async def test_a_compressed_body_refused_unread_is_not_drained(
    aiohttp_server: ServerFactory,
    ctype: str,
    status: int,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Refused before its body is read (wrong content type, no key): a compressed body is
    not decompressed afterwards (a broken one would log a traceback); the connection closes."""
    stack = await start_stack(aiohttp_server, api_keys=["sk-k"])
    with caplog.at_level(logging.DEBUG):
        async with (
            aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as s,
            s.post(
                stack.proxy.make_url("/v1/chat/completions"),
                data=b"not gzip at all" * 100,
                headers={
                    "Content-Type": ctype,
                    "Content-Encoding": "gzip",
                    **({"Authorization": "Bearer sk-k"} if status == 415 else {}),
                },
            ) as r,
        ):
            assert r.status == status
            assert r.headers.get("Connection", "").lower() == "close"
            await r.read()
    text = _logs(caplog, capsys)
    assert "Traceback" not in text and "Unhandled exception" not in text


@pytest.mark.parametrize("case", ["over_limit", "refused_415", "refused_401"])
async def test_a_client_that_sends_its_whole_compressed_body_first_gets_the_answer(
    aiohttp_server: ServerFactory,
    case: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Served as ``qwen-proxy serve`` serves, a compressed body refused before all of it was
    read (over ``max_body_bytes`` once decompressed, or refused unread) is read on and dropped
    undecoded, and the connection ends with a FIN after the answer: a client that sends its
    whole body before reading (as curl does) gets the error answer, not a connection reset
    (closing a socket with unread input resets it), and nothing is logged as a traceback."""
    stack = await start_stack(aiohttp_server)
    upstream = str(stack.replay.make_url("")).rstrip("/")
    runner, addr = await _gateway(Settings(upstream_url=upstream, api_keys=["sk-k"]))
    if case == "over_limit":  # 200 MB of JSON text once decompressed, 200 kB sent
        body = gzip.compress(b'{"messages": "' + b"a" * 200_000_000, 9)
        ctype, auth, want = "application/json", "Authorization: Bearer sk-k\r\n", 413
    else:  # not even gzip: refused before any of it is read
        body = b"not gzip at all" * 20_000
        ctype = "text/plain" if case == "refused_415" else "application/json"
        auth = "Authorization: Bearer sk-k\r\n" if case == "refused_415" else ""
        want = 415 if case == "refused_415" else 401
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
        f"Content-Type: {ctype}\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    try:
        with caplog.at_level(logging.DEBUG):
            reader, writer = await asyncio.open_connection(*addr)
            writer.write(head.encode() + body)
            await asyncio.wait_for(writer.drain(), timeout=10)  # all of it sent, then read
            raw = await asyncio.wait_for(reader.read(), timeout=10)  # until the server's FIN
            writer.close()
        answer, _, payload = raw.partition(b"\r\n\r\n")
        assert answer.split(b" ")[1] == str(want).encode(), raw[:300]
        assert b"Connection: close" in answer
        assert isinstance(json.loads(payload)["error"]["message"], str)
        text_logs = _logs(caplog, capsys)
        assert "Traceback" not in text_logs and "Unhandled exception" not in text_logs
    finally:
        await runner.cleanup()


async def test_json_body_to_images_edits_is_415(stack: Stack) -> None:
    """A JSON body where multipart is documented is 415, naming the type to send."""
    status, payload = await _post(stack, "/v1/images/edits", b'{"prompt": "x"}', "application/json")
    assert status == 415
    assert payload["error"]["code"] == "unsupported_media_type"
    assert "multipart/form-data" in payload["error"]["message"]


# -- the HTTP parser's refusals ------------------------------------------------------------------


@pytest.fixture
async def raw_proxy(aiohttp_server: ServerFactory) -> AsyncIterator[tuple[str, int]]:
    """The proxy served by :class:`GatewayRunner` (as ``qwen-proxy serve`` does)."""
    stack = await start_stack(aiohttp_server)
    app = make_app(Settings(upstream_url=str(stack.replay.make_url("")).rstrip("/")))
    runner = GatewayRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield "127.0.0.1", port
    finally:
        await runner.cleanup()


async def _raw_exchange(addr: tuple[str, int], data: bytes) -> tuple[int, bytes, bytes]:
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(data)
    await writer.drain()
    raw = await reader.read()  # the server closes the connection after a parser error
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head, body


SECRET = "sk-live-abcdefghijklmnopqrstuvwxyz0123456789"

PARSER_CASES = {
    "long_authorization": (
        f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {SECRET}"
        + "A" * 9000
        + "\r\n\r\n",
        431,
    ),
    "long_request_line": ("GET /v1/" + "m" * 9000 + " HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "long_absolute_target": (
        "GET http://x/" + "m" * 9000 + " HTTP/1.1\r\nHost: x\r\n\r\n",
        414,
    ),
    "too_many_headers": (
        "GET /v1/models HTTP/1.1\r\nHost: x\r\n"
        + "".join(f"X-H{i}: {SECRET}\r\n" for i in range(200))
        + "\r\n",
        431,
    ),
    "invalid_header_char": (
        f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\x01\r\n\r\n",
        400,
    ),
    "bad_method": (f"G(T /v1/models HTTP/1.1\r\nHost: {SECRET}\r\n\r\n", 400),
    "bad_version": ("GET /v1/models HTTP/9.z\r\nHost: x\r\n\r\n", 400),
    "bad_content_length": (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        400,
    ),
}


@pytest.mark.parametrize("case", sorted(PARSER_CASES))
async def test_parser_refusals_are_openai_errors_without_echo(
    raw_proxy: tuple[str, int],
    case: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Requests aiohttp's parser refuses get an OpenAI error (431 for header size), and neither
    the body nor the log quotes the offending header."""
    request, want = PARSER_CASES[case]
    with caplog.at_level(logging.DEBUG):
        status, head, body = await _raw_exchange(raw_proxy, request.encode("latin-1"))
    assert status == want, body
    assert b"application/json" in head
    err = json.loads(body)["error"]
    codes = {431: "headers_too_large", 414: "uri_too_long", 400: "malformed_http"}
    assert err["code"] == codes[want]
    assert err["type"] == "invalid_request_error"
    assert SECRET[:12].encode() not in body and b"AAAA" not in body
    text = _logs(caplog, capsys)
    assert "http_parse_error" in text
    assert SECRET[:12] not in text and "Traceback" not in text


#: parser refusals on the Anthropic front door's paths (a refused request has no route: its
#: shape comes from the path in its request line)
ANTHROPIC_PARSER_CASES = {
    "unknown_method": ("FOO /v1/messages HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "bad_chunk_size": (
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        400,
    ),
    "length_and_chunked": (
        "POST /v1/messages/count_tokens HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        400,
    ),
    "headers_too_large": (
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Big: " + "A" * 9000 + "\r\n\r\n",
        431,
    ),
}


@pytest.mark.parametrize("case", sorted(ANTHROPIC_PARSER_CASES))
async def test_parser_refusals_on_anthropic_paths_are_anthropic_errors(
    raw_proxy: tuple[str, int], case: str
) -> None:
    """A request to ``/v1/messages`` that aiohttp's parser refuses gets the Anthropic error
    shape, as the route's own errors do; the same request elsewhere gets OpenAI's."""
    request, want = ANTHROPIC_PARSER_CASES[case]
    status, head, body = await _raw_exchange(raw_proxy, request.encode("latin-1"))
    assert status == want, body
    assert b"application/json" in head
    payload = json.loads(body)
    assert payload["type"] == "error", payload
    assert payload["error"]["type"] == "invalid_request_error"
    assert payload["error"]["message"]
    elsewhere = request.replace("/v1/messages/count_tokens", "/v1/chat/completions").replace(
        "/v1/messages", "/v1/chat/completions"
    )
    status, _, body = await _raw_exchange(raw_proxy, elsewhere.encode("latin-1"))
    assert status == want and json.loads(body)["error"]["type"] == "invalid_request_error"
    assert "type" not in json.loads(body)  # (OpenAI's shape: {"error": {...}} alone)


# -- echoed values ---------------------------------------------------------------------------


async def test_huge_model_name_is_not_echoed(
    stack: Stack, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """A multi-megabyte model name gets a short error body and a short log line."""
    body = {"model": "m" * (2 * 1024 * 1024), "messages": [{"role": "user", "content": "hi"}]}
    with caplog.at_level(logging.DEBUG):
        status, payload = await _post(
            stack, "/v1/chat/completions", json.dumps(body).encode(), "application/json"
        )
    assert status in (400, 404)
    assert payload["error"]["param"] == "model"
    assert len(json.dumps(payload)) < 2000
    assert all(len(line) < 4000 for line in _logs(caplog, capsys).splitlines())


async def test_huge_path_is_not_echoed(stack: Stack) -> None:
    """An unknown long path is a short 404."""
    async with aiohttp.ClientSession() as s:
        async with s.get(stack.proxy.make_url("/v1/" + "p" * 6000)) as r:
            assert r.status == 404
            assert len(await r.read()) < 1000


async def test_huge_model_get_is_not_echoed(stack: Stack) -> None:
    """GET /v1/models/<long id> is a short 404."""
    async with aiohttp.ClientSession() as s:
        async with s.get(stack.proxy.make_url("/v1/models/" + "q" * 6000)) as r:
            assert r.status == 404
            assert len(await r.read()) < 1000


# -- slow and abandoned bodies ------------------------------------------------------------------


async def test_slow_body_gets_408(aiohttp_server: ServerFactory) -> None:
    """A client that stops sending its body is answered 408 after body_timeout_s."""
    stack = await start_stack(aiohttp_server, body_timeout_s=0.2)
    host, port = stack.proxy.host, stack.proxy.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model":'
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    writer.close()
    assert head.split(b" ")[1] == b"408"
    assert b"Connection: close" in head


async def _gateway(settings: Settings) -> tuple[GatewayRunner, tuple[str, int]]:
    """The app served by :class:`GatewayRunner` (as ``qwen-proxy serve`` does)."""
    runner = GatewayRunner(make_app(settings))
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, ("127.0.0.1", runner.addresses[0][1])


_LIMIT = 4096  # max_body_bytes of the over-limit tests
#: every route that reads a JSON body, with the error shape it answers in
JSON_ROUTES = {
    "/v1/chat/completions": "openai",
    "/v1/responses": "openai",
    "/v1/messages": "anthropic",
    "/v1/messages/count_tokens": "anthropic",
    "/v1/images/generations": "openai",
    "/v1/videos/generations": "openai",
}


def _over_limit_head(path: str, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: {_LIMIT + 1}\r\n\r\n"
    ).encode()


def _assert_413(head: bytes, body: bytes, shape: str) -> None:
    assert head.startswith(b"HTTP/1.1 413 "), head + body
    assert b"Connection: close" in head
    payload = json.loads(body)
    assert f"limit of {_LIMIT} bytes" in payload["error"]["message"]
    if shape == "anthropic":
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "request_too_large"
    else:
        assert payload["error"]["code"] == "request_too_large"


async def _read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The head and body of one answer (``Content-Length`` framed), 10 s at most."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    return head, await asyncio.wait_for(reader.readexactly(length), 10)


@pytest.fixture
async def small_limit_gateway(aiohttp_server: ServerFactory) -> AsyncIterator[tuple[str, int]]:
    """The proxy served as ``qwen-proxy serve`` does, with ``max_body_bytes`` of ``_LIMIT``
    and a body deadline far beyond the tests' own waits."""
    stack = await start_stack(aiohttp_server)
    upstream = str(stack.replay.make_url("")).rstrip("/")
    settings = Settings(upstream_url=upstream, max_body_bytes=_LIMIT, body_timeout_s=600)
    runner, addr = await _gateway(settings)
    try:
        yield addr
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("path", sorted(JSON_ROUTES))
async def test_a_content_length_over_the_limit_is_a_413_at_once(
    small_limit_gateway: tuple[str, int], path: str
) -> None:
    """A ``Content-Length`` over ``max_body_bytes`` is answered 413 from the header, in the
    route's error shape, with the body not yet sent (it waited for the body, then for
    ``body_timeout_s``, and answered 408)."""
    reader, writer = await asyncio.open_connection(*small_limit_gateway)
    writer.write(_over_limit_head(path) + b'{"model":')
    await writer.drain()
    head, body = await _read_answer(reader)
    writer.close()
    _assert_413(head, body, JSON_ROUTES[path])


@pytest.mark.parametrize("path", sorted(JSON_ROUTES))
async def test_expect_100_continue_over_the_limit_is_a_413_not_a_100(
    small_limit_gateway: tuple[str, int], path: str
) -> None:
    """``Expect: 100-continue`` with a ``Content-Length`` over the limit: the first answer is
    the 413 (RFC 9110 §10.1.1 lets a server answer finally instead of 100), so the client
    never sends the body; it was told ``100 Continue``."""
    reader, writer = await asyncio.open_connection(*small_limit_gateway)
    writer.write(_over_limit_head(path, "Expect: 100-continue\r\n"))
    await writer.drain()
    head, body = await _read_answer(reader)
    writer.close()
    _assert_413(head, body, JSON_ROUTES[path])


async def test_an_over_limit_body_sent_whole_before_reading_still_gets_the_413(
    small_limit_gateway: tuple[str, int],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A client that sends all of its over-limit body before reading (as curl does) still
    gets the 413, now decided before any of the body is read, and the server's FIN, not a
    reset (aiohttp reads the unread body on and drops it)."""
    body = b'{"messages": "' + b"a" * 2_000_000 + b'"}'
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with caplog.at_level(logging.DEBUG):
        reader, writer = await asyncio.open_connection(*small_limit_gateway)
        writer.write(head.encode() + body)
        await asyncio.wait_for(writer.drain(), timeout=10)  # all of it sent, then read
        raw = await asyncio.wait_for(reader.read(), timeout=10)  # until the server's FIN
        writer.close()
    answer, _, payload = raw.partition(b"\r\n\r\n")
    _assert_413(answer, payload, "openai")
    assert "Traceback" not in _logs(caplog, capsys)


async def test_images_edits_is_not_held_to_the_json_body_limit(
    small_limit_gateway: tuple[str, int],
) -> None:
    """/v1/images/edits reads its multipart body part by part, each image under
    ``max_image_bytes``: a body over ``max_body_bytes`` is not refused from its length."""
    image = _part("image", PNG + b"\0" * (2 * _LIMIT), filename="a.png")
    form = _multipart([image, _part("prompt", b"make it blue")])
    reader, writer = await asyncio.open_connection(*small_limit_gateway)
    writer.write(
        (
            "POST /v1/images/edits HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: multipart/form-data; boundary=XyZ\r\n"
            f"Content-Length: {len(form)}\r\n\r\n"
        ).encode()
        + form
    )
    await writer.drain()
    head, body = await _read_answer(reader)
    writer.close()
    assert not head.startswith(b"HTTP/1.1 413 "), head + body


async def test_a_slow_request_head_gets_408_and_the_connection_closes(
    aiohttp_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A client that opens a connection and sends nothing, or part of its request line and
    headers and then nothing, is answered 408 (an error object) after header_timeout_s, and
    the connection closes."""
    stack = await start_stack(aiohttp_server)
    upstream = str(stack.replay.make_url("")).rstrip("/")
    runner, addr = await _gateway(Settings(upstream_url=upstream, header_timeout_s=0.2))
    try:
        with caplog.at_level(logging.DEBUG):
            for partial in (
                b"",
                b"GET /heal",
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0",
            ):
                reader, writer = await asyncio.open_connection(*addr)
                writer.write(partial)
                await writer.drain()
                raw = await asyncio.wait_for(reader.read(), timeout=10)  # until it closes
                writer.close()
                head, _, body = raw.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 408 "), raw
                error = json.loads(body)["error"]
                assert error["code"] == "request_timeout" and "header_timeout_s" in error["message"]
            text = _logs(caplog, capsys)
        assert text.count("client_too_slow") == 3 and "Traceback" not in text
    finally:
        await runner.cleanup()


async def test_the_head_deadline_spares_bodies_and_kept_alive_connections(
    aiohttp_server: ServerFactory,
) -> None:
    """The head deadline covers only the request line and headers: a body that takes longer
    (within body_timeout_s) is read, and a connection kept alive between requests is not
    answered 408 (nothing is armed while it idles)."""
    stack = await start_stack(aiohttp_server)
    upstream = str(stack.replay.make_url("")).rstrip("/")
    runner, addr = await _gateway(
        Settings(upstream_url=upstream, header_timeout_s=0.2, body_timeout_s=10)
    )
    try:
        reader, writer = await asyncio.open_connection(*addr)
        body = json.dumps({"model": "qwen3-max", "messages": [{"role": "user", "content": "x"}]})
        writer.write(
            b"POST /v1/messages/count_tokens HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        await writer.drain()
        for i in range(0, len(body), 10):  # the body trickles in for longer than 0.2 s
            writer.write(body[i : i + 10].encode())
            await writer.drain()
            await asyncio.sleep(0.05)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert head.split(b" ")[1] == b"200", head
        length = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
        await reader.readexactly(length)
        # the connection idles, kept alive: no deadline runs for it
        connections = runner.server.connections if runner.server is not None else []
        assert connections and all(c._head_timer is None for c in connections)  # type: ignore[attr-defined]
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert head.split(b" ")[1] == b"200", head
        writer.close()
    finally:
        await runner.cleanup()


async def test_hangup_during_upload_is_one_log_line(
    stack: Stack, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """A client hanging up mid-body leaves one ``client_gone`` line and no traceback."""
    host, port = stack.proxy.host, stack.proxy.port
    with caplog.at_level(logging.DEBUG):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        await writer.drain()
        # the server says "100 Continue" once the handler is about to read the body
        assert b" 100 " in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(b'{"model":')
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        seen = ""
        for _ in range(100):  # until the line is written, then long enough for a second one
            seen += capsys.readouterr().out
            if "client_gone" in seen or "client_disconnected" in seen:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # a second watcher (hangup_middleware) would log by now
        text = seen + _logs(caplog, capsys)
    hangups = [ln for ln in text.splitlines() if "client_gone" in ln or "client_disconnected" in ln]
    assert len(hangups) == 1 and "client_gone" in hangups[0], text
    assert "Traceback" not in text and "Error handling request" not in text


# -- the Expect header ----------------------------------------------------------------------


async def _expecting(addr: tuple[str, int], path: str, expect: str) -> tuple[int, bytes, bytes]:
    """One POST with ``Expect: <expect>`` and its body sent at once; the answer's status, head
    and body (the connection is closed by the client once the answer is read)."""
    sc = SCENARIO["t2t_answer"]  # a recorded turn: the offline stack can answer it
    body = json.dumps(
        {"model": sc.openai_model, "messages": [{"role": "user", "content": sc.prompt}]}
    )
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: {expect}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        ).encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100 "):  # an interim answer, then the real one
        head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    payload = await reader.readexactly(length)
    writer.close()
    return int(head.split(b" ", 2)[1]), head, payload


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic"), ("/v1/nowhere", "openai")],
)
async def test_an_unknown_expectation_is_a_417_error_object_without_echo(
    raw_proxy: tuple[str, int], path: str, shape: str
) -> None:
    """``Expect`` other than ``100-continue`` is 417 ``expectation_failed`` in the route's
    error shape (on a path no route has too: answered before the app, without
    ``Server-Timing``, as the README says); aiohttp's own answer is plain text quoting the
    header value."""
    status, head, body = await _expecting(raw_proxy, path, f"x-{SECRET}")
    assert status == 417, body
    payload = json.loads(body)
    if shape == "anthropic":
        assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert "`Expect`" in payload["error"]["message"]
    if shape == "openai":
        assert payload["error"]["code"] == "expectation_failed"
    assert b"application/json" in head
    assert (b"Server-Timing: total;dur=" in head) is (path != "/v1/nowhere")
    assert SECRET.encode() not in head + body


@pytest.mark.parametrize("expect", [b"\xdf\xc5", b"100-continue\xff", b"x-\xff" + SECRET.encode()])
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/nowhere"), ("OPTIONS", "/v1/chat/completions"), ("PUT", "/metrics")],
)
async def test_a_non_ascii_expectation_where_no_route_serves_is_a_417_error_object(
    raw_proxy: tuple[str, int],
    method: str,
    path: str,
    expect: bytes,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An unknown path or method with a non-ASCII ``Expect`` value (obs-text, which the HTTP
    parser lets through): aiohttp's own expect handler quotes the value in its answer, encodes
    it as UTF-8 and failed with a 500 and a traceback. Now the same 417 error object as an
    ASCII value gets, quoting nothing."""
    with caplog.at_level(logging.DEBUG):
        reader, writer = await asyncio.open_connection(*raw_proxy)
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
            + b"Expect: "
            + expect
            + b"\r\nContent-Length: 0\r\n\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        body = await reader.readexactly(length)
        writer.close()
        text = _logs(caplog, capsys)
    assert head.startswith(b"HTTP/1.1 417 "), head + body
    assert json.loads(body)["error"]["code"] == "expectation_failed"
    assert b"application/json" in head
    assert SECRET.encode() not in head + body
    assert "Traceback" not in text and "unhandled_error" not in text


async def test_expect_100_continue_where_no_route_serves_is_still_a_404(
    raw_proxy: tuple[str, int],
) -> None:
    """``100-continue`` on a path no route has: the interim answer, then the path's 404 (only
    other expectations are refused there)."""
    status, _, body = await _expecting(raw_proxy, "/v1/nowhere", "100-continue")
    assert status == 404, body
    assert json.loads(body)["error"]["code"] == "not_found"


@pytest.mark.parametrize("expect", ["100-continue", "100-Continue"])
async def test_expect_100_continue_still_gets_its_interim_answer(
    raw_proxy: tuple[str, int], expect: str
) -> None:
    status, _, body = await _expecting(raw_proxy, "/v1/chat/completions", expect)
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"] == (
        SCENARIO["t2t_answer"].expected_content
    )


# -- parameter types ------------------------------------------------------------------------

BAD_PARAMS = [
    ("temperature", "hot"),
    ("temperature", 5),
    ("temperature", True),
    ("temperature", "0.5"),
    ("top_p", 1.5),
    ("stream", "yes"),
    ("stream", 1),
    ("max_tokens", 2.5),
    ("max_tokens", "10"),
    ("n", 2),
    ("stop", 5),
    ("seed", "x"),
    ("presence_penalty", -3),
    ("stream_options", {"include_usage": "yes"}),
    ("model", 7),
    ("enable_thinking", "true"),
    ("response_format", "json"),
    ("response_format", {"type": "yaml"}),
    ("response_format", {"type": "json_schema", "json_schema": "x"}),
    ("reasoning_effort", 5),
    ("metadata", "x"),
    ("metadata", {"k": 1}),
    ("service_tier", 1),
    ("modalities", "text"),
    ("audio", "x"),
    ("prediction", 1),
    ("verbosity", 1),
    ("web_search_options", []),
    ("prompt_cache_key", 1),
    ("safety_identifier", True),
    ("functions", {}),
    ("function_call", 1),
]

#: the ``param`` named when it is not the field itself
_PARAM_NAMED = {
    ("stream_options", "{'include_usage': 'yes'}"): "stream_options.include_usage",
    ("response_format", "{'type': 'yaml'}"): "response_format.type",
    ("response_format", "{'type': 'json_schema', 'json_schema': 'x'}"): (
        "response_format.json_schema"
    ),
    ("metadata", "{'k': 1}"): "metadata.k",
}


@pytest.mark.parametrize(("param", "value"), BAD_PARAMS)
async def test_bad_parameter_type_is_400_with_param(stack: Stack, param: str, value: Any) -> None:
    """A parameter of the wrong type or out of OpenAI's range is a 400 naming it (it does not
    stream, it does not reach the upstream)."""
    body = {"model": "qwen3-max", "messages": [{"role": "user", "content": "hi"}], param: value}
    status, payload = await _post(
        stack, "/v1/chat/completions", json.dumps(body).encode(), "application/json"
    )
    assert status == 400, payload
    assert payload["error"]["param"] == _PARAM_NAMED.get((param, repr(value)), param)
    assert payload["error"]["type"] == "invalid_request_error"
    assert not stack.replay.app[REQUESTS_KEY]


OTHER_APIS: dict[str, tuple[dict[str, Any], list[tuple[str, Any]]]] = {
    "/v1/messages": (
        {
            "model": "claude-3-5-haiku",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "hi"}],
        },
        [
            ("stream", "yes"),
            ("stream", 1),
            ("max_tokens", "50"),
            ("max_tokens", True),
            ("max_tokens", 2.5),
            ("temperature", "hot"),
            ("temperature", 5),
            ("top_k", -1),
            ("model", 7),
            ("stop_sequences", "END"),
            ("thinking", {"type": "enabled", "budget_tokens": "lots"}),
            ("thinking", {"type": "enabled", "budget_tokens": 0}),
            ("thinking", {"type": "enabled", "budget_tokens": True}),
            ("metadata", "u"),
            ("service_tier", 1),
            ("mcp_servers", {}),
        ],
    ),
    "/v1/responses": (
        {"model": "qwen3-max", "input": "hi"},
        [
            ("stream", "yes"),
            ("stream", 1),
            ("max_output_tokens", "50"),
            ("max_output_tokens", True),
            ("temperature", "hot"),
            ("temperature", 5),
            ("top_p", 1.5),
            ("store", "no"),
            ("model", 7),
            ("include", "x"),
            ("include", [1]),
            ("background", "yes"),
            ("max_tool_calls", "3"),
            ("top_logprobs", 50),
            ("prompt_cache_key", 1),
            ("stream_options", "x"),
        ],
    ),
}


@pytest.mark.parametrize(
    ("path", "param", "value"),
    [(path, p, v) for path, (_, cases) in OTHER_APIS.items() for p, v in cases],
)
async def test_the_other_apis_check_types_strictly(
    stack: Stack, path: str, param: str, value: Any
) -> None:
    """/v1/messages and /v1/responses check types as strictly as chat completions: no
    coercion of ``"yes"``, ``"50"`` or ``true``; out-of-range values refused."""
    body = {**OTHER_APIS[path][0], param: value}
    status, payload = await _post(stack, path, json.dumps(body).encode(), "application/json")
    assert status == 400, payload
    message = payload["error"]["message"]
    assert param in message, message
    assert not stack.replay.app[REQUESTS_KEY]


_HI = {"role": "user", "content": "hi"}
NESTED_BAD: dict[str, tuple[str, dict[str, Any], str]] = {
    "chat_text_part_number": (
        "/v1/chat/completions",
        {
            "model": "qwen3-max",
            "messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}],
        },
        "messages[0].content[0].text",
    ),
    "chat_text_part_object": (
        "/v1/chat/completions",
        {
            "model": "qwen3-max",
            "messages": [{"role": "user", "content": [{"type": "text", "text": {}}]}],
        },
        "messages[0].content[0].text",
    ),
    "chat_tool_call_id_number": (
        "/v1/chat/completions",
        {
            "model": "qwen3-max",
            "messages": [
                _HI,
                {
                    **assistant_call("c1", "f", "{}"),
                    "tool_calls": [{**assistant_call("c1", "f", "{}")["tool_calls"][0], "id": 7}],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            ],
        },
        "messages[1].tool_calls[0].id",
    ),
    "chat_tool_call_type_list": (
        "/v1/chat/completions",
        {
            "model": "qwen3-max",
            "messages": [
                _HI,
                {
                    **assistant_call("c1", "f", "{}"),
                    "tool_calls": [
                        {**assistant_call("c1", "f", "{}")["tool_calls"][0], "type": []}
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            ],
        },
        "messages[1].tool_calls[0].type",
    ),
    "messages_text_block_number": (
        "/v1/messages",
        {
            "model": "claude-3-5-haiku",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}],
        },
        "messages",
    ),
    "messages_metadata_user_id": (
        "/v1/messages",
        {
            "model": "claude-3-5-haiku",
            "max_tokens": 20,
            "messages": [_HI],
            "metadata": {"user_id": 7},
        },
        "metadata",
    ),
    "responses_text_format_type": (
        "/v1/responses",
        {"model": "qwen3-max", "input": "hi", "text": {"format": {"type": "yaml"}}},
        "text",
    ),
    "responses_text_format_string": (
        "/v1/responses",
        {"model": "qwen3-max", "input": "hi", "text": {"format": "json"}},
        "text",
    ),
    "responses_input_text_number": (
        "/v1/responses",
        {
            "model": "qwen3-max",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": 7}]}],
        },
        "input",
    ),
}


@pytest.mark.parametrize("case", sorted(NESTED_BAD))
async def test_a_nested_value_of_the_wrong_type_is_a_400(stack: Stack, case: str) -> None:
    """Wrong types inside messages, tool calls and sub-objects are refused as the APIs refuse
    them, naming where (a text part's ``text`` of 7 is not sent as "7", nor dropped)."""
    path, body, param = NESTED_BAD[case]
    status, payload = await _post(stack, path, json.dumps(body).encode(), "application/json")
    assert status == 400, payload
    error = payload["error"]
    assert param in (error.get("param") or "") + error["message"], error
    # no chat was made (the model list may have been read to resolve the model)
    assert [r.path_qs for r in stack.replay.app[REQUESTS_KEY]] in ([], ["/api/models"])


#: media URL hosts no resolver is asked about: the IDNA encoding refuses them
BAD_HOSTS = {"label_over_63": "a" * 64 + ".example", "empty_label": "a..example"}


@pytest.mark.parametrize("case", sorted(BAD_HOSTS))
async def test_a_media_url_host_that_is_no_host_name_is_a_400(stack: Stack, case: str) -> None:
    """A media URL whose host is not a valid host name is refused with a 400, not a 500."""
    part = {"type": "image_url", "image_url": {"url": f"http://{BAD_HOSTS[case]}/a.png"}}
    body = {"model": "qwen3-max", "messages": [{"role": "user", "content": [part]}]}
    status, payload = await _post(
        stack, "/v1/chat/completions", json.dumps(body).encode(), "application/json"
    )
    assert status == 400, payload
    assert payload["error"]["code"] == "media_url_refused"
    assert payload["error"]["param"] == "messages[0].content[0].image_url.url"
    assert "not a valid host name" in payload["error"]["message"]


#: JSON Schemas that are not valid schemas of their draft
INVALID_SCHEMAS: dict[str, dict[str, Any]] = {
    "properties_not_object": {"type": "object", "properties": "true"},
    "unknown_type": {"type": "nonsense"},
    "required_not_array": {"type": "object", "required": "x"},
}
#: where each API takes a tool's schema: (path, body with the schema as {schema}, param)
SCHEMA_SITES: dict[str, tuple[str, Any, str]] = {
    "chat": (
        "/v1/chat/completions",
        lambda schema: {
            "model": "qwen3-max",
            "messages": [_HI],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
        },
        "tools[0].function.parameters",
    ),
    "responses": (
        "/v1/responses",
        lambda schema: {
            "model": "qwen3-max",
            "input": "hi",
            "tools": [{"type": "function", "name": "f", "parameters": schema}],
        },
        "tools[0].parameters",
    ),
    "messages": (
        "/v1/messages",
        lambda schema: {
            "model": "claude-3-5-haiku",
            "max_tokens": 20,
            "messages": [_HI],
            "tools": [{"name": "f", "input_schema": schema}],
        },
        "tools.0.input_schema",
    ),
    "count_tokens": (
        "/v1/messages/count_tokens",
        lambda schema: {
            "model": "claude-3-5-haiku",
            "messages": [_HI],
            "tools": [{"name": "f", "input_schema": schema}],
        },
        "tools.0.input_schema",
    ),
}


@pytest.mark.parametrize("schema", sorted(INVALID_SCHEMAS))
@pytest.mark.parametrize("site", sorted(SCHEMA_SITES))
async def test_an_invalid_tool_schema_is_a_400_on_every_api(
    stack: Stack, site: str, schema: str
) -> None:
    """A tool schema that is not a valid JSON Schema is refused alike by chat, Responses and
    the Anthropic front door (in Anthropic's error shape, naming the field in the message),
    and count_tokens; nothing reaches the site."""
    path, make_body, param = SCHEMA_SITES[site]
    body = json.dumps(make_body(INVALID_SCHEMAS[schema])).encode()
    status, payload = await _post(stack, path, body, "application/json")
    assert status == 400, payload
    if path.startswith("/v1/messages"):
        assert payload["type"] == "error", payload
        assert payload["error"]["type"] == "invalid_request_error"
        assert payload["error"]["message"].startswith(f"{param}: "), payload
        assert "not a valid JSON Schema" in payload["error"]["message"]
    else:
        assert payload["error"]["param"] == param, payload
        assert payload["error"]["type"] == "invalid_request_error"
    assert [r.path_qs for r in stack.replay.app[REQUESTS_KEY]] in ([], ["/api/models"])


async def test_bad_temperature_through_the_sdk(stack: Stack) -> None:
    """The official SDK surfaces the 400 as BadRequestError with ``param``."""
    client = openai.AsyncOpenAI(base_url=str(stack.proxy.make_url("/v1")), api_key="x")
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="qwen3-max",
            messages=[{"role": "user", "content": "hi"}],
            temperature="hot",  # type: ignore[arg-type]
        )
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == "temperature"
    await client.close()


GOOD_IGNORED = [
    ("temperature", 0),
    ("temperature", 1.3),
    ("top_p", 0.9),
    ("max_tokens", 16),
    ("stop", ["\n\n"]),
    ("seed", 42),
    ("presence_penalty", 1),
    ("user", "u-1"),
    ("logit_bias", {"50256": -100}),
    ("response_format", {"type": "json_object"}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
    ("reasoning_effort", "low"),
    ("metadata", {"k": "v"}),
    ("service_tier", "auto"),
    ("modalities", ["text"]),
    ("verbosity", "low"),
    ("prompt_cache_key", "k"),
    ("web_search_options", {}),
]


@pytest.mark.parametrize(("param", "value"), GOOD_IGNORED)
async def test_right_type_values_the_site_ignores_are_accepted(
    stack: Stack, param: str, value: Any
) -> None:
    """Values of the right type that chat.qwen.ai cannot honour stay accepted."""
    body = {
        "model": "qwen3-max",
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        param: value,
    }
    status, payload = await _post(
        stack, "/v1/chat/completions", json.dumps(body).encode(), "application/json"
    )
    assert status == 200, payload
    assert payload["choices"][0]["message"]["content"]


# -- Server-Timing on every answer of the app --------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/healthz", None),
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/no-such-model", None),
        ("GET", "/v1/nowhere", None),
        ("POST", "/v1/chat/completions", b"{not json"),
        ("POST", "/v1/images/generations", b'{"prompt": ""}'),
        ("POST", "/v1/videos/generations", b"{}"),
    ],
)
async def test_server_timing_on_every_answer(
    stack: Stack, method: str, path: str, body: bytes | None
) -> None:
    """Errors, models, health, media routes: each answer carries Server-Timing."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, stack.proxy.make_url(path), data=body, headers=headers) as r,
    ):
        timing = r.headers.get("Server-Timing", "")
    assert re.fullmatch(r"total;dur=\d+\.\d\d", timing), timing


async def test_server_timing_on_chat_keeps_its_split(stack: Stack) -> None:
    """A chat answer keeps its proxy/upstream split."""
    body = {
        "model": "qwen3-max",
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    }
    async with (
        aiohttp.ClientSession() as s,
        s.post(stack.proxy.make_url("/v1/chat/completions"), json=body) as r,
    ):
        assert re.fullmatch(r"proxy;dur=[\d.]+, upstream;dur=[\d.]+", r.headers["Server-Timing"])


async def test_a_key_in_the_path_is_masked_in_the_log(
    aiohttp_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A configured secret pasted into a URL is masked in the error body and in the log line
    that names the path, whatever the logging set-up."""
    key = "sk-pathKEY-0123456789abcdef"
    stack = await start_stack(aiohttp_server, api_keys=[key])
    with caplog.at_level(logging.DEBUG):
        async with (
            aiohttp.ClientSession() as s,
            s.get(
                stack.proxy.make_url(f"/v1/models/{key}"),
                headers={"Authorization": f"Bearer {key}"},
            ) as r,
        ):
            body = await r.text()
    assert r.status == 404 and "pathKEY" not in body
    lines = [ln for ln in _logs(caplog, capsys).splitlines() if "request_failed" in ln]
    assert lines and not any("pathKEY" in ln for ln in lines)


# -- nesting depth --------------------------------------------------------------------------


def _depth(value: Any) -> int:
    """The nesting levels of objects and arrays in ``value`` (a scalar: 0, ``{}``: 1)."""
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((_depth(c) for c in children), default=0)
    return 0


def _nested(levels: int, *, array: bool = False) -> Any:
    """An object (or array) ``levels`` levels deep: ``{"a": {"a": … 1}}``."""
    value: Any = [] if array else 1
    for _ in range(levels - (1 if array else 0)):
        value = [value] if array else {"a": value}
    return value


_CLAUDE = {"model": "claude-3-5-haiku", "max_tokens": 20}
#: per case: (path, the body around a deep value, the ``param`` the refusal names)
DEEP_BODIES: dict[str, tuple[str, Any, str | None]] = {
    "chat_tool_parameters": (
        "/v1/chat/completions",
        lambda deep: {
            "model": "qwen3-max",
            "messages": [_HI],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object", "properties": {"x": deep}},
                    },
                }
            ],
        },
        "tools",
    ),
    "chat_message_extra_field": (
        "/v1/chat/completions",
        lambda deep: {"model": "qwen3-max", "messages": [{**_HI, "zz": deep}]},
        "messages",
    ),
    "chat_array_body": ("/v1/chat/completions", lambda deep: [deep], None),
    "responses_tool_parameters": (
        "/v1/responses",
        lambda deep: {
            "model": "qwen3-max",
            "input": "hi",
            "tools": [{"type": "function", "name": "f", "parameters": deep}],
        },
        "tools",
    ),
    "responses_text_format_schema": (
        "/v1/responses",
        lambda deep: {
            "model": "qwen3-max",
            "input": "hi",
            "text": {"format": {"type": "json_schema", "name": "n", "schema": deep}},
        },
        "text",
    ),
    "responses_input_item_extra_field": (
        "/v1/responses",
        lambda deep: {"model": "qwen3-max", "input": [{**_HI, "zz": deep}]},
        "input",
    ),
    "messages_tool_input_schema": (
        "/v1/messages",
        lambda deep: {
            **_CLAUDE,
            "messages": [_HI],
            "tools": [{"name": "f", "input_schema": {"type": "object", "properties": deep}}],
        },
        "tools",
    ),
    "messages_tool_use_input": (
        "/v1/messages",
        lambda deep: {
            **_CLAUDE,
            "messages": [
                {"role": "user", "content": "w"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": deep}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}],
                },
            ],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        },
        "messages",
    ),
    "count_tokens_tools": (
        "/v1/messages/count_tokens",
        lambda deep: {
            "model": "claude-3-5-haiku",
            "messages": [_HI],
            "tools": [{"name": "f", "input_schema": {"type": "object", "properties": deep}}],
        },
        "tools",
    ),
    "images_extra_field": (
        "/v1/images/generations",
        lambda deep: {"prompt": "x", "zzz": deep},
        "zzz",
    ),
    "videos_extra_field": (
        "/v1/videos/generations",
        lambda deep: {"prompt": "x", "zzz": deep},
        "zzz",
    ),
}


def _deep_body(case: str, depth: int) -> bytes:
    """The body of ``DEEP_BODIES[case]`` nesting exactly ``depth`` levels."""
    build = DEEP_BODIES[case][1]
    array = case == "chat_array_body"
    around = _depth(build(_nested(1, array=array))) - 1
    body = build(_nested(depth - around, array=array))
    assert _depth(body) == depth
    return json.dumps(body).encode()


@pytest.mark.parametrize("case", sorted(DEEP_BODIES))
async def test_a_body_nested_too_deep_is_a_400_before_any_upstream_call(
    stack: Stack, case: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """A body nesting objects and arrays more than ``MAX_JSON_DEPTH`` levels is a 400
    naming the top-level field, in the route's error shape, and nothing is sent upstream
    (past 254 levels orjson could not encode what the gateway stores and answers: a 500 after
    the upstream call, quota spent)."""
    path, _, param = DEEP_BODIES[case]
    for depth in (MAX_JSON_DEPTH + 1, 300):
        with caplog.at_level(logging.DEBUG):
            status, payload = await _post(stack, path, _deep_body(case, depth), "application/json")
        assert status == 400, payload
        error = payload["error"]
        assert error["type"] == "invalid_request_error"
        assert f"more than {MAX_JSON_DEPTH} levels deep" in error["message"], error
        if path.startswith("/v1/messages"):
            assert payload["type"] == "error"
            assert param is None or f"`{param}`" in error["message"]
        else:
            assert error["param"] == param
        assert not stack.requests
    assert "Traceback" not in _logs(caplog, capsys)


@pytest.mark.parametrize("case", sorted(DEEP_BODIES))
async def test_a_body_nested_to_the_limit_is_not_refused_for_its_depth(
    stack: Stack, case: str
) -> None:
    """At exactly ``MAX_JSON_DEPTH`` levels the body is judged on its merits (whatever the
    answer, it is not the depth refusal, and not a 500)."""
    path = DEEP_BODIES[case][0]
    status, payload = await _post(stack, path, _deep_body(case, MAX_JSON_DEPTH), "application/json")
    assert status < 500, payload
    assert "levels deep" not in payload["error"]["message"] if status >= 400 else True


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param(json.dumps(_nested(MAX_JSON_DEPTH + 1), separators=(",", ":")), id="too_deep"),
        pytest.param("[" * 20_000 + "]" * 20_000, id="past_the_recursion_limit"),
    ],
)
async def test_call_arguments_text_nested_too_deep_is_sent_as_text(
    stack: Stack,
    arguments: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A past call's ``arguments`` (JSON text inside a string, which the body's depth check
    does not look into) nesting more than ``MAX_JSON_DEPTH`` levels is sent upstream
    verbatim, not decoded and re-encoded; past the interpreter's recursion limit decoding it
    raised RecursionError, a 500."""
    body = {
        "model": "qwen3-max",
        "messages": [
            _HI,
            assistant_call("c1", "f", arguments),
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    }
    with caplog.at_level(logging.DEBUG):
        status, payload = await _post(
            stack, "/v1/chat/completions", json.dumps(body).encode(), "application/json"
        )
    assert status < 500, payload
    (sent,) = stack.upstream("/api/v2/chat/completions")
    prompt = json.loads(sent.body)["messages"][0]["content"]
    assert f'"arguments": {arguments}}}' in prompt
    assert "Traceback" not in _logs(caplog, capsys)
