"""Pure diagnosis functions of the conformance harness: no I/O, no clock.

Each function names *what* went wrong with a short code, so a report can say "mojibake (UTF-8
read as GBK)" instead of "the answer differs". The failure modes come from the complaints other
Qwen proxies' users file (docs/landscape.md §3.2 empty answers, §3.7/§3.10 ``![image](null)``,
§3.8 duplicated streamed text, §3.13 garbled Chinese) and from their causes in docs/protocol.md
§5.4, §6.4 and §11.9/§11.10.

- :func:`classify_echo`: did the answer repeat the probe sentence, and if not, how is it broken
  (U+FFFD, Latin-1/cp1252 or GBK mojibake, a "your message looks garbled" reply, other text).
- :func:`find_duplicated_deltas`: streamed pieces that re-send text already sent.
- :func:`classify_image_answer`: an image, a null image URL, a drawing tutorial, other text.
- :func:`sniff_image`: the image format from magic bytes.
- :func:`parse_sse`: SSE framing (WHATWG "server-sent events" rules) with byte offsets.
- :func:`find_tool_markup`: tool-call markup that leaked into answer text.
- :func:`assemble_tool_call_deltas`: streamed ``delta.tool_calls`` fragments put together the way
  openai-python does, with the shape faults clients trip over.
- :func:`repeated_call`: the same call (name and arguments) made twice.
- :func:`arguments_problem`: ``function.arguments`` that is not a JSON object in a string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "AssembledCall",
    "DuplicateFinding",
    "EchoCode",
    "EchoVerdict",
    "ImageAnswer",
    "SSEEvent",
    "SSEParse",
    "arguments_problem",
    "assemble_tool_call_deltas",
    "classify_echo",
    "classify_image_answer",
    "cp1252_mojibake",
    "find_duplicated_deltas",
    "find_tool_markup",
    "gbk_mojibake",
    "latin1_mojibake",
    "parse_sse",
    "repeated_call",
    "sniff_image",
]

EchoCode = Literal[
    "ok",
    "empty_answer",
    "replacement_chars",
    "mojibake_latin1",
    "mojibake_gbk",
    "garbled_claim",
    "echo_mismatch",
]


@dataclass(frozen=True)
class EchoVerdict:
    """The outcome of an echo probe: ``code`` (``"ok"`` on success) and a readable message."""

    code: EchoCode
    message: str


# -- mojibake ----------------------------------------------------------------------------------


def latin1_mojibake(text: str) -> str:
    """``text`` encoded as UTF-8 and decoded as ISO-8859-1 (every byte maps to one char).

    This is what Python ``requests`` produces when a response has no charset (docs/protocol.md
    §11.9, docs/landscape.md §1.5).
    """
    return text.encode("utf-8").decode("latin-1")


def cp1252_mojibake(text: str) -> str:
    """``text`` encoded as UTF-8 and decoded as windows-1252, WHATWG style.

    The five bytes cp1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D) map to the C1 control
    of the same value, as browsers and Node's decoders do.
    """
    out: list[str] = []
    for byte in text.encode("utf-8"):
        try:
            out.append(bytes([byte]).decode("cp1252"))
        except UnicodeDecodeError:
            out.append(chr(byte))
    return "".join(out)


def gbk_mojibake(text: str) -> tuple[str, ...]:
    """``text`` encoded as UTF-8 and decoded as GBK, in the forms decoders produce.

    Invalid sequences become U+FFFD (``errors="replace"``), vanish (``"ignore"``), or are
    decoded by the GB18030 superset. Returns the distinct variants, longest first.
    """
    raw = text.encode("utf-8")
    variants = {
        raw.decode("gbk", errors="replace"),
        raw.decode("gbk", errors="ignore"),
        raw.decode("gb18030", errors="replace"),
    }
    return tuple(sorted(variants, key=len, reverse=True))


def _reverse(answer: str, encoding: str) -> str:
    """Undo a mojibake: characters that exist in ``encoding`` go back to bytes, the rest are
    re-encoded as UTF-8; the bytes are then read as UTF-8 (U+FFFD for leftovers)."""
    raw = bytearray()
    for ch in answer:
        try:
            raw += ch.encode(encoding)
        except UnicodeEncodeError:
            if encoding == "cp1252" and ord(ch) < 0x100:
                raw.append(ord(ch))  # the WHATWG C1 passthrough of cp1252_mojibake
            else:
                raw += ch.encode("utf-8")
    return raw.decode("utf-8", errors="replace")


_GARBLED_CLAIM = re.compile(
    r"garbl|mojibake|乱码|corrupted (?:text|message|characters)|"
    r"(?:encoding|character|charset) (?:issue|problem|error)|unreadable characters|"
    r"(?:无法|不能)(?:识别|辨认|读取|理解)[^。]{0,8}(?:字符|文字|内容|消息|信息)|编码(?:问题|错误)",
    re.IGNORECASE,
)


def classify_echo(expected: str, answer: str) -> EchoVerdict:
    """Did ``answer`` repeat ``expected``? If not, name the breakage.

    Order: the sentence itself → ``ok``; empty → ``empty_answer``; the exact mojibake of the
    sentence (UTF-8 read as Latin-1/cp1252 → ``mojibake_latin1``; read as GBK →
    ``mojibake_gbk``), found as is or after undoing it, which is more specific than any
    U+FFFD it contains; any U+FFFD → ``replacement_chars`` (UTF-8 split across network chunks
    and decoded piecewise, docs/protocol.md §11.9 (a)); an answer claiming the input is garbled
    (docs/landscape.md §3.13) → ``garbled_claim``; anything else → ``echo_mismatch``.
    """
    if expected in answer:
        return EchoVerdict("ok", "the answer repeats the sentence exactly")
    if not answer.strip():
        return EchoVerdict("empty_answer", "the answer is empty")
    latin = (latin1_mojibake(expected), cp1252_mojibake(expected))
    if any(v in answer for v in latin) or any(
        expected in _reverse(answer, enc) for enc in ("latin-1", "cp1252")
    ):
        return EchoVerdict(
            "mojibake_latin1",
            "the sentence came back as mojibake: its UTF-8 bytes were decoded as Latin-1/cp1252",
        )
    if any(v and v in answer for v in gbk_mojibake(expected)) or any(
        expected in _reverse(answer, enc) for enc in ("gbk", "gb18030")
    ):
        return EchoVerdict(
            "mojibake_gbk",
            "the sentence came back as mojibake: its UTF-8 bytes were decoded as GBK",
        )
    n = answer.count("\ufffd")
    if n:
        return EchoVerdict(
            "replacement_chars",
            f"the answer holds {n} U+FFFD replacement character(s): UTF-8 was decoded "
            "piecewise or with the wrong charset somewhere on the way",
        )
    if _GARBLED_CLAIM.search(answer):
        return EchoVerdict(
            "garbled_claim",
            "the model says the input looks garbled: the prompt reached it corrupted",
        )
    return EchoVerdict("echo_mismatch", "the answer does not contain the sentence")


# -- duplicated deltas -------------------------------------------------------------------------


@dataclass(frozen=True)
class DuplicateFinding:
    """Streamed text sent twice.

    ``kind``: ``"cumulative_snapshot"`` (each piece repeats the previous piece and extends it),
    ``"accumulated_resent"`` (a piece starts with all the text sent so far) or
    ``"repeated_piece"`` (the same long piece twice in a row). ``index`` is the position of the
    offending piece among the non-empty pieces; ``piece`` an excerpt of it.
    """

    kind: Literal["cumulative_snapshot", "accumulated_resent", "repeated_piece"]
    index: int
    piece: str

    def message(self) -> str:
        """A readable sentence."""
        what = {
            "cumulative_snapshot": "repeats the previous piece and extends it (cumulative "
            "snapshots sent as deltas)",
            "accumulated_resent": "starts with all the text sent before it (the whole answer "
            "re-sent)",
            "repeated_piece": "is the same long piece as the one before it",
        }[self.kind]
        return f"streamed piece #{self.index} {what}: {self.piece[:60]!r}"


def find_duplicated_deltas(pieces: Sequence[str], *, min_len: int = 8) -> DuplicateFinding | None:
    """The first duplicated piece of streamed text, or ``None``.

    ``pieces`` are the ``delta.content`` strings in order (empty ones are ignored). Flagged:
    a piece that starts with the whole accumulated text when that text has at least ``min_len``
    characters; a piece equal to the previous one when it has at least ``min_len`` characters;
    a piece that starts with the previous piece and is longer, when the previous piece has at
    least ``min_len`` characters or this happens twice in a row. Short legitimate repetitions
    (``"ha", "ha"``) are never flagged (docs/protocol.md §5.4, §11.10; docs/landscape.md §3.8).
    """
    texts = [p for p in pieces if p]
    accumulated = ""
    streak = 0
    for i, piece in enumerate(texts):
        if i > 0:
            prev = texts[i - 1]
            if len(accumulated) >= min_len and piece.startswith(accumulated):
                return DuplicateFinding("accumulated_resent", i, piece)
            if piece == prev and len(piece) >= min_len:
                return DuplicateFinding("repeated_piece", i, piece)
            if len(piece) > len(prev) and piece.startswith(prev):
                streak += 1
                if len(prev) >= min_len or streak >= 2:
                    return DuplicateFinding("cumulative_snapshot", i, piece)
            else:
                streak = 0
        accumulated += piece
    return None


# -- images ------------------------------------------------------------------------------------

ImageKind = Literal["image", "null_url", "drawing_text", "text", "empty"]


@dataclass(frozen=True)
class ImageAnswer:
    """What an image request's text answer holds: ``kind`` and the http(s) URLs found."""

    kind: ImageKind
    urls: tuple[str, ...] = ()


