"""The replay server's stand-ins for media (task-status sequences, the object store) and the
cassette format's base64 bodies (docs/cassette-format.md)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from aiohttp.test_utils import TestClient, TestServer

from recorder.cassette import CassetteError, Interaction, validate
from recorder.replay import UPLOADS_KEY, make_replay_app
from recorder.synthetic_media import BY_NAME, build, image_bytes


async def _client(*names: str) -> TestClient[object, object]:
    app = make_replay_app([build(BY_NAME[n]) for n in names], speed=0)
    client: TestClient[object, object] = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_task_status_advances_then_repeats_the_last() -> None:
    """Successive GETs of one task path answer pending, running, success, success…"""
    client = await _client("media_t2v")
    try:
        inter = next(i for i in build(BY_NAME["media_t2v"]).interactions if "tasks" in i.uri)
        path = inter.uri.split("chat.qwen.ai", 1)[1]
        states = []
        for _ in range(5):
            async with client.get(path) as r:
                states.append((await r.json())["task_status"])
        assert states == ["pending", "running", "success", "success", "success"]
    finally:
        await client.close()


async def test_object_store_keeps_signed_puts_only() -> None:
    """Unsigned PUTs are 403, a wrong Content-MD5 400; a signed one is kept and served back."""
    client = await _client("media_t2i")
    body = b"\x89PNG\r\n\x1a\nrest"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    signed = {"Authorization": "OSS STS.k:sig", "x-oss-security-token": "t"}
    try:
        async with client.put("/b/u/f.png", data=body) as r:
            assert r.status == 403
        async with client.put("/b/u/f.png", data=body, headers={**signed, "Content-MD5": "x"}) as r:
            assert r.status == 400
        headers = {**signed, "Content-MD5": md5, "Content-Type": "image/png"}
        async with client.put("/b/u/f.png", data=body, headers=headers) as r:
            assert r.status == 200 and r.headers["ETag"]
        (stored,) = client.server.app[UPLOADS_KEY]
        assert (stored.path, stored.body) == ("/b/u/f.png", body)
        async with client.get("/b/u/f.png") as r:
            assert (r.status, await r.read()) == (200, body)
    finally:
        await client.close()


async def test_binary_bodies_are_served_as_bytes() -> None:
    """A base64-stored image is served as its decoded bytes with its content type."""
    client = await _client("media_t2i")
    inter = build(BY_NAME["media_t2i"]).interactions[-1]
    try:
        async with client.get(inter.uri.split("cdn.qwenlm.ai", 1)[1]) as r:
            assert r.headers["Content-Type"] == "image/png"
            assert await r.read() == image_bytes("media_t2i")
    finally:
        await client.close()


def test_base64_bodies_are_validated_on_decoded_bytes() -> None:
    """Chunk lengths count decoded bytes; a body that is not base64 is refused."""
    cassette = build(BY_NAME["media_t2i"]).to_dict()
    resp = cassette["interactions"][-1]["response"]
    n = len(base64.b64decode(resp["body"]["string"]))
    resp["x_stream"] = {"t_headers_s": 0.0, "chunks": [[0.0, n - 1], [0.01, 1]], "end": "eof"}
    validate(cassette)
    resp["x_stream"]["chunks"] = [[0.0, n + 1]]
    with pytest.raises(CassetteError, match="lengths sum"):
        validate(cassette)
    del resp["x_stream"]
    resp["body"]["string"] = "not base64!"
    with pytest.raises(CassetteError, match="not valid base64"):
        validate(cassette)
    restored = Interaction.from_dict(build(BY_NAME["media_t2i"]).to_dict()["interactions"][-1])
    assert restored.body_encoding == "base64" and restored.body_bytes() == image_bytes("media_t2i")
