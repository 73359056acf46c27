"""Review images of one result, made once and cached beside its outputs (local folders and S3 alike, through
`oldphoto.storage`): DEST/<item>/_review/r<RESULT_ID>/{thumb.jpg, before.jpg, after.jpg, mask.png}.

- thumb.jpg: the restored image (the scan when the item failed) in a THUMB px box;
- before.jpg / after.jpg: scan and restored image, 8-bit sRGB JPEG at full resolution up to REVIEW_MAX_SIDE
  (reduced by an integer factor above it), after at the size of before so a slider can compare them pixel by pixel;
- mask.png: the scratch mask as a red, half-transparent overlay at the same size.

Memory stays bounded: JPEG sources are decoded at reduced scale (`Image.draft`), others reduced by an integer
factor (`Image.reduce`) as soon as they are decoded; only one result is prepared at a time per result id.
The tone change (mean absolute grey-level difference, 0..1, scan vs restored at thumbnail scale) is measured on
the way and stored in the catalog (`review_metrics`), where the "needs a look" score picks it up.
"""
from __future__ import annotations

import io
import posixpath
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from oldphoto.catalog import review as rq
from oldphoto.storage import Storage, open_storage

if TYPE_CHECKING:
    from oldphoto.catalog import Catalog

THUMB = 320
REVIEW_MAX_SIDE = 6000
KINDS = ("thumb", "before", "after", "mask")
MEDIA = {"thumb": "image/jpeg", "before": "image/jpeg", "after": "image/jpeg", "mask": "image/png"}
FILES = {"thumb": "thumb.jpg", "before": "before.jpg", "after": "after.jpg", "mask": "mask.png"}
Image.MAX_IMAGE_PIXELS = 400_000_000       # the pipeline refuses above 200 MP by default


@dataclass
class Place:
    storage: Storage
    folder: str

    def uri(self, kind: str) -> str:
        return self.storage.join(self.folder, FILES[kind])


def _to_rgb8(im: Image.Image) -> Image.Image:
    """8-bit RGB of any PIL mode (16-bit and float greys scaled to their range, EXIF orientation applied)."""
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float32)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a * (255.0 / top), 0, 255).astype(np.uint8), "L")
    return im.convert("RGB")


def open_bounded(data: bytes, max_side: int) -> Image.Image:
    """Decode `data` as 8-bit RGB whose longer side is at most about `max_side` (integer reduction)."""
    im = Image.open(io.BytesIO(data))
    if im.format == "JPEG":
        im.draft("RGB", (max_side, max_side))
    side = max(im.size)
    factor = max(1, -(-side // max_side))
    im.load()
    if factor > 1:
        im = im.reduce(factor)
    return _to_rgb8(im)


def _jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=3)
    return buf.getvalue()


def tone_change(before: Image.Image, after: Image.Image) -> float:
    """Mean absolute difference of grey levels (0..1) of two images compared at thumbnail scale."""
    size = before.size if max(before.size) <= THUMB else _fit(before.size, THUMB)
    a = np.asarray(before.convert("L").resize(size, Image.Resampling.BOX), np.float32)
    b = np.asarray(after.convert("L").resize(size, Image.Resampling.BOX), np.float32)
    return float(np.abs(a - b).mean() / 255.0)


def _fit(size: tuple[int, int], box: int) -> tuple[int, int]:
    w, h = size
    s = min(box / w, box / h)
    return max(1, round(w * s)), max(1, round(h * s))


def _mask_overlay(data: bytes, size: tuple[int, int]) -> Image.Image:
    m = Image.open(io.BytesIO(data)).convert("L")
    if m.size != size:
        m = m.resize(size, Image.Resampling.NEAREST)
    alpha = m.point(lambda v: 150 if v >= 128 else 0)
    red = Image.new("RGBA", size, (255, 32, 32, 0))
    red.putalpha(alpha)
    return red


class ReviewImages:
    """Makes and serves the cached review images of results recorded in `catalog`."""

    def __init__(self, catalog: "Catalog") -> None:
        self.catalog = catalog
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, result_id: int) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(result_id, threading.Lock())

    def place(self, result_id: int) -> tuple[Place, dict[str, object]]:
        src = rq.source_of(self.catalog, result_id)
        restored = src["outputs"].get("restored")
        if restored:
            base = posixpath.dirname(restored)
        elif src["destination"]:
            base = src["destination"]
        else:
            raise rq.ReviewError(f"result {result_id} has no outputs and its run no destination")
        store = open_storage(base)
        return Place(store, store.join(base, "_review", f"r{result_id}")), src

    def get(self, result_id: int, kind: str) -> bytes | None:
        """The bytes of one review image (made on first use); None when it does not exist (no mask, a failed
        item has no after image)."""
        if kind not in KINDS:
            raise rq.ReviewError(f"review image kind must be one of {', '.join(KINDS)}")
        place, src = self.place(result_id)
        uri = place.uri(kind)
        if not place.storage.exists(uri):
            with self._lock(result_id):
                if not place.storage.exists(uri):
                    self.prepare(result_id, place, src)
        return place.storage.read_bytes(uri) if place.storage.exists(uri) else None

    def prepare(self, result_id: int, place: Place | None = None, src: dict[str, object] | None = None) -> list[str]:
        """Make every review image of a result (idempotent); returns the kinds written. The thumbnail is
        written last: its presence means the set is complete."""
        if place is None or src is None:
            place, src = self.place(result_id)
        if place.storage.exists(place.uri("thumb")):
            return []
        outputs: dict[str, str] = src["outputs"]  # type: ignore[assignment]
        source_uri = str(src["source_uri"])
        written: list[str] = []
        before = open_bounded(open_storage(source_uri).read_bytes(source_uri), REVIEW_MAX_SIDE)
        place.storage.write_bytes(place.uri("before"), _jpeg(before))
        written.append("before")
        thumb_of = before
        tone = None
        if outputs.get("restored"):
            after = open_bounded(open_storage(outputs["restored"]).read_bytes(outputs["restored"]), REVIEW_MAX_SIDE)
            if after.size != before.size:
                after = after.resize(before.size, Image.Resampling.LANCZOS)
            place.storage.write_bytes(place.uri("after"), _jpeg(after))
            written.append("after")
            tone = tone_change(before, after)
            thumb_of = after
            del after
        if outputs.get("mask"):
            overlay = _mask_overlay(open_storage(outputs["mask"]).read_bytes(outputs["mask"]), before.size)
            place.storage.write_bytes(place.uri("mask"), _png(overlay))
            written.append("mask")
        thumb = thumb_of.copy()
        thumb.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
        rq.save_metrics(self.catalog, result_id, tone, before.size[0], before.size[1])
        place.storage.write_bytes(place.uri("thumb"), _jpeg(thumb, 85))
        written.append("thumb")
        return written
