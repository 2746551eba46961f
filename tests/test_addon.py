"""The mitmproxy recording addon (recorder/addon.py), driven with mitmproxy's test helpers.

``taddons.context`` sets up options and ``ctx``; the stream callable is driven by hand because
``cycle()`` does not stream (docs/recording.md §1.7).
"""

from __future__ import annotations

import gzip
import json
import time
import warnings
from pathlib import Path

import pytest
from helpers import fake_jwt

pytest.importorskip("mitmproxy")

from hypothesis import given
from hypothesis import strategies as st

from recorder.cassette import Cassette

# Importing mitmproxy's addons pulls in pyparsing/ldap3/pyasn1 code that warns about deprecated
# names of those libraries (docs/recording.md §1.7); ignore that only while importing.
_PYPARSING = r".*'parseAll' argument is deprecated"
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from mitmproxy import exceptions, http
    from mitmproxy.test import taddons, tflow, tutils

    from recorder import addon as addon_module
    from recorder import cassette as cassette_module
    from recorder.addon import Recorder, Tee

pytestmark = pytest.mark.filterwarnings(f"ignore:{_PYPARSING}:DeprecationWarning")

ADDON_FILE = Path(addon_module.__file__)
JWT = fake_jwt("addon")
CHAT = "5f3c1b1e-2c6a-4f1a-9c7e-0a1b2c3d4e5f"
CHAT2 = "6a4d2c2f-3d7b-4a2b-8d8f-1b2c3d4e5f60"


def _flow(
    path: str,
    *,
    method: str = "POST",
    body: bytes = b"{}",
    host: str = "chat.qwen.ai",
    req_headers: tuple[tuple[bytes, bytes], ...] = (),
    content_type: bytes = b"application/json",
    resp_content: bytes | None = b"{}",
    resp_headers: tuple[tuple[bytes, bytes], ...] = (),
) -> http.HTTPFlow:
    now = time.time()
    req = tutils.treq(
        method=method.encode(),
        scheme=b"https",
        host=host,
        port=443,
        path=path.encode(),
        headers=http.Headers(((b"content-type", b"application/json"), *req_headers)),
        content=body,
        timestamp_start=now - 0.2,
    )
    resp = tutils.tresp(
        headers=http.Headers(((b"content-type", content_type), *resp_headers)),
        content=resp_content,
        timestamp_start=now,
    )
    return tflow.tflow(req=req, resp=resp)


def _sse_flow(**kw: object) -> http.HTTPFlow:
    return _flow(
        f"/api/v2/chat/completions?chat_id={CHAT}",
        content_type=b"text/event-stream; charset=utf-8",
        resp_content=None,
        **kw,  # type: ignore[arg-type]
    )


