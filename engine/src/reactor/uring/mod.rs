//! The completion backend: one io_uring instance per reactor thread.
//!
//! - **Accept**: one multishot accept on the reactor's own `SO_REUSEPORT` listener, into
//!   *direct descriptors* (a sparse registered file table, slots allocated by the kernel):
//!   connections never enter the process fd table, so `ulimit -n` does not cap them (each
//!   ring's table may hold up to `RLIMIT_NOFILE` entries). Near the end of the table
//!   accepts become one-shot, and a full table pauses accepting until connections close
//!   (logged once), as EMFILE does for epoll: no connection is accepted into a full table,
//!   where the kernel would close it. Under `max_conns_per_ip` every accept is one-shot,
//!   with a buffer for the peer's address (a multishot accept carries none).
//! - **Receive**: one multishot receive per connection, into the reactor's provided-buffer
//!   ring ([`bufring`]). Each buffer goes back to the ring right after the session consumed
//!   it. Bytes that arrive while the session does not want input (replies over their limit,
//!   draining, publisher held back by congested inboxes) are copied into the connection's
//!   stash and the receive is cancelled; it is re-armed, after the stash is fed, when the
//!   session wants input again. A completion without `IORING_CQE_F_MORE` (`ENOBUFS`,
//!   cancellation, ...) ends the receive; it is re-armed if still wanted. Nothing is dropped.
//! - **Send**: at most one `sendmsg` in flight per connection, carrying what the connection
//!   has pending — own frames, and each subscribed topic's run straight from the topic log,
//!   one slice per run (two at a chunk edge) — with `MSG_WAITALL`, so the kernel finishes
//!   it rather than completing early on a full socket. The send's iovecs and the pins of
//!   the chunks it points into live in a pooled [`inflight::SendOp`] (no allocation per
//!   send after warm-up); the cursors move when the send is submitted, and a short
//!   completion (an error after progress) resubmits the rest of the same send.
//! - **Close**: `shutdown(SHUT_WR)` and `close` of direct descriptors are SQEs too.
//!   Removing a connection cancels its receive (and send) and closes its slot, after any
//!   `shutdown` in flight (which names the descriptor only when a kernel worker runs it, so
//!   closing first could let it hit the next connection accepted into the slot); the slot
//!   record (with any in-flight send buffers) lives until every operation that names it has
//!   completed. `user_data` carries the slot key, a generation and the operation kind, so a
//!   late completion can never be taken for another connection's.
//! - **Wake-ups and timers**: a read stays armed on the reactor's eventfd ([`Waker`]), and
//!   each loop turn is one `io_uring_enter` that submits every SQE of the turn (all the
//!   flushes of a fan-out batch at once) and waits with the tick timeout.
//! - **Ring setup**: `IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN` (completion work runs
//!   only when the reactor enters the ring, never interrupting it), falling back to
//!   `COOP_TASKRUN`, then to none, on kernels that refuse them; `RINGCAST_URING_SETUP=
//!   defer|coop|plain` picks one (for measurements).
//!
//! Teardown cancels everything and waits (bounded) for the last completion before any
//! memory the kernel could touch is freed; if the bound passes, that memory is leaked.

mod bufring;
mod inflight;

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types::{DestinationSlot, Fd, Fixed, SubmitArgs, Timespec};
use io_uring::{IoUring, Probe, cqueue, opcode, squeue};

use crate::fanout::outbox::Written;
use slab::Slab;

use self::bufring::{BGID, BufRing};
use self::inflight::SendOp;
use super::core::accept::Backoff;
use super::core::{Core, Driver, Gate, IOV_MAX, WRITE_BUDGET};
use super::session::Step;
use super::waker::Waker;

/// Submission queue entries.
const SQ_ENTRIES: u32 = 4096;
/// Completion queue entries (the kernel keeps overflow too: `IORING_FEAT_NODROP`).
const CQ_ENTRIES: u32 = 16384;
/// Size of each provided receive buffer (their number is `Config::uring_recv_buffers`).
const RECV_BUF_SIZE: usize = 16 * 1024;
/// Largest registered file table per ring (the kernel's own limit is 1 << 20).
const MAX_FILES: u32 = 1 << 20;
/// How long teardown waits for the last completions.
const TEARDOWN: Duration = Duration::from_secs(2);
/// Idle send records kept for reuse (a burst of sends beyond it allocates, then frees).
const SEND_POOL: usize = 64;

