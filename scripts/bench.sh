#!/usr/bin/env bash
# Side-by-side broadcast benchmark (STYLE habit 14): ringcast (epoll; io_uring too when
# `ringcast serve --backend` exists) against raw-batch (the ceiling: one contiguous write
# per subscriber per turn from a shared byte log, the best a coalescing server can do on
# loopback; with io_uring also raw-batch-uring, the same server making those writes as
# io_uring sends: the io_uring ceiling), raw-writev (a secondary reference: one writev of
# per-frame slices per subscriber per turn) and the tokio peers of bench/peers, all driven
# the same way by loadgen.
#
# Every run starts a fresh server on a free 127.0.0.1 port, pinned to CPU 0, waits until
# it listens, runs one loadgen scenario pinned to CPU 1 (--json), samples both processes'
# CPU time (/proc/PID/stat) so the report shows who was saturated, and stops the server by
# its pid. The order of the implementations rotates each repetition (a run right after a
# heavy one pays for the sockets that one left to the kernel). Scenarios: fan-out
# throughput (--rate max, 64 B), latency at a fixed rate (100 msg/s and 2 msg/s, 128 B),
# idle connections (set-up rate, server bytes per connection), and in full mode with
# io_uring a 40k-subscriber run past the fd cap.
# The window matrix measures fan-out throughput (--rate max, 64 B) at 16, 64 and 256
# messages in flight (loadgen --window) with 1k and 10k subscribers, for ringcast-epoll,
# ringcast-uring, raw-batch and raw-batch-uring (and raw-writev in full mode); the report
# sets each ringcast backend against the raw-batch ceiling, io_uring also against the
# raw-batch-uring one, and the two ceilings against each other.
#
# Usage: scripts/bench.sh [--quick] [--reps N] [--duration S] [--scenarios IDS] [--only IMPL[,IMPL...]]
#   --quick   1 repetition, 2 s runs, 1k-5k subscribers (window matrix: 1k and 10k,
#             three implementations), no scale run (~4 min with every implementation)
#   --reps N  repetitions in full mode (default 3); the report gives medians
#             (full mode: 10 s runs, 1k-10k subscribers, 40k scale run; ~40 min)
#   --duration S  seconds of every measured run (default 10; quick mode 2)
#   --scenarios  run only these scenarios (ids as in the report, e.g. win-10k-w64,v1-10k-w64)
#   --only    run only these implementations (ringcast-epoll, ringcast-uring,
#             raw-batch, raw-batch-uring, raw-writev, peer-tungstenite, peer-fastws)
# Writes bench/results/<UTC stamp>.json (meta, every run, medians), .md (tables, ratios),
# -throughput.svg and -latency.svg (bench-report); logs and raw runs go to
# bench/results/tmp/<stamp>/ (not committed).
# Exit status: 0 when the benchmark ran, even if some runs failed (they are recorded);
# 1 on setup errors (build, tools, CPUs); 2 on bad flags.
set -euo pipefail
export LC_ALL=C
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

die() {
  echo "bench: $*" >&2
  exit 1
}
usage() {
  sed -n '/^# Usage:/,/^# 1 on setup errors/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

QUICK=0
REPS=3
DURATION=""
ONLY=""
SCENARIOS=""
while (($#)); do
  case "$1" in
  --quick) QUICK=1 ;;
  --reps)
    [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || usage
    REPS=$2
    shift
    ;;
  --duration)
    [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || {
      echo "bench: --duration takes whole seconds (1 or more), not '${2:-}'" >&2
      usage
    }
    DURATION=$2
    shift
    ;;
  --only)
    [[ -n ${2:-} ]] || usage
    ONLY=$2
    shift
    ;;
  --scenarios)
    [[ -n ${2:-} ]] || usage
    SCENARIOS=$2
    shift
    ;;
  -h | --help) usage ;;
  *)
    echo "bench: unknown argument '$1'" >&2
    usage
    ;;
  esac
  shift
done

for i in ${ONLY//,/ }; do
  case "$i" in
  ringcast-epoll | ringcast-uring | raw-batch | raw-batch-uring | raw-writev | peer-tungstenite | peer-fastws) ;;
  *)
    echo "bench: --only: unknown implementation '$i'" >&2
    usage
    ;;
  esac
done

if ((QUICK)); then
  MODE=quick REPS=1 DUR=2 WARMUP=0.5 DRAIN=1 BIG=5000 LAT=2000 HOLD=0.5
else
  MODE=full DUR=10 WARMUP=1 DRAIN=2 BIG=10000 LAT=10000 HOLD=3
