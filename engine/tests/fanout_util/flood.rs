//! A flood past a stalled subscriber, shared by the slow-consumer tests: the test thread
//! publishes in small batches and reads each batch from a healthy subscriber before the next
//! one, so the healthy subscriber's lag never nears the limit; a stalled subscriber passes it
//! after a few dozen messages, and then gets many times the limit more.

use std::time::Duration;

use ringcast::EngineHandle;
use ringcast::fanout::SlowConsumer;
use ringcast::protocol::conn::Limits;
use ringcast::server::{Backend, ReactorStats};
use tungstenite::Message;

use super::{Ws, builder, measuring_memory, next_data, rss_kib, start};

pub(crate) const MAX_LAG: usize = 64 << 10;
/// Payload size; each frame is this plus a 4-byte header.
pub(crate) const SIZE: usize = 4000;
pub(crate) const FRAME: usize = SIZE + 4;
/// Messages per batch: 32 KB, half the lag limit.
pub(crate) const BATCH: u64 = 8;
/// Bytes published after the policy first acted: 500 times the lag limit.
pub(crate) const AFTER_TRIGGER: usize = 32 << 20;
/// A stall needs the server's send buffer, the client's receive buffer and the lag
/// limit to fill: far less than this.
pub(crate) const MAX_BEFORE_TRIGGER: u64 = 4096;
/// What the process may grow by while `AFTER_TRIGGER` bytes go by a stalled subscriber (a
/// sanity bound: the engine runs in this process, beside the other tests of this file).
pub(crate) const MAX_RSS_GROWTH_KIB: u64 = 24 << 10;
/// Live chunk bytes allowed at the end of a flood (`log_bytes`, all reactors): a few
/// chunks per topic and reactor, far below `AFTER_TRIGGER`.
pub(crate) const MAX_LOG_BYTES: u64 = 4 << 20;

pub(crate) fn engine(backend: Backend, policy: SlowConsumer) -> EngineHandle {
    start(
        builder(backend)
            .slow_consumer(policy)
            .max_lag_bytes(MAX_LAG)
            .sndbuf(4096)
            // Plain subscribers: the RSS bound is about their logs, not a v1 history.
            .history(ringcast::fanout::History {
                messages: 0,
                ..Default::default()
            })
            .limits(Limits {
                // Long enough for a whole flood to pass between the policy closing a stalled
                // subscriber and the test reading its close frame, on a loaded machine with
                // both backends' tests running.
                close_timeout: Duration::from_secs(8),
                ..Limits::default()
            }),
    )
}

/// Message `seq`: its sequence number, then padding.
pub(crate) fn payload(seq: u64) -> Vec<u8> {
    let mut p = vec![0u8; SIZE];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p
}

pub(crate) fn seq_of(m: Message) -> u64 {
    match m {
        Message::Binary(b) => {
            assert_eq!(b.len(), SIZE, "payload size");
            u64::from_be_bytes(b[..8].try_into().unwrap())
        }
        other => panic!("expected a binary message, got {other:?}"),
    }
}

/// Publishes to `topics` in turn (message `seq` goes to `topics[seq % n]`) and checks that
/// the healthy subscriber gets every message, in order.
pub(crate) struct Flood<'a> {
    pub(crate) h: &'a EngineHandle,
    pub(crate) healthy: Ws,
    pub(crate) topics: &'a [&'a str],
    pub(crate) next: u64,
}

impl Flood<'_> {
    /// Publishes a batch and checks the healthy subscriber gets all of it, in publish
    /// order per topic (order across topics is not promised).
    pub(crate) fn batch(&mut self) {
        let first = self.next;
        for _ in 0..BATCH {
            let topic = self.topics[(self.next % self.topics.len() as u64) as usize];
            let r = self.h.publish_binary(topic, &payload(self.next));
            assert!(r.is_complete(), "{r:?}");
            self.next += 1;
        }
        expect(
            &mut self.healthy,
            first..self.next,
            self.topics.len() as u64,
        );
    }

    /// Floods until `acted` holds (the policy acted on the stalled subscriber), then as
    /// much again as [`AFTER_TRIGGER`]; returns the last counters and the RSS growth.
    ///
    /// Floods of one test process run one at a time, and no engine starts meanwhile (each
    /// test runs per backend, so twice as many engines share the process): the RSS bound
    /// is process-wide. The engine's own count of live chunk bytes is checked too.
    pub(crate) fn run(&mut self, acted: impl Fn(&ReactorStats) -> bool) -> (ReactorStats, u64) {
        let _memory = measuring_memory();
        let rss0 = rss_kib();
        while !acted(&self.h.stats().total()) {
            assert!(
                self.next < MAX_BEFORE_TRIGGER,
                "the policy never acted after {} messages: {:#?}",
                self.next,
                self.h.stats().total()
            );
            self.batch();
        }
        let trigger = self.next;
        while ((self.next - trigger) as usize) * SIZE < AFTER_TRIGGER {
            self.batch();
        }
        let growth = rss_kib().saturating_sub(rss0);
        let t = self.h.stats().total();
        // The policy acts once a subscriber is past the limit, seen at a delivery; one
        // delivery carries what the reactor's inbox held: a test batch, or, when that
        // reactor fell behind the healthy subscriber's, up to 2048 publications.
        assert!(
            t.lag_high_water as usize <= MAX_LAG + 2048 * FRAME,
            "a subscriber was {} bytes behind, over the limit {MAX_LAG} plus a delivery",
            t.lag_high_water
        );
        assert!(
            growth <= MAX_RSS_GROWTH_KIB,
            "RSS grew by {growth} KiB while {AFTER_TRIGGER} bytes were published"
        );
        // What the logs hold is bounded by the lag limit per subscription, not by what
        // went by: a few chunks per topic and reactor.
        assert!(
            t.log_bytes <= MAX_LOG_BYTES,
            "{} bytes of chunks alive after {AFTER_TRIGGER} bytes were published",
            t.log_bytes
        );
        (t, growth)
    }
}

/// Reads the messages `seqs` (message `s` on topic `s % topics`) from `ws`: all of them, in
/// publish order per topic (order across topics is not promised).
pub(crate) fn expect(ws: &mut Ws, seqs: std::ops::Range<u64>, topics: u64) {
    let mut got: Vec<u64> = seqs.clone().map(|_| seq_of(next_data(ws))).collect();
    for t in 0..topics {
        let of_t: Vec<u64> = got.iter().copied().filter(|s| s % topics == t).collect();
        assert!(
            of_t.windows(2).all(|w| w[0] < w[1]),
            "topic {t} out of order: {got:?}"
        );
    }
    got.sort_unstable();
    assert_eq!(got, seqs.collect::<Vec<_>>(), "a message was lost");
}

/// Reads `ws` until `last` of every topic arrived; returns the sequence numbers in order.
pub(crate) fn drain_until(ws: &mut Ws, last: &[u64]) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut missing = last.to_vec();
    while !missing.is_empty() {
        let s = seq_of(next_data(ws));
        missing.retain(|&l| l != s);
        seen.push(s);
    }
    seen
}
