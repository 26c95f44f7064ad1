//! What an in-flight send owns until its completion arrives, and the pool that reuses it.
//!
//! A `sendmsg` SQE points at a `msghdr`, which points at an iovec array, which points into
//! the topic logs' chunks and the connection's own frames. All of it belongs to one boxed
//! [`SendOp`]: the iovecs, and one [`Pin`] per chunk (or own frame) they point into — a
//! refcount per chunk in flight, not per message — so whatever the reactor does meanwhile
//! (appending to the logs, trimming them, moving a slow consumer's cursor, closing the
//! connection) the memory the kernel reads stays alive and unchanged. The reactor keeps
//! the box in the connection's slot until the CQE names it (STYLE habit 8), and then puts
//! it back in its pool, which keeps up to [`POOL_MAX`] idle records: up to that many sends
//! in flight at once allocate nothing after warm-up.

use smallvec::SmallVec;

use crate::fanout::log::{Backing, Pin};

/// One `sendmsg` in flight: iovecs, pins and the message header. A send of a few slices
/// (the usual: a handshake answer, one topic's run) keeps them inline, without heap
/// allocations of its own.
pub(crate) struct SendOp {
    iovs: SmallVec<[libc::iovec; 4]>,
    pins: SmallVec<[Pin; 2]>,
    msg: libc::msghdr,
    /// First iovec not completely sent.
    first: usize,
    /// Bytes not sent yet.
    left: usize,
    /// Bytes in all.
    len: usize,
    /// Whole frames the send finishes.
    pub(crate) frames: usize,
}

impl std::fmt::Debug for SendOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendOp")
            .field("iovs", &self.iovs.len())
            .field("pins", &self.pins.len())
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

impl SendOp {
    /// An empty send, boxed so that the header's address is stable.
    pub(crate) fn new() -> Box<Self> {
        Box::new(Self {
            iovs: SmallVec::new(),
            pins: SmallVec::new(),
            // SAFETY: `msghdr` is a plain C struct for which all-zero is a valid value (no
            // address, no control data, no flags).
            msg: unsafe { std::mem::zeroed() },
            first: 0,
            left: 0,
            len: 0,
            frames: 0,
        })
    }

    /// Adds a slice, pinning its memory (once per chunk or buffer in a row).
    pub(crate) fn push(&mut self, bytes: &[u8], backing: Backing<'_>) {
        self.iovs.push(libc::iovec {
            iov_base: bytes.as_ptr().cast_mut().cast(),
            iov_len: bytes.len(),
        });
        if !self.pins.last().is_some_and(|p| backing.same(p)) {
            self.pins.push(backing.pin());
        }
        self.left += bytes.len();
        self.len += bytes.len();
    }

    /// Slices added.
    pub(crate) fn slices(&self) -> usize {
        self.iovs.len()
    }

    #[cfg(test)]
    /// Chunks and buffers pinned.
    pub(crate) fn pins(&self) -> usize {
        self.pins.len()
    }

    #[cfg(test)]
    /// Bytes not sent yet.
    pub(crate) fn left(&self) -> usize {
        self.left
    }

    /// Bytes in all.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The header for the SQE, naming the slices not sent yet. Valid while `self` is
    /// neither moved out of its box nor changed.
    pub(crate) fn header(&mut self) -> *const libc::msghdr {
        let rest = &mut self.iovs[self.first..];
        self.msg.msg_iov = rest.as_mut_ptr();
        self.msg.msg_iovlen = rest.len() as _;
        &raw const self.msg
    }

    /// The one slice not sent yet, when only one is left: such a send goes out as a plain
    /// `send` (no message header for the kernel to copy in). Valid like
    /// [`header`](Self::header).
    pub(crate) fn single(&self) -> Option<(*const u8, usize)> {
        match &self.iovs[self.first..] {
            [one] => Some((one.iov_base.cast_const().cast(), one.iov_len)),
            _ => None,
        }
    }

    /// Records that the kernel sent `n` more bytes; returns whether everything was sent.
    pub(crate) fn sent(&mut self, mut n: usize) -> bool {
        n = n.min(self.left);
        self.left -= n;
        while n > 0 {
            let iov = &mut self.iovs[self.first];
            if n >= iov.iov_len {
                n -= iov.iov_len;
                self.first += 1;
            } else {
                // SAFETY: `n < iov_len`, so the new base stays inside the slice it named.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(n).cast() };
                iov.iov_len -= n;
                n = 0;
            }
        }
        self.left == 0
    }

    /// Empties the send for reuse, releasing its pins (and the heap arrays of a large
    /// send, so that pooled records stay small).
    pub(crate) fn clear(&mut self) {
        self.iovs.clear();
        self.pins.clear();
        self.iovs.shrink_to_fit();
        self.pins.shrink_to_fit();
        self.first = 0;
        self.left = 0;
        self.len = 0;
        self.frames = 0;
    }
}

/// Idle records a pool keeps at most. A pool holding one per connection would cost idle
/// connections ~230 B each once a burst (handshake answers, one fan-out) had them all in
/// flight; beyond this many sends at once a record is allocated (a `malloc` beside a
/// ~5 µs send).
pub(crate) const POOL_MAX: usize = 256;

