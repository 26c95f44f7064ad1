//! The reactor core both backends share: connections and their sessions, topics and
//! their logs, the inbox, fan-out delivery and slow consumers ([`deliver`]), timers,
//! shutdown, counters, and the rules both drivers follow: what to do with input, when to
//! read, what follows a write, how accepting backs off ([`accept`]).
//!
//! A backend is a [`Driver`]: it owns the sockets and moves bytes (epoll: readiness and
//! `readv`/`writev`; io_uring: completions). The loop ([`run`]) is generic over the driver
//! and monomorphised for each, so nothing on the per-message path is dispatched
//! dynamically. The core calls back into the driver for what depends on it:
//! [`Driver::flush`] (start writing a connection's pending bytes), [`Driver::release`]
//! (forget a connection's socket), [`Driver::write_blocked`] (a write is already
//! pending, so a flush now would do nothing) and [`Driver::flush_after_write`] (then
//! flush once it ends).

pub(crate) mod accept;
pub(crate) mod admit;
mod deliver;
pub(crate) mod shutdown;

pub(crate) use deliver::absorb;

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use slab::Slab;

use self::admit::{Admission, Ticket};
use self::shutdown::{Quiesced, STOP_WAIT};
use super::config::Config;
use super::session::{Ctx, Session, Step};
use super::stats::Counters;
use crate::fanout::Fanout;
use crate::fanout::outbox::Written;
use crate::fanout::ring::{InboxRx, Publication};
use crate::fanout::topic::Topics;
use crate::protocol::close::CloseCode;
use crate::protocol::conn::Limits;

/// Frames, bytes and writes counted during a loop turn.
#[derive(Debug, Default)]
struct OutTally {
    frames: u64,
    bytes: u64,
    writes: u64,
}

/// How often timers are scanned.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// Most connection slots one tick runs the timers of. A reactor with more connections
/// runs the next share of them each tick, so a tick's work stays bounded (a full scan of
/// half a million sessions every 100 ms would cost a quarter of the reactor's time) and
/// each connection's timers run at least every `connections / TIMER_BATCH` ticks: 100 ms
/// apart up to 32 768 connections, 1.6 s apart at half a million.
const TIMER_BATCH: usize = 32_768;
/// Most ticks between two runs of a connection's timers. A connection's timers run at the
/// tick its next deadline falls in, or this many ticks on (1 s) if that is later: a
/// deadline brought forward by a path that does not say so is late by at most that.
const TIMER_RECHECK: u32 = 10;
/// Ticks between sweeps for idle topics.
const SWEEP_TICKS: u32 = 10;
/// How often the counters are logged (at debug level).
const STATS_LOG: Duration = Duration::from_secs(10);
/// Wait timeout while publisher reads are deferred by congested inboxes.
const DEFER_RETRY: Duration = Duration::from_millis(1);
/// Slices per write (Linux `IOV_MAX`).
pub(crate) const IOV_MAX: usize = 1024;
/// Bytes per write, so one huge backlog does not hold up the loop turn.
pub(crate) const WRITE_BUDGET: usize = 4 << 20;

/// One connection: its session and the backend's part (`T`).
#[derive(Debug)]
pub(crate) struct Conn<T> {
    pub(crate) session: Session,
    /// In the core's list of connections to flush in the next pass ([`Core::mark_dirty`]).
    pub(crate) dirty: bool,
    /// Admitted, so counted in the server's connection limits (not a refused one). The
    /// address it is counted under, if any, is in `Core::peers`: connections stay small.
    admitted: bool,
    pub(crate) io: T,
}

/// A backend. See the module docs.
pub(crate) trait Driver: Sized {
    /// The backend's per-connection state.
    type Io;

    /// Whether a write of this connection is pending (waiting for writability, or in
    /// flight): the backend flushes it when that write ends, not the core.
    fn write_blocked(&self, io: &Self::Io) -> bool;

    /// The connection, whose write is pending, got more to write: flush it when that
    /// write ends (a backend that does so anyway does nothing here).
    fn flush_after_write(&mut self, io: &Self::Io);

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

    /// Writes (or starts writing) what the connection has pending, then acts on
    /// [`Core::after_write`].
    fn flush(&mut self, core: &mut Core<Self::Io>, key: usize, now: Instant);

    /// Forgets the socket of a connection the core removed.
    fn release(&mut self, key: usize, io: Self::Io);

    /// Stops accepting (shutdown).
    fn stop_accepting(&mut self);

