"""``POST /v1/images/generations`` and ``POST /v1/images/edits`` (OpenAI Images API).

Generation runs the v2 t2i flow (PROTOCOL.md §6.1): ``chats/new`` with ``chat_type: t2i``, a
streamed completion with the aspect ratio as ``size``, the URL from the ``image_gen`` frame.
``n`` images are ``n`` turns. Edits (multipart, §6.2) upload the ``image`` first (§7) and run an
``image_edit`` turn; a URL equal to the uploaded source is never the answer. ``mask`` is not
supported upstream and is ignored.

Answer: ``{"created": <unix s>, "data": [{"url": …} | {"b64_json": …}, …]}``. ``url`` (the
default) is the CDN URL, signed and valid for hours (§6.4 item 5); in offline mode it points at
the replay server instead. ``b64_json`` makes the proxy download the image (size-capped, magic
bytes checked) and encode it. A request that yields no image is an OpenAI error (429 with
``Retry-After`` for quota, 502/503/504 otherwise), never a ``null`` URL.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from proxy.api_models import ImageGenerationRequest, decode_json_body, parse_body
from proxy.errors import ClientRequestError, MediaTooLargeError
from proxy.metrics import MODEL_KEY
from proxy.qwen.files import Blob, make_blob
from proxy.qwen.media import aspect_ratio
from proxy.qwen.translate import Media
from proxy.service import ChatService
from proxy.state import SERVICE

__all__ = ["images_edits", "images_generations"]


async def images_generations(request: web.Request) -> web.Response:
    """``POST /v1/images/generations`` (JSON body, see :class:`ImageGenerationRequest`)."""
    body = parse_body(ImageGenerationRequest, decode_json_body(await request.read()))
    service = request.app[SERVICE]
    route = await service.media_route(body.model, "t2i")
    request[MODEL_KEY] = route.model
    media = await service.generate_images(
        route, body.prompt, n=body.n, size=aspect_ratio(body.size)
    )
    return await _answer(service, media, body.response_format)


async def images_edits(request: web.Request) -> web.Response:
    """``POST /v1/images/edits`` (multipart: ``image`` or ``image[]``, ``prompt``, ``model``,
    ``n``, ``size``, ``response_format``)."""
    if not request.content_type.startswith("multipart/"):
        raise ClientRequestError("/v1/images/edits takes a multipart/form-data body")
    form = await request.post()
    service = request.app[SERVICE]
    limit = service.settings.max_image_bytes
    blobs: list[Blob] = []
    for field_name in ("image", "image[]"):
        for item in form.getall(field_name, []):
            if not isinstance(item, web.FileField):
                raise ClientRequestError(f"`{field_name}` must be a file", param="image")
            data = item.file.read(limit + 1)
            if len(data) > limit:
                raise MediaTooLargeError(f"the image is larger than the limit of {limit} bytes")
            blobs.append(make_blob(data, item.content_type, item.filename, expect="image"))
    if not blobs:
        raise ClientRequestError("/v1/images/edits needs an `image` file", param="image")
    fields: dict[str, Any] = {
        k: form.get(k)
        for k in ("prompt", "model", "n", "size", "response_format")
        if isinstance(form.get(k), str)
    }
    try:
        body = ImageGenerationRequest.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise ClientRequestError(f"invalid request: {loc}: {first.get('msg')}", param=loc) from None
    route = await service.media_route(body.model, "image_edit")
    request[MODEL_KEY] = route.model
    media = await service.generate_images(
        route, body.prompt, n=body.n, size=aspect_ratio(body.size), blobs=blobs
    )
    return await _answer(service, media, body.response_format)


async def _answer(service: ChatService, media: list[Media], fmt: str | None) -> web.Response:
    data: list[dict[str, str]] = []
    for m in media:
        if fmt == "b64_json":
            raw, _ = await service.download_image(m)
            data.append({"b64_json": base64.b64encode(raw).decode("ascii")})
        else:
            data.append({"url": m.url})
    payload = {"created": int(time.time()), "data": data}
    return web.Response(body=orjson.dumps(payload), content_type="application/json")
