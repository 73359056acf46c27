"""Loading the official release's checkpoints (Microsoft's Bringing-Old-Photos-Back-to-Life) exactly.

oldphoto's own network modules use the official state-dict key names and shapes when built with
their ``Config.official()``, so no renaming table is needed: a checkpoint's state dict is loaded
strictly as it is (a uniform ``module.`` prefix, as written by DataParallel, is removed).

* `load(name, state_dict)` builds the network for a manifest name (see `MANIFEST_NAMES`) and loads an
  official state dict into it, in eval mode. Calling conventions: VAEs ``.encode(x)``/``.decode(z)``;
  mappings ``module(latent, mask)`` (mask N x 1 x H x W at image resolution, 1 = defect; ignored by
  ``mapping_quality``); ``scratch_unet`` ``module(grey) -> logits``; faces ``module(face) -> face``.
* `load_release(root)` loads the files of the unzipped release (`OFFICIAL_FILES`), by pipeline role,
  with the sha256 of each file. Unlike the official code, a missing file is an error, never a silent
  fall-back to random weights.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from oldphoto.networks import registry
from oldphoto.provenance import CheckpointRef
from oldphoto.weights import describe_problems, file_sha256, state_dict_problems

__all__ = [
    "MANIFEST_NAMES",
    "OFFICIAL_FILES",
    "OFFICIAL_ROLES",
    "OfficialCheckpointError",
    "OfficialFileMissingError",
    "OfficialNet",
    "OfficialRole",
    "find_official_file",
    "load",
    "load_file",
    "load_release",
    "official_config",
]


@dataclass(frozen=True)
class OfficialNet:
    """An official network: oldphoto's network kind and how to make its official config."""

    kind: str
    load_size: int | None = None     # spade_face only

    def config(self) -> Any:
        cls = registry.config_class(self.kind)
        return cls.official(self.load_size) if self.load_size is not None else cls.official()


# manifest name (tests/data/official/manifests/NAME.json) -> network kind + official config
MANIFEST_NAMES: dict[str, OfficialNet] = {
    "vae_a": OfficialNet("vae"),
    "vae_b": OfficialNet("vae"),
    "mapping_quality": OfficialNet("mapping"),
    "mapping_scratch": OfficialNet("mapping_nonlocal"),
    "mapping_Patch_Attention": OfficialNet("mapping_patch_attention"),
    "scratch_unet": OfficialNet("scratch_unet"),
    "face_spade_256": OfficialNet("spade_face", 256),
    "face_spade_512": OfficialNet("spade_face", 512),
}


@dataclass(frozen=True)
class OfficialRole:
    """One file of the official release, as used by the pipeline role of the same name."""

    role: str
    path: str                        # relative to the folder holding Global/ and Face_Enhancement/
    manifest: str                    # key of MANIFEST_NAMES
    purpose: str
    state_key: str | None = None     # the state dict sits under this key of the saved dict


OFFICIAL_ROLES: dict[str, OfficialRole] = {
    r.role: r
    for r in (
        OfficialRole("vae_a", "Global/checkpoints/restoration/VAE_A_quality/latest_net_G.pth", "vae_a",
                     "VAE_A (old-photo encoder, all modes)"),
        OfficialRole("vae_b_quality", "Global/checkpoints/restoration/VAE_B_quality/latest_net_G.pth", "vae_b",
                     "VAE_B (clean-photo decoder, no-scratch mode)"),
        OfficialRole("vae_b_scratch", "Global/checkpoints/restoration/VAE_B_scratch/latest_net_G.pth", "vae_b",
                     "VAE_B (clean-photo decoder, scratch modes)"),
        OfficialRole("mapping_quality",
                     "Global/checkpoints/restoration/mapping_quality/latest_net_mapping_net.pth",
                     "mapping_quality", "latent mapping, no-scratch mode"),
        OfficialRole("mapping_scratch",
                     "Global/checkpoints/restoration/mapping_scratch/latest_net_mapping_net.pth",
                     "mapping_scratch", "latent mapping with partial non-local block, scratch mode"),
        OfficialRole("mapping_hr",
                     "Global/checkpoints/restoration/mapping_Patch_Attention/latest_net_mapping_net.pth",
                     "mapping_Patch_Attention", "latent mapping with patch attention, high-resolution scratch mode"),
        OfficialRole("scratch_unet", "Global/checkpoints/detection/FT_Epoch_latest.pt", "scratch_unet",
                     "scratch-detection U-Net", state_key="model_state"),
        OfficialRole("face_256", "Face_Enhancement/checkpoints/Setting_9_epoch_100/latest_net_G.pth",
                     "face_spade_256", "face enhancement generator, 256 px"),
        OfficialRole("face_512", "Face_Enhancement/checkpoints/FaceSR_512/latest_net_G.pth",
                     "face_spade_512", "face enhancement generator, 512 px (HR mode)"),
    )
}

