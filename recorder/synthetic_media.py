"""Synthetic cassettes for images, video and uploads: t2i, image edit, t2v tasks, vision input.

Like :mod:`recorder.synthetic` (whose deterministic helpers this module uses), every byte here is
written from ``docs/protocol.md``, none is captured, and every cassette says so
(``provenance.kind == "synthetic"``, the sections followed):

- t2i (§6.1): ``chats/new`` with ``chat_type: t2i``, then an SSE stream whose ``image_gen`` frame
  carries the URL as ``content`` with ``extra.output_image_hw`` and the t2i usage (§5.4, §5.5),
  after an ``image_gen_think`` frame; the image itself is served at its CDN path (a GET whose
  binary PNG body is stored base64, ``response.x_body_encoding``).
- image edit (§6.2, §7): ``getstsToken`` (§7.1), ``chats/new`` with ``chat_type: image_edit``
  and a stream of ``image_edit`` frames that first echo the uploaded source, then the result.
- vision input (§7.4): ``getstsToken``, then a t2t answer about the uploaded picture.
- t2v (§6.3): a ``stream: false`` completion answered with JSON holding
  ``data.messages[0].extra.wanx.task_id``, then ``GET /api/v1/tasks/status/<id>`` answers in order
  (the replay server advances through them: pending, running, success with the URL in
  ``content``), and the video bytes (an MP4 header only, not a playable video).
- failures (§6.4, §10): a RateLimited envelope, a Bad_Request envelope, the WAF page, a stream of
  unknown phases, the captcha link as the image URL, a URL off the CDN, a failed task, a task
  that never finishes, an edit that only echoes its source.

Every upload scenario shares one STS answer (:data:`STS_GRANT`): the replay server answers
``getstsToken`` from whichever cassette loads first, so they must agree. Its credentials are
obviously fake (``STS.synthetic…``). The PNG images are generated here (stored-deflate zlib, so
the bytes do not depend on the zlib build) and are deterministic, as is everything else:
``qwen-record synth`` rewrites ``cassettes/media_*.json`` byte for byte.

The prompt of :data:`PROBE_IMAGE_PROMPT` is the conformance harness's image probe
(``proxy/conformance/probes.py``), repeated because ``recorder`` never imports ``proxy``.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from recorder.cassette import Cassette, Interaction
from recorder.synthetic import (
    BASE_EPOCH_S,
    BASE_URL,
    COMPLETIONS_URL,
    Scenario,
    _base_headers,
    _chats_new_headers,
    _completions_headers,
    _Frames,
    _json_compact,
    _pieces,
    _t_headers,
    _uid,
    chats_new_interaction,
    synthetic_cassette,
)

__all__ = [
    "CDN",
    "MEDIA_SCENARIOS",
    "PROBE_IMAGE_PROMPT",
    "STS_GRANT",
    "MediaScenario",
    "build",
    "build_all",
    "image_bytes",
    "media_url",
    "png",
]

CDN = "https://cdn.qwenlm.ai"
"""The CDN of generated and uploaded assets (docs/protocol.md §1)."""

PROBE_IMAGE_PROMPT = "Conformance probe: a red apple on a white table, studio photo."
"""The conformance harness's image prompt (``proxy.conformance.probes.IMAGE_PROMPT``)."""

MEDIA_EPOCH_S = BASE_EPOCH_S + 7200
"""Media scenario ``i`` happens ``i`` minutes after 2026-11-22T11:00:00Z."""

STS_USER = "8f2c6a1e-0000-4000-8000-000000000001"
STS_FILE_ID = "5b1d9e7c-0000-4000-8000-000000000002"
STS_GRANT: dict[str, str] = {
    "access_key_id": "STS.synthetic-access-key-id",
    "access_key_secret": "synthetic-access-key-secret",
    "security_token": "CAISsynthetic-security-token",
    "bucketname": "qwen-webui-prod",
    "region": "oss-ap-southeast-1",
    "endpoint": "oss-ap-southeast-1.aliyuncs.com",
    "file_id": STS_FILE_ID,
    "file_path": f"{STS_USER}/{STS_FILE_ID}_image.png",
    "file_url": f"{CDN}/{STS_USER}/{STS_FILE_ID}_image.png",
}
"""The one upload grant of every upload scenario (§7.1 v2 field names; fake credentials)."""

