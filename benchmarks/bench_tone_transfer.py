"""Tone transfer: untiled vs tiled vs computed at a reduced scale, for memory and for quality.

Variants of `oldphoto.imageops.tone.guided_tone_transfer` (sigma 2, eps 1e-3):

- untiled: the whole image as one tile (`tile` = the image's long side): what oldphoto did before;
- tiled: 512-px tiles with an exact halo (the shipped default);
- structure: tiled, with the structure return's guide (`oldphoto.imageops.structure`: the scan's noise floor,
  then per tile the returned structure) at full strength, its worst case for time and memory (its quality is
  measured on the val bench, MODEL_CARD.md, so it is left out of the quality part);
- reduced ×s: the coefficients (a, b) computed on an s-times smaller image (area downscale, sigma/s) and
  upsampled bilinearly, out = a·guide + b at full size (He & Sun's "fast guided filter"), s = 2 and 4.

Memory: each variant runs in a child process on a synthetic scan (--megapixels, default 24); printed is its
peak RSS above a baseline child that only builds the same inputs (measured in the same run), and the ratio
to the untiled variant. Quality: on the four sample photos (samples/make_samples.py's sources, degraded by the
same synthesis and seeds) with the shipped networks' output as the guide (`--no-tone-match` stage 1), PSNR
against the clean photo, and the largest difference from the untiled result.

    .venv/bin/python benchmarks/bench_tone_transfer.py [--megapixels 24] [--no-quality]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from functools import partial

import numpy as np

GIB = 1024 ** 3
VARIANTS = ("baseline", "untiled", "tiled", "structure", "reduced2", "reduced4")
QUALITY_VARIANTS = ("untiled", "tiled", "reduced2", "reduced4")


def reduced_scale_transfer(restored: np.ndarray, reference: np.ndarray, valid: np.ndarray | None, scale: int,
                           sigma: float, eps: float) -> np.ndarray:
    """The fast-guided-filter variant: coefficients at 1/scale, upsampled, applied to the full-size guide."""
    import cv2

    from oldphoto.imageops.tone import _global_fit, _guide, tone_coefficients

    h, w = restored.shape[:2]
    sh, sw = max(1, h // scale), max(1, w // scale)
    v = np.ones((h, w), bool) if valid is None else valid
    small = [cv2.resize(a, (sw, sh), interpolation=cv2.INTER_AREA) for a in (restored, reference)]
    wt = cv2.resize(v.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
    fit = None if v.all() else partial(_global_fit, partial(_guide, restored), reference, v, eps, 512)
    a, b = tone_coefficients(small[0].mean(axis=2), small[1], wt, sigma / scale, eps, fit)
    guide = restored.mean(axis=2)
    out = np.empty_like(reference)
    for c in range(reference.shape[2]):      # one full-size channel of each coefficient at a time
        up_a = cv2.resize(np.ascontiguousarray(a[..., c]), (w, h), interpolation=cv2.INTER_LINEAR)
        up_b = cv2.resize(np.ascontiguousarray(b[..., c]), (w, h), interpolation=cv2.INTER_LINEAR)
        out[..., c] = np.clip(up_a * guide + up_b, 0.0, 1.0)
    return out


def run_variant(name: str, restored: np.ndarray, reference: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    from oldphoto.imageops.tone import DEFAULT_EPS, DEFAULT_SIGMA, guided_tone_transfer

    if name == "untiled":
        return guided_tone_transfer(restored, reference, valid, tile=max(restored.shape[:2]))
    if name == "tiled":
        return guided_tone_transfer(restored, reference, valid)
    if name == "structure":
        from oldphoto.imageops.structure import ReturnedGuide, noise_floor

        guide = ReturnedGuide(restored, reference, valid, noise_floor(reference), 1.0)
        return guided_tone_transfer(restored, reference, valid, guide=guide)
    return reduced_scale_transfer(restored, reference, valid, int(name[-1]), DEFAULT_SIGMA, DEFAULT_EPS)


def synthetic_pair(megapixels: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(restored, scan, valid) at about `megapixels`, 3:2: textured photo-like content, a few scratches."""
    import cv2

    w = int(round((megapixels * 1e6 * 1.5) ** 0.5))
    h = int(round(w / 1.5))
    rng = np.random.default_rng(0)
    low = rng.random((h // 16 + 1, w // 16 + 1, 3)).astype(np.float32)
    scan = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    scan += rng.normal(0, 0.03, (h, w, 1)).astype(np.float32)
    np.clip(scan, 0, 1, out=scan)
    restored = cv2.GaussianBlur(scan, (0, 0), 1.0) * np.float32(0.8) + np.float32(0.1)
    valid = np.ones((h, w), bool)
    for x in rng.integers(0, w - 8, 6):
        valid[:, x:x + 6] = False
    return restored, scan, valid


def child_main(name: str, megapixels: float) -> None:
    import resource
    import time

    restored, scan, valid = synthetic_pair(megapixels)
    t0 = time.perf_counter()
    if name != "baseline":
        out = run_variant(name, restored, scan, valid)
        assert out.shape == scan.shape
    print(json.dumps({"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "seconds": time.perf_counter() - t0}))


def memory(megapixels: float) -> None:
    res = {}
    for name in VARIANTS:
        p = subprocess.run([sys.executable, __file__, "--child", name, "--megapixels", str(megapixels)],
                           capture_output=True, text=True, env=dict(os.environ))
        if p.returncode:
            raise SystemExit(f"child {name} failed:\n{p.stderr[-2000:]}")
        res[name] = json.loads(p.stdout.strip().splitlines()[-1])
    base = res["baseline"]["peak"]
    print(f"memory on a {megapixels:g} MP synthetic scan (inputs alone: {base / GIB:.2f} GiB peak RSS)")
    for name in VARIANTS[1:]:
        extra = res[name]["peak"] - base
        print(f"  {name:9s} +{extra / GIB:6.3f} GiB above the inputs  ({extra / max(res['untiled']['peak'] - base, 1):6.1%}"
              f" of untiled)  {res[name]['seconds']:6.1f} s")


def quality() -> None:
    import matplotlib.cbook as cbook
    from PIL import Image
    from skimage import data

    from oldphoto.data import TextureBank
    from oldphoto.weights_source import WeightsSource
    from oldphoto.pipeline import Restorer, RestoreOptions
    from oldphoto.quality import psnr
    from oldphoto.synthesis import synthesize

    sources = [data.astronaut(), np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg"))), data.coffee(),
               data.chelsea()]
    bank = TextureBank.procedural(0)
    restorer = Restorer(WeightsSource().load(), RestoreOptions(scratch="off", faces=False, tone_match=False,
                                                           review=False))
    rows = {n: [] for n in QUALITY_VARIANTS}
    diffs = {n: 0.0 for n in QUALITY_VARIANTS}
    for i, src in enumerate(sources):
        d = synthesize(src, np.random.default_rng(100 + i), bank)
        scan = (np.clip(d.degraded, 0, 1) * 255 + 0.5).astype(np.uint8)
        st = restorer.run(f"sample{i}.png", _png(scan))
        assert not st.failed, st.error
        restored, ref = st.restored, st.decoded.pixels
        outs = {n: run_variant(n, restored, ref, None) for n in QUALITY_VARIANTS}
        for n, o in outs.items():
            rows[n].append(psnr(o, d.clean))
            diffs[n] = max(diffs[n], float(np.abs(o - outs["untiled"]).max()))
    print("quality on the 4 sample photos (network output as guide), PSNR vs the clean photo:")
    for n in QUALITY_VARIANTS:
        print(f"  {n:9s} {np.mean(rows[n]):6.2f} dB  ({np.mean(rows[n]) - np.mean(rows['untiled']):+.3f} dB vs "
              f"untiled; max abs difference from untiled {diffs[n]:.2e})")


def _png(arr: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--megapixels", type=float, default=24.0)
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child, args.megapixels)
        return
    memory(args.megapixels)
    if not args.no_quality:
        quality()


if __name__ == "__main__":
    main()
