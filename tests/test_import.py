"""Tests for recorder.redact, recorder.importers and the import/validate/list/synth CLI."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from helpers import fake_jwt

from recorder.cassette import Cassette
from recorder.cli import main
from recorder.importers import (
    CaptureFormatError,
    build_cassette,
    import_har,
    import_http_pair,
    is_sse,
    split_sse_events,
)
from recorder.redact import Redactor
from recorder.replay import REQUESTS_KEY, Fault, make_replay_app

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

REQUEST_SAMPLE = "request_stream_t2t_logged_in_2025-10-26.http"
SSE_SAMPLE = "sse_t2t_answer_no_thinking_2025-10-26.txt"
JWT = fake_jwt("import-1")
JWT2 = fake_jwt("import-2")


# --- redaction --------------------------------------------------------------------------------


def test_redactor_headers() -> None:
    """Secret headers get stable placeholders; names, schemes and cookie names are kept."""
    r = Redactor()
    out = r.headers(
        {
            "Authorization": [f"Bearer {JWT}"],
            "Cookie": [f"token={JWT}; cna=abc123; x-ap=<REDACTED_X_AP>"],
            "Set-Cookie": ["ssxmod_itna=zzz; Path=/; HttpOnly"],
            "bx-ua": ["231!abcdef"],
            "bx-umidtoken": ["T2gAxyz="],
            "x5sec": ["secretclearance"],
            "X-Api-Token": ["t0k"],
            "source": ["web"],
            "Referer": ["https://chat.qwen.ai/c/x?key=sig123"],
        }
    )
    assert out["Authorization"] == ["Bearer <REDACTED:token:1>"]
    assert out["Cookie"] == [
        "token=<REDACTED:token:1>; cna=<REDACTED:cookie:1>; x-ap=<REDACTED_X_AP>"
    ]
    assert out["Set-Cookie"] == ["ssxmod_itna=<REDACTED:cookie:2>; Path=/; HttpOnly"]
    assert out["bx-ua"] == ["<REDACTED:bx-ua:1>"]
    assert out["bx-umidtoken"] == ["<REDACTED:bx-umidtoken:1>"]
    assert out["x5sec"] == ["<REDACTED:x5sec:1>"]
    assert out["X-Api-Token"] == ["<REDACTED:secret:1>"]
    assert out["source"] == ["web"]
    assert out["Referer"] == ["https://chat.qwen.ai/c/x?key=<REDACTED:key:1>"]


def test_redactor_text_and_uri() -> None:
    """JWTs, e-mails, signed-URL values and secret JSON fields are replaced; placeholders stay."""
    r = Redactor()
    body = json.dumps(
        {
            "email": "a.b@example.com",
            "password": "hunter2",
            "data": {"token": JWT2, "refresh_token": "rrr", "access_key_secret": "sss"},
            "note": f"see {JWT} or mail a.b@example.com",
            "security_token": "<ALREADY>",
        }
    )
    out = json.loads(r.text(body))
    assert out["email"] == "<REDACTED:email:1>"
    assert out["password"] == "<REDACTED:password:1>"
    assert out["data"] == {
        "token": "<REDACTED:token:1>",
        "refresh_token": "<REDACTED:token:2>",
        "access_key_secret": "<REDACTED:secret:1>",
    }
    assert out["note"] == "see <REDACTED:token:3> or mail <REDACTED:email:1>"
    assert out["security_token"] == "<ALREADY>"
    url = (
        "https://cdn.qwenlm.ai/x.png?key=abc&Signature=s1&OSSAccessKeyId=id1"
        "&x-oss-security-token=st&x5secdata=xx&keep=1"
    )
    assert r.uri(url) == (
        "https://cdn.qwenlm.ai/x.png?key=<REDACTED:key:1>&Signature=<REDACTED:signature:1>"
        "&OSSAccessKeyId=<REDACTED:key:2>&x-oss-security-token=<REDACTED:token:4>"
        "&x5secdata=<REDACTED:x5sec:1>&keep=1"
    )
    assert r.text(r.uri(url)) == r.uri(url)


# --- .http pairs and SSE splitting ------------------------------------------------------------


def test_split_sse_events_round_trips() -> None:
    """SSE splitting keeps each event's blank line and a trailing partial event."""
    text = "data: a\n\ndata: b\r\n\r\ndata: c"
    assert split_sse_events(text) == ["data: a\n\n", "data: b\r\n\r\n", "data: c"]
    assert is_sse(text) and not is_sse('{"a": 1}') and not is_sse("")


