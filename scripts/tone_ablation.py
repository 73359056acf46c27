"""How much of the end-to-end figure is the network and how much the tone-transfer filter?

Runs the same synthetic test set as `oldphoto bench quality` (test split, 256×256, seed 0) and scores, against
the clean photos:

- raw:           the pipeline with `tone_match=False` (the official stage-1 semantics);
- net-guided:    that output passed through `guided_tone_transfer(restored, scan, ~mask)` (= the default pipeline
                 without the face stage);
- self-guided:   `guided_tone_transfer(scan, scan, ~mask)`, i.e. no network at all: the scan filtered by itself
                 (a classical edge-preserving smoother), at the default eps and at eps 1e-2.

Usage: python scripts/tone_ablation.py --weights oldphoto/weights --data /work/data [--split test|val] [--scratch off]
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scratch", default="auto", help="auto (as the bench) | off (quality path only) | on")
    a = ap.parse_args()

    import torch

    from oldphoto.data.dataset import center_crop, held_out_photos, load_rgb, resize_short_side, split_photos
    from oldphoto.data.textures import TextureBank
    from oldphoto.imageops.tone import DEFAULT_EPS, DEFAULT_SIGMA, guided_tone_transfer
    from oldphoto.models import ModelSet
    from oldphoto.pipeline import Restorer, RestoreOptions
    from oldphoto.quality import WORKING_SIZE, _png_bytes, psnr, ssim
    from oldphoto.synthesis import synthesize

    torch.set_num_threads(1)
    recs = held_out_photos(a.data)[0] if a.split == "test" else split_photos(a.data, a.split)
    textures = TextureBank.from_dir(a.data)
    restorer = Restorer(ModelSet.from_weights_dir(a.weights),
                        RestoreOptions(scratch=a.scratch, faces=False, review=False, tone_match=False))
    methods = {
        "degraded input": lambda r, x, v: x,
        "raw network (tone_match off)": lambda r, x, v: r,
        f"net-guided (default, sigma {DEFAULT_SIGMA}, eps {DEFAULT_EPS})":
            lambda r, x, v: guided_tone_transfer(r, x, v),
        f"self-guided, no network (eps {DEFAULT_EPS})": lambda r, x, v: guided_tone_transfer(x, x, v),
        "self-guided, no network (eps 0.01)": lambda r, x, v: guided_tone_transfer(x, x, v, eps=1e-2),
    }
    scores: dict[str, list[tuple[float, float]]] = {k: [] for k in methods}
    for i, rec in enumerate(recs):
        clean = center_crop(resize_short_side(load_rgb(rec.path, max_short_side=4 * WORKING_SIZE), WORKING_SIZE),
                            WORKING_SIZE)
        d = synthesize(clean, np.random.default_rng([a.seed, i]), textures)
        st = restorer.run(f"ablation/{rec.id}.png", _png_bytes(d.degraded))
        valid = None if st.mask is None or not st.use_scratch else ~np.asarray(st.mask, bool)
        for k, f in methods.items():
            out = f(np.asarray(st.restored, np.float32), d.degraded.astype(np.float32), valid)
            scores[k].append((psnr(d.clean, out), ssim(d.clean, out)))
    result = {k: {"psnr": round(float(np.mean([p for p, _ in v])), 2),
                  "ssim": round(float(np.mean([s for _, s in v])), 3)} for k, v in scores.items()}
    print(json.dumps({"split": a.split, "scratch": a.scratch, "n_photos": len(recs), "weights": a.weights, "results": result}, indent=1))


if __name__ == "__main__":
    main()
