"""OpenAI chat request to chat.qwen.ai v2 request bodies. Pure: no I/O, no clock of its own.

The v2 flow (docs/protocol.md §3, §4): ``POST /api/v2/chats/new`` creates a chat and returns its id;
``POST /api/v2/chat/completions?chat_id=<id>`` sends exactly ONE user message and streams the
answer. The OpenAI history is therefore flattened into one prompt (§4.1 "One message only",
option (b); §11.2). Timestamps are milliseconds in ``chats/new`` and seconds in completions.
Bodies are serialised by :func:`encode_json` to UTF-8 bytes (never ``\\u`` escapes for Chinese and
never locale-dependent), so what the recorder sees is exactly what was sent.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from proxy.errors import ClientRequestError, UnsupportedContentError, quote

__all__ = [
    "MAX_PROMPT_CHARS",
    "MEDIA_CHAT_TYPES",
    "MediaPart",
    "MessageLike",
    "ModelRoute",
    "chats_new_body",
    "completion_body",
    "encode_json",
    "flatten_messages",
    "media_parts",
    "new_uuid",
    "no_text",
    "split_model_name",
    "text_of",
]

#: The site caps one message at 131072 characters (docs/protocol.md §4.1, [L]).
MAX_PROMPT_CHARS = 131072

# Longest first: "-image-edit" must win over "-image".
_SUFFIXES = {
    "thinking": "thinking",
    "search": "search",
    "image-edit": "image_edit",
    "image": "image",
    "video": "video",
}

MEDIA_CHAT_TYPES = frozenset({"t2i", "image_edit", "t2v"})
"""Chat types that generate media (docs/protocol.md §6): no thinking, a top-level ``size``."""


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """Where an OpenAI model name goes upstream.

    ``model`` is the upstream id, ``chat_type`` the v2 chat type (``t2t``, ``search``, ``t2i``
    for ``-image``, ``image_edit`` for ``-image-edit``, ``t2v`` for ``-video``), ``thinking``
    whether ``feature_config.thinking_enabled`` is set.
    """

    model: str
    chat_type: str = "t2t"
    thinking: bool = False


def split_model_name(name: str) -> tuple[str, frozenset[str]]:
    """Split ``qwen3-max-thinking-search`` into ``("qwen3-max", {"thinking", "search"})``.

    Media suffixes give the flags ``image``, ``image_edit`` and ``video``.

    Suffixes are the variants of :mod:`proxy.qwen.models` (docs/protocol.md §8); an id that is
    itself a real upstream id is resolved by the caller before suffixes are considered.
    """
    flags: set[str] = set()
    base = name
    changed = True
    while changed:
        changed = False
        for suffix, flag in _SUFFIXES.items():
            tail = "-" + suffix
            if base.endswith(tail) and len(base) > len(tail):
                base = base[: -len(tail)]
                flags.add(flag)
                changed = True
    return base, frozenset(flags)


class MessageLike(Protocol):
    """A message with a ``role`` and OpenAI chat ``content`` (text, parts or ``None``): an
    OpenAI :class:`~proxy.api_models.ChatMessage` or a :class:`~proxy.conversation.Turn`."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str | list[dict[str, Any]] | None: ...


_MEDIA_PART_TYPES = frozenset({"image_url", "input_image", "file", "input_file", "input_audio"})


@dataclass(frozen=True, slots=True)
class MediaPart:
    """One non-text part of a chat message, to be uploaded (docs/protocol.md §7).

    ``source`` is a ``data:`` URI or an http(s) URL; ``expect`` the kind it must hold
    (``image`` for ``image_url`` parts, ``audio`` for ``input_audio``, ``None``: any, from the
    content type); ``filename`` the client's name for it, if any; ``param`` where the source is
    in the request (``messages[0].content[1].image_url.url``), named by errors about it.
    """

    source: str
    expect: Literal["image", "audio"] | None
    filename: str | None = None
    param: str | None = None


