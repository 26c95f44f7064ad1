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

use slab::Slab;

use super::chunk::ChunkPool;
use super::log::TopicLog;
use super::relay::Interest;
use super::ring::Publication;
use super::sequence::{Counter, Epoch, Sequencer};
use crate::protocol::envelope;

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

    /// Whether a `ringcast.v1` binary envelope can carry it: at most [`MAX_TOPIC_LEN`]
    /// bytes.
    pub fn fits_envelope(&self) -> bool {
        self.0.len() <= MAX_TOPIC_LEN
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

/// Longest topic name the engine carries, in bytes: a `ringcast.v1` binary envelope holds
/// the name's length in one byte. [`TopicRules::max_name_len`] may not exceed it, and a
/// publication to a longer name is refused ([`Published::refused`](super::Published)).
pub const MAX_TOPIC_LEN: usize = 255;

/// Limits on the topics clients name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRules {
    /// Longest topic name, in bytes (at most [`MAX_TOPIC_LEN`]).
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
    /// `since` or `snapshot` on a connection without the `ringcast.v1` subprotocol.
    #[error(
        "since and snapshot need the ringcast.v1 subprotocol (Sec-WebSocket-Protocol: ringcast.v1)"
    )]
    NeedsV1,
    /// A `since` past the topic's latest sequence number.
    #[error("since {since} is past the topic's latest seq {latest}")]
    SinceAhead {
        /// The `since` asked for.
        since: u64,
        /// The topic's latest sequence number on this node.
        latest: u64,
    },
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

/// How a connection receives publications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Form {
    /// The payload as published (no subprotocol).
    #[default]
    Plain,
    /// In `ringcast.v1` envelopes (topic, sequence number), with history and resume.
    V1,
}

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// With the next message published.
    #[default]
    Live,
    /// With the topic's latest message (if any), then live ones (`ringcast.v1` only).
    Snapshot,
    /// With the first message after this sequence number still held, then live ones;
    /// missing ones are announced by a `gap` message (`ringcast.v1` only).
    Since(u64),
    /// As `Since`, if the topic's numbering is still `epoch`; otherwise (the server
    /// restarted, or forgot the topic) a `reset` message says so and the subscription
    /// starts with the oldest message held of the numbering now in use (`ringcast.v1`
    /// only).
    Resume {
        /// The last sequence number the client has.
        since: u64,
        /// The numbering it belongs to (from the `epoch` message of the subscription it
        /// resumes).
        epoch: Epoch,
    },
}

/// How much of each topic's `ringcast.v1` log a reactor keeps for snapshots and resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// Newest messages kept per topic (0: no history; snapshots and resumes then find
    /// nothing held).
    pub messages: usize,
    /// Most bytes of envelopes kept per topic (the first of the two limits binds).
    pub bytes: usize,
    /// A topic without subscribers in a reactor and without publications for this long
    /// is forgotten there, history included.
    pub idle_ttl: std::time::Duration,
    /// Most topics a reactor keeps a history of (topics with subscribers aside): past it,
    /// publications to a topic nobody here subscribes to are not kept, and a topic whose
    /// last subscriber here leaves is forgotten, so publishing to (or subscribing to and
    /// leaving) ever new topic names cannot grow memory without bound. Worst case per
    /// reactor: `topics × bytes`, further held to `memory`. A topic left that holds no
    /// message is forgotten whatever the room: it has nothing to replay.
    pub topics: usize,
    /// Most bytes of history a reactor keeps over all its topics together. While its
    /// topics (with subscribers or kept for their history) would need more at `bytes`
    /// each, each keeps an equal share of it instead: publishing to ever more topics,
    /// or to as many as clients may subscribe to, cannot grow a reactor's history past
    /// it (give or take the chunk each log is filling). What a topic no longer holds is
    /// announced to a resuming client as a `gap`, as for any history limit.
    pub memory: usize,
}

impl Default for History {
    fn default() -> Self {
        Self {
            messages: 1024,
            bytes: 4 << 20,
            idle_ttl: std::time::Duration::from_secs(300),
            topics: 4096,
            memory: 512 << 20,
        }
    }
}

impl History {
    /// Whether topics keep a history.
    pub fn enabled(&self) -> bool {
        self.messages > 0 && self.bytes > 0 && self.memory > 0
    }
}

