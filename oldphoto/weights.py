"""oldphoto's own weights format: one safetensors file per network, self-describing.

A weights file holds the network's state dict (tensors) and, in the safetensors JSON header, string
metadata:

==================  ===========================================================================
``format``          ``"oldphoto.weights"``
``format_version``  ``"1"``
``network``         the network kind (`oldphoto.networks.registry.NETWORKS`), e.g. ``"vae"``
``config``          the network's config dataclass as JSON (`config_to_dict`)
``provenance``      JSON dict of how the weights were made (suggested keys: ``data``, ``steps``,
                    ``hardware``, ``wall_time_s``, ``metrics``, ``source``); ``{}`` if unknown
``payload_sha256``  sha256 over the tensors (names, dtypes, shapes and bytes, in name order), checked
                    on every load
``dtype``           ``"float32"`` or ``"float16"`` (storage dtype of the floating tensors)
==================  ===========================================================================

fp16 storage halves the file; floating tensors are converted back to float32 when loaded. Files are
deterministic: saving the same weights twice gives byte-identical files (no timestamps are added).

    sha = save_weights("vae_a.safetensors", net, "vae", cfg, provenance={"steps": 1000})
    net, info = load_weights("vae_a.safetensors", expect_network="vae")
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from oldphoto.digest import file_sha256
from oldphoto.networks import registry

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "WeightsError",
    "WeightsFormatError",
    "WeightsMismatchError",
    "WeightsInfo",
    "file_sha256",
    "load_weights",
    "payload_sha256",
    "read_info",
    "save_weights",
    "state_dict_problems",
]

FORMAT = "oldphoto.weights"
FORMAT_VERSION = 1
_MAX_LISTED = 5


class WeightsError(ValueError):
    """Base class of weights-file errors."""


class WeightsFormatError(WeightsError):
    """The file is not a valid oldphoto weights file (bad header, missing metadata, sha256 mismatch)."""


class WeightsMismatchError(WeightsError):
    """The file is valid but holds a different network or config than expected, or keys do not fit."""


@dataclass
class WeightsInfo:
    """What a weights file says about itself."""

    path: str
    network: str
    config: Any                      # the config dataclass instance
    config_dict: dict[str, Any]
    provenance: dict[str, Any]
    format_version: int
    payload_sha256: str
    file_sha256: str
    dtype: str                       # storage dtype of floating tensors: "float32" | "float16"
    oldphoto_version: str = ""
    num_tensors: int = 0
    num_parameters: int | None = None   # filled in by load_weights
    extra: dict[str, str] = field(default_factory=dict)   # other header metadata


# ----------------------------------------------------------------------------------------------
# hashing


def payload_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state dict: for each name in sorted order, name, dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        h.update(name.encode("utf-8") + b"\0")
        h.update(f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}".encode() + b"\0")
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# strict key checking (shared with oldphoto.compat.official)


def state_dict_problems(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, Any]
) -> tuple[list[str], list[str], list[tuple[str, tuple[int, ...], tuple[int, ...]]]]:
    """(missing keys, unexpected keys, [(key, expected shape, given shape)]) in ``expected``'s order."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = []
    for k, ref in expected.items():
        if k in given:
            got = given[k]
            got_shape = tuple(got.shape) if hasattr(got, "shape") else None
            if got_shape != tuple(ref.shape):
                mismatched.append((k, tuple(ref.shape), got_shape))
    return missing, unexpected, mismatched


