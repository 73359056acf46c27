"""Coarse-to-fine SPADE face generator (the official Face_Enhancement ``SPADEGenerator``).

The degraded face (N x 3 x H x W in [-1, 1]) is both the starting point and the condition:

* ``fc`` convolves the face bilinearly downsampled to s x s, s = load_size / 32 (8 for 256, 16 for 512);
* seven SPADE residual blocks (head_0, G_middle_0, G_middle_1, up_0..up_3) with nearest x2 upsampling
  in between bring the features to load_size x load_size; every normalisation inside them is a SPADE
  layer: BatchNorm without affine (running statistics in eval mode), then a per-pixel scale and shift
  predicted by a small conv MLP from the face bilinearly resized to the feature size;
* ``conv_img`` after a LeakyReLU(0.2), then tanh.

The residual blocks' conv_0, conv_1 and conv_s are spectrally normalised (``SNConv2d``; official keys
``bias, weight_orig, weight_u, weight_v``). The output is always load_size x load_size, whatever the input size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .spectral_norm import SNConv2d

__all__ = ["SPADEFaceConfig", "SPADEFaceGenerator", "SPADE", "SPADEResnetBlock"]

_NUM_UPSAMPLINGS = 5  # official num_upsampling_layers "normal"


@dataclass
class SPADEFaceConfig:
    """Shape of the face generator.

    ``ngf`` is the width at full resolution; the coarse blocks use 16 * ngf channels. ``spade_hidden`` is
    the hidden width of every SPADE MLP (official: 128). ``image_nc`` is the channel count of the face
    (input, condition and output).
    """

    load_size: int = 256
    ngf: int = 64
    image_nc: int = 3
    spade_hidden: int = 128
    negative_slope: float = 0.2

    @classmethod
    def official(cls, load_size: int = 256) -> "SPADEFaceConfig":
        """The released generators: load_size 256 (Setting_9_epoch_100) or 512 (FaceSR_512)."""
        if load_size not in (256, 512):
            raise ValueError(f"official face generators exist for load_size 256 and 512, not {load_size}")
        return cls(load_size=load_size, ngf=64, image_nc=3, spade_hidden=128)

    @classmethod
    def tiny(cls, load_size: int = 64) -> "SPADEFaceConfig":
        """A small CPU-friendly configuration for tests and quick training."""
        return cls(load_size=load_size, ngf=8, image_nc=3, spade_hidden=16)

    def __post_init__(self) -> None:
        if self.load_size < 2**_NUM_UPSAMPLINGS or self.load_size % 2**_NUM_UPSAMPLINGS:
            raise ValueError(f"load_size must be a positive multiple of {2**_NUM_UPSAMPLINGS}, got {self.load_size}")
        if self.ngf < 1 or self.image_nc < 1 or self.spade_hidden < 1:
            raise ValueError(f"invalid SPADEFaceConfig: {self}")

    @property
    def start_size(self) -> int:
        """Side of the coarsest feature map (load_size / 32)."""
        return self.load_size // 2**_NUM_UPSAMPLINGS


def _resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Plain bilinear resize (align_corners False, no antialias), identity at the same size."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    return F.interpolate(img, size=size, mode="bilinear", align_corners=False)


class SPADE(nn.Module):
    """Spatially-adaptive denormalisation: BN(affine=False)(x) * (1 + gamma(img)) + beta(img)."""

    def __init__(self, norm_nc: int, cond_nc: int = 3, hidden: int = 128) -> None:
        super().__init__()
        self.param_free_norm = nn.BatchNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(cond_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        actv = self.mlp_shared(_resize(img, tuple(x.shape[-2:])))
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """Residual block with SPADE norms and spectrally normalised convs; learned 1x1 shortcut iff fin != fout."""

    def __init__(self, fin: int, fout: int, cond_nc: int = 3, hidden: int = 128, slope: float = 0.2) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        self.slope = slope
        fmid = min(fin, fout)
        # Registration order = official state-dict order: convs first, then norms.
        self.conv_0 = SNConv2d(fin, fmid, kernel_size=3, padding=1)
        self.conv_1 = SNConv2d(fmid, fout, kernel_size=3, padding=1)
        if self.learned_shortcut:
            self.conv_s = SNConv2d(fin, fout, kernel_size=1, bias=False)
        self.norm_0 = SPADE(fin, cond_nc, hidden)
        self.norm_1 = SPADE(fmid, cond_nc, hidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, cond_nc, hidden)

    def shortcut(self, x: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        if self.learned_shortcut:
            return self.conv_s(self.norm_s(x, img))  # no activation on the shortcut path
        return x

    def forward(self, x: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        xs = self.shortcut(x, img)
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, img), self.slope))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, img), self.slope))
        return xs + dx


class SPADEFaceGenerator(nn.Module):
    """Face enhancer; ``forward(face)`` -> enhanced face, N x 3 x load_size x load_size in (-1, 1)."""

    def __init__(self, cfg: SPADEFaceConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or SPADEFaceConfig.official()
        self.cfg = cfg
        nf, c, h, s = cfg.ngf, cfg.image_nc, cfg.spade_hidden, cfg.negative_slope
        self.fc = nn.Conv2d(c, 16 * nf, kernel_size=3, padding=1)
        self.head_0 = SPADEResnetBlock(16 * nf, 16 * nf, c, h, s)
        self.G_middle_0 = SPADEResnetBlock(16 * nf, 16 * nf, c, h, s)
        self.G_middle_1 = SPADEResnetBlock(16 * nf, 16 * nf, c, h, s)
        self.up_0 = SPADEResnetBlock(16 * nf, 8 * nf, c, h, s)
        self.up_1 = SPADEResnetBlock(8 * nf, 4 * nf, c, h, s)
        self.up_2 = SPADEResnetBlock(4 * nf, 2 * nf, c, h, s)
        self.up_3 = SPADEResnetBlock(2 * nf, 1 * nf, c, h, s)
        self.conv_img = nn.Conv2d(nf, c, kernel_size=3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        if face.ndim != 4 or face.shape[1] != self.cfg.image_nc:
            raise ValueError(
                f"SPADEFaceGenerator expects N x {self.cfg.image_nc} x H x W, got shape {tuple(face.shape)}"
            )
        s = self.cfg.start_size
        x = self.fc(_resize(face, (s, s)))
        x = self.head_0(x, face)
        x = self.up(x)
        x = self.G_middle_0(x, face)
        x = self.G_middle_1(x, face)
        for block in (self.up_0, self.up_1, self.up_2, self.up_3):
            x = block(self.up(x), face)
        x = self.conv_img(F.leaky_relu(x, self.cfg.negative_slope))
        return torch.tanh(x)
