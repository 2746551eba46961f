"""Keeping up with the site (docs/protocol.md §13): bundle phases, second responses, answer
snapshots, captcha variants, new limit codes, the 0.3.11 frontend version.

Unit tests drive the translator and the envelope classifier directly; end-to-end tests send the
§13 scenarios (``recorder/synthetic_2026.py``) through the official SDK, the gateway and the
replay server.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
from helpers import ServerFactory, Stack, astream, error_object, screate, start_stack
from hypothesis import assume, given
from hypothesis import strategies as st

from proxy.config import Settings
from proxy.errors import UpstreamCaptchaError, UpstreamRateLimitedError
from proxy.qwen.envelope import classify_response, looks_like_waf
from proxy.qwen.translate import BUNDLE_PHASES, Failure, Finish, OutEvent, Text, Translator
from recorder import synthetic_2026
from recorder.synthetic_2026 import S13_SCENARIOS

SC = {s.name: s for s in S13_SCENARIOS}


def delta(phase: str | None, content: Any = "", status: str = "typing", **top: Any) -> str:
    frame: dict[str, Any] = {
        "choices": [
            {"delta": {"role": "assistant", "content": content, "phase": phase, "status": status}}
        ],
        **top,
    }
    return json.dumps(frame, ensure_ascii=False)


FINISHED = delta("answer", "", "finished")


def run(frames: list[str], **kw: Any) -> list[OutEvent]:
    tr = Translator(**kw)
    out: list[OutEvent] = []
    for f in frames:
        out.extend(tr.feed(f))
    out.extend(tr.close())
    return out


def content(events: list[OutEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Text) and e.kind == "content")


# -- bundle phases ----------------------------------------------------------------------------


@pytest.mark.parametrize("phase", sorted(BUNDLE_PHASES))
@pytest.mark.parametrize("status", ["typing", "finished", "error"])
def test_bundle_phase_never_breaks_nor_leaks(phase: str, status: str) -> None:
    """A bundle-phase frame, whatever its status, neither ends, fails nor feeds the answer."""
    out = run(
        [
            delta("answer", "one"),
            delta(phase, "TOOL TEXT", status),
            delta("answer", " two"),
            FINISHED,
        ]
    )
    assert content(out) == "one two"
    assert out[-1] == Finish("stop")


def test_bundle_phases_in_image_mode_and_before_any_answer() -> None:
    """Before any answer (and in image mode) bundle frames are skipped, not 'not understood'."""
    tr = Translator()
    for phase in sorted(BUNDLE_PHASES):
        assert tr.feed(delta(phase, {"structured": True}, "finished")) == []
    assert tr.ignored_phases == {}
    assert not tr.done


def test_tool_call_does_not_touch_local_tool_handling() -> None:
    """tool_call (bundle) and local_tool (native tools, §5.6) are different phases."""
    assert "tool_call" in BUNDLE_PHASES and "local_tool" not in BUNDLE_PHASES


# -- frames of another response ----------------------------------------------------------------


def test_frames_of_another_response_are_ignored() -> None:
    """Frames whose top-level response_id is not the turn's are dropped and counted."""
    created = '{"response.created":{"chat_id":"c","parent_id":"p","response_id":"r1"}}'
    other = '{"response.created":{"chat_id":"c","parent_id":"p","response_id":"r2"}}'
    tr = Translator()
    out: list[OutEvent] = []
    for f in (
        created,
        delta("answer", "mine", response_id="r1"),
        other,
        delta("answer", " NOT MINE", response_id="r2"),
        delta("answer", "", "finished", response_id="r2"),
        delta("answer", " too", response_id="r1"),
        delta("answer", "", "finished", response_id="r1"),
    ):
        out.extend(tr.feed(f))
    assert content(out) == "mine too"
    assert out[-1] == Finish("stop")
    assert tr.response_id == "r1" and tr.foreign_frames == 2


