//! What a run counts, how counts from threads and worker processes merge, and how the
//! result is printed.
//!
//! Each reactor thread fills its own [`Tally`] (no sharing on the hot path); the run
//! merges them when the threads end. A worker process sends its merged `Tally` to the
//! parent as JSON, the latency histogram inside as base64 of hdrhistogram's V2
//! serialization, so the parent merges histograms exactly rather than averaging
//! percentiles.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use serde::{Deserialize, Serialize};

use crate::envelope::V1Tally;
use crate::resume::ResumeTally;

/// Highest latency recorded: 60 s in ns (higher values are clamped).
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
#[derive(Debug, Clone)]
pub(crate) struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram covering 1 ns to 60 s.
    pub(crate) fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts.
        match Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3) {
            Ok(h) => Self(h),
            Err(_) => unreachable!("constant histogram bounds are valid"),
        }
    }

    /// Records one latency, clamped to the histogram's range.
    pub(crate) fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
    }

    /// Forgets every sample.
    pub(crate) fn reset(&mut self) {
        self.0.reset();
    }

    /// Adds `other`'s samples.
    pub(crate) fn merge(&mut self, other: &Self) {
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Samples recorded.
    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    /// The percentiles reported, in µs.
    pub(crate) fn summary(&self) -> LatencySummary {
        let h = &self.0;
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: (h.mean() / 100.0).round() / 10.0,
        }
    }

    /// Base64 of the V2 serialization.
    pub(crate) fn to_base64(&self) -> String {
        let mut bytes = Vec::new();
        // Serializing into a Vec only fails on histograms over 2 GiB of counts array.
        let _ = V2Serializer::new().serialize(&self.0, &mut bytes);
        BASE64.encode(bytes)
    }

    /// Inverse of [`Latency::to_base64`].
    ///
    /// # Errors
    /// A message when the text is not a serialized histogram.
    pub(crate) fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = BASE64
            .decode(text)
            .map_err(|e| format!("histogram base64: {e}"))?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| format!("histogram: {e:?}"))?;
        let mut out = Self::new();
        out.0
            .add(&h)
            .map_err(|e| format!("histogram bounds: {e:?}"))?;
        Ok(out)
    }
}

impl Serialize for Latency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// Latency percentiles in µs (one decimal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LatencySummary {
    /// Median.
    pub(crate) p50: f64,
    /// 90th percentile.
    pub(crate) p90: f64,
    /// 99th percentile.
    pub(crate) p99: f64,
    /// 99.9th percentile.
    pub(crate) p999: f64,
    /// Largest sample.
    pub(crate) max: f64,
    /// Mean.
    pub(crate) mean: f64,
}

/// Message counts of a run (or a thread's share of it); sums under [`Tally::merge`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Tally {
    /// Messages sent by publishers (fan-out) or clients (echo).
    pub(crate) published: u64,
    /// Of those, sent inside the measured window.
    pub(crate) published_measured: u64,
    /// Data messages received (deliveries, or echoes).
    pub(crate) delivered: u64,
    /// Of those, sent inside the measured window (the throughput numerator).
    pub(crate) measured: u64,
    /// Deliveries the connected subscribers should have received.
    pub(crate) expected: u64,
    /// Never received (sequence gaps plus missing tail after the drain).
    pub(crate) lost: u64,
    /// Received after a later sequence number.
    pub(crate) out_of_order: u64,
    /// Received more than once.
    pub(crate) duplicates: u64,
    /// Data messages without a readable stamp (not from this run).
    pub(crate) malformed: u64,
    /// Open connections the server closed or reset before the end.
    pub(crate) closed_by_server: u64,
    /// The first such closure or protocol error, for the report.
    pub(crate) first_problem: Option<String>,
    /// End-to-end latency of measured messages.
    pub(crate) latency: Latency,
    /// Deliveries of each publisher's first message (sequence number 0).
    #[serde(default)]
    pub(crate) first_delivered: u64,
    /// Subscribers that should have received a publisher's first message (one per
    /// subscriber and publisher of its topic that published).
    #[serde(default)]
    pub(crate) first_expected: u64,
    /// End-to-end latency of each publisher's first message, warm-up or not: one
    /// publication reaching every subscriber.
    #[serde(default)]
    pub(crate) first_latency: Latency,
    /// `ringcast.v1` envelope checks (zero under the plain protocol).
    #[serde(default)]
    pub(crate) v1: V1Tally,
    /// Reconnections of the `resume` scenario.
    #[serde(default)]
    pub(crate) resume: ResumeTally,
}

impl Tally {
    /// Adds `other` into `self`.
    pub(crate) fn merge(&mut self, other: &Self) {
        self.published += other.published;
        self.published_measured += other.published_measured;
        self.delivered += other.delivered;
        self.measured += other.measured;
        self.expected += other.expected;
        self.lost += other.lost;
        self.out_of_order += other.out_of_order;
        self.duplicates += other.duplicates;
        self.malformed += other.malformed;
        self.closed_by_server += other.closed_by_server;
        if self.first_problem.is_none() {
            self.first_problem.clone_from(&other.first_problem);
        }
        self.latency.merge(&other.latency);
        self.first_delivered += other.first_delivered;
        self.first_expected += other.first_expected;
        self.first_latency.merge(&other.first_latency);
        self.v1.merge(&other.v1);
        self.resume.merge(&other.resume);
    }
}

