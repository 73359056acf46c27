"""CPU time of global restoration with official-shape networks: this tree against a baseline git revision.

Both run the same `GlobalRestorationStage` (tone transfer off, i.e. the official stage-1 semantics) on the same
generated scan (default 1.5 MP, 1504×1000: a portrait on textured paper with scratches), with seeded stand-in
weights in the official release layout (`oldphoto.testing.seeded`; official shapes, so the compute is
the official networks'), once on the quality path and once on the scratch path (mask = the drawn scratches).
The baseline is the `oldphoto/` package of `--baseline` (default `main`) exported with `git archive`, so no
copy of the old code is kept here. Each measurement is a fresh child process with one torch thread; the runs
are interleaved before/now/now/before (repeated `--repeats` times) and the script prints the ratio of the
median CPU seconds, the peak RSS of each child and the largest difference between the two outputs.

    .venv/bin/python benchmarks/bench_official_speed.py [--megapixels 1.5] [--repeats 1 | --once] [--bf16] [--baseline main]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ROLES = {"vae_a": 11, "vae_b_quality": 12, "vae_b_scratch": 12, "mapping_quality": 13, "mapping_scratch": 13}

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(1)
release, scan, path, out, precision = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
from oldphoto.imageops.io import DecodedImage
from oldphoto.weights_source import WeightsSource
from oldphoto.pipeline import ItemState, RestoreOptions
from oldphoto.stages import GlobalRestorationStage
d = np.load(scan)
extra = {} if precision == "fp32" else {"precision": precision}
opts = RestoreOptions(scratch="on" if path == "scratch" else "off", faces=False, tone_match=False, **extra)
stage = GlobalRestorationStage(WeightsSource.from_options(official=release).load(), opts)
for role in stage.roles(path == "scratch"):
    stage.models.get(role)
st = ItemState.new("scan.png", None, opts)
st.decoded = DecodedImage(pixels=d["pixels"], grey=False, bit_depth=8, format="PNG", mode="RGB")
if path == "scratch":
    st.mask, st.use_scratch = d["mask"], True
w0, c0 = time.perf_counter(), time.process_time()
stage(st)
res = {"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0, "error": st.error,
       "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
       "tiling": st.provenance.parameters.get("global_tiling")}
np.save(out, st.restored)
print(json.dumps(res))
"""


def make_release(root: Path, official: Path) -> None:
    import torch

    from oldphoto.testing.seeded import load_manifest, seeded_state_dict

    from oldphoto.compat.official import OFFICIAL_ROLES

    for role, seed in ROLES.items():
        r = OFFICIAL_ROLES[role]
        path = root / r.path
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(seeded_state_dict(load_manifest(official / "manifests" / f"{r.manifest}.json"), seed), path)


def make_scan(path: Path, megapixels: float) -> tuple[int, int]:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_restore import synth_photo

    h = int(round((megapixels * 1e6 / 1.5) ** 0.5)) // 8 * 8
    w = int(round(h * 1.5)) // 8 * 8
    img = synth_photo(w, h, seed=7)
    mask = np.all(img >= 240, axis=2)
    np.savez(path, pixels=(img.astype(np.float32) / 255.0), mask=mask)
    return w, h


def export(rev: str, dest: Path) -> None:
    tar = dest / "src.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(tar), rev, "oldphoto"], check=True)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")


def child(src: Path, release: Path, scan: Path, path: str, out: Path, precision: str = "fp32") -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", CHILD, str(release), str(scan), path, str(out), precision], env=env,
                         capture_output=True, text=True, cwd=out.parent)   # not the repo: `-c` imports from cwd
    if res.returncode != 0:
        raise SystemExit(f"child ({src}, {path}) failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--megapixels", type=float, default=1.5)
    ap.add_argument("--repeats", type=int, default=1, help="before/now/now/before rounds per path")
    ap.add_argument("--once", action="store_true", help="one before/now pair per path instead (a quick look)")
    ap.add_argument("--baseline", default="main", help="git revision measured as 'before'")
    ap.add_argument("--paths", nargs="+", default=["quality", "scratch"], choices=("quality", "scratch"))
    ap.add_argument("--official", type=Path, default=REPO / "tests" / "data" / "official")
    ap.add_argument("--bf16", action="store_true",
                    help="also time this tree with --precision bf16 and its difference from float32")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_official_"))
    before, release, scan = tmp / "before", tmp / "release", tmp / "scan.npz"
    before.mkdir()
    export(args.baseline, before)
    make_release(release, args.official)
    w, h = make_scan(scan, args.megapixels)
    print(f"scan {w}×{h} = {w * h / 1e6:.2f} MP; official-shape seeded weights; 1 torch thread per run; "
          f"before = {args.baseline} ({subprocess.run(['git', '-C', str(REPO), 'rev-parse', '--short', args.baseline], capture_output=True, text=True).stdout.strip()}), now = this tree")
    for path in args.paths:
        runs: dict[str, list[dict]] = {"before": [], "now": []}
        for _ in range(args.repeats):
            for which in (("before", "now") if args.once else ("before", "now", "now", "before")):
                src = before if which == "before" else REPO
                r = child(src, release, scan, path, tmp / f"{path}_{which}.npy")
                runs[which].append(r)
                assert (r["tiling"] is None) == (which == "before"), "the baseline must be the old code"
                print(f"  {path:8s} {which:6s} cpu {r['cpu']:8.1f} s  wall {r['wall']:8.1f} s  "
                      f"peak RSS {r['peak_rss_gib']:.2f} GiB  {r['error'] or ''} {json.dumps(r['tiling']) if r['tiling'] else ''}",
                      flush=True)
        cpu = {k: statistics.median(x["cpu"] for x in v) for k, v in runs.items()}
        diff = float(np.abs(np.load(tmp / f"{path}_now.npy") - np.load(tmp / f"{path}_before.npy")).max())
        print(f"{path}: CPU before/now = {cpu['before'] / cpu['now']:.2f}× "
              f"(median {cpu['before']:.1f} s vs {cpu['now']:.1f} s); peak RSS before "
              f"{max(x['peak_rss_gib'] for x in runs['before']):.2f} GiB, now {max(x['peak_rss_gib'] for x in runs['now']):.2f} GiB; "
              f"max |now − before| = {diff:.4f} (before: 512 px tiles with per-tile statistics)")
        if args.bf16:
            r = child(REPO, release, scan, path, tmp / f"{path}_bf16.npy", "bf16")
            d16 = np.abs(np.load(tmp / f"{path}_bf16.npy") - np.load(tmp / f"{path}_now.npy"))
            print(f"  {path:8s} bf16   cpu {r['cpu']:8.1f} s  wall {r['wall']:8.1f} s  peak RSS {r['peak_rss_gib']:.2f} GiB")
            print(f"{path}: bf16: CPU before/now-bf16 = {cpu['before'] / r['cpu']:.2f}×; |bf16 − fp32| max "
                  f"{d16.max() * 255:.1f}/255, mean {d16.mean() * 255:.2f}/255")


if __name__ == "__main__":
    main()
