//! A reactor's turn on its rings: submit what every ring has queued, sleep on the first
//! ring until something arrives on any of them (or the tick), then take and dispatch the
//! completions of each ring.

use std::io;
use std::time::{Duration, Instant};

use io_uring::cqueue;
use io_uring::opcode;
use io_uring::types::Fd;

use super::user_data::{op, split, user_data};
use super::{Io, Uring};
use crate::reactor::core::Core;

impl Uring {
    /// One wait of the reactor loop (see [`crate::reactor::core::Driver::wait`]).
    pub(super) fn wait_turn(&mut self, core: &mut Core<Io>, timeout: Duration) -> io::Result<()> {
        self.arm_wake();
        // Every extra ring submits its SQEs and signals the eventfd from now on; whatever
        // arrived before that is seen here, and the turn does not sleep.
        let mut busy = timeout.is_zero();
        for r in &mut self.rings[1..] {
            r.submit_queued()?;
            r.sleep_notify(true);
            busy |= r.has_work();
        }
        busy |= self.rings[0].has_backlog();
        let main = &self.rings[0];
        if busy {
            main.submit()?;
        } else {
            main.submit_and_wait(timeout)?;
        }
        for r in &mut self.rings[1..] {
            r.sleep_notify(false);
        }
        self.drain_completions(core)?;
        core.note_writes(std::mem::take(&mut self.writes));
        Ok(())
    }

    /// Takes every ring's completions and handles them in order, ring by ring.
    pub(super) fn drain_completions(&mut self, core: &mut Core<Io>) -> io::Result<()> {
        let now = Instant::now();
        let mut cqes = std::mem::take(&mut self.cqes);
        // Handling completions may open a ring: the count is read each time.
        let mut ring = 0;
        while ring < self.rings.len() {
            let taken = self.rings[ring].take_completions(&mut cqes);
            for cqe in &cqes {
                self.on_cqe(core, ring, cqe, now);
            }
            cqes.clear();
            taken?;
            ring += 1;
        }
        self.cqes = cqes;
        Ok(())
    }

    fn on_cqe(&mut self, core: &mut Core<Io>, ring: usize, cqe: &cqueue::Entry, now: Instant) {
        let (kind, gen_, index) = split(cqe.user_data());
        match kind {
            op::ACCEPT => return self.on_accept(core, ring, cqe, now),
            op::WAKE => {
                self.wake_armed = false;
                return;
            }
            op::CANCEL_OTHER => return,
            _ => {}
        }
        if self.rings[ring].slots.find(index, gen_).is_none() {
            // A close that an accept into the same index overtook (see `slot`), or a bug.
            if kind != op::CLOSE {
                tracing::error!("io_uring completion for a freed slot ({kind}, {ring}:{index})");
            }
            return;
        }
        match kind {
            op::RECV => self.on_recv(core, ring, index, cqe, now),
            op::SEND => self.on_send(core, ring, index, cqe.result(), now),
            op::SHUTDOWN | op::CANCEL => self.on_slot_op(ring, index),
            op::CLOSE => return self.on_close(ring, index),
            _ => tracing::error!("io_uring completion of unknown kind {kind}"),
        }
        self.settle(ring, index);
    }

    /// Keeps a read armed on the reactor's eventfd (on the first ring): publishers and the
    /// other rings wake the reactor through it.
    pub(super) fn arm_wake(&mut self) {
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
        unsafe { self.rings[0].push(&e) };
        self.wake_armed = true;
    }
}
