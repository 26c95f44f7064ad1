//! What the driver keeps per direct descriptor of a ring, until the last operation on it
//! has completed.
//!
//! A ring's slots are indexed by the descriptor's index in the ring's file table (the
//! kernel picks it at accept), so a slot needs no key of its own and no free list, and
//! costs an idle connection 24 bytes:
//!
//! ```text
//!  Vacant ──accept──► Live ──the core removes the connection──► Detached
//!    ▲                 (conn = the core's key)                  (receive, send, shutdown
//!    │                                                           and cancels finishing)
//!    └──────── close completion ◄──── Closing ◄──nothing else in flight──┘
//! ```
//!
//! **Close comes last.** A detached slot submits its `close` only once every other
//! operation naming it has completed. The kernel frees the table index when the close
//! *runs*, so the next accept into the same index can only follow it; an accept that
//! lands on a slot still `Closing` proves its close has run, and ends it there (the late
//! close completion is then ignored: its generation is old). Nothing else can be in
//! flight on a reused index, so one record per index suffices.

use super::inflight::SendOp;

/// `conn` of a slot whose connection is gone (or that is vacant).
const NO_CONN: u32 = u32::MAX;

/// State of a connection's multishot receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Recv {
    Off,
    Armed,
    /// Cancel submitted; its final completion (no `F_MORE`) is still to come.
    Cancelling,
    /// Ended for want of buffers (`ENOBUFS`); queued to be re-armed in its turn (see
    /// `recv`). Nothing is in flight.
    Starved,
}

/// Flag bits of a slot.
mod flag {
    /// The slot holds a descriptor (live, detached or closing).
    pub(super) const USED: u8 = 1;
    /// The peer's end (or a receive error) came after bytes were stashed.
    pub(super) const EOF: u8 = 2;
    /// The close is submitted: the last operation on the descriptor.
    pub(super) const CLOSING: u8 = 4;
    /// The connection has more to do when its send completes (see `Uring::on_send`).
    pub(super) const AGAIN: u8 = 8;
}

/// One direct descriptor's record. See the module docs.
#[derive(Debug)]
pub(super) struct Slot {
    /// The core's key while the connection exists.
    conn: u32,
    pub(super) gen_: u32,
    pub(super) recv: Recv,
    /// Shutdown and cancel operations in flight.
    pub(super) ops: u8,
    flags: u8,
    /// The in-flight send and everything it points to.
    pub(super) send: Option<Box<SendOp>>,
}

impl Slot {
    const fn vacant() -> Self {
        Self {
            conn: NO_CONN,
            gen_: 0,
            recv: Recv::Off,
            ops: 0,
            flags: 0,
            send: None,
        }
    }

    /// The core's key of the connection, while it exists.
    pub(super) fn conn(&self) -> Option<usize> {
        (self.conn != NO_CONN).then_some(self.conn as usize)
    }

    /// Ties the slot to the core's connection `key`.
    pub(super) fn attach(&mut self, key: usize) {
        debug_assert!(key < NO_CONN as usize, "connection key beyond 32 bits");
        self.conn = key as u32;
    }

    /// The connection is gone; the slot lives on until its operations complete.
    pub(super) fn detach(&mut self) {
        self.conn = NO_CONN;
    }

    pub(super) fn eof(&self) -> bool {
        self.flags & flag::EOF != 0
    }

    pub(super) fn set_eof(&mut self) {
        self.flags |= flag::EOF;
    }

    /// Detached with nothing but the close left to do (and the close not submitted).
    pub(super) fn ready_to_close(&self) -> bool {
        self.flags & (flag::USED | flag::CLOSING) == flag::USED
            && self.conn == NO_CONN
            && self.recv == Recv::Off
            && self.send.is_none()
            && self.ops == 0
    }

    /// Has the connection flushed again when its send completes.
    pub(super) fn set_again(&mut self) {
        self.flags |= flag::AGAIN;
    }

    /// Whether the connection is to be flushed now that its send completed (and no
    /// longer).
    pub(super) fn take_again(&mut self) -> bool {
        let again = self.flags & flag::AGAIN != 0;
        self.flags &= !flag::AGAIN;
        again
    }

