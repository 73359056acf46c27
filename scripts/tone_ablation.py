"""How much of the end-to-end figure is the network and how much the tone-transfer filter, and which filter
settings to ship (chosen on the *val* split, never on the test photos).

Runs the synthetic set of `oldphoto bench quality` (256×256 centre crops, `synthesize(clean, rng([seed, i]))`)
on one split, with `--seeds N` degradations per photo (seed, seed+1, ...; the val split has only 4 photos),
and scores against the clean photos:

- raw:           the pipeline with `tone_match=False` (the official stage-1 semantics, face stage off);
- net-guided:    that output passed through `guided_tone_transfer(restored, scan, ~mask, sigma, eps)` (= the
                 default pipeline without the face stage), for every sigma × eps of the sweep;
- self-guided:   `guided_tone_transfer(scan, scan, ~mask)`, i.e. no network at all: the scan filtered by itself
                 (a classical edge-preserving smoother), at the same settings.

Prints JSON: mean PSNR/SSIM per method and the best net-guided and self-guided settings by PSNR.

Usage: python scripts/tone_ablation.py --weights oldphoto/weights --data DATA [--split val] [--seeds 3]
       [--sigmas 1,2,4,8] [--epss 1e-3,1e-2,1e-1] [--scratch auto|off|on]
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v.strip()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="degradations per photo (seed, seed+1, ...)")
    ap.add_argument("--sigmas", type=_floats, default=[2.0])
    ap.add_argument("--epss", type=_floats, default=[1e-3, 1e-2])
    ap.add_argument("--scratch", default="auto", help="auto (as the bench) | off (quality path only) | on")
    a = ap.parse_args()

    import torch

    from oldphoto.data.dataset import center_crop, held_out_photos, load_rgb, resize_short_side, split_photos
    from oldphoto.data.textures import TextureBank
    from oldphoto.imageops.tone import guided_tone_transfer
    from oldphoto.weights_source import WeightsSource
    from oldphoto.pipeline import Restorer, RestoreOptions
    from oldphoto.quality import psnr, ssim
    from oldphoto.quality_bench import WORKING_SIZE, _png_bytes
    from oldphoto.synthesis import synthesize

    torch.set_num_threads(1)
    recs = held_out_photos(a.data)[0] if a.split == "test" else split_photos(a.data, a.split)
    textures = TextureBank.from_dir(a.data)
    restorer = Restorer(WeightsSource.from_options(a.weights).load(),
                        RestoreOptions(scratch=a.scratch, faces=False, review=False, tone_match=False))
    methods = {"degraded input": lambda r, x, v: x, "raw network (tone_match off)": lambda r, x, v: r}
    for sigma in a.sigmas:
        for eps in a.epss:
            methods[f"net-guided sigma {sigma:g} eps {eps:g}"] = (
                lambda r, x, v, s=sigma, e=eps: guided_tone_transfer(r, x, v, sigma=s, eps=e))
            methods[f"self-guided sigma {sigma:g} eps {eps:g}"] = (
                lambda r, x, v, s=sigma, e=eps: guided_tone_transfer(x, x, v, sigma=s, eps=e))
    scores: dict[str, list[tuple[float, float]]] = {k: [] for k in methods}
    for i, rec in enumerate(recs):
        clean = center_crop(resize_short_side(load_rgb(rec.path, max_short_side=4 * WORKING_SIZE), WORKING_SIZE),
                            WORKING_SIZE)
        for k in range(a.seeds):
            # seed a.seed reproduces `oldphoto bench quality` exactly; further seeds add degradations
            d = synthesize(clean, np.random.default_rng([a.seed + k, i]), textures)
            st = restorer.run(f"ablation/{rec.id}.png", _png_bytes(d.degraded))
            valid = None if st.mask is None or not st.use_scratch else ~np.asarray(st.mask, bool)
            for name, f in methods.items():
                out = f(np.asarray(st.restored, np.float32), d.degraded.astype(np.float32), valid)
                scores[name].append((psnr(d.clean, out), ssim(d.clean, out)))
    result = {k: {"psnr": round(float(np.mean([p for p, _ in v])), 2),
                  "ssim": round(float(np.mean([s for _, s in v])), 3)} for k, v in scores.items()}
    best = {kind: max((k for k in result if k.startswith(kind)), key=lambda k: result[k]["psnr"])
            for kind in ("net-guided", "self-guided")}
    print(json.dumps({"split": a.split, "seeds": a.seeds, "scratch": a.scratch, "n_photos": len(recs),
                      "n_samples": len(recs) * a.seeds, "weights": a.weights, "results": result, "best": best},
                     indent=1))


if __name__ == "__main__":
    main()
