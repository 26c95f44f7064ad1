//! The `resume` scenario's moving parts: when subscribers drop their connections
//! ([`Schedule`]), what one remembers across reconnections ([`Rejoin`]), and what is
//! counted ([`ResumeTally`]). The reactor does the I/O (`reactor/rejoin.rs`).
//!
//! ```text
//!  t0 ── every --reconnect-every, the next --reconnect-fraction of a thread's subscribers
//!        (in turn) reset their TCP connection, no close frame; at --storm-at all do ── t2
//!  one drop:  reset ─► queued (at most --max-pending handshakes in flight per process)
//!             ─► connect, upgrade on /sub/T?since=LAST ─► replayed, then live messages
//!             time to resume = first message after the reset − the reset
//! ```
//! A message counts as recovered by replay when it arrives for the first time on a
//! reconnected connection and was sent before that connection's handshake completed: the
//! subscriber was not subscribed when the server took it, so only the history can have
//! delivered it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::report::Latency;

/// How subscribers drop and come back (fixed for the run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    /// Time between churn rounds, ns.
    pub(crate) every_ns: u64,
    /// Share of a thread's subscribers dropped per round (0: no churn).
    pub(crate) fraction: f64,
    /// When every subscriber drops at once, ns after the start of publishing.
    pub(crate) storm_at_ns: Option<u64>,
    /// Reconnect to the next server rather than the same one.
    pub(crate) elsewhere: bool,
}

/// One reactor thread's drop schedule over its subscribers. Time is an argument, so the
/// schedule is tested without clocks.
#[derive(Debug)]
pub(crate) struct Schedule {
    keys: Vec<usize>,
    per_round: usize,
    every: u64,
    next_round: u64,
    round: usize,
    storm_at: Option<u64>,
    end: u64,
}

/// Subscribers to drop now, from [`Schedule::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Drops {
    /// Their connection keys.
    pub(crate) keys: Vec<usize>,
    /// Whether this is the storm.
    pub(crate) storm: bool,
}

impl Schedule {
    /// A schedule over the subscribers `keys`, publishing from `t0` to `t2` (run clock).
    pub(crate) fn new(plan: &Plan, keys: Vec<usize>, t0: u64, t2: u64) -> Self {
        let per_round = if plan.fraction > 0.0 {
            // Rounded up (a share of a few subscribers is at least one), but 0.3 × 10 is
            // 3.0000000000000004 in floating point, and that is 3.
            ((plan.fraction * keys.len() as f64 - 1e-6).ceil().max(1.0) as usize).min(keys.len())
        } else {
            0
        };
        let every = plan.every_ns.max(1);
        Self {
            keys,
            per_round,
            every,
            next_round: t0.saturating_add(every),
            round: 0,
            storm_at: plan.storm_at_ns.map(|s| t0.saturating_add(s)),
            end: t2,
        }
    }

    /// What is due at `now`: the storm (everyone) or the next round's share. A late call
    /// does one round, not every round it missed; nothing is due from the end on.
    pub(crate) fn poll(&mut self, now: u64) -> Option<Drops> {
        if now >= self.end || self.keys.is_empty() {
            return None;
        }
        let round_due = now >= self.next_round;
        while self.next_round <= now {
            self.next_round = self.next_round.saturating_add(self.every);
        }
        if self.storm_at.is_some_and(|s| now >= s) {
            self.storm_at = None;
            return Some(Drops {
                keys: self.keys.clone(),
                storm: true,
            });
        }
        if !round_due || self.per_round == 0 {
            return None;
        }
        let n = self.keys.len();
        let start = self.round.wrapping_mul(self.per_round) % n;
        self.round += 1;
        Some(Drops {
            keys: (0..self.per_round)
                .map(|i| self.keys[(start + i) % n])
                .collect(),
            storm: false,
        })
    }

    /// When the next drop is due (`None`: no more).
    pub(crate) fn next_at(&self) -> Option<u64> {
        let round = (self.per_round > 0).then_some(self.next_round);
        [round, self.storm_at]
            .into_iter()
            .flatten()
            .min()
            .filter(|&t| t < self.end)
    }
}

/// What a subscriber keeps across its reconnections.
#[derive(Debug, Clone)]
pub(crate) struct Rejoin {
    /// Its subscription path, without a query.
    base: Arc<str>,
    /// When it last reset its connection, until the first message after that.
    dropped_at: Option<u64>,
    /// Whether that reset was the storm's.
    storm: bool,
    /// When its current connection's handshake completed.
    opened_at: u64,
    /// It has reconnected at least once.
    rejoined: bool,
    /// The epoch of its topic's numbering (from the `epoch` message that started its
    /// subscription), named back on a resume.
    epoch: Option<Box<str>>,
}