/// One topic in one form in a reactor: its log and its subscribers.
#[derive(Debug)]
pub(crate) struct TopicEntry {
    /// The name.
    pub(crate) name: TopicName,
    /// Which frames its log holds.
    pub(crate) form: Form,
    /// Keys of the subscribed connections, in no order; each subscription knows its
    /// position here (4 bytes per subscriber, removal in O(1)).
    pub(crate) subscribers: Vec<u32>,
    /// The framed messages, once for every subscriber here.
    pub(crate) log: TopicLog,
    /// The lowest `since` of subscriptions that resumed past this log's last number (a
    /// cluster node that did not follow the topic yet): when the node learns the topic's
    /// numbers, those after it that the log cannot give are announced as a `gap`.
    pending_since: Option<u64>,
    /// In the reactor's list of topics published to this turn.
    pub(crate) in_turn: bool,
    /// The log's head before this turn's publications.
    pub(crate) turn_start: u64,
    /// In the delivery pass under way (its subscribers not all visited yet).
    pub(crate) in_pass: bool,
    /// The lowest cursor a subscription started at since the delivery pass began to visit
    /// this topic's subscribers: one that joined meanwhile may not be visited by it, yet
    /// its cursor bounds the trim that ends the visit.
    pub(crate) joined_low: u64,
    /// In the reactor's list of topics published to since the last tick.
    pub(crate) touched: bool,
    /// Published to since the last tick: the delivery visits that follow trim its log,
    /// the tick does not need to.
    pub(crate) fresh: bool,
    /// Sweeps of idle topics this one was found without subscribers or publications.
    idle_sweeps: u32,
    /// Held without subscribers for its history (counted in `Topics::idle_histories`).
    kept: bool,
    /// The topic's numbering, held while this reactor knows the topic (so that it is not
    /// forgotten: see [`Sequencer::sweep`]).
    counter: Option<Arc<Counter>>,
}

/// No entry (in [`Ids`]).
const NONE: u32 = u32::MAX;

/// The entries of one topic name: plain and `ringcast.v1`.
#[derive(Debug, Clone, Copy)]
struct Ids([u32; 2]);

impl Default for Ids {
    fn default() -> Self {
        Self([NONE; 2])
    }
}

impl Ids {
    fn get(self, form: Form) -> Option<u32> {
        let id = self.0[form as usize];
        (id != NONE).then_some(id)
    }
}

/// A reactor's topics: name → id → log and subscribers. Ids are small integers, reused
/// after a topic is forgotten here.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    ids: HashMap<TopicName, Ids>,
    entries: Slab<TopicEntry>,
    pool: ChunkPool,
    history: History,
    /// Most bytes a resume replays; older messages are announced as a gap, so that a
    /// resume never starts out as a slow consumer.
    max_replay: u64,
    subscriptions: usize,
    /// Subscriptions moved to another position by a removal: (topic, connection, new
    /// position), for the reactor to update ([`take_moves`](Self::take_moves)).
    moves: Vec<(u32, u32, u32)>,
    /// Topics published to this turn (delivered by the reactor).
    pub(crate) turn: Vec<u32>,
    /// Topics published to since the last tick (trimmed then).
    pub(crate) touched: Vec<u32>,
    /// Publications absorbed since the reactor last counted them.
    pub(crate) absorbed: u64,
    /// `ringcast.v1` entries without subscribers here, kept for their history (at most
    /// `history.topics`).
    idle_histories: usize,
    /// `ringcast.v1` entries (with subscribers or kept), among which `history.memory` is
    /// shared.
    v1_entries: usize,
    /// Bytes the `ringcast.v1` logs held at the last sweep.
    history_held: u64,
    /// The node's subscriber counts (in a cluster), told of every subscribe here.
    interest: Option<Arc<Interest>>,
    /// The node's numbering, whose counters the entries hold.
    sequencer: Option<Arc<Sequencer>>,
}

impl Topics {
    /// A registry whose `ringcast.v1` logs keep `history`, and whose resumes replay at
    /// most `max_replay` bytes.
    pub(crate) fn new(history: History, max_replay: u64) -> Self {
        Self {
            history,
            max_replay,
            ..Self::default()
        }
    }

    /// Counts this registry's subscriptions into the node's `interest` (in a cluster).
    pub(crate) fn watch(&mut self, interest: Option<Arc<Interest>>) {
        self.interest = interest;
    }

    /// Has every topic entry hold its counter in the node's `sequencer`, so that a topic
    /// this reactor knows keeps its numbering.
    pub(crate) fn hold_counters(&mut self, sequencer: Arc<Sequencer>) {
        self.sequencer = Some(sequencer);
    }

    /// Most bytes a connection's resumes replay, all its topics together.
    pub(crate) fn max_replay(&self) -> u64 {
        self.max_replay
    }

