"""The detail refiner (oldphoto.networks.refiner; oldphoto's addition, not in the official method).

Data: ``samples`` synthetic old photos made once at the start and written to the run folder (``--resume`` reuses
them): ``size``-pixel crops of the train photos (and, with a data folder, face-centred crops of the train face
photos, ``face_share`` of them), degraded by ``oldphoto.synthesis.synthesize`` (the bench's degradation model) and
restored by the pipeline's stage 1 with the weights in ``--weights-dir`` (default options, faces off, no refiner):
per sample the clean crop, the stage-1 output, the scan with the same global colour correction and the mask the
scratch path filled (zeros on the quality path), as uint8.

Objective: L1 + ``ssim_weight`` x (1 - SSIM) between the refined stage-1 output and the clean crop, on random
``crop``-pixel windows with random flips. With ``mask_noise`` > 0 that share of the windows gets a wrong mask
channel (``perturb_mask``: false fragments added, sometimes the true mask dropped), so the refiner cannot trust
the mask blindly: on real scans the detector marks content too, and a refiner trained only on right masks
ghosted such a photo (session 12).

Operating point, chosen on val (never test): the strength s in STRENGTHS that the pipeline scales the predicted
residual by: the highest mean PSNR over the val samples (made the same way from the val photos), ties to the
smaller s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from oldphoto.networks.refiner import Refiner, RefinerConfig, at_strength

from .common import Trainer, TrainSettings, adam, count_parameters, module_device
from .losses import ssim

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
POOL_MAX_SHORT = 320            # train photos shrunk to this short side, then cut at `size` (near the bench's scale)
VAL_SAMPLES = 62
DATASET_NAME = "refiner_dataset.npz"
CLEAN_DATASET_NAME = "refiner_clean_dataset.npz"
KEYS = ("clean", "restored", "scan_cc", "mask")


@dataclass
class RefinerStageConfig:
    net: RefinerConfig = field(default_factory=RefinerConfig)
    samples: int = 640
    size: int = 256                 # side of each synthetic photo (the bench's working size)
    face_share: float = 0.25        # share of the samples cut around a face (train face photos)
    ssim_weight: float = 0.5
    mask_noise: float = 0.0         # share of training windows whose mask channel is perturbed (`perturb_mask`)
    clean_share: float = 0.0        # clean (undegraded) samples, as a share of `samples`, added to the training set

    @classmethod
    def preset(cls, name: str) -> "RefinerStageConfig":
        if name in ("small", "official"):
            return cls()
        if name == "tiny":
            return cls(RefinerConfig.tiny(), samples=4, size=64, face_share=0.0)
        raise ValueError(f"unknown config {name!r}: choose tiny, small or official")


SETTINGS = {
    "tiny": dict(steps=10, batch_size=2, crop=32, lr=1e-3, beta1=0.9),
    "small": dict(steps=6000, batch_size=8, crop=128, lr=1e-3, beta1=0.9),
    "official": dict(steps=6000, batch_size=8, crop=128, lr=1e-3, beta1=0.9),
}


def stage1_restorer(weights_dir: str | Path) -> Any:
    """The pipeline (stage 1 only: no faces, no refiner, no review files) with the weights in `weights_dir`."""
    from oldphoto.pipeline import Restorer, RestoreOptions
    from oldphoto.weights_source import WeightsSource

    models = WeightsSource.from_options(weights_dir).load()
    scratch = "auto" if not models.missing(["scratch_unet", "mapping_scratch", "vae_b_scratch"]) else "off"
    return Restorer(models, RestoreOptions(scratch=scratch, faces=False, refine=False, review=False))


def restore_sample(restorer: Any, clean: np.ndarray, rng: np.random.Generator, textures: Any,
                   name: str = "sample", degrade: bool = True) -> dict[str, np.ndarray] | None:
    """One training sample: `clean` (H×W×3 uint8 or float) degraded (or, with `degrade` False, as it is: a clean
    scan) and restored by stage 1 (None if it failed)."""
    from oldphoto.imageops.colour import corrected_rgb
    from oldphoto.imageops.io import encode_image, to_uint
    from oldphoto.synthesis import synthesize, to_float

    if degrade:
        d = synthesize(clean, rng, textures)
        target, degraded = d.clean, d.degraded
    else:
        target = degraded = to_float(clean)
    st = restorer.run(f"refiner/{name}.png", encode_image(degraded), name=name)
    if st.failed or st.restored is None:
        return None
    scan = st.decoded.pixels
    restored = np.asarray(st.restored, np.float32)
    if restored.ndim == 2:
        restored = np.repeat(restored[..., None], 3, axis=2)
    mask = st.mask if (st.use_scratch and st.mask is not None) else np.zeros(scan.shape[:2], bool)
    return {"clean": to_uint(target, 8), "restored": to_uint(restored, 8),
            "scan_cc": to_uint(corrected_rgb(scan, st.provenance.parameters.get("colour_correction")), 8),
            "mask": mask.astype(np.uint8)}


def make_samples(restorer: Any, crops: Callable[[np.random.Generator], np.ndarray], n: int,
                 rng: np.random.Generator, textures: Any, log: Callable = print, degrade: bool = True
                 ) -> dict[str, np.ndarray]:
    """n samples (`restore_sample`; clean scans with `degrade` False) of the crops `crops(rng)` gives, stacked per
    key."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in KEYS}
    made = failed = 0
    while made < n:
        s = restore_sample(restorer, crops(rng), rng, textures, name=f"sample_{made}", degrade=degrade)
        if s is None:
            failed += 1
            if failed > max(10, n):     # stage 1 cannot run at all (e.g. no weights): say so instead of looping
                raise RuntimeError(f"stage 1 failed on {failed} of {made + failed} samples; are the stage-1 "
                                   "weights in --weights-dir?")
            continue
        for k in KEYS:
            out[k].append(s[k])
        made += 1
        if made % 25 == 0:
            log(f"[refiner] made {made}/{n} samples")
    return {k: np.stack(v) for k, v in out.items()}


