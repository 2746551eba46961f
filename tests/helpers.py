"""Shared helpers for the end-to-end tests: the replay server + proxy stack and SDK collectors.

A :class:`Stack` is the replay server (serving ``cassettes/``) with the proxy in front of it,
both started on loopback with pytest-aiohttp's ``aiohttp_server`` fixture. The collectors run one
chat completion through the official ``openai`` SDK (async or sync, streamed or not) and fold
the answer into an :class:`Outcome`: content, reasoning, search-source URLs, the raw chunks and
the error the SDK raised mid-stream, if any.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import openai
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.app import make_app
from proxy.config import Settings
from proxy.qwen.translate import Translator
from recorder.cassette import Cassette, load_all
from recorder.replay import REQUESTS_KEY, Fault, ReceivedRequest, make_replay_app
from recorder.synthetic import SCENARIOS, Scenario

REPO_ROOT = Path(__file__).resolve().parents[1]
CASSETTES_DIR = REPO_ROOT / "cassettes"

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]

SCENARIO: dict[str, Scenario] = {s.name: s for s in SCENARIOS}
"""Every synthetic scenario by name."""

SUCCESS_SCENARIOS: tuple[str, ...] = tuple(
    s.name for s in SCENARIOS if s.expected_status == 200 and s.openai_model
)
"""Chat scenarios the proxy must answer with HTTP 200 (the models list is not a chat)."""

ERROR_SCENARIOS: tuple[str, ...] = tuple(s.name for s in SCENARIOS if s.expected_status != 200)
"""Chat scenarios the proxy must answer with an error."""

COMPLETIONS_PATH = "/api/v2/chat/completions"
CHATS_NEW_PATH = "/api/v2/chats/new"


#: the model list of :func:`site_app`: one t2t model
SITE_MODELS = {"data": [{"id": "qwen3-max", "info": {"meta": {"chat_type": ["t2t"]}}}]}


def site_app(
    completion: Callable[[web.Request], Awaitable[web.StreamResponse]], *, chat_id: str = "c1"
) -> web.Application:
    """A minimal chat.qwen.ai for one scripted turn: ``GET /api/models`` (:data:`SITE_MODELS`),
    ``chats/new`` answering ``chat_id``, the stop call, and ``completion`` for the completion."""

    async def models(_: web.Request) -> web.Response:
        return web.json_response(SITE_MODELS)

    async def new_chat(_: web.Request) -> web.Response:
        return web.json_response({"success": True, "data": {"id": chat_id}})

    async def stop(_: web.Request) -> web.Response:
        return web.json_response({"success": True, "data": {}})

    app = web.Application()
    app.router.add_get("/api/models", models)
    app.router.add_post("/api/v2/chats/new", new_chat)
    app.router.add_post("/api/v2/chat/completions", completion)
    app.router.add_post("/api/v2/chat/completions/stop", stop)
    return app


@functools.cache
def cassettes() -> tuple[Cassette, ...]:
    """The repository's cassettes, loaded once per test session."""
    return tuple(load_all([CASSETTES_DIR]))


def cassette(name: str) -> Cassette:
    """The cassette named ``name``."""
    return next(c for c in cassettes() if c.name == name)


def completion_interaction_body(name: str) -> str:
    """The recorded response body of scenario ``name``'s completions request."""
    inter = next(i for i in cassette(name).interactions if COMPLETIONS_PATH in i.uri)
    return inter.response_body


def last_usage(name: str) -> tuple[int, int]:
    """``(input_tokens, output_tokens)`` of the last usage object in the recorded stream."""
    found: tuple[int, int] | None = None
    for line in completion_interaction_body(name).splitlines():
        if not line.startswith("data:"):
            continue
        try:
            frame = json.loads(line[5:])
        except json.JSONDecodeError:
            continue
        usage = frame.get("usage") if isinstance(frame, dict) else None
        if isinstance(usage, dict) and "input_tokens" in usage:
            found = (usage["input_tokens"], usage["output_tokens"])
    assert found is not None, f"{name}: no usage in the cassette"
    return found


