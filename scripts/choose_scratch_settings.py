"""Choose the scratch detector's pixel threshold and the `--scratch auto` coverage rule on the *val* split.

    python scripts/choose_scratch_settings.py --weights oldphoto/weights --data DATA [--split val] [--seeds 3]
                                              [--sizes 256,512,1024]

Each val photo, at each scan size of `--sizes` (short side, centre crop; 256 is the bench's size and the detector's
working size; the larger ones are scans the detection stage shrinks, with its second scale: `scratch_probability`),
is degraded with each seed twice: with the default synthesis (local defects: scratches, dust, holes; the mask is the
truth) and with the same synthesis without local defects (a photo with no structured defect: every detected pixel is
a false positive); the photo itself, not degraded at all (a well-kept scan), joins those without defects once. All
figures are at the detector's working size, where the pipeline thresholds (the true mask shrunk by area: a pixel is
a scratch where it covers at least LARGE_SCAN_LABEL of it). It prints the pooled pixel ROC AUC on the scratched photos
(for choosing between detectors), then for every threshold the false-positive pixel rate on the photos without
defects, F1 and recall on the scratched ones, and the coverage rule (minimum share of detected pixels) that best
separates the two kinds, with its accuracy, among the rules that send at most `--pristine-budget` of the
undegraded photos down the scratch path (6 %; do no harm: the scratch path repaints what the mask marks, so a sharp,
well-kept scan should not take it). The pixel threshold chosen: the lowest whose false-positive rate is at most half
the 0.5 % budget; the `auto` rule chosen: the (threshold, coverage cut) pair of best accuracy over all thresholds (the
decision may count pixels at a higher threshold than the mask's; ties: the lower threshold, the lower cut). `--write`
stores it in the detector file ("operating_point" in its metadata), which the pipeline then uses. Never run this on
the test split to choose. `--mirror` (the default, as the pipeline) measures the map with the mirrored passes, and
`--write` stores that choice as the file's operating point; `--no-mirror` measures the one-pass map, and `--write`
stores it under the operating point's "unmirrored" entry (what the pipeline uses with `--no-detector-mirror`).
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
    ap.add_argument("--sizes", default="256,512,1024", help="scan sizes (short side, comma-separated)")
    ap.add_argument("--fp-budget", type=float, default=0.0025)
    ap.add_argument("--threshold", type=float, default=None,
                    help="keep this pixel threshold (e.g. the shipped one) and choose only the auto rule")
    ap.add_argument("--scales", type=int, default=2, choices=(1, 2),
                    help="detection scales (the pipeline's --detector-scales; 1 to compare with the official one)")
    ap.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=True,
                    help="the detector also sees the mirrored scans (the pipeline's detector_mirror); --no-mirror: the "
                         "one-pass map (--write then stores the operating point's 'unmirrored' entry)")
    ap.add_argument("--pristine-budget", type=float, default=0.06,
                    help="the auto rule may send at most this share of the undegraded photos down the scratch path")
    ap.add_argument("--json", default=None)
    ap.add_argument("--write", action="store_true", help="store the chosen operating point in the detector file")
    a = ap.parse_args()

    from oldphoto.data import dataset as odata
    from oldphoto.data.textures import TextureBank
    from oldphoto.weights_source import WeightsSource
    from oldphoto.quality import f1, roc_auc
    from oldphoto.stages.scratch import UNMIRRORED, scratch_probability
    from oldphoto.training.scratch import LARGE_SCAN_LABEL
    from oldphoto.synthesis import DEFAULT, synthesize, to_float, with_overrides

    models = WeightsSource.from_options(a.weights).load()
    textures = TextureBank.from_dir(a.data)
    no_defects = with_overrides(DEFAULT, defects_prob=0.0)
    recs = odata.split_photos(a.data, a.split)
    sizes = [int(v) for v in a.sizes.split(",")]
    net = models.get("scratch_unet")

    def probs(img: np.ndarray) -> np.ndarray:
        """The map the mask is thresholded from and the `auto` decision counts."""
        return scratch_probability(net, img, scales=a.scales, mirror=a.mirror).prob

    def labels(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        import cv2

        cover = cv2.resize(mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
        return cover >= LARGE_SCAN_LABEL

    scratched, clean_probs, pristine = [], [], []
    for size in sizes:
        for i, rec in enumerate(recs):
            img = odata.square_crop(rec.path, size)
            pristine.append(probs(to_float(img)))
            clean_probs.append(pristine[-1])
            for s in range(a.seeds):
                rng_seed = [1000 + s, i] if size == 256 else [1000 + s, i, size]
                d = synthesize(img, np.random.default_rng(rng_seed), textures)
                u = synthesize(img, np.random.default_rng(rng_seed), textures, config=no_defects)
                if d.mask.any():
                    p = probs(d.degraded)
                    scratched.append((p, labels(d.mask, p.shape)))
                clean_probs.append(probs(u.degraded))
        print(f"scan size {size}: done", flush=True)
    print(f"{len(recs)} {a.split} photos x {len(sizes)} sizes x {a.seeds} seeds: {len(scratched)} scratched, "
          f"{len(clean_probs)} without local defects ({len(pristine)} of them not degraded at all)")
    auc = roc_auc(np.concatenate([p.ravel() for p, _ in scratched]),
                  np.concatenate([m.ravel() for _, m in scratched]))
    print(f"pixel ROC AUC on the scratched photos (pooled, as the bench): {auc:.4f}")
    rows = []
    cuts = [float(c) for c in np.geomspace(5e-5, 0.03, 48)]
    for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        cov_s = np.array([(p >= t).mean() for p, _ in scratched])
        cov_c = np.array([(p >= t).mean() for p in clean_probs])
        cov_p = np.array([(p >= t).mean() for p in pristine])
        fp, fp_pristine = float(cov_c.mean()), float(cov_p.mean())
        f1s = float(np.mean([f1(p >= t, m) for p, m in scratched]))
        rec_ = float(np.mean([((p >= t) & m).sum() / max(1, m.sum()) for p, m in scratched]))
        # do no harm: only cuts that send at most the budget's share of the undegraded photos down the scratch path
        best = max(((float(np.mean(np.r_[cov_s >= c, cov_c < c])), -c) for c in cuts
                    if (cov_p >= c).mean() <= a.pristine_budget), default=(0.0, -1.0))
        rows.append({"threshold": t, "fp_rate": fp, "fp_rate_pristine": fp_pristine, "f1": f1s, "recall": rec_,
                     "auto_min_coverage": -best[1], "auto_accuracy": best[0],
                     "auto_pristine_to_scratch": float((cov_p >= -best[1]).mean()),
                     "auto_scratched_found": float((cov_s >= -best[1]).mean()),
                     "coverage_scratched_median": float(np.median(cov_s)),
                     "coverage_clean_p90": float(np.quantile(cov_c, 0.9))})
        r = rows[-1]
        r["coverages"] = {"scratched": cov_s.tolist(), "without_defects": cov_c.tolist(), "undegraded": cov_p.tolist()}
        print(f"t={t:.1f}  FP {fp:.3%} (not degraded: {fp_pristine:.3%})  F1 {f1s:.3f}  recall {rec_:.3f}  auto: "
              f"coverage >= {r['auto_min_coverage']:.2%} -> {r['auto_accuracy']:.1%}, undegraded to the scratch path "
              f"{r['auto_pristine_to_scratch']:.1%}  (scratched median {r['coverage_scratched_median']:.2%}, clean p90 "
              f"{r['coverage_clean_p90']:.2%})")
    ok = [r for r in rows if r["fp_rate"] <= a.fp_budget] or [min(rows, key=lambda r: r["fp_rate"])]
    if a.threshold is not None:
        ok = [r for r in rows if abs(r["threshold"] - a.threshold) < 1e-9]
    chosen = {k: v for k, v in ok[0].items() if k != "coverages"}
    # the auto decision may count pixels at another threshold than the mask's: the best accuracy over all rows
    # (ties: the lower threshold)
    auto = max(rows, key=lambda r: (r["auto_accuracy"], -r["threshold"]))
    chosen.update(auto_threshold=auto["threshold"], auto_min_coverage=auto["auto_min_coverage"],
                  auto_accuracy=auto["auto_accuracy"], auto_pristine_to_scratch=auto["auto_pristine_to_scratch"])
    print(f"chosen: threshold {chosen['threshold']}; auto: coverage at p >= {chosen['auto_threshold']} of at least "
          f"{chosen['auto_min_coverage']:.3%} ({chosen['auto_accuracy']:.1%} right on {a.split})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"split": a.split, "seeds": a.seeds, "sizes": sizes, "scales": a.scales, "mirror": a.mirror,
                       "photos": len(recs),
                       "roc_auc": auc, "pristine_budget": a.pristine_budget, "rows": rows, "chosen": chosen}, f,
                      indent=1)
    if a.write:
        from oldphoto.weights import set_operating_point

        path = models.path("scratch_unet")
        point = {
            "threshold": chosen["threshold"], "auto_threshold": chosen["auto_threshold"],
            "auto_min_coverage": chosen["auto_min_coverage"],
            "chosen_on": f"{a.split} split, {len(recs)} photos x {a.seeds} seeds at scan sizes {a.sizes}, detection at "
                         f"{a.scales} scale(s), {'with' if a.mirror else 'without'} the mirrored passes "
                         f"(scripts/choose_scratch_settings.py)",
            "val_fp_rate": round(chosen["fp_rate"], 5), "val_auto_accuracy": round(chosen["auto_accuracy"], 4),
            "val_f1": round(chosen["f1"], 4), "val_roc_auc": round(auc, 4),
            "val_undegraded_to_scratch_path": round(chosen["auto_pristine_to_scratch"], 4)}
        old = models.operating_point("scratch_unet")
        if not a.mirror:      # the one-pass map's point: its entry beside the default map's point
            point = {**old, UNMIRRORED: point}
        elif UNMIRRORED in old:   # the default map's point: the one-pass map's entry stays
            point[UNMIRRORED] = old[UNMIRRORED]
        set_operating_point(path, point)
        print(f"wrote the operating point into {path}" + ("" if a.mirror else f" ({UNMIRRORED!r} entry)"))


if __name__ == "__main__":
    main()
