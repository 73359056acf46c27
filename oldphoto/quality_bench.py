"""The quality benchmark, `oldphoto bench quality` (`run_quality_bench`, see its docstring): synthetic old
photos from held-out clean ones restored by oldphoto and by a classical OpenCV baseline (`classical_restore`
with its own top-hat defect mask), scored with `oldphoto.quality`'s figures; real old photos shown beside.
"""
from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from oldphoto.quality import NIQEParams, detail_ratio, f1, grid_artefact, luma, niqe, psnr, roc_auc, ssim

WORKING_SIZE = 256          # test photos: short side resized to 256, centre 256×256 crop
LARGE_SCAN_FACTOR = 2       # the detector is also scored on the photos degraded at this many times that side


# --------------------------------------------------------------------------------------- baseline
TOPHAT_KERNEL = 7           # structuring element (px): wider than a scratch, narrower than most content
TOPHAT_THRESHOLD = 0.25     # top-hat response (of 1) above which a pixel is a defect (both chosen on val:
                            # scripts/choose_baseline_mask.py, 18.44 dB vs 16.63 at kernel 9, 0.12)


def tophat_mask(img: np.ndarray, kernel: int = TOPHAT_KERNEL, threshold: float = TOPHAT_THRESHOLD) -> np.ndarray:
    """The classical baseline's own defect mask: white and black morphological top-hat of the luma (thin bright
    scratches and dust, thin dark cracks), thresholded. What a user could run instead of our detector."""
    grey = luma(img)
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    white = cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, se)
    black = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, se)
    return np.maximum(white, black) > threshold


