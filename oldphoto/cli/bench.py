"""`oldphoto bench` commands.

    oldphoto bench quality [--weights DIR] [--data DIR] [--out DIR] [--seed 0]
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

bench_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Benchmarks of restoration quality.")


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


@bench_app.command("quality")
def quality_cmd(
    weights: Optional[Path] = typer.Option(None, "--weights", help="Weights folder (<role>.safetensors) for "
                                           "'ours' and the scratch detector; without it only the input and "
                                           "the classical baseline are measured."),
    data: Optional[Path] = typer.Option(None, "--data", help="Fetched data folder: its test split, textures, "
                                        "the real old photos and the NIQE parameters. Default: builtin photos."),
    out: Path = typer.Option(Path("out/bench_quality"), "--out", help="Folder for quality.json, quality_grid.png "
                             "and real_photos_grid.png."),
    seed: int = typer.Option(0, "--seed"),
    size: int = typer.Option(256, "--size", min=96, help="Working size: short side resized, centre square crop."),
    max_photos: Optional[int] = typer.Option(None, "--max-photos", min=1),
    split: str = typer.Option("test", "--split", help="test (held out; the figures we publish) or val (for "
                              "choosing settings; needs --data)."),
    real: bool = typer.Option(True, "--real/--no-real", help="Restore the real old photos into a review grid."),
) -> None:
    """PSNR/SSIM on held-out photos with a fixed synthetic degradation (input, OpenCV baseline with its own mask,
    ours), per photo and on face crops; the scratch detector's ROC AUC/F1, false-positive rate on photos without
    structured defects and `auto` decision accuracy; NIQE and a review grid of the real old photos."""
    from rich.console import Console

    from oldphoto.quality_bench import run_quality_bench, write_bench

    console = Console()
    if split not in ("test", "val"):
        typer.secho("error: --split must be test or val", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    try:
        res = run_quality_bench(weights, data, seed=seed, size=size, max_photos=max_photos, split=split, real=real,
                                progress=lambda m: console.print(f"[dim]{m}[/dim]"))
    except (FileNotFoundError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    _print_figures(console, res.figures, size, seed)
    jp, gp = write_bench(res, out)
    console.print(f"wrote {jp} and {gp}" + (f" and {out / 'real_photos_grid.png'}" if res.real_grid is not None else ""))


def _print_figures(console, f: dict, size: int, seed: int) -> None:
    """The bench's figures as tables and lines (what quality.json holds)."""
    _print_tables(console, f, size, seed)
    console.print(f"baseline inpainting mask: {f['baseline_mask']}")
    if f["ours_unavailable"]:
        console.print(f"ours: not measured ({f['ours_unavailable']})")
    _print_detector(console, f["scratch_detector"])
    n = f["niqe"]
    if "input" in n:
        console.print(f"NIQE on {n['photo']} {n['size'][0]}x{n['size'][1]} (lower is better): input "
                      f"{n['input']:.3f}, baseline {n['baseline']:.3f}, ours {_fmt(n.get('ours'), 3)}")
    else:
        console.print(f"NIQE: unavailable ({n['unavailable']})")


def _print_tables(console, f: dict, size: int, seed: int) -> None:
    from rich.table import Table

    keys = {"degraded": "degraded input", "baseline": "OpenCV NLM + Telea inpaint", "ours": "ours (Restorer)"}
    per = Table(title=f"Per photo (PSNR dB / SSIM), {size}x{size}, seed {seed}")
    per.add_column("photo")
    for label in keys.values():
        per.add_column(label, justify="right")
    for p in f["per_photo"]:
        per.add_row(p["id"], *[f"{_fmt(p['image'].get(k, {}).get('psnr'))} / {_fmt(p['image'].get(k, {}).get('ssim'), 3)}"
                               for k in keys])
    console.print(per)
    t = Table(title=f"Synthetic {f['split']}: {f['n_photos']} photos ({f['held_out_photos']})")
    t.add_column("method")
    t.add_column("PSNR (dB)", justify="right")
    t.add_column("SSIM", justify="right")
    t.add_column("detail kept", justify="right")
    t.add_column("grid artefacts", justify="right")
    t.add_column(f"faces PSNR ({f['faces'].get('degraded', {}).get('n', 0)})", justify="right")
    t.add_column("faces SSIM", justify="right")
    for key, label in keys.items():
        m, fm = f["methods"].get(key), f["faces"].get(key)
        t.add_row(label, _fmt(m and m["psnr"]), _fmt(m and m["ssim"], 3), _fmt(m and m.get("detail"), 2),
                  _fmt(m and m.get("grid"), 2), _fmt(fm and fm["psnr"]),
                  _fmt(fm and fm["ssim"], 3))
    console.print(t)
    if "faces_worse_than_input" in f["faces"]:
        console.print(f"faces ending worse than their degraded input (PSNR or SSIM): {f['faces']['faces_worse_than_input']}")
    c = f.get("clean_scans") or {}
    if c:
        console.print(f"do no harm: ours on the {c['n']} clean photos themselves (scans that need nothing) "
                      f"{c['psnr']:.2f} dB / {c['ssim']:.3f} against them, detail kept {c['detail']:.2f}; "
                      f"{c['scratch_path']} took the scratch path")


def _print_detector(console, d: dict) -> None:
    if "auc" in d:
        console.print(f"scratch detector: ROC AUC {d['auc']:.3f}, F1@{d['threshold']} {d['f1']:.3f}, false-positive "
                      f"pixels on photos without structured defects {d['fp_rate_no_defects']:.3%}")
        if "auc_large_scans" in d:
            console.print(f"scratch detector on the photos degraded as {d['large_scan_side']}x larger scans (shrunk "
                          f"to its working size): ROC AUC {d['auc_large_scans']:.3f}")
        if "auc_clean_scans" in d:
            console.print(f"scratch detector on the same defects drawn on the undegraded photos (well-kept scans with "
                          f"scratches): ROC AUC {d['auc_clean_scans']:.3f}, recall@{d['threshold']} "
                          f"{d['recall_clean_scans']:.1%}")
    else:
        console.print(f"scratch detector: {d['unavailable']}")
    if "auto_decision" in d:
        a = d["auto_decision"]
        console.print(f"--scratch auto: {a['accuracy']:.1%} right ({a['scratched_to_scratch_path']}/{a['scratched']} "
                      f"scratched photos to the scratch path, {a['clean_to_quality_path']}/{a['clean']} without "
                      "structured defects to the quality path)")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
