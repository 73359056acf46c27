"""The global-restoration VAE (official ``GlobalGenerator_DCDCv2``; VAE_A and VAE_B share it).

Encoder: reflect-pad 3, conv 7x7 -> IN -> ReLU, ``n_down`` x (conv 4x4/2 zero-pad 1 -> IN -> ReLU),
``n_res_enc`` residual blocks. The latent is the raw output of the last residual block: deterministic,
unbounded, ``channels`` wide at 1/2**n_down resolution (no mean/log-variance; training code adds any
noise itself).

Decoder: ``n_res_dec`` residual blocks, ``n_down`` x (conv-transpose 4x4/2 pad 1 -> IN -> ReLU),
reflect-pad 3, conv 7x7 -> tanh.

At ``VAEConfig.official()`` the Sequential indices and so the state-dict keys equal the official
ones (tests/data/official/manifests/vae_a.json): ``encoder.{1,4,7}``, ``encoder.10..13.conv_block.*``, ``decoder.0..3``,
``decoder.{4,7}`` (ConvTranspose), ``decoder.11``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import check_norm, norm_layer, resnet_blocks

__all__ = ["VAEConfig", "VAE"]


@dataclass
class VAEConfig:
    channels: int = 64  # width of every inner layer and of the latent
    n_res_enc: int = 4  # residual blocks at the end of the encoder
    n_res_dec: int = 4  # residual blocks at the start of the decoder
    in_channels: int = 3
    out_channels: int = 3
    n_down: int = 2  # stride-2 stages; the latent is 1/2**n_down of the image size
    norm: str = "instance"  # "instance" (official) or "none" (keeps global tone; no state-dict change)

    @classmethod
    def official(cls) -> "VAEConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "VAEConfig":
        return cls(channels=16, n_res_enc=1, n_res_dec=1)

    def __post_init__(self) -> None:
        check_norm(self.norm, "VAEConfig")
        for name in ("channels", "in_channels", "out_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"VAEConfig.{name} must be >= 1")
        for name in ("n_res_enc", "n_res_dec", "n_down"):
            if getattr(self, name) < 0:
                raise ValueError(f"VAEConfig.{name} must be >= 0")

    @property
    def scale(self) -> int:
        """Image pixels per latent pixel along each side."""
        return 2**self.n_down


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or VAEConfig()
        self.cfg = cfg
        c = cfg.channels

        enc: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(cfg.in_channels, c, kernel_size=7, padding=0),
            norm_layer(cfg.norm, c),
            nn.ReLU(inplace=True),
        ]
        for _ in range(cfg.n_down):
            enc += [nn.Conv2d(c, c, kernel_size=4, stride=2, padding=1), norm_layer(cfg.norm, c), nn.ReLU(inplace=True)]
        enc += resnet_blocks(cfg.n_res_enc, c, cfg.norm)
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = resnet_blocks(cfg.n_res_dec, c, cfg.norm)
        for _ in range(cfg.n_down):
            dec += [
                nn.ConvTranspose2d(c, c, kernel_size=4, stride=2, padding=1, output_padding=0),
                norm_layer(cfg.norm, c),
                nn.ReLU(inplace=True),
            ]
        dec += [nn.ReflectionPad2d(3), nn.Conv2d(c, cfg.out_channels, kernel_size=7, padding=0), nn.Tanh()]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image (N, in_channels, H, W) in [-1, 1] -> latent (N, channels, ~H/4, ~W/4).

        Each stride-2 stage maps a side n to floor(n/2); sides that are multiples of 4 round-trip exactly.
        """
        if x.dim() != 4 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"VAE.encode expects (N, {self.cfg.in_channels}, H, W), got {tuple(x.shape)}")
        need = self.min_image_side()
        if min(x.shape[-2:]) < need:
            raise ValueError(f"image too small for the VAE: {tuple(x.shape[-2:])} (need sides >= {need})")
        return self.encoder(x)

    def min_image_side(self) -> int:
        """Smallest image side the encoder accepts (reflection pads need > pad, residual blocks >= 2 px)."""
        latent_min = 2 if self.cfg.n_res_enc > 0 else 1
        return max(4, latent_min * self.cfg.scale)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (N, channels, h, w) -> image (N, out_channels, h*4, w*4) in (-1, 1)."""
        if z.dim() != 4 or z.shape[1] != self.cfg.channels:
            raise ValueError(f"VAE.decode expects (N, {self.cfg.channels}, h, w), got {tuple(z.shape)}")
        if self.cfg.n_res_dec > 0 and min(z.shape[-2:]) < 2:
            raise ValueError(f"latent too small for the VAE decoder: {tuple(z.shape[-2:])} (need sides >= 2)")
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
