//! The bridge's counters and its remote-to-local latency histogram: atomics written by the
//! bridge threads and the publishers, read as a [`ClusterStats`] snapshot.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Upper bounds (µs) of the latency buckets; the last bucket holds everything above.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    50, 100, 200, 300, 500, 750, 1_000, 2_000, 3_000, 5_000, 10_000, 20_000, 50_000, 100_000,
    500_000, 1_000_000,
];

/// What the cluster bridge has done, since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// The broker's URL (as given).
    pub url: String,
    /// This node's id.
    pub node_id: String,
    /// Connected to the broker now.
    pub connected: bool,
    /// Why the broker was last out of reach or lost (`cannot reach: …`, `lost: …`; kept
    /// after reconnecting; `None`: never). The log says it once per outage.
    pub last_error: Option<String>,
    /// Connections made after the first one.
    pub reconnects: u64,
    /// Publications sent to the broker.
    pub sent: u64,
    /// Publications the broker confirmed it numbered and stored (NATS: JetStream acks).
    pub acked: u64,
    /// Publications the broker refused (NATS: a JetStream error answer).
    pub refused: u64,
    /// Local publications that could not go to the broker (it was unreachable or the
    /// outbound queue was full): delivered on this node only, with a number of this node.
    pub dropped_to_broker: u64,
    /// Publications received from the broker and delivered here, from other nodes.
    pub received_remote: u64,
    /// Publications received from the broker that this node published (their only
    /// delivery here: a local publication is delivered when the broker has numbered it).
    pub received_own: u64,
    /// Publications received from other programs (no ringcast header).
    pub received_foreign: u64,
    /// Messages dropped unread: with the ringcast magic but no valid header, or on a topic
    /// name over [`MAX_TOPIC_LEN`](crate::fanout::MAX_TOPIC_LEN) bytes.
    pub malformed: u64,
    /// Sequence numbers skipped on receipt (publications lost, e.g. while disconnected);
    /// `ringcast.v1` subscribers are told with a `gap`.
    pub missed: u64,
    /// Topics subscribed on the broker now.
    pub subscriptions: u64,
    /// Times the broker would not number a topic (NATS: JetStream refused to create its
    /// stream, e.g. at an account's `max_streams`, or did not answer): the topic is served
    /// on this node only, and tried again after a while; the connection stays up.
    pub streams_refused: u64,
    /// Remote-to-local latency (publishing node's send to delivery here), counts per
    /// bucket of [`LATENCY_BUCKETS_US`] (one more for the overflow).
    pub latency_us: Vec<u64>,
}

impl ClusterStats {
    /// The latency under which `q` (0..=1) of the remote publications were delivered, as
    /// the upper bound of its bucket (µs; `None`: none measured or above the last bound).
    pub fn latency_quantile_us(&self, q: f64) -> Option<u64> {
        let total: u64 = self.latency_us.iter().sum();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency_us.iter().enumerate() {
            seen += n;
            if seen >= want {
                return LATENCY_BUCKETS_US.get(i).copied();
            }
        }
        None
    }
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connected: AtomicBool,
    pub(crate) last_error: std::sync::Mutex<Option<String>>,
    pub(crate) reconnects: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) dropped_to_broker: AtomicU64,
    pub(crate) received_remote: AtomicU64,
    pub(crate) received_own: AtomicU64,
    pub(crate) received_foreign: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) missed: AtomicU64,
    pub(crate) subscriptions: AtomicU64,
    pub(crate) streams_refused: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
}

/// Adds one to a counter.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Records one remote-to-local latency.
    pub(crate) fn latency(&self, us: u64) {
        let i = LATENCY_BUCKETS_US.partition_point(|&b| b < us);
        bump(&self.latency[i]);
    }

    pub(crate) fn snapshot(&self, url: &str, node_id: &str) -> ClusterStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClusterStats {
            url: url.to_owned(),
            node_id: node_id.to_owned(),
            connected: self.connected.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            reconnects: l(&self.reconnects),
            sent: l(&self.sent),
            acked: l(&self.acked),
            refused: l(&self.refused),
            dropped_to_broker: l(&self.dropped_to_broker),
            received_remote: l(&self.received_remote),
            received_own: l(&self.received_own),
            received_foreign: l(&self.received_foreign),
            malformed: l(&self.malformed),
            missed: l(&self.missed),
            subscriptions: l(&self.subscriptions),
            streams_refused: l(&self.streams_refused),
            latency_us: self.latency.iter().map(l).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_and_quantiles() {
        let c = Counters::default();
        for us in [10, 50, 51, 400, 2_000_000] {
            c.latency(us);
        }
        let s = c.snapshot("nats://x", "n");
        assert_eq!(s.latency_us[0], 2); // ≤ 50
        assert_eq!(s.latency_us[1], 1); // ≤ 100
        assert_eq!(s.latency_us[4], 1); // ≤ 500
        assert_eq!(s.latency_us[LATENCY_BUCKETS_US.len()], 1);
        assert_eq!(s.latency_quantile_us(0.5), Some(100));
        assert_eq!(s.latency_quantile_us(0.8), Some(500));
        assert_eq!(s.latency_quantile_us(1.0), None);
        assert_eq!(ClusterStats::default().latency_quantile_us(0.5), None);
    }
}
