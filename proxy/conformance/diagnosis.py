"""Pure diagnosis functions of the conformance harness: no I/O, no clock.

Each function names *what* went wrong with a short code, so a report can say "mojibake (UTF-8
read as GBK)" instead of "the answer differs". The failure modes come from the complaints other
Qwen proxies' users file (docs/landscape.md §3.2 empty answers, §3.7/§3.10 ``![image](null)``,
§3.8 duplicated streamed text, §3.13 garbled Chinese) and from their causes in docs/protocol.md
§5.4, §6.4 and §11.9/§11.10.

- :func:`classify_echo`: did the answer repeat the probe sentence exactly, and if not, how is it
  broken (think tags, extra text, U+FFFD, Latin-1/cp1252 or GBK mojibake, ``?`` for CJK, the
  damage rules of :data:`DAMAGE_RULES` read from the streamed pieces, a "your message looks
  garbled" reply, other text).
- :func:`find_duplicated_deltas`: streamed pieces that re-send text already sent.
- :func:`classify_image_answer`: an image, a null image URL, a drawing tutorial, other text.
- :func:`sniff_image`: the image format from magic bytes.
- :func:`parse_sse`: SSE framing (WHATWG "server-sent events" rules) with byte offsets.
- :func:`find_tool_markup`: tool-call markup that leaked into answer text.
- :func:`assemble_tool_call_deltas`: streamed ``delta.tool_calls`` fragments put together the way
  openai-python does, with the shape faults clients trip over.
- :func:`repeated_call`: the same call (name and arguments) made twice.
- :func:`arguments_problem`: ``function.arguments`` that is not a JSON object in a string.
- :func:`resent_fragments`: streamed argument fragments that re-send earlier text.
- :func:`error_payload`: an error object (OpenAI's or an upstream's own) where a chunk belongs.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "DAMAGE_RULES",
    "ERROR_SHAPES",
    "AssembledCall",
    "DamageRule",
    "DuplicateFinding",
    "EchoCode",
    "EchoVerdict",
    "ErrorShape",
    "ImageAnswer",
    "SSEEvent",
    "SSEParse",
    "arguments_problem",
    "assemble_tool_call_deltas",
    "byte_length_diffing",
    "classify_echo",
    "classify_image_answer",
    "cp1252_mojibake",
    "deletions",
    "error_payload",
    "find_duplicated_deltas",
    "find_tool_markup",
    "gbk_mojibake",
    "latin1_mojibake",
    "normalise_echo",
    "parse_sse",
    "question_mark_forms",
    "repeated_call",
    "resent_fragments",
    "sniff_image",
    "strip_think_blocks",
    "stutters",
]

EchoCode = Literal[
    "ok",
    "empty_answer",
    "think_tags_in_content",
    "replacement_chars",
    "mojibake_latin1",
    "mojibake_gbk",
    "question_marks",
    "byte_length_diffing",
    "split_chars_dropped",
    "overlapping_deltas",
    "stripped_deltas",
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
_QUOTES = (
    ('"', '"'),
    ("'", "'"),
    ("\u201c", "\u201d"),
    ("\u2018", "\u2019"),
    ("「", "」"),
    ("『", "』"),
)
"""Quote pairs a model may put around the repeated sentence (ignored by the comparison)."""
_THINK_TAG = re.compile(r"</?think>", re.IGNORECASE)
_THINK_BLOCK = re.compile(r"<think>(.*?)</think>\s*", re.IGNORECASE | re.DOTALL)


def normalise_echo(answer: str) -> str:
    """The answer as the echo comparison sees it: surrounding whitespace removed, then one pair
    of quotes around the whole answer (``"…"``, ``'…'``, ``“…”``, ``‘…’``, ``「…」``, ``『…』``)
    and the whitespace inside it. Nothing else is forgiven."""
    text = answer.strip()
    for left, right in _QUOTES:
        if len(text) >= 2 and text.startswith(left) and text.endswith(right):
            return text[len(left) : -len(right)].strip()
    return text


def strip_think_blocks(text: str) -> str:
    """``text`` without its ``<think>…</think>`` blocks (and the whitespace after each), as
    clients that split think tags out of content show it (Cherry Studio, Open WebUI)."""
    return _THINK_BLOCK.sub("", text)


def classify_echo(expected: str, answer: str, pieces: Sequence[str] | None = None) -> EchoVerdict:
    """Did ``answer`` repeat ``expected`` exactly? If not, name the breakage.

    The sentence must be in the answer exactly, after :func:`normalise_echo` (surrounding
    whitespace and one pair of enclosing quotes ignored); words of the model's own around it
    are ``ok`` with a note (:func:`_extra_text`). ``pieces`` are the streamed text pieces the
    answer was joined from (``None`` for an answer that was not streamed); causes that show in
    how the text was cut are decided from them.

    Order: the sentence → ``ok``; empty → ``empty_answer``; ``<think>`` tags →
    ``think_tags_in_content``; the sentence twice, or followed by a repeat of its last
    characters → ``echo_mismatch`` (other words around it: ``ok``, saying what they are); the
    mojibake of the sentence (UTF-8 read as Latin-1/cp1252 → ``mojibake_latin1``, as GBK →
    ``mojibake_gbk``), found as is or after undoing it, which is more specific than any U+FFFD
    it contains; any U+FFFD → ``replacement_chars`` (UTF-8 split across network chunks and
    decoded piecewise, docs/protocol.md §11.9 (a)); characters outside Latin-1 turned into
    ``?`` → ``question_marks``; then the damage rules of :data:`DAMAGE_RULES` (characters
    dropped at splits, deltas diffed by byte length, overlapping deltas, stripped deltas); an
    answer
    claiming the input is garbled (docs/landscape.md §3.13) → ``garbled_claim``; anything else →
    ``echo_mismatch``, saying where the answer breaks off or first differs.
    """
    got = normalise_echo(answer)
    if got == expected:
        return EchoVerdict("ok", "the answer is the sentence, exactly")
    if not got:
        return EchoVerdict("empty_answer", "the answer is empty")
    if _THINK_TAG.search(got):
        return _think_verdict(expected, got)
    if expected in got:
        return _extra_text(expected, got)
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
    n = got.count("\ufffd")
    if n:
        return EchoVerdict(
            "replacement_chars",
            f"the answer holds {n} U+FFFD replacement character(s): UTF-8 was decoded "
            "piecewise or with the wrong charset somewhere on the way",
        )
    if any(v != expected and v in got for v in question_mark_forms(expected)):
        return EchoVerdict(
            "question_marks",
            "the characters outside Latin-1 came back as '?': the text was encoded to a "
            "single-byte charset (Latin-1/ASCII) with errors replaced somewhere on the way",
        )
    cuts = _boundaries(pieces, answer.find(got))
    for rule in DAMAGE_RULES:
        message = rule.match(expected, got, pieces, cuts)
        if message is not None:
            return EchoVerdict(rule.code, message)
    if _GARBLED_CLAIM.search(got):
        return EchoVerdict(
            "garbled_claim",
            "the model says the input looks garbled: the prompt reached it corrupted",
        )
    return EchoVerdict("echo_mismatch", _difference(expected, got))


def _think_verdict(expected: str, got: str) -> EchoVerdict:
    blocks = _THINK_BLOCK.findall(got)
    what = (
        "an empty <think></think> block"
        if blocks and not "".join(blocks).strip()
        else "<think> tags"
    )
    rest = normalise_echo(strip_think_blocks(got))
    tail = (
        "; without them the answer is the sentence"
        if rest == expected
        else f"; without them the answer is {_excerpt(rest)}"
    )
    return EchoVerdict(
        "think_tags_in_content",
        f"the answer holds {what}: reasoning markup leaked into the content of a model that "
        "does not think; clients that do not split think tags (LangChain, openai-python, Cline) "
        f"show it verbatim{tail}",
    )


def _excerpt(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[: n - 1] + "…")


def _extra_text(expected: str, got: str) -> EchoVerdict:
    """The verdict for an answer that holds ``expected`` with text around it. The sentence twice,
    or followed by a repeat of its own last characters, is ``echo_mismatch`` (a piece of text
    sent twice: the proxy's doing); any other words around it are ``ok``, with what they are:
    models asked to repeat a sentence often add a word of their own ("Sure: …"), which no proxy
    can help (text a proxy adds after the answer's end is ``content_after_finish``, judged from
    the stream)."""
    start = got.index(expected)
    before, after = got[:start], got[start + len(expected) :]
    if not before and after.strip() == expected:
        return EchoVerdict("echo_mismatch", "the answer is the sentence twice")
    if not before and expected.endswith(after):
        return EchoVerdict(
            "echo_mismatch",
            f"the sentence is followed by a repeat of its own last {len(after)} character(s) "
            f"({after!r}): its last piece of text was sent twice",
        )
    if before and after:
        around = f"before it ({_excerpt(before)}) and after it ({_excerpt(after)})"
    elif before:
        around = f"before it: {_excerpt(before)}"
    else:
        around = f"after it: {_excerpt(after)}"
    if _damaged(expected, before + after):
        return EchoVerdict(
            "echo_mismatch", f"the answer holds the sentence with extra text {around}"
        )
    return EchoVerdict("ok", f"the answer holds the sentence, with the model's own words {around}")


def _damaged(expected: str, extra: str) -> bool:
    """Whether ``extra`` (text around the sentence) shows damage rather than a model's words:
    U+FFFD, or the sentence's own Latin-1/cp1252/GBK mojibake."""
    if "\ufffd" in extra:
        return True
    forms = (latin1_mojibake(expected), cp1252_mojibake(expected), *gbk_mojibake(expected))
    return any(f and f != expected and f in extra for f in forms)


def _difference(expected: str, got: str) -> str:
    """Where ``got`` breaks off or first differs from ``expected``."""
    if expected.startswith(got):
        return (
            f"the answer breaks off after {len(got)} of the sentence's {len(expected)} "
            f"characters: {_excerpt(got)}"
        )
    i = 0
    while expected[i] == got[i]:  # they differ before either ends: neither holds the other
        i += 1
    return (
        f"the answer differs from the sentence from character {i} on: expected "
        f"{_excerpt(expected[i:])}, got {_excerpt(got[i:])}"
    )


def question_mark_forms(text: str) -> tuple[str, ...]:
    """``text`` as a single-byte encoder with ``errors="replace"`` leaves it: every character
    outside Latin-1 (or ASCII) as one ``?``, or every UTF-8 byte of a non-ASCII character as
    one ``?``."""
    return (
        text.encode("latin-1", errors="replace").decode("latin-1"),
        text.encode("ascii", errors="replace").decode("ascii"),
        "".join(c if c.isascii() else "?" * len(c.encode("utf-8")) for c in text),
    )


# -- damage rules: how the pieces of a streamed answer were mangled ---------------------------


def _boundaries(pieces: Sequence[str] | None, shift: int) -> frozenset[int] | None:
    """Offsets where one piece ends and the next begins, in the joined text less its first
    ``shift`` characters (what :func:`normalise_echo` removed); ``None``: not streamed."""
    if pieces is None:
        return None
    out, pos = {-shift}, -shift
    for piece in pieces:
        pos += len(piece)
        out.add(pos)
    return frozenset(out)


def deletions(expected: str, got: str) -> list[tuple[int, str]] | None:
    """How ``got`` is ``expected`` with characters left out: ``(offset in got, the run of
    characters missing there)`` per gap, matched greedily from the start; ``None`` when
    ``got`` is not ``expected`` with characters left out."""
    runs: list[tuple[int, str]] = []
    j = 0
    for i, ch in enumerate(got):
        k = expected.find(ch, j)
        if k < 0:
            return None
        if k > j:
            runs.append((i, expected[j:k]))
        j = k + 1
    if j < len(expected):
        runs.append((len(got), expected[j:]))
    return runs


def stutters(expected: str, got: str) -> list[int] | None:
    """Offsets in ``got`` of characters that repeat the character before them and are not in
    ``expected`` (``"ab" → "abb"``); ``None`` when ``got`` is not ``expected`` with such
    repeats inserted."""
    inserted: list[int] = []
    j = 0
    for i, ch in enumerate(got):
        if j < len(expected) and ch == expected[j]:
            j += 1
        elif i > 0 and ch == got[i - 1]:
            inserted.append(i)
        else:
            return None
    return inserted if j == len(expected) else None


def byte_length_diffing(expected: str, pieces: Sequence[str]) -> bool:
    """Whether ``pieces`` are what a proxy sends when it turns cumulative snapshots of
    ``expected`` into deltas by cutting each snapshot at the *UTF-8 byte* length of the one
    before (``snap[len(prev.encode()):]``): right for ASCII, text lost after the first
    multi-byte character. Tried against every growing sequence of snapshots that ends with the
    whole of ``expected``."""
    if expected.isascii():
        return False
    size = len(expected)
    byte_at = list(itertools.accumulate((len(c.encode("utf-8")) for c in expected), initial=0))
    feasible = {0}
    for piece in pieces:
        after: set[int] = set()
        for k in feasible:
            start = byte_at[k]
            if piece:
                if expected.startswith(piece, start):
                    after.add(start + len(piece))
            else:
                after.update(range(k, min(start, size) + 1))
        feasible = after
        if not feasible:
            return False
    return size in feasible


Cuts = frozenset[int] | None
"""Where streamed pieces meet in the compared text (``None``: the answer was not streamed)."""


def _at_boundaries(offsets: Iterable[int], cuts: Cuts) -> bool | None:
    return None if cuts is None else all(o in cuts for o in offsets)


def _dropped_at_splits(
    expected: str, got: str, pieces: Sequence[str] | None, cuts: Cuts
) -> str | None:
    runs = deletions(expected, got)
    if not runs or any(c.isascii() for _, run in runs for c in run):
        return None
    if len(runs) == 1 and runs[0][0] == len(got):
        return None  # only the end is missing: a cut-off answer, not dropped characters
    missing = "".join(run for _, run in runs)
    where = _at_boundaries((o for o, _ in runs), cuts)
    if where is False:
        return None
    place = ", exactly where one streamed piece ends and the next begins" if where else ""
    return (
        f"{len(missing)} multi-byte character(s) are missing ({_excerpt(missing)}){place}: "
        "UTF-8 split across network chunks was decoded piece by piece with errors ignored "
        "(errors='ignore'), so every character cut in two was dropped"
    )


def _byte_diffed(expected: str, got: str, pieces: Sequence[str] | None, cuts: Cuts) -> str | None:
    if pieces is None or not byte_length_diffing(expected, pieces):
        return None
    return (
        f"the answer keeps only {len(got)} of the sentence's {len(expected)} characters "
        f"({_excerpt(got)}), and the streamed pieces are exactly what cutting cumulative "
        "snapshots at the previous snapshot's UTF-8 *byte* length gives: the proxy turns "
        "snapshots into deltas by byte count instead of character count"
    )


def _run_has_cut(got: str, i: int, cuts: frozenset[int]) -> bool:
    """Whether a piece starts inside the run of equal characters that ends with the repeat at
    ``i`` (which copy of a doubled character is the extra one cannot be told apart)."""
    k = i
    while k > 0 and got[k - 1] == got[i]:
        if k in cuts:
            return True
        k -= 1
    return False


def _overlapping(expected: str, got: str, pieces: Sequence[str] | None, cuts: Cuts) -> str | None:
    inserted = stutters(expected, got)
    if not inserted:
        return None
    where = None if cuts is None else all(_run_has_cut(got, i, cuts) for i in inserted)
    if where is False:
        return None
    how = (
        "each streamed piece starts with the last character of the piece before it"
        if where
        else "consecutive pieces of the text overlap by one character"
    )
    return (
        f"{len(inserted)} character(s) appear twice in a row where the sentence has them once "
        f"({_excerpt(got)}): {how} (deltas cut one character too early)"
    )


def _stripped(expected: str, got: str, pieces: Sequence[str] | None, cuts: Cuts) -> str | None:
    runs = deletions(expected, got)
    if not runs or any(not run.isspace() for _, run in runs):
        return None
    where = _at_boundaries((o for o, _ in runs), cuts)
    if where is False:
        return None
    n = sum(len(run) for _, run in runs)
    place = " at the boundaries between streamed pieces" if where else ""
    return (
        f"{n} whitespace character(s) are missing{place} ({_excerpt(got)}): the proxy "
        "strips each delta (or piece of text) before sending it on"
    )


@dataclass(frozen=True)
class DamageRule:
    """One way the text of an echo was damaged on its way: its ``code`` and ``match``, which
    returns the message when ``(expected, got, pieces, cuts)`` show it, else ``None``
    (``got``: the answer as compared; ``pieces``: the streamed pieces; ``cuts``: where they
    meet in ``got``)."""

    code: EchoCode
    match: Callable[[str, str, Sequence[str] | None, Cuts], str | None]


DAMAGE_RULES: tuple[DamageRule, ...] = (
    DamageRule("byte_length_diffing", _byte_diffed),
    DamageRule("split_chars_dropped", _dropped_at_splits),
    DamageRule("overlapping_deltas", _overlapping),
    DamageRule("stripped_deltas", _stripped),
)
"""The damage rules :func:`classify_echo` tries, in order (the byte-length rule first: the text
it leaves is also the sentence with characters left out)."""


# -- duplicated deltas -------------------------------------------------------------------------


@dataclass(frozen=True)
class DuplicateFinding:
    """Streamed text sent twice.

    ``kind``: ``"cumulative_snapshot"`` (each piece repeats the previous piece and extends it),
    ``"accumulated_resent"`` (a piece starts with all the text sent so far),
    ``"repeated_piece"`` (the same long piece twice in a row) or ``"resent_piece"`` (a piece
    sent again right after itself, where the text asked for does not repeat it). ``index`` is
    the position of the offending piece among the non-empty pieces; ``piece`` an excerpt of it.
    """

    kind: Literal["cumulative_snapshot", "accumulated_resent", "repeated_piece", "resent_piece"]
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
            "resent_piece": "is the piece before it sent again (without it the text is what "
            "the probe asked for)",
        }[self.kind]
        return f"streamed piece #{self.index} {what}: {self.piece[:60]!r}"