    /// After the loop: releases what the kernel may still use.
    fn finish(&mut self, core: &mut Core<Self::Io>);
}

/// Whether a connection's input should be read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Read.
    Open,
    /// A publisher while an inbox is congested: retry when the inboxes have room.
    Defer,
    /// Not now (replies over the limit, draining): retry after the next write.
    Closed,
}

/// What a reactor owns besides its sockets.
#[derive(Debug)]
pub(crate) struct Core<T> {
    pub(crate) index: usize,
    pub(crate) conns: Slab<Conn<T>>,
    pub(crate) config: Arc<Config>,
    /// `config.limits`, shared by every connection's protocol state.
    limits: Arc<Limits>,
    stop: Arc<AtomicBool>,
    /// Reactors that stopped taking client messages ([`shutdown`]).
    quiesced: Arc<Quiesced>,
    /// Client messages are handed to the handler (until the shutdown's first step).
    taking: bool,
    pub(crate) topics: Topics,
    inbox: InboxRx,
    pub(crate) fanout: Fanout,
    pub(crate) stats: Arc<Counters>,
    /// The whole server's connection counts (`max_conns`, `max_conns_per_ip`).
    admission: Arc<Admission>,
    /// Connections of this reactor in their handshake (`max_pending_handshakes`).
    handshakes: usize,
    /// Connections of this reactor closing (draining or lingering).
    closing: usize,
    /// The address each admitted connection is counted under (only with
    /// `max_conns_per_ip`).
    peers: HashMap<usize, IpAddr>,
    /// This turn's publications.
    batch: Vec<Publication>,
    /// The delivery pass under way ([`deliver::Pass`]).
    pass: deliver::Pass,
    /// Connections to flush in the next pass ([`Core::mark_dirty`]).
    later: Vec<usize>,
    /// Reused lists of connection keys (closing, timed out, touched by a timer).
    scratch: Vec<usize>,
    scratch2: Vec<usize>,
    moves: Vec<(u32, u32, u32)>,
    /// Largest backlog (own frames plus lag) seen, in bytes.
    high_water: u64,
    /// What this turn's writes took, added to the shared counters once per turn
    /// ([`Core::publish_out`]): a write then costs no atomic read-modify-write.
    out: OutTally,
    /// When `ringcast.v1` connections are next sent their heartbeat.
    next_heartbeat: Option<Instant>,
    /// Ticks since idle topics were last swept.
    sweeps: u32,
    /// Ticks so far (the clock of `timers_at`).
    ticks: u32,
    /// Per connection slot, the tick at which its timers run next (0: the next one).
    /// Apart from the connections, so that a tick skips an idle one by reading 4 bytes of
    /// one small array, not by walking into its session (a cache miss each).
    timers_at: Vec<u32>,
    /// The connection slot the next tick's timers start at (see [`TIMER_BATCH`]).
    timer_cursor: usize,
}

impl<T> Core<T> {
    pub(crate) fn new(shared: super::Shared) -> Self {
        let super::Shared {
            index,
            config,
            stop,
            quiesced,
            inbox,
            fanout,
            stats,
            admission,
        } = shared;
        inbox.claim_thread();
        let mut topics = Topics::new(config.history, config.max_lag_bytes as u64 / 4 * 3);
        topics.watch(fanout.interest().cloned());
        topics.hold_counters(Arc::clone(fanout.sequencer()));
        Self {
            index,
            conns: Slab::new(),
            limits: Arc::new(config.limits.clone()),
            topics,
            config,
            stop,
            quiesced,
            taking: true,
            inbox,
            fanout,
            stats,
            admission,
            handshakes: 0,
            closing: 0,
            peers: HashMap::new(),
            batch: Vec::new(),
            pass: deliver::Pass::default(),
            later: Vec::new(),
            next_heartbeat: None,
            sweeps: 0,
            ticks: 0,
            timers_at: Vec::new(),
            timer_cursor: 0,
            scratch: Vec::new(),
            scratch2: Vec::new(),
            moves: Vec::new(),
            high_water: 0,
            out: OutTally::default(),
        }
    }

