//! Per-topic sequence numbers for one node: 1, 2, 3… for every publication to a topic,
//! whichever thread publishes it.
//!
//! A number is taken and the publication handed to every reactor's inbox under the topic's
//! own lock, so each inbox receives a topic's publications in sequence order: a reactor's
//! log of a topic is always in order, and two reactors agree on every message's number.
//! The lock is per topic and held for a few `try_send`s; publishers to different topics
//! never wait for each other. The map from names to counters takes a write lock only
//! when a topic is published to for the first time, and for a sweep.
//!
//! A counter is forgotten once no reactor knows its topic (each topic entry of a reactor
//! holds it: no subscribers and no history anywhere) and nothing was numbered for a while
//! ([`Sequencer::sweep`]); the topic's next publication is then numbered 1 again, as after
//! a restart. Publishing to ever new names so costs memory for that while, not forever.
//!
//! Each counter has an [`Epoch`]: which numbering its numbers belong to. A counter made
//! anew (the process restarted, or the topic was forgotten) has a new one, so a client
//! that resumes with a `since` of an earlier numbering is told so (a `reset`) instead of
//! being given other messages under the numbers it asked for. In a cluster the numbers
//! are the broker's and outlive a node: a topic's epoch is then the same on every node and
//! across restarts (derived from its name).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::topic::TopicName;

/// Which numbering of a topic its sequence numbers belong to: a new one each time the
/// topic's counter is made anew on a node (see the module docs). Written as 16 lowercase
/// hex digits (`{"op":"epoch",…}`, `?epoch=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(u64);

impl Epoch {
    /// The epoch written as `s` (16 hex digits), if it is one.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Self)
    }

    /// Its value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A bijective mix of 64 bits (splitmix64's finaliser): consecutive inputs give unrelated
/// outputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One topic's counter: the last sequence number given out.
#[derive(Debug)]
pub(crate) struct Counter {
    last: Mutex<u64>,
    /// Sweeps since this counter was last used or held (see [`Sequencer::sweep`]).
    idle: AtomicU32,
    epoch: Epoch,
}

impl Counter {
    fn new(epoch: Epoch) -> Self {
        Self {
            last: Mutex::new(0),
            idle: AtomicU32::new(0),
            epoch,
        }
    }

    /// The numbering this counter gives out.
    pub(crate) fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Takes the next number and runs `f` with it while no other publisher of this topic
    /// can take one.
    #[cfg(test)]
    pub(crate) fn next<R>(&self, f: impl FnOnce(u64) -> R) -> R {
        let mut last = self.lock();
        *last += 1;
        f(*last)
    }

    /// Takes the next number, but at least `min` (numbers in between are skipped), and
    /// runs `f` with it: a number made elsewhere (by the cluster's broker), which is kept
    /// unless this node has already gone past it.
    pub(crate) fn next_at<R>(&self, min: u64, f: impl FnOnce(u64) -> R) -> R {
        let mut last = self.lock();
        *last = (*last + 1).max(min);
        f(*last)
    }

    /// Moves the counter to `seq` if it is behind, running `f` while no other publisher
    /// can take a number; returns whether it moved.
    pub(crate) fn advance(&self, seq: u64, f: impl FnOnce()) -> bool {
        let mut last = self.lock();
        if seq <= *last {
            return false;
        }
        *last = seq;
        f();
        true
    }

