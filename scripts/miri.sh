#!/usr/bin/env bash
# Runs the sans-IO protocol tests and the fanout tests (topic-log chunks, logs, outboxes)
# under Miri, the interpreter that reports undefined behaviour: out-of-bounds or
# use-after-free accesses, reads of uninitialised memory, aliasing violations. The
# chunks' raw allocation and slices (engine/src/fanout/chunk.rs) are the point; the SIMD
# mask kernels are compiled out under Miri (dispatch uses the scalar twin) and property
# tests run a few cases each (`cfg!(miri)`). The UTF-8 validator and the handshake forbid
# unsafe code (what Miri would check there is simdutf8's and httparse's, not ours; their
# fuzz targets run under AddressSanitizer): the default run leaves them out, and
# `scripts/miri.sh "protocol::utf8 protocol::handshake"` runs them.
#
# Usage: scripts/miri.sh [JOB...]   (a job: libtest arguments, e.g. "fanout::"; default:
#        protocol:: without utf8 and handshake, with fanout::log::, and the rest of
#        fanout::, in two jobs)
# Needs the nightly toolchain; installs its miri component when missing. Outside CI a
# missing component is reported and skipped; under CI=true it is an error.
# Environment: MIRIFLAGS is passed through (e.g. -Zmiri-strict-provenance).
set -euo pipefail
# Proptest reads its regression files (getcwd, open): Miri must let it.
export MIRIFLAGS="-Zmiri-disable-isolation ${MIRIFLAGS:-}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

unavailable() {
  echo "miri: $1" >&2
  if [[ "${CI:-}" == true ]]; then
    exit 1
  fi
  echo "miri: skipped (not in CI)" >&2
  exit 0
}

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  unavailable "the nightly toolchain is not installed (rustup toolchain install nightly)"
fi
if ! rustup +nightly component list --installed 2>/dev/null | grep -q '^miri'; then
  if ! out="$(timeout 300 rustup +nightly component add miri rust-src 2>&1)"; then
    unavailable "could not install the miri component: ${out##*$'\n'}"
  fi
fi
cargo +nightly miri setup --quiet 2>/dev/null || cargo +nightly miri setup

# Each job is one Miri process (its libtest arguments); with no arguments, two jobs that
# take about the same time (protocol:: alone took 79 s and fanout:: 117 s; the topic log's
# tests, 21 s, go with protocol). Miri interprets a test binary on one thread, so the jobs run
# at the same time to use every core, after one build.
jobs=("$@")
if ((${#jobs[@]} == 0)); then
  jobs=("protocol:: fanout::log:: --skip protocol::utf8 --skip protocol::handshake"
    "fanout:: --skip fanout::log::")
fi
echo "== miri: ringcast --lib, ${#jobs[@]} jobs =="
start=$SECONDS
cargo +nightly miri test --quiet -p ringcast --lib --no-run
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
pids=()
for i in "${!jobs[@]}"; do
  # shellcheck disable=SC2086 # a job is several libtest arguments
  cargo +nightly miri test --quiet -p ringcast --lib -- ${jobs[$i]} >"$logs/$i" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!jobs[@]}"; do
  if ! wait "${pids[$i]}"; then
    status=1
  fi
  echo "-- miri: ${jobs[$i]}"
  cat "$logs/$i"
done
if ((status != 0)); then
  echo "miri: failed (see above)" >&2
  exit 1
fi
echo "miri: passed in $((SECONDS - start))s"