/// How connection set-up went; sums under [`ConnectSummary::merge`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ConnectSummary {
    /// Connections attempted.
    pub(crate) planned: u64,
    /// Handshakes completed.
    pub(crate) connected: u64,
    /// Of those, subscribers.
    pub(crate) subscribers: u64,
    /// Of those, publishers.
    pub(crate) publishers: u64,
    /// Attempts that failed (TCP or handshake).
    pub(crate) failed: u64,
    /// Most connections open at once.
    pub(crate) peak_open: u64,
    /// Time from the first attempt to the last outcome, ns (the slowest process).
    pub(crate) elapsed_ns: u64,
    /// The first failure, worded for the user.
    pub(crate) first_error: Option<String>,
    /// Set when the failure makes further attempts pointless (fd limit, no server).
    pub(crate) fatal: bool,
}

impl ConnectSummary {
    /// Adds `other` into `self`; processes ran concurrently, so times take the maximum
    /// and peaks add.
    pub(crate) fn merge(&mut self, other: &Self) {
        self.planned += other.planned;
        self.connected += other.connected;
        self.subscribers += other.subscribers;
        self.publishers += other.publishers;
        self.failed += other.failed;
        self.peak_open += other.peak_open;
        self.elapsed_ns = self.elapsed_ns.max(other.elapsed_ns);
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.fatal |= other.fatal;
    }

    /// Connections per second over the set-up phase.
    pub(crate) fn rate(&self) -> f64 {
        if self.elapsed_ns == 0 {
            0.0
        } else {
            self.connected as f64 / crate::clock::secs(self.elapsed_ns)
        }
    }
}

/// A two-column table for humans.
#[derive(Debug, Default)]
pub(crate) struct Table {
    rows: Vec<(String, String)>,
}

impl Table {
    /// Adds a row.
    pub(crate) fn row(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        self.rows.push((key.to_owned(), value.to_string()));
        self
    }

    /// Renders with aligned columns.
    pub(crate) fn render(&self) -> String {
        let width = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in &self.rows {
            let _ = writeln!(out, "  {k:<width$}  {v}");
        }
        out
    }
}

/// `1234567.8` as `1,234,568`.
pub(crate) fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Latency summary as one human line.
pub(crate) fn latency_line(l: &LatencySummary) -> String {
    format!(
        "p50 {} · p90 {} · p99 {} · p99.9 {} · max {} µs",
        l.p50, l.p90, l.p99, l.p999, l.max
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(range: std::ops::Range<u64>, lost: u64) -> Tally {
        let mut t = Tally {
            published: 10,
            delivered: range.end - range.start,
            expected: 100,
            lost,
            out_of_order: 1,
            duplicates: 2,
            ..Tally::default()
        };
        for v in range {
            t.latency.record(v * 1000);
        }
        t
    }

    #[test]
    fn histogram_survives_json() {
        let t = tally(1..1001, 0);
        let json = serde_json::to_string(&t).expect("serialize");
        let back: Tally = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.latency.count(), 1000);
        assert_eq!(back.latency.summary(), t.latency.summary());
    }

    #[test]
    fn merge_sums_counts_and_histograms() {
        // Two workers: one saw 1..=1000 µs, the other 1001..=2000 µs.
        let a = tally(1..1001, 3);
        let b: Tally =
            serde_json::from_str(&serde_json::to_string(&tally(1001..2001, 4)).expect("ser"))
                .expect("de");
        let mut total = Tally {
            first_problem: None,
            ..Tally::default()
        };
        total.merge(&a);
        total.merge(&b);
        assert_eq!(total.delivered, 2000);
        assert_eq!(total.published, 20);
        assert_eq!(total.expected, 200);
        assert_eq!(total.lost, 7);
        assert_eq!((total.out_of_order, total.duplicates), (2, 4));
        let s = total.latency.summary();
        // The merged median lies at the boundary of the two halves, within 0.1 %.
        assert!((s.p50 - 1000.0).abs() <= 1.0, "p50 {}", s.p50);
        assert!((s.max - 2000.0).abs() <= 2.0, "max {}", s.max);
        assert!((s.p99 - 1980.0).abs() <= 2.0, "p99 {}", s.p99);
    }

    #[test]
    fn connect_summaries_merge() {
        let mut a = ConnectSummary {
            planned: 10,
            connected: 9,
            failed: 1,
            peak_open: 9,
            elapsed_ns: 2_000_000_000,
            first_error: Some("x".into()),
            ..ConnectSummary::default()
        };
        let b = ConnectSummary {
            planned: 10,
            connected: 10,
            peak_open: 10,
            elapsed_ns: 1_000_000_000,
            ..ConnectSummary::default()
        };
        a.merge(&b);
        assert_eq!(
            (a.planned, a.connected, a.failed, a.peak_open),
            (20, 19, 1, 19)
        );
        assert_eq!(a.elapsed_ns, 2_000_000_000);
        assert!((a.rate() - 9.5).abs() < 1e-9);
        assert_eq!(a.first_error.as_deref(), Some("x"));
    }

    #[test]
    fn garbage_histogram_is_an_error() {
        assert!(Latency::from_base64("not base64!").is_err());
        assert!(Latency::from_base64("AAAA").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(thousands(1234567.8), "1,234,568");
        assert_eq!(thousands(12.0), "12");
        let mut t = Table::default();
        t.row("a", 1).row("long key", "v");
        assert_eq!(t.render(), "  a         1\n  long key  v\n");
    }
}
