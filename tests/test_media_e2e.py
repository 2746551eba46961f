"""End to end for images, video and uploads: the openai SDK -> the proxy -> the replay server.

The replay server plays ``cassettes/`` (``recorder.synthetic_media``) and stands in for the CDN
and the object store too: the proxy runs with ``media_base_url`` and ``object_store_url`` set to
it, as offline mode does, so every image URL a client gets is fetched here and checked to be the
cassette's PNG, and every upload is checked byte for byte. Each failure scenario must give its
OpenAI error and status, never a ``null`` or empty image link.
"""

from __future__ import annotations

import base64
import json
import socket
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from helpers import (
    CASSETTES_DIR,
    COMPLETIONS_PATH,
    ServerFactory,
    Stack,
    error_object,
    media_stack,
)

from proxy.app import make_app
from proxy.config import Settings
from recorder.replay import UPLOADS_KEY
from recorder.synthetic_media import (
    BY_NAME,
    STS_GRANT,
    image_bytes,
    png,
)

PNG_IN = png(24, 24, lambda x, y: (x * 10, 200, y * 10))
"""The picture clients send (a data: URI, a URL of the loopback server, an edit's source)."""

T2I = BY_NAME["media_t2i"]
EDIT = BY_NAME["media_image_edit"]
VISION = BY_NAME["media_vision_chat"]
T2V = BY_NAME["media_t2v"]


@pytest.fixture
async def stack(aiohttp_server: ServerFactory) -> Stack:
    """The media stack with default limits and guard."""
    return await media_stack(aiohttp_server)


@pytest.fixture
async def pictures(aiohttp_server: ServerFactory) -> TestServer:
    """A loopback web server: /pic.png (PNG_IN), /page (HTML), /big.png (200 KB)."""

    async def pic(_: web.Request) -> web.Response:
        return web.Response(body=PNG_IN, content_type="image/png")

    async def page(_: web.Request) -> web.Response:
        return web.Response(text="<html>hi</html>", content_type="text/html")

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=png(256, 256, lambda x, y: (x, y, 0)), content_type="image/png")

    app = web.Application()
    app.router.add_get("/pic.png", pic)
    app.router.add_get("/page", page)
    app.router.add_get("/big.png", big)
    return await aiohttp_server(app)


async def fetch(url: str) -> tuple[int, str, bytes]:
    """GET ``url``: status, content type, body."""
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


def upstream_body(stack: Stack, path: str = COMPLETIONS_PATH) -> dict[str, Any]:
    """The JSON body of the last request the replay server got on ``path``."""
    return json.loads(stack.upstream(path)[-1].body)


def data_uri(raw: bytes, ctype: str = "image/png") -> str:
    return f"data:{ctype};base64," + base64.b64encode(raw).decode()


# -- image generation ----------------------------------------------------------------------------


async def test_images_generate_url_is_a_fetchable_png(stack: Stack) -> None:
    """images.generate returns a URL (the replay server offline) that serves the cassette PNG."""
    async with stack.async_client() as client:
        res = await client.images.generate(model="qwen3-max-image", prompt=T2I.prompt)
    (img,) = res.data
    assert img.url and img.url.startswith(str(stack.replay.make_url("/output/")))
    assert img.b64_json is None
    status, ctype, body = await fetch(img.url)
    assert (status, ctype) == (200, "image/png")
    assert body == image_bytes("media_t2i") and body.startswith(b"\x89PNG\r\n\x1a\n")
    sent = upstream_body(stack)
    assert (sent["stream"], sent["version"], sent["size"]) == (True, "2.1", "1:1")
    assert sent["messages"][0]["chat_type"] == "t2i"
    assert upstream_body(stack, "/api/v2/chats/new")["chat_type"] == "t2i"


