"""The global tone/colour regressor (oldphoto's addition; oldphoto.imageops.colour, oldphoto.networks.colour).

Data: ``samples`` (8,192) synthetic old photos made once at the start (``oldphoto.synthesis.synthesize``, the bench's own
degradation model, every kind: fading, sepia, grey, colour jitter, paper, noise, scratches...) from random
``crop``-pixel crops of the train photos; for each, the features of the degraded crop and 64 px area-downscaled
thumbnails of the degraded and the clean crop. The dataset is written to the run folder, so `--resume` reuses it.

Objective: the mean squared error between the clean thumbnail and the degraded thumbnail corrected by the
predicted per-channel gain and offset, i.e. the PSNR the correction gives (at the thumbnail scale, where the global
tone is all there is). The features are normalised by their training-set mean and std (buffers of the network).

Operating point, chosen on val (never test): the strength s in [0, 1] that the pipeline scales the predicted
correction by: the one of STRENGTHS with the highest mean PSNR of the corrected degraded val photos (256 px centre
crops, ``val_seeds`` degradations each, full resolution), ties to the smaller s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from oldphoto.imageops.colour import colour_features
from oldphoto.networks.colour import ColourNet, ColourNetConfig, apply_prediction, predict_correction

from .common import Trainer, TrainSettings, adam, count_parameters

THUMB = 64
STRENGTHS = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DATASET_NAME = "colour_dataset.npz"


@dataclass
class ColourStageConfig:
    net: ColourNetConfig = field(default_factory=ColourNetConfig)
    samples: int = 8192
    val_seeds: int = 3

    @classmethod
    def preset(cls, name: str) -> "ColourStageConfig":
        if name in ("small", "official"):
            return cls()
        if name == "tiny":
            return cls(ColourNetConfig.tiny(), samples=256, val_seeds=1)
        raise ValueError(f"unknown config {name!r}: choose tiny, small or official")


SETTINGS = {
    "tiny": dict(steps=20, batch_size=8, crop=64),
    "small": dict(steps=8000, batch_size=64, crop=256),
    "official": dict(steps=8000, batch_size=64, crop=256),
}


def thumbnail(img: np.ndarray) -> np.ndarray:
    return cv2.resize(np.asarray(img, np.float32), (THUMB, THUMB), interpolation=cv2.INTER_AREA)


def make_samples(source, n: int, crop: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n synthetic old photos (features, degraded and clean thumbnails) from random crops of source.clean."""
    from oldphoto import synthesis

    feats, deg, clean = [], [], []
    for _ in range(n):
        c = source.clean.crop(crop, rng)
        d = synthesis.synthesize(c, rng, source.textures)
        feats.append(colour_features(d.degraded))
        deg.append(thumbnail(d.degraded))
        clean.append(thumbnail(d.clean))
    return {"features": np.stack(feats), "degraded": np.stack(deg), "clean": np.stack(clean)}


class ColourTrainer(Trainer):
    stage = "colour"

    def __init__(self, settings: TrainSettings, out_dir: str | Path, cfg: ColourStageConfig, data, log=print,
                 data_note: dict | None = None):
        self.cfg, self.data = cfg, data
        self.data_note = data_note or {}
        self.operating_point: dict = {}
        super().__init__(settings, out_dir, log)

    def build(self) -> None:
        ds = self.cached_dataset(DATASET_NAME, f"{self.cfg.samples} synthetic old photos ({self.s.crop} px)",
                                 lambda: make_samples(self.data, self.cfg.samples, self.s.crop,
                                                      np.random.default_rng([self.s.seed, 77])))
        self.features = torch.from_numpy(ds["features"])
        self.degraded = torch.from_numpy(ds["degraded"])
        self.clean = torch.from_numpy(ds["clean"])
        self.net = ColourNet(self.cfg.net).to(self.device)
        self.net.set_normalisation(self.features.mean(0), self.features.std(0))
        self.modules["colour"] = self.net
        self.optimizers["G"] = adam(self.net.parameters(), self.s)

    def train_step(self, step: int) -> dict[str, float]:
        idx = torch.from_numpy(self.data_rng.integers(0, len(self.features), self.s.batch_size))
        pred = self.net(self.features[idx].to(self.device))
        corrected = apply_prediction(self.degraded[idx].to(self.device), pred)
        loss = (corrected - self.clean[idx].to(self.device)).pow(2).mean()
        self.optimise(loss, "G")
        return {"mse": loss.item()}

    @property
    def role(self) -> str:
        return "colour"

    def export(self, weights_dir: str | Path, fp16: bool = False, metrics: dict | None = None) -> list[Path]:
        from oldphoto.weights import save_weights

        prov = self.provenance(role=self.role, network_parameters=count_parameters(self.net), data=self.data_note,
                               samples=self.cfg.samples, objective="MSE of the corrected 64 px thumbnail",
                               metrics=metrics or {}, operating_point=self.operating_point)
        p = Path(weights_dir) / f"{self.role}.safetensors"
        save_weights(p, self.net.cpu(), "colour_mlp", self.cfg.net, provenance=prov, fp16=False)
        self.net.to(self.device)
        return [p]


def choose_strength(net: ColourNet, pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, dict]:
    """The operating point on held-out (degraded, clean) pairs: the strength with the best mean PSNR of the corrected
    degraded photo (ties to the smaller); returns it and the PSNR table."""
    from oldphoto.quality import psnr

    net.eval()
    table = {s: float(np.mean([psnr(c, predict_correction(net, d, s)[0].apply(d)) for d, c in pairs]))
             for s in STRENGTHS}
    best = max(STRENGTHS, key=lambda s: (round(table[s], 3), -s))
    return best, {f"psnr@{s:g}": round(v, 3) for s, v in table.items()}
