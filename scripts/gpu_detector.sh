#!/usr/bin/env bash
# One device run (at most ~9 minutes on one H200-class GPU): the GPU benchmark (40 s), then two scratch-detector
# candidates trained side by side on the same recipe as the shipped detector (`train_all.sh` step 1d), each with
# its batches synthesised in 7 worker processes (the synthesis, not the GPU, is the bottleneck):
#   A  the shipped detector (base width 12) fine-tuned, batch 32, lr 1e-4
#   B  a wider detector (base width 24) from a random start, batch 32, lr 3e-4
# Run once (session 17, one H200, 15 minutes of device time in all): each run made 2,588 steps (83,000 crops of
# 256 px) in its 6.5 minutes, about 6.6 steps a second, bound by the 7 workers' synthesis, not by the GPU; both
# were then resumed for 3 more minutes (--resume --max-minutes 9.5). Two bugs it found are fixed: the end-of-run
# evaluation fed CPU tensors to the GPU network, and --resume on a GPU restored the RNG state from GPU tensors.
# Both are chosen and judged afterwards on a CPU with the usual protocol (choose_scratch_settings.py on val,
# then `oldphoto bench quality`). Run folders go to OUT_DIR; with $OUT_COPY set (the device tool's $OUT, which
# brings back at most 8 files) the 8 that matter are copied there: both weight files, both logs and loss
# histories, and the benchmark's JSON and log.
#
# Usage (on the device machine, from the repository root):
#   OUT_COPY=$OUT scripts/gpu_detector.sh DATA_DIR OUT_DIR [MINUTES]
# DATA_DIR: a folder written by `oldphoto data fetch` (or a copy with the train and val photos only).
set -euo pipefail
DATA=${1:?data folder}
OUT=${2:?output folder}
MIN=${3:-6.5}
DEV=${DEVICE:-cuda}
WORKERS=${WORKERS:-7}
INIT=${INIT:-oldphoto/weights/scratch_unet.safetensors}   # run A's starting point
op() {   # the installed CLI, else the package from this checkout (the device machine has no install)
  if command -v oldphoto > /dev/null; then oldphoto "$@"; else
    python3 -c 'import sys; from oldphoto.cli import main; sys.argv[0] = "oldphoto"; main()' "$@"; fi
}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
[ "$DEV" = cuda ] && python3 benchmarks/bench_gpu.py --device cuda --batches 1 8 32 --iters 5 --max-seconds 40 \
    --json "$OUT/bench_gpu.json" > "$OUT/bench_gpu.log" 2>&1 || echo "bench_gpu failed (see bench_gpu.log)"
tail -n 25 "$OUT/bench_gpu.log" || true
R=(--data "$DATA" --config small --device "$DEV" --steps 100000 --batch-size 32 --crop 256 --synth-size 256
   --max-minutes "$MIN" --workers "$WORKERS" --flat-negative-prob 0.3 --dark-scratch-prob 0.45 --clean-negative-prob 0.3)
op train scratch "${R[@]}" --out "$OUT/runA" --weights-dir "$OUT/A" --seed 71 --lr 1e-4 \
    --init "$INIT" > "$OUT/trainA.log" 2>&1 &
op train scratch "${R[@]}" --out "$OUT/runB" --weights-dir "$OUT/B" --seed 72 --lr 3e-4 --width 24 \
    > "$OUT/trainB.log" 2>&1 &
wait
for r in A B; do grep -v "step/s" "$OUT/train$r.log" | tail -n 4; done
if [ -n "${OUT_COPY:-}" ]; then
  for r in A B; do
    cp "$OUT/$r/scratch_unet.safetensors" "$OUT_COPY/scratch_unet_$r.safetensors" || true
    cp "$OUT/run$r/scratch/history.jsonl" "$OUT_COPY/history_$r.jsonl" || true
    grep -v "step/s" "$OUT/train$r.log" > "$OUT_COPY/train_$r.log" || true
  done
  cp "$OUT"/bench_gpu.json "$OUT"/bench_gpu.log "$OUT_COPY/" || true
fi
