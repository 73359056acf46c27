"""Choose the detail refiner's strength (its operating point) on the *val* photos, do no harm first.

    python scripts/choose_refiner_strength.py --weights DIR --data DATA [--write] [--json out.json]

Runs `oldphoto bench quality --split val --no-real` once per strength in STRENGTHS (0: the refiner off) and
prints, per strength, the mean PSNR/SSIM of the val photos, the face crops' mean PSNR, how many val faces end
worse than their degraded input (PSNR or SSIM) and (do no harm) ours on the clean val photos themselves. Chosen:
the fewest faces worse, then the best mean photo PSNR (to 0.01 dB), ties to the smaller strength. `--write` stores
it in the refiner's weights file (its operating point); the training run's own choice (`oldphoto train refiner`:
the best PSNR on random val crops) is replaced.
"""
from __future__ import annotations

import argparse
import json

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--write", action="store_true", help="store the chosen strength in the refiner's weights file")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from oldphoto.quality_bench import run_quality_bench

    rows = []
    for s in STRENGTHS:
        fig = run_quality_bench(a.weights, a.data, split="val", real=False, seed=0,
                                options={"refine_strength": s}).figures
        ours, faces = fig["methods"]["ours"], fig["faces"]
        clean = fig.get("clean_scans") or {}
        rows.append({"strength": s, "psnr": ours["psnr"], "ssim": ours["ssim"], "face_psnr": faces["ours"]["psnr"],
                     "face_ssim": faces["ours"]["ssim"], "faces_worse": faces["faces_worse_than_input"],
                     "faces": faces["ours"]["n"], "clean_psnr": clean.get("psnr"), "clean_ssim": clean.get("ssim")})
        r = rows[-1]
        print(f"strength {s:g}: val photos {r['psnr']:.3f} dB / {r['ssim']:.4f}; faces {r['face_psnr']:.2f} dB / "
              f"{r['face_ssim']:.3f}, {r['faces_worse']} of {r['faces']} worse than their input; the clean photos "
              f"themselves {r['clean_psnr'] or 0:.2f} dB / {r['clean_ssim'] or 0:.3f}", flush=True)
    best = min(rows, key=lambda r: (r["faces_worse"], -round(r["psnr"], 2), r["strength"]))
    point = {"strength": best["strength"],
             "chosen_on": f"val bench ({best['faces']} faces, {len(STRENGTHS)} strengths): fewest faces worse than "
                          f"their input, then the best photo PSNR"}
    print(f"chosen: strength {best['strength']:g}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "chosen": point}, f, indent=1)
    if a.write:
        from oldphoto.weights import set_operating_point
        from oldphoto.weights_source import WeightsSource

        path = WeightsSource.from_options(a.weights).load().path("refiner")
        set_operating_point(path, point)
        print(f"wrote the operating point into {path}")


if __name__ == "__main__":
    main()
