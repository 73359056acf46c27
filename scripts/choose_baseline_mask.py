"""Give the classical baseline its best top-hat mask settings, chosen on the *val* split (so the comparison in
`oldphoto bench quality` is against the baseline at its best, not a straw man).

    python scripts/choose_baseline_mask.py --data DATA [--seeds 2]

Each val photo (short side 256, centre crop) is degraded with the default synthesis; the baseline (NLM denoising +
Telea inpainting of its own top-hat mask) runs for every kernel/threshold pair, and the mean PSNR/SSIM are printed.
"""
from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    a = ap.parse_args()
    from oldphoto.data import dataset as odata
    from oldphoto.data.textures import TextureBank
    from oldphoto.quality import psnr, ssim
    from oldphoto.quality_bench import classical_restore, tophat_mask
    from oldphoto.synthesis import synthesize

    textures = TextureBank.from_dir(a.data)
    pairs = []
    for i, rec in enumerate(odata.split_photos(a.data, "val")):
        img = odata.square_crop(rec.path, a.size)
        for s in range(a.seeds):
            d = synthesize(img, np.random.default_rng([2000 + s, i]), textures)
            pairs.append((d.clean, d.degraded))
    print(f"{len(pairs)} val samples; input {np.mean([psnr(c, d) for c, d in pairs]):.2f} dB")
    best = None
    for k in (3, 5, 7, 9, 13):
        for t in (0.06, 0.09, 0.12, 0.18, 0.25, 0.32, 0.4, 1.01):
            outs = [classical_restore(d, tophat_mask(d, k, t)) for _, d in pairs]
            p = float(np.mean([psnr(c, o) for (c, _), o in zip(pairs, outs)]))
            q = float(np.mean([ssim(c, o) for (c, _), o in zip(pairs, outs)]))
            print(f"kernel {k:2d} threshold {t:.2f}: {p:.2f} dB / {q:.3f}")
            if best is None or p > best[0]:
                best = (p, q, k, t)
    print(f"best on val: kernel {best[2]}, threshold {best[3]} ({best[0]:.2f} dB / {best[1]:.3f})")


if __name__ == "__main__":
    main()
