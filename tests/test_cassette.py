"""Tests for recorder.cassette: the cassette format v1 model, validation and file I/O."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import vcr

from recorder.cassette import (
    FORMAT_VERSION,
    Cassette,
    CassetteError,
    Interaction,
    Provenance,
    StreamInfo,
    load_all,
    schema_path,
    validate,
)

URI = "https://chat.qwen.ai/api/v2/chat/completions?chat_id=abc"
SSE = 'data: {"choices": [{"delta": {"content": "你好", "phase": "answer"}}]}\n\n'


def _streamed(end: str = "eof", error: str | None = None) -> Interaction:
    raw = SSE.encode()
    cut = raw.index("你".encode()) + 1  # split inside the multi-byte character
    return Interaction.streamed(
        method="POST",
        uri=URI,
        request_headers={"Content-Type": ["application/json; charset=utf-8"]},
        request_body='{"model": "qwen3-max"}',
        pieces=[(0.0, raw[:cut]), (0.02, raw[cut:])],
        end=end,  # type: ignore[arg-type]
        error=error,
        t_headers_s=0.031,
    )


def _plain() -> Interaction:
    return Interaction(
        method="POST",
        uri="https://chat.qwen.ai/api/v2/chats/new",
        request_headers={"Content-Type": ["application/json"]},
        request_body='{"chat_type": "t2t"}',
        status=200,
        reason="OK",
        response_headers={"Content-Type": ["application/json"]},
        response_body='{"success": true, "data": {"id": "é"}}',
    )


def _cassette(kind: str = "synthetic") -> Cassette:
    return Cassette(
        name="t2t_answer",
        description="A test cassette.",
        provenance=Provenance(
            kind=kind,  # type: ignore[arg-type]
            date="2026-11-22",
            tool="tests",
            tool_version="0",
            protocol_sections=["5.1"] if kind == "synthetic" else [],
        ),
        interactions=[_plain(), _streamed()],
    )


def test_round_trip_preserves_everything(tmp_path: Path) -> None:
    """A saved cassette loads back equal, including stream chunks split inside a character."""
    cassette = _cassette()
    path = cassette.save(tmp_path / "c.json")
    loaded = Cassette.load(path)
    assert loaded.path == path
    assert loaded.to_dict() == cassette.to_dict()
    chunks = list(loaded.interactions[1].iter_chunks())
    assert [t for t, _ in chunks] == [0.0, 0.02]
    assert b"".join(b for _, b in chunks) == SSE.encode()
    assert len(chunks[0][1]) == SSE.encode().index("你".encode()) + 1


def test_dumps_is_deterministic_and_layout_matches_doc() -> None:
    """dumps() is stable, keeps non-ASCII text and uses the documented key layout."""
    cassette = _cassette()
    text = cassette.dumps()
    assert text == cassette.dumps()
    assert text.endswith("}\n")
    assert "你好" in text
    data = json.loads(text)
    assert list(data) == ["version", "metadata", "interactions"]
    assert data["metadata"]["cassette_format"] == FORMAT_VERSION
    assert list(data["interactions"][0]["request"]) == ["method", "uri", "body", "headers"]
    assert data["interactions"][1]["response"]["x_stream"]["chunks"][1][0] == 0.02
    assert "x_stream" not in data["interactions"][0]["response"]


def test_non_streamed_iter_chunks_and_accessors() -> None:
    """A non-streamed interaction yields one chunk at 0.0 and exposes bytes and content type."""
    inter = _plain()
    assert list(inter.iter_chunks()) == [(0.0, inter.body_bytes())]
    assert inter.request_body_bytes() == b'{"chat_type": "t2t"}'
    assert inter.content_type == "application/json"
    inter.response_headers = {}
    assert inter.content_type == ""


def test_streamed_defaults_and_invalid_utf8() -> None:
    """streamed() defaults to an SSE content type and rejects a body that is not UTF-8."""
    inter = _streamed()
    assert inter.content_type == "text/event-stream; charset=utf-8"
    cut = SSE.encode().index("你".encode()) + 1
    rest = len(SSE.encode()) - cut
    assert inter.stream == StreamInfo(t_headers_s=0.031, chunks=((0.0, cut), (0.02, rest)))
    with pytest.raises(CassetteError, match="UTF-8"):
        Interaction.streamed(
            method="GET", uri=URI, request_headers={}, request_body=None, pieces=[(0.0, b"\xe4")]
        )
    with pytest.raises(CassetteError, match="error text"):
        _streamed(end="error")
    assert _streamed(end="error", error="reset").stream is not None


def _broken() -> dict[str, Any]:
    data = _cassette().to_dict()
    xs = data["interactions"][1]["response"]["x_stream"]
    xs["chunks"] = [[0.5, 10], [0.1, 10]]
    xs["end"] = "error"
    data["metadata"]["provenance"]["protocol_sections"] = []
    data["metadata"]["cassette_format"] = 2
    return data


def test_validate_lists_every_problem_with_json_paths() -> None:
    """validate() reports all broken invariants at once, each with its JSON path."""
    with pytest.raises(CassetteError) as info:
        validate(_broken())
    message = str(info.value)
    assert "$.metadata.cassette_format" in message
    assert "$.metadata.provenance.protocol_sections" in message
    assert "$.interactions[1].response.x_stream.chunks[1][0]" in message
    assert "lengths sum to 20 bytes" in message
    assert "$.interactions[1].response.x_stream.error" in message
    assert len(info.value.problems) == 5


def test_validate_rejects_schema_violations() -> None:
    """Extra request keys (which vcrpy would refuse) and bad types are schema errors."""
    data = _cassette().to_dict()
    data["interactions"][0]["request"]["extra"] = 1
    data["interactions"][0]["response"]["status"]["code"] = "200"
    with pytest.raises(CassetteError) as info:
        validate(data)
    assert "$.interactions[0].request" in str(info.value)
    assert "$.interactions[0].response.status.code" in str(info.value)


def test_captured_cassette_needs_no_sections() -> None:
    """A captured cassette is valid without protocol sections."""
    validate(_cassette(kind="captured").to_dict())


def test_load_names_the_file(tmp_path: Path) -> None:
    """Loading a bad file raises CassetteError whose message names the file."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_broken()), encoding="utf-8")
    with pytest.raises(CassetteError, match=r"bad\.json"):
        Cassette.load(bad)
    notjson = tmp_path / "nojson.json"
    notjson.write_text("{", encoding="utf-8")
    with pytest.raises(CassetteError, match=r"nojson\.json: not JSON"):
        Cassette.load(notjson)


