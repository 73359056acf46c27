"""Deterministic stand-in weights for an official-layout checkpoint.

`seeded_state_dict(manifest, seed)` builds, from a manifest (the official state dict as ordered
``[key, shape, dtype]`` entries, ``tests/data/official/manifests/NAME.json``), the same tensors on
every machine with the same torch version. The official goldens (``tests/data/official/golden/``)
hold the official implementation's outputs on exactly these tensors, so loading them through
`oldphoto.compat.official.load` and comparing outputs proves the official checkpoints load exactly.

The values, entry by entry in manifest order, from one ``torch.Generator`` seeded once:

- integer tensors (``num_batches_tracked``): zeros; nothing is drawn;
- anti-aliasing filters (leaf ``filt``, shape (C, 1, 3, 3)): the binomial filter
  [1,2,1] x [1,2,1] / 16 for every channel; nothing is drawn;
- any other tensor draws ``t = randn(shape)``, then by leaf name: ``running_mean`` 0.1 t,
  ``running_var`` 0.5 + |t|, ``bias`` 0.01 t, a 1-D ``weight`` 1 + 0.1 t, a ``weight`` /
  ``weight_orig`` of two or more dimensions t / sqrt(fan_in) (fan_in = product of shape[1:]),
  anything else t as drawn;
- finally each spectral-norm pair ``weight_u`` / ``weight_v`` (drawn above only to keep the random
  stream aligned) is replaced by 30 power-iteration steps on ``weight_orig`` viewed as
  (out, -1), starting from v = ones / |ones|.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import torch

POWER_ITERATIONS = 30


def load_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest JSON at ``path``."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm().clamp_min(1e-12)


def _binomial_filter(shape: list[int]) -> torch.Tensor:
    row = torch.tensor([1.0, 2.0, 1.0])
    k = torch.outer(row, row)
    return (k / k.sum()).expand(shape).contiguous()


def _scaled(leaf: str, t: torch.Tensor) -> torch.Tensor:
    if leaf == "running_mean":
        return 0.1 * t
    if leaf == "running_var":
        return 0.5 + t.abs()
    if leaf == "bias":
        return 0.01 * t
    if leaf in ("weight", "weight_orig"):
        return t / math.sqrt(math.prod(t.shape[1:])) if t.dim() >= 2 else 1.0 + 0.1 * t
    return t


def _power_iteration(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w = weight.reshape(weight.shape[0], -1)
    v = _unit(torch.ones(w.shape[1]))
    u = v
    for _ in range(POWER_ITERATIONS):
        u = _unit(w @ v)
        v = _unit(w.t() @ u)
    return u, v


def seeded_state_dict(manifest: dict[str, Any], seed: int = 20260) -> dict[str, torch.Tensor]:
    """The seeded stand-in state dict for ``manifest`` (rules in the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for key, shape, dtype in manifest["state_dict"]:
        leaf = key.rsplit(".", 1)[-1]
        if dtype.startswith("int"):
            sd[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
        elif leaf == "filt":
            sd[key] = _binomial_filter(shape)
        else:
            sd[key] = _scaled(leaf, torch.randn(shape, generator=gen))
    for key in [k for k in sd if k.endswith(".weight_u")]:
        base = key.removesuffix("_u")
        sd[base + "_u"], sd[base + "_v"] = _power_iteration(sd[base + "_orig"])
    return sd
