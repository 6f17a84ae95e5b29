#!/usr/bin/env bash
# The Rust Worker beside two TypeScript Workers of the same contract (bench/reference-ts/):
# the reference, which reads a ping's record before it writes, and the obvious design, one KV
# put per ping. All three are served from one workerd through Miniflare's API
# (bench/workers.mjs, no dev proxy): rounds of wrk runs per load, one run per Worker in an
# order that rotates, Rust ÷ each of the median round, the storage operations each makes
# per request (bench/count-ops.mjs), cold start and bundle sizes (markdown).
# Expects the release bundle in build/ and wrk on the PATH (scripts/bench.sh sees to both).
# To compare other builds: BENCH_RUST_DIR=dir (another scripts/build-worker.sh output; with
# BENCH_NO_COUNTS=1, also one whose default export is not a `{ fetch }` object, as
# worker-build's), BENCH_TS_OVERRIDE=file (another TypeScript Worker in place of the obvious
# one, bundled as one ES module with a default export). BENCH_LOADS="healthz new" runs only
# those loads.
set -euo pipefail
cd "$(dirname "$0")/.."
# Without wrk every run would print no figures rather than fail.
for tool in wrk node python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench-workers: no $tool on the PATH (scripts/bench.sh installs wrk)" >&2; exit 1; }
done
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
# CPU ticks (1/100 s) the served Workers' processes (bench/workers.mjs's group) have used.
ticks() {
  local total=0 pid stat
  for pid in $(pgrep -g "$server"); do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    stat=${stat##*) }
    read -r -a fields <<<"$stat"
    total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}
# Seconds from now until the Workers go idle (under 10% of a core for 200 ms): the work a
# load left in `waitUntil` after its answers, which the next run would otherwise pay for.
drain() {
  local started before after now
  started=$(date +%s%N)
  before=$(ticks)
  while sleep 0.2; do
    after=$(ticks)
    now=$(date +%s%N)
    ((after - before <= 2)) && break
    before=$after
  done
  awk -v ns=$((now - started)) 'BEGIN { s = ns / 1e9 - 0.2; printf "%.3f\n", (s > 0 ? s : 0) }'
}
# Requests per second of one wrk run, all statuses (the refused load is all 400s), counting
# the time the Workers took afterwards to finish the run's `waitUntil` work: a ping whose
# write is still queued has not been kept yet, so a Worker cannot win by answering first.
rps() { # port script
  local run drained
  run=$(wrk -t1 -c"$CONNECTIONS" -d"${PAIR_SECONDS}s" -s "$2" "http://127.0.0.1:$1" |
    awk '/ requests in / { requests = $1; seconds = $4 + 0 } END { print requests, seconds }')
  drained=$(drain)
  # BENCH_DEBUG=1: every run on stderr, to see the spread and the drains.
  [ -n "${BENCH_DEBUG:-}" ] && echo "$2 on $1: $run s, drained in $drained s" >&2
  awk -v run="$run" -v drained="$drained" \
    'BEGIN { split(run, r, " "); printf "%.0f\n", r[1] / (r[2] + drained) }'
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

for mode in reference obvious; do
  node_modules/.bin/esbuild bench/reference-ts/index.ts --bundle --format=esm --minify \
    --target=es2022 --define:OBVIOUS=$([ $mode = obvious ] && echo true || echo false) \
    --outfile="$work/$mode.js" --log-level=warning
done
export BENCH_TS_BUNDLE=$work/reference.js
export BENCH_OBVIOUS_BUNDLE=${BENCH_TS_OVERRIDE:-$work/obvious.js}
rust_port=$(free_port)
ts_port=$(free_port)
obvious_port=$(free_port)
BENCH_SEED_SESSIONS=$SEEDED serve "rust=$rust_port" "ts=$ts_port" "obvious=$obvious_port"
# Last week, as bench/workers.mjs seeds it (a week past the retention is answered unread).
export READOUT_PATH=/v1/wau/$(date -u -d "-7 days" +%G-W%V) READOUT_TOKEN=$TOKEN
# BENCH_LOADS=latency: one readout at a time, alternating sides, the median of 11 each. For a
# week so large that a TypeScript readout outlasts a wrk run (its requests would still be in
# flight in the shared workerd when the next run starts).
if [[ " ${BENCH_LOADS:-} " == *" latency "* ]]; then
  echo "| load | Rust | reference | obvious | Rust ÷ reference | Rust ÷ obvious |"
  echo "|---|---:|---:|---:|---:|---:|"
  took() { curl -s -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$1$READOUT_PATH"; }
  times=$(for _ in $(seq 11); do echo "$(took "$rust_port") $(took "$ts_port") $(took "$obvious_port")"; done)
  median_ms() { cut -d' ' -f"$1" <<<"$times" | sort -n | sed -n 6p | awk '{ printf "%.1f", $1 * 1000 }'; }
  rust_ms=$(median_ms 1) ts_ms=$(median_ms 2) obvious_ms=$(median_ms 3)
  echo "| readout of a week of $SEEDED sessions, one at a time (median of 11) | $rust_ms ms | $ts_ms ms | $obvious_ms ms |" \
    "$(awk -v r="$rust_ms" -v t="$ts_ms" 'BEGIN { printf "%.3f", r / t }') (time) |" \
    "$(awk -v r="$rust_ms" -v t="$obvious_ms" 'BEGIN { printf "%.3f", r / t }') (time) |"
  stop
  exit 0
fi
echo "| load | Rust req/s | reference req/s | obvious req/s | Rust ÷ reference, median round (middle half) | Rust ÷ obvious, median round (middle half) |"
echo "|---|---:|---:|---:|---:|---:|"
# The median and the middle half of a column of ratios, as "**m** (low–high)".
spread() {
  local sorted
  sorted=$(sort -n)
  echo "**$(sed -n "$(((ROUNDS + 1) / 2))p" <<<"$sorted")** ($(sed -n "$(((ROUNDS + 3) / 4))p" <<<"$sorted")–$(sed -n "$((ROUNDS - (ROUNDS + 3) / 4 + 1))p" <<<"$sorted"))"
}
ROUNDS=$PAIRS
for load in "healthz:/healthz" "rejected:refused pings (400, unknown field)" \
  "ping:new sessions (every ping a new session)" "unchanged:unchanged repeats" \
  "changed:changed repeats (each ping flips the daemon version)" \
  "mix:realistic mix (per 70 pings: 10 new, 59 unchanged, 1 upgrade)" \
  "readout:readout of a week of $SEEDED sessions"; do
  name=${load%%:*}
  wanted=${BENCH_LOADS:-healthz rejected new unchanged changed mix readout}
  [[ " $wanted " == *" ${name/ping/new} "* ]] || continue
  script="bench/$name.lua"
  # A warm-up run per Worker, not counted: the JIT, and the repeats' sessions made known.
  for port in "$rust_port" "$ts_port" "$obvious_port"; do PAIR_SECONDS=1 rps "$port" "$script" >/dev/null; done
  # Each round runs the three in an order that rotates, so that a drift of the machine
  # favours none; the round with the median ratio gives the req/s columns.
  rounds=$(for round in $(seq "$ROUNDS"); do
    declare -A got=()
    order=(rust ts obvious)
    for step in 0 1 2; do
      side=${order[$(((round + step) % 3))]}
      port_var=${side}_port
      got[$side]=$(rps "${!port_var}" "$script")
    done
    awk -v r="${got[rust]}" -v t="${got[ts]}" -v o="${got[obvious]}" \
      'BEGIN { printf "%.2f %.2f %d %d %d\n", r / t, r / o, r, t, o }'
  done)
  by_obvious=$(sort -n -k2 <<<"$rounds")
  read -r _ _ rust ts obvious <<<"$(sed -n "$(((ROUNDS + 1) / 2))p" <<<"$by_obvious")"
  echo "| ${load#*:} | $rust | $ts | $obvious | $(cut -d' ' -f1 <<<"$rounds" | spread) | $(cut -d' ' -f2 <<<"$rounds" | spread) |"
done
stop

echo
echo "Storage operations per request, counted by wrapping each Worker's bindings (bench/count-ops.mjs):"
echo
[ -n "${BENCH_NO_COUNTS:-}" ] || node bench/count-ops.mjs "$work/count-state"
echo

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
times=$(for _ in 1 2 3 4 5; do echo "$(cold rust) $(cold ts) $(cold obvious)"; done)
cold_ms() { cut -d' ' -f"$1" <<<"$times" | sort -n | sed -n 3p; }
rust_cold=$(cold_ms 1) ts_cold=$(cold_ms 2) obvious_cold=$(cold_ms 3)
echo "| cold start, process start to first 204 (median of 5) | Rust | reference | obvious | Rust ÷ reference | Rust ÷ obvious |"
echo "|---|---:|---:|---:|---:|---:|"
echo "| time (lower is better) | $rust_cold ms | $ts_cold ms | $obvious_cold ms |" \
  "$(awk -v r="$rust_cold" -v t="$ts_cold" 'BEGIN { printf "%.2f", r / t }') |" \
  "$(awk -v r="$rust_cold" -v t="$obvious_cold" 'BEGIN { printf "%.2f", r / t }') |"
echo
echo "Bundles: Rust \`index_bg.wasm\` $(stat -c %s build/index_bg.wasm) bytes raw," \
  "$(gzip -9 -c build/index_bg.wasm | wc -c) gzipped, plus \`index.js\` $(stat -c %s build/index.js) bytes" \
  "($(gzip -9 -c build/index.js | wc -c) gzipped); TypeScript with zod $(stat -c %s "$work/reference.js") bytes" \
  "($(gzip -9 -c "$work/reference.js" | wc -c) gzipped), the obvious one $(stat -c %s "$BENCH_OBVIOUS_BUNDLE") bytes" \
  "($(gzip -9 -c "$BENCH_OBVIOUS_BUNDLE" | wc -c) gzipped)."
