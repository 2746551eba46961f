"""``qwen-record``: capture, replay, import, validate, list and generate cassettes (format v1);
infer upstream schemas and diff new traffic against them.

See docs/cassette-format.md for the file layout and the matching rules of the replay server;
``capture`` runs ``recorder/addon.py`` in mitmdump (docs/recording.md §1.4); ``schema`` and
``diff`` are ``recorder/schema.py`` (docs/recording.md §3).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from recorder.cassette import Cassette, CassetteError, load_all
from recorder.listen import listen_failure
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
@click.option("-v", "--verbose", is_flag=True, help="Log debug lines too (hang-ups, matching).")
def replay(
    cassettes: tuple[Path, ...],
    host: str,
    port: int,
    speed: float,
    fault_spec: str | None,
    verbose: bool,
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
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
    )
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    count = sum(len(c.interactions) for c in loaded)
    app = make_replay_app(loaded, speed=speed, fault=fault)
    banner = (
        f"Replaying {count} interactions from {len(loaded)} cassettes at http://{host}:{port}/"
        f" (speed {speed:g}, fault {fault or 'none'}); Ctrl-C stops."
    )
    try:  # the banner is printed once the port is really bound
        web.run_app(app, host=host, port=port, print=lambda _: click.echo(banner))
    except OSError as exc:
        reason = listen_failure(exc, host, port)
        if reason is None:
            raise
        click.echo(f"qwen-record: {reason}", err=True)
        sys.exit(2)


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
@click.option("--full", is_flag=True, help="Print whole prompts (newlines shown as \\n).")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON array of objects (whole prompts)."
)
def list_(cassettes: tuple[Path, ...], full: bool, as_json: bool) -> None:
    """Print one line per interaction in CASSETTES.

    Columns (tab-separated): cassette name, provenance kind, method, path, model, chat_type,
    user text (truncated to 40 characters unless --full), response status, content type, stream
    chunk count ('-' if not streamed). --json prints the same as objects (keys: cassette,
    provenance, method, path, model, chat_type, prompt, status, content_type, chunks).
    """
    import json

    try:
        loaded = load_all(cassettes)
    except CassetteError as exc:
        raise click.ClickException(str(exc)) from exc
    rows: list[dict[str, object]] = []
    for c in loaded:
        for inter in c.interactions:
            fp = fingerprint(inter.method, inter.uri, inter.request_body)
            rows.append(
                {
                    "cassette": c.name,
                    "provenance": c.provenance.kind,
                    "method": inter.method,
                    "path": normalise_path(inter.uri),
                    "model": fp.get("model"),
                    "chat_type": fp.get("chat_type"),
                    "prompt": fp.get("text"),
                    "status": inter.status,
                    "content_type": inter.content_type or None,
                    "chunks": None if inter.stream is None else len(inter.stream.chunks),
                }
            )
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for r in rows:
        prompt = r["prompt"]
        text = (
            ("-" if prompt is None else str(prompt).replace("\n", "\\n").replace("\t", "\\t"))
            if full
            else _short(prompt)
        )
        row = [
            str(r["cassette"]),
            str(r["provenance"]),
            str(r["method"]),
            str(r["path"]),
            _short(r["model"]),
            _short(r["chat_type"]),
            text,
            str(r["status"]),
            str(r["content_type"] or "-"),
            "-" if r["chunks"] is None else str(r["chunks"]),
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
    """Write the synthetic cassettes (built from docs/protocol.md) into a directory."""
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


# ------------------------------------------------------------------------------------------------
# capture: mitmdump with recorder/addon.py


def _mitmdump() -> str | None:
    """``mitmdump`` next to the running interpreter (same venv), else on ``PATH``."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "mitmdump"
    if beside.exists():
        return str(beside)
    return shutil.which("mitmdump")


def _addon_path() -> Path:
    return Path(__file__).resolve().parent / "addon.py"


