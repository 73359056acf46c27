"""Procedural local defects: scratches (random curves of varying width and opacity) and dust specks.

Each function returns an *alpha* map (H×W float32 in [0, 1]; 0 = untouched) and a value map (the colour
the defect paints); `structured.composite` applies them. Alpha below `ALPHA_MIN` is cut to 0, so the defect
mask ``alpha > 0`` marks every pixel a defect changes.
"""
from __future__ import annotations

import cv2
import numpy as np

ALPHA_MIN = 0.08


def _curve(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random curve as (N, 2) float points (x, y): long near-straight lines or wandering curves."""
    n = 40
    length = rng.uniform(0.3, 1.2) * max(h, w)
    angle = rng.uniform(0, np.pi)
    if rng.random() < 0.6:  # film-style scratch: mostly vertical, long
        angle = np.pi / 2 + rng.normal(0, 0.15)
    start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    t = np.linspace(-0.5, 0.5, n)[:, None]
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    wobble = np.cumsum(rng.normal(0, length * 0.004, n))
    bend = rng.normal(0, 0.08) * length * (t[:, 0] ** 2)
    pts = start + t * length * direction + (wobble + bend)[:, None] * normal
    return pts


def scratch_alpha(rng: np.random.Generator, h: int, w: int, n: int,
                  width: tuple[float, float] = (0.6, 3.5)) -> np.ndarray:
    """Alpha of `n` scratches: anti-aliased polylines, width drawn from `width` (px at a 256 px image, scaled with
    the image; rounded, at least 1: 1–4 px by default), varying opacity."""
    alpha = np.zeros((h, w), np.float32)
    base_w = max(1.0, min(h, w) / 256.0)
    for _ in range(n):
        pts = _curve(rng, h, w)
        layer = np.zeros((h, w), np.float32)
        px = max(1, int(round(rng.uniform(*width) * base_w)))
        # split into segments with their own opacity (scratches fade in and out)
        k = int(rng.integers(1, 4))
        cuts = np.sort(rng.integers(1, len(pts) - 1, size=k - 1)) if k > 1 else np.array([], int)
        for seg in np.split(pts, cuts):
            if len(seg) < 2:
                continue
            cv2.polylines(layer, [np.round(seg * 16).astype(np.int32).reshape(-1, 1, 2)], False,
                          float(rng.uniform(0.5, 1.0)), px, cv2.LINE_AA, shift=4)
        alpha = np.maximum(alpha, layer * float(rng.uniform(0.6, 1.0)))
    alpha[alpha < ALPHA_MIN] = 0.0
    return alpha


def dust_alpha(rng: np.random.Generator, h: int, w: int, density: float) -> np.ndarray:
    """Alpha of dust specks and small hairs: `density` specks per 10 000 px."""
    alpha = np.zeros((h, w), np.float32)
    n = int(rng.poisson(density * h * w / 10000.0))
    scale = max(1.0, min(h, w) / 256.0)
    for _ in range(n):
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        a = float(rng.uniform(0.5, 1.0))
        if rng.random() < 0.85:  # speck
            r = max(1, int(round(rng.uniform(0.5, 2.2) * scale)))
            cv2.circle(alpha, (int(x * 16), int(y * 16)), r * 16, a, -1, cv2.LINE_AA, shift=4)
        else:  # short hair
            ang = rng.uniform(0, 2 * np.pi)
            ln = rng.uniform(4, 14) * scale
            pts = np.array([[x, y], [x + ln * np.cos(ang) * 0.5, y + ln * np.sin(ang) * 0.5 + rng.normal(0, 2)],
                            [x + ln * np.cos(ang), y + ln * np.sin(ang)]])
            cv2.polylines(alpha, [np.round(pts * 16).astype(np.int32).reshape(-1, 1, 2)], False, a, 1,
                          cv2.LINE_AA, shift=4)
    alpha[alpha < ALPHA_MIN] = 0.0
    return alpha
