"""Sizes, resizing, padding and tiling.

Resizing rules of the official code (ARCHITECTURE §6.3, §8), all with Python's round-half-to-even:

- detector working size (§6.3): the image is first brought to 16-multiples (`full_size_16`, PIL bicubic),
  then the grey tensor is resized (torch bilinear, no antialias) so its short side is 256 and its long side is
  proportional, both multiples of 16 (`detector_size`; oldphoto caps each side at 2048, so strips stay small). The
  probability map comes back with nearest. oldphoto adds a second, finer scale for scans larger than that
  (`fine_detector_size`: twice the working size, at most the scan's own).
- global restoration (§8): the networks need sides that are multiples of 4 (quality) or 16 (scratch path,
  the detector's rounding). The official code *resizes* the image to those multiples. **oldphoto pads
  instead** (reflect padding at the bottom/right edge to the next multiple, `pad_to_multiple`) and crops the
  result back, so the restored image has exactly the input's size and geometry with no resampling blur.

Tiling (`tile_spans`, `run_tiled`): large scans go through the networks in tiles so that memory is bounded
whatever the scan size. Along each axis the image is cut into *cores* whose boundaries are multiples of
`multiple` (the network's total stride, so every tile sees the same pixel grid as the whole image). Each tile's
crop is its core widened by `overlap/2 + halo` on each interior side:

- the `halo` is context only: its output is discarded (weight 0), which hides the tile's zero-padded edge;
- across the `overlap` band centred on a core boundary the two neighbouring tiles are blended with linear
  ramps that sum to 1 (2-D weights are the product of the 1-D ones, so they also sum to 1 at corners).

For a network whose receptive radius is ≤ `halo` (`probe_network` measures it) and that has no image-wide
statistics (convolutions only), the tiled output equals the untiled one (tested). Instance norms are image-wide
statistics: passed as `norms`, they normalise every tile with the statistics of the whole image, gathered in
one extra pass over the tiles per norm layer (`oldphoto.networks.blocks.ImageWideNormStats`), and the tiled
output equals the untiled one again (tested with the official networks). Without `norms`, and for non-local
attention, each tile sees its own statistics; the overlap blending keeps seams invisible. Peak memory is one
tile's activations plus the float32 output accumulator (12 bytes per pixel for RGB).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image


# ------------------------------------------------------------------------------------------- size rules
def round_to_multiple(n: float, m: int) -> int:
    """int(round(n / m) * m) with Python's half-to-even rounding, never below m."""
    return max(m, int(round(n / m) * m))


def full_size_16(h: int, w: int) -> tuple[int, int]:
    """detection.py `full_size` (§6.3 step 2): each side rounded to a multiple of 16."""
    return round_to_multiple(h, 16), round_to_multiple(w, 16)


DETECTOR_SHORT_SIDE = 256     # the official working size's short side
DETECTOR_MAX_SIDE = 2048      # oldphoto's cap on the long side (the official code has none)
DETECTOR_MIN_SIDE = 32        # the U-Net's smallest input side


def detector_size(h: int, w: int, max_side: int = DETECTOR_MAX_SIDE,
                  short_side: int = DETECTOR_SHORT_SIDE) -> tuple[int, int]:
    """detection.py `scale_tensor` (§6.3 step 5): short side 256, long side proportional, multiples of 16.

    oldphoto caps each side at `max_side` (a 16-multiple): an image more elongated than max_side:256 (8:1)
    keeps its aspect ratio with the long side at `max_side` and the short side shrunk with it (at least 32,
    the U-Net's smallest input), so a 16×20000 strip is detected at 32×2048, not 256×320000. Photographs up
    to 8:1 are unchanged. `short_side` (a 16-multiple) gives another scale by the same rule (the detection
    stage's second, finer scale: `fine_detector_size`)."""
    short, long_ = (h, w) if h < w else (w, h)
    long_out = round_to_multiple(long_ / short * short_side, 16)
    short_out = short_side
    if long_out > max_side:
        long_out = max_side
        short_out = min(short_side, max(DETECTOR_MIN_SIDE, round_to_multiple(short / long_ * max_side, 16)))
    return (short_out, long_out) if h < w else (long_out, short_out)


DETECTOR_FINE_SCALE = 2       # oldphoto's second detection scale: twice the working size (not in the official code)


