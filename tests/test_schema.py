"""Schema inference (recorder.schema.infer), the committed schemas/upstream/, and the diff core."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from jsonschema import Draft202012Validator

from recorder.cassette import Cassette, Interaction, Provenance, load_all
from recorder.cli import main
from recorder.schema import (
    ENDPOINT_MARK,
    answer_kind,
    by_key,
    diff,
    endpoint_key,
    frame_kind,
    infer,
    load_schemas,
    render,
    sse_data,
    write_schemas,
)

REPO = Path(__file__).resolve().parents[1]
CASSETTES = REPO / "cassettes"
UPSTREAM = REPO / "schemas" / "upstream"
REGENERATE = "run: qwen-record schema cassettes/ -o schemas/upstream/"


def _cassette(*inters: Interaction, name: str = "c") -> Cassette:
    prov = Provenance("synthetic", "2026-11-22", "test", "0", ["5.2"])
    return Cassette(name, "test", prov, list(inters))


def _sse(frames: list[object], body: str | None = None, uri: str = "") -> Interaction:
    text = "".join(f"data: {json.dumps(f)}\n\n" for f in frames)
    return Interaction.streamed(
        method="POST",
        uri=uri or "https://chat.qwen.ai/api/v2/chat/completions?chat_id=x",
        request_headers={},
        request_body=body,
        pieces=[(0.0, text.encode())],
    )


def _json(
    uri: str, answer: object, method: str = "GET", ctype: str = "application/json"
) -> Interaction:
    return Interaction(
        method, uri, {}, None, 200, "OK", {"Content-Type": [ctype]}, json.dumps(answer)
    )


def test_committed_schemas_match_cassettes(tmp_path: Path) -> None:
    """schemas/upstream/ is exactly what `qwen-record schema cassettes/` generates."""
    docs = infer(load_all([CASSETTES]))
    expected = {name: render(doc) for name, doc in docs.items()}
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in UPSTREAM.glob("*.json")}
    assert sorted(on_disk) == sorted(expected), REGENERATE
    for name in expected:
        assert on_disk[name] == expected[name], f"{name} differs; {REGENERATE}"


def test_schema_files_are_valid_json_schemas() -> None:
    """Every committed endpoint document is a valid Draft 2020-12 schema with its metadata."""
    for key, doc in load_schemas(UPSTREAM).items():
        Draft202012Validator.check_schema(doc)
        assert doc[ENDPOINT_MARK]["key"] == key
        assert doc["title"] == key


def test_inference_is_deterministic(tmp_path: Path) -> None:
    """Writing twice gives identical bytes; the index lists endpoints and cassettes sorted."""
    a, b = tmp_path / "a", tmp_path / "b"
    cassettes = load_all([CASSETTES])
    write_schemas(infer(cassettes), a)
    write_schemas(infer(cassettes), b)
    for p in a.iterdir():
        assert p.read_bytes() == (b / p.name).read_bytes()
    index = json.loads((a / "index.json").read_text())
    assert index["cassettes"] == sorted(index["cassettes"])
    assert list(index["endpoints"]) == sorted(index["endpoints"])


def test_endpoint_keys() -> None:
    """Keys drop the query, replace ids by {id} and split completions by chat_type."""
    body = json.dumps({"messages": [{"chat_type": "search"}]})
    assert endpoint_key("post", "https://x/api/v2/chat/completions?chat_id=1", body) == (
        "POST /api/v2/chat/completions [search]"
    )
    assert endpoint_key("POST", "https://x/api/v2/chat/completions", None) == (
        "POST /api/v2/chat/completions"
    )
    assert endpoint_key(
        "GET", "https://x/api/v2/chats/5f3c1b1e-2c6a-4f1a-9c7e-0a1b2c3d4e5f", None
    ) == ("GET /api/v2/chats/{id}")
    assert endpoint_key("GET", "https://x/api/v2/models/", None) == "GET /api/v2/models"
    assert endpoint_key("GET", "https://x/api/v1/tasks/status/123456", None) == (
        "GET /api/v1/tasks/status/{id}"
    )


def test_frame_kinds() -> None:
    """Frames and bodies are classified as in the module table (docs/protocol.md 5.2, 5.7, 10)."""
    assert frame_kind({"response.created": {}}) == "response.created"
    assert frame_kind({"response.info": {"action": "keep_alive"}}) == "response.info"
    assert frame_kind({"choices": [{"delta": {"phase": "answer"}}]}) == "delta:answer"
    assert frame_kind({"choices": [{"delta": {"phase": None}}]}) == "delta:<none>"
    assert frame_kind({"choices": [{"delta": {}}], "usage": {}}) == "delta:<none>"
    assert frame_kind({"error": {"code": "x"}}) == "error"
    assert frame_kind({"success": False, "data": {"code": "RateLimited"}}) == "envelope:RateLimited"
    assert frame_kind({"success": False, "data": {}}) == "envelope:<none>"
    assert frame_kind({"ret": ["FAIL_SYS_USER_VALIDATE"], "data": {}}) == "waf"
    assert frame_kind({"success": True, "data": {"id": "x"}}) == "json"
    assert frame_kind([1, 2]) == "json"


def test_sse_data_follows_the_spec() -> None:
    """SSE parsing: CR/LF variants, comments skipped, data lines joined, partial tail kept."""
    text = ': keep\r\ndata: {"a":1}\r\n\r\ndata:x\ndata: y\n\nevent: e\rdata: z\r\rdata: {"cut'
    assert list(sse_data(text)) == ['{"a":1}', "x\ny", "z", '{"cut']


def test_answer_kinds() -> None:
    """Answers are sse/sse-cut for streams, the frame kind for JSON, html/text/empty otherwise."""
    assert answer_kind(_sse([{"choices": []}])) == "sse"
    assert (
        answer_kind(_json("https://x/a", {"success": False, "data": {"code": "X"}})) == "envelope:X"
    )
    html = Interaction(
        "GET", "https://x/a", {}, None, 200, "OK", {"Content-Type": ["text/html"]}, "<p>"
    )
    assert answer_kind(html) == "html"
    empty = Interaction("GET", "https://x/a", {}, None, 204, "No Content", {}, "")
    assert answer_kind(empty) == "empty"


def test_enum_values_are_recorded_beside_the_schema() -> None:
    """phase, status, role and chat_type values are listed under x-enum-values, sorted."""
    body = json.dumps({"stream": True, "messages": [{"chat_type": "t2t", "role": "user"}]})
    frames = [
        {"choices": [{"delta": {"role": "assistant", "phase": "answer", "status": "typing"}}]},
        {"choices": [{"delta": {"role": "assistant", "phase": "answer", "status": "finished"}}]},
    ]
    docs = by_key(infer([_cassette(_sse(frames, body))]))
    doc = docs["POST /api/v2/chat/completions [t2t]"]
    answer = doc["$defs"]["delta:answer"]["x-enum-values"]
    assert answer["$.choices[].delta.status"] == ["finished", "typing"]
    assert answer["$.choices[].delta.phase"] == ["answer"]
    request = doc["$defs"]["request"]["x-enum-values"]
    assert request["$.messages[].chat_type"] == ["t2t"]
    assert request["$.stream"] == [True]
    assert doc[ENDPOINT_MARK]["content_types"] == ["text/event-stream"]
    assert doc[ENDPOINT_MARK]["sse_frames"] == ["delta:answer"]


def _diff_items(before: list[object], after: list[object]) -> set[tuple[str, str, str]]:
    uri = "https://chat.qwen.ai/api/models"
    base = by_key(infer([_cassette(*(_json(uri, o) for o in before))]))
    new = by_key(infer([_cassette(*(_json(uri, o) for o in after))]))
    return {(i.severity, i.kind, i.path) for i in diff(base, new, None).items}


def test_diff_type_change_is_breaking() -> None:
    """A field whose type changes (integer -> string) is a breaking type_changed item."""
    assert _diff_items([{"n": 1}], [{"n": "1"}]) == {("breaking", "type_changed", "$.n")}


def test_diff_integer_where_number_was_known_is_fine() -> None:
    """An integer where floats were seen is not a type change (JSON numbers)."""
    assert _diff_items([{"n": 1.5}], [{"n": 2}]) == set()


def test_diff_added_optional_field_is_notable() -> None:
    """A new field is notable and reported once at its top-most new path."""
    assert _diff_items([{"a": 1}], [{"a": 1, "b": {"c": 1}}]) == {("notable", "field_added", "$.b")}


def test_diff_required_field_gone_or_sometimes_missing() -> None:
    """A required field absent from every new sample is removed; from some, required_missing."""
    assert _diff_items([{"a": 1, "b": 1}], [{"a": 1}]) == {("breaking", "field_removed", "$.b")}
    assert _diff_items([{"a": 1, "b": 1}], [{"a": 1}, {"a": 1, "b": 2}]) == {
        ("breaking", "required_missing", "$.b")
    }


def test_diff_optional_field_absent_is_not_drift() -> None:
    """A field that was optional before and is absent now is not reported (samples vary)."""
    assert _diff_items([{"a": 1, "b": 1}, {"a": 1}], [{"a": 1}]) == set()


def test_diff_new_enum_value_is_notable() -> None:
    """A new value of an enum-like field (here status) is notable."""
    assert _diff_items([{"status": "ok"}], [{"status": "gone"}]) == {
        ("notable", "enum_value_added", "$.status")
    }


def test_diff_new_endpoint_answering_errors_is_breaking() -> None:
    """An unknown endpoint that only answers error envelopes is breaking; otherwise notable."""
    base = by_key(infer([_cassette(_json("https://x/api/models", {"data": []}))]))
    bad = _json("https://x/api/v2/models", {"success": False, "data": {"code": "Not_Found"}})
    good = _json("https://x/api/v3/models", {"data": []})
    report = diff(base, by_key(infer([_cassette(bad, good)])), None)
    kinds = {(i.severity, i.kind, i.endpoint) for i in report.items}
    assert ("breaking", "endpoint_added_error", "GET /api/v2/models") in kinds
    assert ("notable", "endpoint_added", "GET /api/v3/models") in kinds
    assert ("info", "error_answer", "GET /api/v2/models") in kinds


def test_diff_new_error_status_is_breaking() -> None:
    """A known endpoint answering an HTTP status >= 400 never seen before is breaking."""
    base = by_key(
        infer([_cassette(_json("https://x/api/v1/auths/signin", {"token": "t"}, "POST"))])
    )
    gone = Interaction(
        "POST",
        "https://x/api/v1/auths/signin",
        {},
        None,
        405,
        "Method Not Allowed",
        {"Content-Type": ["application/json"]},
        "{}",
    )
    report = diff(base, by_key(infer([_cassette(gone)])), None)
    assert ("breaking", "status_added") in {(i.severity, i.kind) for i in report.items}


def test_schema_cli_writes_and_checks(tmp_path: Path) -> None:
    """`qwen-record schema` writes the files; --check exits 1 on a difference, 0 when equal."""
    runner = CliRunner()
    out = tmp_path / "s"
    res = runner.invoke(main, ["schema", str(CASSETTES), "-o", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["schema", str(CASSETTES), "-o", str(out), "--check"])
    assert res.exit_code == 0, res.output
    victim = next(p for p in out.glob("*.json") if p.name != "index.json")
    victim.write_text("{}\n")
    res = runner.invoke(main, ["schema", str(CASSETTES), "-o", str(out), "--check"])
    assert res.exit_code == 1
    assert f"differs {victim}" in res.output


def test_write_schemas_removes_stale_endpoint_files_only(tmp_path: Path) -> None:
    """Stale endpoint files are removed on rewrite; unrelated JSON files are kept."""
    (tmp_path / "old_endpoint.json").write_text(json.dumps({ENDPOINT_MARK: {"key": "GET /x"}}))
    (tmp_path / "notes.json").write_text("{}")
    write_schemas(infer(load_all([CASSETTES])), tmp_path)
    assert not (tmp_path / "old_endpoint.json").exists()
    assert (tmp_path / "notes.json").exists()
