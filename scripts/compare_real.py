"""Look at weight sets side by side on the real old photos before shipping one (never trained on).

    python scripts/compare_real.py --data DATA --out sheet.png \\
        --set shipped=oldphoto/weights --set candidate=/runs/w,refine_strength=0.5 [--photos O2.jpg,O3.jpg]

Each --set is LABEL=WEIGHTS_DIR[,option=value...] (options as `oldphoto restore` takes them, e.g.
refine_strength=0.75, scratch=off, faces=false). Writes one sheet: a row per photo, the scan, then each set;
each row is labelled with what every set decided (scratch or quality path, mask coverage), also printed.
The synthetic benches cannot see what real scans suffer (the session-12 refiner is the example): open the sheet.
"""
from __future__ import annotations

import argparse


def parse_set(text: str) -> tuple[str, str, dict[str, str]]:
    label, _, rest = text.partition("=")
    weights, *opts = rest.split(",")
    if not label or not weights:
        raise SystemExit(f"--set {text!r}: expected LABEL=WEIGHTS_DIR[,option=value...]")
    options = dict(o.split("=", 1) for o in opts if o)
    return label, weights, options


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="data folder of `oldphoto data fetch` (its real/ photos)")
    ap.add_argument("--set", action="append", required=True, dest="sets")
    ap.add_argument("--photos", default=None, help="comma-separated file names (default: all real photos)")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--long-side", type=int, default=1024)
    a = ap.parse_args()
    from PIL import Image

    from oldphoto.quality_bench import compare_real_photos

    sheet = compare_real_photos([parse_set(s) for s in a.sets], a.data,
                                names=a.photos.split(",") if a.photos else None, real_long_side=a.long_side,
                                say=lambda m: print(m, flush=True))
    Image.fromarray(sheet).save(a.out)
    print(f"wrote {a.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
