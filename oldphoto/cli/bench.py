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
                                        "the real 1927 photo and the NIQE parameters. Default: builtin photos."),
    out: Path = typer.Option(Path("out/bench_quality"), "--out", help="Folder for quality.json and "
                             "quality_grid.png."),
    seed: int = typer.Option(0, "--seed"),
    size: int = typer.Option(256, "--size", min=96, help="Working size: short side resized, centre square crop."),
    max_photos: Optional[int] = typer.Option(None, "--max-photos", min=1),
) -> None:
    """PSNR/SSIM on held-out photos with a fixed synthetic degradation (input, OpenCV baseline, ours), scratch
    detector ROC AUC/F1 against the synthetic masks, NIQE on the real 1927 photo."""
    from rich.console import Console
    from rich.table import Table

    from oldphoto.quality import run_quality_bench, write_bench

    console = Console()
    try:
        res = run_quality_bench(weights, data, seed=seed, size=size, max_photos=max_photos,
                                progress=lambda m: console.print(f"[dim]{m}[/dim]"))
    except (FileNotFoundError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    f = res.figures
    t = Table(title=f"Synthetic test: {f['n_photos']} photos ({f['held_out_photos']}), {size}x{size}, seed {seed}")
    t.add_column("method")
    t.add_column("PSNR (dB)", justify="right")
    t.add_column("SSIM", justify="right")
    names = {"degraded": "degraded input", "baseline": "OpenCV NLM + Telea inpaint", "ours": "ours (Restorer)"}
    for key, label in names.items():
        m = f["methods"].get(key)
        t.add_row(label, _fmt(m and m["psnr"]), _fmt(m and m["ssim"], 3))
    console.print(t)
    console.print(f"baseline inpainting mask: {f['baseline_mask']}")
    if f["ours_unavailable"]:
        console.print(f"ours: not measured ({f['ours_unavailable']})")
    d = f["scratch_detector"]
    if "auc" in d:
        console.print(f"scratch detector: ROC AUC {d['auc']:.3f}, F1@{d['threshold']} {d['f1']:.3f}")
    else:
        console.print(f"scratch detector: {d['unavailable']}")
    n = f["niqe"]
    if "input" in n:
        console.print(f"NIQE on {n['photo']} {n['size'][0]}x{n['size'][1]} (lower is better): input "
                      f"{n['input']:.3f}, baseline {n['baseline']:.3f}, ours {_fmt(n.get('ours'), 3)}")
    else:
        console.print(f"NIQE: unavailable ({n['unavailable']})")
    jp, gp = write_bench(res, out)
    console.print(f"wrote {jp} and {gp}")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
