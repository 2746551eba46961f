"""Client profiles: the request shapes and call sequences of real clients, sent as they send them.

A profile is a sequence of steps, each one request with the client's headers and body fields
and a judgement of the answer *as that client reads it*. Each profile is one check
(``profile.<name>``); a step that fails names the step. A profile whose endpoint the target
lacks (HTTP 404/405) is skipped with the reason, so by default every profile the target can
serve runs; ``--profile NAME`` runs only the named ones, and one of those that the target
cannot serve fails (``not_offered``): the question asked could not be answered.

Every header, field and call below is taken from the client's public source as summarised in
docs/clients.md (a section per client, with the repository path and commit of each fact). The
probe texts are the harness's own (so the recordings that answer the plain probes answer the
profiles too) except where the client's call has its own shape: Open WebUI's title and tag
tasks, Cherry Studio's topic naming, Cline's system prompt, Claude Code's quota probe.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from proxy.conformance import agents
from proxy.conformance.checks import (
    CheckSpec,
    Context,
    Outcome,
    _duplicates_failure,
    _error_failure,
    _failed,
    _http_failure,
    _passed,
    _skipped,
    _stream_failure,
)
from proxy.conformance.contract import violations
from proxy.conformance.diagnosis import (
    classify_echo,
    find_duplicated_deltas,
    resent_fragments,
    strip_think_blocks,
)
from proxy.conformance.probes import (
    ANTHROPIC_VERSION,
    ECHO_EN_PROMPT,
    ECHO_EN_SENTENCE,
    ECHO_ZH_PROMPT,
    ECHO_ZH_SENTENCE,
    TOOL_PROMPT,
    Exchange,
    Probe,
)

__all__ = [
    "CHERRY_TOPIC_SYSTEM",
    "CLAUDE_CODE_SYSTEM",
    "CLINE_SYSTEM",
    "CLINE_TASK",
    "OPEN_WEBUI_TAGS_TASK",
    "OPEN_WEBUI_TITLE_TASK",
    "PROFILES",
    "PROFILE_CHECKS",
    "Profile",
    "Step",
    "profile_names",
]


@dataclass(frozen=True)
class Step:
    """One call of a client: ``name`` (``chat``, ``title``…), the request (``path`` relative to
    the base URL, ``body``, extra ``headers``, ``auth`` mode) and how the answer is read:
    ``reads`` is one of ``openai_stream``, ``openai_json``, ``anthropic_json``,
    ``anthropic_stream``, ``count_tokens``, ``responses_stream``; ``expect`` a sentence the
    answer must repeat (``None``: any non-empty text); ``usage`` whether the client asked for
    the usage chunk; ``json_task`` the key a background task's JSON answer carries;
    ``xml_tools`` whether tools were offered as XML in the system prompt (Cline), so the answer
    must carry an XML tool block as text, untouched."""

    name: str
    path: str
    body: dict[str, Any]
    reads: str
    headers: tuple[tuple[str, str], ...] = ()
    auth: Literal["key", "x-api-key"] = "key"
    expect: str | None = None
    usage: bool = False
    xml_tools: bool = False
    json_task: str | None = None
    splits_think: bool = False
    """The client takes ``<think>…</think>`` out of the content (Cherry Studio, Open WebUI);
    the others show it verbatim (docs/clients.md §2-§5)."""


@dataclass(frozen=True)
class Profile:
    """A client: ``name`` (the ``--profile`` value), ``title``, ``source`` (where its shapes
    come from) and ``steps`` built for the target's text model."""

    name: str
    title: str
    source: str
    steps: Callable[[str], tuple[Step, ...]]


# -- the texts of client-specific calls ----------------------------------------------------------

