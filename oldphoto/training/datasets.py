"""Training batches: random crops of clean photos, synthetic old photos made from them (engineer F1's
``oldphoto.synthesis``), real old photos (domain R), and aligned faces.

Everything is drawn from one ``numpy.random.Generator`` owned by the trainer, in the main process, so a
resumed run (which restores the generator's state) sees exactly the batches an uninterrupted one would.
Tensors are N x C x H x W float32, images in [-1, 1], masks in {0, 1} (1 = defect).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from oldphoto.imageops.io import LUMA_WEIGHTS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}


# ------------------------------------------------------------------------------------------ images
def to_tensor(img: np.ndarray) -> torch.Tensor:
    """H x W x C (or H x W) uint8 -> C x H x W float in [-1, 1]."""
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().div(127.5).sub(1.0)


def mask_tensor(mask: np.ndarray) -> torch.Tensor:
    """H x W mask (bool, 0/1, 0/255 or float) -> 1 x H x W float in {0, 1} (threshold at half range)."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[..., 0]
    if m.dtype == np.uint8 and m.max(initial=0) > 1:
        m = m > 127
    return torch.from_numpy((m > 0.5).astype(np.float32))[None]


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """RGB N x 3 x H x W in [-1, 1] -> luminance N x 1 x H x W (ITU-R 601, as PIL's "L")."""
    w = torch.from_numpy(LUMA_WEIGHTS).to(dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def fill_holes_white(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Official scratch-mode input: defect pixels set to white (1.0 in [-1, 1])."""
    return x * (1.0 - mask) + mask


def decode_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def load_rgb(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def shrink(img: np.ndarray, max_short: int) -> np.ndarray:
    """Downscale (area-aware) so the short side is at most ``max_short``; large wallpapers would otherwise
    give crops that show only texture."""
    h, w = img.shape[:2]
    s = min(h, w)
    if s <= max_short:
        return img
    f = max_short / s
    im = Image.fromarray(img).resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BOX)
    return np.asarray(im)


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator, flip: bool = True) -> np.ndarray:
    """A random size x size crop (the image is upscaled first if a side is too small), random h-flip."""
    h, w = img.shape[:2]
    if min(h, w) < size:
        f = size / min(h, w)
        img = np.asarray(Image.fromarray(img).resize((max(size, round(w * f)), max(size, round(h * f))),
                                                     Image.Resampling.BICUBIC))
        h, w = img.shape[:2]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    crop = img[top:top + size, left:left + size]
    if flip and rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


class PhotoPool:
    """In-memory list of RGB uint8 photos to crop from (downscaled to ``max_short`` on load)."""

    def __init__(self, images: list[np.ndarray], names: list[str] | None = None, max_short: int = 512,
                 scale_jitter: tuple[float, float] = (0.6, 1.0)):
        if not images:
            raise ValueError("PhotoPool needs at least one image")
        self.images = [shrink(np.asarray(i), max_short) for i in images]
        self.names = names or [f"image{i}" for i in range(len(images))]
        self.scale_jitter = scale_jitter

    def __len__(self) -> int:
        return len(self.images)

    def crop(self, size: int, rng: np.random.Generator) -> np.ndarray:
        img = self.images[int(rng.integers(len(self.images)))]
        lo, hi = self.scale_jitter
        f = float(rng.uniform(lo, hi))
        h, w = img.shape[:2]
        if f < 0.999 and min(h, w) * f >= size:
            img = np.asarray(Image.fromarray(img).resize((round(w * f), round(h * f)), Image.Resampling.BILINEAR))
        return random_crop(img, size, rng)

    @classmethod
    def from_paths(cls, paths: list[Path], **kw) -> "PhotoPool":
        return cls([load_rgb(p) for p in paths], [Path(p).name for p in paths], **kw)

    @classmethod
    def from_uri(cls, uri: str, limit: int | None = None, **kw) -> "PhotoPool":
        """Every image under a local folder, a single file, or an s3:// prefix (``oldphoto.storage``)."""
        p = Path(uri)
        if p.is_file():
            return cls.from_paths([p], **kw)
        from oldphoto.storage import open_storage

        st = open_storage(uri)
        names = list(st.list_images())[:limit]
        if not names:
            raise FileNotFoundError(f"no images found under {uri}")
        images, kept = [], []
        for n in names:
            try:
                images.append(decode_rgb(st.read_bytes(n)))
                kept.append(str(n))
            except Exception as exc:  # one bad file must not stop training
                print(f"skipping unreadable real photo {n}: {exc}")
        return cls(images, kept, **kw)


# ------------------------------------------------------------------------------------------ sources
def clean_photos(data_dir: str | Path | None, split: str = "train", max_short: int = 512) -> PhotoPool:
    """Clean ground-truth photos: the ``split`` of the folder written by ``oldphoto data fetch DIR`` when
    given, else the photos bundled with installed packages (``oldphoto.data.builtin_photos``; note that
    these form the fixed *test* split, so use them only for smoke runs)."""
    from oldphoto.data import dataset as odata

    records = odata.split_photos(data_dir, split) if data_dir is not None else odata.builtin_photos()
    if not records:
        raise FileNotFoundError(f"no {split} photos in {data_dir}")
    images = [odata.load_rgb(r.path, max_short) for r in records]
    return PhotoPool(images, [r.id for r in records], max_short=max_short)


def load_textures(data_dir: str | Path | None, seed: int = 0) -> Any:
    """Scratch/paper textures (``oldphoto.data.TextureBank``) from the fetched data folder, or the
    procedural bank when no folder is given."""
    from oldphoto.data import TextureBank

    if data_dir is not None:
        return TextureBank.from_dir(data_dir)
    return TextureBank.procedural(seed)


# ------------------------------------------------------------------------------------------ synthesis
@dataclass
class Pair:
    degraded: np.ndarray   # H x W x 3 uint8
    clean: np.ndarray      # H x W x 3 uint8
    mask: np.ndarray       # H x W, 1 = structured defect


def synthesis_config(structured: bool = True, strong: bool = False):
    """The ``oldphoto.synthesis`` preset for a purpose: DEFAULT (all degradations, local defects in the
    mask), no local defects (quality mapping, face inputs), or STRONG (pseudo-real old photos, domain R)."""
    from oldphoto import synthesis

    if strong:
        return synthesis.STRONG
    if structured:
        return synthesis.DEFAULT
    return synthesis.with_overrides(synthesis.DEFAULT, defects_prob=0.0)


def synthesize_pair(clean: np.ndarray, rng: np.random.Generator, textures: Any = None,
                    structured: bool = True, strong: bool = False, overrides: dict[str, Any] | None = None) -> Pair:
    """One synthetic old photo from a clean uint8 crop via ``oldphoto.synthesis.synthesize`` (``overrides``:
    SynthesisConfig fields changed, e.g. the defect mix; a sample without local defects draws none whatever they
    say)."""
    from oldphoto import synthesis

    config = synthesis_config(structured, strong)
    if overrides:
        config = synthesis.with_overrides(config, **overrides)
    out = synthesis.synthesize(clean, rng, textures, config=config)
    deg = np.rint(np.clip(np.asarray(out.degraded), 0, 1) * 255).astype(np.uint8)
    mask = (np.asarray(out.mask) > 0.5).astype(np.float32)
    if deg.shape[:2] != clean.shape[:2]:
        raise ValueError(f"synthesis changed the crop size {clean.shape[:2]} -> {deg.shape[:2]}")
    return Pair(deg, clean, mask)


class BatchSource:
    """Makes training batches from pools; one method per kind of batch the trainers need."""

    def __init__(self, clean: PhotoPool, textures: Any = None, real: PhotoPool | None = None,
                 faces: PhotoPool | None = None):
        self.clean = clean
        self.textures = textures
        self.real = real
        self.faces = faces

    def pairs(self, n: int, size: int, rng: np.random.Generator, structured: bool = True) -> dict[str, torch.Tensor]:
        """Synthetic pairs: ``x`` degraded, ``y`` clean, ``mask`` (N x 1 x H x W)."""
        xs, ys, ms = [], [], []
        for _ in range(n):
            p = synthesize_pair(self.clean.crop(size, rng), rng, self.textures, structured=structured)
            xs.append(to_tensor(p.degraded))
            ys.append(to_tensor(p.clean))
            ms.append(mask_tensor(p.mask))
        return {"x": torch.stack(xs), "y": torch.stack(ys), "mask": torch.stack(ms)}

    def clean_crops(self, n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
        return torch.stack([to_tensor(self.clean.crop(size, rng)) for _ in range(n)])

    def real_old(self, n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
        """Domain R: crops of real old photos when given; every other one (or all, when there are no
        real photos) a strongly degraded synthetic photo (synthesis preset STRONG)."""
        out = []
        for i in range(n):
            if self.real is not None and (i % 2 == 0 or len(self.real) > 4):
                crop = self.real.crop(size, rng)
            else:
                crop = synthesize_pair(self.clean.crop(size, rng), rng, self.textures, strong=True).degraded
            out.append(to_tensor(crop))
        return torch.stack(out)

    def face_pairs(self, n: int, size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Aligned faces (``y``) and degraded versions (``x``): synthetic old-photo degradation plus a
        random down/up-scaling (the face enhancer must add detail)."""
        if self.faces is None:
            raise ValueError("no face images: the face trainer needs aligned faces")
        xs, ys = [], []
        for _ in range(n):
            face = self.faces.crop(size, rng)
            f = float(rng.uniform(0.2, 0.6))
            small = max(8, int(size * f))
            low = Image.fromarray(face).resize((small, small), Image.Resampling.BILINEAR).resize(
                (size, size), Image.Resampling.BILINEAR)
            p = synthesize_pair(np.asarray(low), rng, self.textures, structured=False)
            xs.append(to_tensor(p.degraded))
            ys.append(to_tensor(face))
        return {"x": torch.stack(xs), "y": torch.stack(ys)}


# ------------------------------------------------------------------------------------------ faces
def aligned_faces(images: list[np.ndarray], size: int, progress: Callable | None = None) -> list[np.ndarray]:
    """Every dlib-detected face of ``images`` aligned to the official template at ``size`` x ``size``
    (``oldphoto.imageops.faces``: the same alignment the restoration pipeline uses)."""
    from oldphoto.imageops import faces as F

    out = []
    for img in images:
        # upsample 0: faces of about 80 px and more; smaller ones would be blurry targets once aligned to `size`
        for face in F.detect_faces(img, upsample_max_mp=0):
            l, t, r, b = face.box
            if max(r - l, b - t) < size // 2:
                continue
            try:
                t = F.alignment_transform(face.points5, size)
            except ValueError:
                continue
            out.append(F.align_face(img, t, size))
        if progress is not None:
            progress()
    return out


FACE_SKIP_DIRS = {"cache", "textures", "real", "extras"}


def face_source_photos(data_dir: str | Path | None) -> list[tuple[Path, str, str]]:
    """The photos the face trainer reads, as (path, name, sha256), duplicates (same bytes) dropped.

    With a data folder: the clean photos of the *train and val* splits (``DIR/photos/**``), the
    face-enhancer-only photos ``DIR/faces/<group>/*`` of the face *train* split (npm ``@vladmandic/face-api``
    and ``tracking`` group photos, dlib's example group photos and aligned crops, kphotoalbum snapshots
    with people; written by ``oldphoto data fetch``), and any other image under DIR, except ``cache/``,
    ``textures/``, ``extras/`` and ``real/`` (the real-photo review set is never trained on). The *test*
    split photos (which include every builtin photo: astronaut, Grace Hopper, ...) and the face photos whose
    manifest split is "test" (``oldphoto.data.dataset.held_out_face_photos``) are left out by content, so
    neither ``oldphoto bench quality`` nor the face metrics see a face the enhancer was trained on.

    Without a data folder (smoke runs only): the builtin photos.

    ``name`` is the path relative to DIR (``builtin/<file>`` for builtin photos)."""
    from oldphoto.data import dataset as odata
    from oldphoto.digest import file_sha256

    seen: set[str] = set()
    if data_dir is not None and Path(data_dir).is_dir():
        root = Path(data_dir)
        seen = {file_sha256(p) for p in _held_out_photos(root) if p.is_file()}     # never train on a test photo
        cands = [(p, p.relative_to(root).as_posix()) for p in sorted(root.rglob("*")) if _face_candidate(root, p)]
    else:
        cands = [(r.path, f"builtin/{r.path.name}") for r in odata.builtin_photos()]
    out = []
    for p, name in cands:
        try:
            digest = file_sha256(p)
        except OSError:
            continue
        if digest in seen:          # a held-out photo, or a copy of one already taken
            continue
        seen.add(digest)
        out.append((p, name, digest))
    return out


def _held_out_photos(root: Path) -> list[Path]:
    """The test split, the builtin photos and the face photos of the face test/val splits."""
    from oldphoto.data import dataset as odata

    try:
        held_out = [r.path for r in odata.split_photos(root, "test")]
    except odata.DataNotFetchedError:
        held_out = []
    held_out += [r.path for r in odata.builtin_photos()]
    return held_out + odata.held_out_face_photos(root) + odata.held_out_face_photos(root, "val")


def _face_candidate(root: Path, p: Path) -> bool:
    rel = p.relative_to(root)
    return p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not (set(rel.parts[:-1]) & FACE_SKIP_DIRS)


def face_sources_key(sources: list[tuple[Path, str, str]], size: int, max_side: int = 1600) -> str:
    """A short hash of the source photos' bytes (and the face size/decode size): it names the aligned-face
    cache, so a cache built from another set of photos is never reused."""
    import hashlib

    h = hashlib.sha256(f"faces-v1:{size}:{max_side}".encode())
    for digest in sorted(d for _, _, d in sources):
        h.update(digest.encode())
    return h.hexdigest()[:16]


def face_images(data_dir: str | Path | None, size: int, max_side: int = 1600,
                sources: list[tuple[Path, str, str]] | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Aligned faces (dlib) from ``sources`` (default ``face_source_photos(data_dir)``: the fetched train/val
    photos and the face-train photos under ``DIR/faces/``; never a test-split photo, a face-test photo nor a
    real old photo). No face data set is obtainable here, so this is a couple of hundred faces at most; the
    face trainer augments heavily.
    Returns the faces and the names of the photos that could be decoded."""
    from oldphoto.data import dataset as odata

    if sources is None:
        sources = face_source_photos(data_dir)
    images, names = [], []
    for p, name, _ in sources:
        try:
            images.append(odata.load_rgb(p, max_side))
            names.append(name)
        except Exception:
            continue
    return aligned_faces(images, size), names
