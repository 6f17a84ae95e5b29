#!/usr/bin/env bash
# Runs the Worker locally: `wrangler dev` with local KV (kept in .wrangler/) and development
# tokens from .dev.vars. On first run .dev.vars is made with two new random tokens (the read
# token and the admin token, 48 characters each, as the service requires at least 32); a
# .dev.vars from before, whose token is missing or short, gets a new one for it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
new_token() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
if [ ! -f .dev.vars ]; then
  (umask 077 && {
    echo "# Made by scripts/dev.sh for this checkout only (git-ignored); see .dev.vars.example."
    echo "WAU_READ_TOKEN=$(new_token)"
    echo "ADMIN_TOKEN=$(new_token)"
  } >.dev.vars)
  echo "==> created .dev.vars with new development tokens (WAU_READ_TOKEN, ADMIN_TOKEN)"
fi
for name in WAU_READ_TOKEN ADMIN_TOKEN; do
  value=$(sed -n "s/^$name=//p" .dev.vars | tail -n 1)
  if [ "${#value}" -lt 32 ]; then
    # Without `sed -i`, which BSD and GNU sed spell differently.
    grep -v "^$name=" .dev.vars >.dev.vars.new || true
    echo "$name=$(new_token)" >>.dev.vars.new
    mv .dev.vars.new .dev.vars
    echo "==> .dev.vars: a new $name (it was missing or shorter than 32 characters)"
  fi
done
export WRANGLER_SEND_METRICS=false
exec node_modules/.bin/wrangler dev --ip 127.0.0.1 --port "${PORT:-8787}" "$@"
