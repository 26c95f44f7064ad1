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
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::core::{ACCEPT_BACKOFF, Core, Driver, IOV_MAX, WRITE_BUDGET};
use super::session::{Ctx, Step};
use super::waker::Waker;

const LISTENER: Token = Token(usize::MAX - 1);
/// The token of the reactor's [`Waker`].
pub(crate) const WAKER: Token = Token(usize::MAX);

/// Reactor-wide read buffer.
const READ_BUF: usize = 256 * 1024;
/// Reads of one socket per readiness event before yielding to the others.
const READ_BUDGET: usize = 16;

/// The epoll part of a connection.
#[derive(Debug)]
pub(crate) struct Io {
    stream: TcpStream,
    writable_registered: bool,
    /// Readable edge seen but not drained (budget spent or backpressure).
    read_pending: bool,
}

/// The epoll driver of one reactor: its listener and its poll.
pub(crate) struct Epoll {
    poll: Poll,
    events: Events,
    listener: Option<TcpListener>,
    buf: Vec<u8>,
    /// Connections with unread input to revisit next turn.
    pending: Vec<usize>,
    /// Publishers not read because an inbox is congested, retried next turn.
    deferred: Vec<usize>,
    accept_paused_until: Option<Instant>,
    /// Accepts failed for lack of descriptors and have not succeeded since (logged once).
    fd_exhausted: bool,
}

impl Epoll {
    /// The poll of a reactor to be, with the waker that interrupts it (publishers need
    /// the wakers of every reactor before any reactor exists).
    pub(crate) fn poll() -> io::Result<(Poll, Waker)> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        Ok((poll, Waker::Mio(waker)))
    }

    /// A driver serving `listener` through `poll`.
    pub(crate) fn new(poll: Poll, listener: std::net::TcpListener) -> io::Result<Self> {
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Self {
            poll,
            events: Events::with_capacity(1024),
            listener: Some(listener),
            buf: vec![0; READ_BUF],
            pending: Vec::new(),
            deferred: Vec::new(),
            accept_paused_until: None,
            fd_exhausted: false,
        })
    }

    fn accept(&mut self, core: &mut Core<Io>, now: Instant) {
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
                        tracing::info!("accepting again ({} connections open)", core.conns.len());
                    }
                    // TCP_NODELAY and SO_SNDBUF come from the listener (listener.rs).
                    let key = core.conns.vacant_key();
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, Token(key), Interest::READABLE)
                    {
                        tracing::warn!("register accepted socket: {e}");
                        continue;
                    }
                    let io = Io {
                        stream,
                        writable_registered: false,
                        read_pending: false,
                    };
                    core.insert(io, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_fd_exhaustion(&e) => {
                    if !self.fd_exhausted {
                        self.fd_exhausted = true;
                        tracing::warn!(
                            "accept: {e}; pausing accepts, retrying every {ACCEPT_BACKOFF:?} \
                             ({} connections open; raise `ulimit -n`)",
                            core.conns.len()
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
    fn read(&mut self, core: &mut Core<Io>, key: usize, now: Instant) {
        let Some(c) = core.conns.get_mut(key) else {
            return;
        };
        if !c.io.read_pending {
            return;
        }
        let mut step = Step::Continue;
        let mut reads = 0;
        while c.session.wants_read(&core.config) {
            if c.session.is_publisher() && core.fanout.is_congested() {
                self.deferred.push(key);
                break;
            }
            if reads == READ_BUDGET {
                self.pending.push(key);
                break;
            }
            reads += 1;
            match c.io.stream.read(&mut self.buf) {
                Ok(0) => {
                    step = Step::Drop;
                    break;
                }
                Ok(n) => {
                    let mut ctx = Ctx {
                        config: &core.config,
                        topics: &mut core.topics,
                        fanout: &core.fanout,
                        key,
                    };
                    let m = c.session.handle_read(&mut self.buf[..n], now, &mut ctx);
                    if m > 0 {
                        core.stats.messages_in.fetch_add(m, Ordering::Relaxed);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.io.read_pending = false;
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
            core.remove(self, key);
        } else {
            self.flush(core, key, now);
        }
    }
}

impl Driver for Epoll {
    type Io = Io;

    fn write_blocked(io: &Io) -> bool {
        io.writable_registered
    }

    fn wait(&mut self, core: &mut Core<Io>, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for ev in &events {
            match ev.token() {
                WAKER => {}
                LISTENER => self.accept(core, now),
                Token(key) => {
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        if let Some(c) = core.conns.get_mut(key) {
                            c.io.read_pending = true;
                        }
                        self.read(core, key, now);
                    }
                    if ev.is_writable() {
                        self.flush(core, key, now);
                    }
                }
            }
        }
        self.events = events;
        Ok(())
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    fn resume(&mut self, core: &mut Core<Io>, now: Instant) {
        for key in core.retries(&mut self.pending, &mut self.deferred) {
            self.read(core, key, now);
        }
    }

    fn maintain(&mut self, core: &mut Core<Io>, now: Instant) {
        if self
            .accept_paused_until
            .is_some_and(|t| now >= t && self.listener.is_some())
        {
            self.accept_paused_until = None;
            self.accept(core, now);
        }
    }

    /// Writes as much of the out-queue as the socket takes, one `writev` per round, then
    /// sets write interest and advances the session.
    fn flush(&mut self, core: &mut Core<Io>, key: usize, now: Instant) {
        let Some(c) = core.conns.get_mut(key) else {
            return;
        };
        c.dirty = false;
        let queued = c.session.outq.len_bytes();
        let was_over = !c.session.wants_read(&core.config);
        let mut failed = false;
        let (mut frames, mut bytes) = (0, 0);
        while !c.session.outq.is_empty() {
            let mut slices = Vec::with_capacity(c.session.outq.len_frames().min(IOV_MAX));
            c.session.outq.io_slices(&mut slices, IOV_MAX, WRITE_BUDGET);
            match c.io.stream.write_vectored(&slices) {
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
        core.note_queue(queued);
        core.note_written(frames, bytes);
        if failed {
            core.remove(self, key);
            return;
        }
        let c = &mut core.conns[key];
        let want_write = !c.session.outq.is_empty();
        if want_write != c.io.writable_registered {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut c.io.stream, Token(key), interest)
                .is_err()
            {
                core.remove(self, key);
                return;
            }
            c.io.writable_registered = want_write;
        }
        match c.session.next_step(now, &core.config) {
            Step::Continue => {}
            Step::ShutdownWrite => {
                let _ = c.io.stream.shutdown(Shutdown::Write);
                // Input may already be waiting, with no new edge to come.
                c.io.read_pending = true;
                self.pending.push(key);
            }
            Step::Drop => return core.remove(self, key),
        }
        // Backpressure released: read what was left in the socket.
        if was_over && c.session.wants_read(&core.config) && c.io.read_pending {
            self.pending.push(key);
        }
    }

    fn release(&mut self, _key: usize, mut io: Io) {
        let _ = self.poll.registry().deregister(&mut io.stream);
    }

    fn stop_accepting(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
    }

    fn finish(&mut self, _core: &mut Core<Io>) {}
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
