"""`oldphoto catalog` commands: create/migrate the catalog, see what is done, failed or left, show an item's
full history, export Parquet and PREMIS."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import typer

catalog_app = typer.Typer(no_args_is_help=True, add_completion=False,
                          help="The catalog of what was done to every photograph (SQLite or PostgreSQL).")

URL_HELP = ("Catalog database URL, e.g. sqlite:///catalog.sqlite or postgresql+psycopg://user@host/db "
            "[default: $OLDPHOTO_CATALOG, else sqlite:///./oldphoto-catalog.sqlite]")


def _url_option() -> Any:
    # --catalog, as every other command names it; --url kept as an alias
    return typer.Option(None, "--catalog", "--url", help=URL_HELP, show_default=False)


def _fail(msg: str) -> None:
    typer.secho(f"Error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _open(url: Optional[str]) -> Any:
    from oldphoto.catalog import Catalog, CatalogError

    try:
        return Catalog(url)
    except CatalogError as e:
        _fail(str(e))


def _guard(fn: Any) -> Any:
    """Turn catalog and database errors into one clear line and exit status 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        from sqlalchemy.exc import SQLAlchemyError

        from oldphoto.catalog import CatalogError

        try:
            return fn(*a, **k)
        except CatalogError as e:
            _fail(str(e))
        except SQLAlchemyError as e:
            _fail(f"database error: {getattr(e, 'orig', None) or e}")

    return wrapper


def _fmt_time(t: Optional[datetime]) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def _console() -> Any:
    from rich.console import Console

    return Console(width=160)


@catalog_app.command("init")
@_guard
def init(url: Optional[str] = _url_option()) -> None:
    """Create the catalog (or bring it to the current schema) and show where it is."""
    cat = _open(url)
    before = cat.current_revision()
    rev = cat.upgrade()
    what = "Created" if before is None else ("Upgraded" if before != rev else "Already up to date:")
    typer.echo(f"{what} catalog {cat.engine.url.render_as_string(hide_password=True)} (schema revision {rev}).")


@catalog_app.command("upgrade")
@_guard
def upgrade(url: Optional[str] = _url_option(),
            revision: str = typer.Option("head", help="Target schema revision.")) -> None:
    """Apply the schema migrations (Alembic) up to the newest revision."""
    cat = _open(url)
    before = cat.current_revision()
    rev = cat.upgrade(revision)
    if before == rev:
        typer.echo(f"Catalog already at schema revision {rev}.")
    else:
        typer.echo(f"Catalog upgraded from schema revision {before or 'none'} to {rev}.")


