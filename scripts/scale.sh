#!/usr/bin/env bash
# N live subscribers in one ringcast process, one reactor per core, io_uring.
#
# One `ringcast serve --backend uring --threads T` under the machine's hard open-files
# limit (each reactor opens as many rings as its connections need, each ring a table of
# `ulimit -n` direct descriptors), and one `loadgen fanout` run against it: N subscribers
# opened by worker processes (each within its own fd limit, from its own 127.0.0.x source
# address) at a bounded connect rate, then one publisher sending 1 msg/s for --duration
# seconds (64 B payloads), every delivery accounted for (--expect-all: nothing lost,
# reordered or duplicated, no connection failed or closed).
#
# Reports: handshakes per second; server RSS per connection (idle subscribers, just
# connected) and kernel memory per connection (slab + TCP buffers, both ends of each
# loopback connection); the first publication reaching all N (p50/p99/max, lost); the
# 1 msg/s run (published, expected and delivered deliveries, lost, latency); server CPU
# time, TCP retransmits and loopback backlog drops during the run. When not every
# connection opens, it says which limit stopped it (loadgen's first error, the server's
# warnings, the machine's memory and file counts).
#
# Usage: scripts/scale.sh [--conns N] [--threads T] [--duration S] [--connect-rate R]
#                         [--idle-timeout S] [--no-build]
#   --conns N         subscribers (default 250000)
#   --threads T       server reactor threads (default: the cores, nproc)
#   --duration S      seconds of 1 msg/s publishing (default 30)
#   --connect-rate R  connection attempts per second, all workers together (default 20000)
#   --idle-timeout S  the server's --idle-timeout in seconds (default 600: longer than the
#                     run, so idle pings do not overlap the measurements; see the README)
#   --no-build        use the release binaries already built
# Run as root, it sets for the run (and restores at exit): net.ipv4.ip_local_port_range
# "10000 65535" (more ports per source address), net.core.somaxconn and
# net.ipv4.tcp_max_syn_backlog 65535 (connection bursts), net.core.netdev_max_backlog to
# N if lower (a fan-out burst on loopback otherwise drops packets), net.ipv4.tcp_mem to
# 2 pages per connection if lower (messages queued at both ends), and fs.file-max to
# 2.2 × N if lower (each connection is two open files on one machine). Loopback only.
# Writes the server log and loadgen's JSON report to a directory it names.
# Exit status: 0 when every connection opened and every delivery arrived; 1 otherwise;
# 2 on bad flags.
set -euo pipefail
export LC_ALL=C
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

die() {
  echo "scale: $*" >&2
  exit 1
}
usage() {
  sed -n '/^# Usage:/,/^#   --no-build/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

CONNS=250000
THREADS=$(nproc)
DURATION=30
CONNECT_RATE=20000
IDLE=600
BUILD=1
while (($#)); do
  case "$1" in
  --conns | --threads | --duration | --connect-rate | --idle-timeout)
    [[ ${2:-} =~ ^[0-9]+$ ]] || usage
    case "$1" in
    --conns) CONNS=$2 ;;
    --threads) THREADS=$2 ;;
    --duration) DURATION=$2 ;;
    --connect-rate) CONNECT_RATE=$2 ;;
    --idle-timeout) IDLE=$2 ;;
    esac
    shift
    ;;
  --no-build) BUILD=0 ;;
  *) usage ;;
  esac
  shift
done
((CONNS > 0 && THREADS > 0 && DURATION > 0 && CONNECT_RATE > 0)) || usage

for tool in jq ss; do
  command -v "$tool" >/dev/null || die "needs $tool"
done
if ((BUILD)); then
  cargo build --release --quiet -p ringcast -p ringcast-loadgen || die "build failed"
fi
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
[[ -x $BIN/ringcast && -x $BIN/loadgen ]] || die "no release binaries in $BIN"

OUT="${TMPDIR:-/tmp}/ringcast-scale.$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"

