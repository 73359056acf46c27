"""Structured degradations: paper ageing, scratch textures, holes, film grain and blur.

All functions take/return H×W×3 float32 images in [0, 1] and draw randomness only from the given
`np.random.Generator`. Local defects (scratch stamps, procedural scratches, dust, holes) are composited
through an alpha map whose zero set is exactly where the image is left untouched; their union
``alpha > 0`` is the defect mask (the scratch detector's label). Global "old photo style" changes
(toning, paper grain overlay, film grain, blur) are not defects and are not in the mask.
"""
from __future__ import annotations

import cv2
import numpy as np

from oldphoto.data.textures import procedural_paper, procedural_scratch_stamp
from oldphoto.imageops.io import to_grey
from oldphoto.synthesis.scratches import ALPHA_MIN

BLEND_MODES = ("add", "lighten", "screen")


# ------------------------------------------------------------------------------------------- geometry
def elastic_field(rng: np.random.Generator, h: int, w: int, amplitude: float, smooth: float) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random displacement field (map_x, map_y) for cv2.remap: low-res noise, upsampled."""
    gh, gw = max(2, int(h / smooth)), max(2, int(w / smooth))
    dx = cv2.resize(rng.normal(0, 1, (gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(rng.normal(0, 1, (gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return xs + amplitude * dx, ys + amplitude * dy


def elastic(img: np.ndarray, rng: np.random.Generator, amplitude: float, smooth: float,
            border: int = cv2.BORDER_REFLECT) -> np.ndarray:
    h, w = img.shape[:2]
    mx, my = elastic_field(rng, h, w, amplitude, smooth)
    return cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=border)


def fit_paper(tex: np.ndarray, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A paper texture covering H×W: random scale, flips, tiled, random offset, elastically distorted."""
    scale = rng.uniform(0.6, 1.6) * max(1.0, max(h, w) / 1024.0)
    th, tw = tex.shape[:2]
    t = cv2.resize(tex, (max(4, int(tw * scale)), max(4, int(th * scale))), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        t = t[:, ::-1]
    if rng.random() < 0.5:
        t = t[::-1]
    reps = (h // t.shape[0] + 2, w // t.shape[1] + 2) + ((1,) if t.ndim == 3 else ())
    big = np.tile(t, reps)
    y, x = int(rng.integers(0, t.shape[0])), int(rng.integers(0, t.shape[1]))
    out = np.ascontiguousarray(big[y:y + h, x:x + w])
    out = elastic(out, rng, amplitude=rng.uniform(1, 4) * max(1.0, min(h, w) / 256), smooth=rng.uniform(16, 48))
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    return out.astype(np.float32)


def place_stamp(stamp: np.ndarray, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Warp a grey stamp onto an H×W canvas: random size (0.4–1.2 of the long side), angle, flip, position,
    then an elastic distortion."""
    sh, sw = stamp.shape[:2]
    scale = rng.uniform(0.4, 1.2) * max(h, w) / max(sh, sw)
    angle = rng.uniform(0, 360)
    if rng.random() < 0.5:
        stamp = stamp[:, ::-1]
    cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    m = cv2.getRotationMatrix2D((sw / 2.0, sh / 2.0), angle, scale)
    m[0, 2] += cx - sw / 2.0
    m[1, 2] += cy - sh / 2.0
    out = cv2.warpAffine(np.ascontiguousarray(stamp, dtype=np.float32), m, (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return elastic(out, rng, amplitude=rng.uniform(1, 3) * max(1.0, min(h, w) / 256),
                   smooth=rng.uniform(12, 40), border=cv2.BORDER_CONSTANT)


# ------------------------------------------------------------------------------------------- blending
def blend(img: np.ndarray, value: np.ndarray, alpha: np.ndarray, mode: str) -> np.ndarray:
    """Composite `value` (H×W×3) over `img` with per-pixel `alpha` (H×W) in the given mode.

    add: I + a·v; lighten: I + a·(max(I, v) − I); screen: I + a·(1 − (1 − I)(1 − v) − I); normal: I + a·(v − I).
    Where alpha is 0 the image is unchanged.
    """
    a = alpha[..., None]
    if mode == "add":
        out = img + a * value
    elif mode == "lighten":
        out = img + a * (np.maximum(img, value) - img)
    elif mode == "screen":
        out = img + a * ((1.0 - (1.0 - img) * (1.0 - value)) - img)
    elif mode == "normal":
        out = img + a * (value - img)
    else:
        raise ValueError(f"unknown blend mode {mode!r}")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------- ageing
def age_tone(img: np.ndarray, rng: np.random.Generator, grey_prob: float, sepia_prob: float) -> tuple[np.ndarray, list[str]]:
    """Global toning: greyscale, sepia, and fading towards a yellowed paper white."""
    ops = []
    out = img
    lum = to_grey(img)[..., None]
    if rng.random() < grey_prob:
        out = np.repeat(lum, 3, axis=2)
        ops.append("grey")
    if rng.random() < sepia_prob:
        tone = np.array([1.0, 0.85, 0.62], np.float32) * rng.uniform(0.95, 1.1)
        k = rng.uniform(0.3, 0.9)
        out = (1 - k) * out + k * np.clip(lum * tone + 0.05, 0, 1)
        ops.append("sepia")
    fade = rng.uniform(0.0, 0.3)
    if fade > 0.05:
        white = np.array([1.0, 0.97, 0.88], np.float32)
        out = out * (1 - fade) + fade * white * rng.uniform(0.8, 1.0)
        ops.append("fade")
    return np.clip(out, 0, 1).astype(np.float32), ops


def paper_overlay(img: np.ndarray, paper: np.ndarray, opacity: float) -> np.ndarray:
    """Add the paper texture's variation around its mean (paper grain showing through)."""
    lum = paper.mean(axis=2, keepdims=True)
    detail = (lum - lum.mean()) / (lum.std() + 1e-6)  # unit-variance grey detail: strength set by opacity only
    return np.clip(img + 0.2 * opacity * detail, 0, 1).astype(np.float32)


def film_grain(img: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    h, w = img.shape[:2]
    g = rng.normal(0, 1, (h, w)).astype(np.float32)
    g = cv2.GaussianBlur(g, (0, 0), rng.uniform(0.4, 0.9))
    g *= sigma / (g.std() + 1e-8)
    lum_w = 0.5 + img.mean(axis=2, keepdims=True)  # grain strongest in mid/light tones
    return np.clip(img + g[..., None] * lum_w * 0.8, 0, 1).astype(np.float32)


def random_blur(img: np.ndarray, rng: np.random.Generator, sigma_range=(0.3, 1.0)) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(*sigma_range), borderType=cv2.BORDER_REFLECT)


# ------------------------------------------------------------------------------------------- defects
def texture_scratch_layer(img: np.ndarray, rng: np.random.Generator, stamp: np.ndarray,
                          opacity: float, threshold: float = 0.25) -> tuple[np.ndarray, np.ndarray, str]:
    """Blend one scratch stamp; returns (image, alpha, mode). alpha is 0 wherever the stamp is below
    `threshold`, so nothing changes there."""
    h, w = img.shape[:2]
    s = place_stamp(stamp, rng, h, w)
    if rng.random() < 0.5:  # many brushes are dense blobs: keep only their fine structure
        s = np.clip((s - cv2.GaussianBlur(s, (0, 0), 3.0)) * 3.0, 0, 1)
    alpha = np.where(s >= threshold, s * opacity, 0.0).astype(np.float32)
    alpha[alpha < ALPHA_MIN] = 0.0
    mode = BLEND_MODES[int(rng.integers(0, len(BLEND_MODES)))]
    value = np.ones((h, w, 3), np.float32) * np.array(
        [1.0, rng.uniform(0.93, 1.0), rng.uniform(0.82, 1.0)], np.float32) * rng.uniform(0.8, 1.0)
    if mode == "add":
        value *= 0.8
    return blend(img, value, alpha, mode), alpha, mode


def hole_alpha(rng: np.random.Generator, h: int, w: int, n: int, size_range=(0.04, 0.14)) -> np.ndarray:
    """Feathered irregular holes (torn/missing emulsion): thresholded smoothed noise inside random blobs."""
    alpha = np.zeros((h, w), np.float32)
    short = min(h, w)
    for _ in range(n):
        r = rng.uniform(*size_range) * short
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        blob = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(2, 6))):
            ax = (max(1, int(r * rng.uniform(0.4, 1.0))), max(1, int(r * rng.uniform(0.2, 0.7))))
            c = (int(cx + rng.normal(0, r * 0.5)), int(cy + rng.normal(0, r * 0.5)))
            cv2.ellipse(blob, c, ax, rng.uniform(0, 180), 0, 360, 1.0, -1)
        noise = cv2.resize(rng.random((max(2, h // 8), max(2, w // 8))).astype(np.float32), (w, h),
                           interpolation=cv2.INTER_CUBIC)
        rough = cv2.GaussianBlur(blob, (0, 0), max(1.0, r * 0.15)) * (0.7 + 0.6 * noise)
        shape = (rough > 0.5).astype(np.float32)
        feather = cv2.GaussianBlur(shape, (0, 0), rng.uniform(0.8, 2.5))
        alpha = np.maximum(alpha, feather)
    alpha[alpha < ALPHA_MIN] = 0.0
    return alpha


def paper_value(rng: np.random.Generator, papers: list[np.ndarray], h: int, w: int) -> np.ndarray:
    """A light paper background for holes (what shows through where the emulsion is gone)."""
    tex = papers[int(rng.integers(0, len(papers)))] if papers else procedural_paper(rng, 256)
    p = fit_paper(tex, rng, h, w).mean(axis=2, keepdims=True)  # grey paper, tinted below
    p = (p - p.mean()) / (p.std() + 1e-6) * rng.uniform(0.02, 0.06) + rng.uniform(0.78, 0.95)
    tint = np.array([1.0, rng.uniform(0.94, 1.0), rng.uniform(0.82, 0.97)], np.float32)
    return np.clip(p * tint, 0, 1).astype(np.float32)


def fallback_stamp(rng: np.random.Generator) -> np.ndarray:
    return procedural_scratch_stamp(rng, 256)
