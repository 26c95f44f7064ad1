//! `--sends uring`: the writes of a pass as io_uring sends, the rest unchanged.
//!
//! Everything else stays on epoll (accepts, reads, the WRITABLE edge of a full socket,
//! private replies), so that what the two modes of `raw-batch` measure apart is the cost
//! of a send: a `send` system call each, or one SQE each on a registered file
//! (`SINGLE_ISSUER | DEFER_TASKRUN`) submitted together per slice of the pass. This is
//! the io_uring ceiling `ringcast --backend uring` is set against.
//!
//! A batch is submitted and reaped in one call ([`Sends::send_all`]), with the log
//! borrowed for that call: no send is in flight when the log may change. The sends carry
//! `MSG_DONTWAIT`, so a full socket answers `EAGAIN` at once (no poll armed in the kernel)
//! and waits for its epoll WRITABLE edge like a short `write`.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

use io_uring::types::Fixed;
use io_uring::{IoUring, opcode};

/// Most sends in one batch (the passes write 256 subscribers per poll turn).
const ENTRIES: u32 = 256;

/// An io_uring with the subscribers' sockets registered as fixed files.
pub(crate) struct Sends {
    ring: IoUring,
    /// Slots in the registered file table: connection keys below it can be registered.
    slots: u32,
}

impl Sends {
    /// A ring and a sparse file table as large as the process's descriptor limit allows
    /// (the kernel refuses a table larger than `RLIMIT_NOFILE`).
    pub(crate) fn new() -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(ENTRIES)?;
        let mut slots = 1 << 20;
        loop {
            match ring.submitter().register_files_sparse(slots) {
                Ok(()) => return Ok(Self { ring, slots }),
                Err(e) if slots > 1024 && e.raw_os_error() == Some(libc::EMFILE) => slots /= 2,
                Err(e) => return Err(e),
            }
        }
    }

    /// Registers the socket of connection `key`; false if the table has no slot for it
    /// (that subscriber is then written with `write`).
    pub(crate) fn register(&self, key: usize, fd: RawFd) -> bool {
        u32::try_from(key).is_ok_and(|k| {
            k < self.slots
                && self
                    .ring
                    .submitter()
                    .register_files_update(k, &[fd])
                    .is_ok()
        })
    }

    /// Frees the slot of connection `key` (before its socket closes).
    pub(crate) fn unregister(&self, key: usize) {
        if let Ok(k) = u32::try_from(key) {
            let _ = self.ring.submitter().register_files_update(k, &[-1]);
        }
    }

    /// For each `(key, from)` of `batch` (at most [`ENTRIES`]), sends `buf(from)` on the
    /// registered socket of connection `key`; then calls `done(key, result)` for each:
    /// bytes sent, or `-errno`. Returns once every send has completed.
    ///
    /// # Panics
    /// If `batch` holds more than [`ENTRIES`], or if `io_uring_enter` fails with anything
    /// but `EINTR`, `EAGAIN` or `EBUSY`: sends would then be left in flight on memory
    /// the caller goes on to change.
    pub(crate) fn send_all<'b>(
        &mut self,
        batch: &[(usize, u64)],
        buf: impl Fn(u64) -> &'b [u8],
        mut done: impl FnMut(usize, i32),
    ) {
        assert!(
            batch.len() <= ENTRIES as usize,
            "a batch larger than the ring"
        );
        for &(key, from) in batch {
            let b = buf(from);
            let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
            let e = opcode::Send::new(Fixed(key as u32), b.as_ptr(), len)
                .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                .build()
                .user_data(key as u64);
            // SAFETY: `b` borrows memory that lives for `'b`, beyond this call, and this
            // call returns only after every SQE pushed here has completed (the loop below
            // reaps exactly `batch.len()` completions, and panics rather than return
            // early): the kernel never reads `b` after its borrow ends. A send only reads
            // the memory it names, so even a panic that ends the process while sends are
            // in flight cannot corrupt anything here. The queue has room: it holds
            // ENTRIES, this call pushes at most that many, and it is empty on entry
            // (every earlier call submitted all it pushed).
            let pushed = unsafe { self.ring.submission().push(&e) };
            assert!(pushed.is_ok(), "io_uring submission queue full");
        }
        let mut left = batch.len();
        let mut want = 0;
        while left > 0 {
            match self.ring.submit_and_wait(want) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) => {}
                Err(e) => panic!("io_uring_enter failed with sends in flight: {e}"),
            }
            for cqe in self.ring.completion() {
                left -= 1;
                done(cqe.user_data() as usize, cqe.result());
            }
            want = 1;
        }
    }
}
