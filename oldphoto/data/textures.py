"""Texture files for structured-degradation synthesis: decoders for GIMP/Krita formats and the `TextureBank`.

Formats (all big-endian; written by GIMP and Krita, Krita's bundles are zip files holding the same files):

- GIMP brush `.gbr`: header of 32-bit words ``header_size, version, width, height, bytes`` then, for
  version 2+, the magic ``GIMP`` and ``spacing``; the rest of the header is the UTF-8 name (NUL-terminated).
  Pixels follow the header: ``bytes`` = 1 (grey: 255 = full paint) or 4 (RGBA).
- GIMP brush pipe `.gih`: a text line with the name, a text line ``<ncells> <params>``, then ``ncells``
  `.gbr` brushes one after another.
- GIMP pattern `.pat`: ``header_size, version, width, height, bytes`` then magic ``GPAT`` and the name;
  ``bytes`` = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA.

`TextureBank` holds decoded textures as float32 arrays in [0, 1]: `papers` (H×W×3 backgrounds) and
`scratches` (H×W grey stamps, 1 = defect). `TextureBank.from_dir(data_dir)` reads what
`oldphoto data fetch` wrote under ``textures/``; `TextureBank.procedural(seed)` makes a small bank without
any file, so synthesis always works.
"""
from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


class TextureFormatError(ValueError):
    """The bytes are not a valid GIMP/Krita brush or pattern."""


@dataclass
class Brush:
    name: str
    pixels: np.ndarray  # H×W uint8 (grey, 255 = paint) or H×W×4 uint8 (RGBA)
    spacing: int = 0


def _u32s(data: bytes, offset: int, n: int) -> tuple[int, ...]:
    if len(data) < offset + 4 * n:
        raise TextureFormatError(f"truncated header: need {offset + 4 * n} bytes, have {len(data)}")
    return struct.unpack_from(f">{n}I", data, offset)