PUNISH_URL = (
    "https://chat.qwen.ai:443//api/v2/chat/completions/_____tmd_____/punish"
    "?x5secdata=REDACTED__bx__chat.qwen.ai:443/api/v2/chat/completions"
    "&x5step=2&action=captchaconnect&pureCaptcha="
)
"""The WAF captcha link (sample ``waf_punish_url_2026-08-23.txt``, x5secdata redacted)."""

OFF_CDN_URL = "https://images.example.net/generated/square.png"


# -- deterministic media bytes -------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _stored_zlib(raw: bytes) -> bytes:
    """A zlib stream of stored (uncompressed) deflate blocks: identical bytes on every zlib."""
    out = bytearray(b"\x78\x01")
    for start in range(0, max(len(raw), 1), 65535):
        block = raw[start : start + 65535]
        final = 1 if start + 65535 >= len(raw) else 0
        out += bytes([final]) + struct.pack("<HH", len(block), len(block) ^ 0xFFFF) + block
    return bytes(out) + struct.pack(">I", zlib.adler32(raw))


def png(width: int, height: int, pixel: Callable[[int, int], tuple[int, int, int]]) -> bytes:
    """A valid RGB PNG of ``width`` × ``height`` whose pixel ``(x, y)`` is ``pixel(x, y)``."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type None
        for x in range(width):
            rows.extend(pixel(x, y))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", _stored_zlib(bytes(rows)))
        + _chunk(b"IEND", b"")
    )


def _square(fg: tuple[int, int, int]) -> Callable[[int, int], tuple[int, int, int]]:
    def pixel(x: int, y: int) -> tuple[int, int, int]:
        return fg if 8 <= x < 24 and 8 <= y < 24 else (250, 250, 250)

    return pixel


def _apple(x: int, y: int) -> tuple[int, int, int]:
    if (x - 16) ** 2 + (y - 18) ** 2 <= 64:
        return (200, 30, 40)
    if 15 <= x <= 16 and 6 <= y <= 10:
        return (90, 60, 20)
    return (245, 245, 245)


_MP4_HEADER = (
    (struct.pack(">I", 24) + b"ftypisom" + struct.pack(">I", 512) + b"isomiso2")
    + struct.pack(">I", 16)
    + b"free"
    + b"synthetic"[:8]
)
"""An MP4 ``ftyp`` box and a ``free`` box: enough to be sniffed as MP4, not a playable video."""


# -- scenarios -----------------------------------------------------------------------------------

Outcome = Literal["image", "video", "text", "error"]


@dataclass(frozen=True)
class MediaScenario:
    """One media cassette and what the proxy must make of it.

    ``chat_type``: ``t2i``, ``image_edit``, ``t2v`` or ``t2t`` (vision input). ``openai_model``
    is the chat model a client names (``qwen3-max-image`` …). ``outcome`` is what a success
    yields; failures have ``expected_status`` and ``expected_error_code`` (and, for quota,
    ``retry_after_s``). ``media`` is the CDN path of the answer's image/video (``None``: none);
    ``upload`` whether the flow starts with an upload; ``expected_content`` the text answer of a
    vision chat.
    """

    name: str
    description: str
    protocol_sections: tuple[str, ...]
    chat_type: Literal["t2i", "image_edit", "t2v", "t2t"]
    prompt: str
    outcome: Outcome
    model: str = "qwen3-max"
    expected_status: int = 200
    expected_error_code: str | None = None
    retry_after_s: int | None = None
    media: str | None = None
    upload: bool = False
    expected_content: str | None = None

    @property
    def openai_model(self) -> str:
        """The chat model name: ``<model>-image``, ``-image-edit``, ``-video`` or plain."""
        suffix = {"t2i": "-image", "image_edit": "-image-edit", "t2v": "-video", "t2t": ""}
        return self.model + suffix[self.chat_type]

    def base(self) -> Scenario:
        """A :class:`recorder.synthetic.Scenario` twin, for the shared frame/timing helpers."""
        return Scenario(
            name=self.name,
            description=self.description,
            protocol_sections=self.protocol_sections,
            model=self.model,
            openai_model=self.openai_model,
            prompt=self.prompt,
            chat_type=self.chat_type,
            thinking=False,
        )


def _out(name: str, ext: str, kind: str) -> str:
    """``/output/<user id>/<kind>/<chat id>/<file>``: a CDN asset path of §1 (signed query
    omitted); the file name is fixed, so every scenario's path has the same shape."""
    file = "video.mp4" if ext == "mp4" else f"image.{ext}"
    return f"/output/{_uid(name, 'dir')}/{kind}/{_uid(name, 'media')}/{file}"