async def test_images_generate_b64_json(stack: Stack) -> None:
    """response_format=b64_json: the proxy downloads the image; it decodes to the PNG."""
    async with stack.async_client() as client:
        res = await client.images.generate(
            prompt=T2I.prompt, model="dall-e-3", response_format="b64_json", size="1792x1024"
        )
    (img,) = res.data
    assert img.url is None and img.b64_json
    assert base64.b64decode(img.b64_json) == image_bytes("media_t2i")
    assert upstream_body(stack)["size"] == "16:9"  # OpenAI size mapped (§6.1)
    assert upstream_body(stack)["model"] == "qwen3-max"  # dall-e-3 -> the image_model setting


async def test_images_generate_n2_makes_two_turns(stack: Stack) -> None:
    """n=2 gives two images from two upstream turns (one image per turn, §6.1)."""
    async with stack.async_client() as client:
        res = await client.images.generate(model="qwen3-max", prompt=T2I.prompt, n=2)
    assert len(res.data) == 2 and all(d.url for d in res.data)
    assert len(stack.upstream(COMPLETIONS_PATH)) == 2
    for d in res.data:
        assert (await fetch(str(d.url)))[2] == image_bytes("media_t2i")


#: (field, value) pairs /v1/images/generations refuses: the types and values of OpenAI's API,
#: strictly (no coercion of "2", 2.0 or true to an integer), and the gateway's n of 1-4
IMAGES_BAD: list[tuple[str, Any]] = [
    ("n", "2"),
    ("n", 2.0),
    ("n", True),
    ("n", 0),
    ("n", 5),
    ("prompt", 7),
    ("prompt", ""),
    ("prompt", " "),  # only whitespace: refused as chat refuses a message with no text
    ("prompt", "\t\n "),
    ("model", 7),
    ("size", 1024),
    ("response_format", "png"),
    ("quality", "ultra"),
    ("quality", 1),
    ("style", 5),
    ("style", "bright"),
    ("output_format", "gif"),
    ("background", 7),
    ("background", "none"),
    ("moderation", "high"),
    ("output_compression", 101),
    ("output_compression", "50"),
    ("output_compression", 50.0),
    ("user", 5),
]


@pytest.mark.parametrize(("field", "value"), IMAGES_BAD)
async def test_images_generate_checks_types_strictly(stack: Stack, field: str, value: Any) -> None:
    """A wrong type or value is a 400 naming the field, and no image is asked for."""
    body = {"model": "qwen3-max-image", "prompt": T2I.prompt, field: value}
    async with aiohttp.ClientSession() as s:
        async with s.post(stack.url("/v1/images/generations"), json=body) as r:
            status, payload = r.status, await r.json()
    assert status == 400, payload
    assert payload["error"]["param"] == field, payload
    assert payload["error"]["type"] == "invalid_request_error"
    assert not stack.upstream(COMPLETIONS_PATH)


#: OpenAI's documented values of the fields the site has no slot for: accepted, then ignored
IMAGES_IGNORED: list[tuple[str, Any]] = [
    *[("quality", q) for q in ("standard", "hd", "low", "medium", "high", "auto")],
    *[("style", s) for s in ("vivid", "natural")],
    *[("output_format", f) for f in ("png", "jpeg", "webp")],
    *[("background", b) for b in ("transparent", "opaque", "auto")],
    *[("moderation", m) for m in ("low", "auto")],
    ("output_compression", 0),
    ("output_compression", 100),
    ("user", "u-1"),
]


@pytest.mark.parametrize(("field", "value"), IMAGES_IGNORED)
async def test_images_generate_accepts_openai_values(stack: Stack, field: str, value: Any) -> None:
    """Each documented value is accepted and the image is generated as without it."""
    async with stack.async_client() as client:
        res = await client.images.generate(
            model="qwen3-max-image", prompt=T2I.prompt, extra_body={field: value}
        )
    (img,) = res.data
    assert img.url and (await fetch(img.url))[2] == image_bytes("media_t2i")
    assert field not in upstream_body(stack)


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_image_model_answers_markdown_image(stack: Stack, stream: bool) -> None:
    """A -image chat model answers ![image](<url>) with a real, fetchable PNG URL."""
    async with stack.async_client() as client:
        if stream:
            chunks = await client.chat.completions.create(
                model="qwen3-max-image",
                messages=[{"role": "user", "content": T2I.prompt}],
                stream=True,
            )
            content = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
        else:
            done = await client.chat.completions.create(
                model="qwen3-max-image", messages=[{"role": "user", "content": T2I.prompt}]
            )
            content = done.choices[0].message.content or ""
    assert content.startswith("![image](http") and content.endswith(")")
    assert "null" not in content and "Planning" not in content
    url = content[len("![image](") : -1]
    assert (await fetch(url))[2] == image_bytes("media_t2i")


