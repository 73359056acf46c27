"""Latent mapping with a partial (masked) nonlocal block, for scratched photos.

Official ``Mapping_Model_with_mask`` (``mapping_scratch``), ARCHITECTURE.md §4:

    out = after_NL( NL( before_NL(z), mask ) )

* ``before_NL``: four conv-IN-ReLU triples, latent -> width (no residual blocks).
* ``NL``: 1x1 convs ``g``, ``W``, ``theta``, ``phi`` and ``res_block`` (3 residual blocks). Queries attend
  only to valid (unscratched) key positions; the result replaces the features at scratched positions.
* ``after_NL``: 6 residual blocks, three conv-IN-ReLU triples and a plain conv back to the latent.

The official code materialises the full (HW x HW) attention matrix, so memory grows with the fourth
power of the image side. Here the attention is computed in blocks of query rows: each row's softmax,
column masking and L1 renormalisation depend on that row only, so the chunked result is the same
formula with O(chunk * HW) memory. ``attention="direct"`` keeps the literal unchunked path (tests and
reference). Under autograd the backward pass recomputes each chunk, so training stays O(chunk * HW) too.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

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
    attention: str = "chunked"  # "chunked" (O(chunk*HW) memory) or "direct" (literal O(HW^2) formula)
    query_chunk: int | None = None  # query rows per chunk; None = derived from chunk_budget
    chunk_budget: int = 1 << 22  # max elements of one (chunk x HW) similarity block when query_chunk is None
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


def _attention_rows(
    q: torch.Tensor, phi: torch.Tensor, g: torch.Tensor, keep: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``masked_attention_direct`` for a block of query rows (every step is row-local); no autograd."""
    f = torch.matmul(q, phi)
    if temperature != 1.0:
        f.div_(temperature)
    a = F.softmax(f, dim=-1)
    del f
    # softmax >= 0 and keep >= 0 (masks are validated to [0, 1]), so the L1 norm is the plain row sum
    a.mul_(keep)
    a.div_(a.sum(dim=-1, keepdim=True).clamp_min_(1e-12))
    return torch.matmul(a, g)


def auto_query_chunk(n: int, budget: int = 1 << 22) -> int:
    """Query rows per chunk so that one (chunk x n) block holds at most ``budget`` elements."""
    return max(1, min(n, budget // max(n, 1)))


def _chunked_forward(theta, phi, g, keep, temperature: float, chunk: int) -> torch.Tensor:
    b, n, _ = theta.shape
    out = g.new_empty((b, n, g.shape[-1]))
    for s in range(0, n, chunk):
        out[:, s : s + chunk] = _attention_rows(theta[:, s : s + chunk], phi, g, keep, temperature)
    return out


class _ChunkedMaskedAttention(torch.autograd.Function):
    """Chunked forward; the backward recomputes each chunk's attention, so it is O(chunk * N) too.

    No gradient flows to ``keep`` (it comes from the defect mask).
    """

    @staticmethod
    def forward(ctx, theta, phi, g, keep, temperature, chunk):  # type: ignore[override]
        out = _chunked_forward(theta, phi, g, keep, temperature, chunk)
        ctx.save_for_backward(theta, phi, g, keep)
        ctx.temperature, ctx.chunk = temperature, chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        theta, phi, g, keep = ctx.saved_tensors
        t, chunk = ctx.temperature, ctx.chunk
        n = theta.shape[1]
        d_theta = torch.zeros_like(theta) if ctx.needs_input_grad[0] else None
        d_phi = torch.zeros_like(phi) if ctx.needs_input_grad[1] else None
        d_g = torch.zeros_like(g) if ctx.needs_input_grad[2] else None
        for s in range(0, n, chunk):
            q, dy = theta[:, s : s + chunk], grad_out[:, s : s + chunk]
            a = F.softmax(torch.matmul(q, phi) / t, dim=-1)  # (B,c,N)
            bk = a * keep
            rs = bk.sum(dim=-1, keepdim=True)
            r = rs.clamp_min(1e-12)
            p = bk / r
            if d_g is not None:
                d_g += torch.matmul(p.transpose(1, 2), dy)
            if d_theta is None and d_phi is None:
                continue
            dp = torch.matmul(dy, g.transpose(1, 2))  # (B,c,N)
            # p = bk / max(sum bk, eps): the sum only depends on bk where it exceeds eps
            dp_dot_p = (dp * p).sum(dim=-1, keepdim=True)
            db = (dp - torch.where(rs > 1e-12, dp_dot_p, torch.zeros_like(dp_dot_p))) / r
            da = db * keep
            df = a * (da - (da * a).sum(dim=-1, keepdim=True))
            if t != 1.0:
                df = df / t
            if d_theta is not None:
                d_theta[:, s : s + chunk] = torch.matmul(df, phi.transpose(1, 2))
            if d_phi is not None:
                d_phi += torch.matmul(q.transpose(1, 2), df)
        return d_theta, d_phi, d_g, None, None, None


def masked_attention(
    theta: torch.Tensor,
    phi: torch.Tensor,
    g: torch.Tensor,
    keep: torch.Tensor,
    temperature: float = 1.0,
    chunk: int | None = None,
) -> torch.Tensor:
    """Partial nonlocal attention computed in blocks of ``chunk`` query rows (memory O(chunk * N)).

    Same result as ``masked_attention_direct`` (up to float summation order), forward and backward.
    """
    n = theta.shape[1]
    chunk = auto_query_chunk(n) if chunk is None else max(1, int(chunk))
    keep = keep.detach()
    if torch.is_grad_enabled() and any(t.requires_grad for t in (theta, phi, g)):
        return _ChunkedMaskedAttention.apply(theta, phi, g, keep, float(temperature), chunk)
    with torch.no_grad():
        return _chunked_forward(theta, phi, g, keep, float(temperature), chunk)


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

        g_x = self.g(x).reshape(b, c, n).transpose(1, 2)  # (B,N,C)
        theta_x = self.theta(x).reshape(b, c, n).transpose(1, 2)  # (B,N,C)
        phi_x = self.phi(x).reshape(b, c, n)  # (B,C,N)
        keep_cols = keep.reshape(b, 1, n)
        if self.attention == "direct":
            y = masked_attention_direct(theta_x, phi_x, g_x, keep_cols, self.temperature)
        else:
            chunk = self.query_chunk or auto_query_chunk(n, self.chunk_budget)
            y = masked_attention(theta_x, phi_x, g_x, keep_cols, self.temperature, chunk)
        y = y.transpose(1, 2).reshape(b, c, h, w)
        y = self.res_block(self.W(y))
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
