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
are raw text, so its quotes are not followed; its structure is (:class:`_XmlScan`, as vLLM's Qwen3
XML parser reads it, docs/agents.md §1.5): a closing tag counts only where it can end its
element, so a value may hold ``</parameter>``, ``</function>`` or ``</tool_call>`` (a coding
agent writing about the format):

- ``</parameter>`` ends a value only when what follows it, after whitespace, is ``<parameter=``,
  ``</function>``, ``</tool_call>`` or the end of the block;
- ``</function>`` inside a value (no ``</parameter>`` before it) ends the value and the call only
  when ``</tool_call>`` or the end of the block follows it (after whitespace);
- the block's own closing tag (``</tool_call>``, or ``</function>`` of a bare call) counts only
  outside a value.

A candidate closing tag whose follower has not arrived yet is held until the next piece decides
it. The scan moves forward only (a candidate is looked at again only while its follower is
undecided); the block's own closing tag written inside a value costs one pass over the block so
far (rare: the O(answer length) above holds for answers without it). An XML block still open
when the answer ends stays one unfinished block (a cut at a closing tag inside a value would put
the rest of the value, markup included, into the content).

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
_OPEN_PARAM = "<parameter="
_CLOSE_PARAM = "</parameter>"
_WS = re.compile(r"[ \t\r\n]*")
# What may follow (after whitespace) a closing tag inside a value for it to end the value.
_AFTER_PARAM = (_OPEN_PARAM, _CLOSE_FUNC, _CLOSE_CALL)
_AFTER_FUNC = (_CLOSE_CALL,)


@dataclass(frozen=True, slots=True)
class Block:
    """One call block. ``body``: the text inside ``<tool_call>…</tool_call>``, or the whole
    ``<function=…>…</function>`` of a bare XML call; ``closed``: its closing tag was seen (a block
    still open when the answer ends is ``closed=False``)."""

    body: str
    closed: bool


# The XML form's places (_XmlScan.mode): outside a call, inside a call between its parameters,
# inside a parameter's value.
_OUT, _FUNC, _VALUE = 0, 1, 2


class _XmlScan:
    """Reads the XML form's structure from a body that grows at its end (see the module doc).

    :meth:`run` moves over the body so far; ``final=True`` says the body ends there (the end of
    the block is a valid follower of a closing tag). :meth:`copy` lets a candidate closing tag
    of the block be tried without moving the scan itself. ``calls``: ``(name, params,
    finished)`` of each call read so far; ``mode``: where the scan is (``_OUT``, ``_FUNC``,
    ``_VALUE``).
    """

    __slots__ = ("calls", "key", "mode", "name", "params", "pos", "vstart")

    def __init__(self) -> None:
        self.pos = 0  # everything before is decided
        self.mode = _OUT
        self.calls: list[tuple[str, dict[str, str], bool]] = []
        self.name = ""
        self.params: dict[str, str] = {}
        self.key = ""
        self.vstart = 0

    def copy(self) -> _XmlScan:
        c = _XmlScan()
        c.pos, c.mode, c.name, c.key, c.vstart = (
            self.pos,
            self.mode,
            self.name,
            self.key,
            self.vstart,
        )
        c.calls = list(self.calls)
        c.params = dict(self.params)
        return c

    def run(self, s: str, final: bool) -> None:
        """Move over ``s`` (the body so far: what was scanned before, plus more)."""
        n = len(s)
        while self.pos < n:
            if self.mode == _OUT:
                j = s.find(_OPEN_FUNC, self.pos)
                if j < 0:
                    self.pos = max(self.pos, n - len(_OPEN_FUNC) + 1)
                    return
                if not self._header(s, j, len(_OPEN_FUNC), final):
                    return
            elif self.mode == _FUNC:
                a = s.find(_OPEN_PARAM, self.pos)
                b = s.find(_CLOSE_FUNC, self.pos)
                if b >= 0 and (a < 0 or b < a):
                    self._end_call(True)
                    self.pos = b + len(_CLOSE_FUNC)
                elif a >= 0:
                    if not self._header(s, a, len(_OPEN_PARAM), final):
                        return
                else:
                    self.pos = max(self.pos, n - len(_OPEN_PARAM) + 1)
                    return
            elif not self._value(s, final):
                return

    def _value(self, s: str, final: bool) -> bool:
        """Find where the open value ends; False when that waits for more of the body."""
        n = len(s)
        a = s.find(_CLOSE_PARAM, self.pos)
        b = s.find(_CLOSE_FUNC, self.pos)
        while True:
            if a < 0 and b < 0:
                self.pos = max(self.pos, n - len(_CLOSE_PARAM) + 1)
                return False
            param = a >= 0 and (b < 0 or a < b)
            c, tag, after = (
                (a, _CLOSE_PARAM, _AFTER_PARAM) if param else (b, _CLOSE_FUNC, _AFTER_FUNC)
            )
            end = c + len(tag)
            t = _WS.match(s, end).end()  # type: ignore[union-attr]
            if t < n and any(s.startswith(f, t) for f in after):
                break
            if t == n or any(n - t < len(f) and f.startswith(s[t:]) for f in after):
                if not final:
                    self.pos = c  # its follower has not arrived yet
                    return False
                if t == n:
                    break
            # part of the value: look for the next one
            if param:
                a = s.find(_CLOSE_PARAM, c + 1)
            else:
                b = s.find(_CLOSE_FUNC, c + 1)
        self.params[self.key] = _strip_value(s[self.vstart : c])
        self.pos = end
        if param:
            self.mode = _FUNC
        else:
            self._end_call(True)
        return True

    def _header(self, s: str, j: int, size: int, final: bool) -> bool:
        """``<function=NAME>`` or ``<parameter=KEY>`` at ``j``: enter the call or the value;
        False when that waits for more of the body."""
        k = s.find(">", j + size)
        nl = s.find("\n", j + size, k if k >= 0 else len(s))
        if nl >= 0:  # not a tag (a name holds no newline)
            self.pos = j + 1
            return True
        if k < 0:
            self.pos = len(s) if final else j  # the name is still arriving
            return False
        name = s[j + size : k].strip()
        self.pos = k + 1
        if self.mode == _OUT:
            self.name, self.params, self.mode = name, {}, _FUNC
        else:
            self.key, self.vstart, self.mode = name, k + 1, _VALUE
        return True

    def _end_call(self, finished: bool) -> None:
        self.calls.append((self.name, self.params, finished))
        self.params = {}
        self.mode = _OUT

    def finish(self, s: str) -> list[tuple[str, dict[str, str], bool]]:
        """The calls in the whole body ``s``; an unfinished last call (its open value dropped)
        is ``finished=False``."""
        self.run(s, True)
        if self.mode != _OUT:
            self._end_call(False)
        return self.calls


