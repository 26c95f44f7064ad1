#!/usr/bin/env bash
# The whole test suite: formatting, lints, the library's build without the command line
# (and that none of the binary's crates come with it), unit/property/integration/doc
# tests, the browser test (ringcast.js and the demo page in headless Chromium), the protocol
# and fanout unit tests under Miri, a short run of every fuzz target, a 60 s soak per
# backend (scripts/soak.sh), and the Autobahn|Testsuite conformance run (strict) against
# the echo server.
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
trap summary EXIT

export RINGCAST_PROFILE="${RINGCAST_PROFILE:-ci}"

part "cargo fmt --check"
cargo fmt --all -- --check

part "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

part "the library without the command line (default-features = false)"
# What an embedder builds: it compiles, and none of the binary's crates come with it.
cargo check --quiet -p ringcast --no-default-features --lib
cli_deps=$(cargo tree --quiet -p ringcast --no-default-features -e normal --prefix none |
  grep -E '^(clap|tracing-subscriber|signal-hook) ' | sort -u || true)
if [[ -n "$cli_deps" ]]; then
  echo "ringcast without default features depends on: $cli_deps" >&2
  exit 1
fi

part "cargo test (debug: unit, property, integration, doc)"
cargo test --workspace --quiet

if [[ "${SKIP_BROWSER:-0}" == 1 && "${CI:-}" != true ]]; then
  echo "browser: skipped (SKIP_BROWSER=1)"
else
  part "browser: ringcast.js and the demo page in headless Chromium"
  scripts/browser-test.sh
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
  scripts/fuzz.sh "${FUZZ_SECONDS:-5}"
fi

if [[ "${SKIP_SOAK:-0}" == 1 && "${CI:-}" != true ]]; then
  echo "soak: skipped (SKIP_SOAK=1)"
else
  part "soak: ${SOAK_SECONDS:-60}s of mixed load per backend"
  scripts/soak.sh --seconds "${SOAK_SECONDS:-60}" --backend both
fi

if [[ "${SKIP_AUTOBAHN:-0}" == 1 && "${CI:-}" != true ]]; then
  echo "autobahn: skipped (SKIP_AUTOBAHN=1)"
elif [[ -d "$ROOT/../shared/autobahn" || -n "${AUTOBAHN_DIR:-}" ]]; then
  part "Autobahn|Testsuite (strict), epoll and io_uring, 1 and 2 reactors each"
  scripts/autobahn/run.sh core 1 2
else
  if [[ "${CI:-}" == true ]]; then
    echo "autobahn: ../shared/autobahn is missing; CI requires the conformance run" >&2
    exit 1
  fi
  echo "autobahn: skipped (no ../shared/autobahn beside the repository; set AUTOBAHN_DIR)"
fi
