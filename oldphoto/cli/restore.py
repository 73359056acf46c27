"""`oldphoto restore INPUT... --out DIR`: restore scans on this machine, one item at a time.

For each input NAME.EXT the command writes DIR/NAME/: restored.png (restored.tif for TIFF input), mask.png
(when the detector ran), faces/ (aligned faces before/after), review.png and provenance.json. Two inputs with
the same stem get distinct folders (NAME-<8 hex of the input path>), so nothing is overwritten. Inputs are only
read. Each item is also recorded in the catalog (default: sqlite DIR/catalog.sqlite; --no-catalog to skip).
Exit code: 0 when every input was restored, 1 when any failed, 2 when the run could not start (e.g. weights).
"""
from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import typer

SCRATCH_CHOICES = ("auto", "on", "off")


# ------------------------------------------------------------------------------------------- inputs
def collect_inputs(inputs: list[Path], exclude: Path | None = None) -> list[Path]:
    """Files given directly, plus every non-hidden file below the folders given (sorted), without duplicates
    and without anything inside `exclude` (the output folder). Missing paths are kept (they fail as items)."""
    found: list[Path] = []
    excl = exclude.resolve() if exclude is not None else None
    for p in inputs:
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                r = Path(root)
                if excl is not None and (r.resolve() == excl or excl in r.resolve().parents):
                    continue
                found += [r / f for f in sorted(files) if not f.startswith(".")]
        else:
            found.append(p)
    seen: set[Path] = set()
    unique = []
    for p in found:
        key = p.resolve() if p.exists() else p.absolute()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _read(path: Path) -> tuple[bytes | None, str | None]:
    try:
        if not path.exists():
            return None, "file not found"
        if not path.is_file():
            return None, "not a regular file"
        with open(path, "rb") as f:
            return f.read(), None
    except OSError as e:
        return None, f"cannot read file: {e.strerror or e}"


# ------------------------------------------------------------------------------------------- models
def load_models(weights: Path | None, official: Path | None, device: str):
    from oldphoto.models import ModelSet

    if weights is not None and official is not None:
        raise typer.BadParameter("give either --weights or --official, not both")
    if weights is not None:
        return ModelSet.from_weights_dir(weights, device=device)
    if official is not None:
        return ModelSet.from_official(official, device=device)
    return ModelSet.default(device=device)


def _open_catalog(url: str, options, models, console):
    try:
        from oldphoto.catalog import Catalog, fingerprint
    except ImportError as e:  # pragma: no cover - the catalog ships with oldphoto
        console.print(f"[yellow]catalog not available ({e}); items are not recorded[/yellow]")
        return None, None
    cat = Catalog(url)
    cat.upgrade()
    params = options.to_dict()
    ckpts = []
    for role in options.required_roles():
        try:
            ckpts.append(models.checkpoint(role))
        except Exception:
            pass
    run_id = cat.start_run(params, fingerprint=fingerprint(params, ckpts))
    return cat, run_id


