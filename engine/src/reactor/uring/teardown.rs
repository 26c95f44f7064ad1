//! The end of a reactor's rings: every connection removed, every operation cancelled, and
//! a bounded wait for the last completion before any memory the kernel could touch is
//! freed — or, past the bound, that memory leaked rather than freed under the kernel.

use std::time::{Duration, Instant};

use io_uring::opcode;

use super::user_data::{op, user_data};
use super::{Io, Uring};
use crate::reactor::core::Core;

/// How long teardown waits for the last completions.
const TEARDOWN: Duration = Duration::from_secs(2);

impl Uring {
    /// Whether any operation may still be in flight.
    fn outstanding(&self) -> bool {
        self.accept.armed.is_some()
            || self.wake_armed
            || self.rings.iter().any(|r| r.slots.used() > 0)
    }

    pub(super) fn teardown(&mut self, core: &mut Core<Io>) {
        use crate::reactor::core::Driver as _;
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
            unsafe { self.rings[0].push(&e) };
        }
        let deadline = Instant::now() + TEARDOWN;
        while self.outstanding() && Instant::now() < deadline {
            for r in &mut self.rings[1..] {
                if r.submit_queued().is_err() {
                    break;
                }
            }
            // Short sleeps on the first ring: the others' completions do not wake it now
            // (their eventfd signal is off), and no read is armed on the eventfd.
            if self.rings[0]
                .submit_and_wait(Duration::from_millis(10))
                .is_err()
            {
                break;
            }
            // Unlike `wait`, this does not re-arm the wake read.
            if self.drain_completions(core).is_err() {
                break;
            }
        }
        if self.outstanding() {
            tracing::warn!(
                "io_uring teardown: {} descriptors' operations still in flight after \
                 {TEARDOWN:?}; leaking their buffers",
                self.rings.iter().map(|r| r.slots.used()).sum::<usize>()
            );
        } else {
            tracing::debug!("io_uring teardown: every operation completed");
        }
    }
}

impl Drop for Uring {
    /// After teardown nothing is in flight and everything is freed normally. If something
    /// still is (teardown timed out, or the reactor panicked and never finished), the
    /// memory those operations point to is leaked rather than freed under the kernel.
    fn drop(&mut self) {
        if self.outstanding() {
            for r in &mut self.rings {
                r.bufs.leak();
                r.slots.leak();
            }
            Box::leak(std::mem::replace(&mut self.wake_buf, Box::new(0)));
            if self.accept.armed.is_some() {
                self.accept.leak();
            }
        }
    }
}
