//! The provided-buffer ring multishot receives take their buffers from.
//!
//! ```text
//!  ring (page-aligned, ENTRIES × 16 B)      buffers (ENTRIES × SIZE)
//!  ┌──────┬──────┬─────┐                   ┌────────┬────────┬─────┐
//!  │ bid 3│ bid 0│ ... │  ── addr ──────►  │ bid 0  │ bid 1  │ ... │
//!  └──────┴──────┴─────┘                   └────────┴────────┴─────┘
//!   kernel takes from the head; we give back at the tail (`recycle`)
//! ```
//!
//! **Ownership.** A buffer belongs to the kernel from the moment its id is published at
//! the tail until a completion names it (`IORING_CQE_F_BUFFER`, id in the flags); then it
//! is ours until [`BufRing::recycle`] gives it back. The reactor recycles each buffer as soon
//! as the session has consumed its bytes, before it handles the next completion, so a
//! connection never holds a buffer across loop turns (data it cannot take yet is copied
//! into that connection's stash). Both allocations live until the ring is dropped, after
//! the io_uring instance and every operation on it are gone (see `uring/mod.rs`).

use std::alloc::{self, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

/// The buffer group id of a ring's buffers (each ring has its own group 0).
pub(crate) const BGID: u16 = 0;

/// A registered provided-buffer ring and its buffers.
pub(crate) struct BufRing {
    /// `entries` ring slots, page aligned, registered with the kernel.
    ring: *mut BufRingEntry,
    /// `entries × size` bytes of buffers.
    bufs: *mut u8,
    entries: u16,
    size: usize,
    /// Our tail (the kernel sees it once published).
    tail: u16,
    /// The kernel might still use the memory: never free it.
    leaked: bool,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("entries", &self.entries)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl BufRing {
    /// Allocates `entries` (a power of two) buffers of `size` bytes, registers them with
    /// `ring` as group [`BGID`] and gives every buffer to the kernel. `commit` writes the
    /// buffers at once, so that the receive path takes no page faults (a reactor's first
    /// ring); otherwise their pages come as receives first touch them (the rings opened
    /// as connections grow, which stay small while their connections are idle).
    pub(crate) fn register(
        ring: &IoUring,
        entries: u16,
        size: usize,
        commit: bool,
    ) -> io::Result<Self> {
        assert!(entries.is_power_of_two() && size > 0 && size <= u32::MAX as usize);
        let ring_layout = Self::ring_layout(entries);
        // SAFETY: the layout has a non-zero size (entries ≥ 1).
        let ring_mem = unsafe { alloc::alloc_zeroed(ring_layout).cast::<BufRingEntry>() };
        if ring_mem.is_null() {
            alloc::handle_alloc_error(ring_layout);
        }
        // The buffers are an anonymous mapping of their own: zero pages that cost nothing
        // until the kernel first writes into them, unless `commit` populates them now (the
        // receive path then takes no page faults, and the reactor's fixed memory shows at
        // start rather than growing as the first connections arrive).
        let populate = if commit { libc::MAP_POPULATE } else { 0 };
        let len = Self::bufs_len(entries, size);
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing
        // touches no memory of ours; the result is checked below.
        let bufs = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | populate,
                -1,
                0,
            )
        };
        if bufs == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: allocated just above with this layout, never shared.
            unsafe { alloc::dealloc(ring_mem.cast(), ring_layout) };
            return Err(e);
        }
        let bufs = bufs.cast::<u8>();
        let mut this = Self {
            ring: ring_mem,
            bufs,
            entries,
            size,
            tail: 0,
            leaked: false,
        };
        // SAFETY: the ring memory is page aligned, `entries` slots long, and stays allocated
        // until `self` is dropped, which the reactor does only after the io_uring instance
        // (and with it the registration) is gone.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(this.ring as u64, entries, BGID, 0)?;
        }
        for bid in 0..entries {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    fn ring_layout(entries: u16) -> Layout {
        Layout::from_size_align(usize::from(entries) * size_of::<BufRingEntry>(), 4096)
            .expect("buffer ring layout")
    }

    fn bufs_len(entries: u16, size: usize) -> usize {
        usize::from(entries) * size
    }

    /// Size of each buffer.
    pub(crate) fn buf_size(&self) -> usize {
        self.size
    }

    /// Number of buffers.
    pub(crate) fn entries(&self) -> usize {
        usize::from(self.entries)
    }

    /// The first `len` bytes of buffer `bid`, which a completion just handed to us.
    ///
    /// # Panics
    /// If `bid` or `len` is out of range (a kernel that breaks the protocol).
    pub(crate) fn get(&mut self, bid: u16, len: usize) -> &mut [u8] {
        assert!(
            bid < self.entries && len <= self.size,
            "buffer out of range"
        );
        // SAFETY: the range lies inside the `entries × size` allocation (checked above).
        // The kernel named `bid` in a completion, so it no longer writes to it until we
        // recycle it, and `&mut self` keeps this the only reference we hand out.
        unsafe { std::slice::from_raw_parts_mut(self.bufs.add(usize::from(bid) * self.size), len) }
    }

    /// Gives buffer `bid` back to the kernel (visible at once).
    pub(crate) fn recycle(&mut self, bid: u16) {
        debug_assert!(bid < self.entries);
        self.push(bid);
        self.publish();
    }

    /// Writes `bid` into the next ring slot (not yet visible to the kernel).
    fn push(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.entries - 1));
        // SAFETY: `idx < entries`, inside the ring allocation. The kernel only reads slots
        // between its head and the published tail; this slot is past the tail.
        let entry = unsafe { &mut *self.ring.add(idx) };
        // `bid < entries`, so the address lies inside `bufs`.
        entry.set_addr(self.bufs as u64 + u64::from(bid) * self.size as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes the tail: the kernel may use every slot written so far.
    fn publish(&self) {
        // SAFETY: `ring` is the base of an initialised, registered ring; the tail is the
        // `resv` field of its first slot, a naturally aligned u16 that the kernel reads
        // atomically, so an `AtomicU16` view of it is valid.
        let tail = unsafe { &*BufRingEntry::tail(self.ring).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// Never frees the memory: for a teardown that could not prove the kernel is done.
    pub(crate) fn leak(&mut self) {
        self.leaked = true;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: the ring comes from `alloc` with this layout and the buffers from `mmap`
        // with this length; both are freed once. The reactor drops the ring only after
        // the io_uring instance is closed and every receive has completed (or it leaks
        // them instead).
        unsafe {
            alloc::dealloc(self.ring.cast(), Self::ring_layout(self.entries));
            libc::munmap(self.bufs.cast(), Self::bufs_len(self.entries, self.size));
        }
    }
}
