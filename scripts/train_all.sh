#!/usr/bin/env bash
# Reproduce the weights shipped in oldphoto/weights/ (CPU, "small" presets).
#
# These are the exact commands, seeds and budgets of the shipped run (2-core shared CPU, torch 1 thread,
# `nice -n 10`). The shipped run was bounded by --max-minutes on a machine shared with other jobs, so the
# number of steps actually reached (listed in oldphoto/weights/MODEL_CARD.md and inside each file's
# metadata) depends on the machine's load; the learning rate decays linearly to 0 over the second half of
# the run, measured in steps or in wall time, whichever is further along. For a step-exact rerun drop
# --max-minutes and pass the step count from the model card as --steps.
#
# Usage: scripts/train_all.sh [DATA_DIR] [OUT_DIR]
set -euo pipefail
DATA=${1:-data}
OUT=${2:-runs/ship}
W="$OUT/weights"
OP=${OLDPHOTO:-oldphoto}

"$OP" data fetch "$DATA"                  # photos, textures, the 1927 photo, VGG16 ONNX (training only)

COMMON=(--data "$DATA" --config small --out "$OUT" --weights-dir "$W" --threads 1 --seed 0)

# 1. scratch detector (most important), VAE_A and VAE_B are independent and can run side by side
nice -n 10 "$OP" train scratch "${COMMON[@]}" --steps 3000 --max-minutes 18 &
wait
nice -n 10 "$OP" train vae-a   "${COMMON[@]}" --steps 2000 --max-minutes 16 &   # domain R: Solvay 1927 + STRONG synthetic
nice -n 10 "$OP" train vae-b   "${COMMON[@]}" --steps 2500 --max-minutes 16 &   # -> vae_b_quality + vae_b_scratch
# 2. the face enhancer (independent of the rest)
nice -n 10 "$OP" train face    "${COMMON[@]}" --steps 1500 --max-minutes 12 &
wait
# 3. the mappings, on the frozen VAEs just trained
nice -n 10 "$OP" train mapping "${COMMON[@]}" --kind quality --steps 1500 --max-minutes 14 &
nice -n 10 "$OP" train mapping "${COMMON[@]}" --kind scratch --steps 1500 --max-minutes 14 &
wait

# 4. continuation (second session): the same runs resumed from their checkpoints with a larger budget.
#    --max-minutes counts the training time of all sessions together; progress = max(steps, time) fraction,
#    so the learning rate goes back to its full value until half the new budget, then decays to 0 again.
nice -n 10 "$OP" train vae-a   "${COMMON[@]}" --resume --steps 6000 --max-minutes 36 &
nice -n 10 "$OP" train vae-b   "${COMMON[@]}" --resume --steps 6000 --max-minutes 36 &
wait
nice -n 10 "$OP" train mapping "${COMMON[@]}" --kind quality --resume --steps 8000 --max-minutes 32 &
nice -n 10 "$OP" train mapping "${COMMON[@]}" --kind scratch --resume --steps 8000 --max-minutes 32 &
wait

# 5. measure end to end; the card's "Measured end-to-end quality" section is read from $W/quality_bench.json
"$OP" bench quality --weights "$W" --data "$DATA" --out "$OUT/bench"
cp "$OUT/bench/quality.json" "$W/quality_bench.json"
"$OP" train card --weights-dir "$W" --header scripts/model_card_header.md
echo "weights and model card in $W (copy them to oldphoto/weights/ to ship)"
