#!/usr/bin/env bash
# GPU recipe: retrain the shipped networks on one H200-class GPU in at most ~10 minutes of device time, writing
# 7 weight files (each a few MB, far under 16 MiB) to $OUT/weights and, with $OUT_COPY set (the device tool's
# $OUT), copying them and the logs there.
#
# NOT RUN YET as a whole (session 17's GPU time went to scripts/gpu_detector.sh, which showed the synthesis, not the
# GPU, bounds a run: every stage here makes its batches in --workers background processes, 14 in all on a 16-core
# machine in the first 3 minutes, 16 while the mappings run beside the detector and the face network). The shapes are the CPU "small" presets (the official
# shapes are 72-176 MiB per network in fp16, over the 16 MiB limit per file); the GPU buys steps, batch and
# crop size instead: every stage is time-bounded (--max-minutes), so the recipe fits the budget whatever the
# GPU's speed. Stages that do not depend on each other share the GPU. Data: `oldphoto data fetch DATA` first
# (the device machine has no network: carry DATA with the working tree or fetch it into the machine's cache).
#
# Usage: scripts/train_gpu.sh DATA_DIR OUT_DIR
set -euo pipefail
DATA=${1:?data folder}
OUT=${2:?output folder}
W="$OUT/weights"
OP=${OLDPHOTO:-oldphoto}
mkdir -p "$W"
cp oldphoto/weights/*.safetensors "$W/"     # warm starts and the VAEs the mappings need until retrained
C=(--data "$DATA" --config small --out "$OUT" --weights-dir "$W" --device cuda --seed 0)

# minutes 0-3: both VAEs; 0-9: the detector (hard negatives) and the face enhancer
"$OP" train vae-a   "${C[@]}" --steps 20000 --batch-size 32 --crop 128 --max-minutes 3 --workers 2 > "$OUT/vae_a.log" 2>&1 &
"$OP" train vae-b   "${C[@]}" --steps 20000 --batch-size 32 --crop 128 --max-minutes 3 --workers 2 > "$OUT/vae_b.log" 2>&1 &
"$OP" train scratch "${C[@]}" --steps 20000 --batch-size 32 --crop 256 --max-minutes 8.5 --synth-size 256 --workers 6 \
    --flat-negative-prob 0.3 --lr 1e-4 --init oldphoto/weights/scratch_unet.safetensors > "$OUT/scratch.log" 2>&1 &
"$OP" train face    "${C[@]}" --steps 20000 --batch-size 16 --max-minutes 8.5 --workers 4 \
    --init oldphoto/weights/face_256.safetensors > "$OUT/face.log" 2>&1 &
wait %1 %2
# minutes 3-9: the two mappings on the new VAEs
"$OP" train mapping "${C[@]}" --kind quality --steps 20000 --batch-size 32 --crop 128 --max-minutes 5.5 --workers 3 \
    > "$OUT/mapping_quality.log" 2>&1 &
"$OP" train mapping "${C[@]}" --kind scratch --steps 20000 --batch-size 32 --crop 128 --max-minutes 5.5 --workers 3 \
    > "$OUT/mapping_scratch.log" 2>&1 &
wait
# operating points, chosen on val (CPU-light)
# (the one-pass map's point first, the file's "unmirrored" entry; then the default mirrored map's, which keeps it)
python scripts/choose_scratch_settings.py --weights "$W" --data "$DATA" --seeds 2 --no-mirror --write \
    > "$OUT/choose_scratch.log" 2>&1
python scripts/choose_scratch_settings.py --weights "$W" --data "$DATA" --seeds 2 --mirror --write \
    >> "$OUT/choose_scratch.log" 2>&1
if [ -n "${OUT_COPY:-}" ]; then
  cp "$W"/{scratch_unet,vae_a,vae_b_quality,vae_b_scratch,mapping_quality,mapping_scratch,face_256}.safetensors "$OUT_COPY/"
  tail -n 3 "$OUT"/*.log > "$OUT_COPY/train_gpu.log"
fi
echo "weights in $W; run scripts/choose_face_gate.py on a CPU afterwards, then oldphoto bench quality"
