#!/usr/bin/env bash
# The README's first command: install, then train and evaluate the FMNIST-32 l-DeTok tokenizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN="${RUN:-runs/demo}"
.venv/bin/detok tokenizer train --preset detok-fmnist32 --out "$RUN" "$@"
.venv/bin/detok tokenizer stats "$RUN" --max-images 10000
.venv/bin/detok tokenizer eval "$RUN" --split test
echo "run directory: $RUN (model, checkpoints, log.jsonl, samples/, eval-test.json)"
