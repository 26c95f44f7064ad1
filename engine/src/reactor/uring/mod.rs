//! The completion backend: io_uring rings owned by one reactor thread.
//!
//! - **Rings and capacity**: connections live in *direct descriptors*, a sparse
//!   registered file table per ring (slots allocated by the kernel at accept), so they
//!   never enter the process fd table. The kernel caps each table at `RLIMIT_NOFILE`, so a
//!   reactor opens more rings as its tables fill, up to [`Config::uring_rings`]
//!   (`rings × RLIMIT_NOFILE` connections per reactor, logged at start); one ring's
//!   descriptor in the process table buys a table of `RLIMIT_NOFILE` connections. The
//!   reactor sleeps on its first ring; every other ring wakes it through the reactor's
//!   eventfd ([`ring`]). Fan-out, timers and slow consumers stay the reactor's ([`Core`]):
//!   rings only move bytes.
//! - **Accept** ([`accept`]): one multishot accept on the reactor's own `SO_REUSEPORT`
//!   listener, on the ring with the most free table slots (a ring nearly full hands the
//!   accept on). When no ring has room for a whole listen backlog the accept is one-shot,
//!   and when every table is full accepting pauses (logged once) until connections close,
//!   as EMFILE does for epoll: no connection is accepted into a full table, where the
//!   kernel would close it. Under `max_conns_per_ip` every accept is one-shot, with a
//!   buffer for the peer's address (a multishot accept carries none).
//! - **Receive** ([`recv`]): one multishot receive per connection, into its ring's
//!   provided-buffer ring ([`bufring`]). Each buffer goes back to the ring right after the
//!   session consumed it. Bytes that arrive while the session does not want input (replies
//!   over their limit, draining, publisher held back by congested inboxes) are copied into
//!   the connection's stash and the receive is cancelled; it is re-armed, after the stash
//!   is fed, when the session wants input again. A completion without `IORING_CQE_F_MORE`
//!   (`ENOBUFS`, cancellation, ...) ends the receive; it is re-armed if still wanted.
//!   Nothing is dropped.
//! - **Send** ([`send`]): at most one `sendmsg` in flight per connection, carrying what the
//!   connection has pending — own frames, and each subscribed topic's run straight from
//!   the topic log, one slice per run (two at a chunk edge) — with `MSG_WAITALL`, so the
//!   kernel finishes it rather than completing early on a full socket. The send's iovecs
//!   and the pins of the chunks it points into live in a pooled [`inflight::SendOp`] (no
//!   allocation per send after warm-up); the cursors move when the send is submitted, and
//!   a short completion (an error after progress) resubmits the rest of the same send.
//!   A completed send's connection is written again at the end of the turn, with what the
//!   turn's publications added (not at once with only what was pending before them).
//! - **Close** ([`close`], [`slot`]): `shutdown(SHUT_WR)` and `close` of direct descriptors
//!   are SQEs too. Removing a connection cancels its receive (and send); the slot record
//!   (with any in-flight send buffers) lives until every operation that names it has
//!   completed, and its `close` is submitted last. `user_data` carries the slot, a
//!   generation and the operation kind ([`user_data`]), so a late completion can never be
//!   taken for another connection's.
//! - **Wake-ups and timers** ([`wait`]): a read stays armed on the reactor's eventfd
//!   ([`Waker`]), and each loop turn submits every ring's SQEs of the turn (all the
//!   flushes of a fan-out batch at once) and sleeps on the first ring with the tick
//!   timeout.
//!
//! Teardown ([`teardown`]) cancels everything and waits (bounded) for the last completion
//! before any memory the kernel could touch is freed; if the bound passes, that memory is
//! leaked.
//!
//! [`Config::uring_rings`]: super::config::Config::uring_rings

mod accept;
mod bufring;
mod close;
mod inflight;
mod probe;
mod recv;
mod ring;
mod send;
mod slot;
mod teardown;
mod user_data;
mod wait;

pub(crate) use probe::probe;

use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::accept::Acceptor;
use self::inflight::SendPool;
use self::ring::{RECV_BUF_SIZE, Ring, Role};
use super::core::{Core, Driver};
use super::waker::Waker;

/// Largest registered file table per ring (the kernel's own limit is 1 << 20).
const MAX_FILES: u32 = 1 << 20;
/// How often the send records no send needed since the last time are freed.
const POOL_TRIM: Duration = Duration::from_secs(2);

/// The io_uring part of a connection, kept by the core.
#[derive(Debug)]
pub(crate) struct Io {
    /// The ring holding the connection's descriptor.
    ring: u16,
    /// The descriptor's index in that ring's file table (and its slot, which says
    /// whether a send is in flight).
    slot: u32,
}

/// What a reactor's io_uring driver is given at start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    /// The listen backlog (an upper bound on what one multishot accept may take at once).
    pub(crate) backlog: u32,
    /// Receive buffers of the first ring, 16 KiB each (later rings get a quarter as many,
    /// at least 16, of 2 KiB).
    pub(crate) recv_bufs: u16,
    /// Accepts must learn the peer's address (`max_conns_per_ip`).
    pub(crate) peer_addrs: bool,
    /// Most rings the reactor opens.
    pub(crate) max_rings: usize,
    /// The server's connection limit: no reactor needs rings for more.
    pub(crate) max_conns: Option<usize>,
}

