//! Fan-out delivery: publications from the inbox into the topic logs, subscribers marked
//! dirty once per batch, slow consumers handled by cursor arithmetic, one flush per dirty
//! connection.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Core, Driver};
use crate::fanout::policy::Acted;

/// Publications taken from the inbox per loop turn, so that writing (and reading) get
/// their turn under a publish flood; the rest wait for the next turn.
pub(crate) const DRAIN_BUDGET: usize = 2048;

impl<T> Core<T> {
    /// Takes publications from the inbox and appends each to its topic's log (one copy
    /// per message in this reactor); then, per topic published to, visits each subscriber
    /// once — whatever the number of messages — to apply the slow-consumer policy to its
    /// lag and mark it dirty; trims the logs past the slowest cursor; and flushes every
    /// dirty connection once: all its pending bytes in one write.
    pub(crate) fn deliver<D: Driver<Io = T>>(&mut self, driver: &mut D, now: Instant) {
        let Self {
            inbox,
            topics,
            conns,
            dirty,
            touched,
            turn,
            config,
            stats,
            batch,
            scratch: closing,
            high_water,
            ..
        } = self;
        let n = inbox.drain(DRAIN_BUDGET, |p| batch.push(p));
        if n == 0 {
            return;
        }
        for p in batch.drain(..) {
            let Some(id) = topics.id(p.topic.as_str()) else {
                continue;
            };
            let entry = topics.entry_mut(id);
            if !entry.in_turn {
                entry.in_turn = true;
                entry.turn_start = entry.log.head();
                turn.push(id);
            }
            if !entry.touched {
                entry.touched = true;
                touched.push(id);
            }
            topics.append(id, &p.frame);
        }
        let max_lag = config.max_lag_bytes as u64;
        let (mut dropped, mut conflated, mut high) = (0, 0, 0);
        for &id in turn.iter() {
            let entry = topics.entry(id);
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
                high = high.max(outbox.lag(i, log) + outbox.own_bytes() as u64);
                match config.slow_consumer.apply(outbox, i, log, since, max_lag) {
                    Acted::Nothing => {}
                    // Its cursor still counts for the trim below: the frame it may have
                    // started is held when it closes, after this loop.
                    Acted::Close => closing.push(key),
                    Acted::Dropped(n) => dropped += n,
                    Acted::Conflated(n) => conflated += n,
                }
                min = min.min(outbox.subs()[i].cursor);
                if !c.dirty && !blocked {
                    c.dirty = true;
                    dirty.push(key);
                }
            }
            let entry = topics.entry_mut(id);
            entry.log.trim(min);
            entry.in_turn = false;
        }
        turn.clear();
        for &key in closing.iter() {
            if let Some(c) = conns.get_mut(key) {
                c.session.close_slow(now, config, topics, key);
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
        stats.publications.fetch_add(n as u64, Ordering::Relaxed);
        stats.ring_lag.store(inbox.len() as u64, Ordering::Relaxed);
        stats.ring_dropped.store(inbox.dropped(), Ordering::Relaxed);
        stats
            .subscriptions
            .store(topics.subscriptions() as u64, Ordering::Relaxed);
        self.settle();
        let mut list = std::mem::take(&mut self.dirty);
        for &key in &list {
            driver.flush(self, key, now);
        }
        list.clear();
        self.dirty = list;
    }

    /// Trims the logs published to since the last tick past their slowest cursor (a
    /// burst's chunks go back to the pool once every subscriber has it, even if nothing
    /// is published after it).
    pub(super) fn trim_logs(&mut self) {
        let Self {
            topics,
            conns,
            touched,
            ..
        } = self;
        for id in touched.drain(..) {
            let Some(entry) = topics.get_mut(id) else {
                continue;
            };
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
            entry.log.trim(min);
        }
    }
}
