//! Topics and their subscriber sets, one registry per reactor.
//!
//! A reactor's [`Topics`] lists, for each topic, the keys of *its own* connections that
//! subscribe to it. Nothing here is shared between threads, so the per-message path —
//! look up the topic, walk its subscribers — takes no lock.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use indexmap::IndexSet;

/// The topic of plain `/sub` and `/pub`.
pub const DEFAULT_TOPIC: &str = "default";

/// A topic name: cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

impl TopicName {
    /// A topic name, unchecked (see [`TopicRules::check`] for names from clients).
    pub fn new(name: &str) -> Self {
        Self(Arc::from(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Limits on the topics clients name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRules {
    /// Longest topic name, in bytes.
    pub max_name_len: usize,
    /// Most topics one connection may subscribe to.
    pub max_per_connection: usize,
}

impl Default for TopicRules {
    fn default() -> Self {
        Self {
            max_name_len: 64,
            max_per_connection: 64,
        }
    }
}

/// Why a topic name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// An empty name.
    #[error("empty topic name")]
    Empty,
    /// A name over [`TopicRules::max_name_len`].
    #[error("topic name over {0} bytes")]
    TooLong(usize),
    /// A character outside `A-Z a-z 0-9 - _ . : @`.
    #[error("topic name has a character outside A-Z a-z 0-9 - _ . : @")]
    BadChar,
    /// More topics than [`TopicRules::max_per_connection`].
    #[error("more than {0} topics on one connection")]
    TooMany(usize),
}

impl TopicRules {
    /// Checks a name a client sent.
    ///
    /// # Errors
    /// The [`TopicError`] naming what is wrong.
    pub fn check(&self, name: &str) -> Result<(), TopicError> {
        if name.is_empty() {
            return Err(TopicError::Empty);
        }
        if name.len() > self.max_name_len {
            return Err(TopicError::TooLong(self.max_name_len));
        }
        let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@');
        if !name.bytes().all(ok) {
            return Err(TopicError::BadChar);
        }
        Ok(())
    }
}

/// One topic in a reactor: its subscribers and the tag its frames carry in out-queues.
#[derive(Debug)]
pub(crate) struct TopicEntry {
    /// Reactor-local id, never 0 ([`UNTAGGED`](super::outq::UNTAGGED)).
    pub(crate) id: u32,
    /// Keys of the subscribed connections.
    pub(crate) subscribers: IndexSet<usize>,
}

/// A reactor's topics: name → the keys of its subscribed connections.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    map: HashMap<TopicName, TopicEntry>,
    next_id: u32,
    subscriptions: usize,
}

impl Topics {
    /// Adds `conn` to `topic`; returns whether it was new.
    pub(crate) fn subscribe(&mut self, topic: &TopicName, conn: usize) -> bool {
        let next = &mut self.next_id;
        let entry = self.map.entry(topic.clone()).or_insert_with(|| {
            *next = next.checked_add(1).unwrap_or(1);
            TopicEntry {
                id: *next,
                subscribers: IndexSet::new(),
            }
        });
        let new = entry.subscribers.insert(conn);
        self.subscriptions += usize::from(new);
        new
    }

    /// Removes `conn` from `topic`; returns whether it was there. Empty topics are forgotten.
    pub(crate) fn unsubscribe(&mut self, topic: &str, conn: usize) -> bool {
        let Some(entry) = self.map.get_mut(topic) else {
            return false;
        };
        let removed = entry.subscribers.swap_remove(&conn);
        self.subscriptions -= usize::from(removed);
        if entry.subscribers.is_empty() {
            self.map.remove(topic);
        }
        removed
    }

    /// The topic's entry, if it has subscribers here.
    pub(crate) fn get(&self, topic: &str) -> Option<&TopicEntry> {
        self.map.get(topic)
    }

    /// Subscriptions (connection × topic pairs) in this reactor.
    pub(crate) fn subscriptions(&self) -> usize {
        self.subscriptions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let r = TopicRules::default();
        assert_eq!(r.check("BTC-USD"), Ok(()));
        assert_eq!(r.check("a.b:c@d_e"), Ok(()));
        assert_eq!(r.check(""), Err(TopicError::Empty));
        assert_eq!(r.check("sp ace"), Err(TopicError::BadChar));
        assert_eq!(r.check("κ"), Err(TopicError::BadChar));
        assert_eq!(r.check(&"x".repeat(65)), Err(TopicError::TooLong(64)));
    }

    #[test]
    fn subscribe_unsubscribe() {
        let mut t = Topics::default();
        let a = TopicName::new("a");
        assert!(t.subscribe(&a, 1));
        assert!(!t.subscribe(&a, 1));
        assert!(t.subscribe(&a, 2));
        assert_eq!(t.get("a").unwrap().subscribers.len(), 2);
        assert_ne!(t.get("a").unwrap().id, 0);
        assert_eq!(t.subscriptions(), 2);
        assert!(t.unsubscribe("a", 1));
        assert!(!t.unsubscribe("a", 1));
        assert!(t.unsubscribe("a", 2));
        assert!(t.get("a").is_none());
        assert_eq!(t.subscriptions(), 0);
    }
}
