"""The set of networks the restoration pipeline uses, by role, loaded lazily and once per process.

Roles (`ROLES`):

==================  =============================================  =================
role                what it does                                   network kind
==================  =============================================  =================
``vae_a``           encodes old photos into the latent space        vae
``vae_b_quality``   decodes restored latents (no-scratch mode)     vae
``vae_b_scratch``   decodes restored latents (scratch modes)       vae
``mapping_quality`` latent mapping, no-scratch mode                 mapping
``mapping_scratch`` latent mapping with masked non-local block      mapping_nonlocal
``mapping_hr``      latent mapping with patch attention (HR)        mapping_patch_attention
``scratch_unet``    scratch detection                               scratch_unet
``face_256``        face enhancement, 256 px                        spade_face
``face_512``        face enhancement, 512 px (HR mode)              spade_face
``colour``          global tone/colour correction (optional; not    colour_mlp
                    in the official method, no official file)
``refiner``         detail refiner after stage 1 (optional; not     refiner
                    in the official method, no official file)
==================  =============================================  =================

Sources:

* `ModelSet.from_weights_dir(dir)`: oldphoto's own weights files ``<dir>/<role>.safetensors``
  (`oldphoto.weights`), e.g. written by ``oldphoto train``;
* `ModelSet.from_official(root)`: the unzipped official release (`oldphoto.compat.official`);
* `ModelSet.default()`: the weights shipped in the package folder ``oldphoto/weights/``.

Entry points name a source with `oldphoto.weights_source.WeightsSource` ("default", a folder, "official:/path";
the CLI's --weights/--official) and get their ModelSet from its `load(device)`.

Models are loaded on first `get` and cached for the whole process, keyed by file, its size and modification
time, and device: the one model cache, so several ModelSets, stages or actors naming the same files share one copy
(`clear_cache()` forgets them).
Returned modules are in eval mode with gradients off, their convolution weights in channels-last memory order
(the same numbers, a faster layout for the CPU's and GPU's convolution kernels: `benchmarks/bench_memory_format.py`
measures it against the default layout); treat them as read-only.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from oldphoto.provenance import CheckpointRef

__all__ = [
    "DEFAULT_WEIGHTS_DIR",
    "ROLES",
    "ROLE_NETWORK",
    "ROLE_PURPOSE",
    "MissingWeightsError",
    "ModelSet",
    "clear_cache",
]

ROLES: tuple[str, ...] = (
    "vae_a",
    "vae_b_quality",
    "vae_b_scratch",
    "mapping_quality",
    "mapping_scratch",
    "mapping_hr",
    "scratch_unet",
    "face_256",
    "face_512",
    "colour",
    "refiner",
)

ROLE_NETWORK: dict[str, str] = {
    "vae_a": "vae",
    "vae_b_quality": "vae",
    "vae_b_scratch": "vae",
    "mapping_quality": "mapping",
    "mapping_scratch": "mapping_nonlocal",
    "mapping_hr": "mapping_patch_attention",
    "scratch_unet": "scratch_unet",
    "face_256": "spade_face",
    "face_512": "spade_face",
    "colour": "colour_mlp",
    "refiner": "refiner",
}

ROLE_PURPOSE: dict[str, str] = {
    "vae_a": "VAE_A, encodes old photos into the latent space",
    "vae_b_quality": "VAE_B, decodes restored latents (no-scratch mode)",
    "vae_b_scratch": "VAE_B, decodes restored latents (scratch modes)",
    "mapping_quality": "latent mapping, no-scratch mode",
    "mapping_scratch": "latent mapping with masked non-local block, scratch mode",
    "mapping_hr": "latent mapping with patch attention, high-resolution scratch mode",
    "scratch_unet": "scratch-detection U-Net",
    "face_256": "face enhancement generator, 256 px",
    "face_512": "face enhancement generator, 512 px (HR mode)",
    "colour": "global tone/colour correction regressor (optional)",
    "refiner": "detail refiner after stage 1 (optional)",
}

# how each role is trained (shown in MissingWeightsError)
_TRAIN_HINT: dict[str, str] = {
    "vae_a": "oldphoto train vae-a",
    "vae_b_quality": "oldphoto train vae-b",
    "vae_b_scratch": "oldphoto train vae-b",
    "mapping_quality": "oldphoto train mapping --kind quality",
    "mapping_scratch": "oldphoto train mapping --kind scratch",
    "mapping_hr": "oldphoto train mapping --kind hr",
    "scratch_unet": "oldphoto train scratch",
    "face_256": "oldphoto train face",
    "face_512": "oldphoto train face",
    "colour": "oldphoto train colour",
    "refiner": "oldphoto train refiner",
}

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_SUFFIX = ".safetensors"


def _check_role(role: str) -> str:
    if role not in ROLE_NETWORK:
        raise KeyError(f"unknown model role {role!r}; roles: {', '.join(ROLES)}")
    return role


class MissingWeightsError(FileNotFoundError):
    """Model weights a run needs are not there. The message lists each missing role, the file expected
    for it and the folder searched, and how to get the weights."""

    def __init__(
        self,
        roles: Sequence[str] | str,
        *,
        files: dict[str, str] | None = None,
        folder: str | os.PathLike[str] | None = None,
        source: str = "weights",
    ) -> None:
        if isinstance(roles, str) and roles not in ROLE_NETWORK:   # a ready-made message
            self.roles: list[str] = []
            self.files: dict[str, str] = {}
            self.folder = str(folder) if folder is not None else None
            self.source = source
            message = roles
        else:
            self.roles = [roles] if isinstance(roles, str) else list(roles)
            self.files = dict(files or {})
            self.folder = str(folder) if folder is not None else None
            self.source = source
            message = self._message()
        super().__init__(message)

    def __str__(self) -> str:  # FileNotFoundError would format (errno, strerror)
        return str(self.args[0])

    def _message(self) -> str:
        kind = "official release" if self.source == "official" else "oldphoto weights"
        where = f" in {kind} folder {self.folder}" if self.folder else ""
        if self.folder and not Path(self.folder).is_dir():
            where += " (the folder does not exist)"
        lines = [f"missing model weights for {len(self.roles)} role(s){where}:"]
        for role in self.roles:
            f = self.files.get(role)
            purpose = ROLE_PURPOSE.get(role, "")
            lines.append(f"  - {role}: {f or '(no file)'}" + (f"  ({purpose})" if purpose else ""))
        lines.append("How to get them:")
        hints = list(dict.fromkeys(_TRAIN_HINT[r] for r in self.roles if r in _TRAIN_HINT))
        lines.append(
            "  - train them: "
            + ("; ".join(f"`{h}`" for h in hints) if hints else "`oldphoto train ...`")
            + " (or `oldphoto train all`), which write <role>.safetensors files; pass their folder with "
            "--weights DIR;"
        )
        lines.append(
            "  - or use Microsoft's official release: unzip global_checkpoints.zip into DIR/Global and "
            "face_checkpoints.zip into DIR/Face_Enhancement, then pass --official DIR;"
        )
        lines.append("  - or point --weights DIR at another folder holding <role>.safetensors files.")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# process-wide caches

_cache: dict[tuple, tuple[nn.Module, CheckpointRef]] = {}
_sha_cache: dict[tuple, str] = {}
_locks: dict[tuple, threading.Lock] = {}
_global_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every loaded model (frees their memory once no one else holds them)."""
    with _global_lock:
        _cache.clear()
        _sha_cache.clear()
        _locks.clear()


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _lock_for(key: tuple) -> threading.Lock:
    with _global_lock:
        return _locks.setdefault(key, threading.Lock())


