"""Copy what the detector's training needs to a GPU machine that has no network: the train and val photos of a fetched
data folder, shrunk to a short side of 384 px (the size the detector's training loads them at) as JPEG q95, with
the scratch and paper textures, a manifest and the splits (about 30 MB: the device tool carries at most 64 MiB with
the repository). See scripts/gpu_detector.sh.

    .venv/bin/python scripts/gpu_data.py DATA OUT       # e.g. OUT = .gpu/data, a folder git ignores
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from PIL import Image

from oldphoto.data.dataset import load_manifest, load_rgb, load_splits
from oldphoto.training.scratch import TRAIN_MAX_SHORT as SHORT_SIDE


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    a = ap.parse_args()
    manifest, splits = load_manifest(a.data), load_splits(a.data)
    keep = set(splits["train"]) | set(splits["val"])
    photos = []
    for p in manifest["photos"]:
        if p["id"] not in keep:
            continue
        img = load_rgb(a.data / p["path"], SHORT_SIDE)
        dst = (a.out / p["path"]).with_suffix(".jpg")
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(dst, quality=95)
        photos.append({**p, "path": str(dst.relative_to(a.out)), "height": img.shape[0], "width": img.shape[1]})
    (a.out / "manifest.json").write_text(json.dumps({"format": manifest["format"], "photos": photos, "files": {},
                                                     "face_photos": [], "packages": []}))
    (a.out / "splits.json").write_text(json.dumps({"train": splits["train"], "val": splits["val"], "test": []}))
    shutil.copytree(a.data / "textures", a.out / "textures", dirs_exist_ok=True)
    size = sum(f.stat().st_size for f in a.out.rglob("*") if f.is_file())
    print(f"{len(photos)} photos and the textures in {a.out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
