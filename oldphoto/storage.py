"""Where scans come from and where results go: local folders, file:// and s3:// behind one narrow interface.

Everything goes through fsspec (s3fs for s3://). Credentials come only from the standard AWS
environment/config (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_PROFILE, ~/.aws/...); an S3-compatible
endpoint is taken from `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` when set. Nothing here logs or
stores credentials: a `Storage` only carries the protocol and the endpoint, so it can be pickled to
Ray workers, which read their own credentials from their environment.
"""
from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from dataclasses import dataclass, field
from typing import Any

import fsspec

from oldphoto.digest import file_sha256

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")
# botocore attempts per S3 request ("standard" retry mode: exponential backoff with jitter, at most 20 s
# between attempts); $OLDPHOTO_S3_MAX_ATTEMPTS overrides
S3_MAX_ATTEMPTS = int(os.environ.get("OLDPHOTO_S3_MAX_ATTEMPTS", "10"))


def _split(uri: str) -> tuple[str, str]:
    """('s3', 'bucket/key') / ('file', '/abs/path') for a URI or plain path."""
    if "://" in uri:
        proto, rest = uri.split("://", 1)
        if proto == "s3a":
            proto = "s3"
        if proto == "file":
            rest = os.path.abspath(rest)
        return proto, rest
    return "file", os.path.abspath(uri)


def s3_options() -> dict[str, Any]:
    """fsspec options for s3fs: the endpoint override (if any) and no listing cache (listings must see
    files written by other processes). Credentials are left to botocore's standard chain."""
    opts: dict[str, Any] = {"use_listings_cache": False,
                            # transient errors (throttling, 5xx, connection resets, an endpoint briefly down)
                            # are retried by botocore with exponential backoff before an item fails
                            "config_kwargs": {"retries": {"mode": "standard", "max_attempts": S3_MAX_ATTEMPTS},
                                              "connect_timeout": 10, "read_timeout": 60}}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["client_kwargs"] = {"endpoint_url": endpoint}
    return opts


class StorageError(RuntimeError):
    """A storage operation failed (missing file, no permission, unreachable endpoint)."""


SYMLINK_NOT_FOLLOWED = "symbolic link, not followed (a link may lead out of the source folder)"


def read_local(path: str | os.PathLike) -> bytes:
    """The bytes of a local regular file, never through a symbolic link: the file is opened with O_NOFOLLOW (no
    race between a check and the open), so a link met in a source folder cannot lead out of it; a FIFO,
    device or folder is refused without blocking. Failures are `StorageError`s whose message is the reason
    only, never the link's target or the content."""
    if os.path.islink(path):                 # also where O_NOFOLLOW does not exist
        raise StorageError(SYMLINK_NOT_FOLLOWED)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise StorageError(SYMLINK_NOT_FOLLOWED) from None
        if e.errno == errno.ENOENT:
            raise StorageError("file not found") from None
        if e.errno == errno.EISDIR:
            raise StorageError("not a regular file") from None
        raise StorageError(f"cannot read file: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise StorageError("not a regular file")
        return f.read()


@dataclass
class Storage:
    """A filesystem (local or S3) addressed by full URIs or plain local paths."""

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

    def find(self, root: str) -> list[str]:
        """Every file below `root` (recursively), as sorted URIs; a root that is a file gives that file. Which
        of them are inputs is `oldphoto.lifecycle.list_inputs`'s business."""
        fs, path = self.fs, self._path(root)
        try:
            if fs.isfile(path):
                return [self.uri(path)]
            found = fs.find(path)
            if not found and not fs.exists(path):
                raise FileNotFoundError(path)
        except FileNotFoundError:
            raise StorageError(f"input location not found: {root}") from None
        return sorted(self.uri(p) for p in found)

    def relative(self, root: str, uri: str) -> str:
        """`uri`'s path below `root` with '/' separators ('a/b.jpg'); the file name if `root` is the file."""
        rp, up = self._path(root).rstrip("/"), self._path(uri)
        if up == rp:
            return posixpath.basename(up)
        if not up.startswith(rp + "/"):
            raise ValueError(f"{uri} is not below {root}")
        return up[len(rp) + 1:]

    def read_bytes(self, uri: str) -> bytes:
        try:
            with self.fs.open(self._path(uri), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise StorageError(f"not found: {uri}") from None

    def write_bytes(self, uri: str, data: bytes) -> None:
        fs, path = self.fs, self._path(uri)
        if self.protocol == "file":
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            tmp = f"{path}.part-{os.getpid()}"
            try:
                with open(tmp, "wb") as f:       # local writes are atomic: no half-written output files
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)           # never leave a .part file behind (disk full, killed write)
                raise
            return
        with fs.open(path, "wb") as f:      # an S3 object appears whole or not at all
            f.write(data)

    def exists(self, uri: str) -> bool:
        return self.fs.exists(self._path(uri))

    def size(self, uri: str) -> int:
        return int(self.fs.size(self._path(uri)))

    def delete(self, uri: str) -> None:
        """Remove one file (used for replacing outputs, never for originals)."""
        self.fs.rm_file(self._path(uri))

    def sha256(self, uri: str) -> str:
        """The sha256 of a file, streamed."""
        with self.fs.open(self._path(uri), "rb") as f:
            return file_sha256(f)

def open_storage(uri: str) -> Storage:
    """The storage holding `uri` (s3://bucket/prefix, file:///path or a plain path)."""
    proto, _ = _split(uri)
    if proto == "s3":
        return Storage("s3", s3_options())
    if proto == "file":
        return Storage("file")
    return Storage(proto)


def is_remote(uri: str) -> bool:
    return _split(uri)[0] != "file"


def normalize(uri: str) -> str:
    """A canonical form: local paths become absolute plain paths, file:// URIs plain paths, s3a:// -> s3://."""
    proto, rest = _split(uri)
    return rest if proto == "file" else f"{proto}://{rest}"
