"""Image-quality figures: PSNR, SSIM, ROC AUC / F1 for the scratch detector, NIQE; and the quality benchmark.

- `psnr`, `ssim`: scikit-image, images H×W×3 float in [0, 1] (data_range 1); identical images give
  PSNR = inf and SSIM = 1.
- `roc_auc(scores, labels)`: the Mann–Whitney rank statistic (ties count one half); `f1(pred, labels)`.
- `niqe(img, params)`: the no-reference NIQE of Mittal et al. (lower = more natural), computed as in the
  reference MATLAB code: Y channel (BT.601, 0–255, rounded), 96×96 blocks, MSCN coefficients with the
  7×7 Gaussian window of the parameter file, 18 AGGD features per block at full and half scale (MATLAB-style
  antialiased bicubic ×0.5), Mahalanobis-like distance to the pristine model. The pristine model
  (`niqe_pris_params.npz`) ships inside the basicsr==1.4.2 sdist; `oldphoto data fetch` extracts it to
  ``DATA/extras/``. Without it NIQE is reported as unavailable. (BRISQUE would need opencv-contrib's
  `cv2.quality`, which the project does not install.)

`run_quality_bench` is `oldphoto bench quality`: see its docstring.
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
from scipy.ndimage import convolve
from scipy.special import gamma as gamma_fn
from scipy.stats import rankdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

WORKING_SIZE = 256          # test photos: short side resized to 256, centre 256×256 crop
DETECTOR_THRESHOLD = 0.4    # official scratch threshold


# --------------------------------------------------------------------------------------- full reference
def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    a, b = _check_pair(a, b)
    if np.array_equal(a, b):
        return math.inf
    return float(peak_signal_noise_ratio(a, b, data_range=data_range))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    a, b = _check_pair(a, b)
    return float(structural_similarity(a, b, data_range=data_range, channel_axis=-1 if a.ndim == 3 else None))


# --------------------------------------------------------------------------------------- detection
def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (probability a random positive outscores a random negative)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError("scores and labels differ in size")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs both positive and negative labels")
    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def f1(pred: np.ndarray, labels: np.ndarray) -> float:
    p = np.asarray(pred).ravel().astype(bool)
    y = np.asarray(labels).ravel().astype(bool)
    tp = int((p & y).sum())
    fp = int((p & ~y).sum())
    fn = int((~p & y).sum())
    if tp == 0:
        return 0.0 if (fp or fn) else 1.0
    return float(2 * tp / (2 * tp + fp + fn))


# --------------------------------------------------------------------------------------- NIQE
_GAM = np.arange(0.2, 10.001, 0.001)
_R_GAM = gamma_fn(2 / _GAM) ** 2 / (gamma_fn(1 / _GAM) * gamma_fn(3 / _GAM))


def aggd_fit(x: np.ndarray) -> tuple[float, float, float]:
    """Asymmetric generalised Gaussian fit (moment matching): (shape α, left scale β_l, right scale β_r)."""
    x = x.ravel()
    left = x[x < 0]
    right = x[x > 0]
    left_std = math.sqrt(float(np.mean(left ** 2))) if left.size else 0.0
    right_std = math.sqrt(float(np.mean(right ** 2))) if right.size else 0.0
    if left_std == 0 or right_std == 0:
        return math.nan, math.nan, math.nan
    g = left_std / right_std
    r = float(np.mean(np.abs(x))) ** 2 / float(np.mean(x ** 2))
    r_norm = r * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
    alpha = float(_GAM[np.argmin((_R_GAM - r_norm) ** 2)])
    k = math.sqrt(gamma_fn(1 / alpha) / gamma_fn(3 / alpha))
    return alpha, left_std * k, right_std * k


def _block_features(block: np.ndarray) -> list[float]:
    a, bl, br = aggd_fit(block)
    feats = [a, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        prod = block * np.roll(block, shift, axis=(0, 1))
        a, bl, br = aggd_fit(prod)
        mean = (br - bl) * gamma_fn(2 / a) / gamma_fn(1 / a) if not math.isnan(a) else math.nan
        feats += [a, mean, bl, br]
    return feats


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return ((1.5 * ax ** 3 - 2.5 * ax ** 2 + 1) * (ax <= 1)
            + (-0.5 * ax ** 3 + 2.5 * ax ** 2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _resize_axis_matlab(img: np.ndarray, out_len: int, scale: float, axis: int) -> np.ndarray:
    """MATLAB imresize along one axis: bicubic, antialiased when shrinking, symmetric borders."""
    in_len = img.shape[axis]
    kernel_width = 4.0 / scale if scale < 1 else 4.0
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    p = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(p)[None, :]
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if scale < 1 else _cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    idx = idx - 1  # 0-based
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = mirror[np.mod(idx, 2 * in_len).astype(np.int64)]
    moved = np.moveaxis(img, axis, 0)
    out = np.einsum("op,op...->o...", w, moved[idx])
    return np.moveaxis(out, 0, axis)


def imresize_half(img: np.ndarray) -> np.ndarray:
    h, w = img.shape
    out = _resize_axis_matlab(img, int(math.ceil(h * 0.5)), 0.5, 0)
    return _resize_axis_matlab(out, int(math.ceil(w * 0.5)), 0.5, 1)


@dataclass
class NIQEParams:
    mu: np.ndarray        # (36,)
    cov: np.ndarray       # (36, 36)
    window: np.ndarray    # (7, 7)

    @classmethod
    def load(cls, path: str | Path) -> "NIQEParams":
        d = np.load(path)
        return cls(np.asarray(d["mu_pris_param"], np.float64).ravel(), np.asarray(d["cov_pris_param"], np.float64),
                   np.asarray(d["gaussian_window"], np.float64))


def y_channel(img: np.ndarray) -> np.ndarray:
    """BT.601 luma on the 16–235 scale (as MATLAB rgb2ycbcr) from RGB in [0, 1]; grey passes through ×255."""
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 2:
        return a * 255.0
    return 16.0 + 65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]


def niqe(img: np.ndarray, params: NIQEParams, block: int = 96) -> float:
    """NIQE of an RGB (H×W×3) or grey (H×W) image in [0, 1]. Needs at least one 96×96 block."""
    y = np.round(y_channel(img))
    h, w = y.shape
    nh, nw = h // block, w // block
    if nh == 0 or nw == 0:
        raise ValueError(f"NIQE needs an image of at least {block}×{block} pixels, got {w}×{h}")
    y = y[:nh * block, :nw * block]
    feats = []
    for scale in (1, 2):
        mu = convolve(y, params.window, mode="nearest")
        sigma = np.sqrt(np.abs(convolve(y * y, params.window, mode="nearest") - mu * mu))
        mscn = (y - mu) / (sigma + 1)
        b = block // scale
        fs = [_block_features(mscn[i * b:(i + 1) * b, j * b:(j + 1) * b]) for i in range(nh) for j in range(nw)]
        feats.append(np.array(fs))
        if scale == 1:
            y = imresize_half(y / 255.0) * 255.0
    dist = np.concatenate(feats, axis=1)
    mu_d = np.nanmean(dist, axis=0)
    ok = dist[~np.isnan(dist).any(axis=1)]
    cov_d = np.cov(ok, rowvar=False) if len(ok) > 1 else np.zeros_like(params.cov)
    inv = np.linalg.pinv((params.cov + cov_d) / 2)
    diff = params.mu - mu_d
    return float(np.sqrt(diff @ inv @ diff))


# --------------------------------------------------------------------------------------- baseline
def classical_restore(img: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """OpenCV baseline: non-local-means colour denoising, then Telea inpainting of the mask (if any)."""
    u8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    den = cv2.fastNlMeansDenoisingColored(u8, None, 10, 10, 7, 21)
    if mask is not None and mask.any():
        m = cv2.dilate(mask.astype(np.uint8) * 255, np.ones((3, 3), np.uint8))
        den = cv2.inpaint(den, m, 3, cv2.INPAINT_TELEA)
    return den.astype(np.float32) / 255.0


# --------------------------------------------------------------------------------------- benchmark
@dataclass
class BenchResult:
    figures: dict[str, Any]
    grid: np.ndarray
    rows: list[tuple[str, str, str]] = field(default_factory=list)


def _png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return float(np.mean(xs)) if xs else None


def _detector_probs(models: Any, img: np.ndarray) -> np.ndarray:
    """Scratch probability at the image's size (the pipeline's detector preprocessing)."""
    import torch
    import torch.nn.functional as F

    from oldphoto.stages.scratch import detector_input

    net = models.get("scratch_unet")
    x, _ = detector_input(img)
    with torch.no_grad():
        logits = net(x.to(next(net.parameters()).device)).float().cpu()
    prob = torch.sigmoid(logits)
    if prob.shape[-2:] != img.shape[:2]:
        prob = F.interpolate(prob, size=img.shape[:2], mode="bilinear", align_corners=False)
    return prob[0, 0].numpy()


def _grid(rows: list[list[np.ndarray]], labels: list[str], cell: int = 160, gap: int = 4) -> np.ndarray:
    from PIL import ImageDraw

    ncol = len(labels)
    header = 16
    H = header + len(rows) * (cell + gap) + gap
    W = ncol * (cell + gap) + gap
    sheet = np.full((H, W, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            if img is None:
                continue
            a = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
            a = cv2.resize(a.astype(np.float32), (cell, cell), interpolation=cv2.INTER_AREA)
            y, x = header + gap + i * (cell + gap), gap + j * (cell + gap)
            sheet[y:y + cell, x:x + cell] = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    pil = Image.fromarray(sheet)
    d = ImageDraw.Draw(pil)
    for j, lab in enumerate(labels):
        d.text((gap + j * (cell + gap) + 3, 2), lab, fill=(0, 0, 0))
    return np.asarray(pil)


def run_quality_bench(weights: str | Path | None = None, data: str | Path | None = None, seed: int = 0,
                      size: int = WORKING_SIZE, max_photos: int | None = None, real_long_side: int = 1024,
                      progress: Any = None) -> BenchResult:
    """The synthetic + real-photo quality benchmark.

    Test photos: the fetched data's test split (never trained on), else the builtin photos; each resized to
    `size` on its short side and centre-cropped to size×size, then degraded by `synthesize` with the default
    config and seed ``[seed, i]`` (textures from `data` when fetched). Methods: the degraded input itself; the
    classical baseline (NLM denoise + Telea inpaint of the scratch mask: detected by our scratch detector when
    `weights` has one, else the synthetic mask); ours (`Restorer` with `ModelSet.from_weights_dir(weights)`,
    scratch "auto", faces when a face model exists). The scratch detector's ROC AUC/F1 (threshold 0.4) are
    measured against the synthetic masks. NIQE: the real old photo (Solvay 1927, long side resized to
    `real_long_side`) and, with weights, our restoration of it.
    """
    from oldphoto.data.dataset import (center_crop, load_rgb, niqe_params_path, real_old_photo, resize_short_side,
                                       held_out_photos)
    from oldphoto.data.textures import TextureBank
    from oldphoto.synthesis import synthesize

    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    recs, source = held_out_photos(data)
    if max_photos is not None:
        recs = recs[:max_photos]
    if not recs:
        raise FileNotFoundError("no test photos: neither a fetched data folder nor the builtin photos")
    textures = None
    if data is not None and (Path(data) / "textures").is_dir():
        textures = TextureBank.from_dir(data)

    models = None
    ours_note = None
    restorer = None
    if weights is not None:
        from oldphoto.models import ModelSet
        from oldphoto.pipeline import Restorer, RestoreOptions

        models = ModelSet.from_weights_dir(weights)
        need = ["vae_a", "mapping_quality", "vae_b_quality"]
        if models.missing(need):
            ours_note = f"weights in {weights} lack {models.missing(need)}"
        else:
            scratch = "auto" if not models.missing(["scratch_unet", "mapping_scratch", "vae_b_scratch"]) else "off"
            opts = RestoreOptions(scratch=scratch, faces=models.has("face_256"), review=False)
            restorer = Restorer(models, opts)
    else:
        ours_note = "no --weights given"
    has_detector = models is not None and models.has("scratch_unet")
    mask_note = ("detected by our scratch detector (threshold 0.4)" if has_detector
                 else "the synthetic ground-truth mask (no detector weights)")

    per_photo = []
    grid_rows = []
    all_scores, all_labels = [], []
    for i, rec in enumerate(recs):
        say(f"[{i + 1}/{len(recs)}] {rec.id}")
        clean = center_crop(resize_short_side(load_rgb(rec.path, max_short_side=4 * size), size), size)
        d = synthesize(clean, np.random.default_rng([seed, i]), textures)
        entry: dict[str, Any] = {"id": rec.id, "ops": d.ops, "mask_coverage": float(d.mask.mean())}
        entry["degraded"] = {"psnr": psnr(d.clean, d.degraded), "ssim": ssim(d.clean, d.degraded)}
        det_mask = None
        if has_detector:
            prob = _detector_probs(models, d.degraded)
            det_mask = prob >= DETECTOR_THRESHOLD
            if d.mask.any() and not d.mask.all():
                all_scores.append(prob.ravel())
                all_labels.append(d.mask.ravel() > 0.5)
        base_mask = det_mask if has_detector else d.mask > 0.5
        base = classical_restore(d.degraded, base_mask)
        entry["baseline"] = {"psnr": psnr(d.clean, base), "ssim": ssim(d.clean, base)}
        ours = None
        if restorer is not None:
            st = restorer.run(f"bench/{rec.id}.png", _png_bytes(d.degraded), name=rec.id.replace("/", "_"))
            if st.failed or st.restored is None:
                entry["ours"] = {"error": st.error or "no output"}
            else:
                ours = np.asarray(st.restored, np.float32)
                if ours.ndim == 2:
                    ours = np.repeat(ours[..., None], 3, axis=2)
                if ours.shape != d.clean.shape:
                    ours = cv2.resize(ours, (size, size), interpolation=cv2.INTER_AREA)
                entry["ours"] = {"psnr": psnr(d.clean, ours), "ssim": ssim(d.clean, ours)}
        per_photo.append(entry)
        grid_rows.append([d.clean, d.degraded, base, ours, d.mask,
                          det_mask.astype(np.float32) if det_mask is not None else None])

    methods: dict[str, Any] = {}
    for key in ("degraded", "baseline", "ours"):
        vals = [p[key] for p in per_photo if key in p and "psnr" in p[key]]
        if vals:
            methods[key] = {"psnr": _mean([v["psnr"] for v in vals]), "ssim": _mean([v["ssim"] for v in vals]),
                            "n": len(vals)}

    detector: dict[str, Any]
    if has_detector and all_scores:
        s = np.concatenate(all_scores)
        y = np.concatenate(all_labels)
        detector = {"auc": roc_auc(s, y), "f1": f1(s >= DETECTOR_THRESHOLD, y), "threshold": DETECTOR_THRESHOLD,
                    "pixels": int(y.size), "positive_fraction": float(y.mean())}
    else:
        detector = {"unavailable": "no scratch_unet weights" if not has_detector else "no masks with both classes"}

    niqe_fig: dict[str, Any] = {}
    params_path = niqe_params_path(data)
    real = real_old_photo(data) if data is not None else None
    if params_path is None:
        niqe_fig["unavailable"] = "niqe_pris_params.npz not found (run `oldphoto data fetch DATA` and pass --data)"
    elif real is None:
        niqe_fig["unavailable"] = "real old photo not found in the data folder"
    else:
        say("NIQE on the real old photo")
        params = NIQEParams.load(params_path)
        img = load_rgb(real).astype(np.float32) / 255.0
        h, w = img.shape[:2]
        f = min(1.0, real_long_side / max(h, w))
        if f < 1:
            img = cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
        niqe_fig = {"photo": real.name, "size": [int(img.shape[1]), int(img.shape[0])], "input": niqe(img, params)}
        if restorer is not None:
            st = restorer.run(f"bench/{real.name}", _png_bytes(img), name="real_old_photo")
            if st.failed or st.restored is None:
                niqe_fig["ours_error"] = st.error
            else:
                niqe_fig["ours"] = niqe(np.asarray(st.restored, np.float32), params)
        niqe_fig["baseline"] = niqe(classical_restore(img, None), params)
        niqe_fig["note"] = "lower is better; baseline = NLM denoising only (no mask on the real photo)"

    figures = {
        "working_size": size, "seed": seed, "held_out_photos": source, "n_photos": len(recs),
        "photos": [r.id for r in recs], "baseline_mask": mask_note,
        "weights": str(weights) if weights is not None else None,
        "ours_unavailable": ours_note, "methods": methods, "scratch_detector": detector, "niqe": niqe_fig,
        "per_photo": per_photo, "seconds": round(time.perf_counter() - t0, 1),
    }
    labels = ["clean", "degraded", "baseline", "ours", "true mask", "detected mask"]
    return BenchResult(figures, _grid(grid_rows, labels))


def write_bench(result: BenchResult, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jp = out / "quality.json"
    jp.write_text(json.dumps(result.figures, indent=1, default=_json_default) + "\n")
    gp = out / "quality_grid.png"
    ok, buf = cv2.imencode(".png", result.grid[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    gp.write_bytes(buf.tobytes())
    return jp, gp


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and math.isinf(o):
        return "inf"
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")
