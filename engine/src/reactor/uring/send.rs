//! Sending: at most one send in flight per connection, carrying what it has pending
//! straight from the topic logs, in a pooled record that owns the iovecs and the pins of
//! the memory they point into until the completion arrives ([`super::inflight`]).

use std::time::Instant;

use io_uring::opcode;
use io_uring::types::Fixed;

use super::inflight::SendOp;
use super::user_data::{op, user_data};
use super::{Io, Uring};
use crate::fanout::outbox::Written;
use crate::reactor::core::{Core, IOV_MAX, WRITE_BUDGET};
use crate::reactor::session::Step;

impl Uring {
    /// Starts writing what connection `key` has pending, unless a send is in flight (then
    /// it is flushed again when that send completes); with nothing to send, acts on
    /// [`Core::after_write`] (a drained session half-closes). Ends by taking input again
    /// where backpressure released it.
    pub(super) fn flush_conn(&mut self, core: &mut Core<Io>, key: usize, now: Instant) {
        let Some(c) = core.conns.get_mut(key) else {
            return;
        };
        c.dirty = false;
        let (ring, index) = (usize::from(c.io.ring), c.io.slot);
        if self.rings[ring].slots.sending(index) {
            self.rings[ring].slots.at(index).set_again();
        } else {
            self.start_send(core, key);
            if !self.rings[ring].slots.sending(index) {
                match core.after_write(key, now) {
                    Step::Continue => {}
                    Step::ShutdownWrite => {
                        let e = opcode::Shutdown::new(Fixed(index), libc::SHUT_WR).build();
                        self.push_slot_op(ring, index, e, op::SHUTDOWN);
                    }
                    Step::Drop => return core.remove(self, key),
                }
            }
        }
        // Backpressure released, or lingering: take input again.
        self.want_recv(core, key);
    }

    /// A send completed. The connection is looked at only if the send left it something
    /// to do (see [`start_send`](Self::start_send)) or something came for it meanwhile
    /// (`Slot::take_again`): a fan-out send that took everything its subscriber was owed
    /// ends in the slot, without a touch of the connection's state. What was published
    /// during its flight is written by the next delivery pass, whose visit of this
    /// subscriber comes after this completion or asks for a flush on it.
    pub(super) fn on_send(
        &mut self,
        core: &mut Core<Io>,
        ring: usize,
        index: u32,
        res: i32,
        now: Instant,
    ) {
        let s = self.rings[ring].slots.at(index);
        let Some(mut op) = s.send.take() else {
            return;
        };
        let Some(key) = s.conn() else {
            // Detached: the completion releases the pins, nothing else.
            return self.recycle(op);
        };
        let failed = match res {
            n if n > 0 => {
                if !op.sent(n as usize) {
                    // Stopped short (an error after progress): send the rest, from the
                    // same record, before anything else.
                    return self.submit_send(ring, index, op);
                }
                core.note_written(Written { frames: op.frames }, op.len());
                false
            }
            n if n == -libc::EINTR || n == -libc::EAGAIN => {
                return self.submit_send(ring, index, op);
            }
            _ => true,
        };
        // Only now may the pins go: the kernel is done with the memory.
        self.recycle(op);
        if failed {
            return core.remove(self, key);
        }
        if !self.rings[ring].slots.at(index).take_again() {
            return;
        }
        if core.conns[key].session.outbox.is_empty(&core.topics) {
            // Nothing more: what follows a drained write (a half-close), at once.
            return self.flush_conn(core, key, now);
        }
        // The next send leaves in the next delivery pass, with what was published until
        // then: sent at once, it would carry only the few frames that came during this
        // one, and a loaded reactor would settle into small sends.
        core.mark_dirty(key);
    }

    /// Starts a `sendmsg` of what connection `key` has pending (up to the lag limit), and
    /// moves its cursors past it (see [`super::inflight`]). Unless it carries only
    /// published bytes, all of them, of an open session, the connection is looked at again
    /// when it completes: for the rest, for what follows its own frames (input taken again
    /// after replies over the limit) or for the next step of a closing session.
    fn start_send(&mut self, core: &mut Core<Io>, key: usize) {
        if core.conns[key].session.outbox.is_empty(&core.topics) {
            return;
        }
        let mut op = self.send_pool.take();
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
        let own = c.session.outbox.own_bytes() > 0;
        op.frames = c.session.outbox.advance(topics, total).frames;
        let again = own || c.session.is_closing() || !c.session.outbox.is_empty(topics);
        let (ring, index) = (usize::from(c.io.ring), c.io.slot);
        if again {
            self.rings[ring].slots.at(index).set_again();
        }
        self.submit_send(ring, index, op);
    }

    fn submit_send(&mut self, ring: usize, index: u32, mut op: Box<SendOp>) {
        let r = &mut self.rings[ring];
        let s = r.slots.at(index);
        let flags = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;
        let e = match op.single() {
            Some((ptr, len)) => opcode::Send::new(Fixed(index), ptr, len as u32)
                .flags(flags)
                .build(),
            None => opcode::SendMsg::new(Fixed(index), op.header())
                .flags(flags as u32)
                .build(),
        };
        let e = e.user_data(user_data(op::SEND, s.gen_, index));
        s.send = Some(op);
        self.writes += 1;
        // SAFETY: the header, the iovecs and the pins of the memory they point into belong
        // to the boxed `SendOp` now held in the slot, unchanged until this send's
        // completion; the slot (and the box) is kept until then, also when the connection
        // closes (the close waits for `send` to be taken by `on_send`).
        unsafe { r.push(&e) };
    }

    /// Puts an idle send record back in the pool (its pins released).
    fn recycle(&mut self, op: Box<SendOp>) {
        self.send_pool.put(op);
    }
}