def _media_part(part: dict[str, Any], param: str | None) -> MediaPart:
    kind = part.get("type")
    if kind in ("image_url", "input_image"):
        img = part.get("image_url")
        url = img.get("url") if isinstance(img, dict) else img
        if isinstance(url, str) and url:
            return MediaPart(url, "image", param=param)
    elif kind in ("file", "input_file"):
        inner = part.get("file")
        ref: dict[str, Any] = inner if isinstance(inner, dict) else part
        data = ref.get("file_data") or ref.get("file_url")
        if isinstance(data, str) and data:
            name = ref.get("filename")
            return MediaPart(data, None, name if isinstance(name, str) else None, param)
        raise UnsupportedContentError(
            "file parts must carry `file_data` (a data: URI); uploaded `file_id`s are not "
            "supported by this proxy",
            param=param or "messages",
        )
    elif kind == "input_audio":
        audio = part.get("input_audio")
        if isinstance(audio, dict) and isinstance(audio.get("data"), str):
            fmt = str(audio.get("format") or "wav")
            return MediaPart(
                f"data:audio/{fmt};base64,{audio['data']}", "audio", f"audio.{fmt}", param
            )
    raise UnsupportedContentError(
        f"a {quote(kind)} message part has no usable data", param=param or "messages"
    )


def _is_media(kind: object) -> bool:
    """True for the ``type`` of a media part (any JSON value may stand there)."""
    return isinstance(kind, str) and kind in _MEDIA_PART_TYPES


def media_parts(messages: Sequence[MessageLike]) -> list[MediaPart]:
    """The media parts of every message, in order (``image_url``, ``file``, ``input_audio``),
    each with its ``param`` when the message knows where its parts are (a
    :class:`~proxy.conversation.Turn`'s ``part_params``).

    Raises :class:`UnsupportedContentError` for a media part without usable data.
    """
    found: list[MediaPart] = []
    for message in messages:
        content = message.content
        if isinstance(content, list):
            params: tuple[str, ...] = getattr(message, "part_params", ())
            for j, p in enumerate(content):
                if _is_media(p.get("type")):
                    found.append(_media_part(p, params[j] if j < len(params) else None))
    return found


