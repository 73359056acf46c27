#!/usr/bin/env bash
# Scratch-detector training on one H200-class GPU in one device call (at most ~10 minutes), and the GPU benchmark.
# The runs (RUNS, default "A B") train side by side on the shipped detector's recipe (`train_all.sh` step 1d), each
# with its batches synthesised in worker processes (the synthesis, not the GPU, is the bottleneck):
#   A  a detector fine-tuned from INIT (default: the shipped one, base width 12), batch 32, lr 1e-4
#   B  a wider detector (base width 24) from a random start, batch 32, lr 3e-4
#   C  A with clean positives (--clean-positive-prob 0.3: defects drawn on undegraded crops, session 18; on the CPU,
#      batch 4, it raised the val ROC AUC on well-kept scans with scratches 0.880 -> 0.912; its lower probabilities
#      on degraded photos came from BatchNorm statistics re-estimated on batches of 4 (session 19), and with the
#      starting detector's statistics put back it marked 0.40 % of the pixels of val photos without defects against
#      0.11 %; RUNS="A C" compares the two at batch 32, where the statistics are the GPU run's own)
# Session 17 (one H200, 15 minutes of device time in all): with 7 workers each run made 2,588 steps (83,000 crops
# of 256 px) in 6.5 minutes, about 6.6 steps a second, bound by the synthesis; both were then resumed for 3 more
# minutes (RESUME=1 with MINUTES 9.5). A was shipped; B trailed it on val (see resume/README.md). Two bugs the run
# found are fixed: the end-of-run evaluation fed CPU tensors to the GPU network, and --resume on a GPU restored the
# RNG state from GPU tensors. Candidates are chosen and judged afterwards on a CPU with the usual protocol
# (choose_scratch_settings.py on val, then `oldphoto bench quality`).
#
# Usage (on the device machine, from the repository root):
#   OUT_COPY=$OUT [RUNS="A"] [WORKERS=14] [BENCH=0] [RESUME=1] scripts/gpu_detector.sh DATA_DIR OUT_DIR [MINUTES]
# DATA_DIR: a folder written by `oldphoto data fetch`, or `scripts/gpu_data.py`'s copy of its train and val photos
# shrunk to a short side of 384 px (what the detector's training loads anyway) with the textures, which fits the
# device tool's 64 MiB (about 30 MB). The device machine has PyTorch, OpenCV and typer but not pydantic: carry its wheels
# (pydantic, pydantic_core, annotated_types, typing_inspection, typing_extensions) and install them with
# `pip install --no-index --no-deps --target /tmp/site` first (PYTHONPATH=/tmp/site:$PWD). Run folders go to
# OUT_DIR (RESUME=1 continues the runs found there, MINUTES then counting the time already trained); with OUT_COPY
# set (the device tool's $OUT, which brings back at most 8 files) each run's weights, log and loss history and the
# benchmark's JSON and log are copied there.
set -euo pipefail
DATA=${1:?data folder}
OUT=${2:?output folder}
MIN=${3:-6.5}
DEV=${DEVICE:-cuda}
RUNS=${RUNS:-A B}
n_runs=$(wc -w <<< "$RUNS")
WORKERS=${WORKERS:-$(( 14 / n_runs ))}
INIT=${INIT:-oldphoto/weights/scratch_unet.safetensors}   # run A's starting point
op() {   # the installed CLI, else the package from this checkout (the device machine has no install)
  if command -v oldphoto > /dev/null; then oldphoto "$@"; else
    python3 -c 'import sys; from oldphoto.cli import main; sys.argv[0] = "oldphoto"; main()' "$@"; fi
}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
if [ "$DEV" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  if [ "${BENCH:-1}" = 1 ]; then
    python3 benchmarks/bench_gpu.py --device cuda --batches 1 8 32 --iters 5 --max-seconds 40 \
        --json "$OUT/bench_gpu.json" > "$OUT/bench_gpu.log" 2>&1 || echo "bench_gpu failed (see bench_gpu.log)"
    tail -n 25 "$OUT/bench_gpu.log" || true
  fi
fi
R=(--data "$DATA" --config small --device "$DEV" --steps 100000 --batch-size 32 --crop 256 --synth-size 256
   --max-minutes "$MIN" --workers "$WORKERS" --flat-negative-prob 0.3 --dark-scratch-prob 0.45 --clean-negative-prob 0.3)
[ "${RESUME:-0}" = 1 ] && R+=(--resume)
for r in $RUNS; do
  case $r in
    A) extra=(--seed 71 --lr 1e-4 --init "$INIT") ;;
    B) extra=(--seed 72 --lr 3e-4 --width 24) ;;
    C) extra=(--seed 73 --lr 1e-4 --init "$INIT" --clean-positive-prob 0.3) ;;
    *) echo "unknown run $r (A, B or C)" >&2; exit 2 ;;
  esac
  op train scratch "${R[@]}" --out "$OUT/run$r" --weights-dir "$OUT/$r" "${extra[@]}" >> "$OUT/train$r.log" 2>&1 &
done
wait
for r in $RUNS; do grep -v "step/s" "$OUT/train$r.log" | tail -n 4; done
if [ -n "${OUT_COPY:-}" ]; then
  for r in $RUNS; do
    cp "$OUT/$r/scratch_unet.safetensors" "$OUT_COPY/scratch_unet_$r.safetensors" || true
    cp "$OUT/run$r/scratch/history.jsonl" "$OUT_COPY/history_$r.jsonl" || true
    grep -v "step/s" "$OUT/train$r.log" > "$OUT_COPY/train_$r.log" || true
  done
  cp "$OUT"/bench_gpu.json "$OUT"/bench_gpu.log "$OUT_COPY/" 2> /dev/null || true
fi