impl Rejoin {
    /// A subscriber on `base` (e.g. `/sub/t0`).
    pub(crate) fn new(base: Arc<str>) -> Self {
        Self {
            base,
            dropped_at: None,
            storm: false,
            opened_at: 0,
            rejoined: false,
            epoch: None,
        }
    }

    /// The server said its subscription's numbering is `epoch`.
    pub(crate) fn set_epoch(&mut self, epoch: &str) {
        self.epoch = Some(epoch.into());
    }

    /// The path to reconnect on: resuming after `since` if known, else live only.
    pub(crate) fn path(&self, since: Option<u64>) -> Arc<str> {
        match (since, self.epoch.as_deref()) {
            (Some(s), Some(e)) => Arc::from(format!("{}?since={s}&epoch={e}", self.base)),
            (Some(s), None) => Arc::from(format!("{}?since={s}", self.base)),
            (None, _) => Arc::clone(&self.base),
        }
    }

    /// Its connection was reset at `now`.
    pub(crate) fn handle_drop(&mut self, now: u64, storm: bool, t: &mut ResumeTally) {
        if self.dropped_at.is_some() {
            // Reset again before a message came: that reconnection never resumed.
            t.unresumed += 1;
        }
        self.dropped_at = Some(now);
        self.storm = storm;
        self.rejoined = true;
        if storm {
            t.storm_drops += 1;
        } else {
            t.drops += 1;
        }
    }

    /// A handshake completed at `now`.
    pub(crate) fn handle_open(&mut self, now: u64, t: &mut ResumeTally) {
        self.opened_at = now;
        if self.rejoined {
            t.reconnected += 1;
        }
    }

    /// A data message arrived at `now`: the end of a resume in progress.
    pub(crate) fn handle_message(&mut self, now: u64, t: &mut ResumeTally) {
        if let Some(d) = self.dropped_at.take() {
            let h = if self.storm {
                &mut t.storm_resume
            } else {
                &mut t.resume
            };
            h.record(now.saturating_sub(d));
        }
    }

    /// Its payload, sent at `ts_ns`, arrived for the first time.
    pub(crate) fn handle_fresh(&mut self, ts_ns: u64, t: &mut ResumeTally) {
        if self.rejoined && ts_ns < self.opened_at {
            t.replayed += 1;
        }
    }

    /// At the end of the run.
    pub(crate) fn finish(&self, t: &mut ResumeTally) {
        if self.dropped_at.is_some() {
            t.unresumed += 1;
        }
    }
}

/// Reconnection counts and times; sums under [`ResumeTally::merge`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ResumeTally {
    /// Connections reset by churn rounds.
    pub(crate) drops: u64,
    /// Connections reset by the storm.
    pub(crate) storm_drops: u64,
    /// Reconnections whose handshake completed.
    pub(crate) reconnected: u64,
    /// Reconnections that failed (connect, handshake, timeout).
    pub(crate) reconnect_failed: u64,
    /// Resets after which no message arrived before the end (or the next reset).
    pub(crate) unresumed: u64,
    /// Messages recovered by replay (see the module docs).
    pub(crate) replayed: u64,
    /// Time to resume after churn resets, ns.
    pub(crate) resume: Latency,
    /// Time to resume after the storm, ns.
    pub(crate) storm_resume: Latency,
}

