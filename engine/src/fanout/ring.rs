//! The hand-off from publishers to reactors: one bounded inbox ring per reactor.
//!
//! ```text
//!  publish(topic, payload) ── number, encode once ──► Publication { topic, seq, frame, envelope }
//!        │ (any thread)                                │ clone = refcount bumps
//!        ├──────────────► inbox[0] ── wake once per batch ──► reactor 0
//!        └──────────────► inbox[1] ── wake once per batch ──► reactor 1
//! ```
//!
//! Why one inbox per reactor rather than one shared ring read at per-reactor cursors:
//! each inbox is a plain bounded MPSC ring (`crossbeam-channel`), so a reactor drains it
//! without coordinating with the other reactors, and a reactor that falls behind fills only
//! its own inbox. Publishing pushes one `Bytes` clone per reactor (not per subscriber) and
//! never blocks: it is a `try_send`.
//!
//! **Sequence numbers.** Each publication gets the next number of its topic
//! (`fanout::sequence`) and is framed twice, once: plainly (the payload as sent) and in its
//! `ringcast.v1` envelope, which names the topic and the number. Reactors append each to
//! the log of the subscribers who asked for that form. A publication may carry only one
//! form (the other empty): in a cluster a local publication reaches plain subscribers at
//! once, numbered by nobody, and its envelope follows when the broker has numbered it.
//!
//! **Wake-ups.** A reactor clears its `notified` flag before draining its inbox; a
//! publisher wakes the reactor (an eventfd write: a `mio::Waker` for epoll reactors, a bare
//! eventfd the reactor keeps a read armed on for io_uring ones) only when it is the one that sets the
//! flag again. So a busy reactor receives no wake-up syscalls at all, and an idle one
//! receives one per batch, however many messages the batch holds.
//!
//! **Overflow.** When an inbox is full (its reactor is that far behind), the publication is
//! not delivered to that reactor's subscribers: the publisher is told (the returned
//! [`Published::dropped_reactors`]) and the reactor's `ring_dropped` counter says how many
//! publications it missed. Nothing is lost silently, and a slow reactor never slows the
//! publisher or the other reactors.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::relay::{Interest, Relay};
use super::sequence::Sequencer;
use super::topic::{MAX_TOPIC_LEN, TopicName};
use crate::protocol::frame::OpCode;
use crate::protocol::{encode, envelope};

thread_local! {
    /// The inbox of the reactor running on this thread (its flag's address), if any: a
    /// reactor that publishes (a handler's `publish`) delivers in the same loop turn, which
    /// checks its inbox before waiting, so it never wakes itself.
    static OWN_INBOX: Cell<usize> = const { Cell::new(0) };
}

/// Default capacity of each reactor's inbox, in publications.
pub const DEFAULT_INBOX_CAPACITY: usize = 64 * 1024;
/// Largest inbox a reactor may be given, in publications (its slots are allocated up
/// front: ~100 bytes each, so 1.6 GiB per reactor at this size).
pub const MAX_INBOX_CAPACITY: usize = 1 << 24;

/// How a publisher interrupts a reactor that waits for I/O. The reactor implements it
/// (an eventfd write); the fan-out only knows that waking is cheap and never blocks.
pub trait Wake: Send + Sync + std::fmt::Debug {
    /// Makes the reactor's wait return soon.
    ///
    /// # Errors
    /// The reactor cannot be woken (its wake-up descriptor failed).
    fn wake(&self) -> std::io::Result<()>;
}

/// A message on its way to the subscribers of a topic.
#[derive(Debug, Clone)]
pub struct Publication {
    /// The topic.
    pub topic: TopicName,
    /// Its sequence number in the topic (from 1; 0 when it carries no envelope).
    pub seq: u64,
    /// The encoded server frame (header and payload), shared by every plain subscriber;
    /// empty when plain subscribers already had it.
    pub frame: Bytes,
    /// The same message in its `ringcast.v1` envelope, shared by every v1 subscriber;
    /// empty when it is not numbered yet. Both empty: a mark from [`Fanout::advance`].
    pub envelope: Bytes,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Published {
    /// The message's sequence number in its topic (0 when refused).
    pub seq: u64,
    /// Reactors whose inbox was full: their subscribers will not see this message.
    pub dropped_reactors: usize,
    /// Nothing was published: the topic name is over [`MAX_TOPIC_LEN`] bytes.
    pub refused: bool,
}

impl Published {
    /// Whether every reactor took the message.
    pub fn is_complete(&self) -> bool {
        !self.refused && self.dropped_reactors == 0
    }

