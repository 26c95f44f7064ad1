#!/usr/bin/env bash
# Soak: one `ringcast serve` under a mixed load for a while, sampled every second.
#
#   scripts/soak.sh [--seconds N | --minutes N] [--backend epoll|uring|both] [--out DIR]
#                   [--one-at-a-time]
#
# With --backend both (the default) the two backends soak at the same time, each with its
# own server, port, load and files, and their reports are printed one after the other
# when both have ended; --one-at-a-time runs epoll, then io_uring.
# The load, all at once and all bounded by the duration:
#   - healthy: `loadgen fanout` — 400 plain subscribers on topics h0..h3, 4 publishers at
#     2 000 msg/s in total; --expect-all: any loss, reordering or duplicate fails the soak;
#   - churn: `loadgen resume` — 400 ringcast.v1 subscribers on t0..t3 (200 msg/s) of which
#     20 % drop their TCP connection every 2 s and resume with ?since=; --expect-all: any
#     unannounced loss or duplicate fails;
#   - stalled: 20 subscribers to h0,h1 that never read (the slow-consumer policy closes
#     them), replaced by new ones every 10 s, from scripts/soak/abuse.py;
#   - garbage: clients sending random bytes, oversized heads and invalid frames;
#   - slow heads: 50 clients trickling a request head one byte every 0.5 s.
# Sampled every second into DIR/soak-BACKEND.csv (and drawn as DIR/soak-BACKEND.svg): server
# RSS, open fds, CPU, established connections, and the delivery lag of the healthy
# subscribers (p99 of the end-to-end latency of the messages they got in that second, from
# `loadgen fanout --lag-log DIR/lag-BACKEND.csv`). Fails on: a crash, a failed healthy or
# churn run, RSS growing after warm-up (the last third's peak over the middle third's by
# more than 10 % + 8 MiB), delivery lag growing after warm-up (the median of the per-second
# p99 over the last third above twice the middle third's + 250 ms), or an fd leak (after
# every client has gone, more fds than before the load + 2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_RUN=60
BACKENDS=(epoll uring)
OUT=target/soak
TOGETHER=1
usage() {
  sed -n '2,6p' "$0" >&2
  exit 2
}
while (($#)); do
  case "$1" in
  --seconds) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || usage; SECONDS_RUN=$2; shift ;;
  --minutes) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || usage; SECONDS_RUN=$(($2 * 60)); shift ;;
  --backend)
    case "${2:-}" in
    epoll | uring) BACKENDS=("$2") ;;
    both) BACKENDS=(epoll uring) ;;
    *) usage ;;
    esac
    shift
    ;;
  --out) [[ -n ${2:-} ]] || usage; OUT=$2; shift ;;
  --one-at-a-time) TOGETHER=0 ;;
  -h | --help) usage ;;
  *) echo "soak: unknown argument '$1'" >&2; usage ;;
  esac
  shift
done
((SECONDS_RUN >= 15)) || { echo "soak: at least 15 s" >&2; exit 2; }
mkdir -p "$OUT"

# RINGCAST_PROFILE: the cargo profile to build and run (release; the test command uses ci).
PROFILE="${RINGCAST_PROFILE:-release}"
cargo build --profile "$PROFILE" --quiet -p ringcast -p ringcast-loadgen
RC="${CARGO_TARGET_DIR:-target}/$PROFILE/ringcast"
LG="${CARGO_TARGET_DIR:-target}/$PROFILE/loadgen"
CLK_TCK=$(getconf CLK_TCK)

