"""Image-quality figures: PSNR, SSIM, ROC AUC / F1 for the scratch detector, NIQE, detail kept.

- `psnr`, `ssim`: scikit-image, images H×W×3 float in [0, 1] (data_range 1); identical images give
  PSNR = inf and SSIM = 1. `ssim` is scikit-image's default SSIM: a 7×7 uniform window, sample covariance,
  the mean over the channels. It is not the Gaussian-window SSIM of Wang et al. that basicsr and most papers
  report (11×11, σ 1.5, population covariance; `structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)`), which reads about 0.01–0.03 lower on noisy photographs: the benchmark's SSIM
  figures are comparable with each other, not with published tables.
- `roc_auc(scores, labels)`: the Mann–Whitney rank statistic (ties count one half), as
  `sklearn.metrics.roc_auc_score` (scikit-learn is only a test dependency; `tests/test_quality.py` checks them
  against each other). `detection_scores(pred, labels)`: precision, recall, F1 and IoU of a binary mask, as
  scikit-learn's `precision_score`, `recall_score`, `f1_score`, `jaccard_score` with `zero_division=0`, except
  that an empty prediction of an empty truth scores 1 (nothing to find, nothing found); `f1` is its F1.
- `niqe(img, params)`: the no-reference NIQE of Mittal et al. (lower = more natural), computed as in the
  reference MATLAB code: Y channel (BT.601, 0–255, rounded), 96×96 blocks, MSCN coefficients with the
  7×7 Gaussian window of the parameter file, 18 AGGD features per block at full and half scale (MATLAB-style
  antialiased bicubic ×0.5), Mahalanobis-like distance to the pristine model. The pristine model
  (`niqe_pris_params.npz`) ships inside the basicsr==1.4.2 sdist; `oldphoto data fetch` extracts it to
  ``DATA/extras/``. Without it NIQE is reported as unavailable. (BRISQUE would need opencv-contrib's
  `cv2.quality`, which the project does not install.)

- `gradient_energy`, `detail_ratio`: texture and edges an image holds, and how much of a clean photo's is kept.

The quality benchmark that uses them (`oldphoto bench quality`) is `oldphoto.quality_bench`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import convolve
from scipy.special import gamma as gamma_fn
from scipy.stats import rankdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from oldphoto.imageops.io import LUMA_WEIGHTS


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


def detection_scores(pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 and IoU of a binary prediction against binary labels (any shapes of one size)."""
    p = np.asarray(pred).ravel().astype(bool)
    y = np.asarray(labels).ravel().astype(bool)
    if p.shape != y.shape:
        raise ValueError("prediction and labels differ in size")
    tp = int(np.count_nonzero(p & y))
    n_pred, n_true = int(np.count_nonzero(p)), int(np.count_nonzero(y))
    if n_pred == 0 and n_true == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0, "iou": 1.0}
    return {"precision": tp / n_pred if n_pred else 0.0, "recall": tp / n_true if n_true else 0.0,
            "f1": 2 * tp / (n_pred + n_true), "iou": tp / (n_pred + n_true - tp)}


def f1(pred: np.ndarray, labels: np.ndarray) -> float:
    return detection_scores(pred, labels)["f1"]


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


# --------------------------------------------------------------------------------------- detail
def luma(img: np.ndarray) -> np.ndarray:
    """H×W float32 luma of an H×W×3 image (BT.601 weights, same scale); an H×W image passes through as float32."""
    a = np.asarray(img, np.float32)
    return a @ LUMA_WEIGHTS if a.ndim == 3 else a


def gradient_energy(img: np.ndarray) -> float:
    """Mean gradient magnitude of an image's luma (H×W×3 or H×W, any scale): how much texture and edges it holds."""
    g = luma(img)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def detail_ratio(clean: np.ndarray, img: np.ndarray) -> float:
    """Fine detail kept: `gradient_energy` of `img` over that of the clean photo (1 = as much texture as the
    original; below 1 = smoothed away, e.g. print, fabric, hair; noise pushes it above 1)."""
    return gradient_energy(img) / max(gradient_energy(clean), 1e-6)


# --------------------------------------------------------------------------------------- grid artefacts
GRID_PERIODS = (2, 4)        # the strides of the networks' down/upsampling: where their grid artefacts repeat


def grid_artefact(img: np.ndarray, periods: tuple[int, ...] = GRID_PERIODS, highpass_sigma: float = 3.0) -> float:
    """How strongly an image repeats with the networks' strides (no reference needed; about 1 for a photo, several
    times that for an output striped or checkered every 2 or 4 pixels, e.g. by a decoder trained with a GAN).

    The luma's high-pass (minus a Gaussian blur of `highpass_sigma`) is Fourier-transformed along the rows and
    along the columns; the magnitude at each frequency 1/p (p in `periods`), averaged over the other axis, is
    divided by the median magnitude of that axis' spectrum. Returns the largest such ratio. Images with a side
    shorter than 16 px return nan."""
    import cv2

    g = luma(img)
    if min(g.shape) < 16:
        return float("nan")
    hp = g - cv2.GaussianBlur(g, (0, 0), highpass_sigma, borderType=cv2.BORDER_REFLECT)
    worst = 0.0
    for axis in (0, 1):
        spec = np.abs(np.fft.rfft(hp, axis=axis)).mean(axis=1 - axis)
        n = g.shape[axis]
        ref = max(float(np.median(spec[1:])), 1e-12)
        for p in periods:
            worst = max(worst, float(spec[min(int(round(n / p)), len(spec) - 1)]) / ref)
    return worst
