"""`oldphoto archive`: the archive job (the `restore-archive` Prefect flow on Ray) run from the shell.

It is the same flow a deployment runs (`prefect deployment run 'restore-archive/on-demand' ...`), started
in this process: Prefect runs it against $PREFECT_API_URL when set, else a temporary local API; Ray is
$RAY_ADDRESS / --ray-address when given, else an embedded local session.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

import typer

from oldphoto.distributed.config import DEVICE_PER_POOL


def archive(
    source: str = typer.Argument(..., help="Scans to restore: a folder, file:///path or s3://bucket/prefix/."),
    destination: str = typer.Argument(..., help="Where results go: a folder, file:///path or s3://bucket/prefix/."),
    catalog: Optional[str] = typer.Option(None, "--catalog", help="Catalog URL, or secret:BLOCK (a Prefect Secret "
                                          "block) (default: $OLDPHOTO_CATALOG, else DESTINATION/catalog.sqlite for a "
                                          "local destination). A password in it never becomes a flow parameter."),
    scratch: str = typer.Option("auto", "--scratch", help="auto | on | off"),
    hr: bool = typer.Option(False, "--hr", help="High-resolution mode (512 px faces, patch attention)."),
    faces: bool = typer.Option(True, "--faces/--no-faces", help="Enhance faces."),
    colour: bool = typer.Option(False, "--colour", help="Write grey scans as RGB."),
    tone_match: bool = typer.Option(True, "--tone-match/--no-tone-match", help="As `oldphoto restore`."),
    tile: int = typer.Option(512, "--tile", help="Largest tile side for the restoration networks."),
    option: list[str] = typer.Option([], "--option", "-o", metavar="KEY=VALUE",
                                     help="Any other restore option (a field of oldphoto.pipeline.RestoreOptions, "
                                          "as the flows' `options`), e.g. -o structure_return=false -o "
                                          "colour_strength=0.5; repeatable; checked before the run starts."),
    weights: Optional[str] = typer.Option(None, "--weights", help="'default' (shipped), a weights folder, "
                                          "or 'official:/path/to/release' (default: $OLDPHOTO_WEIGHTS or shipped)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many items."),
    reprocess_failed: bool = typer.Option(False, "--reprocess-failed", help="Retry only the catalog's failed items."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (default: local)."),
) -> None:
    """Restore an archive folder or bucket with the restore-archive flow: Ray stage pools, catalog, summary."""
    try:
        options = parse_options(option)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--option") from None
    # no telemetry from a museum's machines (and no network to send it over)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    catalog = _catalog_arg(catalog, destination)
    _check_prefect_api()
    from oldphoto.reaper import start_reaper

    start_reaper()           # a kill -9 of this process leaves no Prefect API server or Ray agent running
    from rich.console import Console

    from oldphoto.progress import use_terminal

    use_terminal(Console(stderr=True))    # on a terminal the flow (run here, in-process) draws a progress bar
    from oldphoto.flows.restore_archive import restore_archive
    from oldphoto.models import MissingWeightsError

    try:
        state = restore_archive(source=source, destination=destination, catalog=catalog, scratch=scratch,
                                limit=limit, reprocess_failed=reprocess_failed, ray_address=ray_address,
                                weights=weights, faces=faces, hr=hr, colour=colour, tone_match=tone_match,
                                tile=tile, options=options or None, return_state=True)
        summary = state.result(raise_on_failure=False)
    except MissingWeightsError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2)
    if not isinstance(summary, dict):
        typer.echo(f"error: the run failed: {state.message or summary}", err=True)
        raise typer.Exit(1)
    c = summary["counts"]
    typer.echo(f"{c['done']} done, {c['failed']} failed, {c['skipped']} skipped -> {destination}")
    if not state.is_completed():
        typer.echo(f"run state: {state.name}: {state.message}", err=True)
    typer.echo(f"run summary: {summary.get('summary_uri')}")
    for f in summary.get("failures", []):
        typer.echo(f"  FAILED {f.get('name') or f.get('uri')}: {f.get('error')}", err=True)
    raise typer.Exit(0 if c["failed"] == 0 else 1)


def _catalog_arg(catalog: Optional[str], destination: str) -> Optional[str]:
    """The catalog the flow gets: DEST/catalog.sqlite for a local destination when none is named; a URL with a
    password goes through the environment instead (never a flow parameter, which Prefect stores)."""
    from sqlalchemy.engine import make_url

    from oldphoto.storage import is_remote

    if catalog is None and not os.environ.get("OLDPHOTO_CATALOG"):
        if is_remote(destination):
            typer.echo("error: no catalog: pass --catalog URL or set OLDPHOTO_CATALOG", err=True)
            raise typer.Exit(2)
        local = destination.removeprefix("file://")
        os.makedirs(local, exist_ok=True)
        catalog = "sqlite:///" + os.path.abspath(os.path.join(local, "catalog.sqlite"))
    if catalog is not None and not catalog.startswith("secret:"):
        try:
            secret = make_url(catalog).password is not None
        except Exception:
            typer.echo("error: --catalog is not a database URL", err=True)
            raise typer.Exit(2)
        if secret:       # never a flow parameter (Prefect stores those): the flow reads it from the environment
            os.environ["OLDPHOTO_CATALOG"] = catalog
            catalog = None
    return catalog


OWN_FLAGS = {"scratch": "--scratch", "hr": "--hr", "faces": "--faces/--no-faces", "colour": "--colour",
             "tone_match": "--tone-match/--no-tone-match", "tile": "--tile"}
NOT_AN_OPTION = {**{k: f"{k} has its own flag: {flag}" for k, flag in OWN_FLAGS.items()}, "device": DEVICE_PER_POOL}


def parse_options(pairs: list[str]) -> dict[str, object]:
    """`--option KEY=VALUE` pairs -> RestoreOptions overrides with their checked, typed values ("false" -> False,
    "0.5" -> 0.5), so a mistake stops the command before any work; ValueError names the problem. Options with a
    flag of their own, and the device (the Ray pools choose it), are refused here (`NOT_AN_OPTION`)."""
    from oldphoto.pipeline import RestoreOptions

    fields = {f.name for f in dataclasses.fields(RestoreOptions)}
    raw: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"{pair!r} is not KEY=VALUE")
        if key in NOT_AN_OPTION:
            raise ValueError(NOT_AN_OPTION[key])
        if key not in fields:
            raise ValueError(f"unknown restore option {key!r} (known: {', '.join(sorted(fields - NOT_AN_OPTION.keys()))})")
        raw[key] = value.strip()
    values = {k: (None if v.lower() in ("none", "null") else v) for k, v in raw.items()}
    checked = RestoreOptions(**values)        # ValueError: "invalid restore options: ..." with the field named
    return {k: getattr(checked, k) for k in values}


def _check_prefect_api() -> None:
    """A clear, immediate message instead of a long wait: the Prefect API named by PREFECT_API_URL must
    answer; without it a temporary local API is started (say so: it can take a minute)."""
    import urllib.request

    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if not api:
        typer.echo("no PREFECT_API_URL: starting a temporary local Prefect API for this run (can take a minute; "
                   "set PREFECT_API_URL to use a Prefect server)", err=True)
        return
    try:
        with urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=10) as r:
            r.read()
    except OSError as e:
        typer.echo(f"error: the Prefect API at {api} (PREFECT_API_URL) is not reachable: {e}", err=True)
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.command("archive")(archive)
