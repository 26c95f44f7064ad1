//! Ending a connection's descriptor: cancel what is in flight, wait for it, close last
//! (see [`super::slot`]), and the shutdown, cancel and close operations themselves.

use io_uring::opcode;
use io_uring::squeue;
use io_uring::types::Fixed;

use super::Uring;
use super::slot::Recv;
use super::user_data::{op, user_data};

impl Uring {
    /// Detaches a slot from its (removed) connection and cancels what is in flight on it;
    /// the close follows once nothing else is ([`Self::settle`]).
    pub(super) fn close_slot(&mut self, ring: usize, index: u32) {
        let s = self.rings[ring].slots.at(index);
        s.detach();
        let (recv, sending) = (s.recv, s.send.is_some());
        if recv == Recv::Starved {
            // Queued for a re-arm that will find the slot changed and skip it.
            s.recv = Recv::Off;
        }
        if recv == Recv::Armed {
            s.recv = Recv::Cancelling;
            self.cancel(ring, index, op::RECV);
        }
        if sending {
            self.cancel(ring, index, op::SEND);
        }
        self.settle(ring, index);
    }

    /// Submits the close of a detached slot once every other operation on it has
    /// completed: the kernel frees the table index when the close runs, so nothing may
    /// still name it then.
    pub(super) fn settle(&mut self, ring: usize, index: u32) {
        let r = &mut self.rings[ring];
        let s = r.slots.at(index);
        if !s.ready_to_close() {
            return;
        }
        s.set_closing();
        let e = opcode::Close::new(Fixed(index))
            .build()
            .user_data(user_data(op::CLOSE, s.gen_, index));
        // SAFETY: a close SQE carries no pointers.
        unsafe { r.push(&e) };
    }

    /// An operation on a slot that points at no memory of ours (shutdown, cancel).
    pub(super) fn push_slot_op(&mut self, ring: usize, index: u32, e: squeue::Entry, kind: u8) {
        let r = &mut self.rings[ring];
        let s = r.slots.at(index);
        s.ops += 1;
        let e = e.user_data(user_data(kind, s.gen_, index));
        // SAFETY: shutdown and cancel SQEs carry no pointers.
        unsafe { r.push(&e) };
    }

    /// Cancels the operation of `kind` on a slot.
    pub(super) fn cancel(&mut self, ring: usize, index: u32, kind: u8) {
        let gen_ = self.rings[ring].slots.at(index).gen_;
        let e = opcode::AsyncCancel::new(user_data(kind, gen_, index)).build();
        self.push_slot_op(ring, index, e, op::CANCEL);
    }

    /// A shutdown or cancel completed.
    pub(super) fn on_slot_op(&mut self, ring: usize, index: u32) {
        let s = self.rings[ring].slots.at(index);
        s.ops = s.ops.saturating_sub(1);
    }

    /// The close completed: the slot is free (unless an accept already reused it).
    pub(super) fn on_close(&mut self, ring: usize, index: u32) {
        self.rings[ring].slots.release(index);
        // Room again, maybe where accepting had stopped.
        self.arm_accept();
    }
}