/// The io_uring driver of one reactor. Field order matters: the rings are closed before
/// the memory their operations used.
pub(crate) struct Uring {
    rings: Vec<Ring>,
    /// Most rings this reactor opens.
    max_rings: usize,
    /// Registered file table size of every ring.
    files: u32,
    /// Receive buffers of each ring after the first.
    extra_bufs: u16,
    accept: Acceptor,
    next_gen: u32,
    waker: Arc<Waker>,
    /// Where the eventfd read lands.
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// Completions taken off a ring, handled in order.
    cqes: Vec<io_uring::cqueue::Entry>,
    /// Bytes received while a connection's session did not want them, by the core's key;
    /// allocated only then.
    stashes: HashMap<usize, Vec<u8>>,
    /// Connections to feed from their stash or re-arm, this turn.
    pending: Vec<usize>,
    /// Publishers held back by congested inboxes.
    deferred: Vec<usize>,
    /// Send SQEs made since the counters were last updated.
    writes: u64,
    /// Idle send records, reused.
    send_pool: SendPool,
    /// When the send pool is next trimmed.
    next_trim: Instant,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("rings", &self.rings.len())
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Uring {
    /// A driver serving `listener`, woken through `waker` (an eventfd); reactor `index`
    /// logs its capacity.
    pub(crate) fn new(
        listener: TcpListener,
        waker: Arc<Waker>,
        params: Params,
        index: usize,
    ) -> io::Result<Self> {
        if waker.eventfd_raw().is_none() {
            return Err(io::Error::other("io_uring reactor needs an eventfd waker"));
        }
        let files = probe::nofile_limit().min(MAX_FILES);
        let recv_bufs = params.recv_bufs.clamp(1, 1 << 15).next_power_of_two();
        let main = Ring::open(Role::Main, files, recv_bufs, None)?;
        let needed = params
            .max_conns
            .map_or(usize::MAX, |n| n.div_ceil(files as usize));
        let max_rings = params.max_rings.min(needed).clamp(1, usize::from(u16::MAX));
        tracing::info!(
            reactor = index,
            rings = max_rings,
            table = files,
            "io_uring: up to {max_rings} rings × {files} direct descriptors = {} connections \
             (rings opened as they fill)",
            u64::from(files) * max_rings as u64
        );
        tracing::debug!("io_uring: {recv_bufs} × {RECV_BUF_SIZE} B receive buffers");
        let mut this = Self {
            rings: vec![main],
            max_rings,
            files,
            extra_bufs: (recv_bufs / 4).clamp(16, 1 << 14),
            accept: Acceptor::new(listener, params.backlog, params.peer_addrs),
            next_gen: 0,
            waker,
            wake_buf: Box::new(0),
            wake_armed: false,
            cqes: Vec::with_capacity(1024),
            stashes: HashMap::new(),
            pending: Vec::new(),
            deferred: Vec::new(),
            writes: 0,
            send_pool: SendPool::default(),
            next_trim: Instant::now() + POOL_TRIM,
        };
        this.arm_accept();
        this.arm_wake();
        Ok(this)
    }

    /// Opens one more ring (the tables of the others are nearly full); `None` when the
    /// reactor has all it may have, or the kernel refused (logged once: the reactor then
    /// holds what its rings hold).
    fn open_ring(&mut self) -> Option<usize> {
        if self.rings.len() >= self.max_rings {
            return None;
        }
        let eventfd = self.waker.eventfd_raw();
        match Ring::open(Role::Extra, self.files, self.extra_bufs, eventfd) {
            Ok(ring) => {
                self.rings.push(ring);
                tracing::debug!(
                    rings = self.rings.len(),
                    "io_uring: ring {} opened ({} direct descriptors)",
                    self.rings.len() - 1,
                    self.files
                );
                Some(self.rings.len() - 1)
            }
            Err(e) => {
                tracing::warn!(
                    "io_uring: cannot open ring {} ({}); holding what {} rings hold",
                    self.rings.len(),
                    probe::describe(&e),
                    self.rings.len()
                );
                self.max_rings = self.rings.len();
                None
            }
        }
    }
}

impl Driver for Uring {
    type Io = Io;

    fn write_blocked(&self, io: &Io) -> bool {
        self.rings[usize::from(io.ring)].slots.sending(io.slot)
    }

    fn flush_after_write(&mut self, io: &Io) {
        self.rings[usize::from(io.ring)]
            .slots
            .at(io.slot)
            .set_again();
    }

    fn wait(&mut self, core: &mut Core<Io>, timeout: Duration) -> io::Result<()> {
        self.wait_turn(core, timeout)
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty() || self.rings.iter().any(Ring::has_backlog)
    }

    fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    fn resume(&mut self, core: &mut Core<Io>, now: Instant) {
        let retry = core.retries(&mut self.pending, &mut self.deferred);
        for &key in &retry {
            self.resume_read(core, key, now);
        }
        core.retried(retry);
        self.rearm_starved(core, now);
    }

    fn maintain(&mut self, _core: &mut Core<Io>, now: Instant) {
        self.accept.backoff.expire(now);
        self.arm_accept();
        if now >= self.next_trim {
            self.send_pool.trim();
            self.next_trim = now + POOL_TRIM;
        }
    }

    fn flush(&mut self, core: &mut Core<Io>, key: usize, now: Instant) {
        self.flush_conn(core, key, now);
    }

    fn release(&mut self, key: usize, io: Io) {
        self.stashes.remove(&key);
        self.close_slot(usize::from(io.ring), io.slot);
    }

    fn stop_accepting(&mut self) {
        self.accept.listener = None;
        if self.accept.armed.is_some() {
            self.cancel_accept();
        }
    }

    fn finish(&mut self, core: &mut Core<Io>) {
        self.teardown(core);
    }
}

#[cfg(test)]
mod tests;