_MD_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_URL = re.compile(r"https?://[^\s)\]\"'<>]+")
_NULLISH = frozenset({"", "null", "none", "undefined", "nil", "nan"})
_DRAWING = re.compile(
    r"\bstep\s*\d|\bsketch|\bpencil|\bcanvas\b|\bbrush|\bshading\b|\bdraw(?:ing)?\b|"
    r"\boutline\b|\bcolou?r(?:ing)? (?:in|it)\b|画|绘制|步骤|铅笔|素描|上色",
    re.IGNORECASE,
)


def classify_image_answer(text: str | None) -> ImageAnswer:
    """Classify the text of an image request's answer (docs/protocol.md §6.4;
    docs/landscape.md §3.7).

    A Markdown image or bare URL with http(s) → ``image`` (with the URLs); a Markdown image
    whose target is empty or ``null``/``undefined`` → ``null_url`` (the ``![image](null)``
    symptom); text about how to draw → ``drawing_text``; other text → ``text``; nothing →
    ``empty``.
    """
    if not text or not text.strip():
        return ImageAnswer("empty")
    targets = [m.group(1) for m in _MD_IMAGE.finditer(text)]
    urls = tuple(dict.fromkeys(u for u in [*targets, *_URL.findall(text)] if _is_http(u)))
    if urls:
        return ImageAnswer("image", urls)
    if any(t.strip().lower() in _NULLISH for t in targets):
        return ImageAnswer("null_url")
    if len(_DRAWING.findall(text)) >= 2:
        return ImageAnswer("drawing_text")
    return ImageAnswer("text")


