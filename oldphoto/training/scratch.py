"""The scratch detector: a U-Net on grey images predicting the structured-defect mask.

Objective (the paper, Wan et al. 2020): ``L = L_CE + beta * L_focal`` with class-balanced cross-entropy (each mask's
positive/negative proportion sets the class weights, computed on the fly) and focal loss gamma 0.2,
beta 10 (``losses.scratch_loss``). Trained on synthetic scratches/holes from ``oldphoto.synthesis``
(the masks of the blended defects are the labels); the paper then fine-tunes on real annotated scratches,
which we do not have. Quality is measured as pixel ROC AUC on a held-out synthetic set made from the
validation photos with a fixed seed.

Hard negatives (do no harm: the detector must not fire on texture). A fraction ``negative_prob`` of each batch
are photos with only unstructured degradation and ageing (noise, blur, JPEG, paper, grain; no local defect, so
an all-zero mask), and every crop is the most textured of ``texture_candidates`` random crops (highest mean
gradient magnitude: fabric, foliage, fences, hair, text, faces), so both scratches on texture and texture
without scratches are what the network sees most. The false-positive pixel rate on such negatives is measured
beside the ROC AUC.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from oldphoto.networks.unet import OFFICIAL_THRESHOLD, ScratchUNet, ScratchUNetConfig
from oldphoto.quality import detection_scores, gradient_energy, roc_auc

from . import losses as L
from .common import Trainer, TrainSettings, adam, count_parameters, module_device
from .datasets import BatchSource, to_grey


# `--synth-size 256`: defects synthesised on a canvas of the detector's working size (short side 256) and the training
# crop cut from it. Holes and scratch stamps scale with their canvas, so synthesised on a 128 px crop they are half
# the size the pipeline sees. Not the default: a run with it (2026-12-02, resume/) was better on the synthetic
# figures (detail kept aside) but took large bright flat areas of real photos (light suits, sky) for holes.


# `--large-scan-prob`: the pipeline shrinks every scan to the working size (short side 256, bilinear without antialias,
# as the official code) *after* it was degraded at its own resolution, where grain, JPEG blocks and the defects'
# edges are finer; the shipped detector, trained on defects drawn at the working size, lost ROC AUC on val photos
# degraded at 2x and 4x that size (0.964 -> 0.908 -> 0.883) and missed the dark scratches of the 512 px astronaut
# sample. Such crops are degraded at k x the crop's side (k uniform in [LARGE_SCAN_MIN, large_scan_max]) and
# shrunk the pipeline's way; their label is the shrunk mask's area coverage >= LARGE_SCAN_LABEL. Not in the shipped
# recipe: 25 min with half the crops so (session 10, from a candidate at val AUC 0.947) raised the val AUC on photos
# degraded at 512 px (0.907 -> 0.931) but lowered it at 256 px (0.947 -> 0.931) and the response to plain lines.
LARGE_SCAN_MIN = 1.5
LARGE_SCAN_MAX = 3.0
LARGE_SCAN_LABEL = 0.3


@dataclass
class ScratchStageConfig:
    net: ScratchUNetConfig = field(default_factory=ScratchUNetConfig)
    beta: float = L.FOCAL_BETA
    gamma: float = L.FOCAL_GAMMA
    negative_prob: float = 0.4        # share of crops without any local defect (all-zero mask)
    texture_candidates: int = 4       # each crop: the most textured of this many random crops
    synth_size: int | None = None     # defects synthesised on a canvas of this side, then the crop cut from it
    defect_mix: dict[str, Any] = field(default_factory=dict)  # SynthesisConfig overrides (dark scratches, holes, width)
    flat_negative_prob: float = 0.0   # share of negatives cut from the flattest candidate, brightened (sky, suits)
    large_scan_prob: float = 0.0      # share of crops degraded as a larger scan and shrunk as the pipeline does
    large_scan_max: float = LARGE_SCAN_MAX
    clean_negative_prob: float = 0.0  # share of negatives left undegraded: sharp, clean scans
    clean_positive_prob: float = 0.0  # share of defect crops whose defects are drawn on the undegraded crop
    distill: float = 0.0              # weight of the pull toward the starting network (`ScratchTrainer`, --init)
    freeze_bn: bool = False           # BatchNorm normalises with its running statistics and does not update them

    @classmethod
    def preset(cls, name: str) -> "ScratchStageConfig":
        if name == "official":
            return cls(ScratchUNetConfig.official())
        if name == "small":
            return cls(ScratchUNetConfig(depth=4, base_width=12))
        if name == "tiny":
            return cls(ScratchUNetConfig.tiny())
        raise ValueError(f"unknown config {name!r}: choose tiny, small or official")


TRAIN_MAX_SHORT = 384   # photos shrunk to this short side (then 0.6-1x jitter): the detector's working scale

SETTINGS = {
    "tiny": dict(steps=20, batch_size=2, crop=32),
    "small": dict(steps=3000, batch_size=4, crop=64),
    "official": dict(steps=200_000, batch_size=8, crop=256),
}


class ScratchTrainer(Trainer):
    stage = "scratch"

    def __init__(self, settings: TrainSettings, out_dir: str | Path, cfg: ScratchStageConfig, data: BatchSource,
                 log=print, data_note: dict | None = None):
        self.cfg, self.data = cfg, data
        self.data_note = data_note or {}
        m = cfg.net.size_multiple
        if settings.crop % m:
            raise ValueError(f"crop {settings.crop} must be a multiple of {m} for this U-Net")
        super().__init__(settings, out_dir, log)

    def build(self) -> None:
        self.net = ScratchUNet(self.cfg.net).to(self.device)
        self.modules["unet"] = self.net
        self.optimizers["G"] = adam(self.net.parameters(), self.s)
        self.teacher: ScratchUNet | None = None
        if self.cfg.distill > 0:
            # the starting network, frozen (`warm_start` sets it; checkpointed, so `--resume` keeps it)
            self.teacher = ScratchUNet(self.cfg.net).to(self.device).requires_grad_(False)
            self.modules["teacher"] = self.teacher

    def warm_start(self, path: str | Path) -> None:
        super().warm_start(path)
        if self.teacher is not None:
            self.teacher.load_state_dict(self.net.state_dict())

    def batch(self) -> dict[str, torch.Tensor]:
        b = self.draw(partial(_training_batch, data=self.data, n=self.s.batch_size, crop=self.s.crop, cfg=self.cfg))
        return {k: v.to(self.device, non_blocking=True) for k, v in b.items()}

    def train_step(self, step: int) -> dict[str, float]:
        if self.cfg.freeze_bn:
            freeze_batch_norm(self.net)
        b = self.batch()
        grey, mask = b["x"], b["mask"]
        with self.autocast():
            logits = self.net(grey)
        logits = logits.float()
        ce = L.class_balanced_bce(logits, mask)
        fl = L.focal(logits, mask, self.cfg.gamma)
        loss = ce + self.cfg.beta * fl
        out = {"ce": ce.item(), "focal": fl.item(), "pos_frac": mask.mean().item()}
        if self.teacher is not None:
            kl = self.distillation(grey, logits, ~b["local_only"])
            loss = loss + self.cfg.distill * kl
            out["distill"] = kl.item()
        self.optimise(loss, "G")
        return {**out, "loss": loss.item()}

    @torch.no_grad()
    def _teacher_logits(self, grey: torch.Tensor) -> torch.Tensor:
        self.teacher.eval()
        with self.autocast():
            return self.teacher(grey).float()

    def distillation(self, grey: torch.Tensor, logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """`--distill`: the mean per-pixel KL divergence from the starting network's probabilities to the
        network's, over the samples in `keep` (all but those whose defects lie on an undegraded crop, where the
        starting network is known to be wrong): the labels teach the new cases while the pull keeps the answers
        elsewhere near the starting network's. It does not stop a small-batch fine-tune's drift from BatchNorm
        statistics (session 19: dark scratches on val 0.82 -> 0.69 at step 1,200 with `--distill 10`); that is
        `--freeze-bn`."""
        if not bool(keep.any()):
            return logits.new_zeros(())
        t = torch.sigmoid(self._teacher_logits(grey[keep]))
        s = logits[keep]
        bce = F.binary_cross_entropy_with_logits(s, t)
        entropy = F.binary_cross_entropy(t, t)     # the minimum of bce: the KL is bce minus the teacher's entropy
        return (bce - entropy).clamp_min(0.0)

    def export(self, weights_dir: str | Path, fp16: bool = True, metrics: dict | None = None) -> list[Path]:
        from oldphoto.weights import save_weights

        prov = self.provenance(role="scratch_unet", network_parameters=count_parameters(self.net),
                               data=self.data_note, objective="class-balanced CE + 10*focal(gamma 0.2)",
                               threshold=OFFICIAL_THRESHOLD, metrics=metrics or {})
        p = Path(weights_dir) / "scratch_unet.safetensors"
        save_weights(p, self.net.cpu(), "scratch_unet", self.cfg.net, provenance=prov, fp16=fp16)
        self.net.to(self.device)
        return [p]


def freeze_batch_norm(net: torch.nn.Module) -> None:
    """`--freeze-bn`: every BatchNorm layer of `net` in eval mode (it normalises with its running statistics and no
    longer updates them; its scale and shift still train). For fine-tuning with small batches: a CPU fine-tune with
    4 crops a batch re-estimated the statistics of the detector trained with 32 on a GPU, and its probabilities fell
    everywhere (session 19, val probe: dark scratches 0.82 -> 0.69); with the starting network's statistics put back
    the same weights answered 0.77."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def brighten(img: np.ndarray, gamma: float) -> np.ndarray:
    """``img`` (uint8) through the power curve ``x ** gamma`` (gamma < 1 lifts the mid-tones toward white without
    clipping, so a flat area stays a little textured): the overexposed skies, light clothes and paper margins of
    real photos."""
    lut = np.round(255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)
    return lut[np.asarray(img, np.uint8)]


