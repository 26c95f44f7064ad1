//! The readiness backend: one `mio::Poll` (epoll) per reactor thread.
//!
//! Sockets are registered edge-triggered. Reads go into one reactor-wide buffer, so an
//! idle connection holds no read buffer; each readable socket is read until it would
//! block or its per-turn budget is spent (then it is revisited next turn, so one busy
//! client cannot starve the others). A write gathers what the connection has pending —
//! its own frames and each topic's run from the topic log, one slice per run (two at a
//! chunk edge) — into one `sendmsg` from a reused iovec array, or one `send` when it is a
//! single slice (the usual case: one topic; it skips the kernel's copy of the `msghdr`
//! and iovec, ~5 % of a small write's kernel time). Both are direct system calls
//! (rustix): libc's wrappers are cancellation points, which in a threaded process cost
//! two extra calls around every write. Sockets are registered for
//! readable and writable edges once, at accept: a writable edge comes only after a write
//! found the socket full, so it costs nothing while writes go through, and no
//! `epoll_ctl` is made per backpressure episode.

use std::io::{self, IoSlice, Read};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustix::io::Errno;
use rustix::net::{self, SendAncillaryBuffer, SendFlags};

use super::core::accept::Backoff;
use super::core::{Core, Driver, Gate, IOV_MAX, WRITE_BUDGET};
use super::session::Step;
use super::sys::IoVecs;
use super::waker::Waker;
use crate::fanout::outbox::Written;

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
    /// The last write found the socket full: the next flush waits for a writable edge.
    blocked: bool,
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
    backoff: Backoff,
    /// The slices of the write being made.
    iov: IoVecs,
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
            backoff: Backoff::default(),
            iov: IoVecs::default(),
        })
    }

    fn accept(&mut self, core: &mut Core<Io>, now: Instant) {
        if self.backoff.is_paused() {
            return;
        }
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    self.backoff.accepted(core.conns.len());
                    // TCP_NODELAY and SO_SNDBUF come from the listener (listener.rs).
                    let key = core.conns.vacant_key();
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(key),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        tracing::warn!(error = %e, "register accepted socket: {e}");
                        continue;
                    }
                    let io = Io {
                        stream,
                        blocked: false,
                        read_pending: false,
                    };
                    let (key, refused) = core.insert(io, Some(peer.ip()), now);
                    if refused {
                        self.flush(core, key, now);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if self
                        .backoff
                        .failed(&e, now, core.conns.len(), "raise `ulimit -n`")
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Reads what the socket has (within the budget) and processes it.
    fn read(&mut self, core: &mut Core<Io>, key: usize, now: Instant) {
        if !core.conns.get(key).is_some_and(|c| c.io.read_pending) {
            return;
        }
        let mut step = Step::Continue;
        let mut reads = 0;
        loop {
            match core.gate(key) {
                Gate::Open => {}
                Gate::Defer => {
                    self.deferred.push(key);
                    break;
                }
                Gate::Closed => break,
            }
            if reads == READ_BUDGET {
                self.pending.push(key);
                break;
            }
            reads += 1;
            let c = &mut core.conns[key];
            match c.io.stream.read(&mut self.buf) {
                Ok(0) => {
                    step = Step::Drop;
                    break;
                }
                Ok(n) => core.feed(key, &mut self.buf[..n], now),
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

    /// Writes what connection `key` has pending until the socket takes no more; returns
    /// whether the socket failed.
    fn write(&mut self, core: &mut Core<Io>, key: usize) -> bool {
        let Core { conns, topics, .. } = &mut *core;
        let c = &mut conns[key];
        let (mut frames, mut bytes, mut writes) = (0, 0, 0);
        let mut failed = false;
        loop {
            let iov = &mut self.iov;
            let total = c.session.outbox.gather(topics, WRITE_BUDGET, |b, _| {
                iov.push(b);
                iov.0.len() < IOV_MAX
            });
            if total == 0 {
                break;
            }
            let sock = c.io.stream.as_fd();
            let r = if let [one] = iov.0.as_slice() {
                // SAFETY: `one` points into the outbox's own frames or a topic log's
                // chunk, borrowed from `c` and `topics`, alive and unmodified until
                // `advance` below.
                let buf = unsafe { std::slice::from_raw_parts(one.iov_base.cast(), one.iov_len) };
                net::send(sock, buf, SendFlags::NOSIGNAL)
            } else {
                // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix (std documents
                // it), and the entries point into the outbox's own frames and the topic
                // logs' chunks: all borrowed from `c` and `topics`, alive and unmodified
                // until `advance` below, after the call returned.
                let bufs: &[IoSlice<'_>] =
                    unsafe { std::slice::from_raw_parts(iov.0.as_ptr().cast(), iov.0.len()) };
                net::sendmsg(
                    sock,
                    bufs,
                    &mut SendAncillaryBuffer::default(),
                    SendFlags::NOSIGNAL,
                )
            };
            iov.0.clear();
            writes += 1;
            match r {
                Ok(n) if n > 0 => {
                    frames += c.session.outbox.advance(topics, n).frames;
                    bytes += n;
                    // A short write is retried: the next one takes more or says the
                    // socket is full, which is what arms the writable edge.
                }
                Ok(_) => {
                    failed = true;
                    break;
                }
                Err(Errno::AGAIN) => {
                    c.io.blocked = true;
                    break;
                }
                Err(Errno::INTR) => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        core.note_written(Written { frames }, bytes);
        core.note_writes(writes);
        failed
    }
}

impl Driver for Epoll {
    type Io = Io;

    fn write_blocked(&self, io: &Io) -> bool {
        io.blocked
    }

    /// The writable edge flushes everything pending.
    fn flush_after_write(&mut self, _: &Io) {}

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
                        if let Some(c) = core.conns.get_mut(key) {
                            c.io.blocked = false;
                        }
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
        let retry = core.retries(&mut self.pending, &mut self.deferred);
        for &key in &retry {
            self.read(core, key, now);
        }
        core.retried(retry);
    }

    fn maintain(&mut self, core: &mut Core<Io>, now: Instant) {
        if self.backoff.expire(now) && self.listener.is_some() {
            self.accept(core, now);
        }
    }

    /// Writes what the connection has pending, then sets write interest and advances the
    /// session.
    fn flush(&mut self, core: &mut Core<Io>, key: usize, now: Instant) {
        let Some(c) = core.conns.get_mut(key) else {
            return;
        };
        c.dirty = false;
        let blocked = c.io.blocked;
        let was_gated = core.gate(key) == Gate::Closed;
        // A full socket is written again on its writable edge, not before.
        if !blocked && self.write(core, key) {
            core.remove(self, key);
            return;
        }
        match core.after_write(key, now) {
            Step::Continue => {}
            Step::ShutdownWrite => {
                let c = &mut core.conns[key];
                let _ = c.io.stream.shutdown(Shutdown::Write);
                // Input may already be waiting, with no new edge to come.
                c.io.read_pending = true;
                self.pending.push(key);
            }
            Step::Drop => return core.remove(self, key),
        }
        // Backpressure released: read what was left in the socket.
        if was_gated && core.gate(key) != Gate::Closed && core.conns[key].io.read_pending {
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
