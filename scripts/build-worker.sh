#!/bin/sh
# wrangler's build command: compiles the Worker with worker-build and shrinks it with
# wasm-opt. worker-build downloads wasm-bindgen, esbuild and wasm-opt unless told where they
# are; where they are installed locally (scripts/setup.sh does that), point it at them, so the
# build needs no download.
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
# worker-build's own wasm-opt step keeps the names section (it passes --debuginfo), which
# is a fifth of the module; this script runs wasm-opt itself instead, from the npm package
# binaryen pinned in package-lock.json (Debian's is too old for this compiler's output).
worker-build --profile worker --no-opt
wasm_opt=${WASM_OPT_BIN:-node_modules/.bin/wasm-opt}
if [ ! -x "$wasm_opt" ]; then
  # The shipped bundle and the one the tests run are the optimised one, or none at all.
  echo "build-worker: no wasm-opt at $wasm_opt: run scripts/setup.sh (or npm ci)" >&2
  exit 1
fi
# The features the module uses, named one by one: workerd refuses what --all-features emits.
"$wasm_opt" build/index_bg.wasm -o build/index_bg.wasm -Oz --strip-debug --strip-producers \
  --enable-mutable-globals --enable-sign-ext --enable-nontrapping-float-to-int \
  --enable-bulk-memory --enable-multivalue --enable-reference-types --enable-exception-handling
