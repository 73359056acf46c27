"""Choose the face agreement threshold (`face_min_agreement`, dB) and the blend strength on the *val* faces.

    python scripts/choose_face_gate.py --weights oldphoto/weights --data DATA [--json out.json]

Runs `oldphoto bench quality --split val` twice on the face-val photos (never trained on): with every enhanced
face applied (no gate) and with the face stage off. Each ground-truth face is matched to the pipeline's face and
its low-frequency agreement with the scan. For each threshold T the face ends as the "applied" result when its
agreement >= T and as the "off" result otherwise; the script prints, per T, the mean face PSNR/SSIM gain over the
degraded input and how many faces end worse than their input. Chosen: the T with the best mean PSNR among those
with no more faces worse than with the gate shut; when that is the shut gate itself (the network does not help
on val), the operating point says not to apply this network by default. `--write` stores it in the face weights.
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
    ap.add_argument("--write", action="store_true", help="store the chosen operating point in the face weights")
    a = ap.parse_args()
    from oldphoto.quality_bench import run_quality_bench

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
    applied, shut = results[0], results[-1]
    if chosen is shut:
        point = {"apply": False, "reason": (
            f"this face network did not improve the face-val faces (scripts/choose_face_gate.py, strength "
            f"{a.strength:g}: {applied['psnr_gain']:+.2f} dB over the input with every face applied, "
            f"{shut['psnr_gain']:+.2f} dB with the originals kept; {applied['worse']} vs {shut['worse']} of "
            f"{len(rows)} faces worse than their input)")}
    else:
        point = {"min_agreement": chosen["threshold"], "strength": a.strength,
                 "chosen_on": f"face-val photos, {len(rows)} faces (scripts/choose_face_gate.py)"}
    print(f"chosen: {point}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"faces": rows, "results": results, "chosen": chosen, "operating_point": point}, f, indent=1)
    if a.write:
        from oldphoto.weights_source import WeightsSource
        from oldphoto.weights import set_operating_point

        path = WeightsSource.from_options(a.weights).load().path("face_256")
        set_operating_point(path, point)
        print(f"wrote the operating point into {path}")


if __name__ == "__main__":
    main()
