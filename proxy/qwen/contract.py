"""What the gateway depends on in chat.qwen.ai's answers: the consumer contract. Pure data.

Every upstream field the reading modules (:data:`READERS`) look at is listed in :data:`FIELDS`,
tied to the feature it serves and to how that feature fails when the field is gone, changes type
or stops parsing. Beside the fields: the SSE frame kinds (:data:`FRAME_KINDS`), ``phase`` values
(:data:`PHASES`), ``status`` values (:data:`STATUSES`), error codes (:data:`ERROR_CODES`) and the
answer content types per endpoint (:data:`ENDPOINTS`) the gateway knows.

The drift diff (``recorder/schema.py``) judges traffic by this table: a difference matters only
when it touches something listed here. ``recorder`` never imports ``proxy``, so the table travels
as JSON: :func:`contract_json` is written to ``schemas/gateway_contract.json`` (``python -m
proxy.qwen.contract schemas/gateway_contract.json``; ``tests/test_contract.py`` checks the file
is current and that the table matches the code: every string key the reading modules read is
listed, and every listed key is read).

Paths use the drift diff's notation: ``$`` the frame or body, ``.name`` a field, ``[]`` any
array item, ``["response.created"]`` a key that is not an identifier. ``where`` is the answer or
frame kind of ``recorder.schema.frame_kind`` (``delta:answer``, ``envelope:*``, ``json``, …; a
trailing ``*`` matches any suffix). A ``.*`` path segment stands for any one key
(``local_mcp.*[]``: any tool namespace). ``endpoint`` is an endpoint key of the diff without its
``[chat_type]`` variant (it covers every variant) or with one (only that variant); ``*`` is every
endpoint. Sources: docs/protocol.md §3, §5.2–§5.7, §6, §7, §8, §10, §13.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ANSWER_STREAM",
    "ENDPOINTS",
    "ERROR_CODES",
    "FEATURES",
    "FIELDS",
    "FRAME_KINDS",
    "NOT_FIELDS",
    "PHASES",
    "READERS",
    "STATUSES",
    "VALUES",
    "Endpoint",
    "Field",
    "contract_json",
    "render",
]

COMPLETIONS = "POST /api/v2/chat/completions"
MODELS = "GET /api/models"
CHATS_NEW = "POST /api/v2/chats/new"
STS = "POST /api/v2/files/getstsToken"
TASK_STATUS = "GET /api/v1/tasks/status/{id}"
CHATS_LIST = "GET /api/v2/chats"

FEATURES: dict[str, str] = {
    "chat": "opening a chat (chats/new) and following the turn's response",
    "answer": "the answer text of chat completions",
    "reasoning": "reasoning_content (thinking models)",
    "usage": "token usage in answers",
    "sources": "web-search sources (url_citation annotations)",
    "images": "image generation and image edits",
    "video": "video generation (t2v tasks)",
    "models": "the model list (/v1/models) and model routing",
    "uploads": "file and image uploads (STS grant)",
    "errors": "mapping upstream errors to the right HTTP status and advice",
    "tools": (
        "native tool calls (tools declared in feature_config.local_mcp, docs/protocol.md §5.6)"
    ),
}
"""Feature ids used by :data:`FIELDS` (and by ``qwen-proxy doctor`` to tie checks to drift)."""


@dataclass(frozen=True, slots=True)
class Field:
    """One upstream field the gateway reads.

    ``types``: the JSON types the code accepts (``string``, ``integer``, ``number``, ``boolean``,
    ``array``, ``object``, ``null``); a new type outside them is breaking. ``use``: what the
    gateway does with it; ``failure``: what users see when it is gone, changed type or
    unparseable (empty when nothing fails: the field is only consulted). ``reader``: the module
    that reads it.
    """

    endpoint: str
    where: str
    path: str
    types: tuple[str, ...]
    feature: str
    use: str
    failure: str
    reader: str


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint the gateway calls: the content types it can read there (``answers``;
    the first is the expected one), the feature it serves, and how that fails otherwise."""

    key: str
    answers: tuple[str, ...]
    feature: str
    failure: str


