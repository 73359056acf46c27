"""Spectrally normalised 2-D convolution whose state dict matches the official checkpoints.

The official face generator wraps some convolutions with ``torch.nn.utils.spectral_norm`` (version 1),
which leaves these state-dict entries, in this order:

    bias (if any), weight_orig, weight_u, weight_v

``SNConv2d`` stores exactly those tensors (``bias`` and ``weight_orig`` are parameters, ``weight_u`` and
``weight_v`` buffers) and computes the effective weight ``weight_orig / sigma`` with

    sigma = u . (W v),   W = weight_orig reshaped to (out_channels, -1)

* eval mode: u and v are used exactly as stored (no power iteration, no re-normalisation, no abs),
  which is what the official networks do at inference time;
* training mode: first one power-iteration step updates u and v in place (no gradient through them),
  then sigma is computed from the updated vectors, with the gradient flowing through ``weight_orig``.

We do not use ``torch.nn.utils.spectral_norm``: its hooks and version handling differ from plain key
loading, and its parametrisation successor stores different key names.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SNConv2d", "spectral_sigma"]


def _normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    return x / x.norm().clamp_min(eps)


def spectral_sigma(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sigma = u . (W v) with W = ``weight`` flattened to (out, -1); differentiable in ``weight``."""
    w_mat = weight.reshape(weight.shape[0], -1)
    return torch.dot(u, torch.mv(w_mat, v))


class SNConv2d(nn.Module):
    """``Conv2d`` with spectral normalisation of its weight (dim 0), official key layout."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        n_power_iterations: int = 1,
        eps: float = 1e-12,
        init_power_iterations: int = 15,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        # Registration order fixes the state-dict order: bias, weight_orig, weight_u, weight_v.
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.weight_orig = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        fan = in_channels * kernel_size * kernel_size
        self.register_buffer("weight_u", torch.empty(out_channels))
        self.register_buffer("weight_v", torch.empty(fan))
        self.reset_parameters(init_power_iterations)

    def reset_parameters(self, power_iterations: int = 15) -> None:
        """Conv2d's default init; u, v random unit vectors refined by a few power iterations so that a
        freshly built module already normalises sensibly in eval mode."""
        nn.init.kaiming_uniform_(self.weight_orig, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight_orig[0].numel()
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)
        with torch.no_grad():
            self.weight_u.copy_(_normalize(torch.randn(self.out_channels), self.eps))
            self.weight_v.copy_(_normalize(torch.randn(self.weight_v.numel()), self.eps))
            self.power_iteration(power_iterations)

    @torch.no_grad()
    def power_iteration(self, steps: int = 1) -> None:
        """Update the stored u and v in place by ``steps`` power-iteration steps (v first, then u)."""
        w_mat = self.weight_orig.detach().reshape(self.out_channels, -1)
        u, v = self.weight_u, self.weight_v
        for _ in range(steps):
            v.copy_(_normalize(torch.mv(w_mat.t(), u), self.eps))
            u.copy_(_normalize(torch.mv(w_mat, v), self.eps))

    def sigma(self) -> torch.Tensor:
        """The current spectral-norm estimate u . (W v) from the stored vectors."""
        return spectral_sigma(self.weight_orig, self.weight_u, self.weight_v)

    def normalized_weight(self) -> torch.Tensor:
        """The effective convolution weight ``weight_orig / sigma``."""
        return self.weight_orig / self.sigma()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.n_power_iterations > 0:
            self.power_iteration(self.n_power_iterations)
        return F.conv2d(x, self.normalized_weight(), self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
        )
