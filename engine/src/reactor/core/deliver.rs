//! Fan-out delivery: publications from the inbox into the topic logs, subscribers marked
//! dirty once per batch, slow consumers handled by cursor arithmetic, one flush per dirty
//! connection.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::super::stats::{LAG_BUCKETS, lag_bucket};
use super::{Core, Driver};
use crate::fanout::SlowConsumer;
use crate::fanout::policy::Acted;
use crate::fanout::ring::{InboxRx, Publication};
use crate::fanout::topic::{Form, Topics};
use crate::protocol::envelope;

/// Publications taken from the inbox per loop turn, so that writing (and reading) get
/// their turn under a publish flood; the rest wait for the next turn.
pub(crate) const DRAIN_BUDGET: usize = 2048;

/// Dirty connections flushed per loop turn; the rest, in order, in the next turns. Between
/// two slices the reactor reads its sockets and inbox again and appends what was
/// published to the logs, so a connection further down a long fan-out is written with it
/// too: under load each write carries up to twice as many messages as when the whole list
/// is written before anything new is read (and a message waits half as long in the log).
/// The subscribers of the topics published to meanwhile are visited (and marked dirty)
/// once the pass ends: once per pass, not once per slice.
pub(crate) const FLUSH_BUDGET: usize = 256;

impl<T> Core<T> {
    /// Takes publications from the inbox and appends each to its topic's log (one copy
    /// per message in this reactor); then, per topic published to, visits each subscriber
    /// once — whatever the number of messages — to apply the slow-consumer policy to its
    /// lag and mark it dirty; trims the logs past the slowest cursor; and flushes every
    /// dirty connection once: all its pending bytes in one write.
    pub(crate) fn deliver<D: Driver<Io = T>>(&mut self, driver: &mut D, now: Instant) {
        let n = self.absorb(DRAIN_BUDGET);
        let Self {
            topics,
            conns,
            dirty,
            config,
            stats,
            scratch: closing,
            high_water,
            inbox,
            timers_at,
            ..
        } = self;
        if n > 0 || topics.absorbed > 0 {
            stats
                .publications
                .fetch_add(std::mem::take(&mut topics.absorbed), Ordering::Relaxed);
            stats.ring_lag.store(inbox.len() as u64, Ordering::Relaxed);
            stats.ring_dropped.store(inbox.dropped(), Ordering::Relaxed);
        }
        let turn = std::mem::take(&mut topics.turn);
        // While a pass over the dirty connections is under way, its rest is written with
        // what was just appended; the topics published to are visited once it ends.
        if turn.is_empty() || self.pass_left > 0 {
            topics.turn = turn;
            if self.pass_left == 0 {
                self.start_pass();
            }
            return self.flush_dirty(driver, now);
        }
        let max_lag = config.max_lag_bytes as u64;
        let (mut dropped, mut conflated, mut high) = (0, 0, 0);
        // The delivery-lag histogram of this turn, on the stack: a few instructions per
        // visit, added to the shared counters once per turn.
        let (mut lags, mut lag_sum) = ([0u64; LAG_BUCKETS.len() + 1], 0u64);
        for &id in turn.iter() {
            // A topic published to by a v1 subscribe's absorb may have lost its last
            // subscriber (and been forgotten) before this delivery.
            let Some(entry) = topics.get(id) else {
                continue;
            };
            let v1 = entry.form == Form::V1;
            let log = &entry.log;
            let mut min = log.head();
            for &key in &entry.subscribers {
                let key = key as usize;
                let Some(c) = conns.get_mut(key) else {
                    continue;
                };
                let blocked = D::write_blocked(&c.io);
                let outbox = &mut c.session.outbox;
                let Some(i) = outbox.sub_index(id) else {
                    continue;
                };
                // A subscriber whose socket took everything last time gets this batch
                // first; one whose write is still pending is judged on all it has.
                let since = if blocked {
                    log.head()
                } else {
                    entry.turn_start
                };
                let lag = outbox.lag(i, log) + outbox.own_bytes() as u64;
                high = high.max(lag);
                lags[lag_bucket(lag)] += 1;
                lag_sum += lag;
                match config.slow_consumer.apply(outbox, i, log, since, max_lag) {
                    Acted::Nothing => {}
                    // Its cursor still counts for the trim below: the frame it may have
                    // started is held when it closes, after this loop.
                    Acted::Close => closing.push(key),
                    Acted::Dropped(s) | Acted::Conflated(s) => {
                        if config.slow_consumer == SlowConsumer::DropOldest {
                            dropped += s.frames;
                        } else {
                            conflated += s.frames;
                        }
                        // A v1 client is told what it missed, before what follows.
                        if let (true, Some((from, to))) = (v1, s.seqs) {
                            outbox.push(envelope::gap(entry.name.as_str(), from, to));
                        }
                    }
                }
                min = min.min(outbox.subs()[i].cursor);
                // Even one the last pass already wrote everything to joins this pass:
                // what is published before the pass reaches it goes out with it. Left
                // out, it would wait for the pass after (two passes' delay for the tail
                // of the list, e.g. p99 1.3x at 100 msg/s to 10 000 subscribers).
                if !c.dirty && !blocked {
                    c.dirty = true;
                    dirty.push_back(key);
                }
            }
            topics.trim(id, min);
            topics.entry_mut(id).in_turn = false;
        }
        let mut turn = turn;
        turn.clear();
        topics.turn = turn;
        let mut now_closing = 0;
        for &key in closing.iter() {
            if let Some(c) = conns.get_mut(key) {
                let was = c.session.is_closing();
                c.session.close_slow(now, config, topics, key);
                now_closing += usize::from(!was && c.session.is_closing());
                // Its close deadline runs from now.
                if let Some(t) = timers_at.get_mut(key) {
                    *t = 0;
                }
            }
        }
        if !closing.is_empty() {
            stats
                .slow_closed
                .fetch_add(closing.len() as u64, Ordering::Relaxed);
            closing.clear();
        }
        if dropped > 0 {
            stats
                .slow_dropped_frames
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        if conflated > 0 {
            stats
                .slow_conflated_frames
                .fetch_add(conflated as u64, Ordering::Relaxed);
        }
        if high > *high_water {
            *high_water = high;
            stats.lag_high_water.store(high, Ordering::Relaxed);
        }
        for (counter, &n) in stats.lag_buckets.iter().zip(&lags) {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        stats.lag_sum.fetch_add(lag_sum, Ordering::Relaxed);
        stats
            .subscriptions
            .store(topics.subscriptions() as u64, Ordering::Relaxed);
        if now_closing > 0 {
            self.closing += now_closing;
            self.publish_phases();
        }
        self.settle();
        self.start_pass();
        self.flush_dirty(driver, now);
    }

    /// Whether delivery has work left for the next turn: a pass under way, writes that
    /// completed with more to send, or topics published to during a pass that just ended
    /// (their subscribers not visited yet).
    pub(super) fn has_deliveries(&self) -> bool {
        !self.dirty.is_empty() || !self.later.is_empty() || !self.topics.turn.is_empty()
    }

    /// Begins a pass over the dirty connections: those just marked, and those whose write
    /// completed during the last pass with more to write.
    fn start_pass(&mut self) {
        self.dirty.extend(self.later.drain(..));
        self.pass_left = self.dirty.len();
    }

    /// Flushes the next [`FLUSH_BUDGET`] dirty connections: all its pending bytes in one
    /// write each.
    fn flush_dirty<D: Driver<Io = T>>(&mut self, driver: &mut D, now: Instant) {
        for _ in 0..FLUSH_BUDGET {
            let Some(key) = self.dirty.pop_front() else {
                self.pass_left = 0;
                return;
            };
            self.pass_left = self.pass_left.saturating_sub(1);
            driver.flush(self, key, now);
        }
    }

    /// Has connection `key`, whose write completed with more to write, flushed in the
    /// next pass (a driver whose writes complete later, instead of writing at once a few
    /// frames: like a subscriber whose write took everything, it gets the next pass's).
    pub(crate) fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key)
            && !c.dirty
        {
            c.dirty = true;
            self.later.push(key);
        }
    }

