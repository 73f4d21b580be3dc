#!/usr/bin/env bash
# The npm package in its users' tools (tests/consumers/run.mjs): packs dist/npm, installs the
# tarball into a Vite app, a webpack app and a TypeScript app (tool versions pinned by their
# package-lock.json files, npm ci), type-checks the d.ts (tsc --noEmit, strict), builds the
# apps, and generates the golden DDIM case in Chromium through the Vite dev server, the Vite
# build and the webpack build (vs diffusers' image), plus load({ assetBase }) same-origin and
# cross-origin.
#
#   bash scripts/consumers.sh     builds dist/ first when dist/npm is missing
# Environment: SKIP_WEB_BUILD=1 never builds; CONSUMERS_ONLY=ts,vite-dev,vite-build,webpack;
# CHROMIUM=path another browser binary.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f dist/npm/package.json ] && [ "${SKIP_WEB_BUILD:-0}" != 1 ]; then
  bash scripts/build-web.sh
fi
if [ ! -d tests/e2e/node_modules/playwright-core ]; then
  npm ci --prefix tests/e2e --no-audit --no-fund
fi
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  XDG_RUNTIME_DIR="$(mktemp -d)"
  export XDG_RUNTIME_DIR
fi
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
exec node tests/consumers/run.mjs
