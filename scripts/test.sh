#!/usr/bin/env bash
# Runs every check and test: formatting, clippy on the host and on wasm32, then the unit,
# property and contract tests (the Worker in real workerd with its local KV), then each fuzz
# target of the core for a short while.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export WRANGLER_SEND_METRICS=false
# A clean CI build gains nothing from incremental caches, which are a large share of target/.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy (host)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo clippy (wasm32: the code that runs in the Worker)"
# Test targets are host-only: proptest needs the OS's randomness, which wasm32 lacks.
cargo clippy -p telemetry-core -p telemetry-worker --lib --locked --target wasm32-unknown-unknown -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked
echo "==> fuzz the core (15 s a target; scripts/fuzz.sh 3600 for a long run)"
(cd fuzz && cargo fmt -- --check)
scripts/fuzz.sh 15
