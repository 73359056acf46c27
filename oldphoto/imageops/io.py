"""Decode and encode scans without losing what an archive cares about.

`decode_image(data)` turns the bytes of one file into a `DecodedImage`:

- pixels: H×W×3 float32 in [0, 1], EXIF orientation already applied (the restored file is upright and
  its EXIF orientation tag is reset to 1, so viewers do not rotate it twice);
- grey files (L, LA, 1, I;16, I, F) are marked `grey` so the output can stay grey;
- 16-bit files (grey or RGB, PNG or TIFF) keep 16-bit precision (`bit_depth` 16) so the output can be
  written back at the same depth; PIL truncates 16-bit RGB to 8 bits, so those are read with OpenCV (PNG)
  or tifffile (TIFF) instead; a TIFF compression tifffile cannot decode without the optional imagecodecs package
  (LZW, the usual one of 16-bit scans; JPEG) is decoded by OpenCV's libtiff instead (`_tiff_first_page`);
- TIFFs PIL cannot open are read by tifffile: 16-bit grey+alpha, extra samples beyond alpha, and floating-point
  TIFF; in every TIFF tifffile reads (16-bit RGB too), a sample is alpha only where the file says so (ExtraSamples
  1, premultiplied, or 2; or, with nothing said, a single sample after the grey one or the RGB ones), others are
  left out with a warning; floating-point TIFF (grey or RGB, 16/32/64-bit samples) is
  restored and **written as 16-bit integer TIFF** (`bit_depth` 16, a warning says so): samples within
  [0, 1] are taken as is, larger ones are read as 0..255, 0..65535 or 0..max, whichever first holds them all;
  NaN and negative samples become 0;
- palette images are expanded; RGBA/LA/PA are composited onto white (alpha is not restored);
  CMYK/YCbCr/LAB are converted to RGB with PIL (an embedded CMYK ICC profile is then not carried over,
  because it would describe the wrong colour space);
- the ICC profile and EXIF block are kept for the encoder only when small enough to be written back and read
  again by PIL and oldphoto (ICC ≤ `MAX_ICC_BYTES`: PIL refuses a PNG whose decompressed iCCP chunk exceeds
  1 MiB; EXIF ≤ `MAX_EXIF_BYTES`, what one JPEG APP1 segment holds); a larger one is dropped with a warning;
- multi-page TIFF, animated GIF/PNG/WebP and other multi-frame files: the **first frame** is restored and a
  warning gives the number of frames;
- the pixel limit is `max_pixels` (default `DEFAULT_MAX_PIXELS`, `--max-megapixels`), checked from the
  header before any pixel is decoded, so a decompression bomb costs nothing; PIL's own limit
  (`Image.MAX_IMAGE_PIXELS`, 89.5 MP by default) is set from it for the duration of the decode, so the
  limit is the documented one in both directions.

Every warning is a one-line string in `DecodedImage.warnings` (the decode stage puts them in provenance).
Every failure is an `ImageDecodeError` with a one-line message that never quotes the file's content (a
symlink to a text file must not leak it into provenance or the catalog). The input bytes are never modified.
"""
from __future__ import annotations

import io
import re
import struct
import threading
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFile

DEFAULT_MAX_PIXELS = 200_000_000   # 200 MP: far beyond any archive scan, far below a bomb
MAX_ICC_BYTES = 1_000_000          # PIL will not read back a PNG iCCP chunk over 1 MiB decompressed
MAX_EXIF_BYTES = 65_533            # one JPEG APP1 segment (the smallest container that may carry it)
ORIENTATION_TAG = 0x0112
# ImageDescription, Make, Model, Software, DateTime, Artist, Copyright
TIFF_DESCRIPTIVE_TAGS = (270, 271, 272, 305, 306, 315, 33432)
PHOTOMETRIC_RGB = 2                # TIFF tag 262's value for RGB samples (5: CMYK)
TIFFFILE_PHOTOMETRICS = (0, 1, 2)  # what the tifffile path reads: grey (MinIsWhite, MinIsBlack) and RGB samples


class ImageDecodeError(ValueError):
    """The bytes are not an image we can read (one-line message)."""


