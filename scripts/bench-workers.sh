#!/usr/bin/env bash
# The Rust Worker beside the TypeScript yardstick (bench/reference-ts/), both served from one
# workerd through Miniflare's API (bench/workers.mjs, no dev proxy): interleaved pairs of wrk
# runs per load, Rust ÷ TypeScript of the median pair, cold start and bundle sizes (markdown).
# Expects the release bundle in build/ and wrk on the PATH (scripts/bench.sh sees to both).
# To compare other builds: BENCH_RUST_DIR=dir (worker-build's output), BENCH_TS_OVERRIDE=file
# (another TypeScript Worker, bundled as one ES module with a default export).
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${BENCH_WORKER_PAIRS:-7}
PAIR_SECONDS=${BENCH_PAIR_SECONDS:-3}
CONNECTIONS=${BENCH_WORKER_CONNECTIONS:-16}
SEEDED=${BENCH_SEED_SESSIONS:-10000}
TOKEN=bench-token-0123456789abcdef0123456789
work=$(mktemp -d)
server=
cleanup() {
  [ -n "$server" ] && { kill -- "-$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Answers per second of one wrk run, all statuses (the refused load is all 400s).
rps() { # port script
  wrk -t1 -c"$CONNECTIONS" -d"${PAIR_SECONDS}s" -s "$2" "http://127.0.0.1:$1" |
    awk '/ requests in / { requests = $1; seconds = $4 + 0 } END { printf "%.0f\n", requests / seconds }'
}
# Starts bench/workers.mjs in its own process group and waits for it to print "ready".
serve() { # worker=port ...
  : >"$work/out"
  BENCH_TOKEN=$TOKEN setsid node bench/workers.mjs "$work/state" "$@" >"$work/out" 2>"$work/err" &
  server=$!
  # Seeding takes its time: up to about 10 s per 1,000 sessions here, on top of the start.
  for _ in $(seq 1 $((1500 + SEEDED / 10))); do
    grep -q ready "$work/out" && return 0
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench/workers.mjs did not start:" >&2
  cat "$work/err" >&2
  exit 1
}
stop() { kill -- "-$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; server=; }

node_modules/.bin/esbuild bench/reference-ts/index.ts --bundle --format=esm --minify \
  --target=es2022 --outfile="$work/reference.js" --log-level=warning
export BENCH_TS_BUNDLE=${BENCH_TS_OVERRIDE:-$work/reference.js}
rust_port=$(free_port)
ts_port=$(free_port)
if [[ "${BENCH_LOADS:-}" == latency ]]; then
  echo "| load | Rust | TypeScript | Rust ÷ TypeScript |"
else
  echo "| load | Rust req/s | TypeScript req/s | Rust ÷ TypeScript, median pair (middle half) |"
fi
echo "|---|---:|---:|---:|"
BENCH_SEED_SESSIONS=$SEEDED serve "rust=$rust_port" "ts=$ts_port"
# Last week, as bench/workers.mjs seeds it (a week past the retention is answered unread).
export READOUT_PATH=/v1/wau/$(date -u -d "-7 days" +%G-W%V) READOUT_TOKEN=$TOKEN
# BENCH_LOADS=latency: one readout at a time, alternating sides, the median of 11 each. For a
# week so large that the yardstick's readout outlasts a wrk run (its requests would still be
# in flight in the shared workerd when the other side's run starts).
if [[ " ${BENCH_LOADS:-} " == *" latency "* ]]; then
  took() { curl -s -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$1$READOUT_PATH"; }
  times=$(for _ in $(seq 11); do echo "$(took "$rust_port") $(took "$ts_port")"; done)
  rust_ms=$(cut -d' ' -f1 <<<"$times" | sort -n | sed -n 6p | awk '{ printf "%.1f", $1 * 1000 }')
  ts_ms=$(cut -d' ' -f2 <<<"$times" | sort -n | sed -n 6p | awk '{ printf "%.1f", $1 * 1000 }')
  echo "| readout of a week of $SEEDED sessions, one at a time (median of 11) | $rust_ms ms | $ts_ms ms | $(awk -v r="$rust_ms" -v t="$ts_ms" 'BEGIN { printf "%.3f (time, lower is better)", r / t }') |"
fi
for load in "healthz:/healthz" "ping:valid pings (KV put in waitUntil)" \
  "rejected:refused pings (400, unknown field)" "readout:readout of a week of $SEEDED sessions"; do
  # BENCH_LOADS="healthz rejected" runs only those (for a quick A/B while changing one thing).
  [[ " ${BENCH_LOADS:-healthz ping rejected readout} " == *" ${load%%:*} "* ]] || continue
  script="bench/${load%%:*}.lua"
  # Pairs alternate which side runs first, so that a drift of the machine favours neither.
  pairs=$(for pair in $(seq "$PAIRS"); do
    if ((pair % 2)); then
      rust=$(rps "$rust_port" "$script"); ts=$(rps "$ts_port" "$script")
    else
      ts=$(rps "$ts_port" "$script"); rust=$(rps "$rust_port" "$script")
    fi
    awk -v r="$rust" -v t="$ts" 'BEGIN { printf "%.2f %d %d\n", r / t, r, t }'
  done | sort -n)
  read -r ratio rust ts <<<"$(sed -n "$(((PAIRS + 1) / 2))p" <<<"$pairs")"
  low=$(sed -n "$(((PAIRS + 3) / 4))p" <<<"$pairs" | cut -d' ' -f1)
  high=$(sed -n "$((PAIRS - (PAIRS + 3) / 4 + 1))p" <<<"$pairs" | cut -d' ' -f1)
  echo "| ${load#*:} | $rust | $ts | **$ratio** ($low–$high) |"
done
stop

[ -n "${BENCH_NO_COLD_START:-}" ] && exit 0
# Cold start: from starting workerd with one Worker to its first 204, alternating, median of 5.
ping='{"protocol_version":"1.0.0","daemon_version":"0.9.3","session_id":"cold-start-1","platform":"linux","node_version":"v20.11.1","primary_framework":"react"}'
cold() { # worker
  local port started
  port=$(free_port)
  started=$(date +%s%N)
  BENCH_SEED_SESSIONS=0 serve "$1=$port"
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    -d "$ping" "http://127.0.0.1:$port/v1/session")" = 204 ]; do sleep 0.01; done
  echo $((($(date +%s%N) - started) / 1000000))
  stop
}
times=$(for _ in 1 2 3 4 5; do echo "$(cold rust) $(cold ts)"; done)
rust_cold=$(cut -d' ' -f1 <<<"$times" | sort -n | sed -n 3p)
ts_cold=$(cut -d' ' -f2 <<<"$times" | sort -n | sed -n 3p)
echo "| cold start, process start to first 204 (median of 5) | $rust_cold ms | $ts_cold ms | $(awk -v r="$rust_cold" -v t="$ts_cold" 'BEGIN { printf "%.2f (time, lower is better)", r / t }') |"

echo
echo "Bundles: Rust \`index_bg.wasm\` $(stat -c %s build/index_bg.wasm) bytes raw," \
  "$(gzip -9 -c build/index_bg.wasm | wc -c) gzipped, plus \`index.js\` $(stat -c %s build/index.js) bytes" \
  "($(gzip -9 -c build/index.js | wc -c) gzipped); TypeScript with zod $(stat -c %s "$work/reference.js") bytes" \
  "($(gzip -9 -c "$work/reference.js" | wc -c) gzipped)."
