//! A topic's log in one reactor: the framed bytes of its recent messages, held once.
//!
//! ```text
//!  position:   tail                                                      head
//!              │ chunk (64 KiB, pooled)      │ large frame (Bytes) │ chunk │
//!              │ f1 f2 f3 f4 … (contiguous)  │ f9 (referenced)     │ f10 … │
//!                   ▲ cursor of subscriber A                ▲ cursor of B
//! ```
//!
//! Positions are byte offsets in the topic's stream since the log began (`u64`, never
//! reused). Appending a frame copies it into the tail chunk (one `memcpy` per message per
//! reactor), so a run of small frames is one contiguous range; a frame over
//! [`LARGE_FRAME`] is kept as its own segment (a refcount, no copy). A frame never spans
//! two segments. The log records where each held frame starts and its sequence number, for
//! skipping (slow consumers), counting, and finding where a resuming subscriber starts.
//!
//! A `ringcast.v1` log is also the topic's history: it keeps its newest frames (up to a
//! count and a byte size) after every cursor has passed them, so a client that comes back
//! with the last sequence number it saw is just a cursor set back
//! ([`resume`](TopicLog::resume)). Messages the log never got (its reactor's inbox was
//! full) leave a `gap` frame in their place, so every subscriber is told.
//!
//! A subscriber is a cursor: what it has not been sent is `[cursor, head)`, which
//! [`pieces`](TopicLog::pieces) yields as one slice per segment — usually one, two at a
//! chunk edge — however many messages that is. The log drops segments from its front once
//! every cursor has passed them ([`trim`](TopicLog::trim)); readers that must keep bytes
//! beyond that (an in-flight send, a half-written frame) hold the chunk itself.

use std::collections::VecDeque;

use bytes::Bytes;

use super::chunk::{CLASSES, Chunk, ChunkPool, class_for};

/// Frames longer than this are referenced, not copied. Copying costs about as much as a
/// refcount and a segment below a few KiB; above, it costs more and would spread the small
/// frames around it over more chunks.
pub(crate) const LARGE_FRAME: usize = 16 << 10;

/// Frame records a log keeps room for however few it holds; past it, a log that
/// holds under a quarter of its room gives the rest back.
const SPARE_FRAMES: usize = 1024;

/// A chunk that takes more trims than this to fill belongs to a quiet topic.
const SLOW_FILL: u32 = 16;

/// Readers from which a topic keeps large chunks however slowly they fill. A chunk edge
/// costs every reader one more slice in one of its writes (a `sendmsg` of two slices
/// instead of a `send` of one), while a large tail chunk costs its memory once per topic;
/// and trims count delivery passes, which under load take longer the more readers a
/// topic has, so a wide topic's chunks would look slow to fill exactly when it is busy.
const WIDE_TOPIC: usize = 64;

/// Bytes held outside a log (by a connection or an in-flight send): part of a chunk, or
/// a `Bytes` (a control frame, a large frame).
#[derive(Debug, Clone)]
pub(crate) enum Held {
    /// `chunk[off..off + len]`.
    Chunk {
        /// The chunk, kept alive by this reference.
        chunk: Chunk,
        /// Start within the chunk.
        off: u32,
        /// Length.
        len: u32,
    },
    /// A frame of its own (sliced to what is left of it).
    Bytes(Bytes),
}

impl Held {
    /// The bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Self::Chunk { chunk, off, len } => {
                chunk.bytes(*off as usize, *off as usize + *len as usize)
            }
            Self::Bytes(b) => b,
        }
    }

    /// Their length.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Chunk { len, .. } => *len as usize,
            Self::Bytes(b) => b.len(),
        }
    }

    /// The memory to keep alive while the kernel reads these bytes.
    pub(crate) fn backing(&self) -> Backing<'_> {
        match self {
            Self::Chunk { chunk, .. } => Backing::Chunk(chunk),
            Self::Bytes(b) => Backing::Bytes(b),
        }
    }
}