_T = "proxy.qwen.translate"
_E = "proxy.qwen.envelope"
_M = "proxy.qwen.models"
_MD = "proxy.qwen.media"
_F = "proxy.qwen.files"
_C = "proxy.qwen.client"
_CL = "proxy.cleanup"

READERS = (_T, _E, _M, _MD, _F, _C, _CL)
"""The modules that read upstream answers (scanned by tests/test_contract.py)."""

ANSWER_STREAM = "text/event-stream"

_EMPTY = "answers come back empty: HTTP 502 upstream_empty ('ended the stream without an answer')"
_NO_IMAGE = "image requests fail with HTTP 502 upstream_no_media ('without an image')"
_REASONING_EMPTY = "reasoning_content will be empty"
_NO_TOOLS = "native tool calls are lost: the client gets no tool_calls"
_GENERIC_ERROR = "upstream errors become a generic HTTP 502 upstream_error without advice"
_D = "$.choices[].delta"

FIELDS: tuple[Field, ...] = (
    # -- the stream (docs/protocol.md §5.2) --------------------------------------------------------
    Field(COMPLETIONS, "response.created", '$["response.created"]', ("object",), "chat",
          "opens the turn", "", _T),
    Field(COMPLETIONS, "response.created", '$["response.created"].chat_id', ("string",),
          "chat", "the chat the turn belongs to", "", _T),
    Field(COMPLETIONS, "response.created", '$["response.created"].response_id', ("string",),
          "chat", "the turn's response id: the parent_id of the next turn of a native "
          "conversation, what a stop names, and frames of another response are ignored",
          "native conversations cannot continue (every follow-up turn starts over as a new, "
          "flattened chat) and frames of a second response may leak into the answer", _T),
    Field(COMPLETIONS, "delta:*", "$.response_id", ("string",), "answer",
          "the response a frame belongs to (2026 frames)", "", _T),
    Field(COMPLETIONS, "response.info", '$["response.info"]', ("object",), "answer",
          "keep-alive frames, skipped", "", _T),
    Field(COMPLETIONS, "response.completed", '$["response.completed"]', ("object",), "answer",
          "an end-of-stream marker", "", _T),
    Field(COMPLETIONS, "delta:*", "$.choices", ("array",), "answer",
          "the frame's deltas", _EMPTY, _T),
    Field(COMPLETIONS, "delta:*", _D, ("object",), "answer", "the frame's delta", _EMPTY, _T),
    Field(COMPLETIONS, "delta:*", f"{_D}.phase", ("string", "null"), "answer",
          "tells answer text from reasoning, search, image and tool frames",
          "reasoning and tool frames are taken for answer text (they leak into the answer) and "
          + _REASONING_EMPTY, _T),
    Field(COMPLETIONS, "delta:*", f"{_D}.status", ("string",), "answer",
          "the end of the answer (status finished) and in-stream errors (status error)",
          "streams never finish: answers end in HTTP 502 upstream_truncated", _T),
    Field(COMPLETIONS, "delta:answer", f"{_D}.content", ("string", "null"), "answer",
          "the answer text (incremental pieces)", _EMPTY, _T),
    Field(COMPLETIONS, "delta:<none>", f"{_D}.content", ("string", "null"), "answer",
          "the answer text of frames without a phase (older models)", _EMPTY, _T),
    Field(COMPLETIONS, "delta:think", f"{_D}.content", ("string", "null"), "reasoning",
          "reasoning text (think phase)", _REASONING_EMPTY, _T),
    Field(COMPLETIONS, "delta:thinking_summary", f"{_D}.extra", ("object",), "reasoning",
          "the thinking_summary payload", _REASONING_EMPTY, _T),
    Field(COMPLETIONS, "delta:thinking_summary", f"{_D}.extra.summary_thought", ("object",),
          "reasoning", "the reasoning snapshot", _REASONING_EMPTY, _T),
    Field(COMPLETIONS, "delta:thinking_summary", f"{_D}.extra.summary_thought.content",
          ("array", "string"), "reasoning", "reasoning text (cumulative snapshots)",
          _REASONING_EMPTY, _T),
    Field(COMPLETIONS, "delta:*", "$.usage", ("object",), "usage", "token usage",
          "usage reports 0 tokens", _T),
    Field(COMPLETIONS, "delta:*", "$.usage.input_tokens", ("integer",), "usage",
          "prompt_tokens", "usage reports 0 prompt tokens", _T),
    Field(COMPLETIONS, "delta:*", "$.usage.output_tokens", ("integer",), "usage",
          "completion_tokens", "usage reports 0 completion tokens", _T),
    # -- web search (§5.5) ------------------------------------------------------------------
    Field(COMPLETIONS, "delta:web_search", f"{_D}.extra", ("object", "null"), "sources",
          "the search payload", "answers carry no url_citation annotations", _T),
    Field(COMPLETIONS, "delta:web_search", f"{_D}.extra.tool_result", ("object", "array"),
          "sources", "search results (2026 layout)", "answers carry no url_citation annotations",
          _T),
    Field(COMPLETIONS, "delta:web_search", f"{_D}.extra.tool_result.docs", ("array",),
          "sources", "search results (2026 layout)", "answers carry no url_citation annotations",
          _T),
    Field(COMPLETIONS, "delta:web_search", f"{_D}.extra.web_search_info", ("array",),
          "sources", "search results (2025 layout)", "", _T),
    *(
        Field(COMPLETIONS, "delta:web_search", f"{_D}.extra.tool_result.docs[].{name}",
              ("string",) if name == "url" else ("string", "null"), "sources",
              f"a source's {name}",
              "answers carry no url_citation annotations" if name == "url" else "", _T)
        for name in ("url", "title", "snippet", "hostname")
    ),
    # -- images (§5.3, §5.5, §6) ------------------------------------------------------------
    *(
        Field(COMPLETIONS, f"delta:{phase}", f"{_D}.content", ("string", "null"), "images",
              "the generated image's URL", _NO_IMAGE, _T)
        for phase in ("image_gen", "image_edit", "image_gen_tool", "image_edit_tool")
    ),
    Field(COMPLETIONS, "delta:image_*", f"{_D}.extra.image_list", ("array", "object"),
          "images", "image URLs of tool-style image frames", "", _T),
    Field(COMPLETIONS, "delta:image_*", f"{_D}.extra.image_list[].image", ("string",),
          "images", "an image URL", "", _T),
    Field(COMPLETIONS, "delta:image_*", f"{_D}.extra.image_list[].url", ("string",),
          "images", "an image URL", "", _T),
    Field(COMPLETIONS, "delta:image_*", f"{_D}.extra.tool_result[].image", ("string",),
          "images", "an image URL", "", _T),
    Field(COMPLETIONS, "delta:image_*", f"{_D}.extra.tool_result[].url", ("string",),
          "images", "an image URL", "", _T),
    Field(COMPLETIONS, "delta:image_*", f"{_D}.extra.wanx", ("object",), "images",
          "the older wanx layout", "", _T),
    Field(COMPLETIONS, "delta:image_*", f"{_D}.extra.wanx.image_list", ("array",), "images",
          "image URLs of the older wanx layout", "", _T),
    # -- native tool calls (§5.5, §5.6): extra.local_mcp {"<namespace>": [{tool_name, params}]} -
    Field(COMPLETIONS, "delta:local_tool", f"{_D}.extra", ("object",), "tools",
          "the native tool-call payload", _NO_TOOLS, _T),
    Field(COMPLETIONS, "delta:local_tool", f"{_D}.extra.local_mcp", ("object",), "tools",
          "tool calls by namespace (the namespace key is arbitrary, §13.2)", _NO_TOOLS, _T),
    Field(COMPLETIONS, "delta:local_tool", f"{_D}.extra.local_mcp.*[].tool_name", ("string",),
          "tools", "the called tool (<namespace>-<name>)", _NO_TOOLS, _T),
    Field(COMPLETIONS, "delta:local_tool", f"{_D}.extra.local_mcp.*[].name", ("string",),
          "tools", "the called tool (variant)", "", _T),
    Field(COMPLETIONS, "delta:local_tool", f"{_D}.extra.local_mcp.*[].params", ("object",),
          "tools", "the call's arguments", "tool calls reach the client with empty arguments",
          _T),
    Field(COMPLETIONS, "delta:local_tool", f"{_D}.extra.local_mcp.*[].arguments", ("object",),
          "tools", "the call's arguments (variant)", "", _T),
    # -- errors (§5.7, §10) -----------------------------------------------------------------
    Field("*", "waf", "$.ret", ("array",), "errors",
          "recognises the captcha wall (FAIL_SYS_USER_VALIDATE / RGV587)",
          "captcha walls are reported as a protocol error instead of HTTP 503 upstream_captcha "
          "with the advice to solve the slider", _E),
    Field("*", "envelope:*", "$.success", ("boolean",), "errors",
          "recognises an error envelope",
          "error envelopes are reported as 'JSON this proxy does not understand'", _E),
    Field("*", "envelope:*", "$.data", ("object",), "errors", "the envelope's error",
          _GENERIC_ERROR, _E),
    Field("*", "envelope:*", "$.data.code", ("string",), "errors",
          "maps the error to its status (RateLimited 429, Unauthorized 401, Bad_Request 400)",
          _GENERIC_ERROR, _E),
    Field("*", "envelope:*", "$.data.details", ("string", "null"), "errors",
          "the error text passed on", "", _E),
    Field("*", "envelope:*", "$.data.message", ("string", "null"), "errors",
          "the error text passed on", "", _E),
    Field("*", "envelope:RateLimited", "$.data.num", ("integer", "number"), "errors",
          "hours to wait: the Retry-After of HTTP 429", "rate-limit answers lose Retry-After",
          _E),
    Field("*", "error", "$.error", ("object", "string"), "errors", "an error inside a stream",
          "in-stream errors are ignored: answers end as truncated or empty", _E),
    Field("*", "error", "$.error.code", ("string", "null"), "errors", "maps the error",
          _GENERIC_ERROR, _E),
    Field("*", "error", "$.error.details", ("string", "null"), "errors", "the error text",
          "", _E),
    Field("*", "error", "$.error.message", ("string", "null"), "errors", "the error text",
          "", _E),
    Field("*", "json", "$.data.error", ("object",), "errors", "an error inside data", "", _E),
    Field("*", "json", "$.data.error.code", ("string",), "errors", "maps the error", "", _E),
    Field("*", "json", "$.data.error.details", ("string",), "errors", "the error text", "", _E),
    Field("*", "json", "$.data.error.message", ("string",), "errors", "the error text", "", _E),
    Field("*", "json", "$.code", ("string",), "errors", "a bare error object's code", "", _E),
    Field("*", "json", "$.details", ("string",), "errors", "a bare error object's text", "", _E),
    Field("*", "json", "$.message", ("string",), "errors", "a bare error object's text", "", _E),
    Field("*", "json", "$.choices", ("array",), "errors",
          "a body with choices is never taken for an error", "", _E),
    # -- model list (§8) --------------------------------------------------------------------
    Field(MODELS, "json", "$.data", ("array", "object"), "models", "the model list",
          "/v1/models is empty and every request fails with HTTP 404 model_not_found", _M),
    Field(MODELS, "json", "$.data.data", ("array",), "models", "the 2026 nested list", "", _M),
    Field(MODELS, "json", "$.data[].id", ("string",), "models", "the model ids offered",
          "/v1/models is empty and every request fails with HTTP 404 model_not_found", _M),
    Field(MODELS, "json", "$.data[].name", ("string",), "models", "display name", "", _M),
    Field(MODELS, "json", "$.data[].created", ("integer",), "models", "created time", "", _M),
    Field(MODELS, "json", "$.data[].info", ("object",), "models", "the model's metadata",
          "no -thinking, -search, -image or -video variants are offered", _M),
    Field(MODELS, "json", "$.data[].info.name", ("string",), "models", "display name", "", _M),
    Field(MODELS, "json", "$.data[].info.created_at", ("integer",), "models", "created time",
          "", _M),
    Field(MODELS, "json", "$.data[].info.is_active", ("boolean",), "models",
          "inactive models are hidden", "", _M),
    Field(MODELS, "json", "$.data[].info.meta", ("object",), "models", "capabilities",
          "no -thinking, -search, -image or -video variants are offered", _M),
    Field(MODELS, "json", "$.data[].info.meta.abilities", ("object",), "models",
          "abilities (numbers)", "", _M),
    Field(MODELS, "json", "$.data[].info.meta.abilities.thinking",
          ("integer", "number", "boolean", "string"),
          "models", "offers the -thinking variant", "-thinking variants disappear", _M),
    Field(MODELS, "json", "$.data[].info.meta.capabilities", ("object",), "models",
          "capabilities (booleans)", "", _M),
    Field(MODELS, "json", "$.data[].info.meta.capabilities.thinking", ("boolean",), "models",
          "offers the -thinking variant", "", _M),
    Field(MODELS, "json", "$.data[].info.meta.chat_type", ("array",), "models",
          "offers -search, -image, -image-edit and -video variants",
          "-search, -image, -image-edit and -video variants disappear", _M),
    # -- chats/new (§3) ---------------------------------------------------------------------
    Field(CHATS_NEW, "json", "$.data", ("object",), "chat", "the new chat",
          "every request fails with HTTP 502 ('returned no chat id')", _C),
    Field(CHATS_NEW, "json", "$.data.id", ("string",), "chat", "the server-issued chat id",
          "every request fails with HTTP 502 ('returned no chat id')", _C),
    # -- the chat list (§2), read by the cleanup of idle gateway chats ------------------------
    Field(CHATS_LIST, "json", "$.data", ("array", "object"), "chat", "the chat list",
          "idle gateway chats are no longer found and deleted (they pile up in the sidebar)", _C),
    Field(CHATS_LIST, "json", "$.data.data", ("array",), "chat", "a wrapped chat list", "", _C),
    Field(CHATS_LIST, "json", "$.data[].id", ("string",), "chat", "the chat to delete",
          "idle gateway chats are no longer deleted", _CL),
    Field(CHATS_LIST, "json", "$.data[].title", ("string",), "chat",
          "tells the gateway's chats (title prefix) from the user's",
          "idle gateway chats are no longer deleted", _CL),
    Field(CHATS_LIST, "json", "$.data[].updated_at", ("integer", "number"), "chat",
          "idle time", "", _CL),
    Field(CHATS_LIST, "json", "$.data[].created_at", ("integer", "number"), "chat",
          "idle time when updated_at is missing", "", _CL),
    # -- uploads (§7.1) ---------------------------------------------------------------------
    Field(STS, "json", "$.data", ("object",), "uploads", "the v2 grant (v1: flat)", "", _F),
    *(
        Field(STS, "json", f"$.data.{name}", ("string",), "uploads", f"the grant's {name}",
              "uploads fail with HTTP 502 ('upload grant lacks …')", _F)
        for name in (
            "access_key_id",
            "access_key_secret",
            "security_token",
            "bucketname",
            "file_id",
            "file_path",
            "file_url",
        )
    ),
    Field(STS, "json", "$.data.endpoint", ("string",), "uploads", "the OSS endpoint",
          "uploads fail unless region is given", _F),
    Field(STS, "json", "$.data.region", ("string",), "uploads", "the OSS region (v1)", "", _F),
    # -- video (§6.3) -----------------------------------------------------------------------
    *(
        Field(f"{COMPLETIONS} [t2v]", "json", f"$.data.messages{tail}", types, "video",
              "the task to poll (data.messages[0].extra.wanx.task_id)",
              "video requests fail unless a task_id appears elsewhere in the answer"
              if tail.endswith("task_id") else "", _MD)
        for tail, types in (
            ("", ("array",)),
            ("[].extra", ("object",)),
            ("[].extra.wanx", ("object",)),
            ("[].extra.wanx.task_id", ("string",)),
        )
    ),
    # Task status answers come flat ({task_status, content}, the recorded form) or wrapped in
    # data; both are read, the flat one is what the baseline knows (docs/protocol.md §6.3).
    Field(TASK_STATUS, "json", "$.data", ("object",), "video", "a wrapped task answer", "", _MD),
    *(
        Field(TASK_STATUS, "json", f"{base}.{name}", types, "video", use,
              failure if base == "$" else "", _MD)
        for base in ("$", "$.data")
        for name, types, use, failure in (
            ("task_status", ("string",), "the task state",
             "video requests poll until they time out (HTTP 504 upstream_task_timeout)"),
            ("status", ("string",), "the task state (variant)", ""),
            ("message", ("string", "null"), "the task's message", ""),
            ("error", ("string", "null"), "the task's error", ""),
            ("details", ("string", "null"), "the task's details", ""),
            ("content", ("string", "null"), "the video URL",
             "finished videos have no URL (HTTP 502)"),
            ("url", ("string", "null"), "a video URL candidate", ""),
            ("video_url", ("string", "null"), "a video URL candidate", ""),
            ("videoUrl", ("string", "null"), "a video URL candidate", ""),
            ("image_url", ("string", "null"), "a video URL candidate", ""),
            ("file_url", ("string", "null"), "a video URL candidate", ""),
        )
    ),
)  # fmt: skip
"""Every upstream field the gateway reads (see the module docstring)."""

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(COMPLETIONS, (ANSWER_STREAM, "application/json", "text/html"), "answer",
             "requests fail before the first token (the answer is not a stream)"),
    Endpoint(f"{COMPLETIONS} [t2v]", ("application/json",), "video",
             "video requests fail: the task answer is not JSON"),
    Endpoint(CHATS_NEW, ("application/json",), "chat",
             "no chat can be opened, so every chat request fails"),
    Endpoint(MODELS, ("application/json",), "models",
             "/v1/models is empty and every request fails with model_not_found"),
    Endpoint("GET /api/v2/models", ("application/json",), "models",
             "the fallback model list cannot be read"),
    Endpoint(STS, ("application/json",), "uploads", "uploads fail with HTTP 502"),
    Endpoint(CHATS_LIST, ("application/json",), "chat",
             "idle gateway chats are no longer found and deleted"),
    Endpoint(TASK_STATUS, ("application/json",), "video",
             "video requests poll until they time out"),
)  # fmt: skip
"""Endpoints the gateway calls and the content types it reads there (first: the normal one;
JSON and HTML on completions are error answers, classified by ``proxy/qwen/envelope.py``)."""

