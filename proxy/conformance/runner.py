"""Running the checks against one target: discovery, selection, concurrency, the report.

:func:`run_checks` first reads the target's model list (``GET {base_url}/models``) to learn what
it offers (:func:`pick_models`), then runs every selected check concurrently; checks that read the
same answer share one request, and at most ``concurrency`` requests are in flight. It returns a
:class:`~proxy.conformance.report.Report`. :func:`run_checks_sync` is the blocking twin and
:func:`assert_conformant` the form for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from importlib import metadata
from typing import Any

import aiohttp

from proxy.conformance.catalog import CHECKS
from proxy.conformance.checks import (
    Capabilities,
    CheckSpec,
    Context,
    Outcome,
    endpoint_missing,
    models_probe,
)
from proxy.conformance.probes import Client, Exchange, Probe
from proxy.conformance.profiles import profile_names
from proxy.conformance.report import CheckResult, Report

__all__ = [
    "NotAnOpenAIAPIError",
    "ProgressCallback",
    "TargetUnreachableError",
    "assert_conformant",
    "check_ids",
    "pick_models",
    "run_checks",
    "run_checks_sync",
]

ProgressCallback = Callable[[CheckResult, int, int], None]
"""Called as each check finishes: ``(result, finished so far, total)``."""

DEFAULT_OVERSIZE_BYTES = 16 * 1024 * 1024
"""Size of the oversized-body probe: above our proxy's 10 MiB default limit."""

_ROLE_SUFFIXES = (
    "-thinking",
    "-search",
    "-image",
    "-image-edit",
    "-video",
    "-draw",
    "-deep-research",
)
_IMAGE_SUFFIXES = ("-image", "-draw")


class TargetUnreachableError(ConnectionError):
    """The target could not be reached at all (connection refused, DNS, timeout)."""


class NotAnOpenAIAPIError(ValueError):
    """``GET {base_url}/models`` answered a web page (HTML with a 2xx status): the target is
    not an OpenAI-compatible API (a web site, a wrong base URL), so no check is run."""


_MODEL_FREE = ("models.", "auth.", "errors.")
"""Checks that need no model from the list (the rest are skipped when the list is empty)."""


def _is_html(ex: Exchange) -> bool:
    head = ex.body.lstrip()[:15].lower()
    return ex.content_type in ("text/html", "application/xhtml+xml") or head.startswith(
        (b"<!doctype html", b"<html")
    )


async def _v1_hint(client: Client, what: str) -> str | None:
    """A note when the base URL probably lacks ``/v1``: ``{base}/v1/models`` answers although
    ``what`` (a 404 on the base URL as given) did not. Sends that one extra request."""
    if client.base_url.endswith("/v1"):
        return None
    probe = Probe("models.v1", "GET", "/v1/models")
    ex = await client.send(probe)
    if ex.status is None or ex.status in (404, 405) or ex.json() is None:
        return None
    return (
        f"{what}, but GET {client.url(probe)} answers HTTP {ex.status}: the base URL probably "
        f"needs /v1 at the end. Run again with {client.base_url}/v1."
    )


def check_ids() -> list[str]:
    """The ids of every check, in report order."""
    return [c.id for c in CHECKS]


def _version() -> str:
    try:
        return metadata.version("qwen-gateway")
    except metadata.PackageNotFoundError:  # pragma: no cover - source checkout
        return "0+unknown"


def _matches(check_id: str, patterns: Iterable[str]) -> bool:
    """``check_id`` matches a glob (``images.*``) or a dotted prefix (``images``)."""
    return any(fnmatchcase(check_id, p) or check_id.startswith(p + ".") for p in patterns)


def pick_models(listed: Sequence[str], preferred: Sequence[str] = ()) -> Capabilities:
    """Choose the models to probe from the listed ids, preferring ``preferred`` (``--models``).

    Text model: the first preferred, else listed, id without a variant suffix (``-thinking``,
    ``-search``, ``-image``…). Thinking model: a preferred ``…-thinking`` id, else
    ``<text>-thinking`` when listed, else the first listed ``-thinking`` id without
    ``-search``. Image model: a preferred ``…-image``/``…-draw`` id, else ``<text>-image`` when
    listed, else the first listed one (docs/landscape.md §2.2).
    """
    caps = Capabilities(models=list(listed))
    pool = [*preferred, *[m for m in listed if m not in preferred]]

    def plain(m: str) -> bool:
        return not any(s in m for s in _ROLE_SUFFIXES)

    caps.text_model = next((m for m in pool if plain(m)), pool[0] if pool else None)
    text = caps.text_model
    thinking = [m for m in pool if m.endswith("-thinking")]
    caps.thinking_model = next(
        (m for m in thinking if m in preferred),
        f"{text}-thinking" if f"{text}-thinking" in listed else (thinking[0] if thinking else None),
    )
    images = [m for m in pool if m.endswith(_IMAGE_SUFFIXES)]
    caps.image_model = next(
        (m for m in images if m in preferred),
        f"{text}-image" if f"{text}-image" in listed else (images[0] if images else None),
    )
    if caps.thinking_model is None:
        caps.reasons["thinking"] = "the target lists no model ending in -thinking"
    if caps.image_model is None:
        caps.reasons["image"] = "the target lists no image model (no id ending in -image or -draw)"
    if text is None:
        caps.reasons["text"] = "the target lists no model and none was given with --models"
    return caps


