"""Latent mapping for unstructured degradations (official ``Mapping_Model``; ``mapping_quality``).

One Sequential ``model``: four conv-IN-ReLU triples up to ``width`` channels, ``n_blocks`` residual
blocks, three conv-IN-ReLU triples back down and a final plain 3x3 conv to the latent width
(tests/data/official/manifests/mapping_quality.json). Keys at the official config: ``model.{0,3,6,9}``, ``model.12..17.conv_block.*``,
``model.{18,21,24,27}``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import check_norm, mapping_head, mapping_tail, resnet_blocks

__all__ = ["MappingConfig", "MappingNet"]


@dataclass
class MappingConfig:
    latent_channels: int = 64
    width: int = 512
    n_blocks: int = 6
    norm: str = "instance"  # "instance" (official) or "none" (no state-dict change)

    @classmethod
    def official(cls) -> "MappingConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "MappingConfig":
        return cls(latent_channels=16, width=32, n_blocks=1)

    def __post_init__(self) -> None:
        check_norm(self.norm, "MappingConfig")
        if self.latent_channels < 1 or self.width < 1:
            raise ValueError("MappingConfig: latent_channels and width must be >= 1")
        if self.n_blocks < 0:
            raise ValueError("MappingConfig.n_blocks must be >= 0")


class MappingNet(nn.Module):
    def __init__(self, cfg: MappingConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or MappingConfig()
        self.cfg = cfg
        self.model = nn.Sequential(
            *mapping_head(cfg.latent_channels, cfg.width, cfg.norm),
            *resnet_blocks(cfg.n_blocks, cfg.width, cfg.norm),
            *mapping_tail(cfg.latent_channels, cfg.width, cfg.norm),
        )

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Map a degraded latent to a clean one; ``mask`` is accepted for a uniform API and ignored."""
        if z.dim() != 4 or z.shape[1] != self.cfg.latent_channels:
            raise ValueError(f"MappingNet expects (N, {self.cfg.latent_channels}, h, w), got {tuple(z.shape)}")
        return self.model(z)
