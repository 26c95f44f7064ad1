#!/usr/bin/env bash
# The whole test suite: formatting, lints, the library's build without the command line
# (and that none of the binary's crates come with it), the bench peers' tests (the
# benchmark report's unit tests, raw-batch in both write modes), unit/property/
# integration/doc tests, the browser test (ringcast.js and the demo page in headless
# Chromium), the protocol and fanout unit tests under Miri, a
# short run of every fuzz target, a 60 s soak per backend (scripts/soak.sh), and the
# Autobahn|Testsuite conformance run (strict) against the echo server.
#
# What waits rather than computes runs side by side: the test binaries (cargo-nextest,
# which .ci/run installs; plain cargo test without it), two fuzz targets at a time, the
# two backends' soaks, the four Autobahn runs, and the Autobahn suite's install (in the
# background from the start). Time per part through .ci/run on a clean clone, on the
# 2-core AMD EPYC VM (about half as fast as the Xeon VM where the same command took
# 578-628 s): 878 s in all (993 s when each integration-test file was a test binary of
# its own, 1 256 s before Miri left out the modules that forbid unsafe code and the debug
# builds dropped all but line tables): 1s fmt, 77s clippy, 30s the bench peers' tests
# (bench/peers is a workspace of its own, built into the same target directory), 163s
# cargo test, 37s browser, 168s Miri, 164s fuzz (its build at opt-level 1 also compiles
# the library without the command line), 134s the soak's and Autobahn's binaries, 66s
# soak (both backends at once), 38s Autobahn (four runs at once).
#
# Usage: scripts/test.sh            (the README's test command; CI runs it via .ci/run)
# Environment: SKIP_BROWSER=1 skips the browser test (scripts/browser-test.sh; needs
# Debian's chromium and Node.js 20+, which .ci/run installs) outside CI;
# SKIP_MIRI=1 skips the Miri run (scripts/miri.sh) outside CI;
# SKIP_AUTOBAHN=1 skips the conformance run outside CI; SKIP_FUZZ=1 skips the
# fuzz run outside CI; FUZZ_SECONDS sets its time per target (default 5; needs
# cargo-fuzz, which .ci/run installs); SKIP_SOAK=1 skips the soak outside CI,
# SOAK_SECONDS sets its length per backend (default 60). The soak and the conformance run
# use binaries of the `ci` cargo profile (optimised, no fat LTO: quick to build);
# RINGCAST_PROFILE=release runs them on the benchmark build instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Each part's wall time, printed as it ends and summed up at the end (CI's budget).
declare -a TIMES=()
part_name="" part_start=$SECONDS
part() {
  part_end
  part_name="$1" part_start=$SECONDS
  echo "== $1 =="
}
part_end() {
  if [[ -n "$part_name" ]]; then
    TIMES+=("$(printf '%5ds  %s' $((SECONDS - part_start)) "$part_name")")
  fi
  part_name=""
}
summary() {
  part_end
  echo "== time per part =="
  printf '%s\n' "${TIMES[@]}"
  echo "$(printf '%5ds' "$SECONDS")  in all"
}

export RINGCAST_PROFILE="${RINGCAST_PROFILE:-ci}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# Debug builds with line tables only (file and line in backtraces, no variable info): the
# test binaries link a fifth quicker. Set for every build of the command, so the bench
# peers' tests (a workspace of their own, built into the same target directory) reuse the
# dependencies the two workspaces share.
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"

# The conformance run, when it runs: its suite (a Python venv, ../shared/autobahn/setup.sh;
# about 25 s on a fresh machine, mostly downloads) is installed in the background from
# the start, and the Autobahn part waits for it.
run_autobahn=0 ab_setup_pid="" ab_setup_log=""
if [[ "${SKIP_AUTOBAHN:-0}" == 1 && "${CI:-}" != true ]]; then
  :
elif [[ -d "$ROOT/../shared/autobahn" || -n "${AUTOBAHN_DIR:-}" ]]; then
  run_autobahn=1
  export AUTOBAHN_DIR="${AUTOBAHN_DIR:-$ROOT/../shared/autobahn}"
  ab_setup_log=$(mktemp)
  SKIP_NODE=1 "$AUTOBAHN_DIR/setup.sh" >"$ab_setup_log" 2>&1 &
  ab_setup_pid=$!
fi
on_exit() {
  if [[ -n "$ab_setup_pid" ]]; then
    kill "$ab_setup_pid" 2>/dev/null || true
    wait "$ab_setup_pid" 2>/dev/null || true
  fi
  [[ -z "$ab_setup_log" ]] || rm -f "$ab_setup_log"
  summary
}
trap on_exit EXIT

part "cargo fmt --check"
cargo fmt --all -- --check

part "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