def capture_command(
    *,
    mitmdump: str,
    mode: str,
    port: int,
    listen_host: str,
    out_dir: Path,
    per: str,
    hosts: str,
    record_all: bool,
    run_name: str | None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The mitmdump command line ``qwen-record capture`` runs (see its --help)."""
    cmd = [mitmdump, "-s", str(_addon_path()), "--listen-host", listen_host, "-p", str(port)]
    if mode != "regular":
        cmd += ["--mode", mode]
    cmd += [
        "--set",
        f"qwen_cassette_dir={out_dir}",
        "--set",
        f"qwen_hosts={hosts}",
        "--set",
        f"qwen_cassette_mode={per}",
        "--set",
        f"qwen_record_all={'true' if record_all else 'false'}",
    ]
    if run_name:
        cmd += ["--set", f"qwen_run_name={run_name}"]
    cmd += list(extra)
    return cmd


def _validate_mode(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value == "regular":
        return value
    if value.startswith("reverse:"):
        from urllib.parse import urlsplit

        url = urlsplit(value.removeprefix("reverse:"))
        if url.scheme in ("http", "https") and url.netloc:
            return value
    raise click.BadParameter(
        "expected 'regular' or 'reverse:URL' (e.g. reverse:https://chat.qwen.ai)"
    )


@main.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--mode",
    default="regular",
    show_default=True,
    callback=_validate_mode,
    help=(
        "'regular': an HTTP(S) proxy for a browser; 'reverse:URL': a reverse proxy in front of "
        "URL for scripted clients (point their base URL at http://HOST:PORT)."
    ),
)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--listen-host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--dir",
    "out_dir",
    default=Path("cassettes/captured"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where cassettes are written.",
)
@click.option(
    "--per",
    type=click.Choice(["chat", "run"]),
    default="chat",
    show_default=True,
    help="One cassette per chat (<run>-chat-<n>.json) or one for the whole run (<run>.json).",
)
@click.option(
    "--hosts",
    default=None,
    help=(
        "Comma-separated hosts to record [default: chat.qwen.ai; in reverse mode the "
        "upstream URL's host]."
    ),
)
@click.option("--record-all", is_flag=True, help="Record every path, not only /api/ calls.")
@click.option("--run-name", default=None, help="Cassette name prefix [default: capture-<time>].")
@click.option("--dry-run", is_flag=True, help="Print the mitmdump command and exit.")
@click.argument("mitmdump_args", nargs=-1, type=click.UNPROCESSED)
def capture(
    mode: str,
    port: int,
    listen_host: str,
    out_dir: Path,
    per: str,
    hosts: str | None,
    record_all: bool,
    run_name: str | None,
    dry_run: bool,
    mitmdump_args: tuple[str, ...],
) -> None:
    """Record chat.qwen.ai traffic into cassettes through mitmproxy until Ctrl-C.

    Starts `mitmdump -s recorder/addon.py` with the qwen_* options set; further MITMDUMP_ARGS
    (after `--`) are passed on, e.g. `-- --ssl-insecure` or `-- --set confdir=DIR`. Streamed
    answers are recorded chunk by chunk with timings; secrets are redacted before anything is
    written; files are replaced atomically, so Ctrl-C never leaves a half-written cassette.

    For a browser (regular mode): set its HTTP and HTTPS proxy to HOST:PORT and trust the
    mitmproxy CA, ~/.mitmproxy/mitmproxy-ca-cert.pem (created on the first start; or open
    http://mitm.it through the proxy).
    """
    import signal
    import subprocess
    from urllib.parse import urlsplit

    if hosts is None:
        if mode.startswith("reverse:"):
            hosts = urlsplit(mode.removeprefix("reverse:")).hostname or "chat.qwen.ai"
        else:
            hosts = "chat.qwen.ai"
    exe = _mitmdump()
    if exe is None:
        raise click.ClickException(
            "mitmdump not found; install the recorder extra: pip install 'qwen-gateway[recorder]'"
        )
    cmd = capture_command(
        mitmdump=exe,
        mode=mode,
        port=port,
        listen_host=listen_host,
        out_dir=out_dir,
        per=per,
        hosts=hosts,
        record_all=record_all,
        run_name=run_name,
        extra=mitmdump_args,
    )
    if dry_run:
        click.echo(" ".join(cmd))
        return
    click.echo(f"Recording {hosts} into {out_dir}/ (one cassette per {per}); Ctrl-C stops.")
    if mode == "regular":
        click.echo(
            f"Browser: use the proxy {listen_host}:{port} for HTTP and HTTPS, and trust the "
            "mitmproxy CA ~/.mitmproxy/mitmproxy-ca-cert.pem (or open http://mitm.it through "
            "the proxy)."
        )
    else:
        click.echo(f"Clients: use http://{listen_host}:{port} as the base URL.")
    click.echo("Check cassettes for secrets before sharing: grep -E 'eyJ|@' " + f"{out_dir}/*.json")
    # The child runs in its own process group, so a terminal's Ctrl-C reaches only us and is
    # forwarded exactly once (a second SIGINT would not hurt, but keeps the log clean).
    proc = subprocess.Popen(cmd, start_new_session=True)

    def forward(signum: int, frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if rc not in (0, -signal.SIGINT):
        raise SystemExit(rc if rc > 0 else 1)
    click.echo(f"Stopped; cassettes are in {out_dir}/")


# ------------------------------------------------------------------------------------------------
# schema / diff


@main.command()
@click.argument("cassettes", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    default=Path("schemas/upstream"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the schema files (one per endpoint, plus index.json).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 when the directory differs from what would be written.",
)
def schema(cassettes: tuple[Path, ...], out_dir: Path, check: bool) -> None:
    """Infer JSON Schemas (genson) of the traffic in CASSETTES, per endpoint and SSE frame kind.

    Files are deterministic (sorted keys), so the committed schemas/upstream/ is reproducible:
    `qwen-record schema cassettes/ -o schemas/upstream/`. Stale endpoint files are removed.
    """
    from recorder.schema import ENDPOINT_MARK, infer, render, write_schemas

    try:
        docs = infer(load_all(cassettes))
    except CassetteError as exc:
        raise click.ClickException(str(exc)) from exc
    if check:
        problems: list[str] = []
        for name, doc in sorted(docs.items()):
            path = out_dir / name
            if not path.exists():
                problems.append(f"missing {path}")
            elif path.read_text(encoding="utf-8") != render(doc):
                problems.append(f"differs {path}")
        for path in sorted(out_dir.glob("*.json")) if out_dir.is_dir() else []:
            if path.name not in docs and ENDPOINT_MARK in path.read_text(encoding="utf-8"):
                problems.append(f"stale {path}")
        for p in problems:
            click.echo(p, err=True)
        if problems:
            raise SystemExit(1)
        click.echo(f"{out_dir} is up to date ({len(docs) - 1} endpoints)")
        return
    paths = write_schemas(docs, out_dir)
    click.echo(f"Wrote {len(paths)} files ({len(docs) - 1} endpoints) to {out_dir}")


class _DiffUsageError(click.UsageError):
    exit_code = 3


class _DiffCommand(click.Command):
    """A command whose usage errors exit 3, keeping exit codes 1 and 2 for drift."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _DiffUsageError(exc.message, exc.ctx) from exc


def _is_schema_dir(path: Path) -> bool:
    """A directory written by ``qwen-record schema`` (it holds an index.json with endpoints)."""
    index = path / "index.json"
    if not (path.is_dir() and index.is_file()):
        return False
    try:
        import json

        return "endpoints" in json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


@main.command(cls=_DiffCommand)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--schemas",
    "schema_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="The baseline schema directory (written by `qwen-record schema`) "
    "[default: schemas/upstream, unless two recordings are given].",
)
@click.option(
    "--contract",
    "contract_file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="What the gateway reads (generated from proxy/qwen/contract.py); severities are "
    "judged by it [default: schemas/gateway_contract.json, else gateway_contract.json next to "
    "the schema folder]. Without one, severities are structural.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def diff(
    paths: tuple[Path, ...], schema_dir: Path | None, contract_file: Path | None, as_json: bool
) -> None:
    """Compare traffic with a baseline and report protocol drift, judged by what the gateway
    reads.

    \b
    qwen-record diff CASSETTES...            new traffic vs schemas/upstream/
    qwen-record diff CASSETTES... --schemas DIR
    qwen-record diff OLD NEW                 two recordings (cassette files or folders),
                                             no schemas needed; OLD may be a schema folder

    Breaking: something the gateway reads (schemas/gateway_contract.json) is gone, changed
    type or became unparseable; a content type never seen (where a stream was expected) or a
    new HTTP status >= 400 on an endpoint the gateway calls; an error code never seen; a value
    it depends on vanished (status finished, phase answer). Each names the feature that fails
    and how. Notable: new fields, frames, phases, enum values and endpoints. Info: everything on
    the request side (it describes the recording client, not the site), fields the gateway does
    not read that disappeared or changed, error answers seen, frame kinds absent from a sample.

    \b
    Exit codes:
      0  no drift (info items only)
      1  notable drift only
      2  breaking drift
      3  usage error, or cassettes/schemas/contract that cannot be read
    """
    import json

    from recorder.schema import DEFAULT_CONTRACT_FILE, Contract, by_key, infer, load_schemas
    from recorder.schema import diff as diff_schemas

    try:
        if schema_dir is None and len(paths) == 2:
            old, fresh = paths
            if _is_schema_dir(old):
                baseline = load_schemas(old)
            else:
                baseline = by_key(infer(load_all([old])))
            new = by_key(infer(load_all([fresh])))
        else:
            baseline = load_schemas(schema_dir or Path("schemas/upstream"))
            new = by_key(infer(load_all(paths)))
        if contract_file is None:
            candidates = [Path("schemas/gateway_contract.json")]
            if schema_dir is not None:
                candidates.append(schema_dir.parent / "gateway_contract.json")
            candidates.append(DEFAULT_CONTRACT_FILE)
            contract_file = next((c for c in candidates if c.is_file()), candidates[0])
        contract = Contract.load(contract_file) if contract_file.is_file() else None
    except (CassetteError, OSError, ValueError) as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(3) from exc
    if contract is None:
        click.echo(
            f"warning: {contract_file} not found; severities are structural, not judged by "
            "what the gateway reads",
            err=True,
        )
    report = diff_schemas(baseline, new, contract)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        click.echo(report.text(), nl=False)
    raise SystemExit(report.exit_code)