_T2I = ("3", "4.1", "5.1", "5.2", "5.3", "5.4", "5.5", "6.1")
_EDIT = ("3", "4.1", "5.2", "5.3", "6.2", "7.1", "7.2", "7.4")
_T2V = ("3", "4.1", "4.2", "6.3")
_FAIL = ("3", "4.1", "4.3", "6.4", "10")
_VISION_PIECES = ("The picture", " shows", " a red", " square", " on a white", " background", ".")

MEDIA_SCENARIOS: tuple[MediaScenario, ...] = (
    MediaScenario(
        name="media_t2i",
        description="Synthetic t2i: image_gen_think, the URL in an image_gen frame, the PNG.",
        protocol_sections=_T2I,
        chat_type="t2i",
        prompt="Draw a small red square on a white background.",
        outcome="image",
        media=_out("media_t2i", "png", "t2i"),
    ),
    MediaScenario(
        name="media_probe_image",
        description="Synthetic t2i answer to the conformance harness's image probe, and the PNG.",
        protocol_sections=_T2I,
        chat_type="t2i",
        prompt=PROBE_IMAGE_PROMPT,
        outcome="image",
        media=_out("media_probe_image", "png", "t2i"),
    ),
    MediaScenario(
        name="media_image_edit",
        description=(
            "Synthetic image edit: STS grant, image_edit frames echoing the uploaded source "
            "first, then the edited image, and its PNG."
        ),
        protocol_sections=_EDIT,
        chat_type="image_edit",
        prompt="Make the square blue.",
        outcome="image",
        media=_out("media_image_edit", "png", "t2i"),
        upload=True,
    ),
    MediaScenario(
        name="media_vision_chat",
        description="Synthetic vision chat: STS grant, then a t2t answer about the picture.",
        protocol_sections=(*_T2I[:6], "7.1", "7.2", "7.4"),
        chat_type="t2t",
        prompt="What is in this picture?",
        outcome="text",
        upload=True,
        expected_content="".join(_VISION_PIECES),
    ),
    MediaScenario(
        name="media_t2v",
        description="Synthetic t2v: JSON answer with wanx.task_id, task pending/running/success.",
        protocol_sections=_T2V,
        chat_type="t2v",
        prompt="A paper boat drifting down a rainy street.",
        outcome="video",
        media=_out("media_t2v", "mp4", "t2v"),
    ),
    MediaScenario(
        name="media_t2i_ratelimited",
        description="Synthetic t2i answered with a RateLimited envelope (daily image quota).",
        protocol_sections=_FAIL,
        chat_type="t2i",
        prompt="Draw a lighthouse at dawn (quota used up).",
        outcome="error",
        expected_status=429,
        expected_error_code="rate_limit_exceeded",
        retry_after_s=4 * 3600,
    ),
    MediaScenario(
        name="media_t2i_bad_request",
        description="Synthetic t2i answered with a Bad_Request envelope instead of a stream.",
        protocol_sections=_FAIL,
        chat_type="t2i",
        prompt="Draw a lighthouse at dusk (bad request).",
        outcome="error",
        expected_status=502,
        expected_error_code="upstream_bad_request",
    ),
    MediaScenario(
        name="media_t2i_waf",
        description="Synthetic t2i answered with the WAF slider page (text/html).",
        protocol_sections=_FAIL,
        chat_type="t2i",
        prompt="Draw a lighthouse at night (captcha page).",
        outcome="error",
        expected_status=503,
        expected_error_code="upstream_captcha",
    ),
    MediaScenario(
        name="media_t2i_unknown_phase",
        description="Synthetic t2i stream with only phases nobody knows, and no URL.",
        protocol_sections=(*_T2I, "6.4"),
        chat_type="t2i",
        prompt="Draw a lighthouse in fog (unknown phases).",
        outcome="error",
        expected_status=502,
        expected_error_code="upstream_no_media",
    ),
    MediaScenario(
        name="media_t2i_captcha_url",
        description="Synthetic t2i stream whose image_gen URL is the WAF captcha link.",
        protocol_sections=(*_T2I, "6.4", "10"),
        chat_type="t2i",
        prompt="Draw a lighthouse in snow (captcha link).",
        outcome="error",
        expected_status=502,
        expected_error_code="upstream_bad_media",
    ),
    MediaScenario(
        name="media_t2i_off_cdn",
        description="Synthetic t2i stream whose image_gen URL is on a host off the CDN.",
        protocol_sections=(*_T2I, "6.4"),
        chat_type="t2i",
        prompt="Draw a lighthouse in rain (foreign host).",
        outcome="error",
        expected_status=502,
        expected_error_code="upstream_bad_media",
    ),
    MediaScenario(
        name="media_t2v_failed",
        description="Synthetic t2v task that goes pending, then failed.",
        protocol_sections=_T2V,
        chat_type="t2v",
        prompt="A paper boat sinking (task fails).",
        outcome="error",
        expected_status=502,
        expected_error_code="upstream_task_failed",
    ),
    MediaScenario(
        name="media_t2v_stuck",
        description="Synthetic t2v task that stays running (the replay repeats it forever).",
        protocol_sections=_T2V,
        chat_type="t2v",
        prompt="A paper boat that never arrives (task never ends).",
        outcome="error",
        expected_status=504,
        expected_error_code="upstream_task_timeout",
    ),
    MediaScenario(
        name="media_edit_echo",
        description="Synthetic image edit whose stream only echoes the uploaded source image.",
        protocol_sections=(*_EDIT, "6.4"),
        chat_type="image_edit",
        prompt="Make the square green (echo only).",
        outcome="error",
        expected_status=502,
        expected_error_code="upstream_no_media",
        upload=True,
    ),
)
"""Every media scenario, in cassette order."""

