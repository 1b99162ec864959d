#!/usr/bin/env bash
# Build Symbiont's Linux one-folder bundle: dist/symbiont/symbiont (run it; --self-check tests it).
#   bash packaging/build_linux.sh
# Environment: PYTHON (default .venv/bin/python), SYMBIONT_DIST_DIR (default dist),
# SYMBIONT_WORK_DIR (default build/pyinstaller). Installs PyInstaller into the venv if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
DIST=${SYMBIONT_DIST_DIR:-dist}
WORK=${SYMBIONT_WORK_DIR:-build/pyinstaller}
[ -x "$PY" ] || { echo "build_linux: $PY not found: run bash scripts/setup.sh first (or set PYTHON)" >&2; exit 1; }

if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
    echo "build_linux: installing PyInstaller into the venv"
    "$PY" -m pip install -q "pyinstaller>=6.10"
fi

start=$(date +%s)
mkdir -p "$WORK"
QT_QPA_PLATFORM=offscreen "$PY" packaging/make_icon.py "$WORK/icon" >/dev/null
# No LD_PRELOAD while freezing: a preloaded OpenBLAS would show up in every binary's
# dependencies and be collected. The frozen app preloads the system's OpenBLAS itself.
env -u LD_PRELOAD SYMBIONT_ICON_DIR="$WORK/icon" \
    "$PY" -m PyInstaller --noconfirm --log-level WARN \
    --distpath "$DIST" --workpath "$WORK" packaging/symbiont.spec
end=$(date +%s)

app="$DIST/symbiont"
[ -x "$app/symbiont" ] || { echo "build_linux: $app/symbiont was not built" >&2; exit 1; }
echo "build_linux: built $app/symbiont in $((end - start)) s; size $(du -sh "$app" | cut -f1)"
echo "build_linux: check it with: $app/symbiont --self-check"