# role -> path inside the unzipped release
OFFICIAL_FILES: dict[str, str] = {role: r.path for role, r in OFFICIAL_ROLES.items()}


class OfficialCheckpointError(ValueError):
    """An official checkpoint that cannot be loaded exactly: names the file and the offending keys."""

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        file: str | os.PathLike[str] | None = None,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        mismatched: list[tuple[str, Any, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.file = str(file) if file is not None else None
        self.missing = list(missing or [])
        self.unexpected = list(unexpected or [])
        self.mismatched = list(mismatched or [])


class OfficialFileMissingError(OfficialCheckpointError, FileNotFoundError):
    """Files of the official release that are not where they should be."""

    def __init__(self, message: str, *, paths: list[str]) -> None:
        OfficialCheckpointError.__init__(self, message, file=paths[0] if paths else None)
        self.paths = paths

    def __str__(self) -> str:  # FileNotFoundError would format (errno, strerror)
        return str(self.args[0])


def official_config(name: str) -> Any:
    """The official config dataclass of a manifest name."""
    return _net(name).config()


def _net(name: str) -> OfficialNet:
    try:
        return MANIFEST_NAMES[name]
    except KeyError:
        raise OfficialCheckpointError(
            f"unknown official network {name!r}; known: {', '.join(MANIFEST_NAMES)}", name=name
        ) from None


def _strip_prefix(state_dict: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
    keys = list(state_dict)
    if keys and all(k.startswith(prefix) for k in keys):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def load(
    name: str,
    state_dict: Mapping[str, Any],
    *,
    file: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Build oldphoto's network for the official manifest ``name`` and load ``state_dict`` strictly.

    ``state_dict`` has the official key names (for the U-Net, the saved dict with its ``model_state``
    entry is accepted as well). ``file`` only names the source in error messages. Returns the module in
    eval mode on ``device``. Raises `OfficialCheckpointError` naming the file and the first missing,
    unexpected and mis-shaped keys.
    """
    net = _net(name)
    where = f"{file}: " if file is not None else ""
    if not isinstance(state_dict, Mapping):
        raise OfficialCheckpointError(
            f"{where}official checkpoint for {name!r} is a {type(state_dict).__name__}, expected a state dict",
            name=name, file=file,
        )
    inner = state_dict.get("model_state")
    if isinstance(inner, Mapping):
        state_dict = inner
    sd = _strip_prefix(state_dict)
    not_tensors = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise OfficialCheckpointError(
            f"{where}official checkpoint for {name!r} holds non-tensor entries: {', '.join(not_tensors[:5])}",
            name=name, file=file, unexpected=not_tensors,
        )

    module = registry.build(net.kind, net.config())
    missing, unexpected, mismatched = state_dict_problems(module.state_dict(), sd)
    if missing or unexpected or mismatched:
        raise OfficialCheckpointError(
            f"{where}official checkpoint for {name!r} does not match oldphoto's {net.kind!r} network: "
            + describe_problems(missing, unexpected, mismatched),
            name=name, file=file, missing=missing, unexpected=unexpected, mismatched=mismatched,
        )
    module.load_state_dict(sd, strict=True)
    module.eval()
    return module.to(device)


# ----------------------------------------------------------------------------------------------
# the unzipped release


def _candidates(root: Path, rel: str) -> list[Path]:
    """Where ``rel`` (e.g. Global/checkpoints/...) may lie under ``root``.

    Accepted layouts: ``root`` holds Global/ and Face_Enhancement/ (the repository layout, or both zips
    unzipped into their folders); ``root`` is Global/ or Face_Enhancement/ itself, or the folder a zip
    was unzipped into (holding checkpoints/); or either of these one folder further down (e.g. the two
    zips unzipped into separate sub-folders of ``root``).
    """
    parts = Path(rel).parts
    sub = Path(*parts[1:])               # checkpoints/...
    cands = [root / rel, root / sub]
    try:
        subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        subdirs = []
    for d in subdirs:
        cands += [d / rel, d / sub]
    return cands


def find_official_file(root: str | os.PathLike[str], role: str) -> Path | None:
    """The file for ``role`` under the release folder ``root``, or None."""
    rel = _role(role).path
    for c in _candidates(Path(root), rel):
        if c.is_file():
            return c
    return None


def _role(role: str) -> OfficialRole:
    try:
        return OFFICIAL_ROLES[role]
    except KeyError:
        raise ValueError(f"unknown role {role!r}; official roles: {', '.join(OFFICIAL_ROLES)}") from None


def missing_files_message(root: str | os.PathLike[str], roles: Iterable[str]) -> str:
    root = Path(root)
    lines = [f"official release folder {root} lacks these checkpoint files:"]
    for role in roles:
        r = _role(role)
        lines.append(f"  - {root / r.path}  ({r.purpose}; role {role})")
    lines.append(
        "Unzip the official global_checkpoints.zip into Global/ and face_checkpoints.zip into "
        f"Face_Enhancement/ under {root} (the layout of the official repository)."
    )
    return "\n".join(lines)


def load_file(
    path: str | os.PathLike[str], role: str, device: str | torch.device = "cpu", sha256: str | None = None
) -> tuple[nn.Module, CheckpointRef]:
    """Load one official checkpoint file for ``role`` (torch.load with weights_only=True)."""
    r = _role(role)
    path = Path(path)
    if not path.is_file():
        raise OfficialFileMissingError(
            f"official checkpoint file not found: {path} ({r.purpose}; role {role})", paths=[str(path)]
        )
    digest = sha256 or file_sha256(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise OfficialCheckpointError(
            f"{path}: cannot read official checkpoint for {role!r} ({r.purpose}): {e}", name=r.manifest, file=path
        ) from e
    if r.state_key is not None:
        if not isinstance(obj, Mapping) or not isinstance(obj.get(r.state_key), Mapping):
            keys = ", ".join(map(str, list(obj)[:5])) if isinstance(obj, Mapping) else type(obj).__name__
            raise OfficialCheckpointError(
                f"{path}: expected a dict with the state dict under {r.state_key!r} ({r.purpose}); found {keys}",
                name=r.manifest, file=path,
            )
        obj = obj[r.state_key]
    module = load(r.manifest, obj, file=path, device=device)
    return module, CheckpointRef(name=role, file=str(path), sha256=digest)


def load_release(
    root: str | os.PathLike[str],
    roles: Iterable[str] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, tuple[nn.Module, CheckpointRef]]:
    """Load the official checkpoints under ``root`` for ``roles`` (default: all of `OFFICIAL_FILES`).

    Every requested file must be present; otherwise `OfficialFileMissingError` lists each missing file
    with its expected path and what it is for.
    """
    root = Path(root)
    roles = list(OFFICIAL_ROLES) if roles is None else list(roles)
    for role in roles:
        _role(role)
    if not root.is_dir():
        raise OfficialFileMissingError(
            f"official release folder not found: {root}", paths=[str(root / OFFICIAL_FILES[r]) for r in roles]
        )
    found = {role: find_official_file(root, role) for role in roles}
    missing = [role for role, p in found.items() if p is None]
    if missing:
        raise OfficialFileMissingError(
            missing_files_message(root, missing), paths=[str(root / OFFICIAL_FILES[r]) for r in missing]
        )
    return {role: load_file(found[role], role, device=device) for role in roles}
