"""The harness's probes and what answers them: the probe cassettes and OpenAI-side matching.

The chat.qwen.ai-side probe cassettes (``recorder/synthetic_probes.py``) must carry the harness's
exact prompts (``proxy/conformance/probes.py``), stay distinct from the other scenarios, follow
the v2 flow, and be written into ``cassettes/`` byte for byte (``tests/test_synthetic.py`` checks
the bytes). The replay fingerprint of ``POST /v1/chat/completions`` and
``POST /v1/images/generations`` lets cassettes stand in for a whole OpenAI-side proxy.
"""

from __future__ import annotations

import json

import pytest

from proxy.conformance import probes
from recorder import synthetic_probes as sp
from recorder.cassette import Cassette
from recorder.matching import Index, fingerprint
from recorder.synthetic import SCENARIOS, build_everything


def test_prompts_agree_with_the_harness() -> None:
    """recorder repeats the harness's prompts (it may not import proxy); both must agree."""
    for name in (
        "ECHO_ZH_SENTENCE",
        "ECHO_ZH_PROMPT",
        "ECHO_EN_SENTENCE",
        "ECHO_EN_PROMPT",
        "STREAM_PROMPT",
        "THINK_PROMPT",
        "IMAGE_PROMPT",
    ):
        assert getattr(sp, name) == getattr(probes, name), name


def test_probe_prompts_are_new() -> None:
    """No probe prompt is also the prompt of another synthetic scenario."""
    others = {sc.prompt for sc in SCENARIOS}
    mine = [sc.prompt for sc in (*sp.PROBE_SCENARIOS, *sp.IMAGE_PROBE_SCENARIOS)]
    assert len(set(mine)) == len(mine)
    assert not others & set(mine)


def test_probe_cassettes_are_part_of_the_synthetic_set() -> None:
    """build_everything() (what `qwen-record synth` writes) includes every text probe cassette."""
    names = [c.name for c in build_everything()]
    assert [sc.name for sc in sp.PROBE_SCENARIOS] == [n for n in names if n.startswith("probe_")]


@pytest.mark.parametrize(
    "cassette",
    [*sp.build_all(), *sp.build_image_probes()],
    ids=lambda c: c.name,
)
def test_probe_cassettes_follow_the_v2_flow(cassette: Cassette) -> None:
    """chats/new then completions with the probe prompt, SSE without [DONE], honest provenance."""
    sc = next(
        s for s in (*sp.PROBE_SCENARIOS, *sp.IMAGE_PROBE_SCENARIOS) if s.name == cassette.name
    )
    assert cassette.provenance.kind == "synthetic"
    assert cassette.provenance.protocol_sections == list(sc.protocol_sections)
    assert "synthetic" in cassette.description.lower()
    new, comp = cassette.interactions
    assert new.uri.endswith("/api/v2/chats/new")
    assert json.loads(new.request_body or "")["chat_type"] == sc.chat_type
    body = json.loads(comp.request_body or "")
    (msg,) = body["messages"]
    assert (msg["content"], msg["chat_type"], body["model"]) == (sc.prompt, sc.chat_type, sc.model)
    assert msg["feature_config"]["thinking_enabled"] is sc.thinking
    assert body["stream"] is True and body["incremental_output"] is True
    assert comp.stream is not None and comp.stream.end == "eof"
    assert "[DONE]" not in comp.response_body
    frames = [json.loads(p[len("data: ") :]) for p in comp.response_body.split("\n\n") if p]
    answer = "".join(
        f["choices"][0]["delta"]["content"]
        for f in frames
        if "choices" in f and f["choices"][0]["delta"].get("phase") in ("answer", "image_gen")
    )
    assert answer == sc.expected_content


def test_echo_zh_chunks_split_characters() -> None:
    """The Chinese echo answer arrives with chunk boundaries inside 3-byte characters."""
    comp = sp.build(sp.PROBE_SCENARIOS[1]).interactions[1]
    body = comp.body_bytes()
    ends, pos = [], 0
    for _, chunk in comp.iter_chunks():
        pos += len(chunk)
        ends.append(pos)
    assert any(body[e] & 0xC0 == 0x80 for e in ends[:-1])


def test_openai_chat_fingerprint() -> None:
    """POST /v1/chat/completions matches on model, stream and the last user message's text."""
    body = {
        "model": "m",
        "stream": True,
        "temperature": 0.3,
        "messages": [
            {"role": "system", "content": "x" * 1000},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "last"}]},
        ],
    }
    fp = fingerprint("POST", "http://h/v1/chat/completions", json.dumps(body))
    assert fp == {
        "method": "POST",
        "path": "/v1/chat/completions",
        "model": "m",
        "stream": True,
        "text": "last",
    }
    no_stream = fingerprint("POST", "/v1/chat/completions", b'{"model": "m", "messages": []}')
    assert (no_stream["stream"], no_stream["text"]) == (None, None)
    assert fingerprint("POST", "/v1/chat/completions", b"{not json") == {
        "method": "POST",
        "path": "/v1/chat/completions",
    }


def test_openai_images_fingerprint_and_index() -> None:
    """POST /v1/images/generations matches on model and prompt; other fields are ignored."""
    a = fingerprint("POST", "/v1/images/generations", '{"model": "m", "prompt": "p", "n": 1}')
    assert a == {"method": "POST", "path": "/v1/images/generations", "model": "m", "prompt": "p"}
    b = fingerprint("POST", "/v1/images/generations/", '{"prompt": "p", "model": "m", "size": "1"}')
    assert a == b
    assert Index([]).find(a).__class__.__name__ == "Miss"
