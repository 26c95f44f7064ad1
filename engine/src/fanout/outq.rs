//! A connection's out-queue: shared frames waiting for the socket.
//!
//! Frames are `Bytes` (clones of shared buffers); the queue never copies them. A write
//! takes as many queued frames as fit one `writev` ([`OutQueue::io_slices`]), and
//! [`OutQueue::advance`] consumes what the kernel took, resuming a partial write at the
//! right offset inside a frame.
//!
//! Each frame carries a tag: the reactor-local id of the topic it was published to, or
//! [`UNTAGGED`] for frames that belong to this connection alone (handshake response,
//! pongs, closes, replies). The slow-consumer policies discard only tagged frames, and
//! never the front frame once part of it has been written.
//!
//! A completion-based backend (io_uring) hands the kernel clones of the front frames
//! ([`OutQueue::frames_into`]) and [pins](OutQueue::pin_front) them until the send
//! completes: no policy discards a pinned frame, so [`OutQueue::advance`] with the byte
//! count of the completion always consumes exactly what the kernel sent.

use std::collections::{HashSet, VecDeque};
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// The tag of frames that no policy may discard.
pub const UNTAGGED: u32 = 0;

#[derive(Debug)]
struct Queued {
    frame: Bytes,
    tag: u32,
}

/// Frames queued for one connection, with their total size in bytes.
#[derive(Debug, Default)]
pub struct OutQueue {
    frames: VecDeque<Queued>,
    bytes: usize,
    high_water: usize,
    /// Part of the front frame has been written.
    front_started: bool,
    /// Frames at the front that an in-flight send covers: no policy discards them.
    pinned: usize,
}