    /// The history kept.
    pub(crate) fn history(&self) -> &History {
        &self.history
    }

    /// Appends a publication to the logs of its topic (plainly and/or in its envelope,
    /// for the forms with subscribers here; the envelope also when history is kept) and
    /// lists them for delivery.
    pub(crate) fn absorb(&mut self, p: &Publication) {
        let ids = self.ids.get(p.topic.as_str()).copied().unwrap_or_default();
        if p.frame.is_empty() && p.envelope.is_empty() {
            // A mark from `Fanout::advance` (no frame is empty): numbers up to `p.seq`
            // were given out before this node followed the topic.
            // A log that holds older messages announces the skipped ones (a client may
            // resume from there); an empty one just starts after them.
            // A subscription that resumed here before the node knew the topic's numbers
            // is told of those after its `since` likewise.
            if let Some(v1) = ids.get(Form::V1) {
                let Self { entries, pool, .. } = self;
                let entry = &mut entries[v1 as usize];
                let log = &mut entry.log;
                let last = log.last_seq();
                let from = match entry.pending_since.take() {
                    _ if log.head() > log.tail() => last + 1,
                    Some(since) => since + 1,
                    None => p.seq + 1,
                };
                if p.seq > last && from <= p.seq {
                    let gap = envelope::gap(p.topic.as_str(), from, p.seq);
                    log.append_gap(&gap, from, p.seq, pool);
                    self.mark(v1);
                } else {
                    log.skip_to(p.seq);
                }
            }
            return;
        }
        if !p.frame.is_empty() {
            // One publication, whether its envelope comes with it or later (in a cluster).
            self.absorbed += 1;
            if let Some(id) = ids.get(Form::Plain) {
                self.mark(id);
                let Self { entries, pool, .. } = self;
                entries[id as usize].log.append(&p.frame, p.seq, pool);
            }
        }
        if p.envelope.is_empty() {
            return; // not numbered yet: its envelope follows
        }
        let v1 = match ids.get(Form::V1) {
            Some(id) => id,
            None if self.history.enabled() && self.idle_histories < self.history.topics => {
                let id = self.insert(&p.topic, Form::V1, p.seq - 1);
                self.keep(id);
                id
            }
            None => return,
        };
        let Self { entries, pool, .. } = self;
        let entry = &mut entries[v1 as usize];
        let last = entry.log.last_seq();
        entry.pending_since = entry.pending_since.filter(|&since| since >= p.seq);
        if p.seq <= last {
            // Published before this log began (it was made at a subscribe that counted it).
            return;
        }
        if p.seq > last + 1 {
            // This reactor missed messages (its inbox was full): everyone here is told.
            let gap = envelope::gap(p.topic.as_str(), last + 1, p.seq - 1);
            entry.log.append_gap(&gap, last + 1, p.seq - 1, pool);
        }
        entry.log.append(&p.envelope, p.seq, pool);
        entry.idle_sweeps = 0;
        self.mark(v1);
    }

    /// Lists topic `id` as published to this turn and since the last tick.
    fn mark(&mut self, id: u32) {
        let entry = &mut self.entries[id as usize];
        if !entry.in_turn {
            entry.in_turn = true;
            entry.turn_start = entry.log.head();
            self.turn.push(id);
        }
        entry.fresh = true;
        if !entry.touched {
            entry.touched = true;
            self.touched.push(id);
        }
    }

    fn insert(&mut self, topic: &TopicName, form: Form, last_seq: u64) -> u32 {
        let id = self.entries.insert(TopicEntry {
            name: topic.clone(),
            form,
            subscribers: Vec::new(),
            log: TopicLog::after(last_seq),
            pending_since: None,
            in_turn: false,
            turn_start: 0,
            in_pass: false,
            joined_low: u64::MAX,
            touched: false,
            fresh: false,
            idle_sweeps: 0,
            kept: false,
            counter: self.sequencer.as_ref().map(|s| s.counter(topic)),
        }) as u32;
        self.ids.entry(topic.clone()).or_default().0[form as usize] = id;
        self.v1_entries += usize::from(form == Form::V1);
        id
    }

