#!/usr/bin/env bash
# Issue #36 item 3, one change at a time: which of the official architecture's four differences from detok's r2
# (init, RoPE form, ln_pre, conv_out; the SwiGLU width is 512 in both at 192 wide) makes the reconstruction gap at the
# `cpu` budget? Each cell is table2's baseline tokenizer step in detok's loop (detok-fmnist32-official, γ = 0, M = 0,
# 16,000 images, seed 8) with the named fields changed, scored as table2's `recon` step (5,000 test images, the
# reference evaluator). Resumable: a cell with its eval file is skipped. Results (eval + run config) are copied to
# docs/results/arch-fmnist32/ablation-<cell>-baseline-seed<seed>-{eval,run_config}.json.
#
#   benchmarks/upstream/arch_steps.sh WORK [THREADS]      # WORK outside the repository
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$1 threads=${2:-2} seed=${SEED:-8}
detok=(${DETOK_CLI:-.venv/bin/detok})
out=docs/results/arch-fmnist32
declare -A cells=(
  # cumulative, from official towards r2 (official+xavier is the existing `official-xavier` ablation; +conv_out=false
  # is r2 itself: table2-r4's baseline)
  [official-xavier-axial]="model.init=xavier model.rope=axial"
  [official-xavier-axial-nolnpre]="model.init=xavier model.rope=axial model.pre_norm=false"
  # one change alone from official
  [official-axial]="model.rope=axial"
  [official-nolnpre]="model.pre_norm=false"
  [official-noconvout]="model.conv_out=false"
)
for cell in official-xavier-axial official-xavier-axial-nolnpre official-axial official-nolnpre official-noconvout; do
  eval_json=$out/ablation-$cell-baseline-seed$seed-eval.json
  [ -f "$eval_json" ] && { echo "$cell: done"; continue; }
  run=$work/$cell-seed$seed
  sets=(--set model.corruption.noise_gamma=0 --set model.corruption.mask_max=0 --set train.images=16000
        --set train.seed=$seed --set train.threads=$threads --set train.progress=false)
  for s in ${cells[$cell]}; do sets+=(--set "$s"); done
  echo "$cell: train $(date -u +%H:%M:%S)"
  "${detok[@]}" tokenizer train --preset detok-fmnist32-official "${sets[@]}" --out "$run" > "$run.log" 2>&1
  echo "$cell: eval $(date -u +%H:%M:%S)"
  "${detok[@]}" tokenizer eval "$run" --max-images 5000 --threads "$threads" --out "$run/eval-test-5000.json" >> "$run.log" 2>&1
  cp "$run/eval-test-5000.json" "$eval_json"
  cp "$run/run_config.json" "$out/ablation-$cell-baseline-seed$seed-run_config.json"
  python3 -c "import json,sys; e=json.load(open(sys.argv[1])); print(sys.argv[2], 'PSNR %.2f rFID %.2f' % (e['psnr'], e['rfid']))" "$eval_json" "$cell"
done
