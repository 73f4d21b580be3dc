#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian 12 machine, skipping what is there:
# Mesa lavapipe (Vulkan on the CPU), Debian's Chromium + chromedriver (WebGPU on
# SwiftShader), the wasm32 target, wasm-pack and wasm-bindgen-cli pinned to Cargo.lock.
# Nothing downloads prebuilt binaries. Pass --trunk to also install trunk (for the app).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_apt=()
[ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || [ -n "$(ls /usr/share/vulkan/icd.d/lvp_icd*.json 2>/dev/null)" ] || need_apt+=(mesa-vulkan-drivers)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

# wasm-bindgen-cli must equal the wasm-bindgen in Cargo.lock exactly.
WB=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WB" ]; then
  echo "setup: cargo install wasm-bindgen-cli $WB (a few minutes)"
  # Not --locked: one locked dependency is missing from the registry mirror.
  cargo install wasm-bindgen-cli --version "=$WB" --force
fi
if [ "$(wasm-pack --version 2>/dev/null | awk '{print $2}')" != "0.15.1" ]; then
  echo "setup: cargo install wasm-pack 0.15.1 (a few minutes)"
  cargo install wasm-pack --version 0.15.1 --locked --force
fi
if [ "${1:-}" = "--trunk" ] && [ "$(trunk --version 2>/dev/null | awk '{print $2}')" != "0.21.14" ]; then
  echo "setup: cargo install trunk 0.21.14 (about 13 minutes on 2 cores)"
  cargo install trunk --version 0.21.14 --locked --force
fi