    /// A publication to a topic name no envelope can carry: nothing is numbered or sent.
    fn refusal(topic: &TopicName) -> Self {
        tracing::debug!(
            "publication refused: topic name of {} bytes (at most {MAX_TOPIC_LEN})",
            topic.as_str().len()
        );
        Self {
            seq: 0,
            dropped_reactors: 0,
            refused: true,
        }
    }
}

/// The publishing side of one reactor's inbox.
#[derive(Debug)]
pub(crate) struct InboxTx {
    tx: Sender<Publication>,
    notified: Arc<AtomicBool>,
    waker: Arc<dyn Wake>,
    dropped: Arc<AtomicU64>,
}

/// The reactor side of its inbox.
#[derive(Debug)]
pub(crate) struct InboxRx {
    rx: Receiver<Publication>,
    notified: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

/// Creates a reactor's inbox, woken through `waker`.
pub(crate) fn inbox(capacity: usize, waker: Arc<dyn Wake>) -> (InboxTx, InboxRx) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let notified = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicU64::new(0));
    (
        InboxTx {
            tx,
            notified: Arc::clone(&notified),
            waker,
            dropped: Arc::clone(&dropped),
        },
        InboxRx {
            rx,
            notified,
            dropped,
        },
    )
}

impl InboxRx {
    /// Marks the calling thread as this inbox's reactor (see `OWN_INBOX`).
    pub(crate) fn claim_thread(&self) {
        OWN_INBOX.with(|o| o.set(Arc::as_ptr(&self.notified) as usize));
    }

