//! Fan-out delivery: publications from the inbox into the topic logs, then a pass over the
//! subscribers of the topics published to, each visited once per batch: slow consumers
//! handled by cursor arithmetic, and one flush of the connection in the same visit.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::super::stats::{LAG_BUCKETS, lag_bucket};
use super::{Core, Driver};
use crate::fanout::SlowConsumer;
use crate::fanout::log::RECORD_BYTES;
use crate::fanout::policy::Acted;
use crate::fanout::ring::{InboxRx, Publication};
use crate::fanout::topic::{Form, Topics};
use crate::protocol::envelope;

/// Publications taken from the inbox per loop turn, so that writing (and reading) get
/// their turn under a publish flood; the rest wait for the next turn.
pub(crate) const DRAIN_BUDGET: usize = 2048;

/// Subscribers visited (and flushed) per loop turn; the rest, in order, in the next turns.
/// Between two slices the reactor reads its sockets and inbox again and appends what was
/// published to the logs, so a connection further down a long fan-out is written with it
/// too: under load each write carries up to twice as many messages as when the whole list
/// is written before anything new is read (and a message waits half as long in the log).
/// The topics published to meanwhile are visited once the pass ends: once per pass, not
/// once per slice.
pub(crate) const FLUSH_BUDGET: usize = 256;

/// A pass over the subscribers of the topics published to: each visit applies the
/// slow-consumer policy to the subscriber's lag and flushes the connection at once (all its
/// pending bytes in one write), so a connection is touched once per pass, not once to be
/// marked and again to be written. Then the connections whose write completed with more to
/// write during the last pass ([`Core::mark_dirty`]) that no visit flushed.
///
/// A topic's subscribers are visited from the last to the first: a removal moves the last
/// one into the hole (`swap_remove`), so it either moves within what was visited or into
/// what is still to visit (visited twice then: the second flush finds nothing, or a write
/// pending). One that joins meanwhile goes to the end, not visited (it has nothing
/// published pending, or its resume's replay was flushed as it subscribed), but its cursor
/// bounds the trim ([`crate::fanout::topic::TopicEntry::joined_low`]).
#[derive(Debug, Default)]
pub(crate) struct Pass {
    /// The topics to visit, each with its log's head before the batch being delivered.
    topics: Vec<(u32, u64)>,
    /// The topic being visited (an index into `topics`).
    at: usize,
    /// Subscribers of that topic not visited yet: positions `0..left`.
    left: usize,
    /// The lowest cursor seen among them so far (the trim's bound).
    min: u64,
    /// Whether `at`'s visit has begun (`left` and `min` are set).
    begun: bool,
    /// Connections to flush after the topics, unless a visit did.
    later: Vec<usize>,
    /// The next of them.
    next_later: usize,
    /// Whether a pass is under way.
    active: bool,
}

/// What the visits of one slice saw, added to the shared counters once per slice.
#[derive(Default)]
struct Seen {
    dropped: usize,
    conflated: usize,
    high: u64,
    lags: [u64; LAG_BUCKETS.len() + 1],
    lag_sum: u64,
}

impl<T> Core<T> {
    /// Takes publications from the inbox and appends each to its topic's log (one copy
    /// per message in this reactor); then goes on with the pass over the subscribers of
    /// the topics published to ([`Pass`]), or begins one: each subscriber visited once per
    /// pass — whatever the number of messages — has the slow-consumer policy applied to
    /// its lag and is flushed at once (all its pending bytes in one write); a topic's log
    /// is trimmed past the slowest cursor once all its subscribers were visited.
    pub(crate) fn deliver<D: Driver<Io = T>>(&mut self, driver: &mut D, now: Instant) {
        let n = self.absorb(DRAIN_BUDGET);
        let Self {
            topics,
            stats,
            inbox,
            ..
        } = self;
        if n > 0 || topics.absorbed > 0 {
            stats
                .publications
                .fetch_add(std::mem::take(&mut topics.absorbed), Ordering::Relaxed);
            stats.ring_lag.store(inbox.len() as u64, Ordering::Relaxed);
            stats.ring_dropped.store(inbox.dropped(), Ordering::Relaxed);
        }
        if !self.pass.active {
            if self.topics.turn.is_empty() && self.later.is_empty() {
                return;
            }
            self.start_pass();
        }
        self.run_pass(driver, now);
    }

    /// Whether delivery has work left for the next turn: a pass under way, writes that
    /// completed with more to send, or topics published to (their subscribers not visited
    /// yet).
    pub(super) fn has_deliveries(&self) -> bool {
        self.pass.active || !self.later.is_empty() || !self.topics.turn.is_empty()
    }

    /// Begins a pass over the subscribers of the topics published to, then the
    /// connections whose write completed during the last pass with more to write. What is
    /// published from now on is listed for the next pass.
    fn start_pass(&mut self) {
        let Self {
            topics,
            pass,
            later,
            ..
        } = self;
        pass.topics.clear();
        let turn = std::mem::take(&mut topics.turn);
        for &id in &turn {
            // A topic published to by a v1 subscribe's absorb may have lost its last
            // subscriber (and been forgotten) before this delivery.
            if let Some(entry) = topics.get_mut(id) {
                entry.in_turn = false;
                entry.in_pass = true;
                pass.topics.push((id, entry.turn_start));
            }
        }
        topics.turn = turn;
        topics.turn.clear();
        pass.later.clear();
        pass.later.append(later);
        pass.next_later = 0;
        pass.at = 0;
        pass.begun = false;
        pass.active = true;
    }