def find_duplicated_deltas(
    pieces: Sequence[str], *, min_len: int = 8, expected: str | None = None
) -> DuplicateFinding | None:
    """The first duplicated piece of streamed text, or ``None``.

    ``pieces`` are the ``delta.content`` strings in order (empty ones are ignored). Flagged:
    a piece that starts with the whole accumulated text when that text has at least ``min_len``
    characters; a piece equal to the previous one when it has at least ``min_len`` characters;
    a piece that starts with the previous piece and is longer, when the previous piece has at
    least ``min_len`` characters or this happens twice in a row. Short legitimate repetitions
    (``"ha", "ha"``) are never flagged (docs/protocol.md §5.4, §11.10; docs/landscape.md §3.8).
    With ``expected`` (the text the probe asked for), a piece of any length equal to the one
    before it is flagged too when the pieces do not join to ``expected`` but do without it
    (the last piece flushed twice: ``…river.``, ``r.``, ``r.``).
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
    if expected is not None:
        for i in range(1, len(texts)):
            if texts[i] == texts[i - 1] and (
                normalise_echo("".join(texts[:i] + texts[i + 1 :])) == expected
            ):
                return DuplicateFinding("resent_piece", i, texts[i])
    return None


# -- error payloads in a stream ---------------------------------------------------------------


@dataclass(frozen=True)
class ErrorShape:
    """A shape of error object that can turn up as a stream event instead of a chunk: ``code``,
    how a report names it (``what``) and the test on a JSON object without ``choices``."""

    code: Literal["error_object", "qwen_envelope", "code_message", "detail"]
    what: str
    test: Callable[[dict[str, Any]], bool]


ERROR_SHAPES: tuple[ErrorShape, ...] = (
    ErrorShape("error_object", 'an `{"error": …}` object', lambda o: "error" in o),
    ErrorShape(
        "qwen_envelope",
        "chat.qwen.ai's own error envelope (`success: false`)",
        lambda o: o.get("success") is False,
    ),
    ErrorShape(
        "code_message",
        "a bare `{code, message}` error object",
        lambda o: "code" in o and ("message" in o or "msg" in o),
    ),
    ErrorShape("detail", 'a `{"detail": …}` error (FastAPI\'s shape)', lambda o: "detail" in o),
)
"""The error shapes :func:`error_payload` recognises, in order. Only the first is OpenAI's way to
fail in the middle of a stream (docs/clients.md §9 rule 5); the others are an upstream's or a
framework's error relayed raw, which no OpenAI client reads as an error."""