async def test_models_list_offers_media_variants(stack: Stack) -> None:
    """models.list() shows -image, -image-edit and -video where the model supports them."""
    async with stack.async_client() as client:
        ids = {m.id async for m in client.models.list()}
    assert {"qwen3-max-image", "qwen3-max-image-edit", "qwen3-max-video"} <= ids
    assert "qwen3-coder-plus-image" not in ids


# -- image edit ----------------------------------------------------------------------------------


async def test_images_edit_returns_the_edited_image_not_the_source(stack: Stack) -> None:
    """images.edit uploads the source (bytes kept by the object store) and returns the edit."""
    async with stack.async_client() as client:
        res = await client.images.edit(
            model="qwen3-max-image-edit",
            image=("square.png", PNG_IN, "image/png"),
            prompt=EDIT.prompt,
        )
    (img,) = res.data
    assert img.url and STS_GRANT["file_url"].split("/", 3)[3] not in img.url
    assert (await fetch(img.url))[2] == image_bytes("media_image_edit")
    (stored,) = stack.replay.app[UPLOADS_KEY]
    assert stored.body == PNG_IN and stored.content_type == "image/png"
    (entry,) = upstream_body(stack)["messages"][0]["files"]
    assert entry["url"] == STS_GRANT["file_url"] and entry["file_class"] == "vision"
    assert upstream_body(stack)["messages"][0]["chat_type"] == "image_edit"


#: form fields /v1/images/edits refuses: a form's values are text, so "2" is the number 2 there,
#: but text that is no number, or a value OpenAI does not document, is a 400 naming the field
EDITS_BAD: list[tuple[str, str]] = [
    ("n", "two"),
    ("n", "0"),
    ("quality", "ultra"),
    ("output_format", "gif"),
]


@pytest.mark.parametrize(("field", "value"), EDITS_BAD)
async def test_images_edit_checks_its_form_fields(stack: Stack, field: str, value: str) -> None:
    """A bad form field is a 400 naming it; nothing is uploaded or asked for."""
    async with stack.async_client() as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.images.edit(
                model="qwen3-max-image-edit",
                image=("square.png", PNG_IN, "image/png"),
                prompt=EDIT.prompt,
                extra_body={field: value},
            )
    assert error_object(info.value)["param"] == field
    assert not stack.replay.app[UPLOADS_KEY] and not stack.upstream(COMPLETIONS_PATH)


#: image files /v1/images/edits refuses, by form field: each 400 (413) names the field
EDITS_BAD_IMAGES: list[tuple[str, bytes, int]] = [
    ("image", b"hello world", 400),
    ("image[]", b"hello world", 400),
    ("image", b"", 400),
    ("image", png(256, 256, lambda x, y: (x, y, 0)), 413),
]


@pytest.mark.parametrize(("field", "data", "status"), EDITS_BAD_IMAGES)
async def test_images_edit_names_the_field_of_a_bad_image(
    aiohttp_server: ServerFactory, field: str, data: bytes, status: int
) -> None:
    """Bytes that are not a PNG although they say so, an empty file, an image over the limit:
    the error names the form field (``image`` or ``image[]``); nothing is uploaded."""
    stack = await media_stack(aiohttp_server, max_image_bytes=50_000)
    form = aiohttp.FormData()
    form.add_field("model", "qwen3-max-image-edit")
    form.add_field("prompt", EDIT.prompt)
    form.add_field(field, data, filename="square.png", content_type="image/png")
    async with aiohttp.ClientSession() as s, s.post(stack.url("/v1/images/edits"), data=form) as r:
        got, payload = r.status, await r.json()
    assert got == status, payload
    assert payload["error"]["param"] == field, payload
    assert not stack.replay.app[UPLOADS_KEY] and not stack.upstream(COMPLETIONS_PATH)


