//! The reactor core both backends share: connections and their sessions, topics, the
//! inbox, fan-out delivery (topic runs, slow consumers), timers, shutdown and counters.
//!
//! A backend is a [`Driver`]: it owns the sockets and moves bytes (epoll: readiness and
//! `readv`/`writev`; io_uring: completions). The loop ([`run`]) is generic over the driver
//! and monomorphised for each, so nothing on the per-message path is dispatched
//! dynamically. The core calls back into the driver for the three things that depend on
//! it: [`Driver::flush`] (start writing a connection's queue), [`Driver::release`] (forget
//! a connection's socket) and [`Driver::write_blocked`] (a write is already pending, so a
//! flush now would do nothing).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use slab::Slab;

use super::session::{Session, Step};
use crate::fanout::Fanout;
use crate::fanout::ring::{InboxRx, Publication};
use crate::fanout::topic::Topics;
use crate::protocol::close::CloseCode;
use crate::server::config::Config;
use crate::server::stats::Counters;

/// How often timers are scanned.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// How often the counters are logged (at debug level).
const STATS_LOG: Duration = Duration::from_secs(10);
/// How long accepting pauses after EMFILE/ENFILE.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Publications taken from the inbox per loop turn, so that writing (and reading) get
/// their turn under a publish flood; the rest wait for the next turn.
const DRAIN_BUDGET: usize = 2048;
/// Wait timeout while publisher reads are deferred by congested inboxes.
const DEFER_RETRY: Duration = Duration::from_millis(1);
/// Slices (frames) per write (Linux `IOV_MAX`).
pub(crate) const IOV_MAX: usize = 1024;
/// Bytes per write, so one huge queue does not hold up the loop turn.
pub(crate) const WRITE_BUDGET: usize = 4 << 20;

/// One connection: its session and the backend's part (`T`).
#[derive(Debug)]
pub(crate) struct Conn<T> {
    pub(crate) session: Session,
    /// In the core's dirty list: frames were queued this turn.
    pub(crate) dirty: bool,
    pub(crate) io: T,
}

/// A backend. See the module docs.
pub(crate) trait Driver: Sized {
    /// The backend's per-connection state.
    type Io;

    /// Whether a write of this connection is pending (waiting for writability, or in
    /// flight): the backend flushes it when that write ends, not the core.
    fn write_blocked(io: &Self::Io) -> bool;

    /// Waits up to `timeout` for I/O and handles it (accepts, reads, write progress).
    fn wait(&mut self, core: &mut Core<Self::Io>, timeout: Duration) -> io::Result<()>;

    /// Work carried over to the next turn that should not wait (input left unread).
    fn has_pending(&self) -> bool;

    /// Publishers whose input waits for the inboxes to drain.
    fn has_deferred(&self) -> bool;

    /// After the wait: resumes carried-over reads and, when the inboxes have room,
    /// deferred publishers.
    fn resume(&mut self, core: &mut Core<Self::Io>, now: Instant);

    /// After delivery: resumes accepting when a back-off has passed.
    fn maintain(&mut self, core: &mut Core<Self::Io>, now: Instant);

    /// Writes (or starts writing) the connection's out-queue and acts on
    /// [`Session::next_step`].
    fn flush(&mut self, core: &mut Core<Self::Io>, key: usize, now: Instant);

    /// Forgets the socket of a connection the core removed.
    fn release(&mut self, key: usize, io: Self::Io);

    /// Stops accepting (shutdown).
    fn stop_accepting(&mut self);

    /// After the loop: releases what the kernel may still use.
    fn finish(&mut self, core: &mut Core<Self::Io>);
}

/// What a reactor owns besides its sockets.
#[derive(Debug)]
pub(crate) struct Core<T> {
    pub(crate) index: usize,
    pub(crate) conns: Slab<Conn<T>>,
    pub(crate) config: Arc<Config>,
    stop: Arc<AtomicBool>,
    pub(crate) topics: Topics,
    inbox: InboxRx,
    pub(crate) fanout: Fanout,
    pub(crate) stats: Arc<Counters>,
    /// This turn's publications, delivered topic run by topic run.
    batch: Vec<Publication>,
    /// Connections that got published frames this turn, to flush once each.
    dirty: Vec<usize>,
    /// Largest out-queue seen, in bytes.
    high_water: u64,
}

