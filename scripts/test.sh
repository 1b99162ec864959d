#!/usr/bin/env bash
# Set up exactly as scripts/setup.sh does (plus the test tools) and run the test suite.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not integration"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
export QT_QPA_PLATFORM=offscreen
# Load an optimized BLAS ahead of MLX's bundled reference BLAS when the system has one.
preload=$(.venv/bin/python -m mlx_hooks.backend --preload-path)
if [ -n "$preload" ]; then export LD_PRELOAD="$preload${LD_PRELOAD:+:$LD_PRELOAD}"; fi
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
