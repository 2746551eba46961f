"""The streaming tool-call parser: answer text in, plain text and call blocks out (pure).

Qwen models answer calls as markup in the text (docs/agents.md §1.3-§1.5):

- Hermes JSON: ``<tool_call>\\n{"name": "read_file", "arguments": {"path": "a.py"}}\\n</tool_call>``
- the XML form of Qwen3-Coder and Qwen3.5+, inside ``<tool_call>`` or bare:
  ``<function=read_file>\\n<parameter=path>\\na.py\\n</parameter>\\n</function>``

:class:`ToolCallParser` takes the answer in pieces of any size (split at any character) and
returns, in order, plain-text pieces (``str``) and :class:`Block` s. Text that may be the start
of a tag (``<``, ``<tool_c``…) is held back until the next piece decides it, so no markup is ever
returned as text; a stray ``</tool_call>`` or ``</function>`` is dropped. The cost is
O(answer length): each character is looked at a bounded number of times (the held-back suffix
is shorter than the longest tag, and the closing tag is searched only in the new text plus that
many characters).

Inside a block whose body is JSON (it does not start with ``<``), a closing tag inside a JSON
string is part of the body (a coding agent writing code about tool calls): the string state
(quotes, backslash escapes) is followed as the body arrives, once per character. If the answer
ends with such a block still open, the body is cut at its first closing tag after all (an
unbalanced quote in a broken call must not swallow the prose after it). The XML form's values
are raw text, so its quotes are not followed.

:func:`decode_block` turns a block into calls (``name`` + decoded ``arguments``) or says why it
cannot (not JSON, unfinished).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BadBlock",
    "Block",
    "ParsedCall",
    "ToolCallParser",
    "decode_block",
]

_OPEN_CALL = "<tool_call>"
_CLOSE_CALL = "</tool_call>"
_OPEN_FUNC = "<function="
_CLOSE_FUNC = "</function>"
# Tags recognised in plain text: the two openings, and stray closing tags to drop.
_TAGS = (_OPEN_CALL, _OPEN_FUNC, _CLOSE_CALL, _CLOSE_FUNC)
_MAX_TAG = max(len(t) for t in _TAGS)
_STR_SPECIAL = re.compile(r'["\\]')


@dataclass(frozen=True, slots=True)
class Block:
    """One call block. ``body``: the text inside ``<tool_call>…</tool_call>``, or the whole
    ``<function=…>…</function>`` of a bare XML call; ``closed``: its closing tag was seen (a block
    still open when the answer ends is ``closed=False``)."""

    body: str
    closed: bool


class ToolCallParser:
    """Incremental splitter of answer text into text pieces and :class:`Block` s.

    :meth:`feed` each piece of the answer; :meth:`close` at the end of the answer returns what
    was held back (text, or an unfinished block).
    """

    __slots__ = ("_close", "_esc", "_held", "_in_str", "_json", "_parts", "_prefix", "_tail")

    def __init__(self) -> None:
        self._held = ""  # text state: a suffix that may start a tag
        self._close: str | None = None  # block state: the closing tag awaited
        self._prefix = ""  # block state: kept at the head of the body (bare XML form)
        self._parts: list[str] = []  # block state: the body so far
        self._tail = ""  # block state: last len(close)-1 chars of the body, for split tags
        # block state, JSON bodies: a closing tag inside a JSON string is part of the body
        self._json: bool | None = None  # None: not decided yet (only whitespace so far)
        self._in_str = False
        self._esc = False

    @property
    def in_block(self) -> bool:
        """True while inside a call block."""
        return self._close is not None

    def feed(self, text: str) -> list[str | Block]:
        """Split one piece of answer text. Returns text pieces and completed blocks in order."""
        out: list[str | Block] = []
        while text:
            if self._close is None:
                text = self._text(text, out)
            else:
                text = self._block(text, out)
        return out

    def close(self) -> list[str | Block]:
        """End of the answer: the held-back text, or the unfinished block (``closed=False``)."""
        out: list[str | Block] = []
        if self._close is not None:
            close = self._close
            body = self._prefix + "".join(self._parts)
            self._close = None
            self._parts = []
            self._tail = ""
            cut = body.find(close) if self._json else -1
            if cut >= 0:
                # An unbalanced quote hid the closing tag (a broken call): split there, as if
                # strings were not tracked, so the text after it is not lost.
                out.append(Block(body[:cut], closed=True))
                out.extend(self.feed(body[cut + len(close) :]))
                out.extend(self.close())
                return out
            out.append(Block(body, closed=False))
        elif self._held:
            out.append(self._held)
        self._held = ""
        return out

    # -- text state ------------------------------------------------------------------------------

    def _text(self, text: str, out: list[str | Block]) -> str:
        """Consume ``text`` in the text state; returns what is left for the block state."""
        s = self._held + text if self._held else text
        self._held = ""
        i = s.find("<")
        while i != -1:
            for tag in _TAGS:
                if s.startswith(tag, i):
                    if i:
                        out.append(s[:i])
                    rest = s[i + len(tag) :]
                    if tag == _OPEN_CALL:
                        self._enter(_CLOSE_CALL, "")
                    elif tag == _OPEN_FUNC:
                        self._enter(_CLOSE_FUNC, _OPEN_FUNC)
                    else:  # a stray closing tag: dropped
                        return rest
                    return rest
            if len(s) - i < _MAX_TAG:
                frag = s[i:]
                if any(tag.startswith(frag) for tag in _TAGS):
                    if i:
                        out.append(s[:i])
                    self._held = frag
                    return ""
            i = s.find("<", i + 1)
        out.append(s)
        return ""

    def _enter(self, close: str, prefix: str) -> None:
        self._close = close
        self._prefix = prefix
        self._parts = []
        self._tail = ""
        self._json = False if prefix else None  # the bare XML form: raw values, no strings
        self._in_str = False
        self._esc = False

    def _scan(self, s: str) -> None:
        """Follow JSON string state (quotes, backslash escapes) over more of a block's body.
        Bodies that start with ``<`` (the XML form: raw values) are not followed."""
        if self._json is None:
            head = s.lstrip()
            if not head:
                return
            self._json = head[0] != "<"
        if not self._json:
            return
        i = 0
        n = len(s)
        if self._esc:
            if not n:
                return
            self._esc = False
            i = 1
        while i < n:
            if self._in_str:
                m = _STR_SPECIAL.search(s, i)
                if m is None:
                    return
                if m.group() == "\\":
                    if m.end() >= n:
                        self._esc = True
                        return
                    i = m.end() + 1
                else:
                    self._in_str = False
                    i = m.end()
            else:
                j = s.find('"', i)
                if j < 0:
                    return
                self._in_str = True
                i = j + 1

    # -- block state -----------------------------------------------------------------------------

    def _block(self, text: str, out: list[str | Block]) -> str:
        """Consume ``text`` inside a block; returns the text after its closing tag, if any."""
        close = self._close
        assert close is not None
        tail = self._tail
        window = tail + text
        scanned = 0  # how much of ``text`` the JSON string state has followed
        k = window.find(close)
        while k >= 0:
            cut = k - len(tail)  # where the closing tag starts in ``text`` (< 0: in the tail)
            if cut > scanned:
                self._scan(text[scanned:cut])
                scanned = cut
            # A tag holds no quote or backslash: the state at its start is the state so far.
            if not (self._json and self._in_str):
                break
            k = window.find(close, k + 1)  # inside a JSON string: part of the body
        if k < 0:
            self._scan(text[scanned:])
            self._parts.append(text)
            self._tail = window[-(len(close) - 1) :]
            return ""
        body = "".join(self._parts)
        if cut >= 0:
            body += text[:cut]
        else:
            body = body[:cut]
        if close == _CLOSE_FUNC:
            body = self._prefix + body + _CLOSE_FUNC
        out.append(Block(body, closed=True))
        self._close = None
        self._parts = []
        self._tail = ""
        self._prefix = ""
        return window[k + len(close) :]


# -- decoding blocks ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedCall:
    """A call read from a block: the tool ``name`` as written, ``arguments`` decoded (an object,
    or whatever the model wrote there), ``xml``: from the XML form (values are raw text)."""

    name: Any
    arguments: Any
    xml: bool = False


@dataclass(frozen=True, slots=True)
class BadBlock:
    """A block that holds no readable call: ``detail`` says why (short, no block text)."""

    detail: str


_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?```$", re.DOTALL)
_XML_FUNC = re.compile(r"<function=([^>\n]*)>(.*?)(?:</function>|$)", re.DOTALL)
_XML_PARAM = re.compile(r"<parameter=([^>\n]*)>(.*?)</parameter>", re.DOTALL)
_NAME_KEYS = ("name", "tool", "function", "tool_name")
_ARG_KEYS = ("arguments", "parameters", "args", "input", "params")


def _from_object(obj: Any) -> ParsedCall | None:
    if not isinstance(obj, dict):
        return None
    fn = obj.get("function")
    if isinstance(fn, dict) and "name" in fn:  # the OpenAI shape written back by the model
        obj = fn
    name = next((obj[k] for k in _NAME_KEYS if k in obj and isinstance(obj[k], str)), None)
    if name is None:
        return None
    args = next((obj[k] for k in _ARG_KEYS if k in obj), None)
    return ParsedCall(name, args)


def _strip_value(v: str) -> str:
    if v.startswith("\n"):
        v = v[1:]
    if v.endswith("\n"):
        v = v[:-1]
    return v


def _decode_xml(body: str, closed: bool) -> list[ParsedCall] | BadBlock:
    calls: list[ParsedCall] = []
    for m in _XML_FUNC.finditer(body):
        name = m.group(1).strip()
        inner = m.group(2)
        finished = m.group(0).endswith(_CLOSE_FUNC)
        if not finished and not closed:
            return BadBlock("the answer ended inside an unfinished call")
        params = {p.group(1).strip(): _strip_value(p.group(2)) for p in _XML_PARAM.finditer(inner)}
        calls.append(ParsedCall(name, params, xml=True))
    if not calls:
        return BadBlock("the block holds no <function=…> call")
    return calls


def decode_block(block: Block) -> list[ParsedCall] | BadBlock:
    """The calls in ``block`` (usually one), or :class:`BadBlock`.

    JSON blocks: one object (or a list of objects) with the name under ``name`` (also ``tool``,
    ``function``) and the arguments under ``arguments`` (also ``parameters``, ``args``,
    ``input``), optionally inside a Markdown code fence. XML blocks: ``<function=NAME>`` with
    ``<parameter=KEY>VALUE</parameter>`` items. An unfinished block is a call only if what
    arrived is complete (JSON that parses, or XML whose ``</function>`` arrived): truncated
    arguments are never repaired (docs/agents.md §6.6).
    """
    body = block.body.strip()
    if body.startswith(_OPEN_FUNC):
        return _decode_xml(body, block.closed)
    fence = _FENCE.match(body)
    if fence:
        body = fence.group(1).strip()
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):  # (RecursionError: nested past the interpreter's limit)
        if _OPEN_FUNC in body:
            return _decode_xml(body[body.index(_OPEN_FUNC) :], block.closed)
        if not block.closed:
            return BadBlock("the answer ended inside an unfinished call")
        return BadBlock("the call block is not valid JSON")
    items = obj if isinstance(obj, list) else [obj]
    calls = [_from_object(o) for o in items]
    if not calls or any(c is None for c in calls):
        return BadBlock("the call block has no tool name")
    return [c for c in calls if c is not None]
