"""Qwen SSE frames to OpenAI chat-completion events, and those events to OpenAI bytes.

Pure and incremental: :class:`Translator` takes the ``data`` text of one SSE event at a time and
returns the OpenAI-level events it implies; :class:`ChunkEncoder` turns events into
``chat.completion.chunk`` SSE bytes; :class:`Aggregate` folds them into one ``chat.completion``.
Nothing here does I/O or imports aiohttp.

Protocol facts used (docs/protocol.md):

- §5.2 frame types: ``{"response.created": {...}}`` opens the stream, ``{"response.info": ...}``
  is a keep-alive, ``{"choices": [{"delta": {...}}], "usage": {...}}`` carries content.
- §5.3 phases: ``answer`` (incremental text) becomes ``content``; ``think`` (incremental) and
  ``thinking_summary`` (cumulative snapshots in ``extra.summary_thought.content``) become
  ``reasoning_content``; ``web_search`` carries the sources; a missing/null phase is answer text
  (older models); other phases are ignored and counted.
- §5.1 the end: the ``answer`` frame with ``status: "finished"``. ``think`` and
  ``thinking_summary`` also send ``finished`` frames; those never end the stream. ``[DONE]`` and
  ``{"response.completed": {}}`` are accepted as ends too (§5.1, [L]).
- §5.4 usage is cumulative per frame, ``input_tokens``/``output_tokens``; the last valid count
  of each wins.
- §5.7 errors inside the stream: a top-level ``error`` object, ``data.error``, a
  ``success: false`` frame or ``delta.status == "error"``.
- §5.1 frames are JSON objects, read with orjson; a frame orjson refuses that is JSON all the
  same (a lone surrogate escape, ``NaN``/``Infinity`` as ``json.dumps`` writes them) is read
  leniently off the fast path (:func:`_lenient_json`), anything else fails the stream.
- §11.10 dedup: only snapshot phases are diffed. Incremental ``answer`` and ``think`` text passes
  through untouched, so text that legitimately repeats ("ha", "ha") is kept; ``answer`` frames
  that may be cumulative snapshots (§13.2) are held until the next frames decide
  (:meth:`Translator._unsnapshot`).
- §5.3/§5.5/§6 images: with a :class:`~proxy.qwen.media.MediaPolicy`, the ``image_gen``,
  ``image_edit``, ``image_gen_tool`` and ``image_edit_tool`` phases give :class:`Media` events. The
  URL is taken only from those frames (``content``, ``extra.image_list[].image|url``,
  ``extra.tool_result[].image|url``), never from the first non-empty content (§6.4 item 2), and
  only when the policy accepts it (CDN host, not the captcha link, not the edit's source image).
  In image mode (``expect_image=True``, t2i and image edit) answer-phase text and
  ``image_gen_think`` are not emitted (kept only to explain a failure), the answer is the image,
  and a stream without one fails with :class:`UpstreamNoMediaError` or
  :class:`UpstreamBadMediaError`: never ``![image](null)`` (§6.4, §11.4).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from proxy.errors import (
    ProxyError,
    UpstreamBadMediaError,
    UpstreamEmptyError,
    UpstreamError,
    UpstreamNoMediaError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamTruncatedError,
    error_body,
    scrub,
)
from proxy.qwen.envelope import CAPTCHA_ADVICE, envelope_error
from proxy.qwen.media import MediaPolicy

__all__ = [
    "Aggregate",
    "ChunkEncoder",
    "Failure",
    "Finish",
    "Media",
    "NativeToolCall",
    "OutEvent",
    "ReasoningMode",
    "Source",
    "Sources",
    "Text",
    "ToolCall",
    "Translator",
    "Usage",
]

ReasoningMode = Literal["field", "think_tags"]


@dataclass(slots=True)
class Text:
    """A piece of answer (``kind="content"``) or reasoning (``kind="reasoning"``) text.

    ``inline_think``: content that is the translator's own inline reasoning
    (``reasoning="think_tags"``: the ``<think>`` it opens, the reasoning, the ``</think>`` it
    closes), not answer text; a ``<think>`` the model writes in its answer is answer text.
    """

    kind: Literal["content", "reasoning"]
    text: str
    inline_think: bool = False


@dataclass(frozen=True, slots=True)
class Source:
    """One web-search result: ``url`` and, when known, ``title``, ``snippet``, ``hostname``."""

    url: str
    title: str = ""
    snippet: str = ""
    hostname: str = ""


@dataclass(frozen=True, slots=True)
class Sources:
    """Web-search sources for the answer (docs/protocol.md §5.5)."""

    items: tuple[Source, ...]


@dataclass(slots=True)
class Usage:
    """Token counts, OpenAI names (from upstream ``input_tokens`` / ``output_tokens``)."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        """``prompt_tokens + completion_tokens``."""
        return self.prompt_tokens + self.completion_tokens

    def as_openai(self) -> dict[str, int]:
        """The OpenAI ``usage`` object: prompt, completion and total token counts."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class Finish:
    """The answer finished normally. ``reason`` is the OpenAI ``finish_reason``: ``stop``,
    ``length`` or ``tool_calls`` (at least one :class:`ToolCall` was emitted).

    ``stop_sequence``: the client's stop sequence that cut the answer (``reason`` is then
    ``stop``), so APIs that report it (Anthropic ``stop_sequence``) can.
    """

    reason: str = "stop"
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One complete, validated tool call of the answer (emitted whole, never half a call).

    ``index``: 0, 1, … within the answer; ``id``: ``call_`` + 24 hex characters (front doors
    may re-prefix it); ``arguments``: JSON object text, already checked against the tool's
    schema (:mod:`proxy.tools.validate`).
    """

    index: int
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Failure:
    """The stream failed. Whatever was emitted before stays valid; ``error`` says why: an
    :class:`~proxy.errors.UpstreamError` from the translator, or (the relay's last resort) the
    gateway's own internal error."""

    error: ProxyError


@dataclass(frozen=True, slots=True)
class Media:
    """A generated image or video. ``url`` is the one the client gets (see
    :meth:`MediaPolicy.public`); ``upstream_url`` the one chat.qwen.ai sent."""

    kind: Literal["image", "video"]
    url: str
    upstream_url: str = ""

    def markdown(self) -> str:
        """How chat answers carry it: ``![image](<url>)`` or ``[video](<url>)``, the URL as a
        Markdown link destination (:func:`_markdown_url`)."""
        url = _markdown_url(self.url)
        return f"![image]({url})" if self.kind == "image" else f"[video]({url})"


# What ends or changes a CommonMark link destination written without <…>: whitespace and other
# ASCII control characters, parentheses, angle brackets and the backslash (an escape there).
_MARKDOWN_UNSAFE = re.compile(r"[\x00-\x20()<>\\\x7f]")


def _markdown_url(url: str) -> str:
    """``url`` as a Markdown link destination: the characters that would cut or change it
    percent-encoded (``)`` is ``%29``, a space ``%20``), so ``![image](…)`` parses to the whole
    URL. Space, ``<``, ``>`` and ``\\`` may not appear in a URI unencoded at all (RFC 3986
    §2.1, §7.3 of RFC 3986's appendix C), and parentheses are sub-delims with no role in an
    http path, which servers and CDNs read alike encoded or not (§2.2). Everything else is
    left byte for byte: a signed URL's query (its keys, its signature) is only touched when it
    holds such a character. The usual CDN URL has none and is returned as it is."""
    return _MARKDOWN_UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", url)


@dataclass(frozen=True, slots=True)
class NativeToolCall:
    """A call the site's native tool path produced (a ``phase: "local_tool"`` frame with
    ``extra.local_mcp``, docs/protocol.md §5.5, §5.6). Only emitted when the translator was built
    with ``native_tools=True``; the tool stage (:mod:`proxy.tools.stage`) turns it into a checked
    :class:`ToolCall`, so renderers never see it. ``name`` is without its namespace prefix."""

    name: str
    arguments: dict[str, Any]


OutEvent = Text | Sources | Media | ToolCall | NativeToolCall | Finish | Failure

IMAGE_PHASES = frozenset({"image_gen", "image_edit", "image_gen_tool", "image_edit_tool"})
"""Phases whose frames carry generated images (docs/protocol.md §5.3)."""
_IMAGE_SIDE_PHASES = frozenset({"image_gen_think", "image_gen_websearch"})
BUNDLE_PHASES = frozenset(
    {
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
    }
)
"""Phases of the 2026 frontend bundle (docs/protocol.md §13.2): the site's own tools at work. Their
frames are skipped: never answer text, never the end of the answer, never a stream failure (a
tool's ``status: "error"`` is the tool's, not the answer's)."""
_SNAPSHOT_MIN = 1
#: How many characters of text already sent or held an answer frame must begin with before held
#: frames are taken for cumulative snapshots (see Translator._unsnapshot): more than a model
#: token, or a batch of them, ever repeats, and less than a real snapshot stream soon reaches.
_SNAPSHOT_LONG = 32
#: How many times in a row a held frame may come again unchanged before the held frames are text
#: (a snapshot sent again now and then, against a run of equal pieces, "ha", "ha", "ha", …).
_SNAPSHOT_RESENDS = 3


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _lenient_json(text: str) -> Any:
    """``text`` read by the standard library's JSON reader, which takes what orjson refuses but
    JSON's grammar, or ``json.dumps``, allows: a string with a lone surrogate escape
    (``"\\ud83d"``, an emoji cut between tokens and sent with ``ensure_ascii``) gets U+FFFD
    there, and ``NaN``, ``Infinity`` and numbers too large for a float become ``null`` (a token
    count that is one is a missing count), so what the client gets stays UTF-8 and JSON. Raises
    ValueError when ``text`` is not JSON either (nested too deeply included)."""
    try:
        return _clean(json.loads(text, parse_constant=lambda _: None))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _clean(v: Any) -> Any:
    if type(v) is str:
        return _LONE_SURROGATE.sub("\ufffd", v)
    if type(v) is float:
        return v if math.isfinite(v) else None
    if type(v) is list:
        return [_clean(x) for x in v]
    if type(v) is dict:
        return {_clean(k): _clean(x) for k, x in v.items()}
    return v


class Translator:
    """Feed it the ``data`` of each upstream SSE event; it returns OpenAI-level events.

    After a :class:`Finish` or :class:`Failure` the translator is :attr:`done` and ignores
    further input. At end of stream call :meth:`close` (clean EOF) or :meth:`abort` (the
    connection broke or went silent); both return the closing event if one is still due:
    nothing after a finish, :class:`UpstreamEmptyError` when no answer text arrived at all,
    and :class:`UpstreamTruncatedError` when the answer never finished
    (:class:`UpstreamTimeoutError` when it went silent).

    ``reasoning="think_tags"`` puts reasoning inline in the content as ``<think>…</think>``
    instead of ``reasoning_content``: ``<think>\\n…\\n</think>\\n\\n`` where it comes, so
    reasoning after answer text is one more block in the content. ``media`` enables
    :class:`Media` events for image phases; ``expect_image`` (needs ``media``) makes the image
    the answer (t2i, image edit). ``mask`` (text to text) is applied to the message of the
    closing failure, if any: the proxy masks its configured secrets there
    (:class:`proxy.secrets.SecretMasker`). ``on_answer(translator, text, tool_calls)`` records
    the answer as the client gets it (its content text, no reasoning, and its tool calls) and is
    called once when it finished without a failure (native multi-turn remembers it).
    """

    __slots__ = (
        "_answer_chars",
        "_answer_len",
        "_answer_pieces",
        "_calls",
        "_caption",
        "_echoes",
        "_expect_image",
        "_frame_id",
        "_held",
        "_held_resends",
        "_mask",
        "_media",
        "_media_urls",
        "_native_pending",
        "_native_seen",
        "_native_tools",
        "_on_answer",
        "_reasoning_mode",
        "_rejected",
        "_snapshots",
        "_sources_seen",
        "_summary_sent",
        "_tag_open",
        "_texts",
        "_usage",
        "_usage_of",
        "_usage_prev",
        "_usage_src",
        "chat_id",
        "done",
        "failure",
        "foreign_frames",
        "ignored_phases",
        "reasoning_chars",
        "response_id",
    )

    def __init__(
        self,
        *,
        reasoning: ReasoningMode = "field",
        media: MediaPolicy | None = None,
        expect_image: bool = False,
        native_tools: bool = False,
        mask: Callable[[str], str] | None = None,
        on_answer: Callable[[Translator, str, tuple[Any, ...]], None] | None = None,
    ) -> None:
        self._on_answer = on_answer
        self._texts: list[str] | None = [] if on_answer is not None else None
        self._calls: list[Any] = []
        self._native_tools = native_tools
        self._native_seen: set[str] = set()
        self._native_pending: list[NativeToolCall] = []
        if expect_image and media is None:
            media = MediaPolicy()
        self._mask = mask
        self._media = media
        self._expect_image = expect_image
        self._media_urls: list[str] = []
        self._rejected: list[str] = []
        self._echoes = 0
        self._caption = ""
        self._reasoning_mode = reasoning
        self._answer_chars = 0
        self._answer_pieces: list[str] = []
        self._answer_len = 0
        self._snapshots = 0
        # answer frames that may be snapshots (see _unsnapshot), and how many of the last of
        # them in a row were the frame before them again, unchanged
        self._held: list[str] | None = None
        self._held_resends = 0
        self._summary_sent = ""
        self._tag_open = False
        self._sources_seen: set[str] = set()
        self.reasoning_chars = 0
        self._usage: Usage | None = None
        self._usage_src: dict[str, Any] | None = None  # the last frame's usage object
        self._usage_of: dict[str, Any] | None = None  # the one self._usage was read from
        # the usage object a frame off the fast path replaced before it was read
        self._usage_prev: dict[str, Any] | None = None
        self.done = False
        self.failure: UpstreamError | None = None
        self.chat_id: str | None = None
        self.response_id: str | None = None
        self.ignored_phases: dict[str, int] = {}
        self.foreign_frames = 0
        self._frame_id: str | None = None  # the id the turn's content frames carry

    @property
    def answered(self) -> bool:
        """True once any answer text (or media) has been emitted."""
        return self._answer_chars > 0

    @property
    def media_urls(self) -> list[str]:
        """The client-facing URLs of the :class:`Media` emitted so far, in order."""
        return list(self._media_urls)

    # -- input ---------------------------------------------------------------------------------

    def feed(self, data: str) -> list[OutEvent]:
        """Translate one SSE event's ``data`` text. Returns zero or more events."""
        return self.feed_all((data,))

    def feed_all(self, events: Sequence[str]) -> list[OutEvent]:
        """:meth:`feed` each of ``events`` (the ``data`` of one network chunk's SSE events) in
        turn, until the answer is :attr:`done`: the events of all, in order. One call per chunk
        on the relay's hot path instead of one per frame."""
        out: list[OutEvent] = []
        for data in events:
            if self.done:
                break
            try:  # the common case first: a JSON object (orjson ignores surrounding whitespace)
                frame = orjson.loads(data)
            except orjson.JSONDecodeError:
                out.extend(self._not_an_object(data))
                continue
            # The common frame, first and flat (one per token of every answer): more answer
            # text of a plain chat, with its usage, without a response id or with the turn's.
            if isinstance(frame, dict):
                choices = frame.get("choices")
                if (
                    isinstance(choices, list)
                    and choices
                    and isinstance(choices[0], dict)
                    and frame.get("response_id", self._frame_id) == self._frame_id
                ):
                    delta = choices[0].get("delta")
                    if (
                        isinstance(delta, dict)
                        and delta.get("phase") == "answer"
                        and delta.get("status") == "typing"
                        and not self._expect_image
                        and not self._tag_open
                        and self._held is None
                    ):
                        content = delta.get("content")
                        if type(content) is str and content:
                            size = len(content)
                            n = self._answer_len
                            # shorter than the answer so far: cannot be a snapshot (_unsnapshot)
                            if size < n or n < _SNAPSHOT_MIN:
                                usage = frame.get("usage")
                                if isinstance(usage, dict):
                                    self._usage_src = usage  # read when asked for (usage)
                                self._answer_chars += size
                                self._answer_pieces.append(content)
                                self._answer_len = n + size
                                if self._texts is not None:
                                    self._texts.append(content)
                                out.append(Text("content", content))
                                continue
            got = self._frame(frame, data)
            if self._texts is not None and got:
                self._see(got)
            out.extend(got)
        return out

    @property
    def usage(self) -> Usage | None:
        """The token counts of the last frame that carried ``usage`` (§5.4: cumulative, the
        last one wins), ``None`` before any valid one. Built when read, not for every frame.
        A count that is not a non-negative JSON integer (negative, a string, a float, null,
        missing, a boolean: ``bool`` is an ``int`` to Python, hence ``type(…) is int``) does
        not count: the last valid one stands (:meth:`_recount`)."""
        src = self._usage_src
        if src is not self._usage_of:
            self._usage_of = src
            assert src is not None
            p, c = src.get("input_tokens"), src.get("output_tokens")
            if type(p) is not int or p < 0 or type(c) is not int or c < 0:
                self._usage = self._recount(p, c)
            else:
                u = self._usage
                if u is None or u.completion_tokens != c or u.prompt_tokens != p:
                    self._usage = Usage(p, c)
            self._usage_prev = None  # (self._usage is newer now)
        return self._usage

    def _recount(self, p: Any, c: Any) -> Usage | None:
        """The counts when the last usage object has one that is not valid: each such count is
        the last valid one, from the usage object it replaced when that was never read (a frame
        off the fast path, the finished one say, replaced it: see :meth:`_frame`), else from the
        counts read before; ``None`` while no count was ever valid (front doors then report
        what they do without usage)."""
        prev, u = self._usage_prev, self._usage
        if type(p) is not int or p < 0:
            p = prev.get("input_tokens") if prev is not None else None
            if type(p) is not int or p < 0:
                p = u.prompt_tokens if u is not None else None
        if type(c) is not int or c < 0:
            c = prev.get("output_tokens") if prev is not None else None
            if type(c) is not int or c < 0:
                c = u.completion_tokens if u is not None else None
        if p is None and c is None:
            return None
        return Usage(p or 0, c or 0)

    def _see(self, events: list[OutEvent]) -> None:
        """Recording (``on_answer``): keep the content text and tool calls the client gets;
        call ``on_answer`` when the answer finished."""
        assert self._texts is not None and self._on_answer is not None
        for e in events:
            if isinstance(e, Text):
                if e.kind == "content":
                    self._texts.append(e.text)
            elif isinstance(e, Finish):
                self._on_answer(self, "".join(self._texts), tuple(self._calls))
            elif hasattr(e, "arguments") and hasattr(e, "name"):  # a tool call
                self._calls.append(e)

    def _frame(self, frame: Any, data: str) -> list[OutEvent]:
        """Every frame but the common one (:meth:`feed`)."""
        if not isinstance(frame, dict):
            return self._not_an_object(data)
        choices = frame.get("choices")
        if isinstance(choices, list):
            rid = frame.get("response_id")
            if isinstance(rid, str) and rid:
                if self._frame_id is None:
                    # The first id carried by a content frame is the turn's for the frames,
                    # even if it is not the one response.created named (another id format):
                    # never drop a whole answer on an id format. The turn's response_id (the
                    # next parent_id, the stop call) stays the one response.created named.
                    self._frame_id = rid
                    if self.response_id is None:
                        self.response_id = rid
                elif rid != self._frame_id:
                    # A second response in the stream (docs/protocol.md §13.2): not this turn's.
                    self.foreign_frames += 1
                    return []
            usage = frame.get("usage")
            if isinstance(usage, dict):
                if self._usage_src is not self._usage_of:  # replaced unread: kept, its counts
                    self._usage_prev = self._usage_src  # stand for invalid ones (_recount)
                self._usage_src = usage
            if choices:
                delta = choices[0].get("delta") if isinstance(choices[0], dict) else None
                if isinstance(delta, dict):
                    return self._delta(delta)
            return []
        created = frame.get("response.created")
        if isinstance(created, dict):
            # The first response opened is the turn's; a later one is another response (§13.2).
            chat_id, response_id = created.get("chat_id"), created.get("response_id")
            if self.chat_id is None and isinstance(chat_id, str) and chat_id:
                self.chat_id = chat_id
            if self.response_id is None and isinstance(response_id, str) and response_id:
                self.response_id = response_id  # (an id of another type is no id: not kept)
            return []
        if "response.info" in frame:
            return []
        if "response.completed" in frame:
            return self._end_marker()
        err = envelope_error(frame)
        if err is not None:
            return self._fail(err)
        return []

    def _not_an_object(self, data: str) -> list[OutEvent]:
        """``data`` that is not a JSON object: blank, ``[DONE]``, other JSON, not JSON, or JSON
        that orjson refuses (read by :func:`_lenient_json`)."""
        stripped = data.strip()
        if not stripped:
            return []
        if stripped == "[DONE]":
            got = self._end_marker()
            if self._texts is not None:
                self._see(got)
            return got
        try:
            orjson.loads(stripped)
        except orjson.JSONDecodeError:
            try:
                frame = _lenient_json(stripped)
            except ValueError:
                pass
            else:  # JSON all the same, which orjson refuses (rare: off the fast path)
                got = self._frame(frame, data) if isinstance(frame, dict) else []
                if self._texts is not None and got:
                    self._see(got)
                return got
            lines = stripped.split("\n")
            if len(lines) > 1:
                # Several ``data:`` lines with no blank line between them: one frame per line
                # (a JSON frame never holds a raw newline), as a lenient reader takes them.
                out: list[OutEvent] = []
                for line in lines:
                    out.extend(self.feed(line))
                return out
            return self._fail(
                UpstreamProtocolError(
                    f"chat.qwen.ai sent a stream frame that is not JSON ({len(stripped)} chars)."
                )
            )
        return []

    def close(self) -> list[OutEvent]:
        """The upstream stream ended cleanly (EOF). Returns the closing event, if due."""
        if self.done:
            return []
        held = self._release_held()
        out = held + self._close() if held else self._close()
        if self._texts is not None and out:
            self._see(out)
        return out

    def _close(self) -> list[OutEvent]:
        if self._expect_image and self._media_urls:
            return self._finish()
        if self._native_answer() and not self._answer_chars:
            return self._finish()  # a native call is a whole answer (docs/protocol.md §5.6)
        if self._answer_chars:
            return self._fail(
                UpstreamTruncatedError(
                    "chat.qwen.ai ended the stream before the answer finished "
                    f"(after {self._answer_chars} characters)."
                )
            )
        return self._fail(self._empty_error())

    def fail(self, error: UpstreamError) -> list[OutEvent]:
        """End the stream with ``error`` (found outside the frames, e.g. a stray envelope)."""
        if self.done:
            return []
        return self._fail(error)

    def abort(
        self, reason: str, *, upstream: str = "chat.qwen.ai", timed_out: bool = False
    ) -> list[OutEvent]:
        """The upstream connection broke: :class:`UpstreamTruncatedError`; or, ``timed_out``,
        the stream went silent for the read timeout: :class:`UpstreamTimeoutError` (504 when
        no text reached the client yet, as when the answer's headers are late). ``reason`` is
        safe, secret-free text; ``upstream`` names the upstream
        (:func:`proxy.qwen.client.upstream_label`)."""
        if self.done:
            return []
        held = self._release_held()
        got = (
            f"after {self._answer_chars} characters of answer"
            if self._answer_chars
            else ("before any answer text")
        )
        error: UpstreamError
        if timed_out:
            error = UpstreamTimeoutError(f"{upstream} went silent {got}: {reason}")
        else:
            error = UpstreamTruncatedError(f"the connection to {upstream} broke {got}: {reason}")
        return held + self._fail(error)

    # -- internals -----------------------------------------------------------------------------

    def _empty_error(self) -> UpstreamError:
        if self._expect_image:
            return self._no_image_error()
        extra = ""
        if self.reasoning_chars:
            extra = " It sent reasoning but no answer."
        if self.ignored_phases:
            extra += " Phases seen but not understood: " + ", ".join(sorted(self.ignored_phases))
        return UpstreamEmptyError(
            "chat.qwen.ai ended the stream without an answer." + extra + " This often means the "
            "account is being throttled; retry later or with another account."
        )

    def _fail(self, error: UpstreamError) -> list[OutEvent]:
        if self._mask is not None:
            error.message = self._mask(error.message)
        self.done = True
        self.failure = error
        out: list[OutEvent] = self._release_held()
        if self._tag_open:
            out.append(self._close_tag())
        out.append(Failure(error))
        return out

    def _end_marker(self) -> list[OutEvent]:
        held = self._release_held()
        if self._answer_chars or self._native_answer():
            return held + self._finish()
        return self._fail(self._empty_error())

    def _finish(self) -> list[OutEvent]:
        self.done = True
        out: list[OutEvent] = list(self._native_pending)  # calls never confirmed by "finished"
        self._native_pending = []
        if self._tag_open:
            out.append(self._close_tag())
        out.append(Finish("stop"))
        return out

    def _native_answer(self) -> bool:
        return bool(self._native_seen or self._native_pending)

    def _close_tag(self) -> Text:
        self._tag_open = False
        return Text("content", "\n</think>\n\n", inline_think=True)

    def _delta(self, delta: dict[str, Any]) -> list[OutEvent]:
        phase = delta.get("phase")
        if phase is not None and type(phase) is not str:  # not a phase name: an unknown phase
            phase = f"<{type(phase).__name__}>"  # (counted in ignored_phases by its type)
        if phase in BUNDLE_PHASES:
            return []
        status = delta.get("status")
        content = delta.get("content")
        if status == "error":
            err = envelope_error(delta) or UpstreamError(
                "chat.qwen.ai reported an error inside the stream."
            )
            return self._fail(err)
        if self._media is not None and phase in IMAGE_PHASES:
            return self._image(delta, status)
        if self._expect_image:
            if phase == "answer" or phase is None:
                if isinstance(content, str) and len(self._caption) < 300:
                    self._caption += content
                if status == "finished" and self._media_urls:
                    return self._finish()
                return []
            if phase in _IMAGE_SIDE_PHASES:
                return []
        if phase == "answer" or phase is None:
            out: list[OutEvent] = []
            if isinstance(content, str) and content:
                content = self._unsnapshot(content)
            if isinstance(content, str) and content:
                if self._tag_open:
                    out.append(self._close_tag())
                self._answer_chars += len(content)
                self._answer_pieces.append(content)
                self._answer_len += len(content)
                out.append(Text("content", content))
            if status == "finished":
                out.extend(self._release_held())
            if status == "finished" and phase == "answer":
                # A finished answer with no text at all is an empty answer, not a success.
                answered = self._answer_chars or self._native_answer()
                out.extend(self._finish() if answered else self._fail(self._empty_error()))
            elif status == "finished" and self._answer_chars:
                # phase null is the old format's answer (§5.3, §11.7): once it has text, its
                # finished frame ends it too (before any text it is not trusted to).
                out.extend(self._finish())
            return out
        if phase == "local_tool" and self._native_tools:
            return self._local_tool(delta.get("extra"), status)
        if phase == "think":
            if isinstance(content, str) and content:
                return self._reasoning(content)
            return []
        if phase == "thinking_summary":
            return self._summary(delta.get("extra"))
        if phase == "web_search":
            return self._search(delta)
        self.ignored_phases[str(phase)] = self.ignored_phases.get(str(phase), 0) + 1
        return []

    def _local_tool(self, extra: Any, status: Any) -> list[OutEvent]:
        """``extra.local_mcp: {"<ns>": [{"tool_name": "<ns>-<name>", "params": {...}}]}``
        (§5.5); each call once, however many frames repeat it. Calls are emitted from the
        ``finished`` frame; a ``typing`` frame's calls (maybe still partial) are only kept as
        the latest snapshot, emitted at the end if no finished frame confirmed them."""
        mcp = extra.get("local_mcp") if isinstance(extra, dict) else None
        if not isinstance(mcp, dict):
            return []
        if status == "typing":
            self._native_pending = self._native_calls(mcp, mark=False)
            return []
        self._native_pending = []
        return list(self._native_calls(mcp, mark=True))

    def _native_calls(self, mcp: dict[str, Any], *, mark: bool) -> list[NativeToolCall]:
        out: list[NativeToolCall] = []
        for ns, calls in mcp.items():
            for call in calls if isinstance(calls, list) else [calls]:
                if not isinstance(call, dict):
                    continue
                name = call.get("tool_name") or call.get("name")
                params = call.get("params", call.get("arguments"))
                if not isinstance(name, str) or not name:
                    continue
                if name.startswith(f"{ns}-"):
                    name = name[len(ns) + 1 :]
                if not isinstance(params, dict):
                    params = {}
                try:
                    key = name + "\0" + orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode()
                except TypeError:  # nested past orjson's 254 levels: the tool stage rejects it
                    key = f"{name}\0{id(params)}"
                if key in self._native_seen:
                    continue
                if mark:
                    self._native_seen.add(key)
                out.append(NativeToolCall(name, params))
        return out

    # -- images (§5.3, §5.5, §6) ----------------------------------------------------------------

    def _image(self, delta: dict[str, Any], status: Any) -> list[OutEvent]:
        assert self._media is not None
        out: list[OutEvent] = []
        for url in _image_candidates(delta):
            verdict = self._media.check(url)
            if verdict == "excluded":
                self._echoes += 1
                continue
            if verdict != "ok":
                if verdict.startswith("captcha"):
                    return out + self._fail(
                        UpstreamBadMediaError(
                            "chat.qwen.ai answered with its captcha link instead of an image. "
                            + CAPTCHA_ADVICE
                        )
                    )
                self._rejected.append(verdict)
                continue
            public = self._media.public(url)
            if public in self._media_urls:
                continue
            if self._answer_chars:
                out.append(Text("content", "\n\n"))
                self._answer_chars += 2
            if self._tag_open:
                out.append(self._close_tag())
            media = Media("image", public, url)
            self._media_urls.append(public)
            self._answer_chars += len(media.markdown())
            out.append(media)
        if self._expect_image and status == "finished" and self._media_urls:
            out.extend(self._finish())
        return out

    def _no_image_error(self) -> UpstreamError:
        if self._rejected:
            return UpstreamBadMediaError(
                "chat.qwen.ai sent no usable image URL: " + "; ".join(self._rejected[:3]) + "."
            )
        why = []
        if self._echoes:
            times = "once" if self._echoes == 1 else f"{self._echoes} times"
            why.append(f"it only echoed the source image back ({times})")
        if self.ignored_phases:
            why.append("phases seen but not understood: " + ", ".join(sorted(self.ignored_phases)))
        if self._caption.strip():
            why.append(f"its text: {scrub(self._caption.strip(), limit=200)!r}")
        detail = (" (" + "; ".join(why) + ")") if why else ""
        return UpstreamNoMediaError(
            f"chat.qwen.ai ended the image request without an image{detail}. The daily image "
            "quota or the content filter are the usual causes; retry later or with another "
            "prompt."
        )

    def _unsnapshot(self, content: str) -> str:
        """The new part of an answer frame. Incremental text is the rule (docs/protocol.md §5.4,
        [H]) and must never lose a character; cumulative snapshots, reported by two sources
        (§13.2, [L]), should not repeat one. A frame that begins with the whole answer so far
        (the same text again, or more) fits both, so it is held back, with the frames after it
        while each begins with the one before. What decides is length: incremental pieces that
        each begin with the text before them are tokens, a few characters long (a few dozen
        when the site batches them), while a snapshot is the whole answer so far and soon long.

        - A frame that does not begin with the last held one proves the text incremental: the
          held frames and this one are sent whole ("1", "1.", "1.5", " m" is "11.1.5 m";
          "na", "na", "nana", "nanana", " batman" keeps all 21 characters). So does the same
          frame coming again a ``_SNAPSHOT_RESENDS`` + 1st time in a row (a run of equal pieces,
          "ha", "ha", "ha", …, is text, and is not held to its end).
        - A frame that begins with ``_SNAPSHOT_LONG`` or more characters of the answer so far
          or of the held frame before it, and more (or again, once a held frame grew the text),
          makes the held frames snapshots: only what follows the answer so far is sent (a
          re-sent first snapshot included), and from then on every frame is diffed against the
          answer so far. No run of tokens repeats that much text and grows it; a long answer
          merely sent again whole is held like a short one (a model can loop).
        - When the answer ends or fails while frames are held, they are text, sent whole
          ("哈", "哈", "哈哈", "哈哈哈哈" is eight characters).

        So a snapshot stream whose whole answer stays shorter than about ``_SNAPSHOT_LONG``
        characters comes out as text, repeated: the [L] reading loses to the [H] one when the
        frames cannot tell them apart. The first frame is never held, so the first token is
        never delayed; frames shorter than the answer so far are never held (the fast path)."""
        held = self._held
        if held is not None:
            last = held[-1]
            if not content.startswith(last):  # not a snapshot of the last: incremental text
                self._held = None
                return "".join(held) + content
            grows = len(content) > len(last)
            if len(last) >= _SNAPSHOT_LONG and (grows or len(last) > self._answer_len):
                self._held = None  # it repeats a long held frame, and the text grew: snapshots
                self._snapshots += len(held) + 1
                return content[self._answer_len :]  # (each held frame began with the answer)
            if grows:
                self._held_resends = 0
            elif self._held_resends >= _SNAPSHOT_RESENDS:  # the same again once too often: text
                self._held = None
                return "".join(held) + content
            else:
                self._held_resends += 1
            held.append(content)
            return ""
        size = self._answer_len
        if size < _SNAPSHOT_MIN or len(content) < size:
            return content
        so_far = "".join(self._answer_pieces)
        self._answer_pieces = [so_far]
        if not content.startswith(so_far):
            return content
        if self._snapshots or (size >= _SNAPSHOT_LONG and len(content) > size):
            self._snapshots += 1  # (the latter: a long answer begun again, and more)
            return content[size:]  # ("" for a snapshot sent again unchanged)
        self._held = [content]
        self._held_resends = 0 if len(content) > size else 1
        return ""

    def _release_held(self) -> list[OutEvent]:
        """The held answer frames (see :meth:`_unsnapshot`) at the answer's end, sent whole as
        text: ``[]`` or one Text."""
        held = self._held
        if held is None:
            return []
        self._held = None
        text = "".join(held)
        out: list[OutEvent] = []
        if self._tag_open:
            out.append(self._close_tag())
        self._answer_chars += len(text)
        self._answer_pieces.append(text)
        self._answer_len += len(text)
        out.append(Text("content", text))
        return out

    def _reasoning(self, text: str) -> list[OutEvent]:
        self.reasoning_chars += len(text)
        if self._reasoning_mode == "think_tags":
            if not self._tag_open:
                # Reasoning after answer text opens another block where it comes (phases can go
                # think, answer, think, answer), after the answer frames held so far.
                out = self._release_held() if self._held is not None else []
                self._tag_open = True
                out.append(Text("content", "<think>\n" + text, inline_think=True))
                return out
            return [Text("content", text, inline_think=True)]
        return [Text("reasoning", text)]

    def _summary(self, extra: Any) -> list[OutEvent]:
        if not isinstance(extra, dict):
            return []
        thought = extra.get("summary_thought")
        parts = thought.get("content") if isinstance(thought, dict) else None
        if isinstance(parts, str):
            parts = [parts]  # a single cumulative string instead of an array of paragraphs
        if not isinstance(parts, list):
            return []
        snapshot = "\n\n".join(p for p in parts if isinstance(p, str))
        sent = self._summary_sent
        if snapshot.startswith(sent):
            new = snapshot[len(sent) :]
            self._summary_sent = snapshot
        elif len(snapshot) > len(sent):
            # The upstream rewrote earlier text. What was sent cannot be taken back; send only
            # what lies beyond it, so nothing is repeated (docs/protocol.md §11.10).
            new = snapshot[len(sent) :]
            self._summary_sent = snapshot
        else:
            new = ""
        if not new:
            return []
        return self._reasoning(new)

    def _search(self, delta: dict[str, Any]) -> list[OutEvent]:
        extra = delta.get("extra")
        if not isinstance(extra, dict):
            return []
        raw: Any = None
        tool_result = extra.get("tool_result")
        if isinstance(tool_result, dict):
            raw = tool_result.get("docs")
        elif isinstance(tool_result, list):
            raw = tool_result
        if raw is None:
            raw = extra.get("web_search_info")  # 2025 layout (§5.5)
        if not isinstance(raw, list):
            return []
        items = []
        for doc in raw:
            if not isinstance(doc, dict):
                continue
            url = doc.get("url")
            if not isinstance(url, str) or not url or url in self._sources_seen:
                continue
            self._sources_seen.add(url)
            items.append(
                Source(
                    url=url,
                    title=str(doc.get("title") or ""),
                    snippet=str(doc.get("snippet") or ""),
                    hostname=str(doc.get("hostname") or ""),
                )
            )
        return [Sources(tuple(items))] if items else []


def _image_candidates(delta: dict[str, Any]) -> list[str]:
    """URLs an image frame offers: ``content`` when it is a URL, then ``extra.image_list`` /
    ``extra.tool_result`` / ``extra.wanx.image_list`` items (``image`` or ``url``)."""
    found: list[str] = []
    content = delta.get("content")
    if isinstance(content, str) and content.strip().startswith(("http://", "https://")):
        found.append(content.strip())
    extra = delta.get("extra")
    if isinstance(extra, dict):
        lists: list[Any] = [extra.get("image_list"), extra.get("tool_result")]
        wanx = extra.get("wanx")
        if isinstance(wanx, dict):
            lists.append(wanx.get("image_list"))
        for items in lists:
            if isinstance(items, dict):
                items = [items]
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, str):
                    url: Any = item
                elif isinstance(item, dict):
                    url = item.get("image") or item.get("url")
                else:
                    continue
                if isinstance(url, str) and url.strip().startswith(("http://", "https://")):
                    found.append(url.strip())
    return found