/// Operation kinds, in the top byte of `user_data`.
mod op {
    pub(super) const ACCEPT: u8 = 1;
    pub(super) const WAKE: u8 = 2;
    pub(super) const RECV: u8 = 3;
    pub(super) const SEND: u8 = 4;
    pub(super) const SHUTDOWN: u8 = 5;
    pub(super) const CLOSE: u8 = 6;
    pub(super) const CANCEL: u8 = 7;
    /// A cancel of an operation that belongs to no slot (accept, wake read).
    pub(super) const CANCEL_OTHER: u8 = 8;
}

/// `user_data`: operation kind (8 bits) | generation (24 bits) | slot key (32 bits).
fn user_data(kind: u8, gen_: u32, slot: usize) -> u64 {
    (u64::from(kind) << 56) | (u64::from(gen_ & 0xff_ffff) << 32) | (slot as u64 & 0xffff_ffff)
}

fn split(ud: u64) -> (u8, u32, usize) {
    (
        (ud >> 56) as u8,
        ((ud >> 32) & 0xff_ffff) as u32,
        (ud & 0xffff_ffff) as usize,
    )
}

/// Why io_uring cannot be used here, or `Ok` when every piece the driver needs works:
/// `io_uring_setup`, the opcodes, the extended enter arguments, a sparse file table, a
/// provided-buffer ring, and a kernel with multishot receive (6.0). `RINGCAST_URING=off`
/// makes it fail (to exercise the fallback).
///
/// The kernel part runs once per process, on a thread of its own: closing an io_uring
/// instance queues work to every thread that created or used it, and a thread that is
/// still alive sees that as a pending signal (blocking socket calls with a timeout fail
/// with EINTR), which the caller of `Engine::start` must never see.
pub(crate) fn probe() -> Result<(), String> {
    if let Ok(v) = std::env::var("RINGCAST_URING") {
        if matches!(v.as_str(), "off" | "0" | "no" | "false") {
            return Err(format!("disabled by RINGCAST_URING={v}"));
        }
    }
    static PROBED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    PROBED
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("ringcast-uring-probe".into())
                .spawn(probe_kernel)
                .map_err(|e| format!("probe thread: {e}"))?
                .join()
                .map_err(|_| "probe thread panicked".to_string())?
        })
        .clone()
}

fn probe_kernel() -> Result<(), String> {
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup: {}", describe(&e)))?;
    if !ring.params().is_feature_ext_arg() {
        return Err("the kernel lacks IORING_FEAT_EXT_ARG (needs Linux 5.11)".into());
    }
    let mut p = Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("IORING_REGISTER_PROBE: {}", describe(&e)))?;
    let needed = [
        (opcode::AcceptMulti::CODE, "IORING_OP_ACCEPT"),
        (opcode::RecvMulti::CODE, "IORING_OP_RECV"),
        (opcode::SendMsg::CODE, "IORING_OP_SENDMSG"),
        (opcode::Send::CODE, "IORING_OP_SEND"),
        (opcode::Shutdown::CODE, "IORING_OP_SHUTDOWN"),
        (opcode::Close::CODE, "IORING_OP_CLOSE"),
        (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
        (opcode::Read::CODE, "IORING_OP_READ"),
    ];
    for (code, name) in needed {
        if !p.is_supported(code) {
            return Err(format!("missing opcode {name}"));
        }
    }
    if kernel_version() < (6, 0) {
        return Err("the kernel lacks multishot receive (needs Linux 6.0)".into());
    }
    ring.submitter()
        .register_files_sparse(1)
        .map_err(|e| format!("sparse file table: {}", describe(&e)))?;
    let bufs = BufRing::register(&ring, 1, 64)
        .map_err(|e| format!("provided-buffer ring: {}", describe(&e)))?;
    // Unregistered before its memory goes.
    let _ = ring.submitter().unregister_buf_ring(BGID);
    drop(bufs);
    Ok(())
}

fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => format!("EPERM ({e}; a sandbox or kernel.io_uring_disabled?)"),
        Some(libc::ENOSYS) => format!("ENOSYS ({e}; kernel without io_uring)"),
        _ => e.to_string(),
    }
}

fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// State of a connection's multishot receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    Off,
    Armed,
    /// Cancel submitted; its final completion (no `F_MORE`) is still to come.
    Cancelling,
}

/// The io_uring part of a connection, kept by the core.
#[derive(Debug)]
pub(crate) struct Io {
    /// Key of the connection's [`Slot`].
    slot: u32,
    /// A send is in flight.
    sending: bool,
}

