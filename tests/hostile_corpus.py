"""The shared hostile-input corpus: one generator function per kind, each a small file (a few hundred kB at
most) with its exact expected outcome, for `oldphoto restore` (tests/test_hostile_inputs.py) and the archive
flow alike.

`corpus()` returns {relative file name: (bytes, expectation)}. An expectation is "ok" (restored as RGB),
"ok:grey" (8 or 16-bit grey), "ok:grey16" (16-bit grey), "ok:16" (16-bit RGB), "ok:rotated" (EXIF rotation
applied: 64×72), "skipped" (not an input: listed as skipped), or a substring of the one-line error of a failed
item. `WARNINGS` holds the decode policy's warnings that provenance records, exactly, per kind. Expectations
assume `--max-megapixels 0.5` (`huge.png` is 0.64 MP); `MAX_MEGAPIXELS_ONLY` lists what that changes.
"""
from __future__ import annotations

import io
import struct
import zipfile
import zlib
from functools import lru_cache
from typing import Callable

import cv2
import numpy as np
import tifffile
from PIL import Image
from skimage import data as skdata

UNREADABLE = "not a readable image: unrecognised file format"
TOO_LARGE = "image too large: its header claims more than 500,000 pixels (--max-megapixels"
Kind = tuple[str, bytes, str]                   # (relative file name, bytes, expectation)
KINDS: list[Callable[[], Kind]] = []


def kind(fn: Callable[[], Kind]) -> Callable[[], Kind]:
    KINDS.append(fn)
    return fn


@lru_cache(maxsize=1)
def photo() -> np.ndarray:
    """A 64×72 (H×W) RGB photograph."""
    return np.asarray(Image.fromarray(skdata.astronaut()).resize((72, 64)))


def pil() -> Image.Image:
    return Image.fromarray(photo())


def save(arr_or_im, fmt: str, **kw) -> bytes:
    im = arr_or_im if isinstance(arr_or_im, Image.Image) else Image.fromarray(arr_or_im)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def good_jpg() -> bytes:
    return save(photo(), "JPEG", quality=90)