fi
# Longer runs average out the drift of a saturated closed loop (at 64 in flight and
# 10 000 subscribers both processes are near their limit, and 5 s windows of one run
# scatter by ±30 % as the messages in flight move between the server and the sockets).
if [[ -n $DURATION ]]; then DUR=$DURATION; fi
CONNS=10000
if ((QUICK)); then
  MODE_NOTE="Quick mode: one ${DUR} s run per cell after a ${WARMUP} s warm-up; loadgen stops waiting for stragglers after ${DRAIN} s without a delivery (30 times that at most), so a server with a deep backlog shows its late tail as lost (marked ‡). Use the full mode for numbers to quote."
else
  MODE_NOTE="Full mode: ${REPS} repetitions of ${DUR} s after a ${WARMUP} s warm-up, interleaved (each repetition runs every scenario and implementation once); medians reported."
fi
SERVER_CPU=0 # the sampler reads the cpu0 and cpu1 lines of /proc/stat
LOADGEN_CPU=1
# CPU 0's softirq thread: the kernel hands it network work of the server's sends that it
# defers (only the server sends on CPU 0), and the sampler counts it as the server's.
# Optional: without it (no such thread, no pgrep) the column reads -1 and is left out.
KSOFTIRQD=$(pgrep -x "ksoftirqd/$SERVER_CPU" 2>/dev/null | head -n 1 || true)

for tool in cargo jq ss taskset git; do
  command -v "$tool" >/dev/null || die "'$tool' is needed (apt-get install -y jq iproute2 util-linux git)"
done
(($(nproc) >= 2)) || die "needs 2 CPUs (server on CPU $SERVER_CPU, loadgen on CPU $LOADGEN_CPU); this process may use $(nproc)"
taskset -c "$SERVER_CPU,$LOADGEN_CPU" true 2>/dev/null || die "cannot pin to CPUs $SERVER_CPU and $LOADGEN_CPU"

# --- build -----------------------------------------------------------------------------
BUILD=(
  "cargo build --release -p ringcast -p ringcast-loadgen"
  "cargo build --release --manifest-path bench/peers/Cargo.toml"
)
for b in "${BUILD[@]}"; do
  echo "== $b"
  $b || die "build failed: $b"
done
TARGET="${CARGO_TARGET_DIR:-target}/release" # relative: the commands recorded stay short
PEERS="${CARGO_TARGET_DIR:-bench/peers/target}/release"
RC="$TARGET/ringcast"
LG="$TARGET/loadgen"
REPORT="$PEERS/bench-report"
for bin in "$RC" "$LG" "$REPORT" "$PEERS/raw-batch" "$PEERS/raw-writev" "$PEERS/peer-tungstenite" "$PEERS/peer-fastws"; do
  [[ -x $bin ]] || die "missing binary $bin"
done

# --- implementations (PORT is replaced per run) ------------------------------------------
serve_help="$("$RC" serve --help 2>&1 || true)"
declare -A CMD
IMPLS=()
if [[ $serve_help == *--backend* ]]; then
  HAVE_URING=1
  BACKENDS="epoll, io_uring (ringcast serve --backend)"
  CMD[ringcast-epoll]="$RC serve --threads 1 --backend epoll --listen 127.0.0.1:PORT"
  CMD[ringcast-uring]="$RC serve --threads 1 --backend uring --listen 127.0.0.1:PORT"
  IMPLS+=(ringcast-epoll ringcast-uring)
else
  HAVE_URING=0
  BACKENDS="epoll only (this ringcast has no --backend flag)"
  CMD[ringcast-epoll]="$RC serve --threads 1 --listen 127.0.0.1:PORT"
  IMPLS+=(ringcast-epoll)
fi
CMD[raw-batch]="$PEERS/raw-batch --listen 127.0.0.1:PORT"
IMPLS+=(raw-batch)
if ((HAVE_URING)); then
  CMD[raw-batch-uring]="$PEERS/raw-batch --sends uring --listen 127.0.0.1:PORT"
  IMPLS+=(raw-batch-uring)