impl ResumeTally {
    /// Adds `other` into `self`.
    pub(crate) fn merge(&mut self, other: &Self) {
        self.drops += other.drops;
        self.storm_drops += other.storm_drops;
        self.reconnected += other.reconnected;
        self.reconnect_failed += other.reconnect_failed;
        self.unresumed += other.unresumed;
        self.replayed += other.replayed;
        self.resume.merge(&other.resume);
        self.storm_resume.merge(&other.storm_resume);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn plan(fraction: f64, storm: Option<u64>) -> Plan {
        Plan {
            every_ns: 2 * S,
            fraction,
            storm_at_ns: storm,
            elsewhere: false,
        }
    }

    #[test]
    fn rounds_take_each_subscriber_in_turn() {
        let keys: Vec<usize> = (100..110).collect();
        let mut s = Schedule::new(&plan(0.3, None), keys, 10 * S, 20 * S);
        assert_eq!(s.next_at(), Some(12 * S));
        assert_eq!(s.poll(10 * S), None);
        assert_eq!(s.poll(12 * S - 1), None);
        let d = s.poll(12 * S).expect("round 1");
        assert_eq!(d.keys, [100, 101, 102]);
        assert!(!d.storm);
        assert_eq!(s.poll(12 * S + 5), None, "once per round");
        assert_eq!(s.poll(14 * S).expect("round 2").keys, [103, 104, 105]);
        assert_eq!(s.poll(16 * S).expect("round 3").keys, [106, 107, 108]);
        // Wraps around; a late call does one round and skips the missed ones.
        assert_eq!(s.poll(18 * S + S).expect("round 4").keys, [109, 100, 101]);
        assert_eq!(s.next_at(), None, "next round would be at the end");
        assert_eq!(s.poll(20 * S), None);
    }

    #[test]
    fn storm_takes_everyone_once() {
        let keys: Vec<usize> = (0..4).collect();
        let mut s = Schedule::new(&plan(0.25, Some(5 * S)), keys, 0, 30 * S);
        assert_eq!(s.poll(2 * S).expect("round").keys, [0]);
        assert_eq!(s.poll(4 * S).expect("round").keys, [1]);
        assert_eq!(s.next_at(), Some(5 * S));
        let d = s.poll(5 * S).expect("storm");
        assert!(d.storm);
        assert_eq!(d.keys, [0, 1, 2, 3]);
        assert_eq!(s.next_at(), Some(6 * S));
        assert_eq!(s.poll(6 * S).expect("round").keys, [2]);
        // A storm at the time of a round takes that round's place.
        let mut s = Schedule::new(&plan(0.25, Some(2 * S)), vec![0, 1, 2, 3], 0, 30 * S);
        assert!(s.poll(2 * S).expect("storm").storm);
        assert_eq!(s.poll(2 * S + 1), None);
        assert_eq!(s.poll(4 * S).expect("round").keys, [0]);
    }

    #[test]
    fn no_churn_and_small_shares() {
        let mut s = Schedule::new(&plan(0.0, None), vec![1, 2], 0, 10 * S);
        assert_eq!(s.next_at(), None);
        assert_eq!(s.poll(4 * S), None);
        // A share rounds up: 10 % of 3 subscribers is one of them.
        let mut s = Schedule::new(&plan(0.1, None), vec![7, 8, 9], 0, 10 * S);
        assert_eq!(s.poll(2 * S).expect("round").keys, [7]);
        let mut s = Schedule::new(&plan(0.5, Some(S)), Vec::new(), 0, 10 * S);
        assert_eq!(s.poll(S), None);
    }

    #[test]
    fn rejoin_times_the_resume_and_counts_replays() {
        let mut t = ResumeTally::default();
        let mut r = Rejoin::new(Arc::from("/sub/t0"));
        assert_eq!(&*r.path(None), "/sub/t0");
        assert_eq!(&*r.path(Some(41)), "/sub/t0?since=41");
        r.set_epoch("5f0c93a1d2e47b68");
        assert_eq!(
            &*r.path(Some(41)),
            "/sub/t0?since=41&epoch=5f0c93a1d2e47b68"
        );
        assert_eq!(&*r.path(None), "/sub/t0");
        r.handle_open(100, &mut t);
        r.handle_fresh(50, &mut t);
        assert_eq!((t.reconnected, t.replayed), (0, 0), "first connection");
        r.handle_drop(1_000, false, &mut t);
        r.handle_open(1_500, &mut t);
        r.handle_message(1_700, &mut t);
        r.handle_fresh(1_200, &mut t);
        r.handle_message(1_800, &mut t);
        r.handle_fresh(1_600, &mut t);
        assert_eq!((t.drops, t.reconnected, t.replayed), (1, 1, 1));
        assert_eq!(t.resume.count(), 1);
        assert!((t.resume.summary().max - 0.7).abs() < 0.01, "700 ns");
        // The storm, then a second reset before any message, then the end.
        r.handle_drop(2_000, true, &mut t);
        r.handle_drop(3_000, false, &mut t);
        r.finish(&mut t);
        assert_eq!((t.storm_drops, t.drops, t.unresumed), (1, 2, 2));
        assert_eq!(t.storm_resume.count(), 0);
        let mut sum = ResumeTally::default();
        sum.merge(&t);
        sum.merge(&t);
        assert_eq!((sum.drops, sum.replayed, sum.resume.count()), (4, 2, 2));
    }
}
