#!/usr/bin/env bash
# The Goose harness (loadtest/) against the Rust Worker and the obvious TypeScript Worker
# (bench/reference-ts/ built with OBVIOUS=true: one KV put per ping), each under `wrangler
# dev` with its own local KV, as an operator would try either. Runs alternate between the
# two, at each number of users, and print a markdown table of the pings answered 204 a
# second and their p50 and p95 (the harness's own figures: every ping, and each kind).
# Expects the release bundle in build/ (scripts/build-worker.sh); builds the harness.
#   GOOSE_USERS="10 20" GOOSE_SECONDS=30 GOOSE_ROUNDS=2 scripts/goose-workers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${GOOSE_USERS:-10 20}
SECONDS_EACH=${GOOSE_SECONDS:-30}
ROUNDS=${GOOSE_ROUNDS:-2}
TOKEN=goose-bench-token-0123456789abcdef0123456789
work=$(mktemp -d)
servers=()
cleanup() {
  for pid in "${servers[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cargo build --release --quiet -p loadtest
node_modules/.bin/esbuild bench/reference-ts/index.ts --bundle --format=esm --minify \
  --target=es2022 --define:OBVIOUS=true --outfile="$work/obvious/index.js" --log-level=warning
cat >"$work/obvious/wrangler.toml" <<TOML
name = "obvious-ts"
main = "index.js"
compatibility_date = "2026-04-01"
[[kv_namespaces]]
binding = "SESSIONS"
id = "00000000000000000000000000000000"
TOML

# Starts `wrangler dev` with config $1 on a free port in its own process group (kept in
# `servers` for the cleanup), and sets `port` to it.
start() { # config persist-dir
  port=$(free_port)
  TELEMETRY_WORKER_PREBUILT=1 WRANGLER_SEND_METRICS=false setsid node_modules/.bin/wrangler dev \
    --config "$1" --ip 127.0.0.1 --port "$port" --inspector-port "$(free_port)" \
    --persist-to "$2" --env-file /dev/null --var "WAU_READ_TOKEN:$TOKEN" \
    --var ABUSE_LIMIT_PER_MINUTE:0 >"$2.log" 2>&1 </dev/null &
  servers+=($!)
  for _ in $(seq 600); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && return 0
    sleep 0.1
  done
  echo "wrangler dev ($1) did not start:" >&2
  cat "$2.log" >&2
  exit 1
}
start wrangler.toml "$work/rust"
rust_port=$port
start "$work/obvious/wrangler.toml" "$work/ts"
ts_port=$port

# One harness run: "pings-per-second p50 p95 new-p50 new-p95 unchanged-p50 unchanged-p95".
run() { # port users
  local out
  out=$(WAU_READ_TOKEN=$TOKEN target/release/loadtest --host "http://127.0.0.1:$1" \
    --users "$2" --increase-rate "$2" --run-time "${SECONDS_EACH}s" --no-print-metrics 2>&1 || true)
  grep -q "count check passed" <<<"$out" || { echo "the harness failed on port $1:" >&2; echo "$out" >&2; exit 1; }
  awk -v seconds="$SECONDS_EACH" '
    /^relay pings answered 204:/ { pings = $5 + $8 + $11 }
    /^204 latency, p50 \/ p95:/ {
      line = $0; sub(/^204 latency, p50 \/ p95: /, "", line); n = split(line, parts, ";")
      for (i = 1; i <= n; i++) { split(parts[i], w, " "); m = 0
        for (j = 1; j <= length(w); j++) if (w[j] ~ /^[0-9.]+$/) { v[++m] = w[j] }
        figures = figures " " v[1] " " v[2] }
    }
    END { printf "%.0f%s\n", pings / seconds, figures }' <<<"$out"
}
echo "| users | Worker | pings 204/s | every ping p50 / p95 | new session p50 / p95 | unchanged repeat p50 / p95 | upgrade p50 / p95 |"
echo "|---:|---|---:|---:|---:|---:|---:|"
for users in $USERS; do
  for round in $(seq "$ROUNDS"); do
    # Rounds alternate which Worker goes first, so that a drift of the machine favours neither.
    if ((round % 2)); then order="rust ts"; else order="ts rust"; fi
    for side in $order; do
      port_var=${side}_port
      figures=$(run "${!port_var}" "$users") || exit 1
      read -r rate p50 p95 n50 n95 u50 u95 g50 g95 <<<"$figures"
      name=$([ "$side" = rust ] && echo "Rust" || echo "obvious TypeScript")
      echo "| $users | $name | $rate | $p50 / $p95 ms | $n50 / $n95 ms | $u50 / $u95 ms | $g50 / $g95 ms |"
    done
  done
done