fi
CMD[raw-writev]="$PEERS/raw-writev --listen 127.0.0.1:PORT"
CMD[peer-tungstenite]="$PEERS/peer-tungstenite --threads 1 --listen 127.0.0.1:PORT"
CMD[peer-fastws]="$PEERS/peer-fastws --threads 1 --listen 127.0.0.1:PORT"
IMPLS+=(raw-writev peer-tungstenite peer-fastws)
if [[ -n $ONLY ]]; then
  for i in ${ONLY//,/ }; do
    [[ -n ${CMD[$i]:-} ]] || die "--only: unknown or unavailable implementation '$i' (have: ${IMPLS[*]})"
  done
  keep=()
  for i in "${IMPLS[@]}"; do
    if [[ ",$ONLY," == *",$i,"* ]]; then keep+=("$i"); fi
  done
  IMPLS=("${keep[@]}")
fi
# Peers that drop for lagging subscribers by design (tokio broadcast): no --expect-all.
expect_all() { [[ $1 != peer-* ]]; }
# Scenarios that only some implementations run: id -> space-separated implementations.
declare -A ONLY_FOR
runs_in() { [[ -z ${ONLY_FOR[$1]:-} || " ${ONLY_FOR[$1]} " == *" $2 "* ]]; }

# --- scenarios ---------------------------------------------------------------------------
# id | kind | rate ("" = max) | label | loadgen arguments (SERVER_PID is replaced)
k() { if (($1 % 1000 == 0)); then echo "$(($1 / 1000))k"; else echo "$1"; fi; }
SC=()
add() { SC+=("$1|$2|$3|$4|$5"); }
COMMON="--warmup ${WARMUP}s --duration ${DUR}s --drain ${DRAIN}s"
# Saturated runs (--rate max) time every 16th message (at every subscriber; every delivery
# is still counted and checked): the histogram was ~5 % of loadgen's CPU, and a client at
# its limit trails the server and lowers what each write carries (see the README's
# Performance: fan-out). Paced runs time every message.
SAT="$COMMON --latency-every 16"
add tput-1k fanout "" "$(k 1000) subscribers × 64 B, --rate max" \
  "fanout --subscribers 1000 --size 64 --rate max $SAT"
add "tput-$(k $BIG)" fanout "" "$(k $BIG) subscribers × 64 B, --rate max" \
  "fanout --subscribers $BIG --size 64 --rate max $SAT"
# Window matrix: messages in flight (loadgen --window) × subscribers, against raw-batch.
MATRIX_IMPLS="ringcast-epoll ringcast-uring raw-batch raw-batch-uring"
if ((!QUICK)); then MATRIX_IMPLS+=" raw-writev"; fi
declare -A MATRIX # id -> "subscribers window"
for n in 1000 10000; do
  for w in 16 64 256; do
    id="win-$(k $n)-w$w"
    add "$id" fanout "" "$(k $n) subscribers × 64 B, --rate max --window $w" \
      "fanout --subscribers $n --size 64 --rate max --window $w $SAT"
    ONLY_FOR[$id]=$MATRIX_IMPLS
    MATRIX[$id]="$n $w"
  done
done
# Envelope cost: the same cell as win-10k-w64 with ringcast.v1 subscribers (every delivery
# an envelope with topic and sequence number, checked by loadgen), ringcast only.
add v1-10k-w64 fanout "" "10k subscribers × 64 B, --rate max --window 64, ringcast.v1 envelopes" \
  "fanout --subscribers 10000 --size 64 --rate max --window 64 --protocol ringcast.v1 $SAT"
ONLY_FOR[v1-10k-w64]="ringcast-epoll ringcast-uring"
# ... with loadgen stripping the envelopes unchecked (--trust-envelopes; the deliveries are
# still checked per publisher, as in plain mode): what is left of the difference without
# the client's own envelope bookkeeping, which a saturated loop multiplies.
add v1t-10k-w64 fanout "" "10k subscribers × 64 B, --rate max --window 64, ringcast.v1 envelopes stripped unchecked" \
  "fanout --subscribers 10000 --size 64 --rate max --window 64 --protocol ringcast.v1 --trust-envelopes $SAT"
ONLY_FOR[v1t-10k-w64]="ringcast-epoll ringcast-uring"
# ... and plain frames of that envelope's size (64 B + 12 B of envelope for topic `t0`):
# what the envelope costs beyond its bytes on the wire.
add wire-10k-w64 fanout "" "10k subscribers × 76 B, --rate max --window 64, plain (the size of the v1 frames)" \
  "fanout --subscribers 10000 --size 76 --rate max --window 64 $SAT"
ONLY_FOR[wire-10k-w64]="ringcast-epoll ringcast-uring"
# ... and at a fixed rate the server keeps up with (4 M deliveries/s), where the window does
# not bind: the server's CPU per delivery with and without envelopes, batch for batch.
add fix-10k-r400 fanout 400 "10k subscribers × 64 B at 400 msg/s (4M deliveries/s), plain" \
  "fanout --subscribers 10000 --size 64 --rate 400 $COMMON"
add v1-10k-r400 fanout 400 "10k subscribers × 64 B at 400 msg/s (4M deliveries/s), ringcast.v1 envelopes" \
  "fanout --subscribers 10000 --size 64 --rate 400 --protocol ringcast.v1 $COMMON"
ONLY_FOR[fix-10k-r400]="ringcast-epoll ringcast-uring"
ONLY_FOR[v1-10k-r400]="ringcast-epoll ringcast-uring"
add lat-100 fanout 100 "$(k $LAT) subscribers × 100 msg/s ($(k $((LAT * 100))) deliveries/s), 128 B" \
  "fanout --subscribers $LAT --size 128 --rate 100 $COMMON"
add lat-2 fanout 2 "$(k $LAT) subscribers × 2 msg/s (single publishes), 128 B" \
  "fanout --subscribers $LAT --size 128 --rate 2 $COMMON"
add connect connect "" "$(k $CONNS) idle connections: set-up rate and server memory" \
  "connect --connections $CONNS --hold ${HOLD}s --server-pid SERVER_PID"
# The io_uring ceiling differs from raw-batch only in its writes: it holds idle
# connections the same way.
ONLY_FOR[connect]="${IMPLS[*]/raw-batch-uring/}"
SCALE_ID=scale-40k
declare -A SKIPPED
if ((QUICK)); then
  SKIPPED[$SCALE_ID]="--quick skips the scale run"
elif ((!HAVE_URING)); then
  SKIPPED[$SCALE_ID]="needs ringcast serve --backend uring"
elif [[ " ${IMPLS[*]} " != *" ringcast-uring "* ]]; then
  SKIPPED[$SCALE_ID]="ringcast-uring not selected (--only)"
else
  add "$SCALE_ID" fanout 10 "40k subscribers × 10 msg/s, 128 B, io_uring 2 threads, loadgen workers (unpinned)" \
    "fanout --subscribers 40000 --size 128 --rate 10 $COMMON"
fi
if [[ -n ${SKIPPED[$SCALE_ID]:-} ]]; then
  echo "bench: scale scenario skipped: ${SKIPPED[$SCALE_ID]}"
fi
if [[ -n $SCENARIOS ]]; then
  keep=()
  for sc in "${SC[@]}"; do
    if [[ ",$SCENARIOS," == *",${sc%%|*},"* ]]; then keep+=("$sc"); fi
  done
  ((${#keep[@]})) || die "--scenarios: none of '$SCENARIOS' is a scenario of this mode"
  SC=("${keep[@]}")
fi

# --- bookkeeping -------------------------------------------------------------------------
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="bench/results"
WORK="$OUT/tmp/$STAMP"
mkdir -p "$WORK"
# A pipe nobody writes to, open at both ends: `read -t` on it sleeps without a fork. The
# sampler wakes 10 times a second on loadgen's CPU, and a `sleep` process each time would
# run there too.
mkfifo "$WORK/nap"
exec {NAP}<>"$WORK/nap"
nap() { read -rt "$1" -u "$NAP" _ || true; }
RUNS="$WORK/runs.jsonl"
: >"$RUNS"
CLK_TCK="$(getconf CLK_TCK)"

declare -A LIVE # pids this script started and has not reaped yet
cleanup() {
  local p
  for p in "${!LIVE[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${!LIVE[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Whether pid $1 runs (a zombie does not).
alive() {
  local s
  { read -r s </proc/"$1"/stat; } 2>/dev/null || return 1
  s=${s##*) }
  [[ ${s:0:1} != Z ]]
}
# Sets TICKS to pid $1's utime+stime in clock ticks (all threads), or -1 (no fork).
ticks() {
  local s f
  TICKS=-1
  { read -r s </proc/"$1"/stat; } 2>/dev/null || return 0
  read -ra f <<<"${s##*) }"
  TICKS=$((f[11] + f[12]))
}
free_port() {
  local p i
  for i in {1..100}; do
    p=$((20000 + RANDOM % 12000)) # below the ephemeral range loadgen draws from
    if [[ -z $(ss -Htan "( sport = :$p )") ]]; then
      echo "$p"
      return 0
    fi
  done
  return 1
}
# Waits until pid $1 has $3 listening sockets on port $2 (10 s at most).
wait_listening() {
  local i
  for i in {1..200}; do
    alive "$1" || return 1
    (($(ss -Hltn "( sport = :$2 )" | wc -l) >= $3)) && return 0
    sleep 0.05
  done
  return 1
}
# Stops pid $1 (TERM, then KILL after 10 s), reaps it; sets STOPPED to its exit status.
stop_pid() {
  local i
  if alive "$1"; then
    kill -TERM "$1" 2>/dev/null || true
    for i in {1..200}; do
      alive "$1" || break
      sleep 0.05
    done
    if alive "$1"; then kill -KILL "$1" 2>/dev/null || true; fi
  fi
  STOPPED=0
  wait "$1" 2>/dev/null || STOPPED=$?
  unset "LIVE[$1]"
}
# Sets CPUN to "busy steal" ticks of a /proc/stat cpuN line $1 (busy: user, nice,
# system, irq, softirq).
cpu_line() {
  local f
  read -ra f <<<"$1"
  CPUN="$((f[1] + f[2] + f[3] + f[6] + f[7])) ${f[8]:-0}"
}
# Samples every 100 ms into $3: time, CPU ticks of server $1 and loadgen $2, busy and
# steal ticks of CPUs 0 and 1 (to see other processes or the hypervisor taking the
# server's CPU), and ticks of CPU 0's softirq thread (-1 if there is none). Kills loadgen (TERM, then KILL 5 s later) once the epoch time $4
# passes: the run's time bound.
sampler() {
  local srv=$1 lg=$2 file=$3 deadline=$4 now killed=0 a b c0 c1 k
  while :; do
    now=$EPOCHREALTIME
    ticks "$srv"
    a=$TICKS
    ticks "$lg"
    b=$TICKS
    TICKS=-1
    if [[ -n $KSOFTIRQD ]]; then ticks "$KSOFTIRQD"; fi
    k=$TICKS
    { read -r _ && read -r c0 && read -r c1; } </proc/stat
    cpu_line "$c0"
    c0=$CPUN
    cpu_line "$c1"
    echo "$now $a $b $c0 $CPUN $k" >>"$file"
    if ((${now%.*} >= deadline)); then
      if ((killed == 0)); then
        echo "timeout" >"$file.timeout"
        kill -TERM "$lg" 2>/dev/null || true
        killed=1
      elif ((${now%.*} >= deadline + 5)); then
        kill -KILL "$lg" 2>/dev/null || true
      fi
    fi
    nap 0.1
  done
}

TOTAL=0
for ((rep = 1; rep <= REPS; rep++)); do
  for sc in "${SC[@]}"; do
    IFS='|' read -r id _ _ _ _ <<<"$sc"
    if [[ $id == "$SCALE_ID" ]]; then
      TOTAL=$((TOTAL + 1))
      continue
    fi
    for imp in "${IMPLS[@]}"; do
      if runs_in "$id" "$imp"; then TOTAL=$((TOTAL + 1)); fi
    done
  done
done
N=0

# One run: implementation $1, scenario line $2, repetition $3.
run_one() {
  local imp=$1 rep=$3 id kind rate label args
  IFS='|' read -r id kind rate label args <<<"$2"
  N=$((N + 1))
  local tag="$WORK/$id.$imp.$rep"
  local scmd=${CMD[$imp]} spre=(taskset -c "$SERVER_CPU") lpre=(taskset -c "$LOADGEN_CPU")
  local lopts="--threads 1 --pin-cpus $LOADGEN_CPU" listeners=1
  if [[ $id == "$SCALE_ID" ]]; then
    scmd="$RC serve --threads 2 --backend uring --listen 127.0.0.1:PORT"
    spre=() lpre=() lopts="--threads 1 --workers auto" listeners=2
  fi
  local port status=ran error="" rc=-1 srv_rc=null hwm=null t_start=0 t_end=0
  : >"$tag.samples"
  : >"$tag.out"
  : >"$tag.err"
  port="$(free_port)" || die "no free port"
  scmd=${scmd//PORT/$port}
  local lcmd="$LG $args --url ws://127.0.0.1:$port $lopts --json"
  if [[ $kind == fanout ]] && expect_all "$imp"; then lcmd+=" --expect-all"; fi
  printf '[%d/%d] %-16s %-10s rep %d: ' "$N" "$TOTAL" "$imp" "$id" "$rep"

  # shellcheck disable=SC2086 # the commands are word lists
  "${spre[@]}" $scmd >"$tag.server.log" 2>&1 &
  local spid=$!
  LIVE[$spid]=1
  if ! wait_listening "$spid" "$port" "$listeners"; then
    status=server-failed
    if alive "$spid"; then
      error="not listening on 127.0.0.1:$port within 10 s"
    else
      error="exited before listening"
    fi
    error+=": $(tail -n 5 "$tag.server.log" | tr -s '\n' ' ')"
  else
    lcmd=${lcmd//SERVER_PID/$spid}
    local bound
    # connect (30 s allowance), warm-up, run, and the longest drain loadgen allows (30 x --drain)
    bound=$(awk -v w="$WARMUP" -v d="$DUR" -v r="$DRAIN" 'BEGIN { printf "%d", w + d + 30 * r + 30 }')
    t_start=$EPOCHREALTIME
    # shellcheck disable=SC2086
    "${lpre[@]}" $lcmd >"$tag.out" 2>"$tag.err" &
    local lpid=$!
    LIVE[$lpid]=1
    sampler "$spid" "$lpid" "$tag.samples" $((${t_start%.*} + bound)) &
    local mpid=$!
    LIVE[$mpid]=1
    # The sampler wakes 10 times a second: keep it off the server's CPU.
    if ((${#lpre[@]})); then taskset -p -c "$LOADGEN_CPU" "$mpid" >/dev/null 2>&1 || true; fi
    rc=0
    wait "$lpid" || rc=$?
    unset "LIVE[$lpid]"
    t_end=$EPOCHREALTIME
    kill "$mpid" 2>/dev/null || true
    wait "$mpid" 2>/dev/null || true
    unset "LIVE[$mpid]"
    if [[ -e $tag.samples.timeout ]]; then
      status=timeout error="loadgen killed after ${bound} s"
    elif ! alive "$spid"; then
      status=server-died error="the server exited during the run: $(tail -n 3 "$tag.server.log" | tr '\n' ' ')"
    fi
    hwm=$(awk '/^VmHWM:/ { print $2 }' /proc/"$spid"/status 2>/dev/null || true)
    [[ -n $hwm ]] || hwm=null
    if [[ -z $error && $rc != 0 ]]; then error="$(tail -n 3 "$tag.err" | tr '\n' ' ')"; fi
  fi
  stop_pid "$spid"
  srv_rc=$STOPPED
  local lgjson="$tag.out"
  jq -e 'type == "object"' "$lgjson" >/dev/null 2>&1 || {
    echo 'null' >"$tag.none"
    lgjson="$tag.none"
  }
  jq -cn \
    --arg impl "$imp" --arg scenario "$id" --argjson rep "$rep" --arg status "$status" \
    --arg error "$error" --argjson exit_code "$rc" --argjson server_exit "$srv_rc" \
    --arg server_cmd "${spre[*]} $scmd" --arg loadgen_cmd "${lpre[*]} $lcmd" \
    --argjson t_start "$t_start" --argjson t_end "$t_end" --argjson clk_tck "$CLK_TCK" \
    --argjson server_hwm_kib "$hwm" --arg server_log_tail "$(tail -n 5 "$tag.server.log")" \
    --argjson port "$port" --argjson server_pid "$spid" \
    --rawfile samples "$tag.samples" --slurpfile lg "$lgjson" \
    '{impl: $impl, scenario: $scenario, rep: $rep, status: $status, error: $error,
      exit_code: $exit_code, server_exit: $server_exit, port: $port, server_pid: $server_pid, server_cmd: ($server_cmd | ltrimstr(" ")),
      loadgen_cmd: ($loadgen_cmd | ltrimstr(" ")), t_start: $t_start, t_end: $t_end,
      clk_tck: $clk_tck, server_hwm_kib: $server_hwm_kib, server_log_tail: $server_log_tail,
      loadgen: $lg[0],
      samples: ($samples | split("\n") | map(select(length > 0) | split(" ") | map(tonumber)))}' \
    >>"$RUNS"
  if [[ $status != ran ]]; then
    echo "$status: $error"
  elif [[ $lgjson == "$tag.none" ]]; then
    echo "failed (exit $rc): $error"
  else
    jq -r --arg rc "$rc" 'if .error then "failed: \(.error)"
      elif .scenario == "connect" then
        "\(.conn_per_sec | floor) conn/s, \(.server_bytes_per_conn // 0 | floor) B/conn (exit \($rc))"
      else "\(.deliveries_per_sec | floor) deliveries/s, p50 \(.lat_us.p50) µs, p99 \(.lat_us.p99) µs, lost \(.lost) (exit \($rc))"
      end' "$lgjson" 2>/dev/null || echo "exit $rc: $error"
  fi
}

echo "== benchmark ($MODE, $REPS rep(s), backends: $BACKENDS) -> $OUT/$STAMP.*"
T0=$SECONDS
for ((rep = 1; rep <= REPS; rep++)); do
  for sc in "${SC[@]}"; do
    IFS='|' read -r id _ <<<"$sc"
    if [[ $id == "$SCALE_ID" ]]; then
      run_one ringcast-uring "$sc" "$rep"
      continue
    fi
    # Rotated each repetition: a run right after a heavy one (10 000 sockets just
    # closed) starts on a busier kernel, and no implementation should always be that one.
    for ((k = 0; k < ${#IMPLS[@]}; k++)); do
      imp=${IMPLS[$(((k + rep - 1) % ${#IMPLS[@]}))]}
      if runs_in "$id" "$imp"; then run_one "$imp" "$sc" "$rep"; fi
    done
  done
done
echo "== runs took $((SECONDS - T0)) s"

# --- meta and report ---------------------------------------------------------------------
cpu_model="$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
dirty=false
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then dirty=true; fi
{
  for i in "${IMPLS[@]}"; do jq -cn --arg n "$i" --arg c "taskset -c $SERVER_CPU ${CMD[$i]}" '{name: $n, cmd: $c}'; done
} >"$WORK/impls.jsonl"
{
  for sc in "${SC[@]}"; do
    IFS='|' read -r id kind rate label _ <<<"$sc"
    read -r m_subs m_window <<<"${MATRIX[$id]:-}"
    jq -cn --arg id "$id" --arg kind "$kind" --arg rate "$rate" --arg lbl "$label" \
      --arg subs "${m_subs:-}" --arg window "${m_window:-}" \
      '{id: $id, kind: $kind, "label": $lbl, rate: (if $rate == "" then null else ($rate | tonumber) end)}
       + (if $window == "" then {} else {matrix: {subscribers: ($subs | tonumber), window: ($window | tonumber)}} end)'
  done
  if [[ -n ${SKIPPED[$SCALE_ID]:-} ]]; then
    jq -cn --arg id "$SCALE_ID" '{id: $id, kind: "fanout", rate: 10,
      "label": "40k subscribers × 10 msg/s, 128 B, io_uring 2 threads (scale, past the fd cap)"}'
  fi
} >"$WORK/scenarios.jsonl"
skipped_json="$(for s in "${!SKIPPED[@]}"; do jq -cn --arg k "$s" --arg v "${SKIPPED[$s]}" '{($k): $v}'; done | jq -cs 'add // {}')"
jq -n \
  --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg stamp "$STAMP" --arg mode "$MODE" \
  --argjson reps "$REPS" --argjson duration_s "$DUR" --argjson warmup_s "$WARMUP" \
  --arg cpu "$cpu_model" --argjson cores "$(nproc)" --arg kernel "$(uname -r)" \
  --arg nofile "$(ulimit -n)" --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --argjson dirty "$dirty" --arg backends "$BACKENDS" \
  --arg placement "server on CPU $SERVER_CPU (taskset, 1 reactor / 1-thread runtime), loadgen on CPU $LOADGEN_CPU (--pin-cpus $LOADGEN_CPU --threads 1); a fresh server on a free 127.0.0.1 port per run; the implementations' order rotates each repetition" \
  --slurpfile impls "$WORK/impls.jsonl" --slurpfile scenarios "$WORK/scenarios.jsonl" \
  --argjson skipped "$skipped_json" --arg mode_note "$MODE_NOTE" \
  --args '{date: $date, stamp: $stamp, mode: $mode, reps: $reps, duration_s: $duration_s,
    warmup_s: $warmup_s, machine: {cpu: $cpu, cores: $cores, kernel: $kernel, nofile: $nofile},
    git: {commit: $commit, dirty: $dirty}, backends: $backends, placement: $placement,
    build: $ARGS.positional, impls: $impls, scenarios: $scenarios, skipped: $skipped,
    notes: [
      $mode_note,
      "Loopback on a shared VM: compare rows within one results file, not across files or machines; medians of the repetitions.",
      "Under --rate max, latency is mostly the publisher window of loadgen (about window ÷ msg/s), not a server delay.",
      "Bytes/connection: VmRSS growth of the freshly started server ÷ connections, read 200 ms after the last handshake; kernel socket buffers are not in RSS.",
      "CPU: utime+stime deltas from /proc/PID/stat (sampled every 100 ms) over the measured window; loadgen worker processes (scale run) are not counted.",
      "raw-batch is the ceiling: not a WebSocket server but the least a coalescing broadcast needs. Each publication is appended once to one shared byte log, and each subscriber gets one contiguous write of everything it has not yet received per pass over the subscribers, 256 of them per poll turn (no per-message work per subscriber; what was published meanwhile reaches the rest of the pass too, as in ringcast).",
      "raw-batch-uring is the io_uring ceiling: raw-batch --sends uring, the same server whose pass writes are io_uring sends on registered files (a poll turn'"'"'s sends submitted together), everything else on epoll; raw-batch-uring / raw-batch is what io_uring itself gains or loses in a cell.",
      "raw-writev is a secondary reference: one writev per subscriber per turn of one slice per queued frame (a per-message cost per subscriber)."
    ]}' "${BUILD[@]}" >"$WORK/meta.json"

"$REPORT" --meta "$WORK/meta.json" --runs "$RUNS" --out "$OUT/$STAMP"
# The envelope cost, from the same run: ringcast.v1 against plain subscribers, medians;
# throughput at 64 in flight, and CPU per delivery there and at a fixed rate.
jq -r '
  def med: map(select(. != null)) | sort | if length == 0 then null else .[length / 2 | floor] end;
  def ran($id): map(select(.scenario == $id and (.status == "ok" or .status == "ran")));
  def dps($id): ran($id) | map(.derived.deliveries_per_sec) | med;
  def ns($id; $who): ran($id)
    | map(if .derived.deliveries_per_sec > 0 and .derived[$who] != null
          then .derived[$who] / .derived.deliveries_per_sec * 1e9 else null end) | med;
  def r($a; $b): if $a == null or $b == null or $b == 0 then "–" else (($a / $b * 100 | round) / 100 | tostring) end;
  def n0: if . == null then "–" else (floor | tostring) end;
  def f2: (. * 100 | round) / 100 | tostring;
  def paired($a; $b): [group_by(.rep)[] | [ran($a)[0], ran($b)[0]]
    | select(.[0] != null and .[1] != null and .[1].derived.deliveries_per_sec > 0)
    | .[0].derived.deliveries_per_sec / .[1].derived.deliveries_per_sec] | sort
    | if length == 0 then "–" else "\(.[length / 2 | floor] | f2) (\(.[0] | f2)–\(.[-1] | f2))" end;
  [.runs | group_by(.impl)[] | select(.[0].impl | startswith("ringcast"))
   | . as $g
   | {impl: .[0].impl, plain: ($g | dps("win-10k-w64")), v1: ($g | dps("v1-10k-w64")),
      wire: ($g | dps("wire-10k-w64")), trusted: ($g | dps("v1t-10k-w64")),
      sp: ($g | ns("win-10k-w64"; "server_cpu")), sv: ($g | ns("v1-10k-w64"; "server_cpu")),
      lp: ($g | ns("win-10k-w64"; "loadgen_cpu")), lv: ($g | ns("v1-10k-w64"; "loadgen_cpu")),
      pr: ($g | paired("v1-10k-w64"; "win-10k-w64")),
      fp: ($g | ns("fix-10k-r400"; "server_cpu")), fv: ($g | ns("v1-10k-r400"; "server_cpu")),
      flp: ($g | ns("fix-10k-r400"; "loadgen_cpu")), flv: ($g | ns("v1-10k-r400"; "loadgen_cpu"))}
   | select(.plain != null and .v1 != null)] as $rows
  | if ($rows | length) == 0 then empty else
    "\n## Envelope cost: ringcast.v1 against plain subscribers\n\n10k subscribers × 64 B, medians of the repetitions. *Throughput*: 64 messages in flight (win-10k-w64 and v1-10k-w64); v1 ÷ plain is the share of plain throughput kept with envelopes. Both processes are near saturation there, so it is a property of the loop: a client that takes longer per delivery (the envelope is 12 B more to receive on topic `t0`, 78 B frames instead of 66 B, and is checked) publishes its next messages later, so the server finds fewer per subscriber per turn and spends more per delivery. *Same size*: plain frames the size of the v1 frames (wire-10k-w64, 76 B payloads): v1 ÷ that is what the envelope costs beyond its bytes. *CPU per delivery* (ns of CPU time ÷ deliveries): the server and loadgen in those runs, and both at a fixed 400 msg/s (fix-10k-r400 and v1-10k-r400, 4 M deliveries/s, which both modes keep up with): what envelopes cost each side, batch for batch, without the scatter of the loop. *Per repetition*: v1 ÷ plain of the two runs of each repetition (they run back to back), median (lowest–highest): the scatter of the saturated loop from run to run. *Unchecked*: v1 with loadgen stripping the envelopes without checking their topics and sequence numbers (v1t-10k-w64, `--trust-envelopes`; every delivery is still checked per publisher, as in plain mode): the difference to v1 is the envelope bookkeeping of the load client, which the saturated loop multiplies.\n\n| implementation | plain deliveries/s | ringcast.v1 deliveries/s | v1 ÷ plain | v1 ÷ plain per repetition | plain 76 B deliveries/s | v1 ÷ plain same size | v1 unchecked deliveries/s | v1 unchecked ÷ plain | v1 unchecked ÷ plain same size | server ns/delivery plain → v1 | loadgen ns/delivery plain → v1 | at 400 msg/s: server ns/delivery plain → v1 | at 400 msg/s: loadgen ns/delivery plain → v1 |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ($rows[] | "| \(.impl) | \(.plain | n0) | \(.v1 | n0) | \(r(.v1; .plain)) | \(.pr) | \(.wire | n0) | \(r(.v1; .wire)) | \(.trusted | n0) | \(r(.trusted; .plain)) | \(r(.trusted; .wire)) | \(.sp | n0) → \(.sv | n0) | \(.lp | n0) → \(.lv | n0) | \(.fp | n0) → \(.fv | n0) | \(.flp | n0) → \(.flv | n0) |")
    end' "$OUT/$STAMP.json" >>"$OUT/$STAMP.md"
echo "== $OUT/$STAMP.md"
cat "$OUT/$STAMP.md"