OPEN_WEBUI_TITLE_TASK = (
    "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n"
    "### Guidelines:\n- The title should clearly represent the main theme or subject of the "
    "conversation.\n- Write the title in the chat's primary language.\n### Output:\n"
    'JSON format: { "title": "your concise title here" }\n### Chat History:\n<chat_history>\n'
    f"USER: {ECHO_EN_PROMPT}\nASSISTANT: {ECHO_EN_SENTENCE}\n</chat_history>"
)
"""Open WebUI's title task (backend/open_webui/routers/tasks.py @884bb3f; docs/clients.md §3)."""
OPEN_WEBUI_TAGS_TASK = (
    "### Task:\nGenerate 1-3 broad tags categorizing the main themes of the chat history, "
    "along with 1-3 more specific subtopic tags.\n### Output:\nJSON format: "
    '{ "tags": ["tag1", "tag2", "tag3"] }\n### Chat History:\n<chat_history>\n'
    f"USER: {ECHO_EN_PROMPT}\nASSISTANT: {ECHO_EN_SENTENCE}\n</chat_history>"
)
"""Open WebUI's tags task (same source)."""
CHERRY_TOPIC_SYSTEM = (
    "Summarize the conversation into a title in the conversation's language, at most 10 "
    "characters, without punctuation or quotes. Output the title only."
)
"""Cherry Studio's topic naming prompt (src/renderer/src/services/ApiService.ts;
docs/clients.md §2), the wording shortened for the probe."""
CLINE_SYSTEM = (
    "You are Cline, a highly skilled software engineer.\n\nTOOL USE\n\nYou have access to a "
    "set of tools. Tool use is formatted using XML-style tags:\n\n<read_file>\n<path>File path "
    "here</path>\n</read_file>\n\nAlways use one tool per message."
)
"""The start of Cline's XML-tools system prompt for models without native tool calling
(src/core/prompts/system-prompt; docs/clients.md §5), shortened for the probe."""
CLINE_TASK = "<task>\nConformance probe: show me the README of this project.\n</task>"
CLAUDE_CODE_SYSTEM = "You are Claude Code, Anthropic's official CLI for Claude."
"""The first system block Claude Code sends (docs/clients.md §6)."""

_STAINLESS_JS = (
    ("X-Stainless-Lang", "js"),
    ("X-Stainless-Package-Version", "4.104.0"),
    ("X-Stainless-OS", "MacOS"),
    ("X-Stainless-Arch", "arm64"),
    ("X-Stainless-Runtime", "browser:chrome"),
    ("X-Stainless-Runtime-Version", "138.0.0"),
    ("X-Stainless-Retry-Count", "0"),
)
_STAINLESS_PY = (
    ("User-Agent", "OpenAI/Python 1.109.1"),
    ("X-Stainless-Lang", "python"),
    ("X-Stainless-Package-Version", "1.109.1"),
    ("X-Stainless-OS", "Linux"),
    ("X-Stainless-Arch", "x64"),
    ("X-Stainless-Runtime", "CPython"),
    ("X-Stainless-Runtime-Version", "3.12.3"),
    ("X-Stainless-Async", "false"),
    ("x-stainless-retry-count", "0"),
    ("x-stainless-read-timeout", "600"),
)


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def _cherry(model: str) -> tuple[Step, ...]:
    headers = (
        *_STAINLESS_JS,
        ("User-Agent", "CherryStudio/1.9.6"),
        ("HTTP-Referer", "https://cherry-ai.com"),
        ("X-Title", "Cherry Studio"),
        ("Accept", "application/json"),
    )
    chat = {
        "model": model,
        "messages": _user(ECHO_ZH_PROMPT),
        "stream": True,
        "stream_options": {"include_usage": True},
        "enable_thinking": False,
    }
    history = f"user: {ECHO_ZH_PROMPT}\nassistant: {ECHO_ZH_SENTENCE}"
    topic = {
        "model": model,
        "messages": [
            {"role": "system", "content": CHERRY_TOPIC_SYSTEM},
            {"role": "user", "content": history},
        ],
        "stream": False,
    }
    return (
        Step(
            "chat",
            "/chat/completions",
            chat,
            "openai_stream",
            headers,
            expect=ECHO_ZH_SENTENCE,
            usage=True,
            splits_think=True,
        ),
        Step("topic", "/chat/completions", topic, "openai_json", headers),
    )


def _open_webui(model: str) -> tuple[Step, ...]:
    headers = (("User-Agent", "Python/3.11 aiohttp/3.12.15"),)
    chat = {"model": model, "messages": _user(ECHO_EN_PROMPT), "stream": True}
    title = {
        "model": model,
        "messages": _user(OPEN_WEBUI_TITLE_TASK),
        "stream": False,
        "max_tokens": 1000,
    }
    tags = {"model": model, "messages": _user(OPEN_WEBUI_TAGS_TASK), "stream": False}
    return (
        Step(
            "chat",
            "/chat/completions",
            chat,
            "openai_stream",
            headers,
            expect=ECHO_EN_SENTENCE,
            splits_think=True,
        ),
        Step("title", "/chat/completions", title, "openai_json", headers, json_task="title"),
        Step("tags", "/chat/completions", tags, "openai_json", headers, json_task="tags"),
    )