    /// Registers a new connection from `peer` (when the driver knows it) accepted at
    /// `now`; returns its key, and whether it was refused by a connection limit
    /// ([`admit`]): then its session has the `503` response queued and the driver should
    /// flush it now.
    pub(crate) fn insert(&mut self, io: T, peer: Option<IpAddr>, now: Instant) -> (usize, bool) {
        // An IPv4 client of a dual-stack listener counts as its IPv4 address.
        let peer = peer.map(|ip| ip.to_canonical());
        let (session, ticket) = match self.admission.admit(&self.config, peer, self.handshakes) {
            Ok(ticket) => {
                self.handshakes += 1;
                (Session::new(now, &self.config), Some(ticket))
            }
            Err(refusal) => {
                refusal.count(&self.stats);
                let reason = refusal.reason();
                tracing::debug!(
                    peer = peer.map(tracing::field::display),
                    status = 503,
                    reason,
                    "connection refused"
                );
                (Session::refused(now, &self.config, reason), None)
            }
        };
        let refused = ticket.is_none();
        if refused {
            self.closing += 1;
        }
        let key = self.conns.insert(Conn {
            session,
            dirty: false,
            admitted: !refused,
            io,
        });
        self.timers_soon(key);
        if let Some(ip) = ticket.and_then(|t| t.ip) {
            self.peers.insert(key, ip);
        }
        // Later events of the connection carry `conn` (its key), not the address.
        tracing::debug!(
            conn = key,
            peer = peer.map(tracing::field::display),
            refused,
            "accepted"
        );
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats
            .connections
            .store(self.conns.len() as u64, Ordering::Relaxed);
        self.publish_phases();
        (key, refused)
    }

    /// The connections to read this turn: those with input left over from the last one,
    /// and the publishers deferred by congested inboxes once the inboxes have room again.
    /// Takes from `pending` and `deferred` and leaves their capacity.
    pub(crate) fn retries(
        &mut self,
        pending: &mut Vec<usize>,
        deferred: &mut Vec<usize>,
    ) -> Vec<usize> {
        let mut retry = std::mem::take(&mut self.scratch2);
        retry.clear();
        retry.append(pending);
        if !self.fanout.is_congested() {
            retry.append(deferred);
        }
        retry
    }

    /// Gives back the list [`retries`](Self::retries) returned, for its capacity.
    pub(crate) fn retried(&mut self, list: Vec<usize>) {
        self.scratch2 = list;
    }

    /// Whether to read connection `key` now.
    pub(crate) fn gate(&self, key: usize) -> Gate {
        let Some(c) = self.conns.get(key) else {
            return Gate::Closed;
        };
        if !c.session.wants_read(&self.config) {
            Gate::Closed
        } else if c.session.is_publisher() && self.fanout.is_congested() {
            Gate::Defer
        } else {
            Gate::Open
        }
    }

    /// Hands bytes read from connection `key` (modified in place: unmasking) to its
    /// session.
    pub(crate) fn feed(&mut self, key: usize, data: &mut [u8], now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let mut ctx = Ctx {
            config: &self.config,
            limits: &self.limits,
            topics: &mut self.topics,
            fanout: &self.fanout,
            inbox: &self.inbox,
            batch: &mut self.batch,
            key,
            stats: &self.stats,
            taking: self.taking,
        };
        let was_handshake = c.session.in_handshake();
        let was_closing = c.session.is_closing();
        let m = c.session.handle_read(data, now, &mut ctx);
        if was_handshake && !c.session.in_handshake() {
            self.handshakes -= 1;
            self.closing += usize::from(c.session.is_closing());
            self.publish_phases();
        } else if !was_closing && c.session.is_closing() {
            self.closing += 1;
            self.publish_phases();
        }
        if m > 0 {
            self.stats.messages_in.fetch_add(m, Ordering::Relaxed);
        }
        // Input moves deadlines (a handshake done, a close begun): run the timers next tick.
        self.timers_soon(key);
        self.settle();
    }

    /// Has connection `key`'s timers run at the next tick (its deadlines moved).
    pub(crate) fn timers_soon(&mut self, key: usize) {
        if key >= self.timers_at.len() {
            self.timers_at.resize(key + 1, 0);
        }
        self.timers_at[key] = 0;
    }

    /// Tells the subscriptions that unsubscribes moved within their topics' subscriber
    /// lists where they are now (a stale position still works, by a search).
    pub(crate) fn settle(&mut self) {
        self.topics.take_moves(&mut self.moves);
        for (topic, conn, pos) in self.moves.drain(..) {
            if let Some(c) = self.conns.get_mut(conn as usize) {
                if let Some(i) = c.session.outbox.sub_index(topic) {
                    c.session.outbox.set_pos(i, pos);
                }
            }
        }
    }