    /// Adds `conn` (not subscribed yet) to `topic` in `form`; returns the topic's id and
    /// the subscription's position among the topic's subscribers. A new log holds nothing
    /// up to `last_seq`.
    pub(crate) fn subscribe(
        &mut self,
        topic: &TopicName,
        form: Form,
        conn: usize,
        last_seq: u64,
    ) -> (u32, u32) {
        let id = match self.id(topic.as_str(), form) {
            Some(id) => id,
            None => self.insert(topic, form, last_seq),
        };
        let entry = &mut self.entries[id as usize];
        if std::mem::take(&mut entry.kept) {
            self.idle_histories -= 1;
        }
        let pos = entry.subscribers.len() as u32;
        entry.subscribers.push(conn as u32);
        entry.idle_sweeps = 0;
        self.subscriptions += 1;
        if let Some(i) = &self.interest {
            i.add(topic);
        }
        (id, pos)
    }

    /// Where a subscription to topic `id` starting at `start` begins, and the messages
    /// after a `since` that are no longer held (announced first). A replay takes at most
    /// `budget` bytes (records included) of the `max_replay` a connection has for all
    /// its topics: what its other topics have pending takes the rest. A `since` past the
    /// log's last number (accepted only from a cluster node that does not follow the
    /// topic yet) starts at the head, and what the node learns was published after it is
    /// announced then (see [`absorb`](Self::absorb)).
    pub(crate) fn start(
        &mut self,
        id: u32,
        start: Start,
        budget: u64,
    ) -> (u64, Option<(u64, u64)>) {
        let budget = budget.min(self.max_replay);
        let (cursor, gap) = self.begin_at(id, start, budget);
        let entry = &mut self.entries[id as usize];
        entry.joined_low = entry.joined_low.min(cursor);
        (cursor, gap)
    }

    /// [`start`](Self::start) without the delivery pass's bookkeeping.
    fn begin_at(&mut self, id: u32, start: Start, budget: u64) -> (u64, Option<(u64, u64)>) {
        let entry = &mut self.entries[id as usize];
        // Whether a resume's epoch is the topic's is the subscriber's to decide (it holds
        // the counter); here it starts after its `since` like any other.
        if let Start::Since(since) | Start::Resume { since, .. } = start {
            if since > entry.log.last_seq() {
                entry.pending_since = Some(entry.pending_since.map_or(since, |p| p.min(since)));
            }
        }
        let log = &entry.log;
        let (cursor, gap) = match start {
            Start::Live => return (log.head(), None),
            Start::Snapshot => return (log.latest_frame().unwrap_or(log.head()), None),
            Start::Since(since) | Start::Resume { since, .. } => {
                let r = log.resume(since);
                (r.cursor, r.gap)
            }
        };
        // Replays stay within the budget: what is older is announced, not sent.
        let floor = log.replay_floor(budget);
        if cursor >= floor {
            return (cursor, gap);
        }
        let skipped = log.seq_range(cursor, floor);
        let gap = match (gap, skipped) {
            (Some((from, _)), Some((_, to))) => Some((from, to)),
            (None, Some(r)) => Some(r),
            (g, None) => g,
        };
        (floor, gap)
    }

