//! Topics and their subscriber sets, one registry per reactor.
//!
//! A reactor's `Topics` holds, for each topic with subscribers among *its own*
//! connections, the topic's log (`fanout::log`) and the keys of those connections.
//! Nothing here is shared between threads, so the per-message path — look up the topic,
//! append to its log, mark its subscribers — takes no lock.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use slab::Slab;

use super::chunk::ChunkPool;
use super::log::TopicLog;

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

/// One topic in a reactor: its log and its subscribers.
#[derive(Debug)]
pub(crate) struct TopicEntry {
    /// The name.
    pub(crate) name: TopicName,
    /// Keys of the subscribed connections, in no order; each subscription knows its
    /// position here (4 bytes per subscriber, removal in O(1)).
    pub(crate) subscribers: Vec<u32>,
    /// The framed messages, once for every subscriber here.
    pub(crate) log: TopicLog,
    /// In the reactor's list of topics published to this turn.
    pub(crate) in_turn: bool,
    /// The log's head before this turn's publications.
    pub(crate) turn_start: u64,
    /// In the reactor's list of topics published to since the last tick.
    pub(crate) touched: bool,
}

/// A reactor's topics: name → id → log and subscribers. Ids are small integers, reused
/// after a topic loses its last subscriber here.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    ids: HashMap<TopicName, u32>,
    entries: Slab<TopicEntry>,
    pool: ChunkPool,
    subscriptions: usize,
    /// Subscriptions moved to another position by a removal: (topic, connection, new
    /// position), for the reactor to update ([`take_moves`](Self::take_moves)).
    moves: Vec<(u32, u32, u32)>,
}

impl Topics {
    /// Adds `conn` (not subscribed yet) to `topic`; returns the topic's id, the
    /// subscription's position among the topic's subscribers, and the log's head (where
    /// the new subscription starts).
    pub(crate) fn subscribe(&mut self, topic: &TopicName, conn: usize) -> (u32, u32, u64) {
        let id = match self.ids.get(topic) {
            Some(&id) => id,
            None => {
                let id = self.entries.insert(TopicEntry {
                    name: topic.clone(),
                    subscribers: Vec::new(),
                    log: TopicLog::new(1),
                    in_turn: false,
                    turn_start: 0,
                    touched: false,
                }) as u32;
                self.ids.insert(topic.clone(), id);
                id
            }
        };
        let entry = &mut self.entries[id as usize];
        let pos = entry.subscribers.len() as u32;
        entry.subscribers.push(conn as u32);
        self.subscriptions += 1;
        (id, pos, entry.log.head())
    }

    /// Removes `conn` from topic `id`, where it was at position `pos` (looked for if
    /// it moved since); returns whether it was there. The subscriber that takes its
    /// place is recorded in the moves. A topic without subscribers is forgotten (its log
    /// goes back to the pool, as far as no send holds it).
    pub(crate) fn unsubscribe(&mut self, id: u32, conn: usize, pos: u32) -> bool {
        let Some(entry) = self.entries.get_mut(id as usize) else {
            return false;
        };
        let conn = conn as u32;
        let at = match entry.subscribers.get(pos as usize) {
            Some(&c) if c == conn => Some(pos as usize),
            _ => entry.subscribers.iter().position(|&c| c == conn),
        };
        let Some(at) = at else {
            return false;
        };
        entry.subscribers.swap_remove(at);
        if let Some(&moved) = entry.subscribers.get(at) {
            self.moves.push((id, moved, at as u32));
        }
        self.subscriptions -= 1;
        if entry.subscribers.is_empty() {
            let entry = self.entries.remove(id as usize);
            self.ids.remove(&entry.name);
        }
        true
    }

    /// Takes the recorded moves (topic, connection, new position).
    pub(crate) fn take_moves(&mut self, into: &mut Vec<(u32, u32, u32)>) {
        into.append(&mut self.moves);
    }

    /// The id of `topic`, if it has subscribers here.
    pub(crate) fn id(&self, topic: &str) -> Option<u32> {
        self.ids.get(topic).copied()
    }

    /// Topic `id`.
    ///
    /// # Panics
    /// If there is no such topic (ids come from [`subscribe`](Self::subscribe)).
    pub(crate) fn entry(&self, id: u32) -> &TopicEntry {
        &self.entries[id as usize]
    }

    /// Topic `id`, mutably.
    pub(crate) fn entry_mut(&mut self, id: u32) -> &mut TopicEntry {
        &mut self.entries[id as usize]
    }

    /// Topic `id`, if it exists.
    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut TopicEntry> {
        self.entries.get_mut(id as usize)
    }

    /// The log of topic `id`.
    pub(crate) fn log(&self, id: u32) -> &TopicLog {
        &self.entries[id as usize].log
    }

    /// Appends a frame to topic `id`'s log; returns its sequence number.
    pub(crate) fn append(&mut self, id: u32, frame: &Bytes) -> u64 {
        let Self { entries, pool, .. } = self;
        entries[id as usize].log.append(frame, pool)
    }

    /// The chunk pool of this reactor's logs.
    pub(crate) fn pool(&self) -> &ChunkPool {
        &self.pool
    }

    /// Topics with subscribers here.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
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
        let (id, pos, head) = t.subscribe(&a, 1);
        assert_eq!((pos, head), (0, 0));
        t.append(id, &Bytes::from_static(b"\x82\x01x"));
        assert_eq!(
            t.subscribe(&a, 2),
            (id, 1, 3),
            "a late subscriber starts at the head"
        );
        assert_eq!(t.subscribe(&a, 3), (id, 2, 3));
        assert_eq!(t.entry(id).subscribers, [1, 2, 3]);
        assert_eq!(t.id("a"), Some(id));
        assert_eq!(t.subscriptions(), 3);
        // Removing the first moves the last into its place, and says so.
        assert!(t.unsubscribe(id, 1, 0));
        assert_eq!(t.entry(id).subscribers, [3, 2]);
        let mut moves = Vec::new();
        t.take_moves(&mut moves);
        assert_eq!(moves, [(id, 3, 0)]);
        assert!(!t.unsubscribe(id, 1, 0));
        // A stale position is looked up.
        assert!(t.unsubscribe(id, 2, 0));
        assert!(t.unsubscribe(id, 3, 7));
        assert_eq!(t.id("a"), None);
        assert_eq!(t.len(), 0);
        assert_eq!(t.subscriptions(), 0);
        assert_eq!(t.pool().live(), 0, "the log's chunk went back to the pool");
    }
}