def _listed_ids(obj: Any) -> list[str]:
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, list):
        return []
    return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


async def run_checks(
    base_url: str,
    key: str | None = None,
    models: Sequence[str] | None = None,
    *,
    timeout_s: float = 120.0,
    concurrency: int = 4,
    required: Sequence[str] = (),
    optional: Sequence[str] = (),
    skip: Sequence[str] = (),
    oversize_bytes: int = DEFAULT_OVERSIZE_BYTES,
    url_rewrites: Mapping[str, str] | None = None,
    allow_private_urls: bool = False,
    strict: bool = False,
    profiles: Sequence[str] | None = None,
    on_result: ProgressCallback | None = None,
) -> Report:
    """Run the conformance checks against the OpenAI-compatible API at ``base_url``.

    ``base_url`` is what an OpenAI client is given (e.g. ``http://127.0.0.1:8000/v1``); ``key``
    the API key (``None``: send none, auth checks are skipped); ``models`` ids to prefer when
    picking the text/thinking/image models. ``timeout_s`` limits each request (seconds);
    ``concurrency`` the requests in flight. ``required``/``optional`` are check-id globs or
    dotted prefixes (``images``, ``stream.*``) that change whether a failure fails the run;
    ``skip`` leaves checks out (reported as skipped). ``oversize_bytes`` sizes the oversized-body
    probe; ``url_rewrites`` maps URL prefixes of returned images to where to fetch them
    instead; ``allow_private_urls`` lets image downloads reach private addresses.
    ``strict`` requires every field the OpenAI API returns (``message.refusal``,
    ``annotations``, ``logprobs``…; :data:`proxy.conformance.contract.EXACT_FIELDS`): the
    ``wire.*`` checks become required and every chat answer is held to them. ``profiles``
    names the client profiles to run (:func:`proxy.conformance.profiles.profile_names`);
    ``None`` runs every profile whose endpoints the target has. ``on_result`` is called as
    each check finishes.

    Raises :class:`TargetUnreachableError` when ``GET {base_url}/models`` cannot connect,
    :class:`NotAnOpenAIAPIError` when it answers a web page (HTML with a 2xx status), and
    ``ValueError`` for an unknown profile name. When the model list is not JSON at all, the
    oversized-body probe is left out (the target may be someone's web site) and a note says
    so; when it is empty (and ``models`` names none), the checks that need a model are
    skipped (``no_models``); a base URL that seems to lack ``/v1`` gets a note.
    """
    unknown = sorted(set(profiles or ()) - set(profile_names()))
    if unknown:
        raise ValueError(f"unknown profile(s) {unknown}; profiles: {profile_names()}")
    if strict:
        required = [*required, "wire"]
    started = datetime.now(UTC).replace(microsecond=0).isoformat()
    t0 = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(timeout_s, 30.0))
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=True) as session:
        client = Client(session, base_url, key, timeout_s=timeout_s, concurrency=concurrency)
        listing = await client.send(models_probe())
        if listing.status is None:
            raise TargetUnreachableError(f"{client.url(listing.probe)}: {listing.error}")
        listed = listing.json()
        models_url = client.url(listing.probe)
        if listed is None and listing.status is not None and 200 <= listing.status < 300:
            if _is_html(listing):
                raise NotAnOpenAIAPIError(
                    f"GET {models_url} answered {listing.content_type or 'an HTML page'} "
                    f"(HTTP {listing.status}), not an OpenAI model list: this is a web page, not "
                    "an OpenAI-compatible API. Is the base URL right? (OpenAI clients are given "
                    "the URL that ends in /v1.)"
                )
        caps = pick_models(_listed_ids(listed), list(models or ()))
        notes = []
        if key is None and listing.status in (401, 403):
            notes.append(
                f"The target wants an API key: GET /models answered HTTP {listing.status} without "
                "one, so most checks below fail for that reason alone. Run again with --key "
                "(or QWEN_PROXY_CHECK_KEY)."
            )
        hint = None
        if listing.status == 404:
            hint = await _v1_hint(client, f"GET {models_url} answers HTTP 404")
            if hint:
                notes.append(hint)
        not_api: str | None = None
        if listed is None and listing.status not in (401, 403):
            not_api = (
                f"GET {models_url} answered HTTP {listing.status} with "
                f"{listing.content_type or 'an untyped body'}, not JSON: the target may not be "
                "an OpenAI-compatible API"
            )
            notes.append(
                f"{not_api}, so the oversized-body probe ({oversize_bytes} bytes) is left out."
            )
        no_models: str | None = None
        if caps.text_model is None and listing.status == 200 and isinstance(listed, dict):
            no_models = (
                f"the target lists no model (GET {models_url} returned an empty list) and none "
                "was given with --models: there is no model to ask"
            )
        ctx = Context(
            client=client,
            caps=caps,
            session=session,
            oversize_bytes=oversize_bytes,
            url_rewrites=dict(url_rewrites or {}),
            allow_private_urls=allow_private_urls,
            image_timeout_s=min(timeout_s, 60.0),
            strict=strict,
            profiles=frozenset(profiles) if profiles is not None else None,
        )
        results: dict[str, CheckResult] = {}

        async def one(spec: CheckSpec) -> None:
            is_required = (spec.required or _matches(spec.id, required)) and not _matches(
                spec.id, optional
            )
            if _matches(spec.id, skip):
                outcome = Outcome("skipped", "not_requested", "left out with --skip")
            elif no_models is not None and not spec.id.startswith(_MODEL_FREE):
                outcome = Outcome("skipped", "no_models", no_models)
            elif not_api is not None and spec.id == "errors.oversize":
                outcome = Outcome("skipped", "not_api", f"left out: {not_api}")
            else:
                try:
                    outcome = await spec.run(ctx)
                except Exception as exc:  # a bug in a check must not hide the others
                    outcome = Outcome("error", "harness_error", f"{type(exc).__name__}: {exc}")
            result = _result(spec, outcome, is_required)
            results[spec.id] = result
            if on_result is not None:
                on_result(result, len(results), len(CHECKS))

        async with asyncio.TaskGroup() as tg:
            for spec in CHECKS:
                tg.create_task(one(spec))
        chat = client.answer("chat.en")
        if hint is None and chat is not None and chat.status == 404 and endpoint_missing(chat):
            what = f"POST {client.url(chat.probe)} answers HTTP 404 with the right key"
            notes.append(
                await _v1_hint(client, what)
                or f"{what}: there is no chat endpoint at this base URL, so most checks below "
                "fail for that reason alone (OpenAI clients are given the URL that ends in /v1)."
            )
    return Report(
        target=base_url,
        strict=strict,
        started_at=started,
        duration_s=time.perf_counter() - t0,
        harness_version=_version(),
        capabilities={
            "models": caps.models,
            "text_model": caps.text_model,
            "thinking_model": caps.thinking_model,
            "image_model": caps.image_model,
            "reasons": caps.reasons,
        },
        results=[results[c.id] for c in CHECKS],
        notes=notes,
        secrets=[key] if key else [],
    )


