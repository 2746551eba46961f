"""The checks: what each one sends, what it expects, and how it names a failure.

Every check is an async function of a :class:`Context` returning an :class:`Outcome`; the runner
(:mod:`proxy.conformance.runner`) turns it into a :class:`~proxy.conformance.report.CheckResult`.
Checks that read the same answer share one probe (the client sends each probe once). The
expected behaviour is OpenAI's Chat Completions, Models and Images contract; the failure modes
come from docs/landscape.md §3 (what users of other Qwen proxies report) and docs/protocol.md
§5, §6, §10, §11 (why they happen).

Diagnosis codes (beyond the echo codes of :func:`~proxy.conformance.diagnosis.classify_echo`):
``transport_error``, ``http_status``, ``not_json``, ``content_type``, ``contract_violation``,
``sse_framing``, ``stream_error``, ``upstream_error_in_stream``, ``inconsistent_ids``,
``role_not_first``, ``duplicated_deltas``, ``content_after_finish``, ``missing_finish_reason``,
``multiple_finish_reasons``, ``wrong_finish_reason``, ``missing_done``, ``data_after_done``,
``missing_usage``, ``usage_shape``, ``usage_inconsistent``, ``no_reasoning``, ``no_answer``,
``null_image_url``, ``text_instead_of_image``, ``no_image``, ``unsafe_url``, ``bad_image_url``,
``image_fetch_failed``, ``not_an_image``, ``empty_200``, ``error_as_200``,
``wrong_key_accepted``, ``server_error``, ``wrong_status``, ``not_openai_error``,
``no_models``, ``not_offered``; skips: ``no_key``, ``no_capability``, ``not_offered``,
``open_target``.

The HTTP gate every answer passes (:func:`_http_failure`) adds ``not_closed_after_done`` (a
stream's body left open after its last event) and ``wrong_charset`` (non-ASCII text labelled
with a charset other than UTF-8). The auth checks add ``missing_key_accepted`` (no key served
while a wrong key is refused) and the skip ``not_enforced``; ``open_target`` is no longer given
(with ``--key`` a wrong key served is ``wrong_key_accepted``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from proxy.conformance.contract import EXACT_FIELDS, exact_problems, violations
from proxy.conformance.diagnosis import (
    DuplicateFinding,
    classify_echo,
    classify_image_answer,
    error_payload,
    find_duplicated_deltas,
    sniff_image,
)
from proxy.conformance.probes import (
    AUTH_PROMPT,
    BAD_JSON_BODY,
    ECHO_EN_PROMPT,
    ECHO_EN_SENTENCE,
    ECHO_ZH_PROMPT,
    ECHO_ZH_SENTENCE,
    IMAGE_PROMPT,
    OVERSIZE_PROMPT,
    STREAM_PROMPT,
    THINK_PROMPT,
    UNKNOWN_MODEL,
    UNKNOWN_MODEL_PROMPT,
    Client,
    Exchange,
    Probe,
    chat_body,
    fetch_image,
)
from proxy.conformance.report import Status

__all__ = ["CORE_CHECKS", "Capabilities", "CheckSpec", "Context", "Outcome"]

_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


@dataclass
class Capabilities:
    """What the target offers: the listed model ids and the models picked for each role
    (``None`` when the target has none; ``reasons`` then says why)."""

    models: list[str] = field(default_factory=list)
    text_model: str | None = None
    thinking_model: str | None = None
    image_model: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)


@dataclass
class Context:
    """What a check may use: the probe ``client``, the target's ``caps``, the HTTP ``session``
    (for image downloads) and the run's options (sizes in bytes, times in seconds)."""

    client: Client
    caps: Capabilities
    session: aiohttp.ClientSession
    oversize_bytes: int = 16 * 1024 * 1024
    url_rewrites: Mapping[str, str] = field(default_factory=dict)
    allow_private_urls: bool = False
    image_timeout_s: float = 60.0
    strict: bool = False
    """``--strict``: answers must carry every field OpenAI returns (contract.EXACT_FIELDS)."""
    profiles: frozenset[str] | None = None
    """Client profiles to run (``--profile``); ``None``: every profile the target can serve."""

    @property
    def text_model(self) -> str:
        """The text model to probe (a placeholder when discovery found none)."""
        return self.caps.text_model or "gpt-4o-mini"

    def chat(
        self, id: str, prompt: str, *, stream: bool, model: str | None = None, **kw: Any
    ) -> Probe:
        """A chat probe with one user message."""
        body = chat_body(model or self.text_model, prompt, stream=stream, **kw)
        return Probe.json(id, "/chat/completions", body, stream=stream)

    async def image(self, url: str) -> tuple[str | None, str, str]:
        """Download ``url``: ``(failure code or None, message, evidence line)``."""
        trusted = frozenset({self.client.host} - {""})
        got = await fetch_image(
            self.session,
            url,
            rewrites=self.url_rewrites,
            trusted_hosts=trusted,
            allow_private=self.allow_private_urls,
            timeout_s=self.image_timeout_s,
        )
        line = got.describe()
        if got.error and got.error.startswith("malformed URL"):
            return "bad_image_url", f"the image URL is malformed: {got.error}", line
        if got.error and got.error.startswith(("refused", "cannot resolve")):
            return "unsafe_url", f"the image URL was not fetched: {got.error}", line
        if got.error:
            return "image_fetch_failed", f"the image URL could not be fetched: {got.error}", line
        if got.format is None:
            return "not_an_image", "the image URL answered bytes that are not an image", line
        return None, f"{got.format.upper()} image, {got.size} bytes", line


@dataclass
class Outcome:
    """A check's verdict: ``status``, ``diagnosis`` code, ``message``; the ``exchange`` it is
    about (its request and evidence go into the report), extra ``notes`` and ``ttft_s``."""

    status: Status
    diagnosis: str
    message: str
    exchange: Exchange | None = None
    notes: list[str] = field(default_factory=list)
    ttft_s: float | None = None


@dataclass(frozen=True)
class CheckSpec:
    """A check: ``id``, ``title``, whether it is ``required`` by default, and ``run``."""

    id: str
    title: str
    required: bool
    run: Callable[[Context], Awaitable[Outcome]]


