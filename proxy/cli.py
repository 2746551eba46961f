"""``qwen-proxy``: the command line of the OpenAI-compatible gateway.

``qwen-proxy serve`` runs the proxy; ``qwen-proxy serve --offline`` serves the recorded
cassettes in ``cassettes/`` instead of calling chat.qwen.ai. Settings come from flags, then
``QWEN_PROXY_*`` environment variables, then a TOML file (``--config``), then defaults
(:mod:`proxy.config`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import click
import structlog
from pydantic import ValidationError

from proxy.config import Settings, load_settings

__all__ = ["main"]

_SECRET_KEYS = frozenset({"token", "tokens", "authorization", "cookie", "cookies", "api_key"})


def _drop_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "<redacted>"
    return event


def configure_logging(level: str, fmt: str) -> None:
    """Route structlog and stdlib logging to stderr, as console lines or JSON lines."""
    lvl = getattr(logging, level.upper())
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(message)s")
    logging.getLogger("aiohttp.access").setLevel(lvl)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


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
    except (ValidationError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from None
    run(settings)


def run(settings: Settings) -> None:
    """Configure logging and serve ``settings`` until interrupted."""
    from aiohttp import web

    from proxy.app import make_app

    configure_logging(settings.log_level, settings.log_format)
    app = make_app(settings)
    mode = "offline (cassettes)" if settings.replay else settings.upstream_url
    click.echo(
        f"qwen-proxy: OpenAI API at http://{settings.host}:{settings.port}/v1  upstream: {mode}",
        err=True,
    )
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        loop=_new_loop(),
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (Linux, macOS): a faster event loop for the relay."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


if __name__ == "__main__":  # pragma: no cover
    main()
