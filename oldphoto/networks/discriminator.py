"""Discriminators used only for training: a multi-scale patch discriminator (images) and a latent one.

- ``PatchDiscriminator``: pix2pixHD-style PatchGAN run at ``num_scales`` image scales (each next scale
  is a 3x3 average-pool downsample). ``forward(x)`` returns, per scale, the list of intermediate
  features whose last entry is the patch score map (LSGAN: raw scores, no sigmoid). The intermediate
  features feed the feature-matching loss.
- ``LatentDiscriminator``: D_RX of VAE_A, a small convolutional classifier on the latent map that tells
  latents of real old photos (R) from those of synthetic ones (X). Returns a per-position score map.

Neither is shipped or needed for restoration.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class PatchDiscriminatorConfig:
    in_channels: int = 3
    ndf: int = 64          # width of the first layer; doubles per layer up to max_channels
    n_layers: int = 3      # stride-2 layers
    num_scales: int = 2    # image pyramid levels, each with its own discriminator
    max_channels: int = 512
    spectral_norm: bool = False

    @classmethod
    def official(cls) -> "PatchDiscriminatorConfig":
        """pix2pixHD / official defaults: ndf 64, 3 layers, 2 scales."""
        return cls()

    @classmethod
    def tiny(cls) -> "PatchDiscriminatorConfig":
        return cls(ndf=8, n_layers=2, num_scales=1)


def _sn(module: nn.Module, on: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(module) if on else module


class NLayerDiscriminator(nn.Module):
    """One PatchGAN: conv 4x4/2 + LReLU, then (n_layers - 1) x [conv 4x4/2 + IN + LReLU],
    conv 4x4/1 + IN + LReLU, conv 4x4/1 -> 1 channel score map."""

    def __init__(self, cfg: PatchDiscriminatorConfig):
        super().__init__()
        c = cfg.ndf
        layers: list[nn.Module] = [nn.Sequential(_sn(nn.Conv2d(cfg.in_channels, c, 4, 2, 2), cfg.spectral_norm),
                                                 nn.LeakyReLU(0.2, True))]
        for i in range(1, cfg.n_layers + 1):
            stride = 2 if i < cfg.n_layers else 1
            nxt = min(c * 2, cfg.max_channels)
            layers.append(nn.Sequential(_sn(nn.Conv2d(c, nxt, 4, stride, 2), cfg.spectral_norm),
                                        nn.InstanceNorm2d(nxt), nn.LeakyReLU(0.2, True)))
            c = nxt
        layers.append(nn.Sequential(nn.Conv2d(c, 1, 4, 1, 2)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class PatchDiscriminator(nn.Module):
    def __init__(self, cfg: PatchDiscriminatorConfig | None = None):
        super().__init__()
        self.cfg = cfg or PatchDiscriminatorConfig()
        self.scales = nn.ModuleList(NLayerDiscriminator(self.cfg) for _ in range(self.cfg.num_scales))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        out = []
        for i, d in enumerate(self.scales):
            if i > 0:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(d(x))
        return out


@dataclass
class LatentDiscriminatorConfig:
    in_channels: int = 64   # latent channels of the VAE
    ndf: int = 64
    n_layers: int = 2

    @classmethod
    def official(cls) -> "LatentDiscriminatorConfig":
        return cls()


class LatentDiscriminator(nn.Module):
    """D_RX: conv 3x3 + LReLU blocks (stride 2 after the first), then a 1-channel score map."""

    def __init__(self, cfg: LatentDiscriminatorConfig | None = None):
        super().__init__()
        self.cfg = cfg or LatentDiscriminatorConfig()
        c_in, c = self.cfg.in_channels, self.cfg.ndf
        layers: list[nn.Module] = []
        for i in range(self.cfg.n_layers):
            layers += [nn.Conv2d(c_in, c, 3, 2 if i > 0 else 1, 1), nn.LeakyReLU(0.2, True)]
            c_in = c
        layers.append(nn.Conv2d(c_in, 1, 3, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)