@dataclass
class DecodedImage:
    pixels: np.ndarray                 # H×W×3 float32 in [0, 1], upright
    grey: bool                         # the file had no colour channels
    bit_depth: int                     # 8 or 16 (per sample)
    format: str | None                 # PIL format name ("JPEG", "PNG", "TIFF", ...)
    mode: str                          # PIL mode of the file ("RGB", "L", "I;16", "CMYK", "P", "RGBA", ...)
    icc_profile: bytes | None = None   # only when it matches the output colour space (RGB or grey)
    exif: bytes | None = None          # EXIF block with orientation reset to 1 (not for TIFF: see tiff_tags)
    orientation: int = 1               # the EXIF orientation that was applied
    tiff_tags: dict | None = None      # TIFF input: its descriptive tags (description, make, date, artist, ...)
    dpi: tuple[float, float] | None = None
    warnings: list[str] = field(default_factory=list)   # one line each: what was dropped or left out

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


# --------------------------------------------------------------------------------------------- orientation
def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Make an H×W[×C] array upright according to the EXIF orientation value (1..8), as viewers do."""
    o = int(orientation or 1)
    if o == 2:
        return arr[:, ::-1]
    if o == 3:
        return arr[::-1, ::-1]
    if o == 4:
        return arr[::-1, :]
    if o == 5:
        return np.swapaxes(arr, 0, 1)
    if o == 6:
        return np.rot90(arr, k=-1)
    if o == 7:
        return np.swapaxes(arr[::-1, ::-1], 0, 1)
    if o == 8:
        return np.rot90(arr, k=1)
    return arr


def _icc_colour_space(icc: bytes | None) -> str | None:
    if not icc or len(icc) < 20:
        return None
    return icc[16:20].decode("ascii", "replace").strip()


def _exif_upright(im: Image.Image) -> tuple[bytes | None, int]:
    try:
        exif = im.getexif()
    except Exception:           # a broken EXIF block must not make the image unreadable
        return None, 1
    if not exif:
        return None, 1
    orientation = exif.get(ORIENTATION_TAG, 1)
    try:
        orientation = int(orientation)
    except (TypeError, ValueError):
        orientation = 1
    if orientation not in range(1, 9):
        orientation = 1
    if ORIENTATION_TAG in exif:
        exif[ORIENTATION_TAG] = 1
    try:
        return exif.tobytes(), orientation
    except Exception:
        return None, orientation


def _is_16bit_rgb(im: Image.Image, data: bytes) -> bool:
    """PIL silently truncates 16-bit RGB(A) PNG/TIFF to 8 bits: detect those files from their headers."""
    if im.format == "PNG" and data[12:16] == b"IHDR":
        bit_depth, colour_type = data[24], data[25]
        return bit_depth == 16 and colour_type in (2, 6)
    if im.format == "TIFF":             # RGB only: PIL converts a 16-bit CMYK TIFF right (at 8 bits)
        tags = getattr(im, "tag_v2", {})
        bps = tags.get(258)
        if isinstance(bps, tuple) and len(bps) >= 3 and all(b == 16 for b in bps[:3]):
            return tags.get(262, PHOTOMETRIC_RGB) == PHOTOMETRIC_RGB
    return False


def _opencv_unchanged(data: bytes) -> np.ndarray | None:
    """The first image of `data` as OpenCV decodes it, at its own depth, channels reordered to RGB(A); None when
    OpenCV cannot decode it."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is not None and arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[..., [2, 1, 0, 3]] if arr.shape[2] == 4 else arr[..., ::-1]
    return arr


def _tiff_first_page(data: bytes, page: object | None = None) -> np.ndarray:
    """The samples of a TIFF's first page (H×W or H×W×C, channels last) read by tifffile (`page`: that page,
    already opened); when tifffile cannot decode them (a compression it leaves to the optional imagecodecs
    package: LZW, JPEG, ...), by OpenCV's libtiff. Raises tifffile's error when neither can."""
    import tifffile

    try:
        arr = page.asarray() if page is not None else tifffile.imread(io.BytesIO(data), key=0)
    except Exception:
        arr = _opencv_unchanged(data)
        if arr is None:
            raise
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    return arr


def _composite_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return rgb * a + (1.0 - a)


