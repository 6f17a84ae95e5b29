#!/bin/sh
# wrangler's build command: compiles the Worker to wasm32, makes its JavaScript bindings with
# wasm-bindgen, shrinks the module with wasm-opt and bundles src/entry.js around the bindings
# with esbuild, into build/index.js and build/index_bg.wasm. Every tool is a local install
# (scripts/setup.sh): nothing is downloaded.
#
# These are worker-build's steps, with the entry module ours: worker-build's makes a
# `WorkerEntrypoint` per request behind two proxies, a fifth of /healthz (src/entry.js).
#
# TELEMETRY_WORKER_OUT=dir and TELEMETRY_WORKER_FEATURES=list build another bundle into dir
# (tests/recovery.mjs's, with `recovery-check`); never build two at once, as they share
# cargo's output.
set -eu
cd "$(dirname "$0")/.."

# The tests build once, then start several `wrangler dev`s that must not rebuild at once.
out=${TELEMETRY_WORKER_OUT:-build}
if [ "${TELEMETRY_WORKER_PREBUILT:-}" = 1 ] && [ -f "$out/index.js" ]; then
  exit 0
fi

fail() {
  echo "build-worker: $*" >&2
  exit 1
}
# The recovery check's panic route must never reach the bundle that wrangler serves and ships.
case " ${TELEMETRY_WORKER_FEATURES:-} " in
*recovery-check*) [ "$out" != build ] || fail "recovery-check builds go elsewhere (TELEMETRY_WORKER_OUT), never into build/" ;;
esac

wanted=$(sed -n '/^name = "wasm-bindgen"$/{n;s/^version = "\(.*\)"$/\1/p;}' Cargo.lock)
bindgen=${WASM_BINDGEN_BIN:-wasm-bindgen}
if [ "$("$bindgen" --version 2>/dev/null | cut -d' ' -f2)" != "$wanted" ]; then
  fail "no wasm-bindgen $wanted (Cargo.lock's) at $bindgen: run scripts/setup.sh"
fi
esbuild=${ESBUILD_BIN:-node_modules/.bin/esbuild}
wasm_opt=${WASM_OPT_BIN:-node_modules/.bin/wasm-opt}
for tool in "$esbuild" "$wasm_opt"; do
  [ -x "$tool" ] || fail "no $tool: run scripts/setup.sh (or npm ci)"
done

# The worker crate's macros expand for js_sys's futures when told so, as worker-build tells
# them; `--lib`, the `worker` profile of Cargo.toml (the core optimised for size).
WASM_BINDGEN_USE_JS_SYS=1 cargo build --lib --profile worker --target wasm32-unknown-unknown \
  --features "${TELEMETRY_WORKER_FEATURES:-}"
# Where cargo put it, wherever its target directory is configured to be.
target_dir=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
compiled=$target_dir/wasm32-unknown-unknown/worker/telemetry_worker.wasm
[ -f "$compiled" ] || fail "cargo left no $compiled"

# The bindings as an ES module that imports its wasm, with the reset function and the abort
# handler that src/entry.js's recovery calls, then the optimised module and the bundle, all
# made in a staging directory and moved into the output together once every step has passed.
glue=$target_dir/worker-glue
rm -rf "$glue"
"$bindgen" "$compiled" --out-dir "$glue" --out-name index --target module --no-typescript \
  --experimental-reset-state-function --force-enable-abort-handler

# The features the module uses, named one by one: workerd refuses what --all-features emits.
# No names section, no producers: a fifth of the module, and nothing the runtime reads.
"$wasm_opt" "$glue/index_bg.wasm" -o "$glue/optimised.wasm" -Oz --strip-debug --strip-producers \
  --enable-mutable-globals --enable-sign-ext --enable-nontrapping-float-to-int \
  --enable-bulk-memory --enable-multivalue --enable-reference-types --enable-exception-handling

# The entry names the module's handlers and classes one by one: one that the Rust side
# exports and the entry does not would build and never run.
for handler in $(sed -n 's/^export function \([A-Za-z_]*\).*/\1/p' "$glue/index.js"); do
  case $handler in
  __wbg_reset_state | __worker_init_state) ;;
  *) grep -q "wasm\.$handler(" src/entry.js || fail "src/entry.js does not call the module's $handler" ;;
  esac
done
# And the classes this crate defines (the workers-rs crate's own, unused here, are left out).
for class in $(sed -n 's/^export class \([A-Za-z_]*\).*/\1/p' "$glue/index.js"); do
  if grep -q "^pub struct $class\b" src/*.rs; then
    grep -q "^export class $class\b" src/entry.js || fail "src/entry.js does not export the class $class"
  fi
done

cp src/entry.js "$glue/entry.js"
"$esbuild" "$glue/entry.js" --bundle --format=esm --minify --log-level=warning \
  --external:./index_bg.wasm '--external:cloudflare:*' --outfile="$glue/bundle.js"
# wasm-bindgen imports the module in the source phase (`import source`), which workerd's
# module loader takes as a plain import of a compiled module.
sed 's/import source /import /' "$glue/bundle.js" >"$glue/index.bundle.js"
grep -q 'import source' "$glue/index.bundle.js" && fail "the bundle still imports a module's source"
grep -q 'index_bg.wasm' "$glue/index.bundle.js" || fail "the bundle does not import index_bg.wasm"

mkdir -p "$out"
rm -rf "$out/worker" "$out/snippets" "$out/package.json"
mv "$glue/optimised.wasm" "$out/index_bg.wasm"
mv "$glue/index.bundle.js" "$out/index.js"
