"""Stage "global_restoration": VAE_A encoder → latent mapping → VAE_B decoder (ARCHITECTURE §0, §8).

Paths (models from the ModelSet):

- quality (no scratches): vae_a + mapping_quality + vae_b_quality;
- scratch: vae_a + mapping_scratch + vae_b_scratch; masked pixels are first set to white (hole synthesis, §8.2);
- scratch with --hr: vae_a + mapping_hr (multi-scale patch attention) + vae_b_scratch, the mask dilated by a
  7×7 square first (3 × 3×3, as the official HR mode).

Geometry: the networks need sides that are multiples of 4 (16 on the scratch paths). The official code resizes
to those multiples; oldphoto **pads** (reflect, bottom/right) and crops the result back, so the output has
exactly the input's size with no resampling (images smaller than 32 px are padded to 32).

How the networks run (`plan`, recorded in provenance ``parameters["global_tiling"]``):

- **untiled**, the official semantics, whenever the estimated memory of the largest activation times
  `LIVE_ACTIVATIONS` fits `options.untiled_max_mb` (measured per network on a small probe, `probe_network`)
  and, on the scratch paths, the image has at most `options.tile`² pixels: up to there the nonlocal
  attention spans the whole image, as in the official code (default 512² px = 16,384 latent positions, where
  the official (N×N) matrices already take 1 GiB each);
- **tiled, exact** on the quality path above the budget: VAE_A's encoder, the mapping and VAE_B's decoder run
  one after the other on the whole latent (kept in memory, 1/16 of the pixels), each in tiles as large as
  the budget allows, with a halo equal to the network's receptive radius and instance norms that use the
  statistics of the whole image (`ImageWideNormStats`: one extra pass over the tiles per norm layer), so
  the output equals the untiled one (≤ 1e-3, tested); slower (a pass per norm layer), never out of memory;
- **tiled, per tile** on the scratch paths above `options.tile`²: the whole stack per tile of `options.tile`
  px with a `tile_halo` context and `tile_overlap` blending, attention and statistics within each tile
  (the official code cannot run there at all: its attention matrices need (HW/16)² floats).
Postprocessing: the decoder output is min-max stretched over the whole image (one min and max across all
channels, §8.3), computed after the tiles are stitched and the padding is cropped.

Tone fidelity (`options.tone_match`, default on; **not in the official method**): after the stretch, the
scan's local tone and colour are transferred onto the restored image by a guided filter that uses the restored
image as the guide and ignores the scratched pixels (`oldphoto.imageops.tone.guided_tone_transfer`, sigma and
eps recorded in provenance ``parameters["tone_transfer"]``). It keeps the scan's tonality where a small network
is less faithful to it (and compensates instance-normalised VAEs, which cannot carry a region's mean colour at
all). Global tone/colour correction (`options.colour_correct`, default on with tone matching; **not in the official
method**; oldphoto.imageops.colour): when the weights have the `colour` regressor, a per-channel gain and offset
predicted from the scan's global statistics (fading, yellowing, colour casts), scaled by its strength (the
file's operating point, chosen on val, or `options.colour_strength`), is applied after the tone transfer; a
grey scan gets one gain and offset for all channels; provenance ``parameters["colour_correction"]`` records
the numbers. Structure return (`options.structure_return`, default on with tone matching; **not in the official
method**; oldphoto.imageops.structure): on a scan whose noise floor is low, the transfer's guide takes the scan's
own structure back where stage 1 removed far more band-pass energy than the scan's noise (real texture a denoiser
took for noise), never inside the mask or where the detector suspects a defect (`ItemState.suspect`); provenance
``parameters["returned_structure"]`` records the floor and the photo's strength.
`tone_match=False` (`--no-tone-match`) gives exactly the official stage-1
semantics (decoder output, min-max stretch, nothing else).
"""
from __future__ import annotations