def _only_cassette(directory: Path) -> Cassette:
    files = sorted(directory.glob("*.json"))
    assert len(files) == 1, files
    return Cassette.load(files[0])


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _read(directory: Path) -> str:
    return "".join(p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.json")))


def _configure(tctx: taddons.context, rec: Recorder, tmp_path: Path, **more: object) -> None:
    tctx.configure(rec, qwen_cassette_dir=str(tmp_path), qwen_run_name="t", **more)


def test_options_are_registered_with_help() -> None:
    """The addon registers typed qwen_* options with defaults and help text."""
    rec = Recorder()
    with taddons.context(rec) as tctx:
        opts = tctx.options
        assert opts.qwen_cassette_dir == "cassettes/captured"
        assert opts.qwen_hosts == "chat.qwen.ai"
        assert opts.qwen_cassette_mode == "chat"
        assert opts.qwen_record_all is False
        assert opts.qwen_run_name == ""
        for name in ("qwen_cassette_dir", "qwen_hosts", "qwen_cassette_mode", "qwen_record_all"):
            assert opts._options[name].help


@pytest.mark.parametrize(
    "bad",
    [
        {"qwen_cassette_mode": "day"},
        {"qwen_hosts": " , "},
        {"qwen_run_name": "a/b"},
    ],
)
def test_bad_options_are_refused(bad: dict[str, object]) -> None:
    """Invalid option values raise OptionsError (mode choices, empty host list, bad names)."""
    rec = Recorder()
    with taddons.context(rec) as tctx, pytest.raises(exceptions.OptionsError):
        tctx.configure(rec, **bad)


def test_cassette_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """qwen_cassette_dir must not name an existing file."""
    f = tmp_path / "file"
    f.write_text("x")
    rec = Recorder()
    with taddons.context(rec) as tctx, pytest.raises(exceptions.OptionsError):
        tctx.configure(rec, qwen_cassette_dir=str(f))


@given(st.lists(st.binary(min_size=1, max_size=64), max_size=20))
def test_tee_returns_every_chunk_unchanged_and_never_empty(chunks: list[bytes]) -> None:
    """The tee passes each non-empty chunk through unchanged (never b"") and records it."""
    tee = Tee()
    out = [tee(c) for c in chunks]
    assert out == chunks
    assert all(o != b"" for o in out)
    assert tee(b"") == b""  # the final flush call only
    assert [p for _, p in tee.pieces] == chunks


def test_script_file_loads_in_mitmproxy() -> None:
    """mitmproxy can load recorder/addon.py by path, as `mitmdump -s` does."""
    with taddons.context() as tctx:
        module = tctx.script(str(ADDON_FILE))
        assert [type(a).__name__ for a in module.addons] == ["Recorder"]


async def test_streamed_answer_is_recorded_chunk_by_chunk(tmp_path: Path) -> None:
    """SSE chunks (one ending inside a UTF-8 character) are recorded with offsets and eof."""
    rec = Recorder()
    with taddons.context(rec) as tctx:
        _configure(tctx, rec, tmp_path)
        f = _sse_flow()
        rec.request(f)
        rec.responseheaders(f)
        assert isinstance(f.response.stream, Tee)
        chunks = [b'data: {"a": "\xe4', b'\xbd\xa0"}\n\n', b'data: {"b": 1}\n\n']
        assert [f.response.stream(c) for c in chunks] == chunks
        assert f.response.stream(b"") == b""
        await rec.response(f)
    c = _only_cassette(tmp_path)
    (inter,) = c.interactions
    assert c.name == "t-chat-1"
    assert c.provenance.kind == "captured"
    assert inter.response_body.encode() == b"".join(chunks)
    assert inter.stream is not None
    assert [n for _, n in inter.stream.chunks] == [len(x) for x in chunks]
    assert inter.stream.end == "eof" and inter.stream.error is None
    assert 0.15 < inter.stream.t_headers_s < 0.3
    offsets = [t for t, _ in inter.stream.chunks]
    assert offsets == sorted(offsets) and 0 <= offsets[0] < 1.0
    assert "content-length" not in {k.lower() for k in inter.response_headers}


async def test_client_abort_keeps_partial_stream_as_error(tmp_path: Path) -> None:
    """An error hook after some chunks writes them with end 'error' and mitmproxy's message."""
    rec = Recorder()
    with taddons.context(rec) as tctx:
        _configure(tctx, rec, tmp_path)
        f = _sse_flow()
        rec.responseheaders(f)
        f.response.stream(b'data: {"a": 1}\n\n')
        f.response.stream(b'data: {"a": 2')
        f.error = tflow.terr("Client disconnected.")
        await rec.error(f)
    (inter,) = _only_cassette(tmp_path).interactions
    assert inter.response_body == 'data: {"a": 1}\n\ndata: {"a": 2'
    assert inter.stream is not None and inter.stream.end == "error"
    assert inter.stream.error == "Client disconnected."


async def test_stream_cut_inside_a_character_drops_the_partial_bytes(tmp_path: Path) -> None:
    """A stream cut inside a UTF-8 character keeps the valid prefix and says what was dropped."""
    rec = Recorder()
    with taddons.context(rec) as tctx:
        _configure(tctx, rec, tmp_path)
        f = _sse_flow()
        rec.responseheaders(f)
        f.response.stream(b'data: "\xe4\xbd')
        f.error = tflow.terr("peer closed connection")
        await rec.error(f)
    (inter,) = _only_cassette(tmp_path).interactions
    assert inter.response_body == 'data: "'
    assert inter.stream is not None and inter.stream.error is not None
    assert "2 trailing bytes" in inter.stream.error


async def test_request_secrets_never_reach_the_file(tmp_path: Path) -> None:
    """Authorization, cookies, bx-* headers and JWTs in URLs are replaced before writing."""
    rec = Recorder()
    with taddons.context(rec) as tctx:
        _configure(tctx, rec, tmp_path)
        f = _sse_flow(
            req_headers=(
                (b"authorization", f"Bearer {JWT}".encode()),
                (b"cookie", f"token={JWT}; ssxmod_itna=secretcookie".encode()),
                (b"bx-umidtoken", b"T2gAsecretumid"),
            )
        )
        rec.responseheaders(f)
        f.response.stream(
            b'data: {"content": "see https://cdn.qwenlm.ai/x.png?key=' + JWT.encode() + b'"}\n\n'
        )
        await rec.response(f)
    text = _read(tmp_path)
    for secret in (JWT, "secretcookie", "T2gAsecretumid"):
        assert secret not in text
    (inter,) = _only_cassette(tmp_path).interactions
    assert inter.request_headers["authorization"] == ["Bearer <REDACTED:token:1>"]
    assert "?key=<REDACTED:token:1>" in inter.response_body
    assert inter.stream is not None
    assert sum(n for _, n in inter.stream.chunks) == len(inter.response_body.encode())
    assert CHAT in inter.uri  # chat ids are not secrets


async def test_sts_answer_is_redacted_on_disk(tmp_path: Path) -> None:
    """A getstsToken answer (docs/protocol.md 7.1) is written without its STS credentials."""
    answer = {
        "success": True,
        "data": {
            "access_key_id": "STS.NTsecretid",
            "access_key_secret": "SuperSecretKey",
            "security_token": "CAISsecrettoken",
            "file_url": "https://cdn.qwenlm.ai/u/f.png?key=signedkey123",
            "file_id": "f-1",
        },
    }
    rec = Recorder()
    with taddons.context(rec) as tctx:
        _configure(tctx, rec, tmp_path)
        f = _flow("/api/v2/files/getstsToken", resp_content=json.dumps(answer).encode())
        await rec.response(f)
    path = tmp_path / "t-other.json"
    text = _read(tmp_path)
    for secret in ("STS.NTsecretid", "SuperSecretKey", "CAISsecrettoken", "signedkey123"):
        assert secret not in text
    data = json.loads(Cassette.load(path).interactions[0].response_body)["data"]
    assert data["security_token"] == "<REDACTED:token:1>"
    assert data["file_id"] == "f-1"


async def test_one_cassette_per_chat(tmp_path: Path) -> None:
    """chats/new and completions of one chat share a file; another chat and the model list don't."""
    rec = Recorder()
    with taddons.context(rec) as tctx:
        _configure(tctx, rec, tmp_path)
        new = json.dumps({"success": True, "data": {"id": CHAT}}).encode()
        await rec.response(_flow("/api/v2/chats/new", resp_content=new))
        f = _sse_flow()
        rec.responseheaders(f)
        f.response.stream(b"data: {}\n\n")
        await rec.response(f)
        await rec.response(_flow(f"/api/v2/chats/{CHAT2}", method="GET", body=b""))
        await rec.response(_flow("/api/models", method="GET", body=b""))
    assert _names(tmp_path) == ["t-chat-1.json", "t-chat-2.json", "t-other.json"]
    assert len(Cassette.load(tmp_path / "t-chat-1.json").interactions) == 2
    assert CHAT in Cassette.load(tmp_path / "t-chat-1.json").description


async def test_one_cassette_per_run(tmp_path: Path) -> None:
    """In run mode every recorded exchange goes to one <run>.json, in order."""
    rec = Recorder()
    with taddons.context(rec) as tctx:
        _configure(tctx, rec, tmp_path, qwen_cassette_mode="run")
        await rec.response(_flow("/api/models", method="GET", body=b""))
        await rec.response(_flow("/api/v2/chats/new"))
    c = _only_cassette(tmp_path)
    assert c.name == "t"
    assert [i.uri.split("/api")[1] for i in c.interactions] == ["/models", "/v2/chats/new"]


async def test_other_hosts_and_non_api_paths_are_left_alone(tmp_path: Path) -> None:
    """Flows to other hosts, or pages outside /api/, get no tee, no anticomp, no cassette."""
    rec = Recorder()
    with taddons.context(rec) as tctx:
        _configure(tctx, rec, tmp_path)
        other = _sse_flow(host="example.com", req_headers=((b"accept-encoding", b"gzip"),))
        rec.request(other)
        rec.responseheaders(other)
        assert other.request.headers["accept-encoding"] == "gzip"
        assert not other.response.stream
        await rec.response(other)
        page = _flow("/c/new-chat", method="GET", body=b"", content_type=b"text/html")
        await rec.response(page)
    assert _names(tmp_path) == []


async def test_record_all_and_host_list(tmp_path: Path) -> None:
    """qwen_record_all records non-API paths; a host matches its subdomains."""
    rec = Recorder()
    with taddons.context(rec) as tctx:
        _configure(tctx, rec, tmp_path, qwen_record_all=True, qwen_hosts="qwen.ai, example.org")
        await rec.response(_flow("/", method="GET", body=b"", host="chat.qwen.ai"))
        await rec.response(_flow("/x", method="GET", body=b"", host="example.org"))
        await rec.response(_flow("/x", method="GET", body=b"", host="example.com"))
    assert len(_only_cassette(tmp_path).interactions) == 2


async def test_recorded_hosts_are_asked_for_identity_encoding(tmp_path: Path) -> None:
    """The request hook sets Accept-Encoding: identity on recorded hosts (anticomp)."""
    rec = Recorder()
    with taddons.context(rec) as tctx:
        _configure(tctx, rec, tmp_path)
        f = _sse_flow(req_headers=((b"accept-encoding", b"gzip, br"),))
        rec.request(f)
    assert f.request.headers["accept-encoding"] == "identity"


async def test_compressed_stream_is_decoded(tmp_path: Path) -> None:
    """A gzip-encoded stream (server ignored anticomp) is decoded chunk by chunk."""
    body = b"".join(f'data: {{"n": {i}}}\n\n'.encode() for i in range(50))
    packed = gzip.compress(body)
    rec = Recorder()
    with taddons.context(rec) as tctx:
        _configure(tctx, rec, tmp_path)
        f = _sse_flow(resp_headers=((b"content-encoding", b"gzip"),))
        rec.responseheaders(f)
        for i in range(0, len(packed), 40):
            f.response.stream(packed[i : i + 40])
        await rec.response(f)
    (inter,) = _only_cassette(tmp_path).interactions
    assert inter.response_body.encode() == body
    assert inter.stream is not None and inter.stream.wire_encoding == "gzip"
    assert "content-encoding" not in {k.lower() for k in inter.response_headers}


async def test_shutdown_writes_open_streams_as_cut(tmp_path: Path) -> None:
    """done() (Ctrl-C) writes a stream still in progress with end 'error'."""
    rec = Recorder()
    with taddons.context(rec) as tctx:
        _configure(tctx, rec, tmp_path)
        f = _sse_flow()
        rec.responseheaders(f)
        f.response.stream(b'data: {"a": 1}\n\n')
        rec.done()
    (inter,) = _only_cassette(tmp_path).interactions
    assert inter.stream is not None and inter.stream.end == "error"
    assert "shut down" in (inter.stream.error or "")


async def test_failed_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash while replacing the file leaves the previous complete cassette and no temp file."""
    rec = Recorder()
    with taddons.context(rec) as tctx:
        _configure(tctx, rec, tmp_path, qwen_cassette_mode="run")
        await rec.response(_flow("/api/models", method="GET", body=b""))
        before = _read(tmp_path)

        def boom(src: str, dst: str) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(cassette_module.os, "replace", boom)
        await rec.response(_flow("/api/v2/chats/new"))
    assert _read(tmp_path) == before
    assert len(Cassette.load(tmp_path / "t.json").interactions) == 1
    assert _names(tmp_path) == ["t.json"]


async def test_each_write_replaces_the_whole_file(tmp_path: Path) -> None:
    """After every exchange the cassette on disk is complete and valid, never partial."""
    rec = Recorder()
    with taddons.context(rec) as tctx:
        _configure(tctx, rec, tmp_path, qwen_cassette_mode="run")
        for n in range(1, 4):
            await rec.response(_flow("/api/models", method="GET", body=b""))
            assert len(Cassette.load(tmp_path / "t.json").interactions) == n
    assert _names(tmp_path) == ["t.json"]


def test_sink_removes_temporaries_left_by_a_killed_run(tmp_path: Path) -> None:
    """A killed run's ``.<name>.<random>.tmp`` files are deleted when the next sink starts;
    cassettes and other files stay."""
    from recorder.addon import CassetteSink

    (tmp_path / ".run-chat-1.json.abc123.tmp").write_text("{partial")
    (tmp_path / ".run-other.json.x.tmp").write_text("")
    (tmp_path / "run-chat-1.json").write_text("{}")
    (tmp_path / "notes.tmp").write_text("mine")
    CassetteSink(tmp_path, "chat", "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.tmp", "run-chat-1.json"]
