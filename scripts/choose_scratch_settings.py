"""Choose the scratch detector's pixel threshold and the `--scratch auto` coverage rule on the *val* split.

    python scripts/choose_scratch_settings.py --weights oldphoto/weights --data DATA [--split val] [--seeds 3]

Each val photo (short side 256, centre crop, as `oldphoto bench quality`) is degraded with each seed twice: with the
default synthesis (local defects: scratches, dust, holes; the mask is the truth) and with the same synthesis without
local defects (a photo with no structured defect: every detected pixel is a false positive); the photo itself, not
degraded at all (a well-kept scan), joins those without defects once. It prints the pooled
pixel ROC AUC on the scratched photos (the bench's figure: the one for choosing between detectors), then for every
threshold the false-positive pixel rate on the photos without defects, F1 and recall on the scratched ones, and the
coverage rule (minimum share of detected pixels) that best separates the two kinds, with its accuracy. The pixel
threshold chosen: the lowest whose false-positive rate is at most half the 0.5 % budget; the `auto` rule chosen: the
(threshold, coverage cut) pair of best accuracy over all thresholds (the decision may count pixels at a higher
threshold than the mask's; ties: the lower threshold, the lower cut). `--write` stores it in the detector file
("operating_point" in its metadata), which the pipeline then uses. Never run this on the test split to choose.
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--fp-budget", type=float, default=0.0025)
    ap.add_argument("--threshold", type=float, default=None,
                    help="keep this pixel threshold (e.g. the shipped one) and choose only the auto rule")
    ap.add_argument("--json", default=None)
    ap.add_argument("--write", action="store_true", help="store the chosen operating point in the detector file")
    a = ap.parse_args()

    from oldphoto.data import dataset as odata
    from oldphoto.data.textures import TextureBank
    from oldphoto.weights_source import WeightsSource
    from oldphoto.quality import f1, roc_auc
    from oldphoto.quality_bench import _detector_probs
    from oldphoto.synthesis import DEFAULT, synthesize, to_float, with_overrides

    models = WeightsSource.from_options(a.weights).load()
    textures = TextureBank.from_dir(a.data)
    no_defects = with_overrides(DEFAULT, defects_prob=0.0)
    recs = odata.split_photos(a.data, a.split)
    scratched, clean_probs, pristine = [], [], []
    for i, rec in enumerate(recs):
        img = odata.square_crop(rec.path, a.size)
        pristine.append(_detector_probs(models, to_float(img)))
        clean_probs.append(pristine[-1])
        for s in range(a.seeds):
            rng_seed = [1000 + s, i]
            d = synthesize(img, np.random.default_rng(rng_seed), textures)
            u = synthesize(img, np.random.default_rng(rng_seed), textures, config=no_defects)
            if d.mask.any():
                scratched.append((_detector_probs(models, d.degraded), d.mask > 0.5))
            clean_probs.append(_detector_probs(models, u.degraded))
    print(f"{len(recs)} {a.split} photos x {a.seeds} seeds: {len(scratched)} scratched, {len(clean_probs)} without "
          f"local defects ({len(pristine)} of them not degraded at all)")
    auc = roc_auc(np.concatenate([p.ravel() for p, _ in scratched]), np.concatenate([m.ravel() for _, m in scratched]))
    print(f"pixel ROC AUC on the scratched photos (pooled, as the bench): {auc:.4f}")
    rows = []
    cuts = [float(c) for c in np.geomspace(5e-5, 0.03, 48)]
    for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        fp = float(np.mean([(p >= t).mean() for p in clean_probs]))
        fp_pristine = float(np.mean([(p >= t).mean() for p in pristine]))
        f1s = float(np.mean([f1(p >= t, m) for p, m in scratched]))
        rec_ = float(np.mean([((p >= t) & m).sum() / max(1, m.sum()) for p, m in scratched]))
        cov_s = np.array([(p >= t).mean() for p, _ in scratched])
        cov_c = np.array([(p >= t).mean() for p in clean_probs])
        best = max(((float(np.mean(np.r_[cov_s >= c, cov_c < c])), -c) for c in cuts))
        rows.append({"threshold": t, "fp_rate": fp, "fp_rate_pristine": fp_pristine, "f1": f1s, "recall": rec_,
                     "auto_min_coverage": -best[1], "auto_accuracy": best[0],
                     "coverage_scratched_median": float(np.median(cov_s)),
                     "coverage_clean_p90": float(np.quantile(cov_c, 0.9))})
        r = rows[-1]
        print(f"t={t:.1f}  FP {fp:.3%} (not degraded: {fp_pristine:.3%})  F1 {f1s:.3f}  recall {rec_:.3f}  auto: coverage >= {r['auto_min_coverage']:.2%}"
              f" -> {r['auto_accuracy']:.1%}  (scratched median {r['coverage_scratched_median']:.2%}, clean p90 "
              f"{r['coverage_clean_p90']:.2%})")
    ok = [r for r in rows if r["fp_rate"] <= a.fp_budget] or [min(rows, key=lambda r: r["fp_rate"])]
    if a.threshold is not None:
        ok = [r for r in rows if abs(r["threshold"] - a.threshold) < 1e-9]
    chosen = dict(ok[0])
    # the auto decision may count pixels at another threshold than the mask's: the best accuracy over all rows
    # (ties: the lower threshold)
    auto = max(rows, key=lambda r: (r["auto_accuracy"], -r["threshold"]))
    chosen.update(auto_threshold=auto["threshold"], auto_min_coverage=auto["auto_min_coverage"],
                  auto_accuracy=auto["auto_accuracy"])
    print(f"chosen: threshold {chosen['threshold']}; auto: coverage at p >= {chosen['auto_threshold']} of at least "
          f"{chosen['auto_min_coverage']:.3%} ({chosen['auto_accuracy']:.1%} right on {a.split})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"split": a.split, "seeds": a.seeds, "photos": len(recs), "roc_auc": auc, "rows": rows,
                       "chosen": chosen}, f, indent=1)
    if a.write:
        from oldphoto.weights import set_operating_point

        path = models.path("scratch_unet")
        set_operating_point(path, {
            "threshold": chosen["threshold"], "auto_threshold": chosen["auto_threshold"],
            "auto_min_coverage": chosen["auto_min_coverage"],
            "chosen_on": f"{a.split} split, {len(recs)} photos x {a.seeds} seeds (scripts/choose_scratch_settings.py)",
            "val_fp_rate": round(chosen["fp_rate"], 5), "val_auto_accuracy": round(chosen["auto_accuracy"], 4),
            "val_f1": round(chosen["f1"], 4), "val_roc_auc": round(auc, 4)})
        print(f"wrote the operating point into {path}")


if __name__ == "__main__":
    main()