def _passed(ex: Exchange | None, message: str, **kw: Any) -> Outcome:
    return Outcome("passed", "ok", message, ex, **kw)


def _failed(ex: Exchange | None, code: str, message: str, **kw: Any) -> Outcome:
    return Outcome("failed", code, message, ex, **kw)


def _skipped(code: str, message: str) -> Outcome:
    return Outcome("skipped", code, message)


def _error_text(ex: Exchange) -> str:
    obj = ex.json()
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        err = obj["error"]
        return f": {err.get('code') or err.get('type')}: {ex.mask(str(err.get('message')))[:200]}"
    return ""


def _not_json_body(ex: Exchange) -> str:
    """``" with an HTML page, not an OpenAI error object"`` (or the content type) when an
    error's body is not JSON, else ``""``."""
    if not ex.body.strip() or ex.json() is not None:
        return ""
    kind = "an HTML page" if ex.content_type == "text/html" else ex.content_type or "a body"
    return f" with {kind}, not an OpenAI error object"


def _http_failure(ex: Exchange) -> Outcome | None:
    """A failed outcome when the exchange is not an HTTP 200, else ``None``."""
    if ex.error is not None and ex.status is None:
        return _failed(ex, "transport_error", f"the request failed: {ex.error}")
    if ex.status != 200:
        return _failed(ex, "http_status", f"HTTP {ex.status} instead of 200{_error_text(ex)}")
    if ex.open_after_end is not None:
        return _failed(
            ex,
            "not_closed_after_done",
            f"the stream is complete (`{ex.open_after_end}` arrived) but the response body was "
            "never closed (the connection stays open, the chunked body is not terminated): "
            "openai-node and the other SDKs read to the end of the body and hang "
            "(docs/clients.md §9 rule 1)",
        )
    if ex.error is not None:
        return _failed(ex, "transport_error", f"the response broke off: {ex.error}")
    return _charset_failure(ex)


_UTF8_LABELS = frozenset({"utf-8", "utf8"})


def _charset_failure(ex: Exchange) -> Outcome | None:
    """A failure when a body with non-ASCII text is labelled with a charset other than UTF-8
    (no charset is fine: JSON is UTF-8): clients that honour the label decode it wrongly."""
    label = ex.charset
    if label is None or label in _UTF8_LABELS or ex.body.isascii():
        return None
    try:
        ex.body.decode("utf-8")
        what = "UTF-8 with non-ASCII text"
    except UnicodeDecodeError:
        what = "non-ASCII text, and not UTF-8"
    return _failed(
        ex,
        "wrong_charset",
        f"the body is {what} but labelled `charset={label}`: clients that honour the label "
        "(aiohttp's resp.text()/resp.json(), which Open WebUI's backend uses; requests' .text) "
        "turn Chinese into mojibake. Label it `charset=utf-8`, or give no charset",
    )


# -- streams -----------------------------------------------------------------------------------


@dataclass
class _Stream:
    """A streamed answer, decoded: chunk objects, their contract problems, the text pieces."""

    chunks: list[Any] = field(default_factory=list)
    not_json: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    raw_errors: list[str] = field(default_factory=list)
    """Error objects that are not OpenAI's, each described (``diagnosis.error_payload``)."""
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    reasoning_fields: list[str] = field(default_factory=list)
    """The delta fields reasoning came in (``reasoning_content``, ``reasoning``), in order."""
    finish_reasons: list[str] = field(default_factory=list)
    after_finish: list[str] = field(default_factory=list)
    """Text (answer or reasoning) in chunks after the first chunk with a finish_reason."""
    calls_after_finish: int = 0
    """Chunks with tool-call fragments after the first chunk with a finish_reason."""
    done_at: int | None = None
    after_done: int = 0
    ttft_s: float | None = None


def _delta(chunk: Any) -> dict[str, Any]:
    if isinstance(chunk, dict):
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            delta = choices[0].get("delta")
            if isinstance(delta, dict):
                return delta
    return {}


def _reasoning_of(d: Mapping[str, Any]) -> tuple[str, str]:
    """The reasoning text of a delta and the field it came in (``""`` for none)."""
    for name in ("reasoning_content", "reasoning"):
        value = d.get(name)
        if isinstance(value, str) and value:
            return value, name
    return "", ""


def _finish_of(chunk: Any) -> str | None:
    if isinstance(chunk, dict):
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            reason = choices[0].get("finish_reason")
            return None if reason is None else str(reason)
    return None


def _decode_stream(ex: Exchange, strict: bool = False) -> _Stream:
    s = _Stream()
    for i, event in enumerate(ex.sse.events):
        if s.done_at is not None:
            s.after_done += 1
            continue
        if event.data.strip() == "[DONE]":
            s.done_at = i
            continue
        try:
            obj = json.loads(event.data)
        except ValueError:
            s.not_json.append(event.data[:120])
            continue
        shape = error_payload(obj)
        if shape is not None and shape.code == "error_object":
            s.errors.append(obj)
            continue
        if shape is not None:
            s.raw_errors.append(f"{shape.what}: {json.dumps(obj, ensure_ascii=False)[:200]}")
            continue
        s.chunks.append(obj)
        if len(s.problems) < 8:
            s.problems.extend(
                f"chunk {len(s.chunks) - 1}: {p}"
                for p in violations("chat.completion.chunk", obj, strict=strict)
            )
        d = _delta(obj)
        text = d.get("content")
        reasoning, reasoning_field = _reasoning_of(d)
        if isinstance(text, str):
            s.content.append(text)
        if reasoning:
            s.reasoning.append(reasoning)
            if reasoning_field not in s.reasoning_fields:
                s.reasoning_fields.append(reasoning_field)
        if s.finish_reasons and ((isinstance(text, str) and text) or reasoning):
            s.after_finish.append(text if isinstance(text, str) and text else reasoning)
        elif s.finish_reasons and d.get("tool_calls"):
            s.calls_after_finish += 1
        finish = _finish_of(obj)
        if finish is not None:
            s.finish_reasons.append(finish)
        if s.ttft_s is None and (
            (isinstance(text, str) and text) or reasoning or d.get("tool_calls")
        ):
            s.ttft_s = ex.time_at(event.end)
    return s