/// What the driver keeps per direct descriptor, until every operation on it completed.
#[derive(Debug)]
struct Slot {
    /// The core's key while the connection exists; `None` once removed.
    conn: Option<u32>,
    /// Index in the registered file table.
    fixed: u32,
    gen_: u32,
    recv: Recv,
    /// The in-flight send and everything it points to.
    send: Option<Box<SendOp>>,
    /// Shutdown, close and cancel operations in flight.
    ops: u32,
    /// A `shutdown` is in flight. The kernel runs it on a worker thread and resolves the
    /// direct descriptor only there, so the slot must not be closed (and possibly reused by
    /// the next accept) before it completes: the close waits for it.
    shutting_down: bool,
    /// The connection is gone; close the descriptor once the shutdown completes.
    close_after_shutdown: bool,
    /// Bytes received while the session did not want them.
    stash: Stash,
    /// The peer's end (or a receive error) came after the stash.
    eof: bool,
}

/// Bytes received while the session did not want them; allocated only then. Boxed: an
/// empty stash costs a connection one pointer, not a `Vec`'s three words.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
struct Stash(Option<Box<Vec<u8>>>);

impl Stash {
    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|v| v.is_empty())
    }

    fn extend_from_slice(&mut self, data: &[u8]) {
        self.0.get_or_insert_default().extend_from_slice(data);
    }

    fn take(&mut self) -> Vec<u8> {
        self.0.take().map(|b| *b).unwrap_or_default()
    }

    /// Keeps `data[from..]` (input not fed yet), reusing `data`'s allocation.
    fn keep_from(&mut self, mut data: Vec<u8>, from: usize) {
        if from < data.len() {
            data.drain(..from);
            self.0 = Some(Box::new(data));
        }
    }
}

impl Slot {
    fn idle(&self) -> bool {
        self.conn.is_none() && self.recv == Recv::Off && self.send.is_none() && self.ops == 0
    }
}

