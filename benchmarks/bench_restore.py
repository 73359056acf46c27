"""Benchmark of the single-machine restoration pipeline (`oldphoto restore`'s Restorer).

1. Throughput: restores a folder (yours with --folder, or N generated photos with faces and drawn scratches)
   and prints images/s and the seconds spent in each stage.
2. Memory: restores one large scan (default 6000×4000 = 24 MP, generated: a portrait on textured paper with
   scratches) through every stage (--scratch on: detector, scratch path; faces) in a child process and prints its
   peak RSS, next to the peak RSS of a child that only imports the pipeline and decodes the same file (the
   baseline measured in the same run), against the 8 GiB budget.
3. Memory model (--fit 1 4 16 48): `oldphoto restore` (the command, --scratch as given, default otherwise)
   on generated scans of those sizes and on two random-pixel strips (10×20000 and 20000×10, H×W), each in
   its own process; prints each peak RSS and seconds, the least-squares fit peak ≈ a + b·megapixels, and
   the checks of issue 12 (48 MP ≤ 3 GiB; each strip ≤ 1 GiB and under a minute).

Weights: --weights DIR (oldphoto weights) or, by default, tiny random weights written to a temporary folder by
`oldphoto.testing.random_weights.make_random_weights(tiny=True)`: these measure the pipeline's own costs (decode, tiling,
detection, alignment, blending, encoding) and memory bounds, not the official networks' compute.

    .venv/bin/python benchmarks/bench_restore.py [--folder DIR] [--n 6] [--megapixels 24] [--weights DIR]
    .venv/bin/python benchmarks/bench_restore.py --fit 1 4 16 48 [--weights DIR]     # memory model only
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

GIB = 1024 ** 3


def synth_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A portrait (skimage's astronaut) on a noisy paper background with a few bright scratches."""
    import cv2
    from skimage import data

    rng = np.random.default_rng(seed)
    side = min(width, height)
    face = np.asarray(Image.fromarray(data.astronaut()).resize((side, side), Image.BICUBIC))
    canvas = np.empty((height, width, 3), np.uint8)
    tone = rng.normal(200, 6, (max(1, height // 8), max(1, width // 8), 1)).clip(0, 255).astype(np.uint8)
    canvas[:] = cv2.resize(np.repeat(tone, 3, axis=2), (width, height), interpolation=cv2.INTER_LINEAR)
    x0 = (width - side) // 2
    canvas[:, x0:x0 + side] = face[:height]
    for _ in range(6):
        p0 = (int(rng.integers(0, width)), 0)
        p1 = (int(rng.integers(0, width)), height - 1)
        cv2.line(canvas, p0, p1, (245, 245, 245), thickness=max(2, width // 1500))
    return canvas


def restore_folder(folder: Path, weights: Path, scratch: str) -> None:
    from oldphoto.weights_source import WeightsSource
    from oldphoto.pipeline import Restorer, RestoreOptions

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    restorer = Restorer(WeightsSource.from_options(weights).load(), RestoreOptions(scratch=scratch))
    restorer.run("warmup.jpg", files[0].read_bytes())          # model loading and dlib outside the timing
    stage = Counter()
    failed = 0
    t0 = time.perf_counter()
    for p in files:
        st = restorer.run(str(p), p.read_bytes())
        failed += st.failed
        for r in st.provenance.stages:
            stage[r.name] += r.seconds
    dt = time.perf_counter() - t0
    print(f"folder: {len(files)} images in {dt:.1f} s = {len(files) / dt:.3f} images/s ({failed} failed)")
    for name, s in stage.items():
        print(f"  {name:20s} {s:8.2f} s  ({s / max(dt, 1e-9):5.1%})")


CHILD = r"""
import json, resource, sys, time
mode, path, weights = sys.argv[1], sys.argv[2], sys.argv[3]
from oldphoto.imageops.io import decode_image
from oldphoto.weights_source import WeightsSource
from oldphoto.pipeline import Restorer, RestoreOptions
data = open(path, "rb").read()
t0 = time.perf_counter()
out = {}
if mode == "decode":
    dec = decode_image(data)
    out["shape"] = list(dec.pixels.shape)
else:
    st = Restorer(WeightsSource.from_options(weights).load(), RestoreOptions(scratch="on")).run(path, data)
    out["error"] = st.error
    out["faces"] = len(st.faces)
    out["stages"] = {r.name: r.seconds for r in st.provenance.stages}
    out["files"] = {k: len(v) for k, v in st.files.items()}
out["seconds"] = time.perf_counter() - t0
out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(out))
"""


def child(mode: str, path: Path, weights: Path) -> dict:
    env = dict(os.environ)
    res = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(weights)], capture_output=True,
                         text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"child {mode} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def cli_run(inputs: list[Path], out: Path, weights: Path, scratch: str) -> tuple[float, float, int]:
    """(peak RSS in bytes, seconds, exit code) of one `oldphoto restore` process (its own rusage, wait4)."""
    cmd = [sys.executable, "-c", "from oldphoto.cli import main; main()", "restore", *map(str, inputs),
           "--out", str(out), "--weights", str(weights), "--scratch", scratch, "--no-catalog"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss * 1024, time.perf_counter() - t0, proc.returncode


def memory_model(sizes: list[float], weights: Path, tmp: Path, scratch: str) -> None:
    """Peak RSS of `oldphoto restore` against megapixels: a + b·MP, and the strips."""
    rows = []
    for mp in sizes:
        h = int(round((mp * 1e6 / 1.5) ** 0.5))
        w = int(round(h * 1.5))
        path = tmp / f"scan_{mp:g}mp.jpg"
        Image.fromarray(synth_photo(w, h, seed=1)).save(path, quality=90)
        peak, secs, rc = cli_run([path], tmp / "out_fit", weights, scratch)
        rows.append((w * h / 1e6, peak))
        print(f"  {w}×{h} ({w * h / 1e6:5.1f} MP): peak RSS {peak / GIB:5.2f} GiB, {secs:6.1f} s, exit {rc}")
    mps = np.array([r[0] for r in rows])
    peaks = np.array([r[1] for r in rows]) / GIB
    b, a = np.polyfit(mps, peaks, 1)
    resid = np.abs(peaks - (a + b * mps)).max()
    print(f"memory model: peak RSS ≈ {a:.2f} GiB + {b * 1024:.1f} MiB × megapixels "
          f"(= {b * GIB / 1e6:.0f} bytes per pixel; largest residual {resid * 1024:.0f} MiB)")
    if 48 in sizes:
        p48 = peaks[sizes.index(48)]
        print(f"  48 MP: {p48:.2f} GiB ({'within' if p48 <= 3 else 'OVER'} the 3 GiB bound)")
    rng = np.random.default_rng(0)
    for name, shape in (("strip 10×20000", (10, 20000, 3)), ("strip 20000×10", (20000, 10, 3))):
        path = tmp / (name.replace(" ", "_").replace("×", "x") + ".png")
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        peak, secs, rc = cli_run([path], tmp / "out_strips", weights, scratch)
        ok = peak <= GIB and secs < 60 and rc == 0
        print(f"  {name} (random pixels, {path.stat().st_size / 1e3:.0f} kB): peak RSS {peak / GIB:.2f} GiB, "
              f"{secs:.1f} s, exit {rc} ({'within' if ok else 'OVER'} 1 GiB and 60 s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, help="folder of scans to restore (default: generated photos)")
    ap.add_argument("--n", type=int, default=6, help="generated photos for the throughput part")
    ap.add_argument("--size", type=int, nargs=2, default=(512, 384), metavar=("W", "H"))
    ap.add_argument("--megapixels", type=float, default=24.0, help="size of the large scan (0 to skip)")
    ap.add_argument("--weights", type=Path, help="oldphoto weights folder (default: tiny random weights)")
    ap.add_argument("--scratch", default="auto", choices=("auto", "on", "off"))
    ap.add_argument("--fit", type=float, nargs="+", metavar="MP",
                    help="memory model only: peak RSS of `oldphoto restore` at these sizes, and the strips")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_restore_"))
    weights = args.weights
    if weights is None:
        from oldphoto.testing.random_weights import make_random_weights

        weights = tmp / "weights"
        make_random_weights(weights, seed=0, tiny=True)
        print(f"weights: tiny random weights (make_random_weights(tiny=True)) in {weights}")
    else:
        print(f"weights: {weights}")
    import torch

    print(f"torch threads: {torch.get_num_threads()}, cpu count: {os.cpu_count()}")
    if args.fit:
        print(f"memory model: oldphoto restore --scratch {args.scratch}")
        memory_model(list(args.fit), weights, tmp, args.scratch)
        return

    folder = args.folder
    if folder is None:
        folder = tmp / "scans"
        folder.mkdir()
        for i in range(args.n):
            Image.fromarray(synth_photo(*args.size, seed=i)).save(folder / f"photo_{i:02d}.jpg", quality=90)
        print(f"folder: {args.n} generated {args.size[0]}×{args.size[1]} photos")
    restore_folder(folder, weights, args.scratch)

    if args.megapixels > 0:
        h = int(round((args.megapixels * 1e6 / 1.5) ** 0.5))
        w = int(round(h * 1.5))
        big = tmp / "big_scan.jpg"
        Image.fromarray(synth_photo(w, h, seed=42)).save(big, quality=90)
        print(f"large scan: {w}×{h} = {w * h / 1e6:.1f} MP, {big.stat().st_size / 1e6:.1f} MB JPEG")
        base = child("decode", big, weights)
        full = child("restore", big, weights)
        if full.get("error"):
            print(f"  restore FAILED: {full['error']}")
        print(f"  decode only  : peak RSS {base['peak_rss'] / GIB:5.2f} GiB  ({base['seconds']:.1f} s)")
        print(f"  all stages   : peak RSS {full['peak_rss'] / GIB:5.2f} GiB  ({full['seconds']:.1f} s), "
              f"{full['faces']} face(s), {full['peak_rss'] / max(base['peak_rss'], 1):.2f}× the decode-only peak, "
              f"{full['peak_rss'] / (8 * GIB):.0%} of the 8 GiB budget")
        for name, s in full["stages"].items():
            print(f"    {name:20s} {s:8.2f} s")
        print(f"  outputs: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in full["files"].items()))


if __name__ == "__main__":
    main()
