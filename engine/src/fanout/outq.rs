//! A connection's out-queue: shared frames waiting for the socket.
//!
//! Frames are `Bytes` (clones of shared buffers); the queue never copies them. A write
//! takes as many queued frames as fit one `writev` ([`OutQueue::io_slices`]), and
//! [`OutQueue::advance`] consumes what the kernel took, resuming a partial write at the
//! right offset inside a frame.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// Frames queued for one connection, with their total size in bytes.
#[derive(Debug, Default)]
pub struct OutQueue {
    frames: VecDeque<Bytes>,
    bytes: usize,
    high_water: usize,
}

impl OutQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a frame at the back.
    pub fn push(&mut self, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        self.bytes += frame.len();
        self.high_water = self.high_water.max(self.bytes);
        self.frames.push_back(frame);
    }

    /// Bytes waiting to be written.
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// The most bytes this queue has held.
    pub fn high_water(&self) -> usize {
        self.high_water
    }

    /// Frames (or frame remainders) waiting.
    pub fn len_frames(&self) -> usize {
        self.frames.len()
    }

    /// Nothing left to write.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Fills `slices` with the front of the queue, up to `slices.len()` frames and about
    /// `max_bytes` (at least one frame); returns how many slices were filled.
    pub fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>], max_bytes: usize) -> usize {
        let mut n = 0;
        let mut total = 0;
        for f in &self.frames {
            if n == slices.len() || (n > 0 && total + f.len() > max_bytes) {
                break;
            }
            slices[n] = IoSlice::new(f);
            total += f.len();
            n += 1;
        }
        n
    }

    /// Drops `written` bytes from the front (what a write accepted).
    ///
    /// # Panics
    /// If `written` is more than [`len_bytes`](Self::len_bytes).
    pub fn advance(&mut self, mut written: usize) {
        assert!(written <= self.bytes, "advance past the queued bytes");
        self.bytes -= written;
        while written > 0 {
            let front = self.frames.front_mut().expect("bytes counted but no frame");
            if front.len() <= written {
                written -= front.len();
                self.frames.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_writes_resume_inside_a_frame() {
        let mut q = OutQueue::new();
        q.push(Bytes::from_static(b"hello"));
        q.push(Bytes::from_static(b"world!"));
        assert_eq!(q.len_bytes(), 11);
        q.advance(3);
        let mut s = [IoSlice::new(&[]); 8];
        let n = q.io_slices(&mut s, usize::MAX);
        assert_eq!(n, 2);
        assert_eq!(&*s[0], b"lo");
        assert_eq!(&*s[1], b"world!");
        q.advance(4);
        assert_eq!(q.len_frames(), 1);
        assert_eq!(q.len_bytes(), 4);
        q.advance(4);
        assert!(q.is_empty());
        assert_eq!(q.high_water(), 11);
    }

    #[test]
    fn slices_respect_count_and_byte_budget() {
        let mut q = OutQueue::new();
        for _ in 0..10 {
            q.push(Bytes::from_static(b"0123456789"));
        }
        let mut s = [IoSlice::new(&[]); 4];
        assert_eq!(q.io_slices(&mut s, usize::MAX), 4);
        assert_eq!(q.io_slices(&mut s, 25), 2);
        // At least one frame even when it alone is over the budget.
        assert_eq!(q.io_slices(&mut s, 1), 1);
    }

    #[test]
    fn queued_frames_share_memory() {
        let shared = Bytes::from(vec![1u8; 1000]);
        let mut a = OutQueue::new();
        let mut b = OutQueue::new();
        a.push(shared.clone());
        b.push(shared.clone());
        let mut sa = [IoSlice::new(&[]); 1];
        let mut sb = [IoSlice::new(&[]); 1];
        a.io_slices(&mut sa, usize::MAX);
        b.io_slices(&mut sb, usize::MAX);
        assert_eq!(sa[0].as_ptr(), sb[0].as_ptr());
        assert_eq!(sa[0].as_ptr(), shared.as_ptr());
    }
}
