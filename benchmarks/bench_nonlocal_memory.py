"""Peak memory of the scratch mapping's partial nonlocal attention: chunked vs direct (official).

The official ``Mapping_Model_with_mask`` materialises an (HW x HW) attention matrix at latent size,
so its memory grows with the fourth power of the image side. oldphoto computes the same formula
in blocks of query rows. This script runs the nonlocal block (``NL``: 1x1 projections, masked
attention, W, residual blocks, fusion) at latent sides 64, 128, 256 (images of 256, 512, 1024 px)
with ~10 % of the latent masked, each measurement in a fresh subprocess, and reports the peak
resident-memory increase over the state just before the forward pass (Linux VmHWM after resetting
it through /proc/self/clear_refs).

To run on a CPU in about two minutes it uses a REDUCED channel width (default 8 instead of the
official 512); the attention matrix size does not depend on the width. The direct path is measured
where it stays within --direct-max-side (default 64, so a shared machine is not pushed towards
several GiB); above that its peak is estimated by scaling the measured direct peak by N^2
(N = latent pixels), which is how the (N x N) buffers grow.

    python benchmarks/bench_nonlocal_memory.py [--width 8] [--sides 64 128 256] [--direct-max-side 64]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MiB = 1024 * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(side: int, mode: str, width: int, threads: int) -> dict:
    import torch

    from oldphoto.networks.mapping_nonlocal import MaskedNonLocalBlock, auto_query_chunk

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    block = MaskedNonLocalBlock(width, n_res=3, attention=mode).eval()
    x = torch.randn(1, width, side, side)
    mask = torch.zeros(1, 1, 4 * side, 4 * side)
    g = torch.Generator().manual_seed(1)
    for _ in range(max(1, side // 8)):  # vertical scratch strokes, ~10 % of the latent
        c = int(torch.randint(0, 4 * side - 3, (1,), generator=g))
        mask[..., c : c + 3] = 1.0
    with torch.no_grad():  # warm up kernels on a tiny input so one-off allocations are not counted
        block(torch.randn(1, width, 8, 8), torch.ones(1, 1, 32, 32).triu())
    before = _status_kib("VmRSS")
    reset = True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS counter
    except OSError:
        reset = False
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        out = block(x, mask)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _status_kib("VmHWM")
    assert torch.isfinite(out).all()
    n = side * side
    return {
        "side": side,
        "mode": mode,
        "peak_mib": (peak - before) / 1024,
        "hwm_reset": reset,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "chunk": auto_query_chunk(n) if mode == "chunked" else n,
    }


def run(side: int, mode: str, width: int, threads: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(side), mode, "--width", str(width)]
    cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"worker {side} {mode} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", nargs=2, metavar=("SIDE", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument("--width", type=int, default=8, help="channel width (official: 512)")
    ap.add_argument("--sides", type=int, nargs="+", default=[64, 128, 256], help="latent sides")
    ap.add_argument("--direct-max-side", type=int, default=64, help="largest side to measure directly")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(int(args.worker[0]), args.worker[1], args.width, args.threads)))
        return

    print("Partial nonlocal attention (scratch mapping, NL block), peak memory, CPU, batch 1")
    print(f"REDUCED width {args.width} channels (official 512); N = latent pixels; images are 4x the latent side")
    direct_ref = None
    rows = []
    for side in sorted(args.sides):
        ch = run(side, "chunked", args.width, args.threads)
        if side <= args.direct_max_side:
            di = run(side, "direct", args.width, args.threads)
            d_peak, d_kind = di["peak_mib"], "measured"
            direct_ref = (side, d_peak)
        elif direct_ref is not None:
            s0, p0 = direct_ref
            d_peak, d_kind = p0 * (side * side / (s0 * s0)) ** 2, f"est. N^2 from {s0}^2"
        else:
            d_peak, d_kind = 4 * 4 * (side * side) ** 2 / MiB, "est. 4 N^2 fp32"
        rows.append((side, ch, d_peak, d_kind))

    print(f"{'latent':>8} {'N':>7} {'chunk':>6} {'chunked MiB':>12} {'wall s':>7} {'cpu s':>6} "
          f"{'direct MiB':>11} {'direct':>20} {'direct/chunked':>15}")
    for side, ch, d_peak, d_kind in rows:
        n = side * side
        ratio = d_peak / max(ch["peak_mib"], 1e-9)
        print(f"{side:>5}^2 {n:>8} {ch['chunk']:>6} {ch['peak_mib']:>12.1f} {ch['seconds']:>7.1f} {ch['cpu_seconds']:>6.1f} "
              f"{d_peak:>11.1f} {d_kind:>20} {ratio:>14.1f}x")
        if not ch["hwm_reset"]:
            print("   (note: /proc/self/clear_refs not writable; peak includes setup)")
    print("chunked: measured peak RSS increase of the whole NL block forward; 'wall s'/'cpu s' for it "
          "(the chunked time is N^2-bound: elementwise passes over N^2 similarities, independent of width)")
    print("One (N x N) fp32 matrix at latent 128^2 is 1 GiB and at 256^2 16 GiB (official path keeps several).")


if __name__ == "__main__":
    main()