def _read_16bit_rgb(data: bytes, fmt: str, max_pixels: int, notes: list[str]) -> np.ndarray:
    """H×W×3 float32 in [0, 1] for a 16-bit RGB(A) PNG (OpenCV) or TIFF (the tifffile path, `_read_tiff_page` and
    `_tiff_samples_to_rgb`, as for the TIFFs PIL cannot open); alpha composited on white."""
    if fmt != "PNG":
        arr, photometric, extra, _ = _read_tiff_page(data, max_pixels)
        pixels, colour, alpha, ignored = _tiff_samples_to_rgb(arr, photometric, extra)
        _note_ignored_samples(notes, ignored, colour, alpha)
        return pixels
    arr = _opencv_unchanged(data)
    if arr is None or arr.ndim != 3:
        raise ImageDecodeError("cannot decode 16-bit PNG")
    f = arr.astype(np.float32) / 65535.0
    if f.shape[2] >= 4:
        return _composite_white(f[..., :3], f[..., 3])
    return np.ascontiguousarray(f[..., :3])


_PIL_LIMIT_LOCK = threading.RLock()
_BYTES_LITERAL = re.compile(r"""b(['"]).*?\1""")


@contextmanager
def _pil_pixel_limit(max_pixels: int):
    """PIL's own decompression-bomb limit set to `max_pixels` (its warning made an error) while decoding;
    restored afterwards. A lock keeps threads of one process from seeing each other's limit."""
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = int(max_pixels)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def safe_reason(e: BaseException) -> str:
    """`Type: message` on one line, at most 160 characters, with any bytes literal a library quoted from the
    file (b'...') blanked out: error messages never carry file content."""
    msg = _BYTES_LITERAL.sub("b'…'", f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__)
    msg = "".join(ch if ch.isprintable() else "?" for ch in msg)
    return msg if len(msg) <= 160 else msg[:159] + "…"


def _too_large(w: int, h: int, max_pixels: int) -> ImageDecodeError:
    return ImageDecodeError(f"image too large: {w}×{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} "
                            "(--max-megapixels)")


