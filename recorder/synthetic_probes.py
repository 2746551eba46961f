"""Synthetic chat.qwen.ai cassettes that answer the conformance harness's probes.

``qwen-proxy check`` (``proxy/conformance``) sends fixed prompts; these cassettes are what
chat.qwen.ai would answer to the requests our proxy makes for them, so CI can run the harness
against our proxy on the replay server, offline. Like :mod:`recorder.synthetic` (whose frame
helpers this module uses) every byte is written from ``docs/protocol.md``, none is captured: the
two-step flow of §3 and §4.1, the SSE frames of §5.1–§5.4, ``thinking_summary`` snapshots of
§5.3/§5.5 and the t2i flow of §6.1 with the URL in an ``image_gen`` frame (§5.3, §5.5). Each
cassette says so in its provenance (``kind: synthetic``, the sections followed).

The prompts are the harness's (``proxy/conformance/probes.py``); they are repeated here because
``recorder`` never imports ``proxy`` (docs/architecture.md), and
``tests/test_conformance_probes.py`` checks that both agree. They differ from every prompt of
:data:`recorder.synthetic.SCENARIOS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from recorder.cassette import Cassette, Interaction
from recorder.synthetic import (
    BASE_EPOCH_S,
    COMPLETIONS_URL,
    Scenario,
    _completions_headers,
    _Frames,
    _json_compact,
    _offset_in,
    _pieces,
    _t_headers,
    _uid,
    chats_new_interaction,
    synthetic_cassette,
    user_message,
)

__all__ = [
    "AGENT_PROBE_ANSWERS",
    "IMAGE_PROBE_SCENARIOS",
    "PROBE_SCENARIOS",
    "UpstreamAsk",
    "build",
    "build_agent_probe",
    "build_all",
    "build_image_probes",
]

# The harness's prompts (proxy/conformance/probes.py), repeated: recorder never imports proxy.
ECHO_ZH_SENTENCE = "我们在北京的咖啡馆里讨论量子计算。"
ECHO_ZH_PROMPT = f"请原样重复这句话：{ECHO_ZH_SENTENCE}"
ECHO_EN_SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river."
ECHO_EN_PROMPT = f"Repeat this sentence exactly, and nothing else: {ECHO_EN_SENTENCE}"
STREAM_PROMPT = "Conformance probe: count from one to twelve in English words, separated by commas."
THINK_PROMPT = "Conformance probe: is 221 a prime number? Think it through, then answer yes or no."
IMAGE_PROMPT = "Conformance probe: a red apple on a white table, studio photo."

PROBE_EPOCH_S = BASE_EPOCH_S + 3600
"""Probe scenario ``i`` happens ``i`` minutes after 2026-11-22T10:00:00Z."""

IMAGE_URL_BASE = "https://cdn.qwenlm.ai/output"
"""Where generated images live (docs/protocol.md §1: the CDN of generated assets)."""

_EN_PIECES = (
    "The quick",
    " brown fox",
    " jumps over",
    " the lazy",
    " dog near",
    " the quiet",
    " river",
    ".",
)
_ZH_PIECES = ("我们", "在北京", "的咖啡馆", "里讨论", "量子", "计算", "。")
_NUMBERS = ("one two three four five six seven eight nine ten eleven twelve").split()
_STREAM_PIECES = tuple(
    piece
    for i, word in enumerate(_NUMBERS)
    for piece in ((word.capitalize() if i == 0 else f" {word}"), "," if i < 11 else ".")
)
_THINK_SNAPSHOTS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("Checking small factors",), ("221 is odd, so 2 does not divide it.",)),
    (
        ("Checking small factors",),
        ("221 is odd, so 2 does not divide it. Its digits sum to 5, so 3 does not divide it.",),
    ),
    (
        ("Checking small factors", "Trying 13"),
        (
            "221 is odd, so 2 does not divide it. Its digits sum to 5, so 3 does not divide it.",
            "13 × 17 = 221.",
        ),
    ),
)
_THINK_ANSWER_PIECES = ("No", ":", " 221", " =", " 13", " ×", " 17", ".")


def _join(pieces: Sequence[str]) -> str:
    return "".join(pieces)


_T2T = ("3", "4.1", "5.1", "5.2", "5.3", "5.4")

PROBE_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="probe_echo_en",
        description="Synthetic answer to the conformance harness's English echo probe.",
        protocol_sections=_T2T,
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt=ECHO_EN_PROMPT,
        chat_type="t2t",
        thinking=False,
        expected_content=_join(_EN_PIECES),
    ),
    Scenario(
        name="probe_echo_zh",
        description=(
            "Synthetic answer to the conformance harness's Chinese echo probe; network chunks "
            "end inside multi-byte UTF-8 characters."
        ),
        protocol_sections=(*_T2T, "11"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt=ECHO_ZH_PROMPT,
        chat_type="t2t",
        thinking=False,
        expected_content=_join(_ZH_PIECES),
    ),
    Scenario(
        name="probe_stream",
        description=(
            "Synthetic answer to the conformance harness's streaming probe: many small pieces, "
            "short ones repeated legitimately."
        ),
        protocol_sections=_T2T,
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt=STREAM_PROMPT,
        chat_type="t2t",
        thinking=False,
        expected_content=_join(_STREAM_PIECES),
    ),
    Scenario(
        name="probe_thinking",
        description=(
            "Synthetic answer to the conformance harness's reasoning probe: thinking_summary "
            "snapshots, then the answer."
        ),
        protocol_sections=(*_T2T, "5.5", "11"),
        model="qwen3-max",
        openai_model="qwen3-max-thinking",
        prompt=THINK_PROMPT,
        chat_type="t2t",
        thinking=True,
        expected_content=_join(_THINK_ANSWER_PIECES),
        expected_reasoning="\n\n".join(_THINK_SNAPSHOTS[-1][1]),
    ),
)

IMAGE_PROBE_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="probe_t2i",
        description=(
            "Synthetic t2i answer to the conformance harness's image probe: the image URL in "
            "an image_gen frame."
        ),
        protocol_sections=("3", "4.1", "5.1", "5.2", "5.3", "5.4", "5.5", "6.1"),
        model="qwen3-max",
        openai_model="qwen3-max-image",
        prompt=IMAGE_PROMPT,
        chat_type="t2i",
        thinking=False,
        expected_content=(
            f"{IMAGE_URL_BASE}/{_uid('probe_t2i', 'image_dir')}/t2i/"
            f"{_uid('probe_t2i', 'image')}.png"
        ),
    ),
)
"""t2i probe answers. Built but not written into ``cassettes/`` yet: t2i is a new upstream shape
for ``schemas/upstream`` (``tests/test_drift.py``) and our proxy has no image route yet. Tests serve
them in memory (:func:`build_image_probes`); move them into :func:`build_all` once both know t2i."""


def _epoch(sc: Scenario) -> int:
    names = [s.name for s in (*PROBE_SCENARIOS, *IMAGE_PROBE_SCENARIOS)]
    return PROBE_EPOCH_S + 60 * names.index(sc.name)


def _chats_new(sc: Scenario) -> Interaction:
    """Step 1 (§3): create the chat (milliseconds timestamp); always a success."""
    return chats_new_interaction(sc.name, sc.model, sc.chat_type, _epoch(sc))


def _completions_body(sc: Scenario) -> str:
    """The v2 body of §4.1 (t2i: §6.1, top-level ``size`` and thinking off)."""
    chat_id = _uid(sc.name, "chat_id")
    feature_config: dict[str, Any] = {"thinking_enabled": sc.thinking, "output_schema": "phase"}
    if sc.thinking:
        feature_config["thinking_format"] = "summary"
    ts = _epoch(sc)
    body: dict[str, Any] = {
        "stream": True,
        "version": "2.1",
        "incremental_output": True,
        "chat_id": chat_id,
        "chat_mode": "normal",
        "model": sc.model,
        "parent_id": None,
        "timestamp": ts + 1,
    }
    if sc.chat_type == "t2i":
        body["size"] = "1:1"
    body["messages"] = [user_message(sc, feature_config, ts)]
    return _json_compact(body)


def _stream(
    sc: Scenario,
    f: _Frames,
    *,
    coalesce: Sequence[int] = (),
    splits: Sequence[tuple[int, int]] = (),
) -> list[Interaction]:
    """The two steps, step 2 answered with the SSE events of ``f`` (§5)."""
    completion = Interaction.streamed(
        method="POST",
        uri=f"{COMPLETIONS_URL}?chat_id={_uid(sc.name, 'chat_id')}",
        request_headers=_completions_headers(),
        request_body=_completions_body(sc),
        pieces=_pieces(sc, f.events, coalesce=coalesce, splits=splits),
        t_headers_s=_t_headers(sc),
    )
    return [_chats_new(sc), completion]


def _answer(sc: Scenario, pieces: Sequence[str]) -> _Frames:
    f = _Frames(sc)
    f.created()
    f.pieces(pieces, "answer")
    f.idle_typing()
    f.finished("answer", with_usage=False)
    return f


def _build_echo_en(sc: Scenario) -> list[Interaction]:
    """Incremental answer frames (§5.1–5.4); events 0 created, 1..8 answer, 9..10 idle, 11 end."""
    f = _answer(sc, _EN_PIECES)
    return _stream(sc, f, coalesce=(4,))


def _build_echo_zh(sc: Scenario) -> list[Interaction]:
    """CJK answer with chunk boundaries inside 3-byte characters (§5.1 "Split chunks", §11.9)."""
    f = _answer(sc, _ZH_PIECES)
    ev = f.events
    # events: 0 created, 1 我们, 2 在北京, 3 的咖啡馆, 4 里讨论, 5 量子, 6 计算, 7 。, 8..9 idle, 10
    splits = ((2, _offset_in(ev[2], "北", 1)), (5, _offset_in(ev[5], "子", 2)))
    return _stream(sc, f, coalesce=(3,), splits=splits)


def _build_stream(sc: Scenario) -> list[Interaction]:
    """Twenty-four small incremental pieces; the comma repeats, as real text does (§5.4)."""
    f = _answer(sc, _STREAM_PIECES)
    return _stream(sc, f, coalesce=(2, 9, 17))


def _build_thinking(sc: Scenario) -> list[Interaction]:
    """``thinking_summary`` snapshots (§5.3, §5.5, §11.6), a finished summary frame, the answer."""
    f = _Frames(sc)
    f.created()

    def extra(titles: Sequence[str], thoughts: Sequence[str]) -> dict[str, Any]:
        return {
            "summary_title": {"content": list(titles)},
            "summary_thought": {"content": list(thoughts)},
        }

    for titles, thoughts in _THINK_SNAPSHOTS:
        f.typing("", "thinking_summary", tokens=5, extra=extra(titles, thoughts))
    f.finished("thinking_summary", with_usage=True, extra=extra(*_THINK_SNAPSHOTS[-1]))
    f.pieces(_THINK_ANSWER_PIECES, "answer")
    f.idle_typing()
    f.finished("answer", with_usage=False)
    return _stream(sc, f, coalesce=(1,))


def _build_t2i(sc: Scenario) -> list[Interaction]:
    """t2i (§6.1): the URL as ``content`` of an ``image_gen`` frame with ``output_image_hw``
    and the t2i usage shape (§5.4, §5.5), then a finished ``image_gen`` frame."""
    f = _Frames(sc)
    f.created()
    url = sc.expected_content or ""
    usage = {
        "input_tokens": 0,
        "output_tokens": 0,
        "characters": 0,
        "width": 1024,
        "height": 1024,
        "image_count": 1,
    }
    delta = {
        "role": "assistant",
        "content": url,
        "phase": "image_gen",
        "status": "typing",
        "extra": {"output_image_hw": [[1024, 1024]]},
    }
    f.raw({"choices": [{"delta": delta}], "usage": usage})
    f.finished("image_gen", with_usage=False)
    return _stream(sc, f)


_BUILDERS: dict[str, Callable[[Scenario], list[Interaction]]] = {
    "probe_echo_en": _build_echo_en,
    "probe_echo_zh": _build_echo_zh,
    "probe_stream": _build_stream,
    "probe_thinking": _build_thinking,
    "probe_t2i": _build_t2i,
}


def build(sc: Scenario) -> Cassette:
    """The cassette of one probe scenario (in memory)."""
    return synthetic_cassette(sc.name, sc.description, sc.protocol_sections, _BUILDERS[sc.name](sc))


def build_all() -> list[Cassette]:
    """Every probe cassette written into ``cassettes/``, in :data:`PROBE_SCENARIOS` order."""
    return [build(sc) for sc in PROBE_SCENARIOS]


def build_image_probes() -> list[Cassette]:
    """The t2i probe cassettes of :data:`IMAGE_PROBE_SCENARIOS` (in memory, for tests)."""
    return [build(sc) for sc in IMAGE_PROBE_SCENARIOS]


# -- agent and client-profile probes -----------------------------------------------------------
#
# The harness's tool probes, its /messages and /responses probes and its client profiles make
# the gateway send prompts that depend on the gateway's own rendering (the tool prompt of
# docs/agents.md §1.2, the flattened history of docs/protocol.md §4.1). Those texts are never
# written down here: tests capture what the gateway actually sends for each probe (so the
# recordings cannot drift from the renderer) and build the answer with
# :func:`build_agent_probe`. The answers are the model's side, in Qwen's Hermes-style markup
# (docs/agents.md §1.3), split inside the tags so a gateway's parser must hold back partial
# markup.

_CALL = '<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{city}"}}}}\n</tool_call>'


def _split_call(city: str) -> tuple[str, ...]:
    text = _CALL.format(city=city)
    return (text[:5], text[5:31], text[31:44], text[44:-6], text[-6:])


AGENT_PROBE_ANSWERS: dict[str, tuple[str, ...]] = {
    "tool_call": _split_call("Paris"),
    "tool_parallel": (*_split_call("Paris"), "\n", *_split_call("Tokyo")),
    "tool_roundtrip": ("It is 21 °C", " and sunny", " in Berlin."),
    "echo_en": _EN_PIECES,
    "cherry_topic": ("量子计算", "讨论"),
    "owui_title": ('{"title": "🦊', ' Quick Brown Fox"}'),
    "owui_tags": ('{"tags": ["Language",', ' "Typing practice"]}'),
    "cline_task": ("<read_file>\n<path>", "README.md</path>\n", "</read_file>"),
    "claude_quota": ("Hi",),
}
"""What the model answers to each agent or profile probe, as incremental answer pieces."""


@dataclass(frozen=True)
class UpstreamAsk:
    """What a gateway sent chat.qwen.ai for one probe: the upstream ``model``, the
    ``chat_type``, whether thinking was on, and the one user ``text`` (docs/protocol.md §4.1) — the
    fields the replay server matches on."""

    model: str
    chat_type: str
    thinking: bool
    text: str


def build_agent_probe(key: str, ask: UpstreamAsk, *, name: str | None = None) -> Cassette:
    """The cassette answering ``ask`` with :data:`AGENT_PROBE_ANSWERS` ``[key]`` (in memory).

    ``name`` defaults to ``probe_<key>``; give distinct names when one answer serves several
    asks. Raises ``KeyError`` for an unknown key.
    """
    pieces = AGENT_PROBE_ANSWERS[key]
    cname = name or f"probe_{key}"
    sc = Scenario(
        name=cname,
        description=(
            f"Synthetic answer to the conformance harness's {key} probe: the user text is what "
            "the gateway sent upstream for it (captured by the test), the answer is the "
            "model's, tool calls in Qwen's <tool_call> markup (docs/agents.md §1.3) split inside "
            "the tags."
        ),
        protocol_sections=_T2T,
        model=ask.model,
        openai_model=ask.model,
        prompt=ask.text,
        chat_type=ask.chat_type,
        thinking=ask.thinking,
        expected_content=_join(pieces),
    )
    epoch = PROBE_EPOCH_S + 3600 + 60 * list(AGENT_PROBE_ANSWERS).index(key)
    feature_config: dict[str, Any] = {"thinking_enabled": ask.thinking, "output_schema": "phase"}
    if ask.thinking:
        feature_config["thinking_format"] = "summary"
    body: dict[str, Any] = {
        "stream": True,
        "version": "2.1",
        "incremental_output": True,
        "chat_id": _uid(cname, "chat_id"),
        "chat_mode": "normal",
        "model": ask.model,
        "parent_id": None,
        "timestamp": epoch + 1,
        "messages": [user_message(sc, feature_config, epoch)],
    }
    f = _answer(sc, pieces)
    completion = Interaction.streamed(
        method="POST",
        uri=f"{COMPLETIONS_URL}?chat_id={_uid(cname, 'chat_id')}",
        request_headers=_completions_headers(),
        request_body=_json_compact(body),
        pieces=_pieces(sc, f.events),
        t_headers_s=_t_headers(sc),
    )
    chats_new = chats_new_interaction(cname, ask.model, ask.chat_type, epoch)
    return synthetic_cassette(cname, sc.description, _T2T, [chats_new, completion])