def _langchain(model: str) -> tuple[Step, ...]:
    invoke = {
        "model": model,
        "messages": _user(ECHO_EN_PROMPT),
        "stream": False,
        "max_completion_tokens": 512,
    }
    stream = {
        "model": model,
        "messages": _user(ECHO_EN_PROMPT),
        "stream": True,
        "max_completion_tokens": 512,
    }
    return (
        Step(
            "invoke",
            "/chat/completions",
            invoke,
            "openai_json",
            _STAINLESS_PY,
            expect=ECHO_EN_SENTENCE,
        ),
        Step(
            "stream",
            "/chat/completions",
            stream,
            "openai_stream",
            _STAINLESS_PY,
            expect=ECHO_EN_SENTENCE,
        ),
    )


def _cline(model: str) -> tuple[Step, ...]:
    headers = (*_STAINLESS_JS[:4], ("X-Stainless-Runtime", "node"), ("User-Agent", "Cline/3.38.0"))
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": CLINE_SYSTEM},
            {"role": "user", "content": [{"type": "text", "text": CLINE_TASK}]},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return (
        Step(
            "task",
            "/chat/completions",
            body,
            "openai_stream",
            headers,
            usage=True,
            xml_tools=True,
        ),
    )


def _claude_code(model: str) -> tuple[Step, ...]:
    headers = (
        ("anthropic-version", ANTHROPIC_VERSION),
        (
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14,"
            "fine-grained-tool-streaming-2025-05-14",
        ),
        ("anthropic-dangerous-direct-browser-access", "true"),
        ("x-app", "cli"),
        ("User-Agent", "claude-cli/2.0.14 (external, cli)"),
        ("X-Stainless-Lang", "js"),
        ("X-Stainless-Runtime", "node"),
    )
    quota = {"model": model, "max_tokens": 1, "messages": _user("quota")}
    system = [{"type": "text", "text": CLAUDE_CODE_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    tool = dict(agents.anthropic_tool(), cache_control={"type": "ephemeral"})
    count = {"model": model, "system": system, "tools": [tool], "messages": _user(TOOL_PROMPT)}
    turn = {
        "model": model,
        "max_tokens": 32000,
        "system": system,
        "tools": [tool],
        "metadata": {"user_id": "user_conformance-probe_account__session_0"},
        "messages": [{"role": "user", "content": [{"type": "text", "text": TOOL_PROMPT}]}],
        "stream": True,
    }
    return (
        Step("quota", "/messages?beta=true", quota, "anthropic_json", headers, "x-api-key"),
        Step(
            "count_tokens",
            "/messages/count_tokens?beta=true",
            count,
            "count_tokens",
            headers,
            "x-api-key",
        ),
        Step("turn", "/messages?beta=true", turn, "anthropic_stream", headers, "x-api-key"),
    )


def _codex(model: str) -> tuple[Step, ...]:
    headers = (
        ("originator", "codex_cli_rs"),
        ("User-Agent", "codex_cli_rs/0.50.0 (Debian 12; x86_64) xterm-256color"),
        ("session_id", "0199a213-81c0-7800-8aa1-bbab2a035a53"),
        ("Accept", "text/event-stream"),
    )
    shell = {
        "type": "function",
        "name": "shell",
        "description": "Runs a shell command and returns its output.",
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "array", "items": {"type": "string"}}},
            "required": ["command"],
            "additionalProperties": False,
        },
    }
    body = {
        "model": model,
        "instructions": "You are Codex, based on GPT-5. You are running as a coding agent.",
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": ECHO_EN_PROMPT}],
            }
        ],
        "tools": [shell],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": None,
        "store": False,
        "stream": True,
        "include": [],
        "prompt_cache_key": "0199a213-81c0-7800-8aa1-bbab2a035a53",
    }
    return (Step("turn", "/responses", body, "responses_stream", headers),)


