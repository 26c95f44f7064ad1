//! The one clock every timestamp in a run is read from.
//!
//! Send timestamps travel inside payloads and may be read by another process (a worker
//! hosting the subscribers while a sibling hosts the publisher), so the clock must be
//! shared by all processes of a run: it is `CLOCK_MONOTONIC` (system-wide, never jumps),
//! minus a base fixed once per run. The parent picks the base at start-up and hands it to
//! its workers (`--clock-base`), so every process subtracts the same value and a
//! timestamp stays small enough for the 48-bit field of a text payload (78 hours).

use std::sync::atomic::{AtomicU64, Ordering};

use rustix::time::{ClockId, clock_gettime};

/// The base subtracted from `CLOCK_MONOTONIC`; 0 until [`init`] runs.
static BASE: AtomicU64 = AtomicU64::new(0);

/// Nanoseconds of `CLOCK_MONOTONIC` since boot.
pub(crate) fn monotonic_raw_ns() -> u64 {
    let ts = clock_gettime(ClockId::Monotonic);
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Fixes the run's clock base: `base` when a parent handed one down, else now. Returns
/// the base in force.
pub(crate) fn init(base: Option<u64>) -> u64 {
    let base = base.unwrap_or_else(|| monotonic_raw_ns().saturating_sub(1_000_000));
    BASE.store(base, Ordering::Relaxed);
    base
}

/// The base in force (see [`init`]).
pub(crate) fn base() -> u64 {
    BASE.load(Ordering::Relaxed)
}

/// Nanoseconds since the run's base: the timestamp carried in payloads.
pub(crate) fn now_ns() -> u64 {
    monotonic_raw_ns().saturating_sub(BASE.load(Ordering::Relaxed))
}

/// Nanoseconds to seconds, for reports.
pub(crate) fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_shared_base() {
        let base = init(None);
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        // A second process given the same base reads the same clock.
        assert!(monotonic_raw_ns() - base >= b);
    }
}
