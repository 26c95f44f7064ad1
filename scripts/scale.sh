#!/usr/bin/env bash
# One ringcast process holding more WebSocket connections than its `ulimit -n`, on io_uring
# (direct descriptors), beside epoll under the same limit (EMFILE, back-off). Loopback only;
# bounded: every client handshake has a 4 s timeout, the whole run takes well under a minute.
#
# Usage: scripts/scale.sh                 (39000 connections, 2 reactors, release build)
# Environment: CONNS (default 39000), THREADS (default 2). Each reactor's direct descriptor
# table is as large as the soft RLIMIT_NOFILE (20000 here), so 2 reactors hold up to 40000
# connections, less the unevenness of SO_REUSEPORT hashing; use THREADS=3 for more.
# The smaller run (ulimit + 1000 connections) is part of `cargo test` (engine/tests/scale.rs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build --release --quiet -p ringcast --bin ringcast
RINGCAST_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ringcast" \
RINGCAST_SCALE_CONNS="${CONNS:-39000}" RINGCAST_SCALE_THREADS="${THREADS:-2}" \
  cargo test --release --quiet -p ringcast --test scale -- --nocapture --test-threads=1 2>&1 |
  grep -oE "(io_uring|epoll): .*|test result.*|panicked.*|SKIPPED.*"