/// The io_uring driver of one reactor. Field order matters: the ring is dropped (closed)
/// before the memory it used.
pub(crate) struct Uring {
    ring: IoUring,
    bufs: BufRing,
    slots: Slab<Slot>,
    next_gen: u32,
    listener: Option<TcpListener>,
    accept_armed: bool,
    backoff: Backoff,
    waker: Arc<Waker>,
    /// Where the eventfd read lands.
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// Completions taken off the queue, handled in order.
    cqes: Vec<cqueue::Entry>,
    /// Completions reaped early (to make room when submitting hit `EBUSY`).
    backlog: Vec<cqueue::Entry>,
    /// Connections to feed from their stash or re-arm, this turn.
    pending: Vec<usize>,
    /// Publishers held back by congested inboxes.
    deferred: Vec<usize>,
    /// Registered file table size.
    files: u32,
    /// Free table slots below which accepts are one-shot (a multishot accept may take the
    /// whole listen backlog at once, and a connection accepted into a full table is lost).
    oneshot_below: usize,
    /// The armed accept is multishot.
    accept_multishot: bool,
    /// Send SQEs made since the counters were last updated.
    writes: u64,
    /// Accepts take the peer's address (`max_conns_per_ip`): they are one-shot then, as
    /// a multishot accept carries no address.
    peer_addrs: bool,
    /// Where a one-shot accept writes the peer's address and its length; boxed so it
    /// does not move while the accept is in flight.
    accept_addr: Box<(libc::sockaddr_storage, libc::socklen_t)>,
    /// Idle send records, reused. Boxed: an SQE points into a record, which must not move
    /// while it is in flight (it lives in a slot then, and comes back here after).
    #[allow(clippy::vec_box)]
    send_pool: Vec<Box<SendOp>>,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("slots", &self.slots.len())
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Uring {
    /// A driver serving `listener`, woken through `waker` (an eventfd).
    pub(crate) fn new(
        listener: TcpListener,
        waker: Arc<Waker>,
        backlog: u32,
        recv_bufs: u16,
        peer_addrs: bool,
    ) -> io::Result<Self> {
        if waker.eventfd_raw().is_none() {
            return Err(io::Error::other("io_uring reactor needs an eventfd waker"));
        }
        let ring = build_ring()?;
        let files = nofile_limit().min(MAX_FILES);
        ring.submitter().register_files_sparse(files)?;
        let recv_bufs = recv_bufs.clamp(1, 1 << 15).next_power_of_two();
        let bufs = BufRing::register(&ring, recv_bufs, RECV_BUF_SIZE)?;
        tracing::debug!(
            "io_uring reactor: {files} direct descriptors, {recv_bufs} × {RECV_BUF_SIZE} B receive buffers"
        );
        let mut this = Self {
            ring,
            bufs,
            slots: Slab::new(),
            next_gen: 0,
            listener: Some(listener),
            accept_armed: false,
            backoff: Backoff::default(),
            waker,
            wake_buf: Box::new(0),
            wake_armed: false,
            cqes: Vec::with_capacity(1024),
            backlog: Vec::new(),
            pending: Vec::new(),
            deferred: Vec::new(),
            files,
            oneshot_below: backlog as usize + 64,
            accept_multishot: false,
            send_pool: Vec::new(),
            writes: 0,
            peer_addrs,
            // SAFETY: all-zero is a valid `sockaddr_storage` (family `AF_UNSPEC`).
            accept_addr: Box::new((unsafe { std::mem::zeroed() }, 0)),
        };
        this.arm_accept();
        this.arm_wake();
        Ok(this)
    }

    /// Queues an SQE, submitting first when the queue is full (never drops one).
    ///
    /// # Safety
    /// Every buffer `entry` points to must stay valid, and not be moved, until the
    /// completion that carries its `user_data` has been taken from the completion queue.
    unsafe fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: the caller guarantees what `entry` points to outlives the operation.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => self.reap_into_backlog(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!("io_uring submit: {e}");
                    self.reap_into_backlog();
                }
            }
        }
    }

    /// Moves every waiting completion to the backlog (handled at the next wait).
    fn reap_into_backlog(&mut self) {
        let mut cq = self.ring.completion();
        cq.sync();
        self.backlog.extend(cq);
    }

    /// Free slots of the registered file table (slots still in our slab, closing ones
    /// included, are counted as used).
    fn free_files(&self) -> usize {
        (self.files as usize).saturating_sub(self.slots.len())
    }

    /// Arms an accept unless one is armed, accepting is paused, or the file table is full:
    /// multishot while the table has room for a whole backlog, one-shot near the end.
    fn arm_accept(&mut self) {
        let Some(l) = &self.listener else {
            return;
        };
        if self.accept_armed || self.backoff.is_paused() {
            return;
        }
        let free = self.free_files();
        if free == 0 {
            let what = format!(
                "direct descriptor table full ({} slots; raise `ulimit -n` or add reactors)",
                self.files
            );
            self.backoff.full(&what);
            return;
        }
        let fd = Fd(l.as_raw_fd());
        self.accept_multishot = free > self.oneshot_below && !self.peer_addrs;
        let e = if self.accept_multishot {
            opcode::AcceptMulti::new(fd)
                .allocate_file_index(true)
                .build()
        } else if self.peer_addrs {
            let (addr, len) = &mut *self.accept_addr;
            *len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            opcode::Accept::new(fd, (addr as *mut libc::sockaddr_storage).cast(), len)
                .file_index(Some(DestinationSlot::auto_target()))
                .build()
        } else {
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                .file_index(Some(DestinationSlot::auto_target()))
                .build()
        };
        let e = e.user_data(user_data(op::ACCEPT, 0, 0));
        // SAFETY: an accept without a peer address points at no memory of ours; one with
        // it points into `accept_addr`, boxed (it does not move) and freed only with the
        // driver, after teardown has waited for the accept's completion (`outstanding`
        // counts an armed accept). One accept is armed at a time, so nothing else writes
        // there meanwhile.
        unsafe { self.push(&e) };
        self.accept_armed = true;
    }

    fn cancel_accept(&mut self) {
        let e = opcode::AsyncCancel::new(user_data(op::ACCEPT, 0, 0))
            .build()
            .user_data(user_data(op::CANCEL_OTHER, 0, 0));
        // SAFETY: a cancel SQE carries no pointers.
        unsafe { self.push(&e) };
    }

    fn arm_wake(&mut self) {
        if self.wake_armed {
            return;
        }
        let Some(fd) = self.waker.eventfd_raw() else {
            return;
        };
        let buf: *mut u64 = &raw mut *self.wake_buf;
        let e = opcode::Read::new(Fd(fd), buf.cast(), 8)
            .build()
            .user_data(user_data(op::WAKE, 0, 0));
        // SAFETY: `wake_buf` is a heap box owned by `self`, never replaced; teardown waits
        // for this read's completion (or leaks the box) before dropping it. The eventfd
        // stays open as long as `self.waker`.
        unsafe { self.push(&e) };
        self.wake_armed = true;
    }

    fn arm_recv(&mut self, slot_key: usize) {
        let s = &mut self.slots[slot_key];
        debug_assert_eq!(s.recv, Recv::Off);
        s.recv = Recv::Armed;
        let e = opcode::RecvMulti::new(Fixed(s.fixed), BGID)
            .build()
            .user_data(user_data(op::RECV, s.gen_, slot_key));
        // SAFETY: the receive writes only into provided buffers, which live as long as the
        // ring (`self.bufs`).
        unsafe { self.push(&e) };
    }

    /// An operation on a slot that points at no memory of ours (shutdown, close, cancel).
    fn push_slot_op(&mut self, slot_key: usize, e: squeue::Entry, kind: u8) {
        let s = &mut self.slots[slot_key];
        s.ops += 1;
        let e = e.user_data(user_data(kind, s.gen_, slot_key));
        // SAFETY: shutdown, close and cancel SQEs carry no pointers.
        unsafe { self.push(&e) };
    }

    fn cancel(&mut self, slot_key: usize, kind: u8) {
        let target = user_data(kind, self.slots[slot_key].gen_, slot_key);
        let e = opcode::AsyncCancel::new(target).build();
        self.push_slot_op(slot_key, e, op::CANCEL);
    }

    fn free_if_idle(&mut self, slot_key: usize) {
        if self.slots.get(slot_key).is_some_and(Slot::idle) {
            self.slots.remove(slot_key);
        }
    }

    /// A new slot for direct descriptor `fixed`.
    fn new_slot(&mut self, fixed: u32) -> usize {
        self.next_gen = self.next_gen.wrapping_add(1) & 0xff_ffff;
        self.slots.insert(Slot {
            conn: None,
            fixed,
            gen_: self.next_gen,
            recv: Recv::Off,
            send: None,
            ops: 0,
            shutting_down: false,
            close_after_shutdown: false,
            stash: Stash::default(),
            eof: false,
        })
    }

    /// Closes a detached slot's descriptor, cancelling what is still in flight on it.
    fn close_slot(&mut self, slot_key: usize) {
        let s = &mut self.slots[slot_key];
        s.conn = None;
        s.stash = Stash::default();
        if s.recv == Recv::Armed {
            s.recv = Recv::Cancelling;
            self.cancel(slot_key, op::RECV);
        }
        if self.slots[slot_key].send.is_some() {
            self.cancel(slot_key, op::SEND);
        }
        if self.slots[slot_key].shutting_down {
            self.slots[slot_key].close_after_shutdown = true;
        } else {
            self.push_close(slot_key);
        }
    }

    fn push_close(&mut self, slot_key: usize) {
        let fixed = self.slots[slot_key].fixed;
        let e = opcode::Close::new(Fixed(fixed)).build();
        self.push_slot_op(slot_key, e, op::CLOSE);
    }

    /// Queues `key` to be fed from its stash and re-armed, if it wants input and nothing
    /// is receiving for it.
    fn want_recv(&mut self, core: &Core<Io>, key: usize) {
        let Some(c) = core.conns.get(key) else {
            return;
        };
        if self.slots[c.io.slot as usize].recv != Recv::Off {
            return;
        }
        match core.gate(key) {
            Gate::Open => self.pending.push(key),
            // A publisher held back by congested inboxes: retried once they drain.
            Gate::Defer => self.defer(key),
            Gate::Closed => {}
        }
    }

    fn on_cqe(&mut self, core: &mut Core<Io>, cqe: &cqueue::Entry, now: Instant) {
        let (kind, gen_, slot_key) = split(cqe.user_data());
        match kind {
            op::ACCEPT => return self.on_accept(core, cqe, now),
            op::WAKE => {
                self.wake_armed = false;
                return;
            }
            op::CANCEL_OTHER => return,
            _ => {}
        }
        if self.slots.get(slot_key).is_none_or(|s| s.gen_ != gen_) {
            tracing::error!("io_uring completion for a freed slot ({kind}, {slot_key})");
            return;
        }
        match kind {
            op::RECV => self.on_recv(core, slot_key, cqe, now),
            op::SEND => self.on_send(core, slot_key, cqe.result(), now),
            op::SHUTDOWN => {
                let s = &mut self.slots[slot_key];
                s.ops -= 1;
                s.shutting_down = false;
                if std::mem::take(&mut s.close_after_shutdown) {
                    self.push_close(slot_key);
                }
            }
            op::CLOSE | op::CANCEL => self.slots[slot_key].ops -= 1,
            _ => tracing::error!("io_uring completion of unknown kind {kind}"),
        }
        self.free_if_idle(slot_key);
    }

    fn on_accept(&mut self, core: &mut Core<Io>, cqe: &cqueue::Entry, now: Instant) {
        if !cqueue::more(cqe.flags()) {
            self.accept_armed = false;
        }
        let res = cqe.result();
        if res < 0 {
            let e = io::Error::from_raw_os_error(-res);
            if res != -libc::ECANCELED {
                let hint = format!(
                    "{} direct descriptors per reactor; raise `ulimit -n` or add reactors",
                    self.files
                );
                if self.backoff.failed(&e, now, core.conns.len(), &hint) && self.accept_armed {
                    self.cancel_accept();
                }
            }
            return self.arm_accept();
        }
        let slot_key = self.new_slot(res as u32);
        if self.listener.is_none() {
            // Accepted while stopping.
            return self.close_slot(slot_key);
        }
        self.backoff.accepted(core.conns.len());
        let peer = if self.peer_addrs && !self.accept_multishot {
            peer_ip(&self.accept_addr.0)
        } else {
            None
        };
        let (key, refused) = core.insert(
            Io {
                slot: slot_key as u32,
                sending: false,
            },
            peer,
            now,
        );
        self.slots[slot_key].conn = Some(key as u32);
        self.arm_recv(slot_key);
        if refused {
            self.flush(core, key, now);
        }
        if self.accept_armed && self.accept_multishot && self.free_files() <= self.oneshot_below {
            // Near the end of the table: one connection per accept from now on.
            self.accept_multishot = false;
            self.cancel_accept();
        }
        self.arm_accept();
    }

    fn on_recv(&mut self, core: &mut Core<Io>, slot_key: usize, cqe: &cqueue::Entry, now: Instant) {
        let (res, flags) = (cqe.result(), cqe.flags());
        if !cqueue::more(flags) {
            self.slots[slot_key].recv = Recv::Off;
        }
        let key = self.slots[slot_key].conn.map(|k| k as usize);
        if let Some(bid) = cqueue::buffer_select(flags) {
            let n = usize::try_from(res).unwrap_or(0);
            let data = self.bufs.get(bid, n.min(self.bufs.buf_size()));
            if let Some(key) = key.filter(|_| !data.is_empty()) {
                let s = &mut self.slots[slot_key];
                if s.stash.is_empty() && (core.gate(key) == Gate::Open) {
                    core.feed(key, data, now);
                } else {
                    s.stash.extend_from_slice(data);
                }
            }
            self.bufs.recycle(bid);
        }
        let Some(key) = key else {
            return;
        };
        let s = &mut self.slots[slot_key];
        if res == 0 || (res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED) {
            // The peer's end, or an error: seen once everything before it was read.
            if s.stash.is_empty() && (core.gate(key) == Gate::Open) {
                return core.remove(self, key);
            }
            s.eof = true;
        }
        let s = &mut self.slots[slot_key];
        if s.recv == Recv::Armed && (!s.stash.is_empty() || s.eof) {
            // Input the session does not take now: stop receiving until it does.
            s.recv = Recv::Cancelling;
            self.cancel(slot_key, op::RECV);
        }
        if core.conns[key].session.is_publisher() && core.fanout.is_congested() {
            self.defer(key);
        }
        self.flush(core, key, now);
    }

    /// Holds a publisher back until the inboxes drain (once, however often it is asked).
    fn defer(&mut self, key: usize) {
        if !self.deferred.contains(&key) {
            self.deferred.push(key);
        }
    }

    fn on_send(&mut self, core: &mut Core<Io>, slot_key: usize, res: i32, now: Instant) {
        let Some(mut op) = self.slots[slot_key].send.take() else {
            return;
        };
        let Some(key) = self.slots[slot_key].conn.map(|k| k as usize) else {
            // Detached: the completion releases the pins, nothing else.
            return self.recycle(op);
        };
        let failed = match res {
            n if n > 0 => {
                if !op.sent(n as usize) {
                    // Stopped short (an error after progress): send the rest, from the
                    // same record, before anything else.
                    return self.submit_send(slot_key, op);
                }
                core.note_written(Written { frames: op.frames }, op.len());
                false
            }
            n if n == -libc::EINTR || n == -libc::EAGAIN => {
                return self.submit_send(slot_key, op);
            }
            _ => true,
        };
        // Only now may the pins go: the kernel is done with the memory.
        self.recycle(op);
        core.conns[key].io.sending = false;
        if failed {
            return core.remove(self, key);
        }
        self.flush(core, key, now);
    }

    /// Starts a `sendmsg` of what connection `key` has pending (up to the lag limit), and
    /// moves its cursors past it (see [`inflight`]).
    fn start_send(&mut self, core: &mut Core<Io>, key: usize) {
        if core.conns[key].session.outbox.is_empty(&core.topics) {
            return;
        }
        let mut op = self.send_pool.pop().unwrap_or_else(SendOp::new);
        // What a send carries is committed: no more than the lag limit, so a slow
        // consumer's policy still has the rest to act on.
        let budget = WRITE_BUDGET.min(core.config.max_lag_bytes.max(64 << 10));
        let Core { conns, topics, .. } = &mut *core;
        let c = &mut conns[key];
        let total = c.session.outbox.gather(topics, budget, |b, k| {
            op.push(b, k);
            op.slices() < IOV_MAX
        });
        if total == 0 {
            return self.recycle(op);
        }
        op.frames = c.session.outbox.advance(topics, total).frames;
        c.io.sending = true;
        let slot_key = c.io.slot as usize;
        self.submit_send(slot_key, op);
    }

    fn submit_send(&mut self, slot_key: usize, mut op: Box<SendOp>) {
        let s = &mut self.slots[slot_key];
        let flags = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;
        let e = match op.single() {
            Some((ptr, len)) => opcode::Send::new(Fixed(s.fixed), ptr, len as u32)
                .flags(flags)
                .build(),
            None => opcode::SendMsg::new(Fixed(s.fixed), op.header())
                .flags(flags as u32)
                .build(),
        };
        let e = e.user_data(user_data(op::SEND, s.gen_, slot_key));
        self.writes += 1;
        s.send = Some(op);
        // SAFETY: the header, the iovecs and the pins of the memory they point into belong
        // to the boxed `SendOp` now held in the slot, unchanged until this send's
        // completion; the slot (and the box) is kept until then, also when the connection
        // closes (`free_if_idle` waits for `send` to be taken by `on_send`).
        unsafe { self.push(&e) };
    }

    /// Puts an idle send record back in the pool (its pins released).
    fn recycle(&mut self, mut op: Box<SendOp>) {
        op.clear();
        if self.send_pool.len() < SEND_POOL {
            self.send_pool.push(op);
        }
    }

    /// Feeds a connection its stash, then re-arms its receive (see [`Self::want_recv`]).
    fn resume_read(&mut self, core: &mut Core<Io>, key: usize, now: Instant) {
        let Some(c) = core.conns.get(key) else {
            return;
        };
        let slot_key = c.io.slot as usize;
        if self.slots[slot_key].recv != Recv::Off {
            return;
        }
        match core.gate(key) {
            Gate::Open => {}
            Gate::Defer => return self.defer(key),
            Gate::Closed => return,
        }
        // Fed a receive buffer's worth at a time: a publisher's stash can hold far more
        // messages than the inboxes, and must stop as soon as they congest.
        let mut stash = self.slots[slot_key].stash.take();
        let mut fed = 0;
        while fed < stash.len() {
            let end = (fed + self.bufs.buf_size()).min(stash.len());
            core.feed(key, &mut stash[fed..end], now);
            fed = end;
            if core.gate(key) != Gate::Open {
                break;
            }
        }
        if fed < stash.len() {
            self.slots[slot_key].stash.keep_from(stash, fed);
            if core.gate(key) == Gate::Defer {
                self.defer(key);
            }
            return self.flush(core, key, now);
        }
        if self.slots[slot_key].eof {
            return core.remove(self, key);
        }
        if core.gate(key) == Gate::Open {
            self.arm_recv(slot_key);
        }
        // Otherwise the stash just fed may have congested the inboxes: `flush` ends in
        // `want_recv`, which defers the publisher until they drain.
        self.flush(core, key, now);
    }

    fn drain_completions(&mut self, core: &mut Core<Io>) {
        let now = Instant::now();
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.append(&mut self.backlog);
        {
            let mut cq = self.ring.completion();
            cq.sync();
            cqes.extend(&mut cq);
        }
        for cqe in &cqes {
            self.on_cqe(core, cqe, now);
        }
        cqes.clear();
        self.cqes = cqes;
    }

    fn outstanding(&self) -> bool {
        self.accept_armed || self.wake_armed || !self.slots.is_empty()
    }
}

