"""Latent mapping with a partial (masked) nonlocal block, for scratched photos.

Official ``Mapping_Model_with_mask`` (``mapping_scratch``):

    out = after_NL( NL( before_NL(z), mask ) )

* ``before_NL``: four conv-IN-ReLU triples, latent -> width (no residual blocks).
* ``NL``: 1x1 convs ``g``, ``W``, ``theta``, ``phi`` and ``res_block`` (3 residual blocks). Queries attend
  only to valid (unscratched) key positions; the result replaces the features at scratched positions.
* ``after_NL``: 6 residual blocks, three conv-IN-ReLU triples and a plain conv back to the latent.

The official code materialises the full (HW x HW) attention matrix, so memory grows with the fourth
power of the image side. Here softmax, key masking and row renormalisation are one masked softmax
computed by ``torch.nn.functional.scaled_dot_product_attention`` (a fused kernel that never holds the
matrix), in blocks of query rows (`masked_attention`); ``attention="direct"`` keeps the literal
formula (tests and reference). ``attention="chunked"`` is the name of the fused path (kept so that
weights files written before it load unchanged).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import check_mask, check_norm, mapping_head, mapping_tail, mask_keep, resnet_blocks

__all__ = [
    "NonLocalMappingConfig",
    "NonLocalMappingNet",
    "MaskedNonLocalBlock",
    "masked_attention",
    "masked_attention_direct",
    "auto_query_chunk",
]

ATTENTION_MODES = ("chunked", "direct")


@dataclass
class NonLocalMappingConfig:
    latent_channels: int = 64
    width: int = 512
    n_res_nl: int = 3  # residual blocks inside the nonlocal block (applied to the attention output)
    n_res_after: int = 6  # residual blocks after the nonlocal block
    temperature: float = 1.0  # softmax temperature of the similarity
    attention: str = "chunked"  # "chunked" (fused masked SDPA, O(chunk*HW) memory) or "direct" (literal O(HW^2))
    query_chunk: int | None = None  # query rows per SDPA call; None = auto_query_chunk(HW, chunk_budget)
    chunk_budget: int = 1 << 22  # elements of one (chunk x HW) block if PyTorch falls back to its unfused kernel
    norm: str = "instance"  # "instance" (official) or "none" (no state-dict change)

    @classmethod
    def official(cls) -> "NonLocalMappingConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "NonLocalMappingConfig":
        return cls(latent_channels=16, width=32, n_res_nl=1, n_res_after=1)

    def __post_init__(self) -> None:
        check_norm(self.norm, "NonLocalMappingConfig")
        if self.latent_channels < 1 or self.width < 1:
            raise ValueError("NonLocalMappingConfig: latent_channels and width must be >= 1")
        if self.n_res_nl < 0 or self.n_res_after < 0:
            raise ValueError("NonLocalMappingConfig: block counts must be >= 0")
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"NonLocalMappingConfig.attention must be one of {ATTENTION_MODES}, got {self.attention!r}")
        if self.query_chunk is not None and self.query_chunk < 1:
            raise ValueError("NonLocalMappingConfig.query_chunk must be >= 1 or None")
        if self.chunk_budget < 1:
            raise ValueError("NonLocalMappingConfig.chunk_budget must be >= 1")
        if not self.temperature > 0:
            raise ValueError("NonLocalMappingConfig.temperature must be > 0")


# --------------------------------------------------------------------------------------------
# attention kernels
#
# theta: (B, N, C) queries, phi: (B, C, N) keys, g: (B, N, Cv) values,
# keep: (B, 1, N) weight of each key column (1 = valid, 0 = scratched, fractional allowed).


def masked_attention_direct(
    theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor, keep: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """The official formula, materialising the full (N x N) matrix: reference and test oracle."""
    f = torch.matmul(theta, phi)
    a = F.softmax(f / temperature, dim=-1)
    a = a * keep
    a = F.normalize(a, p=1, dim=2)
    return torch.matmul(a, g)


SDPA_MIN_CHUNK = 1024  # query rows per scaled_dot_product_attention call, at least (fewer re-reads of K and V)


def auto_query_chunk(n: int, budget: int = 1 << 22) -> int:
    """Query rows per call: one (chunk x n) block of at most ``budget`` elements, but never fewer than
    ``SDPA_MIN_CHUNK`` rows (the fused kernel does not materialise the block; the budget only bounds
    memory when PyTorch falls back to its unfused kernel)."""
    return max(1, min(n, max(budget // max(n, 1), SDPA_MIN_CHUNK)))


OFFICIAL_EPS = 1e-12  # F.normalize's eps in the official row renormalisation


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float):
    """(softmax(q kᵀ·scale + bias) v, logsumexp of those logits per query row)."""
    if q.device.type == "cpu":   # the fused CPU kernel returns its logsumexp
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=bias,
                                                                          scale=scale)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    return out, torch.logsumexp(torch.matmul(q, k.transpose(-1, -2)) * scale + bias, dim=-1)


def _sdpa_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, keep: torch.Tensor,
               scale: float) -> torch.Tensor:
    """The official result for a block of query rows: the masked softmax, times min(1, mass / eps) where
    ``mass`` = the valid keys' share of the unmasked softmax (the official renormalisation divides by
    max(mass, 1e-12), so rows whose valid keys hold less than 1e-12 of it come out scaled down)."""
    out, lse = _attend(q, k, v, bias, scale)
    factors = []
    for b in range(q.shape[0]):
        kb = keep[b, 0, 0]
        weak = kb < 1                                          # keys not fully valid
        if not bool(weak.any()) or not bool((kb > 0).any()):  # nothing masked / nothing valid (zeroed later)
            factors.append(torch.ones_like(lse[b]))
            continue
        f = torch.matmul(q[b], k[b][:, weak].transpose(-1, -2)) * scale          # (1, rows, n_weak)
        # log(sum over all keys of e^f) - lse = log(1 + sum_weak e^{f - lse} - sum_weak keep e^{f - lse})
        excess = torch.exp(torch.logsumexp(f, dim=-1) - lse[b])
        frac = (kb[weak] > 0)
        if bool(frac.any()):
            excess = excess - torch.exp(torch.logsumexp(f[..., frac] + bias[b][..., weak][..., frac], dim=-1) - lse[b])
        # mass = e^{-rel_all}; the official row is scaled by mass / max(mass, eps)
        factors.append(torch.clamp(torch.exp(-torch.log1p(excess)) / OFFICIAL_EPS, max=1.0))
    return out * torch.stack(factors)[..., None]


def masked_attention(
    theta: torch.Tensor,
    phi: torch.Tensor,
    g: torch.Tensor,
    keep: torch.Tensor,
    temperature: float = 1.0,
    chunk: int | None = None,
) -> torch.Tensor:
    """The partial nonlocal attention on ``torch.nn.functional.scaled_dot_product_attention``.

    softmax, column masking and L1 renormalisation collapse into one masked softmax:
    ``keep_j e^{f_ij} / sum_k keep_k e^{f_ik}`` = softmax over ``f_ij + log keep_j`` (fractional keeps
    included; ``log 0 = -inf`` removes a key). A batch element without any valid key gets zeros, as the
    official ``F.normalize`` gives. Where the official eps (1e-12) of that renormalisation bites (rows whose
    valid keys hold less than 1e-12 of the softmax, common with 512-channel similarities) the row is scaled
    down as officially, from the kernel's logsumexp and the logits of the masked keys only.

    Queries go through in blocks of ``chunk`` rows (default `auto_query_chunk`); under autograd each
    block is checkpointed, so the backward pass recomputes it and training memory stays O(chunk * N) even
    where PyTorch picks its unfused kernel.
    """
    b, n, _ = theta.shape
    chunk = auto_query_chunk(n) if chunk is None else max(1, int(chunk))
    keep = keep.detach().to(theta.dtype)
    valid = keep.reshape(b, -1).amax(dim=1) > 0  # (B,): any key left to attend to
    keep4 = keep.unsqueeze(1)  # (B,1,1,N)
    bias = torch.log(keep4)  # additive mask
    if not bool(valid.all()):
        bias = torch.where(valid.view(b, 1, 1, 1), bias, torch.zeros_like(bias))
    q = theta.unsqueeze(1)
    k = phi.transpose(1, 2).contiguous().unsqueeze(1)  # (B,1,N,C); the fused CPU kernel needs it contiguous
    v = g.contiguous().unsqueeze(1)
    scale = 1.0 / float(temperature)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (theta, phi, g))
    parts = []
    for s in range(0, n, chunk):
        if grad:
            parts.append(checkpoint(_sdpa_rows, q[:, :, s : s + chunk], k, v, bias, keep4, scale,
                                    use_reentrant=False))
        else:
            parts.append(_sdpa_rows(q[:, :, s : s + chunk], k, v, bias, keep4, scale))
    out = (parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)).squeeze(1)
    if not bool(valid.all()):
        out = out * valid.view(b, 1, 1).to(out.dtype)
    return out


# --------------------------------------------------------------------------------------------


class MaskedNonLocalBlock(nn.Module):
    """Official ``NonLocalBlock2D_with_mask_Res`` with "combine" fusion and row renormalisation."""

    def __init__(
        self,
        channels: int,
        n_res: int = 3,
        temperature: float = 1.0,
        attention: str = "chunked",
        query_chunk: int | None = None,
        chunk_budget: int = 1 << 22,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        # registration order = official state-dict order: g, W, theta, phi, res_block
        self.g = nn.Conv2d(channels, channels, kernel_size=1)
        self.W = nn.Conv2d(channels, channels, kernel_size=1)
        self.theta = nn.Conv2d(channels, channels, kernel_size=1)
        self.phi = nn.Conv2d(channels, channels, kernel_size=1)
        self.res_block = nn.Sequential(*resnet_blocks(n_res, channels, norm))
        self.temperature = temperature
        self.attention = attention
        self.query_chunk = query_chunk
        self.chunk_budget = chunk_budget

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, c, h, w = x.shape
        n = h * w
        if mask is None:
            keep = x.new_ones((b, 1, h, w))
        else:
            keep = mask_keep(check_mask(mask, x), (h, w))  # (B,1,h,w), 1 = valid
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {self.attention!r}")
        if self.attention == "chunked" and bool((keep == 1).all()):
            # out = keep*x + (1-keep)*Y = x exactly: nothing to fill, skip the attention
            return x

        # the 1x1 convolutions as matrix products on (B, N, C) rows: contiguous queries/keys/values for SDPA
        rows = x.reshape(b, c, n).transpose(1, 2)
        g_x, theta_x, phi_x = (F.linear(rows, conv.weight.reshape(c, c), conv.bias) for conv in (self.g, self.theta, self.phi))
        keep_cols = keep.reshape(b, 1, n)
        if self.attention == "direct":
            y = masked_attention_direct(theta_x, phi_x.transpose(1, 2), g_x, keep_cols, self.temperature)
        else:
            chunk = self.query_chunk or auto_query_chunk(n, self.chunk_budget)
            y = masked_attention(theta_x, phi_x.transpose(1, 2), g_x, keep_cols, self.temperature, chunk)
        y = F.linear(y, self.W.weight.reshape(c, c), self.W.bias).transpose(1, 2).reshape(b, c, h, w)
        y = self.res_block(y)
        return keep * x + (1.0 - keep) * y


class NonLocalMappingNet(nn.Module):
    def __init__(self, cfg: NonLocalMappingConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or NonLocalMappingConfig()
        self.cfg = cfg
        self.before_NL = nn.Sequential(*mapping_head(cfg.latent_channels, cfg.width, cfg.norm))
        self.NL = MaskedNonLocalBlock(
            cfg.width,
            n_res=cfg.n_res_nl,
            temperature=cfg.temperature,
            attention=cfg.attention,
            query_chunk=cfg.query_chunk,
            chunk_budget=cfg.chunk_budget,
            norm=cfg.norm,
        )
        self.after_NL = nn.Sequential(
            *resnet_blocks(cfg.n_res_after, cfg.width, cfg.norm),
            *mapping_tail(cfg.latent_channels, cfg.width, cfg.norm),
        )

    @property
    def attention(self) -> str:
        """"chunked" or "direct"; settable on a built network."""
        return self.NL.attention

    @attention.setter
    def attention(self, mode: str) -> None:
        if mode not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {mode!r}")
        self.NL.attention = mode

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """z: (N, latent, h, w); mask: (N|1, 1, H, W) at image resolution, 1 = defect (None = no defects)."""
        if z.dim() != 4 or z.shape[1] != self.cfg.latent_channels:
            raise ValueError(
                f"NonLocalMappingNet expects (N, {self.cfg.latent_channels}, h, w), got {tuple(z.shape)}"
            )
        return self.after_NL(self.NL(self.before_NL(z), mask))
