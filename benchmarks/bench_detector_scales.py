"""Scratch detection with one scale (the official working size, the baseline) against two scales (the working size
plus `fine_detector_size`) and two scales with the mirrored passes (oldphoto's default, `detector_mirror`), on the
same scans in the same run.

For each scan size: the detection stage's own `scratch_probability` with `scales=1`, `scales=2` and `scales=2,
mirror=True`, the best of --repeats runs each (seconds), and the ratios to one scale; then, each in its own child
process, the peak RSS of the detection at one and at two scales above that process's RSS once the networks are
loaded and the scan decoded (the peak is reset there through /proc/self/clear_refs, Linux), and the ratio. Scans:
yours (--folder) or generated portraits with scratches at --sizes (long side, 4:3).

    .venv/bin/python benchmarks/bench_detector_scales.py [--sizes 600 2126 4000] [--weights oldphoto/weights]
    .venv/bin/python benchmarks/bench_detector_scales.py --folder samples/scans --no-memory
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

MIB = 1024 ** 2

CHILD = r"""
import json, os, sys
import numpy as np, torch
from PIL import Image
from oldphoto.weights_source import WeightsSource
from oldphoto.stages.scratch import scratch_probability
mode, path, weights = sys.argv[1], sys.argv[2], sys.argv[3]
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
net = WeightsSource.from_options(weights).load().get("scratch_unet")
pixels = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:   # resets VmHWM (the peak) to the current RSS
    f.write("5")
with torch.no_grad():
    scratch_probability(net, pixels, scales=int(mode))
print(json.dumps({"before": before, "peak": status("VmHWM:")}))
"""


def scans(args: argparse.Namespace, tmp: Path) -> list[Path]:
    if args.folder:
        return sorted(p for p in args.folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".tif", ".tiff"})
    from bench_restore import synth_photo

    paths = []
    for side in args.sizes:
        path = tmp / f"scan_{side}.png"
        if not path.exists():
            Image.fromarray(synth_photo(side, side * 3 // 4, seed=side)).save(path)
        paths.append(path)
    return paths


def timed(net, pixels: np.ndarray, scales: int, repeats: int,
          mirror: bool = False) -> tuple[float, list[tuple[int, int]]]:
    import torch

    from oldphoto.stages.scratch import scratch_probability

    best, sizes = float("inf"), []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            sizes = scratch_probability(net, pixels, scales=scales, mirror=mirror).sizes
        best = min(best, time.perf_counter() - t0)
    return best, sizes


def peak(mode: str, path: Path, weights: str) -> dict[str, int]:
    res = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), weights], capture_output=True, text=True,
                         env=dict(os.environ))
    if res.returncode != 0:
        raise SystemExit(f"child {mode} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, help="scans to detect on (default: generated scans at --sizes)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[600, 2126, 4000], help="long sides of generated scans")
    ap.add_argument("--weights", default="oldphoto/weights", help="weights folder with scratch_unet (default: shipped)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tmp", type=Path, default=Path("/tmp/oldphoto_bench_detector_scales"))
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-RSS children")
    args = ap.parse_args()

    import torch

    from oldphoto.weights_source import WeightsSource

    torch.set_num_threads(args.threads)
    os.environ["BENCH_THREADS"] = str(args.threads)
    args.tmp.mkdir(parents=True, exist_ok=True)
    net = WeightsSource.from_options(args.weights).load().get("scratch_unet")
    print(f"scratch detection, one scale (baseline) vs two scales, without and with the mirrored pass; weights "
          f"{args.weights}; torch threads {args.threads}")
    print(f"{'scan':>28s} {'one scale s':>11s} {'two scales s':>12s} {'ratio':>6s} {'+ mirror s':>10s} {'ratio':>6s}"
          f"  network input sizes (two scales)")
    ratios, mirror_ratios = [], []
    for path in scans(args, args.tmp):
        pixels = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
        timed(net, pixels, 1, 1)                                   # warm-up (allocator, kernels)
        one, _ = timed(net, pixels, 1, args.repeats)
        two, sizes = timed(net, pixels, 2, args.repeats)
        both, _ = timed(net, pixels, 2, args.repeats, mirror=True)
        ratios.append(two / one)
        mirror_ratios.append(both / one)
        label = f"{path.name} {pixels.shape[1]}x{pixels.shape[0]}"
        print(f"{label:>28s} {one:11.3f} {two:12.3f} {two / one:6.2f} {both:10.3f} {both / one:6.2f}  "
              f"{' + '.join(f'{w}x{h}' for h, w in sizes)}")
        if not args.no_memory:
            r1, r2 = (peak(str(s), path, args.weights) for s in (1, 2))
            m1, m2 = (r["peak"] - r["before"] for r in (r1, r2))
            print(f"{'':>28s} peak RSS of the detection above the loaded network and decoded scan"
                  f" ({r1['before'] / MIB:.0f} MiB): one scale {m1 / MIB:.0f} MiB, two scales {m2 / MIB:.0f} MiB,"
                  f" ratio {m2 / max(m1, 1):.2f}")
    print(f"time ratio two/one scales: {min(ratios):.2f}-{max(ratios):.2f}; with the mirrored pass (the default): "
          f"{min(mirror_ratios):.2f}-{max(mirror_ratios):.2f}")


if __name__ == "__main__":
    main()