def _stream_failure(ex: Exchange, strict: bool = False) -> tuple[Outcome | None, _Stream]:
    """The common gate of streamed probes: HTTP 200, an SSE body, chunks that are OpenAI's."""
    fail = _http_failure(ex)
    if fail is not None:
        return fail, _Stream()
    if ex.content_type != "text/event-stream":
        return (
            _failed(
                ex,
                "content_type",
                f"a stream was asked for, but the answer is {ex.content_type or 'untyped'}, "
                "not text/event-stream",
            ),
            _Stream(),
        )
    s = _decode_stream(ex, strict)
    return None, s


def _error_failure(ex: Exchange, s: _Stream) -> Outcome | None:
    """A failed outcome when the stream carried an error: OpenAI's error event
    (``stream_error``), or an upstream's own error object relayed raw
    (``upstream_error_in_stream``), which clients cannot read as an error."""
    if s.errors:
        return _failed(ex, "stream_error", f"the stream carried an error event: {s.errors[0]}")
    if s.raw_errors:
        return _failed(
            ex,
            "upstream_error_in_stream",
            f"the stream carried {s.raw_errors[0]}: an upstream error relayed raw instead of "
            'an OpenAI error event (`data: {"error": {…}}`, docs/clients.md §9 rule 5); clients '
            "see a chunk without `choices` and fail or show nothing",
            notes=s.raw_errors[:4],
        )
    return None


def _duplicates_failure(ex: Exchange, s: _Stream, expected: str | None = None) -> Outcome | None:
    """A failed outcome when streamed answer text or reasoning re-sends earlier text."""
    found: list[tuple[str, DuplicateFinding | None]] = [
        ("", find_duplicated_deltas(s.content, expected=expected)),
        ("reasoning: ", find_duplicated_deltas(s.reasoning)),
    ]
    for what, dup in found:
        if dup is not None:
            return _failed(ex, "duplicated_deltas", what + dup.message(), ttft_s=s.ttft_s)
    return None


def _after_finish_failure(ex: Exchange, s: _Stream) -> Outcome | None:
    """A failed outcome when chunks after the one carrying finish_reason carry text or tool
    calls."""
    if not s.after_finish and not s.calls_after_finish:
        return None
    what = [f"text {''.join(s.after_finish)[:80]!r}"] if s.after_finish else []
    what += [f"{s.calls_after_finish} tool-call fragment(s)"] if s.calls_after_finish else []
    return _failed(
        ex,
        "content_after_finish",
        f"{' and '.join(what)} arrive(s) after the chunk carrying finish_reason: OpenAI ends "
        "the answer with that chunk (only the usage chunk, with `choices: []`, may follow); "
        "clients that stop there lose it, the others show what the non-streamed answer lacks",
        ttft_s=s.ttft_s,
    )


def _contract_failure(ex: Exchange, s: _Stream) -> Outcome | None:
    fail = _error_failure(ex, s)
    if fail is not None:
        return fail
    if s.not_json:
        return _failed(ex, "sse_framing", f"an event's data is not JSON: {s.not_json[0]!r}")
    if s.problems:
        return _failed(
            ex,
            "contract_violation",
            "streamed chunks are not ChatCompletionChunk objects: " + "; ".join(s.problems[:3]),
            notes=s.problems[:8],
        )
    return None


async def _echo(ctx: Context, id: str, prompt: str, sentence: str, stream: bool) -> Outcome:
    ex = await ctx.client.send(ctx.chat(id, prompt, stream=stream))
    if stream:
        fail, s = _stream_failure(ex, ctx.strict)
        fail = fail or _contract_failure(ex, s)
        if fail is not None:
            return fail
        answer = "".join(s.content)
        fail = _duplicates_failure(ex, s, sentence) or _after_finish_failure(ex, s)
        if fail is not None:
            fail.notes.append(f"answer: {ex.mask(answer)[:300]!r}")
            return fail
        pieces: list[str] | None = s.content
        finish = s.finish_reasons
        ttft = s.ttft_s
    else:
        fail = _http_failure(ex)
        if fail is not None:
            return fail
        obj = ex.json()
        if obj is None:
            return _failed(ex, "not_json", f"the body is not JSON ({ex.content_type})")
        problems = violations("chat.completion", obj, strict=ctx.strict)
        if problems:
            return _failed(
                ex,
                "contract_violation",
                "the body is not a ChatCompletion: " + "; ".join(problems[:3]),
                notes=problems[:8],
            )
        answer = obj["choices"][0]["message"].get("content") or ""
        pieces = None
        finish = [str(obj["choices"][0].get("finish_reason"))]
        ttft = None
    verdict = classify_echo(sentence, answer, pieces)
    note = [f"answer: {ex.mask(answer)[:300]!r}"]
    if verdict.code != "ok":
        return _failed(ex, verdict.code, verdict.message, notes=note, ttft_s=ttft)
    if "length" in finish:
        return _failed(
            ex,
            "wrong_finish_reason",
            "the answer is complete (the whole sentence) and the probe set no max_tokens, yet "
            "finish_reason is 'length': clients take the answer for cut off",
            notes=note,
            ttft_s=ttft,
        )
    return _passed(ex, verdict.message, notes=note, ttft_s=ttft)


async def _echo_en(ctx: Context) -> Outcome:
    return await _echo(ctx, "chat.en", ECHO_EN_PROMPT, ECHO_EN_SENTENCE, False)


async def _echo_en_stream(ctx: Context) -> Outcome:
    return await _echo(ctx, "chat.en.stream", ECHO_EN_PROMPT, ECHO_EN_SENTENCE, True)


async def _echo_zh(ctx: Context) -> Outcome:
    return await _echo(ctx, "chat.zh", ECHO_ZH_PROMPT, ECHO_ZH_SENTENCE, False)


async def _echo_zh_stream(ctx: Context) -> Outcome:
    return await _echo(ctx, "chat.zh.stream", ECHO_ZH_PROMPT, ECHO_ZH_SENTENCE, True)