def classical_restore(img: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """OpenCV baseline: non-local-means colour denoising, then Telea inpainting of `mask`; with no mask given, of
    its own top-hat mask (`tophat_mask`), so the baseline never borrows our detector."""
    u8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if mask is None:
        mask = tophat_mask(img)
    den = cv2.fastNlMeansDenoisingColored(u8, None, 10, 10, 7, 21)
    if mask.any():
        m = cv2.dilate(mask.astype(np.uint8) * 255, np.ones((3, 3), np.uint8))
        den = cv2.inpaint(den, m, 3, cv2.INPAINT_TELEA)
    return den.astype(np.float32) / 255.0


# --------------------------------------------------------------------------------------- benchmark
@dataclass
class BenchResult:
    figures: dict[str, Any]
    grid: np.ndarray
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    real_grid: np.ndarray | None = None


def _png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return float(np.mean(xs)) if xs else None


def _detector_probs(models: Any, img: np.ndarray, opts: Any) -> np.ndarray:
    """Scratch probability at the image's size (the detection stage's own `scratch_probability`, at the restore
    options' `detector_scales` and `detector_mirror`: the map the mask is thresholded from)."""
    import torch
    import torch.nn.functional as F

    from oldphoto.stages.scratch import scratch_probability

    net = models.get("scratch_unet")
    device = str(next(net.parameters()).device)
    with torch.no_grad():
        small = scratch_probability(net, img, scales=opts.detector_scales, device=device,
                                    mirror=opts.detector_mirror).prob
    prob = torch.from_numpy(small.astype(np.float32))[None, None]
    if prob.shape[-2:] != img.shape[:2]:
        prob = F.interpolate(prob, size=img.shape[:2], mode="bilinear", align_corners=False)
    return prob[0, 0].numpy()


def _grid(rows: list[list[np.ndarray]], labels: list[str], cell: int = 160, gap: int = 4,
          row_labels: list[str] | None = None) -> np.ndarray:
    """A labelled sheet: one row per photo, one column per label; each image fitted into a cell×cell box
    (aspect kept, area interpolation)."""
    from PIL import ImageDraw

    ncol = len(labels)
    header = 16
    sub = 12 if row_labels else 0
    H = header + len(rows) * (cell + gap + sub) + gap
    W = ncol * (cell + gap) + gap
    sheet = np.full((H, W, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            if img is None:
                continue
            a = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
            h, w = a.shape[:2]
            f = cell / max(h, w)
            nh, nw = max(1, round(h * f)), max(1, round(w * f))
            a = cv2.resize(a.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
            a = a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2)
            y = header + gap + sub + i * (cell + gap + sub) + (cell - nh) // 2
            x = gap + j * (cell + gap) + (cell - nw) // 2
            sheet[y:y + nh, x:x + nw] = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    pil = Image.fromarray(sheet)
    d = ImageDraw.Draw(pil)
    for j, lab in enumerate(labels):
        d.text((gap + j * (cell + gap) + 3, 2), lab, fill=(0, 0, 0))
    for i, lab in enumerate(row_labels or []):
        d.text((gap + 3, header + gap + i * (cell + gap + sub)), lab, fill=(0, 0, 0))
    return np.asarray(pil)


def _scores(clean: np.ndarray, img: np.ndarray | None, box: tuple[int, int, int, int] | None = None) -> dict:
    if img is None:
        return {}
    if box is not None:
        l, t, r, b = box
        clean, img = clean[t:b, l:r], img[t:b, l:r]
    scores = {"psnr": psnr(clean, img), "ssim": ssim(clean, img), "detail": detail_ratio(clean, img)}
    if box is None:
        scores["grid"] = grid_artefact(img)
    return scores


def _face_boxes(clean: np.ndarray) -> list[tuple[int, int, int, int]]:
    """dlib's faces on the clean test image (the ground truth of where faces are), box grown by 20 %, clipped."""
    from oldphoto.imageops.faces import detect_faces

    h, w = clean.shape[:2]
    out = []
    for f in detect_faces((np.clip(clean, 0, 1) * 255 + 0.5).astype(np.uint8)):
        l, t, r, b = f.box
        dx, dy = (r - l) // 10, (b - t) // 10
        box = (max(0, l - dx), max(0, t - dy), min(w, r + dx), min(h, b + dy))
        if box[2] - box[0] >= 16 and box[3] - box[1] >= 16:
            out.append(box)
    return out


def _face_entries(clean: np.ndarray, degraded: np.ndarray, base: np.ndarray) -> list[dict[str, Any]]:
    return [{"box": list(b), "degraded": _scores(clean, degraded, b), "baseline": _scores(clean, base, b)}
            for b in _face_boxes(clean)]


def _score_ours_faces(entries: list[dict[str, Any]], clean: np.ndarray, ours: np.ndarray, st: Any) -> None:
    """Our scores on each ground-truth face box, with the pipeline's decision for the face it found there."""
    from oldphoto.imageops.faces import box_iou

    for fe in entries:
        fe["ours"] = _scores(clean, ours, tuple(fe["box"]))
        match = max(st.provenance.faces, key=lambda f: box_iou(tuple(fe["box"]), tuple(f.box)), default=None)
        if match is not None and box_iou(tuple(fe["box"]), tuple(match.box)) >= 0.3:
            fe["pipeline"] = {"applied": match.applied, "agreement_db": match.agreement_db,
                              "structure_kept": match.structure_kept, "put_back": match.put_back,
                              "detected_on": match.detected_on}


def _restore(restorer: Any, img: np.ndarray, name: str, size: int | None = None) -> tuple[np.ndarray | None, Any]:
    st = restorer.run(f"bench/{name}.png", _png_bytes(img), name=name)
    if st.failed or st.restored is None:
        return None, st
    out = np.asarray(st.restored, np.float32)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    if size is not None and out.shape[:2] != (size, size):
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return out, st


def _summary(per_photo: list[dict], key: str, part: str = "image") -> dict[str, Any]:
    vals = [p[part][key] for p in per_photo if key in p.get(part, {}) and "psnr" in p[part][key]]
    if not vals:
        return {}
    summary = {"psnr": _mean([v["psnr"] for v in vals]), "ssim": _mean([v["ssim"] for v in vals]),
               "detail": _mean([v.get("detail") for v in vals]), "n": len(vals)}
    grid = _mean([v.get("grid") for v in vals])           # whole images only (`_scores`), not face crops
    if grid is not None:
        summary["grid"] = grid
    return summary


def run_quality_bench(weights: str | Path | None = None, data: str | Path | None = None, seed: int = 0,
                      size: int = WORKING_SIZE, max_photos: int | None = None, real_long_side: int = 1024,
                      progress: Any = None, split: str = "test", options: dict[str, Any] | None = None,
                      real: bool = True) -> BenchResult:
    """The synthetic + real-photo quality benchmark (`oldphoto bench quality`).

    Photos: the fetched data's `split` ("test": never trained on; "val": for choosing settings), else the builtin
    photos; each resized to `size` on its short side and centre-cropped to size×size. Each photo is degraded twice
    with seed ``[seed, i]``: *scratched* (the default synthesis, with local defects: the PSNR/SSIM rows) and
    *clean of structured defects* (the same synthesis without local defects: for the detector's false-positive
    rate and the `--scratch auto` decision). Methods: the degraded input; the classical baseline (NLM
    denoising + Telea inpainting of its own morphological top-hat mask, never our detector's: what a user could
    run instead); ours (`Restorer` with the weights, default options plus `options`). Per photo and on average:
    the whole image and, separately, every face dlib finds on the clean image (box grown by 20 %). Do no harm
    (`clean_scans`): ours on each clean photo itself, a scan that needs nothing, scored against it. Scratch
    detector: ROC AUC/F1 against the synthetic masks (at the detector's operating point), false-positive pixel rate on the photos
    without structured defects, and the accuracy of the `auto` decision on both kinds. Detail kept
    (`detail_ratio`, 1 = as much fine texture as the clean photo) and grid artefacts (`grid_artefact`, about 1 for a
    photo; stripes or checks every 2 or 4 pixels push it up) beside PSNR/SSIM. Real photos: NIQE on
    the 1927 photo, and a review grid (input / ours / mask) of every real old photo in the data folder (never
    trained on).
    """
    from oldphoto.data.textures import TextureBank

    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    recs, source = _bench_photos(data, split, max_photos)
    textures = None
    if data is not None and (Path(data) / "textures").is_dir():
        textures = TextureBank.from_dir(data)
    ours = _Ours.make(weights, options)
    tally = _Tally()
    per_photo, grid_rows = [], []
    for i, rec in enumerate(recs):
        say(f"[{i + 1}/{len(recs)}] {rec.id}")
        entry, row = _synthetic_photo(i, rec, seed, size, textures, ours, tally)
        per_photo.append(entry)
        grid_rows.append(row)
    face_photo_entries = _face_photo_entries(data, split, seed, size, textures, ours.restorer, say)
    methods = {k: v for k in ("degraded", "baseline", "ours") if (v := _summary(per_photo, k))}
    reals = _real_photos(data) if data is not None and real else []
    niqe_fig, real_grid = _real_photo_figures(data, reals, ours.restorer, real_long_side, say)
    figures = {
        "working_size": size, "seed": seed, "split": split, "held_out_photos": source, "n_photos": len(recs),
        "photos": [r.id for r in recs],
        "baseline_mask": f"its own morphological top-hat mask (kernel {TOPHAT_KERNEL}, threshold {TOPHAT_THRESHOLD})",
        "weights": str(weights) if weights is not None else None,
        "options": ours.opts.to_dict() if ours.opts is not None else None,
        "ours_unavailable": ours.note, "methods": methods, "clean_scans": _clean_scan_figures(per_photo),
        "faces": _face_figures(per_photo + face_photo_entries),
        "scratch_detector": tally.detector(ours), "auto_decisions": tally.decisions, "niqe": niqe_fig,
        "real_photos": [p.name for p in reals], "per_photo": per_photo, "face_photos": face_photo_entries,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    labels = ["clean", "degraded", "baseline", "ours", "true mask", "detected mask"]
    return BenchResult(figures, _grid(grid_rows, labels), real_grid=real_grid)


def _bench_photos(data: str | Path | None, split: str, max_photos: int | None) -> tuple[list[Any], str]:
    from oldphoto.data import dataset as odata

    if split == "test":
        recs, source = odata.held_out_photos(data)
    else:
        recs, source = odata.split_photos(data, split), f"{split} split of {data}"
    if max_photos is not None:
        recs = recs[:max_photos]
    if not recs:
        raise FileNotFoundError("no test photos: neither a fetched data folder nor the builtin photos")
    return recs, source


@dataclass
class _Ours:
    """Our restorer for the bench (None with the reason in `note` when the weights cannot run it) and the scratch
    detector's operating point when the weights hold a detector."""

    models: Any = None
    restorer: Any = None
    opts: Any = None
    note: str | None = None
    threshold: float | None = None

    @property
    def has_detector(self) -> bool:
        return self.models is not None and self.models.has("scratch_unet")

    @property
    def restore_options(self) -> Any:
        """The restore options (the detector's figures are measured as the stage runs: its scales and mirror)."""
        from oldphoto.pipeline import RestoreOptions

        return self.opts or RestoreOptions()

    @classmethod
    def make(cls, weights: str | Path | None, options: dict[str, Any] | None) -> "_Ours":
        from oldphoto.pipeline import Restorer, RestoreOptions

        if weights is None:
            return cls(note="no --weights given")
        from oldphoto.weights_source import WeightsSource

        ours = cls(models=WeightsSource.from_options(weights).load())
        need = ["vae_a", "mapping_quality", "vae_b_quality"]
        if ours.models.missing(need):
            ours.note = f"weights in {weights} lack {ours.models.missing(need)}"
        else:
            models = ours.models
            scratch = "auto" if not models.missing(["scratch_unet", "mapping_scratch", "vae_b_scratch"]) else "off"
            ours.opts = RestoreOptions(**{"scratch": scratch, "faces": models.has("face_256"), "review": False,
                                          **(options or {})})
            ours.restorer = Restorer(models, ours.opts)
        if ours.has_detector:
            from oldphoto.stages.scratch import ScratchDetectionStage

            ours.threshold = ScratchDetectionStage(ours.models, ours.opts or RestoreOptions()).operating_point()[0]
        return ours


@dataclass
class _Tally:
    """The scratch detector's figures, gathered photo by photo."""

    scores: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    fp_pixels: int = 0
    fp_total: int = 0
    large_scores: list[np.ndarray] = field(default_factory=list)    # the same photos degraded as 2x larger scans
    large_labels: list[np.ndarray] = field(default_factory=list)
    clean_scores: list[np.ndarray] = field(default_factory=list)    # defects drawn on the undegraded photos
    clean_labels: list[np.ndarray] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def detector(self, ours: _Ours) -> dict[str, Any]:
        detector: dict[str, Any]
        if ours.has_detector and self.scores:
            s = np.concatenate(self.scores)
            y = np.concatenate(self.labels)
            detector = {"auc": roc_auc(s, y), "f1": f1(s >= ours.threshold, y), "threshold": ours.threshold,
                        "pixels": int(y.size), "positive_fraction": float(y.mean()),
                        "fp_rate_no_defects": self.fp_pixels / max(1, self.fp_total)}
            if self.large_scores:
                detector["auc_large_scans"] = roc_auc(np.concatenate(self.large_scores),
                                                      np.concatenate(self.large_labels))
                detector["large_scan_side"] = LARGE_SCAN_FACTOR
            if self.clean_scores:
                detector["auc_clean_scans"] = roc_auc(np.concatenate(self.clean_scores),
                                                      np.concatenate(self.clean_labels))
                detector["recall_clean_scans"] = float(np.mean(np.concatenate(self.clean_scores)[
                    np.concatenate(self.clean_labels)] >= ours.threshold))
        else:
            detector = {"unavailable": "no scratch_unet weights" if not ours.has_detector
                        else "no masks with both classes"}
        if self.decisions:
            detector["auto_decision"] = _decision_figures(self.decisions)
        return detector


def _decision_figures(decisions: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [dd["scratch_path"] == dd["defects"] for dd in decisions]
    return {"accuracy": float(np.mean(ok)), "n": len(ok),
            "scratched_to_scratch_path": sum(dd["scratch_path"] for dd in decisions if dd["defects"]),
            "scratched": sum(dd["defects"] for dd in decisions),
            "clean_to_quality_path": sum(not dd["scratch_path"] for dd in decisions if not dd["defects"]),
            "clean": sum(not dd["defects"] for dd in decisions)}


def _synthetic_photo(i: int, rec: Any, seed: int, size: int, textures: Any, ours: _Ours, tally: _Tally
                     ) -> tuple[dict[str, Any], list[np.ndarray | None]]:
    """One test photo, degraded with and without local defects: its scores (and the detector's, into `tally`)
    and its row of the grid."""
    from oldphoto.data import dataset as odata
    from oldphoto.synthesis import DEFAULT, synthesize, with_overrides

    clean = odata.square_crop(rec.path, size)
    d = synthesize(clean, np.random.default_rng([seed, i]), textures)
    u = synthesize(clean, np.random.default_rng([seed, i]), textures, config=with_overrides(DEFAULT, defects_prob=0.0))
    base = classical_restore(d.degraded)
    entry: dict[str, Any] = {"id": rec.id, "ops": d.ops, "mask_coverage": float(d.mask.mean()),
                             "image": {"degraded": _scores(d.clean, d.degraded),
                                       "baseline": _scores(d.clean, base)},
                             "faces": _face_entries(d.clean, d.degraded, base)}
    det_mask = None
    if ours.has_detector:
        det_mask = _detect(ours, d, u, entry, tally)
        _detect_large_scan(ours, rec, i, seed, size, textures, tally)
        _detect_on_clean_scan(ours, d.clean, i, seed, textures, tally)
    restored = _restore_synthetic(ours, rec, d, u, size, entry, tally) if ours.restorer is not None else None
    if ours.restorer is not None:
        _restore_clean_scan(ours, rec, d.clean, size, entry)
    return entry, [d.clean, d.degraded, base, restored, d.mask,
                   det_mask.astype(np.float32) if det_mask is not None else None]


def _detect(ours: _Ours, d: Any, u: Any, entry: dict[str, Any], tally: _Tally) -> np.ndarray:
    """The detector on the scratched photo (scores against the true mask) and on the one without defects (false
    positives); returns the detected mask."""
    prob = _detector_probs(ours.models, d.degraded, ours.restore_options)
    if d.mask.any() and not d.mask.all():
        tally.scores.append(prob.ravel())
        tally.labels.append(d.mask.ravel() > 0.5)
    fp = _detector_probs(ours.models, u.degraded, ours.restore_options) >= ours.threshold
    tally.fp_pixels += int(fp.sum())
    tally.fp_total += fp.size
    entry["fp_rate_no_defects"] = float(fp.mean())
    return prob >= ours.threshold


def _detect_large_scan(ours: _Ours, rec: Any, i: int, seed: int, size: int, textures: Any, tally: _Tally) -> None:
    """The photo degraded as a LARGE_SCAN_FACTOR x larger scan (defects, grain and JPEG at that side), which the
    pipeline shrinks to its working size as it does every real scan: the detector scored against that scan's own
    mask at its size (`auc_large_scans`)."""
    from oldphoto.data import dataset as odata
    from oldphoto.synthesis import synthesize

    big = synthesize(odata.square_crop(rec.path, LARGE_SCAN_FACTOR * size),
                     np.random.default_rng([seed, i, LARGE_SCAN_FACTOR]), textures)
    if big.mask.any() and not big.mask.all():
        tally.large_scores.append(_detector_probs(ours.models, big.degraded, ours.restore_options).ravel())
        tally.large_labels.append(big.mask.ravel() > 0.5)


def _detect_on_clean_scan(ours: _Ours, clean: np.ndarray, i: int, seed: int, textures: Any, tally: _Tally) -> None:
    """The photo's local defects alone (the synthesis' own mix, always drawn) on the undegraded photo: a well-kept
    scan with scratches on it, whose sharp, noise-free surroundings a detector may take for a clean scan
    (`auc_clean_scans`, `recall_clean_scans` at the pixel threshold)."""
    from oldphoto.synthesis import DEFAULT, LOCAL_DEFECTS_ONLY, synthesize, with_overrides

    d = synthesize(clean, np.random.default_rng([seed, i, 7]), textures,
                   config=with_overrides(DEFAULT, **LOCAL_DEFECTS_ONLY))
    if d.mask.any() and not d.mask.all():
        tally.clean_scores.append(_detector_probs(ours.models, d.degraded, ours.restore_options).ravel())
        tally.clean_labels.append(d.mask.ravel() > 0.5)


def _restore_synthetic(ours: _Ours, rec: Any, d: Any, u: Any, size: int, entry: dict[str, Any], tally: _Tally
                       ) -> np.ndarray | None:
    """Ours on the scratched photo (scores, faces) and, with `--scratch auto`, the path it chose for both photos."""
    restored, st = _restore(ours.restorer, d.degraded, rec.id.replace("/", "_"), size)
    if restored is None:
        entry["image"]["ours"] = {"error": st.error or "no output"}
        return None
    entry["image"]["ours"] = _scores(d.clean, restored)
    _score_ours_faces(entry["faces"], d.clean, restored, st)
    if ours.opts.scratch == "auto":
        # the synthesis leaves some photos without any local defect (no mask): those are not "scratched"
        tally.decisions.append({"id": rec.id, "defects": bool(d.mask.any()), "scratch_path": bool(st.use_scratch),
                                "coverage": st.provenance.mask_coverage})
        _, su = _restore(ours.restorer, u.degraded, rec.id.replace("/", "_") + "_nodefects")
        if su is not None and not su.failed:
            tally.decisions.append({"id": rec.id, "defects": False, "scratch_path": bool(su.use_scratch),
                                    "coverage": su.provenance.mask_coverage})
    return restored


def _restore_clean_scan(ours: _Ours, rec: Any, clean: np.ndarray, size: int, entry: dict[str, Any]) -> None:
    """Do no harm: ours on the clean photo itself (float in [0, 1]: a scan that needs nothing), scored against it (the
    input's own score would be perfect); with `--scratch auto`, whether it took the scratch path and how much it
    masked."""
    restored, st = _restore(ours.restorer, clean, rec.id.replace("/", "_") + "_clean", size)
    if restored is None:
        entry["clean_scan"] = {"error": st.error or "no output"}
        return
    entry["clean_scan"] = {**_scores(clean, restored), "scratch_path": bool(st.use_scratch),
                           "mask_coverage": st.provenance.mask_coverage}


def _clean_scan_figures(per_photo: list[dict[str, Any]]) -> dict[str, Any]:
    """The clean-scan figures (`_restore_clean_scan`) over the photos: mean PSNR/SSIM/detail of ours against the
    clean photo it was given, and how many took the scratch path."""
    rows = [p["clean_scan"] for p in per_photo if "psnr" in p.get("clean_scan", {})]
    if not rows:
        return {}
    return {"psnr": _mean([r["psnr"] for r in rows]), "ssim": _mean([r["ssim"] for r in rows]),
            "detail": _mean([r["detail"] for r in rows]), "n": len(rows),
            "scratch_path": sum(r["scratch_path"] for r in rows),
            "mask_coverage": _mean([r["mask_coverage"] or 0.0 for r in rows])}


def _face_photo_entries(data: str | Path | None, split: str, seed: int, size: int, textures: Any, restorer: Any,
                        say: Any) -> list[dict[str, Any]]:
    """Held-out face photos (never trained on): a face-centred crop per face, degraded and restored the same way."""
    from oldphoto.data import dataset as odata
    from oldphoto.imageops.faces import face_centred_crops
    from oldphoto.synthesis import synthesize

    entries = []
    face_photos = odata.held_out_face_photos(data, split) if data is not None else []
    for j, path in enumerate(face_photos):
        for k, crop in enumerate(face_centred_crops(odata.load_rgb(path, max_short_side=1024), size)):
            say(f"face photo {path.name} #{k + 1}")
            d = synthesize(crop, np.random.default_rng([seed, 10_000 + j, k]), textures)
            base = classical_restore(d.degraded)
            fe = {"id": f"{path.name}#{k + 1}", "faces": _face_entries(d.clean, d.degraded, base)}
            if restorer is not None and fe["faces"]:
                ours, st = _restore(restorer, d.degraded, f"face_{path.stem}_{k + 1}", size)
                if ours is not None:
                    _score_ours_faces(fe["faces"], d.clean, ours, st)
            entries.append(fe)
    return entries


def _face_figures(entries: list[dict[str, Any]]) -> dict[str, Any]:
    face_rows = [{"image": f} for p in entries for f in p["faces"]]
    face_methods = {k: v for k in ("degraded", "baseline", "ours") if (v := _summary(face_rows, k))}
    worse = [f for f in face_rows if "ours" in f["image"] and
             (f["image"]["ours"]["psnr"] < f["image"]["degraded"]["psnr"]
              or f["image"]["ours"]["ssim"] < f["image"]["degraded"]["ssim"])]
    if face_methods:
        face_methods["faces_worse_than_input"] = len(worse)
    return face_methods


def _real_photo_figures(data: str | Path | None, reals: list[Path], restorer: Any, real_long_side: int, say: Any
                        ) -> tuple[dict[str, Any], np.ndarray | None]:
    """NIQE of the 1927 photo (input, baseline, ours) and the review grid of the real old photos."""
    from oldphoto.data import dataset as odata

    niqe_fig: dict[str, Any] = {}
    real_grid = None
    params_path = odata.niqe_params_path(data)
    if reals:
        niqe_params = NIQEParams.load(params_path) if params_path is not None else None
        real_rows, real_labels = [], []
        for path in reals:
            say(f"real photo {path.name}")
            img, row, st = _real_photo_row(path, restorer, real_long_side)
            real_rows.append(row)
            real_labels.append(f"{path.name} {img.shape[1]}x{img.shape[0]}"
                               + (f", {_decision_note(st)}" if st is not None else ""))
            if path.name == "solvay_1927.png" and niqe_params is not None:
                niqe_fig = _niqe_figures(path, img, row[1], niqe_params)
        real_grid = _grid(real_rows, ["input", "ours", "mask"], cell=320, row_labels=real_labels)
    if not niqe_fig:
        niqe_fig["unavailable"] = ("niqe_pris_params.npz not found (run `oldphoto data fetch DATA` and pass --data)"
                                   if params_path is None else "real old photo not found in the data folder")
    return niqe_fig, real_grid


def _real_photo_row(path: Path, restorer: Any, real_long_side: int) -> tuple[np.ndarray, list[Any], Any]:
    """A real old photo (long side at most `real_long_side`), [it, ours on it, its mask], and the pipeline's state
    on it (None without a restorer)."""
    from oldphoto.data import dataset as odata

    img = odata.load_rgb(path).astype(np.float32) / 255.0
    h, w = img.shape[:2]
    f = min(1.0, real_long_side / max(h, w))
    if f < 1:
        img = cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    ours_real, st = (None, None) if restorer is None else _restore(restorer, img, "real_" + path.stem)
    mask = st.mask.astype(np.float32) if st is not None and st.mask is not None else None
    return img, [img, ours_real, mask], st


def _decision_note(st: Any, faces: bool = True) -> str:
    """What the pipeline decided on a photo: its path, mask coverage and (with `faces`) the faces found and
    enhanced."""
    note = f"{'scratch' if st.use_scratch else 'quality'} path, mask {(st.provenance.mask_coverage or 0):.2%}"
    found = st.provenance.faces
    return note + (f", faces {len(found)} ({sum(bool(x.applied) for x in found)} enhanced)" if faces else "")


def _niqe_figures(path: Path, img: np.ndarray, ours_real: np.ndarray | None, params: NIQEParams) -> dict[str, Any]:
    fig = {"photo": path.name, "size": [int(img.shape[1]), int(img.shape[0])],
           "input": niqe(img, params), "baseline": niqe(classical_restore(img), params),
           "note": "lower is better; baseline with its own top-hat mask"}
    if ours_real is not None:
        fig["ours"] = niqe(ours_real, params)
    return fig


def compare_real_photos(sets: list[tuple[str, str | Path, dict[str, Any] | None]], data: str | Path,
                        names: list[str] | None = None, real_long_side: int = 1024, say: Any = None) -> np.ndarray:
    """A review sheet of the real old photos under `data` (or those of them in `names`): one row per photo, the
    scan then each (label, weights, options) set's restoration, so weights that win on synthetic photos can be
    looked at on real ones before they ship (the session-12 refiner won on val and damaged the 1897 photo). Each
    row's label and `say` tell what every set decided on the photo (path, mask coverage, faces), since a set that
    takes the scratch path where another does not is the first thing to look at."""
    say = say or (lambda _m: None)
    reals = [p for p in _real_photos(data) if names is None or p.name in names]
    if not reals:
        raise ValueError(f"no real old photos{' named ' + ', '.join(names) if names else ''} under {data}/real")
    rows: list[list[Any]] = [[] for _ in reals]
    row_labels: list[str] = [p.name for p in reals]
    for label, weights, options in sets:
        ours = _Ours.make(weights, options)
        if ours.restorer is None:
            raise ValueError(f"{label}: {ours.note}")
        for i, path in enumerate(reals):
            img, (_scan, restored, _mask), st = _real_photo_row(path, ours.restorer, real_long_side)
            say(f"{label}: {path.name}: {_decision_note(st)}")
            if not rows[i]:
                rows[i].append(img)
                row_labels[i] = f"{path.name} {img.shape[1]}x{img.shape[0]}"
            rows[i].append(restored)
            row_labels[i] += f" | {label}: {_decision_note(st, faces=False)}"
    return _grid(rows, ["scan"] + [label for label, _w, _o in sets], cell=320, row_labels=row_labels)


def _real_photos(data: str | Path) -> list[Path]:
    from oldphoto.data import dataset as odata

    return list(odata.real_old_photos(data))


def write_bench(result: BenchResult, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jp = out / "quality.json"
    jp.write_text(json.dumps(result.figures, indent=1, default=_json_default) + "\n")
    gp = out / "quality_grid.png"
    ok, buf = cv2.imencode(".png", result.grid[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    gp.write_bytes(buf.tobytes())
    if result.real_grid is not None:
        ok, buf = cv2.imencode(".png", result.real_grid[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
        (out / "real_photos_grid.png").write_bytes(buf.tobytes())
    return jp, gp


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and math.isinf(o):
        return "inf"
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")