BY_NAME = {sc.name: sc for sc in MEDIA_SCENARIOS}


def media_url(sc: MediaScenario) -> str:
    """The CDN URL of the scenario's answer image/video (``sc.media`` must be set)."""
    assert sc.media is not None, sc.name
    return CDN + sc.media


def image_bytes(name: str) -> bytes:
    """The PNG (or MP4 header) served at scenario ``name``'s media URL."""
    if name == "media_t2v":
        return _MP4_HEADER
    colors = {"media_t2i": (220, 20, 30), "media_image_edit": (30, 60, 220)}
    if name == "media_probe_image":
        return png(32, 32, _apple)
    return png(32, 32, _square(colors[name]))


# -- requests ------------------------------------------------------------------------------------


def _epoch(sc: MediaScenario) -> int:
    return MEDIA_EPOCH_S + 60 * [s.name for s in MEDIA_SCENARIOS].index(sc.name)


def _chats_new(sc: MediaScenario) -> Interaction:
    """Step 1 (§3) with the scenario's chat type; always a success."""
    return chats_new_interaction(sc.name, sc.model, sc.chat_type, _epoch(sc))


def _json_interaction(
    method: str,
    uri: str,
    headers: dict[str, list[str]],
    body: Any,
    answer: Any,
    *,
    content_type: str = "application/json; charset=utf-8",
) -> Interaction:
    return Interaction(
        method=method,
        uri=uri,
        request_headers=headers,
        request_body=None if body is None else _json_compact(body),
        status=200,
        reason="OK",
        response_headers={"Content-Type": [content_type]},
        response_body=answer if isinstance(answer, str) else _json_compact(answer),
    )


