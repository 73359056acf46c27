"""Tone/colour fidelity after global restoration: a guided transfer of the scan's local tonality.

This step is **not part of the official method** (ARCHITECTURE §8 ends with the min-max stretch). It was
added when oldphoto's own CPU-trained VAEs used instance normalisation everywhere (as the official
architecture does): an instance-normalised autoencoder cannot carry a region's mean colour and brightness from
its input to its output. The shipped small networks now have no normalisation (``norm="none"``) and keep
tone themselves, and the transfer still helps them (on the val split it adds about 0.6 dB over the raw
network output, see oldphoto/weights/MODEL_CARD.md), because a small network's output is less faithful to
the scan's tonality than the scan itself. The fix keeps the network's *structure* and the scan's *tonality*:

    guide g = grey level of the restored image (mean of its channels)
    for every channel c of the reference (the decoded scan), in every Gaussian window (std `sigma` px):
        fit  reference_c ≈ a · g + b   by weighted least squares over the *valid* (unscratched) pixels,
        with the ridge term `eps` on a (flat guide → a ≈ 0, b = the local mean of the scan)
    out_c = smooth(a) · g + smooth(b)       (the coefficients averaged over the windows, He et al.'s
                                             guided filter with Gaussian instead of box windows)

Scratched pixels are excluded from the fit (weight 0), so the tone of a scratch is never copied back: inside a
scratch the coefficients come from the surrounding paper and are applied to the network's inpainted guide.
Where a window holds no valid pixel at all (a scratch much wider than `sigma`), a single global fit over all
valid pixels is used. With nothing valid the restored image is returned unchanged.

Side effect worth knowing (measured, see oldphoto/weights/MODEL_CARD.md): a guided filter is also an
edge-preserving smoother of the reference, so part of the gain over the raw network output is classical
denoising of the scan.
"""
from __future__ import annotations

import functools
from typing import Callable

import cv2
import numpy as np

DEFAULT_SIGMA = 2.0      # pixels (the networks run at the scan's own resolution, no resizing)
DEFAULT_EPS = 1e-3       # ridge on the slope a, in (intensity in [0, 1])²
_MIN_WEIGHT = 1e-3       # windows with less valid weight than this use the global fit