@dataclass
class Stack:
    """The replay server and the proxy in front of it, both on loopback."""

    replay: TestServer
    proxy: TestServer

    @property
    def base_url(self) -> str:
        """The proxy's OpenAI base URL (``…/v1``)."""
        return str(self.proxy.make_url("/v1"))

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request the replay server received so far, in order."""
        return self.replay.app[REQUESTS_KEY]

    def upstream(self, path: str) -> list[ReceivedRequest]:
        """The received requests whose path (without query) is ``path``."""
        return [r for r in self.requests if r.path_qs.split("?", 1)[0] == path]

    def url(self, path: str) -> str:
        """An absolute URL on the proxy."""
        return str(self.proxy.make_url(path))

    def async_client(self, api_key: str = "test") -> openai.AsyncOpenAI:
        """An async SDK client for the proxy (no retries); use it with ``async with``."""
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key, max_retries=0)

    def sync_client(self, api_key: str = "test") -> openai.OpenAI:
        """A sync SDK client for the proxy (no retries); run it in a thread, use ``with``."""
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0)


async def start_stack(
    aiohttp_server: ServerFactory, *, fault: str | Fault | None = None, **settings: Any
) -> Stack:
    """Start the replay server (``speed=0``, optional ``fault``) and a proxy for it.

    ``settings`` are extra :class:`proxy.config.Settings` fields (``tokens``, ``api_keys``…).
    """
    if isinstance(fault, str):
        fault = Fault.parse(fault)
    replay = await aiohttp_server(make_replay_app(list(cassettes()), speed=0, fault=fault))
    upstream = str(replay.make_url("")).rstrip("/")
    proxy = await aiohttp_server(make_app(Settings(upstream_url=upstream, **settings)))
    return Stack(replay=replay, proxy=proxy)


async def media_stack(aiohttp_server: ServerFactory, **settings: Any) -> Stack:
    """Replay server + proxy whose CDN and object store are the replay server (offline layout),
    with instant video polling; ``settings`` override those and add others."""
    replay = await aiohttp_server(make_replay_app(list(cassettes()), speed=0))
    base = str(replay.make_url("")).rstrip("/")
    options: dict[str, Any] = {
        "upstream_url": base,
        "media_base_url": base,
        "object_store_url": base,
        "video_poll_interval_s": 0,
        "video_poll_max_interval_s": 0,
        **settings,
    }
    proxy = await aiohttp_server(make_app(Settings(**options)))
    return Stack(replay=replay, proxy=proxy)


@contextlib.asynccontextmanager
async def raw_site(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A raw asyncio server on a free loopback port whose connections ``handle`` answers byte
    by byte (a site that writes what no HTTP library would); yields its base URL."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


# -- collecting SDK answers ----------------------------------------------------------------------


def extra(obj: Any, name: str) -> Any:
    """A field of an SDK object, typed or extra (``model_extra``), or ``None``."""
    value = getattr(obj, name, None)
    if value is None:
        value = (getattr(obj, "model_extra", None) or {}).get(name)
    return value


def citation_urls(annotations: Any) -> list[str]:
    """The ``url_citation`` URLs of an ``annotations`` list (SDK objects or plain dicts)."""
    urls: list[str] = []
    for a in annotations or []:
        if isinstance(a, dict):
            assert a["type"] == "url_citation", a
            urls.append(a["url_citation"]["url"])
        else:
            assert a.type == "url_citation", a
            urls.append(a.url_citation.url)
    return urls


@dataclass
class Outcome:
    """One completion as the client saw it."""

    content: str = ""
    reasoning: str | None = None
    sources: list[str] = field(default_factory=list)
    chunks: list[Any] = field(default_factory=list)
    error: openai.APIError | None = None
    completion: Any = None

    def add_chunk(self, chunk: Any) -> None:
        """Fold one streamed ``ChatCompletionChunk`` in."""
        self.chunks.append(chunk)
        if not chunk.choices:
            return
        delta = chunk.choices[0].delta
        if delta.content:
            self.content += delta.content
        reasoning = extra(delta, "reasoning_content")
        if reasoning:
            self.reasoning = (self.reasoning or "") + reasoning
        self.sources.extend(citation_urls(extra(delta, "annotations")))

    @classmethod
    def of_completion(cls, completion: Any) -> Outcome:
        """The outcome of a non-streamed ``ChatCompletion``."""
        message = completion.choices[0].message
        return cls(
            content=message.content or "",
            reasoning=extra(message, "reasoning_content"),
            sources=citation_urls(message.annotations),
            completion=completion,
        )


def assistant_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """An OpenAI assistant message that made one function call (``arguments``: JSON text)."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ],
    }


def messages_for(prompt: str) -> list[dict[str, str]]:
    """A one-user-message conversation."""
    return [{"role": "user", "content": prompt}]


async def astream(client: openai.AsyncOpenAI, model: str, prompt: str, **kw: Any) -> Outcome:
    """Stream one completion with the async SDK; a mid-stream error lands in ``error``."""
    out = Outcome()
    stream = await client.chat.completions.create(
        model=model, messages=messages_for(prompt), stream=True, **kw
    )
    try:
        async for chunk in stream:
            out.add_chunk(chunk)
    except openai.APIError as exc:
        out.error = exc
    finally:
        await stream.close()
    return out


