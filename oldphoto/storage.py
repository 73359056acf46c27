"""Where scans come from and where results go: local folders, file:// and s3:// behind one narrow interface.

Everything goes through fsspec (s3fs for s3://). Credentials come only from the standard AWS
environment/config; an S3-compatible endpoint is taken from `AWS_ENDPOINT_URL` (or
`AWS_ENDPOINT_URL_S3`) when set. Nothing here logs credentials.
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterable

import fsspec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")


def _split(uri: str) -> tuple[str, str]:
    """('s3', 'bucket/key') / ('file', '/abs/path') for a URI or plain path."""
    if "://" in uri:
        proto, rest = uri.split("://", 1)
        return proto, rest
    return "file", os.path.abspath(uri)


def s3_options() -> dict[str, Any]:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


@dataclass
class Storage:
    """A filesystem rooted at a URI. Paths given to its methods are full URIs or plain local paths."""

    protocol: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return fsspec.filesystem(self.protocol, **self.options)

    def _path(self, uri: str) -> str:
        return _split(uri)[1]

    def uri(self, path: str) -> str:
        return path if self.protocol == "file" else f"{self.protocol}://{path}"

    def join(self, base: str, *parts: str) -> str:
        if self.protocol == "file" and "://" not in base:
            return os.path.join(base, *parts)
        return posixpath.join(base, *parts)

    def list_images(self, root: str, suffixes: Iterable[str] | None = None) -> list[str]:
        """Every file under `root` (recursively), sorted; `suffixes` filters by extension (case-insensitive).
        A root that is a single file gives that file."""
        fs, path = self.fs, self._path(root)
        if fs.isfile(path):
            return [self.uri(path)]
        found = sorted(fs.find(path))
        if suffixes is not None:
            sfx = tuple(s.lower() for s in suffixes)
            found = [p for p in found if p.lower().endswith(sfx)]
        return [self.uri(p) for p in found]

    def read_bytes(self, uri: str) -> bytes:
        with self.fs.open(self._path(uri), "rb") as f:
            return f.read()

    def write_bytes(self, uri: str, data: bytes) -> None:
        fs, path = self.fs, self._path(uri)
        if self.protocol == "file":
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(data)

    def exists(self, uri: str) -> bool:
        return self.fs.exists(self._path(uri))

    def size(self, uri: str) -> int:
        return int(self.fs.size(self._path(uri)))


def open_storage(uri: str) -> Storage:
    """The storage holding `uri` (s3://bucket/prefix, file:///path or a plain path)."""
    proto, _ = _split(uri)
    if proto in ("s3", "s3a"):
        return Storage("s3", s3_options())
    if proto == "file":
        return Storage("file")
    return Storage(proto)
