#!/usr/bin/env bash
set -euo pipefail
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)  # the run folders lie beside the checkout
cd $REPO/../qruns
P=$REPO/.venv/bin/python
B=$REPO/benchmarks/generator_curve.py
for r in sit-base sit-joint; do
  $P $B $r --steps 7500 --num 10000 --cfg 1.5 --sampling flow.sample_steps=25 --threads 2 --out curve-$r-10k.json
done