async def test_images_edit_reads_n_and_quality_from_the_form(stack: Stack) -> None:
    """``n`` arrives as the text "2" in a form: two edits; ``quality`` "high" is accepted."""
    async with stack.async_client() as client:
        res = await client.images.edit(
            model="qwen3-max-image-edit",
            image=("square.png", PNG_IN, "image/png"),
            prompt=EDIT.prompt,
            n=2,
            extra_body={"quality": "high"},
        )
    assert len(res.data) == 2 and len(stack.upstream(COMPLETIONS_PATH)) == 2


async def test_chat_image_edit_model_needs_an_image(stack: Stack) -> None:
    """An -image-edit chat without an image part is a clear 400, not an upstream call."""
    async with stack.async_client() as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model="qwen3-max-image-edit", messages=[{"role": "user", "content": EDIT.prompt}]
            )
    assert "image_url" in error_object(info.value)["message"]
    assert not stack.upstream(COMPLETIONS_PATH)


# -- multimodal input ----------------------------------------------------------------------------


def vision_messages(url: str) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": VISION.prompt},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


def assert_uploaded(stack: Stack, raw: bytes) -> None:
    """One STS grant, one signed PUT holding ``raw``, and the §7.4 entry in files[]."""
    sts = upstream_body(stack, "/api/v2/files/getstsToken")
    assert (sts["filesize"], sts["filetype"]) == (str(len(raw)), "image")
    (stored,) = stack.replay.app[UPLOADS_KEY]
    assert stored.body == raw
    assert stored.path == f"/{STS_GRANT['bucketname']}/{STS_GRANT['file_path']}"
    assert stored.headers["Authorization"].startswith(f"OSS {STS_GRANT['access_key_id']}:")
    assert stored.headers["x-oss-security-token"] == STS_GRANT["security_token"]
    msg = upstream_body(stack)["messages"][0]
    assert msg["content"] == VISION.prompt
    (entry,) = msg["files"]
    assert (entry["type"], entry["file_class"], entry["status"]) == ("image", "vision", "uploaded")
    assert entry["id"] == STS_GRANT["file_id"] and entry["url"] == STS_GRANT["file_url"]
    assert entry["file"]["meta"]["size"] == len(raw)


async def assert_vision_chat_uploads(stack: Stack, url: str) -> None:
    """A chat whose image part is ``url`` gets the vision answer, and the image (``PNG_IN``)
    is uploaded as :func:`assert_uploaded` checks."""
    async with stack.async_client() as client:
        done = await client.chat.completions.create(
            model="qwen3-max",
            messages=vision_messages(url),  # type: ignore[arg-type]
        )
    assert done.choices[0].message.content == VISION.expected_content
    assert_uploaded(stack, PNG_IN)


async def test_chat_with_a_data_uri_image_uploads_it(stack: Stack) -> None:
    """A data: URI image part is uploaded byte for byte and referenced in files[]."""
    await assert_vision_chat_uploads(stack, data_uri(PNG_IN))


async def test_chat_with_an_upper_case_data_uri_uploads_it(stack: Stack) -> None:
    """``DATA:IMAGE/PNG;BASE64,…``: URI schemes are case-insensitive (RFC 3986 §3.1)."""
    upper = "DATA:IMAGE/PNG;BASE64," + base64.b64encode(PNG_IN).decode()
    await assert_vision_chat_uploads(stack, upper)


async def test_chat_with_an_upper_case_http_url_uploads_it(
    aiohttp_server: ServerFactory, pictures: TestServer
) -> None:
    """``HTTP://…`` is fetched like ``http://…`` (loopback, allowed in this test)."""
    stack = await media_stack(aiohttp_server, allow_private_fetch=True)
    url = str(pictures.make_url("/pic.png")).replace("http://", "HTTP://", 1)
    await assert_vision_chat_uploads(stack, url)


