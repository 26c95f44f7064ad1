//! Per-reactor counters, summed when read.
//!
//! Each reactor writes only its own counters (relaxed atomics: one writer, readers
//! that want a recent value, not a consistent cut); the server's `Stats` is a snapshot of
//! all of them.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// The live counters of one reactor.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $name: AtomicU64,)*
            /// Subscriber visits per delivery-lag bucket ([`LAG_BUCKETS`], then +Inf).
            pub(crate) lag_buckets: [AtomicU64; LAG_BUCKETS.len() + 1],
            /// Sum of the lags observed, in bytes.
            pub(crate) lag_sum: AtomicU64,
        }

        /// A snapshot of one reactor's counters (or their sum).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct ReactorStats {
            $($(#[$doc])* pub $name: u64,)*
            /// The backlog (own frames plus the topic's lag, in bytes) of each subscriber
            /// when delivery visits it: once per subscriber per publish batch.
            pub delivery_lag: LagHistogram,
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> ReactorStats {
                ReactorStats {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    delivery_lag: LagHistogram {
                        buckets: std::array::from_fn(|i| {
                            self.lag_buckets[i].load(Ordering::Relaxed)
                        }),
                        sum: self.lag_sum.load(Ordering::Relaxed),
                    },
                }
            }
        }

        impl ReactorStats {
            /// Adds `o`'s counters to these (the server sums its reactors).
            pub(crate) fn add(&mut self, o: &Self) {
                $(self.$name += o.$name;)*
                for (b, ob) in self.delivery_lag.buckets.iter_mut().zip(o.delivery_lag.buckets) {
                    *b += ob;
                }
                self.delivery_lag.sum += o.delivery_lag.sum;
            }
        }
    };
}

/// Upper bounds, in bytes, of the delivery-lag histogram's buckets (1 KiB · 4^i); a last
/// bucket holds the larger lags.
pub const LAG_BUCKETS: [u64; 8] = [
    1 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
];

/// The bucket of a lag of `bytes`: the first `i` with `bytes <= LAG_BUCKETS[i]`, or
/// `LAG_BUCKETS.len()`. A few instructions (no loop, no branch on the bounds): it runs
/// once per subscriber visit.
#[inline]
pub(crate) fn lag_bucket(bytes: u64) -> usize {
    // Bucket i holds (KiB · 4^(i-1), KiB · 4^i]: the bit length of (bytes - 1) / 1 KiB,
    // halved and rounded up.
    let kib = bytes.saturating_sub(1) >> 10;
    let bits = 64 - kib.leading_zeros() as usize;
    bits.div_ceil(2).min(LAG_BUCKETS.len())
}

/// A histogram of delivery lags (bytes), as counted per bucket (not cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LagHistogram {
    /// Observations per bucket: `buckets[i]` counts lags in `(LAG_BUCKETS[i-1],
    /// LAG_BUCKETS[i]]`, the last one those over every bound.
    pub buckets: [u64; LAG_BUCKETS.len() + 1],
    /// Sum of the lags observed, in bytes.
    pub sum: u64,
}

impl LagHistogram {
    /// Observations in all buckets.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

counters! {
    /// Open connections (gauge), handshakes included.
    connections,
    /// Connections reading their request head (gauge; part of `connections`).
    handshaking,
    /// Connections closing: flushing their last bytes or waiting for the peer's close
    /// (gauge; part of `connections`, refused ones included).
    closing,
    /// Connections accepted since start (those refused by a connection limit included).
    accepted,
    /// Subscriptions (connection × topic pairs, gauge).
    subscriptions,
    /// Messages received from clients.
    messages_in,
    /// Publications taken from the reactor's inbox.
    publications,
    /// Frames written to sockets (whole frames).
    frames_out,
    /// Bytes written to sockets.
    bytes_out,
    /// Writes made: `send`/`sendmsg` calls (epoll) or send SQEs (io_uring).
    /// `frames_out / writes` is how many messages one write carries.
    writes,
    /// Largest backlog of any connection (own frames plus a topic's lag) seen when
    /// delivering, in bytes (high-water mark).
    lag_high_water,
    /// Topics the reactor holds: with subscribers, or kept for their history (`ringcast.v1`
    /// snapshots and resumes) (gauge, at the last tick).
    topics,
    /// Bytes of topic-log chunks alive: held by logs, in-flight sends or half-written
    /// frames (gauge, at the last tick).
    log_bytes,
    /// Bytes the `ringcast.v1` topic logs hold (history and what their subscribers have
    /// pending), large frames included (gauge, at the last sweep of idle topics, once a
    /// second).
    history_bytes,
    /// Slow consumers closed with 1008.
    slow_closed,
    /// Messages skipped by drop-oldest.
    slow_dropped_frames,
    /// Messages skipped by conflate (a newer one of the topic was sent instead).
    slow_conflated_frames,
    /// `ringcast.v1` subscriptions started with a `since` in the topic's current numbering
    /// (or naming none).
    v1_resumes,
    /// `ringcast.v1` resumes that named another numbering (the server restarted, or forgot
    /// the topic), answered with a `reset`.
    v1_resets,
    /// Connections answered `503` because the server was at `max_conns`.
    refused_conns,
    /// Connections answered `503` because their address was at `max_conns_per_ip`.
    refused_per_ip,
    /// Connections answered `503` because the reactor was at `max_pending_handshakes`.
    refused_handshakes,
    /// Publications this reactor missed because its inbox was full.
    ring_dropped,
    /// Publications waiting in the inbox when last drained (gauge).
    ring_lag,
    /// Connections upgraded to WebSocket.
    upgrades,
    /// Plain HTTP requests (no `Upgrade`) answered by the handler, whatever the status.
    http_requests,
    /// Requests refused with 400 (malformed, or a bad upgrade).
    rejected_400,
    /// Requests refused with 401 (a token missing or wrong).
    rejected_401,
    /// Requests refused with 403 (an `Origin` not allowed).
    rejected_403,
    /// Upgrade requests refused with 404 (no WebSocket endpoint at the path).
    rejected_404,
    /// Requests refused with 405 (a method not allowed).
    rejected_405,
    /// Upgrade requests refused with 426 (a WebSocket version other than 13).
    rejected_426,
    /// Requests refused with 431 (the head over its limit, or too many header fields).
    rejected_431,
    /// Requests refused with another status (the handler's own).
    rejected_other,
    /// Connections dropped because their request head was not complete in time.
    handshake_timeouts,
}

impl Counters {
    /// Counts a request refused with `status` (connection limits are counted apart).
    pub(crate) fn count_rejection(&self, status: u16) {
        let c = match status {
            400 => &self.rejected_400,
            401 => &self.rejected_401,
            403 => &self.rejected_403,
            404 => &self.rejected_404,
            405 => &self.rejected_405,
            426 => &self.rejected_426,
            431 => &self.rejected_431,
            _ => &self.rejected_other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_buckets_hold_their_bounds() {
        for (i, &bound) in LAG_BUCKETS.iter().enumerate() {
            assert_eq!(lag_bucket(bound), i, "{bound}");
            assert_eq!(lag_bucket(bound + 1), i + 1, "{bound} + 1");
        }
        assert_eq!(lag_bucket(0), 0);
        assert_eq!(lag_bucket(u64::MAX), LAG_BUCKETS.len());
    }
}
