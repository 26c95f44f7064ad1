//! What one connection has to send: a cursor per subscribed topic, and a small queue of
//! its own frames.
//!
//! Published messages are not queued per connection at all: a subscription is `(topic,
//! cursor)`, and what it has not been sent is `log[cursor..head]` of the topic's log
//! ([`super::log`]) — one or two slices however many messages are pending. The connection's
//! own frames (handshake answer, pongs, replies, the close frame) go through a short
//! queue, [`Outbox::push`].
//!
//! # Write order
//! [`gather`](Outbox::gather) hands out, in this order: the subscription whose last write
//! ended inside a frame (it must finish that frame before anything else goes on the
//! wire), then the own queue, then every other subscription's pending run in the order
//! they were subscribed. [`advance`](Outbox::advance) consumes what a write took in the
//! same order, so a partial write resumes exactly where it stopped — inside a frame,
//! inside a chunk, anywhere. Within a topic, messages go out in publish order; across
//! topics, a write carries each topic's pending run in turn, so two topics' messages
//! published in the same turn may reach a client grouped by topic.
//!
//! # Moving a cursor
//! Slow-consumer policies ([`skip`](Outbox::skip)) and unsubscribing never cut a frame: if
//! the subscription had written part of a frame, the rest of that frame is kept (a
//! reference to its chunk, [`Held`]) at the front of the own queue and finished first.
//! Closing normally ([`freeze`](Outbox::freeze)) holds everything still pending the same
//! way, so the close frame goes out after it.

use std::collections::VecDeque;

use bytes::Bytes;
use smallvec::SmallVec;

use super::log::{Backing, Held, TopicLog};
use super::topic::Topics;

/// One subscription of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sub {
    /// The topic's id in the reactor ([`Topics`]).
    pub(crate) topic: u32,
    /// Position among the topic's subscribers.
    pub(crate) pos: u32,
    /// Position in the topic's log of the next byte to send.
    pub(crate) cursor: u64,
    /// `cursor` at the last heartbeat tick (or at subscription): where it has not moved,
    /// the topic was quiet for this connection and a heartbeat is due.
    beat: u64,
}

/// What a slow-consumer policy skipped of one subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// Frames skipped.
    pub(crate) frames: usize,
    /// The sequence numbers they stood for (`from..=to`), if any.
    pub(crate) seqs: Option<(u64, u64)>,
}

/// No subscription is inside a frame.
const NO_MID: u32 = u32::MAX;

/// The own frames of a connection; allocated only while there are some.
#[derive(Debug, Default)]
struct Own {
    frames: VecDeque<Held>,
    /// Bytes of `frames.front()` already written.
    off: usize,
    /// Bytes in `frames`, minus `off`.
    bytes: usize,
}

/// A source of bytes, in write order.
#[derive(Debug, Clone, Copy)]
enum Src {
    Sub(usize),
    Own,
}

/// What a write completed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Written {
    /// Whole frames (published or own) finished.
    pub(crate) frames: usize,
}

/// A connection's pending output. See the module docs.
///
/// # Memory layout
/// 40 bytes while idle with one subscription: the subscription inline, own frames behind
/// a pointer that is null while there are none.
#[derive(Debug)]
pub(crate) struct Outbox {
    own: Option<Box<Own>>,
    subs: SmallVec<[Sub; 1]>,
    /// The subscription whose last write ended inside a frame (at most one), or `NO_MID`.
    mid: u32,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            own: None,
            subs: SmallVec::new(),
            mid: NO_MID,
        }
    }
}

impl Outbox {
    /// Queues a frame of the connection's own (after those queued before).
    pub(crate) fn push(&mut self, frame: Bytes) {
        if !frame.is_empty() {
            self.own_push_back(Held::Bytes(frame));
        }
    }

    /// Bytes of own frames waiting.
    pub(crate) fn own_bytes(&self) -> usize {
        self.own.as_ref().map_or(0, |o| o.bytes)
    }

    /// The subscriptions.
    pub(crate) fn subs(&self) -> &[Sub] {
        &self.subs
    }

    /// The subscription to `topic`, if any.
    pub(crate) fn sub_index(&self, topic: u32) -> Option<usize> {
        self.subs.iter().position(|s| s.topic == topic)
    }

    /// Subscribes at `cursor` (the log's head: only messages published from now on).
    pub(crate) fn add_sub(&mut self, topic: u32, pos: u32, cursor: u64) {
        self.subs.push(Sub {
            topic,
            pos,
            cursor,
            beat: cursor,
        });
    }