/// Idle send records, reused: up to [`POOL_MAX`]; records no send needed for a whole trim
/// period are freed, so that a burst's memory does not stay.
#[derive(Debug, Default)]
pub(crate) struct SendPool {
    /// Boxed: an SQE points into a record, which must not move while it is in flight (it
    /// lives in a slot then, and comes back here after).
    #[allow(clippy::vec_box)]
    idle: Vec<Box<SendOp>>,
    /// The fewest idle records since the last trim: that many were not needed.
    low: usize,
}

impl SendPool {
    /// An idle record, or a new one.
    pub(crate) fn take(&mut self) -> Box<SendOp> {
        let op = self.idle.pop().unwrap_or_else(SendOp::new);
        self.low = self.low.min(self.idle.len());
        op
    }

    /// Puts a record back, its pins released.
    pub(crate) fn put(&mut self, mut op: Box<SendOp>) {
        if self.idle.len() < POOL_MAX {
            op.clear();
            self.idle.push(op);
        }
    }

    /// Frees the records that stayed idle since the last trim.
    pub(crate) fn trim(&mut self) {
        let unused = self.low.min(self.idle.len());
        self.idle.truncate(self.idle.len() - unused);
        if self.idle.len() < self.idle.capacity() / 4 {
            self.idle.shrink_to(self.idle.len() * 2);
        }
        self.low = self.idle.len();
    }

    /// Idle records held.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.idle.len()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::fanout::chunk::ChunkPool;

    #[test]
    fn header_points_at_the_bytes_themselves_and_pins_each_chunk_once() {
        let pool = ChunkPool::default();
        let chunk = pool.take(0);
        chunk.append(b"hello world");
        let big = Bytes::from(vec![b'w'; 100]);
        let mut op = SendOp::new();
        op.push(chunk.bytes(0, 6), Backing::Chunk(&chunk));
        op.push(chunk.bytes(6, 11), Backing::Chunk(&chunk));
        op.push(&big, Backing::Bytes(&big));
        assert_eq!((op.slices(), op.pins(), op.left()), (3, 2, 111));
        let msg = op.header();
        // SAFETY: `msg` points into `op`, alive for this whole test, and the iovecs it
        // names are `op.iovs`, three initialised entries.
        let iovs = unsafe {
            assert_eq!((*msg).msg_iovlen, 3);
            std::slice::from_raw_parts((*msg).msg_iov, 3)
        };
        assert_eq!(
            iovs[0].iov_base.cast_const().cast::<u8>(),
            chunk.bytes(0, 1).as_ptr()
        );
        assert_eq!(iovs[2].iov_base.cast_const().cast::<u8>(), big.as_ptr());
        // The chunk stays referenced (not reused) while the send holds it.
        drop(chunk);
        assert_eq!(pool.free_bytes(), 0);
        op.clear();
        assert_eq!(pool.free_bytes(), 4096);
    }

    #[test]
    fn a_short_send_resumes_inside_a_slice() {
        let a = Bytes::from_static(b"abcdef");
        let b = Bytes::from_static(b"ghij");
        let mut op = SendOp::new();
        op.push(&a, Backing::Bytes(&a));
        op.push(&b, Backing::Bytes(&b));
        assert!(!op.sent(4));
        let msg = op.header();
        // SAFETY: as above; after 4 bytes the header names both slices, the first cut.
        let iovs = unsafe { std::slice::from_raw_parts((*msg).msg_iov, (*msg).msg_iovlen) };
        assert_eq!(iovs.len(), 2);
        assert_eq!(iovs[0].iov_len, 2);
        assert_eq!(iovs[0].iov_base.cast_const().cast::<u8>(), a[4..].as_ptr());
        assert!(!op.sent(3));
        assert_eq!(op.left(), 3);
        let msg = op.header();
        // SAFETY: as above.
        let iovs = unsafe { std::slice::from_raw_parts((*msg).msg_iov, (*msg).msg_iovlen) };
        assert_eq!((iovs.len(), iovs[0].iov_len), (1, 3));
        assert!(op.sent(3));
    }

    #[test]
    fn the_pool_keeps_what_a_load_needs_and_frees_what_it_did_not() {
        let mut pool = SendPool::default();
        // A fan-out: 100 sends in flight at once, then back.
        let ops: Vec<_> = (0..100).map(|_| pool.take()).collect();
        ops.into_iter().for_each(|op| pool.put(op));
        assert_eq!(pool.idle(), 100);
        // The same load again reuses them: nothing new, nothing freed at the trim.
        let ops: Vec<_> = (0..100).map(|_| pool.take()).collect();
        let addrs: Vec<_> = ops.iter().map(|op| &raw const **op).collect();
        ops.into_iter().for_each(|op| pool.put(op));
        pool.trim();
        assert_eq!(pool.idle(), 100);
        // A lighter load: the 70 records it never needed go at the next trim.
        let ops: Vec<_> = (0..30).map(|_| pool.take()).collect();
        assert!(ops.iter().all(|op| addrs.contains(&&raw const **op)));
        ops.into_iter().for_each(|op| pool.put(op));
        pool.trim();
        assert_eq!(pool.idle(), 30);
        // Idle for a whole period: all go.
        pool.trim();
        assert_eq!(pool.idle(), 0);
        // A burst past the cap (10 000 handshake answers at once) keeps only the cap.
        let ops: Vec<_> = (0..POOL_MAX + 100).map(|_| pool.take()).collect();
        ops.into_iter().for_each(|op| pool.put(op));
        assert_eq!(pool.idle(), POOL_MAX);
    }
}
