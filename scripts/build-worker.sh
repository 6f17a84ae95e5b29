#!/bin/sh
# wrangler's build command: compiles the Worker with worker-build. worker-build downloads
# wasm-bindgen, esbuild and wasm-opt unless told where they are; where they are installed
# locally (scripts/setup.sh does that), point it at them, so the build needs no download.
set -eu
cd "$(dirname "$0")/.."

# The tests build once, then start several `wrangler dev`s that must not rebuild at once.
if [ "${TELEMETRY_WORKER_PREBUILT:-}" = 1 ] && [ -f build/index.js ]; then
  exit 0
fi

wanted=$(sed -n '/^name = "wasm-bindgen"$/{n;s/^version = "\(.*\)"$/\1/p;}' Cargo.lock)
if [ -z "${WASM_BINDGEN_BIN:-}" ] && command -v wasm-bindgen >/dev/null 2>&1 &&
  [ "$(wasm-bindgen --version | cut -d' ' -f2)" = "$wanted" ]; then
  WASM_BINDGEN_BIN=$(command -v wasm-bindgen)
  export WASM_BINDGEN_BIN
fi
if [ -z "${ESBUILD_BIN:-}" ] && [ -x node_modules/.bin/esbuild ]; then
  ESBUILD_BIN="$PWD/node_modules/.bin/esbuild"
  export ESBUILD_BIN
fi
opt=""
if [ -z "${WASM_OPT_BIN:-}" ]; then
  # Without a wasm-opt of our own, skip the step rather than download one.
  opt="--no-opt"
fi
exec worker-build --release $opt
