"""Image and video generation: sizes, media-URL policy and t2v task answers. Pure.

Protocol facts (docs/protocol.md):

- §6.1 t2i takes an aspect ratio (``1:1``, ``3:4``, ``4:3``, ``16:9``, ``9:16``) as the top-level
  ``size``; OpenAI clients send pixel sizes, mapped by :func:`aspect_ratio`.
- §5.3/§5.5 the image URL arrives in an ``image_gen`` (or ``image_edit``, ``image_gen_tool``)
  frame: ``content`` or ``extra.image_list[].image`` / ``extra.tool_result[].image``.
- §1 generated assets live on ``cdn.qwenlm.ai`` (signed ``?key=`` URLs) and Alibaba hosts
  (``*.alicdn.com``, ``*.aliyuncs.com``); §6.4 item 4: a catch-all extractor once handed out the
  WAF's captcha link (``…/_____tmd_____/punish?x5secdata=…``) as the result.
  :class:`MediaPolicy` decides which URLs are answers.
- §6.3 t2v: the task id at ``data.messages[0].extra.wanx.task_id`` (or anywhere as
  ``task_id``/``taskId``); ``GET /api/v1/tasks/status/<id>`` says ``task_status`` (``success``
  with the URL in ``content``; ``failed``/``error``; anything else: keep polling).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from proxy.errors import ClientRequestError, quote

__all__ = [
    "ASPECT_RATIOS",
    "DEFAULT_MEDIA_HOSTS",
    "OPENAI_SIZES",
    "MediaPolicy",
    "TaskState",
    "aspect_ratio",
    "find_task_id",
    "host_allowed",
    "is_punish_url",
    "task_state",
]

ASPECT_RATIOS = ("1:1", "3:4", "4:3", "16:9", "9:16")
"""The ratios the v2 t2i/t2v ``size`` accepts (docs/protocol.md §6.1, [H])."""

OPENAI_SIZES: dict[str, str] = {
    "256x256": "1:1",
    "512x512": "1:1",
    "1024x1024": "1:1",
    "1536x1024": "4:3",
    "1024x1536": "3:4",
    "1792x1024": "16:9",
    "1024x1792": "9:16",
    "auto": "1:1",
}
"""OpenAI ``size`` values to ratios. ``1536x1024`` (3:2) goes to ``4:3`` and ``1792x1024`` (7:4)
to ``16:9``, the mapping Rfym21 uses (§6.1); ``auto`` becomes ``1:1``."""

DEFAULT_MEDIA_HOSTS = ("cdn.qwenlm.ai", "*.qwenlm.ai", "*.alicdn.com", "*.aliyuncs.com")
"""Hosts whose URLs may be handed out as generated media (docs/protocol.md §1)."""

_PUNISH_MARKERS = ("_____tmd_____", "x5secdata", "/punish", "action=captcha")
_WXH = re.compile(r"^\s*(\d{1,5})\s*[x×*]\s*(\d{1,5})\s*$")


def aspect_ratio(size: str | None, *, default: str = "1:1") -> str:
    """The v2 ``size`` for an OpenAI ``size``.

    Accepts ``None`` (``default``), a ratio of :data:`ASPECT_RATIOS`, a key of
    :data:`OPENAI_SIZES`, or any ``WxH`` (also ``W*H``), which maps to the nearest ratio.
    Raises :class:`~proxy.errors.ClientRequestError` (``param="size"``) otherwise.
    """
    if size is None or not size.strip():
        return default
    s = size.strip().lower()
    if s in ASPECT_RATIOS:
        return s
    if s in OPENAI_SIZES:
        return OPENAI_SIZES[s]
    m = _WXH.match(s)
    if m and int(m.group(1)) > 0 and int(m.group(2)) > 0:
        wanted = int(m.group(1)) / int(m.group(2))

        def distance(r: str) -> float:
            w, h = (int(x) for x in r.split(":"))
            return abs(w / h - wanted)

        return min(ASPECT_RATIOS, key=distance)
    raise ClientRequestError(
        f"size {quote(size)} is not supported; use one of {', '.join(OPENAI_SIZES)} or an aspect "
        f"ratio ({', '.join(ASPECT_RATIOS)})",
        param="size",
    )


def is_punish_url(url: str) -> bool:
    """True for the Aliyun WAF captcha link (``_____tmd_____``, ``x5secdata``; docs/protocol.md
    §10)."""
    low = url.lower()
    return any(m in low for m in _PUNISH_MARKERS)


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``host`` matches one of ``patterns``: exact names or ``*.suffix`` (any depth)."""
    host = host.lower().rstrip(".")
    for p in patterns:
        p = p.lower()
        if p.startswith("*."):
            if host.endswith(p[1:]):
                return True
        elif host == p:
            return True
    return False


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    """Which upstream URLs are generated media, and the URL a client gets for each.

    ``allowed_hosts``: host patterns (:func:`host_allowed`). ``exclude``: URLs that are never the
    answer (the uploaded source of an image edit, compared without the query). ``rewrite_to``:
    when set (offline mode), an accepted ``https://<host>/<path>?<query>`` is handed out as
    ``<rewrite_to>/<path>?<query>``; online the upstream URL is handed out unchanged.
    """

    allowed_hosts: tuple[str, ...] = DEFAULT_MEDIA_HOSTS
    exclude: frozenset[str] = frozenset()
    rewrite_to: str | None = None

    def check(self, url: str) -> Literal["ok", "excluded"] | str:
        """``"ok"``, ``"excluded"`` (a source echo) or the reason ``url`` is refused.

        Reasons start with ``"captcha"`` for the WAF punish link.
        """
        if is_punish_url(url):
            return "captcha: the URL is the WAF's captcha (punish) link"
        if _UNSAFE_URL_CHAR.search(url):
            # a browser reads a backslash as "/" (https://evil.example<backslash>@cdn.qwenlm.ai/
            # is on evil.example to it, on cdn.qwenlm.ai to urlsplit): they must not disagree
            return "not a plain URL (a backslash or a control character in it)"
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:  # an unclosed IPv6 bracket
            return "not a valid URL"
        if parts.scheme not in ("http", "https") or not host:
            return f"not an http(s) URL ({url[:40]!r})"
        if parts.username is not None or not _HOST_NAME.fullmatch(host):  # (user info)
            return "the URL's host part is not a plain host name (user info or odd characters)"
        key = _echo_key(parts)
        if key not in ("", "/") and key in {_echo_key(urlsplit(u)) for u in self.exclude}:
            return "excluded"
        if not host_allowed(host, self.allowed_hosts):
            return f"host {host} is not on the media CDN allow-list"
        return "ok"

    def public(self, url: str) -> str:
        """The URL handed to the client (and fetched by the proxy itself)."""
        if self.rewrite_to is None:
            return url
        parts = urlsplit(url)
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.rewrite_to.rstrip('/')}{parts.path or '/'}{query}"


