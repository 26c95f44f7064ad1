//! Many nodes behind one topic space, through a broker operators already run (NATS or
//! Redis).
//!
//! ```text
//!  node A: publish ──► Relay::publish ──► bounded queue ──► bridge thread ──► broker
//!            │                                                                  │ numbers it
//!            └─► A's plain subscribers, at once                                 ▼
//!  node A, B, …: subscribers ◄── reactors' inboxes ◄── Fanout::publish_at ◄── reader thread
//! ```
//!
//! A local publication reaches this node's plain subscribers at once; its `ringcast.v1`
//! envelope, which carries the broker's number, when it comes back from the broker (its
//! origin is this node: only the envelope is delivered then, so nobody gets it twice).
//!
//! The bridge runs on two threads of its own (a writer that owns the connection and a
//! reader), never on a reactor: the fan-out hands it local publications and topic interest
//! through [`Relay`], which only queues (boundedly; overflow is counted and delivered
//! locally), and the reader hands the broker's messages to the reactors through the same
//! inbox rings as any local publication. See the README's "Cluster" section for the
//! guarantees and why they hold.
//!
//! - `wire`: the header ringcast puts before a payload on the broker;
//! - `nats`: the NATS bridge (JetStream numbers each topic's messages);
//! - `redis`: the Redis bridge (a script numbers and publishes atomically);
//! - [`stats`]: the counters and the remote-to-local latency histogram.

mod identity;
pub(crate) mod nats;
pub(crate) mod redis;
pub mod stats;
mod supervise;
mod url;
pub(crate) mod wire;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};

pub use stats::ClusterStats;
use stats::{Counters, bump};
pub use url::{Broker, Credentials};

use crate::fanout::{Fanout, MAX_TOPIC_LEN, Relay, TopicName};
use crate::protocol::frame::OpCode;

/// The default broker subject (channel) prefix: topic `T` is `ringcast.T`.
pub const DEFAULT_PREFIX: &str = "ringcast.";
/// How long a node stays subscribed to a topic on the broker after its last local
/// subscriber left, by default (against subscribe/unsubscribe flapping).
pub const DEFAULT_LINGER: Duration = Duration::from_secs(2);
/// Default capacity of the outbound queue to the broker, in publications.
pub const DEFAULT_QUEUE: usize = 64 * 1024;
/// Default number of messages the broker keeps per topic (NATS: the stream's `max_msgs`).
pub const DEFAULT_BROKER_HISTORY: u64 = 1024;

/// Why a cluster setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A URL this node cannot use.
    #[error(
        "bad cluster URL {url:?}: {reason} (expected \
         nats://[user:password@|token@]host[:port][,host[:port]…] or \
         redis://[[user]:password@]host[:port][/db])"
    )]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A node id that is empty, too long or not printable ASCII.
    #[error("bad node id {0:?}: 1 to 64 characters of A-Z a-z 0-9 - _ . :")]
    NodeId(String),
    /// A prefix that cannot start a broker subject.
    #[error("bad cluster prefix {0:?}: characters of A-Z a-z 0-9 - _ . : and no empty segment")]
    Prefix(String),
}

/// How a node joins a cluster: [`EngineBuilder::cluster`](super::EngineBuilder::cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// The URL as given, with any password or token shown as `***` (what the node logs
    /// and reports; the credentials are in [`broker`](Self::broker)).
    pub url: String,
    /// The broker.
    pub broker: Broker,
    /// Subject (channel) prefix: topic `T` is `{prefix}T`.
    pub prefix: String,
    /// This node's id (random unless set).
    pub node_id: String,
    /// How long a topic stays subscribed after its last local subscriber left.
    pub linger: Duration,
    /// Capacity of the outbound queue to the broker, in publications.
    pub queue: usize,
    /// Messages the broker keeps per topic (its history, for numbering and recovery).
    pub history: u64,
}

impl ClusterConfig {
    /// A node of the cluster at `url`, with the defaults (prefix `ringcast.`, a random
    /// node id, [`DEFAULT_LINGER`], [`DEFAULT_QUEUE`], [`DEFAULT_BROKER_HISTORY`]). The
    /// URL: `nats://[user:password@|token@]host[:port][,host[:port]…]` (the servers tried
    /// in turn) or `redis://[[user]:password@]host[:port][/db]`, credentials
    /// percent-encoded.
    ///
    /// ```
    /// let c = ringcast::server::cluster::ClusterConfig::new("nats://127.0.0.1:4222")?;
    /// assert_eq!(c.prefix, "ringcast.");
    /// assert!(ringcast::server::cluster::ClusterConfig::new("nats:/x").is_err());
    /// # Ok::<(), ringcast::server::cluster::ClusterError>(())
    /// ```
    ///
    /// # Errors
    /// A bad URL ([`ClusterError::Url`]).
    pub fn new(url: &str) -> Result<Self, ClusterError> {
        Ok(Self {
            url: url::redact(url),
            broker: Broker::parse(url)?,
            prefix: DEFAULT_PREFIX.to_owned(),
            node_id: random_node_id(),
            linger: DEFAULT_LINGER,
            queue: DEFAULT_QUEUE,
            history: DEFAULT_BROKER_HISTORY,
        })
    }