/// What a slice handed out for writing points into.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backing<'a> {
    /// A chunk.
    Chunk(&'a Chunk),
    /// A `Bytes` buffer.
    Bytes(&'a Bytes),
}

/// A reference that keeps a slice's memory alive (an in-flight send holds these).
#[derive(Debug, Clone)]
pub(crate) enum Pin {
    /// One reference to a chunk, however many slices of it the send carries.
    Chunk(Chunk),
    /// One reference to a frame buffer.
    Bytes(Bytes),
}

impl Backing<'_> {
    /// A reference to the memory.
    pub(crate) fn pin(self) -> Pin {
        match self {
            Self::Chunk(c) => Pin::Chunk(c.clone()),
            Self::Bytes(b) => Pin::Bytes(b.clone()),
        }
    }

    /// Whether `pin` already keeps this memory alive.
    pub(crate) fn same(self, pin: &Pin) -> bool {
        match (self, pin) {
            (Self::Chunk(a), Pin::Chunk(b)) => a.ptr_eq(b),
            (Self::Bytes(a), Pin::Bytes(b)) => a.as_ptr() == b.as_ptr() && a.len() == b.len(),
            _ => false,
        }
    }
}

#[derive(Debug)]
enum Data {
    Chunk(Chunk),
    Large(Bytes),
}

#[derive(Debug)]
struct Seg {
    /// Position of the segment's first byte.
    start: u64,
    data: Data,
}

impl Seg {
    fn len(&self) -> usize {
        match &self.data {
            Data::Chunk(c) => c.len(),
            Data::Large(b) => b.len(),
        }
    }

    fn end(&self) -> u64 {
        self.start + self.len() as u64
    }

    /// The bytes from offset `from` (within the segment) to its end.
    fn bytes_from(&self, from: usize) -> &[u8] {
        match &self.data {
            Data::Chunk(c) => c.bytes(from, c.len()),
            Data::Large(b) => &b[from..],
        }
    }

    fn backing(&self) -> Backing<'_> {
        match &self.data {
            Data::Chunk(c) => Backing::Chunk(c),
            Data::Large(b) => Backing::Bytes(b),
        }
    }

    /// `[off, off + len)` of the segment, held.
    fn held(&self, off: usize, len: usize) -> Held {
        match &self.data {
            Data::Chunk(c) => Held::Chunk {
                chunk: c.clone(),
                off: off as u32,
                len: len as u32,
            },
            Data::Large(b) => Held::Bytes(b.slice(off..off + len)),
        }
    }
}

/// What a frame's record takes besides the frame: a lag of minimum-size frames (2 bytes)
/// holds 12 times its bytes in records.
pub(crate) const RECORD_BYTES: usize = size_of::<FrameMeta>();

/// Where a held frame starts, and the sequence numbers it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameMeta {
    /// Position of the frame's first byte.
    pub(crate) pos: u64,
    /// The message's sequence number in this topic (a gap frame: the last one missing).
    pub(crate) seq: u64,
    /// The first sequence number it stands for: `seq` for a message, the first one
    /// missing for a gap frame.
    pub(crate) first: u64,
}

/// Where a resuming subscriber starts in a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resume {
    /// The position of the first message to send it.
    pub(crate) cursor: u64,
    /// Messages after its `since` that the log no longer holds (`from..=to`): the
    /// subscriber is told before anything else.
    pub(crate) gap: Option<(u64, u64)>,
}

/// One topic's log in one reactor. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct TopicLog {
    segs: VecDeque<Seg>,
    frames: VecDeque<FrameMeta>,
    head: u64,
    /// Sequence number of the last message appended, or of the last one known not to be
    /// coming (the log started after it).
    last_seq: u64,
    /// Size class of the next chunk: grows when a chunk fills within a few trims (a busy
    /// topic gets 64 KiB runs), shrinks when one took many (a quiet one holds 4 KiB).
    class: usize,
    /// Trims (delivery turns that published here) since the tail chunk was taken.
    trims: u32,
    /// Read by at least [`WIDE_TOPIC`] subscribers (as of the last trim).
    wide: bool,
}

