"""The synthetic cassettes: reproducible, honest about their provenance, and well-formed.

``cassettes/*.json`` built by ``recorder.synthetic`` must equal what the builder produces now,
byte for byte; after changing the builder, regenerate them with ``qwen-record synth -o
cassettes/``. The expected outcomes in ``SCENARIOS`` are checked against the frames with a small
independent reading of docs/protocol.md §5, so proxy tests can trust them.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from recorder.cassette import Cassette, Interaction
from recorder.synthetic import (
    SCENARIOS,
    SYNTH_DATE,
    Scenario,
    build_everything,
    write_all,
)

REGENERATE = "run `qwen-record synth -o cassettes/` and commit the result"
SECRET_HEADERS = {"authorization", "cookie", "bx-ua", "bx-umidtoken", "bx-v", "x5sec"}
BY_NAME = {sc.name: sc for sc in SCENARIOS}
CASSETTES = {c.name: c for c in build_everything()}
FLOW_SCENARIOS = [sc for sc in SCENARIOS if sc.name != "models_list"]


def _sse_frames(body: str, *, complete: bool) -> tuple[list[Any], str]:
    """Split an SSE body into parsed ``data:`` JSON frames and the unterminated tail."""
    parts = body.split("\n\n")
    tail = parts.pop()
    if complete:
        assert tail == "", f"body does not end with a blank line: {tail[-80:]!r}"
    frames = []
    for part in parts:
        assert part.startswith("data: "), part[:80]
        assert "\n" not in part, part[:80]
        frames.append(json.loads(part[len("data: ") :]))
    return frames, tail


def _completion(sc: Scenario) -> Interaction:
    return CASSETTES[sc.name].interactions[1]


def _frames_of(sc: Scenario) -> list[Any]:
    inter = _completion(sc)
    assert inter.stream is not None
    frames, _ = _sse_frames(inter.response_body, complete=inter.stream.end == "eof")
    return frames


def _aggregate(frames: list[Any]) -> dict[str, Any]:
    """What a phase-aware client makes of the frames (§5.3–5.5), independent of the proxy."""
    answer: list[str] = []
    think: list[str] = []
    thoughts: list[str] | None = None
    sources: list[str] = []
    finished = error = False
    for frame in frames:
        if "error" in frame:
            error = True
            continue
        if "choices" not in frame:
            continue
        delta = frame["choices"][0]["delta"]
        phase, status = delta.get("phase"), delta.get("status")
        if phase == "answer":
            answer.append(delta["content"])
            finished = finished or status == "finished"
        elif phase == "think":
            think.append(delta["content"])
        elif phase == "thinking_summary":
            assert delta["content"] == ""
            thoughts = list(delta["extra"]["summary_thought"]["content"])
        elif phase == "web_search" and delta.get("role") == "function":
            sources.extend(doc["url"] for doc in delta["extra"]["tool_result"]["docs"])
    reasoning = "".join(think) if think else None
    if thoughts is not None:
        reasoning = "\n\n".join(thoughts)
    return {
        "answer": "".join(answer),
        "reasoning": reasoning,
        "sources": tuple(sources),
        "finished": finished,
        "error": error,
    }


# -- reproducibility ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASSETTES))
def test_committed_cassette_matches_builder(name: str, cassettes_dir: Path) -> None:
    path = cassettes_dir / f"{name}.json"
    assert path.is_file(), f"{path} is missing; {REGENERATE}"
    expected = CASSETTES[name].dumps().encode("utf-8")
    assert path.read_bytes() == expected, f"{path} differs from the builder's output; {REGENERATE}"


def test_no_stale_synthetic_cassettes(cassettes_dir: Path) -> None:
    # Read only the metadata: other cassettes are validated by their own tests.
    for path in sorted(cassettes_dir.glob("*.json")):
        meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
        if meta.get("provenance", {}).get("tool") == "qwen-record synth":
            assert meta.get("name") in CASSETTES, f"{path} has no builder any more; delete it"
            assert path.stem == meta["name"]


def test_build_is_deterministic() -> None:
    again = {c.name: c.dumps() for c in build_everything()}
    assert again == {name: c.dumps() for name, c in CASSETTES.items()}


def test_write_all_writes_every_cassette(tmp_path: Path) -> None:
    paths = write_all(tmp_path)
    assert [p.name for p in paths] == [f"{name}.json" for name in CASSETTES]
    assert [p.name for p in paths][: len(SCENARIOS)] == [f"{sc.name}.json" for sc in SCENARIOS]
    for path in paths:
        loaded = Cassette.load(path)
        assert path.read_text(encoding="utf-8") == CASSETTES[loaded.name].dumps()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


# -- provenance and requests -------------------------------------------------------------------


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda sc: sc.name)
def test_provenance_is_synthetic(sc: Scenario) -> None:
    prov = CASSETTES[sc.name].provenance
    assert prov.kind == "synthetic"
    assert prov.tool == "qwen-record synth"
    assert prov.date == SYNTH_DATE
    assert prov.source is None
    assert prov.protocol_sections, (
        "a synthetic cassette names the docs/protocol.md sections it follows"
    )
    assert prov.protocol_sections == list(sc.protocol_sections)
    assert "synthetic" in CASSETTES[sc.name].description.lower()


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda sc: sc.name)
def test_no_credentials_anywhere(sc: Scenario) -> None:
    for inter in CASSETTES[sc.name].interactions:
        names = {h.lower() for h in inter.request_headers}
        assert not names & SECRET_HEADERS, names
        text = json.dumps(CASSETTES[sc.name].to_dict(), ensure_ascii=False)
        assert "eyJ" not in text  # no JWT
        assert "token=" not in text


def test_prompts_are_distinct() -> None:
    prompts = [sc.prompt for sc in FLOW_SCENARIOS]
    assert len(set(prompts)) == len(prompts)
    assert all(prompts)


def test_models_list() -> None:
    (inter,) = CASSETTES["models_list"].interactions
    assert (inter.method, inter.uri, inter.request_body) == (
        "GET",
        "https://chat.qwen.ai/api/models",
        None,
    )
    assert inter.content_type.startswith("application/json")
    models = {m["id"]: m for m in json.loads(inter.response_body)["data"]}
    assert list(models) == ["qwen3-max", "qwen3.6-plus", "qwen3-coder-plus"]
    meta = {k: m["info"]["meta"] for k, m in models.items()}
    assert meta["qwen3-max"]["abilities"]["thinking"] == 1
    assert meta["qwen3-max"]["capabilities"]["thinking"] is True
    assert {"t2t", "search", "t2i", "t2v", "image_edit"} <= set(meta["qwen3-max"]["chat_type"])
    assert meta["qwen3.6-plus"]["abilities"]["thinking"] == 1
    assert "search" in meta["qwen3.6-plus"]["chat_type"]
    coder = meta["qwen3-coder-plus"]
    assert "thinking" not in coder["abilities"] and "thinking" not in coder["capabilities"]
    assert coder["chat_type"] == ["t2t", "artifacts"]
    sc = BY_NAME["models_list"]
    assert (sc.prompt, sc.expected_status, sc.expected_content) == ("", 200, None)


@pytest.mark.parametrize("sc", FLOW_SCENARIOS, ids=lambda sc: sc.name)
def test_two_step_flow(sc: Scenario) -> None:
    new, comp = CASSETTES[sc.name].interactions
    # step 1: chats/new, always a success (docs/protocol.md §3)
    assert (new.method, new.uri, new.status) == (
        "POST",
        "https://chat.qwen.ai/api/v2/chats/new",
        200,
    )
    assert new.request_body is not None
    new_req = json.loads(new.request_body)
    assert new_req["chat_type"] == sc.chat_type and new_req["models"] == [sc.model]
    assert new_req["timestamp"] > 10**12  # milliseconds
    new_resp = json.loads(new.response_body)
    assert new_resp["success"] is True
    chat_id = new_resp["data"]["id"]
    # step 2: completions?chat_id=… with the v2 body (§4.1)
    url = urlsplit(comp.uri)
    assert (comp.method, url.path) == ("POST", "/api/v2/chat/completions")
    assert parse_qs(url.query) == {"chat_id": [chat_id]}
    assert comp.request_headers["Content-Type"] == ["application/json; charset=utf-8"]
    assert comp.request_headers["x-accel-buffering"] == ["no"]
    assert comp.request_body is not None
    body = json.loads(comp.request_body)
    assert body["stream"] is True and body["incremental_output"] is True
    assert (body["version"], body["chat_mode"], body["chat_id"]) == ("2.1", "normal", chat_id)
    assert body["model"] == sc.model and body["parent_id"] is None
    assert body["timestamp"] < 10**11  # seconds
    (msg,) = body["messages"]
    assert msg["role"] == "user" and msg["content"] == sc.prompt
    assert msg["chat_type"] == msg["sub_chat_type"] == sc.chat_type
    assert msg["extra"] == {"meta": {"subChatType": sc.chat_type}}
    assert msg["files"] == [] and msg["user_action"] == "chat" and msg["models"] == [sc.model]
    fc = msg["feature_config"]
    assert fc["thinking_enabled"] is sc.thinking and fc["output_schema"] == "phase"
    assert fc.get("thinking_format") == ("summary" if sc.name == "thinking_summary" else None)
    expected_model = sc.model + ("-thinking" if sc.thinking else "")
    expected_model += "-search" if sc.chat_type == "search" else ""
    assert sc.openai_model == expected_model


# -- bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASSETTES))
def test_sse_bodies_parse(name: str) -> None:
    for inter in CASSETTES[name].interactions:
        if not inter.content_type.startswith("text/event-stream"):
            continue
        assert inter.stream is not None
        assert 0.05 <= inter.stream.t_headers_s <= 0.6
        chunks = list(inter.iter_chunks())
        assert b"".join(c for _, c in chunks) == inter.body_bytes()
        assert chunks[0][0] == 0.0
        gaps = [round(b[0] - a[0], 6) for a, b in itertools.pairwise(chunks)]
        assert all(0.010 <= g <= 0.040 for g in gaps), gaps
        complete = inter.stream.end == "eof"
        frames, tail = _sse_frames(inter.response_body, complete=complete)
        assert "[DONE]" not in inter.response_body
        assert list(frames[0]) == ["response.created"]
        assert set(frames[0]["response.created"]) == {"chat_id", "parent_id", "response_id"}
        if not complete:
            assert inter.stream.error
            assert tail.startswith("data: {")
            with pytest.raises(json.JSONDecodeError):
                json.loads(tail[len("data: ") :])


@pytest.mark.parametrize("sc", FLOW_SCENARIOS, ids=lambda sc: sc.name)
def test_expected_outcome_matches_frames(sc: Scenario) -> None:
    comp = _completion(sc)
    if comp.stream is None:  # an error body instead of SSE
        assert sc.expected_status != 200 and sc.expected_error_code
        assert sc.expected_content is None and sc.partial_content is None
        return
    got = _aggregate(_frames_of(sc))
    if sc.expected_status == 200:
        assert got["finished"] and not got["error"]
        assert got["answer"] == sc.expected_content
        assert sc.expected_error_code is None and sc.partial_content is None
    else:
        assert sc.expected_content is None and sc.expected_error_code
        assert not got["finished"]
        assert got["answer"] == (sc.partial_content or "")
    assert got["reasoning"] == sc.expected_reasoning
    assert got["sources"] == sc.expected_sources


def test_t2t_ends_like_the_capture() -> None:
    frames = _frames_of(BY_NAME["t2t_answer"])
    answers = [f for f in frames[1:-3] if f["choices"][0]["delta"]["content"]]
    assert len(answers) >= 8
    for f in frames[1:-1]:
        assert (
            f["usage"]["total_tokens"] == f["usage"]["input_tokens"] + f["usage"]["output_tokens"]
        )
    idle = [f["choices"][0]["delta"] for f in frames[-3:-1]]
    assert all(d["content"] == "" and d["status"] == "typing" for d in idle)
    last = frames[-1]
    assert "usage" not in last and last["choices"][0]["delta"]["status"] == "finished"


def test_think_finished_is_not_the_end() -> None:
    deltas = [f["choices"][0]["delta"] for f in _frames_of(BY_NAME["think_answer"])[1:]]
    phases = [(d["phase"], d["status"]) for d in deltas]
    k = phases.index(("think", "finished"))
    assert all(p == ("think", "typing") for p in phases[:k])
    assert phases[k + 1] == ("answer", "typing")


def test_thinking_summary_snapshots_are_cumulative() -> None:
    deltas = [
        f["choices"][0]["delta"]
        for f in _frames_of(BY_NAME["thinking_summary"])[1:]
        if f["choices"][0]["delta"]["phase"] == "thinking_summary"
    ]
    snaps = [
        (d["extra"]["summary_title"]["content"], d["extra"]["summary_thought"]["content"])
        for d in deltas
    ]
    assert deltas[-1]["status"] == "finished"
    assert any(a == b for a, b in itertools.pairwise(snaps)), "no repeated snapshot"
    for (t0, p0), (t1, p1) in itertools.pairwise(snaps):
        for old, new in ((t0, t1), (p0, p1)):
            assert len(new) >= len(old)
            assert new[: len(old) - 1] == old[:-1]
            assert new[len(old) - 1].startswith(old[-1])


def test_search_call_arguments_concatenate() -> None:
    deltas = [f["choices"][0]["delta"] for f in _frames_of(BY_NAME["search_sources"])[1:]]
    calls = [d for d in deltas if "function_call" in d]
    assert len(calls) == 2
    args = json.loads("".join(d["function_call"]["arguments"] for d in calls))
    assert args == {"queries": ["tallest mountain on Earth"]}
    (result,) = [d for d in deltas if d["role"] == "function"]
    assert (result["name"], result["status"]) == ("web_search", "finished")
    for doc in result["extra"]["tool_result"]["docs"]:
        assert set(doc) == {"url", "title", "snippet", "date", "hostname"}
        assert urlsplit(doc["url"]).hostname == doc["hostname"]


def test_chinese_chunks_split_characters() -> None:
    comp = _completion(BY_NAME["chinese_emoji"])
    body = comp.body_bytes()
    ends: list[int] = []
    pos = 0
    for _, chunk in comp.iter_chunks():
        pos += len(chunk)
        ends.append(pos)

    def char_around(e: int) -> str:
        start = e
        while body[start] & 0xC0 == 0x80:  # back to the lead byte
            start -= 1
        return body[start : start + 4].decode("utf-8", "ignore")[:1]

    inside = {char_around(e) for e in ends[:-1] if body[e] & 0xC0 == 0x80}
    assert {"😊", "🎉"} & inside, "no boundary inside a 4-byte emoji"
    assert {"你", "千"} & inside, "no boundary inside a 3-byte CJK character"
    # and one boundary inside an event's JSON at an ASCII position (not after "\n\n")
    assert any(body[e - 2 : e] != b"\n\n" and body[e] < 0x80 for e in ends[:-1])


def test_error_bodies() -> None:
    def data(name: str) -> dict[str, Any]:
        return json.loads(_completion(BY_NAME[name]).response_body)

    rl = data("error_ratelimited")
    assert rl["success"] is False and rl["data"]["code"] == "RateLimited" and rl["data"]["num"] == 6
    assert "{{num}}" in rl["data"]["template"]
    assert data("error_unauthorized")["data"]["code"] == "Unauthorized"
    assert data("error_bad_request")["data"] == {"code": "Bad_Request", "details": "Internal error"}
    waf = data("error_waf_json")
    assert waf["ret"][0] == "FAIL_SYS_USER_VALIDATE" and waf["ret"][1].startswith("RGV587_ERROR")
    assert "_____tmd_____/punish?x5secdata=REDACTED" in waf["data"]["url"]
    html = _completion(BY_NAME["error_waf_html"])
    assert html.content_type == "text/html; charset=utf-8"
    for marker in ("aliyun_waf", "_____tmd_____", "x5secdata", "punish", "captcha"):
        assert marker in html.response_body
    assert "Access Verification" in html.response_body


def test_error_frame_and_empty_stream() -> None:
    frames = _frames_of(BY_NAME["error_frame"])
    assert frames[-1] == {
        "error": {"code": "Internal_Error", "details": "The model service failed."}
    }
    empty = _completion(BY_NAME["empty_stream"])
    assert empty.stream is not None and empty.stream.end == "eof"
    assert len(_frames_of(BY_NAME["empty_stream"])) == 1
