"""The tool stage: translator events in, the same events with checked tool calls out (pure).

Sits between :class:`~proxy.qwen.translate.Translator` and a front door's renderer when the
request offers tools (docs/architecture.md). With ``tool_choice: "none"`` the
model gets no tool prompt, and any call markup it writes anyway is still kept out of the content
(rejected as ``not_allowed``): never a call, never markup.

- Answer text (``Text(kind="content")``) goes through :class:`~proxy.tools.parser.ToolCallParser`;
  text before the first call is passed on as content (trailing whitespace, and a code-fence
  opener such as a last line ```json, before a call are dropped), call markup never is.
  Reasoning is never parsed (calls written while thinking are not calls, docs/agents.md §1.4), nor
  is the translator's inline ``<think>…</think>`` reasoning (``think_tags``: the events it marks
  ``inline_think``). A ``<think>`` the model writes in its answer is answer text like any other:
  whatever the frame boundaries, it is parsed the same.
- Each block is decoded and checked (:class:`~proxy.tools.validate.ToolBox`): a good call
  becomes one whole :class:`~proxy.qwen.translate.ToolCall` (``index`` 0, 1, …; a fresh
  ``call_`` + 24 hex id). A block that is not JSON, names a tool that was not offered, has
  arguments that fail the tool's schema, or is not allowed (a second call with
  ``parallel_tool_calls: false``, another tool than the named ``tool_choice``) is never a call:
  before any call it becomes a one-line note in the content, ``(tool call dropped by the
  proxy: <why>)``; after a call it is dropped. Every rejection is kept in :attr:`rejections`.
- Text after the first call is dropped (as Qwen-Agent and vLLM do; its length is counted).
- Native ``local_tool`` calls (:class:`~proxy.qwen.translate.NativeToolCall`) are checked the
  same way, so the client gets the same ``tool_calls`` whichever path the model took.
- The closing :class:`~proxy.qwen.translate.Finish` becomes ``Finish("tool_calls")`` when at
  least one call was emitted. On a :class:`~proxy.qwen.translate.Failure` an unfinished block
  is discarded (never half a call).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from proxy.conversation import Conversation, ToolSpec
from proxy.qwen.translate import Failure, Finish, NativeToolCall, OutEvent, Text, ToolCall
from proxy.tools.parser import BadBlock, Block, ParsedCall, ToolCallParser, decode_block
from proxy.tools.validate import Rejection, ToolBox, coerce_xml_params

__all__ = ["ToolCounters", "ToolStage", "new_call_id"]


def _fence(lang: str) -> bool:
    return lang == "" or lang.isalnum()


def new_call_id() -> str:
    """``call_`` + 24 hex characters (the OpenAI/vLLM id style)."""
    return "call_" + uuid.uuid4().hex[:24]


class ToolStage:
    """Turns one answer's events into events with :class:`ToolCall` s (see module doc).

    ``new_id`` makes call ids (tests pass a deterministic one).
    """

    __slots__ = (
        "_box",
        "_hold",
        "_named",
        "_new_id",
        "_none",
        "_parallel",
        "_parser",
        "_prose",
        "_sent",
        "_ws",
        "calls",
        "dropped_chars",
        "finished",
        "rejections",
        "texts",
        "wants_retry",
    )

    def __init__(
        self,
        conv: Conversation,
        *,
        new_id: Callable[[], str] = new_call_id,
        hold_prose: bool = False,
    ) -> None:
        choice = conv.tool_choice
        self._hold = hold_prose
        self._prose: list[OutEvent] = []
        self.wants_retry = False
        self.finished = False  # the answer ended with a Finish passed on
        self.texts: list[str] = []  # the content passed on, in order
        self._named = choice.name if choice.mode == "named" else None
        self._none = choice.mode == "none"
        self._parallel = conv.parallel_tool_calls
        self._box = ToolBox(conv.tools)
        self._new_id = new_id
        self._parser = ToolCallParser()
        self._ws = ""
        self._sent = False  # some content was passed on
        self.calls: list[ToolCall] = []
        self.rejections: list[Rejection] = []
        self.dropped_chars = 0

    def feed(self, events: list[OutEvent]) -> list[OutEvent]:
        """Process one batch of translator events; returns the batch for the renderer."""
        out: list[OutEvent] = []
        for e in events:
            if type(e) is Text and e.kind == "content":
                if e.inline_think:
                    # Inline reasoning (the translator's think_tags mode) is never parsed.
                    out.append(e)
                    continue
                self._pieces(self._parser.feed(e.text), out)
            elif isinstance(e, NativeToolCall):
                self._add(ParsedCall(e.name, e.arguments), out)
            elif isinstance(e, Finish):
                self._pieces(self._parser.close(), out)
                if self._ws and not self.calls:
                    out.append(Text("content", self._ws))
                self._ws = ""
                if self._hold and not self.calls:
                    # No call although one was required: hold everything back, the relay
                    # asks once more (prose() gives what the model said).
                    self._prose.extend(out)
                    out = []
                    self.wants_retry = True
                    continue
                self.finished = True
                out.append(Finish("tool_calls") if self.calls else e)
            elif isinstance(e, Failure):
                if self._prose:
                    out[:0] = self._prose
                    self._prose = []
                rest = self._parser.close()
                for piece in rest:
                    if isinstance(piece, str) and not self.calls:
                        self._sent = True
                        out.append(Text("content", self._ws + piece))
                        self._ws = ""
                out.append(e)
            else:
                out.append(e)
        if self._hold and not self.calls and not self.wants_retry:
            if not any(isinstance(e, Failure) for e in out):
                # Until a call comes, everything is held back (a required call may follow).
                self._prose.extend(out)
                return []
        self.texts.extend(e.text for e in out if type(e) is Text and e.kind == "content")
        return out

    def _prose_out(self) -> list[OutEvent]:
        held, self._prose = self._prose, []
        return held

    def prose(self) -> str:
        """The held-back answer text of a turn that did not call a tool (``wants_retry``)."""
        return "".join(e.text for e in self._prose if type(e) is Text and e.kind == "content")

    # -- internals -------------------------------------------------------------------------------

    def _pieces(self, pieces: list[str | Block], out: list[OutEvent]) -> None:
        for piece in pieces:
            if isinstance(piece, str):
                self._text(piece, out)
            else:
                self._ws = ""
                decoded = decode_block(piece)
                if isinstance(decoded, BadBlock):
                    self._reject(Rejection("invalid_json", None, decoded.detail), out)
                else:
                    for call in decoded:
                        self._add(call, out)

    def _text(self, text: str, out: list[OutEvent]) -> None:
        if self.calls:
            self.dropped_chars += len(text.strip())
            return
        text = self._ws + text
        kept = text.rstrip()
        line = kept.rfind("\n") + 1
        last = kept[line:]
        at_line_start = line > 0 or not self._sent  # else the line began in sent text
        fence = last in ("`", "``") or (last.startswith("```") and _fence(last[3:]))
        if last and at_line_start and fence:
            # A trailing code-fence opener (```json) may wrap a call: held like whitespace.
            kept = kept[:line].rstrip()
        self._ws = text[len(kept) :]
        if kept:
            self._sent = True
            out.append(Text("content", kept))

    def _add(self, call: ParsedCall, out: list[OutEvent]) -> None:
        args = call.arguments
        if call.xml and isinstance(args, dict) and isinstance(call.name, str):
            canon = self._box.canonical(call.name)
            spec: ToolSpec | None = self._box.spec(canon) if canon else None
            args = coerce_xml_params(args, spec)
        checked = self._box.check(call.name, args)
        if isinstance(checked, Rejection):
            self._reject(checked, out)
            return
        name, arguments = checked
        if self._none:
            self._reject(Rejection("not_allowed", name, "tool_choice is none"), out)
            return
        if self._named is not None and name != self._named:
            self._reject(
                Rejection("not_allowed", name, f"tool_choice asks for {self._named!r}"), out
            )
            return
        if self.calls and not self._parallel:
            self._reject(
                Rejection("not_allowed", name, "parallel_tool_calls is false: one call only"),
                out,
            )
            return
        tc = ToolCall(len(self.calls), self._new_id(), name, arguments)
        if self._hold and not self.calls and self._prose:
            out[:0] = self._prose_out()  # the preface of the required call
        self.calls.append(tc)
        out.append(tc)

    def _reject(self, rejection: Rejection, out: list[OutEvent]) -> None:
        self.rejections.append(rejection)
        if not self.calls:
            lead = "\n\n" if self._sent else ""
            self._ws = ""
            self._sent = True
            note = f"{lead}(tool call dropped by the proxy: {rejection.detail})"
            out.append(Text("content", note))


class ToolCounters:
    """Per-app counts of tool-call outcomes, for logs now and metrics later (no globals: the
    app holds one, ``proxy.state.TOOL_COUNTERS``).

    ``calls``: calls delivered; ``rejected[reason]``: blocks not turned into calls
    (:class:`~proxy.tools.validate.Rejection` reasons); ``corrective_turns``: prose answers to a
    ``required``/named ``tool_choice`` that got their one corrective turn; ``unmet_choice``:
    answers still without a call after it; ``repeated_in_history``: requests whose history
    repeats an identical call (the prompt warns the model).
    """

    __slots__ = ("calls", "corrective_turns", "rejected", "repeated_in_history", "unmet_choice")

    def __init__(self) -> None:
        self.calls = 0
        self.rejected: dict[str, int] = {}
        self.corrective_turns = 0
        self.unmet_choice = 0
        self.repeated_in_history = 0

    def record(self, conv: Conversation, stage: ToolStage) -> None:
        """Add one upstream turn's outcome."""
        self.calls += len(stage.calls)
        for r in stage.rejections:
            self.rejected[r.reason] = self.rejected.get(r.reason, 0) + 1
        if stage.wants_retry:
            self.corrective_turns += 1
        elif not stage.calls and conv.tool_choice.mode in ("required", "named"):
            self.unmet_choice += 1