def _name(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace")


def decode_gbr(data: bytes, offset: int = 0) -> tuple[Brush, int]:
    """Decode one GIMP brush starting at `offset`; returns (brush, offset just after its pixels)."""
    header_size, version, width, height, nbytes = _u32s(data, offset, 5)
    if version not in (1, 2, 3):
        raise TextureFormatError(f"unsupported GIMP brush version {version}")
    if nbytes not in (1, 4):
        raise TextureFormatError(f"unsupported GIMP brush depth {nbytes} bytes per pixel")
    if width == 0 or height == 0 or width > 16384 or height > 16384:
        raise TextureFormatError(f"implausible GIMP brush size {width}x{height}")
    spacing = 0
    name_start = offset + 20
    if version >= 2:
        magic = data[offset + 20:offset + 24]
        if magic != b"GIMP":
            raise TextureFormatError(f"bad GIMP brush magic {magic!r}")
        spacing = _u32s(data, offset + 24, 1)[0]
        name_start = offset + 28
    if header_size < name_start - offset:
        raise TextureFormatError(f"header size {header_size} smaller than the fixed header")
    name = _name(data[name_start:offset + header_size])
    start = offset + header_size
    end = start + width * height * nbytes
    if len(data) < end:
        raise TextureFormatError(f"truncated pixels: need {end} bytes, have {len(data)}")
    pix = np.frombuffer(data, dtype=np.uint8, count=width * height * nbytes, offset=start)
    pix = pix.reshape(height, width) if nbytes == 1 else pix.reshape(height, width, 4)
    return Brush(name, pix.copy(), spacing), end


def decode_gih(data: bytes) -> tuple[str, list[Brush]]:
    """Decode a GIMP brush pipe: (pipe name, its brushes)."""
    try:
        nl1 = data.index(b"\n")
        nl2 = data.index(b"\n", nl1 + 1)
    except ValueError as exc:
        raise TextureFormatError("not a GIMP brush pipe: missing header lines") from exc
    name = data[:nl1].decode("utf-8", errors="replace").strip()
    params = data[nl1 + 1:nl2].decode("ascii", errors="replace").split()
    try:
        ncells = int(params[0])
    except (IndexError, ValueError) as exc:
        raise TextureFormatError(f"bad brush pipe cell count line {params!r}") from exc
    if not 0 < ncells <= 4096:
        raise TextureFormatError(f"implausible brush pipe cell count {ncells}")
    brushes = []
    off = nl2 + 1
    for _ in range(ncells):
        b, off = decode_gbr(data, off)
        brushes.append(b)
    return name, brushes


def decode_pat(data: bytes) -> tuple[str, np.ndarray]:
    """Decode a GIMP pattern: (name, H×W×C uint8 with C = 1, 2, 3 or 4)."""
    header_size, version, width, height, nbytes = _u32s(data, 0, 5)
    if version != 1:
        raise TextureFormatError(f"unsupported GIMP pattern version {version}")
    if data[20:24] != b"GPAT":
        raise TextureFormatError(f"bad GIMP pattern magic {data[20:24]!r}")
    if nbytes not in (1, 2, 3, 4):
        raise TextureFormatError(f"unsupported GIMP pattern depth {nbytes}")
    if width == 0 or height == 0 or width > 16384 or height > 16384:
        raise TextureFormatError(f"implausible GIMP pattern size {width}x{height}")
    if header_size < 24:
        raise TextureFormatError(f"header size {header_size} smaller than the fixed header")
    name = _name(data[24:header_size])
    end = header_size + width * height * nbytes
    if len(data) < end:
        raise TextureFormatError(f"truncated pixels: need {end} bytes, have {len(data)}")
    pix = np.frombuffer(data, dtype=np.uint8, count=width * height * nbytes, offset=header_size)
    return name, pix.reshape(height, width, nbytes).copy()


def read_bundle_member(bundle_bytes: bytes, member: str) -> bytes:
    """One file from a Krita resource bundle (a zip archive)."""
    with zipfile.ZipFile(io.BytesIO(bundle_bytes)) as zf:
        try:
            return zf.read(member)
        except KeyError as exc:
            raise TextureFormatError(f"{member} not in the Krita bundle") from exc


def pattern_to_image(pix: np.ndarray) -> Image.Image:
    """A decoded .pat array as a PIL image (grey, grey+alpha, RGB or RGBA)."""
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[pix.shape[2]]
    return Image.fromarray(pix[..., 0] if pix.shape[2] == 1 else pix, mode)


def brush_to_grey(brush: Brush) -> np.ndarray:
    """A brush as H×W uint8 coverage (255 = paint). RGBA brushes use their alpha channel."""
    return brush.pixels if brush.pixels.ndim == 2 else brush.pixels[..., 3]


def encode_png(img: Image.Image) -> bytes:
    """Deterministic PNG bytes (no time stamps, fixed compression)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def decode_texture_file(name: str, data: bytes) -> list[tuple[str, bytes]]:
    """Turn one texture file into [(suffix, png bytes)], one per image (brush pipes give several)."""
    lower = name.lower()
    if lower.endswith(".gih"):
        _, brushes = decode_gih(data)
        return [(f"_{i:02d}", encode_png(Image.fromarray(brush_to_grey(b), "L"))) for i, b in enumerate(brushes)]
    if lower.endswith(".gbr"):
        b, _ = decode_gbr(data)
        return [("", encode_png(Image.fromarray(brush_to_grey(b), "L")))]
    if lower.endswith(".pat"):
        _, pix = decode_pat(data)
        return [("", encode_png(pattern_to_image(pix)))]
    if lower.endswith((".png", ".jpg", ".jpeg")):
        Image.open(io.BytesIO(data)).verify()  # fail early on a broken file
        return [("", data)]
    raise TextureFormatError(f"unknown texture format: {name}")


# ------------------------------------------------------------------------------------------------- bank
def _to_float_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("RGBA", "LA", "PA", "P"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _to_float_grey(img: Image.Image) -> np.ndarray:
    if img.mode in ("RGBA", "LA"):
        return np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Low-frequency noise in [0, 1]: white noise at (h/scale, w/scale) upsampled bicubically."""
    sh, sw = max(2, int(round(h / scale))), max(2, int(round(w / scale)))
    small = rng.random((sh, sw), dtype=np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(big.min()), float(big.max())
    return (big - lo) / (hi - lo + 1e-8)


def procedural_paper(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A paper-like background: warm tint, blotches at two scales and fine fibres (H×W×3 in [0, 1])."""
    base = 0.55 * smooth_noise(rng, size, size, 48) + 0.3 * smooth_noise(rng, size, size, 12)
    fine = rng.normal(0.0, 1.0, (size, size)).astype(np.float32)
    fine = cv2.GaussianBlur(fine, (0, 0), 0.8)
    fibres = cv2.GaussianBlur(rng.normal(0.0, 1.0, (size, size)).astype(np.float32), (0, 0), sigmaX=6, sigmaY=0.7)
    lum = 0.7 + 0.2 * base + 0.03 * fine + 0.04 * fibres
    tint = np.array([1.0, 0.96, 0.86], np.float32) * rng.uniform(0.9, 1.05)
    return np.clip(lum[..., None] * tint, 0.0, 1.0).astype(np.float32)


def procedural_scratch_stamp(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A grey stamp of thin crack-like curves (H×W in [0, 1], 1 = defect)."""
    stamp = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(3, 10))):
        n = int(rng.integers(4, 12))
        start = rng.uniform(0, size, 2)
        steps = rng.normal(0, size / 10, (n, 2)).cumsum(axis=0) + start
        pts = np.clip(steps, 0, size - 1).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(stamp, [pts], False, float(rng.uniform(0.5, 1.0)), int(rng.integers(1, 3)), cv2.LINE_AA)
    return stamp


@dataclass
class TextureBank:
    """Decoded textures in memory. papers: H×W×3 float32; scratches: H×W float32 (1 = defect)."""
    papers: list[np.ndarray] = field(default_factory=list)
    scratches: list[np.ndarray] = field(default_factory=list)
    names: dict[str, list[str]] = field(default_factory=lambda: {"paper": [], "scratch": []})

    def __len__(self) -> int:
        return len(self.papers) + len(self.scratches)

    @classmethod
    def from_dir(cls, data_dir: str | Path, max_side: int = 1024) -> "TextureBank":
        """Load ``textures/paper/*.png`` and ``textures/scratch/*.png`` from a fetched data folder."""
        root = Path(data_dir) / "textures"
        if not root.is_dir():
            raise FileNotFoundError(f"{root} not found: run `oldphoto data fetch {data_dir}` first")
        bank = cls()
        for kind, conv in (("paper", _to_float_rgb), ("scratch", _to_float_grey)):
            for p in sorted((root / kind).glob("*.png")):
                with Image.open(p) as img:
                    img.load()
                    if max(img.size) > max_side:
                        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                    arr = conv(img)
                if kind == "scratch":
                    if float(arr.max()) < 0.05:  # an empty stamp is no use
                        continue
                    bank.scratches.append(arr)
                else:
                    bank.papers.append(arr)
                bank.names[kind].append(p.name)
        if not bank.papers and not bank.scratches:
            raise FileNotFoundError(f"no textures under {root}")
        return bank

    @classmethod
    def procedural(cls, seed: int = 0, n_papers: int = 4, n_scratches: int = 4, size: int = 256) -> "TextureBank":
        rng = np.random.default_rng(seed)
        bank = cls()
        for i in range(n_papers):
            bank.papers.append(procedural_paper(rng, size))
            bank.names["paper"].append(f"procedural_paper_{i}")
        for i in range(n_scratches):
            bank.scratches.append(procedural_scratch_stamp(rng, size))
            bank.names["scratch"].append(f"procedural_scratch_{i}")
        return bank
