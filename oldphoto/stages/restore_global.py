"""Stage "global_restoration": VAE_A encoder → latent mapping → VAE_B decoder (ARCHITECTURE §0, §8).

Paths (models from the ModelSet):

- quality (no scratches): vae_a + mapping_quality + vae_b_quality;
- scratch: vae_a + mapping_scratch + vae_b_scratch; masked pixels are first set to white (hole synthesis, §8.2);
- scratch with --hr: vae_a + mapping_hr (multi-scale patch attention) + vae_b_scratch, the mask dilated by a
  7×7 square first (3 × 3×3, as the official HR mode).

Geometry: the networks need sides that are multiples of 4 (16 on the scratch paths). The official code resizes
to those multiples; oldphoto **pads** (reflect, bottom/right) and crops the result back, so the output has
exactly the input's size with no resampling (images smaller than 32 px are padded to 32). Large images run in overlapping tiles (`options.tile`, default 512,
overlap 32 + halo 32 on each side, see `oldphoto.imageops.geometry`), which bounds memory for any scan size and
keeps the non-local mapping's O((HW)²) attention per tile.

Postprocessing: the decoder output is min-max stretched over the whole image (one min and max across all
channels, §8.3), computed after the tiles are stitched and the padding is cropped.

Tone fidelity (`options.tone_match`, default on; **not in the official method**): after the stretch, the
scan's local tone and colour are transferred onto the restored image by a guided filter that uses the restored
image as the guide and ignores the scratched pixels (`oldphoto.imageops.tone.guided_tone_transfer`, sigma and
eps recorded in provenance ``parameters["tone_transfer"]``). It keeps the scan's tonality where a small network
is less faithful to it (and compensates instance-normalised VAEs, which cannot carry a region's mean colour at
all). `tone_match=False` (`--no-tone-match`) gives exactly the official stage-1
semantics (decoder output, min-max stretch, nothing else).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from oldphoto.imageops.geometry import pad_to_multiple, run_tiled
from oldphoto.imageops.tone import DEFAULT_EPS, DEFAULT_SIGMA, guided_tone_transfer
from oldphoto.stages.base import ItemState, Stage

HR_DILATION_KERNEL = 3
MAX_BATCH = 8                 # same-size items restored in one forward pass (batch())
MIN_NETWORK_SIDE = 32         # tiny inputs are padded up to this (instance norm needs > 1 latent pixel)
HR_DILATION_ITERATIONS = 3


def hole_fill(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """§8.2 step 3: scratched pixels become white."""
    out = pixels.copy()
    out[mask.astype(bool)] = 1.0
    return out


def dilate_mask(mask: np.ndarray) -> np.ndarray:
    """§8.2 step 2 (HR): 3×3 ones, 3 iterations (= one 7×7 square); does not grow from the image edges."""
    k = np.ones((HR_DILATION_KERNEL, HR_DILATION_KERNEL), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), k, iterations=HR_DILATION_ITERATIONS).astype(bool)


def minmax_stretch(y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """§8.3: (y − min)/max(max − min, 1e-5) over the whole tensor (not per channel), float32; written into
    `out` when given (`out=y` stretches in place, with no full-size temporary)."""
    lo, hi = float(y.min()), float(y.max())
    if out is None:
        return ((y - lo) / max(hi - lo, 1e-5)).astype(np.float32)
    np.subtract(y, lo, out=out)
    np.divide(out, max(hi - lo, 1e-5), out=out)
    return out


class GlobalRestorationStage(Stage):
    name = "global_restoration"

    def roles(self, use_scratch: bool) -> tuple[str, str, str]:
        if use_scratch:
            return "vae_a", self.options.scratch_mapping_role, "vae_b_scratch"
        return "vae_a", "mapping_quality", "vae_b_quality"

    def _mask_used(self, state: ItemState, use_scratch: bool) -> np.ndarray | None:
        """The defect mask the networks saw (dilated in HR mode), None on the quality path."""
        if not use_scratch:
            return None
        return dilate_mask(state.mask) if self.options.hr else np.asarray(state.mask, bool)

    def _prepare(self, state: ItemState) -> tuple[bool, int, np.ndarray]:
        """(use_scratch, multiple, 4×H′×W′ network input: image in [-1,1] + mask, padded). Built one channel
        at a time, so the only full-size temporaries are two single channels."""
        use_scratch = bool(state.use_scratch and state.mask is not None)
        pixels = state.decoded.pixels
        h, w = pixels.shape[:2]
        multiple = 16 if use_scratch else 4
        mask = self._mask_used(state, True) if use_scratch else np.zeros((h, w), bool)
        chw = None
        for c in range(4):
            if c < 3:
                ch = (hole_fill(pixels[..., c], mask) if use_scratch else pixels[..., c]) * 2.0 - 1.0
            else:
                ch = mask.astype(np.float32)
            padded = pad_to_multiple(ch, multiple, min_size=MIN_NETWORK_SIDE)
            if chw is None:
                chw = np.empty((4,) + padded.shape, np.float32)
            chw[c] = padded
            del ch, padded
        return use_scratch, multiple, chw

    def _net(self, use_scratch: bool):
        vae_a, mapping, vae_b = (self.models.get(r) for r in self.roles(use_scratch))

        def net(t: torch.Tensor) -> torch.Tensor:
            img, m = t[:, :3], t[:, 3:4]
            z = vae_a.encode(img)
            z = mapping(z, m) if use_scratch else mapping(z)
            return vae_b.decode(z)

        return net

    def _finish(self, state: ItemState, y: np.ndarray, use_scratch: bool) -> None:
        h, w = state.decoded.pixels.shape[:2]
        y = y[:, :h, :w]
        stretched = minmax_stretch(y, out=y).transpose(1, 2, 0)     # in place: y is this stage's own buffer
        if self.options.tone_match:
            mask = self._mask_used(state, use_scratch)
            restored = guided_tone_transfer(stretched, state.decoded.pixels, None if mask is None else ~mask,
                                            sigma=DEFAULT_SIGMA, eps=DEFAULT_EPS)
            state.provenance.parameters["tone_transfer"] = {
                "method": "guided filter (guide: restored grey; source: scan; scratched pixels excluded)",
                "sigma": DEFAULT_SIGMA, "eps": DEFAULT_EPS}
        else:
            restored = np.ascontiguousarray(stretched)
        state.restored = restored
        state.provenance.parameters["global_path"] = (
            ("scratch_hr" if self.options.hr else "scratch") if use_scratch else "quality")

    def process(self, state: ItemState) -> None:
        opts = self.options
        use_scratch = bool(state.use_scratch and state.mask is not None)
        with self.record(state, self.name, roles=self.roles(use_scratch)):
            use_scratch, multiple, chw = self._prepare(state)
            y = run_tiled(self._net(use_scratch), chw, out_channels=3, tile=opts.tile, overlap=opts.tile_overlap,
                          halo=opts.tile_halo, multiple=multiple, device=opts.device)
            del chw
            self._finish(state, y, use_scratch)

    def batch(self, states: list[ItemState]) -> list[ItemState]:
        """Items of the same (padded) size that fit in one tile share forward passes (not in HR scratch mode,
        whose patch selection looks at the first batch element only); the rest run one by one."""
        groups: dict[tuple, list[ItemState]] = {}
        for s in states:
            if s.failed or s.decoded is None:
                continue
            use_scratch = bool(s.use_scratch and s.mask is not None)
            h, w = s.decoded.pixels.shape[:2]
            if max(h, w) > self.options.tile or (use_scratch and self.options.hr):
                continue
            groups.setdefault((use_scratch, h, w), []).append(s)
        grouped = {id(s) for g in groups.values() if len(g) > 1 for s in g}
        for (use_scratch, _, _), group in groups.items():
            if len(group) > 1:
                self._run_group(group, use_scratch)
        for s in states:
            if id(s) not in grouped:
                self(s)
        return states

    def _run_group(self, group: list[ItemState], use_scratch: bool) -> None:
        import time

        from oldphoto.provenance import StageRecord

        t0 = time.perf_counter()
        try:
            x = torch.from_numpy(np.stack([self._prepare(s)[2] for s in group]))
            with torch.inference_mode():
                for i in range(0, len(group), MAX_BATCH):
                    y = self._net(use_scratch)(x[i:i + MAX_BATCH].to(self.options.device)).float().cpu().numpy()
                    for s, yi in zip(group[i:i + MAX_BATCH], y):
                        self._finish(s, yi, use_scratch)
            error = None
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        seconds = round((time.perf_counter() - t0) / len(group), 4)
        ckpts = [c for c in (self.checkpoint(r) for r in self.roles(use_scratch)) if c is not None]
        for s in group:
            rec = StageRecord(name=self.name, status="done", seconds=seconds, device=self.device,
                              checkpoints=list(ckpts))
            if error:
                s.fail(self.name, error)
                rec.status, rec.error = "failed", s.error
            s.provenance.stages.append(rec)
