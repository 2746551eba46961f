"""Incremental Server-Sent Events decoder: bytes in, events out.

Pure and sans-IO: it never imports aiohttp and never blocks. Feed it network chunks exactly as they
arrive; it buffers until an event is complete, so no chunking of the upstream stream can split a
frame or a UTF-8 character (docs/protocol.md §5.1; §11.9, the garbled-Chinese bug).

Line handling follows the WHATWG SSE rules: lines end in ``\\n``, ``\\r\\n`` or ``\\r``; a blank
line dispatches the event; ``data:`` lines are joined with ``\\n``; ``event:``, ``id:`` and
``retry:`` are kept; lines starting with ``:`` are comments; one space after the colon is removed;
one UTF-8 byte order mark (``EF BB BF``) at the very start of the stream is not part of it.
Bytes are decoded as UTF-8 (``bytes.decode``'s default codec) only once a whole line is present.
Because ``\\n`` and ``\\r`` never occur inside a multi-byte UTF-8 sequence, a complete line always
holds whole characters.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEEvent"]

_BOM = b"\xef\xbb\xbf"
# SSEDecoder._pending: what the next chunk's first bytes need before parsing (0: nothing)
_CR = 1  # the last chunk ended in "\r": a "\n" starting this one belongs to that line end
_START = 2  # no byte seen yet: a leading BOM is dropped (WHATWG "event stream interpretation")


@dataclass(slots=True)
class SSEEvent:
    """One dispatched SSE event.

    ``data`` is the joined text of its ``data:`` lines; ``event`` is the ``event:`` name or ``None``
    (chat.qwen.ai sends none); ``id`` the last ``id:`` value seen, or ``None``.
    """

    data: str
    event: str | None = None
    id: str | None = None


class SSEDecoder:
    """Turns a byte stream into :class:`SSEEvent` objects, incrementally.

    ``feed(chunk)`` returns the events completed by ``chunk`` (possibly none); ``close()`` returns
    an event left without its closing blank line when the stream ended (chat.qwen.ai always ends
    events properly; a missing blank line at EOF is tolerated, as browsers do not).

    Invalid UTF-8 inside a line is replaced with U+FFFD rather than raised, and counted in
    :attr:`invalid_lines`, so a single bad byte cannot kill a stream; callers may report it.
    """

    __slots__ = ("_buf", "_data", "_event", "_held", "_id", "_pending", "invalid_lines")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._data: list[str] = []
        self._held = 0  # characters in _data
        self._event: str | None = None
        self._id: str | None = None
        # _CR or _START (see there), else 0: the one test per chunk covers both, so the BOM
        # costs the chunks after the first nothing
        self._pending = _START
        self.invalid_lines = 0

    @property
    def held(self) -> int:
        """About how much of an event not complete yet is held, in bytes and characters (the
        bytes waiting for a line end, and the ``data`` taken from its lines so far): what a
        stream that never finishes an event would grow without bound. O(1)."""
        return len(self._buf) + self._held

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Add ``chunk`` (any length, any boundary) and return the events it completes."""
        if not chunk:
            return []
        if self._pending:
            if self._pending == _START:
                chunk = self._start(chunk)
                if not chunk:
                    return []
            else:  # the previous chunk ended in "\r": a "\n" here belongs to that line end
                self._pending = 0
                if chunk[:1] == b"\n":
                    chunk = chunk[1:]
        buf = self._buf
        buf += chunk
        if b"\r" not in buf:
            return self._split_lf()
        return self._split_any()

    def feed_data(self, chunk: bytes) -> list[str]:
        """Like :meth:`feed`, but only the ``data`` of each completed event (what a reader that
        ignores ``event:`` and ``id:`` needs), faster for the usual shape of a stream.

        The fast path takes whole events of one ``data: …`` line each, separated by ``\\n\\n``
        (how chat.qwen.ai sends every frame) and valid UTF-8; anything else in the chunk (other
        line ends, comments, several lines, other fields, bad bytes) goes through the general
        parser, so the result always equals ``[e.data for e in feed(chunk)]``.
        """
        if not chunk:
            return []
        if self._pending or self._data or self._event is not None:
            if self._pending != _START:
                return [e.data for e in self.feed(chunk)]
            chunk = self._start(chunk)  # (nothing parsed yet: no data, no event name)
            if not chunk:
                return []
        buf = self._buf
        buf += chunk
        if b"\r" in buf:
            return [e.data for e in self._split_any()]
        end = buf.rfind(b"\n\n")
        if end < 0:
            return []  # no event complete yet: nothing parsed, the bytes wait in the buffer
        complete = bytes(buf[:end])
        del buf[: end + 2]
        blocks = complete.split(b"\n\n")
        # The usual chunk, whole: every event one "data: " line. Then the only line ends are
        # the separators (two per gap between blocks) and each separator is followed by
        # "data: ": checked in three passes over the bytes instead of one test per event.
        gaps = len(blocks) - 1
        if (
            complete.startswith(b"data: ")
            and complete.count(b"\n") == 2 * gaps
            and complete.count(b"\n\ndata: ") == gaps
        ):
            try:  # (an event whose data is empty is dropped, as the spec says)
                return [block[6:].decode() for block in blocks if len(block) > 6]
            except UnicodeDecodeError:
                pass  # event by event below: bad bytes get the general rules
        out: list[str] = []
        for block in blocks:
            if block[:6] == b"data: " and b"\n" not in block:
                try:
                    data = block[6:].decode()
                except UnicodeDecodeError:
                    pass
                else:
                    if data:  # the spec drops events whose data buffer is empty
                        out.append(data)
                    continue
            if block:  # the general rules for this one event (it ends in a blank line)
                events: list[SSEEvent] = []
                for raw in block.split(b"\n"):
                    self._line(raw, events)
                self._line(b"", events)
                out.extend(e.data for e in events)
        return out

    def close(self) -> list[SSEEvent]:
        """Flush at end of stream: a last line without terminator, and an undispatched event."""
        events: list[SSEEvent] = []
        if self._buf:
            # complete lines first (feed_data leaves a whole unfinished event unparsed)
            events = self._split_any()
            if self._buf:
                self._line(bytes(self._buf), events)
                self._buf.clear()
        if self._data:
            self._dispatch(events)
        return events

    # -- internals -----------------------------------------------------------------------------

    def _start(self, chunk: bytes) -> bytes:
        """The stream's first bytes, ``chunk`` after what the buffer holds: without the BOM they
        may begin with. The first bytes of a BOM cut by the chunking wait in the buffer."""
        head = bytes(self._buf) + chunk if self._buf else chunk
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._buf[:] = head  # maybe a BOM: the next chunk tells
            return b""
        self._buf.clear()
        self._pending = 0
        return head[len(_BOM) :] if head.startswith(_BOM) else head

    def _split_lf(self) -> list[SSEEvent]:
        buf = self._buf
        end = buf.rfind(b"\n")
        if end < 0:
            return []
        events: list[SSEEvent] = []
        complete = bytes(buf[:end])
        del buf[: end + 1]
        for raw in complete.split(b"\n"):
            self._line(raw, events)
        return events

    def _split_any(self) -> list[SSEEvent]:
        buf = self._buf
        events: list[SSEEvent] = []
        start = 0
        n = len(buf)
        i = 0
        while i < n:
            c = buf[i]
            if c == 0x0A or c == 0x0D:  # \n or \r
                self._line(bytes(buf[start:i]), events)
                if c == 0x0D:
                    if i + 1 < n:
                        if buf[i + 1] == 0x0A:
                            i += 1
                    else:
                        self._pending = _CR
                start = i + 1
            i += 1
        del buf[:start]
        return events

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        if raw[:6] == b"data: ":  # the common case, without the general parsing below
            try:
                text = raw[6:].decode()
            except UnicodeDecodeError:
                pass
            else:
                self._data.append(text)
                self._held += len(text)
                return
        if not raw:
            if self._data or self._event is not None:
                self._dispatch(events)
            return
        try:
            line = raw.decode()
        except UnicodeDecodeError:
            line = raw.decode(errors="replace")
            self.invalid_lines += 1
        if line[0] == ":":
            return  # comment / keep-alive
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._held += len(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
        # "retry" and unknown fields are ignored, as the spec says.

    def _dispatch(self, events: list[SSEEvent]) -> None:
        parts = self._data
        data = parts[0] if len(parts) == 1 else "\n".join(parts)
        if data:  # the spec drops events whose data buffer is empty
            events.append(SSEEvent(data, self._event, self._id))
        self._data = []
        self._held = 0
        self._event = None