    /// At a heartbeat tick: whether some subscription sent nothing since the last tick
    /// (or since it began). Every subscription's mark moves to its cursor.
    pub(crate) fn quiet_since_last_beat(&mut self) -> bool {
        let mut quiet = false;
        for s in &mut self.subs {
            quiet |= s.cursor == s.beat;
            s.beat = s.cursor;
        }
        quiet
    }

    /// Records that subscription `i` moved to position `pos` among its topic's
    /// subscribers.
    pub(crate) fn set_pos(&mut self, i: usize, pos: u32) {
        self.subs[i].pos = pos;
    }

    /// Unsubscribes from `topic`, finishing a frame it had started; returns the
    /// subscription that was removed (for the topic's side).
    pub(crate) fn remove_sub(&mut self, topics: &Topics, topic: u32) -> Option<Sub> {
        let i = self.sub_index(topic)?;
        if self.mid() == Some(i) {
            self.hold_rest_of_frame(topics.log(topic), self.subs[i].cursor);
            self.mid = NO_MID;
        }
        let s = self.subs.remove(i);
        if let Some(m) = self.mid() {
            if m > i {
                self.mid -= 1;
            }
        }
        Some(s)
    }

    /// Nothing at all to send.
    pub(crate) fn is_empty(&self, topics: &Topics) -> bool {
        self.own.is_none()
            && self
                .subs
                .iter()
                .all(|s| s.cursor == topics.log(s.topic).head())
    }

    /// Bytes the subscriptions other than to topic `except` have not been sent yet (their
    /// logs in `topics`).
    pub(crate) fn backlog(&self, topics: &Topics, except: Option<u32>) -> u64 {
        self.subs
            .iter()
            .filter(|s| Some(s.topic) != except)
            .map(|s| topics.log(s.topic).head().saturating_sub(s.cursor))
            .sum()
    }

    /// Bytes a subscription has not been sent yet.
    pub(crate) fn lag(&self, i: usize, log: &TopicLog) -> u64 {
        log.head() - self.subs[i].cursor
    }