impl OutQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a frame of this connection's own at the back.
    pub fn push(&mut self, frame: Bytes) {
        self.push_tagged(frame, UNTAGGED);
    }

    /// Queues a published frame, tagged with its topic's id.
    pub fn push_tagged(&mut self, frame: Bytes, tag: u32) {
        if frame.is_empty() {
            return;
        }
        self.bytes += frame.len();
        self.high_water = self.high_water.max(self.bytes);
        self.frames.push_back(Queued { frame, tag });
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

    /// Appends the front of the queue to `slices`, up to `max_slices` frames and about
    /// `max_bytes` (at least one frame); returns how many slices were added.
    pub fn io_slices<'a>(
        &'a self,
        slices: &mut Vec<IoSlice<'a>>,
        max_slices: usize,
        max_bytes: usize,
    ) -> usize {
        let mut n = 0;
        let mut total = 0;
        for q in &self.frames {
            if n == max_slices || (n > 0 && total + q.frame.len() > max_bytes) {
                break;
            }
            slices.push(IoSlice::new(&q.frame));
            total += q.frame.len();
            n += 1;
        }
        n
    }

    /// Appends clones of the front frames to `frames` (refcount bumps), with the same
    /// limits as [`io_slices`](Self::io_slices); returns how many were added.
    pub fn frames_into(
        &self,
        frames: &mut Vec<Bytes>,
        max_frames: usize,
        max_bytes: usize,
    ) -> usize {
        let mut n = 0;
        let mut total = 0;
        for q in &self.frames {
            if n == max_frames || (n > 0 && total + q.frame.len() > max_bytes) {
                break;
            }
            frames.push(q.frame.clone());
            total += q.frame.len();
            n += 1;
        }
        n
    }

    /// Marks the first `n` frames as being sent: policies leave them alone until
    /// [`unpin`](Self::unpin).
    pub fn pin_front(&mut self, n: usize) {
        self.pinned = n.min(self.frames.len());
    }

    /// Ends a send started with [`pin_front`](Self::pin_front).
    pub fn unpin(&mut self) {
        self.pinned = 0;
    }

    /// Frames at the front no policy may discard: the pinned ones, or the started one.
    fn untouchable(&self) -> usize {
        self.pinned.max(usize::from(self.front_started))
    }

    /// Drops `written` bytes from the front (what a write accepted); returns how many
    /// whole frames were completed.
    ///
    /// # Panics
    /// If `written` is more than [`len_bytes`](Self::len_bytes).
    pub fn advance(&mut self, mut written: usize) -> usize {
        assert!(written <= self.bytes, "advance past the queued bytes");
        self.bytes -= written;
        let mut done = 0;
        while written > 0 {
            let front = self.frames.front_mut().expect("bytes counted but no frame");
            if front.frame.len() <= written {
                written -= front.frame.len();
                self.frames.pop_front();
                self.front_started = false;
                self.pinned = self.pinned.saturating_sub(1);
                done += 1;
            } else {
                front.frame.advance(written);
                self.front_started = true;
                written = 0;
            }
        }
        done
    }

    /// Discards every frame not yet started (a closing connection); returns the frames
    /// discarded.
    pub fn discard_unstarted(&mut self) -> usize {
        let keep = self.untouchable().min(self.frames.len());
        let n = self.frames.len() - keep;
        for q in self.frames.drain(keep..) {
            self.bytes -= q.frame.len();
        }
        n
    }

    /// Discards the oldest tagged frames (not the started front one) until at most
    /// `limit` bytes are queued or none is left to discard; returns the frames discarded.
    pub fn drop_oldest(&mut self, limit: usize) -> usize {
        if self.bytes <= limit {
            return 0;
        }
        let mut excess = self.bytes - limit;
        let keep = self.untouchable();
        let mut dropped = 0;
        let mut freed = 0;
        let mut i = 0;
        self.frames.retain(|q| {
            let kept = i < keep;
            i += 1;
            if excess == 0 || q.tag == UNTAGGED || kept {
                return true;
            }
            excess = excess.saturating_sub(q.frame.len());
            freed += q.frame.len();
            dropped += 1;
            false
        });
        self.bytes -= freed;
        dropped
    }

    /// Keeps only the newest queued frame of each tag (not touching untagged frames or
    /// the started front one); returns the frames discarded.
    pub fn conflate(&mut self) -> usize {
        let mut seen = HashSet::new();
        let fixed = self.untouchable();
        let len = self.frames.len();
        // Walk from the back: the first frame seen of each tag is the newest.
        let mut keep = vec![true; len];
        for (i, q) in self.frames.iter().enumerate().rev() {
            if q.tag != UNTAGGED && i >= fixed && !seen.insert(q.tag) {
                keep[i] = false;
            }
        }
        let mut freed = 0;
        let mut i = 0;
        self.frames.retain(|q| {
            let k = keep[i];
            i += 1;
            if !k {
                freed += q.frame.len();
            }
            k
        });
        self.bytes -= freed;
        len - self.frames.len()
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
        self.front_started = false;
        self.pinned = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(q: &OutQueue) -> Vec<u8> {
        let mut s = Vec::new();
        q.io_slices(&mut s, 64, usize::MAX);
        s.iter().flat_map(|x| x.iter().copied()).collect()
    }

    #[test]
    fn partial_writes_resume_inside_a_frame() {
        let mut q = OutQueue::new();
        q.push(Bytes::from_static(b"hello"));
        q.push(Bytes::from_static(b"world!"));
        assert_eq!(q.len_bytes(), 11);
        assert_eq!(q.advance(3), 0);
        assert_eq!(contents(&q), b"loworld!");
        assert_eq!(q.advance(4), 1);
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
        let mut s = Vec::new();
        assert_eq!(q.io_slices(&mut s, 4, usize::MAX), 4);
        s.clear();
        assert_eq!(q.io_slices(&mut s, 4, 25), 2);
        s.clear();
        // At least one frame even when it alone is over the budget.
        assert_eq!(q.io_slices(&mut s, 4, 1), 1);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn queued_frames_share_memory() {
        let shared = Bytes::from(vec![1u8; 1000]);
        let mut a = OutQueue::new();
        let mut b = OutQueue::new();
        a.push_tagged(shared.clone(), 1);
        b.push_tagged(shared.clone(), 1);
        let mut sa = Vec::new();
        let mut sb = Vec::new();
        a.io_slices(&mut sa, 1, usize::MAX);
        b.io_slices(&mut sb, 1, usize::MAX);
        assert_eq!(sa[0].as_ptr(), sb[0].as_ptr());
        assert_eq!(sa[0].as_ptr(), shared.as_ptr());
    }

    #[test]
    fn drop_oldest_spares_untagged_and_started_frames() {
        let mut q = OutQueue::new();
        q.push_tagged(Bytes::from_static(b"aaaa"), 1);
        q.push(Bytes::from_static(b"PONG"));
        q.push_tagged(Bytes::from_static(b"bbbb"), 1);
        q.push_tagged(Bytes::from_static(b"cccc"), 2);
        q.advance(2); // "aa" of the first frame went out
        assert_eq!(q.drop_oldest(10), 1);
        assert_eq!(contents(&q), b"aaPONGcccc");
        assert_eq!(q.len_bytes(), 10);
        // Nothing droppable is left: the queue stays over the limit.
        assert_eq!(q.drop_oldest(0), 1);
        assert_eq!(contents(&q), b"aaPONG");
    }

    #[test]
    fn conflate_keeps_the_newest_per_topic() {
        let mut q = OutQueue::new();
        for (f, t) in [
            (&b"a1"[..], 1),
            (b"b1", 2),
            (b"a2", 1),
            (b"XX", 0),
            (b"a3", 1),
            (b"b2", 2),
        ] {
            q.push_tagged(Bytes::copy_from_slice(f), t);
        }
        assert_eq!(q.conflate(), 3);
        assert_eq!(contents(&q), b"XXa3b2");
        assert_eq!(q.len_bytes(), 6);
    }

    #[test]
    fn pinned_frames_survive_every_policy() {
        let mut q = OutQueue::new();
        for (f, t) in [(&b"a1"[..], 1), (b"a2", 1), (b"a3", 1), (b"a4", 1)] {
            q.push_tagged(Bytes::copy_from_slice(f), t);
        }
        let mut sent = Vec::new();
        assert_eq!(q.frames_into(&mut sent, 2, usize::MAX), 2);
        q.pin_front(2);
        assert_eq!(q.conflate(), 1);
        assert_eq!(contents(&q), b"a1a2a4");
        assert_eq!(q.drop_oldest(0), 1);
        assert_eq!(contents(&q), b"a1a2");
        assert_eq!(q.discard_unstarted(), 0);
        // The completion consumes exactly what was handed to the kernel.
        assert_eq!(q.advance(3), 1);
        q.unpin();
        assert_eq!(contents(&q), b"2");
        assert_eq!(sent, [&b"a1"[..], b"a2"]);
    }

    #[test]
    fn discard_unstarted_keeps_a_started_front() {
        let mut q = OutQueue::new();
        q.push(Bytes::from_static(b"abcd"));
        q.push(Bytes::from_static(b"efgh"));
        assert_eq!(q.discard_unstarted(), 2);
        assert!(q.is_empty() && q.len_bytes() == 0);
        q.push(Bytes::from_static(b"abcd"));
        q.push(Bytes::from_static(b"efgh"));
        q.advance(1);
        assert_eq!(q.discard_unstarted(), 1);
        assert_eq!(contents(&q), b"bcd");
    }
}