def _is_http(url: str) -> bool:
    return url.lower().startswith(("http://", "https://")) and len(url) > len("https://")


def sniff_image(data: bytes) -> str | None:
    """The image format from magic bytes: ``"png"``, ``"jpeg"``, ``"gif"``, ``"webp"`` or
    ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


# -- SSE framing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched SSE event: ``data`` (data lines joined by ``\\n``), ``event`` name or
    ``None``, and ``end`` (byte offset in the body just after the event's blank line)."""

    data: str
    event: str | None
    end: int


@dataclass
class SSEParse:
    """The events of an SSE body and what is wrong with its framing.

    ``problems`` are framing faults (each a sentence); ``comments`` counts ``:`` comment lines
    (keep-alives, allowed); ``tail`` is the text after the last blank line (an event that was
    never terminated, so a conforming client drops it).
    """

    events: list[SSEEvent] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    comments: int = 0
    tail: str = ""


_LINE = re.compile(rb"\r\n|\n|\r")


def parse_sse(raw: bytes) -> SSEParse:
    """Split an SSE body into events (WHATWG HTML "server-sent events" parsing rules).

    Problems reported: invalid UTF-8, lines that are neither ``field: value`` nor comments,
    fields other than ``data``/``event``/``id``/``retry``, and an unterminated last event.
    Never raises.
    """
    out = SSEParse()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        out.problems.append(f"the body is not valid UTF-8 (byte {exc.start})")
    data: list[str] = []
    event: str | None = None
    pending = False
    pos = 0
    bad_lines = 0
    for m in _LINE.finditer(raw):
        line = raw[pos : m.start()].decode("utf-8", errors="replace")
        pos = m.end()
        if line == "":
            if pending:
                out.events.append(SSEEvent("\n".join(data), event, pos))
            data, event, pending = [], None, False
            continue
        if line.startswith(":"):
            out.comments += 1
            continue
        name, colon, value = line.partition(":")
        if not colon:
            bad_lines += 1
            if bad_lines <= 3:
                out.problems.append(f"line without a field name and colon: {line[:80]!r}")
            continue
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
            pending = True
        elif name == "event":
            event = value
            pending = True
        elif name not in ("id", "retry"):
            out.problems.append(f"unknown SSE field {name!r}")
    if bad_lines > 3:
        out.problems.append(f"{bad_lines} lines without a field name in all")
    tail = raw[pos:].decode("utf-8", errors="replace")
    if pending or tail.strip():
        out.tail = ("\n".join(data) + "\n" + tail).strip() if pending else tail
        out.problems.append(
            "the body does not end with a blank line: the last event is unterminated "
            f"({out.tail[:80]!r})"
        )
    return out