    /// Sets the subject prefix (checked).
    ///
    /// # Errors
    /// [`ClusterError::Prefix`].
    pub fn prefix(mut self, prefix: &str) -> Result<Self, ClusterError> {
        let ok = prefix.is_empty()
            || (subject_ok(prefix.trim_end_matches('.')) && !prefix.ends_with(".."));
        if !ok {
            return Err(ClusterError::Prefix(prefix.to_owned()));
        }
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    /// Sets the node id (checked).
    ///
    /// # Errors
    /// [`ClusterError::NodeId`].
    pub fn node_id(mut self, id: &str) -> Result<Self, ClusterError> {
        let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
        if id.is_empty() || id.len() > wire::MAX_ORIGIN || !id.bytes().all(ok) {
            return Err(ClusterError::NodeId(id.to_owned()));
        }
        self.node_id = id.to_owned();
        Ok(self)
    }

    /// Sets the linger after a topic's last local subscriber.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sets the outbound queue's capacity.
    pub fn queue(mut self, publications: usize) -> Self {
        self.queue = publications.max(1);
        self
    }

    /// Sets how many messages per topic the broker keeps.
    pub fn history(mut self, messages: u64) -> Self {
        self.history = messages.max(1);
        self
    }
}

/// Whether `s` is a NATS subject made of topic characters, with no empty token.
pub(crate) fn subject_ok(s: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@');
    !s.is_empty() && s.bytes().all(ok) && !s.split('.').any(str::is_empty)
}

/// 16 hex digits, different for every call and process.
fn random_node_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now_us().into());
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A local publication on its way to the broker.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) topic: TopicName,
    /// The wire message (header and payload).
    pub(crate) body: Vec<u8>,
}

/// What the bridge's writer thread is told besides publications.
#[derive(Debug)]
pub(crate) enum Control {
    /// The node's interest in some topics changed: see [`Shared::take_interest`].
    Interest,
    /// The reader of connection `n` lost it.
    Lost(u64, String),
    /// The broker pinged: answer.
    Pong,
    /// Another process with this node's id announced itself: answer with this one's
    /// claim (the newer one stops).
    Announce,
    /// Shut down.
    Stop,
}

/// What the bridge threads and the publishers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ClusterConfig,
    pub(crate) counters: Counters,
    /// Set once the reactors run.
    pub(crate) fanout: OnceLock<Fanout>,
    pub(crate) out_tx: Sender<Outbound>,
    pub(crate) control_tx: Sender<Control>,
    pub(crate) stop: AtomicBool,
    /// How this node's numbers relate to the broker's, per topic.
    pub(crate) numbering: Mutex<Numbering>,
    /// Why the bridge thread died, and what stops the engine then.
    pub(crate) failure: Mutex<supervise::Failure>,
    /// This process's claim on its node id.
    pub(crate) claim: identity::Claim,
    /// Topics whose interest changed since the bridge last looked, with the latest:
    /// subscribers arriving and leaving faster than the bridge follows cost a map entry
    /// per topic, not a queued message per change (and no broker work for a topic joined
    /// and left in between).
    interest: Mutex<HashMap<TopicName, bool>>,
}

/// Per topic: what to add to the broker's number so that this node's numbers keep rising
/// (non-zero only after this node numbered publications itself while the broker was
/// unreachable), the topics this node has numbered itself since, and the messages that
/// arrived before an earlier one (held a moment for it).
#[derive(Debug, Default)]
pub(crate) struct Numbering {
    offsets: HashMap<TopicName, u64>,
    diverged: std::collections::HashSet<TopicName>,
    held: HashMap<TopicName, Held>,
    /// Topics being subscribed: their messages wait until the start is known.
    starting: std::collections::HashSet<TopicName>,
    /// Topics subscribed for the first time whose broker state is known (its last
    /// number): their messages still wait until the time given (see
    /// [`Shared::started`]).
    settling: HashMap<TopicName, (Instant, u64)>,
    /// When [`Shared::forget_unnumbered`] last looked.
    swept: Option<Instant>,
}

/// Messages of one topic that came before an earlier one, by broker number.
#[derive(Debug)]
struct Held {
    since: Instant,
    msgs: BTreeMap<u64, HeldMsg>,
}