declare -A LIVE # pids this script started and has not reaped
SOAKERS=()      # the subshells of soaks run at the same time (they clean up after themselves)
cleanup() {
  local p
  for p in "${SOAKERS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${SOAKERS[@]}"; do wait "$p" 2>/dev/null || true; done
  for p in "${!LIVE[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${!LIVE[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  local p i
  for i in {1..100}; do
    p=$((20000 + RANDOM % 12000))
    if [[ -z $(ss -Htan "( sport = :$p )") ]]; then
      echo "$p"
      return 0
    fi
  done
  return 1
}
alive() { [[ -e /proc/$1 ]] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
ticks() {
  local s f
  { read -r s <"/proc/$1/stat"; } 2>/dev/null || { echo 0; return; }
  read -ra f <<<"${s##*) }"
  echo $((f[11] + f[12]))
}
established() { ss -Htn state established "( sport = :$1 )" | wc -l; }
# The healthy subscribers' delivery lag (ms): the p99 of the latest second in the lag log
# $1 (loadgen's `unix_s,delivered,p50_us,p99_us,max_us` lines), if that second ended
# within 2.5 s of $2 (unix time); else nothing.
lag_p99_ms() {
  tail -n 1 "$1" 2>/dev/null |
    awk -F, -v now="$2" '$1 ~ /^[0-9]/ && now - $1 < 2.5 { printf "%.1f", $4 / 1000 }'
}
# Whether the server on port $1 answers GET /readyz with 200.
ready() {
  local line
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'GET /readyz HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n' >&3
  IFS= read -r -t 5 line <&3 || line=""
  exec 3<&-
  [[ $line == "HTTP/1.1 200"* ]]
}

soak() {
  local backend=$1 port=$2 spid dir="$OUT" csv svg failed=0
  csv="$dir/soak-$backend.csv"
  svg="$dir/soak-$backend.svg"
  echo "== soak: $backend, ${SECONDS_RUN} s, port $port"
  "$RC" serve --backend "$backend" --threads 2 --listen "127.0.0.1:$port" \
    --max-lag 512KiB --handshake-timeout 5s --log warn 2>"$dir/server-$backend.log" &
  spid=$!
  LIVE[$spid]=1
  local i
  # Started: /readyz answers 200 once every reactor is set up (its rings and descriptors
  # counted below as the baseline).
  for i in {1..200}; do
    ready "$port" && break
    alive "$spid" || { echo "soak: the server did not start:"; cat "$dir/server-$backend.log"; return 1; }
    sleep 0.05
  done
  ready "$port" || { echo "soak: the server is not ready after 10 s"; return 1; }
  local fds0 url="ws://127.0.0.1:$port" lagf="$dir/lag-$backend.csv"
  fds0=$(fds "$spid")
  rm -f "$lagf"

  "$LG" fanout --url "$url" -n 400 --topic-names h0,h1,h2,h3 --publishers 4 --rate 2000 \
    --size 128 --warmup 1s --duration "${SECONDS_RUN}s" --drain 5s --expect-all --json \
    --lag-log "$lagf" >"$dir/healthy-$backend.json" 2>"$dir/healthy-$backend.log" &
  local healthy=$!
  LIVE[$healthy]=1
  "$LG" resume --url "$url" -n 400 --topics 4 --rate 200 --duration "${SECONDS_RUN}s" \
    --reconnect-every 2s --reconnect-fraction 0.2 --expect-all --json \
    >"$dir/churn-$backend.json" 2>"$dir/churn-$backend.log" &
  local churn=$!
  LIVE[$churn]=1
  local abusers=()
  python3 scripts/soak/abuse.py stall 127.0.0.1 "$port" "$SECONDS_RUN" 20 /sub/h0,h1 >"$dir/stall-$backend.json" &
  abusers+=($!)
  python3 scripts/soak/abuse.py garbage 127.0.0.1 "$port" "$SECONDS_RUN" >"$dir/garbage-$backend.json" &
  abusers+=($!)
  python3 scripts/soak/abuse.py slowhead 127.0.0.1 "$port" "$SECONDS_RUN" 50 >"$dir/slowhead-$backend.json" &
  abusers+=($!)
  for i in "${abusers[@]}"; do LIVE[$i]=1; done

  echo "t_s,rss_kib,fds,cpu_pct,connections,lag_p99_ms" >"$csv"
  local t0 t prev now cpu tk prev_tk
  t0=$(date +%s.%N)
  prev=$t0
  prev_tk=$(ticks "$spid")
  local limit=$((SECONDS_RUN + 90))
  while :; do
    sleep 1
    now=$(date +%s.%N)
    tk=$(ticks "$spid")
    cpu=$(awk -v a="$prev_tk" -v b="$tk" -v d="$(awk -v x="$now" -v y="$prev" 'BEGIN{print x-y}')" -v c="$CLK_TCK" \
      'BEGIN{ if (d <= 0) print 0; else printf "%.1f", (b - a) / c / d * 100 }')
    t=$(awk -v x="$now" -v y="$t0" 'BEGIN{printf "%.1f", x-y}')
    echo "$t,$(rss_kib "$spid"),$(fds "$spid"),$cpu,$(established "$port"),$(lag_p99_ms "$lagf" "$now")" >>"$csv"
    prev=$now
    prev_tk=$tk
    if ! alive "$spid"; then
      echo "soak: FAIL: the server died; its log:"
      tail -n 20 "$dir/server-$backend.log"
      return 1
    fi
    local running=0
    for i in "$healthy" "$churn" "${abusers[@]}"; do alive "$i" && running=1; done
    ((running)) || break
    if (($(printf '%.0f' "$t") > limit)); then
      echo "soak: FAIL: the load did not end within ${limit} s"
      return 1
    fi
  done
  local rc_h=0 rc_c=0
  wait "$healthy" || rc_h=$?
  wait "$churn" || rc_c=$?
  for i in "${abusers[@]}"; do wait "$i" || true; done
  unset "LIVE[$healthy]" "LIVE[$churn]"
  for i in "${abusers[@]}"; do unset "LIVE[$i]"; done

  # Every client has gone: the connections (and their fds) must follow.
  for i in {1..150}; do
    (($(established "$port") == 0)) && (($(fds "$spid") <= fds0 + 2)) && break
    sleep 0.1
  done
  local fds_end
  fds_end=$(fds "$spid")
  python3 scripts/soak/chart.py "$csv" "$svg" "ringcast soak: $backend, ${SECONDS_RUN} s"

  # RSS after warm-up: the last third's peak against the middle third's.
  local verdict
  verdict=$(awk -F, 'NR > 1 { t[NR] = $1; r[NR] = $2; n = NR }
    END { a = int(n / 3); b = int(2 * n / 3); m = 0; l = 0
          for (i = 2; i <= n; i++) { if (i > a && i <= b && r[i] > m) m = r[i]; if (i > b && r[i] > l) l = r[i] }
          printf "%d %d %s", m, l, (l <= m * 1.10 + 8192) ? "ok" : "grew" }' "$csv")
  read -r rss_mid rss_last rss_ok <<<"$verdict"

  # Delivery lag after warm-up (the first 5 s left out): the median of the per-second p99
  # over the last third against the middle third's. A backlog that builds up shows as a
  # rising median; a spike or two does not move it.
  verdict=$(awk -F, 'NR > 1 && $1 ~ /^[0-9]/ { n++; if (n > 5) p[++m] = $4 / 1000 }
    function median(lo, hi,   k, i, j, t, a) {
      k = 0; for (i = lo; i <= hi; i++) a[++k] = p[i]
      if (k == 0) return 0
      for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
    END { if (m < 6) { print "0 0 0 0 none"; exit }
          a = int(m / 3); b = int(2 * m / 3); mx = 0; for (i = 1; i <= m; i++) if (p[i] > mx) mx = p[i]
          mid = median(a + 1, b); last = median(b + 1, m); all = median(1, m)
          printf "%.1f %.1f %.1f %.1f %s", all, mid, last, mx, (last <= 2 * mid + 250) ? "ok" : "grew" }' "$lagf" 2>/dev/null || echo "0 0 0 0 none")
  read -r lag_all lag_mid lag_last lag_max lag_ok <<<"$verdict"

  echo "  healthy: $(jq -c '{deliveries: .delivered, lost, dup: .duplicates, ooo: .out_of_order, p99_us: .lat_us.p99}' "$dir/healthy-$backend.json" 2>/dev/null || echo "no report") exit $rc_h"
  echo "  churn:   $(jq -c '{reconnected, resume_p99_us: .resume_us.p99, replayed, gaps: .gap_announced, unannounced: .unannounced_lost, dup: .duplicates}' "$dir/churn-$backend.json" 2>/dev/null || echo "no report") exit $rc_c"
  echo "  abuse:   $(cat "$dir/stall-$backend.json" "$dir/garbage-$backend.json" "$dir/slowhead-$backend.json" | tr '\n' ' ')"
  echo "  RSS peak middle third ${rss_mid} KiB, last third ${rss_last} KiB ($rss_ok); fds before ${fds0}, after ${fds_end}; chart $svg"
  echo "  delivery lag p99 per second after warm-up (ms): median ${lag_all}, middle third ${lag_mid}, last third ${lag_last}, worst second ${lag_max} ($lag_ok); $lagf"
  ((rc_h == 0)) || { echo "soak: FAIL: healthy subscribers lost, reordered or duplicated messages (loadgen exit $rc_h; $dir/healthy-$backend.log)"; failed=1; }
  ((rc_c == 0)) || { echo "soak: FAIL: churning subscribers saw an unannounced loss or a duplicate (loadgen exit $rc_c; $dir/churn-$backend.log)"; failed=1; }
  [[ $rss_ok == ok ]] || { echo "soak: FAIL: RSS kept growing after warm-up ($rss_mid → $rss_last KiB)"; failed=1; }
  case $lag_ok in
  ok) ;;
  grew) echo "soak: FAIL: delivery lag kept growing after warm-up (median p99 $lag_mid → $lag_last ms)"; failed=1 ;;
  *) echo "soak: FAIL: no delivery lag samples in $lagf"; failed=1 ;;
  esac
  ((fds_end <= fds0 + 2)) || { echo "soak: FAIL: fd leak ($fds0 before the load, $fds_end after every client left)"; failed=1; }

  kill -TERM "$spid"
  local rc_s=0
  wait "$spid" || rc_s=$?
  unset "LIVE[$spid]"
  ((rc_s == 0)) || { echo "soak: FAIL: the server exited $rc_s on SIGTERM"; failed=1; }
  return "$failed"
}

# One free port per backend, chosen before any server starts so that two never collide.
declare -A PORT
for b in "${BACKENDS[@]}"; do
  p=$(free_port) || { echo "soak: no free port" >&2; exit 1; }
  while [[ " ${PORT[*]-} " == *" $p "* ]]; do p=$(free_port); done
  PORT[$b]=$p
done

status=0
if ((TOGETHER && ${#BACKENDS[@]} > 1)); then
  # Each backend's soak in a subshell of its own (its own LIVE and cleanup); its report
  # goes to a file, printed once every soak has ended.
  for b in "${BACKENDS[@]}"; do
    (
      SOAKERS=()
      trap cleanup EXIT
      trap 'exit 130' INT TERM
      soak "$b" "${PORT[$b]}"
    ) >"$OUT/report-$b.txt" 2>&1 &
    SOAKERS+=($!)
  done
  echo "== soak: ${BACKENDS[*]} at the same time, ${SECONDS_RUN} s each"
  for i in "${!BACKENDS[@]}"; do
    wait "${SOAKERS[$i]}" || status=1
  done
  SOAKERS=()
  for b in "${BACKENDS[@]}"; do cat "$OUT/report-$b.txt"; done
else
  for b in "${BACKENDS[@]}"; do
    soak "$b" "${PORT[$b]}" || status=1
  done
fi
exit "$status"
