//! Chunks: the pooled byte buffers topic logs are made of.
//!
//! A [`Chunk`] is a fixed-capacity buffer that only grows at its end: the log that owns
//! it appends frames (one `memcpy` per frame per reactor), and everything already appended
//! is immutable, so readers — a `writev` being built, an io_uring send in flight — may
//! point into the filled part while the log keeps appending after it.
//!
//! A chunk is reference counted (`Rc`: a reactor's chunks never leave its thread). The log
//! holds one reference; an in-flight send holds one more per chunk it points into (never
//! one per frame), and a connection holds one for the rest of a frame it had started to
//! write when its cursor had to move on. When the last reference goes, the buffer returns
//! to the reactor's [`ChunkPool`], so a long run reuses the same memory.
//!
//! # Memory layout
//! Capacities are size classes from [`MIN_CHUNK`] to [`MAX_CHUNK`] (powers of two). The
//! pool keeps at most [`POOL_BYTES`] of free buffers; beyond that they go back to the
//! allocator.

use std::alloc::{self, Layout};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::ptr::NonNull;
use std::rc::{Rc, Weak};

/// Smallest chunk (a quiet topic's log).
pub(crate) const MIN_CHUNK: usize = 4 << 10;
/// Largest chunk (a busy topic's log).
pub(crate) const MAX_CHUNK: usize = 64 << 10;
/// Size classes: 4, 8, 16, 32, 64 KiB.
pub(crate) const CLASSES: usize = (MAX_CHUNK / MIN_CHUNK).trailing_zeros() as usize + 1;
/// Free buffers a pool keeps, in bytes.
pub(crate) const POOL_BYTES: usize = 16 << 20;
/// Alignment of chunk buffers (a cache line).
const ALIGN: usize = 64;

/// The capacity of size class `class`.
pub(crate) fn class_size(class: usize) -> usize {
    MIN_CHUNK << class.min(CLASSES - 1)
}

/// The smallest class that holds `len` bytes, if any does.
pub(crate) fn class_for(len: usize) -> Option<usize> {
    (0..CLASSES).find(|&c| class_size(c) >= len)
}

#[derive(Default)]
struct Free {
    lists: [Vec<NonNull<u8>>; CLASSES],
    bytes: usize,
    /// Buffers handed out and not yet returned or freed.
    live: usize,
    /// Their bytes.
    live_bytes: usize,
}

impl Drop for Free {
    fn drop(&mut self) {
        for (class, list) in self.lists.iter_mut().enumerate() {
            for p in list.drain(..) {
                dealloc(p, class_size(class));
            }
        }
    }
}

/// A reactor's free chunk buffers, by size class.
#[derive(Clone, Default)]
pub(crate) struct ChunkPool(Rc<RefCell<Free>>);

impl fmt::Debug for ChunkPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let free = self.0.borrow();
        f.debug_struct("ChunkPool")
            .field("free_bytes", &free.bytes)
            .field("live", &free.live)
            .finish()
    }
}

impl ChunkPool {
    /// An empty chunk of size class `class`, reused when the pool has one.
    pub(crate) fn take(&self, class: usize) -> Chunk {
        let class = class.min(CLASSES - 1);
        let cap = class_size(class);
        let mut free = self.0.borrow_mut();
        let ptr = match free.lists[class].pop() {
            Some(p) => {
                free.bytes -= cap;
                p
            }
            None => {
                let layout = layout(cap);
                // SAFETY: `layout` has a non-zero size (at least MIN_CHUNK).
                let p = unsafe { alloc::alloc(layout) };
                NonNull::new(p).unwrap_or_else(|| alloc::handle_alloc_error(layout))
            }
        };
        free.live += 1;
        free.live_bytes += cap;
        Chunk(Rc::new(Inner {
            ptr,
            class,
            len: Cell::new(0),
            pool: Rc::downgrade(&self.0),
        }))
    }

    #[cfg(test)]
    /// Bytes of free buffers kept.
    pub(crate) fn free_bytes(&self) -> usize {
        self.0.borrow().bytes
    }

    /// Chunks handed out and still referenced somewhere.
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.0.borrow().live
    }

    /// Bytes of those chunks (held by logs, in-flight sends, half-written frames).
    pub(crate) fn live_bytes(&self) -> usize {
        self.0.borrow().live_bytes
    }
}

struct Inner {
    ptr: NonNull<u8>,
    class: usize,
    /// Bytes appended so far; `[0, len)` is immutable from here on.
    len: Cell<usize>,
    pool: Weak<RefCell<Free>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let cap = class_size(self.class);
        if let Some(pool) = self.pool.upgrade() {
            let mut free = pool.borrow_mut();
            free.live -= 1;
            free.live_bytes -= cap;
            if free.bytes + cap <= POOL_BYTES {
                free.bytes += cap;
                free.lists[self.class].push(self.ptr);
                return;
            }
        }
        dealloc(self.ptr, cap);
    }
}