def fine_detector_size(h16: int, w16: int) -> tuple[int, int] | None:
    """The detector's second, finer scale for an image brought to 16-multiples (h16, w16): short side twice the
    working size's, but never above the image's own (no upsampling), long side proportional (cap
    DETECTOR_FINE_SCALE × DETECTOR_MAX_SIDE); None when the image is not larger than the working size, so small
    scans are detected at one scale only."""
    work = detector_size(h16, w16)
    short = min(h16, w16)
    fine_short = min(DETECTOR_FINE_SCALE * min(work), short // 16 * 16)
    if fine_short <= min(work):
        return None
    return detector_size(h16, w16, max_side=DETECTOR_FINE_SCALE * DETECTOR_MAX_SIDE, short_side=fine_short)


def next_multiple(n: int, m: int) -> int:
    return int(math.ceil(n / m) * m)


# ------------------------------------------------------------------------------------------- resampling
_PIL_FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                "lanczos": Image.LANCZOS, "box": Image.BOX}


def resize(arr: np.ndarray, size_hw: tuple[int, int], method: str = "bicubic") -> np.ndarray:
    """Resize an H×W or H×W×C array with PIL's filters (area-aware when downscaling).

    uint8 arrays go through PIL's 8-bit path (as the official code); float arrays are resized per channel in
    PIL's 32-bit float mode, so 16-bit precision survives. Returns the same dtype."""
    h, w = size_hw
    if arr.shape[:2] == (h, w):
        return arr.copy()
    flt = _PIL_FILTERS[method]
    if arr.dtype == np.uint8:
        return np.asarray(Image.fromarray(arr).resize((w, h), flt))
    a = arr.astype(np.float32, copy=False)
    if a.ndim == 2:
        return np.asarray(Image.fromarray(a, mode="F").resize((w, h), flt))
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c]), mode="F").resize((w, h), flt))
             for c in range(a.shape[2])]
    return np.stack(chans, axis=2)


def pad_to_multiple(arr: np.ndarray, m: int, mode: str = "reflect", min_size: int = 0) -> np.ndarray:
    """Pad an H×W[×C] array at the bottom/right so both sides are multiples of m and at least `min_size`
    (reflect, or edge when the image is too small to reflect)."""
    h, w = arr.shape[:2]
    ph = next_multiple(max(h, min_size), m) - h
    pw = next_multiple(max(w, min_size), m) - w
    if ph == 0 and pw == 0:
        return arr
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "edge"
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, pad, mode=mode)


# ------------------------------------------------------------------------------------------- tiling
@dataclass(frozen=True)
class Span:
    """One tile along one axis: the crop [start, stop) fed to the network and its core [core0, core1)."""

    start: int
    stop: int
    core0: int
    core1: int
    first: bool
    last: bool

    def weights(self, overlap: int) -> np.ndarray:
        """1-D blending weights over the crop: 1 inside the core, linear ramps over the overlap band at
        interior boundaries, 0 in the halo."""
        x = np.arange(self.start, self.stop, dtype=np.float64) + 0.5
        w = np.ones_like(x)
        if not self.first:
            w *= (np.clip((x - (self.core0 - overlap / 2)) / overlap, 0, 1) if overlap > 0
                  else (x > self.core0).astype(np.float64))
        if not self.last:
            w *= (np.clip(((self.core1 + overlap / 2) - x) / overlap, 0, 1) if overlap > 0
                  else (x < self.core1).astype(np.float64))
        return w.astype(np.float32)


def tile_spans(n: int, tile: int, overlap: int, halo: int, multiple: int = 1) -> list[Span]:
    """Cut an axis of length n (a multiple of `multiple`) into tiles of at most `tile` pixels (rounded up to
    `multiple`) whose cores touch and whose crops reach `overlap/2 + halo` past each interior core boundary."""
    if n <= tile:
        return [Span(0, n, 0, n, True, True)]
    reach = next_multiple(int(math.ceil(overlap / 2)) + halo, multiple)
    step = (tile - 2 * reach) // multiple * multiple
    if step < max(multiple, 2 * overlap):
        raise ValueError(f"tile {tile} too small for overlap {overlap} and halo {halo}")
    count = int(math.ceil(n / step))
    # spread the boundaries evenly, on the `multiple` grid
    units = n // multiple
    bounds = [round(units * i / count) * multiple for i in range(count)] + [n]
    spans = []
    for i in range(count):
        c0, c1 = bounds[i], bounds[i + 1]
        s0 = 0 if i == 0 else max(0, c0 - reach)
        s1 = n if i == count - 1 else min(n, c1 + reach)
        spans.append(Span(s0, s1, c0, c1, i == 0, i == count - 1))
    return spans


