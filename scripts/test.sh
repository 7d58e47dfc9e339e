#!/usr/bin/env bash
# The README's second command: install the dev dependencies and run the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "[dev]"
export HF_HUB_OFFLINE=1
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check -q src tests benchmarks
.venv/bin/python -m pytest -q "$@"