    /// The last number given out (0: none yet). Waits for a publication in progress, so
    /// every publication numbered up to the answer is already in every inbox.
    pub(crate) fn last(&self) -> u64 {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last number, locked; the counter counts as used.
    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.idle.store(0, Ordering::Relaxed);
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The node's counters, by topic.
#[derive(Debug)]
pub(crate) struct Sequencer {
    topics: RwLock<HashMap<TopicName, Arc<Counter>>>,
    /// Epochs of this node's own numbering: random per process, then one per counter made.
    seed: u64,
    made: AtomicU64,
    /// Numbers come from a cluster's broker: epochs follow from topic names.
    shared: bool,
}

impl Default for Sequencer {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Sequencer {
    /// A node's numbering; `shared` when its numbers are a cluster broker's.
    pub(crate) fn new(shared: bool) -> Self {
        // std's hasher keys are random per process (from the OS).
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            topics: RwLock::default(),
            seed,
            made: AtomicU64::new(0),
            shared,
        }
    }

    /// The counter of `topic`, created at 0 if new.
    pub(crate) fn counter(&self, topic: &TopicName) -> Arc<Counter> {
        let read = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = read.get(topic.as_str()) {
            return Arc::clone(c);
        }
        drop(read);
        let mut write = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let c = write
            .entry(topic.clone())
            .or_insert_with(|| Arc::new(Counter::new(self.epoch_for(topic.as_str()))));
        Arc::clone(c)
    }

    /// The epoch of a counter made now for `topic`.
    fn epoch_for(&self, topic: &str) -> Epoch {
        if self.shared {
            // FNV-1a: the same on every node and every run.
            let h = topic.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            return Epoch(mix(h));
        }
        Epoch(mix(self
            .seed
            .wrapping_add(self.made.fetch_add(1, Ordering::Relaxed))))
    }

    /// The epoch of `topic`'s numbering, if it has a counter.
    pub(crate) fn epoch(&self, topic: &str) -> Option<Epoch> {
        let read = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        read.get(topic).map(|c| c.epoch)
    }

    /// Forgets the counters that no one holds (no reactor knows the topic, no publication
    /// is being numbered) and that were neither used nor held for more than `sweeps`
    /// sweeps, or never gave out a number (a topic subscribed to and left: a counter at 0
    /// is no different from none); counts a sweep for the others. Called at a steady pace
    /// (every `History::idle_ttl / sweeps`), by one reactor.
    ///
    /// The counting is done under the read lock, beside publishers; the write lock, which
    /// stops them, is taken only when there is something to forget, for just that.
    pub(crate) fn sweep(&self, sweeps: u32) {
        let gone = |c: &Arc<Counter>| c.last() == 0 || c.idle.load(Ordering::Relaxed) > sweeps;
        let mut doomed = Vec::new();
        {
            let map = self.topics.read().unwrap_or_else(PoisonError::into_inner);
            for (t, c) in map.iter() {
                if Arc::strong_count(c) > 1 {
                    c.idle.store(0, Ordering::Relaxed);
                    continue;
                }
                c.idle.fetch_add(1, Ordering::Relaxed);
                if gone(c) {
                    doomed.push(t.clone());
                }
            }
        }
        if doomed.is_empty() {
            return;
        }
        let mut map = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        for t in doomed {
            // Checked again: taken or used since, it stays (no one can take it now).
            if map
                .get(t.as_str())
                .is_some_and(|c| Arc::strong_count(c) == 1 && gone(c))
            {
                map.remove(t.as_str());
            }
        }
    }

    /// Lets go of `topic`'s `counter` (a reactor forgot the topic): one that never gave
    /// out a number and that no one else holds goes at once, so that subscribing to and
    /// leaving ever new names costs nothing once left; the others wait for the sweep.
    pub(crate) fn release(&self, topic: &TopicName, counter: Arc<Counter>) {
        if counter.last() != 0 {
            return;
        }
        drop(counter);
        let mut map = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        if map
            .get(topic.as_str())
            .is_some_and(|c| Arc::strong_count(c) == 1 && c.last() == 0)
        {
            map.remove(topic.as_str());
        }
    }

    /// Topics with a counter.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The last sequence number of `topic` (0 if never published to). See
    /// [`Counter::last`].
    pub(crate) fn last(&self, topic: &str) -> u64 {
        let read = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        let c = read.get(topic).map(Arc::clone);
        drop(read);
        c.map_or(0, |c| c.last())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_written_as_16_hex_digits() {
        let e = Epoch(0x5f0c_93a1_d2e4_7b68);
        assert_eq!(e.to_string(), "5f0c93a1d2e47b68");
        assert_eq!(Epoch::parse("5f0c93a1d2e47b68"), Some(e));
        assert_eq!(Epoch::parse("5F0C93A1D2E47B68"), Some(e));
        assert_eq!(Epoch::parse("0000000000000000"), Some(Epoch(0)));
        for bad in [
            "",
            "5f0c93a1d2e47b6",
            "5f0c93a1d2e47b680",
            "5f0c93a1d2e47b6g",
            "+f0c93a1d2e47b68",
        ] {
            assert_eq!(Epoch::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_counter_made_anew_has_a_new_epoch() {
        let s = Sequencer::default();
        let a = TopicName::new("a");
        let first = s.counter(&a).epoch();
        assert_eq!(s.epoch("a"), Some(first));
        assert_eq!(s.counter(&a).epoch(), first, "the same counter");
        assert_ne!(s.counter(&TopicName::new("b")).epoch(), first);
        // Forgotten (never numbered, no one holds it), then made again.
        s.sweep(0);
        assert_eq!(s.epoch("a"), None);
        assert_ne!(s.counter(&a).epoch(), first);
        // Another process (another seed) numbers anew too.
        assert_ne!(Sequencer::default().counter(&a).epoch(), first);
    }

    #[test]
    fn a_cluster_topic_has_one_epoch_everywhere() {
        let (x, y) = (Sequencer::new(true), Sequencer::new(true));
        let a = TopicName::new("a");
        let e = x.counter(&a).epoch();
        assert_eq!(y.counter(&a).epoch(), e, "another node, another run");
        x.sweep(0);
        assert_eq!(x.counter(&a).epoch(), e, "made again");
        assert_ne!(x.counter(&TopicName::new("b")).epoch(), e);
    }

    #[test]
    fn numbers_per_topic_from_one() {
        let s = Sequencer::default();
        let (a, b) = (TopicName::new("a"), TopicName::new("b"));
        assert_eq!(s.last("a"), 0);
        assert_eq!(s.counter(&a).next(|n| n), 1);
        assert_eq!(s.counter(&a).next(|n| n), 2);
        assert_eq!(s.counter(&b).next(|n| n), 1);
        assert_eq!((s.last("a"), s.last("b"), s.last("c")), (2, 1, 0));
    }

    #[test]
    fn numbers_from_elsewhere_are_kept_unless_behind() {
        let s = Sequencer::default();
        let a = TopicName::new("a");
        assert_eq!(s.counter(&a).next_at(5, |n| n), 5);
        assert_eq!(s.counter(&a).next_at(3, |n| n), 6);
        assert_eq!(s.counter(&a).next(|n| n), 7);
        assert!(!s.counter(&a).advance(7, || ()));
        assert!(s.counter(&a).advance(10, || ()));
        assert_eq!(s.last("a"), 10);
    }

    #[test]
    fn counters_no_one_holds_or_uses_are_forgotten_after_the_sweeps_asked() {
        let s = Sequencer::default();
        let (a, b, c) = (
            TopicName::new("a"),
            TopicName::new("b"),
            TopicName::new("c"),
        );
        assert_eq!(s.counter(&a).next(|n| n), 1);
        assert_eq!(s.counter(&b).next(|n| n), 1);
        let held = s.counter(&c); // as a reactor's topic entry holds it
        held.next(|_| ());
        drop(s.counter(&TopicName::new("never numbered")));
        s.sweep(2);
        assert_eq!(
            s.len(),
            3,
            "a counter that never numbered is forgotten at once"
        );
        s.sweep(2);
        // `b` used between the sweeps: its count starts again.
        assert_eq!(s.counter(&b).next(|n| n), 2);
        assert_eq!(s.len(), 3);
        s.sweep(2);
        assert_eq!(
            s.len(),
            2,
            "`a`: unused and unheld for more than two sweeps"
        );
        assert_eq!((s.last("a"), s.last("b"), s.last("c")), (0, 2, 1));
        for _ in 0..3 {
            s.sweep(2);
        }
        assert_eq!((s.last("b"), s.last("c")), (0, 1), "a held counter stays");
        assert_eq!(
            s.counter(&a).next(|n| n),
            1,
            "a forgotten topic numbers from 1"
        );
        drop(held);
        for _ in 0..3 {
            s.sweep(2);
        }
        assert_eq!(s.last("c"), 0);
    }

    #[test]
    fn concurrent_publishers_get_distinct_consecutive_numbers() {
        let s = Arc::new(Sequencer::default());
        let t = TopicName::new("t");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let n = if cfg!(miri) { 50 } else { 1000 };
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let (s, t, seen) = (Arc::clone(&s), t.clone(), Arc::clone(&seen));
                scope.spawn(move || {
                    for _ in 0..n {
                        // The order of pushes matches the numbers (held under the lock).
                        s.counter(&t).next(|n| seen.lock().unwrap().push(n));
                    }
                });
            }
        });
        let seen = seen.lock().unwrap();
        assert_eq!(*seen, (1..=4 * n).collect::<Vec<u64>>());
    }
}