def gaussian_mean(img: np.ndarray, sigma: float, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted Gaussian local mean (normalised convolution): (mean, total weight per pixel).

    `img` H×W or H×W×C; `weight` H×W in [0, 1] (None: all ones). Borders are reflected. Where the total
    weight is 0 the mean is 0.
    """
    if sigma <= 0:
        raise ValueError("sigma must be > 0")
    img = np.asarray(img, np.float32)
    h, w = img.shape[:2]
    wt = np.ones((h, w), np.float32) if weight is None else np.asarray(weight, np.float32)
    if wt.shape != (h, w):
        raise ValueError(f"weight shape {wt.shape} does not match image {img.shape[:2]}")
    k = 2 * int(np.ceil(3 * sigma)) + 1

    def blur(a: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(a, (k, k), sigma, borderType=cv2.BORDER_REFLECT).reshape(a.shape)  # keeps H×W×1

    den = blur(wt)
    num = blur(img * (wt[..., None] if img.ndim == 3 else wt))
    safe = np.where(den > 1e-8, den, 1.0)
    mean = num / (safe[..., None] if img.ndim == 3 else safe)
    mean[den <= 1e-8] = 0.0
    return mean.astype(np.float32), den.astype(np.float32)


GuideFn = Callable[[int, int, int, int], np.ndarray]    # the guide over a crop: (y0, y1, x0, x1) -> h×w
TILE = 512               # core side of the tiles the transfer is computed in (memory bound)


def halo(sigma: float) -> int:
    """Context around a tile that makes it exact: two Gaussian passes of radius ceil(3·sigma), plus one."""
    return 2 * int(np.ceil(3 * sigma)) + 1


def _global_fit(guide: GuideFn, ref: np.ndarray, v: np.ndarray, eps: float,
                tile: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) per channel of the single linear fit ref_c ≈ a·guide + b over every valid pixel, from sums
    accumulated tile by tile (float64), so no full-size temporary is made."""
    n, sg, sgg = 0.0, 0.0, 0.0
    sr = np.zeros(ref.shape[2], np.float64)
    srg = np.zeros(ref.shape[2], np.float64)
    h, w = v.shape
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            m = v[y:y + tile, x:x + tile]
            g = guide(y, min(h, y + tile), x, min(w, x + tile))[m].astype(np.float64)
            r = ref[y:y + tile, x:x + tile][m].astype(np.float64)
            n += g.size
            sg += g.sum()
            sgg += (g * g).sum()
            sr += r.sum(axis=0)
            srg += (r * g[:, None]).sum(axis=0)
    g_mean, r_mean = sg / n, sr / n
    g_var = max(sgg / n - g_mean * g_mean, 0.0)
    a = (srg / n - g_mean * r_mean) / (g_var + eps)
    return a.astype(np.float32), (r_mean - a * g_mean).astype(np.float32)


GlobalFit = Callable[[], tuple[np.ndarray, np.ndarray]]   # () -> (a, b) of the single fit over the whole image


def tone_coefficients(guide: np.ndarray, ref: np.ndarray, wt: np.ndarray, sigma: float, eps: float,
                      global_fit: GlobalFit | None) -> tuple[np.ndarray, np.ndarray]:
    """The smoothed coefficients (a, b), each h×w×C, of the local fits ref_c ≈ a·guide + b (guide h×w, ref
    h×w×C, weights h×w); windows without valid weight take `global_fit()` (called only when there are such
    windows). Output = a·guide + b."""
    mg, den = gaussian_mean(guide, sigma, wt)
    mgg, _ = gaussian_mean(guide * guide, sigma, wt)
    mp, _ = gaussian_mean(ref, sigma, wt)
    mgp, _ = gaussian_mean(ref * guide[..., None], sigma, wt)
    var = np.maximum(mgg - mg * mg, 0.0)
    del mgg
    a = (mgp - mg[..., None] * mp) / (var[..., None] + eps)
    del mgp, var
    b = mp - a * mg[..., None]
    del mp, mg
    empty = den < _MIN_WEIGHT
    if empty.any() and global_fit is not None:       # windows without valid pixels: the global fit
        a[empty], b[empty] = global_fit()
    return gaussian_mean(a, sigma)[0], gaussian_mean(b, sigma)[0]


def _transfer_crop(guide: np.ndarray, ref: np.ndarray, wt: np.ndarray, sigma: float, eps: float,
                   global_fit: GlobalFit | None) -> np.ndarray:
    """The guided transfer on one crop: h×w×C float32 in [0, 1]."""
    a_s, b_s = tone_coefficients(guide, ref, wt, sigma, eps, global_fit)
    return np.clip(a_s * guide[..., None] + b_s, 0.0, 1.0).astype(np.float32)


def guided_tone_transfer(restored: np.ndarray, reference: np.ndarray, valid: np.ndarray | None = None,
                         sigma: float = DEFAULT_SIGMA, eps: float = DEFAULT_EPS, tile: int = TILE,
                         guide: GuideFn | None = None) -> np.ndarray:
    """The restored image with the reference's local tone and colour (see the module docstring).

    `restored`, `reference`: H×W×C (or H×W) float in [0, 1], same shape; `valid`: H×W bool, True where the
    reference may be trusted (False on scratches), None = everywhere. Returns float32 in [0, 1], same shape.
    Pure function: the inputs are not modified.

    `guide`: the guide over a crop, ``guide(y0, y1, x0, x1)`` → (y1 − y0)×(x1 − x0) float32 (None: the mean of
    the restored image's channels; `oldphoto.imageops.structure.ReturnedGuide` gives back the scan's structure).

    Computed in `tile`×`tile` tiles, each with a context of `halo(sigma)` pixels on every side that reaches
    past both Gaussian passes, so the result equals the untiled computation (up to float rounding; tested)
    while the working set is a few tiles plus the output, whatever the image's size or shape.
    """
    restored = np.asarray(restored, np.float32)
    reference = np.asarray(reference, np.float32)
    if restored.shape != reference.shape:
        raise ValueError(f"restored {restored.shape} and reference {reference.shape} differ in shape")
    if restored.ndim not in (2, 3):
        raise ValueError("images must be H×W or H×W×C")
    if eps <= 0:
        raise ValueError("eps must be > 0")
    if tile < 1:
        raise ValueError("tile must be >= 1")
    h, w = restored.shape[:2]
    v = np.ones((h, w), bool) if valid is None else np.asarray(valid, bool)
    if v.shape != (h, w):
        raise ValueError(f"valid mask shape {v.shape} does not match image {(h, w)}")
    if not v.any():
        return restored.copy()
    ref = reference if reference.ndim == 3 else reference[..., None]
    rst = restored if restored.ndim == 3 else restored[..., None]
    guide_fn: GuideFn = guide if guide is not None else (lambda y0, y1, x0, x1: _guide(rst, y0, y1, x0, x1))
    # the global fit is a whole extra pass over the guide (the returned guide's band energies included), needed
    # only when some window holds no valid pixel (a wide defect): made on the first such window, then kept
    global_fit = None if v.all() else functools.cache(lambda: _global_fit(guide_fn, ref, v, eps, tile))
    out = np.empty(ref.shape, np.float32)
    ctx = halo(sigma)
    for y0 in range(0, h, tile):
        y1 = min(h, y0 + tile)
        cy0, cy1 = max(0, y0 - ctx), min(h, y1 + ctx)
        for x0 in range(0, w, tile):
            x1 = min(w, x0 + tile)
            cx0, cx1 = max(0, x0 - ctx), min(w, x1 + ctx)
            crop = _transfer_crop(guide_fn(cy0, cy1, cx0, cx1), ref[cy0:cy1, cx0:cx1],
                                  v[cy0:cy1, cx0:cx1].astype(np.float32), sigma, eps, global_fit)
            out[y0:y1, x0:x1] = crop[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
    return out if restored.ndim == 3 else out[..., 0]


def grey(img: np.ndarray) -> np.ndarray:
    """H×W float32: the mean of the channels (how the guide is made from an image; H×W stays as it is)."""
    a = np.asarray(img, np.float32)
    return a.mean(axis=2) if a.ndim == 3 else a


def _guide(rst: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """The guide (`grey` of the restored image) over a crop."""
    return grey(rst[y0:y1, x0:x1])
