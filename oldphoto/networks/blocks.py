"""Building blocks shared by the global-restoration networks (VAE and the three mapping networks).

Everything here follows the official layer layout (checked against tests/data/official/manifests/) so that state-dict keys
match the official checkpoints: a residual block keeps its layers in a Sequential named
``conv_block`` and the mapping networks are flat Sequentials of conv / InstanceNorm / ReLU triples.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NORMS",
    "norm_layer",
    "ResnetBlock",
    "conv_norm_act",
    "resnet_blocks",
    "mapping_channels",
    "mapping_head",
    "mapping_tail",
    "check_mask",
    "mask_hit",
    "mask_keep",
    "instance_norms",
    "ImageWideNormStats",
    "StatsPassIncomplete",
]


NORMS = ("instance", "none")


def instance_norm(channels: int) -> nn.InstanceNorm2d:
    """InstanceNorm2d without affine parameters or running statistics (no state-dict entries)."""
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False, eps=1e-5)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """The normalisation after a conv: ``"instance"`` (official) or ``"none"`` (identity).

    Neither has state-dict entries, so the choice never changes a checkpoint's layout. Instance norm
    removes each feature map's mean and scale, so a network built from it cannot carry an image's global
    brightness or colour cast from its input to its output; ``"none"`` keeps them (oldphoto's small presets).
    """
    check_norm(kind)
    return instance_norm(channels) if kind == "instance" else nn.Identity()


def check_norm(kind: str, owner: str = "") -> None:
    """ValueError unless ``kind`` is one of ``NORMS`` (``owner``: the config class, for the message)."""
    if kind not in NORMS:
        raise ValueError(f"{owner + '.' if owner else ''}norm must be one of {NORMS}, got {kind!r}")


class ResnetBlock(nn.Module):
    """Official global residual block: ``x + [pad, conv3, IN, ReLU, pad, conv3, IN](x)``.

    Reflection padding, conv biases kept (they are in the checkpoints), no activation after the sum.
    """

    def __init__(self, dim: int, norm: str = "instance") -> None:
        super().__init__()
        self.dim = dim
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=True),
            norm_layer(norm, dim),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=True),
            norm_layer(norm, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def resnet_blocks(n: int, dim: int, norm: str = "instance") -> list[nn.Module]:
    """``n`` residual blocks of width ``dim`` (a list, to be spliced into a Sequential)."""
    return [ResnetBlock(dim, norm) for _ in range(n)]


def conv_norm_act(c_in: int, c_out: int, *, norm_act: bool = True, norm: str = "instance") -> list[nn.Module]:
    """3x3 conv with zero padding 1 and bias, optionally followed by InstanceNorm and ReLU.

    Returns a list of 3 modules (or 1 when ``norm_act`` is False) so Sequential indices line up
    with the official ones.
    """
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1, bias=True)]
    if norm_act:
        layers += [norm_layer(norm, c_out), nn.ReLU(inplace=True)]
    return layers


def mapping_channels(latent_channels: int, width: int) -> tuple[int, int, int, int]:
    """Channel ladder of a mapping head: (2c, 4c, 8c, width) each capped at ``width``.

    Official (c=64, width=512): 128, 256, 512, 512.
    """
    c = latent_channels
    return (min(2 * c, width), min(4 * c, width), min(8 * c, width), width)


def mapping_head(latent_channels: int, width: int, norm: str = "instance") -> list[nn.Module]:
    """Four conv-IN-ReLU triples latent -> width (12 modules, official indices 0..11)."""
    ch = mapping_channels(latent_channels, width)
    layers: list[nn.Module] = []
    c_prev = latent_channels
    for c in ch:
        layers += conv_norm_act(c_prev, c, norm=norm)
        c_prev = c
    return layers


def mapping_tail(latent_channels: int, width: int, norm: str = "instance") -> list[nn.Module]:
    """Three conv-IN-ReLU triples and a final plain conv back to the latent (10 modules).

    Official: 512->512, 512->256, 256->128, then 128->64 without norm or activation.
    """
    c1, c2, c3, c4 = mapping_channels(latent_channels, width)
    return (
        conv_norm_act(c4, c3, norm=norm)
        + conv_norm_act(c3, c2, norm=norm)
        + conv_norm_act(c2, c1, norm=norm)
        + conv_norm_act(c1, latent_channels, norm_act=False)
    )


# --------------------------------------------------------------------------------------------
# Mask helpers (masks arrive at image resolution, N x 1 x H x W, values in [0, 1], 1 = defect)


def check_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Validate a defect mask against features ``x`` and return it as x's float dtype.

    A mask with batch size 1 is broadcast over the batch of ``x``.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must have shape (N, 1, H, W) with 1 = defect, got {tuple(mask.shape)}")
    if mask.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"mask batch size {mask.shape[0]} does not match feature batch size {x.shape[0]}")
    if mask.shape[2] < 1 or mask.shape[3] < 1:
        raise ValueError(f"mask is empty: shape {tuple(mask.shape)}")
    mask = mask.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
    lo, hi = torch.aminmax(mask)
    if not (float(lo) >= 0.0 and float(hi) <= 1.0):  # also catches NaN
        raise ValueError(
            f"mask values must lie in [0, 1] (1 = defect), got range [{float(lo):g}, {float(hi):g}]; "
            "divide 0/255 masks by 255"
        )
    if mask.shape[0] != x.shape[0]:
        mask = mask.expand(x.shape[0], -1, -1, -1)
    return mask


def mask_hit(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """1 where ``bilinear_resize(mask, size) > 0`` (align_corners False, no antialias), else 0."""
    resized = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
    return (resized > 0).to(mask.dtype)


def mask_keep(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Valid-pixel map of the partial nonlocal block (ARCHITECTURE §4.3 step 4).

    ``keep = (1 - hit) * nearest_resize(1 - mask)``; 1 = valid (unscratched) latent pixel.
    """
    near = F.interpolate(1.0 - mask, size=size, mode="nearest")
    return (1.0 - mask_hit(mask, size)) * near


# --------------------------------------------------------------------------------------------
# Image-wide instance-norm statistics for exact tiling (`oldphoto.imageops.geometry.run_tiled(norms=...)`)


def instance_norms(*modules: nn.Module) -> list[nn.Module]:
    """The InstanceNorm2d layers of ``modules`` that normalise with the statistics of their input
    (no running statistics): the layers that make a tiled result differ from the untiled one."""
    return [m for mod in modules for m in mod.modules()
            if isinstance(m, nn.InstanceNorm2d) and not m.track_running_stats]


class StatsPassIncomplete(Exception):
    """Raised inside a forward pass once the first norm without image-wide statistics has seen its input."""


class ImageWideNormStats:
    """Instance norms that normalise every tile with the statistics of the whole image.

    Statistics depend on each other (layer k's input depends on layers < k's statistics), so they are
    gathered in passes over the tiles: in pass k the norms already known apply their image-wide mean and
    variance, the first unknown norm adds its input's *core* region (the part of the tile that the tile
    owns, so every pixel counts once) to float64 running moments (Chan's parallel update) and stops the
    pass (`StatsPassIncomplete`). A pass that meets no unknown norm is the final one. With halos at least
    the network's receptive radius, the result equals the untiled one up to float rounding.
    """

    def __init__(self, norms: list[nn.Module]) -> None:
        self.norms = list(norms)
        self.stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}   # id(norm) -> (mean, var), (B, C) float64
        self._acc: tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # norm, n, mean, m2
        self._core: tuple[int, int, int, int, int, int] | None = None     # y0, y1, x0, x1, crop h, crop w

    def run(self, fn, t: torch.Tensor, core: tuple[int, int, int, int]) -> torch.Tensor | None:
        """``fn(t)`` with the known statistics, or None when the pass stopped at an unknown norm.
        ``core`` = (y0, y1, x0, x1): the tile's own region in ``t``'s pixel coordinates."""
        self._core = (*core, t.shape[-2], t.shape[-1])
        saved = {id(m): m.__dict__.get("forward") for m in self.norms}
        for m in self.norms:
            m.forward = self._forward_of(m)
        try:
            return fn(t)
        except StatsPassIncomplete:
            return None
        finally:
            for m in self.norms:
                del m.forward
                if saved[id(m)] is not None:
                    m.forward = saved[id(m)]

    def end_pass(self) -> bool:
        """Fix the statistics gathered in this pass; True when another pass is needed."""
        if self._acc is None:
            return False
        m, n, mean, m2 = self._acc
        self.stats[id(m)] = (mean, m2 / n)
        self._acc = None
        return True

    def _forward_of(self, m: nn.Module):
        def forward(x: torch.Tensor) -> torch.Tensor:
            known = self.stats.get(id(m))
            if known is None:
                self._gather(m, x)
                raise StatsPassIncomplete
            mean, var = (s.to(device=x.device, dtype=x.dtype)[:, :, None, None] for s in known)
            y = (x - mean) * torch.rsqrt(var + m.eps)
            if m.affine:
                y = y * m.weight[None, :, None, None] + m.bias[None, :, None, None]
            return y

        return forward

    def _gather(self, m: nn.Module, x: torch.Tensor) -> None:
        if self._acc is not None and self._acc[0] is not m:
            raise RuntimeError("tiles stopped at different instance norms: the network is not the same for every tile")
        y0, y1, x0, x1, h, w = self._core
        hl, wl = x.shape[-2:]
        if (y0 * hl) % h or (y1 * hl) % h or (x0 * wl) % w or (x1 * wl) % w:
            raise ValueError(f"instance norm at {hl}×{wl} is not on the tile's pixel grid {h}×{w}")
        core = x[..., y0 * hl // h:y1 * hl // h, x0 * wl // w:x1 * wl // w].double()
        nb = core.shape[-2] * core.shape[-1]
        mean_b = core.mean(dim=(2, 3))
        m2_b = (core - mean_b[:, :, None, None]).square().sum(dim=(2, 3))
        if self._acc is None:
            self._acc = (m, torch.tensor(float(nb), dtype=torch.float64), mean_b, m2_b)
            return
        _, na, mean_a, m2_a = self._acc
        n = na + nb
        delta = mean_b - mean_a
        self._acc = (m, n, mean_a + delta * (nb / n), m2_a + m2_b + delta.square() * (na * nb / n))