part "the library without the command line (default-features = false)"
# What an embedder builds: it compiles, and none of the binary's crates come with it. The
# fuzz build below compiles it so (engine/fuzz depends on ringcast without default
# features); checked here only when that build is skipped.
if [[ "${SKIP_FUZZ:-0}" == 1 && "${CI:-}" != true ]]; then
  cargo check --quiet -p ringcast --no-default-features --lib
fi
cli_deps=$(cargo tree --quiet -p ringcast --no-default-features -e normal --prefix none |
  grep -E '^(clap|tracing-subscriber|signal-hook) ' | sort -u || true)
if [[ -n "$cli_deps" ]]; then
  echo "ringcast without default features depends on: $cli_deps" >&2
  exit 1
fi

part "bench peers (the benchmark's report; raw-batch in both write modes)"
# bench/peers is a workspace of its own (the comparison servers); its report's arithmetic
# (paired ratios, CPU attribution) and the raw-batch ceiling's delivery, with `write` and
# with io_uring sends (its only unsafe code), are tested here. Without the tokio peers
# (default feature `tokio-peers`): the test would build them, and their crates, for nothing.
cargo test --quiet --manifest-path bench/peers/Cargo.toml --target-dir "$TARGET_DIR" \
  --no-default-features --bin bench-report --bin bench-pool --test raw_batch

part "cargo test (debug: unit, property, integration, doc)"
# cargo-nextest (installed by .ci/run) runs the test binaries, and the tests in each, side
# by side: most of them wait on sockets, timers and child processes, not on the CPU.
# Without it, cargo test runs the same tests one binary after another.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --cargo-quiet --test-threads 8 --status-level fail \
    --final-status-level slow --hide-progress-bar
  cargo test --workspace --doc --quiet
else
  echo "cargo-nextest is not installed (cargo install cargo-nextest --locked): cargo test runs the tests one binary at a time"
  cargo test --workspace --quiet
fi

if [[ "${SKIP_BROWSER:-0}" == 1 && "${CI:-}" != true ]]; then
  echo "browser: skipped (SKIP_BROWSER=1)"
else
  part "browser: ringcast.js and the demo page in headless Chromium"
  # The debug binary the cargo tests built (with the workspace's features): building it
  # again for the ringcast package alone would compile it again.
  RINGCAST_BIN="$TARGET_DIR/debug/ringcast" scripts/browser-test.sh
fi

if [[ "${SKIP_MIRI:-0}" == 1 && "${CI:-}" != true ]]; then
  echo "miri: skipped (SKIP_MIRI=1)"
else
  part "miri: protocol and fanout unit tests"
  scripts/miri.sh
fi

if [[ "${SKIP_FUZZ:-0}" == 1 && "${CI:-}" != true ]]; then
  echo "fuzz: skipped (SKIP_FUZZ=1)"
else
  part "cargo fuzz: every target for ${FUZZ_SECONDS:-5}s"
  # opt-level 1: a quicker build (60-70 s from cold, about 95 s at opt-level 3), fast
  # enough for a few seconds a target.
  FUZZ_OPT_LEVEL="${FUZZ_OPT_LEVEL:-1}" scripts/fuzz.sh "${FUZZ_SECONDS:-5}"
fi

run_soak=1
if [[ "${SKIP_SOAK:-0}" == 1 && "${CI:-}" != true ]]; then
  run_soak=0
fi
if ((run_soak || run_autobahn)); then
  # One build of the server and load generator for both: built apart, with each one's
  # own features, the server would be compiled twice.
  part "build: the soak's and Autobahn's binaries (cargo profile $RINGCAST_PROFILE)"
  cargo build --profile "$RINGCAST_PROFILE" --quiet -p ringcast -p ringcast-loadgen
fi

if ((run_soak)); then
  part "soak: ${SOAK_SECONDS:-60}s of mixed load per backend, both at once"
  scripts/soak.sh --seconds "${SOAK_SECONDS:-60}" --backend both
else
  echo "soak: skipped (SKIP_SOAK=1)"
fi

if [[ "${SKIP_AUTOBAHN:-0}" == 1 && "${CI:-}" != true ]]; then
  echo "autobahn: skipped (SKIP_AUTOBAHN=1)"
elif ((run_autobahn)); then
  part "Autobahn|Testsuite (strict), epoll and io_uring, 1 and 2 reactors each, all at once"
  ab_ok=1
  wait "$ab_setup_pid" || ab_ok=0
  ab_setup_pid=""
  cat "$ab_setup_log"
  if ((!ab_ok)); then
    echo "autobahn: the suite's setup failed (above)" >&2
    exit 1
  fi
  RINGCAST_BIN="$TARGET_DIR/$RINGCAST_PROFILE/ringcast" scripts/autobahn/run.sh core 1 2
else
  if [[ "${CI:-}" == true ]]; then
    echo "autobahn: ../shared/autobahn is missing; CI requires the conformance run" >&2
    exit 1
  fi
  echo "autobahn: skipped (no ../shared/autobahn beside the repository; set AUTOBAHN_DIR)"
fi
