#!/usr/bin/env bash
# Installs metarl (with optional extras, e.g. "test") into a Python environment:
# the active virtual environment if there is one, else the project's own .venv (created with
# python3 on first use, so a stock, PEP 668-managed system Python is never touched).
#
#   bash scripts/setup.sh [EXTRAS]      e.g.  bash scripts/setup.sh test,ray,metaworld
#
# The extra "metaworld" also installs Meta-World 3.1.1 without its dependencies (its exact
# MuJoCo pin would downgrade MuJoCo).
# Sourced by scripts/train.sh and scripts/test.sh, it leaves the environment's interpreter in
# $METARL_PYTHON. torch: where none is installed yet, torch 2.13.0 comes from pip's index (on
# Linux x86-64, PyPI serves the CUDA 12 build); set TORCH_INDEX_URL to pick another build, e.g.
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for the CPU-only one.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ -n "${VIRTUAL_ENV:-}" ]; then
  METARL_PYTHON="$VIRTUAL_ENV/bin/python"
else
  if [ ! -x "$ROOT/.venv/bin/python" ]; then
    command -v python3 >/dev/null || { echo "setup: python3 (>= 3.11) not found" >&2; exit 1; }
    echo "setup: creating the virtual environment $ROOT/.venv" >&2
    python3 -m venv "$ROOT/.venv" || {
      echo "setup: python3 -m venv failed; on Debian/Ubuntu install python3-venv" >&2
      exit 1
    }
  fi
  METARL_PYTHON="$ROOT/.venv/bin/python"
fi
"$METARL_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: metarl needs Python >= 3.11, $METARL_PYTHON is $("$METARL_PYTHON" -V 2>&1)" >&2
  exit 1
}

extras="${1:-}"
if ! "$METARL_PYTHON" -c "import torch" >/dev/null 2>&1; then
  "$METARL_PYTHON" -m pip install --quiet "torch==2.13.0" \
    ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
"$METARL_PYTHON" -m pip install --quiet -e "$ROOT${extras:+[$extras]}"
if [[ ",$extras," == *",metaworld,"* ]]; then  # without its MuJoCo pin (setup.cfg)
  "$METARL_PYTHON" -m pip install --quiet --no-deps "metaworld==3.1.1"
fi
export METARL_PYTHON
