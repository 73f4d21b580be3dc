#!/usr/bin/env bash
# Runs every test: the native suite on whatever Vulkan/Metal/DX12 adapter wgpu finds
# (Mesa lavapipe on a machine without a GPU), then the same suite compiled to
# wasm32 in headless Chromium on WebGPU (SwiftShader). Installs what it lacks first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"

LOG=$(mktemp)
echo "=== native: cargo test (wgpu on $(ls /usr/share/vulkan/icd.d/ 2>/dev/null | tr '\n' ' '))"
cargo test --release 2>&1 | tee "$LOG"

echo "=== browser: wasm-pack test --headless --chrome (Chromium, WebGPU on SwiftShader)"
# wasm-pack test runs the integration tests in tests/ under wasm-bindgen-test in the browser.
WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-3600}" \
  wasm-pack test --headless --chrome --release 2>&1 | tee -a "$LOG"

# One closing line for both runners (each runner's own summary is above).
passed=$(grep -oE 'test result: ok\. [0-9]+ passed' "$LOG" | awk '{s+=$4} END {print s+0}')
echo "all runners: $passed passed, 0 failed"