def _training_batch(rng: np.random.Generator, *, data: BatchSource, n: int, crop: int,
                    cfg: ScratchStageConfig) -> dict[str, torch.Tensor]:
    return detector_batch(data, n, crop, rng, cfg.negative_prob, cfg.texture_candidates, cfg.synth_size,
                          cfg.defect_mix, cfg.flat_negative_prob, cfg.large_scan_prob, cfg.large_scan_max,
                          cfg.clean_negative_prob, cfg.clean_positive_prob)


FLAT_GAMMA = (0.3, 1.0)   # flat negatives: brightening power drawn from this range


def detector_batch(data: BatchSource, n: int, crop: int, rng: np.random.Generator, negative_prob: float,
                   texture_candidates: int = 1, synth_size: int | None = None,
                   defect_mix: dict[str, Any] | None = None,
                   flat_negative_prob: float = 0.0, large_scan_prob: float = 0.0,
                   large_scan_max: float = LARGE_SCAN_MAX, clean_negative_prob: float = 0.0,
                   clean_positive_prob: float = 0.0) -> dict[str, torch.Tensor]:
    """Detector training/eval batch: ``x`` grey N×1×H×W in [-1, 1], ``mask`` N×1×H×W, ``negative`` N bools,
    ``local_only`` N bools (the clean positives below).

    Each canvas (``synth_size``, at least ``crop``; default ``crop``) is the most textured of ``texture_candidates``
    random crops; with probability ``negative_prob`` it gets only unstructured degradation (mask all zero), else
    the full synthesis (local defects in the mask; ``defect_mix`` overrides its SynthesisConfig, e.g. more dark
    scratches or holes); a random ``crop``×``crop`` window of it is the sample. A share ``flat_negative_prob`` of
    the negatives takes the *least* textured candidate instead, brightened (``brighten``, gamma in ``FLAT_GAMMA``):
    large bright flat areas without a defect, which a detector trained on textured crops alone takes for holes.
    A share ``large_scan_prob`` of the samples is degraded as a larger scan, on a canvas of k x ``crop``, and
    shrunk to the crop the way the pipeline shrinks a scan (``shrink_like_pipeline``). A share
    ``clean_negative_prob`` of the negatives is the clean crop itself, not degraded at all: a sharp, well-kept scan,
    on which the detector trained with degraded negatives only marked 0.2-13 % of the pixels of clean val photos.
    A share ``clean_positive_prob`` of the other crops gets its local defects drawn on the undegraded crop (no noise,
    blur, JPEG, ageing, grain): a well-kept scan with a scratch on it, which the detector trained with clean
    negatives alone learnt to pass over (median probability on such scratches of val photos 0.31 dark / 0.43 bright,
    against 0.82 / 0.87 on degraded photos). With ``flat_negative_prob``, ``large_scan_prob``,
    ``clean_negative_prob`` and ``clean_positive_prob`` 0 the batches are exactly those of earlier versions (no extra
    random draws)."""
    from .datasets import mask_tensor, to_tensor

    xs, ms, neg, local = [], [], [], []
    for _ in range(n):
        canvas = max(crop, synth_size or crop)
        large = large_scan_prob > 0 and bool(rng.random() < large_scan_prob)
        if large:
            canvas = round(crop * float(rng.uniform(LARGE_SCAN_MIN, max(LARGE_SCAN_MIN, large_scan_max))))
        cands = [data.clean.crop(canvas, rng) for _ in range(max(1, texture_candidates))]
        negative = bool(rng.random() < negative_prob)
        flat = negative and flat_negative_prob > 0 and bool(rng.random() < flat_negative_prob)
        if flat:
            clean = brighten(min(cands, key=gradient_energy), float(rng.uniform(*FLAT_GAMMA)))
        else:
            clean = max(cands, key=gradient_energy) if len(cands) > 1 else cands[0]
        p, local_only = _degrade(clean, rng, data.textures, negative, defect_mix, clean_negative_prob,
                                 clean_positive_prob)
        if large:
            x, m = shrink_like_pipeline(to_tensor(p.degraded), p.mask, crop)
        else:
            y0, x0 = (int(rng.integers(0, canvas - crop + 1)) for _ in range(2))
            window = (slice(y0, y0 + crop), slice(x0, x0 + crop))
            x = to_tensor(np.ascontiguousarray(p.degraded[window]))
            m = mask_tensor(np.ascontiguousarray(p.mask[window]))
        xs.append(x)
        ms.append(m)
        neg.append(negative)
        local.append(local_only)
    return {"x": to_grey(torch.stack(xs)), "mask": torch.stack(ms), "negative": torch.tensor(neg),
            "local_only": torch.tensor(local)}


