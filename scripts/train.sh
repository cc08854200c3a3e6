#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then runs `metarl train` with the given flags; with none, the
# bundled navigation config (a few minutes on two cores).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" ""  # no extras (not this script's flags)
exec "$METARL_PYTHON" -m metarl train "$@"
