"""``qwen-proxy``: the command line of the OpenAI-compatible gateway.

``qwen-proxy serve`` runs the proxy; ``qwen-proxy serve --offline`` serves the recorded
cassettes in ``cassettes/`` instead of calling chat.qwen.ai. ``qwen-proxy check`` runs the
conformance probes against any OpenAI-compatible Qwen proxy; ``qwen-proxy doctor`` records them
through this gateway and ties each failure to protocol drift (:mod:`proxy.doctor`). Settings
come from flags, then
``QWEN_PROXY_*`` environment variables, then a TOML file (``--config``), then defaults
(:mod:`proxy.config`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import sys
import time
import weakref
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, NoReturn, TextIO

import click
import orjson
import structlog

from proxy.batch import IterationBatch
from proxy.config import ConfigError, Settings, load_settings, unknown_env_vars

__all__ = ["main"]

_SECRET_KEYS = frozenset({"token", "tokens", "authorization", "cookie", "cookies", "api_key"})


def _drop_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in event:
        # log keys are lower-case identifiers: lower-casing only keys with capitals is enough
        if key in _SECRET_KEYS or (not key.islower() and key.lower() in _SECRET_KEYS):
            event[key] = "<redacted>"
    return event


def _timestamper() -> Any:
    """A structlog processor adding ``timestamp`` (ISO 8601, UTC, microseconds, ``Z``), like
    ``TimeStamper(fmt="iso", utc=True)`` but formatting the date and time once per second.
    ``now`` (epoch seconds, default: the current time) stamps an event logged earlier."""
    second = -1
    prefix = ""

    def stamp(
        _: Any, __: str, event: MutableMapping[str, Any], now: float | None = None
    ) -> MutableMapping[str, Any]:
        nonlocal second, prefix
        if now is None:
            now = time.time()
        sec = int(now)
        if sec != second:
            second, prefix = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        event["timestamp"] = f"{prefix}.{int((now - sec) * 1_000_000):06d}Z"
        return event

    return stamp


def _json_line(obj: Any, **_: Any) -> str:
    """One JSON log line (orjson; values it cannot encode are written as ``str``)."""
    return orjson.dumps(obj, default=str).decode()


def _console_line(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """A plain console line, the layout of structlog's ``ConsoleRenderer`` without colours:
    ``<time> [<level>] <event> key=value…`` (keys sorted, strings quoted), then the traceback
    of ``exc_info`` if any. About four times cheaper: one such line is written per request."""
    ts = event.pop("timestamp", "")
    level = event.pop("level", "")
    name = event.pop("event", "")
    exc = event.pop("exc_info", None)
    parts = [f"{ts} [{level:<9}] {name!s:<30}"]
    for key in sorted(event):
        value = event[key]
        parts.append(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
    line = " ".join(parts)
    if exc:
        import traceback

        info = sys.exc_info() if exc is True else exc
        if isinstance(info, BaseException):
            info = (type(info), info, info.__traceback__)
        if info[0] is not None:
            line += "\n" + "".join(traceback.format_exception(*info)).rstrip()
    return line


def configure_logging(
    level: str,
    fmt: str,
    secrets: list[str] | None = None,
    *,
    stream: TextIO | None = None,
    cache: bool = True,
) -> None:
    """Route structlog and stdlib logging to ``stream`` (stderr), as console or JSON lines.

    ``secrets`` (configured tokens, cookie values, API keys) and their fragments are masked in
    every rendered line. ``cache=False`` lets a later call reconfigure (tests).
    """
    stream = stream or sys.stderr
    lvl = getattr(logging, level.upper())
    logging.basicConfig(level=lvl, stream=stream, format="%(message)s", force=not cache)
    if secrets:
        from proxy.secrets import SecretMasker

        stdlib_masker = SecretMasker(secrets)

        def mask_record(record: logging.LogRecord) -> bool:
            record.msg, record.args = stdlib_masker.mask(record.getMessage()), None
            if record.exc_info:
                import traceback

                text = "".join(traceback.format_exception(*record.exc_info))
                record.msg = f"{record.msg}\n{stdlib_masker.mask(text)}"
                record.exc_info, record.exc_text = None, None
            return True

        for handler in logging.getLogger().handlers:
            handler.addFilter(mask_record)
    logging.getLogger("aiohttp.access").setLevel(lvl)
    renderer: Any = (
        _json_render
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=True)
        if stream.isatty()
        else _console_line
    )
    line = _line_processor(renderer, secrets)
    structlog.configure(
        processors=[line],
        wrapper_class=_direct_logger_class(lvl, line, _LineBatch(stream, line)),
        logger_factory=structlog.WriteLoggerFactory(file=stream),  # (structlog's own path)
        cache_logger_on_first_use=cache,
    )


def _json_render(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """The JSON renderer: :func:`_json_line` of the event."""
    return _json_line(event)


_LEVEL_NAMES = {"warn": "warning", "exception": "error"}  # structlog's map_method_name


def _line_processor(renderer: Any, secrets: list[str] | None) -> Any:
    """The whole processor chain as one structlog processor: the level (as structlog's
    ``add_log_level``), the timestamp (:func:`_timestamper`), secret keys redacted
    (:func:`_drop_secrets`), ``renderer``, then the configured ``secrets`` and their fragments
    masked in the line (tracebacks included). ``now``: as :func:`_timestamper`."""
    stamp = _timestamper()
    masker = None
    if secrets:
        from proxy.secrets import SecretMasker

        masker = SecretMasker(secrets)

    def line(
        logger: Any, name: str, event: MutableMapping[str, Any], now: float | None = None
    ) -> str:
        event["level"] = _LEVEL_NAMES.get(name, name)
        event = _drop_secrets(logger, name, stamp(logger, name, event, now))
        text: str = renderer(logger, name, event)
        return masker.mask(text) if masker is not None else text

    return line


class _LineBatch:
    """Log lines of one event-loop iteration, rendered and written together at its end
    (:class:`proxy.batch.IterationBatch`).

    A line logged while a loop runs is stamped at once (its time is the call's) and kept; at
    the end of the iteration its lines are rendered in one pass and written with one ``write``
    and one ``flush``. Without a running loop (start-up, one-shot commands) a line is written at
    once; so is a line with a traceback (``exc_info``: the exception being handled is only known
    now), after the lines waiting. Rendering lines together instead of one per request in the
    middle of other work costs measurably less CPU under load
    (bench/README.md, "2026-11-29, last round"); lines keep their order, and the lines still
    waiting are written at exit (``atexit``).
    """

    __slots__ = ("__weakref__", "_batch", "_line", "_stream")

    def __init__(self, stream: TextIO, line: Any) -> None:
        self._stream = stream
        self._line = line
        self._batch: IterationBatch[tuple[str, MutableMapping[str, Any], float | None]] = (
            IterationBatch(self._write)
        )
        atexit.register(self._flush_at_exit, weakref.ref(self))

    def add(self, name: str, event: MutableMapping[str, Any]) -> None:
        """Write the line of ``event`` (logged with method ``name``)."""
        if "exc_info" in event:
            self._batch.flush()
            self._write([(name, event, None)])
        else:
            self._batch.add((name, event, time.time()))

    def _write(self, items: list[tuple[str, MutableMapping[str, Any], float | None]]) -> None:
        line = self._line
        lines = [line(None, name, event, now) for name, event, now in items]
        lines.append("")
        self._stream.write("\n".join(lines))
        self._stream.flush()

    @staticmethod
    def _flush_at_exit(ref: weakref.ref[_LineBatch]) -> None:
        batch = ref()
        if batch is not None:
            with contextlib.suppress(Exception):  # a stream already closed at exit
                batch._batch.flush()


def _direct_logger_class(min_level: int, line: Any, batch: _LineBatch) -> type:
    """structlog's filtering bound logger for ``min_level``, whose enabled ``debug`` to
    ``error`` methods hand the event to ``batch`` (rendered with ``line``, written at the end
    of the loop's iteration) when the logger has no bound context and its processors are
    ``[line]`` (as :func:`configure_logging` sets them): the line structlog's processor chain
    would write, without its generic steps (one such line is written per request). Anything
    else (bound context, ``%`` arguments, another configuration such as
    ``structlog.testing.capture_logs``) takes structlog's own path, written at once."""
    base = structlog.make_filtering_bound_logger(min_level)
    levels = {
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "warning": logging.WARNING,
        "error": logging.ERROR,
    }
    methods = {
        name: _direct_method(getattr(base, name), name, line, batch)
        for name, value in levels.items()
        if value >= min_level
    }
    return type(f"Direct{base.__name__}", (base,), methods)


def _direct_method(slow: Any, name: str, line: Any, batch: _LineBatch) -> Any:
    add = batch.add

    def method(self: Any, event: str, *args: Any, **kw: Any) -> Any:
        procs = self._processors
        if args or self._context or len(procs) != 1 or procs[0] is not line:
            return slow(self, event, *args, **kw)
        kw["event"] = event
        add(name, kw)
        return None

    method.__name__ = name
    return method


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qwen-gateway")
def main() -> None:
    """An OpenAI-compatible gateway to Qwen Chat (chat.qwen.ai)."""


@main.command()
@click.option("--host", default=None, help="Address to listen on [default: 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [default: 8000].")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML settings file [env: QWEN_PROXY_CONFIG].",
)
@click.option(
    "--upstream",
    default=None,
    help="chat.qwen.ai base URL [default: https://chat.qwen.ai; env: QWEN_PROXY_UPSTREAM_URL].",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Serve the recorded cassettes in ./cassettes instead of calling chat.qwen.ai.",
)
@click.option(
    "--replay",
    "replay",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Serve these cassette files or folders offline (repeatable).",
)
@click.option(
    "--reasoning",
    type=click.Choice(["field", "think_tags"]),
    default=None,
    help="Reasoning as `reasoning_content` (field) or inline <think> tags [default: field].",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
@click.option("--log-format", type=click.Choice(["console", "json"]), default=None)
@click.option("--access-log/--no-access-log", default=None, help="Log one line per request.")
def serve(
    host: str | None,
    port: int | None,
    config_file: Path | None,
    upstream: str | None,
    offline: bool,
    replay: tuple[Path, ...],
    reasoning: str | None,
    log_level: str | None,
    log_format: str | None,
    access_log: bool | None,
) -> None:
    """Run the proxy.

    Secrets come from the environment or the config file, never from flags (flags end up in
    shell history): QWEN_PROXY_TOKENS (chat.qwen.ai tokens, comma-separated) and
    QWEN_PROXY_API_KEYS (keys your clients must send).
    """
    replay_paths: list[Path] | None = list(replay) or None
    if offline and not replay_paths:
        replay_paths = [Path("cassettes")]
        if not replay_paths[0].is_dir():
            raise click.UsageError("--offline needs ./cassettes; run from the project folder")
    try:
        settings = load_settings(
            config_file,
            host=host,
            port=port,
            upstream_url=upstream,
            replay=replay_paths,
            reasoning=reasoning,
            log_level=log_level,
            log_format=log_format,
            access_log=access_log,
        )
    except (ConfigError, FileNotFoundError) as exc:
        _fail(str(exc))
    for warning in unknown_env_vars():
        click.echo(f"qwen-proxy: warning: {warning}", err=True)
    run(settings)


def _fail(message: str, status: int = 2) -> NoReturn:
    """Print ``qwen-proxy: <message>`` (each line prefixed) on stderr and exit."""
    for line in message.splitlines() or [""]:
        click.echo(f"qwen-proxy: {line}", err=True)
    sys.exit(status)


def run(settings: Settings) -> None:
    """Configure logging and serve ``settings`` until interrupted."""
    from aiohttp import web

    from proxy.app import make_app

    configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    app = make_app(settings)
    mode = "offline (cassettes)" if settings.replay else settings.upstream_url
    accounts = f"{len(settings.tokens)} account(s)" if settings.tokens else "no token"
    n_keys = len(settings.api_keys) + len(settings.keys)
    keys = f"{n_keys} API key(s) required" if n_keys else "open (no API key)"
    if settings.redis_url is not None:
        from proxy.store.redis import redacted_target

        keys += f"; state in Redis {redacted_target(settings.redis_url.get_secret_value())}"
    banner = (
        f"qwen-proxy: OpenAI API at http://{settings.host}:{settings.port}/v1  upstream: {mode}  "
        f"[{accounts}; {keys}]"
    )
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    main_task = loop.create_task(_serve(app, settings, banner))
    try:
        loop.run_until_complete(main_task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    except OSError as exc:
        from recorder.listen import listen_failure

        reason = listen_failure(exc, settings.host, settings.port)
        if reason is None:
            raise
        _fail(reason)
    finally:
        main_task.cancel()
        with contextlib.suppress(
            asyncio.CancelledError, web.GracefulExit, KeyboardInterrupt, OSError
        ):
            loop.run_until_complete(main_task)
        _cancel_leftovers(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks still pending once serving stopped (a connection still reading a
    refused request's body, background work) and let them unwind, as ``web.run_app`` does,
    so none is destroyed pending when the loop closes."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


async def _serve(app: Any, settings: Settings, banner: str) -> None:
    """Serve ``app`` (like ``aiohttp.web.run_app``) with :class:`proxy.guard.GatewayRunner`,
    whose connections answer HTTP-parser refusals as OpenAI errors, until cancelled; print
    ``banner`` once the port is really bound. Raises ``OSError`` when it cannot be bound."""
    from aiohttp import web

    from proxy.guard import GatewayRunner

    runner = GatewayRunner(
        app,
        handle_signals=True,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        click.echo(banner, err=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (Linux, macOS): a faster event loop for the relay."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _split_models(values: tuple[str, ...]) -> list[str]:
    return [m.strip() for v in values for m in v.split(",") if m.strip()]


def _parse_rewrites(values: tuple[str, ...]) -> dict[str, str]:
    rewrites: dict[str, str] = {}
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old.startswith(("http://", "https://")) or not new:
            raise click.UsageError(f"--rewrite-url wants FROM=TO with http(s) URLs, got {value!r}")
        rewrites[old] = new
    return rewrites


@main.command()
@click.argument("base_url")
@click.option(
    "--key",
    envvar="QWEN_PROXY_CHECK_KEY",
    default=None,
    help="API key of the target, sent as a Bearer token [env: QWEN_PROXY_CHECK_KEY]. "
    "Never printed.",
)
@click.option(
    "--models",
    multiple=True,
    help="Model ids to probe first (repeatable or comma-separated), e.g. qwen3-max,"
    "qwen3-max-thinking,qwen3-max-image [default: picked from /v1/models].",
)
@click.option(
    "--json",
    "json_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the report as JSON to this file.",
)
@click.option(
    "--markdown",
    "markdown_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the Markdown report to this file instead of stdout.",
)
@click.option(
    "--required",
    multiple=True,
    metavar="CHECK",
    help="Make checks required (a failure fails the run); an id, a glob (stream.*) or "
    "a prefix (images). Repeatable.",
)
@click.option(
    "--optional",
    multiple=True,
    metavar="CHECK",
    help="Make checks optional (reported, never fail the run). Wins over --required.",
)
@click.option("--skip", multiple=True, metavar="CHECK", help="Leave checks out. Repeatable.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.1),
    default=120.0,
    show_default=True,
    help="Seconds allowed per request.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Requests in flight at once.",
)
@click.option(
    "--oversize-bytes",
    type=click.IntRange(min=1),
    default=16 * 1024 * 1024,
    show_default=True,
    help="Size of the oversized-body probe's padding.",
)
@click.option(
    "--rewrite-url",
    "rewrite_url",
    multiple=True,
    metavar="FROM=TO",
    help="Fetch returned image URLs starting with FROM from TO instead (e.g. a CDN "
    "mirrored locally). Repeatable.",
)
@click.option(
    "--allow-private-urls",
    is_flag=True,
    help="Let image downloads reach private and loopback addresses.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Require every field the OpenAI API returns (message.refusal, annotations, logprobs, "
    "usage details…): the wire.* checks become required and every answer is held to them.",
)
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    metavar="NAME",
    help="Run only these client profiles (cherry-studio, open-webui, langchain, cline, "
    "claude-code, codex-cli). Repeatable [default: every profile whose endpoints the target "
    "has]. A named profile whose endpoint the target lacks fails the run (not_offered).",
)
@click.option(
    "--compare",
    "compare_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="An earlier --json report: print what got better or worse; exit 1 on a regression "
    "(a check that now fails, a capability lost: a check that passed and is now skipped or "
    "gone, or a time to first token grown beyond noise).",
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a self-contained HTML report (verdict, table, failures, timing chart).",
)
def check(
    base_url: str,
    key: str | None,
    models: tuple[str, ...],
    json_file: Path | None,
    markdown_file: Path | None,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    skip: tuple[str, ...],
    timeout_s: float,
    concurrency: int,
    oversize_bytes: int,
    rewrite_url: tuple[str, ...],
    allow_private_urls: bool,
    strict: bool,
    profiles: tuple[str, ...],
    compare_file: Path | None,
    html_file: Path | None,
) -> None:
    """Check an OpenAI-compatible Qwen proxy at BASE_URL (e.g. http://127.0.0.1:8000/v1).

    Sends fixed probes (model list, auth, English and Chinese echo, streaming, reasoning,
    images, errors), validates every answer against the OpenAI contract and prints a Markdown
    report. Progress goes to stderr. Exit status: 0 when every required check passed (skipped
    checks do not fail), 1 when a required check failed (or, with --compare, anything got
    worse), 2 for usage errors, when the target cannot be reached, or when GET BASE_URL/models
    answers a web page (HTML) instead of an OpenAI API (no check is run then).
    """
    import asyncio
    import json

    from proxy.conformance import (
        CheckResult,
        NotAnOpenAIAPIError,
        Report,
        TargetUnreachableError,
        check_ids,
        run_checks,
    )
    from proxy.conformance.compare import Comparison, compare
    from proxy.conformance.html import to_html
    from proxy.conformance.profiles import profile_names

    if not base_url.startswith(("http://", "https://")):
        raise click.UsageError(f"BASE_URL must be an http(s) URL, got {base_url!r}")
    ids = check_ids()
    for flag, patterns in (("--required", required), ("--optional", optional), ("--skip", skip)):
        for pattern in patterns:
            from fnmatch import fnmatchcase

            if not any(fnmatchcase(i, pattern) or i.startswith(pattern + ".") for i in ids):
                raise click.UsageError(
                    f"{flag} {pattern!r} matches no check; checks: {', '.join(ids)}"
                )
    rewrites = _parse_rewrites(rewrite_url)
    for name in profiles:
        if name not in profile_names():
            raise click.UsageError(
                f"--profile {name!r} is not a profile; profiles: {', '.join(profile_names())}"
            )
    old: Report | None = None
    if compare_file is not None:
        try:
            old = Report.from_dict(json.loads(compare_file.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise click.UsageError(f"--compare {compare_file}: {exc}") from exc
    tty = sys.stderr.isatty()
    bar_cm: Any = (
        click.progressbar(length=len(ids), label="checking", file=sys.stderr) if tty else None
    )
    bar = bar_cm.__enter__() if bar_cm is not None else None
    marks = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP", "error": "ERROR"}

    def progress(result: CheckResult, done: int, total: int) -> None:
        if bar is not None:
            bar.update(1)
            return
        timing = f" {result.total_s:.2f}s" if result.total_s is not None else ""
        click.echo(
            f"[{done:2d}/{total}] {marks[result.status]:5s} {result.id} ({result.diagnosis})"
            f"{timing}",
            err=True,
        )

    try:
        report = asyncio.run(
            run_checks(
                base_url,
                key or None,
                _split_models(models),
                timeout_s=timeout_s,
                concurrency=concurrency,
                required=required,
                optional=optional,
                skip=skip,
                oversize_bytes=oversize_bytes,
                url_rewrites=rewrites,
                allow_private_urls=allow_private_urls,
                strict=strict,
                profiles=list(profiles) or None,
                on_result=progress,
            )
        )
    except TargetUnreachableError as exc:
        click.echo(f"qwen-proxy check: cannot reach the target: {exc}", err=True)
        sys.exit(2)
    except NotAnOpenAIAPIError as exc:  # a web site: no check run, nothing uploaded to it
        click.echo(f"qwen-proxy check: not an OpenAI-compatible API: {exc}", err=True)
        sys.exit(2)
    finally:
        if bar_cm is not None:
            bar_cm.__exit__(None, None, None)
    comparison: Comparison | None = compare(old, report) if old is not None else None
    for note in report.notes:
        click.echo(f"qwen-proxy check: {report.mask(note)}", err=True)
    markdown = report.to_markdown()
    if comparison is not None:  # its messages come from the checks: masked like the report
        markdown = report.mask(markdown + "\n" + comparison.to_markdown())
    if json_file is not None:
        data = report.to_dict()
        if comparison is not None:
            data["comparison"] = comparison.to_dict()
        text = json.dumps(data, ensure_ascii=False, indent=2)
        _write_report(json_file, report.mask(text) + "\n")
    if markdown_file is not None:
        _write_report(markdown_file, markdown)
    else:
        click.echo(markdown, nl=False)
    if html_file is not None:
        _write_report(html_file, to_html(report, comparison))
    counts = report.counts()
    click.echo(
        f"qwen-proxy check: {'PASS' if report.exit_code() == 0 else 'FAIL'}: "
        f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped, "
        f"{counts['error']} errors",
        err=True,
    )
    code = report.exit_code()
    if comparison is not None:
        click.echo(
            f"qwen-proxy check: since {comparison.old_started_at}: "
            f"{len(comparison.regressions)} worse, {len(comparison.improvements)} better",
            err=True,
        )
        code = max(code, comparison.exit_code())
    sys.exit(code)


@main.command()
@click.option(
    "--url",
    default="http://127.0.0.1:8000",
    show_default=True,
    envvar="QWEN_PROXY_URL",
    help="The running gateway's base URL [env: QWEN_PROXY_URL].",
)
@click.option(
    "--admin-key",
    envvar="QWEN_PROXY_ADMIN_KEY",
    required=True,
    help="The gateway's admin_key [env: QWEN_PROXY_ADMIN_KEY].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON instead of a table.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds.")
def accounts(url: str, admin_key: str, as_json: bool, timeout: float) -> None:
    """Show the upstream accounts of a running gateway: state, rest, answers in flight, last
    error and token expiry (from GET /admin/accounts; tokens never appear)."""
    import json
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(
        url.rstrip("/") + "/admin/accounts", headers={"Authorization": f"Bearer {admin_key}"}
    )
    try:
        with opener.open(req, timeout=timeout) as resp:
            payload = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = ""
        try:
            detail = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        hint = " (is admin_key set on the gateway?)" if exc.code in (403, 404) else ""
        raise click.ClickException(f"{url}: HTTP {exc.code}{hint} {detail}".strip()) from None
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(format_accounts(payload["data"], now=float(payload.get("now") or 0)))
    if payload.get("store") == "degraded":
        click.echo("state store: degraded (Redis unreachable; in-process state)", err=True)


def format_accounts(rows: list[dict[str, Any]], *, now: float) -> str:
    """The ``qwen-proxy accounts`` table for ``/admin/accounts`` rows (times in UTC)."""
    from datetime import UTC, datetime

    def when(ts: Any) -> str:
        if not ts:
            return "-"
        return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M")

    header = ("LABEL", "STATE", "RESTS UNTIL", "IN FLIGHT", "LAST ERROR", "EXPIRES")
    table = [header]
    for r in rows:
        resting = r.get("resting_until")
        rest = (
            f"{when(resting)} ({r.get('rest_reason') or '?'})" if resting and resting > now else "-"
        )
        limit = r.get("max_inflight") or 0
        inflight = f"{r.get('inflight', 0)}/{limit}" if limit else str(r.get("inflight", 0))
        expiry = when(r.get("expires_at"))
        if r.get("state") == "expired":
            expiry += " (expired)"
        elif r.get("expires_soon"):
            expiry += " (soon)"
        table.append(
            (str(r["label"]), str(r["state"]), rest, inflight, r.get("last_error") or "-", expiry)
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML settings file [env: QWEN_PROXY_CONFIG] (tokens, upstream, ...).",
)
@click.option(
    "--upstream",
    default=None,
    help="The upstream to diagnose [default: the configured one, https://chat.qwen.ai].",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the recording and the report [default: doctor-<UTC time>].",
)
@click.option(
    "--schemas",
    "schema_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("schemas/upstream"),
    show_default=True,
    help="The baseline schemas the recording is diffed against.",
)
@click.option("--models", multiple=True, help="Model ids to probe first (as for `check`).")
@click.option("--skip", multiple=True, metavar="CHECK", help="Leave checks out. Repeatable.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.1),
    default=120.0,
    show_default=True,
    help="Seconds allowed per request.",
)
@click.option(
    "--rewrite-url",
    "rewrite_url",
    multiple=True,
    metavar="FROM=TO",
    help="Fetch returned image URLs starting with FROM from TO instead. Repeatable.",
)
@click.option(
    "--mitm-confdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="mitmproxy's configuration folder [default: ~/.mitmproxy].",
)
def doctor(
    config_file: Path | None,
    upstream: str | None,
    out_dir: Path | None,
    schema_dir: Path,
    models: tuple[str, ...],
    skip: tuple[str, ...],
    timeout_s: float,
    rewrite_url: tuple[str, ...],
    mitm_confdir: Path | None,
) -> None:
    """Diagnose a misbehaving gateway in one command.

    Starts the recorder (mitmdump with recorder/addon.py, reverse mode) in front of the
    upstream, runs the conformance probes through a gateway instance that talks through it,
    writes the recording as cassettes, diffs it against the baseline schemas (judged by what
    the gateway reads) and writes one report tying each failing check to the drift that
    explains it: OUT/doctor.md, OUT/doctor.json, OUT/cassettes/. Secrets are redacted in
    everything written. Exit status: 0 healthy, 1 a required check failed or drift is
    breaking, 2 the doctor could not run.
    """
    import asyncio
    from datetime import UTC, datetime

    from proxy.doctor import DoctorError, run_doctor

    try:
        settings = load_settings(config_file, upstream_url=upstream)
    except (ConfigError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from None
    if out_dir is None:
        out_dir = Path("doctor-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    configure_logging("warning", settings.log_format, cache=False)  # a one-shot command
    if not schema_dir.is_dir():
        raise click.UsageError(
            f"{schema_dir}: no baseline schemas; run from the project folder or give --schemas"
        )
    click.echo(
        f"qwen-proxy doctor: recording {settings.upstream_url} into {out_dir}/ ...", err=True
    )
    try:
        result = asyncio.run(
            run_doctor(
                settings,
                out_dir=out_dir,
                schema_dir=schema_dir,
                models=_split_models(models),
                skip=skip,
                timeout_s=timeout_s,
                url_rewrites=_parse_rewrites(rewrite_url),
                mitm_confdir=mitm_confdir,
            )
        )
    except DoctorError as exc:
        click.echo(f"qwen-proxy doctor: {exc}", err=True)
        sys.exit(2)
    for e in result.explanations:
        click.echo(e.verdict.replace("`", ""))
    summary = result.drift.get("summary", {})
    click.echo(
        f"qwen-proxy doctor: {'healthy' if result.exit_code == 0 else 'problems found'}: "
        f"{len(result.explanations)} failing check(s), {summary.get('breaking', 0)} breaking "
        f"drift; report: {out_dir / 'doctor.md'}",
        err=True,
    )
    sys.exit(result.exit_code)


def _write_report(path: Path, text: str) -> None:
    """Write a report atomically (temporary file, then ``os.replace``): never half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


if __name__ == "__main__":  # pragma: no cover
    main()
