"""Catalog write/read throughput: record 10,000 items' results (7 stages, 2 checkpoints, 5 artefacts, a mask,
a face, 8 PREMIS events each) and print seconds per 1,000 items.

Baseline measured in the same run: recording items one by one (`record()`, one transaction per item). That is
what runs do (`oldphoto.lifecycle.Recorder`: each item recorded as soon as its files are written, so a crash loses
no record); its cost per item is what to compare with the seconds an item takes to restore. The batched
`record_many()` is for imports and re-recording.

    .venv/bin/python benchmarks/bench_catalog.py                  # temporary SQLite file
    .venv/bin/python benchmarks/bench_catalog.py --items 10000 --url postgresql+psycopg://user@host/db
Target: < 1 s per 1,000 items on SQLite.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from oldphoto.catalog import Catalog, fingerprint
from oldphoto.provenance import (STAGE_NAMES, ArtefactRecord, CheckpointRef, FaceRecord, InputRecord,
                                 ItemProvenance, StageRecord)

CKS = {"scratch_detection": [CheckpointRef("scratch_unet", "scratch_unet.safetensors", "c" * 64)],
       "global_restoration": [CheckpointRef("vae_a", "vae_a.safetensors", "a" * 64),
                              CheckpointRef("mapping_quality", "mapping_quality.safetensors", "b" * 64)]}


def provenance(i: int, tag: str = "") -> ItemProvenance:
    sha = f"{tag}{i:x}".rjust(64, "0")
    out = f"s3://restored/night1/{tag}{i:06d}"
    failed = i % 50 == 0
    stages = [StageRecord(n, "done", 0.2, "cuda:0", CKS.get(n, [])) for n in STAGE_NAMES]
    if failed:
        stages = stages[:2] + [StageRecord("global_restoration", "failed", 0.1, "cuda:0", CKS["global_restoration"],
                                           "CUDA out of memory")]
    return ItemProvenance(
        input=InputRecord(f"s3://scans/box{i // 1000}/{tag}{i:06d}.tif", f"{tag}{i:06d}.tif", sha, 4_000_000 + i,
                          3000, 2000, "L", "TIFF"),
        status="failed" if failed else "done", error="CUDA out of memory" if failed else None,
        parameters={"scratch": "auto", "hr": True}, oldphoto_version="0.1.0",
        started="2026-11-22T01:00:00+00:00", finished="2026-11-22T01:00:02+00:00", stages=stages,
        outputs=[] if failed else [
            ArtefactRecord("restored", f"{out}/restored.png", "1" * 64, 9_000_000),
            ArtefactRecord("mask", f"{out}/mask.png", "2" * 64, 40_000, {"coverage": 0.02}),
            ArtefactRecord("face_after", f"{out}/faces/1.png", "3" * 64, 200_000, {"face": 1}),
            ArtefactRecord("review", f"{out}/review.png", "4" * 64, 2_000_000),
            ArtefactRecord("provenance", f"{out}/provenance.json", "5" * 64, 3_000)],
        faces=[] if failed else [FaceRecord(1, [100, 100, 400, 400], 0.98, [[150.0, 200.0]] * 5)],
        mask_coverage=None if failed else 0.02)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--baseline-items", type=int, default=1_000, help="items recorded one by one (baseline)")
    ap.add_argument("--batch", type=int, default=500, help="items per record_many call")
    ap.add_argument("--url", default=None, help="catalog URL (default: a temporary SQLite file)")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    url = args.url or f"sqlite:///{os.path.join(tmp.name, 'bench.sqlite')}"
    cat = Catalog(url)
    cat.upgrade()
    params = {"scratch": "auto", "hr": True}
    fp = fingerprint(params, [c for v in CKS.values() for c in v])
    print(f"catalog: {cat!r}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    provs = [provenance(i) for i in range(args.items)]
    run = cat.start_run(params, fingerprint=fp)
    t, c = time.perf_counter(), time.process_time()
    for k in range(0, len(provs), args.batch):
        cat.record_many(provs[k:k + args.batch], run)
    batched, batched_cpu = time.perf_counter() - t, time.process_time() - c
    cat.finish_run(run)

    base = [provenance(i, "b") for i in range(args.baseline_items)]
    run_b = cat.start_run(params, fingerprint=fp)
    t, c = time.perf_counter(), time.process_time()
    for p in base:
        cat.record(p, run_b)
    single, single_cpu = time.perf_counter() - t, time.process_time() - c

    t = time.perf_counter()
    cat.record_many(provs[: args.batch], run)                      # idempotent re-record of a batch
    rerecord = time.perf_counter() - t

    shas = [p.input.sha256 for p in provs]
    t = time.perf_counter()
    done = cat.done_set(shas, fp)
    plan = time.perf_counter() - t
    t = time.perf_counter()
    n_is_done = 200
    for s in shas[:n_is_done]:
        cat.is_done(s, fp)
    is_done = time.perf_counter() - t
    t = time.perf_counter()
    rows = cat.export_parquet(os.path.join(tmp.name, "export.parquet"))
    export = time.perf_counter() - t
    counts = cat.table_counts()

    per_k = batched / args.items * 1000
    per_k_single = single / args.baseline_items * 1000
    print(f"record_many, {args.items} items in batches of {args.batch}: {batched:.2f} s "
          f"= {per_k:.3f} s per 1,000 items  (target < 1 s on SQLite); CPU {batched_cpu / args.items * 1000:.3f} s "
          "per 1,000 (this process; the rest is waiting on a busy machine/disk)")
    print(f"baseline record() one at a time, {args.baseline_items} items: {single:.2f} s "
          f"= {per_k_single:.3f} s per 1,000 items (CPU {single_cpu / args.baseline_items * 1000:.3f} s) "
          f"-> batched is {per_k_single / per_k:.1f}x faster")
    print(f"re-record {args.batch} items (idempotent update): {rerecord:.2f} s")
    print(f"done_set over {len(shas)} sha256: {plan:.3f} s ({len(done)} done); "
          f"is_done: {is_done / n_is_done * 1000:.2f} ms per call")
    print(f"export_parquet, {rows} rows: {export:.2f} s")
    print("rows:", ", ".join(f"{k}={v}" for k, v in counts.items()))
    cat.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
