//! The readiness backend: one `mio::Poll` (epoll) per reactor thread.
//!
//! Sockets are registered edge-triggered. Reads go into one reactor-wide buffer, so an
//! idle connection holds no read buffer; each readable socket is read until it would
//! block or its per-turn budget is spent (then it is revisited next turn, so one busy
//! client cannot starve the others). Writes gather every queued frame of a socket into
//! one `writev`; write interest is registered only while a queue stays non-empty after a
//! write.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::session::{Ctx, Session, Step};
use crate::fanout::Fanout;
use crate::fanout::ring::{InboxRx, Publication};
use crate::fanout::topic::Topics;
use crate::protocol::close::CloseCode;
use crate::server::config::Config;
use crate::server::stats::Counters;

const LISTENER: Token = Token(usize::MAX - 1);
/// The token of the reactor's [`Waker`].
pub(crate) const WAKER: Token = Token(usize::MAX);

/// Reactor-wide read buffer.
const READ_BUF: usize = 256 * 1024;
/// Reads of one socket per readiness event before yielding to the others.
const READ_BUDGET: usize = 16;
/// Slices per `writev` (Linux `IOV_MAX`).
const IOV_MAX: usize = 1024;
/// Bytes per `writev`, so one huge queue does not hold up the loop turn.
const WRITE_BUDGET: usize = 4 << 20;
/// How often timers are scanned.
const TICK: Duration = Duration::from_millis(100);
/// How often the counters are logged (at debug level).
const STATS_LOG: Duration = Duration::from_secs(10);
/// How long accepting pauses after EMFILE/ENFILE.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Publications taken from the inbox per loop turn, so that writing (and reading) get
/// their turn under a publish flood; the rest wait for the next turn.
const DRAIN_BUDGET: usize = 2048;
/// Poll timeout while publisher reads are deferred by congested inboxes.
const DEFER_RETRY: Duration = Duration::from_millis(1);

struct Conn {
    stream: TcpStream,
    session: Session,
    writable_registered: bool,
    /// Readable edge seen but not drained (budget spent or backpressure).
    read_pending: bool,
    /// In the reactor's dirty list: frames were queued this turn.
    dirty: bool,
}

/// One reactor: its listener, its connections, its poll.
pub(crate) struct Reactor {
    index: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    config: Arc<Config>,
    stop: Arc<AtomicBool>,
    buf: Vec<u8>,
    /// Connections with unread input to revisit next turn.
    pending: Vec<usize>,
    /// Publishers not read because an inbox is congested, retried next turn.
    deferred: Vec<usize>,
    /// This turn's publications, delivered topic run by topic run.
    batch: Vec<Publication>,
    accept_paused_until: Option<Instant>,
    topics: Topics,
    inbox: InboxRx,
    fanout: Fanout,
    stats: Arc<Counters>,
    /// Connections that got published frames this turn, to flush once each.
    dirty: Vec<usize>,
    /// Largest out-queue seen, in bytes.
    high_water: u64,
    /// Accepts failed for lack of descriptors and have not succeeded since (logged once).
    fd_exhausted: bool,
}

