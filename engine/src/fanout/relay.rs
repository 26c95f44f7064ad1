//! The hook through which a node joins a cluster, without the fan-out knowing how.
//!
//! A [`Relay`] (the server's cluster bridge implements it) is told two things by the
//! fan-out: which topics this node has subscribers to (the first one arriving, the last
//! one leaving, summed over every reactor), and every local publication, which it may take
//! to the broker instead of having it numbered here: plain subscribers here get it at once
//! all the same, and its envelope comes back from the broker numbered, through
//! [`Fanout::publish_envelope_at`](super::Fanout::publish_envelope_at) (the publications of
//! other nodes through [`Fanout::publish_at`](super::Fanout::publish_at)).
//!
//! The count is one lock per subscribe and unsubscribe, taken only when a relay is set:
//! never on the per-message path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::topic::TopicName;
use crate::protocol::frame::OpCode;

/// What the fan-out tells a cluster bridge. Called from reactor threads and publishers:
/// an implementation never blocks (it queues, boundedly).
pub trait Relay: Send + Sync + std::fmt::Debug {
    /// This node now has subscribers to `topic` (`on`), or has none any more.
    fn interest(&self, topic: &TopicName, on: bool);

    /// A local publication. `true`: the relay took it (to the broker, which numbers it and
    /// sends it back to every node with subscribers, this one included, for its envelope);
    /// `false`: number it here and deliver it at once (the broker is unreachable or its
    /// queue is full).
    fn publish(&self, topic: &TopicName, opcode: OpCode, payload: &[u8]) -> bool;
}

/// Subscribers per topic over the whole node, with the relay told of every first and last.
#[derive(Debug)]
pub(crate) struct Interest {
    relay: Arc<dyn Relay>,
    counts: Mutex<HashMap<TopicName, usize>>,
}

impl Interest {
    pub(crate) fn new(relay: Arc<dyn Relay>) -> Self {
        Self {
            relay,
            counts: Mutex::default(),
        }
    }

    /// The relay told.
    pub(crate) fn relay(&self) -> &Arc<dyn Relay> {
        &self.relay
    }

    /// Whether this node has subscribers to `topic`.
    pub(crate) fn has(&self, topic: &str) -> bool {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.contains_key(topic)
    }

    /// One more subscriber to `topic` on this node.
    pub(crate) fn add(&self, topic: &TopicName) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(topic.clone()).or_default();
        *n += 1;
        if *n == 1 {
            self.relay.interest(topic, true);
        }
    }

    /// One subscriber fewer to `topic` on this node.
    pub(crate) fn remove(&self, topic: &TopicName) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(n) = counts.get_mut(topic.as_str()) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            counts.remove(topic.as_str());
            self.relay.interest(topic, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Record(Mutex<Vec<(String, bool)>>);

    impl Relay for Record {
        fn interest(&self, topic: &TopicName, on: bool) {
            self.0.lock().unwrap().push((topic.to_string(), on));
        }
        fn publish(&self, _: &TopicName, _: OpCode, _: &[u8]) -> bool {
            false
        }
    }

    #[test]
    fn told_of_the_first_and_the_last_only() {
        let r = Arc::new(Record::default());
        let i = Interest::new(Arc::clone(&r) as Arc<dyn Relay>);
        let (a, b) = (TopicName::new("a"), TopicName::new("b"));
        i.add(&a);
        i.add(&a);
        i.add(&b);
        i.remove(&a);
        i.remove(&a);
        i.remove(&a); // one too many: ignored
        i.add(&a);
        let got = r.0.lock().unwrap().clone();
        let want = [("a", true), ("b", true), ("a", false), ("a", true)];
        assert_eq!(got, want.map(|(t, on)| (t.to_string(), on)));
    }
}
