#!/usr/bin/env bash
# Sets up with the test tools, Ray and Meta-World (scripts/setup.sh test,ray,metaworld), then
# lints, type-checks and runs the test suite (extra flags go to pytest).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" test,ray,metaworld
cd "$ROOT"
"$METARL_PYTHON" -m ruff check .
"$METARL_PYTHON" scripts/typecheck.py
"$METARL_PYTHON" -m pytest -q "$@"