_dumps = orjson.dumps  # (a name, not a wrapper: one Python call less per encoded event)


# The fields the OpenAI API returns beyond the SDK types' required ones (OpenAI API reference,
# Chat Completions, "The chat completion object" and "The chat completion chunk object";
# openai/openai-openapi CreateChatCompletionResponse, CreateChatCompletionStreamResponse,
# ChatCompletionResponseMessage, CompletionUsage). `qwen-proxy check --strict` requires them
# (proxy/conformance/contract.py EXACT_FIELDS):
#   every object: "service_tier": "default", "system_fingerprint": null;
#   every choice: "logprobs": null;
#   message: "refusal": null, "annotations": [] (search sources when there are any);
#   the first chunk's delta: "refusal": null; with include_usage every chunk but the last
#   "usage": null;
#   usage: "prompt_tokens_details" and "completion_tokens_details". chat.qwen.ai reports neither
#   cached nor reasoning tokens (docs/protocol.md §5.4), so their counts are 0.
_SERVICE_FIELDS: dict[str, Any] = {"service_tier": "default", "system_fingerprint": None}


def openai_usage(usage: Usage | None) -> dict[str, Any]:
    """The OpenAI ``usage`` object with its detail objects (counts the site does not report
    are 0)."""
    return {
        **(usage or Usage(0, 0)).as_openai(),
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class ChunkEncoder:
    """Encodes events as OpenAI ``chat.completion.chunk`` SSE bytes for one completion.

    Shapes: ``data: {"id", "object": "chat.completion.chunk", "created", "model",
    "service_tier": "default", "system_fingerprint": null, "choices": [{"index": 0,
    "delta": {...}, "logprobs": null, "finish_reason": ...}]}\\n\\n`` (plus ``"usage": null``
    when usage was asked for), every field the OpenAI API returns (see ``_SERVICE_FIELDS``).
    The first chunk carries ``delta.role = "assistant"``; the finish chunk an empty delta and the
    ``finish_reason``; with ``include_usage`` a last chunk with ``choices: []`` and ``usage``;
    then ``data: [DONE]``. A :class:`Failure` becomes ``data: {"error": {...}}`` and no
    ``[DONE]``, so clients see that the stream did not complete. Search sources travel as
    ``delta.annotations`` of type ``url_citation`` (the shape of OpenAI's web-search answers).
    """

    __slots__ = ("_choice_end", "_head", "_include_usage", "_tail", "_usage_head")

    def __init__(
        self, *, completion_id: str, model: str, created: int, include_usage: bool
    ) -> None:
        head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            **_SERVICE_FIELDS,
        }
        # Every chunk is head + delta + tail; the constant parts are encoded once per stream.
        common = b"data: " + _dumps(head)[:-1] + b',"choices":'
        self._head = common + b'[{"index":0,"delta":'
        self._choice_end = b"}]" + (b',"usage":null}\n\n' if include_usage else b"}\n\n")
        self._tail = b',"logprobs":null,"finish_reason":null' + self._choice_end
        self._usage_head = common + b'[],"usage":'
        self._include_usage = include_usage

    def role(self) -> bytes:
        """The opening chunk: ``delta: {"role": "assistant", "content": "", "refusal": null}``."""
        return self._head + b'{"role":"assistant","content":"","refusal":null}' + self._tail

    def encode(self, event: OutEvent, usage: Usage | None = None) -> bytes:
        """Bytes for one event. ``usage`` is used by the finish event when usage was asked for."""
        if type(event) is Text:
            key = b'{"content":' if event.kind == "content" else b'{"reasoning_content":'
            return b"".join((self._head, key, _dumps(event.text), b"}", self._tail))
        if isinstance(event, Media):
            return self._head + b'{"content":' + _dumps(event.markdown()) + b"}" + self._tail
        if isinstance(event, Sources):
            ann = [_annotation(s) for s in event.items]
            return self._head + _dumps({"annotations": ann}) + self._tail
        if isinstance(event, ToolCall):
            return self._tool_call(event)
        if isinstance(event, Finish):
            reason = _dumps(event.reason)
            out = self._head + b'{},"logprobs":null,"finish_reason":' + reason + self._choice_end
            if self._include_usage:
                out += self._usage_head + _dumps(openai_usage(usage)) + b"}\n\n"
            return out + b"data: [DONE]\n\n"
        if isinstance(event, Failure):
            return b"data: " + _dumps(error_body(event.error)) + b"\n\n"
        raise TypeError(f"unknown event {event!r}")

    def _tool_call(self, call: ToolCall) -> bytes:
        """Two chunks, as OpenAI streams a call: ``index``, ``id``, ``type``, ``function.name``
        and empty ``arguments`` first, then ``index`` and the ``arguments`` text."""
        first = {
            "tool_calls": [
                {
                    "index": call.index,
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
            ]
        }
        rest = {"tool_calls": [{"index": call.index, "function": {"arguments": call.arguments}}]}
        return self._head + _dumps(first) + self._tail + self._head + _dumps(rest) + self._tail


def _annotation(s: Source) -> dict[str, Any]:
    return {
        "type": "url_citation",
        "url_citation": {"url": s.url, "title": s.title, "start_index": 0, "end_index": 0},
    }


@dataclass
class Aggregate:
    """Folds events into one non-streamed ``chat.completion`` (the same events a stream gets)."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    media: list[Media] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    error: ProxyError | None = None

    def add(self, event: OutEvent) -> None:
        """Record one event."""
        if type(event) is Text:
            (self.content if event.kind == "content" else self.reasoning).append(event.text)
        elif isinstance(event, Media):
            self.content.append(event.markdown())
            self.media.append(event)
        elif isinstance(event, Sources):
            self.sources.extend(event.items)
        elif isinstance(event, ToolCall):
            self.tool_calls.append(event)
        elif isinstance(event, Finish):
            self.finish_reason = event.reason
        elif isinstance(event, Failure):
            self.error = event.error

    def completion(
        self, *, completion_id: str, model: str, created: int, usage: Usage | None
    ) -> dict[str, Any]:
        """The ``chat.completion`` object. Raises the recorded error if the stream failed."""
        if self.error is not None:
            raise self.error
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if self.tool_calls:
            # OpenAI: content is null when the answer is only calls, else the preface text.
            message["content"] = message["content"] or None
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in self.tool_calls
            ]
        message["refusal"] = None
        message["annotations"] = [_annotation(s) for s in self.sources]
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            **_SERVICE_FIELDS,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason or "stop",
                }
            ],
            "usage": openai_usage(usage),
        }