    /// Calls `f` with the bytes to write next, in write order (module docs), until `max`
    /// bytes were given or `f` returns `false` (no room for another slice); returns the
    /// bytes given.
    pub(crate) fn gather(
        &self,
        topics: &Topics,
        max: usize,
        mut f: impl FnMut(&[u8], Backing<'_>) -> bool,
    ) -> usize {
        let mut total = 0;
        let mut go = true;
        for src in self.order() {
            if !go || total >= max {
                break;
            }
            match src {
                Src::Sub(i) => {
                    let s = &self.subs[i];
                    total += topics.log(s.topic).pieces(s.cursor, max - total, |b, k| {
                        go = f(b, k);
                        go
                    });
                }
                Src::Own => {
                    let Some(own) = &self.own else {
                        continue;
                    };
                    for (k, h) in own.frames.iter().enumerate() {
                        if !go || total >= max {
                            break;
                        }
                        let bytes = &h.bytes()[if k == 0 { own.off } else { 0 }..];
                        let take = bytes.len().min(max - total);
                        total += take;
                        go = f(&bytes[..take], h.backing());
                    }
                }
            }
        }
        total
    }

    /// Consumes `n` bytes that a write took, in [`gather`](Self::gather) order.
    ///
    /// # Panics
    /// If `n` is more than what is pending.
    pub(crate) fn advance(&mut self, topics: &Topics, mut n: usize) -> Written {
        let mut w = Written::default();
        for src in self.order() {
            if n == 0 {
                break;
            }
            match src {
                Src::Sub(i) => n = self.advance_sub(topics, i, n, &mut w),
                Src::Own => n = self.advance_own(n, &mut w),
            }
        }
        assert_eq!(n, 0, "advance past the pending bytes");
        w
    }

    /// The subscription inside a frame, if any.
    fn mid(&self) -> Option<usize> {
        (self.mid != NO_MID).then_some(self.mid as usize)
    }

    /// The write order (module docs).
    fn order(&self) -> impl Iterator<Item = Src> + use<> {
        let mid = self.mid();
        let n = self.subs.len();
        mid.map(Src::Sub)
            .into_iter()
            .chain(std::iter::once(Src::Own))
            .chain((0..n).filter(move |&i| Some(i) != mid).map(Src::Sub))
    }

    fn advance_own(&mut self, mut n: usize, w: &mut Written) -> usize {
        let Some(own) = &mut self.own else {
            return n;
        };
        while n > 0 {
            let Some(front) = own.frames.front() else {
                break;
            };
            let left = front.len() - own.off;
            if n >= left {
                n -= left;
                own.bytes -= left;
                own.frames.pop_front();
                own.off = 0;
                w.frames += 1;
            } else {
                own.off += n;
                own.bytes -= n;
                n = 0;
            }
        }
        if own.frames.is_empty() {
            // An idle connection holds no queue.
            self.own = None;
        }
        n
    }

    fn advance_sub(&mut self, topics: &Topics, i: usize, n: usize, w: &mut Written) -> usize {
        let was_mid = self.mid() == Some(i);
        let s = &mut self.subs[i];
        let log = topics.log(s.topic);
        let take = ((log.head() - s.cursor) as usize).min(n);
        if take == 0 {
            return n;
        }
        let (old, new) = (s.cursor, s.cursor + take as u64);
        let mid_new = !log.is_boundary(new);
        // Frames finished: those starting in [old, new), plus the one `old` was inside of,
        // minus the one `new` is inside of.
        w.frames += log.frames_before(new) - log.frames_before(old) + usize::from(was_mid)
            - usize::from(mid_new);
        s.cursor = new;
        if mid_new {
            self.mid = i as u32;
        } else if was_mid {
            self.mid = NO_MID;
        }
        n - take
    }

    /// Moves subscription `i`'s cursor forward to the frame boundary `to` (a
    /// slow-consumer policy); returns what was skipped. A frame it had started is
    /// finished first (held), and is not counted.
    pub(crate) fn skip(&mut self, log: &TopicLog, i: usize, to: u64) -> Skipped {
        let mut cursor = self.subs[i].cursor;
        if self.mid() == Some(i) {
            self.hold_rest_of_frame(log, cursor);
            self.mid = NO_MID;
            cursor = log.frame_end(cursor);
        }
        let to = to.max(cursor);
        let skipped = Skipped {
            frames: log.frames_before(to) - log.frames_before(cursor),
            seqs: log.seq_range(cursor, to),
        };
        self.subs[i].cursor = to;
        skipped
    }

    /// Detaches every subscription for a slow-consumer close: a frame started is finished,
    /// the rest is not sent; returns the subscriptions to remove from their topics.
    pub(crate) fn drop_subs(&mut self, topics: &Topics) -> SmallVec<[Sub; 1]> {
        if let Some(i) = self.mid() {
            let s = self.subs[i];
            self.hold_rest_of_frame(topics.log(s.topic), s.cursor);
            self.mid = NO_MID;
        }
        std::mem::take(&mut self.subs)
    }

    /// Detaches every subscription for a normal close: what each has pending is held and
    /// still sent (before anything queued after this call, such as the close frame);
    /// returns the subscriptions to remove from their topics.
    pub(crate) fn freeze(&mut self, topics: &Topics) -> SmallVec<[Sub; 1]> {
        if let Some(i) = self.mid() {
            let s = self.subs[i];
            let mut rest = Vec::new();
            topics.log(s.topic).hold_from(s.cursor, |h| rest.push(h));
            for h in rest.into_iter().rev() {
                self.own_push_front(h);
            }
            self.subs[i].cursor = topics.log(s.topic).head();
            self.mid = NO_MID;
        }
        for k in 0..self.subs.len() {
            let s = self.subs[k];
            topics
                .log(s.topic)
                .hold_from(s.cursor, |h| self.own_push_back(h));
        }
        std::mem::take(&mut self.subs)
    }

    /// Drops own frames not started (the connection is going away); returns how many.
    pub(crate) fn discard_own_unstarted(&mut self) -> usize {
        let Some(own) = &mut self.own else {
            return 0;
        };
        let keep = usize::from(own.off > 0).min(own.frames.len());
        let n = own.frames.len() - keep;
        for h in own.frames.drain(keep..) {
            own.bytes -= h.len();
        }
        if own.frames.is_empty() {
            self.own = None;
        }
        n
    }

    /// Puts the rest of the frame that `pos` is inside of at the front of the own queue.
    fn hold_rest_of_frame(&mut self, log: &TopicLog, pos: u64) {
        debug_assert_eq!(
            self.own.as_ref().map_or(0, |o| o.off),
            0,
            "two writes in progress at once"
        );
        if let Some(h) = log.hold_rest_of_frame(pos) {
            self.own_push_front(h);
        }
    }

    fn own_push_back(&mut self, h: Held) {
        let own = self.own.get_or_insert_with(Box::default);
        own.bytes += h.len();
        own.frames.push_back(h);
    }

    fn own_push_front(&mut self, h: Held) {
        let own = self.own.get_or_insert_with(Box::default);
        own.bytes += h.len();
        own.frames.push_front(h);
    }
}

#[cfg(test)]
mod tests;