def test_frames_whose_ids_never_match_created_are_still_the_answer() -> None:
    """If every content frame carries an id other than response.created's (another id format),
    the answer is kept: the first id on a content frame is the turn's."""
    created = '{"response.created":{"chat_id":"c","parent_id":"p","response_id":"r1"}}'
    out = run(
        [
            created,
            delta("answer", "kept", response_id="m1"),
            delta("answer", " all", response_id="m1"),
            delta("answer", "", "finished", response_id="m1"),
        ]
    )
    assert content(out) == "kept all"
    assert out[-1] == Finish("stop")


def test_first_framed_response_id_is_the_turns_without_created() -> None:
    """Without response.created, the first response_id seen on a frame is the turn's."""
    out = run(
        [
            delta("answer", "a", response_id="x"),
            delta("answer", "b", response_id="y"),
            delta("answer", "c"),  # frames without an id are the turn's
            delta("answer", "", "finished", response_id="x"),
        ]
    )
    assert content(out) == "ac"


# -- answer snapshots --------------------------------------------------------------------------


_LONG = "Hello, world! How are you today? Fine, thanks."  # 46 characters


def _snapshots(text: str, *cuts: int) -> list[str]:
    return [text[:n] for n in cuts]


def test_answer_snapshots_send_only_the_new_part() -> None:
    """Cumulative answer frames give each character once; an unchanged snapshot adds nothing."""
    frames = [delta("answer", s) for s in _snapshots(_LONG, 3, 5, 9, 12, 20, 33, 40, 46)]
    out = run([*frames, delta("answer", _LONG), FINISHED])
    assert content(out) == _LONG


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["ha", "ha", "ha"], "hahaha"),
        (["ha", "haha"], "hahaha"),
        (["la", "la", "la", "la land"], "lalalala land"),
        (["1", "1", "2"], "112"),
        (["ha", "ha", "haha"], "hahahaha"),
        # the fault-injecting run's cases (round 4): each piece begins with the one before,
        # but no piece repeats as much text as a snapshot stream soon does
        (["哈", "哈", "哈哈", "哈哈哈哈"], "哈" * 8),
        (["Go", "Go", "GoGo", "GoGoGoGo", "!"], "Go" * 8 + "!"),
        (["=", "=", "==", "===="], "=" * 8),
        (["na", "na", "nana", "nanana", "nananana", " batman"], "na" * 11 + " batman"),
        (["no", "no", "nono", "nonono"], "no" * 7),
        (["h", "ha", "ha", "ha", "ha", "ha", "!"], "h" + "ha" * 5 + "!"),
    ],
)
def test_legitimate_repetition_passes(pieces: list[str], expected: str) -> None:
    """Pieces equal to, or copies of, the answer so far are incremental text, kept whole."""
    out = run([*(delta("answer", p) for p in pieces), FINISHED])
    assert content(out) == expected
    assert content(run([delta("answer", p) for p in pieces])) == expected  # EOF: a failure


_WORDS = st.text(alphabet="abc ", min_size=1, max_size=6)
_TOKEN = st.text(alphabet="ab哈 .", min_size=1, max_size=8)


@st.composite
def _token_streams(draw: st.DrawFn) -> list[str]:
    """Incremental answers of short tokens (1-8 characters): fresh ones, earlier ones again,
    and ones made of earlier text (a start of the text so far, or the token before, and a
    fresh token after it, cut to 8 characters): the shapes that look like snapshots."""
    pieces: list[str] = []
    for _ in range(draw(st.integers(1, 24))):
        kind = draw(st.integers(0, 3)) if pieces else 0
        so_far = "".join(pieces)
        if kind == 0:
            piece = draw(_TOKEN)
        elif kind == 1:
            piece = draw(st.sampled_from(pieces))
        else:
            start = so_far[: draw(st.integers(1, 8))] if kind == 2 else pieces[-1]
            piece = (start + draw(st.text(alphabet="ab哈 .", max_size=8)))[:8]
        pieces.append(piece)
    return pieces