def _result(spec: CheckSpec, outcome: Outcome, required: bool) -> CheckResult:
    ex = outcome.exchange
    return CheckResult(
        id=spec.id,
        title=spec.title,
        status=outcome.status,
        required=required,
        diagnosis=outcome.diagnosis,
        message=outcome.message,
        request=ex.request if ex is not None else None,
        evidence=ex.evidence(notes=outcome.notes) if ex is not None else None,
        ttft_s=outcome.ttft_s,
        total_s=ex.total_s if ex is not None else None,
    )


def run_checks_sync(base_url: str, key: str | None = None, **kw: Any) -> Report:
    """:func:`run_checks` for code without an event loop (starts and closes its own)."""
    return asyncio.run(run_checks(base_url, key, **kw))


async def assert_conformant(base_url: str, key: str | None = None, **kw: Any) -> Report:
    """Run the checks; raise ``AssertionError`` with the Markdown of the failures when a
    required check failed, else return the report. Keyword arguments go to :func:`run_checks`.
    """
    report = await run_checks(base_url, key, **kw)
    if report.exit_code() != 0:
        failed = ", ".join(f"{r.id} ({r.diagnosis})" for r in report.required_failures())
        raise AssertionError(f"required checks failed: {failed}\n\n{report.to_markdown()}")
    return report