def _is_tiff(data: bytes) -> bool:
    return data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _float_to_unit(a: np.ndarray) -> np.ndarray:
    """Floating-point samples → float32 in [0, 1] (see the module docstring: 1, 255, 65535 or the maximum)."""
    a = np.nan_to_num(a.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    hi = float(a.max(initial=0.0))
    scale = next((s for s in (1.0, 255.0, 65535.0) if hi <= s), hi)
    return np.clip(a / np.float32(scale), 0.0, 1.0)


def _read_tiff_page(data: bytes, max_pixels: int) -> tuple[np.ndarray, int, tuple[int, ...], int]:
    """(first page's samples, photometric, extra samples' kinds, number of pages) of a TIFF the tifffile path reads
    (grey or RGB samples, integer or float), its size checked before the samples are decoded."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tf:
            page = tf.pages[0]
            photometric = int(page.photometric)
            if page.dtype is None or page.dtype.kind not in "fui" or photometric not in TIFFFILE_PHOTOMETRICS:
                raise ImageDecodeError("not a readable image: unsupported TIFF layout")
            h, w = int(page.imagelength), int(page.imagewidth)
            if w * h > max_pixels:
                raise _too_large(w, h, max_pixels)
            extra = tuple(int(v) for v in (page.extrasamples or ()))
            arr = _tiff_first_page(data, page)
            pages = len(tf.pages)
    except ImageDecodeError:
        raise
    except Exception as e:
        raise ImageDecodeError(f"cannot decode TIFF data (truncated or corrupt?): {safe_reason(e)}") from None
    if arr.ndim not in (2, 3):
        raise ImageDecodeError(f"not a readable image: unsupported TIFF layout {arr.shape}")
    return arr, photometric, extra, pages


def _tiff_samples_to_rgb(arr: np.ndarray, photometric: int, extra: tuple[int, ...]
                         ) -> tuple[np.ndarray, bool, bool, int]:
    """(H×W×3 float32 in [0, 1], colour, had alpha, samples left out) from a page's grey or RGB samples: alpha (the
    sample after the grey or RGB ones when the file says so, ExtraSamples 1 (premultiplied) or 2, or, with none
    said, when it is the only one) composited on white; MinIsWhite grey inverted; further samples (ExtraSamples 0,
    unspecified, is not alpha) left out."""
    unit = _float_to_unit(arr) if arr.dtype.kind == "f" else \
        np.clip(arr.astype(np.float32) / np.iinfo(arr.dtype).max, 0, 1)
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    colour = channels >= 3
    n = 3 if colour else 1
    alpha = channels > n and (extra[0] in (1, 2) if extra else channels == n + 1)
    base = unit.reshape(unit.shape[:2] + (channels,))
    samples, a = base[..., :n], base[..., n] if alpha else None
    if photometric == 0:                        # MinIsWhite: the grey sample's 0 is white (alpha is not inverted)
        samples = 1.0 - samples
    if a is None:
        pixels = samples
    elif extra and extra[0] == 1:               # associated (premultiplied) alpha: the samples hold value x alpha
        pixels = samples if photometric == 0 else np.clip(samples + (1.0 - a[..., None]), 0.0, 1.0)
    else:
        pixels = _composite_white(samples, a)
    if not colour:
        pixels = np.repeat(pixels.reshape(pixels.shape[:2] + (1,)), 3, axis=2)
    return np.ascontiguousarray(pixels, dtype=np.float32), colour, alpha, channels - n - int(alpha)


def _note_ignored_samples(notes: list[str], ignored: int, colour: bool, alpha: bool) -> None:
    if ignored:
        notes.append(f"TIFF with {ignored} extra sample(s) per pixel beyond {'RGB' if colour else 'grey'}"
                     f"{' and alpha' if alpha else ''}: not restored")


def _decode_tiff_pil_cannot_open(data: bytes, max_pixels: int) -> DecodedImage:
    """A TIFF PIL cannot open (float RGB, float16/64, 16-bit grey+alpha, extra samples beyond alpha): its first page
    via tifffile (`_tiff_first_page`), written back 16-bit (8-bit when its samples are 8-bit integers)."""
    arr, photometric, extra, pages = _read_tiff_page(data, max_pixels)
    pixels, colour, alpha, ignored = _tiff_samples_to_rgb(arr, photometric, extra)
    is_float = arr.dtype.kind == "f"
    notes = [f"float TIFF ({arr.dtype}) written back as 16-bit integer TIFF"] if is_float else []
    _note_ignored_samples(notes, ignored, colour, alpha)
    if pages > 1:
        notes.append(f"multi-page file ({pages} pages): only the first was restored")
    if is_float:
        mode = "RGBF" if colour else "F"
    else:
        mode = ("RGB" if colour else "L") + ("A" if alpha else "") + f";{8 * arr.dtype.itemsize}"
    return DecodedImage(pixels=pixels, grey=not colour, bit_depth=8 if arr.dtype.itemsize == 1 and not is_float else 16,
                        format="TIFF", mode=mode, warnings=notes)


def _frame_count(im: Image.Image) -> int:
    try:
        return int(getattr(im, "n_frames", 1) or 1)
    except Exception:          # counting frames reads the whole file: a broken later frame is not our concern
        return 1


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode one file's bytes; raises `ImageDecodeError` with a one-line reason (see the module docstring)."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    with _pil_pixel_limit(max_pixels):
        return _decode(data, max_pixels)


def _decode(data: bytes, max_pixels: int) -> DecodedImage:
    im = _open(data, max_pixels)
    if isinstance(im, DecodedImage):            # a TIFF PIL cannot open
        return im
    fmt, mode = im.format, im.mode
    notes: list[str] = []
    icc = im.info.get("icc_profile") or None
    exif, orientation = _exif_upright(im)
    pixels, grey, depth = _first_frame_pixels(im, data, max_pixels, notes)
    if mode == "F":
        notes.append("float TIFF (float32) written back as 16-bit integer TIFF" if fmt == "TIFF"
                     else "float samples written back as 16-bit integer")
    pixels = np.ascontiguousarray(apply_orientation(pixels, orientation))
    icc = _kept_icc(icc, grey, notes)
    tiff_tags = None
    if fmt == "TIFF":       # a TIFF's "EXIF" is its own IFD (strip offsets, sample format...): keep descriptions only
        tags = getattr(im, "tag_v2", {})
        tiff_tags = {t: tags[t] for t in TIFF_DESCRIPTIVE_TAGS if t in tags} or None
        exif = None
    if exif is not None and len(exif) > MAX_EXIF_BYTES:
        notes.append(f"EXIF block of {len(exif):,} bytes dropped (over {MAX_EXIF_BYTES:,})")
        exif = None
    return DecodedImage(pixels=pixels, grey=grey, bit_depth=depth, format=fmt, mode=mode, icc_profile=icc,
                        exif=exif, orientation=orientation, tiff_tags=tiff_tags, dpi=_upright_dpi(im, orientation),
                        warnings=notes)


def _open(data: bytes, max_pixels: int) -> Image.Image | DecodedImage:
    """The image PIL opens (header only, size checked), or a TIFF it cannot open decoded by tifffile."""
    try:
        im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(f"image too large: its header claims more than {max_pixels:,} pixels "
                               "(--max-megapixels; decompression bomb guard)") from None
    except Image.UnidentifiedImageError:
        if _is_tiff(data):
            return _decode_tiff_pil_cannot_open(data, max_pixels)
        raise ImageDecodeError("not a readable image: unrecognised file format") from None
    except Exception as e:
        raise ImageDecodeError(f"not a readable image: {safe_reason(e)}") from None
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageDecodeError(f"image has no pixels ({w}×{h})")
    if w * h > max_pixels:
        raise _too_large(w, h, max_pixels)
    return im


def _first_frame_pixels(im: Image.Image, data: bytes, max_pixels: int, notes: list[str]
                        ) -> tuple[np.ndarray, bool, int]:
    """(pixels, grey, bit depth) of the first frame; a note when there are more."""
    fmt = im.format
    try:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        frames = _frame_count(im)
        if frames > 1:
            im.seek(0)
            notes.append(f"multi-frame file ({frames} {'pages' if fmt == 'TIFF' else 'frames'}): "
                         "only the first was restored")
        if _is_16bit_rgb(im, data):
            return _read_16bit_rgb(data, fmt, max_pixels, notes), False, 16
        im.load()
        return _to_float_rgb(im)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(f"image too large: a frame claims more than {max_pixels:,} pixels "
                               "(--max-megapixels; decompression bomb guard)") from None
    except Exception as e:
        raise ImageDecodeError(f"cannot decode {fmt or 'image'} data (truncated or corrupt?): "
                               f"{safe_reason(e)}") from None


def _kept_icc(icc: bytes | None, grey: bool, notes: list[str]) -> bytes | None:
    """The ICC profile when it fits the output's colour space and is small enough to read back."""
    space = _icc_colour_space(icc)
    if space not in (("GRAY",) if grey else ("RGB",)):
        return None
    if icc is not None and len(icc) > MAX_ICC_BYTES:
        notes.append(f"ICC profile of {len(icc):,} bytes dropped (over {MAX_ICC_BYTES:,}: "
                     "the output could not be read back)")
        return None
    return icc


