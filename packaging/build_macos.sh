#!/usr/bin/env bash
# Build Symbiont.app (Apple silicon), sign it, check it, and wrap it in a .dmg:
#   bash packaging/build_macos.sh
# Produces dist/Symbiont.app, dist/Symbiont-<version>-arm64.dmg and dist/Symbiont-<version>-arm64.app.zip.
#
# Environment:
#   PYTHON              interpreter of the set-up venv (default .venv/bin/python; bash scripts/setup.sh first)
#   CODESIGN_IDENTITY   "Developer ID Application: Name (TEAMID)" to sign for distribution (its
#                       certificate must be in a keychain: checked first); unset: ad-hoc
#                       signature ("-"), enough to run on the building Mac
#   CODESIGN_KEYCHAIN   optional: the keychain holding that certificate (CI imports it into one)
#   NOTARY_PROFILE      optional: a `xcrun notarytool store-credentials` profile; when set (and
#                       CODESIGN_IDENTITY is a real identity) the .dmg is notarized and stapled
#   NOTARY_KEYCHAIN     optional: the keychain that profile was stored in (default: the login keychain)
#   SYMBIONT_MIN_MACOS  oldest macOS the app claims to run on (default 14.0); must not be older
#                       than the mlx-metal wheel this venv has (checked below)
#   SYMBIONT_SKIP_SELF_CHECK=1  do not run the built app's --self-check (CPU) at the end
#
# Notarization by hand (optional; needs a paid Apple developer account):
#   xcrun notarytool store-credentials symbiont-notary --apple-id you@example.com --team-id TEAMID
#   xcrun notarytool submit dist/Symbiont-<version>-arm64.dmg --keychain-profile symbiont-notary --wait
#   xcrun stapler staple dist/Symbiont-<version>-arm64.dmg
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(uname -s)" = "Darwin" ] || { echo "build_macos: run this on macOS (for Linux: packaging/build_linux.sh)" >&2; exit 1; }
[ "$(uname -m)" = "arm64" ] || { echo "build_macos: MLX's Metal backend needs Apple silicon (arm64)" >&2; exit 1; }

PY=${PYTHON:-.venv/bin/python}
DIST=${SYMBIONT_DIST_DIR:-dist}
WORK=${SYMBIONT_WORK_DIR:-build/pyinstaller}
IDENTITY=${CODESIGN_IDENTITY:--}
export SYMBIONT_MIN_MACOS=${SYMBIONT_MIN_MACOS:-14.0}
[ -x "$PY" ] || { echo "build_macos: $PY not found: run bash scripts/setup.sh first (or set PYTHON)" >&2; exit 1; }
keychain_args=()
[ -z "${CODESIGN_KEYCHAIN:-}" ] || keychain_args=(--keychain "$CODESIGN_KEYCHAIN")
if [ "$IDENTITY" != "-" ]; then
    # Before the build: an identity whose certificate is in no keychain would only fail at codesign.
    security find-identity -v -p codesigning ${CODESIGN_KEYCHAIN:+"$CODESIGN_KEYCHAIN"} | grep -qF "$IDENTITY" || {
        echo "build_macos: no valid code-signing identity \"$IDENTITY\" in ${CODESIGN_KEYCHAIN:-the keychain search list}:" \
             "import its certificate (.p12) first, or unset CODESIGN_IDENTITY to sign ad hoc" >&2; exit 1; }
fi

if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
    echo "build_macos: installing PyInstaller into the venv"
    "$PY" -m pip install -q "pyinstaller>=6.10"
fi

# mlx-metal wheels are built per macOS version: a wheel for macOS 15 does not load on 14.
# The app must not claim an older macOS than the wheel it carries.
"$PY" - <<'EOF'
import importlib.metadata as md, os, re, sys
try:
    wheel = md.distribution("mlx-metal").read_text("WHEEL") or ""
except md.PackageNotFoundError:
    sys.exit("build_macos: mlx-metal is not installed (pip install mlx brings it on macOS)")
tags = re.findall(r"macosx_(\d+)_(\d+)_arm64", wheel)
if not tags:
    sys.exit(f"build_macos: cannot tell which macOS the mlx-metal wheel targets:\n{wheel}")
need = max((int(a), int(b)) for a, b in tags)
claim = tuple(int(x) for x in os.environ["SYMBIONT_MIN_MACOS"].split(".")[:2])
print(f"build_macos: mlx-metal {md.version('mlx-metal')} is built for macOS {need[0]}.{need[1]}; "
      f"the app claims {claim[0]}.{claim[1]}")
if need > claim:
    sys.exit(f"build_macos: this mlx-metal needs macOS {need[0]}.{need[1]}: build on macOS {claim[0]} "
             f"(its wheel) or set SYMBIONT_MIN_MACOS={need[0]}.{need[1]}")
EOF

start=$(date +%s)
mkdir -p "$WORK/icon"
QT_QPA_PLATFORM=offscreen "$PY" packaging/make_icon.py "$WORK/icon" >/dev/null
iconutil -c icns "$WORK/icon/Symbiont.iconset" -o "$WORK/icon/Symbiont.icns"
SYMBIONT_ICON_DIR="$WORK/icon" "$PY" -m PyInstaller --noconfirm --log-level WARN \
    --distpath "$DIST" --workpath "$WORK" packaging/symbiont.spec