FRAME_KINDS: dict[str, str] = {
    "response.created": "opens the stream: chat and response ids",
    "response.info": "keep-alive, skipped",
    "response.completed": "an end marker",
    "delta:*": "content frames, by phase",
    "error": "an error inside the stream",
    "envelope:*": "an error envelope (before or inside the stream)",
    "waf": "the captcha wall",
    "done": "[DONE], an end marker",
}
"""SSE frame kinds the translator handles (other JSON frames are ignored; non-JSON data fails
the stream)."""

PHASES: dict[str, str] = {
    "answer": "answer text",
    "think": "reasoning text",
    "thinking_summary": "reasoning snapshots",
    "web_search": "sources",
    "image_gen": "image URL",
    "image_edit": "image URL",
    "image_gen_tool": "image URL",
    "image_edit_tool": "image URL",
    "image_gen_think": "ignored in image mode",
    "image_gen_websearch": "ignored in image mode",
    "local_tool": "native tool calls (docs/protocol.md §5.6)",
    **{
        p: "2026 bundle phase: never answer text, never breaks a stream (§13.2)"
        for p in (
            "search_result",
            "tool_call",
            "bash",
            "code_interpreter",
            "fetch_page",
            "generate_image",
            "edit_file",
            "read_file",
            "write_file",
            "present_file",
        )
    },
}
"""``delta.phase`` values the gateway knows; any other phase is ignored (and counted), never
answer text."""