def _stream_probe(ctx: Context) -> Probe:
    return ctx.chat("stream", STREAM_PROMPT, stream=True, stream_options={"include_usage": True})


async def _stream(ctx: Context) -> tuple[Exchange, Outcome | None, _Stream]:
    ex = await ctx.client.send(_stream_probe(ctx))
    fail, s = _stream_failure(ex, ctx.strict)
    return ex, fail, s


async def _stream_framing(ctx: Context) -> Outcome:
    ex, fail, s = await _stream(ctx)
    if fail is not None:
        return fail
    problems = list(ex.sse.problems)
    problems += [f"event data is not JSON: {d!r}" for d in s.not_json[:2]]
    named = {e.event for e in ex.sse.events if e.event not in (None, "")}
    notes = [f"events named {sorted(named)} (OpenAI streams use unnamed events)"] if named else []
    if problems:
        return _failed(ex, "sse_framing", "; ".join(problems[:3]), notes=notes, ttft_s=s.ttft_s)
    return _passed(
        ex,
        f"{len(ex.sse.events)} events, each `data: <json>` and a blank line"
        + (f"; {ex.sse.comments} keep-alive comment(s)" if ex.sse.comments else ""),
        notes=notes,
        ttft_s=s.ttft_s,
    )


async def _stream_contract(ctx: Context) -> Outcome:
    ex, fail, s = await _stream(ctx)
    fail = fail or _contract_failure(ex, s)
    if fail is not None:
        return fail
    ids = {c.get("id") for c in s.chunks}
    if len(ids) > 1:
        return _failed(ex, "inconsistent_ids", f"chunks carry {len(ids)} different ids")
    if not s.chunks:
        return _failed(ex, "no_answer", "the stream holds no chunk at all")
    return _passed(ex, f"{len(s.chunks)} chunks, all ChatCompletionChunk, one id", ttft_s=s.ttft_s)


async def _stream_role(ctx: Context) -> Outcome:
    ex, fail, s = await _stream(ctx)
    if fail is not None:
        return fail
    if not s.chunks:
        return _failed(ex, "role_not_first", "the stream holds no chunk")
    role = _delta(s.chunks[0]).get("role")
    if role != "assistant":
        return _failed(
            ex, "role_not_first", f"the first chunk's delta.role is {role!r}, not 'assistant'"
        )
    return _passed(ex, "the first chunk carries role 'assistant'", ttft_s=s.ttft_s)


async def _stream_duplicates(ctx: Context) -> Outcome:
    ex, fail, s = await _stream(ctx)
    if fail is not None:
        return fail
    if not "".join(s.content):
        return _error_failure(ex, s) or _failed(
            ex, "empty_answer", "the stream carried no text (docs/landscape.md §3.2)"
        )
    fail = _duplicates_failure(ex, s)
    if fail is not None:
        return fail
    pieces = [p for p in s.content if p]
    return _passed(ex, f"{len(pieces)} text pieces, none re-sends earlier text", ttft_s=s.ttft_s)


async def _stream_finish(ctx: Context) -> Outcome:
    ex, fail, s = await _stream(ctx)
    if fail is not None:
        return fail
    given = s.finish_reasons
    if not given:
        return _error_failure(ex, s) or _failed(
            ex, "missing_finish_reason", "no chunk carries a finish_reason"
        )
    if len(given) > 1:
        return _failed(
            ex, "multiple_finish_reasons", f"{len(given)} chunks carry a finish_reason: {given}"
        )
    if given[0] not in _FINISH_REASONS:
        return _failed(ex, "contract_violation", f"finish_reason {given[0]!r} is not OpenAI's")
    fail = _after_finish_failure(ex, s)
    if fail is not None:
        return fail
    return _passed(ex, f"one finish_reason: {given[0]!r}", ttft_s=s.ttft_s)


async def _stream_done(ctx: Context) -> Outcome:
    ex, fail, s = await _stream(ctx)
    if fail is not None:
        return fail
    if s.done_at is None:
        return _failed(ex, "missing_done", "the stream ends without `data: [DONE]`")
    if s.after_done:
        return _failed(ex, "data_after_done", f"{s.after_done} event(s) follow `[DONE]`")
    return _passed(ex, "the stream ends with `data: [DONE]`", ttft_s=s.ttft_s)


async def _stream_usage(ctx: Context) -> Outcome:
    ex, fail, s = await _stream(ctx)
    if fail is not None:
        return fail
    with_usage = [i for i, c in enumerate(s.chunks) if isinstance(c, dict) and c.get("usage")]
    if not with_usage:
        return _failed(
            ex, "missing_usage", "stream_options.include_usage was set, but no chunk has usage"
        )
    last = s.chunks[with_usage[-1]]
    usage = last["usage"]
    if last.get("choices") != []:
        return _failed(ex, "usage_shape", "the usage chunk must have `choices: []`")
    if with_usage[-1] != len(s.chunks) - 1:
        return _failed(ex, "usage_shape", "the usage chunk is not the last chunk")
    problem = _usage_problem(usage)
    if problem is not None:
        return _failed(ex, problem[0], problem[1])
    numbers = [usage[k] for k in _USAGE_FIELDS]
    plain = await ctx.client.send(ctx.chat("chat.en", ECHO_EN_PROMPT, stream=False))
    obj = plain.json() if plain.ok else None
    if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
        problem = _usage_problem(obj["usage"])
        if problem is not None:
            return _failed(plain, problem[0], f"the non-streamed answer (chat.en): {problem[1]}")
    return _passed(ex, f"final usage chunk: {numbers[0]} + {numbers[1]} = {numbers[2]} tokens")


_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")
_ANTHROPIC_USAGE = ("input_tokens", "output_tokens")