# -- tool calls --------------------------------------------------------------------------------

_TOOL_MARKUP = re.compile(
    r"</?tool_call>|</?tool_calls>|<function=[\w.-]+>|</function>|<parameter=[\w.-]+>|"
    r"</?tool_use>|</?tool_response>|✿FUNCTION✿|✿ARGS✿|<\|QNML\|",
    re.IGNORECASE,
)
_JSON_CALL = re.compile(r'\{\s*"name"\s*:\s*"[\w.-]+"\s*,\s*"(?:arguments|parameters)"\s*:')


def find_tool_markup(text: str | None) -> str | None:
    """The first piece of tool-call markup in answer ``text``, or ``None``.

    Markup is what Qwen models write when they call a tool (docs/agents.md §1): Hermes-style
    ``<tool_call>…</tool_call>`` blocks, the Qwen3-Coder XML form (``<function=…>``,
    ``<parameter=…>``), Qwen-Agent's ``✿FUNCTION✿`` markers, ``<tool_use>`` and a bare
    ``{"name": …, "arguments": …}`` call object. Finding any of it in ``content`` means a proxy
    passed the model's call through as text instead of turning it into ``tool_calls``
    (docs/agents.md §6.3).
    """
    if not text:
        return None
    m = _TOOL_MARKUP.search(text) or _JSON_CALL.search(text)
    if m is None:
        return None
    start = max(0, m.start() - 20)
    return text[start : m.end() + 40]


@dataclass
class AssembledCall:
    """One tool call put together from stream fragments (or read whole from a message):
    ``index``, ``id``, ``type``, ``name`` and the concatenated ``arguments`` text."""

    index: int
    id: str = ""
    type: str = ""
    name: str = ""
    arguments: str = ""