def describe_problems(
    missing: list[str],
    unexpected: list[str],
    mismatched: list[tuple[str, Any, Any]],
    limit: int = _MAX_LISTED,
) -> str:
    """One line per kind of problem, naming the first ``limit`` keys."""

    def first(keys: list[str]) -> str:
        more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {first(unexpected)}")
    if mismatched:
        items = [
            f"{k} (network expects {list(a)}, file has {list(b) if b is not None else 'no tensor'})"
            for k, a, b in mismatched
        ]
        parts.append(f"{len(mismatched)} shape mismatch(es): {first(items)}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------------------------
# save


def save_weights(
    path: str | os.PathLike[str],
    module: nn.Module,
    network: str,
    config: Any,
    provenance: Mapping[str, Any] | None = None,
    fp16: bool = False,
) -> str:
    """Write ``module``'s state dict in oldphoto's format; returns the file's sha256.

    ``network`` is the registry kind and ``config`` the config dataclass (or dict) the module was built
    from; both are checked against the registry so that the file can be rebuilt by `load_weights`.
    """
    from oldphoto import __version__

    config_cls = registry.config_class(network)
    if isinstance(config, Mapping):
        config = registry.config_from_dict(config_cls, config)
    if not isinstance(config, config_cls):
        raise TypeError(f"network {network!r} needs a {config_cls.__name__}, got {type(config).__name__}")
    config_dict = registry.config_to_dict(config)
    provenance = dict(provenance or {})
    try:
        provenance_json = json.dumps(provenance, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"provenance must be JSON-serialisable: {e}") from None

    tensors: dict[str, torch.Tensor] = {}
    for name, t in module.state_dict().items():
        t = t.detach().to("cpu")
        if t.is_floating_point():
            if fp16:
                h = t.to(torch.float16)
                if not torch.isfinite(h).all() and torch.isfinite(t).all():
                    raise ValueError(f"tensor {name!r} does not fit in float16 (values up to {t.abs().max():.3g})")
                t = h
            elif t.dtype != torch.float32:
                t = t.to(torch.float32)
        tensors[name] = t.contiguous().clone()  # own storage: safetensors refuses shared tensors

    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "network": network,
        "config": json.dumps(config_dict, sort_keys=True),
        "provenance": provenance_json,
        "payload_sha256": payload_sha256(tensors),
        "dtype": "float16" if fp16 else "float32",
        "oldphoto_version": __version__,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _write_safetensors(tmp, tensors, metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; weights files are shared (and shipped in the package)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return file_sha256(path)


def set_operating_point(path: str | os.PathLike[str], point: Mapping[str, Any]) -> str:
    """Store the settings chosen for a trained network (e.g. the detector's threshold, chosen on val) in its file's
    provenance as "operating_point"; same tensors, same storage precision. Returns the new file sha256."""
    module, info = load_weights(path)
    prov = {**info.provenance, "operating_point": dict(point)}
    return save_weights(path, module, info.network, info.config, provenance=prov, fp16=info.dtype == "float16")


def _write_safetensors(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """safetensors.torch.save, with the JSON header re-serialised with sorted keys: the library keeps
    metadata in a hash map, so its header order (and hence the file's sha256) varies between runs."""
    from safetensors.torch import save

    raw = memoryview(save(tensors, metadata=metadata))
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(bytes(raw[8 : 8 + n]))
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)          # keep the data 8-byte aligned, as the library does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(raw[8 + n :])


# ----------------------------------------------------------------------------------------------
# load


def _read(path: Path, with_tensors: bool) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except Exception as e:  # safetensors raises its own error types for a corrupt header
        raise WeightsFormatError(f"{path}: not a readable safetensors file ({e})") from e
    return metadata, tensors


def _info_from_metadata(path: Path, metadata: dict[str, str], file_sha: str) -> WeightsInfo:
    if metadata.get("format") != FORMAT:
        raise WeightsFormatError(
            f"{path}: not an oldphoto weights file (header 'format' is {metadata.get('format')!r}, "
            f"expected {FORMAT!r})"
        )
    try:
        version = int(metadata["format_version"])
    except (KeyError, ValueError):
        raise WeightsFormatError(f"{path}: missing or bad 'format_version' in header") from None
    if version > FORMAT_VERSION:
        raise WeightsFormatError(
            f"{path}: weights format version {version} is newer than this oldphoto understands "
            f"({FORMAT_VERSION}); upgrade oldphoto"
        )
    for key in ("network", "config", "payload_sha256"):
        if key not in metadata:
            raise WeightsFormatError(f"{path}: header lacks {key!r}")
    network = metadata["network"]
    if network not in registry.NETWORKS:
        raise WeightsFormatError(
            f"{path}: unknown network kind {network!r} (known: {', '.join(registry.NETWORKS)})"
        )
    try:
        config_dict = json.loads(metadata["config"])
        provenance = json.loads(metadata.get("provenance", "{}"))
    except json.JSONDecodeError as e:
        raise WeightsFormatError(f"{path}: bad JSON in header: {e}") from None
    try:
        config = registry.config_from_dict(network, config_dict)
    except (TypeError, ValueError) as e:
        raise WeightsFormatError(f"{path}: stored config does not fit network {network!r}: {e}") from None
    known = {"format", "format_version", "network", "config", "provenance", "payload_sha256", "dtype",
             "oldphoto_version"}
    return WeightsInfo(
        path=str(path),
        network=network,
        config=config,
        config_dict=config_dict,
        provenance=provenance,
        format_version=version,
        payload_sha256=metadata["payload_sha256"],
        file_sha256=file_sha,
        dtype=metadata.get("dtype", "float32"),
        oldphoto_version=metadata.get("oldphoto_version", ""),
        extra={k: v for k, v in metadata.items() if k not in known},
    )


def read_info(path: str | os.PathLike[str]) -> WeightsInfo:
    """The header of a weights file (no tensors loaded, payload not verified)."""
    path = Path(path)
    metadata, _ = _read(path, with_tensors=False)
    return _info_from_metadata(path, metadata, file_sha256(path))


def _config_differences(stored: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    diffs = []
    for key in sorted(set(stored) | set(expected)):
        a, b = stored.get(key, "<absent>"), expected.get(key, "<absent>")
        if a != b:
            diffs.append(f"{key}: file has {a!r}, expected {b!r}")
    return diffs


def load_weights(
    path: str | os.PathLike[str],
    expect_network: str | None = None,
    expect_config: Any = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, WeightsInfo]:
    """Load a weights file: verify its payload sha256, build the network from the stored config,
    check it against ``expect_network`` / ``expect_config`` (dataclass or dict) if given, and load the
    tensors strictly. Returns the module (eval mode, float32, on ``device``) and the file's info."""
    path = Path(path)
    metadata, tensors = _read(path, with_tensors=True)
    info = _info_from_metadata(path, metadata, file_sha256(path))

    actual = payload_sha256(tensors)
    if actual != info.payload_sha256:
        raise WeightsFormatError(
            f"{path}: tensor payload sha256 {actual} does not match the header's {info.payload_sha256}; "
            "the file is corrupt or was modified"
        )
    if expect_network is not None and info.network != expect_network:
        raise WeightsMismatchError(
            f"{path}: holds a {info.network!r} network, expected {expect_network!r}"
        )
    if expect_config is not None:
        expected_dict = (
            registry.config_to_dict(registry.config_from_dict(info.network, expect_config))
            if isinstance(expect_config, Mapping)
            else registry.config_to_dict(expect_config)
        )
        stored_dict = registry.config_to_dict(info.config)
        diffs = _config_differences(stored_dict, expected_dict)
        if diffs:
            raise WeightsMismatchError(
                f"{path}: network config differs from the expected one: " + "; ".join(diffs)
            )

    module = registry.build(info.network, info.config)
    tensors = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    missing, unexpected, mismatched = state_dict_problems(module.state_dict(), tensors)
    if missing or unexpected or mismatched:
        raise WeightsMismatchError(
            f"{path}: tensors do not fit the {info.network!r} network built from the stored config: "
            + describe_problems(missing, unexpected, mismatched)
        )
    module.load_state_dict(tensors, strict=True)
    module.eval()
    module.to(device)
    info.num_tensors = len(tensors)
    info.num_parameters = sum(p.numel() for p in module.parameters())
    return module, info