STATUSES: dict[str, str] = {
    "typing": "more to come",
    "finished": "ends the answer (answer/image phases); not the stream for think phases",
    "error": "an error inside the stream",
}
"""``delta.status`` values the gateway knows."""

ERROR_CODES: dict[str, str] = {
    "RateLimited": "HTTP 429 with Retry-After",
    "Unauthorized": "HTTP 401 upstream_unauthorized",
    "Not_Login": "HTTP 401 upstream_unauthorized",
    "Bad_Request": "HTTP 400 (client fault) or 502",
    "FAIL_SYS_USER_VALIDATE": "HTTP 503 upstream_captcha",
    "ParallelLimited": "HTTP 429 (another answer is running on the account)",
    "Too_Many_Requests": "HTTP 429",
    "quotaLimited": "HTTP 429",
    "ExceedLimit": "HTTP 429",
    "quota_exhausted": "HTTP 429",
    "Internal_Server_Error": "HTTP 502 upstream_error",
    "Not_Found": "HTTP 502 upstream_error",
    "not found": "HTTP 502 upstream_error",
    "CHAT_NOT_FOUND": "HTTP 502 upstream_error",
    "PARENT_NOT_FOUND": "HTTP 502 upstream_error",
    "RequestValidationError": "HTTP 502 upstream_error",
}
"""Error codes seen in docs/protocol.md §10 and §13.3, and what the client gets for each."""