def test_save_refuses_invalid_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """save() validates first, keeps an existing file intact and leaves no temporary files."""
    target = tmp_path / "c.json"
    _cassette().save(target)
    before = target.read_bytes()
    cassette = _cassette()
    cassette.provenance.protocol_sections = []
    with pytest.raises(CassetteError):
        cassette.save(target)
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.json"]


def test_load_all_expands_directories_and_names_bad_files(tmp_path: Path) -> None:
    """load_all() reads a directory's *.json sorted and names every bad file."""
    a = _cassette()
    a.name = "b_second"
    a.save(tmp_path / "b.json")
    a.name = "a_first"
    a.save(tmp_path / "a.json")
    (tmp_path / "notes.txt").write_text("ignored", encoding="utf-8")
    names = [c.name for c in load_all([tmp_path])]
    assert names == ["a_first", "b_second"]
    (tmp_path / "z.json").write_text("[]", encoding="utf-8")
    with pytest.raises(CassetteError, match=r"z\.json"):
        load_all([tmp_path, tmp_path / "missing.json"])


def test_schema_path_points_at_the_repo_schema() -> None:
    """schema_path() is the Draft 2020-12 schema in the repository's schemas/ folder."""
    path = schema_path()
    assert path.name == "cassette.schema.json"
    assert path.parent.name == "schemas"
    assert "2020-12" in json.loads(path.read_text(encoding="utf-8"))["$schema"]


async def test_vcrpy_replays_a_saved_cassette(tmp_path: Path) -> None:
    """vcrpy 9.4 replays a saved cassette (streamed one included) with the recorded bodies."""
    cassette = _cassette()
    path = cassette.save(tmp_path / "vcr.json")
    plain, streamed = cassette.interactions
    with vcr.use_cassette(str(path), serializer="json", record_mode="none"):
        async with aiohttp.ClientSession() as session:
            async with session.post(plain.uri, data=plain.request_body_bytes()) as resp:
                assert resp.status == 200
                assert await resp.read() == plain.body_bytes()
            async with session.post(streamed.uri, data=streamed.request_body_bytes()) as resp:
                assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
                lines = [line async for line in resp.content]
                assert b"".join(lines) == streamed.body_bytes()
