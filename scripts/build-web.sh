#!/usr/bin/env bash
# Builds the web app and the ES module into dist/:
#   dist/index.html        the app          dist/sd-webgpu.js (+ .d.ts)  the module
#   dist/sd-webgpu-worker.js  its worker     dist/wasm/           wasm + wasm-bindgen glue
#
#   bash scripts/build-web.sh            what `trunk build --release` makes, without trunk:
#                                        cargo + wasm-bindgen (pinned to Cargo.lock), the
#                                        files that www/index.html's data-trunk links name
#   bash scripts/build-web.sh --trunk    with trunk itself (installed by setup.sh --trunk)
#   bash scripts/build-web.sh --js-only  the wasm and glue already in dist/wasm/ as they are (no
#                                        cargo, no wasm-bindgen): the other files again, for
#                                        changes to www/ only
#
# All three then make the npm package folder dist/npm/ (node npm/make.mjs: the module, its
# worker and the files they load, the wasm and glue, the d.ts, package.json with the version
# from Cargo.toml); `npm pack dist/npm` packs it.
#
# The tests use the first: installing trunk compiles ~400 crates (about 13 minutes on CI's
# 2 cores) for a build that is these few steps. Both read the same places (Trunk.toml's
# dist/public_url/filehash/inject_scripts settings and the data-trunk links), so a file added
# to www/ without its link is missing from both.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--trunk" ]; then
  shift
  command -v trunk >/dev/null || bash scripts/setup.sh --trunk
  export TRUNK_SKIP_VERSION_CHECK=true
  trunk build --release "$@"
  node npm/make.mjs dist
  ls -la dist dist/wasm
  exit 0
fi
JS_ONLY=0
if [ "${1:-}" = "--js-only" ]; then JS_ONLY=1; shift; fi
[ $# -eq 0 ] || { echo "build-web.sh: unknown argument $1 (only --trunk or --js-only)" >&2; exit 2; }
command -v node >/dev/null || { echo "build-web.sh: node is needed for the npm package (dist/npm): bash scripts/setup.sh installs it" >&2; exit 1; }
[ "$JS_ONLY" = 1 ] || command -v wasm-bindgen >/dev/null || bash scripts/setup.sh

HTML=www/index.html
# <link data-trunk rel="rust" ... data-target-name="sd_webgpu" data-bindgen-target="web" data-target-path="wasm" />
rust=$(grep -o '<link data-trunk rel="rust"[^>]*>' "$HTML")
attr() { printf '%s' "$1" | sed -n "s/.* $2=\"\([^\"]*\)\".*/\1/p"; }   # attr LINK NAME
target_name=$(attr "$rust" data-target-name) bindgen_target=$(attr "$rust" data-bindgen-target) target_path=$(attr "$rust" data-target-path)
[ -n "$target_name" ] && [ -n "$bindgen_target" ] && [ -n "$target_path" ] || {
  echo "build-web.sh: $HTML: the rust link lacks data-target-name / data-bindgen-target / data-target-path: $rust" >&2; exit 1; }
# trunk names the glue after the package (sd-webgpu.js); the worker imports ./wasm/sd-webgpu.js.
out_name=$(sed -n 's/^name = "\(.*\)"/\1/p' Cargo.toml | head -1)

if [ "$JS_ONLY" = 1 ]; then
  # dist/ again around the wasm and glue that are there.
  [ -f "dist/$target_path/${out_name}_bg.wasm" ] && [ -f "dist/$target_path/$out_name.js" ] || {
    echo "build-web.sh --js-only: dist/$target_path/ has no ${out_name}_bg.wasm / $out_name.js: run bash scripts/build-web.sh first" >&2; exit 1; }
  keep=$(mktemp -d)
  mv "dist/$target_path" "$keep/"
  rm -rf dist
  mkdir -p dist
  mv "$keep/$(basename "$target_path")" "dist/$target_path"
  rmdir "$keep"
else
  cargo build --release --target wasm32-unknown-unknown --lib
  rm -rf dist
  mkdir -p "dist/$target_path"
  wasm-bindgen "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/$target_name.wasm" \
    --target "$bindgen_target" --out-dir "dist/$target_path" --out-name "$out_name" --no-typescript
fi

# copy-file links: the file as it is; css links: the file, linked as a stylesheet; the rust
# link goes (inject_scripts = false: the worker loads the wasm).
while IFS= read -r line || [ -n "$line" ]; do
  while [[ "$line" =~ \<link\ data-trunk\ [^\>]*\> ]]; do
    link=${BASH_REMATCH[0]}
    rel=$(attr "$link" rel) href=$(attr "$link" href)
    case "$rel" in
      rust) repl="" ;;
      copy-file) cp "www/$href" "dist/$(basename "$href")"; repl="" ;;
      css) cp "www/$href" "dist/$(basename "$href")"; repl="<link rel=\"stylesheet\" href=\"./$(basename "$href")\"/>" ;;
      *) echo "build-web.sh: $HTML: data-trunk rel=\"$rel\" is not handled here (copy-file, css, rust): use --trunk" >&2; exit 1 ;;
    esac
    line=${line/"$link"/"$repl"}
  done
  printf '%s\n' "$line"
done <"$HTML" >dist/index.html
if grep -q 'data-trunk' dist/index.html; then
  echo "build-web.sh: dist/index.html still has data-trunk links:" >&2
  grep -n 'data-trunk' dist/index.html >&2
  exit 1
fi
node npm/make.mjs dist
ls -la dist "dist/$target_path"
