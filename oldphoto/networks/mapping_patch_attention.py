"""Latent mapping with multi-scale patch attention, for scratched high-resolution photos.

Official ``Mapping_Model_with_mask_2`` (``mapping_Patch_Attention``) run through its
``inference_forward``:

    x = before_NL(z)                 # 4 conv-IN-ReLU triples + 2 residual blocks
    x = NL_scale_1(x, mask)          # patch attention, patch size 8
    x = res_block_1(x)
    x = NL_scale_2(x, mask)          # patch size 4
    x = res_block_2(x)
    x = NL_scale_3(x, mask)          # patch size 2
    out = after_NL(x)                # 2 residual blocks + convs back to the latent

Each patch-attention scale replaces every "hole" patch (more than 60 % of its pixels under the
resized mask) by a copy of the most similar (cosine) intact patch, then fuses
``[input, composed, mask]`` with a 3x3 conv. Memory is O(hole patches x chunk), never O(HW^2).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import check_mask, check_norm, mapping_head, mapping_tail, mask_hit, resnet_blocks

__all__ = [
    "PatchAttentionMappingConfig",
    "PatchAttentionMappingNet",
    "PatchAttention",
    "AllPatchesMaskedError",
]


class AllPatchesMaskedError(ValueError):
    """Every patch at some scale is a hole: there is no intact patch to copy from."""


@dataclass
class PatchAttentionMappingConfig:
    latent_channels: int = 64
    width: int = 512
    patch_sizes: tuple[int, ...] = (8, 4, 2)  # one attention scale per entry, coarse to fine
    n_res_before: int = 2  # residual blocks at the end of before_NL
    n_res_between: int = 2  # residual blocks between consecutive scales
    n_res_after: int = 2  # residual blocks at the start of after_NL
    n_res_scale: int = 1  # residual blocks inside each attention scale
    hole_threshold: float = 0.6  # a patch is a hole when its mask coverage is > this
    query_chunk: int = 4096  # hole patches matched per block (bounds the similarity memory)
    norm: str = "instance"  # "instance" (official) or "none" (no state-dict change)

    @classmethod
    def official(cls) -> "PatchAttentionMappingConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "PatchAttentionMappingConfig":
        return cls(latent_channels=16, width=32, n_res_before=1, n_res_between=1, n_res_after=1)

    def __post_init__(self) -> None:
        check_norm(self.norm, "PatchAttentionMappingConfig")
        self.patch_sizes = tuple(int(p) for p in self.patch_sizes)
        if self.latent_channels < 1 or self.width < 1:
            raise ValueError("PatchAttentionMappingConfig: latent_channels and width must be >= 1")
        if not self.patch_sizes or any(p < 1 for p in self.patch_sizes):
            raise ValueError("PatchAttentionMappingConfig.patch_sizes must be a non-empty tuple of ints >= 1")
        if min(self.n_res_before, self.n_res_between, self.n_res_after, self.n_res_scale) < 0:
            raise ValueError("PatchAttentionMappingConfig: block counts must be >= 0")
        if self.query_chunk < 1:
            raise ValueError("PatchAttentionMappingConfig.query_chunk must be >= 1")


class PatchAttention(nn.Module):
    """Official ``Patch_Attention_4`` (inference path) for one patch size."""

    def __init__(
        self,
        channels: int,
        patch_size: int,
        n_res: int = 1,
        hole_threshold: float = 0.6,
        query_chunk: int = 4096,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.hole_threshold = hole_threshold
        self.query_chunk = query_chunk
        # registration order = official state-dict order: F_Combine, res_block
        self.F_Combine = nn.Conv2d(2 * channels + 1, channels, kernel_size=3, stride=1, padding=1, bias=True)
        self.res_block = nn.Sequential(*resnet_blocks(n_res, channels, norm))

    def hole_patches(self, m: torch.Tensor) -> torch.Tensor:
        """Boolean (L,) selection of hole patches from batch element 0 of the binary mask m (B,1,h,w)."""
        ps = self.patch_size
        h, w = m.shape[-2:]
        nh, nw = h // ps, w // ps
        if nh == 0 or nw == 0:
            return torch.zeros(0, dtype=torch.bool, device=m.device)
        cov = m[0, 0, : nh * ps, : nw * ps].reshape(nh, ps, nw, ps).sum(dim=(1, 3)) / float(ps * ps)
        return (cov > self.hole_threshold).flatten()

    def compose(self, x: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """Replace each selected patch of x by its best-matching unselected patch (cosine, hard argmax)."""
        b, c, h, w = x.shape
        ps = self.patch_size
        patches = F.unfold(x, kernel_size=ps, stride=ps)  # (B, C*ps*ps, L)
        q_idx = selected.nonzero().flatten()
        k_idx = (~selected).nonzero().flatten()
        if k_idx.numel() == 0:
            raise AllPatchesMaskedError(
                f"every {ps}x{ps} latent patch is masked (more than {self.hole_threshold:.0%} defect): "
                "no intact region to restore from; use the non-HR scratch mapping or a smaller mask"
            )
        k = patches[:, :, k_idx]
        k_hat = k / k.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (B, D, Lk)
        out = patches.clone()
        for s in range(0, q_idx.numel(), self.query_chunk):
            qi = q_idx[s : s + self.query_chunk]
            q = patches[:, :, qi]
            q_hat = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
            sim = torch.bmm(q_hat.transpose(1, 2), k_hat)  # (B, Lq, Lk)
            best = F.softmax(sim, dim=2).argmax(dim=2)  # (B, Lq), first index on ties
            src = torch.gather(k, 2, best.unsqueeze(1).expand(-1, k.shape[1], -1))  # (B, D, Lq)
            out[:, :, qi] = src
        # fold places the non-overlapping patches; remainder rows/cols outside the grid become 0
        return F.fold(out, output_size=(h, w), kernel_size=ps, stride=ps)

    def forward(self, zin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """zin: (B, C, h, w); mask: (B|1, 1, H, W) at image resolution, 1 = defect."""
        x = self.res_block(zin)
        h, w = x.shape[-2:]
        m = mask_hit(check_mask(mask, x), (h, w))  # 1 = scratched
        selected = self.hole_patches(m)
        if bool(selected.any()):
            comp = self.compose(x, selected)
        else:
            comp = x
        return self.F_Combine(torch.cat([zin, comp, m], dim=1))


class PatchAttentionMappingNet(nn.Module):
    def __init__(self, cfg: PatchAttentionMappingConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or PatchAttentionMappingConfig()
        self.cfg = cfg
        self.before_NL = nn.Sequential(
            *mapping_head(cfg.latent_channels, cfg.width, cfg.norm),
            *resnet_blocks(cfg.n_res_before, cfg.width, cfg.norm),
        )
        # official names: NL_scale_1, res_block_1, NL_scale_2, res_block_2, NL_scale_3
        for i, ps in enumerate(cfg.patch_sizes, start=1):
            setattr(
                self,
                f"NL_scale_{i}",
                PatchAttention(cfg.width, ps, cfg.n_res_scale, cfg.hole_threshold, cfg.query_chunk, cfg.norm),
            )
            if i < len(cfg.patch_sizes):
                setattr(self, f"res_block_{i}", nn.Sequential(*resnet_blocks(cfg.n_res_between, cfg.width, cfg.norm)))
        self.after_NL = nn.Sequential(
            *resnet_blocks(cfg.n_res_after, cfg.width, cfg.norm),
            *mapping_tail(cfg.latent_channels, cfg.width, cfg.norm),
        )

    def scales(self) -> list[PatchAttention]:
        return [getattr(self, f"NL_scale_{i}") for i in range(1, len(self.cfg.patch_sizes) + 1)]

    def fillable(self, mask: torch.Tensor, latent_size: tuple[int, int]) -> bool:
        """Whether ``forward`` can restore a latent of ``latent_size`` under ``mask`` (N|1, 1, H, W; as in
        forward, batch element 0 selects the holes): False when, at some scale, every patch is a hole, which
        forward refuses with ``AllPatchesMaskedError``."""
        hit = mask_hit(mask.float(), latent_size)
        return all(bool((~s.hole_patches(hit)).any()) for s in self.scales())

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Official ``inference_forward``. mask: (N|1, 1, H, W), 1 = defect; None means no defects.

        Raises ``AllPatchesMaskedError`` (a ValueError) when every patch of a scale is a hole.
        """
        if z.dim() != 4 or z.shape[1] != self.cfg.latent_channels:
            raise ValueError(
                f"PatchAttentionMappingNet expects (N, {self.cfg.latent_channels}, h, w), got {tuple(z.shape)}"
            )
        if mask is None:
            mask = z.new_zeros((z.shape[0], 1) + tuple(z.shape[-2:]))
        x = self.before_NL(z)
        n = len(self.cfg.patch_sizes)
        for i in range(1, n + 1):
            x = getattr(self, f"NL_scale_{i}")(x, mask)
            if i < n:
                x = getattr(self, f"res_block_{i}")(x)
        return self.after_NL(x)