impl<T> Core<T> {
    pub(crate) fn new(shared: super::Shared) -> Self {
        let super::Shared {
            index,
            config,
            stop,
            inbox,
            fanout,
            stats,
        } = shared;
        Self {
            index,
            conns: Slab::new(),
            config,
            stop,
            topics: Topics::default(),
            inbox,
            fanout,
            stats,
            batch: Vec::new(),
            dirty: Vec::new(),
            high_water: 0,
        }
    }

    /// Registers a new connection accepted at `now`; returns its key.
    pub(crate) fn insert(&mut self, io: T, now: Instant) -> usize {
        let key = self.conns.insert(Conn {
            session: Session::new(now, &self.config),
            dirty: false,
            io,
        });
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats
            .connections
            .store(self.conns.len() as u64, Ordering::Relaxed);
        key
    }

    /// Records an out-queue length seen before a write.
    /// The connections to read this turn: those with input left over from the last one,
    /// and the publishers deferred by congested inboxes once the inboxes have room again.
    pub(crate) fn retries(
        &self,
        pending: &mut Vec<usize>,
        deferred: &mut Vec<usize>,
    ) -> Vec<usize> {
        let mut retry = std::mem::take(pending);
        if !self.fanout.is_congested() {
            retry.append(deferred);
        }
        retry
    }

    pub(crate) fn note_queue(&mut self, queued: usize) {
        let queued = queued as u64;
        if queued > self.high_water {
            self.high_water = queued;
            self.stats.queue_high_water.store(queued, Ordering::Relaxed);
        }
    }