def error_payload(obj: Any) -> ErrorShape | None:
    """The error shape of a stream event's JSON ``obj``, or ``None`` when it is not an error
    (anything with ``choices`` is a chunk, never an error)."""
    if not isinstance(obj, dict) or "choices" in obj:
        return None
    return next((shape for shape in ERROR_SHAPES if shape.test(obj)), None)


# -- images ------------------------------------------------------------------------------------

ImageKind = Literal["image", "null_url", "drawing_text", "text", "empty"]


@dataclass(frozen=True)
class ImageAnswer:
    """What an image request's text answer holds: ``kind`` and the http(s) URLs found."""

    kind: ImageKind
    urls: tuple[str, ...] = ()


_MD_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_URL = re.compile(r"https?://(?:\[[0-9A-Fa-f:.%]+\])?[^\s()\[\]<>\"'`]*")
_URL_TRAILER = ".,;:!?*_~"
"""Characters a bare URL in prose or Markdown does not end with: sentence punctuation and
emphasis markers after it (``see https://x/a.png.``); ``[`` (a footnote marker, ``…png[1]``),
brackets (but for an IPv6 host, ``http://[::1]:8000/``), parentheses, quotes and spaces end it
anyway."""
_NULLISH = frozenset({"", "null", "none", "undefined", "nil", "nan"})
_DRAWING = re.compile(
    r"\bstep\s*\d|\bsketch|\bpencil|\bcanvas\b|\bbrush|\bshading\b|\bdraw(?:ing)?\b|"
    r"\boutline\b|\bcolou?r(?:ing)? (?:in|it)\b|画|绘制|步骤|铅笔|素描|上色",
    re.IGNORECASE,
)


