"""The global tone/colour regressor (oldphoto's addition, not in the official method; see
oldphoto.imageops.colour): an MLP from the scan's global statistics to a gain and an offset per channel.

    net = ColourNet(ColourNetConfig())
    pred = net(torch.from_numpy(colour_features(scan))[None])   # 1×6: gain − 1 and offset, per channel

The feature normalisation (mean, std over the training set) is part of the network (buffers), so a weights file is
all the pipeline needs. The last layer starts at zero: an untrained network is the identity correction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from oldphoto.imageops.colour import N_FEATURES, ColourAffine, colour_features


@dataclass
class ColourNetConfig:
    n_features: int = N_FEATURES
    hidden: int = 128
    layers: int = 2                 # hidden layers

    @classmethod
    def tiny(cls) -> "ColourNetConfig":
        return cls(hidden=16, layers=1)

    @classmethod
    def official(cls) -> "ColourNetConfig":     # no official counterpart: the shipped shape
        return cls()


class ColourNet(nn.Module):
    def __init__(self, cfg: ColourNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("feature_mean", torch.zeros(cfg.n_features))
        self.register_buffer("feature_std", torch.ones(cfg.n_features))
        dims = [cfg.n_features] + [cfg.hidden] * cfg.layers
        body: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            body += [nn.Linear(a, b), nn.ReLU()]
        self.body = nn.Sequential(*body)
        self.head = nn.Linear(dims[-1], 6)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def set_normalisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp_min(1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.body((features - self.feature_mean) / self.feature_std))


def apply_prediction(images: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """N×H×W×3 images in [0, 1] corrected by N×6 predictions (the torch twin of ColourAffine.apply at strength 1,
    used by the trainer)."""
    gain, offset = 1 + pred[:, 0::2], pred[:, 1::2]
    return (images * gain[:, None, None, :] + offset[:, None, None, :]).clamp(0, 1)


@torch.no_grad()
def predict_correction(net: ColourNet, img: np.ndarray, strength: float) -> tuple[ColourAffine, np.ndarray]:
    """(the safe correction at `strength`, the scan's features) for an H×W×3 float [0, 1] scan: the one way the
    pipeline and the strength choice turn the network's output into a `ColourAffine`."""
    features = colour_features(img)
    pred = net(torch.from_numpy(features)[None].to(net.feature_mean.device))[0].float().cpu().numpy()
    return ColourAffine.from_prediction(pred, strength, features), features
