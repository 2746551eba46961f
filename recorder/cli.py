"""``qwen-record``: replay, import, validate, list and generate cassettes (format v1).

See docs/cassette-format.md for the file layout and the matching rules of the replay server.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from pathlib import Path

import click

from recorder.cassette import Cassette, CassetteError, load_all
from recorder.matching import fingerprint, normalise_path

__all__ = ["main"]

_TEXT_WIDTH = 40


def _expand(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.glob("*.json")) if p.is_dir() else [p])
    return files


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Record, import, check and replay chat.qwen.ai cassettes (format v1).

    A cassette is a vcrpy-compatible JSON file of recorded HTTP interactions; streamed (SSE)
    bodies keep their chunk boundaries and timings. See docs/cassette-format.md.
    """


@main.command()
@click.argument("cassettes", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8001, show_default=True, type=int, help="TCP port to listen on.")
@click.option(
    "--speed",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="Timing factor: 1 = recorded timing, 2 = twice as fast, 0 = no delays at all.",
)
@click.option(
    "--fault",
    "fault_spec",
    metavar="SPEC",
    default=None,
    help=(
        "Distort streamed bodies: split_utf8 (split a UTF-8 character across writes), "
        "bytewise (one byte per write), coalesce (whole body in one write), "
        "drop_after:N (send N bytes, then drop the connection)."
    ),
)
def replay(
    cassettes: tuple[Path, ...], host: str, port: int, speed: float, fault_spec: str | None
) -> None:
    """Serve CASSETTES (files or directories of *.json) as a fake chat.qwen.ai until Ctrl-C.

    Requests are matched on method, path and, for chat/completions and chats/new, the JSON
    fields listed in docs/cassette-format.md; a miss answers HTTP 404 with a JSON body naming
    the closest recorded request.
    """
    from aiohttp import web

    from recorder.replay import Fault, make_replay_app

    try:
        fault = Fault.parse(fault_spec) if fault_spec else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from exc
    try:
        loaded = load_all(cassettes)
    except CassetteError as exc:
        raise click.ClickException(str(exc)) from exc
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    count = sum(len(c.interactions) for c in loaded)
    app = make_replay_app(loaded, speed=speed, fault=fault)
    click.echo(
        f"Replaying {count} interactions from {len(loaded)} cassettes at http://{host}:{port}/"
        f" (speed {speed:g}, fault {fault or 'none'}); Ctrl-C stops."
    )
    web.run_app(app, host=host, port=port, print=None)


@main.command("import")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--har",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Import a HAR 1.2 file instead of REQUEST RESPONSE pairs.",
)
@click.option(
    "--host",
    default="chat.qwen.ai",
    show_default=True,
    help="With --har: keep only entries for this host and its subdomains ('' keeps all).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Cassette file to write (replaced atomically).",
)
@click.option("--name", default=None, help="Cassette name [default: the output file's stem].")
@click.option("--description", default=None, help="One-line description of the scenario.")
def import_(
    files: tuple[Path, ...],
    har: Path | None,
    host: str,
    output: Path,
    name: str | None,
    description: str | None,
) -> None:
    """Build a captured cassette from REQUEST RESPONSE file pairs or from --har FILE.

    A REQUEST file is the .http format: optional '#' comment lines, 'METHOD URL', header lines,
    a blank line, the body. A RESPONSE file is the raw body; SSE text becomes a streamed
    interaction with one chunk per event. Secrets are replaced by <REDACTED:kind:n>.
    """
    from recorder.importers import CaptureFormatError, build_cassette, import_har, import_http_pair
    from recorder.redact import Redactor

    redactor = Redactor()
    try:
        if har is not None:
            if files:
                raise click.UsageError("give either --har FILE or REQUEST RESPONSE pairs, not both")
            interactions = import_har(har, redactor=redactor, host=host or None)
            sources: list[Path] = [har]
            if not interactions:
                raise click.ClickException(f"{har}: no entries for host {host!r}")
        else:
            if not files or len(files) % 2:
                raise click.UsageError("expected REQUEST RESPONSE pairs (an even number of files)")
            pairs = list(zip(files[::2], files[1::2], strict=True))
            interactions = [import_http_pair(q, r, redactor=redactor) for q, r in pairs]
            sources = list(files)
        cassette = build_cassette(
            name=name or output.stem,
            description=description or "Imported from " + ", ".join(s.name for s in sources),
            interactions=interactions,
            sources=sources,
        )
        path = cassette.save(output)
    except (CaptureFormatError, CassetteError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Wrote {path} ({len(interactions)} interactions)")


@main.command()
@click.argument("cassettes", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def validate(cassettes: tuple[Path, ...]) -> None:
    """Check every cassette file (directories give their *.json) against format v1.

    Prints one line per valid file and every problem of the others; exits 1 on any problem.
    """
    failed = 0
    for f in _expand(cassettes):
        try:
            c = Cassette.load(f)
        except CassetteError as exc:
            failed += 1
            click.echo(f"FAIL {f}", err=True)
            for problem in exc.problems:
                click.echo(f"  - {problem}", err=True)
            continue
        click.echo(f"ok   {f} ({c.name}: {len(c.interactions)} interactions)")
    if failed:
        raise SystemExit(1)


def _short(text: object) -> str:
    if text is None:
        return "-"
    s = str(text).replace("\n", " ")
    return s if len(s) <= _TEXT_WIDTH else s[: _TEXT_WIDTH - 1] + "…"


@main.command("list")
@click.argument("cassettes", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def list_(cassettes: tuple[Path, ...]) -> None:
    """Print one line per interaction in CASSETTES.

    Columns (tab-separated): cassette name, provenance kind, method, path, model, chat_type,
    user text (truncated), response status, content type, stream chunk count ('-' if not
    streamed).
    """
    try:
        loaded = load_all(cassettes)
    except CassetteError as exc:
        raise click.ClickException(str(exc)) from exc
    for c in loaded:
        for inter in c.interactions:
            fp = fingerprint(inter.method, inter.uri, inter.request_body)
            chunks = "-" if inter.stream is None else str(len(inter.stream.chunks))
            row = [
                c.name,
                c.provenance.kind,
                inter.method,
                normalise_path(inter.uri),
                _short(fp.get("model")),
                _short(fp.get("chat_type")),
                _short(fp.get("text")),
                str(inter.status),
                inter.content_type or "-",
                chunks,
            ]
            click.echo("\t".join(row))


@main.command()
@click.option(
    "-o",
    "--output",
    "out_dir",
    default=Path("cassettes"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the synthetic cassettes into.",
)
def synth(out_dir: Path) -> None:
    """Write the synthetic cassettes (built from PROTOCOL.md) into a directory."""
    try:
        module = importlib.import_module("recorder.synthetic")
    except ModuleNotFoundError as exc:
        if exc.name != "recorder.synthetic":
            raise
        raise click.ClickException(
            "recorder.synthetic is not available in this checkout; synthetic cassettes cannot "
            "be generated"
        ) from exc
    paths = module.write_all(out_dir)
    for p in paths:
        click.echo(f"Wrote {p}")
    click.echo(f"{len(paths)} cassettes in {out_dir}")