def text_of(message: MessageLike) -> str:
    """The text of a message: its string content, or its text parts joined by newlines (media
    parts skipped). Raises :class:`UnsupportedContentError` for unknown part types."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    pieces: list[str] = []
    for part in content:
        kind = part.get("type")
        if kind == "text" or (kind is None and "text" in part):
            text = part.get("text")
            if not isinstance(text, str):
                raise ClientRequestError(
                    "a text content part needs `text`, a string", param="messages"
                )
            pieces.append(text)
        elif _is_media(kind):
            continue  # uploaded separately (media_parts)
        else:
            raise UnsupportedContentError(
                f"message content parts of type {quote(kind)} are not supported by this proxy yet; "
                "send text parts only",
                param="messages",
            )
    return "\n".join(pieces)


_ROLE_LABELS = {
    "system": "System",
    "developer": "System",
    "user": "User",
    "assistant": "Assistant",
    "tool": "Tool",
    "function": "Tool",
}


def flatten_messages(
    messages: Sequence[MessageLike], *, allow_empty: bool = False, param: str = "messages"
) -> str:
    """Turn an OpenAI history into the single prompt the v2 protocol accepts.

    One user message (the common case) is sent verbatim. Otherwise system messages come first,
    then the turns, each as ``"<Role>: <text>"`` separated by blank lines; chat.qwen.ai has no
    system slot, so system text is prepended (docs/protocol.md §4.1). Raises
    :class:`UnsupportedContentError` for unknown parts and when the result is empty. Media
    parts are skipped here (:func:`media_parts` collects them); ``allow_empty`` accepts a prompt
    with no text (a message that is only an image).

    A prompt with no text but whitespace is refused too (:func:`no_text`), naming ``param`` (the
    field of the messages) or, when one message holds all the text there is, that message's
    content.
    """
    texts = [(m.role, text_of(m)) for m in messages]
    if len(texts) == 1 and texts[0][0] == "user":
        prompt = texts[0][1]
    else:
        system = [t for r, t in texts if r in ("system", "developer") and t]
        turns = [
            f"{_ROLE_LABELS[r]}: {t}" for r, t in texts if r not in ("system", "developer") and t
        ]
        blocks = ([f"System: {chr(10).join(system)}"] if system else []) + turns
        prompt = "\n\n".join(blocks)
    if not prompt.strip() and not allow_empty:
        raise no_text(messages, param)
    return prompt


def no_text(messages: Sequence[MessageLike], param: str) -> UnsupportedContentError:
    """The 400 for a prompt with no text to send (empty or only whitespace: the site answers
    such a prompt with nothing, so it is refused rather than sent). Its ``param`` is where the
    text would be: the content of the one message that is not a system message, when there is
    one and it knows where it is (a :class:`~proxy.conversation.Turn`'s ``where``), else
    ``param``, the field of the messages (``messages``; ``input`` on the Responses API)."""
    others = [m for m in messages if m.role not in ("system", "developer")]
    where = getattr(others[0], "where", None) if len(others) == 1 else None
    return UnsupportedContentError(
        "the messages hold no text to send: they are empty or only whitespace, and this "
        "gateway refuses such a prompt rather than send it (the site answers it with nothing)",
        param=where or param,
    )


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_uuid() -> str:
    """A random version-4 UUID string (RFC 9562 layout) for request and message ids.

    Drawn from the ``random`` module's generator (seeded from the OS at start-up), not from
    ``os.urandom``: these ids need to be unique, not unpredictable, and this costs no system
    call (``uuid.uuid4()`` makes one per id).
    """
    h = "%032x" % random.getrandbits(128)  # noqa: UP031 (the fastest formatting here)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def chats_new_body(
    route: ModelRoute, *, now_ms: int, title: str = "New Chat", chat_mode: str = "normal"
) -> dict[str, Any]:
    """Body of ``POST /api/v2/chats/new`` (docs/protocol.md §3); ``now_ms`` in milliseconds.

    ``title`` marks the chats the gateway made (the reconciler finds them by it); ``chat_mode``
    ``"local"`` asks for a temporary chat (§13.2, unproven).
    """
    return {
        "title": title,
        "models": [route.model],
        "chat_mode": chat_mode,
        "chat_type": route.chat_type,
        "timestamp": now_ms,
    }


def completion_body(
    route: ModelRoute,
    *,
    chat_id: str,
    prompt: str,
    now_s: int,
    new_id: Callable[[], str] = new_uuid,
    size: str | None = None,
    files: Sequence[dict[str, Any]] = (),
    parent_id: str | None = None,
    chat_mode: str = "normal",
) -> dict[str, Any]:
    """Body of ``POST /api/v2/chat/completions?chat_id=…`` (docs/protocol.md §4.1).

    ``parent_id`` (the previous answer's ``response_id``) continues the chat's conversation
    on the site (§4.1 (a)): it goes at the top level and in the message.

    ``stream: true`` (``stream: false`` answers Bad_Request since 2025-11, §11.3) except for
    ``t2v``, which still takes ``stream: false`` and answers JSON (§6.3); ``version: "2.1"``,
    ``incremental_output: true`` and ``feature_config.output_schema: "phase"`` (without it frames
    carry no phase, §11.7). ``now_s`` is in seconds. Media chat types (§6.1–6.3) get the aspect
    ratio ``size`` at the top level (default ``1:1``); ``files`` are §7.4 file entries.
    """
    feature: dict[str, Any] = {"thinking_enabled": route.thinking, "output_schema": "phase"}
    if route.thinking:
        feature["thinking_format"] = "summary"
    if route.chat_type == "search":
        feature["research_mode"] = "normal"
    body: dict[str, Any] = {
        "stream": route.chat_type != "t2v",
        "version": "2.1",
        "incremental_output": True,
        "chat_id": chat_id,
        "chat_mode": chat_mode,
        "model": route.model,
        "parent_id": parent_id,
        "messages": [
            {
                "fid": new_id(),
                "parentId": parent_id,
                "childrenIds": [new_id()],
                "role": "user",
                "content": prompt,
                "user_action": "chat",
                "files": list(files),
                "timestamp": now_s,
                "models": [route.model],
                "chat_type": route.chat_type,
                "feature_config": feature,
                "extra": {"meta": {"subChatType": route.chat_type}},
                "sub_chat_type": route.chat_type,
                "parent_id": parent_id,
            }
        ],
        "timestamp": now_s,
    }
    if route.chat_type in MEDIA_CHAT_TYPES:
        body["size"] = size or "1:1"
    return body


def encode_json(obj: Any) -> bytes:
    """Serialise ``obj`` as compact UTF-8 JSON bytes (non-ASCII kept as UTF-8, not escaped)."""
    return orjson.dumps(obj)