def test_import_http_pair_plain_json(tmp_path: Path) -> None:
    """A .http request with a JSON response gives a plain application/json interaction."""
    req = tmp_path / "r.http"
    req.write_text(
        "# comment\n# more\nGET https://chat.qwen.ai/api/models\nAccept: */*\n"
        f"Authorization: Bearer {JWT}\n\n",
        encoding="utf-8",
    )
    resp = tmp_path / "r.json"
    resp.write_text('{"data": []}\n', encoding="utf-8")
    inter = import_http_pair(req, resp, redactor=Redactor())
    assert (inter.method, inter.uri, inter.request_body) == (
        "GET",
        "https://chat.qwen.ai/api/models",
        None,
    )
    assert inter.request_headers["Authorization"] == ["Bearer <REDACTED:token:1>"]
    assert inter.content_type == "application/json"
    assert inter.stream is None
    assert inter.response_body == '{"data": []}\n'
    bad = tmp_path / "bad.http"
    bad.write_text("# only a comment\n", encoding="utf-8")
    with pytest.raises(CaptureFormatError, match=r"bad\.http"):
        import_http_pair(bad, resp, redactor=Redactor())


def _import_sample(samples_dir: Path, tmp_path: Path) -> Cassette:
    req, sse = samples_dir / REQUEST_SAMPLE, samples_dir / SSE_SAMPLE
    inter = import_http_pair(req, sse, redactor=Redactor())
    built = build_cassette(
        name="t2t_sample", description="sample", interactions=[inter], sources=[req, sse]
    )
    return Cassette.load(built.save(tmp_path / "t2t_sample.json"))


def test_import_real_sample_pair(samples_dir: Path, tmp_path: Path) -> None:
    """The real capture imports as a captured, streamed cassette with one chunk per SSE event."""
    cassette = _import_sample(samples_dir, tmp_path)
    raw = (samples_dir / SSE_SAMPLE).read_bytes()
    inter = cassette.interactions[0]
    assert inter.body_bytes() == raw
    assert inter.stream is not None
    assert len(inter.stream.chunks) == raw.count(b"\n\n")
    assert inter.method == "POST"
    assert inter.uri.startswith("https://chat.qwen.ai/api/v2/chat/completions?chat_id=")
    assert inter.request_body is not None and inter.request_body.startswith("{\n")
    assert inter.request_body.endswith("}")
    assert "token=<JWT_TOKEN>" in inter.request_headers["Cookie"][0]
    prov = cassette.provenance
    assert (prov.kind, prov.tool) == ("captured", "qwen-record import")
    assert prov.source == f"{REQUEST_SAMPLE}, {SSE_SAMPLE}"


