"""Images per second of each restoration network on one GPU, and how much of the device's bf16 peak that is.

For each stage network with the official shapes (seeded stand-in weights, `oldphoto.testing.random_weights.random_weights_configs`
with tiny=False: the compute is the official networks'), at each batch size: the forward time (CUDA events after
warm-up), images/s, the FLOPs of one image (`torch.utils.flop_counter.FlopCounterMode`, multiply-add = 2 FLOPs),
and the achieved TFLOP/s as a fraction of the device's dense bf16 peak (`--peak-tflops`, default from the device
name: H200/H100 SXM 989, A100 312, L40S 362, else asked for). Precision fp32 and bf16 autocast, channels_last.
A stage's batch sizes stop growing when a batch does not fit in memory or the time budget is spent; the whole
run is bounded by `--max-seconds` (default 240, under 5 minutes with start-up).

    .venv/bin/python benchmarks/bench_gpu.py [--device cuda] [--batches 1 4 16 32] [--max-seconds 240] [--json OUT]
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --quick        # smoke run on a CPU (tiny sizes)

Stages (per image): detection = the scratch U-Net on a 256×256 grey working image; global quality = VAE_A encode
+ mapping + VAE_B decode of a 512×512 image; global scratch = the same with the partial nonlocal mapping and a
mask; face = the SPADE face generator on a 256×256 face.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def build_stages(device: torch.device, quick: bool) -> dict[str, tuple]:
    """name -> (forward(batch) callable, one image's input maker, pixels per image)."""
    from oldphoto.testing.random_weights import random_weights_configs
    from oldphoto.networks.registry import build

    cfgs = random_weights_configs(tiny=quick)
    torch.manual_seed(0)

    def net(kind: str, role: str):
        return build(kind, cfgs[role]).to(device).eval().to(memory_format=torch.channels_last)

    unet, vae_a, vae_b = net("scratch_unet", "scratch_unet"), net("vae", "vae_a"), net("vae", "vae_b_quality")
    mq, ms, face = net("mapping", "mapping_quality"), net("mapping_nonlocal", "mapping_scratch"), net("spade_face", "face_256")
    side = 128 if quick else 512
    det_side = 64 if quick else 256

    def scratch_mask(n: int) -> torch.Tensor:
        m = torch.zeros(n, 1, side, side, device=device)
        m[:, :, :, side // 3: side // 3 + 3] = 1
        return m

    return {
        "detection": (lambda x: unet(x), lambda n: torch.randn(n, 1, det_side, det_side, device=device), det_side ** 2),
        "global_quality": (lambda x: vae_b.decode(mq(vae_a.encode(x))),
                           lambda n: torch.rand(n, 3, side, side, device=device) * 2 - 1, side ** 2),
        "global_scratch": (lambda x: vae_b.decode(ms(vae_a.encode(x), scratch_mask(x.shape[0]))),
                           lambda n: torch.rand(n, 3, side, side, device=device) * 2 - 1, side ** 2),
        "face": (lambda x: face(x), lambda n: torch.rand(n, 3, 256, 256, device=device) * 2 - 1, 256 ** 2),
    }


def flops_per_image(fn, make) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        fn(make(1))
    return float(fc.get_total_flops())


def timed(fn, x: torch.Tensor, device: torch.device, precision: str, iters: int) -> float:
    """Seconds per forward of the batch `x` (median of `iters` after one warm-up)."""
    ctx = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
           else torch.autocast(device.type, enabled=False))
    times = []
    with torch.no_grad(), ctx:
        for i in range(iters + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 32])
    ap.add_argument("--precisions", nargs="+", default=["bf16", "fp32"])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=240.0)
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device")
    ap.add_argument("--quick", action="store_true", help="tiny networks and sizes (a smoke run on a CPU)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu --quick for a smoke run")
    t_start = time.perf_counter()
    peak = peak_tflops(device, a.peak_tflops)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}; dense bf16 peak {peak or 'unknown'} TFLOP/s; networks "
          f"{'tiny (--quick)' if a.quick else 'official shapes'}")
    rows = []
    for stage, (fn, make, pixels) in build_stages(device, a.quick).items():
        flops = flops_per_image(fn, make)
        for precision in a.precisions:
            for b in a.batches:
                if time.perf_counter() - t_start > a.max_seconds:
                    break
                try:
                    x = make(b).contiguous(memory_format=torch.channels_last)
                    sec = timed(fn, x, device, precision, a.iters)
                except torch.OutOfMemoryError:
                    print(f"{stage:15s} {precision} batch {b}: out of memory")
                    torch.cuda.empty_cache()
                    break
                tflops = flops * b / sec / 1e12
                row = {"stage": stage, "precision": precision, "batch": b, "seconds_per_batch": round(sec, 5),
                       "images_per_s": round(b / sec, 2), "megapixels_per_s": round(b * pixels / sec / 1e6, 2),
                       "gflops_per_image": round(flops / 1e9, 2), "achieved_tflops": round(tflops, 2),
                       "fraction_of_bf16_peak": round(tflops / peak, 4) if peak else None}
                rows.append(row)
                frac = f", {row['fraction_of_bf16_peak']:.1%} of bf16 peak" if peak else ""
                print(f"{stage:15s} {precision} batch {b:3d}: {row['images_per_s']:9.2f} img/s, "
                      f"{row['gflops_per_image']:8.2f} GFLOP/img, {tflops:7.2f} TFLOP/s{frac}", flush=True)
    result = {"device": name, "peak_bf16_tflops": peak, "quick": a.quick, "rows": rows,
              "seconds": round(time.perf_counter() - t_start, 1)}
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"done in {result['seconds']} s")
    return result


if __name__ == "__main__":
    main()
