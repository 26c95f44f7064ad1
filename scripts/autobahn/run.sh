#!/usr/bin/env bash
# Runs the Autobahn|Testsuite (strict) against `ringcast echo` for each backend and each
# given thread count, using the suite installed by ../shared/autobahn/setup.sh.
#
# Usage: scripts/autobahn/run.sh [CASES] [THREADS...]   (defaults: core 1 2)
# Environment: AUTOBAHN_DIR (default: ../shared/autobahn beside the repository),
#              RINGCAST_BIN (default: target/$RINGCAST_PROFILE/ringcast, built),
#              RINGCAST_PROFILE (the cargo profile to build, default release),
#              BACKENDS (default: "epoll uring"; where the kernel refuses io_uring the
#              uring runs are skipped with the reason, except under CI=true),
#              JOBS (runs at the same time, default 4: all four default runs; each has
#              its own server, port, agent name and report directory, and its output
#              is printed whole).
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

PROFILE="${RINGCAST_PROFILE:-release}"
BIN="${RINGCAST_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/ringcast}"
if [[ -z "${RINGCAST_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --profile "$PROFILE" --quiet -p ringcast --bin ringcast)
fi

# A free port below the ephemeral range (32768 and up by default): no outgoing connection
# of the runs going on at once takes it before the server binds it, and the readiness
# probe cannot meet itself on it (a simultaneous open on a port nobody listens on yet).
free_port() {
  python3 -c '
import random, socket
for _ in range(200):
    p = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
else:
    raise SystemExit("no free port")
'
}

# One run: an echo server on a free port and the suite against it; its output goes to $3.
# Exit status: 0 passed, 1 failed, 3 skipped (io_uring refused outside CI).
one_run() {
  local backend=$1 t=$2 out=$3 port log pid started rc=0
  exec >"$out" 2>&1
  port="$(free_port)"
  log="$(mktemp)"
  "$BIN" echo --backend "$backend" --listen "127.0.0.1:$port" --threads "$t" --log warn >"$log" 2>&1 &
  pid=$!
  trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
  trap 'exit 130' INT TERM
  # Wait (bounded) until the server accepts connections.
  started=0
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then started=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [[ $started == 0 ]]; then
    wait "$pid" 2>/dev/null || true
    if [[ "$backend" == uring && "${CI:-}" != true ]] && grep -q "io_uring backend unavailable" "$log"; then
      echo "autobahn: uring skipped: $(cat "$log")"
      return 3
    fi
    cat "$log"; echo "autobahn: server ($backend) did not start"
    return 1
  fi
  echo "== autobahn $CASES, ringcast echo --backend $backend --threads $t =="
  if ! STRICT=1 AGENT="ringcast-$backend-t$t" "$AUTOBAHN_DIR/run.sh" "ws://127.0.0.1:$port" "$CASES"; then
    rc=1
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [[ -s "$log" ]]; then echo "server log:"; cat "$log"; fi
  return $rc
}

# The runs, JOBS at a time (each its own server, port, agent and report directory);
# their outputs are printed in order once each has ended.
RUNS=()
for backend in ${BACKENDS:-epoll uring}; do
  for t in "${THREADS[@]}"; do RUNS+=("$backend $t"); done
done
JOBS="${JOBS:-4}"
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || { echo "autobahn: JOBS must be a positive number" >&2; exit 2; }
outs="$(mktemp -d)"
declare -A PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$outs"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

status=0
next=0 # the next run to print
finish() { # wait for run $1, print its output
  local i=$1 rc=0
  wait "${PIDS[$i]}" || rc=$?
  unset "PIDS[$i]"
  cat "$outs/$i"
  case $rc in
  0) ;;
  3) ;; # io_uring refused (outside CI): said in its output
  *) status=1 ;;
  esac
}
for i in "${!RUNS[@]}"; do
  # shellcheck disable=SC2086 # "backend threads"
  one_run ${RUNS[$i]} "$outs/$i" &
  PIDS[$i]=$!
  if ((i + 1 - next >= JOBS)); then
    finish "$next"
    next=$((next + 1))
  fi
done
while ((next < ${#RUNS[@]})); do
  finish "$next"
  next=$((next + 1))
done
exit $status