# --- Machine settings (root only), restored at exit ---
declare -A SAVED=()
set_sysctl() {
  local key=$1 value=$2 path="/proc/sys/${1//.//}"
  [[ -w $path ]] || return 0
  SAVED[$key]=$(tr -s '\t' ' ' <"$path")
  echo "$value" >"$path" && echo "scale: sysctl $key = $value (was ${SAVED[$key]})"
}
restore_sysctls() {
  local key
  for key in "${!SAVED[@]}"; do
    echo "${SAVED[$key]}" >"/proc/sys/${key//.//}" || true
  done
}
if ((EUID == 0)); then
  set_sysctl net.ipv4.ip_local_port_range "10000 65535"
  set_sysctl net.core.somaxconn 65535
  set_sysctl net.ipv4.tcp_max_syn_backlog 65535
  # Loopback delivers each packet through the per-CPU backlog; when a fan-out burst
  # outruns the softirq (ksoftirqd takes over under load) a backlog of 1000 drops
  # packets, and each drop costs a retransmit timeout (200 ms and up).
  if (($(cat /proc/sys/net/core/netdev_max_backlog) < CONNS)); then
    set_sysctl net.core.netdev_max_backlog "$CONNS"
  fi
  # Both ends' receive queues hold at least a page each once anything waits in them (the
  # clients fall behind a fan-out to a million on two cores); the default limit, sized
  # from RAM, is reached near half a million and then drops packets.
  read -r _ _ tcp_high </proc/sys/net/ipv4/tcp_mem
  pages=$((CONNS * 2))
  if ((tcp_high < pages)); then
    set_sysctl net.ipv4.tcp_mem "$((pages / 2)) $((pages * 3 / 4)) $pages"
  fi
  if (($(cat /proc/sys/fs/file-max) < CONNS * 22 / 10)); then
    set_sysctl fs.file-max $((CONNS * 22 / 10))
  fi
else
  echo "scale: not root: machine settings left as they are (see the README)"
fi

SPID=""
cleanup() {
  if [[ -n $SPID ]] && kill -0 "$SPID" 2>/dev/null; then
    kill -TERM "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
  fi
  restore_sysctls
}
trap cleanup EXIT

# A port below the ephemeral range, so no client socket can hold it.
PORT=""
for _ in {1..100}; do
  p=$((5000 + RANDOM % 4000))
  if [[ -z $(ss -Htan "( sport = :$p )") ]]; then
    PORT=$p
    break
  fi
done
[[ -n $PORT ]] || die "no free port"

NOFILE=$(ulimit -Hn)
# shellcheck disable=SC2016 # expanded by the inner shell
bash -c 'ulimit -n "$1" && exec "$2" serve --backend uring --threads "$3" --listen "127.0.0.1:$4" \
  --idle-timeout "$5"s' _ "$NOFILE" "$BIN/ringcast" "$THREADS" "$PORT" "$IDLE" 2>"$OUT/server.log" &
SPID=$!
for _ in {1..200}; do
  kill -0 "$SPID" 2>/dev/null || die "server exited: $(tail -n 3 "$OUT/server.log")"
  (($(ss -Hltn "( sport = :$PORT )" | wc -l) >= THREADS)) && break
  sleep 0.05
done
(($(ss -Hltn "( sport = :$PORT )" | wc -l) >= THREADS)) || die "server not listening on :$PORT"