/// A message held (see [`Shared::deliver`] for `own`).
#[derive(Debug)]
struct HeldMsg {
    opcode: OpCode,
    payload: Vec<u8>,
    own: bool,
}

/// How long a message that came early waits for the earlier ones (the broker may hand a
/// stream's messages over out of order, rarely: seen with JetStream's RePublish).
pub(crate) const REORDER_WAIT: Duration = Duration::from_millis(100);
/// How often [`Shared::forget_unnumbered`] looks.
const NUMBERING_SWEEP: Duration = Duration::from_secs(10);
/// Most messages held per topic; more: the missing ones are given up on.
const REORDER_MAX: usize = 4096;

impl Shared {
    /// The state of a bridge that takes publications from `out_tx`'s channel and is told
    /// the rest through `control_tx`'s.
    fn new(config: ClusterConfig, out_tx: Sender<Outbound>, control_tx: Sender<Control>) -> Self {
        Self {
            config,
            counters: Counters::default(),
            fanout: OnceLock::new(),
            out_tx,
            control_tx,
            stop: AtomicBool::new(false),
            numbering: Mutex::default(),
            failure: Mutex::default(),
            claim: identity::Claim::new(),
            interest: Mutex::default(),
        }
    }

    /// Takes one message off the broker: decodes it (a malformed one, or one on a topic
    /// name over [`MAX_TOPIC_LEN`] bytes, is counted and dropped), counts it by origin
    /// (own, remote with its latency, foreign) and delivers it numbered `seq`, or by the
    /// number in its header when `seq` is `None` (Redis; on NATS the number comes with the
    /// message, outside it).
    pub(crate) fn receive(&self, topic: &TopicName, body: &[u8], seq: Option<u64>) {
        let c = &self.counters;
        if !topic.fits_envelope() {
            tracing::debug!(
                "cluster: dropped a message on a topic name of {} bytes (at most {MAX_TOPIC_LEN})",
                topic.as_str().len()
            );
            bump(&c.malformed);
            return;
        }
        let m = match wire::decode(body) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("cluster: dropped a message on {topic}: {e}");
                bump(&c.malformed);
                return;
            }
        };
        let own = m.origin == Some(self.config.node_id.as_bytes());
        match m.origin {
            None => bump(&c.received_foreign),
            Some(_) if own => bump(&c.received_own),
            Some(_) => {
                bump(&c.received_remote);
                if m.sent_us > 0 {
                    c.latency(now_us().saturating_sub(m.sent_us));
                }
            }
        }
        self.deliver(topic, m.opcode, m.payload, seq.unwrap_or(m.seq), own);
    }

    /// Delivers on this node a message from the broker numbered `seq` (0: numbered here),
    /// in the broker's order: a message that comes before an earlier one waits for it (at
    /// most [`REORDER_WAIT`]), one this node already has is dropped, unless the node
    /// numbered messages itself meanwhile: then the broker's numbers are shifted past the
    /// node's from here on. Skipped numbers are counted. `own`: published on this node,
    /// whose plain subscribers already had it ([`Fanout::publish`]): only its envelope is
    /// delivered.
    pub(crate) fn deliver(
        &self,
        topic: &TopicName,
        opcode: OpCode,
        payload: &[u8],
        seq: u64,
        own: bool,
    ) {
        let Some(fanout) = self.fanout.get() else {
            return;
        };
        let mut n = self.numbering();
        if seq == 0 {
            n.diverged.insert(topic.clone());
            drop(n);
            let _ = if own {
                fanout.publish_envelope_at(topic, opcode, payload, 0)
            } else {
                fanout.publish_local(topic, opcode, payload)
            };
            return;
        }
        let msg = |payload: &[u8]| HeldMsg {
            opcode,
            payload: payload.to_vec(),
            own,
        };
        if n.starting.contains(topic.as_str()) {
            // Bounded: past REORDER_MAX the newest are not kept (the hole is announced
            // once the topic has started).
            if n.held
                .get(topic.as_str())
                .is_none_or(|h| h.msgs.len() < REORDER_MAX)
            {
                Self::hold(&mut n, topic, seq, msg(payload));
            }
            return;
        }
        let offset = n.offsets.get(topic.as_str()).copied().unwrap_or(0);
        let before = fanout.last_seq(topic.as_str());
        if seq + offset <= before {
            if n.diverged.remove(topic.as_str()) {
                self.publish(&mut n, fanout, topic, seq, &msg(payload));
            }
            return; // else a duplicate
        }
        if seq + offset > before + 1 {
            if Self::hold(&mut n, topic, seq, msg(payload)) > REORDER_MAX {
                self.release(&mut n, fanout, topic);
            }
            return;
        }
        self.publish(&mut n, fanout, topic, seq, &msg(payload));
        // What waited for this one follows it.
        loop {
            let offset = n.offsets.get(topic.as_str()).copied().unwrap_or(0);
            let next = fanout.last_seq(topic.as_str()) + 1 - offset;
            let Some(held) = n.held.get_mut(topic.as_str()) else {
                break;
            };
            let Some(m) = held.msgs.remove(&next) else {
                break;
            };
            if held.msgs.is_empty() {
                n.held.remove(topic.as_str());
            }
            self.publish(&mut n, fanout, topic, next, &m);
        }
    }

    /// Holds message `seq`; returns how many of the topic are held.
    fn hold(n: &mut Numbering, topic: &TopicName, seq: u64, msg: HeldMsg) -> usize {
        let held = n.held.entry(topic.clone()).or_insert_with(|| Held {
            since: Instant::now(),
            msgs: BTreeMap::new(),
        });
        held.msgs.insert(seq, msg);
        held.msgs.len()
    }

    /// The topic is being subscribed on the broker: its messages wait for
    /// [`started`](Self::started).
    pub(crate) fn begin(&self, topic: &TopicName) {
        self.numbering().starting.insert(topic.clone());
    }

    /// The topic's subscription is in place, and the broker's last number of it was
    /// `last`. `first`: the first subscription on this node: it starts after `last`, or
    /// before the first message the subscription received, whichever is lower — a
    /// message stored before the state was answered may still be on its way to the
    /// subscription (the broker answers and delivers on different paths), so the start is
    /// settled [`REORDER_WAIT`] later ([`release_held`](Self::release_held)). Else a
    /// subscription again, after a reconnection (what was missed has been fetched and is
    /// held; a broker that went back, having lost its numbers, is shifted past this node's
    /// from its next message): what waited is delivered now.
    pub(crate) fn started(&self, topic: &TopicName, last: u64, first: bool) {
        let Some(fanout) = self.fanout.get() else {
            return;
        };
        let mut n = self.numbering();
        if first {
            n.settling
                .insert(topic.clone(), (Instant::now() + REORDER_WAIT, last));
            return;
        }
        n.starting.remove(topic.as_str());
        let offset = n.offsets.get(topic.as_str()).copied().unwrap_or(0);
        if last + offset < fanout.last_seq(topic.as_str()) {
            n.diverged.insert(topic.clone());
        }
        self.release(&mut n, fanout, topic);
    }

    /// Starts topic `topic` subscribed for the first time, whose broker state said `last`
    /// (see [`started`](Self::started)), and delivers what waited.
    fn settle(&self, n: &mut Numbering, fanout: &Fanout, topic: &TopicName, last: u64) {
        n.starting.remove(topic.as_str());
        let offset = n.offsets.get(topic.as_str()).copied().unwrap_or(0);
        let first_held = n
            .held
            .get(topic.as_str())
            .and_then(|h| h.msgs.keys().next().copied());
        let last = first_held.map_or(last, |h| last.min(h - 1));
        fanout.advance(topic, last + offset);
        self.release(n, fanout, topic);
    }

    /// Following `topic` on the broker was given up (the broker would not number it):
    /// its messages no longer wait for a start.
    pub(crate) fn abandon_start(&self, topic: &TopicName) {
        let mut n = self.numbering();
        n.starting.remove(topic.as_str());
        n.settling.remove(topic.as_str());
        if let Some(fanout) = self.fanout.get() {
            self.release(&mut n, fanout, topic);
        }
    }

    /// The connection was lost while subscribing: nothing waits any more (topics whose
    /// state is known start now).
    pub(crate) fn abandon_starts(&self) {
        let mut n = self.numbering();
        if let Some(fanout) = self.fanout.get() {
            let settling: Vec<_> = n.settling.drain().collect();
            for (t, (_, last)) in settling {
                self.settle(&mut n, fanout, &t, last);
            }
        }
        n.settling.clear();
        n.starting.clear();
    }

    /// Starts the topics whose start has settled; delivers the messages held longer than
    /// [`REORDER_WAIT`]: the earlier ones are given up on (announced as a gap, counted
    /// as missed).
    pub(crate) fn release_held(&self, now: Instant) {
        let Some(fanout) = self.fanout.get() else {
            return;
        };
        let mut n = self.numbering();
        let settled: Vec<(TopicName, u64)> = n
            .settling
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(t, (_, last))| (t.clone(), *last))
            .collect();
        for (t, last) in settled {
            n.settling.remove(t.as_str());
            self.settle(&mut n, fanout, &t, last);
        }
        let due: Vec<TopicName> = n
            .held
            .iter()
            .filter(|(t, h)| {
                now.saturating_duration_since(h.since) >= REORDER_WAIT
                    && !n.starting.contains(t.as_str())
            })
            .map(|(t, _)| t.clone())
            .collect();
        for t in due {
            self.release(&mut n, fanout, &t);
        }
    }

    /// Delivers what is held of `topic`, in order (what this node already has dropped).
    fn release(&self, n: &mut Numbering, fanout: &Fanout, topic: &TopicName) {
        if let Some(held) = n.held.remove(topic.as_str()) {
            for (seq, m) in held.msgs {
                let offset = n.offsets.get(topic.as_str()).copied().unwrap_or(0);
                // As in `deliver`: one this node has is dropped, unless the node numbered
                // messages itself meanwhile (then the broker's are shifted past them).
                if seq + offset > fanout.last_seq(topic.as_str())
                    || n.diverged.remove(topic.as_str())
                {
                    self.publish(n, fanout, topic, seq, &m);
                }
            }
        }
    }

    /// Hands broker message `seq` to the reactors.
    fn publish(
        &self,
        n: &mut Numbering,
        fanout: &Fanout,
        topic: &TopicName,
        seq: u64,
        m: &HeldMsg,
    ) {
        let offset = n.offsets.get(topic.as_str()).copied().unwrap_or(0);
        let before = fanout.last_seq(topic.as_str());
        let (op, payload, at) = (m.opcode, &m.payload[..], seq + offset);
        let got = if m.own {
            fanout.publish_envelope_at(topic, op, payload, at)
        } else {
            fanout.publish_at(topic, op, payload, at)
        }
        .seq;
        if before > 0 && got > before + 1 {
            self.counters
                .missed
                .fetch_add(got - before - 1, Ordering::Relaxed);
        }
        if got != seq + offset {
            n.offsets.insert(topic.clone(), got - seq);
        }
    }

    /// Forgets, at most every [`NUMBERING_SWEEP`], the offsets and divergence marks of
    /// topics whose counter the node has forgotten (nothing numbered for the history TTL
    /// and no reactor knows them): their numbering starts anew, and kept they would grow
    /// with every topic ever published to while the broker was out of reach.
    pub(crate) fn forget_unnumbered(&self, now: Instant) {
        let Some(fanout) = self.fanout.get() else {
            return;
        };
        let mut n = self.numbering();
        if n.swept
            .is_some_and(|at| now.duration_since(at) < NUMBERING_SWEEP)
        {
            return;
        }
        n.swept = Some(now);
        n.diverged.retain(|t| fanout.last_seq(t.as_str()) > 0);
        n.offsets.retain(|t, _| fanout.last_seq(t.as_str()) > 0);
    }

    /// Notes that this node numbered a publication of `topic` itself.
    pub(crate) fn diverged(&self, topic: &TopicName) {
        self.numbering().diverged.insert(topic.clone());
    }

    /// An announcement heard on this node's id ([`identity`]): a newer process with the
    /// same id is answered (it stops then); an older one stops this engine.
    pub(crate) fn hear_claim(&self, msg: &[u8]) {
        match self.claim.hear(msg) {
            identity::Heard::Nothing => {}
            identity::Heard::Newer => {
                tracing::warn!(
                    "cluster: a newer node announced node id '{}', this node's: it is told \
                     to stop",
                    self.config.node_id
                );
                let _ = self.control_tx.send(Control::Announce);
            }
            identity::Heard::Older => {
                let why = identity::conflict(&self.config.node_id);
                tracing::error!("{why}");
                self.counters.connected.store(false, Ordering::Release);
                supervise::fail(self, why);
            }
        }
    }

    /// The interest changes since the last call (on a [`Control::Interest`]): each topic
    /// with whether the node wants it now.
    pub(crate) fn take_interest(&self) -> HashMap<TopicName, bool> {
        std::mem::take(
            &mut *self
                .interest
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The broker's number `seq` of `topic` as this node numbers it.
    pub(crate) fn local_seq(&self, topic: &TopicName, seq: u64) -> u64 {
        seq + self
            .numbering()
            .offsets
            .get(topic.as_str())
            .copied()
            .unwrap_or(0)
    }

    fn numbering(&self) -> std::sync::MutexGuard<'_, Numbering> {
        self.numbering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The fan-out's view of the bridge.
#[derive(Debug, Clone)]
pub(crate) struct Bridge(pub(crate) Arc<Shared>);

impl Relay for Bridge {
    fn interest(&self, topic: &TopicName, on: bool) {
        if subject_ok(topic.as_str()) {
            let mut changed = self
                .0
                .interest
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let first = changed.is_empty();
            changed.insert(topic.clone(), on);
            drop(changed);
            // One wake for a batch of changes: the bridge takes them all.
            if first {
                let _ = self.0.control_tx.send(Control::Interest);
            }
        }
    }

    fn publish(&self, topic: &TopicName, opcode: OpCode, payload: &[u8]) -> bool {
        let s = &self.0;
        if !subject_ok(topic.as_str()) {
            return false; // not a subject: this topic stays local
        }
        if !s.counters.connected.load(Ordering::Acquire) {
            bump(&s.counters.dropped_to_broker);
            s.diverged(topic);
            return false;
        }
        let mut body = Vec::new();
        let origin = s.config.node_id.as_bytes();
        wire::encode_into(&mut body, opcode, 0, now_us(), origin, payload);
        let out = Outbound {
            topic: topic.clone(),
            body,
        };
        match s.out_tx.try_send(out) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                bump(&s.counters.dropped_to_broker);
                s.diverged(topic);
                false
            }
        }
    }
}

