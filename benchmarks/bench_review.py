"""Review app: how long the items grid page takes to render over a run of 5,000 items.

Fills a catalog with one run of N items (7 stages with checkpoints, restored/mask/face artefacts, masks of varied
coverage, faces replaced or kept, 2 % failures, decisions on every tenth item), serves the review app with
uvicorn on 127.0.0.1 and times GET requests of the grid page (60 cards, HTML only: the thumbnails are separate,
lazily loaded requests): first page in "needs a look" order, a filtered page, a deep page, the runs list.
Prints the median and the worst of `--repeat` requests each.

    .venv/bin/python benchmarks/bench_review.py                    # 5,000 items, temporary SQLite file
    .venv/bin/python benchmarks/bench_review.py --items 20000 --url postgresql+psycopg://user@host/db
Target: < 1 s per grid page at 5,000 items.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from oldphoto.catalog import Catalog, fingerprint  # noqa: E402
from oldphoto.catalog import review as rq  # noqa: E402
from oldphoto.provenance import (STAGE_NAMES, ArtefactRecord, CheckpointRef, FaceRecord, InputRecord,  # noqa: E402
                                 ItemProvenance, StageRecord)

CKS = {"scratch_detection": [CheckpointRef("scratch_unet", "scratch_unet.safetensors", "c" * 64)],
       "global_restoration": [CheckpointRef("vae_a", "vae_a.safetensors", "a" * 64),
                              CheckpointRef("vae_b_scratch", "vae_b_scratch.safetensors", "b" * 64)]}


def provenance(i: int) -> ItemProvenance:
    failed = i % 50 == 0
    out = f"s3://restored/night1/box{i // 1000}/{i:06d}"
    cov = (i % 97) / 97 * 0.04
    stages = [StageRecord(n, "done", 0.2, "cuda:0", CKS.get(n, [])) for n in STAGE_NAMES]
    faces = [FaceRecord(k + 1, [10, 10, 90, 90], 0.9, [[30.0, 40.0]] * 5, "restored", applied=(i + k) % 3 != 0,
                        reason="test", agreement_db=25.0) for k in range(i % 3)]
    return ItemProvenance(
        input=InputRecord(f"s3://scans/box{i // 1000}/{i:06d}.tif", f"{i:06d}", f"{i:x}".rjust(64, "0"),
                          4_000_000, 3000, 2000, "L", "TIFF"),
        status="failed" if failed else "done", error="CUDA out of memory" if failed else None,
        parameters={"scratch": "auto"}, oldphoto_version="0.1.0", started="2026-11-22T01:00:00+00:00",
        finished="2026-11-22T01:00:02+00:00", stages=stages,
        outputs=[] if failed else [ArtefactRecord("restored", f"{out}/restored.png", "1" * 64, 9_000_000),
                                   ArtefactRecord("mask", f"{out}/mask.png", "2" * 64, 40_000, {"coverage": cov})],
        faces=[] if failed else faces, mask_coverage=None if failed else cov)


def timed_get(url: str, repeat: int) -> tuple[float, float, int]:
    times, size = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as r:
            size = len(r.read())
            assert r.status == 200
        times.append(time.perf_counter() - t0)
    return statistics.median(times), max(times), size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--url", default=None, help="catalog URL (default: a temporary SQLite file)")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    url = args.url or f"sqlite:///{os.path.join(tmp.name, 'catalog.sqlite')}"
    cat = Catalog(url)
    cat.upgrade()
    t0 = time.perf_counter()
    run = cat.start_run({"scratch": "auto", "destination": "s3://restored/night1"}, fingerprint=fingerprint({"b": 1}))
    cat.record_many((provenance(i) for i in range(args.items)), run)
    cat.finish_run(run)
    for row in rq.grid(cat, rq.GridFilter(run_id=run, sort="name", per_page=500)).rows[::10]:
        rq.record_decision(cat, row.item_id, row.result_id, "approved", "bench")
    print(f"catalog with {args.items} items filled in {time.perf_counter() - t0:.1f} s ({cat!r})")

    from browser import free_port, serve

    from oldphoto.review.app import create_app

    port = free_port()
    with serve(create_app(cat, port=port), port) as base:
        timed_get(f"{base}/items?run={run}", 1)            # warm up (templates, connection pool)
        pages = {"grid, needs-a-look order, page 1": f"/items?run={run}",
                 "grid, latest result of every item": "/items",
                 "grid, filtered (faces kept, not reviewed)": f"/items?run={run}&faces=kept&reviewed=no",
                 "grid, coverage > 2 %, by coverage": f"/items?run={run}&cov_min=2&sort=coverage",
                 f"grid, page {max(1, args.items // 60 - 1)}": f"/items?run={run}&page={max(1, args.items // 60 - 1)}",
                 "runs list": "/runs"}
        print(f"{'page':<45} {'median':>9} {'worst':>9} {'bytes':>8}")
        for label, path in pages.items():
            med, worst, size = timed_get(base + path, args.repeat)
            print(f"{label:<45} {med * 1000:8.1f}ms {worst * 1000:8.1f}ms {size:8d}")
    cat.close()


if __name__ == "__main__":
    main()
