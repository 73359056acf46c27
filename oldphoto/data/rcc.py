"""A small, safe reader for Qt binary resource files (``.rcc``, as written by ``rcc -binary``).

Layout (Qt's rcc, format versions 1-3; all integers big-endian)::

    header   "qres", u32 version, u32 tree offset, u32 data offset, u32 names offset [, u32 flags (v3)]
    tree     nodes of 14 bytes (v1) or 22 bytes (v2+: a u64 modification time at the end):
               u32 name offset, u16 flags (1 = zlib, 2 = directory, 4 = zstd),
               directory: u32 child count, u32 index of the first child node
               file:      u16 country, u16 language, u32 data offset
             node 0 is the root directory
    names    at a name offset: u16 length (UTF-16 code units), u32 hash, the name in UTF-16BE
    data     at a data offset: u32 size, then the bytes; a zlib entry is Qt's qCompress format
             (u32 uncompressed length, then a zlib stream)

`read_rcc` is a pure function: it never touches the file system, rejects names that could escape a
folder ("", ".", "..", "/" or "\\" in a name, control characters), bounds the depth, the number of
entries and every decompressed size, and skips zstd entries (no zstd decoder here).
"""
from __future__ import annotations

import struct
import zlib

FLAG_ZLIB, FLAG_DIR, FLAG_ZSTD = 0x01, 0x02, 0x04
MAX_ENTRIES = 100_000
MAX_DEPTH = 32
MAX_FILE_BYTES = 64 << 20


class RccFormatError(ValueError):
    """Not a Qt resource file, or a corrupt/hostile one."""


def _u(fmt: str, data: bytes, off: int) -> tuple:
    size = struct.calcsize(fmt)
    if off < 0 or off + size > len(data):
        raise RccFormatError(f"truncated at offset {off}")
    return struct.unpack_from(fmt, data, off)


def _name(data: bytes, names: int, off: int) -> str:
    (n,) = _u(">H", data, names + off)
    start = names + off + 6
    if start + 2 * n > len(data):
        raise RccFormatError("truncated name")
    name = data[start:start + 2 * n].decode("utf-16-be", errors="strict")
    if name in ("", ".", "..") or "/" in name or "\\" in name or any(ord(c) < 32 for c in name):
        raise RccFormatError(f"unsafe entry name {name!r}")
    return name


def _payload(data: bytes, data_off: int, off: int, flags: int, max_bytes: int) -> bytes:
    (size,) = _u(">I", data, data_off + off)
    start = data_off + off + 4
    if start + size > len(data):
        raise RccFormatError("truncated entry data")
    raw = data[start:start + size]
    if not flags & FLAG_ZLIB:
        if size > max_bytes:
            raise RccFormatError(f"entry of {size} bytes exceeds the limit")
        return raw
    (expect,) = _u(">I", raw, 0)
    if expect > max_bytes:
        raise RccFormatError(f"entry of {expect} bytes (uncompressed) exceeds the limit")
    d = zlib.decompressobj()
    try:
        out = d.decompress(raw[4:], expect + 1)
    except zlib.error as exc:
        raise RccFormatError(f"bad zlib entry: {exc}") from exc
    if len(out) != expect:
        raise RccFormatError(f"zlib entry has {len(out)} bytes, header says {expect}")
    return out


def read_rcc(data: bytes, want=None, max_file_bytes: int = MAX_FILE_BYTES) -> dict[str, bytes]:
    """The files of a Qt ``.rcc`` resource as {"dir/sub/name": bytes}.

    `want(path) -> bool`, when given, selects the entries to decode (others are not decompressed)."""
    magic = data[:4]
    if magic != b"qres":
        raise RccFormatError("not a Qt resource file (magic 'qres' missing)")
    version, tree, data_off, names = _u(">4I", data, 4)
    if version not in (1, 2, 3):
        raise RccFormatError(f"unsupported rcc format version {version}")
    node_size = 14 if version == 1 else 22
    out: dict[str, bytes] = {}
    visited: set[int] = set()
    stack: list[tuple[int, str, int]] = [(0, "", 0)]   # (node index, path, depth)
    while stack:
        idx, path, depth = stack.pop()
        if idx in visited:
            raise RccFormatError("tree has a cycle")
        visited.add(idx)
        if len(visited) > MAX_ENTRIES:
            raise RccFormatError("too many entries")
        base = tree + idx * node_size
        name_off, flags = _u(">IH", data, base)
        if flags & FLAG_DIR:
            count, first = _u(">II", data, base + 6)
            if depth >= MAX_DEPTH:
                raise RccFormatError("tree too deep")
            if count > MAX_ENTRIES:
                raise RccFormatError("too many entries")
            for child in range(first, first + count):
                (child_name_off,) = _u(">I", data, tree + child * node_size)
                stack.append((child, f"{path}{_name(data, names, child_name_off)}/", depth + 1))
            continue
        if idx == 0:
            raise RccFormatError("the root is not a directory")
        rel = path.rstrip("/")
        if flags & FLAG_ZSTD or (want is not None and not want(rel)):
            continue
        (off,) = _u(">I", data, base + 10)
        out[rel] = _payload(data, data_off, off, flags, max_file_bytes)
    return dict(sorted(out.items()))
