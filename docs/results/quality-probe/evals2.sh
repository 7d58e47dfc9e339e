#!/usr/bin/env bash
set -euo pipefail
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)  # the run folders lie beside the checkout
cd $REPO/../qruns
while ! grep -q "trained generator written" sit-joint.out; do sleep 10; done
while pgrep -f evals.sh > /dev/null; do sleep 5; done
P=$REPO/.venv/bin/python
B=$REPO/benchmarks/generator_curve.py
$P $B sit-joint --steps 3750,7500 --num 1000 --cfg 1.5,3 --sampling flow.sample_steps=25 --threads 2 --out curve-sit-joint.json