@given(_token_streams())
def test_incremental_token_streams_always_pass_whole(pieces: list[str]) -> None:
    """Any answer of short tokens comes out as their concatenation (hypothesis), however much
    its pieces repeat the text before them: no incremental character is ever lost."""
    assert content(run([*(delta("answer", p) for p in pieces), FINISHED])) == "".join(pieces)


@given(
    _WORDS,
    st.lists(st.text(alphabet="abc ", min_size=1, max_size=10), min_size=4, max_size=16),
    st.integers(0, 3),
)
def test_snapshot_streams_give_the_final_text(head: str, pieces: list[str], again: int) -> None:
    """Any answer sent as growing snapshots that reaches ``_SNAPSHOT_LONG`` (32) characters
    comes out exactly once (hypothesis), its first snapshot sent ``again`` more times. The
    first snapshot starts with a mark the later pieces lack, so no snapshot is a mere
    repetition of the first (that case, "ha" then "haha", is kept as pieces by design: see
    above)."""
    so_far = "x" + head
    frames = [delta("answer", so_far)] * (1 + again)
    for p in pieces:
        so_far += p
        frames.append(delta("answer", so_far))
    assume(len(so_far) >= 32)
    out = run([*frames, delta("answer", so_far), FINISHED])
    assert content(out) == so_far


@given(st.lists(_WORDS, min_size=1, max_size=12))
def test_incremental_streams_pass_untouched_unless_snapshot_shaped(pieces: list[str]) -> None:
    """Incremental pieces come out unchanged whenever no piece begins with the whole text so
    far (the same text again, or more: the frames a snapshot stream is made of)."""
    so_far = ""
    snapshot_shaped = False
    for p in pieces:
        if so_far and p.startswith(so_far):
            snapshot_shaped = True
        so_far += p
    out = run([*(delta("answer", p) for p in pieces), FINISHED])
    if not snapshot_shaped:
        assert content(out) == so_far


_HELLO = "你好，世界！今天天气很好，我们一起去公园散步吧。公园里有很多花，红的、黄的、白的。"


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        # the fault-injecting runs' cases: each frame begins with the one before, then one
        # does not: incremental text, every character kept
        (["1", "1.", "1.5", " m"], "11.1.5 m"),
        (["|", "|---", "|---|", " a |"], "||---|---| a |"),
        (["a", "ab", "abc", "abcd", " z"], "aababcabcd z"),
        (["ab", "abc", "abcd", " z"], "ababcabcd z"),
        (["a", "a", "a", "ab", " z"], "aaaab z"),
        # a re-sent first snapshot: snapshots, nothing repeated, once a frame begins with 32
        # characters of them (here the frame after the 41-character one)
        (
            ["你好", "你好", *_snapshots(_HELLO, 5, 6, 13, 24, 33, 41), _HELLO + "再见"],
            _HELLO + "再见",
        ),
        (["你好", "你好", *_snapshots(_HELLO, 5, 13, 41), _HELLO, _HELLO], _HELLO),
        # a long answer so far begun again, and more: snapshots at once
        ([_HELLO[:32], _HELLO[:35], "！"], _HELLO[:35] + "！"),
        ([_HELLO[:32], _HELLO[:32], _HELLO[:35], "！"], _HELLO[:35] + "！"),
        # but only sent again whole, however long, it is held like a short piece (a model that
        # loops): text the fourth time in a row
        ([_HELLO] * 5 + ["！"], _HELLO * 5 + "！"),
    ],
)
def test_held_frames_are_decided_by_the_next_ones(pieces: list[str], expected: str) -> None:
    """Frames that begin with the answer so far wait for the next: one that does not begin
    with them makes them text, one that begins with 32 characters of them makes them
    snapshots (Translator._unsnapshot)."""
    out = run([*(delta("answer", p) for p in pieces), FINISHED])
    assert content(out) == expected


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        # short held runs are text at the end, whatever their shape: tokens can make them
        (["xa", "xab", "xab"], "xaxabxab"),
        (["xa", "xab", "xabc"], "xaxabxabc"),
        (["a", "a", "ab", "ab"], "aaabab"),
        (["ha", "haha"], "hahaha"),
        (["la", "la", "la land"], "lalala land"),
        (["ha", "ha"], "haha"),
        (["你好", "你好", "你好，世界", "你好，世界！"], "你好你好你好，世界你好，世界！"),
        ([_HELLO, _HELLO], _HELLO * 2),
        # a run decided before the end stays decided
        ([*_snapshots(_HELLO, 2, 20, 32, 33), _HELLO], _HELLO),
    ],
)
def test_frames_held_at_the_end_are_decided_there(pieces: list[str], expected: str) -> None:
    """At the finished frame, at EOF and at a failure, frames still held are text, sent
    whole: nothing showed them to be snapshots."""
    frames = [delta("answer", p) for p in pieces]
    assert content(run([*frames, FINISHED])) == expected
    assert content(run(frames)) == expected  # EOF before the finished frame (a failure)
    failed = json.dumps({"error": {"code": "Internal_Server_Error", "details": "x"}})
    assert content(run([*frames, failed])) == expected