def _upright_dpi(im: Image.Image, orientation: int) -> tuple[float, float] | None:
    dpi = im.info.get("dpi")
    try:
        dpi = (float(dpi[0]), float(dpi[1])) if dpi else None
        if dpi and orientation in (5, 6, 7, 8):
            dpi = (dpi[1], dpi[0])
    except (TypeError, ValueError, IndexError):
        dpi = None
    return dpi


def _to_float_rgb(im: Image.Image) -> tuple[np.ndarray, bool, int]:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im).astype(np.float32)
        if mode == "I" and a.max(initial=0) <= 255:
            scale, depth = 255.0, 8
        else:
            scale, depth = 65535.0, 16
        g = np.clip(a / scale, 0.0, 1.0)
        return np.repeat(g[..., None], 3, axis=2), True, depth
    if mode == "F":
        g = _float_to_unit(np.asarray(im))
        return np.repeat(g[..., None], 3, axis=2), True, 16
    if mode in ("1", "L"):
        g = np.asarray(im if mode == "L" else im.convert("L"), dtype=np.float32)
        g /= 255.0
        return np.repeat(g[..., None], 3, axis=2), True, 8
    if mode in ("LA", "La"):
        la = np.asarray(im.convert("LA"), dtype=np.float32) / 255.0
        g = la[..., 0] * la[..., 1] + (1.0 - la[..., 1])
        return np.repeat(g[..., None], 3, axis=2), True, 8
    has_alpha = mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        return _composite_white(rgba[..., :3], rgba[..., 3]).astype(np.float32), False, 8
    rgb = np.asarray(im if mode == "RGB" else im.convert("RGB"), dtype=np.float32)
    rgb /= 255.0                     # in place: the only full-size float buffer is the result
    return rgb, False, 8


