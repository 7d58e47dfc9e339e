#!/usr/bin/env bash
set -euo pipefail
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)  # the run folders lie beside the checkout
D=$REPO/.venv/bin/detok
cd $REPO/../qruns
$D tokenizer stats tok-base128k --max-images 20000 --threads 1
$D latents cache --tokenizer tok-base128k --out lat-base128k --threads 1
$D generator train --preset sit-fmnist32 --tokenizer tok-base128k --latents lat-base128k --out sit-base \
  --set train.images=480000 --set train.threads=1 --set train.progress=false --set train.log_every=50 \
  --set train.ckpt_every=1250 --set train.keep_checkpoints=10