fn layout(cap: usize) -> Layout {
    // A power of two of at least 4 KiB with a 64-byte alignment is always a valid layout.
    Layout::from_size_align(cap, ALIGN).unwrap_or_else(|_| unreachable!("chunk layout"))
}

fn dealloc(p: NonNull<u8>, cap: usize) {
    // SAFETY: every chunk buffer was allocated in `ChunkPool::take` with `layout(cap)` for
    // the capacity of its class, and is freed exactly once: here, by its last owner (the
    // `Inner` being dropped or the pool's free list being dropped).
    unsafe { alloc::dealloc(p.as_ptr(), layout(cap)) }
}

/// A shared, append-only byte buffer. Cloning it is a refcount bump.
#[derive(Clone)]
pub(crate) struct Chunk(Rc<Inner>);

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl Chunk {
    /// Bytes appended.
    pub(crate) fn len(&self) -> usize {
        self.0.len.get()
    }

    /// Total capacity.
    pub(crate) fn capacity(&self) -> usize {
        class_size(self.0.class)
    }

    /// The size class.
    pub(crate) fn class(&self) -> usize {
        self.0.class
    }

    /// Bytes that can still be appended.
    pub(crate) fn room(&self) -> usize {
        self.capacity() - self.len()
    }

    /// Appends `data`; returns the offset it starts at.
    ///
    /// # Panics
    /// If `data` is longer than [`room`](Self::room) (the log checks first).
    pub(crate) fn append(&self, data: &[u8]) -> usize {
        let at = self.len();
        assert!(data.len() <= self.room(), "chunk overflow");
        // SAFETY: `[at, at + data.len())` lies inside the allocation (checked above) and
        // past `len`, so no slice handed out by `bytes` (always within `[0, len)`) and no
        // in-flight send overlaps it; `data` cannot overlap it either, as it is a live
        // shared borrow of other memory. Only this thread touches the chunk (`Rc`).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.0.ptr.as_ptr().add(at), data.len());
        }
        self.0.len.set(at + data.len());
        at
    }

    /// The appended bytes `[start, end)`.
    ///
    /// # Panics
    /// If the range is not within the appended bytes.
    pub(crate) fn bytes(&self, start: usize, end: usize) -> &[u8] {
        assert!(
            start <= end && end <= self.len(),
            "chunk range out of bounds"
        );
        // SAFETY: `[start, end)` is within `[0, len)`: initialised by `append`, and never
        // written again while the chunk is alive. The allocation lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.0.ptr.as_ptr().add(start), end - start) }
    }

    /// Whether `self` and `other` are the same chunk.
    pub(crate) fn ptr_eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(CLASSES, 5);
        assert_eq!(class_size(0), 4096);
        assert_eq!(class_size(4), 65536);
        assert_eq!(class_size(9), 65536);
        assert_eq!(class_for(1), Some(0));
        assert_eq!(class_for(4097), Some(1));
        assert_eq!(class_for(65536), Some(4));
        assert_eq!(class_for(65537), None);
    }

    #[test]
    fn appended_bytes_stay_put_while_appending() {
        let pool = ChunkPool::default();
        let c = pool.take(0);
        assert_eq!(c.append(b"hello "), 0);
        let first = c.bytes(0, 6).as_ptr();
        assert_eq!(c.append(b"world"), 6);
        assert_eq!(c.bytes(0, 11), b"hello world");
        assert_eq!(c.bytes(0, 6).as_ptr(), first);
        assert_eq!(c.room(), 4096 - 11);
    }

    #[test]
    #[should_panic(expected = "chunk overflow")]
    fn overflow_panics() {
        let pool = ChunkPool::default();
        let c = pool.take(0);
        c.append(&[0; 4097]);
    }

    #[test]
    fn buffers_return_to_the_pool_when_the_last_reference_goes() {
        let pool = ChunkPool::default();
        let c = pool.take(2);
        c.append(b"x");
        let ptr = c.bytes(0, 1).as_ptr();
        let pin = c.clone();
        drop(c);
        assert_eq!(pool.free_bytes(), 0, "a pinned chunk is not reused");
        assert_eq!(pool.live(), 1);
        drop(pin);
        assert_eq!(pool.free_bytes(), 16 << 10);
        assert_eq!(pool.live(), 0);
        let again = pool.take(2);
        assert_eq!(again.len(), 0);
        again.append(b"y");
        assert_eq!(again.bytes(0, 1).as_ptr(), ptr, "the same buffer, reused");
        assert_eq!(pool.free_bytes(), 0);
    }

    #[test]
    fn the_pool_is_bounded() {
        let pool = ChunkPool::default();
        let chunks: Vec<Chunk> = (0..(POOL_BYTES / MAX_CHUNK) + 10)
            .map(|_| pool.take(CLASSES - 1))
            .collect();
        drop(chunks);
        assert_eq!(pool.free_bytes(), POOL_BYTES);
    }

    #[test]
    fn chunks_outlive_their_pool() {
        let pool = ChunkPool::default();
        let c = pool.take(0);
        c.append(b"abc");
        drop(pool);
        assert_eq!(c.bytes(0, 3), b"abc");
    }
}
