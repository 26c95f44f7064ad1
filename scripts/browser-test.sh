#!/usr/bin/env bash
# The browser test: ringcast.js and the demo page in Debian's headless Chromium, driven by
# playwright-core from Node's test runner, against the real `ringcast` binary
# (engine/tests/browser/). Builds the binary (debug), installs the test's npm packages
# from package-lock.json when they are missing or stale, and stops with a clear message
# when Chromium or Node.js is missing (.ci/run installs both).
#
# Usage: scripts/browser-test.sh    (scripts/test.sh runs it)
# Environment: CHROMIUM (default /usr/bin/chromium); RINGCAST_BIN, a ringcast binary to
# test instead of building the debug one (scripts/test.sh passes the one its cargo tests
# built); SCREENSHOT, where the demo page's picture goes (default
# $CARGO_TARGET_DIR/browser/demo.png; SCREENSHOT=docs/demo.png refreshes the README's).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" ]]; then
  echo "browser test: no Chromium at $CHROMIUM; install Debian's: apt-get install -y chromium" >&2
  exit 1
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "browser test: Node.js and npm are needed (apt-get install -y nodejs npm)" >&2
  exit 1
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 20)); then
  echo "browser test: Node.js $(node --version) is too old; playwright-core needs 20 or later" >&2
  exit 1
fi

cd engine/tests/browser
# npm ci only when node_modules does not match the lock file (it records what it installed).
if ! cmp -s package-lock.json node_modules/.ringcast-lock 2>/dev/null; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.ringcast-lock
fi
cd "$ROOT"

target=$(cargo metadata --format-version 1 --no-deps | node -e \
  'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
if [[ -z "${RINGCAST_BIN:-}" ]]; then
  cargo build --quiet -p ringcast --bin ringcast
  RINGCAST_BIN="$target/debug/ringcast"
fi
[[ -x "$RINGCAST_BIN" ]] || { echo "browser test: no ringcast binary at $RINGCAST_BIN" >&2; exit 1; }
export RINGCAST_BIN
export CARGO_TARGET_DIR="$target"

cd engine/tests/browser
# One file at a time: each runs its own Chromium and servers on a two-core machine.
exec node --test --test-concurrency=1 client.test.mjs demo.test.mjs
