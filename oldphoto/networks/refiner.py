"""The detail refiner (oldphoto's addition, not in the official method): a small residual U-Net that looks at the
stage-1 output beside the scan it came from and corrects the stage-1 output where it lost what the scan still
had (fine structure stage 1 smoothed away, tones it drifted from) or kept what it should not have.

    net = Refiner(RefinerConfig())
    out = net(restored, scan, mask)        # N×3×H×W in [0, 1]; N×3×H×W in [0, 1]; N×1×H×W in {0, 1}

``restored``: the stage-1 output (after the tone transfer and the global colour correction); ``scan``: the scan
with the same global colour correction; ``mask``: the scratch mask the scratch path filled (zeros on the quality
path). Output: ``restored`` plus a predicted residual, clipped to [0, 1]. The last convolution starts at zero, so
an untrained refiner is the identity. No normalisation layers and a bounded receptive field
(``receptive_radius``): it runs in tiles with a halo and gives the same result as untiled.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RefinerConfig", "Refiner", "at_strength"]


@dataclass
class RefinerConfig:
    width: int = 24            # channels at full resolution; doubled at each level down
    depth: int = 2             # levels below full resolution
    in_channels: int = 7       # restored (3) + scan (3) + mask (1)
    negative_slope: float = 0.2

    @classmethod
    def tiny(cls) -> "RefinerConfig":
        return cls(width=4, depth=1)

    @classmethod
    def official(cls) -> "RefinerConfig":      # no official counterpart: the shipped shape
        return cls()

    def __post_init__(self) -> None:
        if self.width < 1 or self.depth < 0 or self.in_channels != 7:
            raise ValueError(f"invalid RefinerConfig: {self}")

    @property
    def size_multiple(self) -> int:
        return 2 ** self.depth

    @property
    def receptive_radius(self) -> int:
        """A bound on how far (px) an output pixel sees: two 3×3 convolutions per level on the way down and up
        at each scale, one in and one out."""
        return sum(4 * 2 ** i for i in range(self.depth + 1)) * 2 + 2


def _block(cin: int, cout: int, slope: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(slope),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(slope))


class Refiner(nn.Module):
    def __init__(self, cfg: RefinerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = [cfg.width * 2 ** i for i in range(cfg.depth + 1)]
        self.first = _block(cfg.in_channels, w[0], cfg.negative_slope)
        self.down = nn.ModuleList(nn.Conv2d(w[i], w[i + 1], 3, stride=2, padding=1) for i in range(cfg.depth))
        self.down_blocks = nn.ModuleList(_block(w[i + 1], w[i + 1], cfg.negative_slope) for i in range(cfg.depth))
        self.up = nn.ModuleList(nn.Conv2d(w[i + 1], w[i], 1) for i in reversed(range(cfg.depth)))
        self.up_blocks = nn.ModuleList(_block(2 * w[i], w[i], cfg.negative_slope) for i in reversed(range(cfg.depth)))
        self.last = nn.Conv2d(w[0], 3, 3, padding=1)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)

    def forward(self, restored: torch.Tensor, scan: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = self.cfg.size_multiple
        h, w = restored.shape[-2:]
        x = torch.cat([restored * 2 - 1, scan * 2 - 1, mask], dim=1)
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips = [self.first(x)]
        for down, block in zip(self.down, self.down_blocks):
            skips.append(block(F.leaky_relu(down(skips[-1]), self.cfg.negative_slope)))
        y = skips.pop()
        for up, block in zip(self.up, self.up_blocks):
            skip = skips.pop()
            y = F.interpolate(up(y), size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        residual = self.last(y)[..., :h, :w]
        return (restored + residual).clamp(0.0, 1.0)


def at_strength(restored: np.ndarray, refined: np.ndarray, strength: float) -> np.ndarray:
    """The refiner's correction scaled by `strength` (0: `restored`, 1: `refined`), clipped to [0, 1]: how the
    pipeline and the choice of the operating point apply it."""
    return np.clip(restored + strength * (refined - restored) if strength != 1.0 else refined, 0.0, 1.0)
