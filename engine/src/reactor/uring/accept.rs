//! Accepting into direct descriptors, on the ring with the most room.
//!
//! One accept is armed at a time, on one ring: the ring with the most free table slots.
//! A multishot accept may take the whole listen backlog in one go, and a connection
//! accepted into a full table is closed by the kernel, so a ring keeps a multishot accept
//! only while it has room for a backlog more; then the accept is cancelled and armed
//! again where there is room — on a new ring if none has — or, once the reactor has all
//! the rings it may open, one-shot until the tables are full. With every table full,
//! accepting pauses until connections close (as EMFILE does on epoll).

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::time::Instant;

use io_uring::types::{DestinationSlot, Fd};
use io_uring::{cqueue, opcode};

use super::user_data::{op, user_data};
use super::{Io, Uring};
use crate::reactor::core::Core;
use crate::reactor::core::accept::Backoff;

/// Where accepts come from and go to.
pub(super) struct Acceptor {
    pub(super) listener: Option<TcpListener>,
    /// The ring whose accept is armed.
    pub(super) armed: Option<usize>,
    /// The armed accept is multishot.
    multishot: bool,
    pub(super) backoff: Backoff,
    /// Free table slots below which a ring's accepts are one-shot.
    oneshot_below: usize,
    /// Accepts take the peer's address (`max_conns_per_ip`): one-shot then.
    peer_addrs: bool,
    /// Where a one-shot accept writes the peer's address and its length; boxed so it
    /// does not move while the accept is in flight.
    addr: Box<(libc::sockaddr_storage, libc::socklen_t)>,
}

impl Acceptor {
    pub(super) fn new(listener: TcpListener, backlog: u32, peer_addrs: bool) -> Self {
        Self {
            listener: Some(listener),
            armed: None,
            multishot: false,
            backoff: Backoff::default(),
            oneshot_below: backlog as usize + 64,
            peer_addrs,
            // SAFETY: all-zero is a valid `sockaddr_storage` (family `AF_UNSPEC`).
            addr: Box::new((unsafe { std::mem::zeroed() }, 0)),
        }
    }

    /// Never frees the address buffer: for a teardown that could not prove the kernel is
    /// done with an accept that writes there.
    pub(super) fn leak(&mut self) {
        // SAFETY: all-zero is a valid `sockaddr_storage`.
        let blank = Box::new((unsafe { std::mem::zeroed() }, 0));
        Box::leak(std::mem::replace(&mut self.addr, blank));
    }
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("armed", &self.armed)
            .field("multishot", &self.multishot)
            .finish_non_exhaustive()
    }
}

impl Uring {
    /// The ring to accept on, and whether multishot (see the module docs). A new ring
    /// opens when no ring has room for a backlog and a new one would (its whole table
    /// does), or when every ring is full.
    fn accept_target(&mut self) -> Option<(usize, bool)> {
        let (best, free) = self
            .rings
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.free()))
            .max_by_key(|&(i, free)| (free, std::cmp::Reverse(i)))?;
        let margin = self.accept.oneshot_below;
        let multi = !self.accept.peer_addrs;
        if free > margin {
            return Some((best, multi));
        }
        if self.files as usize > margin {
            if let Some(new) = self.open_ring() {
                return Some((new, multi));
            }
        }
        if free > 0 {
            return Some((best, false));
        }
        self.open_ring().map(|new| (new, false))
    }

    /// Arms an accept unless one is armed, accepting is paused, or every table is full.
    pub(super) fn arm_accept(&mut self) {
        let Some(fd) = self.accept.listener.as_ref().map(|l| Fd(l.as_raw_fd())) else {
            return;
        };
        if self.accept.armed.is_some() || self.accept.backoff.is_paused() {
            return;
        }
        let Some((ring, multishot)) = self.accept_target() else {
            let what = format!(
                "direct descriptor tables full ({} rings × {} slots; raise `ulimit -n`, \
                 the ring limit or add reactors)",
                self.rings.len(),
                self.files
            );
            self.accept.backoff.full(&what);
            return;
        };
        self.accept.multishot = multishot;
        let e = if multishot {
            opcode::AcceptMulti::new(fd)
                .allocate_file_index(true)
                .build()
        } else if self.accept.peer_addrs {
            let (addr, len) = &mut *self.accept.addr;
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
        // it points into `accept.addr`, boxed (it does not move) and freed only with the
        // driver, after teardown has waited for the accept's completion (`outstanding`
        // counts an armed accept). One accept is armed at a time, so nothing else writes
        // there meanwhile.
        unsafe { self.rings[ring].push(&e) };
        self.accept.armed = Some(ring);
    }

    /// Cancels the armed accept; its last completion clears `armed`.
    pub(super) fn cancel_accept(&mut self) {
        let Some(ring) = self.accept.armed else {
            return;
        };
        let e = opcode::AsyncCancel::new(user_data(op::ACCEPT, 0, 0))
            .build()
            .user_data(user_data(op::CANCEL_OTHER, 0, 0));
        // SAFETY: a cancel SQE carries no pointers.
        unsafe { self.rings[ring].push(&e) };
    }

    pub(super) fn on_accept(
        &mut self,
        core: &mut Core<Io>,
        ring: usize,
        cqe: &cqueue::Entry,
        now: Instant,
    ) {
        if !cqueue::more(cqe.flags()) {
            self.accept.armed = None;
        }
        let res = cqe.result();
        if res < 0 {
            let e = std::io::Error::from_raw_os_error(-res);
            if res != -libc::ECANCELED {
                let hint = format!(
                    "{} rings × {} direct descriptors; raise `ulimit -n`, the ring limit or \
                     add reactors",
                    self.rings.len(),
                    self.files
                );
                let open = core.conns.len();
                if self.accept.backoff.failed(&e, now, open, &hint) {
                    self.cancel_accept();
                }
            }
            return self.arm_accept();
        }
        let index = res as u32;
        self.next_gen = super::user_data::next_gen(self.next_gen);
        if self.rings[ring].slots.occupy(index, self.next_gen).is_err() {
            // The kernel handed out an index we still hold: never expected. The record
            // stays; the new descriptor stays unused rather than shadow it.
            tracing::error!(ring, index, "io_uring: accepted into a slot still in use");
            return self.arm_accept();
        }
        if self.accept.listener.is_none() {
            // Accepted while stopping.
            return self.close_slot(ring, index);
        }
        self.accept.backoff.accepted(core.conns.len());
        let peer = if self.accept.peer_addrs && !self.accept.multishot {
            peer_ip(&self.accept.addr.0)
        } else {
            None
        };
        let io = Io {
            ring: ring as u16,
            slot: index,
        };
        let (key, refused) = core.insert(io, peer, now);
        self.rings[ring].slots.at(index).attach(key);
        self.arm_recv(ring, index);
        if refused {
            self.flush_conn(core, key, now);
        }
        if self.accept.armed == Some(ring)
            && self.accept.multishot
            && self.rings[ring].free() <= self.accept.oneshot_below
        {
            // Nearly full: the accept moves to a ring with room (or goes one-shot).
            self.accept.multishot = false;
            self.cancel_accept();
        }
        self.arm_accept();
    }
}

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
