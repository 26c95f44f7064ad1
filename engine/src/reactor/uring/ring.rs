//! One io_uring instance of a reactor, with what is registered with it: its direct
//! descriptor table (as large as `RLIMIT_NOFILE` allows), its provided-buffer ring, and
//! the slots of its descriptors.
//!
//! A reactor's first ring (the *main* ring) is the one it sleeps on: the wake read and
//! the 100 ms tick live there. Every further ring (opened when the others are nearly
//! full) has the reactor's eventfd registered (`IORING_REGISTER_EVENTFD`): the kernel
//! signals it when work for that ring arrives, which completes the wake read on the main
//! ring and so wakes the reactor. While the reactor is awake the signal is switched off
//! (`IORING_CQ_EVENTFD_DISABLED`), so a busy reactor does not signal itself; before it
//! sleeps it switches it back on and looks at each ring once (see [`Ring::has_work`]).
//! Nothing polls: a reactor with a hundred idle rings sleeps until one of them has work.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, squeue};

use super::bufring::BufRing;
use super::slot::Slots;

/// Size of each provided receive buffer of a reactor's first ring.
pub(super) const RECV_BUF_SIZE: usize = 16 * 1024;
/// Size of each provided receive buffer of the rings opened later: their connections are
/// mostly idle subscribers, whose input is requests, pongs and close frames, and their
/// buffers' pages stay resident once touched.
pub(super) const EXTRA_RECV_BUF_SIZE: usize = 2 * 1024;

/// What a ring is for; it decides its sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The ring the reactor sleeps on.
    Main,
    /// A ring opened for more connections, woken through the eventfd.
    Extra,
}

impl Role {
    /// Submission queue entries: every send of a fan-out goes through them, and a full
    /// queue is submitted and refilled, never dropped.
    fn sq_entries(self) -> u32 {
        match self {
            Self::Main => 4096,
            Self::Extra => 512,
        }
    }

    /// Completion queue entries (the kernel keeps overflow too: `IORING_FEAT_NODROP`).
    fn cq_entries(self) -> u32 {
        match self {
            Self::Main => 16384,
            Self::Extra => 2048,
        }
    }
}

/// One ring of a reactor. Field order matters: the ring is closed before the memory its
/// operations used is freed.
pub(super) struct Ring {
    uring: IoUring,
    pub(super) bufs: BufRing,
    pub(super) slots: Slots,
    /// Completions reaped early (to make room), handled with the next ones.
    backlog: Vec<cqueue::Entry>,
    /// Descriptors (and their generations) whose receive ended for want of buffers,
    /// re-armed in order, a buffer ring's worth per turn.
    pub(super) starved: VecDeque<(u32, u32)>,
    /// Size of the registered file table.
    files: u32,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("files", &self.files)
            .field("used", &self.slots.used())
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// A ring with a table of `files` direct descriptors and `recv_bufs` receive buffers
    /// (committed at once on the main ring); an extra ring signals `eventfd` when work
    /// for it arrives.
    pub(super) fn open(
        role: Role,
        files: u32,
        recv_bufs: u16,
        eventfd: Option<RawFd>,
    ) -> io::Result<Self> {
        let mut uring = build(role)?;
        uring.submitter().register_files_sparse(files)?;
        if let Some(fd) = eventfd {
            uring.submitter().register_eventfd(fd)?;
            // Off while the reactor is awake; `sleep_notify` turns it on.
            uring.completion().disable_eventfd();
        }
        let size = match role {
            Role::Main => RECV_BUF_SIZE,
            Role::Extra => EXTRA_RECV_BUF_SIZE,
        };
        let bufs = BufRing::register(&uring, recv_bufs, size, role == Role::Main)?;
        Ok(Self {
            uring,
            bufs,
            slots: Slots::default(),
            backlog: Vec::new(),
            starved: VecDeque::new(),
            files,
        })
    }

    /// Free entries of the descriptor table (slots still closing count as used).
    pub(super) fn free(&self) -> usize {
        (self.files as usize).saturating_sub(self.slots.used())
    }