def assemble_tool_call_deltas(
    deltas: Iterable[dict[str, Any]],
) -> tuple[list[AssembledCall], list[str]]:
    """Put streamed ``delta.tool_calls`` fragments together; return ``(calls, problems)``.

    Fragments are keyed by ``index`` (required on every fragment); the first fragment of a call
    must carry ``id``, ``type: "function"`` and ``function.name``, later ones only ``index`` and
    ``function.arguments`` pieces (docs/agents.md §2.3, OpenAI's streaming reference). Problems
    reported, each a sentence: a fragment without an integer ``index``; a call whose first
    fragment lacks ``id`` or ``function.name`` (Cline drops arguments that arrive before both,
    docs/clients.md §5); ``id`` or ``name`` repeated with a different or the same value in a later
    fragment (openai-python concatenates string fields, so ``call_1`` becomes ``call_1call_1``;
    NextChat opens a new call on every ``id``). Calls are returned in index order.
    """
    calls: dict[int, AssembledCall] = {}
    problems: list[str] = []
    for delta in deltas:
        items = delta.get("tool_calls")
        if items is None:
            continue
        if not isinstance(items, list):
            problems.append(f"delta.tool_calls is not a list: {items!r}"[:120])
            continue
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("index"), int):
                problems.append(f"a tool_calls fragment has no integer index: {item!r}"[:160])
                continue
            raw_fn = item.get("function")
            fn: dict[str, Any] = raw_fn if isinstance(raw_fn, dict) else {}
            i = item["index"]
            call = calls.get(i)
            if call is None:
                call = calls[i] = AssembledCall(index=i)
                if not item.get("id") or not fn.get("name"):
                    problems.append(
                        f"the first fragment of call {i} lacks "
                        + " and ".join(
                            n
                            for n, v in (("id", item.get("id")), ("name", fn.get("name")))
                            if not v
                        )
                    )
                call.id = str(item.get("id") or "")
                call.type = str(item.get("type") or "")
                call.name = str(fn.get("name") or "")
            else:
                for field_name, value in (("id", item.get("id")), ("name", fn.get("name"))):
                    if value:
                        problems.append(
                            f"call {i} repeats `{field_name}` ({value!r}) in a later fragment: "
                            "openai-python concatenates it"
                        )
                        if field_name == "id" and not call.id:
                            call.id = str(value)
                        if field_name == "name" and not call.name:
                            call.name = str(value)
                if item.get("type") and not call.type:
                    call.type = str(item["type"])
            args = fn.get("arguments")
            if isinstance(args, str):
                call.arguments += args
            elif args is not None:
                problems.append(f"call {i}: function.arguments is not a string: {args!r}"[:160])
    return [calls[i] for i in sorted(calls)], problems


def arguments_problem(arguments: Any) -> str | None:
    """Why ``function.arguments`` is not usable, or ``None``: it must be a string holding a JSON
    object (OpenAI chat carries arguments as JSON *text*; an object, a list, or text that is
    not JSON breaks every SDK's ``json.loads``)."""
    if not isinstance(arguments, str):
        return f"arguments is a {type(arguments).__name__}, not a JSON string"
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as exc:
        return f"arguments is not JSON ({exc.msg} at {exc.pos}): {arguments[:80]!r}"
    if not isinstance(value, dict):
        return f"arguments is JSON but not an object: {arguments[:80]!r}"
    return None


def _canonical(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), sort_keys=True)
    except ValueError:
        return arguments.strip()


def repeated_call(
    calls: Sequence[tuple[str, str]], earlier: Sequence[tuple[str, str]] = ()
) -> tuple[str, str] | None:
    """The first ``(name, arguments)`` call that repeats one made before, or ``None``.

    ``calls`` are this answer's calls, ``earlier`` the calls already made in the history
    (whose results the model has). Arguments are compared as JSON (key order and spacing do
    not matter). Users of Qwen proxies report agents looping on one call
    (docs/agents.md §6.4).
    """
    seen = {(n, _canonical(a)) for n, a in earlier}
    for name, args in calls:
        key = (name, _canonical(args))
        if key in seen:
            return name, args
        seen.add(key)
    return None