    /// Counts a completed write.
    pub(crate) fn note_written(&self, frames: usize, bytes: usize) {
        if bytes > 0 {
            self.stats
                .frames_out
                .fetch_add(frames as u64, Ordering::Relaxed);
            self.stats
                .bytes_out
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    /// Removes a connection: its subscriptions, its session, and (through the driver) its
    /// socket.
    pub(crate) fn remove<D: Driver<Io = T>>(&mut self, driver: &mut D, key: usize) {
        if let Some(mut c) = self.conns.try_remove(key) {
            for t in c.session.take_subscriptions() {
                self.topics.unsubscribe(t.as_str(), key);
            }
            driver.release(key, c.io);
            self.stats
                .connections
                .store(self.conns.len() as u64, Ordering::Relaxed);
        }
    }

    /// Runs the session timers of every connection.
    fn tick<D: Driver<Io = T>>(&mut self, driver: &mut D, now: Instant) {
        let mut dead = Vec::new();
        let mut touched = Vec::new();
        for (key, c) in &mut self.conns {
            match c.session.handle_timeout(now, &self.config) {
                Step::Drop => dead.push(key),
                // A timer queued a frame (ping, close) or ended the connection.
                _ if !D::write_blocked(&c.io)
                    && (!c.session.outq.is_empty() || c.session.is_draining()) =>
                {
                    touched.push(key);
                }
                _ => {}
            }
        }
        for key in dead {
            self.remove(driver, key);
        }
        self.stats
            .subscriptions
            .store(self.topics.subscriptions() as u64, Ordering::Relaxed);
        for key in touched {
            driver.flush(self, key, now);
        }
    }

    /// Stops accepting and closes every connection with 1001.
    fn begin_shutdown<D: Driver<Io = T>>(&mut self, driver: &mut D, now: Instant) {
        driver.stop_accepting();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let step =
                self.conns[key]
                    .session
                    .close(CloseCode::GOING_AWAY, "server shutting down", now);
            if step == Step::Drop {
                self.remove(driver, key);
            } else {
                driver.flush(self, key, now);
            }
        }
    }

    /// Takes publications from the inbox, queues each frame (a refcount bump) on every
    /// open subscriber, applies the slow-consumer policy as queues pass their limit, and
    /// flushes every connection that got frames once: all its new frames in one write.
    ///
    /// Consecutive publications to the same topic are delivered as a run: each subscriber
    /// is visited once per run and takes the whole run, so its state is touched once per
    /// batch rather than once per message.
    fn deliver<D: Driver<Io = T>>(&mut self, driver: &mut D, now: Instant) {
        let Self {
            inbox,
            topics,
            conns,
            dirty,
            config,
            stats,
            batch,
            ..
        } = self;
        let n = inbox.drain(DRAIN_BUDGET, |p| batch.push(p));
        if n == 0 {
            return;
        }
        let mut closed = Vec::new();
        let mut high_water = 0;
        let mut start = 0;
        while start < batch.len() {
            let topic = &batch[start].topic;
            let end = start
                + batch[start..]
                    .iter()
                    .position(|p| p.topic != *topic)
                    .unwrap_or(batch.len() - start);
            let run = &batch[start..end];
            start = end;
            let Some(entry) = topics.get(run[0].topic.as_str()) else {
                continue;
            };
            for &key in &entry.subscribers {
                let c = &mut conns[key];
                for p in run {
                    if !c.session.is_open() {
                        break;
                    }
                    c.session.outq.push_tagged(p.frame.clone(), entry.id);
                    let queued = c.session.outq.len_bytes();
                    high_water = high_water.max(queued);
                    if queued > config.max_outq_bytes {
                        let a = c.session.handle_slow(now, config);
                        if a.closed {
                            stats.slow_closed.fetch_add(1, Ordering::Relaxed);
                            closed.push(key);
                        }
                        stats
                            .slow_dropped_frames
                            .fetch_add(a.dropped as u64, Ordering::Relaxed);
                        stats
                            .slow_conflated_frames
                            .fetch_add(a.conflated as u64, Ordering::Relaxed);
                    }
                }
                if !c.dirty && !D::write_blocked(&c.io) {
                    c.dirty = true;
                    dirty.push(key);
                }
            }
        }
        batch.clear();
        if high_water as u64 > self.high_water {
            self.high_water = high_water as u64;
            stats
                .queue_high_water
                .store(high_water as u64, Ordering::Relaxed);
        }
        stats.publications.fetch_add(n as u64, Ordering::Relaxed);
        stats.ring_lag.store(inbox.len() as u64, Ordering::Relaxed);
        stats.ring_dropped.store(inbox.dropped(), Ordering::Relaxed);
        for key in closed {
            for t in conns[key].session.take_subscriptions() {
                topics.unsubscribe(t.as_str(), key);
            }
        }
        stats
            .subscriptions
            .store(topics.subscriptions() as u64, Ordering::Relaxed);
        for key in std::mem::take(&mut self.dirty) {
            driver.flush(self, key, now);
        }
    }
}

/// Runs a reactor until stopped, then closes every connection (1001) and returns once
/// they are gone or the close timeout has passed.
pub(crate) fn run<D: Driver>(mut core: Core<D::Io>, mut driver: D) -> io::Result<()> {
    let mut next_tick = Instant::now() + TICK;
    let mut next_log = Instant::now() + STATS_LOG;
    let mut shutdown_deadline: Option<Instant> = None;
    let result = loop {
        let now = Instant::now();
        let timeout = if driver.has_pending() || core.inbox.len() > 0 {
            Duration::ZERO
        } else if driver.has_deferred() {
            DEFER_RETRY
        } else {
            next_tick.saturating_duration_since(now)
        };
        if let Err(e) = driver.wait(&mut core, timeout) {
            break Err(e);
        }
        let now = Instant::now();
        driver.resume(&mut core, now);
        core.deliver(&mut driver, now);
        driver.maintain(&mut core, now);
        if shutdown_deadline.is_none() && core.stop.load(Ordering::Acquire) {
            shutdown_deadline = Some(now + core.config.limits.close_timeout);
            core.begin_shutdown(&mut driver, now);
        }
        if let Some(deadline) = shutdown_deadline {
            if core.conns.is_empty() || now >= deadline {
                break Ok(());
            }
        }
        if now >= next_tick {
            core.tick(&mut driver, now);
            next_tick = now + TICK;
            if now >= next_log {
                next_log = now + STATS_LOG;
                tracing::debug!(reactor = core.index, stats = ?core.stats.snapshot());
            }
        }
    };
    driver.finish(&mut core);
    result
}
