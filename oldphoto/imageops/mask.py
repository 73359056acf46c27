"""Scratch-mask operations (pure functions on boolean masks).

`guard_faces`: do no harm to faces. Inside a face, a detector that fires on eyes, lips, beards or glasses makes
the partial nonlocal block repaint the face from its surroundings. Inside each face box only what looks like a
scratch is kept: a connected part of the mask at least `min_length` of the face's size long and at most
`max_thickness` pixels thick on average (area / length); parts separated by gaps of up to `max_gap` pixels are
judged together, on their own pixels (a scratch the detector marks in pieces is one scratch, and its pieces are kept
although each alone is too short). Blobs and specks there (features, catchlights, texture) are dropped; the face
stage and the global restoration still clean the face, without inpainting it. Outside the faces the mask is
unchanged.

`guard_blobs`: do no harm anywhere. On real old photos a detector trained on synthetic defects also marks large
irregular areas (light suits, sky, paper margins next to dark figures) that the partial nonlocal block would then
repaint. Over the whole image, a connected part of the mask larger than a dust speck (`max_speck` pixels) is kept
only where it is scratch-like: where it holds a disc wider than `max_thickness` pixels it is a blob, and the blob is
dropped (a scratch running into it keeps its thin rest). The price: large holes in the emulsion are not inpainted
either (the global restoration still cleans them); a conservator sees them rather than a repainted guess.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

FACE_GUARD_MIN_LENGTH = 0.35     # of the face box's shorter side
FACE_GUARD_MAX_THICKNESS = 4.5   # mean width in mask pixels (the detector's working size: short side 256)
FACE_GUARD_MARGIN = 0.15         # each face box is grown by this fraction of its size on every side
FACE_GUARD_MAX_GAP = 4           # mask pixels: parts this close are one part (a scratch marked in pieces)
BLOB_GUARD_MAX_SPECK = 64        # mask pixels (working size): smaller parts are dust and always kept
BLOB_GUARD_MAX_THICKNESS = 6.0   # mask pixels: a part holding a wider disc is a blob (scratches are 1-4 px wide)


def grow_box(box: Sequence[float], margin: float, height: int, width: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) grown by `margin` × its size on every side, clipped to the image."""
    l, t, r, b = (float(v) for v in box)
    dx, dy = (r - l) * margin, (b - t) * margin
    return (max(0, int(np.floor(l - dx))), max(0, int(np.floor(t - dy))),
            min(width, int(np.ceil(r + dx))), min(height, int(np.ceil(b + dy))))


def scale_box(box: Sequence[float], sx: float, sy: float) -> tuple[float, float, float, float]:
    l, t, r, b = (float(v) for v in box)
    return (l * sx, t * sy, r * sx, b * sy)


def is_line_like(points_xy: np.ndarray, min_length: float, max_thickness: float) -> bool:
    """A component (N×2 pixel coordinates) is a scratch: long enough along its own axis, thin enough."""
    if len(points_xy) < 2:
        return False
    (_, _), (w, h), _ = cv2.minAreaRect(points_xy.astype(np.float32))
    length = max(w, h) + 1.0
    return length >= min_length and len(points_xy) / length <= max_thickness


def guard_faces(mask: np.ndarray, boxes: Sequence[Sequence[float]], min_length: float = FACE_GUARD_MIN_LENGTH,
                max_thickness: float = FACE_GUARD_MAX_THICKNESS, margin: float = FACE_GUARD_MARGIN,
                max_gap: int = FACE_GUARD_MAX_GAP) -> tuple[np.ndarray, int]:
    """(mask with only scratch-like parts kept inside the face boxes, number of mask pixels removed).

    `boxes` are (left, top, right, bottom) in the mask's pixel coordinates; parts at most `max_gap` pixels apart
    are judged as one (on their own pixels, not the gap's). The input is not modified."""
    out = mask.astype(bool, copy=True)
    h, w = out.shape
    removed = 0
    reach = (max_gap + 1) // 2                         # a gap of max_gap closes when both sides grow by this
    for box in boxes:
        l, t, r, b = grow_box(box, margin, h, w)
        if r <= l or b <= t:
            continue
        crop = out[t:b, l:r]
        if not crop.any():
            continue
        grouped = crop.astype(np.uint8)
        if reach > 0:
            grouped = cv2.dilate(grouped, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))
        n, labels = cv2.connectedComponents(grouped, connectivity=8)
        labels[~crop] = 0                              # each group judged on its own mask pixels
        size = min(box[2] - box[0], box[3] - box[1])
        need = max(4.0, min_length * size)
        for k in range(1, n):
            ys, xs = np.nonzero(labels == k)           # never empty: every group grew from mask pixels
            if not is_line_like(np.stack([xs, ys], 1), need, max_thickness):
                crop[ys, xs] = False
                removed += len(ys)
    return out, removed


def guard_blobs(mask: np.ndarray, max_speck: int = BLOB_GUARD_MAX_SPECK,
                max_thickness: float = BLOB_GUARD_MAX_THICKNESS) -> tuple[np.ndarray, int]:
    """(mask without its blobs, number of mask pixels removed). A blob is where the mask holds a disc wider than
    `max_thickness` (a morphological opening), with a one-pixel fringe; what stays of a part that touched a blob,
    e.g. a scratch running into it, is thin and is kept. Parts (8-connected) of at most `max_speck` pixels are dust
    and are kept whole. The input is not modified."""
    out = mask.astype(bool, copy=True)
    if not out.any():
        return out, 0
    d = int(np.floor(max_thickness)) + 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))
    m8 = out.astype(np.uint8)
    core = cv2.morphologyEx(m8, cv2.MORPH_OPEN, disc)
    if not core.any():
        return out, 0
    blob = cv2.dilate(core, np.ones((3, 3), np.uint8)).astype(bool) & out
    _, labels, stats, _ = cv2.connectedComponentsWithStats(m8, connectivity=8)
    speck = (stats[:, cv2.CC_STAT_AREA] <= max_speck)[labels]
    blob &= ~speck
    out &= ~blob
    return out, int(blob.sum())
