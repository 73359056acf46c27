"""Where the weights come from: the one representation every entry point uses.

    WeightsSource.parse("default" | "/path/to/weights_dir" | "official:/path/to/release")   flows, review, Ray
    WeightsSource.from_options(weights=DIR, official=DIR)                                     `oldphoto restore`
    WeightsSource.from_env(spec)                                 the spec, else $OLDPHOTO_WEIGHTS, else "default"

A source is a small frozen value (hashable, picklable: it travels to Ray actors and as a Prefect parameter via
`spec()`); `describe()` says what it is for logs, `spec()` is what run parameters record, and `load(device)` gives
the `oldphoto.models.ModelSet`. Loading is cached once per process in one place, the network cache of
`oldphoto.models` (keyed by file, size, modification time and device): every ModelSet, stage and actor that names
the same files shares one copy, and `oldphoto.models.clear_cache()` forgets them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["WEIGHTS_ENV", "WeightsSource"]

WEIGHTS_ENV = "OLDPHOTO_WEIGHTS"
_OFFICIAL_PREFIX = "official:"
_DIR_PREFIX = "dir:"


@dataclass(frozen=True)
class WeightsSource:
    """Our safetensors folder ("dir"), an official release root ("official"), or the shipped set ("default")."""

    kind: str = "default"           # "default" | "dir" | "official"
    path: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("default", "dir", "official"):
            raise ValueError(f"weights source kind is 'default', 'dir' or 'official', not {self.kind!r}")
        if self.kind != "default" and not self.path:
            raise ValueError(f"a {self.kind!r} weights source needs a path")

    # -- parse
    @classmethod
    def parse(cls, spec: str | os.PathLike[str] | None) -> "WeightsSource":
        """"default" (or None, ""), "official:/path/to/release", "/path/to/weights_dir" (or "dir:/path")."""
        spec = None if spec is None else os.fspath(spec)
        if not spec or spec == "default":
            return cls("default")
        if spec.startswith(_OFFICIAL_PREFIX):
            return cls("official", os.path.abspath(spec[len(_OFFICIAL_PREFIX):]))
        return cls("dir", os.path.abspath(spec[len(_DIR_PREFIX):] if spec.startswith(_DIR_PREFIX) else spec))

    @classmethod
    def from_env(cls, spec: str | None = None) -> "WeightsSource":
        """`spec`, else $OLDPHOTO_WEIGHTS, else the shipped weights."""
        return cls.parse(spec or os.environ.get(WEIGHTS_ENV))

    @classmethod
    def from_options(cls, weights: str | os.PathLike[str] | None = None,
                     official: str | os.PathLike[str] | None = None) -> "WeightsSource":
        """The CLI's --weights DIR / --official DIR (at most one of them; neither: the shipped weights). The
        paths are kept as given (provenance records the checkpoint files as the user named them)."""
        if weights is not None and official is not None:
            raise ValueError("give either --weights or --official, not both")
        if official is not None:
            return cls("official", os.fspath(official))
        if weights is not None:
            return cls("dir", os.fspath(weights))
        return cls("default")

    # -- describe
    def spec(self) -> str:
        """The spec string `parse` reads back (recorded in run parameters as "weights")."""
        return {"default": "default", "official": f"{_OFFICIAL_PREFIX}{self.path}", "dir": str(self.path)}[self.kind]

    def describe(self) -> str:
        """One line for logs and messages."""
        if self.kind == "official":
            return f"official release {self.path}"
        if self.kind == "dir":
            return f"oldphoto weights {self.path}"
        return "the shipped oldphoto weights"

    def __str__(self) -> str:
        return self.spec()

    # -- load
    def load(self, device: str = "cpu") -> Any:
        """The `oldphoto.models.ModelSet` this source names (loads no network yet; networks load on first use,
        once per process: `oldphoto.models`' cache)."""
        from oldphoto.models import ModelSet

        if self.kind == "dir":
            return ModelSet.from_weights_dir(self.path, device=device)
        if self.kind == "official":
            return ModelSet.from_official(self.path, device=device)
        return ModelSet.default(device=device)