# ------------------------------------------------------------------------------------------- command
def restore(
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders of scans (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: one sub-folder per input."),
    scratch: str = typer.Option("auto", "--scratch",
                                help="auto: detect scratches and repair them when found; on: always; off: never."),
    hr: bool = typer.Option(False, "--hr", help="High-resolution mode: 512 px faces, patch-attention scratch mapping."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Folder of oldphoto weights (<role>.safetensors)."),
    official: Optional[Path] = typer.Option(None, "--official", help="Folder of the unzipped official release."),
    catalog: Optional[str] = typer.Option(None, "--catalog",
                                          help="Catalog database URL (default: sqlite:///OUT/catalog.sqlite)."),
    no_catalog: bool = typer.Option(False, "--no-catalog", help="Do not record the run in a catalog."),
    colour: bool = typer.Option(False, "--colour", help="Write grey scans as RGB (default: grey stays grey)."),
    faces: bool = typer.Option(True, "--faces/--no-faces", help="Enhance faces (stages 2-4)."),
    tone_match: bool = typer.Option(True, "--tone-match/--no-tone-match",
                                    help="Keep the scan's local tone and colour after global restoration (a guided "
                                         "filter, not in the official method); --no-tone-match gives exactly the "
                                         "official stage-1 output."),
    tile: int = typer.Option(512, "--tile", help="Scratch paths: the nonlocal attention spans the whole image up to "
                                                  "TILE² pixels, tiles of TILE px above."),
    untiled_max_mb: int = typer.Option(4096, "--untiled-max-mb",
                                       help="Global restoration runs untiled (the official result) while its "
                                            "estimated memory fits; above, exact tiles that fit (quality path)."),
    precision: str = typer.Option("fp32", "--precision",
                                  help="Global restoration arithmetic: fp32 (the official result) or bf16 (faster "
                                       "on CPUs with AVX512-BF16 and on GPUs; output differs visibly)."),
    max_megapixels: float = typer.Option(200.0, "--max-megapixels", help="Refuse larger images (bomb guard)."),
) -> None:
    """Restore old photographs: scratch detection, global restoration, face enhancement; with a record of each."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from oldphoto.pipeline import ItemState, Restorer, RestoreOptions, check_models, output_names

    console = Console(stderr=True)
    if scratch not in SCRATCH_CHOICES:
        raise typer.BadParameter(f"--scratch must be one of {', '.join(SCRATCH_CHOICES)}", param_hint="--scratch")
    if precision not in ("fp32", "bf16"):
        raise typer.BadParameter("--precision must be fp32 or bf16", param_hint="--precision")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise typer.BadParameter("--device must be cpu or cuda", param_hint="--device")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            console.print("[bold red]error:[/bold red] --device cuda asked for, but no CUDA GPU is available "
                          "(this torch build or machine has none); use --device cpu")
            raise typer.Exit(2)
    options = RestoreOptions(scratch=scratch, hr=hr, device=device, faces=faces, colour=colour, tile=tile,
                             untiled_max_mb=untiled_max_mb, precision=precision, tone_match=tone_match,
                             max_pixels=int(max_megapixels * 1_000_000))
    from oldphoto.models import MissingWeightsError

    try:
        models = load_models(weights, official, device)
        check_models(models, options)
    except MissingWeightsError as e:
        console.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)

    paths = collect_inputs(inputs, exclude=out)
    if not paths:
        console.print("[bold red]error:[/bold red] no input files found")
        raise typer.Exit(2)
    names = output_names([str(p.absolute()) for p in paths])
    out.mkdir(parents=True, exist_ok=True)

    cat, run_id = (None, None)
    if not no_catalog:
        try:
            cat, run_id = _open_catalog(catalog or f"sqlite:///{(out / 'catalog.sqlite').resolve()}", options,
                                        models, console)
        except Exception as e:
            console.print(f"[bold red]error:[/bold red] cannot open the catalog: {e}")
            raise typer.Exit(2)

    restorer = Restorer(models, options)
    failures: list[tuple[str, str]] = []
    stage_seconds: Counter = Counter()
    t0 = time.perf_counter()
    with Progress(TextColumn("[bold]restoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[item]}"), console=console, transient=False) as progress:
        task = progress.add_task("restore", total=len(paths), item="")
        for path, name in zip(paths, names):
            progress.update(task, item=str(path.name))
            item_dir = out / name
            data, read_error = _read(path)
            state = ItemState.new(str(path), data, options, name=name, out_dir=str(item_dir), run_id=run_id)
            if read_error:
                state.fail("load", read_error)
            state = restorer.process(state)
            del data
            item_dir.mkdir(parents=True, exist_ok=True)
            for rel, blob in state.files.items():
                target = item_dir / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".part")
                tmp.write_bytes(blob)
                os.replace(tmp, target)
            for rec in state.provenance.stages:
                stage_seconds[rec.name] += rec.seconds
            if cat is not None:
                try:
                    cat.record(state.provenance, run_id)
                except Exception as e:
                    console.print(f"[yellow]catalog: could not record {path}: {e}[/yellow]")
            if state.failed:
                failures.append((str(path), state.error or "failed"))
            state.files.clear()
            progress.advance(task)
    if cat is not None:
        try:
            cat.finish_run(run_id)
        except Exception as e:
            console.print(f"[yellow]catalog: could not finish run: {e}[/yellow]")

    elapsed = time.perf_counter() - t0
    done = len(paths) - len(failures)
    console.print(f"[bold]{done} of {len(paths)} restored[/bold] in {elapsed:.1f} s into {out}"
                  + (f"; catalog run {run_id}" if run_id else ""), highlight=False)
    if stage_seconds:
        console.print("time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in stage_seconds.items() if v),
                      highlight=False)
    if failures:
        table = Table(title=f"{len(failures)} failed", show_lines=False)
        table.add_column("input", overflow="fold")
        table.add_column("error", overflow="fold")
        for p, err in failures:
            table.add_row(p, err)
        console.print(table)
        for p, err in failures:            # plain one-line form too, for logs and scripts
            print(f"FAILED {p}: {err}", file=sys.stdout)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `oldphoto restore` to the main app."""
    app.command("restore")(restore)