def good_png() -> bytes:
    return save(photo(), "PNG")


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def bomb_png(side: int = 60000) -> bytes:
    """A few hundred bytes whose header claims side×side pixels."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
            + _chunk(b"IEND", b""))


def _exif_jpg(orientation: int) -> bytes:
    im = pil()
    exif = im.getexif()
    exif[0x0112] = orientation
    return save(im, "JPEG", exif=exif.tobytes())


# ---- empty, truncated, corrupt, not an image ---------------------------------------------------------------
@kind
def empty() -> Kind:
    return "empty.jpg", b"", "empty file (0 bytes)"


@kind
def truncated_jpeg() -> Kind:
    b = good_jpg()
    return "truncated.jpg", b[: len(b) // 2], "cannot decode JPEG data (truncated or corrupt?)"


@kind
def truncated_png() -> Kind:
    b = good_png()
    return "truncated.png", b[: int(len(b) * 0.6)], "cannot decode PNG data (truncated or corrupt?)"


@kind
def truncated_tiff() -> Kind:
    return "truncated.tif", save(photo(), "TIFF")[:400], "cannot decode TIFF data (truncated or corrupt?)"


@kind
def truncated_webp() -> Kind:
    b = save(photo(), "WEBP", quality=80)
    return "cut short.webp", b[: len(b) // 2], "not a readable image: OSError: could not create decoder object"


@kind
def truncated_gif() -> Kind:
    b = save(pil().convert("P"), "GIF")
    return "cut short.gif", b[: len(b) // 2], "cannot decode GIF data (truncated or corrupt?)"


@kind
def png_bad_crc() -> Kind:
    b = bytearray(good_png())
    b[29] ^= 0xFF                                   # IHDR's CRC
    return "bad crc.png", bytes(b), UNREADABLE


@kind
def jpeg_header_only() -> Kind:
    return "header only.jpg", b"\xff\xd8\xff\xe0", UNREADABLE


@kind
def random_bytes() -> Kind:
    rng = np.random.default_rng(0)
    return "random bytes.png", rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(), UNREADABLE


@kind
def zeros() -> Kind:
    return "zeros.jpg", bytes(4096), UNREADABLE


@kind
def text_named_png() -> Kind:
    return "text.png", b"This is not a picture.\n" * 10, UNREADABLE


@kind
def html_named_jpg() -> Kind:
    return "page.jpg", b"<!DOCTYPE html><html><body><img src='a.jpg'></body></html>\n", UNREADABLE


@kind
def zip_named_png() -> Kind:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.png", good_png())
    return "archive.png", buf.getvalue(), UNREADABLE


@kind
def svg_named_png() -> Kind:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    return "vector.png", svg, UNREADABLE


@kind
def pdf_named_jpg() -> Kind:
    return "document.jpg", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", UNREADABLE


# ---- not an image name: skipped -------------------------------------------------------------------------
@kind
def text_file() -> Kind:
    return "notes.txt", b"Box 12, folder 3: wedding portraits, 1923.\n" * 20, "skipped"


@kind
def svg_file() -> Kind:
    return "drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "skipped"


@kind
def pdf_file() -> Kind:
    return "scan.pdf", b"%PDF-1.4\n", "skipped"


@kind
def ico_file() -> Kind:
    return "favicon.ico", save(pil().resize((32, 32)), "ICO"), "skipped"


@kind
def no_suffix() -> Kind:
    return "README", b"scans from the attic\n", "skipped"


# ---- too large (declared, or over --max-megapixels) ---------------------------------------------------
@kind
def bomb_png_kind() -> Kind:
    return "bomb.png", bomb_png(), TOO_LARGE


@kind
def bomb_gif() -> Kind:
    b = bytearray(save(pil().convert("P"), "GIF"))
    b[6:10] = struct.pack("<HH", 65535, 65535)      # logical screen
    i = b.index(b"\x2c")                            # image descriptor
    b[i + 5:i + 9] = struct.pack("<HH", 65535, 65535)
    return "bomb.gif", bytes(b), TOO_LARGE


@kind
def bomb_tiff() -> Kind:
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((8, 8), np.uint8))
    b = bytearray(buf.getvalue())
    # patch ImageWidth (256) and ImageLength (257) to 60000 in the first IFD
    ifd = struct.unpack("<I", b[4:8])[0]
    n = struct.unpack("<H", b[ifd:ifd + 2])[0]
    for k in range(n):
        e = ifd + 2 + 12 * k
        tag, typ = struct.unpack("<HH", b[e:e + 4])
        if tag in (256, 257):
            b[e + 8:e + 12] = struct.pack("<I", 60000) if typ == 4 else struct.pack("<HH", 60000, 0)
    return "bomb.tif", bytes(b), TOO_LARGE


@kind
def bomb_jpeg() -> Kind:
    b = bytearray(good_jpg())
    i = b.index(b"\xff\xc0")                        # SOF0: length(2) precision(1) height(2) width(2)
    b[i + 5:i + 9] = struct.pack(">HH", 60000, 60000)
    return "bomb.jpg", bytes(b), TOO_LARGE


@kind
def over_max_megapixels() -> Kind:
    return "huge.png", save(np.zeros((800, 800), np.uint8), "PNG"), TOO_LARGE


# ---- valid but unusual: restored ----------------------------------------------------------------------
@kind
def cmyk_jpeg() -> Kind:
    return "cmyk.jpg", save(pil().convert("CMYK"), "JPEG"), "ok"


@kind
def cmyk_tiff() -> Kind:
    return "cmyk.tif", save(pil().convert("CMYK"), "TIFF"), "ok"


@kind
def progressive_jpeg() -> Kind:
    return "progressive.jpg", save(photo(), "JPEG", progressive=True, quality=85), "ok"


@kind
def grey_jpeg() -> Kind:
    return "grey.jpg", save(pil().convert("L"), "JPEG"), "ok:grey"


@kind
def palette_transparent_png() -> Kind:
    pal = pil().convert("P", palette=Image.ADAPTIVE, colors=16)
    return "palette transparent.png", save(pal, "PNG", transparency=0), "ok"


@kind
def grey_trns_png() -> Kind:
    return "grey trns.png", save(pil().convert("L"), "PNG", transparency=0), "ok:grey"


@kind
def grey_alpha_png() -> Kind:
    return "grey alpha.png", save(pil().convert("LA"), "PNG"), "ok:grey"


@kind
def rgb16_png() -> Kind:
    return "rgb16.png", cv2.imencode(".png", (photo().astype(np.uint16) * 257)[..., ::-1])[1].tobytes(), "ok:16"


@kind
def grey16_png() -> Kind:
    return "grey16.png", save(Image.fromarray(photo()[..., 1].astype(np.uint16) * 257), "PNG"), "ok:grey16"


@kind
def rgba_png() -> Kind:
    rgba = np.dstack([photo(), np.full(photo().shape[:2], 128, np.uint8)])
    return "rgba.png", save(rgba, "PNG"), "ok"


@kind
def grey_png() -> Kind:
    return "grey.png", save(pil().convert("L"), "PNG"), "ok:grey"


@kind
def bilevel_png() -> Kind:
    return "bilevel.png", save(pil().convert("1"), "PNG"), "ok:grey"


@kind
def bilevel_group4_tiff() -> Kind:
    return "bilevel g4.tif", save(pil().convert("1"), "TIFF", compression="group4"), "ok:grey"


@kind
def float_tiff() -> Kind:
    return "float.tif", save(Image.fromarray(photo()[..., 0].astype(np.float32)), "TIFF"), "ok:grey16"


@kind
def float_rgb_tiff() -> Kind:
    buf = io.BytesIO()
    tifffile.imwrite(buf, photo().astype(np.float32) / 255, photometric="rgb")
    return "float rgb.tif", buf.getvalue(), "ok:16"


@kind
def lzw_tiff() -> Kind:
    return "lzw.tif", save(photo(), "TIFF", compression="tiff_lzw"), "ok"


@kind
def lzw_rgb16_tiff() -> Kind:          # the usual archive master: tifffile needs imagecodecs for LZW; OpenCV reads it
    rgb16 = (photo().astype(np.uint16) * 257)[..., ::-1]
    return "lzw rgb16.tif", cv2.imencode(".tif", rgb16, [cv2.IMWRITE_TIFF_COMPRESSION, 5])[1].tobytes(), "ok:16"


@kind
def cmyk16_tiff() -> Kind:             # once taken for RGBA (its black channel as alpha); PIL converts it
    buf = io.BytesIO()
    cmyk = np.concatenate([255 - photo(), np.zeros(photo().shape[:2] + (1,), np.uint8)], axis=2)
    tifffile.imwrite(buf, cmyk.astype(np.uint16) * 257, photometric="separated")
    return "cmyk16.tif", buf.getvalue(), "ok"


@kind
def rgb16_unspecified_extra_tiff() -> Kind:  # once composited as alpha: a zero extra sample made the photo white
    buf = io.BytesIO()
    samples = np.concatenate([photo(), np.zeros(photo().shape[:2] + (1,), np.uint8)], axis=2)
    tifffile.imwrite(buf, samples.astype(np.uint16) * 257, photometric="rgb", extrasamples=["unspecified"])
    return "rgb16 extra.tif", buf.getvalue(), "ok:16"


@kind
def deflate_tiff() -> Kind:
    return "deflate.tif", save(photo(), "TIFF", compression="tiff_adobe_deflate"), "ok"


@kind
def jpeg_ycbcr_tiff() -> Kind:
    return "jpeg ycbcr.tif", save(photo(), "TIFF", compression="jpeg"), "ok"


@kind
def multipage_tiff() -> Kind:
    pages = [pil(), Image.fromarray(photo()[::-1])]
    return "multipage.tif", save(pages[0], "TIFF", save_all=True, append_images=pages[1:]), "ok"


@kind
def bmp() -> Kind:
    return "photo.bmp", save(photo(), "BMP"), "ok"


@kind
def palette_bmp() -> Kind:
    return "palette.bmp", save(pil().convert("P"), "BMP"), "ok"


@kind
def webp_lossless() -> Kind:
    return "lossless.webp", save(photo(), "WEBP", lossless=True), "ok"


@kind
def webp_lossy() -> Kind:
    return "lossy.webp", save(photo(), "WEBP", quality=70), "ok"


@kind
def gif_transparent() -> Kind:
    return "transparent.gif", save(pil().convert("P"), "GIF", transparency=0), "ok"


@kind
def animated_gif() -> Kind:
    frames = [pil().convert("P"), Image.fromarray(photo()[::-1]).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    return "animated.gif", buf.getvalue(), "ok"


@kind
def huge_icc_jpeg() -> Kind:
    icc = bytearray(3_000_000)                     # a 3 MB "RGB" ICC profile: over what PIL reads back
    icc[16:20], icc[36:40] = b"RGB ", b"acsp"
    return "huge icc.jpg", save(photo(), "JPEG", icc_profile=bytes(icc)), "ok"


@kind
def exif_orientation_8() -> Kind:
    return "sideways.jpg", _exif_jpg(8), "ok:rotated"


@kind
def exif_orientation_6() -> Kind:
    return "rotated 6.jpg", _exif_jpg(6), "ok:rotated"


@kind
def exif_orientation_3() -> Kind:
    return "upside down.jpg", _exif_jpg(3), "ok"


@kind
def exif_bad_orientation() -> Kind:
    return "bad orientation.jpg", _exif_jpg(99), "ok"


@kind
def exif_zero_orientation() -> Kind:
    return "zero orientation.jpg", _exif_jpg(0), "ok"


@kind
def unicode_name() -> Kind:
    return "名前 with spaces ✓.jpg", good_jpg(), "ok"


@kind
def odd_characters_name() -> Kind:
    return "a;b&c $(d) 'e' #f%20.jpg", good_jpg(), "ok"


@kind
def upper_case_suffix() -> Kind:
    return "SHOUTING.JPEG", good_jpg(), "ok"


@kind
def jpeg_named_png() -> Kind:
    return "jpeg named.png", good_jpg(), "ok"


@kind
def png_named_jpg() -> Kind:
    return "png named.jpg", good_png(), "ok"


@kind
def one_pixel() -> Kind:
    return "tiny.png", save(photo()[:1, :1], "PNG"), "ok"


@kind
def three_by_three() -> Kind:
    return "three.png", save(photo()[:3, :3], "PNG"), "ok"


@kind
def elongated() -> Kind:
    return "elongated.png", save(np.tile(photo()[:4], (1, 5, 1)), "PNG"), "ok"                  # 4×360


@kind
def thin_column() -> Kind:
    rng = np.random.default_rng(1)
    return "column.png", save(rng.integers(0, 256, (5000, 1, 3), dtype=np.uint8), "PNG"), "ok"    # 5000×1


@kind
def nested_folder() -> Kind:
    return "box 1/folder 2/nested.jpg", good_jpg(), "ok"


def corpus() -> dict[str, tuple[bytes, str]]:
    """relative file name -> (bytes, expectation), one entry per kind."""
    c: dict[str, tuple[bytes, str]] = {}
    for fn in KINDS:
        name, blob, expect = fn()
        assert name not in c, name
        c[name] = (blob, expect)
    return c


WARNINGS = {    # what the decode policy reports in provenance, exactly
    "animated.gif": ["multi-frame file (2 frames): only the first was restored"],
    "multipage.tif": ["multi-frame file (2 pages): only the first was restored"],
    "float.tif": ["float TIFF (float32) written back as 16-bit integer TIFF"],
    "float rgb.tif": ["float TIFF (float32) written back as 16-bit integer TIFF"],
    "rgb16 extra.tif": ["TIFF with 1 extra sample(s) per pixel beyond RGB: not restored"],
    "huge icc.jpg": ["ICC profile of 3,000,000 bytes dropped (over 1,000,000: the output could not be read back)"],
}
MAX_MEGAPIXELS_ONLY = {"huge.png": "ok:grey"}     # the outcome at the default limit (200 MP)
