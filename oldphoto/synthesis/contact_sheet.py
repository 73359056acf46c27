"""A contact sheet of the synthesis for the docs: one row per photo, columns clean | degraded | mask."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from oldphoto.data.dataset import PhotoRecord, builtin_photos, center_crop, load_rgb, resize_short_side, split_photos
from oldphoto.data.textures import TextureBank
from oldphoto.synthesis import DEFAULT, STRONG, SynthesisConfig, synthesize

LABELS = ("clean", "synthetic old", "defect mask")


def _u8(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def contact_sheet(photos: list[np.ndarray], seed: int = 0, textures: TextureBank | None = None,
                  configs: list[SynthesisConfig] | None = None, cell: int = 192, gap: int = 4,
                  header: int = 18) -> np.ndarray:
    """Grid (uint8 RGB): row i = photo i (centre crop, `cell` px) | its synthesis | its mask."""
    rows = len(photos)
    W = 3 * cell + 4 * gap
    H = header + rows * cell + (rows + 1) * gap
    sheet = np.full((H, W, 3), 255, np.uint8)
    for i, photo in enumerate(photos):
        clean = center_crop(resize_short_side(photo, cell), cell)
        cfg = configs[i % len(configs)] if configs else DEFAULT
        d = synthesize(clean, np.random.default_rng([seed, i]), textures, cfg)
        y = header + gap + i * (cell + gap)
        for j, img in enumerate((d.clean, d.degraded, d.mask)):
            x = gap + j * (cell + gap)
            sheet[y:y + cell, x:x + cell] = _u8(img)
    pil = Image.fromarray(sheet)
    draw = ImageDraw.Draw(pil)
    for j, lab in enumerate(LABELS):
        draw.text((gap + j * (cell + gap) + 4, 3), lab, fill=(0, 0, 0))
    return np.asarray(pil)


def pick_photos(data_dir: str | Path | None, n: int, seed: int) -> list[PhotoRecord]:
    """n photos for the sheet: the data folder's train split (fallback: builtin photos), seeded choice."""
    recs: list[PhotoRecord] = []
    if data_dir is not None:
        try:
            recs = split_photos(data_dir, "train")
        except FileNotFoundError:
            recs = []
    if not recs:
        recs = builtin_photos()
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(recs))[:n]
    return [recs[i] for i in sorted(idx)]


def write_contact_sheet(out: str | Path, data_dir: str | Path | None = None, n: int = 8, seed: int = 0,
                        cell: int = 192) -> Path:
    textures = None
    if data_dir is not None and (Path(data_dir) / "textures").is_dir():
        textures = TextureBank.from_dir(data_dir)
    recs = pick_photos(data_dir, n, seed)
    photos = [load_rgb(r.path, max_short_side=2 * cell) for r in recs]
    sheet = contact_sheet(photos, seed, textures, configs=[DEFAULT, STRONG], cell=cell)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", sheet[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    out.write_bytes(buf.tobytes())
    return out
