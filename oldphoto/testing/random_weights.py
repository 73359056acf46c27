"""Randomly initialised oldphoto weights files for every role, for tests and demos (never for restoring): tiny
ones run the whole pipeline in seconds on a CPU."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from oldphoto.models import ROLE_NETWORK, ROLES, WEIGHTS_SUFFIX, _check_role

def random_weights_configs(tiny: bool = True) -> dict[str, Any]:
    """The config of every role for `make_random_weights`: consistent latent widths across the
    VAEs and mappings; tiny ones run the whole pipeline in seconds on a CPU."""
    from oldphoto.networks.registry import config_class

    def cfg(kind: str, **kw: Any) -> Any:
        cls = config_class(kind)
        return cls.tiny(**kw) if tiny else cls.official(**kw)

    vae = cfg("vae")
    out = {
        "vae_a": vae,
        "vae_b_quality": vae,
        "vae_b_scratch": vae,
        "mapping_quality": cfg("mapping"),
        "mapping_scratch": cfg("mapping_nonlocal"),
        "mapping_hr": cfg("mapping_patch_attention"),
        "scratch_unet": cfg("scratch_unet"),
        "face_256": cfg("spade_face", load_size=256),
        "face_512": cfg("spade_face", load_size=512),
        "colour": cfg("colour_mlp"),
        "refiner": cfg("refiner"),
    }
    if tiny:   # the smallest face generators that still produce 256 / 512 px faces
        import dataclasses

        for role in ("face_256", "face_512"):
            out[role] = dataclasses.replace(out[role], ngf=4, spade_hidden=8)
    width = getattr(vae, "channels", None)
    for role in ("mapping_quality", "mapping_scratch", "mapping_hr"):
        if width is not None and getattr(out[role], "latent_channels", width) != width:
            raise ValueError(f"{role}: latent_channels {out[role].latent_channels} != VAE channels {width}")
    return out


def make_random_weights(
    path: str | os.PathLike[str], seed: int = 0, tiny: bool = True, roles: Iterable[str] | None = None
) -> dict[str, str]:
    """Write randomly initialised networks for every role (or ``roles``) as ``<path>/<role>.safetensors``.

    Deterministic for a given seed. Returns role -> file sha256. The files say in their provenance that
    they are random (``{"source": "random", "seed": ...}``): for tests and demos, not for restoring.
    """
    from oldphoto.networks.registry import build
    from oldphoto.weights import save_weights

    path = Path(path)
    configs = random_weights_configs(tiny)
    out: dict[str, str] = {}
    for role in ROLES if roles is None else roles:
        _check_role(role)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1000 + ROLES.index(role))
            net = build(ROLE_NETWORK[role], configs[role])
        out[role] = save_weights(
            path / f"{role}{WEIGHTS_SUFFIX}",
            net,
            ROLE_NETWORK[role],
            configs[role],
            provenance={"source": "random", "seed": seed, "tiny": tiny, "role": role},
        )
    return out