def _sts(sc: MediaScenario) -> Interaction:
    """``POST /api/v2/files/getstsToken`` (§7.1), the v2 answer wrapped in ``data``."""
    body = {"filename": "image.png", "filesize": "1024", "filetype": "image"}
    answer = {
        "success": True,
        "request_id": _uid(sc.name, "request_id/sts"),
        "data": dict(STS_GRANT),
    }
    headers = _chats_new_headers()
    return _json_interaction("POST", f"{BASE_URL}/api/v2/files/getstsToken", headers, body, answer)


def _file_entry(sc: MediaScenario) -> dict[str, Any]:
    """The §7.4 entry the proxy sends for the uploaded picture (informative: not matched)."""
    ms = _epoch(sc) * 1000
    name = "image.png"
    return {
        "type": "image",
        "file": {
            "created_at": ms,
            "data": {},
            "filename": name,
            "hash": None,
            "id": STS_FILE_ID,
            "user_id": STS_USER,
            "meta": {"name": name, "size": 1024, "content_type": "image/png"},
            "update_at": ms,
            "lastModified": ms,
            "name": name,
            "webkitRelativePath": "",
            "size": 1024,
            "type": "image/png",
        },
        "id": STS_FILE_ID,
        "url": STS_GRANT["file_url"],
        "name": name,
        "collection_name": "",
        "progress": 0,
        "status": "uploaded",
        "greenNet": "success",
        "size": 1024,
        "error": "",
        "itemId": _uid(sc.name, "item_id"),
        "file_type": "image/png",
        "showType": "image",
        "file_class": "vision",
        "uploadTaskId": _uid(sc.name, "upload_task_id"),
    }


def _completions_body(sc: MediaScenario) -> dict[str, Any]:
    """The v2 body (§4.1; t2i/t2v/edit: §6, top-level ``size``; t2v ``stream: false``)."""
    ts = _epoch(sc)
    chat_id = _uid(sc.name, "chat_id")
    body: dict[str, Any] = {
        "stream": sc.chat_type != "t2v",
        "version": "2.1",
        "incremental_output": True,
        "chat_id": chat_id,
        "chat_mode": "normal",
        "model": sc.model,
        "parent_id": None,
        "messages": [
            {
                "fid": _uid(sc.name, "fid"),
                "parentId": None,
                "childrenIds": [_uid(sc.name, "children_id")],
                "role": "user",
                "content": sc.prompt,
                "user_action": "chat",
                "files": [_file_entry(sc)] if sc.upload else [],
                "timestamp": ts,
                "models": [sc.model],
                "chat_type": sc.chat_type,
                "feature_config": {"thinking_enabled": False, "output_schema": "phase"},
                "extra": {"meta": {"subChatType": sc.chat_type}},
                "sub_chat_type": sc.chat_type,
                "parent_id": None,
            }
        ],
        "timestamp": ts + 1,
    }
    if sc.chat_type != "t2t":
        body["size"] = "16:9" if sc.chat_type == "t2v" else "1:1"
    return body


def _completions_uri(sc: MediaScenario) -> str:
    return f"{COMPLETIONS_URL}?chat_id={_uid(sc.name, 'chat_id')}"


def _stream(sc: MediaScenario, f: _Frames) -> Interaction:
    base = sc.base()
    return Interaction.streamed(
        method="POST",
        uri=_completions_uri(sc),
        request_headers=_completions_headers(),
        request_body=_json_compact(_completions_body(sc)),
        pieces=_pieces(base, f.events),
        t_headers_s=_t_headers(base),
    )


def _completions_json(sc: MediaScenario, answer: Any, content_type: str) -> Interaction:
    return _json_interaction(
        "POST",
        _completions_uri(sc),
        _completions_headers(),
        _completions_body(sc),
        answer,
        content_type=content_type,
    )