async def test_chat_with_an_http_image_uploads_it(
    aiohttp_server: ServerFactory, pictures: TestServer
) -> None:
    """An http image URL (loopback, allowed in this test) is fetched and uploaded unchanged."""
    stack = await media_stack(aiohttp_server, allow_private_fetch=True)
    async with stack.async_client() as client:
        done = await client.chat.completions.create(
            model="qwen3-max",
            messages=vision_messages(str(pictures.make_url("/pic.png"))),  # type: ignore[arg-type]
            stream=True,
        )
        text = "".join([c.choices[0].delta.content or "" async for c in done if c.choices])
    assert text == VISION.expected_content
    assert_uploaded(stack, PNG_IN)


async def test_guard_refuses_loopback_urls_by_default(stack: Stack, pictures: TestServer) -> None:
    """By default a loopback image URL is refused with a clear 400 before any upstream call."""
    async with stack.async_client() as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model="qwen3-max",
                messages=vision_messages(str(pictures.make_url("/pic.png"))),  # type: ignore[arg-type]
            )
    err = error_object(info.value)
    assert err["code"] == "media_url_refused" and "127.0.0.1" in err["message"]
    assert not stack.upstream("/api/v2/files/getstsToken") and not stack.upstream(COMPLETIONS_PATH)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/big.png", 413, "media_too_large"),
        ("/page", 400, "media_fetch_failed"),
        ("/missing.png", 400, "media_fetch_failed"),
    ],
)
async def test_fetched_urls_are_size_and_type_checked(
    aiohttp_server: ServerFactory, pictures: TestServer, path: str, status: int, code: str
) -> None:
    """Beyond the image limit: 413; HTML where an image is expected, or a 404: 400."""
    stack = await media_stack(aiohttp_server, allow_private_fetch=True, max_image_bytes=50_000)
    async with stack.async_client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(
                model="qwen3-max",
                messages=vision_messages(str(pictures.make_url(path))),  # type: ignore[arg-type]
            )
    assert info.value.status_code == status and error_object(info.value)["code"] == code
    assert not stack.replay.app[UPLOADS_KEY]


BAD_PNG = "data:image/png;base64,@@@@"
"""A data: URI whose base64 is malformed."""

_TEXT_X = {"type": "text", "text": "x"}


def _chat(*parts: dict[str, Any], before: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {
        "model": "qwen3-max",
        "messages": [*before, {"role": "user", "content": [_TEXT_X, *parts]}],
    }


def _image_block(data: str) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}