impl TopicLog {
    /// An empty log that holds nothing up to sequence number `last_seq`: its first
    /// message is `last_seq + 1`.
    pub(crate) fn after(last_seq: u64) -> Self {
        Self {
            last_seq,
            ..Self::default()
        }
    }

    /// The sequence number of the last message appended (or known to be past).
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Notes that the messages up to `seq` will not come (numbered before this node
    /// followed the topic): no gap is announced for them.
    pub(crate) fn skip_to(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// Position after the last byte appended: where a new subscriber starts.
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// Position of the oldest byte held.
    pub(crate) fn tail(&self) -> u64 {
        self.segs.front().map_or(self.head, |s| s.start)
    }

    #[cfg(test)]
    /// Bytes held.
    pub(crate) fn held_bytes(&self) -> u64 {
        self.head - self.tail()
    }

    #[cfg(test)]
    /// Segments held (chunks and large frames).
    pub(crate) fn segments(&self) -> usize {
        self.segs.len()
    }

    /// Appends the encoded frame of message `seq`.
    pub(crate) fn append(&mut self, frame: &Bytes, seq: u64, pool: &ChunkPool) {
        self.push(frame, seq, seq, pool);
    }

    #[cfg(test)]
    /// Appends the next message (`last_seq + 1`); returns its number.
    pub(crate) fn append_next(&mut self, frame: &Bytes, pool: &ChunkPool) -> u64 {
        let seq = self.last_seq + 1;
        self.append(frame, seq, pool);
        seq
    }

    /// Appends a frame that stands for messages `first..=last`, which the log did not
    /// get (a `gap` announcement).
    pub(crate) fn append_gap(&mut self, frame: &Bytes, first: u64, last: u64, pool: &ChunkPool) {
        self.push(frame, first, last, pool);
    }

    fn push(&mut self, frame: &Bytes, first: u64, seq: u64, pool: &ChunkPool) {
        self.last_seq = self.last_seq.max(seq);
        let len = frame.len();
        if len == 0 {
            return;
        }
        self.frames.push_back(FrameMeta {
            pos: self.head,
            seq,
            first,
        });
        if len > LARGE_FRAME {
            self.segs.push_back(Seg {
                start: self.head,
                data: Data::Large(frame.clone()),
            });
        } else {
            let fits = matches!(self.segs.back(), Some(Seg { data: Data::Chunk(c), .. }) if c.room() >= len);
            if !fits {
                if let Some(Seg {
                    data: Data::Chunk(c),
                    ..
                }) = self.segs.back()
                {
                    // The tail chunk filled up: quickly (or read widely), the next is
                    // twice as large; slowly, half as large.
                    self.class = if self.trims <= SLOW_FILL || self.wide {
                        (c.class() + 1).min(CLASSES - 1)
                    } else {
                        c.class().saturating_sub(1)
                    };
                }
                self.trims = 0;
                let class = self.class.max(class_for(len).unwrap_or(CLASSES - 1));
                self.segs.push_back(Seg {
                    start: self.head,
                    data: Data::Chunk(pool.take(class)),
                });
            }
            if let Some(Seg {
                data: Data::Chunk(c),
                ..
            }) = self.segs.back()
            {
                c.append(frame);
            }
        }
        self.head += len as u64;
    }

    /// Calls `f` with the bytes `[from, head)`, one slice per segment, until `max` bytes
    /// were given or `f` returns `false`; returns the bytes given.
    ///
    /// # Panics
    /// If `from` is not within `[tail, head]` (a cursor the log dropped).
    pub(crate) fn pieces(
        &self,
        from: u64,
        max: usize,
        mut f: impl FnMut(&[u8], Backing<'_>) -> bool,
    ) -> usize {
        assert!(
            from >= self.tail() && from <= self.head,
            "cursor {from} outside the log [{}, {}]",
            self.tail(),
            self.head
        );
        let first = self.segs.partition_point(|s| s.end() <= from);
        let mut total = 0;
        for s in self.segs.range(first..) {
            if total >= max {
                break;
            }
            let off = (from.max(s.start) - s.start) as usize;
            let bytes = s.bytes_from(off);
            let take = bytes.len().min(max - total);
            total += take;
            if !f(&bytes[..take], s.backing()) {
                break;
            }
        }
        total
    }

    /// The bytes `[from, head)` as held pieces (one per segment): what a closing
    /// connection still sends after the log has moved on.
    pub(crate) fn hold_from(&self, from: u64, mut f: impl FnMut(Held)) {
        let first = self.segs.partition_point(|s| s.end() <= from);
        for s in self.segs.range(first..) {
            let off = (from.max(s.start) - s.start) as usize;
            let len = s.len() - off;
            if len > 0 {
                f(s.held(off, len));
            }
        }
    }

    /// The rest of the frame that `pos` is inside of, held (for a connection that wrote
    /// part of it and must finish it wherever its cursor goes next).
    pub(crate) fn hold_rest_of_frame(&self, pos: u64) -> Option<Held> {
        let end = self.frame_end(pos);
        if end == pos {
            return None;
        }
        let i = self.segs.partition_point(|s| s.end() <= pos);
        let s = self.segs.get(i)?;
        let off = (pos - s.start) as usize;
        Some(s.held(off, (end - pos) as usize))
    }

    /// The oldest frame from which a replay to the head takes at most `budget` bytes, the
    /// frames' records included (the head when not even the newest frame fits).
    pub(crate) fn replay_floor(&self, budget: u64) -> u64 {
        let n = self.frames.len();
        let cost = |i: usize| self.head - self.frames[i].pos + ((n - i) * RECORD_BYTES) as u64;
        // The cost falls as the floor moves on: the first index within the budget.
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if cost(mid) > budget {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        self.frames.get(lo).map_or(self.head, |f| f.pos)
    }

    /// Memory the records of the frames held from `pos` on take besides their bytes
    /// ([`RECORD_BYTES`] each).
    pub(crate) fn record_bytes_from(&self, pos: u64) -> u64 {
        ((self.frames.len() - self.frames_before(pos)) * RECORD_BYTES) as u64
    }

    /// Frames held that start before `pos`.
    pub(crate) fn frames_before(&self, pos: u64) -> usize {
        // The usual cursors (at the oldest frame, at the head) need no search.
        let (first, last) = match (self.frames.front(), self.frames.back()) {
            (Some(first), _) if pos <= first.pos => return 0,
            (_, Some(last)) if pos > last.pos => return self.frames.len(),
            (Some(first), Some(last)) => (first.pos, last.pos),
            _ => return 0,
        };
        // Every write counts its frames here. When the topic's frames are all one size
        // (ticks of one feed), `pos` sits where that size puts it: check that guess
        // first, and search only when it misses.
        let n = self.frames.len();
        let guess = (pos - first)
            .checked_mul((n - 1) as u64)
            .map_or(0, |x| (x / (last - first)) as usize);
        if self.frames.get(guess).is_some_and(|f| f.pos == pos) {
            return guess;
        }
        self.frames.partition_point(|f| f.pos < pos)
    }

    /// Whether `pos` is between two frames (or at the head).
    pub(crate) fn is_boundary(&self, pos: u64) -> bool {
        pos == self.head
            || self.frames.front().is_some_and(|f| f.pos == pos)
            || self.frames.binary_search_by_key(&pos, |f| f.pos).is_ok()
    }

    /// The end of the frame that contains `pos` (`pos` itself at a boundary).
    pub(crate) fn frame_end(&self, pos: u64) -> u64 {
        if self.is_boundary(pos) {
            return pos;
        }
        let i = self.frames.partition_point(|f| f.pos <= pos);
        self.frames.get(i).map_or(self.head, |f| f.pos)
    }

    /// Where the newest frame starts.
    pub(crate) fn latest_frame(&self) -> Option<u64> {
        self.frames.back().map(|f| f.pos)
    }

    /// Where the first frame at or after `pos` starts (the head if none).
    pub(crate) fn frame_at_or_after(&self, pos: u64) -> u64 {
        let i = self.frames.partition_point(|f| f.pos < pos);
        self.frames.get(i).map_or(self.head, |f| f.pos)
    }

    #[cfg(test)]
    /// The held frames, oldest first.
    pub(crate) fn frames(&self) -> impl Iterator<Item = FrameMeta> + '_ {
        self.frames.iter().copied()
    }

    /// Where a subscriber resuming after message `since` starts: at the first message
    /// after it still held, with a gap for those before that are not.
    pub(crate) fn resume(&self, since: u64) -> Resume {
        if since >= self.last_seq {
            return Resume {
                cursor: self.head,
                gap: None,
            };
        }
        let i = self.frames.partition_point(|f| f.seq <= since);
        match self.frames.get(i) {
            None => Resume {
                cursor: self.head,
                gap: Some((since + 1, self.last_seq)),
            },
            Some(f) => Resume {
                cursor: f.pos,
                gap: (f.first > since + 1).then(|| (since + 1, f.first - 1)),
            },
        }
    }

    /// The sequence numbers of the frames that start in `[from, to)`, as a range, if any.
    pub(crate) fn seq_range(&self, from: u64, to: u64) -> Option<(u64, u64)> {
        let a = self.frames.partition_point(|f| f.pos < from);
        let b = self.frames.partition_point(|f| f.pos < to);
        (a < b).then(|| (self.frames[a].first, self.frames[b - 1].seq))
    }

    /// The last sequence number wholly sent to a subscriber whose cursor is at `pos`.
    pub(crate) fn seq_before(&self, pos: u64) -> u64 {
        if pos >= self.head {
            return self.last_seq;
        }
        let mut j = self.frames.partition_point(|f| f.pos < pos);
        if !self.is_boundary(pos) {
            j = j.saturating_sub(1);
        }
        self.frames
            .get(j)
            .map_or(self.last_seq, |f| f.first.saturating_sub(1))
    }

    /// The oldest position the history must keep: the newest `messages` frames, as far
    /// as they fit in `bytes` (the head when `messages` is 0).
    pub(crate) fn history_floor(&self, messages: usize, bytes: u64) -> u64 {
        if messages == 0 {
            return self.head;
        }
        let by_count = self
            .frames
            .get(self.frames.len().saturating_sub(messages))
            .map_or(self.head, |f| f.pos);
        by_count.max(self.frame_at_or_after(self.head.saturating_sub(bytes)))
    }

    /// Whether [`trim`](Self::trim) to `keep_from` would drop a segment (free memory):
    /// the front one ends there, and is not the tail chunk with room left.
    pub(crate) fn would_free(&self, keep_from: u64) -> bool {
        let Some(front) = self.segs.front() else {
            return false;
        };
        let filling = self.segs.len() == 1 && matches!(&front.data, Data::Chunk(c) if c.room() > 0);
        front.end() <= keep_from && !filling
    }

    /// Drops the segments that end at or before `keep_from` (every cursor is at or past
    /// it, and the history does not reach back further), and the records of frames that
    /// end there. A tail chunk with room left stays, to take the next frames.
    /// `readers`: the topic's subscribers in this reactor, which decide how large the next
    /// chunks are (see [`WIDE_TOPIC`]).
    pub(crate) fn trim(&mut self, keep_from: u64, readers: usize) {
        self.trims = self.trims.saturating_add(1);
        self.wide = readers >= WIDE_TOPIC;
        while self.would_free(keep_from) {
            self.segs.pop_front();
        }
        let tail = self.tail();
        while let Some(f) = self.frames.front() {
            let end = self.frames.get(1).map_or(self.head, |n| n.pos);
            if f.pos >= tail && end > keep_from {
                break;
            }
            self.frames.pop_front();
        }
        // A burst's records are not kept as spare capacity once it has been trimmed.
        let cap = self.frames.capacity();
        if cap > SPARE_FRAMES && self.frames.len() < cap / 4 {
            self.frames
                .shrink_to((self.frames.len() * 2).max(SPARE_FRAMES));
        }
    }
}

#[cfg(test)]
mod tests;