    /// Queues an SQE, submitting first when the queue is full (never drops one).
    ///
    /// # Safety
    /// Every buffer `entry` points to must stay valid, and not be moved, until the
    /// completion that carries its `user_data` has been taken from this ring.
    pub(super) unsafe fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: the caller guarantees what `entry` points to outlives the operation.
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                return;
            }
            match self.uring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => tracing::error!("io_uring submit: {e}"),
            }
            // A fan-out fills the queue many times over in one turn: take the completions
            // off the queue as it goes, so that it never overflows into the kernel's list.
            self.reap_into_backlog();
        }
    }

    fn reap_into_backlog(&mut self) {
        let mut cq = self.uring.completion();
        cq.sync();
        self.backlog.extend(cq);
    }

    /// Submits what is queued (and runs work the kernel deferred to this thread).
    pub(super) fn submit(&self) -> io::Result<()> {
        ok_unless_fatal(self.uring.submit())
    }

    /// Submits what is queued, if anything is: a reactor with many rings enters only
    /// those with SQEs (the others' completions are taken by [`take_completions`]).
    ///
    /// [`take_completions`]: Self::take_completions
    pub(super) fn submit_queued(&mut self) -> io::Result<()> {
        if self.uring.submission().is_empty() {
            return Ok(());
        }
        self.submit()
    }

    /// Submits what is queued and sleeps until a completion arrives or `timeout` passes.
    pub(super) fn submit_and_wait(&self, timeout: Duration) -> io::Result<()> {
        let ts = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&ts);
        ok_unless_fatal(self.uring.submitter().submit_with_args(1, &args))
    }

    /// Runs the work the kernel deferred to this thread (completions of operations that
    /// waited for the socket), as much as fits the completion queue: an enter that only
    /// asks for one completion runs a few items of it at a time.
    fn run_deferred(&mut self) -> io::Result<()> {
        let waiting = self.uring.completion().len();
        let room = (self.uring.params().cq_entries() as usize).saturating_sub(waiting);
        let ts = Timespec::new();
        let args = SubmitArgs::new().timespec(&ts);
        ok_unless_fatal(self.uring.submitter().submit_with_args(room.max(1), &args))
    }

    /// Takes every completion (the backlog first) into `out`, after running deferred work.
    pub(super) fn take_completions(&mut self, out: &mut Vec<cqueue::Entry>) -> io::Result<()> {
        if self.kernel_has_more() {
            self.run_deferred()?;
        }
        out.append(&mut self.backlog);
        let mut cq = self.uring.completion();
        cq.sync();
        out.extend(&mut cq);
        Ok(())
    }

    /// Deferred work, or completions the kernel kept aside while the queue was full.
    fn kernel_has_more(&mut self) -> bool {
        let sq = self.uring.submission();
        sq.taskrun() || sq.cq_overflow()
    }

    /// Whether a turn should not sleep for this ring: completions waiting, deferred work,
    /// or SQEs not submitted.
    pub(super) fn has_work(&mut self) -> bool {
        !self.backlog.is_empty()
            || !self.uring.completion().is_empty()
            || self.kernel_has_more()
            || !self.uring.submission().is_empty()
    }

    /// Completions waiting in the backlog, or receives waiting for their turn to re-arm:
    /// work for the next turn that no completion will announce.
    pub(super) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty() || !self.starved.is_empty()
    }

    /// An extra ring's eventfd signal on (the reactor is about to sleep) or off. After
    /// turning it on, [`has_work`](Self::has_work) tells whether something arrived
    /// while it was off: the kernel signals only work added after the switch.
    pub(super) fn sleep_notify(&mut self, on: bool) {
        let cq = self.uring.completion();
        if on {
            cq.enable_eventfd();
            // The flag's store must be seen by the kernel before we read its flags
            // (it adds work, then reads our flag: one of the two sees the other).
            fence(Ordering::SeqCst);
        } else {
            cq.disable_eventfd();
        }
    }
}

/// Builds a ring with the cheapest completion mode the kernel takes:
/// `SINGLE_ISSUER | DEFER_TASKRUN` (completion work runs only when the reactor enters
/// the ring, never interrupting it), else `COOP_TASKRUN`, else none;
/// `RINGCAST_URING_SETUP=defer|coop|plain` picks one (for measurements).
fn build(role: Role) -> io::Result<IoUring> {
    let forced = std::env::var("RINGCAST_URING_SETUP").ok();
    let modes: &[&str] = match forced.as_deref() {
        Some(m @ ("defer" | "coop" | "plain")) => &[m][..],
        _ => &["defer", "coop", "plain"],
    };
    let mut last = None;
    for &mode in modes {
        let mut b = IoUring::builder();
        b.setup_cqsize(role.cq_entries());
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
        match b.build(role.sq_entries()) {
            Ok(ring) => {
                tracing::debug!("io_uring ring setup: {mode}");
                return Ok(ring);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no io_uring setup mode")))
}

/// `io_uring_enter` results that only mean "nothing more this time".
fn ok_unless_fatal(res: io::Result<usize>) -> io::Result<()> {
    match res {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}