def classify_image_answer(text: str | None) -> ImageAnswer:
    """Classify the text of an image request's answer (docs/protocol.md §6.4;
    docs/landscape.md §3.7).

    A Markdown image or bare URL with http(s) → ``image`` (with the URLs; a bare URL ends
    before brackets, quotes and spaces, without trailing punctuation, and is kept as written
    even when malformed: the download reports it); a Markdown image
    whose target is empty or ``null``/``undefined`` → ``null_url`` (the ``![image](null)``
    symptom); text about how to draw → ``drawing_text``; other text → ``text``; nothing →
    ``empty``.
    """
    if not text or not text.strip():
        return ImageAnswer("empty")
    targets = [m.group(1) for m in _MD_IMAGE.finditer(text)]
    bare = [u.rstrip(_URL_TRAILER) for u in _URL.findall(text)]
    urls = tuple(dict.fromkeys(u for u in [*targets, *bare] if _is_http(u)))
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
    ``index``, ``id``, ``type``, ``name``, the concatenated ``arguments`` text and its
    ``fragments``."""

    index: int
    id: str = ""
    type: str = ""
    name: str = ""
    arguments: str = ""
    fragments: list[str] = field(default_factory=list)
    """The streamed ``arguments`` pieces in order (empty for a call read whole)."""


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
                call.fragments.append(args)
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


def resent_fragments(fragments: Sequence[str]) -> DuplicateFinding | None:
    """Streamed JSON fragments (``function.arguments`` pieces, ``input_json_delta``,
    ``function_call_arguments.delta``) that re-send earlier text, or ``None``.

    Only fragments that do not join to a JSON object are judged. Flagged: cumulative snapshots
    (each fragment starts with the one before and the last alone is a JSON object:
    ``{"cit``, ``{"city": "``, …, ``{"city": "Paris"}``), or whatever
    :func:`find_duplicated_deltas` finds (the whole text re-sent at the end)."""
    texts = [f for f in fragments if f]
    if arguments_problem("".join(texts)) is None:
        return None
    if (
        len(texts) >= 2
        and all(b.startswith(a) for a, b in itertools.pairwise(texts))
        and arguments_problem(texts[-1]) is None
    ):
        return DuplicateFinding("cumulative_snapshot", len(texts) - 1, texts[-1])
    return find_duplicated_deltas(texts)


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
