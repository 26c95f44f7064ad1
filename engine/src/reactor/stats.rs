//! Per-reactor counters, summed when read.
//!
//! Each reactor writes only its own counters (relaxed atomics: one writer, readers
//! that want a recent value, not a consistent cut); [`Stats`] is a snapshot of all of them.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// The live counters of one reactor.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $name: AtomicU64,)*
        }

        /// A snapshot of one reactor's counters (or their sum).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct ReactorStats {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> ReactorStats {
                ReactorStats { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl ReactorStats {
            fn add(&mut self, o: &Self) {
                $(self.$name += o.$name;)*
            }
        }
    };
}

counters! {
    /// Open connections (gauge), handshakes included.
    connections,
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
    /// Writes made: `sendmsg` calls (epoll) or send SQEs (io_uring). `frames_out / writes`
    /// is how many messages one write carries.
    writes,
    /// Largest backlog of any connection (own frames plus a topic's lag) seen when
    /// delivering, in bytes (high-water mark).
    lag_high_water,
    /// Topics with subscribers (gauge).
    topics,
    /// Bytes of topic-log chunks alive: held by logs, in-flight sends or half-written
    /// frames (gauge, at the last tick).
    log_bytes,
    /// Slow consumers closed with 1008.
    slow_closed,
    /// Messages skipped by drop-oldest.
    slow_dropped_frames,
    /// Messages skipped by conflate (a newer one of the topic was sent instead).
    slow_conflated_frames,
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
}

/// A snapshot of every reactor's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// One entry per reactor, in reactor order.
    pub reactors: Vec<ReactorStats>,
}

impl Stats {
    /// The counters summed over all reactors (the high-water mark is the largest).
    pub fn total(&self) -> ReactorStats {
        let mut t = ReactorStats::default();
        for r in &self.reactors {
            let hw = t.lag_high_water.max(r.lag_high_water);
            t.add(r);
            t.lag_high_water = hw;
        }
        t
    }
}
