#!/usr/bin/env bash
set -euo pipefail
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)  # the run folders lie beside the checkout
D=$REPO/.venv/bin/detok
cd $REPO/../qruns
$D tokenizer train --preset detok-fmnist32 --out tok-joint128k-ft --set init_from=tok-joint128k --set decoder_finetune=true \
  --set train.images=32000 --set train.warmup_frac=0.02 --set train.ema_decay=0.999 --set train.threads=1 \
  --set train.progress=false --set train.log_every=50 --set train.ckpt_every=250 --set train.keep_checkpoints=4
