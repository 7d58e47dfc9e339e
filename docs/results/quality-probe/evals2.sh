#!/usr/bin/env bash
set -euo pipefail
cd /work/qruns
while ! grep -q "trained generator written" sit-joint.out; do sleep 10; done
while pgrep -f evals.sh > /dev/null; do sleep 5; done
P=/work/main/.venv/bin/python
B=/work/main/benchmarks/generator_curve.py
$P $B sit-joint --steps 3750,7500 --num 1000 --cfg 1.5,3 --sampling flow.sample_steps=25 --threads 2 --out curve-sit-joint.json