#: media parts whose data is unusable, per API, with the ``param`` the 400 names: the path of
#: what the part carries (the Anthropic error names it at the start of its message)
MEDIA_PARAMS: dict[str, tuple[str, dict[str, Any], str]] = {
    "chat_bad_base64": (
        "/v1/chat/completions",
        _chat({"type": "image_url", "image_url": {"url": BAD_PNG}}),
        "messages[0].content[1].image_url.url",
    ),
    "chat_text_declared_png": (
        "/v1/chat/completions",
        _chat({"type": "image_url", "image_url": {"url": data_uri(b"hello world")}}),
        "messages[0].content[1].image_url.url",
    ),
    "chat_empty_data_uri": (
        "/v1/chat/completions",
        _chat({"type": "image_url", "image_url": {"url": "data:image/png;base64,"}}),
        "messages[0].content[1].image_url.url",
    ),
    "chat_image_url_as_a_string": (
        "/v1/chat/completions",
        _chat({"type": "image_url", "image_url": BAD_PNG}),
        "messages[0].content[1].image_url",
    ),
    "chat_file_data": (
        "/v1/chat/completions",
        _chat({"type": "file", "file": {"file_data": "data:application/pdf;base64,@@@@"}}),
        "messages[0].content[1].file.file_data",
    ),
    "chat_input_audio": (
        "/v1/chat/completions",
        _chat({"type": "input_audio", "input_audio": {"data": "@@@@", "format": "wav"}}),
        "messages[0].content[1].input_audio.data",
    ),
    "chat_a_later_message": (
        "/v1/chat/completions",
        _chat(
            {"type": "image_url", "image_url": {"url": BAD_PNG}},
            before=({"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}),
        ),
        "messages[2].content[1].image_url.url",
    ),
    "responses_input_image": (
        "/v1/responses",
        {
            "model": "qwen3-max",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "x"},
                        {"type": "input_image", "image_url": BAD_PNG},
                    ],
                }
            ],
        },
        "input[0].content[1].image_url",
    ),
    "responses_input_file": (
        "/v1/responses",
        {
            "model": "qwen3-max",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "x"},
                        {"type": "input_file", "file_data": "data:application/pdf;base64,@@@@"},
                    ],
                }
            ],
        },
        "input[0].content[1].file_data",
    ),
    "responses_function_call_output": (
        "/v1/responses",
        {
            "model": "qwen3-max",
            "input": [
                {"type": "function_call", "call_id": "c1", "name": "shot", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "c1",
                    "output": [{"type": "input_image", "image_url": BAD_PNG}],
                },
            ],
        },
        "input[1].output[0].image_url",
    ),
    "messages_image_block": (
        "/v1/messages",
        {
            "model": "qwen3-max",
            "max_tokens": 20,
            "messages": [
                {"role": "user", "content": [_TEXT_X, _image_block("@@@@")]},
            ],
        },
        "messages.0.content.1.source.data",
    ),
    "messages_after_a_tool_result": (
        "/v1/messages",
        {
            "model": "qwen3-max",
            "max_tokens": 20,
            "messages": [
                {"role": "user", "content": "a"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
                        _TEXT_X,
                        _image_block("@@@@"),
                    ],
                },
            ],
        },
        "messages.2.content.2.source.data",
    ),
    "messages_in_a_tool_result": (
        "/v1/messages",
        {
            "model": "qwen3-max",
            "max_tokens": 20,
            "messages": [
                {"role": "user", "content": "a"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [_TEXT_X, _image_block("@@@@")],
                        }
                    ],
                },
            ],
        },
        "messages.2.content.0.content.1.source.data",
    ),
}


@pytest.mark.parametrize("case", sorted(MEDIA_PARAMS))
async def test_an_unusable_media_part_is_named(stack: Stack, case: str) -> None:
    """A part whose data is malformed, empty or not what its part says is a 400 naming where
    the data is (not ``null``, not just ``messages``); nothing is uploaded or asked for."""
    path, body, param = MEDIA_PARAMS[case]
    async with aiohttp.ClientSession() as s, s.post(stack.url(path), json=body) as r:
        status, payload = r.status, await r.json()
    assert status == 400, payload
    if path == "/v1/messages":
        assert payload["error"]["message"].startswith(f"{param}: "), payload
    else:
        assert payload["error"]["param"] == param, payload
    assert not stack.replay.app[UPLOADS_KEY] and not stack.upstream(COMPLETIONS_PATH)


