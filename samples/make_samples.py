"""Rebuild samples/scans: public-domain pictures shipped with scikit-image and matplotlib, aged by
oldphoto's own synthesis (fixed seeds), two of them turned grey. Run: .venv/bin/python samples/make_samples.py"""
from pathlib import Path

import matplotlib.cbook as cbook
import numpy as np
from PIL import Image
from skimage import data

from oldphoto.data import TextureBank
from oldphoto.synthesis import synthesize

OUT = Path(__file__).parent / "scans"
SOURCES = {
    "astronaut_1960s": lambda: data.astronaut(),
    "grace_hopper_portrait": lambda: np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg"))),
    "coffee_cup": lambda: data.coffee(),
    "chelsea the cat": lambda: data.chelsea(),
}

if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    bank = TextureBank.procedural(0)
    for i, (name, load) in enumerate(SOURCES.items()):
        d = synthesize(load(), np.random.default_rng(100 + i), bank)
        img = Image.fromarray((np.clip(d.degraded, 0, 1) * 255 + 0.5).astype(np.uint8))
        (img.convert("L") if i % 2 else img).save(OUT / f"{name}.jpg", quality=90)
        print(name, d.ops)
