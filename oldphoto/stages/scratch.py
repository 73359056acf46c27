"""Stage "scratch_detection": the U-Net marks scratches; the mask comes back at the input's size.

Preprocessing follows detection.py (ARCHITECTURE §6.3): 8-bit RGB, PIL bicubic to 16-multiples
(`full_size_16`), PIL luma, (x − 0.5)/0.5, torch bilinear (no antialias) to the working size (short side 256,
`detector_size`), sigmoid, threshold ≥ 0.4, legacy-nearest back to the 16-multiple size, and then (oldphoto's
addition, the official mask stays at the rounded size) nearest to the input's own size. The network runs in
tiles (`run_tiled`, `options.detector_tile`) so even a very elongated scan has a bounded working set; a normal
photo is one tile at the working size.

Two scales (`options.detector_scales`, default 2; **not in the official method**, `--detector-scales 1` gives the
official map): a scan larger than the working size is also run at twice the working size (at most its own size),
and the two maps are combined at the working size (`scratch_probability`), so thin scratches on large scans are
found; the threshold and the auto rule were chosen on val with it (photos of 256, 512 and 1024 px).

Mirrored passes (`options.detector_mirror`, default on; **not in the official method**, `--no-detector-mirror`): at
each scale the detector also sees the scan mirrored left-right, upside down and both, and the four logits are
averaged; what it answers to in one orientation only (texture, edges) falls, a scratch looks alike every way and
stays. The mask is thresholded from that map and the `auto` decision counts it, with the operating point chosen on
it; the one-pass map has its own (the operating point's `UNMIRRORED` entry), used with `--no-detector-mirror`.

Face guard (`options.face_guard`, default on; **not in the official method**, `--no-face-guard --no-blob-guard`
give the official mask): dlib finds the faces on the scan, and inside each face only scratch-like parts of the mask
are kept (`oldphoto.imageops.mask.guard_faces`: long and thin), so eyes, lips and beards are not inpainted; the
faces found are kept in the item's state for the face stage.

Blob guard (`options.blob_guard`, default on; not in the official method either, `--no-blob-guard`): anywhere in
the image, the parts of the mask thicker than a scratch (blobs) are dropped, dust specks kept
(`oldphoto.imageops.mask.guard_blobs`), so large areas the detector takes for holes on real photos (light clothes,
sky, margins) are not repainted; large real holes are then not inpainted either. Both guards are recorded in
provenance, and what they removed does not count for the `auto` decision.

Suspected defects (`ItemState.suspect`, oldphoto's addition): the pixels where the detector's probability reaches
`SUSPECT_THRESHOLD` (well below its threshold), before the guards, grown by one working-size pixel. Nothing is
inpainted there; structure return (`oldphoto.imageops.structure`) does not give the scan's structure back there,
so a stain or scratch that stage 1 softened but the mask left out does not come back sharp. Made only when
structure return can run (`RestoreOptions.returns_structure`: `tone_match` and `structure_return` on); else None.

`--scratch off` skips the stage. `--scratch on` always uses the scratch path. `--scratch auto` uses it only
when the mask covers at least the auto coverage of the pixels; the mask is saved whenever the detector ran. The
pixel threshold and the auto rule are the detector's operating point (`operating_point`: the weights file's
own, chosen on val, else the official 0.4 and 0.1 %; options override): the `auto` decision counts the working-size
pixels at or above the auto threshold (may be higher than the mask's), recorded in provenance parameters.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import oldphoto.imageops.mask as mask_module
from oldphoto.imageops.geometry import detector_size, fine_detector_size, full_size_16, run_tiled
from oldphoto.imageops.io import to_uint
from oldphoto.imageops.mask import (BLOB_GUARD_MAX_SPECK, BLOB_GUARD_MAX_THICKNESS, FACE_GUARD_MARGIN,
                                    FACE_GUARD_MAX_THICKNESS, FACE_GUARD_MIN_LENGTH, guard_blobs, guard_faces,
                                    scale_box)
from oldphoto.provenance import StageName
from oldphoto.stages.base import AUTO_SCRATCH_MIN_COVERAGE, SCRATCH_THRESHOLD, ItemState, Stage
from oldphoto.stages.faces import landmarks_checkpoint

SUSPECT_THRESHOLD = 0.2   # a possible defect (`suspected`): no structure return there (chosen on the val bench)


def nearest_indices(n_out: int, n_in: int) -> np.ndarray:
    """Source indices of torch's legacy 'nearest' resize from n_in to n_out samples."""
    scale = n_in / n_out
    return np.minimum(np.floor(np.arange(n_out) * scale).astype(np.int64), n_in - 1)


