"""sha256 digests of bytes and files: the one helper every part of oldphoto uses (inputs, outputs, weights
files, fetched packages, the landmark model)."""
from __future__ import annotations

import hashlib
import os
from typing import BinaryIO


def sha256_bytes(data: bytes) -> str:
    """The sha256 (hex) of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(file: str | os.PathLike[str] | BinaryIO) -> str:
    """The sha256 (hex) of a file's bytes: a path, or a binary file object open for reading (read to its end)."""
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    return hashlib.file_digest(file, "sha256").hexdigest()
