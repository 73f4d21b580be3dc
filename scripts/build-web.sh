#!/usr/bin/env bash
# Builds the web app and the ES module into dist/ with trunk (installed by setup.sh --trunk):
#   dist/index.html        the app          dist/sd-webgpu.js (+ .d.ts)  the module
#   dist/sd-webgpu-worker.js  its worker     dist/wasm/           wasm + wasm-bindgen glue
set -euo pipefail
cd "$(dirname "$0")/.."
command -v trunk >/dev/null || bash scripts/setup.sh --trunk
export TRUNK_SKIP_VERSION_CHECK=true
trunk build --release "$@"
ls -la dist dist/wasm
