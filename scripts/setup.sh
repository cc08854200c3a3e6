#!/usr/bin/env bash
# Installs metarl into the current Python environment, with optional extras ("test").
# Where no torch is installed yet, the CPU build of torch is installed first: set
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu on machines whose package index
# would otherwise serve a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if ! python -c "import torch" >/dev/null 2>&1; then
  python -m pip install --quiet "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
python -m pip install --quiet -e ".${extras:+[$extras]}"