#: what a media URL from the site may not hold: a backslash (read as ``/`` by browsers) and ASCII
#: control characters (tab and newline are dropped by browsers, so they too could join names)
_UNSAFE_URL_CHAR = re.compile(r"[\\\x00-\x1f\x7f]")
#: a host name as the allow-list compares it: letters, digits, dots and hyphens
_HOST_NAME = re.compile(r"[a-z0-9.-]+")


def _echo_key(parts: SplitResult) -> str:
    """What identifies an uploaded file's URL when the site echoes it back: its path (an object
    key, unique per upload), whatever the host's letter case, the query or the host it is
    given under (the CDN or the bucket's own address)."""
    return parts.path


# -- t2v tasks (§6.3) ----------------------------------------------------------------------------


def _walk(obj: Any, depth: int = 0) -> Iterator[tuple[str, Any]]:
    if depth > 12:
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k), v
            yield from _walk(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v, depth + 1)


def find_task_id(payload: Any) -> str | None:
    """The t2v task id of a completions JSON answer, or ``None``.

    First ``data.messages[0].extra.wanx.task_id`` ([H]), then any ``task_id``/``taskId`` string
    anywhere in the body ([M], docs/protocol.md §6.3).
    """
    try:
        tid = payload["data"]["messages"][0]["extra"]["wanx"]["task_id"]
        if isinstance(tid, str) and tid:
            return tid
    except (KeyError, IndexError, TypeError):
        pass
    for key, value in _walk(payload):
        if key in ("task_id", "taskId") and isinstance(value, str) and value:
            return value
    return None


@dataclass(frozen=True, slots=True)
class TaskState:
    """One task-status answer: ``state`` and, on success, the media ``url``.

    ``state`` is ``"success"``, ``"failed"`` or ``"running"`` (every other value, including an
    unknown one: keep polling until the deadline). ``raw_status`` is the upstream's word and
    ``detail`` its message, if any (secret-free only after :func:`proxy.errors.scrub`).
    """

    state: Literal["success", "failed", "running"]
    raw_status: str
    url: str | None = None
    detail: str = ""


_URL_KEYS = ("content", "url", "video_url", "videoUrl", "image_url", "file_url")


def task_state(payload: Any) -> TaskState:
    """Read ``GET /api/v1/tasks/status/<id>``: flat ``{task_status, content}`` or in ``data``."""
    body = payload.get("data") if isinstance(payload, dict) else None
    if not (isinstance(body, dict) and "task_status" in body):
        body = payload if isinstance(payload, dict) else {}
    raw = str(body.get("task_status") or body.get("status") or "").strip()
    low = raw.lower()
    detail = str(body.get("message") or body.get("error") or body.get("details") or "")
    if low in ("success", "succeeded", "completed", "done", "finished"):
        url = None
        for key in _URL_KEYS:
            v = body.get(key)
            if isinstance(v, str) and v.startswith(("http://", "https://")):
                url = v
                break
        return TaskState("success", raw, url, detail)
    if low in ("failed", "failure", "error", "cancelled", "canceled"):
        return TaskState("failed", raw, None, detail)
    return TaskState("running", raw, None, detail)
