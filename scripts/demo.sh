#!/usr/bin/env bash
# The README's first command: install, train + evaluate the FMNIST-32 l-DeTok tokenizer, then cache latents,
# train a small SiT generator on them and sample a class-balanced grid. Budget: <= 15 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN="${RUN:-runs/demo}"
detok=.venv/bin/detok
$detok tokenizer train --preset detok-fmnist32 --out "$RUN" --set train.images=32000 "$@"
$detok tokenizer stats "$RUN" --max-images 10000
$detok tokenizer eval "$RUN" --split test
# Generator on the tokenizer's latents: 12k images (+ their flips) cached once, then SiT for 500 steps.
$detok latents cache --tokenizer "$RUN" --out "$RUN-latents" --max-images 12000
$detok generator train --preset sit-fmnist32 --tokenizer "$RUN" --latents "$RUN-latents" --out "$RUN-sit" \
  --set train.images=32000
$detok generator sample "$RUN-sit" --num 100 --cfg 2.0 --seed 0 --out "$RUN-sit/samples-cfg2.npz"
echo "tokenizer: $RUN (model, checkpoints, log.jsonl, samples/, eval-test.json)"
echo "generator: $RUN-sit (model, log.jsonl, samples-cfg2.npz + samples-cfg2.png)"
