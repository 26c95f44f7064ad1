#!/usr/bin/env bash
# Runs the Autobahn|Testsuite (strict) against `ringcast echo` for each given thread
# count, using the suite installed by ../shared/autobahn/setup.sh.
#
# Usage: scripts/autobahn/run.sh [CASES] [THREADS...]   (defaults: core 1 2)
# Environment: AUTOBAHN_DIR (default: ../shared/autobahn beside the repository),
#              RINGCAST_BIN (default: target/release/ringcast, built if missing).
# Exit status: 0 when every run ends "N passed, 0 failed" with no NON-STRICT result.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
AUTOBAHN_DIR="${AUTOBAHN_DIR:-$ROOT/../shared/autobahn}"
CASES="${1:-core}"
shift || true
THREADS=("$@")
[[ ${#THREADS[@]} -gt 0 ]] || THREADS=(1 2)

[[ -x "$AUTOBAHN_DIR/run.sh" ]] || { echo "autobahn: $AUTOBAHN_DIR/run.sh not found" >&2; exit 2; }
SKIP_NODE=1 "$AUTOBAHN_DIR/setup.sh"

BIN="${RINGCAST_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ringcast}"
if [[ -z "${RINGCAST_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --release --quiet -p ringcast --bin ringcast)
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

status=0
for t in "${THREADS[@]}"; do
  port="$(free_port)"
  log="$(mktemp)"
  "$BIN" echo --listen "127.0.0.1:$port" --threads "$t" --log warn >"$log" 2>&1 &
  pid=$!
  # Wait (bounded) until the server accepts connections.
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then break; fi
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "autobahn: server exited" >&2; exit 1; }
    sleep 0.1
  done
  echo "== autobahn $CASES, ringcast echo --threads $t (epoll) =="
  if ! STRICT=1 AGENT="ringcast-epoll-t$t" "$AUTOBAHN_DIR/run.sh" "ws://127.0.0.1:$port" "$CASES"; then
    status=1
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [[ -s "$log" ]]; then echo "server log:"; cat "$log"; fi
  rm -f "$log"
done
exit $status
