"""Scratch-detection U-Net (the official ``UNet`` of Global/detection_models, as detection.py builds it).

Input: grey image N x 1 x H x W in [-1, 1], H and W multiples of 2**depth (16 for the official net).
Output: per-pixel scratch logits N x 1 x H x W (apply a sigmoid, threshold 0.4 for the official mask).

Layout (state-dict order: first, down_path, down_sample, up_path, last):

* ``first``:           reflect-pad 3, conv 7x7 in -> c0, LeakyReLU(0.2)
* ``down_sample.i``:   reflect-pad 1, conv 3x3 c_i -> c_i, BN, LeakyReLU(0.2), anti-aliased blur
                       downsample (reflect-pad 1, depthwise binomial 3x3 filter, stride 2)
* ``down_path.i``:     conv block c_i -> c_{i+1} (2 x [reflect-pad 1, conv 3x3, BN, LeakyReLU(0.2)])
* ``up_path.j``:       ``up`` = bilinear x2, reflect-pad 1, conv 3x3 c_{i+1} -> c_i (i = depth-1-j);
                       ``conv_block`` on concat[up-sampled, skip_i] (c_{i+1} -> c_i)
* ``last``:            reflect-pad 1, conv 3x3 c0 -> out

with c_i = base_width * 2**i. All convolutions have a bias; padding is always reflection.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OFFICIAL_THRESHOLD", "ScratchUNetConfig", "ScratchUNet", "BlurDownsample", "UNetConvBlock", "UNetUpBlock"]

# the official pixel threshold on the sigmoid of the logits (detection.py)
OFFICIAL_THRESHOLD = 0.4


@dataclass
class ScratchUNetConfig:
    """Shape of the scratch-detection U-Net.

    ``base_width`` is the channel count at full resolution (official: 2**6 = 64); each of the ``depth``
    levels doubles it and halves the resolution.
    """

    in_channels: int = 1
    out_channels: int = 1
    depth: int = 4
    base_width: int = 64
    negative_slope: float = 0.2

    @classmethod
    def official(cls) -> "ScratchUNetConfig":
        """The released detector (``FT_Epoch_latest.pt``): depth 4, widths 64..1024."""
        return cls(in_channels=1, out_channels=1, depth=4, base_width=64)

    @classmethod
    def tiny(cls) -> "ScratchUNetConfig":
        """A small CPU-friendly configuration for tests and quick training."""
        return cls(in_channels=1, out_channels=1, depth=3, base_width=8)

    def __post_init__(self) -> None:
        if self.depth < 1 or self.base_width < 1 or self.in_channels < 1 or self.out_channels < 1:
            raise ValueError(f"invalid ScratchUNetConfig: {self}")

    @property
    def widths(self) -> list[int]:
        """Channel counts c_0 .. c_depth."""
        return [self.base_width * 2**i for i in range(self.depth + 1)]

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2**self.depth


def _binomial_filter(channels: int) -> torch.Tensor:
    a = torch.tensor([1.0, 2.0, 1.0])
    k = a[:, None] * a[None, :]
    return (k / k.sum()).expand(channels, 1, 3, 3).contiguous()


class BlurDownsample(nn.Module):
    """Anti-aliased stride-2 downsampling: reflect-pad 1, depthwise [1,2,1]x[1,2,1]/16 filter.

    The filter is a persistent buffer ``filt`` (C x 1 x 3 x 3), as in the official checkpoint.
    Output size is ceil(n / 2).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("filt", _binomial_filter(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.filt, stride=2, groups=self.channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, stride=2, filter=binomial3"


def _conv_bn_lrelu(in_ch: int, out_ch: int, slope: float) -> list[nn.Module]:
    return [
        nn.ReflectionPad2d(1),
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=0, bias=True),
        nn.BatchNorm2d(out_ch),
        nn.LeakyReLU(slope),
    ]


class UNetConvBlock(nn.Module):
    """Two [reflect-pad 1, conv 3x3, BN, LeakyReLU] layers in a Sequential named ``block``."""

    def __init__(self, in_ch: int, out_ch: int, slope: float = 0.2) -> None:
        super().__init__()
        self.block = nn.Sequential(*_conv_bn_lrelu(in_ch, out_ch, slope), *_conv_bn_lrelu(out_ch, out_ch, slope))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class UNetUpBlock(nn.Module):
    """Bilinear x2 + conv (halves channels), then a conv block on concat[up-sampled, skip]."""

    def __init__(self, in_ch: int, out_ch: int, slope: float = 0.2) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.ReflectionPad2d(1),
            nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=0, bias=True),
        )
        self.conv_block = UNetConvBlock(in_ch, out_ch, slope)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        if up.shape[-2:] != skip.shape[-2:]:
            raise ValueError(f"U-Net skip size {tuple(skip.shape[-2:])} != up-sampled size {tuple(up.shape[-2:])}")
        return self.conv_block(torch.cat([up, skip], dim=1))


class ScratchUNet(nn.Module):
    """Scratch-detection U-Net; ``forward(grey)`` returns logits (no sigmoid)."""

    def __init__(self, cfg: ScratchUNetConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ScratchUNetConfig.official()
        self.cfg = cfg
        c = cfg.widths
        slope = cfg.negative_slope
        # Registration order = official state-dict order (down_path before down_sample).
        self.first = nn.Sequential(
            nn.ReflectionPad2d(3),
            nn.Conv2d(cfg.in_channels, c[0], kernel_size=7, padding=0, bias=True),
            nn.LeakyReLU(slope),
        )
        self.down_path = nn.ModuleList(UNetConvBlock(c[i], c[i + 1], slope) for i in range(cfg.depth))
        self.down_sample = nn.ModuleList(
            nn.Sequential(*_conv_bn_lrelu(c[i], c[i], slope), BlurDownsample(c[i])) for i in range(cfg.depth)
        )
        self.up_path = nn.ModuleList(
            UNetUpBlock(c[i + 1], c[i], slope) for i in reversed(range(cfg.depth))
        )
        self.last = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(c[0], cfg.out_channels, kernel_size=3, padding=0, bias=True),
        )

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(
                f"ScratchUNet expects N x {self.cfg.in_channels} x H x W, got shape {tuple(x.shape)}"
            )
        m = self.cfg.size_multiple
        h, w = x.shape[-2:]
        if h % m or w % m or h < 2 * m or w < 2 * m:
            raise ValueError(
                f"ScratchUNet input height and width must be multiples of {m} and at least {2 * m}, got {h} x {w}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.first(x)
        skips = []
        for down_sample, down_path in zip(self.down_sample, self.down_path):
            skips.append(x)  # saved before downsampling
            x = down_path(down_sample(x))
        for up, skip in zip(self.up_path, reversed(skips)):
            x = up(x, skip)
        return self.last(x)
