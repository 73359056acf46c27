"""Network kinds: the name under which a (config dataclass, network class) pair is stored and rebuilt.

A weights file records its network *kind* (e.g. ``"vae"``) and its config as a plain dict; `build`
turns the two back into a module. The built-in kinds are imported lazily, so importing this module
never fails because one network module is broken, and code that only needs one network only imports
that one.

    >>> from oldphoto.networks.registry import NETWORKS, build, config_to_dict
    >>> ConfigClass, NetClass = NETWORKS["scratch_unet"]
"""
from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from torch import nn

__all__ = [
    "NETWORKS",
    "UnknownNetworkError",
    "build",
    "config_class",
    "config_from_dict",
    "config_to_dict",
    "kind_of",
    "register",
]

# kind -> (module, config class name, network class name)
_BUILTIN: dict[str, tuple[str, str, str]] = {
    "vae": ("oldphoto.networks.vae", "VAEConfig", "VAE"),
    "mapping": ("oldphoto.networks.mapping", "MappingConfig", "MappingNet"),
    "mapping_nonlocal": ("oldphoto.networks.mapping_nonlocal", "NonLocalMappingConfig", "NonLocalMappingNet"),
    "mapping_patch_attention": (
        "oldphoto.networks.mapping_patch_attention",
        "PatchAttentionMappingConfig",
        "PatchAttentionMappingNet",
    ),
    "scratch_unet": ("oldphoto.networks.unet", "ScratchUNetConfig", "ScratchUNet"),
    "spade_face": ("oldphoto.networks.spade_face", "SPADEFaceConfig", "SPADEFaceGenerator"),
    "colour_mlp": ("oldphoto.networks.colour", "ColourNetConfig", "ColourNet"),
    "refiner": ("oldphoto.networks.refiner", "RefinerConfig", "Refiner"),
}


class UnknownNetworkError(KeyError):
    """A network kind that is not registered."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else "unknown network kind"


class _Registry(Mapping):
    """Read-only mapping kind -> (ConfigClass, NetClass); built-in kinds are imported on first use."""

    def __init__(self) -> None:
        self._loaded: dict[str, tuple[type, type]] = {}
        self._extra: dict[str, tuple[type, type]] = {}

    def __getitem__(self, kind: str) -> tuple[type, type]:
        if kind in self._extra:
            return self._extra[kind]
        if kind in self._loaded:
            return self._loaded[kind]
        if kind not in _BUILTIN:
            raise UnknownNetworkError(
                f"unknown network kind {kind!r}; known kinds: {', '.join(sorted(self))}"
            )
        module_name, cfg_name, net_name = _BUILTIN[kind]
        module = importlib.import_module(module_name)
        pair = (getattr(module, cfg_name), getattr(module, net_name))
        self._loaded[kind] = pair
        return pair

    def __iter__(self) -> Iterator[str]:
        yield from _BUILTIN
        yield from (k for k in self._extra if k not in _BUILTIN)

    def __len__(self) -> int:
        return len(set(_BUILTIN) | set(self._extra))

    def __contains__(self, kind: object) -> bool:
        return kind in _BUILTIN or kind in self._extra

    def __repr__(self) -> str:
        return f"NETWORKS({', '.join(self)})"


NETWORKS: Mapping[str, tuple[type, type]] = _Registry()


def register(kind: str, config_cls: type, net_cls: type, *, replace: bool = False) -> None:
    """Register an extra network kind (e.g. a small test network). Built-in kinds cannot be replaced."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config class for {kind!r} must be a dataclass, got {config_cls!r}")
    if kind in _BUILTIN or (kind in NETWORKS._extra and not replace):  # type: ignore[attr-defined]
        raise ValueError(f"network kind {kind!r} is already registered")
    NETWORKS._extra[kind] = (config_cls, net_cls)  # type: ignore[attr-defined]


def config_class(kind: str) -> type:
    return NETWORKS[kind][0]


def kind_of(config: Any) -> str:
    """The registered kind whose config class is ``type(config)``."""
    for kind in NETWORKS:
        try:
            if NETWORKS[kind][0] is type(config):
                return kind
        except ImportError:
            continue
    raise UnknownNetworkError(f"no registered network kind uses config class {type(config).__name__}")


# ----------------------------------------------------------------------------------------------
# config dataclass <-> plain (JSON-able) dict


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-able dict (tuples become lists, nested dataclasses dicts)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a config dataclass instance, got {type(config).__name__}")
    return _jsonable(dataclasses.asdict(config))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"config value {value!r} of type {type(value).__name__} is not JSON-able")


def config_from_dict(cls_or_kind: type | str, data: Mapping[str, Any]) -> Any:
    """Rebuild a config dataclass from `config_to_dict`'s output.

    ``cls_or_kind`` is the dataclass or a registered network kind. Unknown keys are an error (a file
    written by a newer oldphoto with a field we do not know); missing keys take the field defaults.
    """
    cls = config_class(cls_or_kind) if isinstance(cls_or_kind, str) else cls_or_kind
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise TypeError(f"config for {cls.__name__} must be a dict, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown field(s) for {cls.__name__}: {', '.join(unknown)}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: take values as they are
        hints = {}
    kwargs = {name: _coerce(hints.get(name), value) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any) -> Any:
    """Turn JSON values back into the annotated type where it matters (tuples, nested dataclasses)."""
    if tp is None or value is None:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(tp, value)
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        return config_from_dict(tp, value)
    if isinstance(value, list):
        return _coerce_list(tp, origin, value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _coerce_union(tp: Any, value: Any) -> Any:
    """The first member type of an Optional/Union that takes the value, else the value as it is."""
    for arg in typing.get_args(tp):
        if arg is type(None):
            continue
        try:
            return _coerce(arg, value)
        except (TypeError, ValueError):
            continue
    return value


def _coerce_list(tp: Any, origin: Any, value: list[Any]) -> Any:
    """A JSON list as the annotated tuple or list (members coerced too); as it is for other types."""
    if tp is tuple or origin is tuple:
        return _coerce_tuple(tp, value)
    if tp is list or origin is list:
        args = typing.get_args(tp)
        return [_coerce(args[0], v) for v in value] if args else list(value)
    return value


def _coerce_tuple(tp: Any, value: list[Any]) -> tuple[Any, ...]:
    args = typing.get_args(tp)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(args[0], v) for v in value)
    if args and len(args) == len(value):
        return tuple(_coerce(a, v) for a, v in zip(args, value))
    return tuple(value)


def build(kind: str, config: Any = None) -> nn.Module:
    """Build a freshly initialised network of ``kind`` from a config dataclass or dict (None: official)."""
    config_cls, net_cls = NETWORKS[kind]
    if config is None:
        config = config_cls.official()
    elif isinstance(config, Mapping):
        config = config_from_dict(config_cls, config)
    elif not isinstance(config, config_cls):
        raise TypeError(
            f"network kind {kind!r} needs a {config_cls.__name__}, got {type(config).__name__}"
        )
    return net_cls(config)
