#!/usr/bin/env bash
set -euo pipefail
cd /work/qruns
P=/work/main/.venv/bin/python
B=/work/main/benchmarks/generator_curve.py
$P $B sit-base --steps 3750,7500 --num 1000 --cfg 1.5,3 --sampling flow.sample_steps=25 --threads 1 --out curve-sit-base.json
$P $B sit-joint --steps 1250 --num 1000 --cfg 1.5,3 --sampling flow.sample_steps=25 --threads 1 --out curve-sit-joint-80k.json
