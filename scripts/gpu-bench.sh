#!/usr/bin/env bash
# One short GPU benchmark run (issue #15): builds the release CLI, prints the adapter
# (`sd-webgpu info`: features, limits, subgroup sizes), times the GEMM / conv / attention
# shapes of an SD-1.5 UNet step (`bench-kernels`, both GEMM and attention variants, f16 and f32), then
# the whole pipeline phases (`bench --size 512 --steps 5`, f16 and f32, per-family shares)
# and writes one JSON and one markdown file:
#
#   $OUT/gpu-bench.json   {"info": …, "bench_kernels": …, "bench": {"f16": …, "f32": …}}
#   $OUT/gpu-bench.md     the same as tables
#
# (OUT defaults to target/gpu-bench.) Usage:
#
#   bash scripts/gpu-bench.sh [--quick] [--peak-tflops F]
#
# --quick: tiny shapes (bench-kernels --quick, the tiny test model at 64², one timed run):
# checks the script end to end on a CPU adapter such as lavapipe in a few minutes; its
# times say nothing about GPUs. Without it: ≤ 8 minutes on a datacenter GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
PEAK=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --peak-tflops) PEAK=(--peak-tflops "$2"); shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "gpu-bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

OUT="${OUT:-target/gpu-bench}"
mkdir -p "$OUT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
    export XDG_RUNTIME_DIR=/tmp/xdg-$UID
    mkdir -p -m 700 "$XDG_RUNTIME_DIR"
fi

start=$(date +%s)
echo "== build (release)"
cargo build --release --bin sd-webgpu
BIN="$CARGO_TARGET_DIR/release/sd-webgpu"

if ! "$BIN" bench-kernels --help >/dev/null 2>&1; then
    echo "gpu-bench.sh: this sd-webgpu has no bench-kernels subcommand" >&2
    exit 1
fi

echo "== adapter"
"$BIN" info | tee "$OUT/info.json"

echo "== bench-kernels"
KQ=()
[ "$QUICK" = 1 ] && KQ=(--quick)
"$BIN" bench-kernels --gemm both --attention both --dtype both --json "$OUT/bench-kernels.json" "${PEAK[@]}" "${KQ[@]}" | tee "$OUT/bench-kernels.txt"

for dt in f16 f32; do
    echo "== bench $dt"
    if [ "$QUICK" = 1 ]; then
        args=(--model tests/fixtures/tiny-sd15/model --size 64 --steps 1)
    else
        args=(--size 512 --steps 5)
    fi
    "$BIN" bench "${args[@]}" --dtype "$dt" --json-file "$OUT/bench-$dt.json" | tee "$OUT/bench-$dt.txt"
done

{
    printf '{"quick": %s, "info": ' "$([ "$QUICK" = 1 ] && echo true || echo false)"
    cat "$OUT/info.json"
    printf ', "bench_kernels": '
    cat "$OUT/bench-kernels.json"
    printf ', "bench": {"f16": '
    cat "$OUT/bench-f16.json"
    printf ', "f32": '
    cat "$OUT/bench-f32.json"
    printf '}}\n'
} > "$OUT/gpu-bench.json"

{
    echo "# sd-webgpu GPU benchmark$([ "$QUICK" = 1 ] && echo ' (--quick: tiny shapes, structure only)')"
    echo
    echo "## Adapter (sd-webgpu info)"
    echo
    echo '```json'
    cat "$OUT/info.json"
    echo '```'
    echo
    echo "## Kernels (sd-webgpu bench-kernels --gemm both --attention both --dtype both)"
    echo
    grep '^|' "$OUT/bench-kernels.txt" || true
    echo
    grep '^UNet-step weighted' "$OUT/bench-kernels.txt" | sed 's/^/- /' || true
    for dt in f16 f32; do
        echo
        echo "## Pipeline phases, $dt (sd-webgpu bench)"
        echo
        echo '```'
        cat "$OUT/bench-$dt.txt"
        echo '```'
    done
} > "$OUT/gpu-bench.md"

# Every part must have produced something (a CI check that the script still works).
for f in info.json bench-kernels.json bench-f16.json bench-f32.json gpu-bench.json gpu-bench.md; do
    [ -s "$OUT/$f" ] || { echo "gpu-bench.sh: $OUT/$f is empty" >&2; exit 1; }
done
grep -q '"unet_step_ms"' "$OUT/bench-f16.json" || { echo "gpu-bench.sh: no unet_step_ms in bench-f16.json" >&2; exit 1; }
grep -q '^|' "$OUT/gpu-bench.md" || { echo "gpu-bench.sh: no kernel table in gpu-bench.md" >&2; exit 1; }
echo "== wrote $OUT/gpu-bench.json and $OUT/gpu-bench.md in $(( $(date +%s) - start )) s"