    /// Trims the logs of topics that went quiet past their slowest cursor: a burst's
    /// chunks go back to the pool once every subscriber has it, even if nothing is
    /// published after it. A topic published to since the last tick is left to the
    /// delivery visits that follow each publication (each trims it), and kept for a later
    /// tick: under a steady flow the tick visits no subscriber (a fan-out of 10 000 would
    /// otherwise cost 10 000 connection reads ten times a second), and a burst is trimmed
    /// at most two ticks after its last publication.
    pub(super) fn trim_logs(&mut self) {
        let Self { topics, conns, .. } = self;
        let mut touched = std::mem::take(&mut topics.touched);
        let mut kept = 0;
        for i in 0..touched.len() {
            let id = touched[i];
            let Some(entry) = topics.get_mut(id) else {
                continue;
            };
            if std::mem::take(&mut entry.fresh) {
                touched[kept] = id;
                kept += 1;
                continue;
            }
            entry.touched = false;
            let mut min = entry.log.head();
            for &key in &entry.subscribers {
                let sub = conns
                    .get(key as usize)
                    .and_then(|c| c.session.outbox.subs().iter().find(|s| s.topic == id));
                if let Some(s) = sub {
                    min = min.min(s.cursor);
                }
            }
            topics.trim(id, min);
        }
        touched.truncate(kept);
        topics.touched = touched;
    }

    /// Takes up to `max` publications from the inbox into the topic logs (listed in
    /// `topics.turn` for delivery); returns how many.
    pub(crate) fn absorb(&mut self, max: usize) -> usize {
        let Self {
            inbox,
            topics,
            batch,
            ..
        } = self;
        absorb(inbox, topics, batch, max)
    }
}

/// Takes up to `max` publications from `inbox` into the logs of `topics` (through the
/// reused `batch`); returns how many. Also called before a `ringcast.v1` subscription
/// starts, so that it sees every message numbered before it.
pub(crate) fn absorb(
    inbox: &InboxRx,
    topics: &mut Topics,
    batch: &mut Vec<Publication>,
    max: usize,
) -> usize {
    let n = inbox.drain(max, |p| batch.push(p));
    for p in batch.drain(..) {
        topics.absorb(&p);
    }
    n
}