def run_tiled(fn: Callable[[torch.Tensor], torch.Tensor], image: np.ndarray, *, out_channels: int,
              tile: int = 512, overlap: int = 32, halo: int = 32, multiple: int = 16,
              device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              norms: Sequence[torch.nn.Module] = ()) -> np.ndarray:
    """Apply `fn` (a 1×C×h×w → 1×C'×h×w network call) to a C×H×W float array in overlapping tiles and
    blend them; H and W must be multiples of `multiple`. Returns C'×H×W float32.

    `norms`: instance-norm layers of the networks `fn` runs (`oldphoto.networks.blocks.instance_norms`).
    When given, they normalise every tile with the statistics of the whole image, gathered in
    `len(norms)` extra passes over the tiles (`ImageWideNormStats`), so that with `halo` at least the
    receptive radius the tiled output equals the untiled one. An image that fits in one tile runs whole.

    Only one tile is on the device at a time; the output accumulator is a numpy array."""
    from oldphoto.networks.blocks import ImageWideNormStats

    c, h, w = image.shape
    if h % multiple or w % multiple:
        raise ValueError(f"image {h}×{w} is not a multiple of {multiple}; pad it first")
    ys = tile_spans(h, tile, overlap, halo, multiple)
    xs = tile_spans(w, tile, overlap, halo, multiple)
    if len(ys) == 1 and len(xs) == 1:
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(image))[None].to(device=device, dtype=dtype)
            return fn(t)[0].float().cpu().numpy()
    stats = ImageWideNormStats(list(norms)) if norms else None
    while True:
        out = None
        for sy in ys:
            wy = sy.weights(overlap)
            for sx in xs:
                crop = np.ascontiguousarray(image[:, sy.start:sy.stop, sx.start:sx.stop])
                with torch.inference_mode():
                    t = torch.from_numpy(crop)[None].to(device=device, dtype=dtype)
                    if stats is None:
                        res = fn(t)
                    else:
                        core = (sy.core0 - sy.start, sy.core1 - sy.start, sx.core0 - sx.start, sx.core1 - sx.start)
                        res = stats.run(fn, t, core)
                        if res is None:             # a statistics pass: no output yet
                            continue
                    res = res[0].float().cpu().numpy()
                if res.shape[1:] != crop.shape[1:]:
                    raise ValueError(f"network changed the tile size {crop.shape[1:]} -> {res.shape[1:]}")
                if out is None:
                    out = np.zeros((out_channels, h, w), np.float32)
                out[:, sy.start:sy.stop, sx.start:sx.stop] += res * (wy[:, None] * sx.weights(overlap)[None, :])[None]
        if stats is None or not stats.end_pass():
            return out


@dataclass(frozen=True)
class NetworkProbe:
    """What tiling needs to know of a network call, measured on a small probe input."""

    radius: int                  # receptive radius in input pixels (a halo at least this makes tiles exact)
    bytes_per_pixel: float       # largest single activation, bytes per input pixel


def probe_network(fn: Callable[[torch.Tensor], torch.Tensor], probe: torch.Tensor,
                  modules: Sequence[torch.nn.Module]) -> NetworkProbe:
    """Run `fn` on `probe` (1×C×h×w) with hooks on the convolutions of `modules`: the receptive radius
    (each conv adds its kernel's reach at its own resolution, rounded up to input pixels: ceil(d(k−1)/2)
    for a convolution, ceil(k/s) for a transposed one) and the largest activation any module outputs."""
    h = probe.shape[-2]
    reach: list[float] = []
    largest = [probe.numel() * probe.element_size()]

    def conv_hook(m, inputs, output):
        k, s, d = m.kernel_size[0], m.stride[0], m.dilation[0]
        r = math.ceil(k / s) if isinstance(m, torch.nn.ConvTranspose2d) else math.ceil(d * (k - 1) / 2)
        reach.append(r * h / inputs[0].shape[-2])    # in probe pixels

    def size_hook(m, inputs, output):
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel() * output.element_size())

    handles = []
    for mod in modules:
        for m in mod.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                handles.append(m.register_forward_hook(conv_hook))
            handles.append(m.register_forward_hook(size_hook))
    try:
        with torch.inference_mode():
            fn(probe)
    finally:
        for hd in handles:
            hd.remove()
    pixels = probe.shape[0] * probe.shape[-2] * probe.shape[-1]
    return NetworkProbe(radius=int(sum(math.ceil(r) for r in reach)), bytes_per_pixel=largest[0] / pixels)
