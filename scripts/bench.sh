#!/usr/bin/env bash
# Measures the service side by side in one run on this machine and prints ratios (markdown):
# core criterion benchmarks, the rollback's valid-ping throughput against its own /healthz
# (SQLite and Redis), the readouts' time as a week grows on both stores, the Worker beside a
# TypeScript Worker of the same contract (scripts/bench-workers.sh: ratios, cold start, sizes),
# and the Worker's readout beside the yardstick's as a week grows (1,000 to 100,000 sessions).
# Load comes from wrk (Debian's package) on loopback; every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "wrk is missing: sudo apt-get install wrk" >&2
    exit 1
  fi
fi
export WRANGLER_SEND_METRICS=false
SECONDS_EACH=${BENCH_SECONDS:-10}
# The rollback's ratio comes from many short alternating pairs: on a shared machine a pair's
# ratio can move by ±0.07 from one to the next, so three long pairs gave a shaky median.
PAIRS=${BENCH_PAIRS:-11}
PAIR_SECONDS=${BENCH_PAIR_SECONDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
TOKEN=bench-token-0123456789abcdef0123456789
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 600); do curl -s -o /dev/null "$1" && return 0; sleep 0.2; done; echo "no answer from $1" >&2; exit 1; }
# From one wrk run: 2xx answers per second (a 503 from a full queue is not throughput), all
# answers per second, and how many were not 2xx.
rps() { # url script [seconds]
  wrk -t1 -c"$CONNECTIONS" -d"${3:-$SECONDS_EACH}s" ${2:+-s "$2"} "$1" | awk '
    / requests in / { requests = $1; seconds = $4 + 0; if ($4 ~ /m,$/) seconds *= 60 }
    /Non-2xx or 3xx responses:/ { other = $NF }
    END { printf "%.0f %.0f %d\n", (requests - other) / seconds, requests / seconds, other }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "## Run of $(date -u +%FT%TZ) on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m)"
echo
echo "### Core (criterion, median)"
echo
# Criterion prints a benchmark's name on its own line, or before "time:" when it is short.
cargo bench -q -p telemetry-core --bench decide -- --warm-up-time 1 --measurement-time 3 2>/dev/null |
  awk '/time:/ { name=$0; sub(/ *time:.*/, "", name); if (name == "") name=last;
                 print "- " name ": " $(NF-3) " " $(NF-2) }
       !/time:/ && NF { last=$0 }'

cargo build -q --release --locked -p rollback --bin rollback --example readout_growth
echo
echo "### Rollback: valid pings per second as a fraction of its own /healthz (wrk, $PAIRS alternating pairs of ${PAIR_SECONDS}s runs, $CONNECTIONS connections)"
echo
echo "| store | /healthz req/s | valid pings 204/s | ratio of the median pair (middle half of the pairs) | pings not answered 204 |"
echo "|---|---:|---:|---:|---:|"
redis_port=$(free_port)
setsid redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly yes --dir "$work" >/dev/null 2>&1 &
pids+=($!)
sleep 0.5
for store in "sqlite://$work/bench.db" "redis://127.0.0.1:$redis_port/0"; do
  port=$(free_port)
  WAU_READ_TOKEN=$TOKEN ABUSE_LIMIT_PER_MINUTE=0 setsid target/release/rollback \
    --listen "127.0.0.1:$port" --store "$store" >/dev/null 2>&1 &
  pid=$!
  wait_for "http://127.0.0.1:$port/healthz"
  # Alternating pairs, each /healthz then pings: report the median pair and the quartiles.
  pairs=$(for _ in $(seq "$PAIRS"); do
    read -r health _ _ <<<"$(rps "http://127.0.0.1:$port" bench/healthz.lua "$PAIR_SECONDS")"
    read -r pings _ refused <<<"$(rps "http://127.0.0.1:$port" bench/ping.lua "$PAIR_SECONDS")"
    echo "$(ratio "$pings" "$health") $health $pings $refused"
  done | sort -n)
  read -r median_ratio health pings _ <<<"$(sed -n "$(((PAIRS + 1) / 2))p" <<<"$pairs")"
  low=$(sed -n "$(((PAIRS + 3) / 4))p" <<<"$pairs" | cut -d' ' -f1)
  high=$(sed -n "$((PAIRS - (PAIRS + 3) / 4 + 1))p" <<<"$pairs" | cut -d' ' -f1)
  refused=$(awk '{sum += $4} END {print sum}' <<<"$pairs")
  echo "| ${store%%:*} | $health | $pings | $median_ratio ($low–$high) | $refused |"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

echo
echo "### Writes and readout as a week grows (rollback stores, batches of 1,000 like the writer's)"
for store in "sqlite://$work/growth.db" "redis://127.0.0.1:$redis_port/1"; do
  echo
  echo "${store%%:*}:"
  echo
  target/release/examples/readout_growth "$store"
done

echo
echo "### The Rust Worker beside the TypeScript yardstick (one workerd through Miniflare's API, wrk -c${BENCH_WORKER_CONNECTIONS:-16}, ${BENCH_WORKER_PAIRS:-7} interleaved pairs of ${BENCH_PAIR_SECONDS:-3}s runs)"
echo
sh scripts/build-worker.sh >/dev/null 2>&1
scripts/bench-workers.sh

echo
echo "### The Worker's readout as a week grows, beside the TypeScript yardstick's list-and-count (same runs as above, readout only)"
echo
echo "The Rust Worker asks the week's Durable Object (one request, a few rows); the yardstick lists"
echo "the week's KV keys, 1,000 a call. Seeded through bench/workers.mjs (KV, and the week's object"
echo "through the request the Worker makes for a new session)."
for seeded in 1000 10000; do
  echo
  BENCH_LOADS=readout BENCH_SEED_SESSIONS=$seeded BENCH_NO_COLD_START=1 scripts/bench-workers.sh
done
# At 100,000 the yardstick's readout (100 KV lists) outlasts a wrk run: one at a time instead.
echo
BENCH_LOADS=latency BENCH_SEED_SESSIONS=100000 BENCH_NO_COLD_START=1 scripts/bench-workers.sh