APP="$DIST/Symbiont.app"
[ -x "$APP/Contents/MacOS/Symbiont" ] || { echo "build_macos: $APP was not built" >&2; exit 1; }

# MLX loads mlx.metallib from the folder of the libmlx.dylib it was loaded from: check
# every copy has one beside it (the spec links it where needed), and that it is a Metal
# library (magic "MTLB"), not a dangling link or an LFS pointer. Whether it loads and runs
# is the app's own --metal-check (CI runs it after this script).
found=0
while IFS= read -r lib; do
    found=1
    metallib="$(dirname "$lib")/mlx.metallib"
    [ -e "$metallib" ] || { echo "build_macos: no mlx.metallib next to $lib" >&2; exit 1; }
    [ "$(head -c 4 "$metallib")" = "MTLB" ] || { echo "build_macos: $metallib is not a Metal library" >&2; exit 1; }
done < <(find "$APP/Contents" -name 'libmlx*.dylib')
[ "$found" = 1 ] || { echo "build_macos: no libmlx.dylib in $APP" >&2; exit 1; }

# Sign: nested code first (--deep), then the bundle; hardened runtime for a real identity
# (notarization requires it), a plain ad-hoc signature otherwise.
if [ "$IDENTITY" = "-" ]; then
    echo "build_macos: signing ad hoc (set CODESIGN_IDENTITY to sign for distribution)"
    codesign --force --deep --sign - "$APP"
else
    echo "build_macos: signing with $IDENTITY"
    codesign --force --deep --timestamp --options runtime ${keychain_args[@]+"${keychain_args[@]}"} \
        --entitlements packaging/entitlements.plist --sign "$IDENTITY" "$APP"
fi
codesign --verify --deep --strict --verbose=1 "$APP"

VERSION=$(/usr/libexec/PlistBuddy -c "Print :CFBundleShortVersionString" "$APP/Contents/Info.plist")
DMG="$DIST/Symbiont-$VERSION-arm64.dmg"
ZIP="$DIST/Symbiont-$VERSION-arm64.app.zip"

if [ "${SYMBIONT_SKIP_SELF_CHECK:-}" != "1" ]; then
    # The app from the bundle, fresh user cache, on the CPU (CI runners have no usable GPU).
    check_cache=$(mktemp -d)
    QT_QPA_PLATFORM=offscreen SYMBIONT_CACHE_DIR="$check_cache" HF_HUB_OFFLINE=1 \
        "$APP/Contents/MacOS/Symbiont" --self-check --device cpu
    rm -rf "$check_cache"
fi

# The .dmg: the app and a link to /Applications to drag it onto.
stage=$(mktemp -d)
ditto "$APP" "$stage/Symbiont.app"
ln -s /Applications "$stage/Applications"
# hdiutil fails now and then on hosted runners ("Resource busy": Spotlight or XProtect
# still reading the fresh files): try again, waiting longer each time.
dmg_made=0
for attempt in 1 2 3 4 5; do
    rm -f "$DMG"
    if hdiutil create -volname "Symbiont" -srcfolder "$stage" -fs HFS+ -format UDZO -ov "$DMG" \
        >"$WORK/hdiutil.log" 2>&1; then
        dmg_made=1
        break
    fi
    echo "build_macos: hdiutil create failed (attempt $attempt of 5): $(tail -n 1 "$WORK/hdiutil.log")" >&2
    sleep $((attempt * 10))
done
rm -rf "$stage"
[ "$dmg_made" = 1 ] || { cat "$WORK/hdiutil.log" >&2; echo "build_macos: could not make $DMG" >&2; exit 1; }
[ "$IDENTITY" = "-" ] || codesign --force --timestamp ${keychain_args[@]+"${keychain_args[@]}"} --sign "$IDENTITY" "$DMG"

if [ -n "${NOTARY_PROFILE:-}" ]; then
    [ "$IDENTITY" != "-" ] || { echo "build_macos: notarization needs CODESIGN_IDENTITY (a Developer ID)" >&2; exit 1; }
    notary_args=(--keychain-profile "$NOTARY_PROFILE")
    [ -z "${NOTARY_KEYCHAIN:-}" ] || notary_args+=(--keychain "$NOTARY_KEYCHAIN")
    # `submit --wait` can end with status "Invalid" or "Rejected": read the status, show Apple's log.
    xcrun notarytool submit "$DMG" "${notary_args[@]}" --wait --output-format json >"$WORK/notary.json"
    status=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("status", "?"))' "$WORK/notary.json")
    if [ "$status" != "Accepted" ]; then
        id=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("id", ""))' "$WORK/notary.json")
        [ -z "$id" ] || xcrun notarytool log "$id" "${notary_args[@]}" >&2 || true
        echo "build_macos: notarization of $DMG ended with status $status" >&2
        exit 1
    fi
    xcrun stapler staple "$DMG"
    xcrun stapler staple "$APP"
fi

# A zip that keeps the bundle's symbolic links and signature (for CI artifacts).
rm -f "$ZIP"
ditto -c -k --sequesterRsrc --keepParent "$APP" "$ZIP"
end=$(date +%s)
echo "build_macos: $APP ($(du -sh "$APP" | cut -f1)), $DMG ($(du -sh "$DMG" | cut -f1)), $ZIP; $((end - start)) s"