class ToolCallParser:
    """Incremental splitter of answer text into text pieces and :class:`Block` s.

    :meth:`feed` each piece of the answer; :meth:`close` at the end of the answer returns what
    was held back (text, or an unfinished block).
    """

    __slots__ = ("_close", "_esc", "_held", "_in_str", "_json", "_parts", "_tail", "_xml")

    def __init__(self) -> None:
        self._held = ""  # text state: a suffix that may start a tag
        self._close: str | None = None  # block state: the closing tag awaited
        self._parts: list[str] = []  # block state: the body so far
        self._tail = ""  # block state: last len(close)-1 chars of the body, for split tags
        # block state, JSON bodies: a closing tag inside a JSON string is part of the body
        self._json: bool | None = None  # None: not decided yet (only whitespace so far)
        self._in_str = False
        self._esc = False
        self._xml = _XmlScan()  # block state, XML bodies: the structure so far

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
            body = "".join(self._parts)
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
        self._parts = [prefix] if prefix else []
        self._xml = _XmlScan()
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
            if self._json:
                # A tag holds no quote or backslash: the state at its start is the state so far.
                if not self._in_str:
                    break
            elif self._json is None or self._xml_ends(cut, text):
                break
            k = window.find(close, k + 1)  # inside a JSON string or an XML value: body
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
            body += _CLOSE_FUNC
        out.append(Block(body, closed=True))
        self._close = None
        self._parts = []
        self._tail = ""
        return window[k + len(close) :]

    def _xml_ends(self, cut: int, text: str) -> bool:
        """Whether the block's closing tag at ``cut`` in ``text`` (< 0: in the body already)
        ends an XML block: only outside a value (see the module doc)."""
        head = "".join(self._parts)
        self._parts = [head]
        upto = head + text[:cut] if cut >= 0 else head[:cut]
        self._xml.run(upto, False)
        probe = self._xml.copy()
        probe.run(upto, True)
        return probe.mode != _VALUE


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
    for name, params, finished in _XmlScan().finish(body):
        if not finished and not closed:
            return BadBlock("the answer ended inside an unfinished call")
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