    /// Visits the next [`FLUSH_BUDGET`] subscribers of the pass under way (see [`Pass`]).
    fn run_pass<D: Driver<Io = T>>(&mut self, driver: &mut D, now: Instant) {
        let max_lag = self.config.max_lag_bytes as u64;
        let policy = self.config.slow_consumer;
        let mut seen = Seen::default();
        let mut budget = FLUSH_BUDGET;
        while budget > 0 {
            let Some(&(id, batch_start)) = self.pass.topics.get(self.pass.at) else {
                break;
            };
            // A topic forgotten since the pass began (its id possibly reused) is done.
            let Some(entry) = self.topics.get_mut(id).filter(|e| e.in_pass) else {
                self.pass.at += 1;
                self.pass.begun = false;
                continue;
            };
            if !self.pass.begun {
                self.pass.begun = true;
                self.pass.left = entry.subscribers.len();
                self.pass.min = u64::MAX;
                entry.joined_low = u64::MAX;
            }
            // Removals may have shortened the list.
            self.pass.left = self.pass.left.min(entry.subscribers.len());
            if self.pass.left == 0 {
                // Every subscriber seen: the log goes past the slowest of them.
                let min = self.pass.min.min(entry.joined_low).min(entry.log.head());
                entry.in_pass = false;
                self.topics.trim(id, min);
                self.pass.at += 1;
                self.pass.begun = false;
                continue;
            }
            self.pass.left -= 1;
            budget -= 1;
            let key = entry.subscribers[self.pass.left] as usize;
            let entry = self.topics.entry(id);
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            let outbox = &mut c.session.outbox;
            let Some(i) = outbox.sub_index(id) else {
                continue;
            };
            let log = &entry.log;
            let blocked = driver.write_blocked(&c.io);
            // A subscriber whose socket took everything last time gets this batch first;
            // one whose write is still pending is judged on all it has.
            let until = if blocked { log.head() } else { batch_start };
            let behind = outbox.lag(i, log);
            let lag = behind + outbox.own_bytes() as u64;
            seen.high = seen.high.max(lag);
            seen.lags[lag_bucket(lag)] += 1;
            seen.lag_sum += lag;
            // The limit holds for all its topics together: what its other topics have
            // pending leaves this one the rest. Counted only once this topic holds more
            // than an equal share of the limit (for a total over it, some topic does).
            let limit = if blocked && behind * outbox.subs().len() as u64 > max_lag {
                max_lag.saturating_sub(outbox.backlog(&self.topics, Some(id)))
            } else {
                max_lag
            };
            // The records of the frames it holds back take memory too: minimum-size
            // frames (2 bytes) would pin 12 times the limit in records. They are counted
            // once it is far enough behind that they could matter.
            let limit = if blocked && behind.saturating_mul(1 + RECORD_BYTES as u64 / 2) > limit {
                let cursor = outbox.subs()[i].cursor;
                limit.saturating_sub(log.record_bytes_from(cursor))
            } else {
                limit
            };
            let mut flush = true;
            match policy.apply(outbox, i, log, until, limit) {
                Acted::Nothing => {}
                // Its cursor still counts for the trim: the frame it may have started is
                // held when it closes, after this slice.
                Acted::Close => {
                    self.scratch.push(key);
                    flush = false;
                }
                Acted::Dropped(s) | Acted::Conflated(s) => {
                    if policy == SlowConsumer::DropOldest {
                        seen.dropped += s.frames;
                    } else {
                        seen.conflated += s.frames;
                    }
                    // A v1 client is told what it missed, before what follows.
                    if let (Form::V1, Some((from, to))) = (entry.form, s.seqs) {
                        outbox.push(envelope::gap(entry.name.as_str(), from, to));
                    }
                }
            }
            if blocked {
                // What it has now (a close frame, for one just judged) goes out once its
                // pending write ends.
                driver.flush_after_write(&c.io);
            } else if flush {
                driver.flush(self, key, now);
            }
            // Where it stands now (a failed write may have removed it).
            let cursor = self
                .conns
                .get(key)
                .and_then(|c| c.session.outbox.subs().get(i))
                .filter(|s| s.topic == id)
                .map_or(u64::MAX, |s| s.cursor);
            self.pass.min = self.pass.min.min(cursor);
        }
        while budget > 0 && self.pass.at >= self.pass.topics.len() {
            let Some(&key) = self.pass.later.get(self.pass.next_later) else {
                self.pass.active = false;
                break;
            };
            self.pass.next_later += 1;
            // Unless a visit flushed it meanwhile.
            if self.conns.get(key).is_some_and(|c| c.dirty) {
                budget -= 1;
                driver.flush(self, key, now);
            }
        }
        self.account(seen, now);
    }

    /// Closes the slow consumers a slice found, and adds what it saw to the counters.
    fn account(&mut self, seen: Seen, now: Instant) {
        let Self {
            topics,
            conns,
            config,
            stats,
            scratch: closing,
            high_water,
            timers_at,
            ..
        } = self;
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
        if seen.dropped > 0 {
            stats
                .slow_dropped_frames
                .fetch_add(seen.dropped as u64, Ordering::Relaxed);
        }
        if seen.conflated > 0 {
            stats
                .slow_conflated_frames
                .fetch_add(seen.conflated as u64, Ordering::Relaxed);
        }
        if seen.high > *high_water {
            *high_water = seen.high;
            stats.lag_high_water.store(seen.high, Ordering::Relaxed);
        }
        for (counter, &n) in stats.lag_buckets.iter().zip(&seen.lags) {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        if seen.lag_sum > 0 {
            stats.lag_sum.fetch_add(seen.lag_sum, Ordering::Relaxed);
        }
        stats
            .subscriptions
            .store(topics.subscriptions() as u64, Ordering::Relaxed);
        if now_closing > 0 {
            self.closing += now_closing;
            self.publish_phases();
        }
        self.settle();
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
