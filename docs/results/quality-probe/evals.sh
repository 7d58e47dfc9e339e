#!/usr/bin/env bash
set -euo pipefail
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)  # the run folders lie beside the checkout
cd $REPO/../qruns
P=$REPO/.venv/bin/python
B=$REPO/benchmarks/generator_curve.py
$P $B sit-base --steps 3750,7500 --num 1000 --cfg 1.5,3 --sampling flow.sample_steps=25 --threads 1 --out curve-sit-base.json
$P $B sit-joint --steps 1250 --num 1000 --cfg 1.5,3 --sampling flow.sample_steps=25 --threads 1 --out curve-sit-joint-80k.json
