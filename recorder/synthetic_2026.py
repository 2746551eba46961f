"""Synthetic cassettes for the 2026-11 survey (docs/protocol.md section 13).

Like :mod:`recorder.synthetic` (whose frame helpers and :class:`~recorder.synthetic.Scenario`
this module uses), every byte is written from the notes, none is captured; each cassette's
provenance says ``synthetic`` and cites the §13 subsections it follows. Requests carry the
frontend version the survey saw, ``0.3.11`` (§13.2). What they exercise:

===============================  ==================================================================
``s13_bundle_phases``            the 2026 bundle phases (``search_result``, ``tool_call``,
                                 ``bash``, …, ``present_file``) between answer pieces, one with
                                 ``status: "error"``, one ``finished``: none ends, breaks or
                                 leaks into the answer (§13.2, §5.3)
``s13_second_response``          frames of a second response (another ``response_id``, a second
                                 ``response.created``) inside the turn's stream: ignored (§13.2)
``s13_answer_snapshots``         ``answer`` frames as cumulative snapshots: only the new part is
                                 sent (§13.2, §5.4)
``s13_answer_repeats``           incremental pieces that legitimately repeat ("ha", "ha", "ha"):
                                 all kept (§5.4, §11.10)
``s13_captcha_redirect``         the captcha wall as ``window.location.replace(…punish…)`` (§13.3)
``s13_captcha_waf_aa``           the captcha wall marked ``aliyun_waf_aa`` (§13.3)
``s13_captcha_connect``          a punish URL with ``action=captchaconnect`` (§13.3, Rfym21#157)
``s13_parallel_limited``         the ``ParallelLimited`` error code (§13.3): HTTP 429
===============================  ==================================================================
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from recorder.cassette import Cassette, Interaction
from recorder.synthetic import (
    BASE_EPOCH_S,
    COMPLETIONS_URL,
    Scenario,
    _Frames,
    _json_compact,
    _pieces,
    _uid,
    chats_new_interaction,
    synthetic_cassette,
    user_message,
)

__all__ = ["FRONTEND_VERSION_2026", "S13_SCENARIOS", "build", "build_all"]

FRONTEND_VERSION_2026 = "0.3.11"
"""The ``version`` header seen in 2026-09 traffic (docs/protocol.md §13.2)."""

S13_EPOCH_S = BASE_EPOCH_S + 7200
"""Scenario ``i`` happens ``i`` minutes after 2026-11-22T11:00:00Z."""

BUNDLE_PHASES = (
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
)
"""The phases of the 2026 frontend bundle (docs/protocol.md §13.2)."""

_BUNDLE_ANSWER = ("I checked", " the files", " and", " ran the", " script:", " all", " good.")
_SECOND_ANSWER = ("Paris", " is the", " capital", " of France.")
_FOREIGN_TEXT = "A DIFFERENT RESPONSE THAT MUST NOT APPEAR"
_SNAPSHOT_ANSWER = ("Rivers", " flow", " downhill", " to the sea", ".")
_REPEAT_PIECES = ("ha", "ha", "ha", "!")
_PUNISH = (
    "https://chat.qwen.ai/api/v2/chat/completions/_____tmd_____/punish"
    "?x5secdata=<REDACTED:x5sec:1>&x5step=2&action=captchaconnect"
)

_REDIRECT_HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>chat.qwen.ai</title></head>
<body><!-- synthetic page written from docs/protocol.md section 13.3 -->
<script>window.location.replace("https://chat.qwen.ai/" + "api/" + "punish?uuid=synthetic");
</script></body></html>
"""
_WAF_AA_HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta name="aliyun_waf_aa" content="synthetic">
<title>chat.qwen.ai</title></head>
<body><!-- synthetic page written from docs/protocol.md section 13.3 --><div id="app"></div></body>
</html>
"""

_S13 = ("3", "4.1", "5.1", "5.2", "13", "13.2")


def _join(pieces: Sequence[str]) -> str:
    return "".join(pieces)


S13_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="s13_bundle_phases",
        description=(
            "Synthetic 2026 bundle phases (tool_call, bash, code_interpreter, ...) between the "
            "answer pieces; one tool frame has status error, one is finished."
        ),
        protocol_sections=(*_S13, "5.3"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="Check the project files and run the test script, then tell me the result.",
        chat_type="t2t",
        thinking=False,
        expected_content=_join(_BUNDLE_ANSWER),
    ),
    Scenario(
        name="s13_second_response",
        description=(
            "Synthetic stream carrying frames of a second response (another response_id, a "
            "second response.created) among the turn's answer frames."
        ),
        protocol_sections=_S13,
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="What is the capital of France? One sentence.",
        chat_type="t2t",
        thinking=False,
        expected_content=_join(_SECOND_ANSWER),
    ),
    Scenario(
        name="s13_answer_snapshots",
        description="Synthetic answer frames sent as cumulative snapshots instead of pieces.",
        protocol_sections=(*_S13, "5.4"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="Where do rivers flow? One short sentence.",
        chat_type="t2t",
        thinking=False,
        expected_content=_join(_SNAPSHOT_ANSWER),
    ),
    Scenario(
        name="s13_answer_repeats",
        description="Synthetic incremental answer whose pieces legitimately repeat (ha, ha, ha).",
        protocol_sections=(*_S13, "5.4", "11"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="Laugh three times, then an exclamation mark.",
        chat_type="t2t",
        thinking=False,
        expected_content=_join(_REPEAT_PIECES),
    ),
    Scenario(
        name="s13_captcha_redirect",
        description="Synthetic captcha wall as an HTML page redirecting to a punish URL by script.",
        protocol_sections=("3", "4.1", "4.3", "10", "13", "13.3"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="Trigger the captcha (script redirect).",
        chat_type="t2t",
        thinking=False,
        expected_status=503,
        expected_error_code="upstream_captcha",
    ),
    Scenario(
        name="s13_captcha_waf_aa",
        description="Synthetic captcha wall as an HTML page marked aliyun_waf_aa.",
        protocol_sections=("3", "4.1", "4.3", "10", "13", "13.3"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="Trigger the captcha (aliyun_waf_aa).",
        chat_type="t2t",
        thinking=False,
        expected_status=503,
        expected_error_code="upstream_captcha",
    ),
    Scenario(
        name="s13_captcha_connect",
        description="Synthetic JSON answer pointing at a punish URL with action=captchaconnect.",
        protocol_sections=("3", "4.1", "4.3", "10", "13", "13.3"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="Trigger the captcha (captchaconnect).",
        chat_type="t2t",
        thinking=False,
        expected_status=503,
        expected_error_code="upstream_captcha",
    ),
    Scenario(
        name="s13_parallel_limited",
        description="Synthetic ParallelLimited error envelope (HTTP 200) instead of SSE.",
        protocol_sections=("3", "4.1", "4.3", "10", "13", "13.3"),
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt="Trigger the parallel limit.",
        chat_type="t2t",
        thinking=False,
        expected_status=429,
        expected_error_code="rate_limit_exceeded",
    ),
)


def _epoch(sc: Scenario) -> int:
    return S13_EPOCH_S + 60 * [s.name for s in S13_SCENARIOS].index(sc.name)


def _headers(accept: str) -> dict[str, list[str]]:
    return {
        "Content-Type": ["application/json; charset=utf-8"],
        "Accept": [accept],
        "source": ["web"],
        "version": [FRONTEND_VERSION_2026],
        "x-accel-buffering": ["no"],
    }


def _body(sc: Scenario) -> str:
    ts = _epoch(sc)
    features: dict[str, Any] = {"thinking_enabled": sc.thinking, "output_schema": "phase"}
    chat_id = _uid(sc.name, "chat_id")
    return _json_compact(
        {
            "stream": True,
            "version": "2.1",
            "incremental_output": True,
            "chat_id": chat_id,
            "chatId": chat_id,
            "chat_mode": "normal",
            "model": sc.model,
            "parent_id": None,
            "parentId": "",
            "timestamp": ts + 1,
            "messages": [user_message(sc, features, ts)],
        }
    )


def _request(sc: Scenario) -> dict[str, Any]:
    return {
        "method": "POST",
        "uri": f"{COMPLETIONS_URL}?chat_id={_uid(sc.name, 'chat_id')}",
        "request_headers": _headers("*/*"),
        "request_body": _body(sc),
    }


def _stream(sc: Scenario, f: _Frames) -> list[Interaction]:
    inter = Interaction.streamed(**_request(sc), pieces=_pieces(sc, f.events), t_headers_s=0.21)
    return [chats_new_interaction(sc.name, sc.model, sc.chat_type, _epoch(sc)), inter]


def _plain(sc: Scenario, body: str, content_type: str) -> list[Interaction]:
    inter = Interaction(
        **_request(sc),
        status=200,
        reason="OK",
        response_headers={"Content-Type": [content_type]},
        response_body=body,
    )
    return [chats_new_interaction(sc.name, sc.model, sc.chat_type, _epoch(sc)), inter]


def _rid(sc: Scenario) -> str:
    return _uid(sc.name, "response_id")


def _build_bundle_phases(sc: Scenario) -> list[Interaction]:
    f = _Frames(sc)
    f.created()
    answer = iter(_BUNDLE_ANSWER)
    f.typing(next(answer), "answer")
    for i, phase in enumerate(BUNDLE_PHASES):
        more: dict[str, Any] = {}
        if phase == "tool_call":
            more["function_call"] = {"name": "read_file", "arguments": '{"path": "README.md"}'}
        if phase == "bash":
            # A failed tool run is the tool's error, not the answer's (§13.2).
            f.raw(
                f.delta_frame(
                    {
                        "role": "assistant",
                        "content": "exit status 1: TOOL OUTPUT THAT MUST NOT APPEAR",
                        "phase": phase,
                        "status": "error",
                    }
                )
            )
        elif phase == "present_file":
            f.finished(phase, with_usage=True, extra={"file": {"name": "report.txt"}})
        else:
            f.typing(f"[{phase} output that must not appear]", phase, **more)
        if i % 2 == 1:
            piece = next(answer, None)
            if piece is not None:
                f.typing(piece, "answer")
    for piece in answer:
        f.typing(piece, "answer")
    f.finished("answer", with_usage=False)
    return _stream(sc, f)


def _build_second_response(sc: Scenario) -> list[Interaction]:
    f = _Frames(sc)
    f.created()
    other = _uid(sc.name, "other_response_id")
    for i, piece in enumerate(_SECOND_ANSWER):
        frame = f.delta_frame(
            {"role": "assistant", "content": piece, "phase": "answer", "status": "typing"}
        )
        frame["response_id"] = _rid(sc)
        f.raw(frame)
        if i == 1:
            f.raw(
                {
                    "response.created": {
                        "chat_id": _uid(sc.name, "chat_id"),
                        "parent_id": _uid(sc.name, "user_message_id"),
                        "response_id": other,
                    }
                }
            )
            for foreign in (_FOREIGN_TEXT, ""):
                status = "typing" if foreign else "finished"
                frame = f.delta_frame(
                    {"role": "assistant", "content": foreign, "phase": "answer", "status": status},
                    tokens=0,
                )
                frame["response_id"] = other
                f.raw(frame)
    last = {"role": "assistant", "content": "", "phase": "answer", "status": "finished"}
    f.raw({"choices": [{"delta": last}], "response_id": _rid(sc)})
    return _stream(sc, f)


def _build_answer_snapshots(sc: Scenario) -> list[Interaction]:
    f = _Frames(sc)
    f.created()
    so_far = ""
    for piece in _SNAPSHOT_ANSWER:
        so_far += piece
        f.typing(so_far, "answer")
    f.typing(so_far, "answer", tokens=0)  # an unchanged snapshot adds nothing
    f.finished("answer", with_usage=False)
    return _stream(sc, f)


def _build_answer_repeats(sc: Scenario) -> list[Interaction]:
    f = _Frames(sc)
    f.created()
    f.pieces(_REPEAT_PIECES, "answer")
    f.finished("answer", with_usage=False)
    return _stream(sc, f)


def _build_captcha_redirect(sc: Scenario) -> list[Interaction]:
    return _plain(sc, _REDIRECT_HTML, "text/html; charset=utf-8")


def _build_captcha_waf_aa(sc: Scenario) -> list[Interaction]:
    return _plain(sc, _WAF_AA_HTML, "text/html; charset=utf-8")


def _build_captcha_connect(sc: Scenario) -> list[Interaction]:
    body = _json_compact({"success": False, "data": {"url": _PUNISH}})
    return _plain(sc, body, "application/json; charset=utf-8")


def _build_parallel_limited(sc: Scenario) -> list[Interaction]:
    body = _json_compact(
        {
            "success": False,
            "request_id": _uid(sc.name, "request_id/completions"),
            "data": {
                "code": "ParallelLimited",
                "details": "Another answer is still being generated for this account.",
            },
        }
    )
    return _plain(sc, body, "application/json; charset=utf-8")


_BUILDERS: dict[str, Callable[[Scenario], list[Interaction]]] = {
    "s13_bundle_phases": _build_bundle_phases,
    "s13_second_response": _build_second_response,
    "s13_answer_snapshots": _build_answer_snapshots,
    "s13_answer_repeats": _build_answer_repeats,
    "s13_captcha_redirect": _build_captcha_redirect,
    "s13_captcha_waf_aa": _build_captcha_waf_aa,
    "s13_captcha_connect": _build_captcha_connect,
    "s13_parallel_limited": _build_parallel_limited,
}


def build(sc: Scenario) -> Cassette:
    """The cassette of one §13 scenario (in memory)."""
    return synthetic_cassette(sc.name, sc.description, sc.protocol_sections, _BUILDERS[sc.name](sc))


def build_all() -> list[Cassette]:
    """Every §13 cassette, in :data:`S13_SCENARIOS` order."""
    return [build(sc) for sc in S13_SCENARIOS]


def frames_json(cassette: Cassette) -> list[Any]:
    """The parsed SSE frames of a cassette's completion (tests)."""
    from recorder.schema import sse_data

    inter = next(i for i in cassette.interactions if "/chat/completions" in i.uri)
    return [json.loads(d) for d in sse_data(inter.response_body)]
