"""Scratch-mask operations (pure functions on boolean masks).

`guard_faces`: do no harm to faces. Inside a face, a detector that fires on eyes, lips, beards or glasses makes
the partial nonlocal block repaint the face from its surroundings. Inside each face box only what looks like a
scratch is kept: a connected part of the mask at least `min_length` of the face's size long and at most
`max_thickness` pixels thick on average (area / length); parts separated by gaps of up to `max_gap` pixels are
judged together, on their own pixels (a scratch the detector marks in pieces is one scratch, and its pieces are kept
although each alone is too short). Blobs and specks there (features, catchlights, texture) are dropped; the face
stage and the global restoration still clean the face, without inpainting it. Outside the faces the mask is
unchanged. Given the scan's grey level, a part of a dropped group that is lighter than the skin around it by
`FACE_GUARD_MIN_CONTRAST` and that the detector marked with a mean probability of at least `FACE_GUARD_MIN_PROB` is
kept: white scuffs and clusters of short scratches on a face, which the shape rule alone left in the picture (chosen
on val, scripts/choose_face_guard_contrast.py: face crops 20.93 -> 21.44 dB).

`guard_blobs`: do no harm anywhere. On real old photos a detector trained on synthetic defects also marks large
irregular areas (light suits, sky, paper margins next to dark figures) that the partial nonlocal block would then
repaint. Over the whole image, a connected part of the mask larger than a dust speck (`max_speck` pixels) is kept
only where it is scratch-like: where it holds a disc wider than `max_thickness` pixels it is a blob, and the blob is
dropped (a scratch running into it keeps its thin rest). The price: large holes in the emulsion are not inpainted
either (the global restoration still cleans them); a conservator sees them rather than a repainted guess.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import cv2
import numpy as np

FACE_GUARD_MIN_LENGTH = 0.35     # of the face box's shorter side
FACE_GUARD_MAX_THICKNESS = 4.5   # mean width in mask pixels (the detector's working size: short side 256)
FACE_GUARD_MARGIN = 0.15         # each face box is grown by this fraction of its size on every side
FACE_GUARD_MAX_GAP = 4           # mask pixels: parts this close are one part (a scratch marked in pieces)
FACE_GUARD_MIN_CONTRAST = 0.1    # grey levels (0-1): a part this much lighter than its ring is a defect, kept
FACE_GUARD_MIN_PROB = 0.7        # ... if the detector's mean probability over it is at least this
FACE_GUARD_RING = 3              # mask pixels: the ring around a part that its lightness is compared with
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


def lighter_than_ring(part: np.ndarray, grey: np.ndarray, mask: np.ndarray, ring: int = FACE_GUARD_RING) -> float:
    """Mean grey of a mask part (boolean, same shape as `grey`) minus the mean grey of the unmasked pixels within
    `ring` pixels of it (-inf when there are none)."""
    ys, xs = np.nonzero(part)
    t, b = max(0, ys.min() - ring), min(part.shape[0], ys.max() + ring + 1)
    l, r = max(0, xs.min() - ring), min(part.shape[1], xs.max() + ring + 1)
    local = part[t:b, l:r].astype(np.uint8)
    around = cv2.dilate(local, np.ones((2 * ring + 1, 2 * ring + 1), np.uint8)).astype(bool) & ~mask[t:b, l:r]
    if not around.any():
        return float("-inf")
    g = grey[t:b, l:r]
    return float(g[local.astype(bool)].mean() - g[around].mean())


def guard_faces(mask: np.ndarray, boxes: Sequence[Sequence[float]], min_length: float = FACE_GUARD_MIN_LENGTH,
                max_thickness: float = FACE_GUARD_MAX_THICKNESS, margin: float = FACE_GUARD_MARGIN,
                max_gap: int = FACE_GUARD_MAX_GAP, grey: np.ndarray | None = None,
                min_contrast: float | None = None, prob: np.ndarray | None = None,
                min_prob: float | None = None) -> tuple[np.ndarray, int]:
    """(mask with only scratch-like parts kept inside the face boxes, number of mask pixels removed).

    `boxes` are (left, top, right, bottom) in the mask's pixel coordinates; parts at most `max_gap` pixels apart
    are judged as one (on their own pixels, not the gap's). With `grey` (the scan's grey level at the mask's size)
    and a `min_contrast` (None: FACE_GUARD_MIN_CONTRAST; None there too: off), a group that is not scratch-like
    still keeps each of its 8-connected parts that is at least `min_contrast` lighter than the unmasked ring
    around it and, given the detector's probability `prob` (same size), marked with a mean probability of at least
    `min_prob` (None: FACE_GUARD_MIN_PROB): white scratches, scuffs and dust on a print, where the features a
    detector mistakes for defects (eyes, brows, lips, glasses) are darker than the skin around them, and the light
    ones it marks (a white beard's strands, a collar) it marks with less confidence. The input is not modified."""
    for name, a in (("grey", grey), ("prob", prob)):
        if a is not None and a.shape != mask.shape:
            raise ValueError(f"{name} {a.shape} does not match the mask {mask.shape}")
    light = _LightRule.make(grey, prob, min_contrast, min_prob)
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
        before = crop.copy() if light is not None else None
        for k in range(1, n):
            group = labels == k
            ys, xs = np.nonzero(group)                 # never empty: every group grew from mask pixels
            if is_line_like(np.stack([xs, ys], 1), need, max_thickness):
                continue
            if light is not None:
                group &= ~light.parts(group, before, (t, b, l, r))
            removed += int(group.sum())
            crop[group] = False
    return out, removed


class _LightRule(NamedTuple):
    """guard_faces' exception for light defects: the scan's grey level and the detector's probability (mask-sized),
    the minimum contrast and the minimum mean probability."""
    grey: np.ndarray
    prob: np.ndarray | None
    min_contrast: float
    min_prob: float

    @classmethod
    def make(cls, grey: np.ndarray | None, prob: np.ndarray | None, min_contrast: float | None,
             min_prob: float | None) -> "_LightRule | None":
        """The rule with the module's defaults for what is None; None (off) without a grey level or a contrast."""
        contrast = FACE_GUARD_MIN_CONTRAST if min_contrast is None else min_contrast
        if grey is None or contrast is None:
            return None
        return cls(grey, prob, contrast, FACE_GUARD_MIN_PROB if min_prob is None else min_prob)

    def parts(self, group: np.ndarray, mask: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
        """The 8-connected parts of `group` (inside `window` = top, bottom, left, right) at least `min_contrast`
        lighter than their ring and marked with a mean probability of at least `min_prob`."""
        keep = np.zeros_like(group)
        t, b, l, r = window
        grey = self.grey[t:b, l:r]
        prob = None if self.prob is None else self.prob[t:b, l:r]
        n, labels = cv2.connectedComponents(group.astype(np.uint8), connectivity=8)
        for k in range(1, n):
            part = labels == k
            if ((prob is None or prob[part].mean() >= self.min_prob)
                    and lighter_than_ring(part, grey, mask) >= self.min_contrast):
                keep |= part
        return keep


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