/// Builds a reactor's ring with the cheapest completion mode the kernel takes (module
/// docs); `RINGCAST_URING_SETUP` picks one.
/// The IP address in a `sockaddr` the kernel filled in (IPv4 or IPv6).
fn peer_ip(addr: &libc::sockaddr_storage) -> Option<std::net::IpAddr> {
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, which it is large
            // and aligned enough for.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for `sockaddr_in6`.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(std::net::Ipv6Addr::from(a.sin6_addr.s6_addr).into())
        }
        _ => None,
    }
}

fn build_ring() -> io::Result<IoUring> {
    let forced = std::env::var("RINGCAST_URING_SETUP").ok();
    let modes: &[&str] = match forced.as_deref() {
        Some(m @ ("defer" | "coop" | "plain")) => &[m][..],
        _ => &["defer", "coop", "plain"],
    };
    let mut last = None;
    for &mode in modes {
        let mut b = IoUring::builder();
        b.setup_cqsize(CQ_ENTRIES);
        match mode {
            "defer" => {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag();
            }
            "coop" => {
                b.setup_coop_taskrun().setup_taskrun_flag();
            }
            _ => {}
        }
        match b.build(SQ_ENTRIES) {
            Ok(ring) => {
                tracing::debug!("io_uring ring setup: {mode}");
                return Ok(ring);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no io_uring setup mode")))
}

/// The soft `RLIMIT_NOFILE`: the most direct descriptors one ring may register.
fn nofile_limit() -> u32 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit struct.
    match super::sys::cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut rl) }) {
        Ok(_) => u32::try_from(rl.rlim_cur).unwrap_or(u32::MAX),
        Err(_) => 1024,
    }
}