    /// Takes up to `max` publications, in publish order. Clears the wake-up flag first,
    /// so a publication that arrives after the last one taken wakes the reactor again.
    pub(crate) fn drain(&self, max: usize, mut f: impl FnMut(Publication)) -> usize {
        self.notified.store(false, Ordering::SeqCst);
        let mut n = 0;
        while n < max {
            match self.rx.try_recv() {
                Ok(p) => {
                    f(p);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        n
    }

    /// Publications waiting.
    pub(crate) fn len(&self) -> usize {
        self.rx.len()
    }

    /// Publications this reactor missed because its inbox was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Publishes to every reactor. Cheap to clone; usable from any thread.
#[derive(Debug, Clone)]
pub struct Fanout {
    inboxes: Arc<[InboxTx]>,
    sequencer: Arc<Sequencer>,
    /// The cluster bridge and the node's subscriber counts, when the node is in a cluster.
    interest: Option<Arc<Interest>>,
}

impl Fanout {
    #[cfg(test)]
    pub(crate) fn new(inboxes: Vec<InboxTx>) -> Self {
        Self::with_relay(inboxes, None)
    }

    /// A fan-out whose local publications and topic interest go to `relay` (a cluster).
    pub(crate) fn with_relay(inboxes: Vec<InboxTx>, relay: Option<Arc<dyn Relay>>) -> Self {
        Self {
            inboxes: inboxes.into(),
            sequencer: Arc::new(Sequencer::new(relay.is_some())),
            interest: relay.map(|r| Arc::new(Interest::new(r))),
        }
    }

    /// The node's numbering (its counters, by topic).
    pub(crate) fn sequencer(&self) -> &Arc<Sequencer> {
        &self.sequencer
    }

    /// The node's subscriber counts, kept when a relay is set.
    pub(crate) fn interest(&self) -> Option<&Arc<Interest>> {
        self.interest.as_ref()
    }

    /// Numbers `payload` as the next message of `topic`, frames it once as a message of
    /// `opcode` (text or binary; text should be UTF-8) plainly and once in its envelope,
    /// and hands both to every reactor. Never blocks; returns the sequence number.
    ///
    /// In a cluster the publication also goes to the broker, which numbers it for every
    /// node: plain subscribers here get it at once, `ringcast.v1` subscribers when it
    /// comes back numbered, and the answer's `seq` is 0 (not known yet). When the broker
    /// cannot take it, it is numbered and delivered here at once in both forms.
    ///
    /// A topic name over [`MAX_TOPIC_LEN`] bytes is refused ([`Published::refused`]).
    pub fn publish(&self, topic: &TopicName, opcode: OpCode, payload: &[u8]) -> Published {
        if !topic.fits_envelope() {
            return Published::refusal(topic);
        }
        if let Some(i) = &self.interest {
            if i.relay().publish(topic, opcode, payload) {
                let p = Publication {
                    topic: topic.clone(),
                    seq: 0,
                    frame: encode::frame(opcode, payload),
                    envelope: Bytes::new(),
                };
                return self.hand_out(&p);
            }
        }
        self.publish_local(topic, opcode, payload)
    }

    /// Publishes on this node only, numbered by this node (what [`publish`](Self::publish)
    /// does outside a cluster).
    pub fn publish_local(&self, topic: &TopicName, opcode: OpCode, payload: &[u8]) -> Published {
        self.publish_at(topic, opcode, payload, 0)
    }

    /// Publishes on this node a message numbered elsewhere (by a cluster's broker): its
    /// number is `seq`, or the next of this node if this node has already gone past `seq`
    /// (it numbered publications of its own while the broker was unreachable); `seq` 0:
    /// the next of this node. Returns the number given. Numbers skipped reach
    /// `ringcast.v1` subscribers as a `gap`.
    pub fn publish_at(
        &self,
        topic: &TopicName,
        opcode: OpCode,
        payload: &[u8],
        seq: u64,
    ) -> Published {
        self.number(topic, opcode, payload, seq, true)
    }

    /// As [`publish_at`](Self::publish_at), for `ringcast.v1` subscribers only: a local
    /// publication of a cluster node, which its plain subscribers already got from
    /// [`publish`](Self::publish).
    pub fn publish_envelope_at(
        &self,
        topic: &TopicName,
        opcode: OpCode,
        payload: &[u8],
        seq: u64,
    ) -> Published {
        self.number(topic, opcode, payload, seq, false)
    }

    /// Numbers a message (`seq`, or this node's next) and hands it out in its envelope,
    /// and plainly if `plain`.
    fn number(
        &self,
        topic: &TopicName,
        opcode: OpCode,
        payload: &[u8],
        seq: u64,
        plain: bool,
    ) -> Published {
        if !topic.fits_envelope() {
            return Published::refusal(topic);
        }
        let frame = if plain {
            encode::frame(opcode, payload)
        } else {
            Bytes::new()
        };
        let json = opcode == OpCode::Text && envelope::is_json(payload);
        let counter = self.sequencer.counter(topic);
        counter.next_at(seq, |seq| {
            let p = Publication {
                topic: topic.clone(),
                seq,
                frame,
                envelope: envelope::frame(topic.as_str(), seq, opcode, payload, json),
            };
            self.hand_out(&p)
        })
    }

    /// Tells every reactor that the numbers of `topic` up to `seq` were given out before
    /// this node followed it (by the cluster): a log begun now starts after `seq`, and no
    /// `gap` is announced for them. Nothing happens if this node is at or past `seq`.
    pub fn advance(&self, topic: &TopicName, seq: u64) {
        self.sequencer.counter(topic).advance(seq, || {
            let p = Publication {
                topic: topic.clone(),
                seq,
                frame: Bytes::new(),
                envelope: Bytes::new(),
            };
            let _ = self.hand_out(&p);
        });
    }

    /// Whether this node may not know `topic`'s latest number: it is in a cluster and has
    /// no subscriber to the topic (so may not follow it on the broker).
    pub fn may_lag(&self, topic: &str) -> bool {
        self.interest.as_ref().is_some_and(|i| !i.has(topic))
    }

    /// The last sequence number of `topic` on this node (0: never published to). Every
    /// publication up to it is in every reactor's inbox (or counted as dropped there).
    pub fn last_seq(&self, topic: &str) -> u64 {
        self.sequencer.last(topic)
    }

    /// Whether some reactor's inbox is over a quarter full. Publishers that can wait
    /// (WebSocket publishers: the reactor stops reading them) check this before taking
    /// more input, so that a reactor that falls behind slows them down instead of
    /// dropping what they send.
    pub fn is_congested(&self) -> bool {
        self.inboxes
            .iter()
            .any(|i| i.tx.len() > i.tx.capacity().unwrap_or(usize::MAX) / 4)
    }

    /// Hands a publication to every reactor (under its topic's lock). Never blocks.
    fn hand_out(&self, p: &Publication) -> Published {
        let mut dropped_reactors = 0;
        for inbox in self.inboxes.iter() {
            match inbox.tx.try_send(p.clone()) {
                Ok(()) => {
                    if !inbox.notified.swap(true, Ordering::SeqCst)
                        && OWN_INBOX.with(Cell::get) != Arc::as_ptr(&inbox.notified) as usize
                    {
                        let _ = inbox.waker.wake();
                    }
                }
                Err(TrySendError::Full(_)) => {
                    inbox.dropped.fetch_add(1, Ordering::Relaxed);
                    dropped_reactors += 1;
                }
                // The reactor has exited (shutdown): nobody left to deliver to.
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
        Published {
            seq: p.seq,
            dropped_reactors,
            refused: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts wake-ups.
    #[derive(Debug, Default)]
    struct Wakes(AtomicU64);

    impl Wake for Wakes {
        fn wake(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn setup(cap: usize, reactors: usize) -> (Fanout, Vec<InboxRx>, Arc<Wakes>) {
        let wakes = Arc::new(Wakes::default());
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..reactors)
            .map(|_| inbox(cap, Arc::clone(&wakes) as Arc<dyn Wake>))
            .unzip();
        (Fanout::new(txs), rxs, wakes)
    }

    #[test]
    fn every_reactor_gets_the_same_frame_in_order() {
        let (f, rxs, _wakes) = setup(16, 3);
        let t = TopicName::new("t");
        for i in 0..10u8 {
            assert!(f.publish(&t, OpCode::Binary, &[i]).is_complete());
        }
        let mut firsts = Vec::new();
        for rx in &rxs {
            let mut seen = Vec::new();
            rx.drain(usize::MAX, |p| seen.push(p.frame));
            assert_eq!(seen.len(), 10);
            for (i, fr) in seen.iter().enumerate() {
                assert_eq!(fr[2], i as u8);
            }
            firsts.push(seen[0].as_ptr());
        }
        // One encoding shared by every reactor.
        assert!(firsts.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn full_inbox_drops_and_counts_without_blocking() {
        let (f, rxs, _wakes) = setup(4, 2);
        let t = TopicName::new("t");
        for _ in 0..4 {
            assert!(f.publish(&t, OpCode::Text, b"x").is_complete());
        }
        // Reactor 0 drains, reactor 1 does not: only reactor 1 misses the next one.
        assert_eq!(rxs[0].drain(usize::MAX, drop), 4);
        let r = f.publish(&t, OpCode::Text, b"y");
        assert_eq!(r.dropped_reactors, 1);
        assert_eq!(rxs[1].dropped(), 1);
        assert_eq!(rxs[0].dropped(), 0);
        assert_eq!(rxs[0].len(), 1);
    }

    #[test]
    fn one_wake_per_batch() {
        let (f, rxs, wakes) = setup(1024, 1);
        let t = TopicName::new("t");
        let n = if cfg!(miri) { 10 } else { 100 };
        for _ in 0..n {
            let _ = f.publish(&t, OpCode::Text, b"x");
        }
        // The flag stays set until the reactor drains: publishers did not wake it again.
        assert!(rxs[0].notified.load(Ordering::SeqCst));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(rxs[0].drain(usize::MAX, drop), n);
        assert!(!rxs[0].notified.load(Ordering::SeqCst));
        let _ = f.publish(&t, OpCode::Text, b"x");
        assert!(rxs[0].notified.load(Ordering::SeqCst));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_reactor_never_wakes_itself() {
        let (f, rxs, wakes) = setup(16, 2);
        rxs[0].claim_thread();
        let _ = f.publish(&TopicName::new("t"), OpCode::Text, b"x");
        // Reactor 1 is woken; reactor 0 (this thread) is not, but sees the message.
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(rxs[0].len(), 1);
        OWN_INBOX.with(|o| o.set(0));
    }
}
