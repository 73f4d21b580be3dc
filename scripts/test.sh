#!/usr/bin/env bash
# Runs every test: the native suite on whatever Vulkan/Metal/DX12 adapter wgpu finds
# (Mesa lavapipe on a machine without a GPU), then the same suite compiled to
# wasm32 in headless Chromium on WebGPU (SwiftShader), then the end-to-end tests of the
# built app (dist/, scripts/build-web.sh) in Chromium through playwright-core, including a load of
# synthetic full-size SD-1.5 weights (2.1 GB) that checks the worker's wasm memory.
# Installs what it lacks first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# No trunk: the e2e tests build dist/ with cargo + wasm-bindgen (scripts/build-web.sh).
bash scripts/setup.sh
echo "=== setup done at ${SECONDS} s"

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"

# The cores this run may use: a container's CPU quota (cgroup v2 cpu.max) can be far below the
# CPUs the kernel reports, and lavapipe starts one rasterizer thread per reported CPU; so its
# threads are set from the quota (cargo and the test harness read the quota themselves).
CORES=$(nproc)   # the CPUs this process may run on (its affinity)
quota="" period=""
if [ -r /sys/fs/cgroup/cpu.max ]; then                      # cgroup v2: "max 100000" or "200000 100000"
  read -r quota period </sys/fs/cgroup/cpu.max || true
elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then       # cgroup v1: -1 when unlimited
  quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) period=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)
fi
case "$quota" in
  ''|max|-*) ;;
  *) if [ "${period:-0}" -gt 0 ]; then
       q=$(( (quota + period - 1) / period ))
       if [ "$q" -ge 1 ] && [ "$q" -lt "$CORES" ]; then CORES=$q; fi
     fi ;;
esac
export LP_NUM_THREADS="${LP_NUM_THREADS:-$CORES}"
echo "=== cores: nproc $(nproc), online $(getconf _NPROCESSORS_ONLN), cgroup quota '${quota:-none} ${period:-}' -> $CORES; LP_NUM_THREADS=$LP_NUM_THREADS; memory $(free -g | awk '/^Mem/ {print $2 " GiB, " $7 " available"}')"

LOG=$(mktemp)
# Seconds per phase and per test binary / e2e test, printed at the end and also when the
# run is stopped from outside (CI's time limit), so that a cut-off run still says where
# its time went.
TIMES=$(mktemp)
phase() { PHASES="$PHASES $1 ${SECONDS}s"; echo "=== $1 at ${SECONDS} s"; }
PHASES=" setup 0s"
# Copies a runner's output through, noting when each test binary (cargo's "Running" and
# "Doc-tests" lines) or e2e test ("--- name") starts, as "<phase> <name> +<start>s".
timed() {
  local line
  while IFS= read -r line || [ -n "$line" ]; do
    printf '%s\n' "$line"
    case "$line" in
      *"     Running "*|*"   Doc-tests "*|"--- "*)
        echo "$1 $(echo "$line" | sed -E 's/^ *(Running|Doc-tests|---) +//; s/ \(.*//') +${SECONDS}s" >>"$TIMES" ;;
    esac
  done
}
report() {
  echo "=== phases (start times):$PHASES; now ${SECONDS} s"
  echo "=== test binaries and e2e tests (start times; each ran until the next one of its phase started):"
  cat "$TIMES"
}
trap 'report' EXIT
trap 'exit 143' TERM INT
phase native
echo "=== native: cargo test (wgpu on $(ls /usr/share/vulkan/icd.d/ 2>/dev/null | tr '\n' ' '))"
# --nocapture: every test's figures (kernel errors, PARITY lines) are in the log.
cargo test --release -- --nocapture 2>&1 | timed native | tee "$LOG"
echo "=== native done at ${SECONDS} s"

# The GPU benchmark script end to end on this adapter with tiny shapes (README: GPU benchmark):
# keeps it working; lavapipe's times say nothing about GPUs.
phase gpu-bench
echo "=== scripts/gpu-bench.sh --quick (structure only on a CPU adapter)"
bash scripts/gpu-bench.sh --quick 2>&1 | timed gpu-bench | tee -a "$LOG"
echo "=== gpu-bench done at ${SECONDS} s"

