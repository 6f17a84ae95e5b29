#!/usr/bin/env bash
# Runs the Worker locally: `wrangler dev` with local KV (kept in .wrangler/) and the
# development token from .dev.vars, which is copied from .dev.vars.example on first run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ ! -f .dev.vars ]; then
  cp .dev.vars.example .dev.vars
  echo "==> created .dev.vars from .dev.vars.example (development token: see that file)"
fi
export WRANGLER_SEND_METRICS=false
exec node_modules/.bin/wrangler dev --ip 127.0.0.1 --port "${PORT:-8787}" "$@"