PROFILES: tuple[Profile, ...] = (
    Profile(
        "cherry-studio",
        "Cherry Studio: streamed chat with include_usage and enable_thinking, then topic naming",
        "CherryHQ/cherry-studio src/renderer/src/aiCore/clients/openai/OpenAIApiClient.ts "
        "@e018a3f, src/renderer/src/services/ApiService.ts (docs/clients.md §2)",
        _cherry,
    ),
    Profile(
        "open-webui",
        "Open WebUI: streamed chat, then the title and tags tasks (not streamed, JSON asked)",
        "open-webui/open-webui backend/open_webui/routers/openai.py @671f577, "
        "routers/tasks.py @884bb3f, utils/middleware.py @cd9dae0 (docs/clients.md §3)",
        _open_webui,
    ),
    Profile(
        "langchain",
        "LangChain ChatOpenAI: invoke and stream with max_completion_tokens",
        "langchain-openai 1.7.4 langchain_openai/chat_models/base.py (docs/clients.md §4)",
        _langchain,
    ),
    Profile(
        "cline",
        "Cline: an XML-tools system prompt without `tools`, streamed with include_usage",
        "cline/cline src/core/api/providers/openai.ts @864419d, src/utils/model-utils.ts "
        "(docs/clients.md §5)",
        _cline,
    ),
    Profile(
        "claude-code",
        "Claude Code: quota probe, count_tokens, a streamed turn with tools (/messages?beta=true)",
        "code.claude.com docs (llm-gateway, env-vars); LiteLLM #13252; docs/clients.md §6, "
        "docs/agents.md §5.1",
        _claude_code,
    ),
    Profile(
        "codex-cli",
        "Codex CLI: a streamed /responses turn with instructions, items and tools",
        "openai/codex codex-rs/codex-api/src/common.rs @5c159cd, requests/headers.rs, "
        "sse/responses.rs @0a7fb0d (docs/clients.md §7)",
        _codex,
    ),
)
"""Every client profile, in report order."""


def profile_names() -> list[str]:
    """The ``--profile`` values."""
    return [p.name for p in PROFILES]


# -- reading answers as each client does -----------------------------------------------------


def _probe(profile: Profile, step: Step) -> Probe:
    stream = bool(step.body.get("stream"))
    return Probe.json(
        f"profile.{profile.name}.{step.name}",
        step.path,
        step.body,
        stream=stream,
        auth=step.auth,
        headers=step.headers,
    )


def _openai_stream(ctx: Context, ex: Exchange, step: Step) -> Outcome:
    """A streamed chat answer as these clients read it: ``text/event-stream`` (Open WebUI and
    NextChat decide by it), every data line JSON (the SDKs raise otherwise), no error object
    (the SDKs raise), ``delta.content`` pieces that do not repeat each other (every client
    shows them as they come). A missing ``[DONE]``, ``finish_reason`` or usage chunk is
    tolerated by all of them (docs/clients.md §2-§5, §9) and only noted."""
    fail, s = _stream_failure(ex)
    if fail is not None:
        return fail
    err = _error_failure(ex, s)
    if err is not None:
        return err
    if s.not_json:
        return _failed(ex, "sse_framing", f"an event's data is not JSON: {s.not_json[0]!r}")
    dup = _duplicates_failure(ex, s, step.expect)
    if dup is not None:
        return dup
    out = _judge_text(ex, step, "".join(s.content), s.ttft_s, s.content)
    if s.done_at is None:
        out.notes.append("no `data: [DONE]` (tolerated by this client)")
    if step.usage and not any(isinstance(c, dict) and c.get("usage") for c in s.chunks):
        out.notes.append("include_usage was asked for, but no chunk has usage (shown as zeros)")
    return out


def _judge_text(
    ex: Exchange, step: Step, text: str, ttft: float | None, pieces: list[str] | None = None
) -> Outcome:
    notes = [f"answer: {text[:200]!r}"]
    if step.expect is not None:
        shown = strip_think_blocks(text) if step.splits_think else text
        verdict = classify_echo(step.expect, shown, None if shown != text else pieces)
        if verdict.code != "ok":
            return _failed(ex, verdict.code, verdict.message, notes=notes, ttft_s=ttft)
    elif not text.strip():
        return _failed(ex, "empty_answer", "the answer is empty", notes=notes, ttft_s=ttft)
    if step.json_task is not None:
        try:
            parsed = json.loads(text[text.find("{") : text.rfind("}") + 1])
            ok = isinstance(parsed, dict) and step.json_task in parsed
        except ValueError:
            ok = False
        notes.append(
            f"the answer {'parses' if ok else 'does not parse'} as the JSON "
            f"{{{step.json_task!r}: …}} the client asked for (model behaviour, not judged)"
        )
    return _passed(ex, "ok", notes=notes, ttft_s=ttft)


