"""Structure return after global restoration (**not in the official method**): give back what stage 1 smoothed
away where the scan shows it was not noise.

Stage 1 is a denoiser: on a scan without noise it takes fine real texture (gravel, grass, the folds of light
cloth, engraved hatching) for noise and paints it flat. The tone transfer (`oldphoto.imageops.tone`) cannot bring
it back, since its guide is the restored image. Here the guide takes the scan's structure back where

    D = band energy of the scan − band energy of the restored image       (what stage 1 removed, locally)
    N = the scan's noise floor: the `floor_percentile` percentile of its band energy over the pixels that are
        not clipped (the flattest parts of a photo hold only its noise)

is far above the floor: weight w = strength · ramp(log10(D / N), `ratio_log10`), guide = restored grey +
w · (scan grey − restored grey). Band energy: a difference of Gaussians (`band`, px) squared, averaged in a
Gaussian `window`. The photo's strength falls from 1 to 0 as its floor rises through `floor_levels` (grey
levels of 255): on a noisy scan the removed structure cannot be told from removed noise (measured on the val
split, MODEL_CARD.md: returning it there brought noise, grain and unmarked dust back), so it is left to stage 1.
Scratched pixels (the mask used) never take the scan's structure back.

Pure functions; `noise_floor` and `ReturnedGuide` work in tiles with exact halos, so memory stays a few tiles
whatever the scan's size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from oldphoto.imageops.tone import grey     # the tone transfer's guide and this module's grey are one function

_HIST_RANGE = (-12.0, 1.0)        # log10 band energy (intensity in [0, 1])
_HIST_BINS = 2600
_CLIP_MARGIN = 2.0 / 255          # a pixel this close to the scan's darkest or brightest grey is clipped
_CLIP_ERODE = 2                   # px: and so are its neighbours (a clipped region's edge is not noise either)
_UNIFORM_SIDE = 15               # px: a square this large of exactly one value is digital (a padded frame, a filled
#                                  margin, a clipped sky), not a scan's noise-free paper (JPEG's flat blocks are 8 px)
_MIN_UNCLIPPED = 0.05             # below this share of unclipped pixels the floor is taken over all pixels
_FLOOR_MIN = 0.5 / 255            # the floor never goes below half a grey level (8-bit quantisation)


@dataclass(frozen=True)
class StructureReturnConfig:
    band: tuple[float, float] = (0.8, 2.5)          # difference of Gaussians (std, px): the structure compared
    window: float = 4.0                             # Gaussian std (px) of the local energy average
    floor_percentile: float = 10.0                  # the noise floor: this percentile of the scan's band energy
    ratio_log10: tuple[float, float] = (0.6, 1.6)   # log10(D / N): no return at the first, full at the second
    floor_levels: tuple[float, float] = (1.0, 4.0)  # floor (grey levels): full strength at the first, none at the
    #                                                 second (chosen on the val split, MODEL_CARD.md; about grey
    #                                                 noise of sigma 3.6 and 15 levels)

    @property
    def halo(self) -> int:
        """Context that makes a crop's weights exact: both Gaussians of the band, then the window."""
        return _radius(max(self.band)) + _radius(self.window) + 1


DEFAULT_STRUCTURE_RETURN = StructureReturnConfig()


def _radius(sigma: float) -> int:
    return int(math.ceil(3 * sigma))


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    k = 2 * _radius(sigma) + 1
    return cv2.GaussianBlur(a, (k, k), sigma, borderType=cv2.BORDER_REFLECT)


def band_energy(g: np.ndarray, config: StructureReturnConfig = DEFAULT_STRUCTURE_RETURN) -> np.ndarray:
    """Local energy of a grey image's band-pass structure (H×W float32)."""
    g = np.asarray(g, np.float32)
    d = _blur(g, config.band[0]) - _blur(g, config.band[1])
    return _blur(d * d, config.window)


def _tiles(h: int, w: int, tile: int):
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            yield y0, min(h, y0 + tile), x0, min(w, x0 + tile)