    /// Removes `conn` from topic `id`, where it was at position `pos` (looked for if
    /// it moved since); returns whether it was there. The subscriber that takes its
    /// place is recorded in the moves. A topic without subscribers is forgotten (its log
    /// goes back to the pool, as far as no send holds it), unless it keeps a history.
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
        if let Some(i) = &self.interest {
            i.remove(&entry.name);
        }
        if entry.subscribers.is_empty() {
            // Kept for a later snapshot or resume only if it has something to give and
            // there is room: leaving ever new topics must not grow memory.
            let keep = entry.form == Form::V1
                && self.history.enabled()
                && entry.log.latest_frame().is_some()
                && self.idle_histories < self.history.topics;
            if keep {
                self.keep(id);
            } else {
                self.forget(id);
            }
        }
        true
    }

    /// Counts entry `id`, without subscribers, as kept for its history.
    fn keep(&mut self, id: u32) {
        self.entries[id as usize].kept = true;
        self.idle_histories += 1;
    }

    /// Removes entry `id`.
    fn forget(&mut self, id: u32) {
        let mut entry = self.entries.remove(id as usize);
        self.idle_histories -= usize::from(entry.kept);
        self.v1_entries -= usize::from(entry.form == Form::V1);
        if let (Some(seq), Some(counter)) = (&self.sequencer, entry.counter.take()) {
            seq.release(&entry.name, counter);
        }
        if let Some(ids) = self.ids.get_mut(entry.name.as_str()) {
            ids.0[entry.form as usize] = NONE;
            if ids.get(Form::Plain).is_none() && ids.get(Form::V1).is_none() {
                self.ids.remove(entry.name.as_str());
            }
        }
    }

    /// Counts another sweep for the topics without subscribers and publications, and
    /// forgets those idle for `sweeps` sweeps (`History::idle_ttl`).
    pub(crate) fn sweep_idle(&mut self, sweeps: u32) {
        let mut idle = Vec::new();
        for (id, e) in &mut self.entries {
            if e.subscribers.is_empty() && !e.in_turn && !e.touched {
                e.idle_sweeps += 1;
                if e.idle_sweeps >= sweeps {
                    idle.push(id as u32);
                }
            }
        }
        for id in idle {
            self.forget(id);
        }
        self.squeeze();
    }

    /// Bytes of history each `ringcast.v1` topic here may keep now: `history.bytes`, or
    /// an equal share of `history.memory` when more topics are held than it fits at
    /// full size.
    pub(crate) fn history_bytes(&self) -> u64 {
        let share = self.history.memory / self.v1_entries.max(1);
        share.min(self.history.bytes) as u64
    }

    /// Bytes the `ringcast.v1` logs held at the last sweep (history and what their
    /// subscribers have pending), large frames included.
    pub(crate) fn history_held(&self) -> u64 {
        self.history_held
    }

    /// Lists for the next tick's trim ([`touched`](Self::touched)) the `ringcast.v1`
    /// logs whose history is over its current share (more topics arrived since they were
    /// last trimmed) by at least a segment. The tick finds their slowest cursors.
    fn squeeze(&mut self) {
        let (messages, bytes) = (self.history.messages, self.history_bytes());
        self.history_held = 0;
        for (id, e) in &mut self.entries {
            if e.form != Form::V1 {
                continue;
            }
            self.history_held += e.log.head() - e.log.tail();
            if e.touched {
                continue;
            }
            if e.log.would_free(e.log.history_floor(messages, bytes)) {
                e.touched = true;
                self.touched.push(id as u32);
            }
        }
    }

    /// Takes the recorded moves (topic, connection, new position).
    pub(crate) fn take_moves(&mut self, into: &mut Vec<(u32, u32, u32)>) {
        into.append(&mut self.moves);
    }

    /// The id of `topic` in `form`, if this reactor has it.
    pub(crate) fn id(&self, topic: &str, form: Form) -> Option<u32> {
        self.ids.get(topic).and_then(|ids| ids.get(form))
    }

    /// Topic `id`.
    ///
    /// # Panics
    /// If there is no such topic (ids come from [`subscribe`](Self::subscribe)).
    pub(crate) fn entry(&self, id: u32) -> &TopicEntry {
        &self.entries[id as usize]
    }

    /// Topic `id`, mutably.
    #[cfg(test)]
    pub(crate) fn entry_mut(&mut self, id: u32) -> &mut TopicEntry {
        &mut self.entries[id as usize]
    }

    /// Topic `id`, if it exists, mutably.
    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut TopicEntry> {
        self.entries.get_mut(id as usize)
    }

    /// The log of topic `id`.
    pub(crate) fn log(&self, id: u32) -> &TopicLog {
        &self.entries[id as usize].log
    }

    /// Appends message `seq` to topic `id`'s log directly (not listed for delivery).
    pub(crate) fn append(&mut self, id: u32, frame: &bytes::Bytes, seq: u64) {
        let Self { entries, pool, .. } = self;
        entries[id as usize].log.append(frame, seq, pool);
    }

    /// Trims topic `id`'s log past `min_cursor` (its slowest subscriber) and, for a
    /// `ringcast.v1` log, past its history.
    pub(crate) fn trim(&mut self, id: u32, min_cursor: u64) {
        let (messages, bytes) = (self.history.messages, self.history_bytes());
        let entry = &mut self.entries[id as usize];
        let keep = match entry.form {
            Form::Plain => min_cursor,
            Form::V1 => min_cursor.min(entry.log.history_floor(messages, bytes)),
        };
        entry.log.trim(keep, entry.subscribers.len());
    }

    /// The chunk pool of this reactor's logs.
    pub(crate) fn pool(&self) -> &ChunkPool {
        &self.pool
    }

    /// Topic entries here (a topic with plain and v1 subscribers counts twice).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Topics here, whatever their forms (a topic with plain and v1 subscribers counts
    /// once).
    pub(crate) fn names(&self) -> usize {
        self.ids.len()
    }

    /// Subscriptions (connection × topic pairs) in this reactor.
    pub(crate) fn subscriptions(&self) -> usize {
        self.subscriptions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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

    fn publication(topic: &str, seq: u64) -> Publication {
        let payload = format!("m{seq}");
        Publication {
            topic: TopicName::new(topic),
            seq,
            frame: crate::protocol::encode::frame(
                crate::protocol::OpCode::Text,
                payload.as_bytes(),
            ),
            envelope: envelope::frame(
                topic,
                seq,
                crate::protocol::OpCode::Text,
                payload.as_bytes(),
                false,
            ),
        }
    }

    /// Leaves the entries as the reactor's delivery passes and ticks do: off the lists of
    /// this turn and of the next trim (ids of forgotten ones too).
    fn settle(t: &mut Topics) {
        for id in t
            .turn
            .drain(..)
            .chain(t.touched.drain(..))
            .collect::<Vec<_>>()
        {
            if let Some(e) = t.get_mut(id) {
                (e.in_turn, e.touched, e.fresh) = (false, false, false);
            }
        }
    }

    #[test]
    fn subscribe_unsubscribe() {
        let mut t = Topics::new(
            History {
                messages: 0,
                ..History::default()
            },
            1 << 20,
        );
        let a = TopicName::new("a");
        let (id, pos) = t.subscribe(&a, Form::Plain, 1, 0);
        assert_eq!((pos, t.log(id).head()), (0, 0));
        t.absorb(&publication("a", 1));
        assert_eq!(t.turn, [id]);
        assert_eq!(t.subscribe(&a, Form::Plain, 2, 0), (id, 1));
        assert_eq!(
            t.start(id, Start::Live, u64::MAX),
            (t.log(id).head(), None),
            "a late subscriber starts at the head"
        );
        assert_eq!(t.subscribe(&a, Form::Plain, 3, 0), (id, 2));
        assert_eq!(t.entry(id).subscribers, [1, 2, 3]);
        assert_eq!(t.id("a", Form::Plain), Some(id));
        assert_eq!(
            t.id("a", Form::V1),
            None,
            "no history: no v1 log without v1 subscribers"
        );
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
        assert_eq!(t.id("a", Form::Plain), None);
        assert_eq!(t.len(), 0);
        assert_eq!(t.subscriptions(), 0);
        assert_eq!(t.pool().live(), 0, "the log's chunk went back to the pool");
    }

    #[test]
    fn forms_delivered_apart() {
        // A cluster node's own publication: plainly at once (no number), its envelope
        // when the broker has numbered it; one publication counted.
        let mut t = Topics::new(History::default(), 1 << 20);
        let a = TopicName::new("a");
        let (plain, _) = t.subscribe(&a, Form::Plain, 1, 0);
        let (v1, _) = t.subscribe(&a, Form::V1, 2, 0);
        let full = publication("a", 1);
        t.absorb(&Publication {
            seq: 0,
            envelope: Bytes::new(),
            ..full.clone()
        });
        assert_eq!(t.turn, [plain]);
        assert_eq!(t.log(plain).head(), full.frame.len() as u64);
        assert_eq!((t.log(v1).head(), t.log(v1).last_seq()), (0, 0));
        t.absorb(&Publication {
            frame: Bytes::new(),
            ..full.clone()
        });
        assert_eq!(t.turn, [plain, v1]);
        assert_eq!(t.log(plain).head(), full.frame.len() as u64, "not twice");
        assert_eq!(t.log(v1).head(), full.envelope.len() as u64);
        assert_eq!(t.log(v1).last_seq(), 1);
        assert_eq!(t.absorbed, 1);
    }

    #[test]
    fn resume_before_the_numbers_are_known() {
        // A cluster node that did not follow `a`: a subscription with since=3 starts at
        // the head; when the node learns that 6 numbers were given out, 4..=6 is a gap.
        let mut t = Topics::new(History::default(), 1 << 20);
        let a = TopicName::new("a");
        let mark = |seq| Publication {
            topic: a.clone(),
            seq,
            frame: Bytes::new(),
            envelope: Bytes::new(),
        };
        let (id, _) = t.subscribe(&a, Form::V1, 1, 0);
        assert_eq!(t.start(id, Start::Since(3), u64::MAX), (0, None));
        assert_eq!(
            t.start(id, Start::Since(5), u64::MAX),
            (0, None),
            "the lowest counts"
        );
        t.absorb(&mark(6));
        let held: Vec<(u64, u64)> = t.log(id).frames().map(|f| (f.first, f.seq)).collect();
        assert_eq!(held, [(4, 6)]);
        t.absorb(&publication("a", 7));
        assert_eq!(t.log(id).last_seq(), 7);

        // A since the numbers reach: nothing to announce.
        let b = TopicName::new("b");
        let (id, _) = t.subscribe(&b, Form::V1, 1, 0);
        assert_eq!(t.start(id, Start::Since(9), u64::MAX), (0, None));
        t.absorb(&Publication {
            topic: b.clone(),
            ..mark(9)
        });
        assert_eq!(t.log(id).head(), 0);
        assert_eq!(t.log(id).last_seq(), 9);
    }

    #[test]
    fn history_snapshot_and_resume() {
        let mut t = Topics::new(
            History {
                messages: 3,
                ..History::default()
            },
            1 << 20,
        );
        for seq in 1..=5 {
            t.absorb(&publication("a", seq));
        }
        let id = t
            .id("a", Form::V1)
            .expect("history makes a v1 log on publication");
        t.trim(id, t.log(id).head());
        let held: Vec<(u64, u64)> = t.log(id).frames().map(|f| (f.seq, f.pos)).collect();
        let seqs: Vec<u64> = held.iter().map(|f| f.0).collect();
        assert_eq!(seqs, [3, 4, 5], "the newest 3 are kept");
        let pos = |seq: u64| held.iter().find(|f| f.0 == seq).unwrap().1;
        let head = t.log(id).head();
        assert_eq!(t.start(id, Start::Snapshot, u64::MAX), (pos(5), None));
        assert_eq!(t.start(id, Start::Since(3), u64::MAX), (pos(4), None));
        assert_eq!(t.start(id, Start::Since(2), u64::MAX), (pos(3), None));
        assert_eq!(
            t.start(id, Start::Since(0), u64::MAX),
            (pos(3), Some((1, 2)))
        );
        assert_eq!(t.start(id, Start::Since(5), u64::MAX), (head, None));
        // A missed publication leaves a gap frame in the log.
        t.absorb(&publication("a", 9));
        let log = t.log(id);
        let last: Vec<(u64, u64)> = log.frames().map(|f| (f.first, f.seq)).collect();
        assert_eq!(last[last.len() - 2..], [(6, 8), (9, 9)]);
        assert_eq!(log.last_seq(), 9);
        assert_eq!(
            t.start(id, Start::Since(7), u64::MAX).1,
            None,
            "resumes at the gap frame, which tells"
        );
        // Kept without subscribers until idle for the sweeps asked.
        t.sweep_idle(2);
        assert!(t.id("a", Form::V1).is_some());
        t.entry_mut(id).in_turn = false;
        t.entry_mut(id).touched = false;
        t.sweep_idle(2);
        t.sweep_idle(2);
        assert!(t.id("a", Form::V1).is_none(), "forgotten once idle");
    }

    #[test]
    fn histories_are_bounded_in_number() {
        let mut t = Topics::new(
            History {
                topics: 2,
                ..History::default()
            },
            1 << 20,
        );
        for name in ["a", "b", "c"] {
            t.absorb(&publication(name, 1));
        }
        assert!(t.id("a", Form::V1).is_some() && t.id("b", Form::V1).is_some());
        assert_eq!(t.id("c", Form::V1), None, "a third topic keeps no history");
        // A subscriber still gets its topic, history or not.
        let (id, _) = t.subscribe(&TopicName::new("c"), Form::V1, 1, 1);
        t.absorb(&publication("c", 2));
        assert_eq!(t.log(id).last_seq(), 2);
    }

    #[test]
    fn leaving_ever_new_topics_keeps_only_histories_with_room() {
        let mut t = Topics::new(
            History {
                topics: 2,
                ..History::default()
            },
            1 << 20,
        );
        // Subscribed and left without a message: nothing to replay, forgotten at once
        // (a client churning through names would otherwise grow the registry for the
        // whole idle time).
        for n in 0..100 {
            let (id, pos) = t.subscribe(&TopicName::new(&format!("t{n}")), Form::V1, 1, 0);
            assert!(t.unsubscribe(id, 1, pos));
        }
        assert_eq!(t.len(), 0);
        // Left with a message: kept for a resume, as long as there is room.
        let mut ids = Vec::new();
        for name in ["a", "b", "c"] {
            let (id, pos) = t.subscribe(&TopicName::new(name), Form::V1, 1, 0);
            t.absorb(&publication(name, 1));
            assert!(t.unsubscribe(id, 1, pos));
            ids.push(t.id(name, Form::V1));
        }
        assert!(ids[0].is_some() && ids[1].is_some());
        assert_eq!(ids[2], None, "no room for a third history");
        assert_eq!(t.len(), 2);
        // A history subscribed again no longer counts against the room: a publication
        // to a new topic may keep one.
        let (id, pos) = t.subscribe(&TopicName::new("a"), Form::V1, 2, 1);
        assert_eq!(Some(id), ids[0], "the same log, history and all");
        t.absorb(&publication("d", 1));
        assert!(t.id("d", Form::V1).is_some());
        // Now full: `a` left again is forgotten; the swept ones free their room.
        assert!(t.unsubscribe(id, 2, pos));
        assert_eq!(t.id("a", Form::V1), None);
        settle(&mut t);
        t.sweep_idle(1);
        assert_eq!(t.len(), 0);
        t.absorb(&publication("e", 1));
        assert!(t.id("e", Form::V1).is_some(), "room again after the sweep");
    }

    #[test]
    #[cfg_attr(miri, ignore = "50 000 publications: minutes under Miri")]
    fn histories_share_the_memory_budget() {
        use crate::fanout::chunk::MAX_CHUNK;
        use crate::protocol::OpCode;
        let memory = 4 << 20;
        let history = History {
            messages: 1 << 20,
            bytes: memory,
            memory,
            ..History::default()
        };
        let mut t = Topics::new(history, 1 << 30);
        let payload = [b'x'; 100];
        let publish = |t: &mut Topics, topic: &str, seq: u64| {
            t.absorb(&Publication {
                topic: TopicName::new(topic),
                seq,
                frame: crate::protocol::encode::frame(OpCode::Binary, &payload),
                envelope: envelope::frame(topic, seq, OpCode::Binary, &payload, false),
            });
        };
        let span = |t: &Topics, id: u32| t.log(id).head() - t.log(id).tail();
        for seq in 1..=50_000 {
            publish(&mut t, "a", seq);
        }
        let a = t.id("a", Form::V1).expect("kept for its history");
        t.trim(a, t.log(a).head());
        assert!(
            span(&t, a) > 3 << 20 && span(&t, a) <= (memory + MAX_CHUNK) as u64,
            "alone, a topic keeps its full history: {}",
            span(&t, a)
        );
        settle(&mut t);
        for n in 0..15 {
            publish(&mut t, &format!("t{n}"), 1);
        }
        assert_eq!(t.history_bytes(), memory as u64 / 16);
        settle(&mut t);
        // The sweep finds the history over its share and lists it for the tick's trim;
        // the new topics' one chunk each has nothing to give.
        t.sweep_idle(u32::MAX);
        assert_eq!(t.touched, [a]);
        t.trim(a, t.log(a).head());
        assert!(
            span(&t, a) <= (memory / 16 + MAX_CHUNK) as u64,
            "held to a 16th: {}",
            span(&t, a)
        );
        // What it gave up is announced to a client that resumes from before it.
        let (_, gap) = t.start(a, Start::Since(0), u64::MAX);
        let (from, to) = gap.expect("a gap");
        assert_eq!(from, 1);
        assert!(to > 45_000 && to < 50_000, "{to}");
        settle(&mut t);
        t.sweep_idle(u32::MAX);
        assert!(t.touched.is_empty(), "nothing left over its share");
        // Forgotten topics give their share back.
        for n in 0..15 {
            let id = t.id(&format!("t{n}"), Form::V1).unwrap();
            t.forget(id);
        }
        assert_eq!(t.history_bytes(), memory as u64);
    }

    #[test]
    fn a_topic_entry_holds_its_numbering() {
        let seq = Arc::new(Sequencer::default());
        let mut t = Topics::new(
            History {
                messages: 0,
                ..History::default()
            },
            1 << 20,
        );
        t.hold_counters(Arc::clone(&seq));
        let a = TopicName::new("a");
        let (id, pos) = t.subscribe(&a, Form::Plain, 1, 0);
        seq.counter(&a).next(|_| ());
        for _ in 0..5 {
            seq.sweep(1);
        }
        assert_eq!(seq.last("a"), 1, "kept while a subscriber is here");
        assert!(t.unsubscribe(id, 1, pos));
        for _ in 0..2 {
            seq.sweep(1);
        }
        assert_eq!(seq.len(), 0, "forgotten once no reactor knows the topic");
        // Subscribed and left without a publication: gone at once, no sweep needed.
        let (id, pos) = t.subscribe(&TopicName::new("b"), Form::Plain, 1, 0);
        assert_eq!(seq.len(), 1);
        assert!(t.unsubscribe(id, 1, pos));
        assert_eq!(seq.len(), 0);
    }
}
