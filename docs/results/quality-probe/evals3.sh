#!/usr/bin/env bash
set -euo pipefail
cd /work/qruns
P=/work/main/.venv/bin/python
B=/work/main/benchmarks/generator_curve.py
for r in sit-base sit-joint; do
  $P $B $r --steps 7500 --num 10000 --cfg 1.5 --sampling flow.sample_steps=25 --threads 2 --out curve-$r-10k.json
done