    /// Counts what a write took.
    pub(crate) fn note_written(&mut self, w: Written, bytes: usize) {
        self.out.frames += w.frames as u64;
        self.out.bytes += bytes as u64;
    }

    /// Counts writes made (syscalls or SQEs).
    pub(crate) fn note_writes(&mut self, n: u64) {
        self.out.writes += n;
    }

    /// Adds what the writes since the last call took to the shared counters (once per
    /// loop turn).
    pub(crate) fn publish_out(&mut self) {
        let OutTally {
            frames,
            bytes,
            writes,
        } = std::mem::take(&mut self.out);
        if writes > 0 {
            self.stats.writes.fetch_add(writes, Ordering::Relaxed);
        }
        if bytes > 0 {
            self.stats.frames_out.fetch_add(frames, Ordering::Relaxed);
            self.stats.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// After a write of connection `key` (or when it has nothing to write): a draining
    /// session that has sent everything half-closes.
    pub(crate) fn after_write(&mut self, key: usize, now: Instant) -> Step {
        let Some(c) = self.conns.get_mut(key) else {
            return Step::Drop;
        };
        let step = c.session.next_step(now, &self.config, &self.topics);
        if step == Step::ShutdownWrite {
            // Drained: lingering, with a deadline of its own.
            self.timers_soon(key);
        }
        step
    }

    /// Removes a connection: its subscriptions, its session, and (through the driver) its
    /// socket.
    pub(crate) fn remove<D: Driver<Io = T>>(&mut self, driver: &mut D, key: usize) {
        if let Some(mut c) = self.conns.try_remove(key) {
            if c.session.in_handshake() {
                self.handshakes -= 1;
            }
            if c.session.is_closing() {
                self.closing -= 1;
            }
            if c.admitted {
                let ip = self.peers.remove(&key);
                self.admission.release(Ticket { ip });
            }
            c.session.leave(&mut self.topics, key);
            self.settle();
            driver.release(key, c.io);
            self.stats
                .connections
                .store(self.conns.len() as u64, Ordering::Relaxed);
            self.publish_phases();
        }
    }

    /// Stores the gauges of connections by phase (at each change: per connection, never
    /// per message).
    fn publish_phases(&self) {
        let s = &self.stats;
        s.handshaking
            .store(self.handshakes as u64, Ordering::Relaxed);
        s.closing.store(self.closing as u64, Ordering::Relaxed);
    }

    /// Runs the session timers of every connection (or of the next [`TIMER_BATCH`]
    /// slots), and trims the logs published to since the last tick.
    fn tick<D: Driver<Io = T>>(&mut self, driver: &mut D, now: Instant) {
        let mut dead = std::mem::take(&mut self.scratch);
        let mut touched = std::mem::take(&mut self.scratch2);
        let span = self.conns.capacity();
        let start = if span <= TIMER_BATCH {
            0
        } else {
            self.timer_cursor.min(span)
        };
        let end = (start + TIMER_BATCH).min(span);
        self.timer_cursor = if end >= span { 0 } else { end };
        self.ticks = self.ticks.wrapping_add(1);
        let tick = self.ticks;
        let Self {
            conns,
            config,
            topics,
            timers_at,
            ..
        } = self;
        if timers_at.len() < end {
            timers_at.resize(end, 0);
        }
        let (mut timeouts, mut closed) = (0, 0);
        for (key, at) in timers_at.iter_mut().enumerate().take(end).skip(start) {
            // Not due yet (wrapping: a schedule is at most TIMER_RECHECK ahead).
            let ahead = at.wrapping_sub(tick);
            if *at != 0 && ahead != 0 && ahead <= TIMER_RECHECK {
                continue;
            }
            let Some(c) = conns.get_mut(key) else {
                *at = tick.wrapping_add(TIMER_RECHECK);
                continue;
            };
            let (handshake, closing) = (c.session.in_handshake(), c.session.is_closing());
            let step = c.session.handle_timeout(now, config, topics, key);
            *at = tick.wrapping_add(ticks_until(c.session.next_deadline(), now));
            closed += usize::from(!closing && c.session.is_closing());
            match step {
                Step::Drop => {
                    timeouts += u64::from(handshake);
                    dead.push(key);
                }
                // A timer queued a frame (ping, close) or ended the connection.
                _ if c.session.outbox.own_bytes() > 0 || c.session.is_draining() => {
                    if driver.write_blocked(&c.io) {
                        driver.flush_after_write(&c.io);
                    } else {
                        touched.push(key);
                    }
                }
                _ => {}
            }
        }
        if let Some(every) = self.config.heartbeat {
            let due = *self.next_heartbeat.get_or_insert(now + every);
            if now >= due {
                self.next_heartbeat = Some(now + every);
                for (key, c) in self.conns.iter_mut() {
                    if !c.session.heartbeat(&self.topics) {
                        continue;
                    }
                    if driver.write_blocked(&c.io) {
                        driver.flush_after_write(&c.io);
                    } else {
                        touched.push(key);
                    }
                }
            }
        }
        if timeouts > 0 {
            self.stats
                .handshake_timeouts
                .fetch_add(timeouts, Ordering::Relaxed);
        }
        if closed > 0 {
            self.closing += closed;
            self.publish_phases();
        }
        self.settle();
        for &key in &dead {
            self.remove(driver, key);
        }
        self.trim_logs();
        self.sweeps += 1;
        if self.sweeps >= SWEEP_TICKS {
            self.sweeps = 0;
            let ttl = self.topics.history().idle_ttl;
            let n = (ttl.as_millis() / (TICK * SWEEP_TICKS).as_millis()).max(1);
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            self.topics.sweep_idle(n);
            self.stats
                .history_bytes
                .store(self.topics.history_held(), Ordering::Relaxed);
            // One reactor sweeps the node's counters (they are shared).
            if self.index == 0 {
                self.fanout.sequencer().sweep(n);
            }
        }
        self.stats
            .subscriptions
            .store(self.topics.subscriptions() as u64, Ordering::Relaxed);
        self.stats
            .topics
            .store(self.topics.names() as u64, Ordering::Relaxed);
        self.stats
            .log_bytes
            .store(self.topics.pool().live_bytes() as u64, Ordering::Relaxed);
        for &key in &touched {
            driver.flush(self, key, now);
        }
        dead.clear();
        touched.clear();
        self.scratch = dead;
        self.scratch2 = touched;
    }

    /// Stops accepting and closes every connection with 1001, after what it has pending.
    fn begin_shutdown<D: Driver<Io = T>>(&mut self, driver: &mut D, now: Instant) {
        driver.stop_accepting();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let step = self.conns[key].session.close(
                CloseCode::GOING_AWAY,
                "server shutting down",
                now,
                &mut self.topics,
                key,
            );
            self.settle();
            if step == Step::Drop {
                self.remove(driver, key);
            } else {
                driver.flush(self, key, now);
            }
        }
    }
}

/// Ticks from `now` to the first tick at or after `deadline`, from 1 (the next tick) to
/// [`TIMER_RECHECK`].
fn ticks_until(deadline: Option<Instant>, now: Instant) -> u32 {
    let Some(d) = deadline else {
        return TIMER_RECHECK;
    };
    let left = d.saturating_duration_since(now).as_nanos();
    let n = left.div_ceil(TICK.as_nanos());
    u32::try_from(n).unwrap_or(u32::MAX).clamp(1, TIMER_RECHECK)
}

/// Runs a reactor until stopped, then shuts down in two steps ([`shutdown`]): stops
/// taking client messages, and once every reactor has, delivers its inbox and closes every
/// connection (1001); returns once they are gone or the close timeout has passed.
pub(crate) fn run<D: Driver>(mut core: Core<D::Io>, mut driver: D) -> io::Result<()> {
    let mut next_tick = Instant::now() + TICK;
    let mut next_log = Instant::now() + STATS_LOG;
    // When the stop was seen, and once the connections are closing, until when they may.
    let mut stopping: Option<(Instant, Option<Instant>)> = None;
    let result = loop {
        let now = Instant::now();
        let timeout = if driver.has_pending() || core.inbox.len() > 0 || core.has_deliveries() {
            Duration::ZERO
        } else if driver.has_deferred() || matches!(stopping, Some((_, None))) {
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
        core.publish_out();
        if stopping.is_none() && core.stop.load(Ordering::Acquire) {
            core.stop_taking();
            stopping = Some((now, None));
        }
        if let Some((since, closing)) = &mut stopping {
            if closing.is_none() && (core.quiesced.all() || now >= *since + STOP_WAIT) {
                core.close_all(&mut driver, now);
                *closing = Some(now + core.config.limits.close_timeout);
            }
            if let Some(deadline) = *closing
                && (core.conns.is_empty() || now >= deadline)
            {
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
    core.publish_out();
    result
}

#[cfg(test)]
mod tests;
