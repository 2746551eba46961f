"""An upload that cannot reach the object store says so: the error names chat.qwen.ai's object
store, not the chat site (which may be answering fine), and never quotes the signed URL."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from proxy.config import Settings
from proxy.errors import UpstreamUnavailableError
from proxy.qwen.client import QwenClient, upstream_connector
from proxy.qwen.files import OssPut


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_refused_upload_names_the_object_store() -> None:
    port = _closed_port()
    put = OssPut(
        f"http://127.0.0.1:{port}/bucket/key.png?Signature=SECRETSIG", {"x-oss-security-token": "t"}
    )
    async with aiohttp.ClientSession(connector=upstream_connector()) as session:
        client = QwenClient(session, Settings(upstream_url="http://127.0.0.1:9"))
        with pytest.raises(UpstreamUnavailableError) as info:
            await client.put_object(put, b"png")
    message = info.value.message
    assert message.startswith("could not reach chat.qwen.ai's object store: ")
    assert "127.0.0.1:9" not in message and "SECRETSIG" not in message
