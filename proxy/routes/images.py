"""``POST /v1/images/generations`` and ``POST /v1/images/edits`` (OpenAI Images API).

Generation runs the v2 t2i flow (docs/protocol.md §6.1): ``chats/new`` with ``chat_type: t2i``, a
streamed completion with the aspect ratio as ``size``, the URL from the ``image_gen`` frame.
``n`` images are ``n`` turns. Edits (multipart, §6.2) upload the ``image`` first (§7) and run an
``image_edit`` turn; a URL equal to the uploaded source is never the answer. ``mask`` is not
supported upstream and is ignored.

Answer: ``{"created": <unix s>, "data": [{"url": …} | {"b64_json": …}, …]}``. ``url`` (the
default) is the CDN URL, signed and valid for hours (§6.4 item 5); in offline mode it points at
the replay server instead. ``b64_json`` makes the proxy download the image (size-capped, magic
bytes checked) and encode it. A request that yields no image is an OpenAI error (429 with
``Retry-After`` for quota, 502/503/504 otherwise), never a ``null`` URL. Images made are logged
in the request's one line, ``images_generated`` (model, count, accounts), delivered or not.
"""

from __future__ import annotations

import base64
import time

import aiohttp
import orjson
import structlog
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from proxy.api_models import ImageGenerationRequest, decode_json_body, parse_body, parse_form
from proxy.errors import ClientRequestError, MediaTooLargeError, ProxyError, clip
from proxy.metrics import MODEL_KEY
from proxy.qwen.files import make_blob
from proxy.qwen.media import aspect_ratio
from proxy.qwen.request import ModelRoute
from proxy.qwen.translate import Media
from proxy.state import LOGGED, SERVICE

__all__ = ["images_edits", "images_generations"]

log = structlog.get_logger("proxy.images")


async def images_generations(request: web.Request) -> web.Response:
    """``POST /v1/images/generations`` (JSON body, see :class:`ImageGenerationRequest`)."""
    body = parse_body(ImageGenerationRequest, decode_json_body(await request.read()))
    service = request.app[SERVICE]
    route = await service.media_route(body.model, "t2i")
    request[MODEL_KEY] = route.model
    made = await service.generate_images(route, body.prompt, n=body.n, size=aspect_ratio(body.size))
    return await _answer(request, route, made, body.response_format)


async def images_edits(request: web.Request) -> web.Response:
    """``POST /v1/images/edits`` (multipart: ``image`` or ``image[]``, ``prompt``, ``model``,
    ``n``, ``size``, ``response_format``)."""
    service = request.app[SERVICE]
    limit = service.settings.max_image_bytes
    files, fields = await _read_form(request, limit)
    blobs = [
        make_blob(data, ctype, name, expect="image", param=field)
        for field, data, ctype, name in files
    ]
    if not blobs:
        raise ClientRequestError("/v1/images/edits needs an `image` file", param="image")
    body = parse_form(ImageGenerationRequest, fields)
    route = await service.media_route(body.model, "image_edit")
    request[MODEL_KEY] = route.model
    made = await service.generate_images(
        route, body.prompt, n=body.n, size=aspect_ratio(body.size), blobs=blobs
    )
    return await _answer(request, route, made, body.response_format)


_TEXT_FIELDS = frozenset(ImageGenerationRequest.model_fields)
_FIELD_LIMIT = 64 * 1024