def _media_get(sc: MediaScenario) -> Interaction:
    """The CDN answering the media URL: binary body, stored base64 (``x_body_encoding``)."""
    data = image_bytes(sc.name)
    ctype = "video/mp4" if sc.chat_type == "t2v" else "image/png"
    return Interaction(
        method="GET",
        uri=media_url(sc),
        request_headers={"Accept": ["image/*,*/*;q=0.8"]},
        request_body=None,
        status=200,
        reason="OK",
        response_headers={"Content-Type": [ctype]},
        response_body=base64.b64encode(data).decode("ascii"),
        body_encoding="base64",
    )


# -- frames --------------------------------------------------------------------------------------


def _t2i_usage() -> dict[str, Any]:
    """The t2i usage object (§5.4, sample ``t2i_usage_fragment_2026-02.json``)."""
    return {
        "input_tokens": 0,
        "output_tokens": 0,
        "characters": 0,
        "width": 1024,
        "height": 1024,
        "image_count": 1,
    }


def _image_frame(f: _Frames, phase: str, url: str, status: str = "typing") -> None:
    delta = {
        "role": "assistant",
        "content": url,
        "phase": phase,
        "status": status,
        "extra": {"output_image_hw": [[1024, 1024]]},
    }
    f.raw({"choices": [{"delta": delta}], "usage": _t2i_usage()})


def _image_stream(sc: MediaScenario, url: str, *, think: bool = True) -> Interaction:
    """created, keep-alive (§5.2), image_gen_think, the image_gen URL, image_gen finished."""
    f = _Frames(sc.base())
    f.created()
    f.raw(
        {
            "response.info": {
                "action": "keep_alive",
                "chat_id": _uid(sc.name, "chat_id"),
                "response_id": _uid(sc.name, "response_id"),
                "timestamp": _epoch(sc) + 3,
            }
        }
    )
    if think:
        f.raw(
            {
                "choices": [
                    {
                        "delta": {
                            "role": "assistant",
                            "content": "Planning the composition.",
                            "phase": "image_gen_think",
                            "status": "typing",
                        }
                    }
                ],
                "usage": _t2i_usage(),
            }
        )
    _image_frame(f, "image_gen", url)
    f.finished("image_gen", with_usage=True)
    return _stream(sc, f)


def _envelope(sc: MediaScenario, data: dict[str, Any]) -> dict[str, Any]:
    return {"success": False, "request_id": _uid(sc.name, "request_id/completions"), "data": data}


