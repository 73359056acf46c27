"""`oldphoto archive`: the archive job (the `restore-archive` Prefect flow on Ray) run from the shell.

It is the same flow a deployment runs (`prefect deployment run 'restore-archive/on-demand' ...`), started
in this process: Prefect runs it against $PREFECT_API_URL when set, else a temporary local API; Ray is
$RAY_ADDRESS / --ray-address when given, else an embedded local session.
"""
from __future__ import annotations

import os
from typing import Optional

import typer


def archive(
    source: str = typer.Argument(..., help="Scans to restore: a folder, file:///path or s3://bucket/prefix/."),
    destination: str = typer.Argument(..., help="Where results go: a folder, file:///path or s3://bucket/prefix/."),
    catalog: Optional[str] = typer.Option(None, "--catalog", help="Catalog URL (default: $OLDPHOTO_CATALOG, "
                                          "else DESTINATION/catalog.sqlite for a local destination)."),
    scratch: str = typer.Option("auto", "--scratch", help="auto | on | off"),
    hr: bool = typer.Option(False, "--hr", help="High-resolution mode (512 px faces, patch attention)."),
    faces: bool = typer.Option(True, "--faces/--no-faces", help="Enhance faces."),
    weights: Optional[str] = typer.Option(None, "--weights", help="'default' (shipped), a weights folder, "
                                          "or 'official:/path/to/release' (default: $OLDPHOTO_WEIGHTS or shipped)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many items."),
    reprocess_failed: bool = typer.Option(False, "--reprocess-failed", help="Retry only the catalog's failed items."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (default: local)."),
) -> None:
    """Restore an archive folder or bucket with the restore-archive flow: Ray stage pools, catalog, summary."""
    # no telemetry from a museum's machines (and no network to send it over)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.restore_archive import restore_archive
    from oldphoto.models import MissingWeightsError
    from oldphoto.storage import is_remote

    if catalog is None and not os.environ.get("OLDPHOTO_CATALOG") and not is_remote(destination):
        local = destination.removeprefix("file://")
        os.makedirs(local, exist_ok=True)
        catalog = "sqlite:///" + os.path.abspath(os.path.join(local, "catalog.sqlite"))
    try:
        summary = restore_archive(source=source, destination=destination, catalog_url=catalog, scratch=scratch,
                                  limit=limit, reprocess_failed=reprocess_failed, ray_address=ray_address,
                                  weights=weights, faces=faces, hr=hr)
    except MissingWeightsError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2)
    c = summary["counts"]
    typer.echo(f"{c['done']} done, {c['failed']} failed, {c['skipped']} skipped -> {destination}")
    typer.echo(f"run summary: {summary.get('summary_uri')}")
    for f in summary.get("failures", []):
        typer.echo(f"  FAILED {f.get('name') or f.get('uri')}: {f.get('error')}", err=True)
    raise typer.Exit(0 if c["failed"] == 0 else 1)


def register(app: typer.Typer) -> None:
    app.command("archive")(archive)