def detector_grey(pixels: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """(1×1×H′×W′ grey tensor in [-1,1] at the 16-multiple size, that size (H′, W′)) for an H×W×3 float image."""
    h, w = pixels.shape[:2]
    h16, w16 = full_size_16(h, w)
    rgb = Image.fromarray(to_uint(pixels, 8))
    if (h16, w16) != (h, w):
        rgb = rgb.resize((w16, h16), Image.BICUBIC)
    grey = np.asarray(rgb.convert("L"), dtype=np.float32)
    del rgb
    return torch.from_numpy((grey / 255.0 - 0.5) / 0.5)[None, None], (h16, w16)


MIRRORS = ((-1,), (-2,), (-2, -1))   # the mirrored passes: left-right, upside down, both (axes of H×W)
UNMIRRORED = "unmirrored"            # the operating point's entry for the one-pass map (`--no-detector-mirror`)


class ScratchMap(NamedTuple):
    prob: np.ndarray                  # scratch probability at the working size, float64
    rounded: tuple[int, int]          # the image's 16-multiple size (H′, W′)
    sizes: list[tuple[int, int]]      # the sizes the network ran at: the working size, then the finer one if any


def scratch_probability(net: Callable[[torch.Tensor], torch.Tensor], pixels: np.ndarray, scales: int = 2,
                        tile: int = 1024, device: str = "cpu", mirror: bool = False) -> ScratchMap:
    """The scratch probability map (`ScratchMap`) of an H×W×3 float image.

    One scale (`scales=1`): the official preprocessing, the network in tiles (`run_tiled`) at the working size.
    Two scales (the default; oldphoto's addition): a scan larger than the working size is also run at
    `fine_detector_size` (twice the working size, at most its own), that map is max-pooled to the working size
    and averaged with the first. A scratch a pixel or two wide on a large scan is thinner than a pixel at the
    working size and barely answers there; at the finer scale it does, and the average keeps what only one
    scale sees (texture at one scale) lower. Measured on val photos degraded as larger scans (MODEL_CARD.md):
    ROC AUC and false positives better on 512 and 1024 px scans, unchanged at the working size.

    `mirror` (oldphoto's addition): at each scale the network also sees the image mirrored left-right, upside down
    and both, and the four logits are averaged; what the network answers to in one orientation only (texture)
    falls, a scratch stays."""
    grey, rounded = detector_grey(pixels)

    def logits(x: np.ndarray) -> np.ndarray:
        return run_tiled(lambda t: net(t), x, out_channels=1, tile=tile, overlap=32, halo=64, multiple=16,
                         device=device)[0].astype(np.float64)

    def run(size: tuple[int, int]) -> np.ndarray:
        x = shrink_to_working_size(grey, size)[0].numpy()
        total = logits(x)
        for axes in MIRRORS if mirror else ():     # each mirrored answer flipped back onto the scan
            total = total + np.flip(logits(np.ascontiguousarray(np.flip(x, axes))), axes)
        return _sigmoid(total / (len(MIRRORS) + 1) if mirror else total)

    work = detector_size(*rounded)
    prob = run(work)
    fine = fine_detector_size(*rounded) if scales == 2 else None
    if fine is not None:
        prob = (prob + F.adaptive_max_pool2d(torch.from_numpy(run(fine))[None, None], work)[0, 0].numpy()) / 2.0
    return ScratchMap(prob, rounded, [work] if fine is None else [work, fine])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def suspected(prob: np.ndarray, threshold: float = SUSPECT_THRESHOLD) -> np.ndarray:
    """Working-size bool map of possible defects: probability at or above `threshold`, grown by one pixel."""
    return cv2.dilate((prob >= threshold).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def shrink_to_working_size(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N×C×H×W → N×C×size: torch bilinear without antialias (the official preprocessing; the detector's training
    shrinks its "large scan" crops with this same function)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def mask_to_size(small: np.ndarray, rounded_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """Nearest from the working size to the 16-multiple size (as the official code), then to the input's size."""
    rows = nearest_indices(rounded_hw[0], small.shape[0])
    cols = nearest_indices(rounded_hw[1], small.shape[1])
    rows = rows[nearest_indices(out_hw[0], rounded_hw[0])]
    cols = cols[nearest_indices(out_hw[1], rounded_hw[1])]
    return small[rows[:, None], cols[None, :]]


class ScratchDetectionStage(Stage):
    steps = (StageName.SCRATCH_DETECTION,)
    role = "scratch_unet"

    def operating_point(self) -> tuple[float, float, float]:
        """(pixel threshold, auto minimum coverage, auto threshold): options, else the weights' own (chosen on val
        for the map the options make: with the mirrored passes, else the file's `UNMIRRORED` entry where it has
        one), else the official defaults. The `auto` decision counts the pixels at or above the auto threshold (the
        weights' own; else, or when the pixel threshold is given as an option, the pixel threshold)."""
        own = self.models.operating_point(self.role) if hasattr(self.models, "operating_point") else {}
        if not self.options.detector_mirror:
            own = {**own, **own.get(UNMIRRORED, {})}
        t = self.options.scratch_threshold
        c = self.options.auto_scratch_min_coverage
        threshold = float(t if t is not None else own.get("threshold", SCRATCH_THRESHOLD))
        auto_t = threshold if t is not None else float(own.get("auto_threshold", threshold))
        return (threshold, float(c if c is not None else own.get("auto_min_coverage", AUTO_SCRATCH_MIN_COVERAGE)),
                auto_t)

    def process(self, state: ItemState) -> None:
        opts = self.options
        if opts.scratch == "off":
            self.skip(state, self.name, "--scratch off")
            state.use_scratch = False
            return
        extra = (landmarks_checkpoint(),) if opts.face_guard else ()
        with self.step(state, self.name, roles=(self.role,), extra_checkpoints=extra):
            pixels = state.decoded.pixels
            prob, rounded, sizes = scratch_probability(self.models.get(self.role), pixels, scales=opts.detector_scales,
                                                       tile=opts.detector_tile, device=opts.device,
                                                       mirror=opts.detector_mirror)
            threshold, min_coverage, auto_threshold = self.operating_point()
            small = prob >= threshold
            kept = self._guard_faces(state, small, prob) if opts.face_guard else small
            if opts.blob_guard:
                kept, removed = guard_blobs(kept)
                state.provenance.parameters["blob_guard"] = {
                    "mask_fraction_removed": round(removed / kept.size, 6), "max_speck": BLOB_GUARD_MAX_SPECK,
                    "max_thickness": BLOB_GUARD_MAX_THICKNESS}
            mask = mask_to_size(kept, rounded, pixels.shape[:2])
            state.mask = mask
            if opts.returns_structure:      # only structure return reads it
                state.suspect = mask_to_size(suspected(prob), rounded, pixels.shape[:2])
            state.provenance.mask_coverage = round(float(mask.mean()), 6)
            # the auto decision: the share of working-size pixels at or above the auto threshold, without what
            # the face guard removed
            auto_coverage = float(((prob >= auto_threshold) & ~(small & ~kept)).mean())
            state.provenance.parameters.update(detector_sizes=[list(size) for size in sizes],
                                               detector_mirrored=opts.detector_mirror,
                                               scratch_threshold_used=threshold,
                                               auto_scratch_threshold_used=auto_threshold,
                                               auto_scratch_min_coverage_used=min_coverage,
                                               auto_scratch_coverage=round(auto_coverage, 6))
            state.use_scratch = opts.scratch == "on" or auto_coverage >= min_coverage

    @staticmethod
    def _guard_faces(state: ItemState, small: np.ndarray, prob: np.ndarray) -> np.ndarray:
        """Faces found on the scan (kept in the state for the face stage) keep only scratch-like mask parts
        (`imageops.mask.guard_faces`); what was removed is recorded in provenance."""
        from oldphoto.imageops.faces import detect_faces

        pixels = state.decoded.pixels
        h, w = pixels.shape[:2]
        state.scan_faces = detect_faces(to_uint(pixels, 8))
        sx, sy = small.shape[1] / w, small.shape[0] / h
        grey = None
        if state.scan_faces:      # the scan's grey level at the working size (shrunk first: bounded memory)
            grey = cv2.resize(pixels, small.shape[::-1], interpolation=cv2.INTER_AREA).mean(axis=2)
        guarded, removed = guard_faces(small, [scale_box(f.box, sx, sy) for f in state.scan_faces], grey=grey,
                                       prob=prob)
        state.provenance.parameters["face_guard"] = {
            "faces": len(state.scan_faces), "mask_fraction_removed": round(removed / small.size, 6),
            "min_length": FACE_GUARD_MIN_LENGTH, "max_thickness": FACE_GUARD_MAX_THICKNESS,
            "margin": FACE_GUARD_MARGIN, "min_contrast": mask_module.FACE_GUARD_MIN_CONTRAST,
            "min_prob": mask_module.FACE_GUARD_MIN_PROB}
        return guarded
