#!/usr/bin/env bash
# Builds the cargo-fuzz targets of engine/fuzz and runs each for SECONDS (default 30),
# two at a time (FUZZ_JOBS); fails if any target finds a crash (panic, sanitizer report,
# leak, timeout, out-of-memory). Ends with a table: runs, execs/s, coverage (libFuzzer's `cov:`
# edges and `ft:` features), corpus and peak memory per target.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]     (default: every target)
#
# The committed seeds in engine/fuzz/corpus/<target>/ are read, never written: inputs
# libFuzzer finds go to $CARGO_TARGET_DIR/fuzz/corpus/<target>/, which persists between
# runs on one machine. A crashing input is saved in engine/fuzz/artifacts/<target>/;
# replay it with `cargo +nightly fuzz run <target> <file>` from engine/.
#
# Toolchain: the nightly toolchain when it is installed (`cargo +nightly fuzz`). Without
# it (a machine that cannot download toolchains), the stable toolchain with
# RUSTC_BOOTSTRAP=1, which lets it take the same -Z sanitizer flags; said in the output.
# Environment: FUZZ_TIMEOUT (seconds one input may take, default 10),
# FUZZ_RSS_LIMIT_MB (default 2048), FUZZ_JOBS (targets run at the same time, default 2),
# FUZZ_OPT_LEVEL (the build's opt-level, default cargo fuzz's 3; scripts/test.sh's short
# run uses 1: a quicker build, and in 5 s runs the execs/s of opt-level 3 give or take
# a quarter, target by target).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/engine"

SECONDS_PER_TARGET="${1:-30}"
shift || true
if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || ((SECONDS_PER_TARGET < 1)); then
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
  exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is missing; install it with: cargo install cargo-fuzz --locked" >&2
  exit 1
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  FUZZ=(cargo +nightly fuzz)
  echo "fuzz: toolchain $(rustc +nightly --version)"
else
  export RUSTC_BOOTSTRAP=1
  FUZZ=(cargo fuzz)
  echo "fuzz: no nightly toolchain; using $(rustc --version) with RUSTC_BOOTSTRAP=1"
fi

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ -n "${FUZZ_OPT_LEVEL:-}" ]]; then
  export CARGO_PROFILE_RELEASE_OPT_LEVEL="$FUZZ_OPT_LEVEL"
  echo "fuzz: opt-level $FUZZ_OPT_LEVEL"
fi
WORK="$TARGET_DIR/fuzz"
mkdir -p "$WORK/logs"

if (($# > 0)); then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <("${FUZZ[@]}" list)
fi

start=$(date +%s)
echo "== cargo fuzz build (${#TARGETS[@]} targets) =="
if ! "${FUZZ[@]}" build >"$WORK/logs/build.log" 2>&1; then
  grep -v '^ *Compiling ' "$WORK/logs/build.log" | tail -n 60
  echo "fuzz: build failed" >&2
  exit 1
fi
build_s=$(($(date +%s) - start))

# One target's run: its log in $WORK/logs/TARGET.log, its table row in TARGET.row; exits
# non-zero on a crash (after printing the end of the log).
run_target() {
  local t=$1 seeds corpus log t0 status elapsed line runs execs
  seeds="fuzz/corpus/$t"
  corpus="$WORK/corpus/$t"
  log="$WORK/logs/$t.log"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  echo "== $t: ${SECONDS_PER_TARGET}s, seeds $(find "$seeds" -type f 2>/dev/null | wc -l), corpus $(find "$corpus" -type f | wc -l) =="
  t0=$(date +%s)
  if "${FUZZ[@]}" run "$t" "$corpus" "$seeds" -- \
    -max_total_time="$SECONDS_PER_TARGET" \
    -timeout="${FUZZ_TIMEOUT:-10}" \
    -rss_limit_mb="${FUZZ_RSS_LIMIT_MB:-2048}" \
    -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=CRASH
    echo "---- $t failed; the end of $log:"
    tail -n 60 "$log"
    echo "----"
  fi
  elapsed=$(($(date +%s) - t0))
  # "#1234 DONE cov: 592 ft: 2150 corp: 479/32Kb lim: 461 exec/s: 19699 rss: 688Mb";
  # a crashed run has no DONE line, so take the last status line it printed.
  line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|NEW|REDUCE|pulse|INITED)' "$log" | tail -n 1 || true)
  field() { sed -nE "s|.*[[:space:]]$1: ([^ ]+).*|\1|p" <<<"$line"; }
  runs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$line")
  execs=$(sed -nE 's/^stat::average_exec_per_sec:[[:space:]]*([0-9]+)/\1/p' "$log" | tail -n 1)
  printf '%-20s %6s %10s %9s %6s %7s %12s %8s %5ss\n' "$t" "$status" \
    "${runs:--}" "${execs:-$(field exec/s)}" "$(field cov)" "$(field ft)" \
    "$(field corp)" "$(field rss)" "$elapsed" >"$WORK/logs/$t.row"
  [[ $status == ok ]]
}

# FUZZ_JOBS targets at a time (default 2: libFuzzer runs one process on one core), each
# for its full SECONDS; a target's lines are printed when it has ended.
JOBS="${FUZZ_JOBS:-2}"
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: FUZZ_JOBS must be a positive number" >&2; exit 2; }
declare -A PIDS=()
stop_runs() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap stop_runs EXIT
failed=()
next=0
finish() { # wait for target number $1, print its lines
  local t=${TARGETS[$1]}
  if ! wait "${PIDS[$t]}"; then
    failed+=("$t")
  fi
  unset "PIDS[$t]"
  cat "$WORK/logs/$t.out"
}
for i in "${!TARGETS[@]}"; do
  t=${TARGETS[$i]}
  rm -f "$WORK/logs/$t.row"
  run_target "$t" >"$WORK/logs/$t.out" 2>&1 &
  PIDS[$t]=$!
  if ((i + 1 - next >= JOBS)); then
    finish "$next"
    next=$((next + 1))
  fi
done
while ((next < ${#TARGETS[@]})); do
  finish "$next"
  next=$((next + 1))
done

echo
echo "== fuzz summary: ${SECONDS_PER_TARGET}s per target, build ${build_s}s, total $(($(date +%s) - start))s =="
printf '%-20s %6s %10s %9s %6s %7s %12s %8s %6s\n' target result runs exec/s cov ft corpus rss time
for t in "${TARGETS[@]}"; do
  cat "$WORK/logs/$t.row" 2>/dev/null || printf '%-20s %6s\n' "$t" "?"
done
if ((${#failed[@]} > 0)); then
  echo "fuzz: crashes in: ${failed[*]} (inputs in engine/fuzz/artifacts/<target>/)" >&2
  exit 1
fi
