"""Choose FACE_MIN_STRUCTURE (stages/base.py) on the *val* faces: when to give a face the scan's own face back.

    python scripts/choose_face_putback.py --weights oldphoto/weights --data DATA [--json out.json]

Runs `oldphoto bench quality --split val` twice on the face-val photos (never trained on): with no face put back
(`face_min_structure` 0) and with every face put back (minimum 1, the largest the options accept: every face
whose structure kept is below 1; a face the measure cannot judge, 1, is never put back). Each ground-truth face is matched to the
pipeline's face and the structure stage 1 kept of it (`imageops.faces.structure_kept`, from the first run). For
each minimum T a face ends as the "put back" result when its structure kept < T, else as the stage-1 result; the
script prints, per T, the mean face PSNR/SSIM gain over the degraded input and how many faces end worse than their
input. Chosen: among the T as good as the best (fewest faces worse, then the best mean PSNR gain to 0.01 dB), the
highest: the strictest protection of faces that costs nothing on val.
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from oldphoto.quality_bench import run_quality_bench

    common = dict(split="val", real=False, max_photos=1, seed=0)
    keep = run_quality_bench(a.weights, a.data, options={"face_min_structure": 0.0}, **common).figures
    back = run_quality_bench(a.weights, a.data, options={"face_min_structure": 1.0}, **common).figures
    rows = []
    for p_k, p_b in zip(keep["per_photo"] + keep["face_photos"], back["per_photo"] + back["face_photos"]):
        for f_k, f_b in zip(p_k["faces"], p_b["faces"]):
            if "ours" not in f_k or "ours" not in f_b:
                continue
            kept = (f_k.get("pipeline") or {}).get("structure_kept")
            rows.append({"id": p_k["id"], "input": f_k["degraded"], "keep": f_k["ours"], "back": f_b["ours"],
                         "structure_kept": kept})
    print(f"{len(rows)} val faces ({sum(r['structure_kept'] is not None for r in rows)} found by the pipeline)")
    results = []
    for t in (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        fin = [r["back"] if r["structure_kept"] is not None and r["structure_kept"] < t else r["keep"] for r in rows]
        gain = float(np.mean([f["psnr"] - r["input"]["psnr"] for f, r in zip(fin, rows)]))
        gain_ssim = float(np.mean([f["ssim"] - r["input"]["ssim"] for f, r in zip(fin, rows)]))
        worse = sum(f["psnr"] < r["input"]["psnr"] or f["ssim"] < r["input"]["ssim"] for f, r in zip(fin, rows))
        n_back = sum(r["structure_kept"] is not None and r["structure_kept"] < t for r in rows)
        results.append({"min_structure": t, "psnr_gain": gain, "ssim_gain": gain_ssim, "worse": worse, "put_back": n_back})
        print(f"T={t:>5g}  put back {n_back:3d}/{len(rows)}  face PSNR gain {gain:+.2f} dB  SSIM gain {gain_ssim:+.3f}  "
              f"worse than input {worse}")
    # among the T as good as the best on val (fewest faces worse, then the best mean PSNR gain to 0.01 dB), the
    # highest: the strictest protection of faces that costs nothing on val
    best = min((r["worse"], -round(r["psnr_gain"], 2)) for r in results)
    chosen = max((r for r in results if (r["worse"], -round(r["psnr_gain"], 2)) == best),
                 key=lambda r: r["min_structure"])
    print(f"chosen: FACE_MIN_STRUCTURE = {chosen['min_structure']:g}")
    for r in rows:
        print(f"  {r['id']:40s} kept {r['structure_kept']}  input {r['input']['psnr']:.2f}/{r['input']['ssim']:.3f}  "
              f"stage1 {r['keep']['psnr']:.2f}/{r['keep']['ssim']:.3f}  put back {r['back']['psnr']:.2f}/{r['back']['ssim']:.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "results": results, "chosen": chosen}, f, indent=1)


if __name__ == "__main__":
    main()