def perturb_mask(mask: np.ndarray, rng: np.random.Generator, drop_prob: float = 0.3) -> np.ndarray:
    """A wrong copy of a uint8 0/1 mask, as a detector's mistakes on a real scan look: 1-6 false fragments
    (strokes 1-3 px wide and 4-30 % of the side long, or small blobs) added anywhere, and with ``drop_prob`` the
    true mask dropped first (missed scratches). The image the mask came with is left as it is."""
    import cv2

    h, w = mask.shape
    out = np.zeros_like(mask) if rng.random() < drop_prob else mask.copy()
    side = min(h, w)
    for _ in range(int(rng.integers(1, 7))):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.7:
            length, angle = rng.uniform(0.04, 0.3) * side, rng.uniform(0, np.pi)
            x2, y2 = int(round(x + length * np.cos(angle))), int(round(y + length * np.sin(angle)))
            cv2.line(out, (x, y), (x2, y2), 1, thickness=int(rng.integers(1, 4)))
        else:
            axes = (int(rng.integers(1, max(2, side // 20))), int(rng.integers(1, max(2, side // 20))))
            cv2.ellipse(out, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    return out


def to_batch(parts: dict[str, np.ndarray], device: Any) -> dict[str, torch.Tensor]:
    """uint8 N×H×W(×3) samples per key → float tensors N×C×H×W in [0, 1] (mask N×1×H×W)."""
    t = {k: torch.from_numpy(parts[k]).to(device).float() / (1.0 if k == "mask" else 255.0) for k in KEYS}
    return {k: (v[:, None] if k == "mask" else v.permute(0, 3, 1, 2)) for k, v in t.items()}


class RefinerTrainer(Trainer):
    stage = "refiner"

    def __init__(self, settings: TrainSettings, out_dir: str | Path, cfg: RefinerStageConfig, samples: Callable,
                 log=print, data_note: dict | None = None):
        self.cfg, self.samples = cfg, samples
        self.data_note = data_note or {}
        self.operating_point: dict = {}
        super().__init__(settings, out_dir, log)

    def build(self) -> None:
        self.ds = self.cached_dataset(
            DATASET_NAME, f"{self.cfg.samples} synthetic old photos restored by stage 1 ({self.cfg.size} px)",
            lambda: self.samples(self.cfg.samples, np.random.default_rng([self.s.seed, 91])))
        n_clean = round(self.cfg.samples * self.cfg.clean_share)
        if n_clean:
            extra = self.cached_dataset(
                CLEAN_DATASET_NAME, f"{n_clean} clean (undegraded) photos restored by stage 1 ({self.cfg.size} px)",
                lambda: self.samples(n_clean, np.random.default_rng([self.s.seed, 94]), degrade=False))
            self.ds = {k: np.concatenate([self.ds[k], extra[k]]) for k in KEYS}
        self.net = Refiner(self.cfg.net).to(self.device)
        self.modules["refiner"] = self.net
        self.optimizers["G"] = adam(self.net.parameters(), self.s)

    def batch(self) -> dict[str, torch.Tensor]:
        n, size = len(self.ds["clean"]), self.ds["clean"].shape[1]
        c = min(self.s.crop, size)
        rng = self.data_rng
        idx = rng.integers(0, n, self.s.batch_size)
        # the mask perturbation draws from its own generator (seeded by the step, so resumable), so the windows
        # are the same with or without it
        mask_rng = np.random.default_rng([self.s.seed, 93, self.step]) if self.cfg.mask_noise > 0 else None
        parts = {k: [] for k in KEYS}
        for i in idx:
            y, x = (int(v) for v in rng.integers(0, size - c + 1, 2))
            flip = bool(rng.random() < 0.5)
            for k in KEYS:
                a = self.ds[k][i, y:y + c, x:x + c]
                parts[k].append(a[:, ::-1] if flip else a)
            if mask_rng is not None and mask_rng.random() < self.cfg.mask_noise:
                parts["mask"][-1] = perturb_mask(np.ascontiguousarray(parts["mask"][-1]), mask_rng)
        return to_batch({k: np.ascontiguousarray(np.stack(v)) for k, v in parts.items()}, self.device)

    def train_step(self, step: int) -> dict[str, float]:
        b = self.batch()
        # on CPU the network runs under bf16 autocast (1.7x faster on AVX-512 BF16, measured 2026-12-02); the
        # residual is added to the fp32 stage-1 output and the loss is computed in fp32
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.device.type == "cpu"):
            out = self.net(b["restored"], b["scan_cc"], b["mask"])
        out = out.float()
        l1 = (out - b["clean"]).abs().mean()
        s = ssim(out, b["clean"])
        loss = l1 + self.cfg.ssim_weight * (1.0 - s)
        self.optimise(loss, "G")
        return {"l1": l1.item(), "ssim": s.item()}

    @property
    def role(self) -> str:
        return "refiner"

    def export(self, weights_dir: str | Path, fp16: bool = False, metrics: dict | None = None) -> list[Path]:
        from oldphoto.weights import save_weights

        prov = self.provenance(role=self.role, network_parameters=count_parameters(self.net), data=self.data_note,
                               samples=self.cfg.samples,
                               objective=f"L1 + {self.cfg.ssim_weight:g} x (1 - SSIM) of the refined stage-1 output",
                               metrics=metrics or {}, operating_point=self.operating_point)
        p = Path(weights_dir) / f"{self.role}.safetensors"
        save_weights(p, self.net.cpu(), "refiner", self.cfg.net, provenance=prov, fp16=False)
        self.net.to(self.device)
        return [p]


def refine(net: Refiner, restored: np.ndarray, scan_cc: np.ndarray, mask: np.ndarray, strength: float = 1.0
           ) -> np.ndarray:
    """The refined H×W×3 float image at `strength` (one untiled pass; the pipeline's stage runs it in strips)."""
    dev = module_device(net)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32)).permute(2, 0, 1)[None].to(dev)
    with torch.inference_mode():
        out = net(t(restored), t(scan_cc), torch.from_numpy(mask.astype(np.float32))[None, None].to(dev))
    return at_strength(restored, out[0].permute(1, 2, 0).cpu().numpy(), strength)


def choose_strength(net: Refiner, val: dict[str, np.ndarray]) -> tuple[float, dict[str, float]]:
    """The operating point on held-out samples: the strength with the best mean PSNR (ties to the smaller), and the
    PSNR/SSIM table (strength 0: stage 1 alone)."""
    from oldphoto.quality import psnr
    from oldphoto.quality import ssim as ssim_np

    net.eval()
    f = lambda k, i: val[k][i].astype(np.float32) / (1.0 if k == "mask" else 255.0)
    samples = []
    for i in range(len(val["clean"])):
        restored = f("restored", i)
        samples.append((f("clean", i), restored, refine(net, restored, f("scan_cc", i), f("mask", i))))
    table: dict[str, float] = {}
    for s in STRENGTHS:
        res = [(psnr(c, o), ssim_np(c, o)) for c, o in (
            (c, at_strength(r, full, s)) for c, r, full in samples)]
        table[f"psnr@{s:g}"] = round(float(np.mean([r[0] for r in res])), 3)
        table[f"ssim@{s:g}"] = round(float(np.mean([r[1] for r in res])), 4)
    best = max(STRENGTHS, key=lambda s: (table[f"psnr@{s:g}"], -s))
    return best, table


def crop_source(pool: Any, size: int, faces: list[np.ndarray], face_share: float
                ) -> Callable[[np.random.Generator], np.ndarray]:
    """What `make_samples` restores: a random `size` crop of a train photo, or (`face_share` of the time, when
    there are any) one of the face-centred crops `faces` (at `size`), flipped at random."""
    def crops(rng: np.random.Generator) -> np.ndarray:
        if faces and rng.random() < face_share:
            f = faces[int(rng.integers(len(faces)))]
            return f[:, ::-1].copy() if rng.random() < 0.5 else f
        return pool.crop(size, rng)
    return crops


def train_face_crops(data_dir: str | Path | None, size: int, log: Callable = print) -> list[np.ndarray]:
    """Face-centred `size` crops (imageops.faces.face_centred_crops) of the train split's face photos."""
    from oldphoto.data import dataset as odata
    from oldphoto.imageops.faces import face_centred_crops

    if data_dir is None:
        return []
    out: list[np.ndarray] = []
    for path in odata.held_out_face_photos(data_dir, "train"):
        try:
            out += face_centred_crops(odata.load_rgb(path, max_short_side=1024), size)
        except Exception as exc:       # one bad file must not stop training
            log(f"[refiner] skipping face photo {path.name}: {exc}")
    return out