impl Driver for Uring {
    type Io = Io;

    fn write_blocked(io: &Io) -> bool {
        io.sending
    }

    fn wait(&mut self, core: &mut Core<Io>, timeout: Duration) -> io::Result<()> {
        self.arm_wake();
        let res = if timeout.is_zero() || !self.backlog.is_empty() {
            self.ring.submit()
        } else {
            let ts = Timespec::from(timeout);
            let args = SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(1, &args)
        };
        match res {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) => {}
            Err(e) => return Err(e),
        }
        self.drain_completions(core);
        core.note_writes(std::mem::take(&mut self.writes));
        Ok(())
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.backlog.is_empty()
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
    }

    fn maintain(&mut self, _core: &mut Core<Io>, now: Instant) {
        self.backoff.expire(now);
        self.arm_accept();
    }

    fn flush(&mut self, core: &mut Core<Io>, key: usize, now: Instant) {
        let Some(c) = core.conns.get_mut(key) else {
            return;
        };
        c.dirty = false;
        if !c.io.sending {
            self.start_send(core, key);
            if !core.conns[key].io.sending {
                match core.after_write(key, now) {
                    Step::Continue => {}
                    Step::ShutdownWrite => {
                        let slot_key = core.conns[key].io.slot as usize;
                        let fixed = self.slots[slot_key].fixed;
                        let e = opcode::Shutdown::new(Fixed(fixed), libc::SHUT_WR).build();
                        self.slots[slot_key].shutting_down = true;
                        self.push_slot_op(slot_key, e, op::SHUTDOWN);
                    }
                    Step::Drop => return core.remove(self, key),
                }
            }
        }
        // Backpressure released, or lingering: take input again.
        self.want_recv(core, key);
    }

    fn release(&mut self, _key: usize, io: Io) {
        self.close_slot(io.slot as usize);
        self.free_if_idle(io.slot as usize);
    }

    fn stop_accepting(&mut self) {
        self.listener = None;
        if self.accept_armed {
            self.cancel_accept();
        }
    }

    fn finish(&mut self, core: &mut Core<Io>) {
        self.stop_accepting();
        let keys: Vec<usize> = core.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            core.remove(self, key);
        }
        if self.wake_armed {
            let e = opcode::AsyncCancel::new(user_data(op::WAKE, 0, 0))
                .build()
                .user_data(user_data(op::CANCEL_OTHER, 0, 0));
            // SAFETY: a cancel SQE carries no pointers.
            unsafe { self.push(&e) };
        }
        let deadline = Instant::now() + TEARDOWN;
        while self.outstanding() && Instant::now() < deadline {
            let ts = Timespec::from(Duration::from_millis(100));
            let args = SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e)
                    if e.raw_os_error() != Some(libc::ETIME)
                        && e.kind() != io::ErrorKind::Interrupted =>
                {
                    if e.raw_os_error() != Some(libc::EBUSY) {
                        break;
                    }
                }
                Err(_) => {}
            }
            // Unlike `wait`, this does not re-arm the wake read.
            self.drain_completions(core);
        }
        if self.outstanding() {
            tracing::warn!(
                "io_uring teardown: {} connections' operations still in flight after \
                 {TEARDOWN:?}; leaking their buffers",
                self.slots.len()
            );
        } else {
            tracing::debug!("io_uring teardown: every operation completed");
        }
    }
}

impl Drop for Uring {
    /// After [`Driver::finish`] nothing is in flight and everything is freed normally. If
    /// something still is (teardown timed out, or the reactor panicked and never finished),
    /// the memory those operations point to is leaked rather than freed under the kernel.
    fn drop(&mut self) {
        if self.outstanding() {
            self.bufs.leak();
            std::mem::forget(std::mem::take(&mut self.slots));
            Box::leak(std::mem::replace(&mut self.wake_buf, Box::new(0)));
            if self.accept_armed {
                // SAFETY: all-zero is a valid `sockaddr_storage`.
                let blank = Box::new((unsafe { std::mem::zeroed() }, 0));
                Box::leak(std::mem::replace(&mut self.accept_addr, blank));
            }
        }
    }
}

#[cfg(test)]
mod tests;