async def test_a_media_url_whose_host_does_not_resolve_is_named(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 400 for a URL whose host has no address names the part's URL."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
        if host == "nowhere.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    body = _chat({"type": "image_url", "image_url": {"url": "http://nowhere.invalid/a.png"}})
    async with aiohttp.ClientSession() as s:
        async with s.post(stack.url("/v1/chat/completions"), json=body) as r:
            status, payload = r.status, await r.json()
    assert status == 400, payload
    assert payload["error"]["code"] == "media_fetch_failed"
    assert "does not resolve" in payload["error"]["message"]
    assert payload["error"]["param"] == "messages[0].content[1].image_url.url"


async def test_oversized_data_uri_is_413(aiohttp_server: ServerFactory) -> None:
    """A data: URI larger than max_image_bytes is refused with 413 media_too_large."""
    stack = await media_stack(aiohttp_server, max_image_bytes=len(PNG_IN) - 1)
    async with stack.async_client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(
                model="qwen3-max",
                messages=vision_messages(data_uri(PNG_IN)),  # type: ignore[arg-type]
            )
    assert info.value.status_code == 413
    assert error_object(info.value)["code"] == "media_too_large"


# -- video ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [" ", "\t\n "])
async def test_video_endpoint_refuses_a_blank_prompt(stack: Stack, prompt: str) -> None:
    """As /v1/images/generations and chat do: a 400 naming ``prompt``, no task started."""
    body = {"model": "qwen3-max-video", "prompt": prompt}
    async with aiohttp.ClientSession() as s:
        async with s.post(stack.url("/v1/videos/generations"), json=body) as r:
            status, payload = r.status, await r.json()
    assert status == 400, payload
    assert payload["error"]["param"] == "prompt"
    assert not stack.upstream(COMPLETIONS_PATH)


async def test_video_endpoint_polls_to_the_url(stack: Stack) -> None:
    """/v1/videos/generations: t2v JSON, task pending/running/success, the video URL."""
    async with aiohttp.ClientSession() as s:
        async with s.post(
            stack.url("/v1/videos/generations"), json={"model": "qwen3-max", "prompt": T2V.prompt}
        ) as r:
            assert r.status == 200
            body = await r.json()
    (item,) = body["data"]
    status, ctype, raw = await fetch(item["url"])
    assert (status, ctype) == (200, "video/mp4") and raw[4:8] == b"ftyp"
    assert len(stack.upstream(f"/api/v1/tasks/status/{_task_id(stack)}")) == 3
    sent = upstream_body(stack)
    assert (sent["stream"], sent["size"], sent["messages"][0]["chat_type"]) == (
        False,
        "16:9",
        "t2v",
    )


def _task_id(stack: Stack) -> str:
    paths = [r.path_qs for r in stack.requests if r.path_qs.startswith("/api/v1/tasks/status/")]
    return paths[-1].rsplit("/", 1)[-1]


async def test_streaming_video_chat_sends_keepalives(stack: Stack) -> None:
    """A streamed -video chat: role chunk, `: keep-alive` comments while the task runs, then
    [video](<url>), the stop chunk and [DONE] (raw wire)."""
    async with aiohttp.ClientSession() as s:
        async with s.post(
            stack.url("/v1/chat/completions"),
            json={
                "model": "qwen3-max-video",
                "stream": True,
                "messages": [{"role": "user", "content": T2V.prompt}],
            },
        ) as r:
            assert r.status == 200
            raw = (await r.read()).decode()
    events = [e for e in raw.split("\n\n") if e]
    assert events.count(": keep-alive") == 2  # pending, running
    datas = [json.loads(e[6:]) for e in events if e.startswith("data: {")]
    assert datas[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(d["choices"][0]["delta"].get("content") or "" for d in datas)
    assert content.startswith("[video](http") and "null" not in content
    assert raw.rstrip().endswith("data: [DONE]")


async def test_video_chat_with_the_sdk(stack: Stack) -> None:
    """The SDK (streamed, so it skips the comments) and non-streamed both get the video link."""
    async with stack.async_client() as client:
        done = await client.chat.completions.create(
            model="qwen3-max-video", messages=[{"role": "user", "content": T2V.prompt}]
        )
    text = done.choices[0].message.content or ""
    assert text.startswith("[video](http")
    assert (await fetch(text[len("[video](") : -1]))[2][4:8] == b"ftyp"


# -- failures: never null ------------------------------------------------------------------------

T2I_FAILURES = [
    "media_t2i_ratelimited",
    "media_t2i_bad_request",
    "media_t2i_waf",
    "media_t2i_unknown_phase",
    "media_t2i_captcha_url",
    "media_t2i_off_cdn",
]


def assert_error(exc: openai.APIStatusError, name: str) -> None:
    sc = BY_NAME[name]
    assert exc.status_code == sc.expected_status, (name, exc.body)
    err = error_object(exc)
    assert err["code"] == sc.expected_error_code and err["message"]
    text = exc.response.text
    assert "null)" not in text and "![image]" not in text and '"url"' not in text
    if sc.retry_after_s:
        assert exc.response.headers["Retry-After"] == str(sc.retry_after_s)


@pytest.mark.parametrize("name", T2I_FAILURES)
async def test_images_generate_failures(stack: Stack, name: str) -> None:
    """Each t2i failure gives its OpenAI error and status on /v1/images/generations."""
    async with stack.async_client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.images.generate(model="qwen3-max-image", prompt=BY_NAME[name].prompt)
    assert_error(info.value, name)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", T2I_FAILURES)
async def test_chat_image_failures(stack: Stack, name: str, stream: bool) -> None:
    """Each t2i failure is a real HTTP error for a -image chat too, streamed or not."""
    async with stack.async_client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(
                model="qwen3-max-image",
                messages=[{"role": "user", "content": BY_NAME[name].prompt}],
                stream=stream,
            )
    assert_error(info.value, name)


async def test_b64_of_a_non_image_is_502(aiohttp_server: ServerFactory) -> None:
    """b64_json of a URL that does not serve an image (here: no CDN at all) is an error."""
    stack = await media_stack(aiohttp_server, media_base_url="http://127.0.0.1:9")
    async with stack.async_client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.images.generate(
                model="qwen3-max-image", prompt=T2I.prompt, response_format="b64_json"
            )
    assert info.value.status_code == 502


async def test_edit_echo_only_is_502(stack: Stack) -> None:
    """An edit whose stream only echoes the uploaded source: 502 upstream_no_media."""
    async with stack.async_client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.images.edit(
                model="qwen3-max-image-edit",
                image=("square.png", PNG_IN, "image/png"),
                prompt=BY_NAME["media_edit_echo"].prompt,
            )
    assert_error(info.value, "media_edit_echo")
    assert "echoed the source" in error_object(info.value)["message"]


@pytest.mark.parametrize("name", ["media_t2v_failed", "media_t2v_stuck"])
async def test_video_endpoint_failures(aiohttp_server: ServerFactory, name: str) -> None:
    """A failed task is 502 upstream_task_failed; one past the deadline 504 (deadline 0 s)."""
    deadline = 0 if name == "media_t2v_stuck" else 600
    stack = await media_stack(aiohttp_server, video_deadline_s=deadline)
    async with aiohttp.ClientSession() as s:
        async with s.post(
            stack.url("/v1/videos/generations"), json={"prompt": BY_NAME[name].prompt}
        ) as r:
            status, body = r.status, await r.json()
    assert status == BY_NAME[name].expected_status
    assert body["error"]["code"] == BY_NAME[name].expected_error_code
    assert "data" not in body


async def test_streaming_video_failure_is_an_error_event(stack: Stack) -> None:
    """After the 200 is committed, a failed task is an error event and no [DONE]."""
    async with aiohttp.ClientSession() as s:
        async with s.post(
            stack.url("/v1/chat/completions"),
            json={
                "model": "qwen3-max-video",
                "stream": True,
                "messages": [{"role": "user", "content": BY_NAME["media_t2v_failed"].prompt}],
            },
        ) as r:
            raw = (await r.read()).decode()
    assert ": keep-alive" in raw and "[DONE]" not in raw
    last = json.loads(raw.strip().split("\n\n")[-1][len("data: ") :])
    assert last["error"]["code"] == "upstream_task_failed"


async def test_offline_mode_serves_images_and_uploads(aiohttp_server: ServerFactory) -> None:
    """`serve --offline` (replay in-process): the image URL and the upload go to the replay
    server without any extra setting."""
    proxy = await aiohttp_server(make_app(Settings(replay=[CASSETTES_DIR])))
    client = openai.AsyncOpenAI(base_url=str(proxy.make_url("/v1")), api_key="x", max_retries=0)
    async with client:
        res = await client.images.generate(model="qwen3-max-image", prompt=T2I.prompt)
        done = await client.chat.completions.create(
            model="qwen3-max",
            messages=vision_messages(data_uri(PNG_IN)),  # type: ignore[arg-type]
        )
    url = str(res.data[0].url)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/image.png")
    assert (await fetch(url))[2] == image_bytes("media_t2i")
    assert done.choices[0].message.content == VISION.expected_content
