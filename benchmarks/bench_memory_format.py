"""The networks in channels-last memory order (how `oldphoto.models` loads them) against the default layout, in the
same run: the same weights and inputs, only the layout of the 4-d tensors differs.

1. Per network: each role's forward pass at a typical input size, the best of --repeats runs in each layout, the ratio
   (default / channels-last: above 1 means channels-last is faster) and the largest difference of the outputs.
2. Whole photos: `oldphoto restore`'s Restorer with the default options on the scans of --folder (default: the
   samples), the networks as loaded (channels-last) against the same networks converted back to the default layout,
   per stage seconds summed over the scans (best of --repeats passes), the ratio, and the largest difference of the
   restored images in grey levels.

    .venv/bin/python benchmarks/bench_memory_format.py [--folder samples/scans] [--threads 2] [--repeats 2]
"""
from __future__ import annotations

import argparse
import copy
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def best_time(fn, repeats: int) -> tuple[float, object]:
    fn()                                                  # warm-up (allocations, kernel choice)
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def network_inputs(models) -> dict[str, tuple]:
    """A typical call per role: (callable(module, *inputs), inputs)."""
    g = torch.Generator().manual_seed(0)
    img = lambda c, s: torch.rand(1, c, s, s, generator=g) * 2 - 1   # noqa: E731
    line = torch.zeros(1, 1, 512, 512)
    line[..., 250:256, :] = 1.0
    latent = models.get("vae_a").encode(img(3, 512))
    return {
        "scratch_unet": (lambda m, x: m(x), (img(1, 512),)),
        "vae_a": (lambda m, x: m.encode(x), (img(3, 512),)),
        "mapping_quality": (lambda m, z: m(z), (latent,)),
        "vae_b_quality": (lambda m, z: m.decode(z), (latent,)),
        "mapping_scratch": (lambda m, z, k: m(z, k), (latent, line)),
        "refiner": (lambda m, a, b, k: m(a, b, k), (img(3, 512), img(3, 512), line)),
        "face_256": (lambda m, x: m(x), (img(3, 256),)),
    }


def per_network(models, repeats: int) -> None:
    print(f"{'network':16s} {'default s':>10s} {'ch.-last s':>10s} {'ratio':>6s} {'max |diff|':>10s}")
    with torch.no_grad():
        for role, (call, inputs) in network_inputs(models).items():
            if not models.has(role):
                continue
            fast = models.get(role)
            plain = copy.deepcopy(fast).to(memory_format=torch.contiguous_format)
            t0, y0 = best_time(lambda: call(plain, *inputs), repeats)
            t1, y1 = best_time(lambda: call(fast, *inputs), repeats)
            print(f"{role:16s} {t0:10.3f} {t1:10.3f} {t0 / t1:6.2f} {float((y0 - y1).abs().max()):10.2e}")


def whole_photos(models, folder: Path, repeats: int) -> None:
    from oldphoto.pipeline import Restorer, RestoreOptions

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".tif", ".tiff"})
    restorer = Restorer(models, RestoreOptions())

    def run_all() -> tuple[Counter, list[np.ndarray]]:
        stages, outs = Counter(), []
        for p in files:
            st = restorer.run(str(p), p.read_bytes())
            for r in st.provenance.stages:
                stages[r.name] += r.seconds
            outs.append(st.restored)
        return stages, outs

    def layout(fmt: torch.memory_format) -> None:
        for role in models.available():
            models.get(role).to(memory_format=fmt)

    results = {}
    for name, fmt in (("default", torch.contiguous_format), ("channels-last", torch.channels_last)):
        layout(fmt)
        run_all()                                          # warm-up
        runs = [run_all() for _ in range(repeats)]
        results[name] = (min(runs, key=lambda r: sum(r[0].values())))
    (s0, o0), (s1, o1) = results["default"], results["channels-last"]
    diff = max(float(np.abs(a - b).max()) * 255 for a, b in zip(o0, o1))
    print(f"\n{len(files)} scans from {folder}: per stage seconds (summed), default / channels-last")
    for stage in s0:
        print(f"  {stage:20s} {s0[stage]:7.2f} {s1[stage]:7.2f}  ratio {s0[stage] / max(s1[stage], 1e-9):5.2f}")
    t0, t1 = sum(s0.values()), sum(s1.values())
    print(f"  {'all stages':20s} {t0:7.2f} {t1:7.2f}  ratio {t0 / t1:5.2f}")
    print(f"largest difference of the restored images: {diff:.3f} grey levels (of 255)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=str(ROOT / "oldphoto" / "weights"))
    ap.add_argument("--folder", type=Path, default=ROOT / "samples" / "scans")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from oldphoto.weights_source import WeightsSource

    models = WeightsSource.from_options(a.weights).load()
    print(f"torch {torch.__version__}, {a.threads} thread(s), best of {a.repeats}")
    per_network(models, a.repeats)
    whole_photos(models, a.folder, a.repeats)


if __name__ == "__main__":
    main()