def _openai_json(ctx: Context, ex: Exchange, step: Step) -> Outcome:
    fail = _http_failure(ex)
    if fail is not None:
        return fail
    if ex.content_type == "text/event-stream":
        return _failed(ex, "content_type", "`stream: false` was answered with an event stream")
    obj = ex.json()
    problems = violations("chat.completion", obj, strict=ctx.strict)
    if problems:
        return _failed(ex, "contract_violation", "not a ChatCompletion: " + "; ".join(problems[:3]))
    return _judge_text(ex, step, obj["choices"][0]["message"].get("content") or "", None)


def _anthropic_json(ctx: Context, ex: Exchange, step: Step) -> Outcome:
    fail = _http_failure(ex)
    if fail is not None:
        return fail
    obj = ex.json()
    problems = agents._anthropic_message_problems(obj)
    if problems:
        return _failed(ex, "not_anthropic_message", "; ".join(problems[:3]))
    return _passed(ex, f"a message, stop_reason {obj['stop_reason']}")


def _count_tokens(ctx: Context, ex: Exchange, step: Step) -> Outcome:
    fail = _http_failure(ex)
    if fail is not None:
        return fail
    obj = ex.json()
    n = obj.get("input_tokens") if isinstance(obj, dict) else None
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return _failed(
            ex, "not_anthropic_message", f"not {{'input_tokens': <positive int>}}: {obj!r}"[:200]
        )
    return _passed(ex, f"{n} input tokens")


def _anthropic_stream(ctx: Context, ex: Exchange, step: Step) -> Outcome:
    fail = _http_failure(ex)
    if fail is None and ex.content_type != "text/event-stream":
        fail = _failed(ex, "content_type", f"a stream was asked for, got {ex.content_type}")
    if fail is not None:
        return fail
    s = agents._read_anthropic_stream(ex)
    if s.errors:
        return _failed(ex, "stream_error", f"an error event: {s.errors[0]}")
    if s.problems:
        return _failed(ex, "event_order", "; ".join(s.problems[:3]), notes=s.problems[:8])
    dup = agents.anthropic_duplicates(s)
    if dup is not None:
        return _failed(ex, "duplicated_deltas", dup, ttft_s=s.ttft_s)
    for use in s.tool_uses:
        resent = resent_fragments(use["fragments"])
        if resent is not None:
            return _failed(ex, "duplicated_deltas", f"input_json_delta: {resent.message()}")
    if not s.text.strip() and not s.tool_uses:
        return _failed(ex, "empty_answer", "neither text nor tool_use")
    return _passed(ex, f"stop_reason {s.stop_reason}", notes=s.notes(), ttft_s=s.ttft_s)


def _responses_stream(ctx: Context, ex: Exchange, step: Step) -> Outcome:
    fail = _http_failure(ex)
    if fail is None and ex.content_type != "text/event-stream":
        fail = _failed(ex, "content_type", f"a stream was asked for, got {ex.content_type}")
    if fail is not None:
        return fail
    s = agents._read_responses_stream(ex)
    if s.failed is not None:
        return _failed(ex, "stream_error", f"the response failed: {s.failed}")
    if s.final is None or not (s.final or {}).get("id"):
        return _failed(
            ex, "missing_completed", "no response.completed with response.id (Codex retries)"
        )
    if s.problems:
        return _failed(ex, "event_order", "; ".join(s.problems[:3]), notes=s.problems[:8])
    dup = find_duplicated_deltas(s.pieces)
    if dup is not None:
        return _failed(ex, "duplicated_deltas", f"output_text.delta: {dup.message()}")
    text = agents._output_text(s.final.get("output"))
    if not text and not s.calls:
        return _failed(ex, "empty_answer", "response.completed holds no message and no call")
    return _judge_text(ex, step, text, s.ttft_s) if text else _passed(ex, "a function call")


def _deltas(chunks: list[Any]) -> list[dict[str, Any]]:
    """The ``choices[0].delta`` objects of stream chunks."""
    out = []
    for c in chunks:
        choices = c.get("choices") if isinstance(c, dict) else None
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            delta = choices[0].get("delta")
            if isinstance(delta, dict):
                out.append(delta)
    return out