async def acreate(client: openai.AsyncOpenAI, model: str, prompt: str, **kw: Any) -> Outcome:
    """One non-streamed completion with the async SDK."""
    completion = await client.chat.completions.create(
        model=model, messages=messages_for(prompt), **kw
    )
    return Outcome.of_completion(completion)


def sstream(client: openai.OpenAI, model: str, prompt: str, **kw: Any) -> Outcome:
    """Stream one completion with the sync SDK; a mid-stream error lands in ``error``."""
    out = Outcome()
    stream = client.chat.completions.create(
        model=model, messages=messages_for(prompt), stream=True, **kw
    )
    try:
        for chunk in stream:
            out.add_chunk(chunk)
    except openai.APIError as exc:
        out.error = exc
    finally:
        stream.close()
    return out


def screate(client: openai.OpenAI, model: str, prompt: str, **kw: Any) -> Outcome:
    """One non-streamed completion with the sync SDK."""
    completion = client.chat.completions.create(model=model, messages=messages_for(prompt), **kw)
    return Outcome.of_completion(completion)


def error_object(exc: openai.APIError) -> dict[str, Any]:
    """The OpenAI ``error`` object an SDK exception carries (``body`` may be wrapped or not)."""
    body = exc.body
    assert isinstance(body, dict), f"no JSON error body: {body!r}"
    inner = body.get("error", body)
    assert isinstance(inner, dict)
    return inner


def sse_data(raw: bytes) -> list[str]:
    """The ``data:`` payloads of a raw SSE body, in order."""
    text = raw.decode("utf-8")
    return [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]


def fake_jwt(subject: str) -> str:
    """An obviously fake JWT for redaction tests: ``alg: none``, a ``fake`` claim, no signature.

    It has a real JWT's shape (three base64url parts starting ``eyJ``), so the redactors must
    catch it, and is built at run time so no token-like literal sits in the repository.
    """
    import base64
    import json

    def part(obj: object) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signature = base64.urlsafe_b64encode(f"not-a-signature-{subject}".encode()).rstrip(b"=")
    return ".".join(
        [
            part({"alg": "none", "typ": "JWT"}),
            part({"sub": f"fake-{subject}", "fake": True}),
            signature.decode(),
        ]
    )


def stream_reader() -> aiohttp.StreamReader:
    """An empty :class:`aiohttp.StreamReader` fed by the test (``feed_data``, ``feed_eof``), as
    an upstream response's ``content``."""
    protocol = SimpleNamespace(
        connected=True,
        _reading_paused=False,
        pause_reading=lambda: None,
        resume_reading=lambda **_: None,
    )
    return aiohttp.StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]


class StubBody:
    """An upstream body as the relay reads it (``readany``): the chunks one per read, then
    ``b""`` at the end."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)

    async def readany(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


class StubChat:
    """What :mod:`proxy.relay` reads of an :class:`~proxy.service.OpenChat`, for relay tests
    without an upstream: ``chunks`` exactly as given, one per read; ``read_watch`` (a
    :class:`~proxy.qwen.client.ReadWatch` or a stand-in with ``waiting``) if any."""

    def __init__(self, chunks: list[bytes], *, read_watch: Any = None) -> None:
        self.response = SimpleNamespace(
            headers={"Content-Type": "text/event-stream"}, content=StubBody(chunks)
        )
        self.prelude: list[bytes] = []
        self.read_watch = read_watch
        self.upstream_wait_s = 0.0
        self.upstream = "stub"
        self.route = SimpleNamespace(model="m", chat_type="t2t")
        self.account = SimpleNamespace(label="stub")
        self.on_answer = None

    def translator(self, reasoning: Any = "field", **kw: Any) -> Translator:
        return Translator(reasoning=reasoning, native_tools=kw.get("native_tools", False))

    def committed(self) -> None:
        self.commits = getattr(self, "commits", 0) + 1


# -- what broken proxies send (the conformance harness's tests) ---------------------------------


def byte_length_diffed(pieces: list[str]) -> list[str]:
    """``pieces`` as a proxy that turns growing snapshots into deltas by cutting each at the
    previous snapshot's UTF-8 byte length (not its character count) would send them."""
    out, snap, prev = [], "", ""
    for p in pieces:
        snap += p
        out.append(snap[len(prev.encode()) :])
        prev = snap
    return out


def openai_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    """One ``data: {chat.completion.chunk}`` SSE event carrying ``delta`` (and
    ``finish_reason``)."""
    obj = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(obj)}\n\n".encode()