def _usage_problem(usage: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(code, message)`` for a usage object that is not OpenAI's: fields missing (and
    Anthropic's names used instead), counts that are not integers, a total that is not the sum.
    """
    missing = [k for k in _USAGE_FIELDS if k not in usage]
    if missing:
        anthropic = [k for k in _ANTHROPIC_USAGE if k in usage]
        why = f" (it has Anthropic's {', '.join(anthropic)} instead)" if anthropic else ""
        return (
            "usage_shape",
            f"usage lacks {', '.join(missing)}{why}: OpenAI's usage is prompt_tokens, "
            f"completion_tokens and total_tokens: {dict(usage)}",
        )
    numbers = [usage.get(k) for k in _USAGE_FIELDS]
    counts = [n for n in numbers if isinstance(n, int) and not isinstance(n, bool) and n >= 0]
    if len(counts) < len(numbers):
        return "usage_shape", f"usage counts are not integers: {dict(usage)}"
    if counts[0] + counts[1] != counts[2]:
        return "usage_inconsistent", f"prompt + completion != total: {dict(usage)}"
    return None


# -- wire exactness ----------------------------------------------------------------------------


async def _wire_completion(ctx: Context) -> Outcome:
    """The English echo's completion carries every field OpenAI returns (EXACT_FIELDS)."""
    ex = await ctx.client.send(ctx.chat("chat.en", ECHO_EN_PROMPT, stream=False))
    fail = _http_failure(ex)
    if fail is not None:
        return fail
    obj = ex.json()
    if violations("chat.completion", obj):
        return _failed(ex, "contract_violation", "the body is not a ChatCompletion (see chat.en)")
    missing = exact_problems("chat.completion", obj)
    if missing:
        return _failed(
            ex,
            "missing_openai_fields",
            "the completion lacks fields the OpenAI API returns: " + "; ".join(missing[:3]),
            notes=missing[:12],
        )
    n = len(EXACT_FIELDS["chat.completion"])
    return _passed(ex, f"all {n} extra fields OpenAI returns are there")


async def _wire_chunks(ctx: Context) -> Outcome:
    """Every chunk of the streaming probe carries every field OpenAI returns; with
    ``include_usage`` every chunk but the last has ``usage: null`` (OpenAI API reference, the
    chat completion chunk object, ``usage``)."""
    ex, fail, s = await _stream(ctx)
    fail = fail or _contract_failure(ex, s)
    if fail is not None:
        return fail
    missing: list[str] = []
    for i, c in enumerate(s.chunks):
        missing += [f"chunk {i}: {p}" for p in exact_problems("chat.completion.chunk", c)]
        if i < len(s.chunks) - 1 and (not isinstance(c, dict) or c.get("usage", 0) is not None):
            missing.append(
                f"chunk {i}: usage: must be null before the last chunk when "
                "stream_options.include_usage is set"
            )
    if missing:
        return _failed(
            ex,
            "missing_openai_fields",
            "streamed chunks lack fields the OpenAI API returns: " + "; ".join(missing[:3]),
            notes=missing[:12],
            ttft_s=s.ttft_s,
        )
    return _passed(ex, f"{len(s.chunks)} chunks carry every field OpenAI returns", ttft_s=s.ttft_s)


# -- reasoning ---------------------------------------------------------------------------------

_THINK_TAGS = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def _has_reasoning(ex: Exchange) -> bool:
    """Whether a streamed answer carries any reasoning (``reasoning_content`` or think tags)."""
    if ex.status != 200:
        return False
    _, s = _stream_failure(ex)
    return bool("".join(s.reasoning).strip()) or bool(_THINK_TAGS.search("".join(s.content)))


async def _reasoning(ctx: Context) -> Outcome:
    model = ctx.caps.thinking_model
    via_flag = model is None
    if via_flag:
        # No -thinking model: some proxies switch reasoning on with the `enable_thinking`
        # body field instead (docs/landscape.md §2.2). Try it; a target that ignores it is skipped.
        model = ctx.text_model
        probe = ctx.chat("reasoning", THINK_PROMPT, stream=True, enable_thinking=True)
    else:
        probe = ctx.chat("reasoning", THINK_PROMPT, stream=True, model=model)
    ex = await ctx.client.send(probe)
    if via_flag and not _has_reasoning(ex):
        why = ctx.caps.reasons.get("thinking", "no -thinking model")
        return _skipped("no_capability", f"{why}, and `enable_thinking: true` gave no reasoning")
    fail, s = _stream_failure(ex, ctx.strict)
    fail = fail or _contract_failure(ex, s) or _duplicates_failure(ex, s)
    if fail is not None:
        return fail
    content = "".join(s.content)
    reasoning = "".join(s.reasoning)
    how = " and ".join(f"`delta.{f}`" for f in s.reasoning_fields)
    other_fields = [f for f in s.reasoning_fields if f != "reasoning_content"]
    if not reasoning:
        tagged = _THINK_TAGS.search(content)
        if tagged and tagged.group(1).strip():
            reasoning, how = tagged.group(1), "inline <think> tags"
            content = _THINK_TAGS.sub("", content)
    notes = [f"reasoning: {reasoning[:200]!r}", f"answer: {content[:200]!r}"]
    if other_fields:
        notes.append(
            f"reasoning arrives in {', '.join(f'`delta.{f}`' for f in other_fields)}: NextChat, "
            "Cline and Roo Code read only `delta.reasoning_content` and show no reasoning "
            "(docs/clients.md §9 rule 2)"
        )
    if not reasoning.strip():
        return _failed(ex, "no_reasoning", f"`{model}` streamed no reasoning_content", notes=notes)
    if not content.strip():
        return _failed(
            ex,
            "no_answer",
            "reasoning arrived but no answer after it (docs/landscape.md §3.3, §3.9)",
            notes=notes,
            ttft_s=s.ttft_s,
        )
    switch = " (with `enable_thinking: true`)" if via_flag else ""
    return _passed(
        ex,
        f"`{model}`{switch} streams reasoning as {how}, then an answer",
        notes=notes,
        ttft_s=s.ttft_s,
    )


# -- images ------------------------------------------------------------------------------------


async def _image_chat(ctx: Context) -> Outcome:
    return await _image_chat_in(ctx, stream=False)


async def _image_chat_stream(ctx: Context) -> Outcome:
    return await _image_chat_in(ctx, stream=True)


async def _image_chat_in(ctx: Context, *, stream: bool) -> Outcome:
    """An image model asked through chat, as chat apps do (Cherry Studio and Open WebUI always
    stream, docs/clients.md §2, §3): the answer must hold a fetchable image, in either mode."""
    model = ctx.caps.image_model
    if model is None:
        return _skipped("no_capability", ctx.caps.reasons.get("image", "no image model"))
    id = "images.chat.stream" if stream else "images.chat"
    ex = await ctx.client.send(ctx.chat(id, IMAGE_PROMPT, stream=stream, model=model))
    ttft: float | None = None
    if stream:
        fail, s = _stream_failure(ex, ctx.strict)
        fail = fail or _contract_failure(ex, s) or _duplicates_failure(ex, s)
        if fail is not None:
            return fail
        content = "".join(s.content)
        ttft = s.ttft_s
    else:
        fail = _http_failure(ex)
        if fail is not None:
            return fail
        obj = ex.json()
        problems = violations("chat.completion", obj, strict=ctx.strict)
        if problems:
            return _failed(
                ex,
                "contract_violation",
                "the body is not a ChatCompletion: " + "; ".join(problems[:3]),
            )
        content = obj["choices"][0]["message"].get("content") or ""
    kind = classify_image_answer(content)
    notes = [f"answer: {content[:300]!r}"]
    out = await _judge_image(ctx, ex, kind, notes, model)
    out.ttft_s = ttft
    return out


async def _judge_image(
    ctx: Context, ex: Exchange, kind: Any, notes: list[str], model: str
) -> Outcome:
    if kind.kind == "null_url":
        return _failed(
            ex,
            "null_image_url",
            "the answer is an image with a null URL (`![image](null)`, docs/protocol.md §6.4)",
            notes=notes,
        )
    if kind.kind == "drawing_text":
        return _failed(
            ex,
            "text_instead_of_image",
            "the model answered with text about drawing instead of an image: the request did "
            "not reach the image generator (t2i)",
            notes=notes,
        )
    if kind.kind != "image":
        return _failed(ex, "no_image", "the answer holds no image URL", notes=notes)
    code, message, line = await ctx.image(kind.urls[0])
    notes.append(line)
    if code is not None:
        return _failed(ex, code, message, notes=notes)
    return _passed(ex, f"`{model}` answered with an image URL: {message}", notes=notes)


async def _image_generations(ctx: Context) -> Outcome:
    model = ctx.caps.image_model or ctx.text_model
    body = {"model": model, "prompt": IMAGE_PROMPT, "n": 1, "size": "1024x1024"}
    ex = await ctx.client.send(Probe.json("images.generations", "/images/generations", body))
    if ex.status in (404, 405):
        return _skipped("not_offered", f"the target has no /images/generations (HTTP {ex.status})")
    if ex.status is not None and 400 <= ex.status < 500 and ctx.caps.image_model is None:
        return _skipped(
            "no_capability",
            f"no image model is listed and /images/generations refused `{model}` "
            f"(HTTP {ex.status}{_error_text(ex)})",
        )
    fail = _http_failure(ex)
    if fail is not None:
        return fail
    obj = ex.json()
    problems = violations("images", obj)
    if problems:
        return _failed(
            ex,
            "contract_violation",
            "the body is not an ImagesResponse: " + "; ".join(problems[:3]),
        )
    first = obj["data"][0]
    url, b64 = first.get("url"), first.get("b64_json")
    if b64:
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            return _failed(ex, "not_an_image", "b64_json is not valid base64")
        fmt = sniff_image(raw[:16])
        if fmt is None:
            return _failed(ex, "not_an_image", "b64_json does not decode to an image")
        return _passed(ex, f"b64_json holds a {fmt.upper()} image of {len(raw)} bytes")
    if not url or str(url).strip().lower() in ("null", "none", "undefined"):
        return _failed(
            ex, "null_image_url", "data[0] has neither a url nor b64_json (docs/protocol.md §6.4)"
        )
    code, message, line = await ctx.image(str(url))
    if code is not None:
        return _failed(ex, code, message, notes=[line])
    return _passed(ex, f"data[0].url is {message}", notes=[line])


# -- errors and auth ---------------------------------------------------------------------------


def _error_outcome(ex: Exchange, accepted: tuple[int, ...], what: str) -> Outcome:
    """The OpenAI way to fail: one of ``accepted`` statuses and ``{"error": {...}}``."""
    if ex.status is None:
        return _failed(ex, "transport_error", f"{what}: the request failed: {ex.error}")
    if ex.status == 200:
        if not ex.body.strip():
            return _failed(
                ex, "empty_200", f"{what}: HTTP 200 with an empty body (docs/landscape.md §3.2)"
            )
        return _failed(ex, "error_as_200", f"{what}: HTTP 200 instead of an error status")
    if ex.status >= 500:
        return _failed(
            ex, "server_error", f"{what}: HTTP {ex.status}{_error_text(ex)}{_not_json_body(ex)}"
        )
    problems = violations("error", ex.json())
    if ex.status not in accepted:
        return _failed(
            ex,
            "wrong_status",
            f"{what}: HTTP {ex.status}; expected {' or '.join(map(str, accepted))}",
        )
    if problems:
        return _failed(
            ex,
            "not_openai_error",
            f"{what}: HTTP {ex.status} but the body is not an OpenAI error object: {problems[0]}",
        )
    return _passed(ex, f"{what}: HTTP {ex.status}{_error_text(ex)}")


async def _bad_json(ctx: Context) -> Outcome:
    probe = Probe("errors.bad_json", "POST", "/chat/completions", BAD_JSON_BODY)
    return _error_outcome(await ctx.client.send(probe), (400, 422), "malformed JSON")


async def _unknown_model(ctx: Context) -> Outcome:
    probe = ctx.chat(
        "errors.unknown_model", UNKNOWN_MODEL_PROMPT, stream=False, model=UNKNOWN_MODEL
    )
    return _error_outcome(await ctx.client.send(probe), (404, 400), "unknown model")


async def _oversize(ctx: Context) -> Outcome:
    pad = max(0, ctx.oversize_bytes)
    user = {"role": "user", "content": OVERSIZE_PROMPT}

    def body(system: str) -> dict[str, Any]:
        messages = [{"role": "system", "content": system}, user]
        return {"model": ctx.text_model, "messages": messages, "stream": False}

    raw = json.dumps(body("x" * pad)).encode()
    shown = json.dumps(body(f"<{pad} × 'x'>"), ensure_ascii=False)
    probe = Probe("errors.oversize", "POST", "/chat/completions", raw, shown_body=shown)
    return _error_outcome(await ctx.client.send(probe), (413, 400), f"a {len(raw)}-byte body")


_ERRORISH = re.compile(
    r"invalid|unauthori[sz]ed|api[ _-]?key|forbidden|denied|error|expired|密钥|令牌|无效|未授权",
    re.IGNORECASE,
)
_AUTH_ECHO = re.compile(
    r"(?:conformance probe:\s*)?this request carries a wrong api key\.?", re.IGNORECASE
)
"""The auth probe's own sentence: a model that repeats it is answering, not reporting an error."""
_REFUSED = (401, 403)
_NO_ENDPOINT = (404, 405)


def _auth_probe(ctx: Context, auth: Literal["key", "wrong", "none"]) -> Probe:
    """The chat request of the auth checks, with a wrong key, none, or the right one."""
    id = {"key": "auth.right_key", "wrong": "auth.wrong_key", "none": "auth.no_key"}[auth]
    body = chat_body(ctx.text_model, AUTH_PROMPT, stream=False)
    return Probe.json(id, "/chat/completions", body, auth=auth)


def _error_in_200(ex: Exchange, what: str) -> Outcome | None:
    """A failure when an HTTP 200 is an error in disguise (empty, not a completion, an error
    text as the answer), else ``None`` (a real answer: the request was served)."""
    if not ex.body.strip():
        return _failed(ex, "empty_200", f"{what} got HTTP 200 with an empty body")
    obj = ex.json()
    if violations("chat.completion", obj):
        return _failed(ex, "error_as_200", f"{what} got HTTP 200 with a non-completion body")
    text = obj["choices"][0]["message"].get("content") or ""
    if _ERRORISH.search(_AUTH_ECHO.sub("", text)):
        return _failed(
            ex,
            "error_as_200",
            f"{what} got HTTP 200 with the error as answer text: {ex.mask(text)[:120]!r}",
        )
    return None


def _refused(ex: Exchange) -> bool:
    """Whether an auth probe was turned away: 401/403, or an error dressed as a 200."""
    return ex.status in _REFUSED or (ex.status == 200 and _error_in_200(ex, "") is not None)


def endpoint_missing(ex: Exchange) -> bool:
    """Whether ``ex`` says its endpoint is not there: HTTP 404/405, unless the error object is
    about the model (an unknown model: the endpoint exists)."""
    if ex.status not in _NO_ENDPOINT:
        return False
    obj = ex.json()
    err = obj.get("error") if isinstance(obj, dict) else None
    return not (
        isinstance(err, dict)
        and any("model" in str(err.get(k, "")).lower() for k in ("code", "message", "param"))
    )


async def _chat_not_found(ctx: Context, ex: Exchange) -> Outcome | None:
    """A skip when the auth probe's 404/405 is the chat endpoint missing for every key (the
    right one too): not found is neither refused nor served."""
    if not endpoint_missing(ex):
        return None
    right = await ctx.client.send(ctx.chat("chat.en", ECHO_EN_PROMPT, stream=False))
    if not endpoint_missing(right):
        return None
    return _skipped(
        "not_offered",
        f"cannot tell whether keys are checked: POST {ctx.client.url(ex.probe)} answers HTTP "
        f"{ex.status} with the right key too (not found, which is neither refused nor served; "
        "is the base URL right?)",
    )


async def _like_the_right_key(ctx: Context, ex: Exchange) -> bool:
    """Whether ``ex`` is a request error (4xx, not 401/403/429) that the same request with the
    right key gets too: the error then comes from past the key check (an unknown model, a
    validation error), so the key ``ex`` carried (wrong, or none) was let through. Server
    errors and rate limits prove nothing (they may come before the key check)."""
    if ex.status is None or not 400 <= ex.status < 500 or ex.status in (*_REFUSED, 429):
        return False
    right = await ctx.client.send(_auth_probe(ctx, "key"))
    return right.status == ex.status


async def _wrong_key(ctx: Context) -> Outcome:
    if not ctx.client.key:
        return _skipped("no_key", "no --key given: cannot tell whether the target checks keys")
    ex = await ctx.client.send(_auth_probe(ctx, "wrong"))
    missing = await _chat_not_found(ctx, ex)
    if missing is not None:
        return missing
    advice = (
        "--key was given, so keys should be enforced: configure the target's API keys (to "
        "check an open target on purpose, run without --key)"
    )
    if await _like_the_right_key(ctx, ex):
        return _failed(
            ex,
            "wrong_key_accepted",
            f"a wrong key is let through: the same request gets HTTP {ex.status} with the "
            f"right key too, so the error comes from past the key check{_error_text(ex)}. "
            + advice,
        )
    if ex.status != 200:
        return _error_outcome(ex, (401,), "a wrong key")
    disguised = _error_in_200(ex, "a wrong key")
    if disguised is not None:
        return disguised
    no_key = await ctx.client.send(_auth_probe(ctx, "none"))
    also = (
        "; a request without any key is served too: the target checks no key at all"
        if no_key.status == 200 and not _refused(no_key)
        else ""
    )
    return _failed(
        ex,
        "wrong_key_accepted",
        f"a wrong key was accepted and answered (HTTP 200){also}. " + advice,
    )


async def _no_key(ctx: Context) -> Outcome:
    """Keys enforced (a wrong key is refused) must mean a request without any key is refused
    too: a check of the key only when one is sent lets everyone in."""
    if not ctx.client.key:
        return _skipped("no_key", "no --key given: cannot tell whether the target checks keys")
    ex = await ctx.client.send(_auth_probe(ctx, "none"))
    missing = await _chat_not_found(ctx, ex)
    if missing is not None:
        return missing
    if ex.status in _REFUSED:
        return _passed(ex, f"a request without a key is refused: HTTP {ex.status}{_error_text(ex)}")
    if ex.status == 200:
        disguised = _error_in_200(ex, "a request without a key")
        if disguised is not None:
            return disguised
    wrong = await ctx.client.send(_auth_probe(ctx, "wrong"))
    if not _refused(wrong):
        return _skipped(
            "not_enforced",
            f"a wrong key is not refused either (HTTP {wrong.status}, see auth.wrong_key), so "
            "there is no key check to get around",
        )
    bypass = (
        "keys are enforced only when one is sent, so anyone can use the target by sending "
        "none. Refuse a missing Authorization header with 401 too"
    )
    if ex.status == 200:
        return _failed(
            ex,
            "missing_key_accepted",
            "a request without any key was served (HTTP 200) although a wrong key is refused "
            f"(HTTP {wrong.status}): " + bypass,
        )
    if await _like_the_right_key(ctx, ex):
        return _failed(
            ex,
            "missing_key_accepted",
            f"a request without any key is let through although a wrong key is refused (HTTP "
            f"{wrong.status}): it gets HTTP {ex.status} like the same request with the right "
            f"key, an error from past the key check{_error_text(ex)}; " + bypass,
        )
    return _error_outcome(ex, (401,), "no key")


# -- models ------------------------------------------------------------------------------------


def models_probe(auth: str = "key", root: bool = False) -> Probe:
    """``GET /models`` on the base URL (or without ``/v1`` when ``root``)."""
    id = "models" if auth == "key" and not root else f"models.{'root' if root else auth}"
    return Probe(id, "GET", "/models", auth=auth, root=root)  # type: ignore[arg-type]


def _model_list_outcome(ex: Exchange) -> Outcome:
    fail = _http_failure(ex)
    if fail is not None:
        return fail
    obj = ex.json()
    if obj is None:
        return _failed(ex, "not_json", f"the body is not JSON ({ex.content_type})")
    problems = violations("model.list", obj)
    if problems:
        return _failed(
            ex, "contract_violation", "not an OpenAI model list: " + "; ".join(problems[:3])
        )
    if not obj["data"]:
        return _failed(ex, "no_models", "the model list is empty")
    ids = [m["id"] for m in obj["data"]]
    return _passed(ex, f"{len(ids)} models: {', '.join(ids[:8])}{' …' if len(ids) > 8 else ''}")


async def _models(ctx: Context) -> Outcome:
    return _model_list_outcome(await ctx.client.send(models_probe()))


async def _models_root(ctx: Context) -> Outcome:
    if ctx.client.root_url is None:
        return _skipped("not_offered", "the base URL does not end in /v1")
    ex = await ctx.client.send(models_probe(root=True))
    if ex.status == 404:
        return _failed(ex, "not_offered", "GET /models (without /v1) answers 404")
    return _model_list_outcome(ex)


async def _models_no_key(ctx: Context) -> Outcome:
    if not ctx.client.key:
        return _skipped("no_key", "no --key given: models.list already asked without a key")
    ex = await ctx.client.send(models_probe(auth="none"))
    if ex.status == 200:
        out = _model_list_outcome(ex)
        if out.status == "passed":  # a public list; whether chat needs a key: auth.no_key
            out.message = "the list is served without a key: " + out.message
        return out
    return _error_outcome(ex, (401,), "no key")


CORE_CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("models.list", "GET /models lists models in OpenAI form", True, _models),
    CheckSpec("models.root", "GET /models without /v1 answers the same list", False, _models_root),
    CheckSpec(
        "models.no_key",
        "Without a key: the list (open) or 401 in OpenAI form",
        True,
        _models_no_key,
    ),
    CheckSpec("auth.wrong_key", "A wrong key is refused with 401 in OpenAI form", True, _wrong_key),
    CheckSpec("auth.no_key", "A chat request without a key is refused too", True, _no_key),
    CheckSpec("chat.en", "English echo, not streamed", True, _echo_en),
    CheckSpec("chat.en.stream", "English echo, streamed", True, _echo_en_stream),
    CheckSpec("chat.zh", "Chinese echo, not streamed", True, _echo_zh),
    CheckSpec("chat.zh.stream", "Chinese echo, streamed", True, _echo_zh_stream),
    CheckSpec(
        "stream.framing",
        "SSE framing: `data: <json>` events and blank lines",
        True,
        _stream_framing,
    ),
    CheckSpec(
        "stream.contract", "Every chunk is a ChatCompletionChunk, one id", True, _stream_contract
    ),
    CheckSpec(
        "stream.role_first", "The first chunk carries the assistant role", True, _stream_role
    ),
    CheckSpec("stream.no_duplicates", "No text is re-sent across chunks", True, _stream_duplicates),
    CheckSpec(
        "stream.finish_reason", "Exactly one chunk carries a finish_reason", True, _stream_finish
    ),
    CheckSpec("stream.done", "The stream ends with `data: [DONE]`", True, _stream_done),
    CheckSpec(
        "stream.usage",
        "A final usage chunk with stream_options.include_usage",
        False,
        _stream_usage,
    ),
    CheckSpec(
        "wire.completion",
        "The completion carries every field OpenAI returns (refusal, annotations, …)",
        False,
        _wire_completion,
    ),
    CheckSpec(
        "wire.chunks",
        "Every chunk carries every field OpenAI returns (logprobs, usage: null, …)",
        False,
        _wire_chunks,
    ),
    CheckSpec(
        "reasoning.thinking", "A -thinking model streams reasoning_content", True, _reasoning
    ),
    CheckSpec("images.chat", "An image model answers with a fetchable image", True, _image_chat),
    CheckSpec(
        "images.chat.stream",
        "An image model, streamed, answers with a fetchable image",
        True,
        _image_chat_stream,
    ),
    CheckSpec(
        "images.generations",
        "/images/generations returns a fetchable image",
        True,
        _image_generations,
    ),
    CheckSpec("errors.bad_json", "Malformed JSON: 400 with an OpenAI error", True, _bad_json),
    CheckSpec(
        "errors.unknown_model", "Unknown model: 404 with an OpenAI error", True, _unknown_model
    ),
    CheckSpec("errors.oversize", "Oversized body: 413 with an OpenAI error", True, _oversize),
)
"""The chat, streaming, image, error and auth checks, in report order (the whole list, with
the agent checks and client profiles, is :data:`proxy.conformance.catalog.CHECKS`)."""
