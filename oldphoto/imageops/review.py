"""The before/after review sheet a conservator looks at: input | restored | mask overlay, side by side.

Each panel fits in a `height` × `max_width` box (default 384 × 1152, i.e. 3:1) with its aspect ratio kept, so
the sheet's size is bounded on each side whatever the scan's shape (a 20000×10 strip gives a 1152×1 px panel
in a 384 px tall sheet, not a 384×768000 one)."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from oldphoto.imageops.geometry import resize

PANEL_HEIGHT = 384
PANEL_MAX_ASPECT = 3          # a panel is at most this many times as wide as the sheet's panel height
GAP = 8
LABEL_HEIGHT = 18


def panel_size(h: int, w: int, height: int, max_width: int) -> tuple[int, int]:
    """(panel height, panel width) of an h×w image scaled to fit `height` × `max_width`, at least 1×1."""
    scale = min(height / h, max_width / w)
    return max(1, min(height, round(h * scale))), max(1, min(max_width, round(w * scale)))


def _panel(arr: np.ndarray, height: int, max_width: int) -> np.ndarray:
    ph, pw = panel_size(arr.shape[0], arr.shape[1], height, max_width)
    return resize(arr, (ph, pw), "bilinear" if arr.shape[0] < ph or arr.shape[1] < pw else "box")


def review_sheet(before: np.ndarray, after: np.ndarray, mask: np.ndarray | None = None,
                 height: int = PANEL_HEIGHT, max_width: int | None = None) -> np.ndarray:
    """An RGB uint8 sheet: input, result and (when a mask exists) the result with the mask in red.

    `before`/`after`: H×W×3 float [0,1]; `mask`: H×W bool/0-1 at the same size. Each panel fits in
    `height` × `max_width` (default PANEL_MAX_ASPECT · height), vertically centred."""
    max_width = PANEL_MAX_ASPECT * height if max_width is None else max_width
    restored = _panel(after, height, max_width)
    panels = [("input", _panel(before, height, max_width)), ("restored", restored)]
    if mask is not None:         # drawn at panel size: no full-resolution copy of the image
        m = _panel(np.asarray(mask, np.float32), height, max_width)
        overlay = restored.copy()
        overlay[..., 0] = np.maximum(overlay[..., 0], m)
        overlay[..., 1] *= 1.0 - 0.6 * m
        overlay[..., 2] *= 1.0 - 0.6 * m
        panels.append(("scratch mask", overlay))
    width = sum(p.shape[1] for _, p in panels) + GAP * (len(panels) + 1)
    sheet = np.full((height + LABEL_HEIGHT + 2 * GAP, width, 3), 255, np.uint8)
    x = GAP
    labels = []
    for label, p in panels:
        y = GAP + LABEL_HEIGHT + (height - p.shape[0]) // 2
        sheet[y:y + p.shape[0], x:x + p.shape[1]] = np.rint(np.clip(p, 0, 1) * 255).astype(np.uint8)
        labels.append((x, label))
        x += p.shape[1] + GAP
    im = Image.fromarray(sheet)
    draw = ImageDraw.Draw(im)
    for x, label in labels:
        draw.text((x, GAP // 2 + 2), label, fill=(0, 0, 0))
    return np.asarray(im)