@catalog_app.command("status")
@_guard
def status(url: Optional[str] = _url_option(),
           run: Optional[str] = typer.Option(None, "--run", help="Counts of one run's results instead."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """How many items are pending, running, done, failed, skipped; and the latest runs."""
    cat = _open(url)
    counts = cat.status_counts(run_id=run)
    if as_json:
        typer.echo(json.dumps(counts))
        return
    from rich.table import Table

    t = Table(title=f"Items by status{' in run ' + run if run else ''}")
    t.add_column("status")
    t.add_column("items", justify="right")
    for k, v in counts.items():
        t.add_row(k, str(v))
    t.add_row("total", str(sum(counts.values())), style="bold")
    con = _console()
    con.print(t)
    runs = cat.runs(limit=5)
    if runs and not run:
        rt = Table(title="Latest runs")
        for col in ("run", "flow run", "started", "finished", "items", "done", "failed"):
            rt.add_column(col)
        for r in runs:
            rt.add_row(r.id, r.flow_run_id or "-", _fmt_time(r.started), _fmt_time(r.finished),
                       *(str(x) if x is not None else "-" for x in (r.n_items, r.n_done, r.n_failed)))
        con.print(rt)


@catalog_app.command("items")
@_guard
def items(url: Optional[str] = _url_option(),
          status: Optional[str] = typer.Option(None, "--status", help="pending|running|done|failed|skipped"),
          since: Optional[str] = typer.Option(None, "--since", help="Only items changed since this date/time "
                                              "(ISO 8601, UTC), e.g. 2026-11-01"),
          limit: Optional[int] = typer.Option(None, "--limit", help="At most this many."),
          as_json: bool = typer.Option(False, "--json", help="Print one JSON object per line.")) -> None:
    """List items, e.g. `--status failed` to see what to reprocess and why."""
    cat = _open(url)
    try:
        since_t = datetime.fromisoformat(since) if since else None
    except ValueError:
        _fail(f"--since {since!r} is not a date like 2026-11-01 or 2026-11-01T22:00")
    rows = cat.items(status=status, since=since_t, limit=limit)
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r.to_dict(), default=str))
        return
    if not rows:
        typer.echo(f"No items{' with status ' + status if status else ''}{' since ' + since if since else ''}.")
        return
    from rich.table import Table

    t = Table(title=f"{len(rows)} item(s)")
    for col in ("id", "source", "status", "attempts", "updated", "last error"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(str(r.id), r.source_uri, r.status, str(r.attempts), _fmt_time(r.updated), r.last_error or "")
    _console().print(t)


@catalog_app.command("show")
@_guard
def show(item: str = typer.Argument(..., help="Item id, source URI or sha256."),
         url: Optional[str] = _url_option(),
         as_json: bool = typer.Option(False, "--json", help="Print the full history as JSON.")) -> None:
    """Everything done to one photograph: every run, stage, model checkpoint, output and event."""
    cat = _open(url)
    h = cat.item_history(item)
    if as_json:
        from dataclasses import asdict

        d = {"item": h.item.to_dict(),
             "attempts": [{k: v for k, v in asdict(a).items() if k != "provenance"} for a in h.attempts]}
        typer.echo(json.dumps(d, default=str, indent=2))
        return
    con = _console()
    _print_item(con, h.item)
    for n, a in enumerate(h.attempts, 1):
        _print_attempt(con, n, a)


def _print_item(con, i) -> None:
    con.print(f"[bold]{i.name}[/bold]  (item {i.id}, collection {i.collection})")
    con.print(f"  source   {i.source_uri}")
    con.print(f"  sha256   {i.sha256 or '-'}  ({i.bytes if i.bytes is not None else '?'} bytes, "
              f"{i.width or '?'}x{i.height or '?'} {i.mode or '?'} {i.format or ''}, version {i.version})")
    con.print(f"  status   {i.status} after {i.attempts} attempt(s); last change {_fmt_time(i.updated)}"
              + (f"; last error: {i.last_error}" if i.last_error else ""))


def _print_attempt(con, n: int, a) -> None:
    from rich.table import Table

    con.print(f"\n[bold]Attempt {n}[/bold]: run {a.run_id}" + (f" (flow run {a.flow_run_id})" if a.flow_run_id else "")
              + f", oldphoto {a.oldphoto_version or '?'}, {a.status}"
              + (f" - {a.error}" if a.error else ""))
    con.print(f"  input sha256 {a.input.get('sha256') or '-'}; started {_fmt_time(a.started)}, finished "
              f"{_fmt_time(a.finished)}; fingerprint {a.fingerprint[:16]}"
              + (f"; mask coverage {a.mask_coverage:.4%}" if a.mask_coverage is not None else ""))
    st = Table(show_header=True)
    for col in ("stage", "status", "seconds", "device", "checkpoints", "error"):
        st.add_column(col, overflow="fold")
    for s in a.stages:
        ck = ", ".join(f"{c['name']} ({c['sha256'][:12]})" for c in s["checkpoints"])
        st.add_row(s["stage"], s["status"], f"{s['seconds']:.3f}", s["device"], ck, s["error"] or "")
    con.print(st)
    for art in a.artefacts:
        con.print(f"  {art['kind']:<12} {art['uri']}  sha256 {art['sha256'][:16]}  {art['bytes']} bytes")
    for f in a.faces:
        con.print(f"  face {f['face_index']}: box ({f['left']}, {f['top']}, {f['right']}, {f['bottom']})"
                  + (f" score {f['score']:.3f}" if f["score"] is not None else ""))


@catalog_app.command("export")
@_guard
def export(parquet: Path = typer.Option(..., "--parquet", help="Write one row per item (latest result) here."),
           url: Optional[str] = _url_option(),
           collection: Optional[str] = typer.Option(None, help="Only this collection.")) -> None:
    """Export the catalog for analysis (pandas, DuckDB, spreadsheets via Parquet)."""
    cat = _open(url)
    if not parquet.parent.exists():
        _fail(f"folder {parquet.parent} does not exist")
    n = cat.export_parquet(parquet, collection=collection)
    typer.echo(f"Wrote {n} item(s) to {parquet}.")


@catalog_app.command("premis")
@_guard
def premis(item: str = typer.Argument(..., help="Item id, source URI or sha256."),
           url: Optional[str] = _url_option(),
           out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the XML here instead of printing it."),
           mets: bool = typer.Option(False, "--mets", help="Wrap the PREMIS in a METS document.")) -> None:
    """The PREMIS 3 preservation record (objects, events, agents) of one item."""
    cat = _open(url)
    xml = cat.premis_xml(item, mets=mets)
    if out:
        out.write_text(xml, encoding="utf-8")
        typer.echo(f"Wrote PREMIS{' (METS)' if mets else ''} of {item} to {out}.")
    else:
        typer.echo(xml, nl=False)


def register(app: typer.Typer) -> None:
    """Add the `catalog` command group to the main app."""
    app.add_typer(catalog_app, name="catalog")