_XML_BLOCK = re.compile(r"<([A-Za-z_][\w-]*)>.*?</\1>", re.DOTALL)
_ESCAPED_TAG = re.compile(r"&lt;/?[A-Za-z_][\w-]*&gt;")


def _judge_xml_tools(ex: Exchange, out: Outcome, chunks: list[Any], text: str) -> Outcome:
    """``out`` (the step as the client read it), or a failure when the XML tool call a client
    like Cline asked for (tools described as XML in the system prompt, no ``tools`` field) did
    not reach it as text, untouched: turned into native ``tool_calls`` (cline#13008: Cline
    reads no tool_calls without ``tools`` and runs nothing) or HTML-escaped
    (``&lt;read_file&gt;``: Cline's parser finds no tag). An answer without any XML block only
    gets a note: whether the model writes one is model behaviour, not judged."""
    notes = [f"answer: {text[:200]!r}"]
    calls = [d["tool_calls"] for d in _deltas(chunks) if d.get("tool_calls")]
    if calls:
        return _failed(
            ex,
            "tool_calls_without_tools",
            "the proxy turned the XML tool call into native tool_calls although the request "
            "offered no `tools`: Cline reads tools only as XML in the text, so the tool never "
            f"runs (cline#13008, docs/clients.md §5); first: {str(calls[0])[:160]}",
            notes=notes,
            ttft_s=out.ttft_s,
        )
    if not text.strip() or _XML_BLOCK.search(text):
        return out  # empty (said so already), or the XML is there as text
    escaped = _ESCAPED_TAG.search(text)
    if escaped:
        return _failed(
            ex,
            "html_escaped",
            f"the answer's XML arrives HTML-escaped ({escaped.group()!r}): Cline needs the "
            "tags untouched to find the tool call",
            notes=notes,
            ttft_s=out.ttft_s,
        )
    out.notes.append(
        "the answer holds no XML tool block (such as <read_file>…</read_file>), so Cline would "
        "run no tool: the model did not write one, or the proxy removed it (cline#13008); "
        "model behaviour, not judged"
    )
    return out


_READERS: dict[str, Callable[[Context, Exchange, Step], Outcome]] = {
    "openai_stream": _openai_stream,
    "openai_json": _openai_json,
    "anthropic_json": _anthropic_json,
    "count_tokens": _count_tokens,
    "anthropic_stream": _anthropic_stream,
    "responses_stream": _responses_stream,
}


def _runner(profile: Profile) -> Callable[[Context], Awaitable[Outcome]]:
    async def run(ctx: Context) -> Outcome:
        if ctx.profiles is not None and profile.name not in ctx.profiles:
            return _skipped("not_requested", "not named with --profile")
        steps = profile.steps(ctx.text_model)
        done: list[str] = []
        last: Outcome | None = None
        for step in steps:
            ex = await ctx.client.send(_probe(profile, step))
            if not done and ex.status in (404, 405):
                why = (
                    f"the target has no {step.path.split('?')[0]} (HTTP {ex.status}), which "
                    f"{profile.name} needs"
                )
                if ctx.profiles is not None:  # asked for by name: not checked is not a pass
                    return _failed(
                        ex, "not_offered", f"--profile {profile.name} was asked for, but {why}"
                    )
                return _skipped("not_offered", why)
            out = _READERS[step.reads](ctx, ex, step)
            if step.xml_tools and (out.status == "passed" or out.diagnosis == "empty_answer"):
                # as read, and the XML untouched (an answer of tool_calls alone is "empty")
                _, stream = _stream_failure(ex)
                out = _judge_xml_tools(ex, out, stream.chunks, "".join(stream.content))
            if out.status != "passed":
                out.message = f"step `{step.name}` ({len(done) + 1} of {len(steps)}): {out.message}"
                out.notes.append(f"source: {profile.source}")
                return out
            done.append(step.name)
            last = out
        assert last is not None
        return Outcome(
            "passed",
            "ok",
            f"{len(steps)} call(s) as {profile.name} makes them: {', '.join(done)}",
            last.exchange,
            notes=[f"source: {profile.source}"],
            ttft_s=last.ttft_s,
        )

    return run


PROFILE_CHECKS: tuple[CheckSpec, ...] = tuple(
    CheckSpec(f"profile.{p.name}", p.title, True, _runner(p)) for p in PROFILES
)
"""One check per profile, in :data:`PROFILES` order."""