def test_a_run_of_equal_pieces_is_text_and_is_not_held_to_its_end() -> None:
    """The answer so far may come again three times (a snapshot sent again); the fourth time
    the held pieces are text and go out at once: a long run of equal pieces is not held."""
    tr = Translator()
    out: list[OutEvent] = []
    for _ in range(4):
        out.extend(tr.feed(delta("answer", "ha")))
    assert content(out) == "ha"  # three held: a snapshot sent again, or text?
    out.extend(tr.feed(delta("answer", "ha")))
    assert content(out) == "ha" * 5  # text: all of it out before the answer ends
    out.extend(tr.feed(delta("answer", "ha")))
    assert content(out) == "ha" * 6


def test_equal_pieces_after_a_longer_one_are_not_held_to_the_end_either() -> None:
    """The same held frame coming again a fourth time in a row is text, also after a frame
    that grew the text ("h", "ha", "ha", "ha", "ha")."""
    tr = Translator()
    out: list[OutEvent] = []
    for p in ("h", "ha", "ha", "ha", "ha"):
        out.extend(tr.feed(delta("answer", p)))
    assert content(out) == "h"
    out.extend(tr.feed(delta("answer", "ha")))
    assert content(out) == "h" + "ha" * 5


def test_null_phase_finished_before_any_text_ends_nothing() -> None:
    """A phase-less finished frame before any answer text neither ends nor fails the stream."""
    out = run([delta(None, "", "finished"), delta("answer", "late"), FINISHED])
    assert content(out) == "late"
    assert out[-1] == Finish("stop")


def test_null_phase_finished_ends_the_answer() -> None:
    """Frames without a phase (old format / output_schema missing) end on their finished frame."""
    out = run([delta(None, "plain"), delta(None, "", "finished")])
    assert content(out) == "plain"
    assert out[-1] == Finish("stop")


# -- captcha variants and limit codes ----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'<html><script>window.location.replace("https://chat.qwen.ai/" + "punish?u=1")</script>',
        b"<html><script>window.location.href = '/x/punish'</script></html>",
        b'<html><head><meta name="aliyun_waf_aa" content="1"></head></html>',
        b'{"data": {"url": "https://chat.qwen.ai/c?x=1&action=captchaconnect"}}',
    ],
)
def test_captcha_wall_variants_are_captcha_errors(body: bytes) -> None:
    """Each §13.3 variant of the captcha wall, alone, is an upstream_captcha error."""
    assert looks_like_waf(body)
    ctype = "text/html" if body.startswith(b"<") else "application/json"
    assert isinstance(classify_response(200, ctype, body), UpstreamCaptchaError)


def test_the_word_punish_in_text_is_not_a_captcha() -> None:
    """Only a redirect to a punish URL counts, not the word in a message."""
    assert not looks_like_waf(b'{"data": {"details": "we never punish users"}}')


