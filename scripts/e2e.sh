#!/usr/bin/env bash
# End-to-end tests of the web app and the ES module in headless Chromium (WebGPU on
# SwiftShader) through playwright-core (tests/e2e/, no browser download: /usr/bin/chromium).
#
#   bash scripts/e2e.sh                     build dist/ (scripts/build-web.sh), run tests/e2e/run.mjs
#   bash scripts/e2e.sh --full-size DIR     measure a full-size load (tests/e2e/fullsize.mjs);
#                                           DIR from: target/release/sd-webgpu synth --out DIR
# Environment: SKIP_WEB_BUILD=1 uses dist/ as it is; E2E_ONLY=name,name runs only those tests;
# CHROMIUM=path another browser binary; E2E_KEEP_PROFILES=1 keeps the temporary profiles.
set -euo pipefail
cd "$(dirname "$0")/.."

FULL_SIZE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --full-size)
      [ $# -ge 2 ] || { echo "e2e.sh: --full-size needs a folder" >&2; exit 2; }
      FULL_SIZE="$2"; shift 2 ;;
    --full-size=*) FULL_SIZE="${1#--full-size=}"; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "e2e.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  $SUDO apt-get update
  $SUDO apt-get install -y nodejs npm
fi
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  $SUDO apt-get update
  $SUDO apt-get install -y chromium
fi
export CHROMIUM

if [ ! -d tests/e2e/node_modules/playwright-core ]; then
  npm ci --prefix tests/e2e --no-audit --no-fund
fi

if [ "${SKIP_WEB_BUILD:-0}" != 1 ]; then
  bash scripts/build-web.sh
fi

if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  XDG_RUNTIME_DIR="$(mktemp -d)"   # mktemp -d creates it 0700
  chmod 700 "$XDG_RUNTIME_DIR"
  export XDG_RUNTIME_DIR
fi

if [ -n "$FULL_SIZE" ]; then
  exec node tests/e2e/fullsize.mjs "$FULL_SIZE"
fi
exec node tests/e2e/run.mjs