def _sha256(path: Path) -> str:
    from oldphoto.weights import file_sha256

    key = _file_key(path)
    sha = _sha_cache.get(key)
    if sha is None:
        sha = file_sha256(path)
        _sha_cache[key] = sha
    return sha


def _freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no gradients, 4-d weights channels-last (module doc)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module.to(memory_format=torch.channels_last)


class ModelSet:
    """The pipeline's networks by role, from one source folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], *, source: str = "weights", device: str | torch.device = "cpu"):
        if source not in ("weights", "official"):
            raise ValueError(f"source must be 'weights' or 'official', got {source!r}")
        self.root = Path(root)
        self.source = source
        self._device = str(torch.device(device))
        self._models: dict[str, nn.Module] = {}
        self._refs: dict[str, CheckpointRef] = {}

    # -- construction
    @classmethod
    def from_weights_dir(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> "ModelSet":
        """oldphoto weights files ``<path>/<role>.safetensors``."""
        return cls(path, source="weights", device=device)

    @classmethod
    def from_official(cls, root: str | os.PathLike[str], device: str | torch.device = "cpu") -> "ModelSet":
        """The unzipped official release under ``root`` (holding Global/ and Face_Enhancement/)."""
        return cls(root, source="official", device=device)

    @classmethod
    def default(cls, device: str | torch.device = "cpu") -> "ModelSet":
        """The weights shipped with oldphoto (package folder ``oldphoto/weights/``)."""
        return cls(DEFAULT_WEIGHTS_DIR, source="weights", device=device)

    def __repr__(self) -> str:
        return f"ModelSet({self.source}={str(self.root)!r}, device={self._device!r})"

    def __getstate__(self) -> dict[str, Any]:   # pickled for Ray workers: ship the location, not the models
        d = self.__dict__.copy()
        d["_models"] = {}
        return d

    # -- where things are
    @property
    def device(self) -> str:
        return self._device

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles this source can have: every role for our weights; for the official release, its files
        (oldphoto's own additions, e.g. the colour regressor, have no official counterpart)."""
        if self.source == "weights":
            return ROLES
        from oldphoto.compat.official import OFFICIAL_FILES

        return tuple(r for r in ROLES if r in OFFICIAL_FILES)

    def path(self, role: str) -> Path:
        """The file used for ``role`` (where it is expected, if it is missing)."""
        _check_role(role)
        if self.source == "weights":
            return self.root / f"{role}{WEIGHTS_SUFFIX}"
        from oldphoto.compat.official import OFFICIAL_FILES, find_official_file

        if role not in OFFICIAL_FILES:          # oldphoto's own additions have no official file
            return self.root / f"{role}{WEIGHTS_SUFFIX}"
        found = find_official_file(self.root, role) if self.root.is_dir() else None
        return found if found is not None else self.root / OFFICIAL_FILES[role]

    def has(self, role: str) -> bool:
        return self.path(role).is_file()

    def available(self) -> list[str]:
        return [r for r in ROLES if self.has(r)]

    def missing(self, roles: Iterable[str] | None = None) -> list[str]:
        return [r for r in (self.roles if roles is None else roles) if not self.has(r)]

    def require(self, roles: Iterable[str] | None = None) -> None:
        """Raise `MissingWeightsError` naming every one of ``roles`` (default: all) that is missing."""
        missing = self.missing(roles)
        if missing:
            raise self._missing_error(missing)

    def _missing_error(self, roles: list[str]) -> MissingWeightsError:
        return MissingWeightsError(
            roles, files={r: str(self.path(r)) for r in roles}, folder=self.root, source=self.source
        )

    # -- loading
    def get(self, role: str) -> nn.Module:
        """The network for ``role``: loaded on first use (eval mode, no gradients, on `device`)."""
        _check_role(role)
        module = self._models.get(role)
        if module is None:
            module, ref = self._load(role)
            self._models[role] = module
            self._refs[role] = ref
        return module

    def _load(self, role: str) -> tuple[nn.Module, CheckpointRef]:
        path = self.path(role)
        if not path.is_file():
            raise self._missing_error([role])
        key = (self.source, role, *_file_key(path), self._device)
        hit = _cache.get(key)
        if hit is not None:
            return hit
        with _lock_for(key):
            hit = _cache.get(key)
            if hit is not None:
                return hit
            if self.source == "weights":
                from oldphoto.weights import load_weights

                module, info = load_weights(path, expect_network=ROLE_NETWORK[role], device=self._device)
                _sha_cache[_file_key(path)] = info.file_sha256
                ref = CheckpointRef(name=role, file=str(path), sha256=info.file_sha256)
            else:
                from oldphoto.compat.official import load_file

                module, ref = load_file(path, role, device=self._device, sha256=_sha256(path))
            hit = (_freeze(module), ref)
            _cache[key] = hit
            return hit

    def checkpoint(self, role: str) -> CheckpointRef:
        """``CheckpointRef(name=role, file=path, sha256=file sha256)``; does not load the network."""
        _check_role(role)
        if role in self._refs:
            return self._refs[role]
        path = self.path(role)
        if not path.is_file():
            raise self._missing_error([role])
        return CheckpointRef(name=role, file=str(path), sha256=_sha256(path))

    def config(self, role: str) -> Any:
        """The config dataclass of ``role``'s network, read from the file header (no network built)."""
        _check_role(role)
        if role in self._models and hasattr(self._models[role], "cfg"):
            return self._models[role].cfg
        if self.source == "official":
            from oldphoto.compat.official import OFFICIAL_ROLES, official_config

            return official_config(OFFICIAL_ROLES[role].manifest)
        path = self.path(role)
        if not path.is_file():
            raise self._missing_error([role])
        from oldphoto.weights import read_info

        return read_info(path).config

    def operating_point(self, role: str) -> dict[str, Any]:
        """Settings a weights file recommends for its network (e.g. the scratch detector's "threshold" and
        "auto_min_coverage", chosen on val), from the file header; {} for official checkpoints or none stored."""
        _check_role(role)
        if self.source != "weights":
            return {}
        path = self.path(role)
        if not path.is_file():
            raise self._missing_error([role])
        from oldphoto.weights import read_info

        return dict(read_info(path).provenance.get("operating_point") or {})

    def fingerprint(self, roles: Iterable[str] | None = None) -> str:
        """A stable hex digest over the sha256 of the checkpoints of ``roles`` (default: all available).

        Equal fingerprints mean the same weights: used to skip work already done with them.
        """
        roles = sorted(self.available() if roles is None else set(roles))
        h = hashlib.sha256(b"oldphoto.models.fingerprint/1\n")
        for role in roles:
            h.update(f"{role}={self.checkpoint(role).sha256}\n".encode())
        return h.hexdigest()