@pytest.mark.parametrize(
    "code",
    ["ParallelLimited", "Too_Many_Requests", "quotaLimited", "ExceedLimit", "quota_exhausted"],
)
def test_new_limit_codes_are_rate_limits(code: str) -> None:
    """The limit codes of §13.3 answer HTTP 429 like RateLimited."""
    body = json.dumps({"success": False, "data": {"code": code, "details": "x"}}).encode()
    assert isinstance(classify_response(200, "application/json", body), UpstreamRateLimitedError)


def test_default_frontend_version_is_0_3_11() -> None:
    """The version header default follows the 2026-09 traffic (§13.2)."""
    assert Settings().frontend_version == "0.3.11"


# -- the §13 cassettes end to end ---------------------------------------------------------------


def test_s13_cassettes_are_synthetic_and_cite_section_13() -> None:
    """Every §13 cassette says it is synthetic and cites docs/protocol.md §13; requests say
    0.3.11."""
    for c in synthetic_2026.build_all():
        assert c.provenance.kind == "synthetic"
        assert "13" in c.provenance.protocol_sections
        assert "synthetic" in c.description.lower()
        completions = [i for i in c.interactions if "/chat/completions" in i.uri]
        assert completions and completions[0].request_headers["version"] == ["0.3.11"]


def test_bundle_cassette_holds_every_bundle_phase() -> None:
    """The bundle cassette really carries each phase of the 2026 bundle."""
    frames = synthetic_2026.frames_json(synthetic_2026.build(SC["s13_bundle_phases"]))
    phases = {f["choices"][0]["delta"]["phase"] for f in frames if "choices" in f}
    assert set(BUNDLE_PHASES) <= phases


@pytest.fixture
async def stack(aiohttp_server: ServerFactory) -> Stack:
    return await start_stack(aiohttp_server)


SUCCESS = [s.name for s in S13_SCENARIOS if s.expected_status == 200]
FAILURE = [s.name for s in S13_SCENARIOS if s.expected_status != 200]


@pytest.mark.parametrize("name", SUCCESS)
async def test_s13_answers_through_the_sdk(stack: Stack, name: str) -> None:
    """Streamed and not, the SDK gets exactly the turn's answer (no tool text, no second
    response, no repeated snapshot text)."""
    sc = SC[name]
    async with stack.async_client() as client:
        out = await astream(client, sc.openai_model, sc.prompt)
    assert out.error is None
    assert out.content == sc.expected_content

    def sync() -> Any:
        with stack.sync_client() as client:
            return screate(client, sc.openai_model, sc.prompt)

    whole = await asyncio.to_thread(sync)
    assert whole.content == sc.expected_content


@pytest.mark.parametrize("name", FAILURE)
async def test_s13_failures_through_the_sdk(stack: Stack, name: str) -> None:
    """Captcha variants give 503 upstream_captcha, ParallelLimited 429 rate_limit_exceeded."""
    sc = SC[name]
    async with stack.async_client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(
                model=sc.openai_model, messages=[{"role": "user", "content": sc.prompt}]
            )
    assert info.value.status_code == sc.expected_status
    assert error_object(info.value)["code"] == sc.expected_error_code


def test_failure_is_an_event_type() -> None:
    """(sanity) Failure stays the closing event type the relay expects."""
    out = run([delta("mystery", "x")])
    assert isinstance(out[-1], Failure)


def test_the_turns_id_stays_response_created_s_when_frames_carry_another() -> None:
    """The next turn's parent_id (and the stop call) use response.created's id (§4.1, §5.2),
    even when the content frames carry ids of another format."""
    tr = Translator()
    for f in (
        '{"response.created":{"chat_id":"c","parent_id":null,"response_id":"r1"}}',
        delta("answer", "kept", response_id="m1"),
        delta("answer", "", "finished", response_id="m1"),
    ):
        tr.feed(f)
    assert tr.response_id == "r1" and tr.done