def _degrade(clean: np.ndarray, rng: np.random.Generator, textures: Any, negative: bool,
             defect_mix: dict[str, Any] | None, clean_negative_prob: float,
             clean_positive_prob: float) -> tuple[Any, bool]:
    """One detector sample's (degraded, clean, mask) Pair and whether its defects lie on the undegraded crop: a
    negative left undegraded (``clean_negative_prob``) or degraded without local defects; a positive with the full
    synthesis, or its local defects alone on the undegraded crop (``clean_positive_prob``; flag True). Draws from
    ``rng`` only for the options that are not 0."""
    from oldphoto.synthesis import LOCAL_DEFECTS_ONLY

    from .datasets import Pair, synthesize_pair

    if negative and clean_negative_prob > 0 and bool(rng.random() < clean_negative_prob):
        return Pair(np.asarray(clean, np.uint8), clean, np.zeros(clean.shape[:2], np.float32)), False
    local_only = not negative and clean_positive_prob > 0 and bool(rng.random() < clean_positive_prob)
    mix = {**(defect_mix or {}), **LOCAL_DEFECTS_ONLY} if local_only else defect_mix
    return synthesize_pair(clean, rng, textures, structured=not negative, overrides=mix), local_only


def shrink_like_pipeline(x: torch.Tensor, mask: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A degraded C×H×W image shrunk to size×size as the detection stage shrinks a scan (its own
    `shrink_to_working_size`), and its H×W mask shrunk by area: 1×size×size labels where the coverage is >=
    LARGE_SCAN_LABEL."""
    import cv2

    from oldphoto.stages.scratch import shrink_to_working_size

    small = shrink_to_working_size(x[None], (size, size))[0]
    cover = cv2.resize(np.asarray(mask, np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return small, torch.from_numpy((cover >= LARGE_SCAN_LABEL).astype(np.float32))[None]


def eval_set(data: BatchSource, n: int, crop: int, seed: int = 1234,
             negative_prob: float = 0.0, synth_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed held-out synthetic set (grey images, masks) from ``data``'s photos (``negative_prob`` of them
    textured crops without local defects; defects synthesised on ``synth_size`` canvases as in training)."""
    rng = np.random.default_rng(seed)
    if negative_prob > 0:
        b = detector_batch(data, n, crop, rng, negative_prob, texture_candidates=4, synth_size=synth_size)
        return b["x"], b["mask"]
    b = data.pairs(n, crop, rng, structured=True)
    return to_grey(b["x"]), b["mask"]


@torch.no_grad()
def evaluate(net: ScratchUNet, grey: torch.Tensor, mask: torch.Tensor, threshold: float = OFFICIAL_THRESHOLD,
             batch: int = 4) -> dict[str, float]:
    """Pixel ROC AUC, and precision/recall/IoU at the official threshold (0.4), in eval mode."""
    net.eval()
    dev = module_device(net)
    probs = torch.cat([torch.sigmoid(net(grey[i:i + batch].to(dev))).cpu() for i in range(0, len(grey), batch)])
    clean_crop = (mask.reshape(len(mask), -1).amax(dim=1) == 0).numpy()
    p, m = probs.numpy().ravel(), mask.numpy().ravel() > 0.5
    at = detection_scores(p >= threshold, m)
    out = {"roc_auc": roc_auc(p, m), f"precision@{threshold}": at["precision"], f"recall@{threshold}": at["recall"],
           f"iou@{threshold}": at["iou"], "positive_fraction": float(m.mean()), "pixels": int(m.size)}
    if clean_crop.any():   # crops without any local defect: every detected pixel is a false positive
        out[f"fp_rate_clean@{threshold}"] = float((probs.numpy()[clean_crop] >= threshold).mean())
        out["clean_crops"] = int(clean_crop.sum())
    return out
