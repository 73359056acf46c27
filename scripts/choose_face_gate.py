"""Choose the face agreement threshold (`face_min_agreement`, dB) and the blend strength on the *val* faces.

    python scripts/choose_face_gate.py --weights oldphoto/weights --data DATA [--json out.json]

Runs `oldphoto bench quality --split val` twice on the face-val photos (never trained on): with every enhanced
face applied (no gate) and with the face stage off. Each ground-truth face is matched to the pipeline's face and
its low-frequency agreement with the scan. For each threshold T the face ends as the "applied" result when its
agreement >= T and as the "off" result otherwise; the script prints, per T, the mean face PSNR/SSIM gain over the
degraded input and how many faces end worse than their input. Chosen: the lowest T with no face worse than with
the gate shut (never below what the stage-1 output alone gives), maximising the mean PSNR among those.
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from oldphoto.quality import run_quality_bench

    common = dict(split="val", real=False, max_photos=1, seed=0)
    on = run_quality_bench(a.weights, a.data, options={"face_min_agreement": -1e9, "face_strength": a.strength},
                           **common).figures
    off = run_quality_bench(a.weights, a.data, options={"faces": False}, **common).figures
    rows = []
    for p_on, p_off in zip(on["per_photo"] + on["face_photos"], off["per_photo"] + off["face_photos"]):
        for f_on, f_off in zip(p_on["faces"], p_off["faces"]):
            if "ours" not in f_on or "ours" not in f_off:
                continue
            rows.append({"id": p_on["id"], "input": f_on["degraded"], "on": f_on["ours"], "off": f_off["ours"],
                         "agreement": (f_on.get("pipeline") or {}).get("agreement_db")})
    print(f"{len(rows)} val faces ({sum(r['agreement'] is not None for r in rows)} found by the pipeline)")
    results = []
    for t in (-1e9, 14, 16, 18, 20, 22, 24, 26, 28, 30, 1e9):
        fin = [r["on"] if r["agreement"] is not None and r["agreement"] >= t else r["off"] for r in rows]
        gain = float(np.mean([f["psnr"] - r["input"]["psnr"] for f, r in zip(fin, rows)]))
        gain_ssim = float(np.mean([f["ssim"] - r["input"]["ssim"] for f, r in zip(fin, rows)]))
        worse = sum(f["psnr"] < r["input"]["psnr"] or f["ssim"] < r["input"]["ssim"] for f, r in zip(fin, rows))
        applied = sum(r["agreement"] is not None and r["agreement"] >= t for r in rows)
        results.append({"threshold": t, "psnr_gain": gain, "ssim_gain": gain_ssim, "worse": worse, "applied": applied})
        print(f"T={t:>6g}  applied {applied:3d}/{len(rows)}  face PSNR gain {gain:+.2f} dB  SSIM gain {gain_ssim:+.3f}  "
              f"worse than input {worse}")
    shut = results[-1]["worse"]
    ok = [r for r in results if r["worse"] <= shut and -1e9 < r["threshold"] < 1e9]
    chosen = max(ok, key=lambda r: (round(r["psnr_gain"], 2), -r["threshold"])) if ok else results[-1]
    print(f"chosen: T = {chosen['threshold']} dB")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"faces": rows, "results": results, "chosen": chosen}, f, indent=1)


if __name__ == "__main__":
    main()
