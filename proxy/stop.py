"""Stop sequences and the output-token limit, emulated on the answer's events (pure).

chat.qwen.ai has no slot for either (docs/protocol.md §4.1, "Unsupported/ignored"), so the relay
cuts the answer itself (:class:`StopStage`, after the tool stage):

- ``stop`` sequences: answer text (``Text(kind="content")``, never reasoning) is cut before the
  first occurrence of any of them, found on any chunking (a suffix that may begin a sequence is
  held back until the next piece decides it); the answer then ends with
  ``Finish("stop", stop_sequence=<the sequence>)`` and the relay stops reading upstream.
- ``max_output_tokens``: once the site's cumulative ``output_tokens`` (docs/protocol.md §5.4, which
  counts reasoning too) reaches the limit, the answer ends with ``Finish("length")`` after the
  batch that reached it. The site reports usage per frame, so the cut is at a frame boundary:
  a few tokens past the limit at most.
"""

from __future__ import annotations

from proxy.qwen.translate import Failure, Finish, OutEvent, Text, Usage

__all__ = ["StopStage"]


class StopStage:
    """Cuts one answer at the first stop sequence or at the token limit (see module doc).

    ``done`` is true once this stage ended the answer; later events are ignored.
    """

    __slots__ = ("_held", "_max_tokens", "_stops", "done")

    def __init__(self, stop: tuple[str, ...] = (), max_output_tokens: int | None = None) -> None:
        self._stops = tuple(s for s in stop if s)
        self._max_tokens = max_output_tokens
        self._held = ""
        self.done = False

    @property
    def active(self) -> bool:
        """True when there is anything to cut on."""
        return bool(self._stops) or self._max_tokens is not None

    def feed(self, events: list[OutEvent], usage: Usage | None) -> list[OutEvent]:
        """Process one batch; ``usage`` is the translator's cumulative usage after it."""
        if self.done:
            return []
        out: list[OutEvent] = []
        for e in events:
            if type(e) is Text and e.kind == "content" and self._stops:
                if self._text(e.text, out):
                    return out
            elif isinstance(e, Finish | Failure):
                if self._held:
                    out.append(Text("content", self._held))
                    self._held = ""
                self.done = True
                out.append(e)
                return out
            else:
                out.append(e)
        limit = self._max_tokens
        if limit is not None and usage is not None and usage.completion_tokens >= limit:
            if self._held:
                out.append(Text("content", self._held))
                self._held = ""
            self.done = True
            out.append(Finish("length"))
        return out

    def _text(self, text: str, out: list[OutEvent]) -> bool:
        """Pass ``text`` on up to a stop sequence; True when one ended the answer."""
        s = self._held + text
        best = -1
        hit = ""
        for stop in self._stops:
            k = s.find(stop)
            if k != -1 and (best == -1 or k < best):
                best, hit = k, stop
        if best != -1:
            if best:
                out.append(Text("content", s[:best]))
            self._held = ""
            self.done = True
            out.append(Finish("stop", stop_sequence=hit))
            return True
        keep = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(s)), keep, -1):
                if stop.startswith(s[-n:]):
                    keep = n
                    break
        if keep:
            self._held = s[-keep:]
            s = s[:-keep]
        else:
            self._held = ""
        if s:
            out.append(Text("content", s))
        return False
