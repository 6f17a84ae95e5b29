#!/usr/bin/env bash
# Runs each fuzz target of the protocol core (fuzz/) for a bounded time, starting from the
# seeds made from the contract suite's cases (fuzz/seeds/). cargo-fuzz on the stable
# toolchain: `--sanitizer none` (the Rust core has no unsafe code for a sanitizer to watch;
# the fuzzers look for panics and broken invariants). A finding is saved under
# fuzz/artifacts/<target>/ and fails the run.
#   scripts/fuzz.sh            # 15 s a target, as the test command runs it
#   scripts/fuzz.sh 3600       # an hour a target
#   scripts/fuzz.sh 600 decide # one target
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-15}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(decide capped_body week bearer)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo fuzz build --sanitizer none -O >/dev/null 2>&1 || cargo fuzz build --sanitizer none -O
for target in "${targets[@]}"; do
  mkdir -p "$work/$target" "artifacts/$target"
  printf '==> fuzz %s for %ss: ' "$target" "$seconds"
  # The first directory gets what the run discovers (thrown away); the seeds are only read.
  if ! cargo fuzz run --sanitizer none -O "$target" "$work/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -artifact_prefix="artifacts/$target/" >"$work/$target.log" 2>&1; then
    echo "FAILED"
    tail -n 40 "$work/$target.log"
    echo "The input is in fuzz/artifacts/$target/; reproduce: cd fuzz && cargo fuzz run --sanitizer none $target <file>" >&2
    exit 1
  fi
  grep -E '^Done [0-9]+ runs' "$work/$target.log" || echo "done"
done