async def _read_form(
    request: web.Request, image_limit: int
) -> tuple[list[tuple[str, bytes, str, str | None]], dict[str, str]]:
    """``(files, fields)`` of the multipart body: the ``image``/``image[]`` files as
    ``(field name, bytes, content type, file name)`` and the known text fields; other parts
    are skipped. Errors about a file name its field (``image`` or ``image[]``).

    Everything is read in memory with limits (``image_limit`` bytes per image, 64 KiB per text
    field). Raises :class:`ClientRequestError` naming what is malformed: no or wrong boundary,
    a part without a name, a truncated body, a text field that is not UTF-8 (or its declared
    charset), a text part where a file is expected; :class:`MediaTooLargeError` for an image
    over the limit.
    """
    if "boundary=" not in request.headers.get("Content-Type", "").lower():
        raise ClientRequestError(
            "the multipart body has no boundary: send `Content-Type: multipart/form-data; "
            "boundary=…` (HTTP clients set it when given a form)"
        )
    files: list[tuple[str, bytes, str, str | None]] = []
    fields: dict[str, str] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ClientRequestError("nested multipart bodies are not supported")
            name = part.name
            if not name:
                raise ClientRequestError("a part of the multipart body has no name")
            if name in ("image", "image[]"):
                if part.filename is None:
                    raise ClientRequestError(f"`{name}` must be a file", param=name)
                data = await _read_part(part, image_limit)
                if data is None:
                    raise MediaTooLargeError(
                        f"the image is larger than the limit of {image_limit} bytes", param=name
                    )
                files.append((name, data, part.headers.get("Content-Type", ""), part.filename))
            elif name in _TEXT_FIELDS and part.filename is None:
                raw = await _read_part(part, _FIELD_LIMIT)
                if raw is None:
                    raise ClientRequestError(f"the `{name}` field is too long", param=name)
                charset = part.get_charset(default="utf-8")
                fields[name] = raw.decode(charset)
            else:
                await part.release()
    except UnicodeDecodeError:
        raise ClientRequestError(
            "a text field of the multipart body is not valid UTF-8 (or its declared charset)"
        ) from None
    except LookupError:
        raise ClientRequestError("a multipart part declares an unknown charset") from None
    except HttpProcessingError:  # a part's header block is malformed or cut off (not quoted)
        raise ClientRequestError(
            "the multipart body is malformed: a part's headers are invalid or cut off"
        ) from None
    except (
        ValueError,
        AssertionError,
        aiohttp.ClientPayloadError,
        aiohttp.BadContentDispositionHeader,  # warnings, raised where warnings are errors
        aiohttp.BadContentDispositionParam,
    ) as exc:
        why = str(exc) or type(exc).__name__
        if "boundary" in why.lower():  # aiohttp's text quotes the boundary: a header value
            why = "it does not start with, or does not keep to, the boundary its Content-Type names"
        raise ClientRequestError(f"the multipart body is malformed: {clip(why, 120)}") from None
    return files, fields


async def _read_part(part: BodyPartReader, limit: int) -> bytes | None:
    """The decoded bytes of ``part``, or ``None`` when they exceed ``limit`` bytes. Raises
    :class:`ClientRequestError` for a ``Content-Transfer-Encoding`` aiohttp cannot decode
    (it raises ``RuntimeError`` for any but base64, quoted-printable and the identities;
    RFC 7578 §4.7 deprecates the header in forms)."""
    buf = bytearray()
    while chunk := await part.read_chunk(65536):
        buf += chunk
        if len(buf) > limit:
            return None
    try:
        return bytes(part.decode(bytes(buf)))
    except RuntimeError:
        raise ClientRequestError(
            "a part of the multipart body declares a Content-Transfer-Encoding this gateway "
            "cannot decode (send the part's bytes as they are: binary)"
        ) from None


async def _answer(
    request: web.Request, route: ModelRoute, made: list[tuple[Media, str]], fmt: str | None
) -> web.Response:
    """The answer for the images ``made`` (each with its account's label), as URLs or
    downloaded (``b64_json``), and the request's log line (:func:`_log_images`)."""
    media = [m for m, _ in made]
    data: list[dict[str, str]]
    try:
        if fmt == "b64_json":  # the images are downloaded all at once
            images = await request.app[SERVICE].download_images(media)
            data = [{"b64_json": base64.b64encode(raw).decode("ascii")} for raw, _ in images]
        else:
            data = [{"url": m.url} for m in media]
    except ProxyError as exc:  # made (the quota is spent), but not delivered
        _log_images(request, route, made, exc)
        raise
    _log_images(request, route, made, None)
    payload = {"created": int(time.time()), "data": data}
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def _log_images(
    request: web.Request,
    route: ModelRoute,
    made: list[tuple[Media, str]],
    failure: ProxyError | None,
) -> None:
    """The request's line (:data:`~proxy.state.LOGGED`): ``images_generated`` with the model,
    ``chat_type`` (``t2i`` or ``image_edit``), the number of images, the labels of the accounts
    whose quota they spent, and the failure's code and message when they could not be
    delivered (a ``b64_json`` download failed; that error answer logs no other line)."""
    request[LOGGED] = failure or True
    extra = {} if failure is None else {"message": clip(failure.message, 500)}
    log.info(
        "images_generated",
        model=route.model,
        chat_type=route.chat_type,
        images=len(made),
        account=", ".join(dict.fromkeys(label for _, label in made)),
        failure=failure.error_code() if failure is not None else None,
        **extra,
    )
