"""Synthetic provenance records for the catalog tests, and the writer process of the concurrency test
(kept out of test_catalog.py so that spawned writers import only this and oldphoto.catalog)."""
from __future__ import annotations

import random

from oldphoto.catalog import Catalog
from oldphoto.provenance import (STAGE_NAMES, ArtefactRecord, CheckpointRef, FaceRecord, InputRecord,
                                 ItemProvenance, StageRecord)

CK_VAE = CheckpointRef("vae_a", "vae_a.safetensors", "a" * 64)
CK_MAP = CheckpointRef("mapping_quality", "mapping_quality.safetensors", "b" * 64)
CK_UNET = CheckpointRef("scratch_unet", "scratch_unet.safetensors", "c" * 64)


def make_prov(i: int, status: str = "done", sha: str | None = None, fail_stage: str = "global_restoration",
              faces: int = 1, seconds: float = 0.25) -> ItemProvenance:
    sha = sha or f"{i:064x}"
    inp = InputRecord(uri=f"file:///archive/box1/scan_{i:05d}.tif", name=f"scan_{i:05d}.tif", sha256=sha,
                      bytes=10_000 + i, width=800 + i, height=600, mode="L", format="TIFF")
    stages, outputs = [], []
    for name in STAGE_NAMES:
        ck = {"scratch_detection": [CK_UNET], "global_restoration": [CK_VAE, CK_MAP]}.get(name, [])
        if status == "failed" and name == fail_stage:
            stages.append(StageRecord(name, "failed", seconds, "cpu", ck, error=f"boom in {name} of {i}"))
            break
        stages.append(StageRecord(name, "skipped" if status == "skipped" and name != "load" else "done",
                                  seconds, "cpu", ck))
    if status == "done":
        out = f"file:///out/scan_{i:05d}_{sha[:8]}"
        outputs = [ArtefactRecord("restored", f"{out}/restored.png", f"{i + 1:063x}r", 5000),
                   ArtefactRecord("mask", f"{out}/mask.png", f"{i + 1:063x}m", 300, {"coverage": 0.0125}),
                   ArtefactRecord("review", f"{out}/review.png", f"{i + 1:063x}v", 9000),
                   ArtefactRecord("provenance", f"{out}/provenance.json", f"{i + 1:063x}p", 1200)]
        outputs += [ArtefactRecord("face_after", f"{out}/faces/{k}.png", f"{i + 1:060x}f{k:03d}", 700, {"face": k})
                    for k in range(1, faces + 1)]
    return ItemProvenance(
        input=inp, status=status, error=f"boom in {fail_stage} of {i}" if status == "failed" else None,
        parameters={"scratch": "auto", "hr": False}, oldphoto_version="0.1.0",
        started="2026-11-21T22:00:00+00:00", finished="2026-11-21T22:00:02+00:00", stages=stages, outputs=outputs,
        faces=[FaceRecord(k, [10 * k, 20, 10 * k + 50, 90], 0.9, [[1.0 * k, 2.0]] * 5, detected_on="restored",
                          applied=k % 2 == 1, reason=f"face {k}", agreement_db=20.0 + k) for k in range(1, faces + 1)]
        if status == "done" else [],
        mask_coverage=0.0125 if status == "done" else None)


def writer(url: str, shared_run: str, own_run: str, lo: int, hi: int, seed: int, barrier) -> None:
    c = Catalog(url)
    rng = random.Random(seed)
    ids = list(range(lo, hi))
    rng.shuffle(ids)
    barrier.wait(timeout=120)
    for k in range(0, len(ids), 6):
        batch = [make_prov(i, "failed" if i % 11 == 0 else "done") for i in ids[k:k + 6]]
        c.record_many(batch, shared_run)
        c.record_many(batch[::-1], own_run)
        if k % 12 == 0:
            c.record(batch[0], shared_run)                          # re-record: must stay one row
    c.close()
