"""Unstructured degradations (Wan et al.): each a small pure function on H×W×3 float32 images in [0, 1].

`apply_unstructured` applies them in random order, dropping each with probability `drop_prob` (0.3 in the
paper); parameter ranges are the paper's (noise σ on the 0–255 scale).
"""
from __future__ import annotations

import cv2
import numpy as np


def gaussian_noise(img: np.ndarray, rng: np.random.Generator, sigma_range=(5.0, 50.0)) -> np.ndarray:
    sigma = rng.uniform(*sigma_range) / 255.0
    return np.clip(img + rng.normal(0.0, sigma, img.shape).astype(np.float32), 0.0, 1.0)


def gaussian_blur(img: np.ndarray, rng: np.random.Generator, kernels=(3, 5, 7), sigma_range=(1.0, 5.0)) -> np.ndarray:
    k = int(rng.choice(kernels))
    sigma = rng.uniform(*sigma_range)
    return cv2.GaussianBlur(img, (k, k), sigma, borderType=cv2.BORDER_REFLECT)


def jpeg(img: np.ndarray, rng: np.random.Generator, quality_range=(40, 100)) -> np.ndarray:
    q = int(rng.integers(quality_range[0], quality_range[1] + 1))
    u8 = (np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        raise RuntimeError("JPEG encoding failed")
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return dec.astype(np.float32) / 255.0


def colour_jitter(img: np.ndarray, rng: np.random.Generator, shift_range=(-20.0, 20.0)) -> np.ndarray:
    shift = rng.uniform(*shift_range, size=3).astype(np.float32) / 255.0
    return np.clip(img + shift, 0.0, 1.0)


def box_blur(img: np.ndarray, rng: np.random.Generator, kernels=(3, 5)) -> np.ndarray:
    k = int(rng.choice(kernels))
    return cv2.blur(img, (k, k), borderType=cv2.BORDER_REFLECT)


UNSTRUCTURED = {
    "noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "jpeg": jpeg,
    "colour_jitter": colour_jitter,
    "box_blur": box_blur,
}


def apply_unstructured(img: np.ndarray, rng: np.random.Generator, drop_prob: float = 0.3,
                       ops: tuple[str, ...] = tuple(UNSTRUCTURED)) -> tuple[np.ndarray, list[str]]:
    """Apply the listed degradations in a random order, each kept with probability 1 − drop_prob.

    Returns (image, names of the applied degradations in order). Always draws the same number of random
    values for the order and the drops, so the stream stays aligned whatever is dropped.
    """
    order = rng.permutation(len(ops))
    keep = rng.random(len(ops)) >= drop_prob
    applied = []
    out = img.astype(np.float32, copy=True)
    for i in order:
        if keep[i]:
            out = UNSTRUCTURED[ops[i]](out, rng).astype(np.float32)
            applied.append(ops[i])
    return out, applied