snmp_retrans() { awk '/^Tcp:/ { if (h) print $13; h = 1 }' /proc/net/snmp; }
softnet_drops() {
  local sum=0 v
  while read -r _ v _; do sum=$((sum + 16#$v)); done </proc/net/softnet_stat
  echo "$sum"
}
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$1/stat"; }
RETRANS0=$(snmp_retrans)
DROPS0=$(softnet_drops)

echo "scale: $CONNS subscribers, 1 server process (pid $SPID, $THREADS reactors, io_uring," \
  "ulimit -n $NOFILE), connect rate $CONNECT_RATE/s, then 1 msg/s for ${DURATION}s"
set +e
"$BIN/loadgen" fanout --url "ws://127.0.0.1:$PORT" -n "$CONNS" --publishers 1 --rate 1 \
  --duration "${DURATION}s" --warmup 0s --drain 10s --size 64 --expect-all \
  --server-pid "$SPID" --connect-rate "$CONNECT_RATE" --handshake-timeout 30s \
  --progress --json >"$OUT/loadgen.json"
LG_STATUS=$?
set -e
ALIVE=1
kill -0 "$SPID" 2>/dev/null || ALIVE=0
SERVER_CPU="?"
SERVER_FDS="?"
if ((ALIVE)); then
  SERVER_CPU=$(cpu_secs "$SPID")
  # Rings stay open once opened: their count is in the descriptors.
  SERVER_FDS=$(find "/proc/$SPID/fd" -mindepth 1 | wc -l)
fi
RETRANS=$(($(snmp_retrans) - RETRANS0))
DROPS=$(($(softnet_drops) - DROPS0))
{
  echo "MemAvailable after: $(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo) kB"
  echo "file-nr after: $(cat /proc/sys/fs/file-nr)"
  cat /proc/net/sockstat
} >"$OUT/machine.txt"

J="$OUT/loadgen.json"
if ! [[ -s $J ]] || ! jq -e '.scenario and (.error | not)' "$J" >/dev/null 2>&1; then
  echo "scale: loadgen failed (exit $LG_STATUS): $(jq -r '.error // empty' "$J" 2>/dev/null)"
  echo "scale: server warnings:"
  grep -E 'WARN|ERROR' "$OUT/server.log" | tail -n 5 || true
  cat "$OUT/machine.txt"
  echo "scale: logs in $OUT"
  exit 1
fi
q() { jq -r "$1" "$J"; }
printf 'connections      %s of %s subscribers in %.1f s: %.0f handshakes/s (%s failed%s)\n' \
  "$(q .subscribers_connected)" "$CONNS" "$(q .connect_s)" "$(q .conn_per_sec)" \
  "$(q .connect_errors)" "$(q '.first_connect_error // "" | if . == "" then "" else ": " + . end')"
printf 'server RSS       %.0f B per connection (%.1f MiB in all, idle subscribers just connected)\n' \
  "$(q '.memory.server_rss_per_conn // 0')" "$(q '(.memory.server_rss_kib // 0) / 1024')"
printf 'kernel memory    %.0f B per connection, both ends on loopback (slab %.0f B), ~%.0f B per socket\n' \
  "$(q .memory.kernel_per_conn)" "$(q .memory.slab_per_conn)" "$(q '.memory.kernel_per_conn / 2')"
printf 'one publish      reached %s of %s subscribers (%s lost): p50 %.1f ms, p99 %.1f ms, max %.1f ms\n' \
  "$(q .first_publish.delivered)" "$(q .first_publish.expected)" "$(q .first_publish.lost)" \
  "$(q '.first_publish.lat_us.p50 / 1000')" "$(q '.first_publish.lat_us.p99 / 1000')" \
  "$(q '.first_publish.lat_us.max / 1000')"
printf '1 msg/s, %3ss   %s published, %s deliveries expected, %s delivered: %s lost, %s out of order, %s duplicates; p50 %.1f ms, p99 %.1f ms, max %.1f ms\n' \
  "$DURATION" "$(q .published)" "$(q .expected)" "$(q .delivered)" "$(q .lost)" \
  "$(q .out_of_order)" "$(q .duplicates)" "$(q '.lat_us.p50 / 1000')" \
  "$(q '.lat_us.p99 / 1000')" "$(q '.lat_us.max / 1000')"
printf 'server           %s s CPU in all, %.1f s while publishing (%.2f µs per delivery), %s; TCP retransmits %s, loopback backlog drops %s\n' \
  "$SERVER_CPU" "$(q '.server_cpu_s // 0')" "$(q '.server_cpu_us_per_delivery // 0')" \
  "$( ((ALIVE)) && echo "still running" || echo "EXITED")" "$RETRANS" "$DROPS"
grep -E 'io_uring: up to' "$OUT/server.log" | head -n 1 | sed 's/^.*io_uring: /capacity         /; s/ reactor=.*//' || true
printf 'descriptors      %s open in the server (stdio, listeners, eventfds and one per ring; connections are direct descriptors)\n' \
  "$SERVER_FDS"
if [[ $(q .ok) != true || $(q .subscribers_connected) != "$CONNS" || $ALIVE == 0 ]]; then
  echo "scale: FAILED: $(q '.failures | join("; ")')"
  echo "scale: server warnings:"
  grep -E 'WARN|ERROR' "$OUT/server.log" | tail -n 5 || true
  cat "$OUT/machine.txt"
  echo "scale: logs in $OUT"
  exit 1
fi
echo "scale: PASS: $CONNS subscribers in one process, every delivery accounted for (logs in $OUT)"
