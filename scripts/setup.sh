#!/usr/bin/env bash
# Installs what building, running and testing need, and skips what is already there:
# the wasm32 target, wasm-bindgen-cli at the version in Cargo.lock, cargo-fuzz,
# the npm packages (wrangler, workerd, esbuild) from package-lock.json, and redis-server,
# openssl and caddy (Debian's packages) for the rollback's Redis and proxy tests, chromium
# and its driver (Debian's) for the dashboard's browser tests, and schemathesis and
# selenium (PyPI, into .venv) for the checks against openapi.yaml and the browser.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
# The version of a crate as Cargo.lock pins it.
locked() { sed -n "/^name = \"$1\"\$/{n;s/^version = \"\(.*\)\"\$/\1/p;}" Cargo.lock | head -n 1; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# cargo-fuzz runs the core's fuzz targets (fuzz/) on the stable toolchain.
fuzz_version=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null | cut -d' ' -f2)" != "$fuzz_version" ]; then
  say "installing cargo-fuzz $fuzz_version"
  cargo install --quiet cargo-fuzz --version "$fuzz_version"
fi

# scripts/build-worker.sh makes the Worker's bindings with the wasm-bindgen CLI at the
# lockfile's version (the crate and the CLI must agree), from crates.io.
bindgen_version=$(locked wasm-bindgen)
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$bindgen_version" ]; then
  say "installing wasm-bindgen-cli $bindgen_version"
  cargo install --quiet wasm-bindgen-cli --version "$bindgen_version"
fi

stamp=node_modules/.telemetry-lock-sha256
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
  say "installing npm packages from package-lock.json"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" >"$stamp"
fi

# schemathesis (PyPI) checks both targets against openapi.yaml; it lives in a virtualenv of
# the repository's own, with every version pinned in tests/requirements.txt.
venv_stamp=.venv/.telemetry-requirements-sha256
requirements_sum=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/st ] || [ "$(cat "$venv_stamp" 2>/dev/null)" != "$requirements_sum" ]; then
  say "installing Python test tools from tests/requirements.txt into .venv"
  if ! python3 -m venv .venv >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
      python3 -m venv .venv
    else
      echo "python3 cannot make a virtualenv: install Python 3 with venv (Debian/Ubuntu: sudo apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
  echo "$requirements_sum" >"$venv_stamp"
fi

# The rollback's tests start their own redis-server (plain and TLS, with certificates made
# by openssl) and their own caddy with the deployment's Caddyfile; the dashboard's tests
# drive Debian's chromium through its chromedriver (no browser download works here).
missing=""
for tool in redis-server:redis-server openssl:openssl caddy:caddy chromium:chromium chromedriver:chromium-driver; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing="$missing ${tool##*:}"
done
if [ -n "$missing" ]; then
  say "installing$missing (Debian packages) for the tests"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "missing:$missing. Install (Debian/Ubuntu: sudo apt-get install$missing; macOS: brew install redis openssl caddy chromium chromedriver)" >&2
    exit 1
  fi
fi
