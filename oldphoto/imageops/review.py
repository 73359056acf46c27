"""The before/after review sheet a conservator looks at: input | restored | mask overlay, side by side."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from oldphoto.imageops.geometry import resize

PANEL_HEIGHT = 384
GAP = 8
LABEL_HEIGHT = 18


def _panel(arr: np.ndarray, height: int) -> np.ndarray:
    h, w = arr.shape[:2]
    new_w = max(1, round(w * height / h))
    return resize(arr, (height, new_w), "bilinear" if h < height else "box")


def review_sheet(before: np.ndarray, after: np.ndarray, mask: np.ndarray | None = None,
                 height: int = PANEL_HEIGHT) -> np.ndarray:
    """An RGB uint8 sheet: input, result and (when a mask exists) the result with the mask in red.

    `before`/`after`: H×W×3 float [0,1]; `mask`: H×W bool/0-1 at the same size."""
    panels = [("input", _panel(before, height)), ("restored", _panel(after, height))]
    if mask is not None:
        m = mask.astype(np.float32)
        overlay = after.copy()
        overlay[..., 0] = np.maximum(overlay[..., 0], m)
        overlay[..., 1] *= 1.0 - 0.6 * m
        overlay[..., 2] *= 1.0 - 0.6 * m
        panels.append(("scratch mask", _panel(overlay, height)))
    width = sum(p.shape[1] for _, p in panels) + GAP * (len(panels) + 1)
    sheet = np.full((height + LABEL_HEIGHT + 2 * GAP, width, 3), 255, np.uint8)
    x = GAP
    labels = []
    for label, p in panels:
        sheet[GAP + LABEL_HEIGHT:GAP + LABEL_HEIGHT + height, x:x + p.shape[1]] = np.rint(
            np.clip(p, 0, 1) * 255).astype(np.uint8)
        labels.append((x, label))
        x += p.shape[1] + GAP
    im = Image.fromarray(sheet)
    draw = ImageDraw.Draw(im)
    for x, label in labels:
        draw.text((x, GAP // 2 + 2), label, fill=(0, 0, 0))
    return np.asarray(im)
