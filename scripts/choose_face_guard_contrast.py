"""Choose FACE_GUARD_MIN_CONTRAST and FACE_GUARD_MIN_PROB (imageops/mask.py) on the *val* photos and faces.

    python scripts/choose_face_guard_contrast.py --weights oldphoto/weights --data DATA [--json out.json]

Inside a face the face guard keeps only scratch-like mask parts; with a contrast it also keeps parts lighter than
their ring by that much (and marked with a mean probability of at least the minimum): white scuffs and scratch
clusters on a face, which the shape rule alone drops, so the face was not inpainted and kept its defects. For each
setting the script runs `oldphoto bench quality --split val` (no real photos) and prints the mean PSNR/SSIM of the
val photos, of the clean val photos restored as scans (do no harm), of the face crops, and how many faces end worse
than their degraded input. Chosen: among the settings with the fewest faces worse and no clean photo sent down the
scratch path more than with the guard alone, the best mean face PSNR to 0.01 dB, then the highest contrast and
probability (the strictest).
"""
from __future__ import annotations

import argparse
import json

import numpy as np

SETTINGS = [(None, 0.7), (0.05, 0.7), (0.1, 0.7), (0.15, 0.7), (0.1, 0.8)]


def summary(fig: dict) -> dict:
    faces = [f for p in fig["face_photos"] for f in p["faces"] if "ours" in f]
    worse = sum(f["ours"]["psnr"] < f["degraded"]["psnr"] or f["ours"]["ssim"] < f["degraded"]["ssim"] for f in faces)
    return {"psnr": fig["methods"]["ours"]["psnr"], "ssim": fig["methods"]["ours"]["ssim"],
            "clean_psnr": fig["clean_scans"]["psnr"], "clean_scratch_path": fig["clean_scans"]["scratch_path"],
            "face_psnr": float(np.mean([f["ours"]["psnr"] for f in faces])),
            "face_ssim": float(np.mean([f["ours"]["ssim"] for f in faces])), "faces": len(faces), "faces_worse": worse}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="weights folder (the shipped one: oldphoto/weights)")
    ap.add_argument("--data", required=True, help="folder written by `oldphoto data fetch`")
    ap.add_argument("--seed", type=int, default=0, help="the bench's degradation seed")
    ap.add_argument("--json", default=None, help="write the rows and the choice here")
    a = ap.parse_args()
    import oldphoto.imageops.mask as mask_module
    from oldphoto.quality_bench import run_quality_bench

    rows = []
    for contrast, min_prob in SETTINGS:
        mask_module.FACE_GUARD_MIN_CONTRAST, mask_module.FACE_GUARD_MIN_PROB = contrast, min_prob
        fig = run_quality_bench(a.weights, a.data, split="val", real=False, seed=a.seed).figures
        row = {"min_contrast": contrast, "min_prob": min_prob, **summary(fig)}
        rows.append(row)
        print(f"contrast {contrast} min p {min_prob}: val photos {row['psnr']:.3f} dB / {row['ssim']:.4f}; clean "
              f"{row['clean_psnr']:.2f} dB ({row['clean_scratch_path']} to the scratch path); faces "
              f"{row['face_psnr']:.2f} dB / {row['face_ssim']:.4f}, {row['faces_worse']} of {row['faces']} worse",
              flush=True)
    base = rows[0]
    ok = [r for r in rows if r["clean_scratch_path"] <= base["clean_scratch_path"]]
    fewest = min(r["faces_worse"] for r in ok)
    ok = [r for r in ok if r["faces_worse"] == fewest]
    best = max(round(r["face_psnr"], 2) for r in ok)
    chosen = max((r for r in ok if round(r["face_psnr"], 2) == best),
                 key=lambda r: (r["min_contrast"] if r["min_contrast"] is not None else float("inf"), r["min_prob"]))
    print(f"chosen: FACE_GUARD_MIN_CONTRAST = {chosen['min_contrast']}, FACE_GUARD_MIN_PROB = {chosen['min_prob']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "chosen": chosen}, f, indent=1)


if __name__ == "__main__":
    main()
