"""Replay that helps when it misses: the closest recording by prompt similarity, a 404 with the
differing fields and a short prompt diff (no URL), a built-in model list so an imported capture
replays alone, and ``qwen-record list --full`` / ``--json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import openai
import pytest
from click.testing import CliRunner
from helpers import CASSETTES_DIR, ServerFactory, astream, cassettes, error_object

from proxy.app import make_app
from proxy.config import Settings
from recorder.cassette import load_all
from recorder.cli import main
from recorder.importers import build_cassette, import_http_pair
from recorder.matching import Index, Miss, fingerprint, prompt_diff, similarity
from recorder.redact import Redactor
from recorder.replay import default_models, make_replay_app

COMPLETIONS = "/api/v2/chat/completions"


def _body(text: str, model: str = "qwen3-max") -> str:
    return json.dumps(
        {
            "model": model,
            "messages": [
                {"content": text, "chat_type": "t2t", "feature_config": {"thinking_enabled": False}}
            ],
        }
    )


def test_closest_is_chosen_by_prompt_not_load_order() -> None:
    """Every miss used to name the first cassette; now the most alike prompt wins."""
    index = Index(cassettes())
    for prompt, expected in (
        ("Say hello in two short sentences.", "t2t_answer"),
        ("What is 17 * 24? Think step by step.", "think_answer"),
        ("Name four primary colors.", "thinking_summary"),
        ("用一句话介绍你自己。", "chinese_emoji"),
    ):
        miss = index.find(fingerprint("POST", COMPLETIONS, _body(prompt)))
        assert isinstance(miss, Miss)
        assert miss.closest is not None and miss.closest.cassette == expected, prompt


def test_same_prompt_other_model_is_closest_and_names_the_field() -> None:
    """A recorded prompt asked of another model: that recording, differing only in model."""
    miss = Index(cassettes()).find(
        fingerprint("POST", COMPLETIONS, _body("Say hello in one short sentence.", "qwen9"))
    )
    assert isinstance(miss, Miss) and miss.closest is not None
    assert miss.closest.cassette == "t2t_answer"
    assert miss.differs == [("model", "qwen3-max", "qwen9")]
    assert miss.prompt_diff is None
    assert "model (recorded 'qwen3-max', received 'qwen9')" in miss.message()


def test_prompt_diff_is_short_and_marks_the_change() -> None:
    """The diff keeps a little context and marks removals and additions."""
    a = "Please summarise the following report about river pollution in 2024. " * 3
    b = a.replace("2024", "2025", 1)
    d = prompt_diff(a, b)
    assert "[-2024-]{+2025+}" in d
    assert len(d) <= 240
    assert similarity(a, b) > 0.9 > similarity(a, "something else entirely")


async def test_gateway_404_shows_field_and_prompt_diff_but_no_url(
    aiohttp_server: ServerFactory,
) -> None:
    """Through the gateway the SDK gets a 404 replay_miss naming the differing field and a
    prompt diff; neither the replay server's address nor the recorded upstream URL appears."""
    replay = await aiohttp_server(make_replay_app(list(cassettes()), speed=0))
    upstream = str(replay.make_url("")).rstrip("/")
    proxy = await aiohttp_server(make_app(Settings(upstream_url=upstream)))
    client = openai.AsyncOpenAI(base_url=str(proxy.make_url("/v1")), api_key="test", max_retries=0)
    async with client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(
                model="qwen3-max",
                messages=[{"role": "user", "content": "Say hello in two short sentences."}],
            )
    message = error_object(info.value)["message"]
    assert "t2t_answer" in message and "text (the prompt)" in message
    assert "Prompt diff" in message and "{+two+}" in message
    for leak in (upstream, "127.0.0.1", "chat.qwen.ai/api", "chat_id="):
        assert leak not in message


def test_default_models_only_when_the_cassettes_hold_none() -> None:
    """A model list in the cassettes wins; otherwise the models the requests name."""
    assert default_models(cassettes()) is None
    only_chat = [c for c in cassettes() if c.name == "think_answer"]
    models = json.loads(default_models(only_chat) or b"{}")
    (entry,) = models["data"]
    assert entry["id"] == "qwen3-max"
    assert entry["info"]["meta"]["abilities"]["thinking"] == 1
    assert "t2t" in entry["info"]["meta"]["chat_type"]


async def test_replay_serves_and_logs_the_default_model_list(
    aiohttp_client, caplog: pytest.LogCaptureFixture
) -> None:
    """The replay server answers /api/models from the default and says so in its log."""
    caplog.set_level(logging.INFO, logger="recorder.replay")
    only_chat = [c for c in cassettes() if c.name == "t2t_answer"]
    client = await aiohttp_client(make_replay_app(only_chat))
    assert "built-in default" in caplog.text
    resp = await client.get("/api/models")
    assert resp.status == 200
    assert [m["id"] for m in (await resp.json())["data"]] == ["qwen3-max"]
    assert "/api/models -> built-in default model list" in caplog.text


async def test_imported_capture_replays_alone(
    samples_dir: Path, tmp_path: Path, aiohttp_server: ServerFactory
) -> None:
    """The real capture, imported, is the only cassette: the gateway lists its model and the
    SDK gets the captured answer."""
    req = samples_dir / "request_stream_t2t_logged_in_2025-10-26.http"
    sse = samples_dir / "sse_t2t_answer_no_thinking_2025-10-26.txt"
    inter = import_http_pair(req, sse, redactor=Redactor())
    cassette = build_cassette(
        name="captured", description="capture", interactions=[inter], sources=[req, sse]
    )
    replay = await aiohttp_server(make_replay_app([cassette], speed=0))
    upstream = str(replay.make_url("")).rstrip("/")
    proxy = await aiohttp_server(make_app(Settings(upstream_url=upstream)))
    client = openai.AsyncOpenAI(base_url=str(proxy.make_url("/v1")), api_key="test", max_retries=0)
    async with client:
        listed = [m.id async for m in client.models.list()]
        assert "qwen3-vl-plus" in listed
        out = await astream(client, "qwen3-vl-plus", "explain law to an alien")
    assert out.error is None
    assert len(out.content) > 1000


def test_list_full_and_json(tmp_path: Path) -> None:
    """--full prints whole prompts, --json objects with the same fields."""
    runner = CliRunner()
    path = str(CASSETTES_DIR / "probe_echo_en.json")
    prompt = next(
        fingerprint(i.method, i.uri, i.request_body)["text"]
        for c in load_all([CASSETTES_DIR / "probe_echo_en.json"])
        for i in c.interactions
        if "completions" in i.uri
    )
    assert len(prompt) > 40
    res = runner.invoke(main, ["list", path])
    assert res.exit_code == 0 and prompt not in res.output
    res = runner.invoke(main, ["list", "--full", path])
    assert res.exit_code == 0 and prompt in res.output.split("\t")
    res = runner.invoke(main, ["list", "--json", path])
    rows = json.loads(res.output)
    assert [r["prompt"] for r in rows] == [None, prompt]
    assert rows[1]["chunks"] > 1 and rows[1]["model"] == "qwen3-max"
    assert set(rows[0]) == {
        "cassette",
        "provenance",
        "method",
        "path",
        "model",
        "chat_type",
        "prompt",
        "status",
        "content_type",
        "chunks",
    }