# The browser runner and the e2e tests run side by side: Chromium on SwiftShader keeps about
# 1.3 of CI's 2 cores busy (measured: 70 s user + 20 s sys in 70 s), so together they take
# far less than one after the other. The browser runner's output is printed as one block
# when it ends (also if the run is stopped); SERIAL=1 runs them one after the other.
phase browser
echo "=== browser: wasm-pack test --headless --chrome (Chromium, WebGPU on SwiftShader)${SERIAL:+ (serial)}"
BLOG=$(mktemp)
BRC=$(mktemp)
browser() {
  # wasm-pack test runs the integration tests in tests/ under wasm-bindgen-test in the browser.
  local rc=0
  WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-3600}" wasm-pack test --headless --chrome --release 2>&1 | timed browser || rc=$?
  echo "$rc" >"$BRC"
  echo "=== browser done at ${SECONDS} s (exit status $rc)"
}
browser_output() {
  [ -s "$BLOG" ] || return 0
  echo "=== browser runner output (wasm-pack test):"
  cat "$BLOG"
  cat "$BLOG" >>"$LOG"
  : >"$BLOG"
}
BPID=""
if [ -n "${SERIAL:-}" ]; then
  browser >"$BLOG"
  browser_output
else
  # Its own process group (job control on for the fork), so that stopping it stops Chromium too.
  set -m
  browser >"$BLOG" &
  BPID=$!
  set +m
fi
stop_browser() { if [ -n "$BPID" ]; then kill -- "-$BPID" 2>/dev/null || true; BPID=""; fi; browser_output; }
trap 'stop_browser; report' EXIT

phase e2e
echo "=== end-to-end: the app and the ES module in Chromium (tests/e2e, playwright-core)"
bash scripts/e2e.sh 2>&1 | timed e2e | tee -a "$LOG"
echo "=== end-to-end done at ${SECONDS} s"

# The npm package (dist/npm, made by build-web.sh above) installed into a Vite, a webpack and a
# TypeScript app: tsc, the builds, and the golden case through each (README: npm package).
phase consumers
echo "=== the npm package in Vite, webpack and TypeScript apps (tests/consumers, scripts/consumers.sh)"
SKIP_WEB_BUILD=1 bash scripts/consumers.sh 2>&1 | timed consumers | tee -a "$LOG"
echo "=== consumers done at ${SECONDS} s"
if [ -n "$BPID" ]; then
  echo "=== waiting for the browser runner"
  wait "$BPID" || true
  BPID=""
  browser_output
fi
brc=$(cat "$BRC")
if [ "$brc" != 0 ]; then
  echo "=== browser runner failed (wasm-pack test exit status ${brc:-unknown})"
  exit 1
fi

phase full-size
echo "=== end-to-end: synthetic full-size SD-1.5 weights streamed through the module"
SYNTH=$(mktemp -d)
trap 'rm -rf "$SYNTH"; stop_browser; report' EXIT
cargo run --release --quiet -- synth --out "$SYNTH/sd15" 2>&1 | tail -1
SKIP_WEB_BUILD=1 bash scripts/e2e.sh --full-size "$SYNTH/sd15" 2>&1 | tee -a "$LOG"

# The pipeline parity table (native first, then the browser's runs).
echo "=== pipeline parity vs diffusers (case | storage | runner | final latents max err / max|ref| | image mean | image max)"
grep -aoE 'PARITY\|[^ ]+\|[a-z0-9]+\|.*' "$LOG" || true

# One closing line for all runners (each runner's own summary is above).
passed=$(grep -oE 'test result: ok\. [0-9]+ passed' "$LOG" | awk '{s+=$4} END {print s+0}')
e2e=$(grep -oE '^(e2e|consumers): [0-9]+ passed' "$LOG" | awk '{s+=$2} END {print s+0}')
ignored=$({ grep -oE 'test result: ok\..* [0-9]+ ignored' "$LOG" || true; } | { grep -oE '[0-9]+ ignored' || true; } | awk '{s+=$1} END {print s+0}')
echo "all runners: $((passed + e2e)) passed, 0 failed, $ignored ignored with their reason (README: What runs where) in ${SECONDS} s ($passed cargo/wasm-pack, $e2e end-to-end + npm package consumers + full-size load)"