import dataclasses
import math
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from oldphoto.imageops.colour import corrected_rgb, is_grey_features
from oldphoto.imageops.geometry import NetworkProbe, pad_to_multiple, probe_network, run_tiled
from oldphoto.imageops.structure import DEFAULT_STRUCTURE_RETURN, ReturnedGuide, noise_floor, photo_strength
from oldphoto.imageops.tone import DEFAULT_EPS, DEFAULT_SIGMA, guided_tone_transfer
from oldphoto.networks.blocks import instance_norms
from oldphoto.networks.refiner import at_strength
from oldphoto.networks.colour import predict_correction
from oldphoto.provenance import StageName
from oldphoto.stages.base import ItemState, Stage

HR_DILATION_KERNEL = 3
LIVE_ACTIVATIONS = 4          # untiled memory estimate: this many of the largest activation at once
MIN_NETWORK_SIDE = 32         # tiny inputs are padded up to this (instance norm needs > 1 latent pixel)
HR_DILATION_ITERATIONS = 3
REFINER_TILE = 1024          # the detail refiner runs in tiles of this side (plus its receptive radius as halo)


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
    steps = (StageName.GLOBAL_RESTORATION,)

    def roles(self, use_scratch: bool) -> tuple[str, str, str]:
        """The three networks of the path: VAE_A, the mapping, VAE_B."""
        if use_scratch:
            return "vae_a", self.options.scratch_mapping_role, "vae_b_scratch"
        return "vae_a", "mapping_quality", "vae_b_quality"

    def recorded_roles(self, use_scratch: bool) -> tuple[str, ...]:
        """The checkpoints the step records: the path's networks and, when they run, the colour regressor and the
        detail refiner."""
        return (self.roles(use_scratch) + (("colour",) if self._colour_on() else ())
                + (("refiner",) if self._refine_on() else ()))

    def _refine_on(self) -> bool:
        """The detail refiner runs: the options use it, tone matching is on (it was trained on tone-matched,
        colour-corrected stage-1 output) and the weights have it."""
        return self.options.tone_match and "refiner" in self.options.optional_roles() and self.models.has("refiner")

    def _refine(self, state: ItemState, restored: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """The detail refiner (oldphoto.networks.refiner) on `restored` (in place), beside the scan with the same
        global colour correction; its residual scaled by the weights' strength (chosen on val). Bounded memory:
        strips of REFINER_TILE rows, each built with a halo of the refiner's receptive radius and run in tiles of
        REFINER_TILE px (`run_tiled`), so the extra memory grows with the image's width, not its area, and the
        result equals one untiled pass. Recorded in provenance ``parameters["refiner"]``."""
        net = self.models.get("refiner")
        strength = self.options.refine_strength
        if strength is None:
            strength = float(self.models.operating_point("refiner").get("strength", 1.0))
        state.provenance.parameters["refiner"] = {
            "method": "residual U-Net on the stage-1 output beside the colour-corrected scan", "strength": strength}
        if strength <= 0:
            return restored
        h = restored.shape[0]
        m_ = net.cfg.size_multiple
        halo = -(-net.cfg.receptive_radius // m_) * m_
        step = max(halo, REFINER_TILE // m_ * m_)
        scan, cc = state.decoded.pixels, state.provenance.parameters.get("colour_correction")
        saved = None                    # the rows above the strip as they were before the last strip was written
        for y0 in range(0, h, step):
            y1, a, b = min(h, y0 + step), max(0, y0 - halo), min(h, y0 + step + halo)
            rest = restored[a:b].copy()
            if saved is not None:
                rest[:y0 - a] = saved
            saved = restored[max(0, y1 - halo):y1].copy()
            strip = np.concatenate([rest, corrected_rgb(scan[a:b], cc),
                                    np.zeros((b - a, rest.shape[1], 1), np.float32) if mask is None
                                    else mask[a:b, :, None].astype(np.float32)], axis=2)
            x = np.ascontiguousarray(pad_to_multiple(strip, m_).transpose(2, 0, 1))
            del strip
            out = run_tiled(lambda t: net(t[:, :3], t[:, 3:6], t[:, 6:7]), x, out_channels=3, tile=REFINER_TILE,
                            overlap=0, halo=halo, multiple=m_, device=self.options.device)
            del x
            out = out[:, y0 - a:y1 - a, :rest.shape[1]].transpose(1, 2, 0)
            restored[y0:y1] = at_strength(rest[y0 - a:y1 - a], out, strength)
        return restored

    def _colour_on(self) -> bool:
        """The global tone/colour correction runs: the options use it (`RestoreOptions.optional_roles`) and the
        weights have it."""
        return "colour" in self.options.optional_roles() and self.models.has("colour")

    def _colour_correct(self, state: ItemState, restored: np.ndarray) -> None:
        """The global tone/colour correction (module doc) of `restored`, in place, recorded in provenance."""
        strength = self.options.colour_strength
        if strength is None:
            strength = float(self.models.operating_point("colour").get("strength", 1.0))
        affine, features = predict_correction(self.models.get("colour"), state.decoded.pixels, strength)
        affine.apply(restored, out=restored)
        state.provenance.parameters["colour_correction"] = {
            "method": "per-channel gain and offset predicted from the scan's global statistics", "strength": strength,
            "grey_scan": is_grey_features(features), **affine.to_dict()}

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

    def _nets(self, use_scratch: bool):
        return tuple(self.models.get(r) for r in self.roles(use_scratch))

    def _net(self, use_scratch: bool):
        vae_a, mapping, vae_b = self._nets(use_scratch)

        def net(t: torch.Tensor) -> torch.Tensor:
            img, m = t[:, :3], t[:, 3:4]
            z = vae_a.encode(img)
            z = mapping(z, m) if use_scratch else mapping(z)
            return vae_b.decode(z)

        return net

    def _probes(self, use_scratch: bool) -> tuple[NetworkProbe, NetworkProbe, NetworkProbe]:
        """Receptive radius (latent pixels) and largest activation (bytes per image pixel) of the encoder,
        the mapping and the decoder, measured once per network set on a 64 px probe."""
        cache = self.__dict__.setdefault("_probe_cache", {})
        nets = self._nets(use_scratch)
        key = tuple(id(n) for n in nets)
        if key not in cache:
            vae_a, mapping, vae_b = nets
            dev = next(vae_a.parameters()).device
            s = vae_a.cfg.scale
            img = torch.zeros(1, 3, 64, 64, device=dev)
            z = torch.zeros(1, vae_a.cfg.channels, 64 // s, 64 // s, device=dev)
            mask = torch.zeros(1, 1, 64, 64, device=dev)
            mask[..., 20:40, 30:34] = 1.0   # the scratch mappings' attention runs only with a defect
            area = float(s * s)
            enc = probe_network(lambda t: vae_a.encode(F.pixel_shuffle(t, s)), F.pixel_unshuffle(img, s), [vae_a])
            mp = probe_network(lambda t: mapping(t, mask), z, [mapping])
            dec = probe_network(vae_b.decode, z, [vae_b])
            cache[key] = (NetworkProbe(enc.radius, enc.bytes_per_pixel / area),
                          NetworkProbe(mp.radius, mp.bytes_per_pixel / area),
                          NetworkProbe(dec.radius, dec.bytes_per_pixel / area))
        return cache[key]

    def plan(self, h: int, w: int, use_scratch: bool) -> dict:
        """How the networks run on an H×W (padded) input: {"mode": "untiled" | "tiled", ...} (module doc)."""
        opts = self.options
        probes = self._probes(use_scratch)
        per_pixel = LIVE_ACTIVATIONS * max(p.bytes_per_pixel for p in probes)
        budget = opts.untiled_max_mb * 2**20
        fits = per_pixel * h * w <= budget
        if use_scratch:
            if fits and h * w <= opts.tile ** 2:
                return {"mode": "untiled"}
            return {"mode": "tiled", "tile": opts.tile, "halo": opts.tile_halo, "overlap": opts.tile_overlap,
                    "statistics": "per tile", "attention": "per tile"}
        if fits:
            return {"mode": "untiled"}
        vae_a, mapping, vae_b = self._nets(use_scratch)
        halos = [p.radius + 1 for p in probes]
        # as large as the budget allows, but the core of a tile at least as wide as its halo
        tile = max(int(math.sqrt(budget / per_pixel)), 3 * max(halos) * vae_a.cfg.scale) // 16 * 16
        passes = {role: len(instance_norms(net)) + 1
                  for role, net in zip(self.roles(False), (vae_a.encoder, mapping, vae_b.decoder))}
        return {"mode": "tiled", "tile": tile, "halo_latent": halos, "statistics": "image-wide", "passes": passes}

    def _precision(self):
        """The networks' arithmetic: float32, or bfloat16 autocast with `options.precision == "bf16"`: about 1.8×
        faster convolutions on CPUs with AVX512-BF16 and on GPUs, but not the official result (seeded official-shape
        networks, 1.5 MP: mean 7.1/255, max 96/255 from float32, `benchmarks/bench_official_speed.py --bf16`)."""
        device = torch.device(self.options.device).type
        return torch.autocast(device, dtype=torch.bfloat16, enabled=self.options.precision == "bf16")

    def _run(self, chw: np.ndarray, use_scratch: bool, multiple: int, plan: dict) -> np.ndarray:
        """The decoder output (3×H′×W′) for the network input `chw`, as `plan` says."""
        with self._precision():
            return self._run_fp(chw, use_scratch, multiple, plan)

    def _run_fp(self, chw: np.ndarray, use_scratch: bool, multiple: int, plan: dict) -> np.ndarray:
        opts = self.options
        if plan["mode"] == "untiled" or use_scratch:
            tile = max(chw.shape[1:]) if plan["mode"] == "untiled" else plan["tile"]
            return run_tiled(self._net(use_scratch), chw, out_channels=3, tile=tile, overlap=opts.tile_overlap,
                             halo=opts.tile_halo, multiple=multiple, device=opts.device)
        # quality path, exact tiles: encoder, mapping, decoder one after the other on latent-sized arrays
        # (images travel as pixel_unshuffle'd latent-sized arrays, so every network is tiled on the latent grid)
        vae_a, mapping, vae_b = self._nets(False)
        s = vae_a.cfg.scale
        tile = max(1, plan["tile"] // s)
        r_enc, r_map, r_dec = plan["halo_latent"]
        packed = F.pixel_unshuffle(torch.from_numpy(chw[None, :3]), s)[0].numpy()
        common = dict(tile=tile, overlap=0, multiple=max(1, multiple // s), device=opts.device)
        z = run_tiled(lambda t: vae_a.encode(F.pixel_shuffle(t, s)), packed, out_channels=vae_a.cfg.channels,
                      halo=r_enc, norms=instance_norms(vae_a.encoder), **common)
        del packed
        z = run_tiled(mapping, z, out_channels=mapping.cfg.latent_channels, halo=r_map,
                      norms=instance_norms(mapping), **common)
        y = run_tiled(lambda t: F.pixel_unshuffle(vae_b.decode(t), s), z, out_channels=3 * s * s, halo=r_dec,
                      norms=instance_norms(vae_b.decoder), **common)
        return F.pixel_shuffle(torch.from_numpy(y[None]), s)[0].numpy()

    def _finish(self, state: ItemState, y: np.ndarray, use_scratch: bool) -> None:
        h, w = state.decoded.pixels.shape[:2]
        y = y[:, :h, :w]
        stretched = minmax_stretch(y, out=y).transpose(1, 2, 0)     # in place: y is this stage's own buffer
        if self.options.tone_match:
            mask = self._mask_used(state, use_scratch)
            valid = None if mask is None else ~mask
            restored = guided_tone_transfer(stretched, state.decoded.pixels, valid, sigma=DEFAULT_SIGMA,
                                            eps=DEFAULT_EPS, guide=self._structure_guide(state, stretched, valid))
            del valid
            state.provenance.parameters["tone_transfer"] = {
                "method": "guided filter (guide: restored grey, with the scan's structure where returned_structure "
                          "gave it back; source: scan; scratched pixels excluded)",
                "sigma": DEFAULT_SIGMA, "eps": DEFAULT_EPS}
            if self._colour_on():
                self._colour_correct(state, restored)
            if self._refine_on():
                restored = self._refine(state, restored, mask)
        else:
            restored = np.ascontiguousarray(stretched)
        state.restored = restored
        state.provenance.parameters["global_path"] = (
            ("scratch_hr" if self.options.hr else "scratch") if use_scratch else "quality")

    def _structure_guide(self, state: ItemState, restored: np.ndarray,
                         valid: np.ndarray | None) -> ReturnedGuide | None:
        """The tone transfer's guide with the scan's structure returned (`oldphoto.imageops.structure`), None
        when `options.structure_return` is off or the scan's noise floor leaves it no strength."""
        if not self.options.returns_structure:
            return None
        scan = state.decoded.pixels
        cfg = DEFAULT_STRUCTURE_RETURN
        floor = noise_floor(scan, cfg)
        strength = photo_strength(floor, cfg)
        state.provenance.parameters["returned_structure"] = {
            "noise_floor_levels": round(floor * 255.0, 3), "strength": round(strength, 3),
            **{k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}}
        if strength <= 0:
            return None
        if state.suspect is not None:   # possible defects the mask left out do not come back sharp
            valid = ~state.suspect if valid is None else valid & ~state.suspect
        return ReturnedGuide(restored, scan, valid, floor, strength, cfg)

    def process(self, state: ItemState) -> None:
        use_scratch = bool(state.use_scratch and state.mask is not None)
        with self.step(state, self.name, roles=self.recorded_roles(use_scratch)):
            use_scratch, multiple, chw = self._prepare(state)
            plan = self.plan(chw.shape[1], chw.shape[2], use_scratch)
            y = self._run(chw, use_scratch, multiple, plan)
            del chw
            state.provenance.parameters["global_tiling"] = {**plan, "precision": self.options.precision}
            self._finish(state, y, use_scratch)

    def batch(self, states: list[ItemState]) -> list[ItemState]:
        """Items of the same padded size on the same path that run untiled share forward passes of up to
        `options.global_batch` items (not in HR scratch mode, whose patch selection looks at the first batch
        element only); the rest run one by one."""
        groups: dict[tuple, list[tuple[ItemState, np.ndarray, int]]] = {}
        single = []
        for s in states:
            if s.failed or s.decoded is None:
                single.append(s)
                continue
            try:
                use_scratch, multiple, chw = self._prepare(s)
                plan = self.plan(chw.shape[1], chw.shape[2], use_scratch)
            except Exception:
                single.append(s)          # the single-item path records the failure
                continue
            if plan["mode"] != "untiled" or (use_scratch and self.options.hr) or self.options.global_batch < 2:
                single.append(s)
                continue
            groups.setdefault((use_scratch, chw.shape), []).append((s, chw, multiple))
        for (use_scratch, _), group in groups.items():
            if len(group) == 1:
                single.append(group[0][0])
                continue
            for i in range(0, len(group), self.options.global_batch):
                self._run_group(group[i:i + self.options.global_batch], use_scratch)
        for s in single:
            self(s)
        return states

    def _run_group(self, group: list[tuple[ItemState, np.ndarray, int]], use_scratch: bool) -> None:
        t0 = time.perf_counter()
        try:
            x = torch.from_numpy(np.stack([chw for _, chw, _ in group])).to(self.options.device)
            with torch.inference_mode(), self._precision():
                y = self._net(use_scratch)(x).float().cpu().numpy()
            del x
            for (s, _, _), yi in zip(group, y):
                s.provenance.parameters["global_tiling"] = {"mode": "untiled", "batch": len(group),
                                                            "precision": self.options.precision}
                self._finish(s, yi, use_scratch)
            error = None
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        seconds = (time.perf_counter() - t0) / len(group)
        self.record_group([s for s, _, _ in group], self.name, [seconds] * len(group), error,
                          roles=self.recorded_roles(use_scratch))