/// A node's bridge to its cluster: started before the reactors, attached to their
/// fan-out once they run, stopped with the engine.
pub(crate) struct Cluster {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &self.shared.config.url)
            .field("node_id", &self.shared.config.node_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts the bridge's thread (it connects in the background, retrying).
    ///
    /// # Errors
    /// A broker this build does not speak, or the thread cannot be started.
    pub(crate) fn start(config: ClusterConfig) -> std::io::Result<Self> {
        let (out_tx, out_rx) = crossbeam_channel::bounded(config.queue);
        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        tracing::info!(url = %config.url, node_id = %config.node_id, "cluster: node id {}", config.node_id);
        let shared = Arc::new(Shared::new(config, out_tx, control_tx));
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ringcast-cluster".into())
            .spawn(move || {
                supervise::guarded(&s, || match s.config.broker {
                    Broker::Nats { .. } => nats::run(&s, &out_rx, &control_rx),
                    Broker::Redis { .. } => redis::run(&s, &out_rx, &control_rx),
                });
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Has `stop` called (once) if the bridge thread dies, at once if it has already:
    /// the node then can neither reach the broker nor deliver its own publications.
    pub(crate) fn on_failure(&self, stop: impl Fn() + Send + 'static) {
        supervise::on_failure(&self.shared, Box::new(stop));
    }

    /// Why the bridge thread died (a panic, with its message), if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        supervise::failure(&self.shared)
    }

    /// The relay the fan-out is built with.
    pub(crate) fn relay(&self) -> Arc<dyn Relay> {
        Arc::new(Bridge(Arc::clone(&self.shared)))
    }

    /// Hands the bridge the running reactors' fan-out.
    pub(crate) fn attach(&self, fanout: Fanout) {
        let _ = self.shared.fanout.set(fanout);
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> ClusterStats {
        self.probe().stats()
    }

    /// What reads the counters (for the HTTP endpoints).
    pub(crate) fn probe(&self) -> Probe {
        Probe(Arc::clone(&self.shared))
    }

    /// Stops the bridge and waits for its threads.
    pub(crate) fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.shared.control_tx.send(Control::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads a bridge's counters.
#[derive(Debug, Clone)]
pub(crate) struct Probe(Arc<Shared>);

impl Probe {
    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> ClusterStats {
        let c = &self.0.config;
        self.0.counters.snapshot(&c.url, &c.node_id)
    }
}

/// Warnings about publications the broker refused: at most one per
/// [`REFUSALS_LOGGED_EVERY`], with the count since the last.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    at: Option<Instant>,
    unlogged: u64,
}

/// Least time between two warnings about refused publications.
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(10);

impl Shared {
    /// Delivers local publication `o`, which the broker will not number, on this node
    /// only: counted as dropped to the broker, numbered here (`seq` 0), so the broker's
    /// later numbers of its topic are shifted past it.
    pub(crate) fn deliver_here(&self, o: &Outbound) {
        bump(&self.counters.dropped_to_broker);
        if let Ok(m) = wire::decode(&o.body) {
            self.deliver(&o.topic, m.opcode, m.payload, 0, true);
        }
    }

    /// The broker refused local publication `o` (`why`: its answer): it is delivered on
    /// this node only, numbered here, as when the broker is unreachable, rather than lost
    /// for every `ringcast.v1` subscriber and every other node.
    pub(crate) fn refused(&self, o: &Outbound, why: &str, log: &mut RefusalLog) {
        bump(&self.counters.refused);
        self.deliver_here(o);
        log.unlogged += 1;
        let now = Instant::now();
        if log
            .at
            .is_none_or(|at| now.duration_since(at) >= REFUSALS_LOGGED_EVERY)
        {
            tracing::warn!(
                "cluster: the broker refused a publication to {}: {why}; delivered on this \
                 node only ({} refused since the last warning)",
                o.topic,
                log.unlogged
            );
            log.at = Some(now);
            log.unlogged = 0;
        }
    }
}

/// Drains what is queued for the broker into local delivery (the connection is gone):
/// numbered here, in their envelopes (plain subscribers had them at publish).
pub(crate) fn deliver_queued_locally(shared: &Shared, out_rx: &Receiver<Outbound>) {
    while let Ok(o) = out_rx.try_recv() {
        shared.deliver_here(&o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node with one reactor inbox, in a cluster whose bridge is `shared`; what the
    /// reactor would get, as (seq, plain frame?, envelope?) per publication.
    fn node() -> (Arc<Shared>, crate::fanout::ring::InboxRx) {
        #[derive(Debug)]
        struct NoWake;
        impl crate::fanout::Wake for NoWake {
            fn wake(&self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (tx, rx) = crate::fanout::ring::inbox(64, Arc::new(NoWake));
        let c = Cluster::start(ClusterConfig::new("nats://127.0.0.1:1").unwrap()).unwrap();
        let shared = Arc::clone(&c.shared);
        shared.stop.store(true, Ordering::Release);
        drop(c); // the bridge thread stops; `Shared` stays usable
        let _ = shared.fanout.set(Fanout::with_relay(vec![tx], None));
        (shared, rx)
    }

    fn taken(rx: &crate::fanout::ring::InboxRx) -> Vec<(u64, bool, bool)> {
        let mut got = Vec::new();
        rx.drain(usize::MAX, |p| {
            got.push((p.seq, !p.frame.is_empty(), !p.envelope.is_empty()));
        });
        got
    }

    #[test]
    fn a_first_start_settles_before_it_delivers() {
        let (shared, rx) = node();
        let t = TopicName::new("t");
        shared.begin(&t);
        // Received through the new subscription before the state was answered, and the
        // state (last 5) already counts it: it is still delivered, not taken as old.
        shared.deliver(&t, OpCode::Text, b"five", 5, false);
        shared.started(&t, 5, true);
        shared.release_held(Instant::now());
        assert_eq!(taken(&rx), [], "held while the start settles");
        // One more on its way when the state was answered: it joins in order.
        shared.deliver(&t, OpCode::Text, b"six", 6, false);
        shared.release_held(Instant::now() + REORDER_WAIT);
        // The mark (numbers up to 4 were given out before), then 5 and 6 in both forms.
        assert_eq!(
            taken(&rx),
            [(4, false, false), (5, true, true), (6, true, true)]
        );
        // A node's own publication comes back for its envelope only.
        shared.deliver(&t, OpCode::Text, b"own", 7, true);
        assert_eq!(taken(&rx), [(7, false, true)]);
    }

    /// A bridge's state with no thread and no reactors, and what it tells its writer.
    fn bridge_state() -> (Arc<Shared>, Receiver<Control>) {
        let (out_tx, _out_rx) = crossbeam_channel::bounded(1);
        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        let config = ClusterConfig::new("nats://127.0.0.1:1").unwrap();
        (
            Arc::new(Shared::new(config, out_tx, control_tx)),
            control_rx,
        )
    }

    #[test]
    fn a_reader_reports_its_connection_lost_even_when_it_panics() {
        let (shared, control_rx) = bridge_state();
        let lost = || match control_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Control::Lost(n, why)) => (n, why),
            other => panic!("no loss reported: {other:?}"),
        };
        let t = supervise::spawn_reader("test-rx", Arc::clone(&shared), 7, |_| {
            panic!("a reader bug")
        })
        .unwrap();
        assert!(t.join().is_err());
        assert_eq!(lost(), (7, "its reader panicked".to_owned()));
        let t = supervise::spawn_reader("test-rx", Arc::clone(&shared), 8, |_| {
            std::io::Error::other("end of stream")
        })
        .unwrap();
        t.join().unwrap();
        assert_eq!(lost(), (8, "end of stream".to_owned()));
    }

    #[test]
    fn the_numbering_of_forgotten_topics_is_dropped() {
        let (shared, _rx) = node();
        let (kept, gone) = (TopicName::new("kept"), TopicName::new("gone"));
        // Both published here while the broker was out of reach; then `gone` was
        // forgotten by the node (its counter swept), `kept` not.
        shared.deliver(&kept, OpCode::Text, b"k", 0, true);
        shared.diverged(&gone);
        shared.numbering().offsets.insert(gone.clone(), 5);
        let now = Instant::now();
        shared.forget_unnumbered(now);
        let n = shared.numbering();
        assert!(n.diverged.contains(kept.as_str()));
        assert!(!n.diverged.contains(gone.as_str()) && n.offsets.is_empty());
        drop(n);
        // Not again before the sweep period.
        shared.diverged(&gone);
        shared.forget_unnumbered(now + NUMBERING_SWEEP / 2);
        assert!(shared.numbering().diverged.contains(gone.as_str()));
        shared.forget_unnumbered(now + NUMBERING_SWEEP);
        assert!(!shared.numbering().diverged.contains(gone.as_str()));
    }

    #[test]
    fn interest_changes_are_coalesced_per_topic() {
        let (shared, control_rx) = bridge_state();
        let bridge = Bridge(Arc::clone(&shared));
        let (t, u) = (TopicName::new("t"), TopicName::new("u"));
        // A client joining and leaving ever new names faster than the bridge looks: one
        // wake, one entry per name, whatever the number of changes.
        for _ in 0..1000 {
            bridge.interest(&t, true);
            bridge.interest(&t, false);
        }
        bridge.interest(&u, true);
        assert_eq!(control_rx.len(), 1);
        assert!(matches!(control_rx.try_recv(), Ok(Control::Interest)));
        let mut follows = HashMap::new();
        let mut changed = supervise::note_interest(&mut follows, &shared);
        changed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        assert_eq!(
            changed,
            std::slice::from_ref(&u),
            "`t` was left before it was followed"
        );
        assert!(follows[&u].wanted && !follows.contains_key(&t));
        // Left once followed: it lingers.
        bridge.interest(&u, false);
        assert!(matches!(control_rx.try_recv(), Ok(Control::Interest)));
        assert_eq!(
            supervise::note_interest(&mut follows, &shared),
            std::slice::from_ref(&u)
        );
        assert!(!follows[&u].wanted && follows[&u].linger_until.is_some());
    }

    #[test]
    fn a_bridge_that_panics_stops_the_engine_and_says_why() {
        use std::sync::atomic::AtomicUsize;
        let (shared, _rx) = node();
        let stopped = Arc::new(AtomicUsize::new(0));
        let s = Arc::clone(&stopped);
        supervise::on_failure(
            &shared,
            Box::new(move || {
                s.fetch_add(1, Ordering::Relaxed);
            }),
        );
        shared.counters.connected.store(true, Ordering::Release);
        supervise::guarded(&shared, || {});
        assert_eq!(
            stopped.load(Ordering::Relaxed),
            0,
            "a clean return stops nothing"
        );
        assert_eq!(supervise::failure(&shared), None);
        supervise::guarded(&shared, || panic!("a bridge bug"));
        assert_eq!(stopped.load(Ordering::Relaxed), 1);
        assert_eq!(
            supervise::failure(&shared).as_deref(),
            Some("cluster bridge panicked: a bridge bug")
        );
        assert!(!shared.counters.connected.load(Ordering::Acquire));
        // An engine attached after the bridge died is stopped at once.
        let s = Arc::clone(&stopped);
        supervise::on_failure(
            &shared,
            Box::new(move || {
                s.fetch_add(1, Ordering::Relaxed);
            }),
        );
        assert_eq!(stopped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_topic_name_no_envelope_can_carry_is_dropped_and_counted() {
        let (shared, rx) = node();
        for len in [MAX_TOPIC_LEN + 1, 4096] {
            let t = TopicName::new(&"x".repeat(len));
            shared.begin(&t);
            shared.started(&t, 0, true);
            // A foreign message (no ringcast header) would be delivered as text.
            shared.receive(&t, b"{\"bid\":1}", Some(1));
            shared.release_held(Instant::now() + REORDER_WAIT);
        }
        assert_eq!(taken(&rx), []);
        assert_eq!(shared.counters.malformed.load(Ordering::Relaxed), 2);
        // The longest name an envelope carries is delivered in both forms.
        let t = TopicName::new(&"x".repeat(MAX_TOPIC_LEN));
        shared.begin(&t);
        shared.started(&t, 0, true);
        shared.receive(&t, b"{\"bid\":1}", Some(1));
        shared.release_held(Instant::now() + REORDER_WAIT);
        assert_eq!(taken(&rx), [(1, true, true)]);
        assert_eq!(shared.counters.malformed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn node_ids_and_prefixes() {
        let c = ClusterConfig::new("nats://h").unwrap();
        assert_eq!(c.node_id.len(), 16);
        assert_ne!(c.node_id, ClusterConfig::new("nats://h").unwrap().node_id);
        assert!(c.clone().node_id("a-1").is_ok());
        assert!(c.clone().node_id("").is_err());
        assert!(c.clone().node_id("a b").is_err());
        assert!(c.clone().node_id(&"x".repeat(65)).is_err());
        assert!(c.clone().prefix("md.prices.").is_ok());
        assert!(c.clone().prefix("").is_ok());
        assert!(c.clone().prefix("a..").is_err());
        assert!(c.clone().prefix("a*.").is_err());
        assert!(subject_ok("ringcast.BTC-USD"));
        assert!(!subject_ok("ringcast..x"));
        assert!(!subject_ok("ringcast.x."));
    }
}