_WAF_HTML = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="aliyun_waf_aa" content="synthetic">
<title>Access Verification</title></head>
<body>
<!-- synthetic slider page built from docs/protocol.md section 10; not a capture -->
<div id="aliyun_waf_slider" class="captcha"><h1>Access Verification</h1></div>
<script>var punish = "/_____tmd_____/punish?x5secdata=REDACTED&action=captcha";</script>
</body>
</html>
"""


def _task_uri(sc: MediaScenario) -> str:
    return f"{BASE_URL}/api/v1/tasks/status/{_uid(sc.name, 'task_id')}"


def _t2v_answer(sc: MediaScenario) -> dict[str, Any]:
    """The t2v JSON answer (§4.2 shape, §6.3 ``data.messages[0].extra.wanx.task_id``)."""
    return {
        "success": True,
        "request_id": _uid(sc.name, "request_id/completions"),
        "data": {
            "chat_id": _uid(sc.name, "chat_id"),
            "parent_id": _uid(sc.name, "user_message_id"),
            "message_id": _uid(sc.name, "response_id"),
            "messages": [
                {
                    "role": "assistant",
                    "content": "",
                    "extra": {"wanx": {"task_id": _uid(sc.name, "task_id")}},
                }
            ],
        },
    }


def _task(sc: MediaScenario, status: str, content: str = "", **more: Any) -> Interaction:
    """One ``GET /api/v1/tasks/status/<id>`` answer, flat ``{task_status, content}`` (§6.3)."""
    answer = {"task_status": status, "content": content, **more}
    headers = _base_headers("application/json, text/plain, */*")
    return _json_interaction("GET", _task_uri(sc), headers, None, answer)


# -- builders ------------------------------------------------------------------------------------


def _build(sc: MediaScenario) -> list[Interaction]:
    name = sc.name
    head = ([_sts(sc)] if sc.upload else []) + [_chats_new(sc)]
    if name in ("media_t2i", "media_probe_image"):
        return [*head, _image_stream(sc, media_url(sc)), _media_get(sc)]
    if name == "media_image_edit":
        f = _Frames(sc.base())
        f.created()
        _image_frame(f, "image_edit", STS_GRANT["file_url"])  # the source echoed (§6.2)
        _image_frame(f, "image_edit", media_url(sc))
        f.finished("image_edit", with_usage=True)
        return [*head, _stream(sc, f), _media_get(sc)]
    if name == "media_edit_echo":
        f = _Frames(sc.base())
        f.created()
        _image_frame(f, "image_edit", STS_GRANT["file_url"])
        f.finished("image_edit", with_usage=True)
        return [*head, _stream(sc, f)]
    if name == "media_vision_chat":
        f = _Frames(sc.base())
        f.created()
        f.pieces(_VISION_PIECES, "answer")
        f.idle_typing()
        f.finished("answer", with_usage=False)
        return [*head, _stream(sc, f)]
    if name == "media_t2v":
        tasks = [
            _task(sc, "pending"),
            _task(sc, "running"),
            _task(sc, "success", media_url(sc)),
        ]
        answer = _completions_json(sc, _t2v_answer(sc), "application/json; charset=utf-8")
        return [*head, answer, *tasks, _media_get(sc)]
    if name == "media_t2v_failed":
        answer = _completions_json(sc, _t2v_answer(sc), "application/json; charset=utf-8")
        failed = _task(sc, "failed", message="Video generation failed: content review rejected.")
        return [*head, answer, _task(sc, "pending"), failed]
    if name == "media_t2v_stuck":
        answer = _completions_json(sc, _t2v_answer(sc), "application/json; charset=utf-8")
        return [*head, answer, _task(sc, "running")]
    if name == "media_t2i_ratelimited":
        data = {
            "code": "RateLimited",
            "details": "You've reached the upper limit for today's usage.",
            "template": "You have reached the daily usage limit. Please wait {{num}} hours "
            "before trying again.",
            "num": 4,
        }
        return [*head, _completions_json(sc, _envelope(sc, data), "application/json")]
    if name == "media_t2i_bad_request":
        data = {"code": "Bad_Request", "details": "Invalid input: stream=false is not supported."}
        return [*head, _completions_json(sc, _envelope(sc, data), "application/json")]
    if name == "media_t2i_waf":
        return [*head, _completions_json(sc, _WAF_HTML, "text/html; charset=utf-8")]
    if name == "media_t2i_unknown_phase":
        f = _Frames(sc.base())
        f.created()
        for phase, text in (("image_render", "Rendering"), ("image_progress", "42%")):
            f.raw(
                {
                    "choices": [
                        {
                            "delta": {
                                "role": "assistant",
                                "content": text,
                                "phase": phase,
                                "status": "typing",
                            }
                        }
                    ],
                    "usage": _t2i_usage(),
                }
            )
        return [*head, _stream(sc, f)]
    if name == "media_t2i_captcha_url":
        return [*head, _image_stream(sc, PUNISH_URL, think=False)]
    if name == "media_t2i_off_cdn":
        return [*head, _image_stream(sc, OFF_CDN_URL, think=False)]
    raise KeyError(name)


def build(sc: MediaScenario) -> Cassette:
    """The cassette of one media scenario (in memory)."""
    return synthetic_cassette(sc.name, sc.description, sc.protocol_sections, _build(sc))


def build_all() -> list[Cassette]:
    """Every media cassette, in :data:`MEDIA_SCENARIOS` order (written into ``cassettes/``)."""
    return [build(sc) for sc in MEDIA_SCENARIOS]
