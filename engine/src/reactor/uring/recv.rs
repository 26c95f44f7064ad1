//! Receiving: one multishot receive per connection into its ring's provided buffers; a
//! stash for bytes the session does not want yet, and the rules for re-arming.
//!
//! **Out of buffers.** When more connections have input at once than their ring has
//! buffers, the kernel ends the receives it cannot serve with `ENOBUFS`. Re-arming them
//! all at once would only end most of them the same way, every turn, each costing a trip
//! through the kernel — a storm of pongs or requests on a ring of 20 000 connections
//! would stall the reactor. Such receives queue instead, and each turn re-arms as many
//! of them as the ring has buffers, in order.

use std::time::Instant;

use io_uring::types::Fixed;
use io_uring::{cqueue, opcode};

use super::bufring::BGID;
use super::ring::RECV_BUF_SIZE;
use super::slot::Recv;
use super::user_data::{op, user_data};
use super::{Io, Uring};
use crate::reactor::core::{Core, Gate};

impl Uring {
    pub(super) fn arm_recv(&mut self, ring: usize, index: u32) {
        let r = &mut self.rings[ring];
        let s = r.slots.at(index);
        debug_assert_eq!(s.recv, Recv::Off);
        s.recv = Recv::Armed;
        let e = opcode::RecvMulti::new(Fixed(index), BGID)
            .build()
            .user_data(user_data(op::RECV, s.gen_, index));
        // SAFETY: the receive writes only into provided buffers, which live as long as the
        // ring (`Ring::bufs`).
        unsafe { r.push(&e) };
    }

    /// Queues `key` to be fed from its stash and re-armed, if it wants input and nothing
    /// is receiving for it.
    pub(super) fn want_recv(&mut self, core: &Core<Io>, key: usize) {
        let Some(c) = core.conns.get(key) else {
            return;
        };
        let (ring, index) = (usize::from(c.io.ring), c.io.slot);
        if self.rings[ring].slots.at(index).recv != Recv::Off {
            return;
        }
        match core.gate(key) {
            Gate::Open => self.pending.push(key),
            // A publisher held back by congested inboxes: retried once they drain.
            Gate::Defer => self.defer(key),
            Gate::Closed => {}
        }
    }

    /// Holds a publisher back until the inboxes drain (once, however often it is asked).
    pub(super) fn defer(&mut self, key: usize) {
        if !self.deferred.contains(&key) {
            self.deferred.push(key);
        }
    }

    /// Whether connection `key` has stashed bytes.
    fn stashed(&self, key: usize) -> bool {
        // Most reactors have no stash at all: no lookup then.
        !self.stashes.is_empty() && self.stashes.get(&key).is_some_and(|v| !v.is_empty())
    }

    pub(super) fn on_recv(
        &mut self,
        core: &mut Core<Io>,
        ring: usize,
        index: u32,
        cqe: &cqueue::Entry,
        now: Instant,
    ) {
        let (res, flags) = (cqe.result(), cqe.flags());
        let r = &mut self.rings[ring];
        let s = r.slots.at(index);
        let key = s.conn();
        if !cqueue::more(flags) {
            s.recv = if res == -libc::ENOBUFS && key.is_some() && s.recv == Recv::Armed {
                r.starved.push_back((index, s.gen_));
                Recv::Starved
            } else {
                Recv::Off
            };
        }
        if let Some(bid) = cqueue::buffer_select(flags) {
            let stashed = key.is_some_and(|k| self.stashed(k));
            let Self { rings, stashes, .. } = self;
            let bufs = &mut rings[ring].bufs;
            let n = usize::try_from(res).unwrap_or(0);
            let data = bufs.get(bid, n.min(bufs.buf_size()));
            if let Some(key) = key.filter(|_| !data.is_empty()) {
                if !stashed && core.gate(key) == Gate::Open {
                    core.feed(key, data, now);
                } else {
                    stashes.entry(key).or_default().extend_from_slice(data);
                }
            }
            bufs.recycle(bid);
        }
        let Some(key) = key else {
            return;
        };
        let stashed = self.stashed(key);
        if res == 0 || (res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED) {
            // The peer's end, or an error: seen once everything before it was read.
            if !stashed && core.gate(key) == Gate::Open {
                return core.remove(self, key);
            }
            self.rings[ring].slots.at(index).set_eof();
        }
        let s = self.rings[ring].slots.at(index);
        if s.recv == Recv::Armed && (stashed || s.eof()) {
            // Input the session does not take now: stop receiving until it does.
            s.recv = Recv::Cancelling;
            self.cancel(ring, index, op::RECV);
        }
        if core.conns[key].session.is_publisher() && core.fanout.is_congested() {
            self.defer(key);
        }
        self.flush_conn(core, key, now);
    }

    /// Re-arms, on every ring, as many receives that ran out of buffers as the ring has
    /// buffers (see the module docs).
    pub(super) fn rearm_starved(&mut self, core: &mut Core<Io>, now: Instant) {
        for ring in 0..self.rings.len() {
            let budget = self.rings[ring].bufs.entries();
            for _ in 0..budget {
                let Some((index, gen_)) = self.rings[ring].starved.pop_front() else {
                    break;
                };
                let Some(s) = self.rings[ring].slots.find(index, gen_) else {
                    continue;
                };
                if s.recv != Recv::Starved {
                    continue;
                }
                s.recv = Recv::Off;
                if let Some(key) = s.conn() {
                    self.resume_read(core, key, now);
                }
            }
        }
    }

    /// Feeds a connection its stash, then re-arms its receive (see [`Self::want_recv`]).
    pub(super) fn resume_read(&mut self, core: &mut Core<Io>, key: usize, now: Instant) {
        let Some(c) = core.conns.get(key) else {
            return;
        };
        let (ring, index) = (usize::from(c.io.ring), c.io.slot);
        if self.rings[ring].slots.at(index).recv != Recv::Off {
            return;
        }
        match core.gate(key) {
            Gate::Open => {}
            Gate::Defer => return self.defer(key),
            Gate::Closed => return,
        }
        // Fed a receive buffer's worth at a time: a publisher's stash can hold far more
        // messages than the inboxes, and must stop as soon as they congest.
        let mut stash = self.stashes.remove(&key).unwrap_or_default();
        let mut fed = 0;
        while fed < stash.len() {
            let end = (fed + RECV_BUF_SIZE).min(stash.len());
            core.feed(key, &mut stash[fed..end], now);
            fed = end;
            if core.gate(key) != Gate::Open {
                break;
            }
        }
        if fed < stash.len() {
            // Input not fed yet stays, in the same allocation.
            stash.drain(..fed);
            self.stashes.insert(key, stash);
            if core.gate(key) == Gate::Defer {
                self.defer(key);
            }
            return self.flush_conn(core, key, now);
        }
        if self.rings[ring].slots.at(index).eof() {
            return core.remove(self, key);
        }
        if core.gate(key) == Gate::Open {
            self.arm_recv(ring, index);
        }
        // Otherwise the stash just fed may have congested the inboxes: `flush` ends in
        // `want_recv`, which defers the publisher until they drain.
        self.flush_conn(core, key, now);
    }
}