VALUES: tuple[dict[str, str], ...] = tuple(
    {
        "endpoint": f"{COMPLETIONS} [{variant}]",
        "where": where,
        "path": path,
        "value": value,
        "feature": "answer",
        "failure": failure,
        "unless": unless,
    }
    for variant in ("t2t", "search")
    for where, path, value, failure, unless in (
        (
            "delta:*",
            f"{_D}.phase",
            "answer",
            _EMPTY + "; the answer now comes in another phase",
            "delta:<none>",  # phase-less frames are answer text: the phase item says what fails
        ),
        (
            "delta:answer",
            f"{_D}.status",
            "finished",
            "streams never finish: answers end in HTTP 502 upstream_truncated",
            "",
        ),
    )
)
"""Enum values whose disappearance from complete text streams breaks a feature (``unless``:
a frame kind whose presence means the feature still works another way)."""

NOT_FIELDS: dict[str, dict[str, str]] = {
    _E: {
        "401": "substring of an error text",
        "captcha": "substring of an error text",
        "fail_sys_user_validate": "substring of an error text",
        "FAIL_SYS_USER_VALIDATE": "substring of a ret[] value",
        "RGV587": "substring of a ret[] value",
        "ratelimit": "substring of an error text",
        "token has expired": "substring of an error text",
        "html": "substring of the content type",
        "type": "error.type of the replay server's miss body (offline mode), not chat.qwen.ai",
        ":": "an IPv6 host in a redirect's Location (named in brackets)",
    },
    _C: {
        "Content-Type": "a response header (content types: ENDPOINTS)",
        "Location": "a response header: where a redirect points (never followed; named in the "
        "error)",
        "Retry-After": "a response header: the wait an HTTP 429 or 503 asks for (passed on)",
        "text/event-stream": "substring of the content type",
        "json": "substring of the content type",
    },
    _M: {"search": "a chat_type value, tested with `in`"},
    _CL: {
        "not exist": "substring of an error text (the chat is already gone)",
        "not found": "substring of an error text",
        "not_found": "substring of an error text",
    },
    _F: {"base64": "substring of a data: URI the client sent"},
}
"""String keys the reading modules use that are not upstream fields, with the reason."""


def contract_json() -> dict[str, Any]:
    """The contract as one JSON object (``schemas/gateway_contract.json``)."""
    return {
        "description": (
            "What the gateway reads in chat.qwen.ai's answers, generated from "
            "proxy/qwen/contract.py (python -m proxy.qwen.contract FILE); used by "
            "`qwen-record diff` to judge drift."
        ),
        "features": FEATURES,
        "fields": [
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(f).items()}
            for f in FIELDS
        ],
        "endpoints": [{**asdict(e), "answers": list(e.answers)} for e in ENDPOINTS],
        "frame_kinds": FRAME_KINDS,
        "phases": PHASES,
        "statuses": STATUSES,
        "error_codes": ERROR_CODES,
        "values": list(VALUES),
    }


def render() -> str:
    """The deterministic text of ``schemas/gateway_contract.json``."""
    return json.dumps(contract_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":  # pragma: no cover
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "schemas/gateway_contract.json")
    out.write_text(render(), encoding="utf-8")
    print(f"Wrote {out}")
