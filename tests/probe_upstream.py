"""Recordings for the agent and profile probes, built from what OUR gateway sends upstream.

The tool prompt, the flattened history and the Anthropic/Responses front doors decide the text
chat.qwen.ai receives for an agent probe; writing those texts into cassettes by hand would
drift from the gateway's renderer. Instead :func:`agent_probe_cassettes` sends each probe
through our gateway in front of the replay server, reads the upstream request the gateway made
(the replay server's request log), and builds the answering cassette with
``recorder.synthetic_probes.build_agent_probe``: the upstream text is always the renderer's own
output, the answer is the model's (tool calls in Qwen's ``<tool_call>`` markup).

Probes the existing recordings already answer (the gateway sent a text a cassette matches) get
no new cassette.

The cassettes are also committed into ``cassettes/`` (``agent_probe_*.json``), so
``qwen-proxy serve --offline`` answers the agent and profile probes too; regenerate them after a
change to the gateway's prompt rendering with::

    .venv/bin/python tests/probe_upstream.py

``tests/test_conformance_proxy.py`` fails when the committed files differ from what the gateway
sends now.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.app import make_app
from proxy.config import Settings
from proxy.conformance.agents import (
    anthropic_body,
    anthropic_roundtrip_messages,
    anthropic_tool,
    responses_body,
    responses_roundtrip_input,
    responses_tool,
    roundtrip_messages,
    tool_chat_body,
)
from proxy.conformance.probes import ECHO_EN_PROMPT, PARALLEL_PROMPT, TOOL_PROMPT
from proxy.conformance.profiles import PROFILES
from recorder.cassette import Cassette, load_all
from recorder.matching import COMPLETIONS_PATH, fingerprint
from recorder.replay import REQUESTS_KEY, make_replay_app
from recorder.synthetic_probes import UpstreamAsk, build_agent_probe

Factory = Callable[[web.Application], Awaitable[TestServer]]
MODEL = "qwen3-max"
CASSETTES = Path(__file__).resolve().parents[1] / "cassettes"
PREFIX = "agent_probe_"
TOOL = "tests/probe_upstream.py"
"""The provenance ``tool`` of these cassettes (not ``qwen-record synth``: they need the gateway)."""

_PROFILE_KEYS = {
    ("cherry-studio", "topic"): "cherry_topic",
    ("open-webui", "title"): "owui_title",
    ("open-webui", "tags"): "owui_tags",
    ("cline", "task"): "cline_task",
    ("claude-code", "quota"): "claude_quota",
    ("claude-code", "turn"): "tool_call",
    ("codex-cli", "turn"): "echo_en",
}


def agent_probe_requests() -> list[tuple[str, str, dict[str, Any], dict[str, str]]]:
    """``(answer key, path under /v1, body, headers)`` of every probe whose upstream text our
    gateway renders itself (tools, /messages, /responses, client profiles)."""
    user = [{"role": "user", "content": TOOL_PROMPT}]
    anth = {"anthropic-version": "2023-06-01"}
    out: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
        ("tool_call", "/chat/completions", tool_chat_body(MODEL, user, stream=False), {}),
        (
            "tool_parallel",
            "/chat/completions",
            tool_chat_body(MODEL, [{"role": "user", "content": PARALLEL_PROMPT}], stream=True),
            {},
        ),
        (
            "tool_roundtrip",
            "/chat/completions",
            tool_chat_body(MODEL, roundtrip_messages(), stream=False),
            {},
        ),
        ("echo_en", "/messages", anthropic_body(MODEL, ECHO_EN_PROMPT, stream=False), anth),
        (
            "tool_call",
            "/messages",
            anthropic_body(MODEL, TOOL_PROMPT, stream=True, tools=True),
            anth,
        ),
        (
            "tool_call",
            "/messages",
            anthropic_body(MODEL, TOOL_PROMPT, stream=False, tools=True),
            anth,
        ),
        (
            "tool_roundtrip",
            "/messages",
            {
                "model": MODEL,
                "max_tokens": 1024,
                "tools": [anthropic_tool()],
                "messages": anthropic_roundtrip_messages(),
                "stream": False,
            },
            anth,
        ),
        ("echo_en", "/responses", responses_body(MODEL, ECHO_EN_PROMPT, stream=False), {}),
        (
            "tool_call",
            "/responses",
            responses_body(MODEL, TOOL_PROMPT, stream=False, tools=True),
            {},
        ),
        (
            "tool_roundtrip",
            "/responses",
            {
                "model": MODEL,
                "input": responses_roundtrip_input(),
                "tools": [responses_tool()],
                "stream": False,
            },
            {},
        ),
        (
            "tool_call",
            "/responses",
            responses_body(MODEL, TOOL_PROMPT, stream=True, tools=True),
            {},
        ),
    ]
    for profile in PROFILES:
        for step in profile.steps(MODEL):
            key = _PROFILE_KEYS.get((profile.name, step.name))
            if key is not None:
                out.append((key, step.path, step.body, dict(step.headers)))
    return out


async def agent_probe_cassettes(
    aiohttp_server: Factory, cassettes: list[Cassette], key: str
) -> list[Cassette]:
    """Send every agent/profile probe through our gateway (API key ``key``) in front of a
    replay server playing ``cassettes``; return new cassettes answering each upstream request
    that ``cassettes`` do not match. A probe the gateway refuses (no such endpoint yet) makes
    no upstream request and gets no cassette."""
    replay = await aiohttp_server(make_replay_app(cassettes, speed=0))
    upstream = str(replay.make_url("")).rstrip("/")
    gateway = await aiohttp_server(make_app(Settings(upstream_url=upstream, api_keys=[key])))
    log = replay.app[REQUESTS_KEY]
    built: dict[tuple[str, str, bool, str], Cassette] = {}
    async with aiohttp.ClientSession() as session:
        for answer, path, body, headers in agent_probe_requests():
            seen = len(log)
            url = str(gateway.make_url("/v1" + path))
            sent = {
                "Authorization": f"Bearer {key}",
                "x-api-key": key,
                "Content-Type": "application/json",
                **headers,
            }
            async with session.post(url, data=json.dumps(body), headers=sent) as resp:
                await resp.read()
            for request in log[seen:]:
                fp = fingerprint(request.method, request.path_qs, request.body)
                if request.matched is not None or not fp["path"].endswith(COMPLETIONS_PATH):
                    continue
                ask = UpstreamAsk(
                    fp["model"], fp["chat_type"], bool(fp["thinking_enabled"]), fp["text"]
                )
                ident = (ask.model, ask.chat_type, ask.thinking, ask.text)
                if ident not in built:
                    name = f"{PREFIX}{answer}_{len(built)}"
                    c = build_agent_probe(answer, ask, name=name)
                    c.provenance = dataclasses.replace(c.provenance, tool=TOOL)
                    built[ident] = c
                break
    await gateway.close()
    await replay.close()
    return list(built.values())


def committed() -> list[Cassette]:
    """The ``agent_probe_*.json`` cassettes in ``cassettes/``."""
    return load_all(sorted(CASSETTES.glob(f"{PREFIX}*.json")))


def base_cassettes() -> list[Cassette]:
    """``cassettes/`` without the agent probe answers (what a capture starts from)."""
    return [c for c in load_all([CASSETTES]) if not c.name.startswith(PREFIX)]


async def _write() -> list[Path]:
    servers: list[TestServer] = []

    async def factory(app: web.Application) -> TestServer:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    try:
        built = await agent_probe_cassettes(factory, base_cassettes(), "sk-capture")
    finally:
        for server in servers:
            await server.close()
    for stale in CASSETTES.glob(f"{PREFIX}*.json"):
        stale.unlink()
    return [c.save(CASSETTES / f"{c.name}.json") for c in built]


if __name__ == "__main__":
    for path in asyncio.run(_write()):
        print(path, file=sys.stdout)
