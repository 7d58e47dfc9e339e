#!/usr/bin/env bash
# One side of issue #36's step-time comparison: train the official DeTok code or detok for STEPS steps from scratch,
# matched (official architecture, FMNIST-32 grey, patch 4, C = 8, 192 wide, 4 deep; γ = 3, M = 0.7; batch 64; fp32;
# no GAN or perceptual term; THREADS threads), and print the wall-clock seconds. Time the two sides alternately
# (A B A B ...) at two step counts: the per-step time is the difference over the difference in steps, which cancels
# each side's start-up (imports, data lists, model build, final checkpoint).
#
#   benchmarks/upstream/step_cmd.sh official 80 /tmp/sp   # needs ../upstream/DeTok (or $DETOK_REPO) and the
#   benchmarks/upstream/step_cmd.sh detok 80 /tmp/sp      # upstream venv ($UPSTREAM_PY, see train_official.py)
set -euo pipefail
cd "$(dirname "$0")/../.."
side=$1 steps=$2 work=$3 threads=${THREADS:-2}
rm -rf "$work/$side" && mkdir -p "$work"
start=$(date +%s.%N)
if [ "$side" = official ]; then
  OMP_NUM_THREADS=$threads "${UPSTREAM_PY:-/work/venv-upstream/bin/python}" benchmarks/upstream/train_official.py \
    --detok-repo "${DETOK_REPO:-../upstream/DeTok}" --out "$work/$side" --gamma 3 --mask 0.7 --seed 0 \
    --steps "$steps" --threads "$threads" --workers 0 --no-convert > "$work/$side.log" 2>&1
elif [ "$side" = detok ]; then
  OMP_NUM_THREADS=$threads "${DETOK_PY:-.venv/bin/python}" -m detok.cli tokenizer train \
    --preset detok-fmnist32-official --out "$work/$side" --set "train.images=$((steps * 64))" \
    --set train.threads="$threads" --set train.progress=false --set train.ckpt_every=100000 \
    --set train.sample_every=100000 > "$work/$side.log" 2>&1
else
  echo "usage: $0 official|detok STEPS WORKDIR" >&2; exit 2
fi
echo "$side $steps steps: $(echo "$(date +%s.%N) - $start" | bc) s"