# --------------------------------------------------------------------------------------------- encoding
def to_uint(pixels: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Float [0,1] → uint8/uint16 as floor(x·max + 0.5) (torchvision ``save_image``, the official stage-1
    output rounding, ARCHITECTURE §8.3): halves round up, not to even."""
    hi = 65535.0 if bit_depth == 16 else 255.0
    out = np.clip(pixels, 0.0, 1.0)              # the one full-size float temporary; the rest in place
    out *= hi
    out += 0.5                                   # the official rounding: floor(x * hi + 0.5)
    np.floor(out, out=out)
    return out.astype(np.uint16 if bit_depth == 16 else np.uint8)


LUMA = (0.299, 0.587, 0.114)                      # ITU-R BT.601 (PIL's convert("L")): oldphoto's one copy
LUMA_WEIGHTS = np.array(LUMA, np.float32)


def to_grey(pixels: np.ndarray) -> np.ndarray:
    """H×W×3 float → H×W float with ITU-R 601 luma (the weights PIL's convert("L") uses)."""
    r, g, b = LUMA
    return pixels[..., 0] * r + pixels[..., 1] * g + pixels[..., 2] * b


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def _png_add_metadata(png: bytes, icc: bytes | None, exif: bytes | None) -> bytes:
    """Insert iCCP and eXIf chunks after IHDR of a PNG written by a library that cannot."""
    extra = b""
    if icc:
        extra += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
    if exif:
        body = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
        extra += _png_chunk(b"eXIf", body)
    if not extra:
        return png
    ihdr_end = 8 + 4 + 4 + 13 + 4
    return png[:ihdr_end] + extra + png[ihdr_end:]


def encode_image(pixels: np.ndarray, fmt: str = "PNG", *, grey: bool = False, bit_depth: int = 8,
                 icc_profile: bytes | None = None, exif: bytes | None = None, tiff_tags: dict | None = None,
                 dpi: tuple[float, float] | None = None) -> bytes:
    """Encode H×W×3 (or H×W) float [0,1] pixels as PNG or TIFF at 8 or 16 bits, grey or RGB,
    carrying the ICC profile, EXIF block (PNG), descriptive TIFF tags (TIFF) and resolution along."""
    fmt = fmt.upper()
    if fmt not in ("PNG", "TIFF"):
        raise ValueError(f"unsupported output format {fmt}")
    arr = to_uint(_with_channels(pixels, grey), bit_depth)
    if bit_depth == 16 and arr.ndim == 3:        # PIL cannot hold 16-bit RGB
        if fmt == "PNG":
            return _encode_png_rgb16(arr, icc_profile, exif)
        return _encode_tiff_rgb16(arr, icc_profile, tiff_tags, dpi)
    kwargs: dict = {}
    if icc_profile:
        kwargs["icc_profile"] = icc_profile
    if dpi:
        kwargs["dpi"] = dpi
    if fmt == "TIFF":
        kwargs["compression"] = "tiff_deflate"
        if tiff_tags:
            kwargs["tiffinfo"] = {t: v for t, v in tiff_tags.items() if isinstance(v, str)}
    elif exif:
        kwargs["exif"] = exif
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kwargs)
    return buf.getvalue()


def _with_channels(pixels: np.ndarray, grey: bool) -> np.ndarray:
    """H×W for grey output, H×W×3 otherwise."""
    if grey and pixels.ndim == 3:
        return to_grey(pixels)
    if not grey and pixels.ndim == 2:
        return np.repeat(pixels[..., None], 3, axis=2)
    return pixels


def _encode_png_rgb16(arr: np.ndarray, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    import cv2

    ok, enc = cv2.imencode(".png", np.ascontiguousarray(arr[..., ::-1]))
    if not ok:
        raise ValueError("cv2 failed to encode a 16-bit PNG")
    return _png_add_metadata(enc.tobytes(), icc_profile, exif)


def _encode_tiff_rgb16(arr: np.ndarray, icc_profile: bytes | None, tiff_tags: dict | None,
                       dpi: tuple[float, float] | None) -> bytes:
    import tifffile

    extratags = [(34675, 7, len(icc_profile), icc_profile, True)] if icc_profile else []
    for tag, value in (tiff_tags or {}).items():
        if isinstance(value, str):
            extratags.append((tag, 2, 0, value, True))
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="rgb", compression="zlib", extratags=extratags,
                     resolution=(dpi[0], dpi[1]) if dpi else None, resolutionunit=2 if dpi else None)
    return buf.getvalue()


def check_readable(data: bytes) -> None:
    """Raise ValueError unless PIL can open what was written (its header and metadata chunks: an output over
    a reader's metadata limit must fail its item, never be reported done)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.size
    except Exception as e:
        raise ValueError(f"the encoded output cannot be read back: {safe_reason(e)}") from None
