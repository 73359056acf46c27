"""`oldphoto review` commands: the curator review web app, its reviewers' password hashes, the review images,
and the reprocess requests reviewers queue."""
from __future__ import annotations

import json

from typing import Any, Optional

import typer

review_app = typer.Typer(no_args_is_help=True, add_completion=False,
                         help="Curator review in the browser: look, compare, approve, reject, ask for a reprocess.")

URL_HELP = "Catalog database URL [default: $OLDPHOTO_CATALOG, else sqlite:///./oldphoto-catalog.sqlite]"


def _fail(msg: str) -> None:
    typer.secho(f"Error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _catalog(url: Optional[str]) -> Any:
    from oldphoto.catalog import Catalog, CatalogError

    try:
        cat = Catalog(url)
        cat._check()
        return cat
    except CatalogError as e:
        _fail(str(e))


@review_app.command("serve")
def serve(url: Optional[str] = typer.Option(None, "--catalog", "--url", help=URL_HELP, show_default=False),
          host: str = typer.Option("127.0.0.1", "--host", help="Address to bind. Not a loopback address: every page "
                                   "needs a reviewer's login ($OLDPHOTO_REVIEWERS must be set)."),
          port: int = typer.Option(8700, "--port", help="Port to bind.")) -> None:
    """Serve the review pages: runs, the items grid (filters, "needs a look" order), item pages, decisions."""
    import uvicorn

    from oldphoto.review.app import create_app
    from oldphoto.review.auth import AuthError

    cat = _catalog(url)
    try:
        app = create_app(cat, host=host, port=port)
    except (ValueError, AuthError) as e:
        _fail(str(e))
    n = len(app.state.sessions.reviewers)
    typer.echo(f"oldphoto review on http://{host}:{port}/ over {cat!r}; {n} reviewer(s) configured"
               + ("" if n else " (read only: set OLDPHOTO_REVIEWERS to decide)"))
    uvicorn.run(app, host=host, port=port, log_level="warning")


@review_app.command("hash-password")
def hash_password(iterations: int = typer.Option(600_000, "--iterations", help="PBKDF2-SHA256 iterations.")) -> None:
    """Print the hash of a password (asked for, not echoed) for OLDPHOTO_REVIEWERS=NAME:HASH."""
    from oldphoto.review.auth import hash_password as make

    pw = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    typer.echo(make(pw, iterations))


@review_app.command("prepare")
def prepare(url: Optional[str] = typer.Option(None, "--catalog", "--url", help=URL_HELP, show_default=False),
            run: Optional[str] = typer.Option(None, "--run", help="Only this run's results (default: the latest "
                                              "result of every item).")) -> None:
    """Make the review images (thumbnail, before/after, mask overlay) and measure the tone change of every
    result not done yet, so the grid opens fast and the score includes the tone change."""
    from oldphoto.catalog import review as rq
    from oldphoto.review.images import ReviewImages

    cat = _catalog(url)
    images = ReviewImages(cat)
    page, made, failed = 1, 0, 0
    while True:
        g = rq.grid(cat, rq.GridFilter(run_id=run, sort="recent", page=page, per_page=500))
        for r in g.rows:
            if r.status not in ("done", "failed"):
                continue
            try:
                made += bool(images.prepare(r.result_id))
            except Exception as e:  # noqa: BLE001 - one unreadable item never stops the rest
                failed += 1
                typer.echo(f"{r.name}: {e}", err=True)
        if page >= g.pages:
            break
        page += 1
    typer.echo(f"Review images made for {made} result(s); {failed} could not be made.")


@review_app.command("queue")
def queue(url: Optional[str] = typer.Option(None, "--catalog", "--url", help=URL_HELP, show_default=False),
          state: str = typer.Option("queued", "--state", help="queued | taken | done"),
          as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")) -> None:
    """The reprocess requests reviewers made (default: those still waiting)."""
    from oldphoto.catalog import review as rq

    rows = rq.reprocess_queue(_catalog(url), state)
    for r in rows:
        if as_json:
            typer.echo(json.dumps(r, default=str))
        else:
            typer.echo(f"{r['id']}\t{r['item_name']}\t{json.dumps(r['options'], sort_keys=True)}\tby {r['reviewer']}"
                       f"\t{r['note'] or ''}")
    if not rows and not as_json:
        typer.echo(f"No reprocess requests {state}.")


@review_app.command("reprocess")
def reprocess(url: Optional[str] = typer.Option(None, "--catalog", "--url", help=URL_HELP, show_default=False),
              device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
              weights: Optional[str] = typer.Option(None, "--weights", help="'default' (shipped), a weights folder, "
                                                    "or 'official:/path/to/release' (default: $OLDPHOTO_WEIGHTS).")) -> None:
    """Run the queued reprocess requests on this machine with the options each reviewer asked for (the
    `reprocess-reviewed` Prefect flow does the same on a worker)."""
    from oldphoto.review.reprocess import run_queue
    from oldphoto.weights_source import WeightsSource

    cat = _catalog(url)
    models = WeightsSource.from_env(weights).load(device)
    runs = run_queue(cat, models, device=device, say=typer.echo)
    typer.echo(f"{len(runs)} run(s): {', '.join(runs) or 'nothing queued'}")


def register(app: typer.Typer) -> None:
    """Add the `review` command group to the main app."""
    app.add_typer(review_app, name="review")



