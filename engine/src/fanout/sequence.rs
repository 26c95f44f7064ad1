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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::topic::TopicName;

/// One topic's counter: the last sequence number given out.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    last: Mutex<u64>,
    /// Sweeps since this counter was last used or held (see [`Sequencer::sweep`]).
    idle: AtomicU32,
}

impl Counter {
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
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    topics: RwLock<HashMap<TopicName, Arc<Counter>>>,
}

impl Sequencer {
    /// The counter of `topic`, created at 0 if new.
    pub(crate) fn counter(&self, topic: &TopicName) -> Arc<Counter> {
        let read = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = read.get(topic.as_str()) {
            return Arc::clone(c);
        }
        drop(read);
        let mut write = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(write.entry(topic.clone()).or_default())
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