def _with_context(y0: int, y1: int, x0: int, x1: int, ctx: int, h: int, w: int
                  ) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(the crop grown by `ctx` pixels within the h×w image, the original crop's place inside it)."""
    cy0, cy1, cx0, cx1 = max(0, y0 - ctx), min(h, y1 + ctx), max(0, x0 - ctx), min(w, x1 + ctx)
    return (slice(cy0, cy1), slice(cx0, cx1)), (slice(y0 - cy0, y1 - cy0), slice(x0 - cx0, x1 - cx0))


def noise_floor(scan: np.ndarray, config: StructureReturnConfig = DEFAULT_STRUCTURE_RETURN,
                tile: int = 512) -> float:
    """The scan's noise floor (intensity in [0, 1], at least half a grey level): the square root of the
    `floor_percentile` percentile of its band energy over its unclipped pixels (a histogram of log energies,
    filled tile by tile). Digitally uniform areas (exactly one value over `_UNIFORM_SIDE`² pixels: a padded frame,
    a filled margin) and their surroundings within the energy's reach are left out, as clipped pixels are: they
    would make a noisy scan look noise-free. With no pixel left the floor is unknown: 1.0 (strength 0)."""
    scan = np.asarray(scan, np.float32)
    h, w = scan.shape[:2]
    lo, hi = np.inf, -np.inf
    for y0, y1, x0, x1 in _tiles(h, w, tile):
        g = grey(scan[y0:y1, x0:x1])
        lo, hi = min(lo, float(g.min())), max(hi, float(g.max()))
    reach = config.halo                # a uniform area's influence on the band energy around it
    ctx = config.halo + max(_CLIP_ERODE, reach + _UNIFORM_SIDE // 2) + 1
    kernel = np.ones((2 * _CLIP_ERODE + 1,) * 2, np.uint8)
    around = np.ones((2 * reach + 1,) * 2, np.uint8)
    square = np.ones((_UNIFORM_SIDE,) * 2, np.uint8)
    kept = np.zeros(_HIST_BINS, np.int64)
    every = np.zeros(_HIST_BINS, np.int64)
    for y0, y1, x0, x1 in _tiles(h, w, tile):
        crop, inner = _with_context(y0, y1, x0, x1, ctx, h, w)
        g = grey(scan[crop])
        e = np.log10(np.maximum(band_energy(g, config)[inner], 1e-12))
        unclipped = ((g > lo + _CLIP_MARGIN) & (g < hi - _CLIP_MARGIN)).astype(np.uint8)
        unclipped = cv2.erode(unclipped, kernel, borderType=cv2.BORDER_REPLICATE)[inner] > 0
        uniform = (cv2.dilate(g, square) - cv2.erode(g, square)) <= 0
        informative = cv2.dilate(uniform.astype(np.uint8), around, borderType=cv2.BORDER_REPLICATE)[inner] == 0
        every += np.histogram(e[informative], _HIST_BINS, _HIST_RANGE)[0]
        kept += np.histogram(e[unclipped & informative], _HIST_BINS, _HIST_RANGE)[0]
    counts = kept if kept.sum() > _MIN_UNCLIPPED * every.sum() else every
    if counts.sum() == 0:          # nothing says what the scan's noise is: unknown, so nothing is given back
        return 1.0
    k = int(np.searchsorted(np.cumsum(counts), config.floor_percentile / 100.0 * counts.sum()))
    edges = np.linspace(*_HIST_RANGE, _HIST_BINS + 1)
    log_e = edges[min(k, _HIST_BINS - 1)] + 0.5 * (edges[1] - edges[0])
    return max(_FLOOR_MIN, float(np.sqrt(10.0 ** log_e)))


def photo_strength(floor: float, config: StructureReturnConfig = DEFAULT_STRUCTURE_RETURN) -> float:
    """How much structure a scan with this noise floor takes back: 1 at or below `floor_levels[0]` grey levels,
    0 at or above `floor_levels[1]`, linear between."""
    lo, hi = config.floor_levels
    return float(np.clip((hi - floor * 255.0) / (hi - lo), 0.0, 1.0))


def return_weight(scan_grey: np.ndarray, restored_grey: np.ndarray, floor: float, strength: float,
                  config: StructureReturnConfig = DEFAULT_STRUCTURE_RETURN) -> np.ndarray:
    """Per-pixel weight (H×W float32 in [0, strength]) of the scan's structure in the guide."""
    dropped = band_energy(scan_grey, config) - band_energy(restored_grey, config)
    ratio = np.log10(np.maximum(dropped, 1e-12) / (floor * floor))
    t0, t1 = config.ratio_log10
    return (strength * np.clip((ratio - t0) / (t1 - t0), 0.0, 1.0)).astype(np.float32)


class ReturnedGuide:
    """The tone transfer's guide with the scan's structure returned (`guided_tone_transfer(..., guide=...)`):
    called with a crop (y0, y1, x0, x1), it computes the weights on that crop plus `config.halo` pixels of
    context, so a tiled transfer equals an untiled one."""

    def __init__(self, restored: np.ndarray, scan: np.ndarray, valid: np.ndarray | None, floor: float,
                 strength: float, config: StructureReturnConfig = DEFAULT_STRUCTURE_RETURN):
        self.restored, self.scan, self.valid = restored, scan, valid
        self.floor, self.strength, self.config = floor, strength, config

    def __call__(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        crop, inner = _with_context(y0, y1, x0, x1, self.config.halo, *self.restored.shape[:2])
        r = grey(self.restored[crop])
        s = grey(self.scan[crop])
        wt = return_weight(s, r, self.floor, self.strength, self.config)[inner]
        if self.valid is not None:
            wt = np.where(self.valid[y0:y1, x0:x1], wt, 0.0).astype(np.float32)
        r, s = r[inner], s[inner]
        return r + wt * (s - r)