async def test_replayed_sample_is_byte_identical(
    samples_dir: Path, tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """Replaying the imported capture returns the .txt bytes exactly, under each lossless fault."""
    cassette = _import_sample(samples_dir, tmp_path)
    raw = (samples_dir / SSE_SAMPLE).read_bytes()
    body = cassette.interactions[0].request_body_bytes()
    for spec in (None, "split_utf8", "bytewise", "coalesce"):
        fault = Fault.parse(spec) if spec else None
        app = make_replay_app([cassette], speed=0.0, fault=fault)
        client = await aiohttp_client(app)
        resp = await client.post(
            "/api/v2/chat/completions?chat_id=other-id",
            data=body,
            headers={"Content-Type": "application/json; charset=UTF-8"},
        )
        assert resp.status == 200, spec
        assert await resp.read() == raw, spec
        assert app[REQUESTS_KEY][0].matched == "t2t_sample"


# --- HAR ------------------------------------------------------------------------------------


def _har(tmp_path: Path) -> Path:
    sse = 'data: {"choices": [{"delta": {"content": "你好"}}]}\n\ndata: {"x": 1}\n\n'
    har: dict[str, Any] = {
        "log": {
            "version": "1.2",
            "creator": {"name": "test", "version": "0"},
            "entries": [
                {
                    "request": {
                        "method": "POST",
                        "url": "https://chat.qwen.ai/api/v2/chat/completions?chat_id=c1",
                        "headers": [
                            {"name": ":authority", "value": "chat.qwen.ai"},
                            {"name": "authorization", "value": f"Bearer {JWT}"},
                            {"name": "content-type", "value": "application/json"},
                        ],
                        "postData": {"mimeType": "application/json", "text": '{"model": "m"}'},
                    },
                    "response": {
                        "status": 200,
                        "statusText": "OK",
                        "headers": [
                            {"name": "content-type", "value": "text/event-stream"},
                            {"name": "content-encoding", "value": "gzip"},
                        ],
                        "content": {
                            "mimeType": "text/event-stream",
                            "encoding": "base64",
                            "text": base64.b64encode(sse.encode()).decode(),
                        },
                    },
                    "timings": {"wait": 250.0, "receive": 10},
                },
                {
                    "request": {
                        "method": "GET",
                        "url": "https://cdn.example.com/a.js",
                        "headers": [],
                    },
                    "response": {"status": 200, "headers": [], "content": {"text": "x"}},
                },
                {
                    "request": {
                        "method": "POST",
                        "url": "https://chat.qwen.ai/api/v2/auths/signin",
                        "headers": [],
                        "postData": {"text": '{"email": "me@example.org", "password": "pw"}'},
                    },
                    "response": {
                        "status": 200,
                        "statusText": "",
                        "headers": [
                            {"name": "Content-Type", "value": "application/json"},
                            {"name": "Set-Cookie", "value": f"token={JWT}; Path=/"},
                        ],
                        "content": {
                            "mimeType": "application/json",
                            "text": f'{{"token": "{JWT}"}}',
                        },
                    },
                },
                {
                    "request": {
                        "method": "GET",
                        "url": "https://chat.qwen.ai/aborted",
                        "headers": [],
                    },
                    "response": {"status": 0, "headers": [], "content": {}},
                },
            ],
        }
    }
    path = tmp_path / "session.har"
    path.write_text(json.dumps(har), encoding="utf-8")
    return path


def test_import_har(tmp_path: Path) -> None:
    """HAR entries for the host become interactions: SSE streamed per event, secrets redacted."""
    interactions = import_har(_har(tmp_path), redactor=Redactor())
    assert [i.uri for i in interactions] == [
        "https://chat.qwen.ai/api/v2/chat/completions?chat_id=c1",
        "https://chat.qwen.ai/api/v2/auths/signin",
    ]
    sse, signin = interactions
    assert sse.stream is not None
    assert sse.stream.t_headers_s == 0.25
    assert [n for _, n in sse.stream.chunks] == [
        len('data: {"choices": [{"delta": {"content": "你好"}}]}\n\n'.encode()),
        len(b'data: {"x": 1}\n\n'),
    ]
    assert sse.response_headers == {"content-type": ["text/event-stream"]}
    assert sse.request_headers["authorization"] == ["Bearer <REDACTED:token:1>"]
    assert ":authority" not in sse.request_headers
    assert sse.request_body == '{"model": "m"}'
    assert signin.stream is None and signin.reason == ""
    assert (
        signin.request_body
        == '{"email": "<REDACTED:email:1>", "password": "<REDACTED:password:1>"}'
    )
    assert signin.response_body == '{"token": "<REDACTED:token:1>"}'
    assert signin.response_headers["Set-Cookie"] == ["token=<REDACTED:token:1>; Path=/"]
    assert len(import_har(_har(tmp_path), redactor=Redactor(), host=None)) == 3
    nothar = tmp_path / "x.har"
    nothar.write_text("[]", encoding="utf-8")
    with pytest.raises(CaptureFormatError, match="not a HAR"):
        import_har(nothar, redactor=Redactor())


# --- CLI --------------------------------------------------------------------------------------


def test_cli_import_pairs_validate_and_list(samples_dir: Path, tmp_path: Path) -> None:
    """import writes a valid cassette, validate accepts it and list prints one line per request."""
    out = tmp_path / "cassettes" / "t2t.json"
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "import",
            str(samples_dir / REQUEST_SAMPLE),
            str(samples_dir / SSE_SAMPLE),
            "-o",
            str(out),
            "--description",
            "Captured t2t answer.",
        ],
    )
    assert result.exit_code == 0, result.output
    assert Cassette.load(out).name == "t2t"
    result = runner.invoke(main, ["validate", str(out.parent)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
    result = runner.invoke(main, ["list", str(out)])
    assert result.exit_code == 0, result.output
    fields = result.output.rstrip("\n").split("\t")
    assert fields[:6] == [
        "t2t",
        "captured",
        "POST",
        "/api/v2/chat/completions",
        "qwen3-vl-plus",
        "t2t",
    ]
    assert fields[6] == "explain law to an alien"
    assert fields[7:9] == ["200", "text/event-stream; charset=utf-8"]
    assert int(fields[9]) > 800


def test_cli_import_har_and_usage_errors(tmp_path: Path) -> None:
    """import --har writes a cassette; an odd number of files is a usage error."""
    runner = CliRunner()
    out = tmp_path / "har.json"
    result = runner.invoke(main, ["import", "--har", str(_har(tmp_path)), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(Cassette.load(out).interactions) == 2
    result = runner.invoke(main, ["import", str(out), "-o", str(tmp_path / "y.json")])
    assert result.exit_code == 2
    assert "pairs" in result.output


def test_cli_validate_reports_problems(tmp_path: Path) -> None:
    """validate exits 1 and lists the problems of a bad file."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "interactions": []}), encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "FAIL" in result.output and "metadata" in result.output


def test_cli_synth_without_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """synth fails with a clear message when recorder.synthetic cannot be imported."""
    monkeypatch.setitem(sys.modules, "recorder.synthetic", None)
    result = CliRunner().invoke(main, ["synth", "-o", str(tmp_path)])
    assert result.exit_code == 1
    assert "recorder.synthetic is not available" in result.output
