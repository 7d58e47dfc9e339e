#!/usr/bin/env bash
# Create .venv with detok installed (CPU torch) and Fashion-MNIST available. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${DETOK_DATA:-}" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q dataset-fashion-mnist || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }) >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get install -y -q dataset-fashion-mnist >/dev/null || echo "note: Fashion-MNIST will be downloaded on first use"
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
# torch first, pinned to the CPU build where a local wheel exists; any torch>=2.4 works.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==2.13.0" 2>/dev/null \
  || .venv/bin/pip install -q --index-url https://download.pytorch.org/whl/cpu "torch>=2.4"
.venv/bin/pip install -q -e ".${extras}"
