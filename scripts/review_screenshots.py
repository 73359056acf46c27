"""Screenshots of the review app for the README (docs/review_grid.png, docs/review_item.png).

Restores the sample scans (samples/scans, reduced to --side px) with the real `oldphoto restore` and the shipped
weights into a temporary folder, records a few decisions, serves the review app on 127.0.0.1 and photographs the
items grid and the item page of the portrait in the same headless Chromium the tests use.

    .venv/bin/python scripts/review_screenshots.py [--side 320] [--out docs]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def restore(src: Path, dest: Path, url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", "from oldphoto.cli import main; main()", "restore", str(src), "--out",
                    str(dest), "--catalog", url], check=True, cwd=REPO, env=env)


def main() -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By

    from browser import chromium, free_port, serve
    from oldphoto.catalog import Catalog
    from oldphoto.catalog import review as rq
    from oldphoto.review.app import create_app
    from oldphoto.review.auth import Sessions, hash_password
    from oldphoto.review.images import ReviewImages

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=320, help="longer side of the scans restored")
    ap.add_argument("--out", type=Path, default=REPO / "docs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src, dest = root / "scans", root / "dest"
        src.mkdir()
        for p in sorted((REPO / "samples" / "scans").iterdir()):
            im = Image.open(p)
            im.thumbnail((args.side, args.side))
            im.save(src / (p.stem.replace(" ", "_") + ".png"))
        url = f"sqlite:///{root / 'catalog.sqlite'}"
        restore(src, dest, url)
        cat = Catalog(url)
        rows = {r.name: r for r in rq.grid(cat, rq.GridFilter()).rows}
        rq.record_decision(cat, rows["coffee_cup"].item_id, None, "approved", "alice")
        rq.record_decision(cat, rows["chelsea_the_cat"].item_id, None, "reprocess", "alice",
                           options={"scratch": "off", "faces": False, "tone_match": True})
        images = ReviewImages(cat)                 # what `oldphoto review prepare` does: tone change in the score
        for r in rows.values():
            images.prepare(r.result_id)
        port = free_port()
        app = create_app(cat, port=port, sessions=Sessions(reviewers={"alice": hash_password("pw", 2000)}))
        with serve(app, port) as base, chromium(root / "profile", 1400, 900) as d:
            d.get(base + "/items")
            d.execute_script("return Promise.all(Array.from(document.images).map(i => i.decode().catch(() => 0)))")
            time.sleep(0.5)
            d.save_screenshot(str(args.out / "review_grid.png"))
            d.get(base + "/login?next=/items")
            d.find_element(By.ID, "name").send_keys("alice")
            d.find_element(By.ID, "password").send_keys("pw")
            d.find_element(By.ID, "login-submit").click()
            d.set_window_size(1400, 1750)          # the item page down to its faces and provenance
            d.get(f"{base}/item/{rows['grace_hopper_portrait'].item_id}")
            d.execute_script("return Promise.all(Array.from(document.images).map(i => i.decode().catch(() => 0)))")
            d.execute_script("var s = document.getElementById('slider'); s.value = 42;"
                             "s.dispatchEvent(new Event('input'));")
            time.sleep(0.5)
            d.save_screenshot(str(args.out / "review_item.png"))
        cat.close()
    print(f"wrote {args.out / 'review_grid.png'} and {args.out / 'review_item.png'}")


if __name__ == "__main__":
    main()
