"""Functional tests on vcrpy: the proxy's own upstream calls replayed from our cassettes.

The proxy talks to ``https://chat.qwen.ai`` as in production; vcrpy (``record_mode="none"``)
intercepts its aiohttp client and answers from a cassette assembled from ``cassettes/``, matching
requests with the same fingerprint the replay server uses. Nothing leaves the machine: vcrpy
refuses any request it has no recording for. vcrpy hands the whole body over at once, so these
tests check behaviour, not chunk boundaries (the replay-server tests do that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
import vcr
from aiohttp.test_utils import TestServer

from proxy.app import make_app
from proxy.config import Settings
from recorder.cassette import Cassette
from recorder.matching import fingerprint
from recorder.synthetic import SCENARIOS


def _qwen_match(r1: Any, r2: Any) -> None:
    fp1 = fingerprint(r1.method, r1.uri, r1.body)
    fp2 = fingerprint(r2.method, r2.uri, r2.body)
    assert fp1 == fp2, f"{fp1} != {fp2}"


def combined(cassettes_dir: Path, scenario: str, tmp_path: Path) -> Path:
    """One vcrpy cassette holding the model list and one scenario's flow."""
    models = Cassette.load(cassettes_dir / "models_list.json")
    flow = Cassette.load(cassettes_dir / f"{scenario}.json")
    merged = Cassette(
        name=f"vcr_{scenario}",
        description=f"models_list + {scenario}",
        provenance=flow.provenance,
        interactions=[*models.interactions, *flow.interactions],
    )
    return merged.save(tmp_path / f"vcr_{scenario}.json")


def recorder_for(path: Path) -> vcr.VCR:
    my_vcr = vcr.VCR(
        serializer="json",
        record_mode="none",
        ignore_localhost=True,  # the test client talks to the proxy on loopback
        match_on=["method", "host", "path", "qwen"],
    )
    my_vcr.register_matcher("qwen", _qwen_match)
    return my_vcr


SUCCESS = [sc for sc in SCENARIOS if sc.expected_status == 200 and sc.prompt]


@pytest.mark.parametrize("sc", SUCCESS, ids=lambda sc: sc.name)
@pytest.mark.parametrize("stream", [False, True])
async def test_proxy_answers_from_vcr_cassettes(
    sc: Any, stream: bool, cassettes_dir: Path, tmp_path: Path, aiohttp_server: Any
) -> None:
    """With vcrpy standing in for chat.qwen.ai, the SDK gets each scenario's exact answer."""
    path = combined(cassettes_dir, sc.name, tmp_path)
    with recorder_for(path).use_cassette(str(path)) as cassette:
        server: TestServer = await aiohttp_server(
            make_app(Settings(upstream_url="https://chat.qwen.ai"))
        )
        client = openai.AsyncOpenAI(
            base_url=str(server.make_url("/v1")), api_key="x", max_retries=0
        )
        messages = [{"role": "user", "content": sc.prompt}]
        if stream:
            content, reasoning = [], []
            async for chunk in await client.chat.completions.create(
                model=sc.openai_model, messages=messages, stream=True
            ):
                for choice in chunk.choices:
                    content.append(choice.delta.content or "")
                    reasoning.append(getattr(choice.delta, "reasoning_content", None) or "")
            got_content, got_reasoning = "".join(content), "".join(reasoning) or None
        else:
            done = await client.chat.completions.create(model=sc.openai_model, messages=messages)
            got_content = done.choices[0].message.content
            got_reasoning = getattr(done.choices[0].message, "reasoning_content", None)
        await client.close()
        assert got_content == sc.expected_content
        assert got_reasoning == sc.expected_reasoning
        assert cassette.play_count == 3  # models, chats/new, completions: all from the cassette