impl Reactor {
    /// The poll of a reactor to be, with the waker that interrupts it (publishers need
    /// the wakers of every reactor before any reactor exists).
    pub(crate) fn poll() -> io::Result<(Poll, Waker)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        Ok((poll, waker))
    }

    /// A reactor serving `listener` through `poll`.
    pub(crate) fn new(
        poll: Poll,
        listener: std::net::TcpListener,
        shared: super::Shared,
    ) -> io::Result<Self> {
        let super::Shared {
            index,
            config,
            stop,
            inbox,
            fanout,
            stats,
        } = shared;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Self {
            index,
            poll,
            listener: Some(listener),
            conns: Slab::new(),
            config,
            stop,
            buf: vec![0; READ_BUF],
            pending: Vec::new(),
            deferred: Vec::new(),
            batch: Vec::new(),
            accept_paused_until: None,
            topics: Topics::default(),
            inbox,
            fanout,
            stats,
            dirty: Vec::new(),
            high_water: 0,
            fd_exhausted: false,
        })
    }

    /// Runs until stopped, then closes every connection (1001) and returns once they are
    /// gone or the close timeout has passed.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        let mut next_log = Instant::now() + STATS_LOG;
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let timeout = if !self.pending.is_empty() || self.inbox.len() > 0 {
                Duration::ZERO
            } else if !self.deferred.is_empty() {
                DEFER_RETRY
            } else {
                next_tick.saturating_duration_since(now)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for ev in &events {
                match ev.token() {
                    WAKER => {}
                    LISTENER => self.accept(now),
                    Token(key) => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            if let Some(c) = self.conns.get_mut(key) {
                                c.read_pending = true;
                            }
                            self.read(key, now);
                        }
                        if ev.is_writable() {
                            self.flush(key, now);
                        }
                    }
                }
            }
            let mut retry = std::mem::take(&mut self.pending);
            if !self.fanout.is_congested() {
                retry.append(&mut self.deferred);
            }
            for key in retry {
                self.read(key, now);
            }
            self.deliver(now);
            if self
                .accept_paused_until
                .is_some_and(|t| now >= t && self.listener.is_some())
            {
                self.accept_paused_until = None;
                self.accept(now);
            }
            if shutdown_deadline.is_none() && self.stop.load(Ordering::Acquire) {
                shutdown_deadline = Some(now + self.config.limits.close_timeout);
                self.begin_shutdown(now);
            }
            if let Some(deadline) = shutdown_deadline {
                if self.conns.is_empty() || now >= deadline {
                    return Ok(());
                }
            }
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
                if now >= next_log {
                    next_log = now + STATS_LOG;
                    tracing::debug!(reactor = self.index, stats = ?self.stats.snapshot());
                }
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        let Some(listener) = &self.listener else {
            return;
        };
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            match listener.accept() {
                Ok((mut stream, _peer)) => {
                    if self.fd_exhausted {
                        self.fd_exhausted = false;
                        tracing::info!("accepting again ({} connections open)", self.conns.len());
                    }
                    let _ = stream.set_nodelay(true);
                    if self.config.sndbuf > 0 {
                        let _ = socket2::SockRef::from(&stream)
                            .set_send_buffer_size(self.config.sndbuf);
                    }
                    self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, Token(key), Interest::READABLE)
                    {
                        tracing::warn!("register accepted socket: {e}");
                        continue;
                    }
                    entry.insert(Conn {
                        stream,
                        session: Session::new(now, &self.config),
                        writable_registered: false,
                        read_pending: false,
                        dirty: false,
                    });
                    self.stats
                        .connections
                        .store(self.conns.len() as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_fd_exhaustion(&e) => {
                    if !self.fd_exhausted {
                        self.fd_exhausted = true;
                        tracing::warn!(
                            "accept: {e}; pausing accepts, retrying every {ACCEPT_BACKOFF:?} \
                             ({} connections open; raise `ulimit -n`)",
                            self.conns.len()
                        );
                    }
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
                // ECONNABORTED and friends concern one pending connection only.
                Err(e) => tracing::debug!("accept: {e}"),
            }
        }
    }

    /// Reads what the socket has (within the budget) and processes it.
    fn read(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if !c.read_pending {
            return;
        }
        let mut step = Step::Continue;
        let mut reads = 0;
        while c.session.wants_read(&self.config) {
            if c.session.is_publisher() && self.fanout.is_congested() {
                self.deferred.push(key);
                break;
            }
            if reads == READ_BUDGET {
                self.pending.push(key);
                break;
            }
            reads += 1;
            match c.stream.read(&mut self.buf) {
                Ok(0) => {
                    step = Step::Drop;
                    break;
                }
                Ok(n) => {
                    let mut ctx = Ctx {
                        config: &self.config,
                        topics: &mut self.topics,
                        fanout: &self.fanout,
                        key,
                    };
                    let m = c.session.handle_read(&mut self.buf[..n], now, &mut ctx);
                    if m > 0 {
                        self.stats.messages_in.fetch_add(m, Ordering::Relaxed);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.read_pending = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    step = Step::Drop;
                    break;
                }
            }
        }
        if step == Step::Drop {
            self.remove(key);
        } else {
            self.flush(key, now);
        }
    }

    /// Writes as much of the out-queue as the socket takes, one `writev` per round, then
    /// sets write interest and advances the session.
    fn flush(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.dirty = false;
        let queued = c.session.outq.len_bytes() as u64;
        if queued > self.high_water {
            self.high_water = queued;
            self.stats.queue_high_water.store(queued, Ordering::Relaxed);
        }
        let was_over = !c.session.wants_read(&self.config);
        let mut failed = false;
        let (mut frames, mut bytes) = (0, 0);
        while !c.session.outq.is_empty() {
            let mut slices = Vec::with_capacity(c.session.outq.len_frames().min(IOV_MAX));
            c.session.outq.io_slices(&mut slices, IOV_MAX, WRITE_BUDGET);
            match c.stream.write_vectored(&slices) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(written) => {
                    frames += c.session.outq.advance(written);
                    bytes += written;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if bytes > 0 {
            self.stats
                .frames_out
                .fetch_add(frames as u64, Ordering::Relaxed);
            self.stats
                .bytes_out
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
        if failed {
            self.remove(key);
            return;
        }
        let want_write = !c.session.outq.is_empty();
        if want_write != c.writable_registered {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut c.stream, Token(key), interest)
                .is_err()
            {
                self.remove(key);
                return;
            }
            c.writable_registered = want_write;
        }
        match c.session.next_step(now, &self.config) {
            Step::Continue => {}
            Step::ShutdownWrite => {
                let _ = c.stream.shutdown(Shutdown::Write);
                // Input may already be waiting, with no new edge to come.
                c.read_pending = true;
                self.pending.push(key);
            }
            Step::Drop => return self.remove(key),
        }
        // Backpressure released: read what was left in the socket.
        if was_over && c.session.wants_read(&self.config) && c.read_pending {
            self.pending.push(key);
        }
    }

    fn tick(&mut self, now: Instant) {
        let mut dead = Vec::new();
        let mut touched = Vec::new();
        for (key, c) in &mut self.conns {
            match c.session.handle_timeout(now, &self.config) {
                Step::Drop => dead.push(key),
                // A timer queued a frame (ping, close) or ended the connection.
                _ if !c.writable_registered
                    && (!c.session.outq.is_empty() || c.session.is_draining()) =>
                {
                    touched.push(key);
                }
                _ => {}
            }
        }
        for key in dead {
            self.remove(key);
        }
        self.stats
            .subscriptions
            .store(self.topics.subscriptions() as u64, Ordering::Relaxed);
        for key in touched {
            self.flush(key, now);
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let step =
                self.conns[key]
                    .session
                    .close(CloseCode::GOING_AWAY, "server shutting down", now);
            if step == Step::Drop {
                self.remove(key);
            } else {
                self.flush(key, now);
            }
        }
    }

    fn remove(&mut self, key: usize) {
        if let Some(mut c) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            for t in c.session.take_subscriptions() {
                self.topics.unsubscribe(t.as_str(), key);
            }
            self.stats
                .connections
                .store(self.conns.len() as u64, Ordering::Relaxed);
        }
    }

    /// Takes publications from the inbox, queues each frame (a refcount bump) on every
    /// open subscriber, applies the slow-consumer policy as queues pass their limit, and
    /// flushes every connection that got frames once: all its new frames in one `writev`.
    ///
    /// Consecutive publications to the same topic are delivered as a run: each subscriber
    /// is visited once per run and takes the whole run, so its state is touched once per
    /// batch rather than once per message.
    fn deliver(&mut self, now: Instant) {
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
                if !c.dirty && !c.writable_registered {
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
            self.flush(key, now);
        }
    }
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
