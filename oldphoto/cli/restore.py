"""`oldphoto restore INPUT... --out DIR`: restore scans on this machine, one item at a time.

The item lifecycle is `oldphoto.lifecycle`, the one the archive flow runs: the same listing (below a folder:
image files only; hidden files and other files are skipped and listed), the same names (DIR/<path below the
input folder, without extension>/, sub-folders kept), the same fingerprint (what is already done with these
weights and options, in the catalog, is skipped), the same atomic writes, and each item recorded in the catalog
as it finishes (default: sqlite DIR/catalog.sqlite, or $OLDPHOTO_CATALOG; --no-catalog to skip). Inputs are only
read. An item that cannot be read, restored or written (disk full, name too long) fails alone.
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


# ------------------------------------------------------------------------------------------- models
def weights_source(weights: Path | None, official: Path | None):
    """The `WeightsSource` of --weights / --official (at most one)."""
    from oldphoto.weights_source import WeightsSource

    try:
        return WeightsSource.from_options(weights, official)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def _open_catalog(url: str, options, models, extra: dict):
    """(catalog, run id, fingerprint): the run opened with the parameters and fingerprint the flows use."""
    from oldphoto.catalog import Catalog
    from oldphoto.lifecycle import run_fingerprint

    cat = Catalog(url)
    cat.upgrade()
    params, fp = run_fingerprint(options, models)
    run_id = cat.start_run({**params, "device": options.device, **extra}, fingerprint=fp)
    return cat, run_id, fp


# ------------------------------------------------------------------------------------------- command
def restore(
    inputs: list[str] = typer.Argument(..., help="Image files and/or folders of scans (searched recursively), or "
                                                 "s3://bucket/prefix/."),
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
    face_strength: Optional[float] = typer.Option(None, "--face-strength", min=0.0, max=1.0,
                                                  help="Blend strength of an enhanced face, 0 (keep the original) "
                                                       "to 1 (default: the face weights' own, else 1)."),
    face_min_agreement: Optional[float] = typer.Option(
        None, "--face-min-agreement", help="An enhanced face is applied only when it agrees with the scan's face at "
        "low frequency by at least this many dB (do no harm; default: the value chosen on val, see MODEL_CARD.md)."),
    face_guard: bool = typer.Option(True, "--face-guard/--no-face-guard",
                                    help="Inside faces found on the scan, keep only scratch-like parts of the mask, so "
                                         "facial features are never inpainted (not in the official method; "
                                         "with --no-blob-guard, --no-face-guard gives the official mask)."),
    blob_guard: bool = typer.Option(True, "--blob-guard/--no-blob-guard",
                                    help="Anywhere in the photo, keep only scratch-like parts of the mask larger than "
                                         "a dust speck, so large areas taken for holes are not repainted (not in the "
                                         "official method; with --no-face-guard it gives the official mask)."),
    detector_scales: int = typer.Option(2, "--detector-scales", min=1, max=2,
                                        help="2: scans larger than the detector's working size (short side 256) are "
                                             "also searched at twice that size, so thin scratches on large scans "
                                             "are found (not in the official method); 1: the official single scale."),
    detector_mirror: bool = typer.Option(True, "--detector-mirror/--no-detector-mirror",
                                         help="The detector also sees the scan mirrored left-right, upside down "
                                              "and both, and the four answers are averaged, so texture it answers "
                                              "to in one orientation only is not masked (not in the official "
                                              "method)."),
    tone_match: bool = typer.Option(True, "--tone-match/--no-tone-match",
                                    help="Keep the scan's local tone and colour after global restoration (a guided "
                                         "filter, not in the official method); --no-tone-match gives exactly the "
                                         "official stage-1 output."),
    structure_return: bool = typer.Option(True, "--structure-return/--no-structure-return",
                                          help="With tone matching: on scans with little noise, give back the "
                                               "fine structure (grass, gravel, cloth folds, engraved lines) that "
                                               "global restoration smoothed away as if it were noise (not in the "
                                               "official method)."),
    colour_correct: bool = typer.Option(True, "--colour-correct/--no-colour-correct",
                                        help="With tone matching: correct global fading and colour casts (a "
                                             "per-channel gain and offset predicted from the scan; not in the "
                                             "official method; grey scans stay grey)."),
    colour_strength: Optional[float] = typer.Option(None, "--colour-strength", min=0.0, max=1.0,
                                                    help="Strength of that correction, 0..1 (default: the value "
                                                         "chosen on val, stored in the weights)."),
    refine: bool = typer.Option(True, "--refine/--no-refine",
                                help="With tone matching: the detail refiner after global restoration, when the "
                                     "weights have one (a small network that gives back fine structure stage 1 "
                                     "smoothed away; not in the official method)."),
    refine_strength: Optional[float] = typer.Option(None, "--refine-strength", min=0.0, max=1.0,
                                                    help="Strength of the refiner, 0..1 (default: the value chosen "
                                                         "on val, stored in the weights)."),
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

    from oldphoto.progress import ItemProgress
    from oldphoto.lifecycle import Heartbeat, Recorder, claim_items, list_inputs, plan_items, with_catalog_retry
    from oldphoto.pipeline import Restorer, RestoreOptions, check_models

    console = Console(stderr=True)
    _check_device(device, console)
    try:     # RestoreOptions checks every value (choices, ranges) and names the option that is wrong
        options = RestoreOptions(scratch=scratch, hr=hr, device=device, faces=faces, colour=colour, tile=tile,
                                 untiled_max_mb=untiled_max_mb, precision=precision, tone_match=tone_match,
                                 structure_return=structure_return,
                                 colour_correct=colour_correct, colour_strength=colour_strength, refine=refine,
                                 refine_strength=refine_strength,
                                 max_pixels=int(max_megapixels * 1_000_000),
                                 face_strength=face_strength, face_min_agreement=face_min_agreement,
                                 face_guard=face_guard, blob_guard=blob_guard,
                                 detector_scales=detector_scales, detector_mirror=detector_mirror)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    from oldphoto.models import MissingWeightsError

    try:
        models = weights_source(weights, official).load(device)
        check_models(models, options)
    except MissingWeightsError as e:
        console.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)

    listing = list_inputs([str(p) for p in inputs], exclude=str(out))
    if not listing.items:
        _no_inputs(listing, console)
    out.mkdir(parents=True, exist_ok=True)
    destination = str(out.absolute())

    cat, run_id, fp = None, None, ""
    if not no_catalog:
        cat, run_id, fp = _open_run_catalog(catalog, out, options, models, inputs, destination, console)
    todo, already = plan_items(listing.items, cat, fp)
    todo, busy = claim_items(todo, cat, run_id)          # not what another run at work holds
    record = Recorder(cat, run_id, warn=lambda m: console.print(f"[yellow]{m}[/yellow]", highlight=False))

    restorer = Restorer(models, options)
    failures: list[tuple[str, str]] = []
    stage_seconds: Counter = Counter()
    t0 = time.perf_counter()
    progress = ItemProgress(len(todo), console=console, label="restoring")
    with Heartbeat(cat, run_id), progress:
        for item in todo:
            progress.start(item.name)
            state = _restore_item(restorer, item, destination, options, run_id)
            for rec in state.provenance.stages:
                stage_seconds[rec.name] += rec.seconds
            if cat is not None:
                _record(record, state, item, console)
            if state.failed:
                failures.append((item.uri, state.error or "failed"))
            state.files.clear()
            progress.advance(failed=state.failed, name=item.name)
    if cat is not None:
        try:
            with_catalog_retry(lambda: cat.finish_run(
                run_id, skipped=len(already) + len(busy),
                skipped_inputs=[(sk.uri, sk.reason) for sk in listing.skipped],
                reason=f"{len(failures)} item(s) failed" if failures else None))
        except Exception as e:
            console.print(f"[yellow]catalog: could not finish run: {e}[/yellow]")
    _report(console, out, time.perf_counter() - t0, len(todo), failures, already, busy, listing.skipped, run_id,
            stage_seconds)


def _open_run_catalog(catalog: str | None, out: Path, options, models, inputs: list[str], destination: str,
                      console):
    """(catalog, run id, fingerprint) of this run: --catalog, else $OLDPHOTO_CATALOG, else OUT/catalog.sqlite."""
    try:
        return _open_catalog(catalog or os.environ.get("OLDPHOTO_CATALOG")
                             or f"sqlite:///{(out / 'catalog.sqlite').resolve()}", options, models,
                             {"inputs": [str(p) for p in inputs], "destination": destination})
    except Exception as e:
        console.print(f"[bold red]error:[/bold red] cannot open the catalog: {e}", highlight=False)
        raise typer.Exit(2)


def _no_inputs(listing, console) -> None:
    console.print("[bold red]error:[/bold red] no input files found"
                  + (f" ({len(listing.skipped)} file(s) skipped: hidden or not images)" if listing.skipped else ""))
    raise typer.Exit(2)


def _check_device(device: str, console) -> None:
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise typer.BadParameter("--device must be cpu or cuda", param_hint="--device")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            console.print("[bold red]error:[/bold red] --device cuda asked for, but no CUDA GPU is available "
                          "(this torch build or machine has none); use --device cpu")
            raise typer.Exit(2)


def _restore_item(restorer, item, destination: str, options, run_id: str | None):
    """One item through the stages and written; an unexpected error fails only this item."""
    from oldphoto.lifecycle import start_item, write_item
    from oldphoto.provenance import StageName

    try:
        state = restorer.process(start_item(item, destination, options, run_id))
        write_item(state, destination)
    except Exception as e:  # noqa: BLE001 - one item's unexpected error never stops the run
        state = start_item(item, destination, options, run_id)
        state.fail(StageName.RESTORE, f"{type(e).__name__}: {e}")
        state.data = None
        write_item(state, destination)
    return state


def _record(record, state, item, console) -> None:
    try:
        record(state.provenance)
    except Exception as e:  # noqa: BLE001 - outage longer than the bound: say so, go on
        console.print(f"[yellow]catalog: could not record {item.uri}: {e}[/yellow]", highlight=False)


def _report(console, out: Path, elapsed: float, n_todo: int, failures: list[tuple[str, str]], already: list,
            busy: list, skipped: list, run_id: str | None, stage_seconds: Counter) -> None:
    """The run's summary on the console; SKIPPED and FAILED lines on stdout; exit status 1 when items failed."""
    from rich.table import Table

    done = n_todo - len(failures)
    console.print(f"[bold]{done} of {n_todo} restored[/bold] in {elapsed:.1f} s into {out}"
                  + (f"; {len(already)} already done (skipped)" if already else "")
                  + (f"; {len(busy)} being restored by another run (skipped)" if busy else "")
                  + (f"; {len(skipped)} not inputs (hidden or not images, skipped)" if skipped else "")
                  + (f"; catalog run {run_id}" if run_id else ""), highlight=False, soft_wrap=True)
    if stage_seconds:
        console.print("time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in stage_seconds.items() if v),
                      highlight=False)
    for sk in skipped:
        print(f"SKIPPED {sk.uri}: {sk.reason}", file=sys.stdout)
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
