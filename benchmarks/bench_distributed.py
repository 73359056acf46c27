"""The streaming Ray pipeline against the sequential `Restorer`, on the same items, in one run.

    .venv/bin/python benchmarks/bench_distributed.py                 # 100 and 1,000 items
    .venv/bin/python benchmarks/bench_distributed.py --sizes 40,400  # smaller, for a busy machine

Prints:
  * throughput (items/s) of the sequential Restorer and of the Ray pipeline on the same N items, and their ratio;
    the pipeline's figure is given with and without its start-up (actor creation, model loading);
  * peak memory (sum of the PSS of the driver and every Ray process) of the pipeline for the small and the large
    run, and their ratio: streaming keeps it flat (target <= 1.2x for 10x the items).
Tiny random weights (oldphoto.testing.random_weights.make_random_weights) and small synthetic scans: this measures the
pipeline's plumbing and scheduling, not the networks.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_scans(folder: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = rng.integers(40, 220, (size, size, 3), dtype=np.uint8)
        img[:, (i * 7) % size] = 250
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        (folder / f"scan_{i:05d}.jpg").write_bytes(buf.getvalue())


class PeakMemory:
    """Samples the PSS (proportional set size: shared pages split between processes) of this process and all
    its descendants (the embedded Ray session: GCS, raylet, workers, actors) and keeps the peak."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def sample() -> int:
        """PSS bytes of this process and its descendants, from /proc (Linux)."""
        parent: dict[int, int] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        family, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            kids = [p for p, pp in parent.items() if pp in frontier and p not in family]
            family.update(kids)
            frontier = kids
        total = 0
        for pid in family:
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1]) * 1024
                            break
            except OSError:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.sample())


def run_sequential(weights: str, src: Path, out: Path, options) -> tuple[float, int]:
    from oldphoto.distributed import work_items
    from oldphoto.weights_source import WeightsSource
    from oldphoto.pipeline import Restorer
    from oldphoto.storage import open_storage

    items = work_items(str(src))
    store = open_storage(str(out))
    t0 = time.perf_counter()
    restorer = Restorer(WeightsSource.from_options(weights).load(), options)
    done = 0
    for it in items:
        state = restorer.run(it.uri, Path(it.uri).read_bytes(), name=it.name, out_dir=str(out / it.name))
        for rel, data in state.files.items():
            store.write_bytes(store.join(str(out / it.name), *rel.split("/")), data)
        done += not state.failed
    return time.perf_counter() - t0, done


def run_streaming(weights: str, src: Path, out: Path, options, config) -> tuple[float, float, int, int]:
    """(total seconds, seconds from the first to the last result, items done, peak PSS bytes)."""
    from oldphoto.distributed import StageSource, iter_pipeline, work_items
    from oldphoto.weights_source import WeightsSource

    items = work_items(str(src))
    source = StageSource(WeightsSource.parse(weights), options)
    first = None
    done = 0
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        for res in iter_pipeline(items, str(out), source, config):
            first = first or time.perf_counter()
            done += res.status == "done"
        t1 = time.perf_counter()
    return t1 - t0, t1 - (first or t1), done, mem.peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000", help="small,large item counts (default 100,1000)")
    ap.add_argument("--image", type=int, default=64, help="side of the synthetic scans in pixels")
    ap.add_argument("--object-store-mib", type=int, default=128)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    small, large = (int(x) for x in args.sizes.split(","))

    import ray

    from oldphoto.distributed import DistributedConfig
    from oldphoto.testing.random_weights import make_random_weights
    from oldphoto.pipeline import RestoreOptions

    tmp = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    weights = tmp / "weights"
    make_random_weights(weights, seed=0, tiny=True)
    options = RestoreOptions(scratch="auto")
    config = DistributedConfig(object_store_memory=args.object_store_mib * 2**20)
    for n in (small, large):
        make_scans(tmp / f"src{n}", n, args.image)

    print(f"oldphoto distributed benchmark: {small} and {large} scans of {args.image}x{args.image}, "
          f"tiny random weights, {os.cpu_count()} CPUs, object-store budget {args.object_store_mib} MiB")
    seq_s, seq_done = run_sequential(str(weights), tmp / f"src{small}", tmp / "out-seq", options)
    print(f"sequential Restorer  {small:5d} items: {seq_s:7.1f} s  {small / seq_s:6.2f} items/s  ({seq_done} done)")

    ray.init(address="local", num_cpus=config.local_num_cpus, include_dashboard=False, log_to_driver=False)
    base = PeakMemory.sample()
    res = {}
    for n in (small, large):
        total, steady, done, peak = run_streaming(str(weights), tmp / f"src{n}", tmp / f"out-ray{n}", options, config)
        res[n] = (total, steady, done, peak)
        print(f"Ray streaming        {n:5d} items: {total:7.1f} s  {n / total:6.2f} items/s "
              f"(after start-up {max(n - 1, 1) / max(steady, 1e-9):6.2f} items/s)  ({done} done)  "
              f"peak PSS {peak / 2**20:7.0f} MiB")
    ray.shutdown()

    total, steady, _, _ = res[small]
    seq_rate = small / seq_s
    print()
    print(f"throughput, Ray / sequential on the same {small} items: {seq_s / total:5.2f}x overall, "
          f"{(max(small - 1, 1) / steady) / seq_rate:5.2f}x after start-up")
    total, steady, _, _ = res[large]
    print(f"throughput, Ray on {large} items / sequential rate: {(large / total) / seq_rate:5.2f}x overall, "
          f"{(max(large - 1, 1) / steady) / seq_rate:5.2f}x after start-up")
    ratio = res[large][3] / res[small][3]
    print(f"peak memory {large} vs {small} items: {res[large][3] / 2**20:.0f} / {res[small][3] / 2**20:.0f} MiB = "
          f"{ratio:.2f}x (target <= 1.2x; Ray session alone {base / 2**20:.0f} MiB)")
    print("PASS" if ratio <= 1.2 else "ABOVE TARGET")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {tmp}")


if __name__ == "__main__":
    main()