    pub(super) fn set_closing(&mut self) {
        self.flags |= flag::CLOSING;
    }

    fn is_used(&self) -> bool {
        self.flags & flag::USED != 0
    }

    fn is_closing(&self) -> bool {
        self.flags & flag::CLOSING != 0
    }
}

/// Why a descriptor index could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Busy;

/// The slots of one ring, indexed by direct descriptor. See the module docs.
#[derive(Debug, Default)]
pub(super) struct Slots {
    slots: Vec<Slot>,
    /// Slots in use (live, detached or closing): the table's used entries.
    used: usize,
}

impl Slots {
    /// Table entries in use.
    pub(super) fn used(&self) -> usize {
        self.used
    }

    /// A new record for descriptor `index`, just allocated by the kernel, with generation
    /// `gen_`. A slot still closing there is over (see the module docs); any other use of
    /// the index is a broken invariant, reported as [`Busy`].
    pub(super) fn occupy(&mut self, index: u32, gen_: u32) -> Result<&mut Slot, Busy> {
        let i = index as usize;
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, Slot::vacant);
        }
        let s = &mut self.slots[i];
        if s.is_used() {
            if !s.is_closing() {
                return Err(Busy);
            }
            self.used -= 1;
        }
        *s = Slot {
            gen_,
            flags: flag::USED,
            ..Slot::vacant()
        };
        self.used += 1;
        Ok(s)
    }

    /// The slot of descriptor `index` if its generation is `gen_` (a completion's).
    pub(super) fn find(&mut self, index: u32, gen_: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(index as usize)
            .filter(|s| s.is_used() && s.gen_ == gen_)
    }

    /// Whether a send of descriptor `index`, which the caller knows is in use, is in
    /// flight.
    pub(super) fn sending(&self, index: u32) -> bool {
        self.slots[index as usize].send.is_some()
    }

    /// The slot of descriptor `index`, which the caller knows is in use.
    ///
    /// # Panics
    /// If the index is beyond every slot ever used.
    pub(super) fn at(&mut self, index: u32) -> &mut Slot {
        &mut self.slots[index as usize]
    }

    /// Ends the slot of descriptor `index` (its close completed).
    pub(super) fn release(&mut self, index: u32) {
        if let Some(s) = self.slots.get_mut(index as usize) {
            if s.is_used() {
                self.used -= 1;
                *s = Slot::vacant();
            }
        }
    }

    /// Never frees the records (nor the send buffers they hold): for a teardown that
    /// could not prove the kernel is done with them.
    pub(super) fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.slots));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_costs_a_slot_of_24_bytes() {
        assert_eq!(size_of::<Slot>(), 24);
    }

    #[test]
    fn a_slot_closes_last_and_its_index_is_reused_after() {
        let mut slots = Slots::default();
        let s = slots.occupy(3, 1).unwrap();
        s.attach(7);
        s.recv = Recv::Armed;
        assert_eq!(slots.used(), 1);
        let s = slots.at(3);
        assert_eq!(s.conn(), Some(7));
        // Removed while the receive is armed: not closable until it has ended.
        s.detach();
        s.recv = Recv::Cancelling;
        assert!(!s.ready_to_close());
        s.recv = Recv::Off;
        assert!(s.ready_to_close());
        s.set_closing();
        assert!(!s.ready_to_close());
        // An index in use by a live (or detached) slot cannot be taken...
        let t = slots.occupy(4, 2).unwrap();
        t.attach(8);
        assert_eq!(slots.occupy(4, 3).err(), Some(Busy));
        // ...but one whose close has been submitted can: the kernel reused it, so the
        // close ran. Its late completion no longer finds it.
        let r = slots.occupy(3, 4).unwrap();
        assert_eq!((r.conn(), r.gen_), (None, 4));
        assert_eq!(slots.used(), 2);
        assert!(slots.find(3, 1).is_none());
        assert!(slots.find(3, 4).is_some());
        slots.release(3);
        slots.release(3);
        assert_eq!(slots.used(), 1);
    }
}
